//! A JSON value borrowed from the text it was read from: how the gateway
//! reads a request body (to validate it, to find what routing needs, to key
//! the cache) without copying its strings into a tree of owned values or
//! hashing every key into a map. A string is borrowed unless it held
//! escapes; an object is a list of its members.
//!
//! It reads as `serde_json` reads a [`serde_json::Value`]: the same
//! grammar, limits and errors, and a repeated key keeps its last value at
//! its first place, so [`Json`] serializes as that `Value` would.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Number;

mod read;

/// A JSON value; strings and keys borrowed from the text when they held no
/// escapes.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as `serde_json` reads it.
    Number(Number),
    /// A string, unescaped.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Json<'a>>),
    /// An object.
    Object(JsonObject<'a>),
}

/// Why a body could not be read as JSON.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Not UTF-8: valid up to this byte.
    #[error("not valid UTF-8 (at byte {valid_up_to})")]
    NotUtf8 {
        /// The length of the valid prefix.
        valid_up_to: usize,
    },
    /// Not one JSON value.
    #[error("{0}")]
    Malformed(serde_json::Error),
}

/// A JSON object's members in the text's order, each key once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JsonObject<'a> {
    members: Vec<(Cow<'a, str>, Json<'a>)>,
}

impl<'a> Json<'a> {
    /// Reads a whole body as one value: fast ([`read`]) when it can, and
    /// otherwise by checking the body's UTF-8, then `serde_json`.
    ///
    /// # Errors
    ///
    /// [`ReadError::NotUtf8`] for a body that is not UTF-8, else
    /// `serde_json`'s error for one that is not one JSON value.
    pub fn read(bytes: &'a [u8]) -> Result<Self, ReadError> {
        if let Some(value) = read::read(bytes) {
            return Ok(value);
        }
        // Declined: checked and read the slow way, which says what is wrong.
        let text = std::str::from_utf8(bytes).map_err(|e| ReadError::NotUtf8 { valid_up_to: e.valid_up_to() })?;
        serde_json::from_str(text).map_err(ReadError::Malformed)
    }

    /// Reads a whole text as one value.
    ///
    /// # Errors
    ///
    /// `serde_json`'s, for a text that is not one JSON value.
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        match read::read(text.as_bytes()) {
            Some(value) => Ok(value),
            None => serde_json::from_str(text),
        }
    }

    /// The member `key` of an object (`None` for another value).
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.as_object()?.get(key)
    }

    /// The string, for a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, for a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The items, for an array.
    pub fn as_array(&self) -> Option<&[Json<'a>]> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The members, for an object.
    pub fn as_object(&self) -> Option<&JsonObject<'a>> {
        match self {
            Json::Object(object) => Some(object),
            _ => None,
        }
    }

    /// The number, for a number.
    pub fn as_number(&self) -> Option<&Number> {
        match self {
            Json::Number(n) => Some(n),
            _ => None,
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }
}

/// Objects with more members than this merge repeated keys after reading,
/// in one sorted pass (a hostile object of many keys stays near-linear).
const LINEAR_UP_TO: usize = 16;

impl<'a> JsonObject<'a> {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The members, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Json<'a>)> {
        self.members.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there is no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Adds a member read from the text: a repeated key's last value wins,
    /// at the first key's place.
    fn push_read(&mut self, key: Cow<'a, str>, value: Json<'a>) {
        if self.members.len() < LINEAR_UP_TO
            && let Some(slot) = self.members.iter_mut().find(|(k, _)| *k == key)
        {
            slot.1 = value;
            return;
        }
        self.members.push((key, value));
    }

    /// Merges the repeated keys of a large object (see [`Self::push_read`]).
    fn merge_repeated(&mut self) {
        if self.members.len() <= LINEAR_UP_TO {
            return;
        }
        let mut order: Vec<usize> = (0..self.members.len()).collect();
        order.sort_by(|&a, &b| self.members[a].0.cmp(&self.members[b].0).then(a.cmp(&b)));
        let mut drop = vec![false; self.members.len()];
        let runs: Vec<&[usize]> = order.chunk_by(|&a, &b| self.members[a].0 == self.members[b].0).collect();
        for run in runs {
            if let [first, .., last] = *run {
                let value = std::mem::replace(&mut self.members[last].1, Json::Null);
                self.members[first].1 = value;
                for &later in &run[1..] {
                    drop[later] = true;
                }
            }
        }
        let mut index = 0;
        self.members.retain(|_| {
            index += 1;
            !drop[index - 1]
        });
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json<'de>, E> {
        // serde_json reads only finite numbers; `Value` keeps a non-finite
        // one as null, and so does this.
        Ok(Number::from_f64(v).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut object = JsonObject::default();
        while let Some(Key(key)) = map.next_key()? {
            let value = map.next_value()?;
            object.push_read(key, value);
        }
        object.merge_repeated();
        Ok(Json::Object(object))
    }
}

/// An object's key, borrowed when it held no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_str(KeyVisitor)
    }
}

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Bool(b) => serializer.serialize_bool(*b),
            Json::Number(n) => n.serialize(serializer),
            Json::String(s) => serializer.serialize_str(s),
            Json::Array(items) => serializer.collect_seq(items),
            Json::Object(object) => {
                let mut map = serializer.serialize_map(Some(object.len()))?;
                for (key, value) in object.iter() {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn it_reads_and_writes_as_serde_json_value_does() {
        let texts = [
            r#"{"model":"m","messages":[{"role":"user","content":"h\u00e9 \"q\"\n"}],"t":0.5,"n":-3,"big":18446744073709551615}"#,
            r#"{"a":1,"b":2,"a":3}"#,
            r#"[null,true,false,1e3,-0,"\ud83d\ude00",{"":{}},[]]"#,
            r#"{"k\u0041":"v","kA":"w"}"#,
        ];
        for text in texts {
            let ours = serde_json::to_string(&Json::parse(text).unwrap()).unwrap();
            let theirs = serde_json::to_string(&serde_json::from_str::<Value>(text).unwrap()).unwrap();
            assert_eq!(ours, theirs, "{text}");
        }
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_at_its_first_place_in_any_size_of_object() {
        let small = Json::parse(r#"{"a":1,"b":2,"a":3}"#).unwrap();
        assert_eq!(small.get("a").and_then(Json::as_number), Some(&Number::from(3)));
        let mut members: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        members.push("\"k3\":\"last\"".into());
        members.push("\"k0\":null".into());
        let text = format!("{{{}}}", members.join(","));
        let large = Json::parse(&text).unwrap();
        let expected = serde_json::from_str::<Value>(&text).unwrap();
        assert_eq!(serde_json::to_string(&large).unwrap(), serde_json::to_string(&expected).unwrap());
        assert_eq!(large.get("k3").and_then(Json::as_str), Some("last"));
        assert_eq!(large.as_object().map(JsonObject::len), Some(40));
    }

    #[test]
    fn strings_are_borrowed_unless_they_held_escapes() {
        let v = Json::parse(r#"{"plain":"abc","escaped":"a\nb"}"#).unwrap();
        assert!(matches!(v.get("plain"), Some(Json::String(Cow::Borrowed("abc")))));
        assert!(matches!(v.get("escaped"), Some(Json::String(Cow::Owned(s))) if s == "a\nb"));
    }

    #[test]
    fn what_serde_json_refuses_is_refused() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for text in ["", "{", r#"{"a":}"#, "[1,]", r#""\ud800""#, "1e400", "nul", "{} x", &deep] {
            assert_eq!(Json::parse(text).is_ok(), serde_json::from_str::<Value>(text).is_ok(), "{text}");
            assert!(Json::parse(text).is_err(), "{text}");
        }
        assert_eq!(Json::parse("[1.5]").unwrap(), Json::Array(vec![Json::Number(Number::from_f64(1.5).unwrap())]));
    }
}

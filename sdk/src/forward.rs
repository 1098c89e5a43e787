//! Forwarding a chat request without parsing it whole: [`ForwardRequest`]
//! splits the body into its top-level fields and each message's fields,
//! every value kept as the client's raw JSON text. An adapter reads the
//! fields it needs (each parsed on demand), changes the few it must, and
//! [`ForwardRequest::to_vec`] writes everything else back byte for byte.
//!
//! A large prompt is almost all message content. Parsing it into a
//! [`serde_json::Value`] tree and encoding it again costs several passes over
//! every byte and an allocation per string; here the content is scanned once
//! (the private `scan` module: where each value ends, and that it is JSON) and copied once.
//!
//! Objects keep JSON's usual reading of a repeated key (the last value wins,
//! at the first key's place), so what is forwarded is what the gateway
//! validated.

use std::borrow::Cow;

use serde::Serialize;

use crate::splice::Splicer;
use crate::{Failure, RequestBody};
pub use scan::{JsonError, MAX_DEPTH};

pub(crate) mod scan;

use scan::Scanner;

/// A value's JSON text as the client wrote it (or as the adapter set it),
/// checked to be JSON: what [`RawObject::raw`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawJson<'t>(&'t str);

impl<'t> RawJson<'t> {
    /// The text.
    pub fn get(self) -> &'t str {
        self.0
    }
}

/// A key of an object: borrowed from the body only when it held no escapes
/// (so it needs none when written), else owned.
type Key<'a> = Cow<'a, str>;

/// One value of an object: the client's text (checked JSON), one the
/// adapter set, or the place of a request's messages (kept apart, in
/// [`ForwardRequest::messages`]).
#[derive(Debug, Clone)]
enum Slot<'a> {
    Raw(&'a [u8]),
    Owned(String),
    Messages,
}

impl Slot<'_> {
    /// The value's bytes (`None` for the messages' place).
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Slot::Raw(raw) => Some(raw),
            Slot::Owned(raw) => Some(raw.as_bytes()),
            Slot::Messages => None,
        }
    }
}

/// A JSON object whose values are kept as raw JSON text, in the body's order.
#[derive(Debug, Clone, Default)]
pub struct RawObject<'a> {
    fields: Vec<(Key<'a>, Slot<'a>)>,
}

impl<'a> RawObject<'a> {
    /// The raw JSON text of `key`'s value (`None` when absent, and for a
    /// request's `messages`, which are in [`ForwardRequest::messages`]).
    pub fn raw(&self, key: &str) -> Option<RawJson<'_>> {
        // Checked JSON is UTF-8: the conversion is only the type's.
        let bytes = self.position(key).and_then(|i| self.fields[i].1.bytes())?;
        std::str::from_utf8(bytes).ok().map(RawJson)
    }

    /// `key`'s value read as `T` (`Ok(None)` when absent).
    ///
    /// # Errors
    ///
    /// When the value is not a `T`.
    pub fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, serde_json::Error> {
        self.raw(key).map(|raw| serde_json::from_str(raw.get())).transpose()
    }

    /// `key`'s value when it is a string (`None` when absent or not a
    /// string); borrowed from the body unless it holds escapes.
    pub fn string(&self, key: &str) -> Option<Cow<'_, str>> {
        let text = self.raw(key)?.get();
        let inner = text.strip_prefix('"')?.strip_suffix('"')?;
        if inner.contains('\\') {
            serde_json::from_str::<String>(text).ok().map(Cow::Owned)
        } else {
            Some(Cow::Borrowed(inner))
        }
    }

    /// The raw JSON text of `key`'s value unless it is absent or `null`.
    pub fn non_null(&self, key: &str) -> Option<RawJson<'_>> {
        self.raw(key).filter(|raw| raw.get() != "null")
    }

    /// Whether `key` asks for something: present, not `null`, and not an
    /// empty array (e.g. `tools`).
    pub fn is_set(&self, key: &str) -> bool {
        self.non_null(key)
            .is_some_and(|raw| !raw.get().strip_prefix('[').is_some_and(|rest| rest.trim_start().starts_with(']')))
    }

    /// Moves `from`'s value to `to` (at `to`'s place when `to` is there,
    /// else at `from`'s), unless `to` already has a value that is not
    /// `null` (it wins) or `from` is `null`: then `from` is dropped. For a field a provider knows under another name
    /// (`max_tokens` / `max_completion_tokens`).
    pub fn move_unless_set(&mut self, from: &str, to: &str) {
        let Some(value) = self.raw(from) else {
            return;
        };
        if value.get() == "null" || self.non_null(to).is_some() {
            self.remove(from);
        } else {
            self.rename(from, to);
        }
    }

    /// Whether the object has `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Removes `key`; returns whether it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        match self.position(key) {
            Some(i) => {
                self.fields.remove(i);
                true
            }
            None => false,
        }
    }

    /// Sets `key` to `value`, in place when the key exists, else last.
    ///
    /// # Errors
    ///
    /// A `request-invalid` failure when `value` cannot be encoded as JSON (a
    /// map with non-string keys; never a string, number, boolean or
    /// [`serde_json::Value`]).
    pub fn set(&mut self, key: &str, value: &impl Serialize) -> Result<(), Failure> {
        let slot = serde_json::to_string(value)
            .map(Slot::Owned)
            .map_err(|e| Failure::request_invalid(format!("cannot encode `{key}`: {e}")))?;
        match self.position(key) {
            Some(i) => self.fields[i].1 = slot,
            None => self.fields.push((Cow::Owned(key.to_owned()), slot)),
        }
        Ok(())
    }

    /// Renames `from` to `to` in place, replacing a `to` already there;
    /// returns whether `from` was there.
    pub fn rename(&mut self, from: &str, to: &str) -> bool {
        let Some(i) = self.position(from) else {
            return false;
        };
        if from == to {
            return true;
        }
        if let Some(j) = self.position(to) {
            let (_, slot) = self.fields.remove(i);
            let j = if j > i { j - 1 } else { j };
            self.fields[j].1 = slot;
        } else {
            self.fields[i].0 = Cow::Owned(to.to_owned());
        }
        true
    }

    /// Keeps only the fields whose key passes `keep`.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.fields.retain(|(key, _)| keep(key));
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(key, _)| key.as_ref())
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the object has no field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Reads an object whose values are kept as their text (a message).
    fn read(scanner: &mut Scanner<'a>) -> Result<Self, JsonError> {
        let mut object = RawObject::default();
        scanner.object(|scanner, key| {
            let value = scanner.value()?;
            object.push_parsed(key, Slot::Raw(value));
            Ok(())
        })?;
        object.merge_repeated();
        Ok(object)
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.fields.iter().position(|(k, _)| k == key)
    }

    /// Adds a parsed field: a repeated key's last value wins, at the first
    /// key's place (as `serde_json`'s ordered map reads it). Objects are
    /// small, so a linear look-up; past [`INDEXED_FROM`] fields a sorted
    /// pass at the end ([`Self::merge_repeated`]) keeps a hostile object of
    /// many keys from costing the square of its size.
    fn push_parsed(&mut self, key: Key<'a>, slot: Slot<'a>) {
        if self.fields.len() < INDEXED_FROM
            && let Some(i) = self.position(&key)
        {
            self.fields[i].1 = slot;
            return;
        }
        self.fields.push((key, slot));
    }

    /// Merges repeated keys of a large object (see [`Self::push_parsed`]).
    fn merge_repeated(&mut self) {
        if self.fields.len() <= INDEXED_FROM {
            return;
        }
        let mut order: Vec<usize> = (0..self.fields.len()).collect();
        order.sort_by(|&a, &b| self.fields[a].0.cmp(&self.fields[b].0).then(a.cmp(&b)));
        let runs: Vec<&[usize]> = order.chunk_by(|&a, &b| self.fields[a].0 == self.fields[b].0).collect();
        let mut drop = vec![false; self.fields.len()];
        for run in runs {
            if let [first, .., last] = *run {
                // The later fields go below; the placeholder is never read.
                let value = std::mem::replace(&mut self.fields[last].1, Slot::Messages);
                self.fields[first].1 = value;
                for &later in &run[1..] {
                    drop[later] = true;
                }
            }
        }
        let mut index = 0;
        self.fields.retain(|_| {
            index += 1;
            !drop[index - 1]
        });
    }

    fn write(&self, out: &mut Splicer<'_>, messages: Option<&[RawObject<'_>]>) -> Result<(), serde_json::Error> {
        out.text().push(b'{');
        for (i, (key, slot)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.text().push(b',');
            }
            write_key(out.text(), key)?;
            match slot {
                Slot::Raw(raw) => out.value(raw),
                Slot::Owned(raw) => out.text().extend_from_slice(raw.as_bytes()),
                Slot::Messages => {
                    out.text().push(b'[');
                    for (i, message) in messages.unwrap_or_default().iter().enumerate() {
                        if i > 0 {
                            out.text().push(b',');
                        }
                        message.write(out, None)?;
                    }
                    out.text().push(b']');
                }
            }
        }
        out.text().push(b'}');
        Ok(())
    }
}

/// Objects with more fields than this merge repeated keys after parsing.
const INDEXED_FROM: usize = 16;

const MESSAGES: &str = "messages";

fn write_key(out: &mut Vec<u8>, key: &Key<'_>) -> Result<(), serde_json::Error> {
    match key {
        // A key borrowed from the body had no escapes, so nothing in it
        // needs one: it is written as it was read.
        Cow::Borrowed(key) => {
            out.push(b'"');
            out.extend_from_slice(key.as_bytes());
            out.push(b'"');
        }
        Cow::Owned(key) => serde_json::to_writer(&mut *out, key)?,
    }
    out.push(b':');
    Ok(())
}

/// A chat request body, split for forwarding (see the [module](self)).
#[derive(Debug, Clone)]
pub struct ForwardRequest<'a> {
    /// The top-level fields. `messages` keeps its place here, but its
    /// value is [`messages`](Self::messages); setting `messages` here
    /// replaces them, removing it drops them.
    pub fields: RawObject<'a>,
    /// The messages, each an object of raw values.
    pub messages: Vec<RawObject<'a>>,
    /// The body it was split from.
    body: &'a [u8],
}

impl<'a> ForwardRequest<'a> {
    /// Splits a body: a JSON object with a `messages` array of objects.
    ///
    /// # Errors
    ///
    /// When the body is not JSON, not an object, has no `messages`, or a
    /// message is not an object.
    pub fn parse(body: &'a [u8]) -> Result<Self, JsonError> {
        let mut scanner = Scanner::new(body);
        let mut fields = RawObject::default();
        let mut messages = None;
        scanner.object(|scanner, key| {
            let slot = if key == MESSAGES {
                let mut list = Vec::new();
                scanner.array(|scanner| {
                    list.push(RawObject::read(scanner)?);
                    Ok(())
                })?;
                messages = Some(list);
                Slot::Messages
            } else {
                Slot::Raw(scanner.value()?)
            };
            fields.push_parsed(key, slot);
            Ok(())
        })?;
        fields.merge_repeated();
        scanner.end()?;
        let messages = messages.ok_or_else(|| JsonError::new("missing field `messages`", 0))?;
        Ok(ForwardRequest { fields, messages, body })
    }

    /// The body, as JSON bytes: the fields in their order, the ones the
    /// adapter did not touch as the client wrote them. `capacity` sizes the
    /// buffer up front (the original body's length, plus room for what was
    /// added, spares the copies of a growing buffer).
    ///
    /// # Errors
    ///
    /// Only when a key cannot be written (never for UTF-8 keys).
    pub fn to_vec(&self, capacity: usize) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Splicer::copying(capacity);
        self.fields.write(&mut out, Some(&self.messages))?;
        Ok(out.into_written())
    }

    /// The body like [`to_vec`](Self::to_vec), as a [`RequestBody`]: when
    /// this request was split from the body the host passed to the
    /// `map-request` call under way, what is forwarded unchanged (a long
    /// prompt, a conversation) is named by its place there instead of
    /// copied (see [`splice`](crate::splice)); `capacity` sizes the written
    /// bytes.
    ///
    /// # Errors
    ///
    /// Only when a key cannot be written (never for UTF-8 keys).
    pub fn to_body(&self, capacity: usize) -> Result<RequestBody, serde_json::Error> {
        let mut out = if crate::splice::is_call_body(self.body) {
            Splicer::naming(capacity, self.body)
        } else {
            Splicer::copying(capacity)
        };
        self.fields.write(&mut out, Some(&self.messages))?;
        Ok(out.finish())
    }
}

#[cfg(test)]
mod tests;

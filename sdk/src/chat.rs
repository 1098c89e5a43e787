//! Serde types for OpenAI chat bodies: the request ([`ChatRequest`]), the
//! answer ([`ChatCompletion`]) and a stream chunk ([`ChatCompletionChunk`]).
//!
//! They are deliberately loose: the fields an adapter commonly looks at are
//! named, deep structures (messages, tools, choices) stay
//! [`serde_json::Value`]s, and every field the type does not name lands in
//! `extra` and is written back out, so nothing a client sends is lost on the
//! way to the provider. Absent fields stay absent (`null` stays `null` for
//! `Value` fields). [`ChatRequest::from_slice`] also remembers the key order
//! of the body and [`ChatRequest::to_vec`] writes it back in that order.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::openai_compat::{first_finish_reason, usage_from_json};
use crate::{FinishReason, Usage};

/// Deserializes a present field as `Some(value)`, `null` included, so that an
/// explicit `null` survives a round-trip (absent fields use `default`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Declares [`ChatRequest`]: the fixed fields, then one `Option<Value>`
/// field per name listed, with move-only conversions from and to a JSON
/// object generated from the same list (so a field added here is handled
/// everywhere).
macro_rules! chat_request {
    ($( $(#[doc = $doc:literal])* $field:ident, )*) => {
        /// An OpenAI `POST /chat/completions` request body.
        ///
        /// Named fields are the ones adapters commonly inspect or rewrite; anything
        /// else is kept in [`extra`](Self::extra). Build one in code with
        /// `ChatRequest { model, messages, ..Default::default() }`.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        pub struct ChatRequest {
            /// Model id. The SDK's default mapping replaces it with the upstream id.
            #[serde(default)]
            pub model: String,
            /// The conversation, as OpenAI message objects.
            pub messages: Vec<Value>,
            /// `true` for a streaming answer.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub stream: Option<bool>,
            $(
                $(#[doc = $doc])*
                #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
                pub $field: Option<Value>,
            )*
            /// Every other field of the body, in its original order.
            #[serde(flatten)]
            pub extra: Map<String, Value>,
            /// Key order of the body this request was parsed from (by
            /// [`from_slice`](Self::from_slice)); [`to_map`](Self::to_map) writes the
            /// keys that still exist in this order and new ones after them. Empty
            /// for a request built in code.
            #[serde(skip)]
            pub key_order: Vec<String>,
        }

        impl ChatRequest {
            /// Builds a request from a parsed body by moving each field into
            /// place (no copy of the messages); same rules as the serde
            /// derive: `messages` is required, `model` must be a string,
            /// `stream` a boolean or `null`.
            fn from_object(map: Map<String, Value>) -> Result<Self, serde_json::Error> {
                use serde::de::{Error as _, Unexpected};
                let mut req = Self { key_order: Vec::with_capacity(map.len()), ..Self::default() };
                let mut messages = None;
                for (key, value) in map {
                    match key.as_str() {
                        "model" => match value {
                            Value::String(model) => req.model = model,
                            other => return Err(serde_json::Error::invalid_type(unexpected(&other), &"a string")),
                        },
                        "messages" => match value {
                            Value::Array(list) => messages = Some(list),
                            other => return Err(serde_json::Error::invalid_type(unexpected(&other), &"a sequence")),
                        },
                        "stream" => match value {
                            Value::Bool(b) => req.stream = Some(b),
                            Value::Null => req.stream = None,
                            other => return Err(serde_json::Error::invalid_type(unexpected(&other), &"a boolean")),
                        },
                        $( stringify!($field) => req.$field = Some(value), )*
                        _ => {
                            req.extra.insert(key.clone(), value);
                        }
                    }
                    req.key_order.push(key);
                }
                req.messages = messages.ok_or_else(|| serde_json::Error::missing_field("messages"))?;
                return Ok(req);

                fn unexpected(value: &Value) -> Unexpected<'_> {
                    match value {
                        Value::Null => Unexpected::Unit,
                        Value::Bool(b) => Unexpected::Bool(*b),
                        Value::Number(_) => Unexpected::Other("a number"),
                        Value::String(s) => Unexpected::Str(s),
                        Value::Array(_) => Unexpected::Seq,
                        Value::Object(_) => Unexpected::Map,
                    }
                }
            }

            /// Takes the named field `key` out of the request (`None` when it
            /// is not a named field or is absent).
            fn take_named(&mut self, key: &str) -> Option<Value> {
                match key {
                    "model" => Some(Value::String(std::mem::take(&mut self.model))),
                    "messages" => Some(Value::Array(std::mem::take(&mut self.messages))),
                    "stream" => self.stream.take().map(Value::Bool),
                    $( stringify!($field) => self.$field.take(), )*
                    _ => None,
                }
            }

            /// Moves the named fields that are still set into `out`, in
            /// declaration order, after what is there already (`model` and
            /// `messages` unless `out` has them).
            fn drain_named_into(&mut self, out: &mut Map<String, Value>, has_model: bool, has_messages: bool) {
                if !has_model {
                    out.insert("model".to_owned(), Value::String(std::mem::take(&mut self.model)));
                }
                if !has_messages {
                    out.insert("messages".to_owned(), Value::Array(std::mem::take(&mut self.messages)));
                }
                if let Some(stream) = self.stream.take()
                    && !out.contains_key("stream")
                {
                    out.insert("stream".to_owned(), Value::Bool(stream));
                }
                $(
                    if let Some(value) = self.$field.take()
                        && !out.contains_key(stringify!($field))
                    {
                        out.insert(stringify!($field).to_owned(), value);
                    }
                )*
            }
        }
    };
}

chat_request! {
        /// Stream options, e.g. `{"include_usage": true}`.
        stream_options,
        /// Sampling temperature.
        temperature,
        /// Nucleus sampling.
        top_p,
        /// Completion token limit (legacy name).
        max_tokens,
        /// Completion token limit (current name, includes reasoning tokens).
        max_completion_tokens,
        /// Number of choices.
        n,
        /// Stop sequence(s): a string or a list of strings.
        stop,
        /// Sampling seed.
        seed,
        /// Frequency penalty.
        frequency_penalty,
        /// Presence penalty.
        presence_penalty,
        /// Whether to return log probabilities.
        logprobs,
        /// How many top log probabilities to return per token.
        top_logprobs,
        /// Token id → bias map.
        logit_bias,
        /// End-user id.
        user,
        /// Tool (function) definitions.
        tools,
        /// Tool choice: `"auto"`, `"none"`, `"required"` or a named function.
        tool_choice,
        /// Whether several tool calls may come in one turn.
        parallel_tool_calls,
        /// Output format: `{"type": "json_object"}` or a JSON schema.
        response_format,
        /// Reasoning effort (`"low"`, `"medium"`, `"high"`, ...).
        reasoning_effort,
}

impl ChatRequest {
    /// Parses a request body, remembering its key order.
    pub fn from_slice(body: &[u8]) -> Result<Self, serde_json::Error> {
        Self::from_object(serde_json::from_slice(body)?)
    }

    /// The request as a JSON object, keys in their original order (see
    /// [`key_order`](Self::key_order)).
    pub fn to_map(&self) -> Result<Map<String, Value>, serde_json::Error> {
        Ok(self.clone().into_map())
    }

    /// The request as a JSON object, keys in their original order, without
    /// copying it: fields named in [`key_order`](Self::key_order) first, in
    /// that order, then the other named fields in declaration order, then
    /// the rest of [`extra`](Self::extra).
    pub fn into_map(mut self) -> Map<String, Value> {
        // Room for the usual named fields, plus the unknown ones.
        let mut out = Map::with_capacity(8 + self.extra.len());
        let mut extra = std::mem::take(&mut self.extra);
        let (mut has_model, mut has_messages) = (false, false);
        for key in std::mem::take(&mut self.key_order) {
            has_model |= key == "model";
            has_messages |= key == "messages";
            let value = match self.take_named(&key) {
                Some(value) => Some(value),
                None => extra.shift_remove(&key),
            };
            if let Some(value) = value {
                out.insert(key, value);
            }
        }
        // Named fields not in the body's order (set in code).
        self.drain_named_into(&mut out, has_model, has_messages);
        out.extend(extra);
        out
    }

    /// The request as JSON bytes, keys in their original order.
    pub fn to_vec(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&self.to_map()?)
    }
}

fn completion_object() -> String {
    "chat.completion".to_owned()
}

fn chunk_object() -> String {
    "chat.completion.chunk".to_owned()
}

/// An OpenAI `chat.completion` answer.
///
/// Adapters for providers with their own answer format build one and
/// serialize it; choices stay JSON values (`{"index", "message",
/// "finish_reason"}` objects).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// Answer id.
    #[serde(default)]
    pub id: String,
    /// Always `chat.completion`.
    #[serde(default = "completion_object")]
    pub object: String,
    /// Unix time (seconds) of creation.
    #[serde(default)]
    pub created: u64,
    /// Model that answered.
    #[serde(default)]
    pub model: String,
    /// The choices.
    #[serde(default)]
    pub choices: Vec<Value>,
    /// Token usage: `{"prompt_tokens", "completion_tokens", "total_tokens"}`.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
    /// Backend fingerprint.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<Value>,
    /// Every other field, in order.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for ChatCompletion {
    fn default() -> Self {
        Self {
            id: String::new(),
            object: completion_object(),
            created: 0,
            model: String::new(),
            choices: Vec::new(),
            usage: None,
            system_fingerprint: None,
            extra: Map::new(),
        }
    }
}

impl ChatCompletion {
    /// Usage in the contract's terms, when the answer reports it.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.as_ref().and_then(usage_from_json)
    }

    /// Finish reason of the first choice, when it has one.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        first_finish_reason(&self.choices)
    }
}

/// An OpenAI `chat.completion.chunk` (one streaming event).
///
/// Choices stay JSON values (`{"index", "delta", "finish_reason"}` objects).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// Answer id (the same on every chunk of one answer).
    #[serde(default)]
    pub id: String,
    /// Always `chat.completion.chunk`.
    #[serde(default = "chunk_object")]
    pub object: String,
    /// Unix time (seconds) of creation.
    #[serde(default)]
    pub created: u64,
    /// Model that answered.
    #[serde(default)]
    pub model: String,
    /// The choice deltas (empty on a final usage-only chunk).
    #[serde(default)]
    pub choices: Vec<Value>,
    /// Token usage, on the final chunk when the client asked for it.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
    /// Backend fingerprint.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<Value>,
    /// Every other field, in order.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for ChatCompletionChunk {
    fn default() -> Self {
        Self {
            id: String::new(),
            object: chunk_object(),
            created: 0,
            model: String::new(),
            choices: Vec::new(),
            usage: None,
            system_fingerprint: None,
            extra: Map::new(),
        }
    }
}

impl ChatCompletionChunk {
    /// Usage in the contract's terms, when the chunk carries it.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.as_ref().and_then(usage_from_json)
    }

    /// Finish reason of the first choice, when the chunk carries one.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        first_finish_reason(&self.choices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BODY: &str = r#"{"temperature":0.2,"model":"free","x_custom":{"a":[1,2]},"messages":[{"content":"hi","role":"user","cache_control":{"type":"ephemeral"}}],"stream":true,"top_k":40,"tools":null,"max_tokens":100}"#;

    #[test]
    fn round_trip_keeps_unknown_fields_nulls_and_order() {
        let req = ChatRequest::from_slice(BODY.as_bytes()).unwrap();
        assert_eq!(req.model, "free");
        assert_eq!(req.stream, Some(true));
        assert_eq!(req.tools, Some(Value::Null));
        assert_eq!(req.max_tokens, Some(json!(100)));
        assert_eq!(req.extra.keys().collect::<Vec<_>>(), ["x_custom", "top_k"]);
        assert_eq!(String::from_utf8(req.to_vec().unwrap()).unwrap(), BODY);
    }

    #[test]
    fn absent_fields_stay_absent_and_new_fields_go_last() {
        let mut req = ChatRequest::from_slice(br#"{"model":"m","messages":[]}"#).unwrap();
        req.temperature = Some(json!(1));
        req.extra.insert("z".into(), json!(true));
        assert_eq!(
            String::from_utf8(req.to_vec().unwrap()).unwrap(),
            r#"{"model":"m","messages":[],"temperature":1,"z":true}"#
        );
    }

    #[test]
    fn request_built_in_code_uses_declaration_order() {
        let req = ChatRequest {
            model: "m".into(),
            messages: vec![json!({"role": "user", "content": "x"})],
            ..Default::default()
        };
        assert_eq!(
            String::from_utf8(req.to_vec().unwrap()).unwrap(),
            r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#
        );
    }

    #[test]
    fn bad_bodies_are_errors() {
        assert!(ChatRequest::from_slice(b"[]").is_err());
        assert!(ChatRequest::from_slice(b"{\"model\":\"m\"}").is_err());
        assert!(ChatRequest::from_slice(b"{\"model\":\"m\",\"messages\":[],\"stream\":\"yes\"}").is_err());
        assert!(ChatRequest::from_slice(b"not json").is_err());
    }

    #[test]
    fn completion_and_chunk_keep_extra_fields() {
        let text = r#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5},"x_groq":{"id":"r"}}"#;
        let c: ChatCompletion = serde_json::from_str(text).unwrap();
        assert_eq!(c.finish_reason(), Some(FinishReason::Length));
        assert_eq!(c.usage().map(|u| u.total_tokens), Some(5));
        assert_eq!(serde_json::to_string(&c).unwrap(), text);

        let chunk: ChatCompletionChunk =
            serde_json::from_str(r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"o"},"finish_reason":null}]}"#)
                .unwrap();
        assert_eq!(chunk.object, "chat.completion.chunk");
        assert_eq!(chunk.finish_reason(), None);
        assert_eq!(ChatCompletion::default().object, "chat.completion");
    }
}

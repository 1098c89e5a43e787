//! Building OpenAI answers from another API's parts, for adapters whose
//! provider does not answer in OpenAI's shape.
//!
//! * [`ChunkBuilder`] writes `chat.completion.chunk`s for a stream: it keeps
//!   the answer's id, model and creation time across chunks, sends the
//!   assistant role once, numbers nothing itself (tool calls carry the
//!   provider's index), and ends with a finish chunk and the usage-only
//!   chunk OpenAI sends last. Each method also notes the finish reason and
//!   usage in the [`StreamOutput`] the host reads.
//! * [`completion`] writes a whole `chat.completion` with its
//!   [`NormalizedResponse`] metadata.
//!
//! `created` is the provider's time when it gives one; an adapter has no
//! clock, so it is left 0 otherwise (the host fills a 0).

use serde_json::{Map, Value, json};

use crate::openai_compat::{finish_reason_to_str, usage_to_json};
use crate::{FinishReason, NormalizedResponse, StreamOutput, Usage};

/// Writes the `chat.completion.chunk`s of one streamed answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChunkBuilder {
    id: String,
    model: String,
    created: u64,
    role_sent: bool,
}

impl ChunkBuilder {
    /// A builder for the answer `id` from `model`.
    pub fn new(id: impl Into<String>, model: impl Into<String>) -> Self {
        Self { id: id.into(), model: model.into(), created: 0, role_sent: false }
    }

    /// Sets the answer id (e.g. once the provider's first event names it);
    /// every later chunk carries it.
    pub fn set_id(&mut self, id: impl Into<String>) {
        self.id = id.into();
    }

    /// Sets the model every later chunk names.
    pub fn set_model(&mut self, model: impl Into<String>) {
        self.model = model.into();
    }

    /// Sets the creation time (Unix seconds) every later chunk carries.
    pub fn set_created(&mut self, created: u64) {
        self.created = created;
    }

    /// The answer id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The model chunks name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Emits the opening chunk: `{"role": "assistant", "content": ""}`
    /// (nothing when the role was already sent). Sending it on the
    /// provider's first event lets the client see the stream start.
    pub fn start(&mut self, out: &mut StreamOutput) {
        if !self.role_sent {
            self.delta(out, Map::from_iter([("content".to_owned(), json!(""))]));
        }
    }

    /// Emits a text fragment (nothing for an empty one).
    pub fn text(&mut self, out: &mut StreamOutput, text: &str) {
        if !text.is_empty() {
            self.delta(out, Map::from_iter([("content".to_owned(), json!(text))]));
        }
    }

    /// Emits the start of tool call number `index`: its id, name and empty
    /// arguments.
    pub fn tool_call_start(&mut self, out: &mut StreamOutput, index: u64, id: &str, name: &str) {
        let call = json!({"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}});
        self.delta(out, Map::from_iter([("tool_calls".to_owned(), json!([call]))]));
    }

    /// Emits a fragment of the arguments of tool call number `index`
    /// (nothing for an empty one).
    pub fn tool_call_arguments(&mut self, out: &mut StreamOutput, index: u64, fragment: &str) {
        if !fragment.is_empty() {
            let call = json!({"index": index, "function": {"arguments": fragment}});
            self.delta(out, Map::from_iter([("tool_calls".to_owned(), json!([call]))]));
        }
    }

    /// Emits a chunk with `delta` (any OpenAI delta fields) for choice 0;
    /// the first such chunk also carries `"role": "assistant"`.
    pub fn delta(&mut self, out: &mut StreamOutput, mut delta: Map<String, Value>) {
        if !self.role_sent {
            delta.insert("role".to_owned(), json!("assistant"));
            self.role_sent = true;
        }
        let choice = json!({"index": 0, "delta": delta, "finish_reason": null});
        self.push(out, vec![choice], None);
    }

    /// Emits the finish chunk (an empty delta with the finish reason) and
    /// notes the reason in `out`.
    pub fn finish(&mut self, out: &mut StreamOutput, reason: FinishReason) {
        let choice = json!({"index": 0, "delta": {}, "finish_reason": finish_reason_to_str(reason)});
        self.push(out, vec![choice], None);
        out.finish_reason = Some(reason);
    }

    /// Emits the usage-only chunk OpenAI sends last (`choices: []`) and
    /// notes the usage in `out`. The host drops it when the client did not
    /// ask for usage.
    pub fn usage(&mut self, out: &mut StreamOutput, usage: Usage) {
        self.push(out, Vec::new(), Some(usage_to_json(&usage)));
        out.usage = Some(usage);
    }

    /// Ends the answer: the finish chunk, then the usage chunk when the
    /// provider reported usage, and marks the output done.
    pub fn end(&mut self, out: &mut StreamOutput, reason: FinishReason, usage: Option<Usage>) {
        self.finish(out, reason);
        if let Some(usage) = usage {
            self.usage(out, usage);
        }
        out.done = true;
    }

    fn push(&self, out: &mut StreamOutput, choices: Vec<Value>, usage: Option<Value>) {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let (Some(usage), Some(object)) = (usage, chunk.as_object_mut()) {
            object.insert("usage".to_owned(), usage);
        }
        out.chunks.push(chunk.to_string().into_bytes());
    }
}

/// The parts of a whole answer, for [`completion`]. The default is an
/// empty answer that stopped normally.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Answer id.
    pub id: String,
    /// Model that answered.
    pub model: String,
    /// Unix seconds of creation; 0 when the provider gives none.
    pub created: u64,
    /// The assistant's text (`null` content when `None`, as OpenAI writes
    /// an answer that only calls tools).
    pub text: Option<String>,
    /// OpenAI `tool_calls` entries (`{"id", "type": "function",
    /// "function": {"name", "arguments"}}`).
    pub tool_calls: Vec<Value>,
    /// Why the model stopped.
    pub finish_reason: FinishReason,
    /// Token usage, when reported.
    pub usage: Option<Usage>,
}

impl Default for Completion {
    fn default() -> Self {
        Self {
            id: String::new(),
            model: String::new(),
            created: 0,
            text: None,
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
            usage: None,
        }
    }
}

/// Writes a `chat.completion` (one choice) from `parts`, with the usage and
/// finish reason the host reads.
pub fn completion(parts: Completion) -> NormalizedResponse {
    let mut message = Map::new();
    message.insert("role".to_owned(), json!("assistant"));
    message.insert("content".to_owned(), parts.text.map_or(Value::Null, Value::String));
    if !parts.tool_calls.is_empty() {
        message.insert("tool_calls".to_owned(), Value::Array(parts.tool_calls));
    }
    let mut body = json!({
        "id": parts.id,
        "object": "chat.completion",
        "created": parts.created,
        "model": parts.model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason_to_str(parts.finish_reason)}],
    });
    if let (Some(usage), Some(object)) = (&parts.usage, body.as_object_mut()) {
        object.insert("usage".to_owned(), usage_to_json(usage));
    }
    NormalizedResponse {
        body: body.to_string().into_bytes(),
        usage: parts.usage,
        finish_reason: Some(parts.finish_reason),
    }
}

#[cfg(test)]
mod tests;

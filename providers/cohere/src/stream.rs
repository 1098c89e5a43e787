//! Cohere's stream events as OpenAI chunks, run by the SDK's
//! [`NamedEventStream`](freellm_sdk::NamedEventStream):
//!
//! | Cohere event | OpenAI chunk |
//! |---|---|
//! | `message-start` (`id`) | the opening chunk (role), with Cohere's id on every chunk |
//! | `content-delta` (`delta.message.content.text`) | a text delta |
//! | `tool-call-start` (`delta.message.tool_calls`: id, name, arguments) | a tool call's start, numbered by the order calls start |
//! | `tool-call-delta` (`delta.message.tool_calls.function.arguments`) | an arguments fragment |
//! | `message-end` (`delta.finish_reason`, `delta.usage`) | the finish chunk and the usage chunk; the stream ends |
//!
//! `content-start`, `content-end`, `tool-plan-delta`, `tool-call-end`,
//! citations and any event Cohere adds later carry nothing for an OpenAI
//! client and are skipped.

use freellm_sdk::named_events::{EventHandler, NamedEvent};
use freellm_sdk::{ChunkBuilder, Failure, FinishReason, StreamOutput};
use serde_json::Value;

use crate::answer::{finish_reason, usage};

/// The state of one Cohere stream: which OpenAI tool-call index each of
/// Cohere's tool-call indices got.
#[derive(Debug, Default)]
pub struct Events {
    tool_calls: Vec<u64>,
}

impl Events {
    /// The OpenAI index of Cohere's tool call `cohere_index`, numbering a
    /// new one after those seen.
    fn call_index(&mut self, cohere_index: u64) -> u64 {
        match self.tool_calls.iter().position(|i| *i == cohere_index) {
            Some(at) => at as u64,
            None => {
                self.tool_calls.push(cohere_index);
                self.tool_calls.len() as u64 - 1
            }
        }
    }
}

impl EventHandler for Events {
    fn is_terminal(&self, name: &str) -> bool {
        name == "message-end"
    }

    fn on_event(
        &mut self,
        event: NamedEvent<'_>,
        chunks: &mut ChunkBuilder,
        out: &mut StreamOutput,
    ) -> Result<(), Failure> {
        let data = event.data;
        let text = |pointer: &str| data.pointer(pointer).and_then(Value::as_str).unwrap_or_default();
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        match event.name {
            "message-start" => {
                if let Some(id) = data.get("id").and_then(Value::as_str) {
                    chunks.set_id(id);
                }
                chunks.start(out);
            }
            "content-start" | "content-delta" => chunks.text(out, text("/delta/message/content/text")),
            "tool-call-start" => {
                let index = self.call_index(index);
                let (id, name) =
                    (text("/delta/message/tool_calls/id"), text("/delta/message/tool_calls/function/name"));
                chunks.tool_call_start(out, index, id, name);
                chunks.tool_call_arguments(out, index, text("/delta/message/tool_calls/function/arguments"));
            }
            "tool-call-delta" => {
                let index = self.call_index(index);
                chunks.tool_call_arguments(out, index, text("/delta/message/tool_calls/function/arguments"));
            }
            "message-end" => {
                let reason = match data.pointer("/delta/finish_reason").and_then(Value::as_str) {
                    Some(reason) => finish_reason(reason)?,
                    None => FinishReason::Stop,
                };
                chunks.end(out, reason, data.pointer("/delta/usage").and_then(usage));
            }
            _ => {}
        }
        Ok(())
    }
}

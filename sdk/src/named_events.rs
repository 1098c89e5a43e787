//! Stream normalizers for providers whose streams are sequences of named
//! events (Cohere's `message-start` / `content-delta` / `message-end`,
//! Anthropic's `message_start` / `content_block_delta` / `message_stop`)
//! rather than OpenAI chunks.
//!
//! [`NamedEventStream`] does what every such stream needs: it names each
//! event (the SSE `event:` field, else a `type` field in the JSON data),
//! skips keep-alives (`ping`, blank events), turns error events into a
//! failure, stops at the terminal event and ignores whatever follows. An
//! adapter writes only an [`EventHandler`]: what each event means, written
//! as OpenAI chunks through a [`ChunkBuilder`].
//!
//! ```
//! use freellm_sdk::named_events::{EventHandler, NamedEvent, NamedEventStream};
//! use freellm_sdk::{ChunkBuilder, Failure, FinishReason, StreamOutput};
//!
//! #[derive(Default)]
//! struct Events;
//!
//! impl EventHandler for Events {
//!     fn is_terminal(&self, name: &str) -> bool {
//!         name == "done"
//!     }
//!     fn on_event(&mut self, event: NamedEvent<'_>, chunks: &mut ChunkBuilder, out: &mut StreamOutput)
//!         -> Result<(), Failure> {
//!         match event.name {
//!             "text" => chunks.text(out, event.data["text"].as_str().unwrap_or_default()),
//!             "done" => chunks.end(out, FinishReason::Stop, None),
//!             _ => {}
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let stream = NamedEventStream::new(Events, ChunkBuilder::new("answer-1", "model-x"));
//! # let _ = stream;
//! ```

use serde_json::Value;

use crate::openai_compat::UpstreamError;
use crate::{ChunkBuilder, Failure, FailureKind, LogLevel, StreamEvent, StreamNormalizer, StreamOutput, log};

/// One event of a named-event stream, as handed to an [`EventHandler`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NamedEvent<'a> {
    /// The event's name: the SSE `event:` field, else the data's type
    /// field (see [`EventHandler::type_field`]), else `""`.
    pub name: &'a str,
    /// The parsed JSON data (`null` for an event without data).
    pub data: &'a Value,
}

/// What a provider's events mean. Only [`is_terminal`](Self::is_terminal)
/// and [`on_event`](Self::on_event) are required.
pub trait EventHandler {
    /// The field of the JSON data that names the event when the SSE
    /// `event:` field does not. Default: `type`.
    fn type_field(&self) -> &str {
        "type"
    }

    /// Events that only keep the connection alive. Default: `ping`.
    fn is_keep_alive(&self, name: &str) -> bool {
        name == "ping"
    }

    /// Events that report a failure. Default: `error`.
    fn is_error(&self, name: &str) -> bool {
        name == "error"
    }

    /// The event that ends the answer; nothing after it is read.
    fn is_terminal(&self, name: &str) -> bool;

    /// Handles one event (keep-alives and error events never get here):
    /// emits chunks through `chunks`, which notes finish reason and usage in
    /// `out`. Unknown events should be ignored, so a provider adding one
    /// breaks nothing.
    fn on_event(
        &mut self,
        event: NamedEvent<'_>,
        chunks: &mut ChunkBuilder,
        out: &mut StreamOutput,
    ) -> Result<(), Failure>;

    /// The failure an error event reports. Default: [`error_event_failure`].
    fn error(&self, event: NamedEvent<'_>) -> Failure {
        error_event_failure(event.data)
    }

    /// An event whose data is not JSON: skipped (and logged) unless this
    /// returns the failure it reports.
    fn malformed(&mut self, data: &str) -> Option<Failure> {
        let _ = data;
        None
    }

    /// The upstream ended. `terminal_seen` tells whether the terminal event
    /// arrived; without it the host counts the stream as cut. Default:
    /// nothing to flush.
    fn on_end(
        &mut self,
        terminal_seen: bool,
        chunks: &mut ChunkBuilder,
        out: &mut StreamOutput,
    ) -> Result<(), Failure> {
        let _ = (terminal_seen, chunks, out);
        Ok(())
    }
}

/// A failure from an error event's data: the message and code of
/// `{"error": {...}}`, `{"message": ...}` or a bare string, as
/// [`UpstreamError`] reads them. `rate-limited` when the code or type names
/// a rate limit, `transient` otherwise (the provider failed mid-answer;
/// another may answer).
pub fn error_event_failure(data: &Value) -> Failure {
    let error = UpstreamError::from_json(data);
    let label = [&error.code, &error.error_type].into_iter().flatten().map(|s| s.to_lowercase()).collect::<String>();
    let kind = if label.contains("rate_limit") || label.contains("rate-limit") || label.contains("429") {
        FailureKind::RateLimited
    } else {
        FailureKind::Transient
    };
    Failure {
        kind,
        message: error.message.unwrap_or_else(|| "the upstream reported an error".to_owned()),
        retry_after_ms: None,
        upstream_code: error.code.or(error.error_type),
    }
}

/// The [`StreamNormalizer`] of a named-event stream run by handler `H`.
#[derive(Debug)]
pub struct NamedEventStream<H> {
    handler: H,
    chunks: ChunkBuilder,
    done: bool,
}

impl<H: EventHandler> NamedEventStream<H> {
    /// A stream whose events go to `handler`, writing chunks with `chunks`
    /// (whose id and model the handler may change as events name them).
    pub fn new(handler: H, chunks: ChunkBuilder) -> Self {
        Self { handler, chunks, done: false }
    }

    fn push_one(&mut self, event: StreamEvent, out: &mut StreamOutput) -> Result<(), Failure> {
        let sse_name = event.event.as_deref().map(str::trim).filter(|n| !n.is_empty());
        if sse_name.is_some_and(|n| self.handler.is_keep_alive(n)) {
            return Ok(());
        }
        let text = event.data.trim();
        // Blank data and SSE comments that reach the adapter carry nothing.
        if (text.is_empty() && sse_name.is_none()) || text.starts_with(':') {
            return Ok(());
        }
        if text == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let data = if text.is_empty() {
            Value::Null
        } else {
            match serde_json::from_str::<Value>(text) {
                Ok(data) => data,
                Err(e) => {
                    if let Some(failure) = self.handler.malformed(text) {
                        return Err(failure);
                    }
                    log(LogLevel::Warn, &format!("skipped a malformed stream event ({e})"));
                    return Ok(());
                }
            }
        };
        let type_name = data.get(self.handler.type_field()).and_then(Value::as_str);
        let name = sse_name.or(type_name).unwrap_or("");
        let event = NamedEvent { name, data: &data };
        if self.handler.is_keep_alive(name) {
            return Ok(());
        }
        if self.handler.is_error(name) {
            return Err(self.handler.error(event));
        }
        self.handler.on_event(event, &mut self.chunks, out)?;
        if self.handler.is_terminal(name) {
            self.done = true;
        }
        Ok(())
    }
}

impl<H: EventHandler> StreamNormalizer for NamedEventStream<H> {
    fn push(&mut self, events: Vec<StreamEvent>) -> Result<StreamOutput, Failure> {
        let mut out = StreamOutput::empty();
        for event in events {
            if self.done {
                break;
            }
            self.push_one(event, &mut out)?;
            // A handler may end the answer itself (`ChunkBuilder::end`).
            self.done |= out.done;
        }
        out.done = self.done;
        Ok(out)
    }

    fn finish(&mut self) -> Result<StreamOutput, Failure> {
        let mut out = StreamOutput::empty();
        self.handler.on_end(self.done, &mut self.chunks, &mut out)?;
        out.done = self.done;
        Ok(out)
    }
}

#[cfg(test)]
mod tests;

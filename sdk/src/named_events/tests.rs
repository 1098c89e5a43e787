use serde_json::json;

use super::*;
use crate::{FinishReason, Usage};

/// An Anthropic-shaped handler: `content_block_delta` text, usage and stop
/// reason on `message_delta`, `message_stop` ends.
#[derive(Default)]
struct Messages {
    usage: Option<Usage>,
    ended_with_terminal: Option<bool>,
}

impl EventHandler for Messages {
    fn is_terminal(&self, name: &str) -> bool {
        name == "message_stop"
    }

    fn on_event(
        &mut self,
        event: NamedEvent<'_>,
        chunks: &mut ChunkBuilder,
        out: &mut StreamOutput,
    ) -> Result<(), Failure> {
        match event.name {
            "message_start" => {
                chunks.set_id(event.data["message"]["id"].as_str().unwrap_or_default());
                chunks.start(out);
            }
            "content_block_delta" => chunks.text(out, event.data["delta"]["text"].as_str().unwrap_or_default()),
            "message_delta" => {
                let output = event.data["usage"]["output_tokens"].as_u64().unwrap_or(0) as u32;
                self.usage = Some(Usage { prompt_tokens: 4, completion_tokens: output, total_tokens: 4 + output });
            }
            "message_stop" => chunks.end(out, FinishReason::Stop, self.usage),
            _ => {}
        }
        Ok(())
    }

    fn on_end(&mut self, terminal_seen: bool, _: &mut ChunkBuilder, _: &mut StreamOutput) -> Result<(), Failure> {
        self.ended_with_terminal = Some(terminal_seen);
        Ok(())
    }
}

fn sse(name: &str, data: Value) -> StreamEvent {
    StreamEvent { event: Some(name.to_owned()), data: data.to_string() }
}

fn bare(data: &str) -> StreamEvent {
    StreamEvent { event: None, data: data.to_owned() }
}

fn stream() -> NamedEventStream<Messages> {
    NamedEventStream::new(Messages::default(), ChunkBuilder::new("", "claude"))
}

fn texts(out: &StreamOutput) -> Vec<String> {
    out.chunks
        .iter()
        .map(|c| serde_json::from_slice::<Value>(c).unwrap())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn events_are_dispatched_by_their_sse_name_and_the_terminal_event_ends_the_stream() {
    let mut s = stream();
    let out = s
        .push(vec![
            sse("message_start", json!({"type": "message_start", "message": {"id": "msg_1"}})),
            sse("content_block_delta", json!({"type": "content_block_delta", "delta": {"text": "Hel"}})),
            sse("content_block_delta", json!({"type": "content_block_delta", "delta": {"text": "lo"}})),
            sse("message_delta", json!({"type": "message_delta", "usage": {"output_tokens": 2}})),
            sse("message_stop", json!({"type": "message_stop"})),
            sse("content_block_delta", json!({"type": "content_block_delta", "delta": {"text": "late"}})),
        ])
        .unwrap();
    assert_eq!(texts(&out), ["", "Hel", "lo"]);
    assert!(out.done);
    assert_eq!(out.finish_reason, Some(FinishReason::Stop));
    assert_eq!(out.usage.map(|u| u.total_tokens), Some(6));
    let first: Value = serde_json::from_slice(&out.chunks[0]).unwrap();
    assert_eq!(first["id"], "msg_1");
    assert!(s.push(vec![sse("content_block_delta", json!({"delta": {"text": "x"}}))]).unwrap().chunks.is_empty());
    assert!(s.finish().unwrap().done);
    assert_eq!(s.handler.ended_with_terminal, Some(true));
}

#[test]
fn without_an_sse_name_the_type_field_names_the_event() {
    let mut s = stream();
    let out = s
        .push(vec![bare(r#"{"type":"content_block_delta","delta":{"text":"a"}}"#), bare(r#"{"type":"message_stop"}"#)])
        .unwrap();
    assert_eq!(texts(&out), ["a"]);
    assert!(out.done);
}

#[test]
fn keep_alives_comments_blank_and_unknown_events_are_skipped() {
    let mut s = stream();
    let out = s
        .push(vec![
            sse("ping", json!({"type": "ping"})),
            StreamEvent { event: Some("ping".into()), data: String::new() },
            bare(r#"{"type":"ping"}"#),
            bare(""),
            bare("   "),
            bare(": keep-alive"),
            sse("something_new", json!({"x": 1})),
            bare("{not json"),
            bare(r#"{"type":"content_block_delta","delta":{"text":"ok"}}"#),
        ])
        .unwrap();
    assert_eq!(texts(&out), ["ok"]);
    assert!(!out.done);
    assert!(s.finish().unwrap().chunks.is_empty());
    assert_eq!(s.handler.ended_with_terminal, Some(false), "a stream cut before its terminal event is told so");
}

#[test]
fn an_error_event_fails_the_stream_with_the_providers_words() {
    let mut s = stream();
    let f = s
        .push(vec![sse(
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        )])
        .unwrap_err();
    assert_eq!(
        (f.kind, f.message.as_str(), f.upstream_code.as_deref()),
        (FailureKind::Transient, "Overloaded", Some("overloaded_error"))
    );
    let f = stream()
        .push(vec![bare(r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}"#)])
        .unwrap_err();
    assert_eq!(f.kind, FailureKind::RateLimited);
    let f = stream().push(vec![StreamEvent { event: Some("error".into()), data: String::new() }]).unwrap_err();
    assert_eq!(f.message, "the upstream reported an error");
}

#[test]
fn a_handler_may_fail_on_malformed_data() {
    struct Strict;
    impl EventHandler for Strict {
        fn is_terminal(&self, _: &str) -> bool {
            false
        }
        fn on_event(&mut self, _: NamedEvent<'_>, _: &mut ChunkBuilder, _: &mut StreamOutput) -> Result<(), Failure> {
            Ok(())
        }
        fn malformed(&mut self, data: &str) -> Option<Failure> {
            Some(Failure::transient(format!("garbage: {data}")))
        }
    }
    let mut s = NamedEventStream::new(Strict, ChunkBuilder::default());
    assert_eq!(s.push(vec![bare("<html>")]).unwrap_err().message, "garbage: <html>");
}

#[test]
fn done_sentinel_ends_the_stream() {
    let mut s = stream();
    let out = s.push(vec![bare("[DONE]"), bare(r#"{"type":"content_block_delta","delta":{"text":"x"}}"#)]).unwrap();
    assert!(out.done && out.chunks.is_empty());
}

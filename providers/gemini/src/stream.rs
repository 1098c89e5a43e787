//! Gemini's streamed tool calls, repaired into OpenAI's shape.
//!
//! Gemini's OpenAI-compatible stream sends `delta.tool_calls` entries
//! without the `index` that OpenAI clients use to assemble calls, so
//! fragments of different calls would be glued together. Parallel calls to
//! the same function are common (e.g. `get_weather` for three cities), so a
//! call cannot be identified by its function name: [`ToolCallIndexer`]
//! numbers calls by the order they start in.

use freellm_sdk::openai_compat::{may_name, stream_error};
use freellm_sdk::{ChunkRewriter, Failure, RewritingStream, StreamOutput};
use serde_json::{Map, Value};

/// Tool-call numbering of one choice.
#[derive(Debug, Default)]
struct Calls {
    /// Index the next new call gets.
    next: u64,
    /// Index of the call the last entry belonged to.
    last: Option<u64>,
    /// Call ids seen so far, with their indices.
    ids: Vec<(String, u64)>,
}

impl Calls {
    /// Gives one `delta.tool_calls` entry its index (and `type`); returns
    /// whether the entry changed. `position` is its place in the chunk.
    fn repair(&mut self, call: &mut Map<String, Value>, position: u64) -> bool {
        let mut changed = false;
        let id = call.get("id").and_then(Value::as_str).filter(|id| !id.is_empty()).map(str::to_owned);
        let named = call
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .is_some_and(|name| !name.is_empty());
        let known = id.as_ref().and_then(|id| self.ids.iter().find(|(k, _)| k == id).map(|(_, i)| *i));
        let index = match call.get("index").and_then(Value::as_u64) {
            Some(index) => index,
            None => {
                let index = match (known, id.is_some() || named, self.last) {
                    (Some(index), ..) => index,
                    (None, true, _) => self.next,
                    (None, false, Some(last)) => last,
                    (None, false, None) => position,
                };
                call.insert("index".into(), index.into());
                changed = true;
                index
            }
        };
        if let (Some(id), None) = (id, known) {
            self.ids.push((id, index));
        }
        self.last = Some(index);
        self.next = self.next.max(index + 1);
        if !call.get("type").is_some_and(Value::is_string) {
            call.insert("type".into(), "function".into());
            changed = true;
        }
        changed
    }
}

/// Stream normalizer for Gemini: numbers tool calls, forwards everything
/// else byte for byte.
///
/// For each `choices[].delta.tool_calls[]` entry (numbered per choice):
/// * an explicit numeric `index` is kept;
/// * an entry whose `id` was seen before reuses that call's index;
/// * an entry with a new `id` or a function `name` starts a new call and
///   takes the next index (0, 1, 2, ...), so parallel calls to the same
///   function stay apart;
/// * an argument-only fragment (no `id`, no `name`) continues the call of
///   the previous entry, or takes its position in the chunk when no call
///   started yet;
/// * `type` is set to `"function"` when missing.
///
/// Chunks without tool calls pass through unchanged; events that are not
/// JSON objects are skipped (the host writes every chunk as an SSE event,
/// so a broken one must not reach the client); an error event (an
/// `{"error": ...}` object, or Google's one-element array of one) fails the
/// stream.
pub type ToolCallIndexer = RewritingStream<ToolCallNumbering>;

/// The numbering state of one stream (see [`ToolCallIndexer`]).
#[derive(Debug, Default)]
pub struct ToolCallNumbering {
    /// Numbering per choice index.
    choices: Vec<(u64, Calls)>,
}

impl ToolCallNumbering {
    fn calls(&mut self, choice: u64) -> &mut Calls {
        let at = match self.choices.iter().position(|(i, _)| *i == choice) {
            Some(at) => at,
            None => {
                self.choices.push((choice, Calls::default()));
                self.choices.len() - 1
            }
        };
        &mut self.choices[at].1
    }

    /// Repairs the tool calls of one chunk; returns whether it changed.
    fn repair(&mut self, chunk: &mut Map<String, Value>) -> bool {
        let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) else {
            return false;
        };
        let mut changed = false;
        for (position, choice) in choices.iter_mut().enumerate() {
            let choice_index = choice.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
            let Some(entries) = choice.pointer_mut("/delta/tool_calls").and_then(Value::as_array_mut) else {
                continue;
            };
            let calls = self.calls(choice_index);
            for (position, entry) in entries.iter_mut().enumerate() {
                if let Some(entry) = entry.as_object_mut() {
                    changed |= calls.repair(entry, position as u64);
                }
            }
        }
        changed
    }
}

/// The failure carried by an event that is Google's error array
/// (`[{"error": {...}}]`), if it is one.
fn array_error(data: &str) -> Option<Failure> {
    let data = data.trim_start();
    if !data.starts_with('[') {
        return None;
    }
    match serde_json::from_str::<Value>(data).ok()? {
        Value::Array(items) => match items.into_iter().next()? {
            Value::Object(first) => stream_error(&first),
            _ => None,
        },
        _ => None,
    }
}

impl ChunkRewriter for ToolCallNumbering {
    fn rewrite(&mut self, chunk: &mut Map<String, Value>, _out: &mut StreamOutput) -> bool {
        self.repair(chunk)
    }

    fn malformed(&mut self, data: &str) -> Option<Failure> {
        array_error(data)
    }

    /// Only chunks that may hold tool calls (a `\u` escape could spell the
    /// name too) are read as maps; the others are forwarded after a
    /// borrowed read, and the numbering only changes on tool calls. An
    /// error array is not an object, so it always takes the full path.
    fn rewrites(&self, data: &str) -> bool {
        may_name(data, &["tool_calls"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use freellm_sdk::{FailureKind, FinishReason, StreamEvent, StreamNormalizer};
    use serde_json::json;

    fn event(data: &str) -> StreamEvent {
        StreamEvent { event: None, data: data.to_owned() }
    }

    #[test]
    fn chunks_left_to_the_borrowed_read_come_out_as_from_the_full_path() {
        use freellm_sdk::RewritingStream;
        use freellm_sdk::openai_compat::EveryChunk;
        let chunks = [
            r#"{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":"hi"},"finish_reason":null}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{}"}}]}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":"{\"x\":1}"}}]}}]}"#,
            r#"{"id":"c","choices":[{"index":1,"delta":{"tool\u005fcalls":[{"id":"b","function":{"name":"g"}}]}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
            r#"[{"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED"}}]"#,
            r#"{"error":{"message":"quota"}}"#,
            "not json",
            "[DONE]",
        ];
        let events = |from: usize| chunks[from..].iter().map(|c| event(c)).collect::<Vec<_>>();
        for (from, first) in chunks.iter().enumerate() {
            let peeked = RewritingStream::new(ToolCallNumbering::default()).push(events(from));
            let full = RewritingStream::new(EveryChunk(ToolCallNumbering::default())).push(events(from));
            assert_eq!(peeked, full, "from {first}");
        }
        assert!(!ToolCallNumbering::default().rewrites(chunks[0]));
    }

    fn calls_chunk(calls: Value) -> String {
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gemini-2.5-flash",
               "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": calls}, "finish_reason": null}]})
        .to_string()
    }

    fn calls_of(chunk: &[u8]) -> Value {
        let v: Value = serde_json::from_slice(chunk).unwrap();
        v["choices"][0]["delta"]["tool_calls"].clone()
    }

    fn indices(chunk: &[u8]) -> Vec<u64> {
        calls_of(chunk).as_array().unwrap().iter().map(|c| c["index"].as_u64().unwrap()).collect()
    }

    #[test]
    fn parallel_calls_to_the_same_function_stay_apart() {
        let mut s = ToolCallIndexer::default();
        let both = calls_chunk(json!([
            {"id": "call_a", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_b", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}
        ]));
        let third = calls_chunk(json!([
            {"function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}
        ]));
        let out = s.push(vec![event(&both), event(&third)]).unwrap();
        assert_eq!(indices(&out.chunks[0]), [0, 1]);
        assert_eq!(indices(&out.chunks[1]), [2]);
        assert_eq!(
            calls_of(&out.chunks[0])[1],
            json!({"id": "call_b", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}, "index": 1, "type": "function"})
        );
    }

    #[test]
    fn fragments_continue_the_latest_call_and_known_ids_reuse_theirs() {
        let mut s = ToolCallIndexer::default();
        let chunks = [
            calls_chunk(json!([{"id": "a", "type": "function", "function": {"name": "f", "arguments": ""}}])),
            calls_chunk(json!([{"function": {"arguments": "{\"x\":"}}])),
            calls_chunk(json!([{"id": "b", "function": {"name": "f"}}])),
            calls_chunk(json!([{"function": {"arguments": "{}"}}])),
            calls_chunk(json!([{"id": "a", "function": {"arguments": "1}"}}])),
            calls_chunk(json!([{"index": 5, "id": "z", "function": {"name": "g"}}])),
            calls_chunk(json!([{"id": "c", "function": {"name": "f"}}])),
        ];
        let out = s.push(chunks.iter().map(|c| event(c)).collect()).unwrap();
        let got: Vec<Vec<u64>> = out.chunks.iter().map(|c| indices(c)).collect();
        assert_eq!(got, [[0], [0], [1], [1], [0], [5], [6]]);
        assert_eq!(calls_of(&out.chunks[1])[0]["type"], "function");
    }

    #[test]
    fn a_leading_fragment_takes_its_position() {
        let mut s = ToolCallIndexer::default();
        let chunk = calls_chunk(json!([
            {"function": {"arguments": "{}"}},
            {"function": {"arguments": "{}"}}
        ]));
        let out = s.push(vec![event(&chunk)]).unwrap();
        assert_eq!(indices(&out.chunks[0]), [0, 0]);
        let mut s = ToolCallIndexer::default();
        let chunk = calls_chunk(json!([{"function": {"arguments": "{}"}}]));
        let named = calls_chunk(json!([{"function": {"name": "f"}}]));
        let out = s.push(vec![event(&chunk), event(&named)]).unwrap();
        assert_eq!(indices(&out.chunks[1]), [1]);
    }

    #[test]
    fn choices_are_numbered_separately() {
        let mut s = ToolCallIndexer::default();
        let chunk = json!({"id": "c", "choices": [
            {"index": 0, "delta": {"tool_calls": [{"id": "a", "function": {"name": "f"}}]}},
            {"index": 1, "delta": {"tool_calls": [{"id": "b", "function": {"name": "f"}}]}}
        ]})
        .to_string();
        let out = s.push(vec![event(&chunk)]).unwrap();
        let v: Value = serde_json::from_slice(&out.chunks[0]).unwrap();
        assert_eq!(v["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
        assert_eq!(v["choices"][1]["delta"]["tool_calls"][0]["index"], 0);
    }

    #[test]
    fn other_chunks_pass_byte_for_byte() {
        let mut s = ToolCallIndexer::default();
        let text = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi","role":"assistant"},"finish_reason":null}]}"#;
        let complete = r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"f","arguments":"{}"}}]}}]}"#;
        let stop = r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}"#;
        let out = s
            .push(vec![
                event(text),
                event("not json"),
                event(complete),
                event(""),
                event(stop),
                event("[DONE]"),
                event(text),
            ])
            .unwrap();
        assert_eq!(out.chunks, [text, complete, stop].map(|c| c.as_bytes().to_vec()));
        assert_eq!(out.finish_reason, Some(FinishReason::Stop));
        assert_eq!(out.usage.map(|u| u.total_tokens), Some(6));
        assert!(out.done);
        assert!(s.push(vec![event(text)]).unwrap().chunks.is_empty());
        assert!(s.finish().unwrap().chunks.is_empty());
    }

    #[test]
    fn odd_entries_never_panic() {
        let mut s = ToolCallIndexer::default();
        let chunk = calls_chunk(json!([null, 3, "x", {"index": "7"}, {"id": 9}, {"function": null}]));
        let out = s
            .push(vec![
                event(&chunk),
                event(r#"{"choices":{}}"#),
                event(r#"{"choices":[{"delta":{"tool_calls":{}}}]}"#),
                event("[1,2]"),
                event("[]"),
            ])
            .unwrap();
        assert_eq!(out.chunks.len(), 3);
    }

    #[test]
    fn error_events_fail_the_stream() {
        let mut s = ToolCallIndexer::default();
        let f = s
            .push(vec![event(
                r#"[{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}]"#,
            )])
            .unwrap_err();
        assert_eq!(
            (f.kind, f.message.as_str(), f.upstream_code.as_deref()),
            (FailureKind::Transient, "The model is overloaded. Please try again later.", Some("503"))
        );
        let mut s = ToolCallIndexer::default();
        let f = s
            .push(vec![event(
                r#"{"error":{"code":500,"message":"An internal error has occurred.","status":"INTERNAL"}}"#,
            )])
            .unwrap_err();
        assert_eq!(f.message, "An internal error has occurred.");
    }
}

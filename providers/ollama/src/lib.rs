//! The Ollama adapter: a local Ollama server through its OpenAI-compatible
//! endpoint (`<base>/v1/chat/completions`, the base URL being the server
//! root such as `http://localhost:11434`). No key, no limits, and a catalog
//! the operator lists in the `models` setting.
//!
//! Ollama's streamed tool calls stray from OpenAI's shape (missing `index`
//! and `type`, arguments beside `function` or as objects), so streams go
//! through [`ToolCallStream`], which repairs them.
//!
//! A 404 from Ollama is about this server, never about the request: the
//! model is not pulled (`model "x" not found, try pulling it first`) or the
//! base URL is wrong (`404 page not found`, typically a base URL ending in
//! `/v1`). Both are `transient` (the router tries another provider) instead
//! of the SDK's `request-invalid`, which would stop the whole route.

#![warn(missing_docs)]

use freellm_sdk::openai_compat;
use freellm_sdk::{
    Adapter, AdapterInfo, AuthPlacement, CallContext, Capabilities, ChunkRewriter, Failure, FailureKind, ModelInfo,
    ModelTags, PrivacyInfo, PrivacyPolicy, RateLimits, ResponseHead, RewritingStream, Settings, StreamFraming,
    StreamNormalizer, StreamOutput, UpstreamRequest, WireFormat, setting,
};
use serde_json::{Map, Value};

/// Path of Ollama's OpenAI-compatible chat endpoint, relative to the server
/// root.
pub const CHAT_PATH: &str = "/v1/chat/completions";

/// Model used when the settings name no default and the list has no `llama3`.
pub const FALLBACK_MODEL: &str = "llama3";

/// Name fragments of vision-capable model families.
const VISION_MARKERS: &[&str] = &["llava", "vision", "bakllava", "moondream", "cogvlm", "minicpm-v"];

/// The Ollama adapter.
pub struct Ollama;

impl Adapter for Ollama {
    fn configure(settings: &Settings) -> Result<AdapterInfo, String> {
        let names = model_names(setting(settings, "models").unwrap_or(""));
        let default_model = match setting(settings, "default_model").map(str::trim).filter(|m| !m.is_empty()) {
            Some(model) if names.is_empty() || names.iter().any(|n| n == model) => model.to_owned(),
            Some(model) => {
                return Err(format!("default_model \"{model}\" is not among the models ({})", names.join(", ")));
            }
            None if names.iter().any(|n| n == FALLBACK_MODEL) => FALLBACK_MODEL.to_owned(),
            None => names.first().cloned().unwrap_or_else(|| FALLBACK_MODEL.to_owned()),
        };
        Ok(AdapterInfo {
            id: "ollama".into(),
            display_name: "Ollama".into(),
            adapter_version: env!("CARGO_PKG_VERSION").into(),
            default_base_url: "http://localhost:11434".into(),
            key_env: None,
            auth: AuthPlacement::None,
            stream_framing: StreamFraming::Sse,
            wire_format: WireFormat::OpenaiChat,
            capabilities: Capabilities::TOOLS
                | Capabilities::JSON_MODE
                | Capabilities::JSON_SCHEMA
                | Capabilities::VISION
                | Capabilities::ASSISTANT_PREFILL,
            models: names.iter().map(|name| ModelInfo::new(name.as_str(), 0, tags_for(name))).collect(),
            default_model,
            privacy: PrivacyInfo {
                policy: PrivacyPolicy::Local,
                source_url: "https://github.com/ollama/ollama".into(),
                last_verified: "2026-04-09".into(),
                note: "Runs on the operator's own machine; prompts never leave it.".into(),
            },
            limits: RateLimits {
                requests_per_minute: None,
                requests_per_day: None,
                tokens_per_minute: None,
                tokens_per_day: None,
                shared_per_project: false,
            },
        })
    }

    /// Forwards the body as the client wrote it (a large prompt is not
    /// parsed whole), to Ollama's OpenAI-compatible path.
    fn map_request_body(ctx: &CallContext, body: &[u8]) -> Result<UpstreamRequest, Failure> {
        openai_compat::forward_request_to(ctx, body, CHAT_PATH, &[], |_| Ok(()))
    }

    fn classify_failure(ctx: &CallContext, head: &ResponseHead, body: &[u8]) -> Failure {
        let mut failure = openai_compat::classify_failure(ctx, head, body);
        if head.status == 404 {
            failure.kind = FailureKind::Transient;
            let lower = failure.message.to_lowercase();
            if !(lower.contains("model") && lower.contains("not found")) {
                failure.message = format!(
                    "{} (Ollama has no {CHAT_PATH}: is the base URL the server root, \
                     without /v1?)",
                    failure.message
                );
            }
        }
        failure
    }

    fn stream_normalizer(_ctx: &CallContext, _head: &ResponseHead) -> Box<dyn StreamNormalizer> {
        Box::new(ToolCallStream::default())
    }
}

/// The comma-separated model list of the `models` setting: trimmed, empty
/// entries and repeats dropped, in order.
pub fn model_names(list: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    names
}

/// Tags of a model known only by name: `vision` for vision families.
pub fn tags_for(name: &str) -> ModelTags {
    let lower = name.to_lowercase();
    if VISION_MARKERS.iter().any(|m| lower.contains(m)) { ModelTags::VISION } else { ModelTags::empty() }
}

/// Stream normalizer that repairs Ollama's tool-call deltas into OpenAI's
/// shape; chunks without tool calls pass through byte for byte.
///
/// For each `choices[].delta.tool_calls[]` entry:
/// * index: an explicit `index` wins; an entry whose `id` was seen before
///   reuses that call's index; in the first chunk that carries tool calls an
///   entry takes its position in the chunk; later, an entry with a new `id`
///   starts the next index and one without an `id` continues the last call;
/// * `type` defaults to `"function"` and a `function` object is always
///   present;
/// * `arguments` (string or object) and `name` found beside `function` move
///   into it when it lacks them (objects are serialized to a JSON string);
///   object-valued `function.arguments` become JSON strings too.
pub type ToolCallStream = RewritingStream<ToolCallRepair>;

/// The repair state of one stream (see [`ToolCallStream`]).
#[derive(Debug, Default)]
pub struct ToolCallRepair {
    /// True once a chunk with tool calls went by.
    seen_tool_calls: bool,
    /// Index of the last tool-call entry.
    last_index: Option<u64>,
    /// Highest index handed out.
    max_index: Option<u64>,
    /// Tool-call ids and their indices.
    ids: Vec<(String, u64)>,
}

impl ToolCallRepair {
    /// Repairs the tool calls of one chunk; returns whether it changed.
    fn repair(&mut self, chunk: &mut Map<String, Value>) -> bool {
        let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) else {
            return false;
        };
        let first_chunk = !self.seen_tool_calls;
        let mut changed = false;
        for choice in choices {
            let Some(calls) = choice.pointer_mut("/delta/tool_calls").and_then(Value::as_array_mut) else {
                continue;
            };
            for (position, call) in calls.iter_mut().enumerate() {
                if let Some(call) = call.as_object_mut() {
                    changed |= self.repair_call(call, position as u64, first_chunk);
                }
            }
        }
        changed
    }

    fn repair_call(&mut self, call: &mut Map<String, Value>, position: u64, first_chunk: bool) -> bool {
        let mut changed = false;
        let id = call.get("id").and_then(Value::as_str).map(str::to_owned);
        let known = id.as_ref().and_then(|id| self.ids.iter().find(|(k, _)| k == id).map(|(_, i)| *i));
        let index = match call.get("index").and_then(Value::as_u64) {
            Some(index) => index,
            None => {
                let index = match (known, first_chunk, &id, self.last_index) {
                    (Some(index), ..) => index,
                    (None, true, ..) => position,
                    (None, false, Some(_), _) => self.max_index.map_or(0, |m| m + 1),
                    (None, false, None, Some(last)) => last,
                    (None, false, None, None) => position,
                };
                call.insert("index".into(), index.into());
                changed = true;
                index
            }
        };
        if let (Some(id), None) = (id, known) {
            self.ids.push((id, index));
        }
        self.seen_tool_calls = true;
        self.last_index = Some(index);
        self.max_index = Some(self.max_index.map_or(index, |m| m.max(index)));

        if !call.get("type").is_some_and(Value::is_string) {
            call.insert("type".into(), "function".into());
            changed = true;
        }
        if !call.get("function").is_some_and(Value::is_object) {
            call.insert("function".into(), Value::Object(Map::new()));
            changed = true;
        }
        let stray_arguments = call.shift_remove("arguments").filter(|a| !a.is_null());
        let stray_name = call.shift_remove("name").filter(|n| !n.is_null());
        changed |= stray_arguments.is_some() || stray_name.is_some();
        if let Some(function) = call.get_mut("function").and_then(Value::as_object_mut) {
            if let Some(arguments) = stray_arguments
                && function.get("arguments").is_none_or(Value::is_null)
            {
                function.insert("arguments".into(), arguments);
            }
            if let Some(name) = stray_name
                && function.get("name").is_none_or(Value::is_null)
            {
                function.insert("name".into(), name);
            }
            if let Some(arguments) = function.get_mut("arguments")
                && arguments.is_object()
            {
                *arguments = Value::String(arguments.to_string());
                changed = true;
            }
        }
        changed
    }
}

impl ChunkRewriter for ToolCallRepair {
    fn rewrite(&mut self, chunk: &mut Map<String, Value>, _out: &mut StreamOutput) -> bool {
        self.repair(chunk)
    }

    /// Only chunks that may hold tool calls (a `\u` escape could spell the
    /// name too) are read as maps; the others are forwarded after a
    /// borrowed read, and the repair state only changes on tool calls.
    fn rewrites(&self, data: &str) -> bool {
        openai_compat::may_name(data, &["tool_calls"])
    }
}

freellm_sdk::export_adapter!(Ollama);

#[cfg(test)]
mod tests {
    use super::*;
    use freellm_sdk::{FinishReason, StreamEvent};
    use serde_json::json;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    fn event(data: &Value) -> StreamEvent {
        StreamEvent { event: None, data: data.to_string() }
    }

    fn chunk_with(calls: Value) -> Value {
        json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": null}]})
    }

    #[test]
    fn chunks_left_to_the_borrowed_read_come_out_as_from_the_full_path() {
        use freellm_sdk::openai_compat::EveryChunk;
        let chunks = [
            r#"{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":"hi"},"finish_reason":null}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"id":"a","function":{"name":"f"},"arguments":{"x":1}}]}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":"{}"}}]}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"tool\u005fcalls":[{"id":"b","name":"g"}]}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"tool_calls are words too"}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
            r#"{"error":{"message":"model not found"}}"#,
            "not json",
            "[DONE]",
        ];
        let events =
            |from: usize| chunks[from..].iter().map(|c| StreamEvent { event: None, data: (*c).into() }).collect();
        for (from, first) in chunks.iter().enumerate() {
            let peeked = ToolCallStream::default().push(events(from));
            let full = RewritingStream::new(EveryChunk(ToolCallRepair::default())).push(events(from));
            assert_eq!(peeked, full, "from {first}");
        }
        assert!(!ToolCallRepair::default().rewrites(chunks[0]) && ToolCallRepair::default().rewrites(chunks[3]));
    }

    fn calls_of(chunk: &[u8]) -> Value {
        let v: Value = serde_json::from_slice(chunk).unwrap();
        v["choices"][0]["delta"]["tool_calls"].clone()
    }

    #[test]
    fn models_come_from_settings() {
        let info = Ollama::configure(&settings(&[("models", " qwen2.5 , llava:13b,, llama3 ,qwen2.5")])).unwrap();
        let ids: Vec<&str> = info.models.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["qwen2.5", "llava:13b", "llama3"]);
        assert_eq!(info.default_model, "llama3");
        assert_eq!(info.models[1].tags, ModelTags::VISION);
        assert_eq!((info.models[0].tags, info.models[0].context_window), (ModelTags::empty(), 0));
        assert_eq!((info.key_env, info.auth), (None, AuthPlacement::None));
        assert!(!info.capabilities.contains(Capabilities::STREAM_USAGE));
    }

    #[test]
    fn default_model_choice() {
        let pick = |pairs: &[(&str, &str)]| Ollama::configure(&settings(pairs)).map(|i| i.default_model);
        assert_eq!(pick(&[("models", "qwen2.5,mistral")]).unwrap(), "qwen2.5");
        assert_eq!(pick(&[("models", "qwen2.5,mistral"), ("default_model", "mistral")]).unwrap(), "mistral");
        assert_eq!(pick(&[]).unwrap(), "llama3");
        assert_eq!(pick(&[("models", "")]).unwrap(), "llama3");
        assert!(pick(&[("models", "qwen2.5"), ("default_model", "phi3")]).is_err());
    }

    #[test]
    fn requests_go_to_the_v1_endpoint() {
        let ctx = CallContext { request_id: "r".into(), upstream_model: "qwen2.5".into(), is_stream: true };
        let body = br#"{"model":"ollama/qwen2.5","messages":[],"logprobs":true}"#;
        let up = Ollama::map_request_body(&ctx, body).unwrap();
        assert_eq!(up.path, "/v1/chat/completions");
        assert_eq!(
            String::from_utf8(up.body.as_bytes().expect("a whole body").to_vec()).unwrap(),
            r#"{"model":"qwen2.5","messages":[],"logprobs":true,"stream":true}"#
        );
    }

    #[test]
    fn fragmented_tool_call_is_repaired() {
        let mut s = ToolCallStream::default();
        let name = chunk_with(json!([{"id": "call_1", "function": {"name": "get_weather"}}]));
        let frag1 = chunk_with(json!([{"function": {}, "arguments": "{\"city\":"}]));
        let frag2 = chunk_with(json!([{"arguments": {"unit": "c"}}]));
        let out = s.push(vec![event(&name), event(&frag1)]).unwrap();
        assert_eq!(out.chunks.len(), 2);
        assert_eq!(
            calls_of(&out.chunks[0]),
            json!([{"id": "call_1", "function": {"name": "get_weather"}, "index": 0, "type": "function"}])
        );
        assert_eq!(
            calls_of(&out.chunks[1]),
            json!([{"function": {"arguments": "{\"city\":"}, "index": 0, "type": "function"}])
        );
        let out = s.push(vec![event(&frag2)]).unwrap();
        assert_eq!(
            calls_of(&out.chunks[0]),
            json!([{"index": 0, "type": "function", "function": {"arguments": "{\"unit\":\"c\"}"}}])
        );
    }

    #[test]
    fn several_calls_get_distinct_indices() {
        let mut s = ToolCallStream::default();
        let first = chunk_with(json!([
            {"id": "a", "function": {"name": "f", "arguments": {"x": 1}}},
            {"id": "b", "function": {"name": "g", "arguments": "{}"}}
        ]));
        let third = chunk_with(json!([{"id": "c", "function": {"name": "h", "arguments": "{}"}}]));
        let again = chunk_with(json!([{"id": "a", "function": {"arguments": "more"}}]));
        let explicit = chunk_with(json!([{"index": 7, "type": "function", "function": {"arguments": ""}}]));
        let out = s.push(vec![event(&first), event(&third), event(&again), event(&explicit)]).unwrap();
        let indices = |chunk: &[u8]| -> Vec<u64> {
            calls_of(chunk).as_array().unwrap().iter().map(|c| c["index"].as_u64().unwrap()).collect()
        };
        assert_eq!(indices(&out.chunks[0]), [0, 1]);
        assert_eq!(calls_of(&out.chunks[0])[0]["function"]["arguments"], "{\"x\":1}");
        assert_eq!(indices(&out.chunks[1]), [2]);
        assert_eq!(indices(&out.chunks[2]), [0]);
        assert_eq!(out.chunks[3], explicit.to_string().into_bytes(), "a well-formed chunk passes byte for byte");
    }

    #[test]
    fn not_found_is_transient_not_request_invalid() {
        let ctx = CallContext { request_id: "r".into(), upstream_model: "llama3".into(), is_stream: false };
        let head = |status| ResponseHead { status, headers: vec![] };
        let f = Ollama::classify_failure(
            &ctx,
            &head(404),
            br#"{"error":{"message":"model \"llama3\" not found, try pulling it first","type":"not_found_error","param":null,"code":null}}"#,
        );
        assert_eq!(f.kind, FailureKind::Transient);
        assert_eq!(f.message, "model \"llama3\" not found, try pulling it first");
        assert_eq!(f.upstream_code.as_deref(), Some("not_found_error"));
        let f = Ollama::classify_failure(&ctx, &head(404), b"404 page not found");
        assert_eq!(f.kind, FailureKind::Transient);
        assert!(f.message.contains("without /v1"), "{}", f.message);
        let f = Ollama::classify_failure(
            &ctx,
            &head(400),
            br#"{"error":{"message":"invalid message format","type":"invalid_request_error"}}"#,
        );
        assert_eq!(f.kind, FailureKind::RequestInvalid);
    }

    #[test]
    fn fixtures_pass_natively() {
        freellm_sdk::fixtures::assert_dir::<Ollama>(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"));
    }

    #[test]
    fn conformance() {
        freellm_sdk::fixtures::assert_conformance::<Ollama>(&[("models", "llama3.2,qwen2.5")]);
    }

    #[test]
    fn other_chunks_pass_through_and_broken_ones_are_skipped() {
        let mut s = ToolCallStream::default();
        let text = r#"{"id":"c","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#;
        let stop = r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#;
        let events = [text, "{oops", stop, "[DONE]"].map(|d| StreamEvent { event: None, data: d.into() });
        let out = s.push(events.to_vec()).unwrap();
        assert_eq!(out.chunks, [text.as_bytes().to_vec(), stop.as_bytes().to_vec()]);
        assert_eq!(out.finish_reason, Some(FinishReason::ToolCalls));
        assert!(out.done);
        assert!(s.finish().unwrap().chunks.is_empty());
    }
}

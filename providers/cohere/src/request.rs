//! An OpenAI chat request rebuilt as a Cohere Chat API v2 request.
//!
//! Only fields Cohere understands are sent (its API refuses unknown ones):
//! `model`, `messages`, `stream`, `max_tokens`, `temperature`, `p`
//! (`top_p`), `stop_sequences`, `seed`, `frequency_penalty`,
//! `presence_penalty`, `tools`, `tool_choice`, `response_format`. Everything
//! else (`user`, `logit_bias`, `stream_options`, `parallel_tool_calls`, ...)
//! is dropped. Images and `n > 1` are refused as `unsupported`, so the
//! router asks a provider that can.

use freellm_sdk::messages::{content_text, has_image_parts, role, take_system};
use freellm_sdk::params::{max_output_tokens, stop_sequences};
use freellm_sdk::{CallContext, ChatRequest, Failure, HttpMethod, UpstreamRequest};
use serde_json::{Map, Value, json};

/// Path of the chat endpoint, relative to `https://api.cohere.com`.
pub const CHAT_PATH: &str = "/v2/chat";

/// Maps `req` to `POST /v2/chat`.
pub fn map(ctx: &CallContext, mut req: ChatRequest) -> Result<UpstreamRequest, Failure> {
    if has_image_parts(&req.messages) {
        return Err(Failure::unsupported("Cohere's Command models take no images"));
    }
    if req.n.as_ref().and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(Failure::unsupported("Cohere returns one choice per request (n > 1)"));
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(ctx.upstream_model));
    body.insert("messages".into(), Value::Array(messages(&mut req.messages)?));
    body.insert("stream".into(), json!(ctx.is_stream));
    if let Some(max_tokens) = max_output_tokens(&req)? {
        body.insert("max_tokens".into(), json!(max_tokens));
    }
    // Sampling fields: the same meaning on both sides, only `top_p` renamed.
    for (name, value) in [
        ("temperature", &req.temperature),
        ("seed", &req.seed),
        ("frequency_penalty", &req.frequency_penalty),
        ("presence_penalty", &req.presence_penalty),
        ("p", &req.top_p),
    ] {
        if let Some(value) = value.as_ref().filter(|v| !v.is_null()) {
            body.insert(name.into(), value.clone());
        }
    }
    let stop = stop_sequences(&req)?;
    if !stop.is_empty() {
        body.insert("stop_sequences".into(), json!(stop));
    }
    tools(&req, &mut body)?;
    if let Some(format) = response_format(req.response_format.as_ref())? {
        body.insert("response_format".into(), format);
    }
    Ok(UpstreamRequest {
        method: HttpMethod::Post,
        path: CHAT_PATH.to_owned(),
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: Value::Object(body).to_string().into_bytes().into(),
    })
}

/// The conversation in Cohere's shape: the system and developer messages
/// as one leading `system` message, text contents as strings, assistant
/// tool calls and tool results kept with their ids.
fn messages(messages: &mut Vec<Value>) -> Result<Vec<Value>, Failure> {
    let system = take_system(messages);
    let mut out = Vec::with_capacity(messages.len() + 1);
    if let Some(system) = system {
        out.push(json!({"role": "system", "content": system}));
    }
    for message in messages.iter() {
        let text = content_text(message.get("content").unwrap_or(&Value::Null));
        match role(message) {
            "user" => out.push(json!({"role": "user", "content": text})),
            "assistant" => {
                let mut turn = Map::from_iter([("role".to_owned(), json!("assistant"))]);
                let calls: Vec<Value> =
                    message.get("tool_calls").and_then(Value::as_array).into_iter().flatten().map(tool_call).collect();
                if !text.is_empty() || calls.is_empty() {
                    turn.insert("content".into(), json!(text));
                }
                if !calls.is_empty() {
                    turn.insert("tool_calls".into(), Value::Array(calls));
                }
                out.push(Value::Object(turn));
            }
            "tool" => {
                let id = message.get("tool_call_id").and_then(Value::as_str).unwrap_or_default();
                out.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
            }
            other => {
                return Err(Failure::request_invalid(format!(
                    "a message has role {other:?}, which Cohere does not take"
                )));
            }
        }
    }
    Ok(out)
}

/// An OpenAI assistant tool call as Cohere takes it (the same fields,
/// nothing else).
fn tool_call(call: &Value) -> Value {
    json!({
        "id": call.get("id").cloned().unwrap_or(Value::Null),
        "type": "function",
        "function": {
            "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null),
            "arguments": call.pointer("/function/arguments").cloned().unwrap_or_else(|| json!("{}")),
        },
    })
}

/// `tools` as given (Cohere takes OpenAI's function definitions) and
/// `tool_choice`: `none` → `NONE`, `required` → `REQUIRED`, `auto` is
/// Cohere's default; a named function becomes `REQUIRED` with only that
/// tool offered, since Cohere cannot force a particular one.
fn tools(req: &ChatRequest, body: &mut Map<String, Value>) -> Result<(), Failure> {
    let Some(tools) = req.tools.as_ref().and_then(Value::as_array).filter(|t| !t.is_empty()) else {
        return Ok(());
    };
    let mut offered = tools.clone();
    match req.tool_choice.as_ref() {
        None | Some(Value::Null) => {}
        Some(Value::String(choice)) => match choice.as_str() {
            "auto" => {}
            "none" => {
                body.insert("tool_choice".into(), json!("NONE"));
            }
            "required" => {
                body.insert("tool_choice".into(), json!("REQUIRED"));
            }
            other => return Err(Failure::request_invalid(format!("unknown tool_choice {other:?}"))),
        },
        Some(named) => {
            let name = named.pointer("/function/name").and_then(Value::as_str).ok_or_else(|| {
                Failure::request_invalid("tool_choice must be auto, none, required or a named function")
            })?;
            offered.retain(|tool| tool.pointer("/function/name").and_then(Value::as_str) == Some(name));
            if offered.is_empty() {
                return Err(Failure::request_invalid(format!("tool_choice names {name:?}, which is not in tools")));
            }
            body.insert("tool_choice".into(), json!("REQUIRED"));
        }
    }
    body.insert("tools".into(), Value::Array(offered));
    Ok(())
}

/// OpenAI's `response_format` in Cohere's terms: `json_object` as is,
/// `json_schema` as a `json_object` with the schema, `text` as nothing.
fn response_format(format: Option<&Value>) -> Result<Option<Value>, Failure> {
    let Some(format) = format.filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let schema = format
                .pointer("/json_schema/schema")
                .ok_or_else(|| Failure::request_invalid("response_format json_schema has no schema"))?;
            Ok(Some(json!({"type": "json_object", "json_schema": schema})))
        }
        _ => Err(Failure::request_invalid(format!("unknown response_format {format}"))),
    }
}

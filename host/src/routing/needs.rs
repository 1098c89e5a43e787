//! What a chat request needs from a provider (tools, JSON output, images,
//! its rough size, the privacy posture asked for), read once from the body:
//! the router filters targets by it, the cache leaves out what must not be
//! cached, failover keeps whether JSON was asked for.

use crate::json::Json;

/// What a request needs from a provider, read once from the body.
#[derive(Clone, Copy, Debug, Default)]
pub struct Needs {
    /// The request carries at least one tool.
    pub tools: bool,
    /// `response_format.type == "json_schema"`.
    pub json_schema: bool,
    /// `response_format.type == "json_object"`.
    pub json_mode: bool,
    /// A message has an `image_url` part.
    pub vision: bool,
    /// Rough prompt size in tokens.
    pub estimated_tokens: u32,
    /// `X-FreeLLM-Privacy: no-training`.
    pub no_training: bool,
}

impl Needs {
    /// Reads the needs of a validated request body.
    pub fn of(request: &Json<'_>, body_len: usize, no_training: bool) -> Self {
        let format = request.get("response_format").and_then(|f| f.get("type")).and_then(Json::as_str);
        Self {
            tools: request.get("tools").and_then(Json::as_array).is_some_and(|t| !t.is_empty()),
            json_schema: format == Some("json_schema"),
            json_mode: format == Some("json_object"),
            vision: has_images(request),
            estimated_tokens: freellm_limits::quota::estimate_tokens(body_len),
            no_training,
        }
    }

    /// `response_format` asks for JSON (`json_object` or `json_schema`).
    pub fn wants_json(&self) -> bool {
        self.json_mode || self.json_schema
    }
}

/// Whether a request body's messages hold an `image_url` part.
fn has_images(request: &Json<'_>) -> bool {
    request.get("messages").and_then(Json::as_array).is_some_and(|messages| {
        messages.iter().any(|m| {
            m.get("content")
                .and_then(Json::as_array)
                .is_some_and(|parts| parts.iter().any(|p| p.get("type").and_then(Json::as_str) == Some("image_url")))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn needs_are_read_from_the_body() {
        let body = json!({
            "model": "free",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:"}}]}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
        });
        let needs = |body: &serde_json::Value, len, no_training| {
            Needs::of(&Json::parse(&body.to_string()).unwrap(), len, no_training)
        };
        let n = needs(&body, 4000, true);
        assert!(n.tools && n.vision && n.json_schema && !n.json_mode && n.no_training);
        assert!(n.estimated_tokens >= 1000);
        let plain = needs(&json!({"messages": [{"role": "user", "content": "hi"}], "tools": []}), 10, false);
        assert!(!plain.tools && !plain.vision && !plain.json_schema);
        assert!(n.wants_json() && !plain.wants_json());
        let format = |kind: &str| needs(&json!({"response_format": {"type": kind}}), 10, false).wants_json();
        assert!(format("json_object") && format("json_schema") && !format("text"));
    }
}

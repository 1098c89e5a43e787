// The OpenAI-shaped logic both frozen-version test adapters share
// (`include!`d by `tests/adapter-v01` and `tests/adapter-v02`): written
// against whichever version's bindings are in scope, whose records of
// these names have the same fields in 0.1 and 0.2.

fn failure(kind: FailureKind, message: impl Into<String>) -> Failure {
    Failure { kind, message: message.into(), retry_after_ms: None, upstream_code: None }
}

fn usage(value: &Value) -> Option<Usage> {
    let u = value.get("usage")?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).and_then(|v| u32::try_from(v).ok());
    Some(Usage {
        prompt_tokens: n("prompt_tokens")?,
        completion_tokens: n("completion_tokens")?,
        total_tokens: n("total_tokens")?,
    })
}

fn finish(value: &Value) -> Option<FinishReason> {
    Some(match value.pointer("/choices/0/finish_reason")?.as_str()? {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    })
}

/// `map-request`: the body with `model` and `stream` set.
fn map_openai(ctx: CallContext, body: Vec<u8>) -> Result<UpstreamRequest, Failure> {
    let mut req: Value = serde_json::from_slice(&body)
        .map_err(|e| failure(FailureKind::RequestInvalid, format!("invalid chat request body: {e}")))?;
    let Some(obj) = req.as_object_mut().filter(|o| o.get("messages").is_some_and(Value::is_array)) else {
        return Err(failure(FailureKind::RequestInvalid, "a chat request is an object with a messages list"));
    };
    obj.insert("model".into(), json!(ctx.upstream_model));
    obj.insert("stream".into(), json!(ctx.is_stream));
    Ok(UpstreamRequest {
        method: HttpMethod::Post,
        path: "/chat/completions".into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::to_vec(&req).unwrap_or_default(),
    })
}

/// `normalize-response`: a chat completion, as it is.
fn normalize_openai(body: Vec<u8>) -> Result<NormalizedResponse, Failure> {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| failure(FailureKind::Transient, format!("answer is not JSON: {e}")))?;
    if !value.get("choices").is_some_and(Value::is_array) {
        return Err(failure(FailureKind::Transient, "answer is not a chat completion"));
    }
    Ok(NormalizedResponse { usage: usage(&value), finish_reason: finish(&value), body })
}

/// `classify-failure` by status, with `retry-after` on a 429.
fn classify_openai(head: ResponseHead, body: Vec<u8>) -> Failure {
    let message = String::from_utf8_lossy(&body).chars().take(200).collect::<String>();
    let kind = match head.status {
        401 | 403 => FailureKind::KeyInvalid,
        429 => FailureKind::RateLimited,
        s if s >= 500 => FailureKind::Transient,
        _ => FailureKind::RequestInvalid,
    };
    let retry_after_ms = head
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        .map(|s| s.saturating_mul(1000));
    Failure { kind, message, retry_after_ms: retry_after_ms.filter(|_| head.status == 429), upstream_code: None }
}

/// `stream-normalizer.push`: OpenAI chunks forwarded as they are.
fn push_openai(events: Vec<StreamEvent>) -> Result<StreamOutput, Failure> {
    let mut out = StreamOutput { chunks: Vec::new(), usage: None, finish_reason: None, done: false };
    for event in events {
        if event.data.trim() == "[DONE]" {
            out.done = true;
            break;
        }
        let Ok(value) = serde_json::from_str::<Value>(&event.data) else { continue };
        if !value.is_object() {
            continue;
        }
        out.usage = usage(&value).or(out.usage);
        out.finish_reason = finish(&value).or(out.finish_reason);
        out.chunks.push(event.data.into_bytes());
    }
    Ok(out)
}

/// An output with nothing in it.
fn no_output() -> StreamOutput {
    StreamOutput { chunks: Vec::new(), usage: None, finish_reason: None, done: false }
}

/// The privacy posture of a test component.
fn test_privacy(source_url: &str) -> PrivacyInfo {
    PrivacyInfo {
        policy: PrivacyPolicy::Local,
        source_url: source_url.into(),
        last_verified: "2026-04-09".into(),
        note: "A test component.".into(),
    }
}

/// No published limits.
fn no_limits() -> RateLimits {
    RateLimits {
        requests_per_minute: None,
        requests_per_day: None,
        tokens_per_minute: None,
        tokens_per_day: None,
        shared_per_project: false,
    }
}

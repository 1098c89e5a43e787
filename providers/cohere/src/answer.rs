//! Cohere's answers in OpenAI's terms: a whole answer ([`normalize`]), its
//! pieces shared with the stream ([`finish_reason`], [`usage`]) and error
//! answers ([`classify`]).

use freellm_sdk::answer::{Completion, completion};
use freellm_sdk::messages::content_text;
use freellm_sdk::openai_compat::{self, UpstreamError, usage_from_counts};
use freellm_sdk::retry::MAX_RETRY_AFTER_MS;
use freellm_sdk::{CallContext, Failure, FailureKind, FinishReason, NormalizedResponse, ResponseHead, Usage};
use serde_json::{Value, json};

/// A Cohere `finish_reason` in the contract's terms. `ERROR` and `TIMEOUT`
/// mean the answer broke off: a `transient` failure, so another provider
/// may answer (or the cut stream is resumed).
pub fn finish_reason(reason: &str) -> Result<FinishReason, Failure> {
    match reason {
        "COMPLETE" | "STOP_SEQUENCE" => Ok(FinishReason::Stop),
        "MAX_TOKENS" => Ok(FinishReason::Length),
        "TOOL_CALL" => Ok(FinishReason::ToolCalls),
        "ERROR_TOXIC" => Ok(FinishReason::ContentFilter),
        "ERROR" | "TIMEOUT" | "ERROR_LIMIT" => Err(Failure {
            upstream_code: Some(reason.to_owned()),
            ..Failure::transient(format!("Cohere stopped with {reason}"))
        }),
        _ => Ok(FinishReason::Other),
    }
}

/// Usage from Cohere's `usage`: the tokens the model processed
/// (`tokens`, which include Cohere's own prompt template) when given, else
/// the billed ones (`billed_units`).
pub fn usage(usage: &Value) -> Option<Usage> {
    let counts = |block: &Value| {
        usage_from_counts(block.get("input_tokens")?.as_u64(), block.get("output_tokens")?.as_u64(), None)
    };
    usage.get("tokens").and_then(counts).or_else(|| usage.get("billed_units").and_then(counts))
}

/// Turns a 2xx Cohere answer into an OpenAI `chat.completion`. The
/// `tool_plan` (Cohere's reasoning before tool calls) and citations are not
/// part of OpenAI's answer and are left out.
pub fn normalize(ctx: &CallContext, body: &[u8]) -> Result<NormalizedResponse, Failure> {
    let malformed = |why: &str| Failure::transient(format!("malformed Cohere answer: {why}"));
    let answer: Value = serde_json::from_slice(body).map_err(|e| malformed(&format!("not JSON ({e})")))?;
    let Some(message) = answer.get("message").filter(|m| m.is_object()) else {
        let error = UpstreamError::from_json(&answer);
        return Err(error.message.map(Failure::transient).unwrap_or_else(|| malformed("no `message`")));
    };
    let text = content_text(message.get("content").unwrap_or(&Value::Null));
    let tool_calls: Vec<Value> = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|call| {
            json!({
                "id": call.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null),
                    "arguments": call.pointer("/function/arguments").cloned().unwrap_or_else(|| json!("{}")),
                },
            })
        })
        .collect();
    let reason = answer.get("finish_reason").and_then(Value::as_str).map(finish_reason).transpose()?;
    Ok(completion(Completion {
        id: answer.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
        model: ctx.upstream_model.clone(),
        text: (!text.is_empty() || tool_calls.is_empty()).then_some(text),
        tool_calls,
        finish_reason: reason.unwrap_or(FinishReason::Stop),
        usage: answer.get("usage").and_then(usage),
        ..Completion::default()
    }))
}

/// Classifies a Cohere error answer (`{"id", "message"}`). On top of the
/// SDK's classifier: a 429 naming the month is the trial key's 1,000 calls
/// over 30 days (`quota-exhausted`, retried no sooner than the longest
/// delay the host takes), any other 429 the per-minute limit; 498 is
/// Cohere's status for an invalid token.
pub fn classify(ctx: &CallContext, head: &ResponseHead, body: &[u8]) -> Failure {
    let mut failure = openai_compat::classify_failure(ctx, head, body);
    match head.status {
        429 => {
            let monthly = failure.message.to_lowercase().contains("month");
            failure.kind = if monthly { FailureKind::QuotaExhausted } else { FailureKind::RateLimited };
            if monthly {
                failure.retry_after_ms = Some(failure.retry_after_ms.unwrap_or(0).max(MAX_RETRY_AFTER_MS));
            }
        }
        498 => {
            failure.kind = FailureKind::KeyInvalid;
            failure.retry_after_ms = None;
        }
        _ => {}
    }
    failure
}

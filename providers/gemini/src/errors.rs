//! Classification of Gemini's error answers.
//!
//! Google APIs answer errors with `{"error": {"code", "message", "status",
//! "details": [...]}}`; the OpenAI-compatible endpoint often wraps that in a
//! one-element JSON array. The details say what the status alone does not:
//!
//! * `google.rpc.QuotaFailure`: which quota ran out. A `quotaId` with
//!   `PerDay` (e.g. `GenerateRequestsPerDayPerProjectPerModel-FreeTier`) is
//!   a daily quota (`quota-exhausted`), `PerMinute` a rate (`rate-limited`);
//! * `google.rpc.RetryInfo`: `retryDelay` (`"43s"`), used when there is no
//!   `retry-after` header;
//! * `google.rpc.ErrorInfo`: `reason`, e.g. `API_KEY_INVALID`.
//!
//! Bodies that are not Google-shaped fall back to the SDK's
//! OpenAI-compatible classifier.

use freellm_sdk::openai_compat;
use freellm_sdk::retry::{clamp_retry_after_ms, parse_reset_duration};
use freellm_sdk::{CallContext, Failure, FailureKind, ResponseHead};
use serde_json::Value;

/// The parts of a Google API error body the classifier uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GoogleError {
    /// `error.code`: the HTTP status Google meant.
    pub code: Option<u64>,
    /// `error.status`: the canonical code, e.g. `RESOURCE_EXHAUSTED`.
    pub status: Option<String>,
    /// `error.message`.
    pub message: Option<String>,
    /// `reason` of a `google.rpc.ErrorInfo` detail, e.g. `API_KEY_INVALID`.
    pub reason: Option<String>,
    /// `quotaId` and `quotaMetric` of every `google.rpc.QuotaFailure`
    /// violation.
    pub quotas: Vec<String>,
    /// `retryDelay` of a `google.rpc.RetryInfo` detail, in milliseconds
    /// (not clamped).
    pub retry_delay_ms: Option<u64>,
}

impl GoogleError {
    /// Reads a Google error body (`{"error": {...}}` or a JSON array whose
    /// first element is one); `None` for anything else.
    pub fn parse(body: &[u8]) -> Option<Self> {
        let value: Value = serde_json::from_slice(body).ok()?;
        Self::from_json(&value)
    }

    /// Reads an already parsed body (see [`parse`](Self::parse)).
    pub fn from_json(value: &Value) -> Option<Self> {
        let value = match value {
            Value::Array(items) => items.first()?,
            other => other,
        };
        let error = value.get("error")?.as_object()?;
        let text = |key: &str| {
            error.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
        };
        let mut parsed = Self {
            code: error.get("code").and_then(Value::as_u64),
            status: text("status"),
            message: text("message"),
            ..Self::default()
        };
        // Google-shaped means a numeric code or a canonical status.
        if parsed.code.is_none() && parsed.status.is_none() {
            return None;
        }
        for detail in error.get("details").and_then(Value::as_array).into_iter().flatten() {
            let kind = detail.get("@type").and_then(Value::as_str).unwrap_or("");
            if kind.ends_with("google.rpc.QuotaFailure") {
                for violation in detail.get("violations").and_then(Value::as_array).into_iter().flatten() {
                    for key in ["quotaId", "quotaMetric"] {
                        if let Some(s) = violation.get(key).and_then(Value::as_str) {
                            parsed.quotas.push(s.to_owned());
                        }
                    }
                }
            } else if kind.ends_with("google.rpc.RetryInfo") {
                parsed.retry_delay_ms = detail.get("retryDelay").and_then(Value::as_str).and_then(parse_reset_duration);
            } else if kind.ends_with("google.rpc.ErrorInfo") && parsed.reason.is_none() {
                parsed.reason = detail.get("reason").and_then(Value::as_str).map(str::to_owned);
            }
        }
        Some(parsed)
    }

    fn lower_message(&self) -> String {
        self.message.as_deref().unwrap_or("").to_lowercase()
    }

    /// The period of the quota that ran out, from the `QuotaFailure`
    /// violations (a daily one wins over a per-minute one), else from the
    /// message.
    pub fn quota_period(&self) -> Option<QuotaPeriod> {
        let ids: Vec<String> = self.quotas.iter().map(|q| q.to_lowercase()).collect();
        let any = |needles: &[&str]| ids.iter().any(|id| needles.iter().any(|n| id.contains(n)));
        if any(&["perday", "per_day"]) {
            return Some(QuotaPeriod::Day);
        }
        if any(&["perminute", "per_minute", "persecond", "per_second"]) {
            return Some(QuotaPeriod::Minute);
        }
        let message = self.lower_message();
        let has = |needles: &[&str]| needles.iter().any(|n| message.contains(n));
        if has(&["perday", "per day", "per_day", "daily"]) {
            Some(QuotaPeriod::Day)
        } else if has(&["perminute", "per minute", "per_minute"]) {
            Some(QuotaPeriod::Minute)
        } else {
            None
        }
    }

    /// A quota whose limit is 0 ("limit: 0"): the model is not on this
    /// project's tier at all, waiting a minute will not help.
    pub fn zero_limit(&self) -> bool {
        let message = self.lower_message();
        message
            .match_indices("limit: 0")
            .any(|(at, m)| !message[at + m.len()..].chars().next().is_some_and(|c| c.is_ascii_digit() || c == '.'))
    }

    /// The delay named in the message ("Please retry in 43.52s."), in
    /// milliseconds (not clamped).
    pub fn message_retry_ms(&self) -> Option<u64> {
        let message = self.message.as_deref()?;
        let (_, rest) = message.split_once("retry in ")?;
        let word = rest.split_whitespace().next()?;
        parse_reset_duration(word.trim_end_matches(['.', ',', ';']))
    }
}

/// How long a quota that ran out lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaPeriod {
    /// A per-minute (or per-second) rate.
    Minute,
    /// A daily quota.
    Day,
}

/// `ErrorInfo` reasons that mean the key itself is unusable.
const KEY_REASONS: &[&str] = &[
    "API_KEY_INVALID",
    "API_KEY_EXPIRED",
    "API_KEY_SERVICE_BLOCKED",
    "API_KEY_HTTP_REFERRER_BLOCKED",
    "API_KEY_IP_ADDRESS_BLOCKED",
    "API_KEY_ANDROID_APP_BLOCKED",
    "API_KEY_IOS_APP_BLOCKED",
    "SERVICE_DISABLED",
    "CONSUMER_INVALID",
    "ACCESS_TOKEN_EXPIRED",
];

/// Classifies a non-2xx Gemini answer:
///
/// | answer | kind |
/// |---|---|
/// | 429 with a `PerDay` quota, or a quota with `limit: 0` | `quota-exhausted` |
/// | other 429 (`PerMinute`, tokens per minute, no details) | `rate-limited` |
/// | 401, 403, `UNAUTHENTICATED`, `PERMISSION_DENIED`, an `API_KEY_*` reason, "API key not valid/expired" | `key-invalid` |
/// | `FAILED_PRECONDITION` "User location is not supported" / free tier not available | `key-invalid` |
/// | 400/413 "input token count … exceeds the maximum number of tokens" | `context-length` |
/// | 400 naming safety / prohibited content / a block | `content-filter` |
/// | 400 "… is not enabled for models/…", "Unknown name … Cannot find field", "… not supported" | `unsupported` |
/// | other 400, 404, 422 | `request-invalid` |
/// | 5xx (`INTERNAL`, `UNAVAILABLE` "The model is overloaded", `DEADLINE_EXCEEDED`), anything else | `transient` |
///
/// The retry hint is the `retry-after` header, else `RetryInfo.retryDelay`,
/// else "Please retry in …s" from the message, clamped to 1 s..10 min.
/// `upstream_code` is the `ErrorInfo` reason, else the canonical status.
pub fn classify(ctx: &CallContext, head: &ResponseHead, body: &[u8]) -> Failure {
    let base = openai_compat::classify_failure(ctx, head, body);
    let Some(google) = GoogleError::parse(body) else {
        return base;
    };
    let kind = kind_of(head.status, &google);
    let retry_after_ms = match kind {
        FailureKind::RateLimited | FailureKind::QuotaExhausted | FailureKind::Transient => base
            .retry_after_ms
            .or_else(|| google.retry_delay_ms.map(clamp_retry_after_ms))
            .or_else(|| google.message_retry_ms().map(clamp_retry_after_ms)),
        _ => None,
    };
    Failure {
        kind,
        message: base.message,
        retry_after_ms,
        upstream_code: google.reason.clone().or_else(|| google.status.clone()).or(base.upstream_code),
    }
}

fn kind_of(status: u16, google: &GoogleError) -> FailureKind {
    let message = google.lower_message();
    let canonical = google.status.as_deref().unwrap_or("");
    if status == 429 || (canonical == "RESOURCE_EXHAUSTED" && status < 500) {
        return match google.quota_period() {
            _ if google.zero_limit() => FailureKind::QuotaExhausted,
            Some(QuotaPeriod::Day) => FailureKind::QuotaExhausted,
            Some(QuotaPeriod::Minute) | None => FailureKind::RateLimited,
        };
    }
    if status >= 500 {
        return FailureKind::Transient;
    }
    if is_key_problem(status, google, &message) {
        return FailureKind::KeyInvalid;
    }
    if is_context_length(&message) {
        return FailureKind::ContextLength;
    }
    if status == 413 {
        return FailureKind::ContextLength;
    }
    if status == 404 {
        return FailureKind::RequestInvalid;
    }
    if is_content_filter(google, &message) {
        return FailureKind::ContentFilter;
    }
    if is_unsupported(&message) {
        return FailureKind::Unsupported;
    }
    match status {
        400 | 409 | 422 => FailureKind::RequestInvalid,
        _ => FailureKind::Transient,
    }
}

fn is_key_problem(status: u16, google: &GoogleError, message: &str) -> bool {
    let canonical = google.status.as_deref().unwrap_or("");
    matches!(status, 401 | 403)
        || matches!(canonical, "UNAUTHENTICATED" | "PERMISSION_DENIED")
        || google.reason.as_deref().is_some_and(|r| KEY_REASONS.contains(&r))
        || message.contains("api key not valid")
        || message.contains("api key expired")
        || message.contains("api_key_invalid")
        || (canonical == "FAILED_PRECONDITION"
            && (message.contains("location is not supported")
                || message.contains("free tier is not available")
                || message.contains("enable billing")))
}

fn is_context_length(message: &str) -> bool {
    (message.contains("input token count") && message.contains("exceeds the maximum"))
        || message.contains("exceeds the maximum number of tokens")
        || message.contains("context length")
        || message.contains("context window")
        || message.contains("prompt is too long")
}

fn is_content_filter(google: &GoogleError, message: &str) -> bool {
    // A malformed `safety_settings` value is a plain invalid request.
    if message.contains("safety_settings") || message.contains("safetysettings") {
        return false;
    }
    let reason = google.reason.as_deref().unwrap_or("").to_lowercase();
    let labels = [reason.as_str(), message];
    labels.iter().any(|text| {
        ["safety", "prohibited_content", "prohibited content", "blocklist", "blocked", "spii", "content filter"]
            .iter()
            .any(|n| text.contains(n))
    })
}

fn is_unsupported(message: &str) -> bool {
    message.contains("is not enabled for")
        || message.contains("not supported for this model")
        || message.contains("is not supported by this model")
        || message.contains("are not supported")
        || message.contains("is not supported in")
        || (message.contains("unknown name") && message.contains("cannot find field"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> CallContext {
        CallContext { request_id: "r".into(), upstream_model: "gemini-2.5-flash".into(), is_stream: false }
    }

    fn classify_with(status: u16, headers: &[(&str, &str)], body: &str) -> Failure {
        let head = ResponseHead { status, headers: headers.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect() };
        classify(&ctx(), &head, body.as_bytes())
    }

    fn quota_body(quota_id: &str, retry: &str) -> String {
        format!(
            r#"[{{"error":{{"code":429,"message":"You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.\n* Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 250, model: gemini-2.5-flash\nPlease retry in 43.520581s.","status":"RESOURCE_EXHAUSTED","details":[{{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"{quota_id}","quotaDimensions":{{"location":"global","model":"gemini-2.5-flash"}},"quotaValue":"250"}}]}},{{"@type":"type.googleapis.com/google.rpc.Help","links":[{{"description":"Learn more about Gemini API quotas","url":"https://ai.google.dev/gemini-api/docs/rate-limits"}}]}},{{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"{retry}"}}]}}}}]"#
        )
    }

    #[test]
    fn parses_array_and_object_bodies() {
        let body = quota_body("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "43s");
        let g = GoogleError::parse(body.as_bytes()).unwrap();
        assert_eq!(g.code, Some(429));
        assert_eq!(g.status.as_deref(), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(g.retry_delay_ms, Some(43_000));
        assert_eq!(g.quotas.len(), 2);
        assert_eq!(g.message_retry_ms(), Some(43_521));
        let g = GoogleError::parse(
            br#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#,
        )
        .unwrap();
        assert_eq!(g.status.as_deref(), Some("UNAVAILABLE"));
        assert!(GoogleError::parse(br#"{"error":{"message":"x","type":"y"}}"#).is_none());
        assert!(GoogleError::parse(b"[]").is_none());
        assert!(GoogleError::parse(b"<html>").is_none());
    }

    #[test]
    fn daily_quota_is_exhausted_with_retry_info() {
        let body = quota_body("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "43s");
        let f = classify_with(429, &[], &body);
        assert_eq!(f.kind, FailureKind::QuotaExhausted);
        assert_eq!(f.retry_after_ms, Some(43_000));
        assert_eq!(f.upstream_code.as_deref(), Some("RESOURCE_EXHAUSTED"));
        assert!(f.message.starts_with("You exceeded your current quota"));
    }

    #[test]
    fn per_minute_quota_is_rate_limited() {
        let body = quota_body("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "7s");
        let f = classify_with(429, &[], &body);
        assert_eq!((f.kind, f.retry_after_ms), (FailureKind::RateLimited, Some(7_000)));
        let body = quota_body("GenerateContentInputTokensPerModelPerMinute-FreeTier", "0.2s");
        let f = classify_with(429, &[], &body);
        assert_eq!((f.kind, f.retry_after_ms), (FailureKind::RateLimited, Some(1_000)), "clamped up to 1 s");
        let body = quota_body("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "3600s");
        assert_eq!(classify_with(429, &[], &body).retry_after_ms, Some(600_000));
    }

    #[test]
    fn retry_after_header_wins_over_retry_info() {
        let body = quota_body("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "43s");
        let f = classify_with(429, &[("retry-after", "12")], &body);
        assert_eq!((f.kind, f.retry_after_ms), (FailureKind::RateLimited, Some(12_000)));
    }

    #[test]
    fn a_429_without_details_is_rate_limited() {
        let body = r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#;
        let f = classify_with(429, &[], body);
        assert_eq!((f.kind, f.retry_after_ms), (FailureKind::RateLimited, None));
        let body = r#"[{"error":{"code":429,"message":"You exceeded your current quota. Please retry in 20s.","status":"RESOURCE_EXHAUSTED"}}]"#;
        let f = classify_with(429, &[], body);
        assert_eq!(
            (f.kind, f.retry_after_ms),
            (FailureKind::RateLimited, Some(20_000)),
            "Google's quota wording alone does not make a daily quota"
        );
        let body = r#"{"error":{"code":429,"message":"Quota exceeded for quota metric 'Generate Content API requests per day'","status":"RESOURCE_EXHAUSTED"}}"#;
        assert_eq!(classify_with(429, &[], body).kind, FailureKind::QuotaExhausted);
    }

    #[test]
    fn a_zero_limit_is_exhausted() {
        let body = r#"[{"error":{"code":429,"message":"You exceeded your current quota.\n* Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_input_token_count, limit: 0, model: gemini-2.5-pro\nPlease retry in 9s.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_input_token_count","quotaId":"GenerateContentInputTokensPerModelPerMinute-FreeTier"}]}]}}]"#;
        let f = classify_with(429, &[], body);
        assert_eq!((f.kind, f.retry_after_ms), (FailureKind::QuotaExhausted, Some(9_000)));
        let g = GoogleError { message: Some("limit: 05".into()), ..GoogleError::default() };
        assert!(!g.zero_limit());
    }

    #[test]
    fn invalid_keys() {
        let body = r#"[{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com"}},{"@type":"type.googleapis.com/google.rpc.LocalizedMessage","locale":"en-US","message":"API key not valid. Please pass a valid API key."}]}}]"#;
        let f = classify_with(400, &[], body);
        assert_eq!(
            (f.kind, f.upstream_code.as_deref(), f.retry_after_ms),
            (FailureKind::KeyInvalid, Some("API_KEY_INVALID"), None)
        );
        assert_eq!(f.message, "API key not valid. Please pass a valid API key.");

        let body = r#"{"error":{"code":400,"message":"API key expired. Please renew the API key.","status":"INVALID_ARGUMENT"}}"#;
        assert_eq!(classify_with(400, &[], body).kind, FailureKind::KeyInvalid);

        let body = r#"[{"error":{"code":403,"message":"Your API key was reported as leaked. Please use another API key.","status":"PERMISSION_DENIED"}}]"#;
        let f = classify_with(403, &[], body);
        assert_eq!((f.kind, f.upstream_code.as_deref()), (FailureKind::KeyInvalid, Some("PERMISSION_DENIED")));

        let body = r#"{"error":{"code":403,"message":"Generative Language API has not been used in project 1234 before or it is disabled.","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"SERVICE_DISABLED","domain":"googleapis.com"}]}}"#;
        let f = classify_with(403, &[], body);
        assert_eq!((f.kind, f.upstream_code.as_deref()), (FailureKind::KeyInvalid, Some("SERVICE_DISABLED")));

        let body = r#"[{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}]"#;
        assert_eq!(classify_with(400, &[], body).kind, FailureKind::KeyInvalid);
    }

    #[test]
    fn context_length() {
        let body = r#"[{"error":{"code":400,"message":"The input token count (1250000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}]"#;
        let f = classify_with(400, &[], body);
        assert_eq!((f.kind, f.upstream_code.as_deref()), (FailureKind::ContextLength, Some("INVALID_ARGUMENT")));
        assert!(f.message.contains("1048576"));
    }

    #[test]
    fn content_filter() {
        let body = r#"[{"error":{"code":400,"message":"The request was blocked by Gemini's safety filters (blockReason: PROHIBITED_CONTENT).","status":"INVALID_ARGUMENT"}}]"#;
        assert_eq!(classify_with(400, &[], body).kind, FailureKind::ContentFilter);
        let body = r#"{"error":{"code":400,"message":"Prompt blocked","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"SAFETY"}]}}"#;
        let f = classify_with(400, &[], body);
        assert_eq!((f.kind, f.upstream_code.as_deref()), (FailureKind::ContentFilter, Some("SAFETY")));
    }

    #[test]
    fn unsupported_features_skip_gemini() {
        for message in [
            "Function calling is not enabled for models/gemma-3-27b-it",
            "Developer instruction is not enabled for models/gemma-3-27b-it",
            "Invalid JSON payload received. Unknown name \\\"store\\\": Cannot find field.",
            "Parallel tool calls are not supported.",
        ] {
            let body = format!(r#"[{{"error":{{"code":400,"message":"{message}","status":"INVALID_ARGUMENT"}}}}]"#);
            assert_eq!(classify_with(400, &[], &body).kind, FailureKind::Unsupported, "{message}");
        }
    }

    #[test]
    fn other_client_errors_are_request_invalid() {
        let body =
            r#"[{"error":{"code":400,"message":"Request contains an invalid argument.","status":"INVALID_ARGUMENT"}}]"#;
        let f = classify_with(400, &[], body);
        assert_eq!(
            (f.kind, f.upstream_code.as_deref(), f.retry_after_ms),
            (FailureKind::RequestInvalid, Some("INVALID_ARGUMENT"), None)
        );
        let body = r#"[{"error":{"code":404,"message":"models/gemini-9.9-ultra is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods.","status":"NOT_FOUND"}}]"#;
        assert_eq!(classify_with(404, &[], body).kind, FailureKind::RequestInvalid);
    }

    #[test]
    fn server_errors_are_transient() {
        let body = r#"[{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}]"#;
        let f = classify_with(503, &[], body);
        assert_eq!(
            (f.kind, f.message.as_str(), f.upstream_code.as_deref(), f.retry_after_ms),
            (FailureKind::Transient, "The model is overloaded. Please try again later.", Some("UNAVAILABLE"), None)
        );
        let f = classify_with(503, &[("retry-after", "30")], body);
        assert_eq!(f.retry_after_ms, Some(30_000));
        let body = r#"{"error":{"code":500,"message":"An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting","status":"INTERNAL"}}"#;
        assert_eq!(classify_with(500, &[], body).kind, FailureKind::Transient);
        let body = r#"{"error":{"code":504,"message":"Deadline expired before operation could complete.","status":"DEADLINE_EXCEEDED"}}"#;
        assert_eq!(classify_with(504, &[], body).kind, FailureKind::Transient);
    }

    #[test]
    fn non_google_bodies_use_the_sdk_defaults() {
        let f = classify_with(502, &[], "<html><body>Bad Gateway</body></html>");
        assert_eq!((f.kind, f.message.as_str()), (FailureKind::Transient, "502 from upstream"));
        let f = classify_with(429, &[("retry-after", "5")], "Too Many Requests");
        assert_eq!((f.kind, f.retry_after_ms), (FailureKind::RateLimited, Some(5_000)));
        assert_eq!(classify_with(401, &[], "").kind, FailureKind::KeyInvalid);
    }
}

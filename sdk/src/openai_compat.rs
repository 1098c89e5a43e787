//! Default behaviour for OpenAI-compatible providers, used by the
//! [`Adapter`](crate::Adapter) trait's default functions and available to
//! adapters that only need to tweak it:
//!
//! * [`map_request`] / [`map_request_to`]: the client's body with `model`
//!   replaced, a few fields dropped, POSTed as JSON; [`forward_request`] /
//!   [`forward_request_to`] do the same without parsing the body whole;
//! * [`normalize_response`]: checks a 2xx answer and returns it unchanged,
//!   with usage and finish reason;
//! * [`classify_failure`]: status, headers and OpenAI-style error body →
//!   [`Failure`];
//! * [`PassthroughStream`]: forwards OpenAI stream chunks, skipping broken
//!   ones, and the building blocks ([`parse_stream_event`], [`note_chunk`],
//!   [`stream_error`]) for normalizers that rewrite chunks.

use serde_json::{Map, Value};

use self::peek::Counts;
use crate::forward::ForwardRequest;
use crate::retry::retry_after_ms;
use crate::{
    CallContext, ChatRequest, Failure, FailureKind, FinishReason, HttpMethod, LogLevel, NormalizedResponse,
    ResponseHead, StreamEvent, StreamNormalizer, StreamOutput, UpstreamRequest, Usage, log,
};

mod peek;

/// Path of the chat endpoint relative to an OpenAI-compatible base URL.
pub const CHAT_COMPLETIONS_PATH: &str = "/chat/completions";

/// Longest upstream error message passed on, in bytes.
const MAX_MESSAGE_LEN: usize = 1_000;

/// Maps a chat request for an OpenAI-compatible provider: `POST
/// /chat/completions` (see [`map_request_to`]).
pub fn map_request(ctx: &CallContext, req: ChatRequest, drop_fields: &[&str]) -> Result<UpstreamRequest, Failure> {
    map_request_to(ctx, req, CHAT_COMPLETIONS_PATH, drop_fields)
}

/// Maps a chat request to `POST <path>` with a JSON body: `model` becomes
/// `ctx.upstream_model`, `stream` follows `ctx.is_stream` (set to `true` for
/// a stream, a stray `true` turned off otherwise), the top-level fields
/// named in `drop_fields` are removed, and everything else is passed on in
/// the client's order.
pub fn map_request_to(
    ctx: &CallContext,
    mut req: ChatRequest,
    path: &str,
    drop_fields: &[&str],
) -> Result<UpstreamRequest, Failure> {
    req.model.clone_from(&ctx.upstream_model);
    if ctx.is_stream {
        req.stream = Some(true);
    } else if req.stream == Some(true) {
        req.stream = Some(false);
    }
    let mut map = req.into_map();
    for field in drop_fields {
        map.shift_remove(*field);
    }
    let mut body = Vec::with_capacity(1024);
    serde_json::to_writer(&mut body, &map)
        .map_err(|e| Failure::request_invalid(format!("cannot encode request: {e}")))?;
    Ok(UpstreamRequest {
        method: HttpMethod::Post,
        path: path.to_owned(),
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: body.into(),
    })
}

/// Maps a chat request like [`map_request`], without parsing the body whole
/// (see [`forward_request_to`]).
///
/// # Errors
///
/// What `edit` returns, or `request-invalid` for a body that is not a chat
/// request object.
pub fn forward_request(
    ctx: &CallContext,
    body: &[u8],
    drop_fields: &[&str],
    edit: impl FnOnce(&mut ForwardRequest<'_>) -> Result<(), Failure>,
) -> Result<UpstreamRequest, Failure> {
    forward_request_to(ctx, body, CHAT_COMPLETIONS_PATH, drop_fields, edit)
}

/// Maps a chat request like [`map_request_to`] (the same `model`, `stream`
/// and dropped fields), without parsing the body whole: `edit` changes
/// what the provider needs on the split body ([`ForwardRequest`]), and
/// everything else is forwarded as the client wrote it. For a large prompt
/// this is one pass over its bytes instead of a parse and a re-encode, and
/// what goes unchanged is named as ranges of the client's body instead of
/// copied out of the component (a spliced body, see
/// [`splice`](crate::splice)).
///
/// # Errors
///
/// What `edit` returns, or `request-invalid` for a body that is not a chat
/// request object (`messages` missing or not an array of objects, `model`
/// not a string, `stream` not a boolean).
pub fn forward_request_to(
    ctx: &CallContext,
    body: &[u8],
    path: &str,
    drop_fields: &[&str],
    edit: impl FnOnce(&mut ForwardRequest<'_>) -> Result<(), Failure>,
) -> Result<UpstreamRequest, Failure> {
    let mut req = ForwardRequest::parse(body).map_err(invalid_body)?;
    if req.fields.raw("model").is_some_and(|model| !model.get().starts_with('"')) {
        return Err(invalid_body("`model` must be a string"));
    }
    let stream = match req.fields.raw("stream").map(|raw| raw.get()) {
        None | Some("null") => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(invalid_body("`stream` must be a boolean")),
    };
    edit(&mut req)?;
    req.fields.set("model", &ctx.upstream_model)?;
    match (ctx.is_stream, stream) {
        (true, _) => req.fields.set("stream", &true)?,
        (false, Some(true)) => req.fields.set("stream", &false)?,
        (false, None) => {
            req.fields.remove("stream");
        }
        (false, Some(false)) => {}
    }
    for field in drop_fields {
        req.fields.remove(field);
    }
    Ok(UpstreamRequest {
        method: HttpMethod::Post,
        path: path.to_owned(),
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: req
            .to_body(body.len() + 64)
            .map_err(|e| Failure::request_invalid(format!("cannot encode request: {e}")))?,
    })
}

/// The `request-invalid` failure for a body that is not a chat request.
pub(crate) fn invalid_body(why: impl std::fmt::Display) -> Failure {
    Failure::request_invalid(format!("invalid chat request body: {why}"))
}

/// Checks a 2xx answer: it must be a JSON object with a `choices` array.
/// Returns the original bytes unchanged, with `usage` and the first
/// choice's finish reason. Anything else is a `transient` failure ("malformed
/// upstream answer"), or the upstream's own error when the body is an error
/// object.
pub fn normalize_response(ctx: &CallContext, head: &ResponseHead, body: &[u8]) -> Result<NormalizedResponse, Failure> {
    let _ = (ctx, head);
    // Fast path: a well-formed answer is only scanned for the two fields
    // needed ([`peek`]); anything unusual is read in full below to say what
    // is wrong.
    if let Some(peek) = peek::peek(body).filter(|p| p.choices) {
        return Ok(NormalizedResponse {
            body: body.to_vec(),
            usage: peek.usage.and_then(Counts::usage),
            finish_reason: peek.finish_reason.map(finish_reason_from_str),
        });
    }
    normalize_read_whole(body)
}

/// [`normalize_response`]'s full path: the answer read whole, which says
/// what is wrong with one that is not usable.
fn normalize_read_whole(body: &[u8]) -> Result<NormalizedResponse, Failure> {
    let malformed = |why: &str| Failure::transient(format!("malformed upstream answer: {why}"));
    let value: Value = serde_json::from_slice(body).map_err(|e| malformed(&format!("not JSON ({e})")))?;
    let object = value.as_object().ok_or_else(|| malformed("not a JSON object"))?;
    let Some(choices) = object.get("choices").and_then(Value::as_array) else {
        return Err(stream_error(object).unwrap_or_else(|| malformed("no `choices` array")));
    };
    Ok(NormalizedResponse {
        body: body.to_vec(),
        usage: object.get("usage").and_then(usage_from_json),
        finish_reason: first_finish_reason(choices),
    })
}

impl Counts {
    /// What [`usage_from_json`] reads of the same object.
    fn usage(self) -> Option<Usage> {
        usage_from_counts(self.prompt, self.completion, self.total)
    }
}

/// Maps an OpenAI `finish_reason` to the contract's enum: `stop`, `length`,
/// `tool_calls` (and the legacy `function_call`), `content_filter`;
/// anything else is `other`.
pub fn finish_reason_from_str(reason: &str) -> FinishReason {
    match reason {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

/// The OpenAI `finish_reason` string of a contract finish reason, for
/// adapters that build OpenAI answers. OpenAI has no "other": it is written
/// as `stop`, the end of an answer no other reason explains.
pub fn finish_reason_to_str(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop | FinishReason::Other => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

/// The OpenAI `usage` object of a [`Usage`].
pub fn usage_to_json(usage: &Usage) -> Value {
    serde_json::json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    })
}

/// Reads an OpenAI `usage` object (`prompt_tokens`, `completion_tokens`,
/// `total_tokens`; a missing total is the sum). `None` when it is not an
/// object or names none of the three.
pub fn usage_from_json(usage: &Value) -> Option<Usage> {
    let usage = usage.as_object()?;
    let field = |name: &str| usage.get(name).and_then(Value::as_u64);
    usage_from_counts(field("prompt_tokens"), field("completion_tokens"), field("total_tokens"))
}

/// [`Usage`] from the three counts, when at least one is known: counts
/// saturate at `u32::MAX`, a missing total is the sum of the other two.
/// Adapters for providers that name their counts differently (e.g.
/// `input_tokens` / `output_tokens`) read them and call this.
pub fn usage_from_counts(prompt: Option<u64>, completion: Option<u64>, total: Option<u64>) -> Option<Usage> {
    if prompt.is_none() && completion.is_none() && total.is_none() {
        return None;
    }
    let count = |n: Option<u64>| n.map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    let (prompt_tokens, completion_tokens) = (count(prompt).unwrap_or(0), count(completion).unwrap_or(0));
    Some(Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: count(total).unwrap_or(prompt_tokens.saturating_add(completion_tokens)),
    })
}

/// The finish reason of the first choice of an OpenAI `choices` array, when
/// it has one.
pub fn first_finish_reason(choices: &[Value]) -> Option<FinishReason> {
    choices.first()?.get("finish_reason")?.as_str().map(finish_reason_from_str)
}

/// The parts of an upstream error body a router cares about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamError {
    /// Human message (`error.message`, a bare error string, or a short
    /// plain-text body).
    pub message: Option<String>,
    /// `error.code` (numbers are written as text).
    pub code: Option<String>,
    /// `error.type` (or `error.status`, as Google APIs name it).
    pub error_type: Option<String>,
}

impl UpstreamError {
    /// Reads an error body: OpenAI's `{"error": {"message", "type",
    /// "code"}}`, `{"error": "text"}`, `{"message": ...}`, `{"detail":
    /// ...}`, a one-element array of those, a JSON string, or a short
    /// plain-text body (HTML and long bodies give no message).
    pub fn parse(body: &[u8]) -> Self {
        match serde_json::from_slice::<Value>(body) {
            Ok(value) => Self::from_json(&value),
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let plain = !text.is_empty() && text.len() <= 300 && !text.starts_with('<');
                Self { message: plain.then(|| truncate(text)), ..Self::default() }
            }
        }
    }

    /// Reads an already parsed error body (see [`parse`](Self::parse)).
    pub fn from_json(value: &Value) -> Self {
        let text = |v: Option<&Value>| match v {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(truncate(s.trim())),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        match value {
            Value::String(s) => Self { message: text(Some(&Value::String(s.clone()))), ..Self::default() },
            Value::Array(items) => items.first().map(Self::from_json).unwrap_or_default(),
            Value::Object(object) => match object.get("error") {
                Some(Value::Object(error)) => Self {
                    message: text(error.get("message")),
                    code: text(error.get("code")),
                    error_type: text(error.get("type")).or_else(|| text(error.get("status"))),
                },
                Some(error @ Value::String(_)) => Self {
                    message: text(Some(error)),
                    code: text(object.get("code")),
                    error_type: text(object.get("type")),
                },
                _ => Self {
                    message: text(object.get("message")).or_else(|| text(object.get("detail"))),
                    code: text(object.get("code")),
                    error_type: text(object.get("type")),
                },
            },
            _ => Self::default(),
        }
    }

    /// Message, code and type in one lower-cased string, for keyword checks.
    fn haystack(&self) -> String {
        [&self.message, &self.code, &self.error_type]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn truncate(text: &str) -> String {
    if text.len() <= MAX_MESSAGE_LEN {
        return text.to_owned();
    }
    let mut end = MAX_MESSAGE_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Classifies a non-2xx answer of an OpenAI-compatible provider from its
/// status, headers and error body:
///
/// | status | kind |
/// |---|---|
/// | 429 | `rate-limited`, or `quota-exhausted` when the error names a daily/monthly quota |
/// | 402 | `quota-exhausted` (out of credits) |
/// | 401, 403 | `key-invalid` |
/// | 400, 404, 422 | `request-invalid`; `context-length` or `content-filter` when the error says so; `key-invalid` for an invalid API key |
/// | 413 | `context-length` |
/// | 408, 5xx, 529, anything else | `transient` |
///
/// `retry_after_ms` comes from the `retry-after` header (clamped, see
/// [`crate::retry`]) for 429, 402 and transient failures. The message is
/// the upstream's own when it gives one, else `"<status> from upstream"`;
/// `upstream_code` is `error.code`, else `error.type`.
pub fn classify_failure(ctx: &CallContext, head: &ResponseHead, body: &[u8]) -> Failure {
    let _ = ctx;
    let error = UpstreamError::parse(body);
    let text = error.haystack();
    let status = head.status;
    let kind = match status {
        429 if is_quota_exhausted(&text) => FailureKind::QuotaExhausted,
        429 => FailureKind::RateLimited,
        402 => FailureKind::QuotaExhausted,
        401 | 403 => FailureKind::KeyInvalid,
        413 => FailureKind::ContextLength,
        400 | 404 | 422 if is_context_length(&text) => FailureKind::ContextLength,
        400 | 404 | 422 if is_content_filter(&error) => FailureKind::ContentFilter,
        400 | 404 | 422 if is_invalid_key(&text) => FailureKind::KeyInvalid,
        400 | 404 | 422 => FailureKind::RequestInvalid,
        _ => FailureKind::Transient,
    };
    let retry_after_ms = match kind {
        FailureKind::RateLimited | FailureKind::QuotaExhausted | FailureKind::Transient => {
            retry_after_ms(&head.headers)
        }
        _ => None,
    };
    Failure {
        kind,
        message: error.message.unwrap_or_else(|| format!("{status} from upstream")),
        retry_after_ms,
        upstream_code: error.code.or(error.error_type),
    }
}

fn contains_any(haystack: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| haystack.contains(n))
}

/// `word` occurs in `text` with no letter or digit on either side.
fn contains_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// A 429 whose error names a daily or monthly quota (rather than a
/// per-minute rate).
pub fn is_quota_exhausted(error_text: &str) -> bool {
    let lower = error_text.to_lowercase();
    let long_period = contains_any(
        &lower,
        &["per day", "per_day", "perday", "daily", "per month", "per_month", "permonth", "monthly"],
    ) || contains_word(error_text, "RPD")
        || contains_word(error_text, "TPD");
    if long_period {
        return true;
    }
    let short_period = contains_any(&lower, &["per minute", "per_minute", "perminute", "per second", "per_second"])
        || contains_word(error_text, "RPM")
        || contains_word(error_text, "TPM");
    !short_period
        && contains_any(
            &lower,
            &[
                "quota exceeded",
                "quota_exceeded",
                "insufficient_quota",
                "exceeded your current quota",
                "out of credits",
            ],
        )
}

fn is_context_length(text: &str) -> bool {
    let lower = text.to_lowercase();
    contains_any(
        &lower,
        &[
            "context_length",
            "context length",
            "maximum context",
            "context window",
            "context_window",
            "too many tokens",
            "prompt is too long",
            "input is too long",
            "reduce the length",
        ],
    )
}

fn is_content_filter(error: &UpstreamError) -> bool {
    let labels = [&error.code, &error.error_type].into_iter().flatten().map(|s| s.to_lowercase());
    let label_says = labels
        .into_iter()
        .any(|l| contains_any(&l, &["content_filter", "content-filter", "content_policy", "moderation", "safety"]));
    let message_says = error.message.as_deref().is_some_and(|m| {
        contains_any(
            &m.to_lowercase(),
            &["content filter", "content_filter", "content policy", "content management policy"],
        )
    });
    label_says || message_says
}

fn is_invalid_key(text: &str) -> bool {
    let lower = text.to_lowercase();
    lower.contains("invalid_api_key")
        || (lower.contains("api key") && contains_any(&lower, &["invalid", "not valid", "incorrect"]))
}

/// What one stream event holds.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamData {
    /// The `[DONE]` sentinel: the provider ended the stream.
    Done,
    /// A JSON object (normally a `chat.completion.chunk`).
    Chunk(Map<String, Value>),
    /// Empty data (nothing to do).
    Empty,
    /// Not a JSON object; the text says why. Never forward these.
    Malformed(String),
}

/// Parses the data of one stream event.
pub fn parse_stream_event(event: &StreamEvent) -> StreamData {
    let data = event.data.trim();
    if data.is_empty() {
        return StreamData::Empty;
    }
    if data == "[DONE]" {
        return StreamData::Done;
    }
    match serde_json::from_str::<Value>(data) {
        Ok(Value::Object(chunk)) => StreamData::Chunk(chunk),
        Ok(_) => StreamData::Malformed("not a JSON object".to_owned()),
        Err(e) => StreamData::Malformed(e.to_string()),
    }
}

/// Records a chunk's `usage` and first-choice `finish_reason` (when
/// present) in `out`; later chunks overwrite earlier ones.
pub fn note_chunk(chunk: &Map<String, Value>, out: &mut StreamOutput) {
    if let Some(usage) = chunk.get("usage").and_then(usage_from_json) {
        out.usage = Some(usage);
    }
    if let Some(reason) = chunk.get("choices").and_then(Value::as_array).and_then(|c| first_finish_reason(c)) {
        out.finish_reason = Some(reason);
    }
}

/// A chunk that is an error object (`{"error": ...}` without `choices`), as
/// some providers send in the middle of a stream or with a 2xx status, as a
/// `transient` failure with the upstream's message.
pub fn stream_error(chunk: &Map<String, Value>) -> Option<Failure> {
    if chunk.contains_key("choices") || !chunk.contains_key("error") {
        return None;
    }
    let error = UpstreamError::from_json(&Value::Object(chunk.clone()));
    Some(Failure {
        kind: FailureKind::Transient,
        message: error.message.unwrap_or_else(|| "the upstream reported an error".to_owned()),
        retry_after_ms: None,
        upstream_code: error.code.or(error.error_type),
    })
}

/// The per-chunk part of a stream normalizer for an OpenAI-shaped stream;
/// [`RewritingStream`] runs the rest (framing of events, `[DONE]`, usage and
/// finish reason, malformed events). Implement it to check, repair or
/// annotate chunks, e.g. to number tool calls a provider leaves unnumbered.
pub trait ChunkRewriter {
    /// The failure an event reports, when it is an error event rather than
    /// a chunk. Default: [`stream_error`].
    fn error(&self, chunk: &Map<String, Value>) -> Option<Failure> {
        stream_error(chunk)
    }

    /// Repairs one chunk in place (and may note usage or a finish reason in
    /// `out`); returns whether it changed, so unchanged chunks are forwarded
    /// as their original bytes.
    fn rewrite(&mut self, chunk: &mut Map<String, Value>, out: &mut StreamOutput) -> bool;

    /// Whether the chunk whose data is `data` goes through
    /// [`rewrite`](Self::rewrite). Answer `false` only for chunks `rewrite`
    /// would neither change nor read: the stream then forwards their bytes
    /// after a borrowed read of their usage and finish reason, without
    /// building a JSON map (most of a chunk's cost in the component).
    /// Default: every chunk goes through `rewrite`.
    fn rewrites(&self, data: &str) -> bool {
        let _ = data;
        true
    }

    /// An event whose data is not a JSON object: skipped (and logged)
    /// unless this returns the failure it reports.
    fn malformed(&mut self, data: &str) -> Option<Failure> {
        let _ = data;
        None
    }
}

/// The stream normalizer of an OpenAI-shaped stream: forwards each chunk
/// (its original bytes unless the [`ChunkRewriter`] changed it), reports
/// usage and finish reason as rewritten, ends at `[DONE]`, skips (and logs)
/// events that are not JSON objects, and turns an error event into a
/// failure.
#[derive(Debug, Default)]
pub struct RewritingStream<R> {
    rewriter: R,
    done: bool,
}

impl<R> RewritingStream<R> {
    /// A stream whose chunks go through `rewriter`.
    pub fn new(rewriter: R) -> Self {
        Self { rewriter, done: false }
    }
}

impl<R: ChunkRewriter> StreamNormalizer for RewritingStream<R> {
    fn push(&mut self, events: Vec<StreamEvent>) -> Result<StreamOutput, Failure> {
        let mut out = StreamOutput::empty();
        for event in events {
            if self.done {
                break;
            }
            // A chunk with an `error` member takes the full path
            // ([`stream_error`]).
            if !self.rewriter.rewrites(&event.data)
                && let Some(peek) = peek::peek(event.data.as_bytes()).filter(|p| !p.error)
            {
                if let Some(usage) = peek.usage.and_then(Counts::usage) {
                    out.usage = Some(usage);
                }
                if let Some(reason) = peek.finish_reason {
                    out.finish_reason = Some(finish_reason_from_str(reason));
                }
                out.chunks.push(event.data.into_bytes());
                continue;
            }
            match parse_stream_event(&event) {
                StreamData::Done => self.done = true,
                StreamData::Chunk(mut chunk) => {
                    if let Some(failure) = self.rewriter.error(&chunk) {
                        return Err(failure);
                    }
                    let changed = self.rewriter.rewrite(&mut chunk, &mut out);
                    note_chunk(&chunk, &mut out);
                    out.chunks.push(if changed {
                        serde_json::to_vec(&chunk)
                            .map_err(|e| Failure::transient(format!("cannot encode a stream chunk: {e}")))?
                    } else {
                        event.data.into_bytes()
                    });
                }
                StreamData::Empty => {}
                StreamData::Malformed(why) => {
                    if let Some(failure) = self.rewriter.malformed(&event.data) {
                        return Err(failure);
                    }
                    log(LogLevel::Warn, &format!("skipped a malformed stream event ({why})"));
                }
            }
        }
        out.done = self.done;
        Ok(out)
    }

    fn finish(&mut self) -> Result<StreamOutput, Failure> {
        Ok(StreamOutput::empty())
    }
}

/// Whether a chunk's text may name one of `words` (a key or a value): it
/// holds one of them, or a `\u` escape, which could spell any of them. For
/// [`ChunkRewriter::rewrites`]: `may_name(data, &["tool_calls"])`.
///
/// One pass over the chunk when the words start with at most two bytes
/// other than `\` (`memchr2`/`memchr3` on those bytes, each hit checked
/// for `\u` or a word), as groq's one word does; a substring search per
/// word otherwise (mistral's words start with three bytes, one of them
/// `"`, which a one-byte pass would stop at everywhere).
pub fn may_name(data: &str, words: &[&str]) -> bool {
    let bytes = data.as_bytes();
    let mut firsts = [b'\\'; 3];
    let mut distinct = 1;
    for word in words {
        let Some(&first) = word.as_bytes().first() else {
            return true; // the empty word is in every text
        };
        if !firsts[..distinct].contains(&first) {
            if distinct == firsts.len() {
                return contains(data, "\\u") || words.iter().any(|word| contains(data, word));
            }
            firsts[distinct] = first;
            distinct += 1;
        }
    }
    let names_at = |at: usize| {
        let rest = &bytes[at..];
        rest.starts_with(b"\\u") || words.iter().any(|word| rest.starts_with(word.as_bytes()))
    };
    match distinct {
        1 => memchr::memchr_iter(firsts[0], bytes).any(names_at),
        2 => memchr::memchr2_iter(firsts[0], firsts[1], bytes).any(names_at),
        _ => memchr::memchr3_iter(firsts[0], firsts[1], firsts[2], bytes).any(names_at),
    }
}

/// Whether `text` occurs in `data`, found with a vector search
/// (`memchr::memmem`, 16 bytes a step in a component built with
/// `simd128`). For the tests of [`ChunkRewriter::rewrites`], which run on
/// every chunk: `str::contains` sets up a two-way searcher and walks the
/// chunk a byte at a time, which took a third of a pass-through chunk's
/// time in the component.
pub fn contains(data: &str, text: &str) -> bool {
    memchr::memmem::find(data.as_bytes(), text.as_bytes()).is_some()
}

/// The [`ChunkRewriter`] that changes nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unchanged;

impl ChunkRewriter for Unchanged {
    fn rewrite(&mut self, _chunk: &mut Map<String, Value>, _out: &mut StreamOutput) -> bool {
        false
    }

    fn rewrites(&self, _data: &str) -> bool {
        false
    }
}

/// A [`ChunkRewriter`] that takes every chunk down `R`'s full path (a map
/// through [`ChunkRewriter::error`] and [`ChunkRewriter::rewrite`]),
/// whatever `R::rewrites` says: for tests that check an adapter's
/// `rewrites` against the full path, chunk by chunk.
#[derive(Debug, Default, Clone)]
pub struct EveryChunk<R>(pub R);

impl<R: ChunkRewriter> ChunkRewriter for EveryChunk<R> {
    fn error(&self, chunk: &Map<String, Value>) -> Option<Failure> {
        self.0.error(chunk)
    }

    fn rewrite(&mut self, chunk: &mut Map<String, Value>, out: &mut StreamOutput) -> bool {
        self.0.rewrite(chunk, out)
    }

    fn malformed(&mut self, data: &str) -> Option<Failure> {
        self.0.malformed(data)
    }
}

/// The stream normalizer of an OpenAI-compatible provider: chunks forwarded
/// unchanged (see [`RewritingStream`]).
pub type PassthroughStream = RewritingStream<Unchanged>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_random::below;
    use serde_json::json;

    fn ctx(stream: bool) -> CallContext {
        CallContext { request_id: "req-1".into(), upstream_model: "llama-3.3-70b-versatile".into(), is_stream: stream }
    }

    fn head(status: u16, headers: &[(&str, &str)]) -> ResponseHead {
        ResponseHead { status, headers: headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect() }
    }

    fn classify(status: u16, headers: &[(&str, &str)], body: &str) -> Failure {
        classify_failure(&ctx(false), &head(status, headers), body.as_bytes())
    }

    fn event(data: &str) -> StreamEvent {
        StreamEvent { event: None, data: data.to_owned() }
    }

    #[test]
    fn a_word_may_be_named_outright_or_through_an_escape() {
        assert!(may_name(r#"{"x_groq":{}}"#, &["x_groq"]));
        assert!(may_name(r#"{"x\u005fgroq":{}}"#, &["x_groq"]), "an escape could spell it");
        assert!(may_name(r#"{"a":1,"tool_calls":[]}"#, &["x_groq", "tool_calls"]));
        assert!(!may_name(r#"{"choices":[{"delta":{"content":"hi"}}]}"#, &["x_groq", "tool_calls"]));
        assert!(!may_name("{}", &[]));
        // Chunks of a real size take the vector search: a word at any
        // offset, the last bytes included, is found, and none is invented.
        let filler = "a".repeat(300);
        for at in [0, 1, 15, 16, 63, 64, 200, 300] {
            let data = format!("{}tool_calls{}", &filler[..at], &filler[at..]);
            assert!(may_name(&data, &["x_groq", "tool_calls"]), "at {at}");
            assert!(contains(&data, "tool_calls"), "at {at}");
        }
        assert!(!may_name(&filler, &["x_groq", "tool_calls"]));
        assert!(!contains(&format!("{filler}tool_call"), "tool_calls"), "a prefix at the end is no match");
    }

    /// `may_name`'s one pass gives what a substring search per word gives,
    /// for one, two and three first bytes besides `\` (the last takes the
    /// search itself), on texts made at random of the words' pieces.
    #[test]
    fn may_name_in_one_pass_agrees_with_a_search_per_word() {
        let reference =
            |data: &str, words: &[&str]| contains(data, "\\u") || words.iter().any(|word| contains(data, word));
        let word_sets: [&[&str]; 6] = [
            &[],
            &["x_groq"],
            &["tool_calls", "x_groq"],
            &["tool_calls", "thinking"],
            &["x_groq", "tool_calls", "reasoning"],
            &["", "x"],
        ];
        let pieces = ["x_gro", "q", "tool_", "calls", "\\", "u", "\\u00", "x", "t", "a\"b", "é", "reason", "ing", " "];
        let mut next = below(0x2545_f491_4f6c_dd1d);
        for _ in 0..5_000 {
            let data: String = (0..next(40)).map(|_| pieces[next(pieces.len())]).collect();
            for words in word_sets {
                assert_eq!(may_name(&data, words), reference(&data, words), "{data:?} {words:?}");
            }
        }
    }

    #[test]
    fn an_answer_that_is_an_array_is_malformed_not_peeked() {
        let head = head(200, &[]);
        let failure = normalize_response(&ctx(false), &head, br#"[[{"finish_reason":"stop"}],null]"#).unwrap_err();
        assert_eq!(failure.kind, FailureKind::Transient);
        assert!(failure.message.contains("not a JSON object"), "{}", failure.message);
        let answer = normalize_response(&ctx(false), &head, br#" {"choices":[{"finish_reason":"stop"}]}"#).unwrap();
        assert_eq!(answer.finish_reason, Some(FinishReason::Stop));
    }

    #[test]
    fn a_chunk_read_through_its_peek_gives_what_its_map_gives() {
        let chunks = [
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"a \"b\" \u00e9"},"finish_reason":null}]}"#,
            r#" {"choices":[{"delta":{},"finish_reason":"stop"},{"finish_reason":"length"}],"usage":null}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":3.0,"completion_tokens":-1,"total_tokens":9}}"#,
            r#"{"choices":[{"finish_reason":"st\u006fp"}]}"#,
            r#"{"choices":[{"finish_reason":7}]}"#,
            r#"{"choices":{"finish_reason":"stop"}}"#,
            r#"{"choices":["stop"]}"#,
            r#"{"choices":[{"finish_reason":"stop","finish_reason":"length"}]}"#,
            r#"{"usage":{"total_tokens":1},"usage":{"total_tokens":2},"choices":[]}"#,
            r#"{"choices":[],"error":null}"#,
            r#"{"choices":[{"finish_reason":"stop"}],"error":{"message":"ignored beside choices"}}"#,
            r#"[[{"finish_reason":"stop"}],null]"#,
            "not json",
            "",
            "42",
            r#"{"\u0065rror":{"message":"escaped, still an error"}}"#,
            r#"{"error":{"message":"rate limited","code":"429"}}"#,
            "[DONE]",
            r#"{"choices":[{"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":[1,2,3]}"#,
            r#"{"choices":[null]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":-0,"completion_tokens":18446744073709551615}}"#,
            r#"{"choices":[],"usage":{"total_tokens":18446744073709551616}}"#,
            r#"{"choices":[{"finish_reason":"stop"}],"usage":{"total_tokens":1e2}}"#,
            r#"{"choices":[{"delta":{"content":"x"}},{"finish_reason":"stop"}]}"#,
            " { \"choices\" : [ { \"finish_reason\" : \"length\" } ] ,\n \"usage\" : { \"total_tokens\" : 5 } } ",
            r#"{"choices":[{"finish_reason":"tool_calls","delta":{"tool_calls":[{"index":0}]}}],"usage":{"x":{"y":[{}]}}}"#,
        ];
        let run = |peek: bool, events: Vec<StreamEvent>| {
            if peek {
                RewritingStream::new(Unchanged).push(events)
            } else {
                RewritingStream::new(EveryChunk(Unchanged)).push(events)
            }
        };
        for chunk in chunks {
            assert_eq!(run(true, vec![event(chunk)]), run(false, vec![event(chunk)]), "{chunk}");
        }
        for start in 0..chunks.len() {
            let events = || chunks[start..].iter().map(|c| event(c)).collect::<Vec<_>>();
            assert_eq!(run(true, events()), run(false, events()), "from {}", chunks[start]);
        }
        assert!(peek::peek(chunks[0].as_bytes()).is_some_and(|p| !p.error), "a plain chunk is peeked");
        assert!(peek::peek(chunks[16].as_bytes()).is_some_and(|p| p.error), "an escaped error member is seen");
    }

    /// The peeks against the full paths on texts mutated at random from an
    /// answer and chunks (a fixed seed: the same texts every run). A
    /// mutation inserts, removes or replaces a byte with one JSON gives a
    /// meaning to, so many texts stay JSON with an odd member.
    #[test]
    fn the_peeks_agree_with_the_full_paths_on_mutated_texts() {
        const BYTES: &[u8] = b"{}[]\":,\\-0123456789.eE+ \nnulltruefalsechoicesusagefinish_reasonerror_tokens";
        let seeds = [
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}],"usage":null}"#,
            r#"{"choices":[{"finish_reason":"stop"},{"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
            r#"{"choices":[],"usage":{"total_tokens":12,"completion_tokens":null},"error":null}"#,
            r#"{"choices":[{"message":{"content":"x"},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":0}}"#,
        ];
        let mut next = below(0x9e37_79b9_7f4a_7c15);
        let head = head(200, &[]);
        let (mut peeked, mut texts) = (0, 0);
        for seed in seeds {
            for _ in 0..2_000 {
                let mut text = seed.as_bytes().to_vec();
                for _ in 0..1 + next(3) {
                    let at = next(text.len());
                    match next(3) {
                        0 => text.insert(at, BYTES[next(BYTES.len())]),
                        1 => {
                            text.remove(at);
                        }
                        _ => text[at] = BYTES[next(BYTES.len())],
                    }
                }
                let text = String::from_utf8(text).expect("ASCII in, ASCII out");
                texts += 1;
                let chunk = |peek: bool| {
                    let events = vec![event(&text)];
                    if peek {
                        RewritingStream::new(Unchanged).push(events)
                    } else {
                        RewritingStream::new(EveryChunk(Unchanged)).push(events)
                    }
                };
                assert_eq!(chunk(true), chunk(false), "chunk {text}");
                if peek::peek(text.as_bytes()).is_some_and(|p| p.choices) {
                    peeked += 1;
                    let fast = normalize_response(&ctx(false), &head, text.as_bytes());
                    assert_eq!(fast, normalize_read_whole(text.as_bytes()), "answer {text}");
                }
            }
        }
        // The mutations leave enough texts the peek takes to mean something.
        assert!(peeked * 10 > texts, "{peeked} of {texts} peeked");
    }

    #[test]
    fn map_request_sets_model_keeps_order_and_unknown_fields() {
        let body = r#"{"model":"groq/x","messages":[{"role":"user","content":"hi"}],"top_k":3,"temperature":0.5,"metadata":{"a":1}}"#;
        let req = ChatRequest::from_slice(body.as_bytes()).unwrap();
        let up = map_request(&ctx(false), req, &[]).unwrap();
        assert_eq!(up.method, HttpMethod::Post);
        assert_eq!(up.path, "/chat/completions");
        assert_eq!(up.headers, [("content-type".to_owned(), "application/json".to_owned())]);
        assert_eq!(
            String::from_utf8(up.body.as_bytes().expect("a whole body").to_vec()).unwrap(),
            r#"{"model":"llama-3.3-70b-versatile","messages":[{"role":"user","content":"hi"}],"top_k":3,"temperature":0.5,"metadata":{"a":1}}"#
        );
    }

    #[test]
    fn map_request_drops_fields_and_follows_stream_flag() {
        let body = r#"{"model":"m","logprobs":true,"messages":[],"stream":true,"stream_options":{"include_usage":true},"logit_bias":{"1":2},"x":1}"#;
        let req = ChatRequest::from_slice(body.as_bytes()).unwrap();
        let up = map_request(&ctx(true), req.clone(), &["logprobs", "logit_bias", "x", "absent"]).unwrap();
        assert_eq!(
            String::from_utf8(up.body.as_bytes().expect("a whole body").to_vec()).unwrap(),
            r#"{"model":"llama-3.3-70b-versatile","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#
        );
        let up = map_request_to(&ctx(false), req, "/v1/chat/completions", &[]).unwrap();
        assert_eq!(up.path, "/v1/chat/completions");
        let sent: Value = serde_json::from_slice(up.body.as_bytes().expect("a whole body")).unwrap();
        assert_eq!(sent["stream"], json!(false));
    }

    #[test]
    fn map_request_sets_stream_when_the_host_streams() {
        let req = ChatRequest::from_slice(br#"{"model":"m","messages":[]}"#).unwrap();
        let up = map_request(&ctx(true), req, &[]).unwrap();
        assert_eq!(
            String::from_utf8(up.body.as_bytes().expect("a whole body").to_vec()).unwrap(),
            r#"{"model":"llama-3.3-70b-versatile","messages":[],"stream":true}"#
        );
    }

    #[test]
    fn normalize_returns_original_bytes_with_usage_and_finish_reason() {
        let body = br#"{"id":"x",  "choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"tool_calls"}],
            "usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15},"x_groq":{}}"#;
        let n = normalize_response(&ctx(false), &head(200, &[]), body).unwrap();
        assert_eq!(n.body, body);
        let usage = n.usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens, usage.total_tokens), (10, 5, 15));
        assert_eq!(n.finish_reason, Some(FinishReason::ToolCalls));

        let n = normalize_response(&ctx(false), &head(200, &[]), br#"{"choices":[]}"#).unwrap();
        assert!(n.usage.is_none() && n.finish_reason.is_none());
    }

    #[test]
    fn unusual_answers_read_the_same_as_by_a_full_parse() {
        // Each of these leaves the fast path (or takes it): the result must be
        // what reading the whole answer gives.
        for (body, usage, finish) in [
            // Nested usage details are skipped, not built.
            (
                r#"{"choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":1}}}"#,
                Some((3, 4, 7)),
                Some(FinishReason::Stop),
            ),
            // A fractional count is not a count; the others still are.
            (
                r#"{"choices":[{"finish_reason":"length"}],"usage":{"prompt_tokens":1.5,"completion_tokens":2}}"#,
                Some((0, 2, 2)),
                Some(FinishReason::Length),
            ),
            // An escaped finish reason, a null one, a non-string one.
            (r#"{"choices":[{"finish_reason":"st\u006fp"}]}"#, None, Some(FinishReason::Stop)),
            (r#"{"choices":[{"finish_reason":null}],"usage":null}"#, None, None),
            (r#"{"choices":[{"finish_reason":7}],"usage":"n/a"}"#, None, None),
            // Counts past u32 saturate.
            (r#"{"choices":[],"usage":{"total_tokens":99999999999}}"#, Some((0, 0, u32::MAX)), None),
        ] {
            let n = normalize_response(&ctx(false), &head(200, &[]), body.as_bytes()).unwrap();
            assert_eq!(n.usage.map(|u| (u.prompt_tokens, u.completion_tokens, u.total_tokens)), usage, "{body}");
            assert_eq!(n.finish_reason, finish, "{body}");
            assert_eq!(n.body, body.as_bytes());
        }
    }

    #[test]
    fn finish_reasons_map() {
        for (text, reason) in [
            ("stop", FinishReason::Stop),
            ("length", FinishReason::Length),
            ("tool_calls", FinishReason::ToolCalls),
            ("content_filter", FinishReason::ContentFilter),
            ("eos", FinishReason::Other),
        ] {
            assert_eq!(finish_reason_from_str(text), reason);
        }
    }

    #[test]
    fn finish_reasons_round_trip_through_openai_strings() {
        for reason in [FinishReason::Stop, FinishReason::Length, FinishReason::ToolCalls, FinishReason::ContentFilter] {
            assert_eq!(finish_reason_from_str(finish_reason_to_str(reason)), reason);
        }
        assert_eq!(finish_reason_to_str(FinishReason::Other), "stop");
    }

    #[test]
    fn usage_is_written_as_openai_counts() {
        let usage = usage_from_counts(Some(3), Some(4), None).unwrap();
        assert_eq!(usage_to_json(&usage), json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}));
        assert_eq!(usage_from_json(&usage_to_json(&usage)), Some(usage));
        assert!(usage_from_counts(None, None, None).is_none());
    }

    #[test]
    fn usage_total_defaults_to_the_sum() {
        let u = usage_from_json(&json!({"prompt_tokens": 4, "completion_tokens": 6})).unwrap();
        assert_eq!(u.total_tokens, 10);
        assert!(usage_from_json(&json!(null)).is_none());
        assert!(usage_from_json(&json!({"queue_time": 0.1})).is_none());
    }

    #[test]
    fn malformed_answers_are_transient() {
        for body in [&b"<html>"[..], b"[]", br#"{"id":"x"}"#, br#"{"choices":{}}"#] {
            let f = normalize_response(&ctx(false), &head(200, &[]), body).unwrap_err();
            assert_eq!(f.kind, FailureKind::Transient);
            assert!(f.message.starts_with("malformed upstream answer: "), "{}", f.message);
        }
        let f =
            normalize_response(&ctx(false), &head(200, &[]), br#"{"error":{"message":"overloaded","code":"busy"}}"#)
                .unwrap_err();
        assert_eq!(
            (f.kind, f.message.as_str(), f.upstream_code.as_deref()),
            (FailureKind::Transient, "overloaded", Some("busy"))
        );
    }

    const OPENAI_429: &str =
        r#"{"error":{"message":"Rate limit reached for requests","type":"requests","code":"rate_limit_exceeded"}}"#;

    #[test]
    fn rate_limited_with_and_without_retry_after() {
        let f = classify(429, &[("retry-after", "7")], OPENAI_429);
        assert_eq!(f.kind, FailureKind::RateLimited);
        assert_eq!(f.retry_after_ms, Some(7_000));
        assert_eq!(f.message, "Rate limit reached for requests");
        assert_eq!(f.upstream_code.as_deref(), Some("rate_limit_exceeded"));

        let f = classify(429, &[], OPENAI_429);
        assert_eq!((f.kind, f.retry_after_ms), (FailureKind::RateLimited, None));
        let f = classify(429, &[("retry-after", "0.25")], OPENAI_429);
        assert_eq!(f.retry_after_ms, Some(1_000));
        let f = classify(429, &[("retry-after", "tomorrow")], OPENAI_429);
        assert_eq!((f.kind, f.retry_after_ms), (FailureKind::RateLimited, None));
        let f = classify(429, &[("Retry-After", "Thu, 01 Jan 1970 00:00:00 GMT")], OPENAI_429);
        assert_eq!(f.retry_after_ms, Some(1_000), "a past date means now, clamped");
        let f = classify(429, &[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")], OPENAI_429);
        assert_eq!(f.retry_after_ms, Some(600_000), "a far date is clamped");
    }

    #[test]
    fn daily_and_monthly_quotas_are_exhausted() {
        for body in [
            r#"{"error":{"message":"Rate limit reached for model `x` on requests per day (RPD): Limit 1000, Used 1000","type":"requests","code":"rate_limit_exceeded"}}"#,
            r#"{"error":{"message":"Limit reached on tokens per day (TPD)"}}"#,
            r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota"}}"#,
            r#"{"error":{"message":"daily limit reached"}}"#,
            r#"{"error":{"message":"Quota exceeded for metric: generate_content_free_tier_requests, limit: 50, PerDay"}}"#,
            r#"{"error":{"message":"Quota exceeded"}}"#,
        ] {
            assert_eq!(classify(429, &[], body).kind, FailureKind::QuotaExhausted, "{body}");
        }
        for body in [
            r#"{"error":{"message":"Quota exceeded for quota metric 'requests per minute'"}}"#,
            r#"{"error":{"message":"Limit reached on tokens per minute (TPM)"}}"#,
            r#"{"error":{"message":"slow down, STPDX"}}"#,
        ] {
            assert_eq!(classify(429, &[], body).kind, FailureKind::RateLimited, "{body}");
        }
    }

    #[test]
    fn bad_keys() {
        let f = classify(
            401,
            &[],
            r#"{"error":{"message":"Invalid API Key","type":"invalid_request_error","code":"invalid_api_key"}}"#,
        );
        assert_eq!(
            (f.kind, f.message.as_str(), f.upstream_code.as_deref()),
            (FailureKind::KeyInvalid, "Invalid API Key", Some("invalid_api_key"))
        );
        assert_eq!(classify(403, &[], "").kind, FailureKind::KeyInvalid);
        assert_eq!(
            classify(400, &[], r#"{"error":{"message":"API key not valid. Please pass a valid API key."}}"#).kind,
            FailureKind::KeyInvalid
        );
    }

    #[test]
    fn request_invalid_context_length_and_content_filter() {
        let f =
            classify(400, &[], r#"{"error":{"message":"'messages' must be an array","type":"invalid_request_error"}}"#);
        assert_eq!((f.kind, f.upstream_code.as_deref()), (FailureKind::RequestInvalid, Some("invalid_request_error")));
        assert_eq!(classify(404, &[], r#"{"error":{"message":"model not found"}}"#).kind, FailureKind::RequestInvalid);
        assert_eq!(classify(422, &[], "{}").kind, FailureKind::RequestInvalid);

        let f = classify(
            400,
            &[],
            r#"{"error":{"message":"This model's maximum context length is 8192 tokens","code":"context_length_exceeded"}}"#,
        );
        assert_eq!((f.kind, f.upstream_code.as_deref()), (FailureKind::ContextLength, Some("context_length_exceeded")));
        assert_eq!(
            classify(400, &[], r#"{"error":{"message":"Please reduce the length of the messages"}}"#).kind,
            FailureKind::ContextLength
        );
        assert_eq!(classify(413, &[], r#"{"error":{"message":"Request too large"}}"#).kind, FailureKind::ContextLength);

        let f = classify(400, &[], r#"{"error":{"message":"The response was filtered","code":"content_filter"}}"#);
        assert_eq!(f.kind, FailureKind::ContentFilter);
        assert_eq!(
            classify(400, &[], r#"{"error":{"message":"flagged","type":"moderation_error"}}"#).kind,
            FailureKind::ContentFilter
        );
        assert_eq!(
            classify(400, &[], r#"{"error":{"message":"blocked","code":"SAFETY"}}"#).kind,
            FailureKind::ContentFilter
        );
    }

    #[test]
    fn server_errors_are_transient() {
        let f = classify(500, &[], r#"{"error":{"message":"internal error"}}"#);
        assert_eq!((f.kind, f.message.as_str(), f.retry_after_ms), (FailureKind::Transient, "internal error", None));
        let f = classify(503, &[("retry-after", "30")], "");
        assert_eq!(
            (f.kind, f.message.as_str(), f.retry_after_ms),
            (FailureKind::Transient, "503 from upstream", Some(30_000))
        );
        assert_eq!(classify(529, &[], "").kind, FailureKind::Transient);
        assert_eq!(classify(408, &[], "").kind, FailureKind::Transient);
        assert_eq!(classify(418, &[], "").kind, FailureKind::Transient);
        assert_eq!(classify(402, &[], "").kind, FailureKind::QuotaExhausted);
    }

    #[test]
    fn odd_error_bodies() {
        let f = classify(502, &[], "<html><body>Bad Gateway</body></html>");
        assert_eq!((f.message.as_str(), f.upstream_code), ("502 from upstream", None));
        assert_eq!(classify(500, &[], "upstream connect error").message, "upstream connect error");
        assert_eq!(classify(500, &[], r#""plain string""#).message, "plain string");
        let f = classify(429, &[], r#"{"error":"too many requests","code":429}"#);
        assert_eq!(
            (f.kind, f.message.as_str(), f.upstream_code.as_deref()),
            (FailureKind::RateLimited, "too many requests", Some("429"))
        );
        assert_eq!(classify(400, &[], r#"{"detail":"bad field"}"#).message, "bad field");
        let f = classify(400, &[], r#"[{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}]"#);
        assert_eq!((f.message.as_str(), f.upstream_code.as_deref()), ("bad", Some("400")));
        let long = "x".repeat(5_000);
        assert!(classify(500, &[], &format!(r#"{{"error":{{"message":"{long}"}}}}"#)).message.len() < 1_100);
    }

    #[test]
    fn passthrough_forwards_chunks_and_picks_up_usage() {
        let mut s = PassthroughStream::default();
        let c1 = r#"{"id":"1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}"#;
        let c2 = r#"{"id":"1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
        let c3 = r#"{"id":"1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
        let out = s.push(vec![event(c1), event("{\"broken"), event("42"), event(c2)]).unwrap();
        assert_eq!(out.chunks, [c1.as_bytes().to_vec(), c2.as_bytes().to_vec()]);
        assert_eq!(out.finish_reason, Some(FinishReason::Stop));
        assert!(out.usage.is_none() && !out.done);

        let out = s.push(vec![event(c3), event("[DONE]"), event(c1)]).unwrap();
        assert_eq!(out.chunks, [c3.as_bytes().to_vec()]);
        assert_eq!(out.usage.map(|u| u.total_tokens), Some(4));
        assert!(out.done);
        let out = s.finish().unwrap();
        assert!(out.chunks.is_empty() && !out.done && out.usage.is_none());
    }

    #[test]
    fn passthrough_turns_an_error_event_into_a_failure() {
        let mut s = PassthroughStream::default();
        let f = s.push(vec![event(r#"{"error":{"message":"model overloaded","type":"server_error"}}"#)]).unwrap_err();
        assert_eq!((f.kind, f.message.as_str()), (FailureKind::Transient, "model overloaded"));
        assert!(s.push(vec![event(""), event("  ")]).unwrap().chunks.is_empty());
    }
}

//! Removing secrets from text that may reach a client, a dashboard or a log:
//! upstream error messages can echo a key back, and adapters can put
//! anything in a failure message.
//!
//! [`redact`] is the one function every outward path uses. It applies, in
//! this order:
//!
//! 1. **Exact values.** Every configured secret, of any shape: every key of
//!    every provider slot (registered when a slot is assembled at start and
//!    on each reload), the master and admin keys and the browser-token
//!    secret (at start), every virtual key (at start and on each keys-file
//!    reload). Each value is also matched in its JSON- and Rust-escaped
//!    forms, so a key containing `"` or `\` is caught in JSON log lines and
//!    `Debug` output. Overlapping matches are merged, so no tail of a secret
//!    survives next to another one. Values shorter than [`MIN_EXACT_LEN`]
//!    are not matched exactly: they cannot be told apart from ordinary
//!    words (a key `k` would blank every `k` in every message), and no real
//!    provider issues keys that short.
//! 2. **Shapes.** `Bearer <token>` (the whole token68 run), words that look
//!    like provider keys (`sk-`, `gsk_`, `AIza`, `csk-`, `glsa_`, `nvapi-`
//!    followed by 16+ key characters) and runs of 32+ hex digits: these
//!    catch keys the gateway was never told about.
//!
//! Paths that go through it:
//! * client error bodies: every `ApiError` message and the whole rendered
//!   envelope ([`crate::http::error`]);
//! * stream error events after the answer started ([`crate::routing::stream`]);
//! * `/v1/status` (and the `/v1/events` snapshot built from it): a
//!   provider's `lastErrorMessage` ([`crate::ops::stats::ProviderStats::failure`]),
//!   `keys[].invalidReason` ([`crate::providers::keys::KeyRing::disable`]),
//!   `recentRequests[].error` ([`crate::ops::stats::RequestLog::push`]);
//! * `/v1/events` frames: request and adapter events
//!   ([`crate::ops::events::EventBus::publish`]);
//! * `/metrics` label values ([`crate::ops::metrics::escape`]);
//! * every log line: the log writer ([`LogWriter`]) redacts each formatted
//!   line, so `tracing` calls anywhere in the code (failover, streams,
//!   upstream, reload, adapters' own log calls) are covered without each
//!   call site remembering to.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::{Arc, LazyLock, Mutex};

use aho_corasick::{AhoCorasick, MatchKind};
use arc_swap::ArcSwap;

/// What replaces a secret.
pub const MARKER: &str = "[REDACTED]";

/// Exact values shorter than this are not matched (see the module doc).
pub const MIN_EXACT_LEN: usize = 8;

const KEY_PREFIXES: &[&str] = &["sk-", "gsk_", "AIza", "csk-", "glsa_", "nvapi-"];

/// A matcher for a fixed set of secret values.
#[derive(Debug, Default)]
pub struct Redactor {
    matcher: Option<AhoCorasick>,
}

impl Redactor {
    /// A redactor for `values` (short and empty values are ignored).
    pub fn new<I, S>(values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut patterns: Vec<String> = Vec::new();
        for value in values {
            let value = value.as_ref();
            if value.len() < MIN_EXACT_LEN {
                continue;
            }
            patterns.push(value.to_owned());
            // The forms a value takes inside a JSON string and in `{:?}`.
            for escaped in [serde_json::to_string(value).ok(), Some(format!("{value:?}"))].into_iter().flatten() {
                let inner = escaped.get(1..escaped.len().saturating_sub(1)).unwrap_or_default();
                if inner != value && !inner.is_empty() {
                    patterns.push(inner.to_owned());
                }
            }
        }
        patterns.sort_unstable();
        patterns.dedup();
        // Standard semantics: overlapping iteration reports every match, so
        // overlapping secrets are merged below instead of leaving a tail.
        let matcher = if patterns.is_empty() {
            None
        } else {
            AhoCorasick::builder().match_kind(MatchKind::Standard).build(&patterns).ok()
        };
        Self { matcher }
    }

    /// `text` with every known value and every secret shape replaced.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.redact_exact(text) {
            Cow::Borrowed(t) => redact_shapes(t),
            Cow::Owned(t) => Cow::Owned(redact_shapes(&t).into_owned()),
        }
    }

    fn redact_exact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let Some(matcher) = &self.matcher else { return Cow::Borrowed(text) };
        // Every match, overlapping ones included (reported by end position,
        // so sorted by start before merging).
        let mut matches: Vec<(usize, usize)> =
            matcher.find_overlapping_iter(text).map(|m| (m.start(), m.end())).collect();
        if matches.is_empty() {
            return Cow::Borrowed(text);
        }
        matches.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(matches.len());
        for (start, end) in matches {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        for (start, end) in merged {
            out.push_str(text.get(at..start).unwrap_or_default());
            out.push_str(MARKER);
            at = end;
        }
        out.push_str(text.get(at..).unwrap_or_default());
        Cow::Owned(out)
    }
}

/// The process-wide secrets, by source (`provider:<id>`, `credentials`,
/// `virtual-keys`), so each source replaces only its own values.
static SOURCES: LazyLock<Mutex<BTreeMap<String, Vec<String>>>> = LazyLock::new(Default::default);

/// The matcher built from [`SOURCES`]; readers never take a lock.
static CURRENT: LazyLock<ArcSwap<Redactor>> = LazyLock::new(|| ArcSwap::from_pointee(Redactor::default()));

/// Replaces the secrets registered under `source` with `values` and
/// rebuilds the matcher (called on load and reload; never per request).
pub fn set_secrets<I, S>(source: &str, values: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let values: Vec<String> = values.into_iter().map(|v| v.as_ref().to_owned()).collect();
    let mut sources = SOURCES.lock().unwrap_or_else(|e| e.into_inner());
    if sources.get(source) == Some(&values) {
        return;
    }
    sources.insert(source.to_owned(), values);
    let redactor = Redactor::new(sources.values().flatten());
    CURRENT.store(Arc::new(redactor));
}

/// `text` with every registered secret and every secret shape replaced by
/// `[REDACTED]` (or `[REDACTED_KEY]`, `[REDACTED_HEX]` for shapes); borrowed
/// when nothing was found.
pub fn redact(text: &str) -> Cow<'_, str> {
    CURRENT.load().redact(text)
}

/// [`redact`] into an owned `String`.
pub fn redact_secrets(text: &str) -> String {
    redact(text).into_owned()
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// The characters of an RFC 7235 token68 (a bearer token), `=` padding included.
fn is_token68_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '+' | '/' | '=')
}

fn redact_shapes(text: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut copied = 0;
    let mut rest_at = 0;
    let replace = |out: &mut String, copied: &mut usize, start: usize, end: usize, with: &str| {
        out.push_str(&text[*copied..start]);
        out.push_str(with);
        *copied = end;
    };
    while rest_at < text.len() {
        let rest = &text[rest_at..];
        let Some(start) = rest.find(is_key_char) else { break };
        let word_at = rest_at + start;
        let word_len = text[word_at..].find(|c: char| !is_key_char(c)).unwrap_or(text.len() - word_at);
        let word = &text[word_at..word_at + word_len];
        let after = word_at + word_len;
        if word.eq_ignore_ascii_case("bearer") && text[after..].starts_with([' ', '\t']) {
            let ws = text[after..].find(|c: char| c != ' ' && c != '\t').unwrap_or(text.len() - after);
            let token_at = after + ws;
            let token_len = text[token_at..].find(|c: char| !is_token68_char(c)).unwrap_or(text.len() - token_at);
            if token_len > 0 {
                replace(&mut out, &mut copied, token_at, token_at + token_len, MARKER);
            }
            rest_at = token_at + token_len;
            continue;
        }
        if KEY_PREFIXES.iter().any(|p| word.starts_with(p) && word.len() >= p.len() + 16) {
            replace(&mut out, &mut copied, word_at, after, "[REDACTED_KEY]");
        } else if word.len() >= 32 && word.chars().all(|c| c.is_ascii_hexdigit()) {
            replace(&mut out, &mut copied, word_at, after, "[REDACTED_HEX]");
        }
        rest_at = after;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// The gateway's log destination (stderr) with every line redacted:
/// `tracing_subscriber::fmt().with_writer(LogWriter)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogWriter;

/// One log line on its way to stderr.
#[derive(Debug)]
pub struct RedactingWriter<W: Write>(W);

impl<W: Write> RedactingWriter<W> {
    /// Redacts everything written before it reaches `inner`.
    pub fn new(inner: W) -> Self {
        Self(inner)
    }
}

impl<W: Write> Write for RedactingWriter<W> {
    /// The formatter hands over each event as one buffer, so a secret is
    /// never split between two calls.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = RedactingWriter<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(io::stderr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes(text: &str) -> String {
        Redactor::default().redact(text).into_owned()
    }

    #[test]
    fn bearer_tokens_are_redacted_whole() {
        assert_eq!(shapes("bad header Bearer abc.def"), "bad header Bearer [REDACTED]");
        assert_eq!(shapes("Authorization: Bearer gsk_x"), "Authorization: Bearer [REDACTED]");
        assert_eq!(shapes("bearer   zz-Custom.Key/Value+123456== end"), "bearer   [REDACTED] end");
        assert_eq!(shapes("\"Bearer a/b+c\""), "\"Bearer [REDACTED]\"");
        // Already redacted text is left alone (no `[[REDACTED]]`).
        assert_eq!(shapes("Bearer [REDACTED]"), "Bearer [REDACTED]");
        assert_eq!(shapes("Bearer"), "Bearer");
        assert_eq!(shapes("Bearer "), "Bearer ");
    }

    #[test]
    fn provider_key_shapes_are_redacted() {
        assert_eq!(shapes("Invalid API Key: gsk_abcdefghijklmnopqrstuv!"), "Invalid API Key: [REDACTED_KEY]!");
        assert_eq!(shapes("key AIzaSyA1234567890123456789 bad"), "key [REDACTED_KEY] bad");
    }

    #[test]
    fn long_hex_is_redacted_and_normal_text_kept() {
        let hex = "0123456789abcdef0123456789abcdef";
        assert_eq!(shapes(&format!("id {hex}")), "id [REDACTED_HEX]");
        let plain = "The model `llama3` does not exist (code 404).";
        assert!(matches!(Redactor::default().redact(plain), Cow::Borrowed(_)));
        assert_eq!(shapes(plain), plain);
        assert_eq!(shapes("sk-short"), "sk-short");
        assert_eq!(shapes(""), "");
        assert_eq!(shapes("ünïcödé … bearer"), "ünïcödé … bearer");
    }

    #[test]
    fn exact_values_of_any_shape_are_redacted() {
        let r = Redactor::new(["zz-Custom.Key/Value+123456", "päss wörd 1234"]);
        assert_eq!(
            r.redact("Incorrect API key provided: zz-Custom.Key/Value+123456."),
            "Incorrect API key provided: [REDACTED]."
        );
        assert_eq!(r.redact("key=päss wörd 1234;"), "key=[REDACTED];");
        assert_eq!(r.redact("nothing here"), "nothing here");
    }

    #[test]
    fn exact_values_inside_longer_words_are_redacted() {
        let r = Redactor::new(["Secret123"]);
        assert_eq!(r.redact("xxSecret123yy and Secret123Secret123"), "xx[REDACTED]yy and [REDACTED]");
    }

    #[test]
    fn overlapping_and_nested_values_leave_no_tail() {
        let r = Redactor::new(["AAAABBBBCC", "BBBBCCDDDD", "abcdefgh12", "abcdefgh1234", "XXinnerpartYY", "innerpart"]);
        assert_eq!(r.redact("(XXinnerpartYY)"), "([REDACTED])");
        assert_eq!(r.redact("<AAAABBBBCCDDDD>"), "<[REDACTED]>");
        assert_eq!(r.redact("k=abcdefgh1234!"), "k=[REDACTED]!");
        assert_eq!(r.redact("k=abcdefgh12!"), "k=[REDACTED]!");
    }

    #[test]
    fn escaped_forms_are_redacted() {
        let r = Redactor::new([r#"q"uote\back"#]);
        let json = serde_json::to_string(&serde_json::json!({ "m": r#"bad q"uote\back"# })).unwrap();
        assert_eq!(r.redact(&json), r#"{"m":"bad [REDACTED]"}"#);
        assert_eq!(r.redact(&format!("{:?}", r#"q"uote\back"#)), "\"[REDACTED]\"");
    }

    #[test]
    fn short_values_are_not_matched_exactly() {
        let r = Redactor::new(["k", "", "1234567"]);
        assert_eq!(r.redact("keep k and 1234567"), "keep k and 1234567");
    }

    #[test]
    fn exact_values_are_redacted_before_shapes() {
        // A key that starts like a known shape but goes on past it: the
        // shape rule alone would leave `.tail` behind.
        let r = Redactor::new(["sk-abcdefghijklmnopqrst.tail"]);
        assert_eq!(r.redact("got sk-abcdefghijklmnopqrst.tail"), "got [REDACTED]");
        assert_eq!(r.redact("Authorization: Bearer sk-abcdefghijklmnopqrst.tail"), "Authorization: Bearer [REDACTED]");
    }

    #[test]
    fn registered_sources_are_replaced_not_accumulated() {
        set_secrets("test:a", ["first-value-0a1b"]);
        assert_eq!(redact("x first-value-0a1b"), "x [REDACTED]");
        set_secrets("test:a", ["second-value-0a1b"]);
        assert_eq!(redact("x first-value-0a1b second-value-0a1b"), "x first-value-0a1b [REDACTED]");
        set_secrets("test:a", Vec::<String>::new());
        assert_eq!(redact("x second-value-0a1b"), "x second-value-0a1b");
    }

    #[test]
    fn the_log_writer_redacts_each_line() {
        set_secrets("test:log", ["log-secret-9z8y"]);
        let mut w = RedactingWriter::new(Vec::new());
        w.write_all(b"upstream said log-secret-9z8y and Bearer tok\n").unwrap();
        assert_eq!(String::from_utf8(w.0).unwrap(), "upstream said [REDACTED] and Bearer [REDACTED]\n");
    }
}

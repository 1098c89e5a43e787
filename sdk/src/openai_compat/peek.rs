//! The peek: what an answer or a stream chunk forwarded unchanged is read
//! for (the first choice's finish reason, the usage counts, whether it has
//! an `error` member), read with the SDK's scanner instead of parsed. Every
//! other value is only checked to be JSON and stepped over, 64 bytes a step
//! in a component (the scanner's string loop), where `serde_json` reading
//! the same members walks each string a byte at a time.
//!
//! A peek is all or nothing. Anything it does not take as is declines it:
//! a text that is not one JSON object, a known member of an unexpected type
//! (`choices` not an array or `null`, a choice not an object, `usage` not an
//! object or `null`), an escaped or non-string finish reason, a count that
//! is not a plain non-negative integer, a known member given twice. The
//! caller then reads the text in full, which reads what is unusual the long
//! way or says what is wrong; a peek that is taken gives what that full
//! read gives (the tests compare both on unusual texts).

use std::borrow::Cow;

use crate::forward::scan::{JsonError, Scanner};

/// What a peek read of a JSON object.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Peek<'a> {
    /// `choices` is an array (it is neither absent nor `null`).
    pub choices: bool,
    /// The first choice's `finish_reason`, when it is a string.
    pub finish_reason: Option<&'a str>,
    /// `usage`'s counts, when it is an object.
    pub usage: Option<Counts>,
    /// The object has an `error` member, whatever its value.
    pub error: bool,
}

/// `usage`'s `prompt_tokens`, `completion_tokens` and `total_tokens`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counts {
    pub prompt: Option<u64>,
    pub completion: Option<u64>,
    pub total: Option<u64>,
}

/// Peeks at `text`; `None` declines it (see the [module](self)).
pub(super) fn peek(text: &[u8]) -> Option<Peek<'_>> {
    let mut scanner = Scanner::new(text);
    let mut peek = Peek::default();
    let (mut seen_choices, mut seen_usage) = (false, false);
    scanner
        .object(|s, key| {
            match &*key {
                "choices" => {
                    first_time(&mut seen_choices)?;
                    peek.choices = choices(s, &mut peek.finish_reason)?;
                }
                "usage" => {
                    first_time(&mut seen_usage)?;
                    peek.usage = usage(s)?;
                }
                "error" => {
                    first_time(&mut peek.error)?;
                    s.value()?;
                }
                _ => {
                    s.value()?;
                }
            }
            Ok(())
        })
        .ok()?;
    scanner.end().ok()?;
    Some(peek)
}

/// Declines a peek (the error is never shown: a declined peek is read in
/// full).
fn decline<T>() -> Result<T, JsonError> {
    Err(JsonError::new("declined", 0))
}

/// Marks a known member seen; declines one given twice.
fn first_time(seen: &mut bool) -> Result<(), JsonError> {
    if std::mem::replace(seen, true) { decline() } else { Ok(()) }
}

/// Reads `null` (false) or an array of choice objects (true), noting the
/// first one's finish reason.
fn choices<'a>(s: &mut Scanner<'a>, first_reason: &mut Option<&'a str>) -> Result<bool, JsonError> {
    match s.next_byte() {
        Some(b'n') => null(s).map(|()| false),
        Some(b'[') => {
            let mut index = 0;
            s.array(|s| {
                let reason = choice(s)?;
                if index == 0 {
                    *first_reason = reason;
                }
                index += 1;
                Ok(())
            })?;
            Ok(true)
        }
        _ => decline(),
    }
}

/// Reads one choice (an object) for its finish reason: `null`, absent or a
/// string without escapes.
fn choice<'a>(s: &mut Scanner<'a>) -> Result<Option<&'a str>, JsonError> {
    if s.next_byte() != Some(b'{') {
        return decline();
    }
    let (mut reason, mut seen) = (None, false);
    s.object(|s, key| {
        if key == "finish_reason" {
            first_time(&mut seen)?;
            reason = match s.value()? {
                b"null" => None,
                [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => match std::str::from_utf8(inner) {
                    Ok(text) => Some(text),
                    Err(_) => return decline(),
                },
                _ => return decline(),
            };
        } else {
            s.value()?;
        }
        Ok(())
    })?;
    Ok(reason)
}

/// Reads `null` (none) or a `usage` object's counts.
fn usage(s: &mut Scanner<'_>) -> Result<Option<Counts>, JsonError> {
    match s.next_byte() {
        Some(b'n') => null(s).map(|()| None),
        Some(b'{') => {
            let mut counts = Counts::default();
            let mut seen = [false; 3];
            s.object(|s, key: Cow<'_, str>| {
                let (slot, seen) = match &*key {
                    "prompt_tokens" => (&mut counts.prompt, &mut seen[0]),
                    "completion_tokens" => (&mut counts.completion, &mut seen[1]),
                    "total_tokens" => (&mut counts.total, &mut seen[2]),
                    _ => {
                        s.value()?;
                        return Ok(());
                    }
                };
                first_time(seen)?;
                *slot = count(s.value()?)?;
                Ok(())
            })?;
            Ok(Some(counts))
        }
        _ => decline(),
    }
}

/// A count: `null` (none) or a plain non-negative integer that fits a `u64`.
fn count(raw: &[u8]) -> Result<Option<u64>, JsonError> {
    if raw == b"null" {
        return Ok(None);
    }
    if raw.is_empty() || !raw.iter().all(u8::is_ascii_digit) {
        return decline();
    }
    // ASCII digits: the conversion cannot fail, and the parse fails only
    // past `u64::MAX`.
    match std::str::from_utf8(raw).ok().and_then(|digits| digits.parse().ok()) {
        Some(n) => Ok(Some(n)),
        None => decline(),
    }
}

/// Reads a `null`.
fn null(s: &mut Scanner<'_>) -> Result<(), JsonError> {
    if s.value()? == b"null" { Ok(()) } else { decline() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_chunk_and_answer_are_peeked() {
        let chunk = br#"{"id":"c","choices":[{"index":0,"delta":{"content":"a \"b\" \u00e9"},"finish_reason":null}]}"#;
        assert_eq!(peek(chunk), Some(Peek { choices: true, ..Peek::default() }));
        let answer = br#" {"choices":[{"message":{"content":"hi"},"finish_reason":"stop"},{"finish_reason":"length"}],
            "usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7,"details":{"cached":[1]}},"x":[{}]} "#;
        let counts = Counts { prompt: Some(3), completion: Some(4), total: Some(7) };
        assert_eq!(
            peek(answer),
            Some(Peek { choices: true, finish_reason: Some("stop"), usage: Some(counts), error: false })
        );
        let usage_only = br#"{"choices":[],"usage":{"prompt_tokens":null,"total_tokens":18446744073709551615}}"#;
        let counts = Counts { prompt: None, completion: None, total: Some(u64::MAX) };
        assert_eq!(peek(usage_only), Some(Peek { choices: true, usage: Some(counts), ..Peek::default() }));
        assert_eq!(
            peek(br#"{"error":null,"choices":null,"usage":null}"#),
            Some(Peek { error: true, ..Peek::default() })
        );
        assert_eq!(peek(br#"{"\u0065rror":1}"#), Some(Peek { error: true, ..Peek::default() }), "an escaped key");
    }

    #[test]
    fn what_a_peek_does_not_take_as_is_declines_it() {
        for text in [
            &b""[..],
            b"[]",
            b"null",
            b"{",
            br#"{"choices":[]} x"#,
            br#"{"choices":{}}"#,
            br#"{"choices":"stop"}"#,
            br#"{"choices":["stop"]}"#,
            br#"{"choices":[null]}"#,
            br#"{"choices":[],"choices":[]}"#,
            br#"{"choices":[{"finish_reason":"st\u006fp"}]}"#,
            br#"{"choices":[{"finish_reason":7}]}"#,
            br#"{"choices":[{"finish_reason":"stop","finish_reason":null}]}"#,
            br#"{"choices":[{},{"finish_reason":false}]}"#,
            br#"{"usage":[1,2,3]}"#,
            br#"{"usage":{"prompt_tokens":3.0}}"#,
            br#"{"usage":{"prompt_tokens":-1}}"#,
            br#"{"usage":{"prompt_tokens":-0}}"#,
            br#"{"usage":{"prompt_tokens":1e3}}"#,
            br#"{"usage":{"prompt_tokens":"3"}}"#,
            br#"{"usage":{"total_tokens":18446744073709551616}}"#,
            br#"{"usage":{"total_tokens":1,"total_tokens":2}}"#,
            br#"{"usage":{},"usage":{}}"#,
            br#"{"error":1,"error":2}"#,
            br#"{"choices":[{"finish_reason":"stop"}],"x":tru}"#,
            b"{\"choices\":[{\"finish_reason\":\"\xff\"}]}",
        ] {
            assert_eq!(peek(text), None, "{}", String::from_utf8_lossy(text));
        }
    }
}

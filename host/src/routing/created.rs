//! `created` filled in by the host: contract 0.2 lets an adapter whose
//! provider reports no timestamp leave it 0 in answers and chunks.

use std::sync::LazyLock;

use memchr::memmem;
use serde_json::Value;

/// The current unix time in seconds (0 before 1970, which never happens).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Replaces a top-level `"created": 0` of an answer or chunk by `now()`
/// (contract 0.2: an adapter whose provider reports no timestamp leaves it
/// 0 and the host fills it in; done for 0.1 adapters too). Bodies without
/// that exact field pass through untouched and unparsed, and the clock is
/// not read for them, so the cost is one substring search per answer or
/// chunk.
pub fn fill_created(body: Vec<u8>, now: impl FnOnce() -> u64) -> Vec<u8> {
    if !has_zero_created(&body) {
        return body;
    }
    let Ok(mut value) = serde_json::from_slice::<Value>(&body) else { return body };
    match value.get_mut("created") {
        Some(created) if created.as_u64() == Some(0) => *created = Value::from(now()),
        _ => return body,
    }
    serde_json::to_vec(&value).unwrap_or(body)
}

/// Whether `"created"` followed by `:` and the number 0 occurs (spaces
/// allowed), a cheap pre-filter for [`fill_created`].
fn has_zero_created(body: &[u8]) -> bool {
    const KEY: &[u8] = b"\"created\"";
    static FINDER: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(KEY));
    let mut rest = body;
    while let Some(at) = FINDER.find(rest) {
        rest = &rest[at + KEY.len()..];
        let mut tail = rest.iter().skip_while(|b| b.is_ascii_whitespace());
        if tail.next() != Some(&b':') {
            continue;
        }
        let mut tail = tail.skip_while(|b| b.is_ascii_whitespace());
        if tail.next() == Some(&b'0') && !tail.next().is_some_and(|b| b.is_ascii_digit() || *b == b'.') {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_created_is_filled_with_now_and_others_are_untouched() {
        let out = fill_created(br#"{"id":"x","created": 0,"choices":[]}"#.to_vec(), || 1_800_000_000);
        assert_eq!(out, br#"{"id":"x","created":1800000000,"choices":[]}"#);
        for kept in [
            &br#"{"id":"x","created":1700000000}"#[..],
            br#"{"id":"x","created":0.5}"#,
            br#"{"id":"x"}"#,
            br#"{"choices":[{"message":{"created":0}}],"created":5}"#,
            b"not json \"created\":0",
        ] {
            let read_clock = std::cell::Cell::new(false);
            let out = fill_created(kept.to_vec(), || {
                read_clock.set(true);
                9
            });
            assert_eq!(out, kept, "{}", String::from_utf8_lossy(kept));
            assert!(!read_clock.get(), "the clock is read only for a zero `created`");
        }
    }
}

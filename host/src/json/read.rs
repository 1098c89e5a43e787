//! The fast reader behind [`Json::read`]: reads a body's bytes straight
//! into a [`Json`] in one pass, stepping over a string's plain bytes 64 at a
//! time (compiled to SIMD compares) and checking UTF-8 only in strings that
//! hold a byte outside ASCII (outside strings, the grammar allows ASCII
//! only). The path it replaces checked the whole body's UTF-8, then had
//! `serde_json` step over strings 8 bytes at a time and build every value
//! through its visitor.
//!
//! It only ever *declines*: on any body it is not sure of (invalid UTF-8,
//! an error of any kind, a lone surrogate escape, deep nesting) it returns
//! `None` and the caller reads the body the old way, whose value and error
//! messages are then the answer. Numbers are read by `serde_json` itself,
//! from the number's own text. So a body it accepts reads as `serde_json`
//! reads it (the differential tests in `tests.rs`), and what `serde_json`
//! refuses, it refuses with `serde_json`'s message.

use std::borrow::Cow;

use super::{Json, JsonObject};

/// Deeper texts are left to `serde_json` (whose limit is 128).
const MAX_DEPTH: usize = 100;

/// Reads `bytes` as one JSON value, or `None` to leave them to `serde_json`.
pub(super) fn read(bytes: &[u8]) -> Option<Json<'_>> {
    let mut reader = Reader { bytes, at: 0 };
    let value = reader.value(0)?;
    reader.skip_whitespace();
    (reader.at == reader.bytes.len()).then_some(value)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, literal: &[u8]) -> Option<()> {
        let end = self.at.checked_add(literal.len())?;
        (self.bytes.get(self.at..end)? == literal).then(|| self.at = end)
    }

    fn value(&mut self, depth: usize) -> Option<Json<'a>> {
        self.skip_whitespace();
        match self.peek()? {
            b'"' => self.string().map(Json::String),
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'n' => self.eat(b"null").map(|()| Json::Null),
            b't' => self.eat(b"true").map(|()| Json::Bool(true)),
            b'f' => self.eat(b"false").map(|()| Json::Bool(false)),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// A number's text (the bytes a number may hold), read by `serde_json`.
    fn number(&mut self) -> Option<Json<'a>> {
        let start = self.at;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.peek() {
            self.at += 1;
        }
        serde_json::from_slice(&self.bytes[start..self.at]).ok()
    }

    fn array(&mut self, depth: usize) -> Option<Json<'a>> {
        let mut items = Vec::new();
        self.container(depth, b']', |reader| {
            items.push(reader.value(depth)?);
            Some(())
        })?;
        Some(Json::Array(items))
    }

    fn object(&mut self, depth: usize) -> Option<Json<'a>> {
        let mut object = JsonObject::default();
        self.container(depth, b'}', |reader| {
            reader.skip_whitespace();
            if reader.peek()? != b'"' {
                return None;
            }
            let key = reader.string()?;
            reader.skip_whitespace();
            reader.eat(b":")?;
            let value = reader.value(depth)?;
            object.push_read(key, value);
            Some(())
        })?;
        object.merge_repeated();
        Some(Json::Object(object))
    }

    /// An array or an object, the reader on its opening bracket: `item`
    /// reads each item (an object's member) in turn, up to `close`.
    fn container(&mut self, depth: usize, close: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.at += 1;
        self.skip_whitespace();
        if self.peek()? == close {
            self.at += 1;
            return Some(());
        }
        loop {
            item(self)?;
            self.skip_whitespace();
            match self.peek()? {
                b',' => self.at += 1,
                b if b == close => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string, the reader on its opening quote: borrowed from the text
    /// unless it holds escapes.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.at += 1; // "
        let start = self.at;
        let plain = self.plain_text()?;
        match self.peek()? {
            b'"' => {
                self.at += 1;
                Some(Cow::Borrowed(plain))
            }
            b'\\' => {
                let mut owned = String::with_capacity(self.at - start + 16);
                owned.push_str(plain);
                loop {
                    // On a backslash.
                    self.at += 1;
                    let escaped = self.peek()?;
                    self.at += 1;
                    match escaped {
                        b'"' => owned.push('"'),
                        b'\\' => owned.push('\\'),
                        b'/' => owned.push('/'),
                        b'b' => owned.push('\u{8}'),
                        b'f' => owned.push('\u{c}'),
                        b'n' => owned.push('\n'),
                        b'r' => owned.push('\r'),
                        b't' => owned.push('\t'),
                        b'u' => owned.push(self.unicode_escape()?),
                        _ => return None,
                    }
                    owned.push_str(self.plain_text()?);
                    match self.peek()? {
                        b'"' => {
                            self.at += 1;
                            return Some(Cow::Owned(owned));
                        }
                        b'\\' => {}
                        _ => return None,
                    }
                }
            }
            // A control character: serde_json refuses it.
            _ => None,
        }
    }

    /// The character of a `\u` escape, the reader after the `u`; a
    /// surrogate pair is read whole, a lone surrogate declined.
    fn unicode_escape(&mut self) -> Option<char> {
        let first = self.hex4()?;
        match first {
            0xD800..=0xDBFF => {
                self.eat(b"\\u")?;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return None;
                }
                char::from_u32(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))
            }
            0xDC00..=0xDFFF => None,
            _ => char::from_u32(first),
        }
    }

    /// Steps over the plain bytes at the reader ([`plain_run`]) and
    /// returns them as text, `None` when they are not UTF-8.
    fn plain_text(&mut self) -> Option<&'a str> {
        let start = self.at;
        let (len, ascii) = plain_run(&self.bytes[start..]);
        self.at += len;
        let run = &self.bytes[start..self.at];
        if ascii {
            // SAFETY: every byte of `run` is below 0x80 (`plain_run`), and
            // a sequence of ASCII bytes is valid UTF-8.
            Some(unsafe { std::str::from_utf8_unchecked(run) })
        } else {
            std::str::from_utf8(run).ok()
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let end = self.at.checked_add(4)?;
        let digits = self.bytes.get(self.at..end)?;
        let mut value = 0u32;
        for &d in digits {
            value = value * 16 + char::from(d).to_digit(16)?;
        }
        self.at = end;
        Some(value)
    }
}

/// Bytes a string reader stops at: its end, an escape, a control character.
/// (`|`, not `||`: without branches, a block's test compiles to SIMD.)
fn stops(byte: u8) -> bool {
    (byte == b'"') | (byte == b'\\') | (byte < 0x20)
}

/// The length of the run of bytes at the start of `bytes` that need no
/// attention inside a string, and whether all of the run is ASCII. Blocks
/// of 64 are tested without a branch per byte, which the compiler turns
/// into SIMD compares: 32 bytes at a time on a CPU with AVX2 (the check is
/// one load of a flag the standard library caches), 16 otherwise.
fn plain_run(bytes: &[u8]) -> (usize, bool) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: this CPU has AVX2, checked just above.
        return unsafe { plain_run_avx2(bytes) };
    }
    plain_run_portable(bytes)
}

/// [`plain_run`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn plain_run_avx2(bytes: &[u8]) -> (usize, bool) {
    plain_run_portable(bytes)
}

/// [`plain_run`] for any CPU; inlined into each caller, so that each is
/// compiled with its own target features.
#[inline(always)]
fn plain_run_portable(bytes: &[u8]) -> (usize, bool) {
    const BLOCK: usize = 64;
    let mut at = 0;
    // The plain blocks' bytes ORed lane by lane, folded to one byte only at
    // the end: folding each block would chain every block's compares to
    // the block before it (a dozen shuffles each).
    let mut high = [0u8; BLOCK];
    for block in bytes.chunks_exact(BLOCK) {
        let mut stop = false;
        for &b in block {
            stop |= stops(b);
        }
        if stop {
            break;
        }
        for (h, &b) in high.iter_mut().zip(block) {
            *h |= b;
        }
        at += BLOCK;
    }
    let rest = &bytes[at..];
    let len = rest.iter().position(|&b| stops(b)).unwrap_or(rest.len());
    let high = rest[..len].iter().chain(&high).fold(0, |high, &b| high | b);
    (at + len, high < 0x80)
}

#[cfg(test)]
mod tests;

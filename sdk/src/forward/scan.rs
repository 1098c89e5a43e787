//! Reading JSON text without building values: a [`Scanner`] finds where each
//! value ends, checks on the way that it is JSON as `serde_json` reads it
//! (the grammar, string escapes, UTF-8, at most [`MAX_DEPTH`] levels of
//! nesting, as it limits them when it parses values), and hands back the
//! value's own bytes.
//!
//! A chat request is mostly the text of its messages, so the one loop that
//! matters is the one over a string's plain bytes ([`plain_run`]): 64
//! bytes a step (four 16-byte vectors) with WebAssembly SIMD (components
//! are built with it), eight otherwise, and UTF-8 is checked apart only for
//! a string that holds a byte outside ASCII (everything outside strings
//! must be ASCII anyway).
//! `serde_json` reading the same text into raw values makes two passes of
//! eight bytes a step: one for the string's end, one for its UTF-8.

use std::borrow::Cow;
use std::fmt;

/// The deepest nesting of objects and arrays read; one more level is refused,
/// as `serde_json` refuses it when it parses values (and as the gateway
/// refuses a request).
pub const MAX_DEPTH: u32 = 127;

/// Why a text is not read: what was expected and the byte offset where it
/// was not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    what: &'static str,
    at: usize,
}

impl JsonError {
    /// An error at `at`.
    pub(crate) fn new(what: &'static str, at: usize) -> Self {
        Self { what, at }
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

impl std::error::Error for JsonError {}

/// A reader over JSON text: a position in it and the nesting depth there.
pub(crate) struct Scanner<'a> {
    text: &'a [u8],
    pos: usize,
    depth: u32,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(text: &'a [u8]) -> Self {
        Self { text, pos: 0, depth: 0 }
    }

    fn error(&self, what: &'static str) -> JsonError {
        JsonError::new(what, self.pos)
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.text.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    pub(crate) fn next_byte(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.text.get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8, what: &'static str) -> Result<(), JsonError> {
        if self.next_byte() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    fn enter(&mut self) -> Result<(), JsonError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        self.depth += 1;
        Ok(())
    }

    /// Reads an object; `field` is called with each key (unescaped) and
    /// must read the key's value.
    pub(crate) fn object(
        &mut self,
        mut field: impl FnMut(&mut Self, Cow<'a, str>) -> Result<(), JsonError>,
    ) -> Result<(), JsonError> {
        let expected = ("expected an object", "expected `,` or `}`");
        self.container((b'{', b'}'), expected, |scanner| {
            let key = scanner.key()?;
            field(scanner, key)
        })
    }

    /// Reads an array; `item` is called for each item and must read it.
    pub(crate) fn array(&mut self, item: impl FnMut(&mut Self) -> Result<(), JsonError>) -> Result<(), JsonError> {
        self.container((b'[', b']'), ("expected an array", "expected `,` or `]`"), item)
    }

    /// Reads an object or an array between its `open` and `close` bytes:
    /// `member` reads each member, the members separated by commas.
    fn container(
        &mut self,
        (open, close): (u8, u8),
        (expected, expected_next): (&'static str, &'static str),
        mut member: impl FnMut(&mut Self) -> Result<(), JsonError>,
    ) -> Result<(), JsonError> {
        self.eat(open, expected)?;
        self.enter()?;
        if self.next_byte() == Some(close) {
            self.pos += 1;
        } else {
            loop {
                member(self)?;
                match self.next_byte() {
                    Some(b',') => self.pos += 1,
                    Some(byte) if byte == close => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.error(expected_next)),
                }
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// Reads one value of any kind and returns its text, from its first
    /// byte to its last (no whitespace around it). Nested values are walked
    /// in a loop, not by recursion.
    pub(crate) fn value(&mut self) -> Result<&'a [u8], JsonError> {
        self.skip_whitespace();
        let (start, base) = (self.pos, self.depth);
        // One bit per container open inside this value, the innermost
        // lowest: 1 for an object, 0 for an array.
        let mut open: u128 = 0;
        loop {
            // A value starts here.
            self.skip_whitespace();
            match self.text.get(self.pos) {
                Some(b'{') => {
                    self.pos += 1;
                    self.enter()?;
                    if self.next_byte() == Some(b'}') {
                        self.pos += 1;
                        self.depth -= 1;
                    } else {
                        open = open << 1 | 1;
                        self.skip_key()?;
                        continue;
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    self.enter()?;
                    if self.next_byte() == Some(b']') {
                        self.pos += 1;
                        self.depth -= 1;
                    } else {
                        open <<= 1;
                        continue;
                    }
                }
                Some(b'"') => {
                    self.pos += 1;
                    self.string_rest()?;
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                _ => return Err(self.error("expected a value")),
            }
            // A value ended: close the containers it ends.
            loop {
                if self.depth == base {
                    return Ok(&self.text[start..self.pos]);
                }
                let in_object = open & 1 == 1;
                match self.next_byte() {
                    Some(b',') => {
                        self.pos += 1;
                        if in_object {
                            self.skip_key()?;
                        }
                        break;
                    }
                    Some(b'}') if in_object => {}
                    Some(b']') if !in_object => {}
                    _ => return Err(self.error(if in_object { "expected `,` or `}`" } else { "expected `,` or `]`" })),
                }
                self.pos += 1;
                self.depth -= 1;
                open >>= 1;
            }
        }
    }

    /// Checks that only whitespace is left.
    pub(crate) fn end(&mut self) -> Result<(), JsonError> {
        match self.next_byte() {
            None => Ok(()),
            Some(_) => Err(self.error("trailing characters")),
        }
    }

    /// Reads a key and its `:`; the key unescaped, borrowed unless it held
    /// escapes.
    fn key(&mut self) -> Result<Cow<'a, str>, JsonError> {
        self.eat(b'"', "expected a key")?;
        let start = self.pos;
        let escaped = self.string_rest()?;
        let inner = &self.text[start..self.pos - 1];
        let key = if escaped {
            // Rare: the escapes are decoded by serde_json, which also
            // refuses a lone surrogate in a key, as it always has.
            let quoted = &self.text[start - 1..self.pos];
            serde_json::from_slice::<String>(quoted)
                .map(Cow::Owned)
                .map_err(|_| JsonError::new("invalid key", start))?
        } else {
            debug_assert!(std::str::from_utf8(inner).is_ok());
            // SAFETY: `string_rest` returned Ok, so `inner` is UTF-8: it
            // checks every string holding a byte outside ASCII, and a string
            // without one is ASCII. (A key is checked once, not twice: there
            // is one key per value of every message.)
            Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(inner) })
        };
        self.eat(b':', "expected `:`")?;
        Ok(key)
    }

    /// Reads a key of an object inside a value (not returned) and its `:`.
    fn skip_key(&mut self) -> Result<(), JsonError> {
        self.eat(b'"', "expected a key")?;
        self.string_rest()?;
        self.eat(b':', "expected `:`")
    }

    /// Reads the rest of a string after its opening quote, the closing
    /// quote included. Returns whether it held escapes. A string it reads
    /// without error is UTF-8 ([`Self::key`] relies on it).
    fn string_rest(&mut self) -> Result<bool, JsonError> {
        let start = self.pos;
        let (mut non_ascii, mut escaped) = (false, false);
        loop {
            self.pos += plain_run(&self.text[self.pos..], &mut non_ascii);
            match self.text.get(self.pos) {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                }
                Some(_) => return Err(self.error("control character in a string")),
                None => return Err(self.error("unterminated string")),
            }
        }
        if non_ascii && std::str::from_utf8(&self.text[start..self.pos]).is_err() {
            return Err(JsonError::new("invalid UTF-8 in a string", start));
        }
        self.pos += 1;
        Ok(escaped)
    }

    /// Reads an escape at a `\`. A `\u` escape needs four hex digits; a
    /// lone surrogate is let through, as `serde_json` lets it through a raw
    /// value.
    fn escape(&mut self) -> Result<(), JsonError> {
        match self.text.get(self.pos + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 2,
            Some(b'u') => {
                let hex = self.text.get(self.pos + 2..self.pos + 6);
                if !hex.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
                    return Err(self.error("invalid \\u escape"));
                }
                self.pos += 6;
            }
            _ => return Err(self.error("invalid escape")),
        }
        Ok(())
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), JsonError> {
        if self.text.get(self.pos..self.pos + word.len()) != Some(word) {
            return Err(self.error("expected a value"));
        }
        self.pos += word.len();
        Ok(())
    }

    /// Reads a number: `-`, then `0` or digits not starting with `0`, then an
    /// optional fraction and exponent, each with at least one digit.
    fn number(&mut self) -> Result<(), JsonError> {
        if self.text.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.text.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error("invalid number")),
        }
        if self.text.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        if let Some(b'e' | b'E') = self.text.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.text.get(self.pos) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.text.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        self.pos - start
    }
}

/// Whether a byte ends a string's plain run: `"`, `\` or a control character.
fn stops(byte: u8) -> bool {
    byte == b'"' || byte == b'\\' || byte < 0x20
}

/// How many bytes at the start of `bytes` a string holds as they are (none
/// of them `"`, `\` or a control character). Sets `non_ascii` when one of
/// them is outside ASCII; it may also be set by a byte past the run, which
/// only costs the string a UTF-8 check it did not need.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn plain_run(bytes: &[u8], non_ascii: &mut bool) -> usize {
    use core::arch::wasm32::{i8x16_lt, u8x16_eq, u8x16_splat, u8x16_sub_sat, v128, v128_or};

    /// `"` or `\\` in the lanes of `v` (all ones there).
    fn quote_or_backslash(v: v128) -> v128 {
        v128_or(u8x16_eq(v, u8x16_splat(b'"')), u8x16_eq(v, u8x16_splat(b'\\')))
    }

    if !*non_ascii {
        // ASCII so far: one signed compare flags a control character and
        // a byte outside ASCII alike (both are below 0x20 as signed bytes).
        let flagged = |v| v128_or(i8x16_lt(v, u8x16_splat(0x20)), quote_or_backslash(v));
        let run = match unflagged_blocks(bytes, flagged) {
            (run, true) => run,
            (run, false) => {
                run + bytes[run..].iter().position(|&b| stops(b) || !b.is_ascii()).unwrap_or(bytes.len() - run)
            }
        };
        if bytes.get(run).is_none_or(|&b| b.is_ascii()) {
            return run;
        }
        // A byte outside ASCII: the string gets its UTF-8 check, and the
        // rest of the run is read with the test below.
        *non_ascii = true;
        let rest = &bytes[run..];
        return run + plain_run(rest, non_ascii);
    }
    // A control character is a byte that 0x20 less it (saturating) leaves
    // nonzero: one instruction, where an unsigned `<` takes four on x86.
    let flagged = |v| v128_or(u8x16_sub_sat(u8x16_splat(0x20), v), quote_or_backslash(v));
    match unflagged_blocks(bytes, flagged) {
        (run, true) => run,
        (run, false) => run + tail_run(&bytes[run..], non_ascii),
    }
}

/// Where the first lane `flagged` flags lies in the whole 16-byte blocks
/// at the start of `bytes`, and `true`; or how many bytes those blocks hold
/// when it flags none of them, and `false` (the bytes past them are left to
/// the caller). 64 bytes a step, then 16; the flagged lane is found in its
/// block from the block's bit mask, so a short string is not walked a byte
/// at a time. (Whole blocks from `chunks_exact`, so no load needs a bounds
/// check of its own.)
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn unflagged_blocks(
    bytes: &[u8],
    flagged: impl Fn(core::arch::wasm32::v128) -> core::arch::wasm32::v128,
) -> (usize, bool) {
    use core::arch::wasm32::{i8x16_bitmask, v128, v128_any_true, v128_load, v128_or};

    /// The 16 bytes of `chunk` from `at`, which must be at most
    /// `chunk.len() - 16`.
    fn load(chunk: &[u8], at: usize) -> v128 {
        assert!(at + 16 <= chunk.len());
        // SAFETY: `at + 16` bytes of `chunk` are readable (just checked;
        // the check folds away for whole blocks), and `v128.load` needs no
        // alignment.
        unsafe { v128_load(chunk.as_ptr().add(at).cast()) }
    }

    let mut run = 0;
    for block in bytes.chunks_exact(64) {
        let (a, b, c, d) = (load(block, 0), load(block, 16), load(block, 32), load(block, 48));
        if v128_any_true(v128_or(v128_or(flagged(a), flagged(b)), v128_or(flagged(c), flagged(d)))) {
            break;
        }
        run += 64;
    }
    for chunk in bytes[run..].chunks_exact(16) {
        // A flagged lane is all ones: its high bit is its bit in the mask.
        let mask = i8x16_bitmask(flagged(load(chunk, 0)));
        if mask != 0 {
            return (run + mask.trailing_zeros() as usize, true);
        }
        run += 16;
    }
    (run, false)
}

/// How many bytes at the start of `bytes` a string holds as they are (see
/// the SIMD version), eight bytes a step.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn plain_run(bytes: &[u8], non_ascii: &mut bool) -> usize {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    let mut run = 0;
    for chunk in bytes.chunks_exact(8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        // A byte's high bit is set in each test when the byte matches
        // (exact for the first byte that does; enough to stop on).
        let control = v.wrapping_sub(ONES * 0x20) & !v;
        let quote = (v ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES) & !(v ^ (ONES * u64::from(b'"')));
        let backslash = (v ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES) & !(v ^ (ONES * u64::from(b'\\')));
        *non_ascii |= v & HIGH != 0;
        if (control | quote | backslash) & HIGH != 0 {
            break;
        }
        run += 8;
    }
    run + tail_run(&bytes[run..], non_ascii)
}

/// The plain run's last bytes, one at a time.
fn tail_run(bytes: &[u8], non_ascii: &mut bool) -> usize {
    let run = bytes.iter().position(|&b| stops(b)).unwrap_or(bytes.len());
    *non_ascii |= bytes[..run].iter().any(|&b| b >= 0x80);
    run
}

#[cfg(test)]
mod tests;

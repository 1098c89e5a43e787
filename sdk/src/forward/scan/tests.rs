//! The scanner against `serde_json` reading the same text as a raw value:
//! every text one accepts the other accepts, with the same value text.

use serde_json::value::RawValue;

use super::*;

/// The scanner's reading of a whole text as one value.
fn scanned(text: &[u8]) -> Result<&[u8], JsonError> {
    let mut scanner = Scanner::new(text);
    let value = scanner.value()?;
    scanner.end()?;
    Ok(value)
}

/// `serde_json`'s reading of the same.
fn serde_read(text: &[u8]) -> Option<&[u8]> {
    serde_json::from_slice::<&RawValue>(text).ok().map(|raw| raw.get().as_bytes())
}

#[track_caller]
fn agrees(text: &[u8]) {
    let ours = scanned(text).ok();
    assert_eq!(ours, serde_read(text), "{:?}", String::from_utf8_lossy(text));
}

#[test]
fn values_of_every_kind_read_like_serde_json() {
    let texts: &[&[u8]] = &[
        b"null",
        b" true ",
        b"false",
        b"0",
        b"-0",
        b"12",
        b"-12.50e+3",
        b"1E9",
        b"0.5",
        b"\"\"",
        b"\"plain\"",
        b"\"esc \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\uD83D\\uDE00 \\ud800\"",
        b"[]",
        b"[ ]",
        b"{}",
        b"{ }",
        b"[1,[2,[3,{\"a\":[{}]}]],\"x\"]",
        b"{\"a\" : 1 , \"b\":{\"c\":[true,false,null]},\"\\u0041\":\"\"}",
        b" \n\t\r{\"k\":\"v\"}\n ",
        "\"h\u{e9}llo \u{1F600} \u{4E2D}\"".as_bytes(),
    ];
    for text in texts {
        assert!(scanned(text).is_ok(), "{:?}", String::from_utf8_lossy(text));
        agrees(text);
    }
}

#[test]
fn what_is_not_json_is_refused_like_serde_json() {
    let texts: &[&[u8]] = &[
        b"",
        b" ",
        b"nul",
        b"nulls",
        b"True",
        b"01",
        b"-",
        b"-a",
        b"1.",
        b".5",
        b"1e",
        b"1e+",
        b"+1",
        b"0x10",
        b"\"open",
        b"\"bad \\x escape\"",
        b"\"short \\u12\"",
        b"\"hex \\u12G4\"",
        b"\"tab\tinside\"",
        b"\"nul\0inside\"",
        b"\"\\",
        b"[1,]",
        b"[1 2]",
        b"[,1]",
        b"{\"a\"}",
        b"{\"a\":}",
        b"{\"a\":1,}",
        b"{\"a\" 1}",
        b"{1:2}",
        b"{\"a\":1]",
        b"[1}",
        b"[[]",
        b"{\"a\":{}",
        b"1 2",
        b"{} {}",
        b"[] x",
        b"\xff",
        b"\"\xff\"",
        b"\"\xc3\"",
        b"\"\xc0\x80\"",
        b"\"\xed\xa0\x80\"",
        b"\"ok\" \xc3\xa9",
    ];
    for text in texts {
        assert!(scanned(text).is_err(), "{:?}", String::from_utf8_lossy(text));
        agrees(text);
    }
}

#[test]
fn every_position_of_a_stop_byte_in_a_string_is_found() {
    // Around the 8- and 16-byte steps: the stop at each place, plain and
    // non-ASCII runs on either side.
    for before in 0..40 {
        for after in [0, 1, 7, 8, 15, 16, 17, 33] {
            for stop in ["\\n", "\\u0041", "\\\"", "\n", "\u{1}", "\u{e9}", "\u{1F600}"] {
                let text = format!("\"{}{stop}{}\"", "a".repeat(before), "b".repeat(after));
                agrees(text.as_bytes());
                let text = format!("[\"{}{stop}\",\"{}\"]", "\u{e9}".repeat(before / 2), "c".repeat(after));
                agrees(text.as_bytes());
            }
            // An unterminated string and one cut inside a character.
            agrees(format!("\"{}", "a".repeat(before + after)).as_bytes());
            let mut cut = format!("\"{}\u{e9}", "a".repeat(before)).into_bytes();
            cut.pop();
            cut.extend_from_slice(b"b\"");
            agrees(&cut);
        }
    }
}

/// Whether `serde_json` reads the text into a value (which limits the
/// nesting; its raw reading does not).
fn serde_parses(text: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(text).is_ok()
}

#[test]
fn nesting_is_refused_past_the_depth_serde_json_parses() {
    for depth in [1, 2, 63, 64, 126, 127, 128, 129, 500] {
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        let mixed = format!("{}[]{}", "[{\"k\":".repeat(depth), "}]".repeat(depth));
        for text in [arrays, objects, mixed] {
            assert_eq!(scanned(text.as_bytes()).is_ok(), serde_parses(text.as_bytes()), "{depth}: {text}");
        }
    }
    assert!(scanned("[".repeat(127).as_bytes()).is_err(), "unclosed");
    assert!(scanned(format!("{}{}", "[".repeat(127), "]".repeat(127)).as_bytes()).is_ok());
    assert!(scanned(format!("{}{}", "[".repeat(128), "]".repeat(128)).as_bytes()).is_err());
}

#[test]
fn the_depth_counts_from_where_the_scanner_is() {
    // A value inside an object inside an array: two levels already used.
    let inner = |depth: usize| format!("[{{\"v\":{}{}}}]", "[".repeat(depth), "]".repeat(depth));
    for depth in [124, 125, 126] {
        let text = inner(depth);
        let mut scanner = Scanner::new(text.as_bytes());
        let mut read = None;
        let result = scanner.array(|s| {
            s.object(|s, _| {
                read = Some(s.value()?.len());
                Ok(())
            })
        });
        assert_eq!(result.is_ok(), depth <= 125, "{depth}");
        assert_eq!(result.is_ok(), serde_parses(text.as_bytes()), "{depth}");
    }
}

/// A small deterministic generator (xorshift), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn mutated_texts_read_like_serde_json() {
    let seeds: &[&[u8]] = &[
        br#"{"model":"m","messages":[{"role":"user","content":"hello there, a plain run of text"}],"n":1}"#,
        br#"[1,-2.5e3,true,false,null,"a\"b\\c\u00e9",{"k":[{}],"l":[]}]"#,
        "{\"c\":\"h\u{e9}llo \u{1F600} \u{4E2D}\u{6587}, some text past sixteen bytes\",\"d\":[0.25]}".as_bytes(),
    ];
    let pieces: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b",",
        b":",
        b"\\",
        b"\\u",
        b"u",
        b"0",
        b"1",
        b"9",
        b"a",
        b"F",
        b"g",
        b"-",
        b"+",
        b".",
        b"e",
        b"E",
        b"t",
        b"true",
        b"null",
        b" ",
        b"\n",
        b"\t",
        b"\x01",
        b"\x1f",
        b"\x7f",
        b"\xc3",
        b"\xa9",
        b"\xff",
        b"\xe2\x82",
        b"\xf0\x9f\x98\x80",
        b"\xed\xa0\x80",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut accepted = 0;
    for round in 0..40_000 {
        let mut text = seeds[round % seeds.len()].to_vec();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(text.len() + 1);
            match rng.below(3) {
                0 => {
                    let piece = pieces[rng.below(pieces.len())];
                    text.splice(at..at, piece.iter().copied());
                }
                1 if at < text.len() => {
                    text.remove(at);
                }
                _ if at < text.len() => text[at] = pieces[rng.below(pieces.len())][0],
                _ => {}
            }
        }
        agrees(&text);
        accepted += usize::from(scanned(&text).is_ok());
    }
    // Both sides of the comparison were exercised.
    assert!(accepted > 2_000 && accepted < 38_000, "{accepted}");
}

#[test]
fn the_error_says_what_was_expected_and_where() {
    assert_eq!(scanned(b"[1,]").unwrap_err().to_string(), "expected a value at byte 3");
    assert_eq!(scanned(b"{\"a\" 1}").unwrap_err().to_string(), "expected `:` at byte 5");
    assert_eq!(scanned(b"\"a\xffb\"").unwrap_err().to_string(), "invalid UTF-8 in a string at byte 1");
}

use std::borrow::Cow;

use serde_json::Value;

use super::plain_run;
use crate::json::{Json, ReadError};

fn read(text: &str) -> Option<Json<'_>> {
    super::read(text.as_bytes())
}

/// What the gateway read before the fast reader: `serde_json` through the
/// visitor.
fn serde(text: &str) -> Option<Json<'_>> {
    serde_json::from_str(text).ok()
}

/// Texts the fast reader must read itself (not decline), as `serde_json`.
const ACCEPTED: &[&str] = &[
    r#"{"model":"groq/llama-3.3-70b-versatile","messages":[{"role":"user","content":"Say hello"}]}"#,
    r#"{"model":"m","messages":[{"role":"user","content":"h\u00e9 \"q\"\n\t\\ \/ \b\f\r"}],"t":0.5,"n":-3}"#,
    r#"{"big":18446744073709551615,"bigger":18446744073709551616,"neg":-9223372036854775808,"f":1e3,"g":-0,"h":2.5E-3}"#,
    r#"[null,true,false,1e3,-0,"\ud83d\ude00",{"":{}},[],[[]],{"a":[1,{"b":null}]}]"#,
    r#"{"a":1,"b":2,"a":3}"#,
    r#"{"k\u0041":"v","kA":"w"}"#,
    " \n\t\r{ \"a\" : [ 1 , 2 ] , \"b\" : { } } \n",
    r#""é 🙂 ü, \u00e9 \uD83D\uDE00""#,
    "0",
    "\"\u{7f}\"",
];

#[test]
fn it_reads_what_serde_json_reads_and_declines_nothing_plain() {
    for text in ACCEPTED {
        let ours = read(text).unwrap_or_else(|| panic!("declined {text}"));
        assert_eq!(Some(&ours), serde(text).as_ref(), "{text}");
        let theirs = serde_json::from_str::<Value>(text).unwrap();
        assert_eq!(serde_json::to_string(&ours).unwrap(), serde_json::to_string(&theirs).unwrap(), "{text}");
    }
}

#[test]
fn strings_are_borrowed_unless_they_held_escapes() {
    let v = read(r#"{"plain":"abc","escaped":"a\nb","k\"":1}"#).unwrap();
    assert!(matches!(v.get("plain"), Some(Json::String(Cow::Borrowed("abc")))));
    assert!(matches!(v.get("escaped"), Some(Json::String(Cow::Owned(s))) if s == "a\nb"));
    assert!(v.get("k\"").is_some());
}

#[test]
fn it_declines_what_serde_json_refuses_and_what_it_is_unsure_of() {
    let deep = format!("{}1{}", "[".repeat(101), "]".repeat(101));
    let refused = [
        "",
        " ",
        "{",
        "[",
        r#"{"a":}"#,
        r#"{"a" 1}"#,
        r#"{a:1}"#,
        r#"{"a":1,}"#,
        "[1,]",
        "[1 2]",
        "nul",
        "truee",
        "{} x",
        "01",
        "1.",
        ".5",
        "-",
        "1e",
        "+1",
        "1e400",
        "\"a\u{1}b\"",
        "\"a\nb\"",
        r#""\x""#,
        r#""\u12""#,
        r#""\u12G4""#,
        "\"abc",
        "\"abc\\",
    ];
    for text in refused {
        assert!(read(text).is_none(), "{text:?}");
        assert!(serde(text).is_none(), "{text:?}");
    }
    // Declined though serde_json decides otherwise: a lone surrogate (an
    // error for serde_json too) and nesting deeper than the reader goes.
    for text in [r#""\ud800""#, r#""\udc00""#, r#""\ud800\u0041""#, &deep] {
        assert!(read(text).is_none(), "{text:?}");
    }
    assert!(serde(&deep).is_some());
    assert!(Json::parse(&deep).is_ok());
}

#[test]
fn errors_are_serde_json_s() {
    for text in ["{", r#"{"a":}"#, "[1,]", "{} x", "\"a\u{1}b\""] {
        let ours = Json::parse(text).unwrap_err().to_string();
        let theirs = serde_json::from_str::<Value>(text).unwrap_err().to_string();
        assert_eq!(ours, theirs, "{text:?}");
    }
}

/// Each `plain_run` this CPU can run: the one the reader uses, the
/// portable one and, where the CPU has it, the AVX2 one.
fn each_plain_run(check: impl Fn(&dyn Fn(&[u8]) -> (usize, bool))) {
    check(&plain_run);
    check(&super::plain_run_portable);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: this CPU has AVX2, checked just above.
        check(&|bytes| unsafe { super::plain_run_avx2(bytes) });
    }
}

#[test]
fn a_stop_byte_is_found_at_every_offset_around_the_blocks() {
    each_plain_run(stop_bytes_found_by);
    // A string with an escape or a multi-byte character at every offset.
    for len in 1..80 {
        for at in 0..len {
            for insert in ["\\n", "\\u00e9", "é", "🙂", "\\\"", "\\ud83d\\ude00"] {
                let body: String = (0..len).map(|i| if i == at { insert.to_owned() } else { "x".to_owned() }).collect();
                let text = format!("[\"{body}\",\"{body}\"]");
                let ours = read(&text).unwrap_or_else(|| panic!("declined {text}"));
                assert_eq!(Some(ours), serde(&text), "{text}");
            }
        }
    }
}

fn stop_bytes_found_by(plain_run: &dyn Fn(&[u8]) -> (usize, bool)) {
    for len in 0..200 {
        for at in 0..len {
            for stop in [b'"', b'\\', 0x00, 0x1f] {
                let mut bytes = vec![b'a'; len];
                bytes[at] = stop;
                assert_eq!(plain_run(&bytes), (at, true), "len {len} at {at} stop {stop}");
            }
        }
        let plain: Vec<u8> = (0..len).map(|i| [b'a', 0x20, 0x7f, 0xc3, 0xff][i % 5]).collect();
        assert_eq!(plain_run(&plain), (len, len < 4));
        // A byte outside ASCII anywhere in the run is seen.
        for at in 0..len {
            let mut bytes = vec![b'a'; len];
            bytes[at] = 0x80;
            assert_eq!(plain_run(&bytes), (len, false), "len {len} at {at}");
        }
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn mutated_texts_read_as_serde_json_reads_them_or_are_declined() {
    const PIECES: &[&str] = &[
        "\"",
        "\\",
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        " ",
        "\n",
        "\u{1}",
        "0",
        "1",
        "-",
        "+",
        ".",
        "e",
        "E",
        "9",
        "null",
        "true",
        "false",
        "\\u",
        "d83d",
        "\\ude00",
        "\\n",
        "é",
        "🙂",
        "a",
        "\"k\":",
        "1e308",
        "1e309",
        "18446744073709551616",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut accepted, mut both_refused) = (0, 0);
    for round in 0..40_000 {
        let seed = ACCEPTED[round % ACCEPTED.len()];
        let mut text = seed.to_owned();
        for _ in 0..1 + rng.below(3) {
            let chars: Vec<(usize, char)> = text.char_indices().collect();
            let at = if chars.is_empty() { 0 } else { chars[rng.below(chars.len())].0 };
            let piece = PIECES[rng.below(PIECES.len())];
            match rng.below(3) {
                0 => text.insert_str(at, piece),
                1 if !text.is_empty() => {
                    let end = text[at..].chars().next().map_or(at, |c| at + c.len_utf8());
                    text.replace_range(at..end, piece);
                }
                _ if !text.is_empty() => {
                    let end = text[at..].chars().next().map_or(at, |c| at + c.len_utf8());
                    text.replace_range(at..end, "");
                }
                _ => text.push_str(piece),
            }
        }
        if round % 4 == 0 {
            // The same text with a byte that may break its UTF-8.
            let mut bytes = text.clone().into_bytes();
            let at = rng.below(bytes.len() + 1);
            bytes.insert(at, [0x80, 0xc3, 0xed, 0xf0, 0xff][rng.below(5)]);
            if let Some(ours) = super::read(&bytes) {
                let text = std::str::from_utf8(&bytes).unwrap_or_else(|e| panic!("read {bytes:?}, not UTF-8: {e}"));
                assert_eq!(Some(ours), serde(text), "{text:?}");
            }
        }
        match (read(&text), serde(&text)) {
            (Some(ours), Some(theirs)) => {
                assert_eq!(ours, theirs, "{text:?}");
                accepted += 1;
            }
            (Some(ours), None) => panic!("read {text:?} as {ours:?}, which serde_json refuses"),
            (None, None) => both_refused += 1,
            (None, Some(_)) => {}
        }
    }
    // Both kinds were exercised.
    assert!(accepted > 5_000 && both_refused > 5_000, "{accepted} accepted, {both_refused} refused by both");
}

#[test]
fn bytes_that_are_not_utf8_are_declined_and_refused_as_before() {
    let cases: [&[u8]; 6] = [
        b"{\"a\":\"\xff\"}",
        b"{\"a\":\"\xc3\"}",
        b"{\"a\":\"x\xed\xa0\x80\"}",
        b"{\"\xe9\":1}",
        b"[1,\xc3]",
        b"{\"a\":\"\\n\xf0\x9f\x99\"}",
    ];
    for bytes in cases {
        assert!(super::read(bytes).is_none(), "{bytes:?}");
        let expected = std::str::from_utf8(bytes).unwrap_err().valid_up_to();
        match Json::read(bytes) {
            Err(ReadError::NotUtf8 { valid_up_to }) => assert_eq!(valid_up_to, expected, "{bytes:?}"),
            other => panic!("{bytes:?}: {other:?}"),
        }
    }
    // Valid multi-byte text in long runs, around the 64-byte blocks.
    for len in [0, 1, 63, 64, 65, 127, 128, 200] {
        let text = format!("{{\"k\":\"{}é{}\"}}", "a".repeat(len), "b".repeat(len));
        assert_eq!(read(&text), serde(&text), "{len}");
        assert!(read(&text).is_some());
    }
}

#[test]
fn a_body_that_is_not_json_gets_serde_json_s_error() {
    match Json::read(b"{\"a\":}") {
        Err(ReadError::Malformed(e)) => {
            assert_eq!(e.to_string(), serde_json::from_str::<Value>("{\"a\":}").unwrap_err().to_string());
        }
        other => panic!("{other:?}"),
    }
}

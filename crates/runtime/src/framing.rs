//! Framing upstream stream bytes into events, one implementation for every
//! adapter: server-sent events or newline-delimited JSON.
//!
//! Bytes arrive in arbitrary network-sized pieces; the framer keeps the
//! unfinished tail and emits only whole events. SSE: lines end in LF, CRLF or
//! CR; `data:` lines of one event are joined with `\n`; `event:` is kept;
//! comments (`:`), `id:` and `retry:` are dropped; a blank line ends an
//! event; a trailing event without its blank line is flushed at EOF.

use std::borrow::Cow;

use crate::types::{StreamEvent, StreamFraming};

/// The default of [`Framer::new`]'s event bound (`STREAM_MAX_EVENT_BYTES`).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

/// An incremental event framer whose memory is bounded: an unfinished line
/// plus the `data:` of the event being built never exceed `max_event_bytes`.
pub struct Framer {
    framing: StreamFraming,
    max_event_bytes: usize,
    buf: Vec<u8>,
    /// A CR ended the last piece; an LF opening the next one belongs to it.
    pending_cr: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
}

/// The upstream sent an event (or a line) larger than the framer's bound:
/// without a bound, `data:` lines that never meet a blank line grow one
/// event without end.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("an upstream stream event exceeds {limit} bytes")]
pub struct EventTooLarge {
    /// The bound that was passed.
    pub limit: usize,
}

impl Framer {
    /// A framer for the given framing that refuses events larger than
    /// `max_event_bytes`.
    pub fn new(framing: StreamFraming, max_event_bytes: usize) -> Self {
        Self {
            framing,
            max_event_bytes,
            buf: Vec::new(),
            pending_cr: false,
            data: String::new(),
            has_data: false,
            event: None,
        }
    }

    /// Feeds bytes; appends every completed event to `out`. After an error
    /// the framer is spent: the stream must be given up.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), EventTooLarge> {
        if self.pending_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.pending_cr = false;
        while let Some(pos) = memchr::memchr2(b'\n', b'\r', bytes) {
            let end_cr = bytes[pos] == b'\r';
            if self.buf.is_empty() {
                self.line(&bytes[..pos], out);
            } else {
                self.buf.extend_from_slice(&bytes[..pos]);
                let line = std::mem::take(&mut self.buf);
                self.line(&line, out);
                self.buf = line;
                self.buf.clear();
            }
            // Checked per line, so one large network read cannot build an
            // oversized event before the check.
            self.check()?;
            bytes = &bytes[pos + 1..];
            if end_cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    None => self.pending_cr = true,
                    Some(_) => {}
                }
            }
        }
        if self.buf.len().saturating_add(bytes.len()).saturating_add(self.data.len()) > self.max_event_bytes {
            return Err(self.spent());
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// End of input: flushes an unterminated line and event.
    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.line(&line, out);
        }
        self.dispatch(out);
    }

    /// Bytes held for the event being built (for tests and bounds).
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.data.len()
    }

    fn check(&mut self) -> Result<(), EventTooLarge> {
        if self.buf.len() + self.data.len() > self.max_event_bytes {
            return Err(self.spent());
        }
        Ok(())
    }

    /// Frees what was held: an oversized event is refused, not kept.
    fn spent(&mut self) -> EventTooLarge {
        self.buf = Vec::new();
        self.data = String::new();
        self.has_data = false;
        self.event = None;
        EventTooLarge { limit: self.max_event_bytes }
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<StreamEvent>) {
        match self.framing {
            StreamFraming::Ndjson => {
                let text = lossy(line);
                let text = text.trim();
                if !text.is_empty() {
                    out.push(StreamEvent { event: None, data: text.to_owned() });
                }
            }
            StreamFraming::Sse => self.sse_line(line, out),
        }
    }

    fn sse_line(&mut self, line: &[u8], out: &mut Vec<StreamEvent>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&lossy(value));
                self.has_data = true;
            }
            b"event" => self.event = Some(lossy(value).into_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<StreamEvent>) {
        if self.has_data {
            out.push(StreamEvent { event: self.event.take(), data: std::mem::take(&mut self.data) });
        }
        self.has_data = false;
        self.event = None;
    }
}

/// `bytes` as text, invalid UTF-8 replaced by U+FFFD. Valid text (every
/// line of a well-behaved upstream) takes the standard library's fast check
/// rather than the lossy decoder's byte-at-a-time walk.
fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(valid) => Cow::Borrowed(valid),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(pieces: &[&[u8]]) -> Vec<(Option<String>, String)> {
        let mut f = Framer::new(StreamFraming::Sse, DEFAULT_MAX_EVENT_BYTES);
        let mut out = Vec::new();
        for p in pieces {
            f.push(p, &mut out).unwrap();
        }
        f.finish(&mut out);
        out.into_iter().map(|e| (e.event, e.data)).collect()
    }

    fn data(d: &str) -> (Option<String>, String) {
        (None, d.to_owned())
    }

    #[test]
    fn single_and_multiple_events() {
        assert_eq!(frame(&[b"data: {\"a\":1}\n\ndata: [DONE]\n\n"]), [data("{\"a\":1}"), data("[DONE]")]);
    }

    #[test]
    fn events_split_across_pushes_are_reassembled() {
        assert_eq!(frame(&[b"da", b"ta: {\"a\"", b":1}\n", b"\ndata: x\n\n"]), [data("{\"a\":1}"), data("x")]);
    }

    #[test]
    fn crlf_and_lone_cr_end_lines_even_across_pushes() {
        assert_eq!(frame(&[b"data: a\r", b"\n\r\ndata: b\r\rdata: c\r\n\r\n"]), [data("a"), data("b"), data("c")]);
    }

    #[test]
    fn comments_id_retry_are_dropped_and_event_kept() {
        let out = frame(&[b": keep-alive\n\nid: 7\nretry: 10\nevent: message_delta\ndata: x\n\n"]);
        assert_eq!(out, [(Some("message_delta".to_owned()), "x".to_owned())]);
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        assert_eq!(frame(&[b"data: a\ndata:b\ndata:  c\n\n"]), [data("a\nb\n c")]);
    }

    #[test]
    fn invalid_utf8_in_data_becomes_replacement_characters_and_valid_text_is_kept() {
        let out = frame(&[b"data: caf\xc3\xa9 \xff\n", b"data: \xe2\x82\n\n"]);
        assert_eq!(out, [data("caf\u{e9} \u{fffd}\n\u{fffd}")]);
    }

    #[test]
    fn a_trailing_event_without_blank_line_is_flushed() {
        assert_eq!(frame(&[b"data: last"]), [data("last")]);
    }

    #[test]
    fn invalid_utf8_in_an_ndjson_line_or_an_event_name_becomes_replacement_characters() {
        let mut f = Framer::new(StreamFraming::Ndjson, DEFAULT_MAX_EVENT_BYTES);
        let mut out = Vec::new();
        f.push(b"{\"a\":\"caf\xc3\xa9 \xff\"}\n", &mut out).unwrap();
        assert_eq!(out.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(), ["{\"a\":\"caf\u{e9} \u{fffd}\"}"]);
        assert_eq!(frame(&[b"event: d\xe2\x82\ndata: x\n\n"]), [(Some("d\u{fffd}".to_owned()), "x".to_owned())]);
    }

    #[test]
    fn ndjson_lines_are_events() {
        let mut f = Framer::new(StreamFraming::Ndjson, DEFAULT_MAX_EVENT_BYTES);
        let mut out = Vec::new();
        f.push(b"{\"a\":1}\r\n\n{\"b\"", &mut out).unwrap();
        f.push(b":2}", &mut out).unwrap();
        f.finish(&mut out);
        assert_eq!(out.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(), ["{\"a\":1}", "{\"b\":2}"]);
    }

    #[test]
    fn an_endless_line_is_refused_at_the_bound_and_nothing_is_kept() {
        let mut f = Framer::new(StreamFraming::Sse, 1024);
        let piece = [b'a'; 100];
        let mut refused = None;
        for i in 0..1_000 {
            if f.push(&piece, &mut Vec::new()).is_err() {
                refused = Some(i);
                break;
            }
            assert!(f.buffered() <= 1024);
        }
        assert_eq!(refused, Some(10), "refused on the piece that crosses 1024 bytes");
        assert_eq!(f.buffered(), 0, "the refused event is freed");
    }

    #[test]
    fn data_lines_without_a_blank_line_are_refused_at_the_bound() {
        let mut f = Framer::new(StreamFraming::Sse, 1024);
        let mut out = Vec::new();
        let mut result = Ok(());
        for _ in 0..10_000 {
            result = f.push(b"data: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n", &mut out);
            if result.is_err() {
                break;
            }
            assert!(f.buffered() <= 1024, "{}", f.buffered());
        }
        assert_eq!(result, Err(EventTooLarge { limit: 1024 }));
        assert!(out.is_empty(), "no event was ever complete");
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn one_large_read_of_many_lines_is_refused_without_growing_past_the_bound() {
        let mut f = Framer::new(StreamFraming::Sse, 1024);
        let big = b"data: 0123456789\n".repeat(1_000);
        assert!(f.push(&big, &mut Vec::new()).is_err());
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn events_up_to_the_bound_pass_and_the_bound_is_per_event() {
        let mut f = Framer::new(StreamFraming::Sse, 64);
        let mut out = Vec::new();
        let event = format!("data: {}\n\n", "x".repeat(60));
        for _ in 0..100 {
            f.push(event.as_bytes(), &mut out).unwrap();
        }
        assert_eq!(out.len(), 100);
        let mut nd = Framer::new(StreamFraming::Ndjson, 8);
        assert!(nd.push(b"{\"a\":1}\n{\"b\":2}\n", &mut Vec::new()).is_ok());
        assert!(nd.push(b"{\"abcdefgh\":1}", &mut Vec::new()).is_err());
    }
}

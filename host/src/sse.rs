//! Framing upstream stream bytes into events, one implementation for every
//! adapter: server-sent events or newline-delimited JSON.
//!
//! Bytes arrive in arbitrary network-sized pieces; the framer keeps the
//! unfinished tail and emits only whole events. SSE: lines end in LF, CRLF or
//! CR; `data:` lines of one event are joined with `\n`; `event:` is kept;
//! comments (`:`), `id:` and `retry:` are dropped; a blank line ends an
//! event; a trailing event without its blank line is flushed at EOF.

use crate::plugins::types::{StreamEvent, StreamFraming};

/// Longest unfinished line kept before the stream is declared malformed.
pub const MAX_LINE_BYTES: usize = 4 << 20;

/// An incremental event framer.
pub struct Framer {
    framing: StreamFraming,
    buf: Vec<u8>,
    /// A CR ended the last piece; an LF opening the next one belongs to it.
    pending_cr: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
}

/// The upstream sent a line longer than [`MAX_LINE_BYTES`].
#[derive(Debug, thiserror::Error)]
#[error("upstream stream line exceeds {MAX_LINE_BYTES} bytes")]
pub struct LineTooLong;

impl Framer {
    /// A framer for the given framing.
    pub fn new(framing: StreamFraming) -> Self {
        Self { framing, buf: Vec::new(), pending_cr: false, data: String::new(), has_data: false, event: None }
    }

    /// Feeds bytes; appends every completed event to `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), LineTooLong> {
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
            bytes = &bytes[pos + 1..];
            if end_cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    None => self.pending_cr = true,
                    Some(_) => {}
                }
            }
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > MAX_LINE_BYTES {
            return Err(LineTooLong);
        }
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

    fn line(&mut self, line: &[u8], out: &mut Vec<StreamEvent>) {
        match self.framing {
            StreamFraming::Ndjson => {
                let text = String::from_utf8_lossy(line);
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
                self.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(pieces: &[&[u8]]) -> Vec<(Option<String>, String)> {
        let mut f = Framer::new(StreamFraming::Sse);
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
    fn a_trailing_event_without_blank_line_is_flushed() {
        assert_eq!(frame(&[b"data: last"]), [data("last")]);
    }

    #[test]
    fn ndjson_lines_are_events() {
        let mut f = Framer::new(StreamFraming::Ndjson);
        let mut out = Vec::new();
        f.push(b"{\"a\":1}\r\n\n{\"b\"", &mut out).unwrap();
        f.push(b":2}", &mut out).unwrap();
        f.finish(&mut out);
        assert_eq!(out.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(), ["{\"a\":1}", "{\"b\":2}"]);
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut f = Framer::new(StreamFraming::Sse);
        let big = vec![b'a'; MAX_LINE_BYTES + 1];
        assert!(f.push(&big, &mut Vec::new()).is_err());
    }
}

//! Spliced request bodies (contract 0.3): a [`RequestBody`] whose
//! unchanged stretches are ranges of the client's body instead of copies.
//!
//! A long prompt crosses into the component once, as `map-request`'s
//! argument. Forwarding it used to copy it twice more: the adapter wrote
//! it into its output, and the host copied the output out of the
//! component. [`ForwardRequest::to_body`](crate::ForwardRequest::to_body)
//! now names what it forwards unchanged by its place in the client's body
//! ([`PieceSource::Client`]), and the host sends those bytes from its own
//! copy. A range starts at a long value ([`SPLICE_FROM`]) and grows over
//! every later value whose text since the range's end is the client's own
//! (the keys and punctuation in between, as a compact client writes them):
//! a conversation of many turns that the adapter leaves alone is one range.
//!
//! Only the body the host passed to *this* call can be named: the glue
//! registers that body's address range for the call (`CallBody`), and a
//! request parsed from any other buffer (a body an adapter patched first, a
//! test's own bytes) is copied as before. Outside a `map-request` call
//! nothing is registered, so a body is always whole.

use std::cell::Cell;

use crate::{BodyPiece, PieceSource, RequestBody, SplicedBody};

/// A range of the client's body starts only at a value at least this long:
/// a piece costs the host a buffer part of its own, which pays for itself
/// on a long value. (A range, once started, grows over values of any
/// length.)
pub const SPLICE_FROM: usize = 1 << 10;

/// Most ranges of the client's body one request names. Each range and the
/// written bytes between two are parts the host hands its connection
/// separately; a few keep the write one system call.
pub const MAX_CLIENT_PIECES: usize = 7;

thread_local! {
    /// The address range of the body of the `map-request` call under way.
    static CALL_BODY: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
}

/// The body of the `map-request` call under way, registered for as long as
/// this guard lives (the glue holds it around the adapter's call).
pub(crate) struct CallBody {
    previous: Option<(usize, usize)>,
}

impl CallBody {
    /// Registers `body` as the client's body of the call under way.
    pub(crate) fn register(body: &[u8]) -> Self {
        let range = (body.as_ptr() as usize, body.len());
        Self { previous: CALL_BODY.with(|cell| cell.replace(Some(range))) }
    }
}

impl Drop for CallBody {
    fn drop(&mut self) {
        CALL_BODY.with(|cell| cell.set(self.previous));
    }
}

/// Whether `body` is the registered body of the call under way (the same
/// bytes, not a copy): only addresses are compared.
pub(crate) fn is_call_body(body: &[u8]) -> bool {
    CALL_BODY.with(Cell::get) == Some((body.as_ptr() as usize, body.len()))
}

/// Where `value` starts in `client`, when it is a part of it.
fn offset_in(client: &[u8], value: &[u8]) -> Option<usize> {
    let start = (value.as_ptr() as usize).checked_sub(client.as_ptr() as usize)?;
    (start.checked_add(value.len())? <= client.len()).then_some(start)
}

/// Writes a body: text and values are copied into the adapter's bytes,
/// unless they continue, or (a long value) start, a range of the client's
/// body.
#[derive(Debug, Default)]
pub(crate) struct Splicer<'c> {
    /// The client's body, when ranges of it may be named.
    client: Option<&'c [u8]>,
    written: Vec<u8>,
    pieces: Vec<BodyPiece>,
    /// How much of `written` the pieces already cover.
    covered: usize,
    /// Where the last piece ends in the client's body, when it is a range
    /// of it.
    run_end: Option<usize>,
}

impl<'c> Splicer<'c> {
    /// A splicer that copies everything (its body is always whole), with
    /// room for `capacity` bytes.
    pub(crate) fn copying(capacity: usize) -> Self {
        Self { written: Vec::with_capacity(capacity), ..Self::default() }
    }

    /// A splicer that names ranges of `client` (the client's body of the
    /// call under way), with room for `capacity` written bytes.
    pub(crate) fn naming(capacity: usize, client: &'c [u8]) -> Self {
        Self { client: Some(client), ..Self::copying(capacity) }
    }

    /// The written bytes, to append text to.
    pub(crate) fn text(&mut self) -> &mut Vec<u8> {
        &mut self.written
    }

    /// A value as the client wrote it.
    pub(crate) fn value(&mut self, value: &[u8]) {
        let Some((client, start)) = self.client.and_then(|c| Some((c, offset_in(c, value)?))) else {
            self.written.extend_from_slice(value);
            return;
        };
        let end = start + value.len();
        // The text since the range's end is what the client wrote there:
        // the range grows over it and the value.
        if let Some(run_end) = self.run_end
            && run_end <= start
            && client[run_end..start] == self.written[self.covered..]
            && let Some(last) = self.pieces.last_mut()
        {
            self.written.truncate(self.covered);
            last.len += (end - run_end) as u32;
            self.run_end = Some(end);
            return;
        }
        let named = self.pieces.iter().filter(|p| p.source == PieceSource::Client).count();
        if value.len() >= SPLICE_FROM && named < MAX_CLIENT_PIECES {
            self.cover_written();
            // A body past 4 GiB is refused long before: the host's limit is
            // far below it.
            self.pieces.push(BodyPiece { source: PieceSource::Client, start: start as u32, len: value.len() as u32 });
            self.run_end = Some(end);
        } else {
            self.written.extend_from_slice(value);
        }
    }

    /// The body: whole when nothing was named.
    pub(crate) fn finish(mut self) -> RequestBody {
        if self.pieces.is_empty() {
            return RequestBody::Bytes(self.written);
        }
        self.cover_written();
        RequestBody::Spliced(SplicedBody { written: self.written, pieces: self.pieces })
    }

    /// The written bytes of a copying splicer: its whole body.
    pub(crate) fn into_written(self) -> Vec<u8> {
        debug_assert!(self.pieces.is_empty(), "a copying splicer names nothing");
        self.written
    }

    /// A piece for the written bytes no piece covers yet (the range before
    /// it, if any, ends there).
    fn cover_written(&mut self) {
        let end = self.written.len();
        if end > self.covered {
            let (start, len) = (self.covered as u32, (end - self.covered) as u32);
            self.pieces.push(BodyPiece { source: PieceSource::Adapter, start, len });
            self.covered = end;
            self.run_end = None;
        }
    }
}

/// Why a spliced body cannot be assembled: a range outside its bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("piece {index} ({of} bytes {start}..+{len}) lies outside the {available} {of} bytes")]
pub struct SpliceError {
    /// The piece's place in the list.
    pub index: usize,
    /// Whose bytes: `client` or `adapter`.
    pub of: &'static str,
    /// Its start.
    pub start: u32,
    /// Its length.
    pub len: u32,
    /// How many bytes its source has.
    pub available: usize,
}

impl RequestBody {
    /// The body as the gateway sends it, given the client's body the
    /// request was mapped from (for tests and tools; the gateway sends the
    /// pieces without joining them).
    ///
    /// # Errors
    ///
    /// A piece whose range lies outside its bytes.
    pub fn assemble(&self, client: &[u8]) -> Result<Vec<u8>, SpliceError> {
        let spliced = match self {
            RequestBody::Bytes(bytes) => return Ok(bytes.clone()),
            RequestBody::Spliced(spliced) => spliced,
        };
        let mut out = Vec::new();
        for (index, &BodyPiece { source, start, len }) in spliced.pieces.iter().enumerate() {
            let (bytes, of) = match source {
                PieceSource::Client => (client, "client"),
                PieceSource::Adapter => (spliced.written.as_slice(), "adapter"),
            };
            let range = (start as usize)..(start as usize).saturating_add(len as usize);
            let piece = bytes.get(range).ok_or(SpliceError { index, of, start, len, available: bytes.len() })?;
            out.extend_from_slice(piece);
        }
        Ok(out)
    }

    /// The body's bytes when it is whole (`None` when spliced).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            RequestBody::Bytes(bytes) => Some(bytes),
            RequestBody::Spliced(_) => None,
        }
    }
}

impl From<Vec<u8>> for RequestBody {
    fn from(bytes: Vec<u8>) -> Self {
        RequestBody::Bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long(c: u8) -> Vec<u8> {
        vec![c; SPLICE_FROM]
    }

    #[test]
    fn a_copying_splicer_and_one_without_the_call_body_copy() {
        let body = long(b'x');
        let mut copying = Splicer::copying(0);
        copying.value(&body);
        assert_eq!(copying.into_written(), body);
        // A value outside the client's body is copied.
        let other = long(b'y');
        let mut splicer = Splicer::naming(0, &body);
        splicer.value(&other);
        assert_eq!(splicer.finish(), RequestBody::Bytes(other.clone()));
        assert!(!is_call_body(&body));
        let call = CallBody::register(&body);
        assert!(is_call_body(&body) && !is_call_body(&body[1..]) && !is_call_body(&other));
        drop(call);
        assert!(!is_call_body(&body), "the registration ends with the guard");
    }

    #[test]
    fn a_range_starts_at_a_long_value_and_grows_over_text_the_client_wrote() {
        let p = String::from_utf8(long(b'p')).unwrap();
        let body = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"{p}"}},{{"role":"user","content":"hi"}}],"n":1}}"#
        );
        let body = body.as_bytes();
        let at = |needle: &[u8]| body.windows(needle.len()).position(|w| w == needle).unwrap();
        let value = |from: usize, len: usize| &body[from..from + len];
        let mut splicer = Splicer::naming(0, body);
        splicer.text().extend_from_slice(br#"{"model":"up","messages":[{"role":"#);
        splicer.value(value(at(b"\"user\""), 6)); // short: copied
        splicer.text().extend_from_slice(br#","content":"#);
        let content = at(b"\"ppp");
        splicer.value(value(content, SPLICE_FROM + 2)); // long: starts a range
        splicer.text().extend_from_slice(br#"},{"role":"#);
        let second = content + SPLICE_FROM + 2 + br#"},{"role":"#.len();
        splicer.value(value(second, 6)); // the text matched: the range grows
        splicer.text().extend_from_slice(br#","content":"#);
        splicer.value(value(at(b"\"hi\""), 4));
        splicer.text().extend_from_slice(br#"}],"n":2}"#); // a changed value ends it
        let spliced = splicer.finish();
        let RequestBody::Spliced(ref parts) = spliced else { panic!("not spliced: {spliced:?}") };
        let hi_end = at(b"\"hi\"") + 4;
        let first = (br#"{"model":"up","messages":[{"role":"user","content":"#.len()) as u32;
        assert_eq!(
            parts.pieces,
            [
                BodyPiece { source: PieceSource::Adapter, start: 0, len: first },
                BodyPiece { source: PieceSource::Client, start: content as u32, len: (hi_end - content) as u32 },
                BodyPiece { source: PieceSource::Adapter, start: first, len: 9 },
            ]
        );
        let expected = String::from_utf8(body.to_vec())
            .unwrap()
            .replace(r#""model":"m""#, r#""model":"up""#)
            .replace(r#""n":1"#, r#""n":2"#);
        assert_eq!(String::from_utf8(spliced.assemble(body).unwrap()).unwrap(), expected);
    }

    #[test]
    fn at_most_a_few_client_ranges_are_named() {
        let body = vec![b'x'; SPLICE_FROM * (MAX_CLIENT_PIECES + 2)];
        let mut splicer = Splicer::naming(0, &body);
        for chunk in body.chunks(SPLICE_FROM) {
            splicer.value(chunk);
            splicer.text().push(b','); // not the client's text: every range ends
        }
        let spliced = splicer.finish();
        let RequestBody::Spliced(ref parts) = spliced else { panic!("not spliced") };
        let named = parts.pieces.iter().filter(|p| p.source == PieceSource::Client).count();
        assert_eq!(named, MAX_CLIENT_PIECES);
        assert_eq!(spliced.assemble(&body).unwrap().len(), body.len() + MAX_CLIENT_PIECES + 2);
    }

    #[test]
    fn assembling_refuses_ranges_outside_their_bytes() {
        let body = RequestBody::Spliced(SplicedBody {
            written: b"ab".to_vec(),
            pieces: vec![
                BodyPiece { source: PieceSource::Adapter, start: 0, len: 2 },
                BodyPiece { source: PieceSource::Client, start: u32::MAX, len: u32::MAX },
            ],
        });
        let err = body.assemble(b"0123").unwrap_err();
        assert_eq!((err.index, err.of, err.available), (1, "client", 4));
        assert_eq!(RequestBody::from(b"{}".to_vec()).assemble(b"").unwrap(), b"{}");
    }
}

//! An adapter's request body made ready to send: a `request-body` (whole,
//! or spliced from ranges of the client's body and of the bytes the adapter
//! wrote, contract 0.3) checked and turned into [`UpstreamBody`], a list of
//! [`Bytes`] that share the client's buffer and the adapter's. A long
//! prompt that the adapter forwards unchanged is sent from the client's
//! bytes: it is never copied back out of the component.

use bytes::Bytes;

use crate::types::{BodyPiece, PieceSource, RequestBody};

/// Most pieces a spliced body may have.
pub const MAX_PIECES: usize = 4_096;

/// Longest a spliced body may be. Its pieces share their buffers, so a few
/// repeated ranges of a large client body could otherwise name gigabytes
/// to send upstream; a whole body is bounded by the adapter's memory.
pub const MAX_SPLICED_BYTES: usize = 64 << 20;

/// Why an adapter's spliced body cannot be sent: the adapter's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpliceError {
    /// More than [`MAX_PIECES`] pieces.
    #[error("the spliced body has {0} pieces (at most {MAX_PIECES})")]
    TooManyPieces(usize),
    /// The pieces add up to more than [`MAX_SPLICED_BYTES`].
    #[error("the spliced body's pieces add up to more than {MAX_SPLICED_BYTES} bytes")]
    TooLong,
    /// A piece's range is not within its source's bytes.
    #[error("piece {index} ({of} bytes {start}..+{len}) lies outside the {available} {of} bytes")]
    OutOfRange {
        /// The piece's place in the list.
        index: usize,
        /// Whose bytes: `client` or `adapter`.
        of: &'static str,
        /// Its start.
        start: u32,
        /// Its length.
        len: u32,
        /// How many bytes its source has.
        available: usize,
    },
}

/// A request body as the host sends it: parts, in order, each sharing the
/// buffer it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamBody {
    parts: Vec<Bytes>,
    len: usize,
}

impl UpstreamBody {
    /// Checks `body` and assembles it; `client` is the body `map-request`
    /// was given (a `client` piece's range is an offset into it). Empty
    /// pieces are dropped and touching ranges of one buffer joined.
    ///
    /// # Errors
    ///
    /// A range outside its source, or too many pieces.
    pub fn assemble(body: RequestBody, client: &Bytes) -> Result<Self, SpliceError> {
        let spliced = match body {
            RequestBody::Bytes(bytes) => return Ok(Self::from(Bytes::from(bytes))),
            RequestBody::Spliced(spliced) => spliced,
        };
        if spliced.pieces.len() > MAX_PIECES {
            return Err(SpliceError::TooManyPieces(spliced.pieces.len()));
        }
        let written = Bytes::from(spliced.written);
        let mut assembled = Self { parts: Vec::with_capacity(spliced.pieces.len()), len: 0 };
        // The last part's source and end, to join a range that continues it.
        let mut last: Option<(PieceSource, usize)> = None;
        for (index, &BodyPiece { source, start, len }) in spliced.pieces.iter().enumerate() {
            let (bytes, name) = match source {
                PieceSource::Client => (client, "client"),
                PieceSource::Adapter => (&written, "adapter"),
            };
            let from = start as usize;
            let Some(to) = from.checked_add(len as usize).filter(|&to| to <= bytes.len()) else {
                return Err(SpliceError::OutOfRange { index, of: name, start, len, available: bytes.len() });
            };
            if len == 0 {
                continue;
            }
            match (last, assembled.parts.last_mut()) {
                (Some((last_source, end)), Some(part)) if last_source == source && end == from => {
                    let begin = end - part.len();
                    *part = bytes.slice(begin..to);
                }
                _ => assembled.parts.push(bytes.slice(from..to)),
            }
            assembled.len += len as usize;
            if assembled.len > MAX_SPLICED_BYTES {
                return Err(SpliceError::TooLong);
            }
            last = Some((source, to));
        }
        Ok(assembled)
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The parts, in order, taken.
    pub fn into_parts(self) -> Vec<Bytes> {
        self.parts
    }

    /// The body in one buffer: shared when it is one part, else copied
    /// (for checks and tests, not the request path).
    pub fn to_bytes(&self) -> Bytes {
        match self.parts.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            parts => Bytes::from(parts.concat()),
        }
    }
}

impl From<Bytes> for UpstreamBody {
    fn from(bytes: Bytes) -> Self {
        let len = bytes.len();
        Self { parts: if bytes.is_empty() { Vec::new() } else { vec![bytes] }, len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::SplicedBody;

    fn piece(source: PieceSource, start: u32, len: u32) -> BodyPiece {
        BodyPiece { source, start, len }
    }

    fn spliced(own: &[u8], pieces: Vec<BodyPiece>) -> RequestBody {
        RequestBody::Spliced(SplicedBody { written: own.to_vec(), pieces })
    }

    #[test]
    fn a_whole_body_is_one_part() {
        let body = UpstreamBody::assemble(RequestBody::Bytes(b"{}".to_vec()), &Bytes::new()).unwrap();
        assert_eq!((body.parts().len(), body.len(), body.to_bytes()), (1, 2, Bytes::from_static(b"{}")));
        let empty = UpstreamBody::assemble(RequestBody::Bytes(Vec::new()), &Bytes::new()).unwrap();
        assert!(empty.is_empty() && empty.parts().is_empty());
    }

    #[test]
    fn client_ranges_are_shared_not_copied_and_own_ranges_fill_between() {
        let client = Bytes::from_static(br#"{"model":"free","messages":[{"role":"user","content":"a long prompt"}]}"#);
        let messages = client.windows(11).position(|w| w == b"\"messages\":").unwrap();
        let own = br#"{"model":"llama","#;
        let body = UpstreamBody::assemble(
            spliced(
                own,
                vec![
                    piece(PieceSource::Adapter, 0, own.len() as u32),
                    piece(PieceSource::Client, messages as u32, (client.len() - messages) as u32),
                ],
            ),
            &client,
        )
        .unwrap();
        assert_eq!(
            body.to_bytes(),
            Bytes::from_static(br#"{"model":"llama","messages":[{"role":"user","content":"a long prompt"}]}"#)
        );
        assert_eq!(body.len(), body.to_bytes().len());
        // The client's part points into the client's buffer.
        let part = &body.parts()[1];
        assert_eq!(part.as_ptr(), client[messages..].as_ptr());
    }

    #[test]
    fn touching_ranges_join_and_empty_ones_vanish() {
        let client = Bytes::from_static(b"0123456789");
        let body = UpstreamBody::assemble(
            spliced(
                b"ab",
                vec![
                    piece(PieceSource::Client, 0, 3),
                    piece(PieceSource::Client, 3, 4),
                    piece(PieceSource::Adapter, 1, 0),
                    piece(PieceSource::Adapter, 0, 1),
                    piece(PieceSource::Adapter, 1, 1),
                    piece(PieceSource::Client, 8, 2),
                    piece(PieceSource::Client, 0, 1),
                ],
            ),
            &client,
        )
        .unwrap();
        let parts: Vec<&[u8]> = body.parts().iter().map(|p| p.as_ref()).collect();
        assert_eq!(parts, [&b"0123456"[..], b"ab", b"89", b"0"]);
        assert_eq!(body.len(), 12);
    }

    #[test]
    fn ranges_outside_their_source_are_refused_without_overflow() {
        let client = Bytes::from_static(b"0123");
        for (p, index) in [
            (piece(PieceSource::Client, 2, 3), 0),
            (piece(PieceSource::Client, 5, 0), 0),
            (piece(PieceSource::Adapter, 0, 3), 0),
            (piece(PieceSource::Client, u32::MAX, u32::MAX), 0),
        ] {
            let err = UpstreamBody::assemble(spliced(b"ab", vec![p]), &client).unwrap_err();
            assert!(matches!(err, SpliceError::OutOfRange { index: i, .. } if i == index), "{err}");
        }
        let err = UpstreamBody::assemble(
            spliced(b"ab", vec![piece(PieceSource::Adapter, 0, 2), piece(PieceSource::Adapter, 1, 2)]),
            &client,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "piece 1 (adapter bytes 1..+2) lies outside the 2 adapter bytes");
    }

    #[test]
    fn ranges_repeated_past_the_longest_body_are_refused() {
        let client = Bytes::from(vec![b'x'; 1 << 20]);
        let whole = piece(PieceSource::Client, 0, 1 << 20);
        let at_most = vec![whole; MAX_SPLICED_BYTES >> 20];
        assert_eq!(UpstreamBody::assemble(spliced(b"", at_most), &client).unwrap().len(), MAX_SPLICED_BYTES);
        let past = vec![whole; (MAX_SPLICED_BYTES >> 20) + 1];
        assert_eq!(UpstreamBody::assemble(spliced(b"", past), &client).unwrap_err(), SpliceError::TooLong);
    }

    #[test]
    fn too_many_pieces_are_refused() {
        let client = Bytes::from_static(b"x");
        let many = vec![piece(PieceSource::Client, 0, 1); MAX_PIECES + 1];
        assert_eq!(
            UpstreamBody::assemble(spliced(b"", many), &client).unwrap_err(),
            SpliceError::TooManyPieces(MAX_PIECES + 1)
        );
        let most = vec![piece(PieceSource::Client, 0, 1); MAX_PIECES];
        assert_eq!(UpstreamBody::assemble(spliced(b"", most), &client).unwrap().len(), MAX_PIECES);
    }
}

//! Rows of a `COPY ... TO STDOUT (FORMAT binary)` stream, whatever the
//! message boundaries: an 11-byte signature and a header first, then per
//! row a 16-bit field count and each field as a 32-bit length (-1 for NULL)
//! followed by its bytes, and a field count of -1 at the end.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// What [`BinaryRows::next_row`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// A whole row: its fields are ranges of [`BinaryRows::bytes`].
    Row,
    /// The rest of the row has not arrived yet: push the next chunk.
    NeedMore,
    /// The trailer: the COPY has no more rows.
    End,
}

/// Splits the chunks of a binary COPY into rows without copying field data
/// (a row split across chunks is joined once).
#[derive(Default)]
pub(super) struct BinaryRows {
    buf: Bytes,
    pos: usize,
    header_read: bool,
}

impl BinaryRows {
    /// Appends the next chunk of the stream.
    pub fn push(&mut self, chunk: Bytes) {
        if self.pos == self.buf.len() {
            self.buf = chunk;
        } else {
            let rest = &self.buf[self.pos..];
            let mut joined = BytesMut::with_capacity(rest.len() + chunk.len());
            joined.extend_from_slice(rest);
            joined.extend_from_slice(&chunk);
            self.buf = joined.freeze();
        }
        self.pos = 0;
    }

    /// The bytes the ranges of the last row index into.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Reads the next row's fields into `fields` (cleared first; `None` is
    /// NULL).
    pub fn next_row(
        &mut self,
        fields: &mut Vec<Option<Range<usize>>>,
    ) -> Result<Step, &'static str> {
        fields.clear();
        if !self.header_read {
            let Some(header_end) = self.header_end()? else {
                return Ok(Step::NeedMore);
            };
            self.pos = header_end;
            self.header_read = true;
        }
        let b = &self.buf[..];
        let mut at = self.pos;
        let Some(count) = read_i16(b, at) else {
            return Ok(Step::NeedMore);
        };
        at += 2;
        if count == -1 {
            self.pos = at;
            return Ok(Step::End);
        }
        let count = usize::try_from(count).map_err(|_| "negative field count")?;
        for _ in 0..count {
            let Some(len) = read_i32(b, at) else {
                fields.clear();
                return Ok(Step::NeedMore);
            };
            at += 4;
            if len == -1 {
                fields.push(None);
                continue;
            }
            let len = usize::try_from(len).map_err(|_| "negative field length")?;
            if b.len() < at + len {
                fields.clear();
                return Ok(Step::NeedMore);
            }
            fields.push(Some(at..at + len));
            at += len;
        }
        self.pos = at;
        Ok(Step::Row)
    }

    /// Where the header ends, once it has arrived.
    fn header_end(&self) -> Result<Option<usize>, &'static str> {
        let b = &self.buf[self.pos..];
        if b.len() < SIGNATURE.len() + 8 {
            return Ok(None);
        }
        if &b[..SIGNATURE.len()] != SIGNATURE {
            return Err("missing the binary COPY signature");
        }
        let flags = read_i32(b, 11).unwrap_or(0);
        if flags & (1 << 16) != 0 {
            return Err("rows carry OIDs");
        }
        let extension = usize::try_from(read_i32(b, 15).unwrap_or(0))
            .map_err(|_| "negative header extension length")?;
        let end = SIGNATURE.len() + 8 + extension;
        Ok((b.len() >= end).then_some(self.pos + end))
    }
}

fn read_i16(b: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn read_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> Vec<u8> {
        let mut b = SIGNATURE.to_vec();
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        for (id, name) in [(7i32, Some("seven")), (8, None)] {
            b.extend_from_slice(&2i16.to_be_bytes());
            b.extend_from_slice(&4i32.to_be_bytes());
            b.extend_from_slice(&id.to_be_bytes());
            match name {
                Some(n) => {
                    b.extend_from_slice(&(n.len() as i32).to_be_bytes());
                    b.extend_from_slice(n.as_bytes());
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b
    }

    /// Feeds the stream in chunks of `size` bytes; returns the rows read.
    fn read_in_chunks(size: usize) -> Vec<Vec<Option<Vec<u8>>>> {
        let data = stream();
        let mut rows = BinaryRows::default();
        let mut fields = Vec::new();
        let mut out = Vec::new();
        for chunk in data.chunks(size) {
            rows.push(Bytes::copy_from_slice(chunk));
            loop {
                match rows.next_row(&mut fields).unwrap() {
                    Step::Row => out.push(
                        fields
                            .iter()
                            .map(|f| f.clone().map(|r| rows.bytes()[r].to_vec()))
                            .collect(),
                    ),
                    Step::NeedMore => break,
                    Step::End => return out,
                }
            }
        }
        panic!("no trailer");
    }

    #[test]
    fn rows_split_anywhere_read_the_same() {
        let whole = read_in_chunks(usize::MAX);
        assert_eq!(
            whole,
            vec![
                vec![Some(7i32.to_be_bytes().to_vec()), Some(b"seven".to_vec())],
                vec![Some(8i32.to_be_bytes().to_vec()), None],
            ]
        );
        for size in 1..20 {
            assert_eq!(read_in_chunks(size), whole, "chunks of {size} bytes");
        }
    }

    #[test]
    fn a_stream_without_the_signature_is_refused() {
        let mut rows = BinaryRows::default();
        rows.push(Bytes::from_static(b"not a binary copy stream"));
        assert!(rows.next_row(&mut Vec::new()).is_err());
    }
}

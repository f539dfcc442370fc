//! pgoutput's message formats (`proto_version '1'`, `messages 'true'`), as
//! described in PostgreSQL's "Logical Replication Message Formats". Protocol
//! 2's stream messages, and the xid its streamed changes carry, are taken
//! apart before this by [`super::streamed`].
//!
//! [`parse`] reads one message, the payload of one XLogData. Column values
//! stay slices of the input buffer; nothing is copied.

use bytes::Bytes;
use courier_core::Lsn;

use super::DecodeError;

/// Microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// One pgoutput message.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    Begin(Begin),
    Commit(Commit),
    Origin(Origin),
    Relation(RelationMessage),
    Type(TypeMessage),
    Insert(Insert),
    Update(Update),
    Delete(Delete),
    Truncate(Truncate),
    /// A `pg_logical_emit_message` message.
    Logical(LogicalMessage),
}

/// The start of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Begin {
    /// The LSN of the transaction's commit record.
    pub final_lsn: Lsn,
    /// Commit time, microseconds since the Unix epoch.
    pub commit_time_us: i64,
    pub xid: u32,
}

/// The end of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    pub flags: u8,
    pub commit_lsn: Lsn,
    /// The end of the commit record: where the next transaction may start.
    pub end_lsn: Lsn,
    /// Commit time, microseconds since the Unix epoch.
    pub commit_time_us: i64,
}

/// The replication origin a transaction came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub commit_lsn: Lsn,
    pub name: String,
}

/// A table's shape as the stream will send its rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationMessage {
    pub oid: u32,
    /// The schema; PostgreSQL sends an empty string for `pg_catalog`.
    pub namespace: String,
    pub name: String,
    /// `relreplident`: `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

/// One column of a [`RelationMessage`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationColumn {
    /// Whether the column is part of the replica identity key.
    pub is_key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

/// A user-defined type used by a following Relation message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeMessage {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
}

/// One column value of a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TupleValue {
    Null,
    /// A TOASTed value the change did not touch; PostgreSQL did not send it.
    UnchangedToast,
    /// The value's text form, a slice of the message.
    Text(Bytes),
}

/// A row's column values, in the relation's column order.
pub type Tuple = Vec<TupleValue>;

/// The old row that an update or delete carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: only the replica identity columns are set; the others are null.
    Key(Tuple),
    /// `O`: the whole old row (REPLICA IDENTITY FULL).
    Full(Tuple),
}

impl OldTuple {
    /// The old row's values, whichever kind it is.
    pub fn tuple(&self) -> &Tuple {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

/// A new row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Insert {
    pub relation_oid: u32,
    pub new: Tuple,
}

/// A changed row: the new row, and the old one when the replica identity
/// changed (`K`) or is FULL (`O`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    pub relation_oid: u32,
    pub old: Option<OldTuple>,
    pub new: Tuple,
}

/// A deleted row, identified by its old key or whole old row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    pub relation_oid: u32,
    pub old: OldTuple,
}

/// `TRUNCATE` of one or more tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncate {
    pub cascade: bool,
    pub restart_identity: bool,
    pub relation_oids: Vec<u32>,
}

/// A message written with `pg_logical_emit_message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogicalMessage {
    pub transactional: bool,
    pub lsn: Lsn,
    pub prefix: String,
    pub content: Bytes,
}

/// Parses one pgoutput message. Malformed input is an error, never a panic.
pub fn parse(data: Bytes) -> Result<Message, DecodeError> {
    let tag = *data.first().ok_or(DecodeError::Malformed {
        message: "empty",
        reason: "no message type byte",
    })?;
    let name = match tag {
        b'B' => "Begin",
        b'C' => "Commit",
        b'O' => "Origin",
        b'R' => "Relation",
        b'Y' => "Type",
        b'I' => "Insert",
        b'U' => "Update",
        b'D' => "Delete",
        b'T' => "Truncate",
        b'M' => "Message",
        other => {
            return Err(DecodeError::UnknownMessage {
                tag: char::from(other),
            })
        }
    };
    let mut r = Reader {
        data,
        pos: 1,
        message: name,
    };
    let message = match tag {
        b'B' => Message::Begin(Begin {
            final_lsn: Lsn(r.u64()?),
            commit_time_us: r.timestamp()?,
            xid: r.u32()?,
        }),
        b'C' => Message::Commit(Commit {
            flags: r.u8()?,
            commit_lsn: Lsn(r.u64()?),
            end_lsn: Lsn(r.u64()?),
            commit_time_us: r.timestamp()?,
        }),
        b'O' => Message::Origin(Origin {
            commit_lsn: Lsn(r.u64()?),
            name: r.string()?,
        }),
        b'R' => Message::Relation(r.relation()?),
        b'Y' => Message::Type(TypeMessage {
            oid: r.u32()?,
            namespace: r.string()?,
            name: r.string()?,
        }),
        b'I' => {
            let relation_oid = r.u32()?;
            r.expect(b'N', "expected 'N' before the new tuple")?;
            Message::Insert(Insert {
                relation_oid,
                new: r.tuple()?,
            })
        }
        b'U' => {
            let relation_oid = r.u32()?;
            let old = match r.u8()? {
                b'N' => None,
                kind => {
                    let old = r.old_tuple(kind)?;
                    r.expect(b'N', "expected 'N' before the new tuple")?;
                    Some(old)
                }
            };
            Message::Update(Update {
                relation_oid,
                old,
                new: r.tuple()?,
            })
        }
        b'D' => {
            let relation_oid = r.u32()?;
            let kind = r.u8()?;
            Message::Delete(Delete {
                relation_oid,
                old: r.old_tuple(kind)?,
            })
        }
        b'T' => {
            let count = r.u32()?;
            let options = r.u8()?;
            // Each OID takes 4 bytes: refuse counts the message cannot hold
            // before allocating for them.
            if count as usize > r.remaining() / 4 {
                return Err(r.malformed("relation count exceeds message length"));
            }
            let relation_oids = (0..count).map(|_| r.u32()).collect::<Result<_, _>>()?;
            Message::Truncate(Truncate {
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
                relation_oids,
            })
        }
        _ => {
            let transactional = r.u8()? & 1 != 0;
            let lsn = Lsn(r.u64()?);
            let prefix = r.string()?;
            let len = r.len()?;
            Message::Logical(LogicalMessage {
                transactional,
                lsn,
                prefix,
                content: r.bytes(len)?,
            })
        }
    };
    if r.remaining() != 0 {
        return Err(r.malformed("trailing bytes after the message"));
    }
    Ok(message)
}

struct Reader {
    data: Bytes,
    pos: usize,
    message: &'static str,
}

impl Reader {
    fn malformed(&self, reason: &'static str) -> DecodeError {
        DecodeError::Malformed {
            message: self.message,
            reason,
        }
    }

    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self
            .data
            .get(self.pos..self.pos + N)
            .ok_or_else(|| self.malformed("message ends early"))?;
        self.pos += N;
        // The slice has exactly N bytes.
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take()?))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take()?))
    }

    /// A timestamp in microseconds since 2000-01-01, as Unix-epoch microseconds.
    fn timestamp(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.take()?).saturating_add(PG_EPOCH_OFFSET_US))
    }

    fn expect(&mut self, byte: u8, reason: &'static str) -> Result<(), DecodeError> {
        if self.u8()? == byte {
            Ok(())
        } else {
            Err(self.malformed(reason))
        }
    }

    /// A non-negative Int32 length.
    fn len(&mut self) -> Result<usize, DecodeError> {
        usize::try_from(self.i32()?).map_err(|_| self.malformed("negative length"))
    }

    fn bytes(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        if len > self.remaining() {
            return Err(self.malformed("value longer than the message"));
        }
        let out = self.data.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(out)
    }

    /// A NUL-terminated string.
    fn string(&mut self) -> Result<String, DecodeError> {
        let rest = &self.data[self.pos..];
        let nul = memchr::memchr(0, rest).ok_or_else(|| self.malformed("unterminated string"))?;
        let s = std::str::from_utf8(&rest[..nul])
            .map_err(|_| self.malformed("string is not valid UTF-8"))?
            .to_owned();
        self.pos += nul + 1;
        Ok(s)
    }

    fn relation(&mut self) -> Result<RelationMessage, DecodeError> {
        let oid = self.u32()?;
        let namespace = self.string()?;
        let name = self.string()?;
        let replica_identity = self.u8()?;
        let count = self.u16()?;
        let mut columns = Vec::with_capacity(usize::from(count).min(self.remaining() / 10));
        for _ in 0..count {
            columns.push(RelationColumn {
                is_key: self.u8()? & 1 != 0,
                name: self.string()?,
                type_oid: self.u32()?,
                type_modifier: self.i32()?,
            });
        }
        Ok(RelationMessage {
            oid,
            namespace,
            name,
            replica_identity,
            columns,
        })
    }

    fn old_tuple(&mut self, kind: u8) -> Result<OldTuple, DecodeError> {
        match kind {
            b'K' => Ok(OldTuple::Key(self.tuple()?)),
            b'O' => Ok(OldTuple::Full(self.tuple()?)),
            _ => Err(self.malformed("expected 'K' or 'O' before the old tuple")),
        }
    }

    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let count = usize::from(self.u16()?);
        // Every column takes at least one byte.
        let mut values = Vec::with_capacity(count.min(self.remaining()));
        for _ in 0..count {
            values.push(match self.u8()? {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::UnchangedToast,
                b't' => {
                    let len = self.len()?;
                    TupleValue::Text(self.bytes(len)?)
                }
                b'b' => return Err(self.malformed("binary column values were not requested")),
                _ => return Err(self.malformed("unknown column value kind")),
            });
        }
        Ok(values)
    }
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;

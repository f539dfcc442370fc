//! The streaming phase of a replication connection (COPY BOTH): WAL data
//! and keepalives in, standby status updates out.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use courier_core::Lsn;
use postgres_protocol::message::backend::{self, Message};
use postgres_protocol::message::frontend;

use crate::conn::wire::{server_error, Backend, Wire};
use crate::conn::PgError;

/// One message of the replication stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// A chunk of decoded WAL: for pgoutput, exactly one pgoutput message.
    XLogData {
        /// WAL position this data starts at (0 for some pgoutput messages).
        wal_start: Lsn,
        /// The server's current WAL end.
        wal_end: Lsn,
        /// Server clock, microseconds since 2000-01-01 UTC.
        server_time_us: i64,
        /// The payload. It shares its allocation with neighbouring
        /// messages, so holding it keeps up to one read chunk alive.
        data: Bytes,
    },
    /// A primary keepalive.
    Keepalive {
        /// The server's current WAL end.
        wal_end: Lsn,
        /// Server clock, microseconds since 2000-01-01 UTC.
        server_time_us: i64,
        /// The server wants a status update now, or it will time the
        /// connection out (`wal_sender_timeout`).
        reply_requested: bool,
    },
}

/// A running logical replication stream.
pub struct ReplicationStream {
    wire: Wire,
    backend_pid: i32,
    /// The server sent CopyDone (or ended the command).
    server_done: bool,
}

impl std::fmt::Debug for ReplicationStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationStream")
            .field("backend_pid", &self.backend_pid)
            .field("server_done", &self.server_done)
            .finish_non_exhaustive()
    }
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
const COPY_DATA_TAG: u8 = b'd';
/// Length of a standby status update inside its CopyData frame.
const STATUS_UPDATE_LEN: i32 = 1 + 8 + 8 + 8 + 8 + 1;

impl ReplicationStream {
    pub(crate) fn new(wire: Wire, backend_pid: i32) -> ReplicationStream {
        ReplicationStream {
            wire,
            backend_pid,
            server_done: false,
        }
    }

    /// Process id of the walsender serving this stream.
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// The next message, or `None` when the server ended the stream.
    ///
    /// Cancel-safe: when the future is dropped before it completes, no
    /// message is lost; partial frames wait in the read buffer.
    /// A server error (e.g. the walsender was terminated, SQLSTATE 57P01)
    /// and a dropped connection are errors; see [`PgError::is_retriable`].
    pub async fn next(&mut self) -> Result<Option<ReplicationMessage>, PgError> {
        loop {
            if self.server_done {
                return Ok(None);
            }
            if let Some(message) = self.decode_buffered()? {
                return Ok(Some(message));
            }
            self.wire.fill().await?;
        }
    }

    /// The next message if one is already buffered, without waiting for the
    /// network: lets a caller drain a burst without re-entering its `select!`.
    pub fn try_next(&mut self) -> Result<Option<ReplicationMessage>, PgError> {
        if self.server_done {
            return Ok(None);
        }
        self.decode_buffered()
    }

    /// Decodes the next complete message from the read buffer, skipping
    /// notices; `None` when more bytes are needed or the stream ended.
    fn decode_buffered(&mut self) -> Result<Option<ReplicationMessage>, PgError> {
        loop {
            let Some((tag, total)) = self.wire.complete_frame()? else {
                return Ok(None);
            };
            if tag == COPY_DATA_TAG {
                let mut frame = self.wire.rbuf().split_to(total);
                frame.advance(5);
                return decode_copy_data(frame).map(Some);
            }
            let message = match backend::Message::parse(self.wire.rbuf()) {
                Ok(Some(message)) => message,
                Ok(None) => return Ok(None),
                Err(e) => return Err(PgError::protocol(format!("bad stream message: {e}"))),
            };
            match message {
                Message::NoticeResponse(_) | Message::ParameterStatus(_) => {}
                Message::CopyDone | Message::CommandComplete(_) | Message::ReadyForQuery(_) => {
                    self.server_done = true;
                    return Ok(None);
                }
                Message::ErrorResponse(body) => return Err(server_error(body.fields())),
                _ => {
                    return Err(PgError::protocol(format!(
                        "unexpected message {:?} in the replication stream",
                        char::from(tag)
                    )))
                }
            }
        }
    }

    /// Sends a standby status update: everything up to `write` is received,
    /// up to `flush` durably applied (this is what advances the slot's
    /// `confirmed_flush_lsn`), up to `apply` applied. With
    /// `reply_requested` the server answers with a keepalive at once.
    pub async fn send_status(
        &mut self,
        write: Lsn,
        flush: Lsn,
        apply: Lsn,
        reply_requested: bool,
    ) -> Result<(), PgError> {
        let buf = self.wire.wbuf();
        buf.put_u8(COPY_DATA_TAG);
        buf.put_i32(4 + STATUS_UPDATE_LEN);
        buf.put_u8(b'r');
        buf.put_u64(write.as_u64());
        buf.put_u64(flush.as_u64());
        buf.put_u64(apply.as_u64());
        buf.put_i64(pg_now_us());
        buf.put_u8(u8::from(reply_requested));
        self.wire.flush().await
    }

    /// Ends streaming cleanly: sends CopyDone, discards what the server
    /// still sends until it is ready for queries, and closes the connection.
    /// A logical walsender answers only between transactions, so a caller
    /// that cannot wait should bound this with a timeout (dropping the
    /// stream is also safe: nothing is acknowledged by closing).
    pub async fn finish(mut self) -> Result<(), PgError> {
        frontend::copy_done(self.wire.wbuf());
        self.wire.flush().await?;
        let mut failure = None;
        loop {
            match self.wire.read_message().await {
                Ok(Backend::Message(Message::ReadyForQuery(_))) => break,
                Ok(Backend::Message(Message::ErrorResponse(body))) => {
                    failure = Some(server_error(body.fields()))
                }
                Ok(_) => {}
                // The server may close right after ending the stream.
                Err(e) if failure.is_none() && self.server_done => {
                    tracing::debug!(error = %e, "connection closed after the stream ended");
                    break;
                }
                Err(e) => return Err(failure.unwrap_or(e)),
            }
        }
        self.wire.close().await;
        failure.map_or(Ok(()), Err)
    }
}

/// Decodes the body of a CopyData frame (without tag and length).
fn decode_copy_data(mut body: BytesMut) -> Result<ReplicationMessage, PgError> {
    match body.first() {
        Some(b'w') if body.len() >= 25 => {
            body.advance(1);
            let wal_start = Lsn(body.get_u64());
            let wal_end = Lsn(body.get_u64());
            let server_time_us = body.get_i64();
            Ok(ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                server_time_us,
                data: body.freeze(),
            })
        }
        Some(b'k') if body.len() >= 18 => {
            body.advance(1);
            Ok(ReplicationMessage::Keepalive {
                wal_end: Lsn(body.get_u64()),
                server_time_us: body.get_i64(),
                reply_requested: body.get_u8() != 0,
            })
        }
        Some(kind) => Err(PgError::protocol(format!(
            "replication message {:?} of {} bytes is malformed or unknown",
            char::from(*kind),
            body.len()
        ))),
        None => Err(PgError::protocol(
            "empty CopyData in the replication stream",
        )),
    }
}

/// Now, in microseconds since 2000-01-01 UTC.
fn pg_now_us() -> i64 {
    let unix_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    unix_us - PG_EPOCH_OFFSET_US
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_xlogdata_without_copying_the_payload() {
        let mut body = BytesMut::new();
        body.put_u8(b'w');
        body.put_u64(0x10);
        body.put_u64(0x20);
        body.put_i64(7);
        body.put_slice(b"Bpayload");
        let start = body.as_ptr() as usize;
        let message = decode_copy_data(body).unwrap();
        let ReplicationMessage::XLogData {
            wal_start,
            wal_end,
            server_time_us,
            data,
        } = message
        else {
            panic!("not XLogData");
        };
        assert_eq!(
            (wal_start, wal_end, server_time_us),
            (Lsn(0x10), Lsn(0x20), 7)
        );
        assert_eq!(&data[..], b"Bpayload");
        assert_eq!(data.as_ptr() as usize, start + 25);
    }

    #[test]
    fn decodes_keepalive_and_rejects_garbage() {
        let mut body = BytesMut::new();
        body.put_u8(b'k');
        body.put_u64(0x30);
        body.put_i64(9);
        body.put_u8(1);
        assert_eq!(
            decode_copy_data(body).unwrap(),
            ReplicationMessage::Keepalive {
                wal_end: Lsn(0x30),
                server_time_us: 9,
                reply_requested: true
            }
        );
        assert!(decode_copy_data(BytesMut::from(&b"k12"[..])).is_err());
        assert!(decode_copy_data(BytesMut::from(&b"z"[..])).is_err());
        assert!(decode_copy_data(BytesMut::new()).is_err());
    }

    #[test]
    fn clock_is_after_2020() {
        assert!(pg_now_us() > 631_152_000_000_000);
    }
}

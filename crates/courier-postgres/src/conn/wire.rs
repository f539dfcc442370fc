//! Framing of PostgreSQL protocol messages over a [`PgStream`], with one
//! read buffer and one write buffer that survive cancelled futures.

use std::io;

use bytes::{Buf, BytesMut};
use postgres_protocol::message::backend::{self, ErrorFields, Header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::fallible_iterator::FallibleIterator;

use super::transport::PgStream;
use super::{PgError, ServerError};

/// Bytes read per syscall at most; large reads keep the stream cheap.
const READ_CHUNK: usize = 256 * 1024;
/// Below this much free space the read buffer is grown before reading.
const MIN_FREE: usize = 32 * 1024;
/// PostgreSQL never sends a message over 1 GiB; a bigger length means a
/// corrupt stream.
const MAX_MESSAGE: usize = 1 << 30;
/// Tag of `CopyBothResponse`, which `postgres_protocol` does not parse.
const COPY_BOTH_RESPONSE_TAG: u8 = b'W';

/// A backend message, or `CopyBothResponse`.
pub(crate) enum Backend {
    Message(backend::Message),
    CopyBothResponse,
}

/// A protocol connection: the stream plus its read and write buffers.
///
/// Every `async fn` here is cancel-safe: complete frames are only taken
/// out of the read buffer once they are whole, and unwritten bytes stay
/// in the write buffer for the next [`Wire::flush`].
pub(crate) struct Wire {
    io: PgStream,
    addr: String,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

impl Wire {
    pub(crate) fn new(io: PgStream, addr: String) -> Wire {
        Wire {
            io,
            addr,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(1024),
        }
    }

    /// Where to encode frontend messages; they are sent by [`Wire::flush`].
    pub(crate) fn wbuf(&mut self) -> &mut BytesMut {
        &mut self.wbuf
    }

    /// The read buffer, for callers that split frames themselves.
    pub(crate) fn rbuf(&mut self) -> &mut BytesMut {
        &mut self.rbuf
    }

    pub(crate) fn io_error(&self, source: io::Error) -> PgError {
        PgError::Io {
            addr: self.addr.clone(),
            source,
        }
    }

    /// Sends everything in the write buffer.
    pub(crate) async fn flush(&mut self) -> Result<(), PgError> {
        while !self.wbuf.is_empty() {
            match self.io.write_buf(&mut self.wbuf).await {
                Ok(0) => return Err(self.io_error(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
        let result = self.io.flush().await;
        result.map_err(|e| self.io_error(e))
    }

    /// Reads more bytes into the read buffer; a closed connection is an
    /// `UnexpectedEof` I/O error (retriable).
    pub(crate) async fn fill(&mut self) -> Result<(), PgError> {
        if self.rbuf.capacity() - self.rbuf.len() < MIN_FREE {
            self.rbuf.reserve(READ_CHUNK);
        }
        match self.io.read_buf(&mut self.rbuf).await {
            Ok(0) => Err(self.io_error(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ))),
            Ok(_) => Ok(()),
            Err(e) => Err(self.io_error(e)),
        }
    }

    /// The tag and total length of the next frame when it is complete in the
    /// read buffer; otherwise reserves room for the rest and returns `None`.
    pub(crate) fn complete_frame(&mut self) -> Result<Option<(u8, usize)>, PgError> {
        let header = match Header::parse(&self.rbuf) {
            Ok(Some(header)) => header,
            Ok(None) => return Ok(None),
            Err(e) => return Err(PgError::protocol(format!("bad message header: {e}"))),
        };
        // `Header::parse` guarantees len >= 4.
        let total = header.len() as usize + 1;
        if total > MAX_MESSAGE {
            return Err(PgError::protocol(format!(
                "message of {total} bytes (tag {:?}) exceeds PostgreSQL's limit",
                char::from(header.tag())
            )));
        }
        if self.rbuf.len() < total {
            self.rbuf.reserve(total - self.rbuf.len());
            return Ok(None);
        }
        Ok(Some((header.tag(), total)))
    }

    /// Reads the next complete message.
    pub(crate) async fn read_message(&mut self) -> Result<Backend, PgError> {
        loop {
            if let Some(message) = self.try_message()? {
                return Ok(message);
            }
            self.fill().await?;
        }
    }

    fn try_message(&mut self) -> Result<Option<Backend>, PgError> {
        let Some((tag, total)) = self.complete_frame()? else {
            return Ok(None);
        };
        if tag == COPY_BOTH_RESPONSE_TAG {
            self.rbuf.advance(total);
            return Ok(Some(Backend::CopyBothResponse));
        }
        match backend::Message::parse(&mut self.rbuf) {
            Ok(Some(message)) => Ok(Some(Backend::Message(message))),
            Ok(None) => Ok(None),
            Err(e) => Err(PgError::protocol(format!(
                "cannot parse message {:?}: {e}",
                char::from(tag)
            ))),
        }
    }

    /// Sends `Terminate` and closes the stream; errors are irrelevant here.
    pub(crate) async fn close(mut self) {
        postgres_protocol::message::frontend::terminate(&mut self.wbuf);
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }
}

/// Turns an `ErrorResponse` into a [`PgError::Server`].
pub(crate) fn server_error(fields: ErrorFields<'_>) -> PgError {
    PgError::Server(Box::new(error_fields(fields)))
}

pub(crate) fn error_fields(mut fields: ErrorFields<'_>) -> ServerError {
    let mut error = ServerError {
        severity: String::new(),
        code: String::new(),
        message: String::new(),
        detail: None,
        hint: None,
    };
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'V' => error.severity = value,
            b'S' if error.severity.is_empty() => error.severity = value,
            b'C' => error.code = value,
            b'M' => error.message = value,
            b'D' => error.detail = Some(value),
            b'H' => error.hint = Some(value),
            _ => {}
        }
    }
    error
}

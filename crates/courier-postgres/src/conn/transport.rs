//! The byte stream under a hand-driven PostgreSQL connection: TCP, upgraded
//! to TLS after an `SSLRequest` when the [`SslMode`] asks for it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::tls::{client_config, server_name, tls_error};
use super::{HostAddr, PgConfig, PgError, SslMode};

/// A plain or TLS-encrypted TCP connection to the server.
pub(crate) enum PgStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Opens TCP to `host` and negotiates TLS per `cfg.sslmode`:
/// `prefer` continues in plain text when the server answers `N` to the
/// `SSLRequest`; the stricter modes fail instead.
pub(crate) async fn open(cfg: &PgConfig, host: &HostAddr) -> Result<PgStream, PgError> {
    let addr = host.to_string();
    let io_err = |source| PgError::Io {
        addr: addr.clone(),
        source,
    };
    let tcp = TcpStream::connect((host.host.as_str(), host.port))
        .await
        .map_err(io_err)?;
    tcp.set_nodelay(true).map_err(io_err)?;
    let Some(tls) = client_config(cfg)? else {
        return Ok(PgStream::Plain(tcp));
    };
    let mut tcp = tcp;
    let mut request = BytesMut::with_capacity(8);
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).await.map_err(io_err)?;
    match tcp.read_u8().await.map_err(io_err)? {
        b'S' => {}
        b'N' if cfg.sslmode == SslMode::Prefer => return Ok(PgStream::Plain(tcp)),
        b'N' => {
            return Err(tls_error(
                &addr,
                &format!(
                    "the server does not accept TLS connections but sslmode={}; \
                     enable ssl on the server or use sslmode=prefer",
                    cfg.sslmode
                ),
                None,
            ))
        }
        other => {
            return Err(PgError::protocol(format!(
                "answer {:?} to SSLRequest; is {} a PostgreSQL server?",
                char::from(other),
                addr
            )))
        }
    }
    let connector = TlsConnector::from(Arc::new(tls));
    let stream = connector
        .connect(server_name(host)?, tcp)
        .await
        .map_err(|e| {
            let reason = format!("TLS handshake failed (sslmode={}): {e}", cfg.sslmode);
            tls_error(&addr, &reason, Some(Box::new(e)))
        })?;
    Ok(PgStream::Tls(Box::new(stream)))
}

impl AsyncRead for PgStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PgStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_flush(cx),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

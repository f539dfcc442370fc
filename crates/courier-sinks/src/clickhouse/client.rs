//! Queries and inserts over ClickHouse's HTTP interface.

use std::time::Duration;

use courier_core::SinkErrorKind;

use super::config::{Compression, Settings};
use crate::failure;

/// A failed request to the server at `server` (`host:port`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChError {
    /// No answer: connection refused or lost, timeout, TLS failure.
    #[error("clickhouse at {server} {} ({})", failure::of_reqwest(.source).0, failure::of_reqwest(.source).1)]
    Transport {
        server: String,
        #[source]
        source: reqwest::Error,
    },
    /// An INSERT body could not be compressed.
    #[error("compressing an INSERT: {0}")]
    Compress(#[source] std::io::Error),
    /// ClickHouse answered with an error.
    #[error("clickhouse at {server} {} (HTTP {status}{}: {message})", self.kind(), code.map(|c| format!(", code {c}")).unwrap_or_default())]
    Server {
        server: String,
        status: u16,
        /// ClickHouse's exception code (`Code: N`), when it sent one.
        code: Option<u32>,
        /// The exception text, cut before any part that may quote row data.
        message: String,
    },
}

/// The kind of each ClickHouse exception code a sink meets that is not a
/// plain rejection of the data or statement.
const CODE_KINDS: &[(u32, SinkErrorKind)] = &[
    (159, SinkErrorKind::TimedOut),    // TIMEOUT_EXCEEDED
    (209, SinkErrorKind::TimedOut),    // SOCKET_TIMEOUT
    (210, SinkErrorKind::Unreachable), // NETWORK_ERROR
    (202, SinkErrorKind::Overloaded),  // TOO_MANY_SIMULTANEOUS_QUERIES
    (203, SinkErrorKind::Overloaded),  // NO_FREE_CONNECTION
    (241, SinkErrorKind::Overloaded),  // MEMORY_LIMIT_EXCEEDED
    (252, SinkErrorKind::Overloaded),  // TOO_MANY_PARTS
    (164, SinkErrorKind::Unavailable), // READONLY (a replica catching up)
    (242, SinkErrorKind::Unavailable), // TABLE_IS_READ_ONLY
    (285, SinkErrorKind::Unavailable), // TOO_FEW_LIVE_REPLICAS
    (319, SinkErrorKind::Unavailable), // UNKNOWN_STATUS_OF_INSERT
    (425, SinkErrorKind::Unavailable), // SYSTEM_ERROR
    (473, SinkErrorKind::Unavailable), // DEADLOCK_AVOIDED
    (999, SinkErrorKind::Unavailable), // KEEPER_EXCEPTION
    (81, SinkErrorKind::Config),       // UNKNOWN_DATABASE
    (192, SinkErrorKind::Config),      // UNKNOWN_USER
    (193, SinkErrorKind::Config),      // WRONG_PASSWORD
    (497, SinkErrorKind::Config),      // ACCESS_DENIED
    (516, SinkErrorKind::Config),      // AUTHENTICATION_FAILED
];

impl ChError {
    /// What kind of failure this is: by ClickHouse's exception code when it
    /// sent one (any code not listed in `CODE_KINDS` rejects the data or
    /// statement), else by the HTTP status (a proxy or a restarting server).
    pub fn kind(&self) -> SinkErrorKind {
        match self {
            ChError::Transport { source, .. } => failure::of_reqwest(source).0,
            ChError::Compress(_) => SinkErrorKind::Io,
            ChError::Server { status, code, .. } => match code {
                Some(c) => CODE_KINDS
                    .iter()
                    .find(|(k, _)| k == c)
                    .map_or(SinkErrorKind::Rejected, |(_, kind)| *kind),
                None => failure::of_status(*status),
            },
        }
    }

    /// ClickHouse's exception code, if any.
    #[cfg(test)]
    pub fn code(&self) -> Option<u32> {
        match self {
            ChError::Server { code, .. } => *code,
            ChError::Transport { .. } | ChError::Compress(_) => None,
        }
    }
}

/// A connection pool to one ClickHouse server.
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    endpoint: String,
    /// `host:port`, for messages.
    server: String,
    user: String,
    password: Option<String>,
    compression: Compression,
}

impl Client {
    pub fn new(s: &Settings) -> Result<Client, String> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(s.timeout.min(Duration::from_secs(10)))
            .timeout(s.timeout)
            .pool_idle_timeout(Duration::from_secs(2));
        if let Some(pem) = &s.tls_ca {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("tls_ca_file: {e}"))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        Ok(Client {
            http: b.build().map_err(|e| format!("HTTP client: {e}"))?,
            endpoint: s.endpoint.clone(),
            server: failure::address(&s.endpoint).to_string(),
            user: s.user.clone(),
            password: s.password.clone(),
            compression: s.compression,
        })
    }

    /// Runs one statement; returns the response body.
    pub async fn query(&self, sql: &str) -> Result<String, ChError> {
        let req = self.http.post(&self.endpoint).body(sql.to_string());
        self.send(req).await
    }

    /// Runs an `INSERT ... FORMAT ...` statement with `body` as its data, with
    /// the given settings as URL parameters.
    pub async fn insert(
        &self,
        statement: &str,
        body: Vec<u8>,
        settings: &[(&str, String)],
    ) -> Result<(), ChError> {
        let mut params: Vec<(&str, &str)> = vec![("query", statement)];
        params.extend(settings.iter().map(|(k, v)| (*k, v.as_str())));
        let mut req = self.http.post(&self.endpoint).query(&params);
        req = match self.compression {
            Compression::None => req.body(body),
            Compression::Gzip => req
                .header("content-encoding", "gzip")
                .body(gzip(&body).map_err(ChError::Compress)?),
        };
        self.send(req).await.map(|_| ())
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<String, ChError> {
        let req = req.basic_auth(&self.user, self.password.as_ref());
        let transport = |source| ChError::Transport {
            server: self.server.clone(),
            source,
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let text = resp.text().await.map_err(transport)?;
        // ClickHouse may fail after it began streaming a 200 answer; it then
        // appends the exception to the body.
        if status.is_success() && !text.contains("DB::Exception") {
            return Ok(text);
        }
        Err(server_error(&self.server, status.as_u16(), &text))
    }
}

/// Parses ClickHouse's `Code: N, e.displayText() = DB::Exception: ...` and
/// keeps the message up to where it may start quoting data.
fn server_error(server: &str, status: u16, text: &str) -> ChError {
    let code = text.find("Code: ").and_then(|i| {
        let rest = &text[i + 6..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    });
    let body = text
        .split_once("DB::Exception: ")
        .map(|(_, m)| m)
        .unwrap_or(text);
    let mut cut = body.len();
    for marker in [
        ", e.what()",
        "parsed text",
        "before:",
        "Row ",
        ": (at row",
        ": while",
        " (version ",
    ] {
        if let Some(i) = body.find(marker) {
            cut = cut.min(i);
        }
    }
    let mut message: String = body[..cut].trim().chars().take(400).collect();
    if message.is_empty() {
        message = format!("HTTP {status}");
    }
    ChError::Server {
        server: server.to_string(),
        status,
        code,
        message,
    }
}

/// `bytes` gzip-compressed at the fastest level: INSERT bodies are large and
/// repetitive, so even that shrinks them several times.
fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(bytes)?;
    enc.finish()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn classifies_and_trims_server_errors() {
        let e = server_error(
            "ch:8123",
            500,
            "Code: 252, e.displayText() = DB::Exception: Too many parts (300). Merges are processing significantly slower than inserts., e.what() = DB::Exception\n",
        );
        assert_eq!(e.code(), Some(252));
        assert_eq!(e.kind(), SinkErrorKind::Overloaded);
        assert!(
            e.to_string().starts_with(
                "clickhouse at ch:8123 overloaded (HTTP 500, code 252: Too many parts"
            ),
            "{e}"
        );
        let e = server_error(
            "ch:8123",
            500,
            "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected \\t before: secret\\n: (at row 1)\nRow 1:\nColumn 0, name: id, type: Int64, parsed text: \"secret\"",
        );
        assert_eq!(e.code(), Some(27));
        assert_eq!(e.kind(), SinkErrorKind::Rejected);
        assert!(!e.to_string().contains("secret"), "{e}");
        let e = server_error("ch:8123", 502, "Bad Gateway");
        assert_eq!(e.kind(), SinkErrorKind::Unavailable);
        let e = server_error(
            "ch:8123",
            500,
            "Code: 516. DB::Exception: default: Authentication failed",
        );
        assert_eq!(e.kind(), SinkErrorKind::Config);
    }
}

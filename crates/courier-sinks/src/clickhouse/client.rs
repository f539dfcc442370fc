//! Queries and inserts over ClickHouse's HTTP interface.

use std::time::Duration;

use super::config::{Compression, Settings};

/// A failed request, classified by whether retrying can help.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChError {
    /// No answer: connection refused or lost, timeout, TLS failure.
    #[error("no answer from clickhouse: {0}")]
    Transport(#[source] reqwest::Error),
    /// ClickHouse answered with an error.
    #[error("compressing an INSERT: {0}")]
    Compress(#[source] std::io::Error),
    #[error("clickhouse answered HTTP {status}: {message}")]
    Server {
        status: u16,
        /// ClickHouse's exception code (`Code: N`), when it sent one.
        code: Option<u32>,
        /// The exception text, cut before any part that may quote row data.
        message: String,
    },
}

/// ClickHouse exception codes that a later retry can get past.
const RETRIABLE_CODES: &[u32] = &[
    159, // TIMEOUT_EXCEEDED
    164, // READONLY (a replica catching up)
    202, // TOO_MANY_SIMULTANEOUS_QUERIES
    203, // NO_FREE_CONNECTION
    209, // SOCKET_TIMEOUT
    210, // NETWORK_ERROR
    241, // MEMORY_LIMIT_EXCEEDED
    242, // TABLE_IS_READ_ONLY
    252, // TOO_MANY_PARTS
    285, // TOO_FEW_LIVE_REPLICAS
    319, // UNKNOWN_STATUS_OF_INSERT
    425, // SYSTEM_ERROR
    473, // DEADLOCK_AVOIDED
    999, // KEEPER_EXCEPTION
];

impl ChError {
    pub fn is_retriable(&self) -> bool {
        match self {
            ChError::Transport(_) => true,
            ChError::Compress(_) => false,
            ChError::Server { status, code, .. } => match code {
                Some(c) => RETRIABLE_CODES.contains(c),
                // Not ClickHouse's own answer: a proxy or a restarting server.
                None => *status >= 500 || *status == 429,
            },
        }
    }

    /// ClickHouse's exception code, if any.
    #[cfg(test)]
    pub fn code(&self) -> Option<u32> {
        match self {
            ChError::Server { code, .. } => *code,
            ChError::Transport(_) | ChError::Compress(_) => None,
        }
    }
}

/// A connection pool to one ClickHouse server.
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    endpoint: String,
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

    /// Runs `INSERT ... FORMAT TabSeparated` with `body` as its data, with
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
        let resp = req.send().await.map_err(ChError::Transport)?;
        let status = resp.status();
        let text = resp.text().await.map_err(ChError::Transport)?;
        // ClickHouse may fail after it began streaming a 200 answer; it then
        // appends the exception to the body.
        if status.is_success() && !text.contains("DB::Exception") {
            return Ok(text);
        }
        Err(server_error(status.as_u16(), &text))
    }
}

/// Parses ClickHouse's `Code: N, e.displayText() = DB::Exception: ...` and
/// keeps the message up to where it may start quoting data.
fn server_error(status: u16, text: &str) -> ChError {
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
            500,
            "Code: 252, e.displayText() = DB::Exception: Too many parts (300). Merges are processing significantly slower than inserts., e.what() = DB::Exception\n",
        );
        assert_eq!(e.code(), Some(252));
        assert!(e.is_retriable());
        let e = server_error(
            500,
            "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected \\t before: secret\\n: (at row 1)\nRow 1:\nColumn 0, name: id, type: Int64, parsed text: \"secret\"",
        );
        assert_eq!(e.code(), Some(27));
        assert!(!e.is_retriable());
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(server_error(502, "Bad Gateway").is_retriable());
    }
}

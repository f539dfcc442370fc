//! The one error type of Courier's PostgreSQL connection layer.

use std::fmt;
use std::io;
use std::time::Duration;

use super::target::{HostAttempt, HostRejection, TargetSessionAttrs};

/// Anything that can go wrong talking to PostgreSQL: configuration, network,
/// TLS, authentication, errors the server reports, and broken protocol.
///
/// [`PgError::is_retriable`] tells a caller whether reconnecting later can
/// help; [`PgError::code`] exposes the SQLSTATE of server errors so callers
/// can match e.g. `42710` (duplicate_object) or `55006` (object_in_use).
/// No variant ever carries a password.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// A connection setting is missing or malformed.
    #[error("invalid PostgreSQL connection setting `{key}`: {reason}")]
    Config {
        /// The setting at fault (`url`, `sslmode`, `port`, ...).
        key: String,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// The TCP connection could not be made or broke while in use.
    #[error("connection to PostgreSQL at {addr} failed: {source}")]
    Io {
        /// `host:port` of the server.
        addr: String,
        /// The underlying network error.
        #[source]
        source: io::Error,
    },

    /// Connecting (TCP, TLS and authentication together) took too long.
    #[error("connecting to PostgreSQL at {addr} timed out after {after:?}")]
    Timeout {
        /// `host:port` of the server.
        addr: String,
        /// The configured connect timeout.
        after: Duration,
    },

    /// TLS could not be set up: the server refused it, the certificate did
    /// not verify, or the root certificates could not be loaded.
    #[error("TLS with PostgreSQL at {addr} failed: {reason}")]
    Tls {
        /// `host:port` of the server.
        addr: String,
        /// What failed, in words.
        reason: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The server rejected the credentials (or has no pg_hba.conf entry).
    #[error(
        "authentication as user {user:?} failed ({method}): {message}; \
         check the password in the connection URL and the pg_hba.conf entry \
         for this user, database and client address"
    )]
    Auth {
        /// The role Courier tried to log in as.
        user: String,
        /// The authentication method the server asked for.
        method: String,
        /// The server's (or Courier's) explanation; never the password.
        message: String,
    },

    /// The server reported an error (an `ErrorResponse`).
    #[error("{0}")]
    Server(Box<ServerError>),

    /// The server sent something the replication protocol does not allow.
    #[error("unexpected reply from PostgreSQL: {0}")]
    Protocol(String),

    /// An error from a regular (tokio-postgres) connection.
    #[error("PostgreSQL query failed: {0}")]
    Client(#[from] tokio_postgres::Error),

    /// None of the connection's hosts could be used: each refused the
    /// connection or is not the kind of server `target_session_attrs` asks for.
    #[error(
        "no PostgreSQL host fits target_session_attrs={target}; tried {}",
        attempts_text(.attempts)
    )]
    NoHostFits {
        /// What the connection asked for.
        target: TargetSessionAttrs,
        /// Every host tried, in order, and why it was passed over.
        attempts: Vec<HostAttempt>,
    },
}

fn attempts_text(attempts: &[HostAttempt]) -> String {
    let text: Vec<String> = attempts.iter().map(ToString::to_string).collect();
    text.join("; ")
}

/// The fields of a PostgreSQL `ErrorResponse` that Courier keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// `ERROR`, `FATAL` or `PANIC`.
    pub severity: String,
    /// The five-character SQLSTATE, e.g. `42710`.
    pub code: String,
    /// The primary message.
    pub message: String,
    /// The optional detail line.
    pub detail: Option<String>,
    /// The optional hint line.
    pub hint: Option<String>,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PostgreSQL {} {}: {}",
            self.severity, self.code, self.message
        )?;
        if let Some(detail) = &self.detail {
            write!(f, " (detail: {detail})")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// SQLSTATEs after which reconnecting later can succeed: the server is
/// shutting down, restarting, starting up, or out of connection slots.
fn is_retriable_sqlstate(code: &str) -> bool {
    matches!(code, "57P01" | "57P02" | "57P03" | "53300" | "58030") || code.starts_with("08")
}

impl PgError {
    /// True when the same operation may succeed after reconnecting: network
    /// errors, timeouts, a closed connection, the server shutting down or
    /// starting up, and hosts of which none fits yet (a standby may be
    /// promoted). Authentication, configuration, TLS verification,
    /// protocol and ordinary SQL errors are not retriable.
    pub fn is_retriable(&self) -> bool {
        match self {
            PgError::Io { .. } | PgError::Timeout { .. } => true,
            PgError::Server(e) => is_retriable_sqlstate(&e.code),
            PgError::Client(e) => {
                if e.is_closed() {
                    return true;
                }
                if let Some(code) = e.code() {
                    return is_retriable_sqlstate(code.code());
                }
                std::error::Error::source(e).is_some_and(|s| s.is::<io::Error>())
            }
            PgError::NoHostFits { attempts, .. } => attempts.iter().any(HostAttempt::is_retriable),
            PgError::Config { .. }
            | PgError::Tls { .. }
            | PgError::Auth { .. }
            | PgError::Protocol(_) => false,
        }
    }

    /// True when none of the hosts fits but one of them is a standby: a
    /// failover may be under way, and the standby may be promoted any moment.
    pub fn awaits_promotion(&self) -> bool {
        match self {
            PgError::NoHostFits { attempts, .. } => attempts
                .iter()
                .any(|a| matches!(a.rejection, HostRejection::Unfit(role) if role.in_recovery)),
            _ => false,
        }
    }

    /// The SQLSTATE the server reported, if this is a server error.
    pub fn code(&self) -> Option<&str> {
        match self {
            PgError::Server(e) => Some(&e.code),
            PgError::Client(e) => e.code().map(|c| c.code()),
            _ => None,
        }
    }

    /// The server's error fields, if this is an error the server reported
    /// on a replication connection.
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            PgError::Server(e) => Some(e),
            _ => None,
        }
    }

    pub(crate) fn config(key: &str, reason: impl Into<String>) -> PgError {
        PgError::Config {
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn protocol(what: impl Into<String>) -> PgError {
        PgError::Protocol(what.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str) -> PgError {
        PgError::Server(Box::new(ServerError {
            severity: "FATAL".into(),
            code: code.into(),
            message: "m".into(),
            detail: None,
            hint: Some("h".into()),
        }))
    }

    #[test]
    fn shutdown_and_network_errors_are_retriable() {
        assert!(server("57P01").is_retriable());
        assert!(server("57P03").is_retriable());
        assert!(server("08006").is_retriable());
        assert!(!server("42710").is_retriable());
        assert_eq!(server("42704").code(), Some("42704"));
        let io = PgError::Io {
            addr: "h:1".into(),
            source: io::Error::from(io::ErrorKind::ConnectionReset),
        };
        assert!(io.is_retriable());
        assert!(!PgError::config("sslmode", "x").is_retriable());
    }

    #[test]
    fn server_error_display_keeps_code_and_hint() {
        let text = server("55006").to_string();
        assert!(text.contains("55006") && text.contains("hint: h"), "{text}");
    }
}

//! The startup handshake: `StartupMessage`, authentication (cleartext,
//! md5, SCRAM-SHA-256) and the server's parameters, up to `ReadyForQuery`.

use std::collections::HashMap;

use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio_postgres::fallible_iterator::FallibleIterator;

use super::wire::{error_fields, Backend, Wire};
use super::{PgConfig, PgError};

/// What the server told us during startup.
pub(crate) struct Session {
    /// Process id of the server backend serving this connection.
    pub(crate) backend_pid: i32,
    /// `ParameterStatus` values (server_version, TimeZone, ...).
    pub(crate) parameters: HashMap<String, String>,
}

const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// Sends the startup message with `params` (user and database are added
/// from `cfg`), authenticates, and waits for `ReadyForQuery`.
pub(crate) async fn startup(
    wire: &mut Wire,
    cfg: &PgConfig,
    params: &[(&str, &str)],
) -> Result<Session, PgError> {
    let mut all = vec![
        ("user", cfg.user.as_str()),
        ("database", cfg.dbname.as_str()),
    ];
    all.extend_from_slice(params);
    frontend::startup_message(all.iter().copied(), wire.wbuf())
        .map_err(|e| PgError::config("url", format!("invalid startup parameter: {e}")))?;
    wire.flush().await?;

    let mut method = "none";
    let mut session = Session {
        backend_pid: 0,
        parameters: HashMap::new(),
    };
    let auth_error = |method: &str, message: String| PgError::Auth {
        user: cfg.user.clone(),
        method: method.to_string(),
        message,
    };
    loop {
        let Backend::Message(message) = wire.read_message().await? else {
            return Err(PgError::protocol("CopyBothResponse during startup"));
        };
        match message {
            Message::AuthenticationOk => {}
            Message::AuthenticationCleartextPassword => {
                method = "password";
                let password = password(cfg, method)?;
                frontend::password_message(password, wire.wbuf())
                    .map_err(|e| auth_error(method, e.to_string()))?;
                wire.flush().await?;
            }
            Message::AuthenticationMd5Password(body) => {
                method = "md5";
                let password = password(cfg, method)?;
                let hash = md5_hash(cfg.user.as_bytes(), password, body.salt());
                frontend::password_message(hash.as_bytes(), wire.wbuf())
                    .map_err(|e| auth_error(method, e.to_string()))?;
                wire.flush().await?;
            }
            Message::AuthenticationSasl(body) => {
                method = SCRAM_SHA_256;
                let mut mechanisms = body.mechanisms();
                let mut offered = Vec::new();
                while let Ok(Some(mechanism)) = mechanisms.next() {
                    offered.push(mechanism.to_string());
                }
                if !offered.iter().any(|m| m == SCRAM_SHA_256) {
                    return Err(auth_error(
                        "SASL",
                        format!(
                            "the server offers only {offered:?}, Courier supports SCRAM-SHA-256"
                        ),
                    ));
                }
                scram(wire, cfg).await?;
            }
            Message::AuthenticationGss
            | Message::AuthenticationKerberosV5
            | Message::AuthenticationScmCredential
            | Message::AuthenticationSspi
            | Message::AuthenticationGssContinue(_) => {
                return Err(auth_error(
                    "GSSAPI/SSPI/Kerberos",
                    "this method is not supported; use scram-sha-256 or md5 in pg_hba.conf".into(),
                ));
            }
            Message::ParameterStatus(body) => {
                if let (Ok(name), Ok(value)) = (body.name(), body.value()) {
                    session
                        .parameters
                        .insert(name.to_string(), value.to_string());
                }
            }
            Message::BackendKeyData(body) => session.backend_pid = body.process_id(),
            Message::NoticeResponse(_) => {}
            Message::ReadyForQuery(_) => return Ok(session),
            Message::ErrorResponse(body) => {
                let error = error_fields(body.fields());
                // Class 28: invalid authorization (bad password, no pg_hba entry).
                if error.code.starts_with("28") {
                    return Err(auth_error(method, error.message));
                }
                return Err(PgError::Server(Box::new(error)));
            }
            _ => return Err(PgError::protocol("unexpected message during startup")),
        }
    }
}

fn password<'a>(cfg: &'a PgConfig, method: &str) -> Result<&'a [u8], PgError> {
    cfg.password
        .as_ref()
        .map(|p| p.expose().as_bytes())
        .ok_or_else(|| PgError::Auth {
            user: cfg.user.clone(),
            method: method.to_string(),
            message: "the server asks for a password but the connection settings have none".into(),
        })
}

/// SCRAM-SHA-256 without channel binding (the server may offer `-PLUS`;
/// declining it is allowed and still authenticates both sides).
async fn scram(wire: &mut Wire, cfg: &PgConfig) -> Result<(), PgError> {
    let fail = |message: String| PgError::Auth {
        user: cfg.user.clone(),
        method: SCRAM_SHA_256.to_string(),
        message,
    };
    let mut scram = sasl::ScramSha256::new(
        password(cfg, SCRAM_SHA_256)?,
        sasl::ChannelBinding::unsupported(),
    );
    frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), wire.wbuf())
        .map_err(|e| fail(e.to_string()))?;
    wire.flush().await?;

    let server_first = match read_auth(wire, cfg).await? {
        Message::AuthenticationSaslContinue(body) => body,
        _ => return Err(PgError::protocol("expected AuthenticationSASLContinue")),
    };
    scram
        .update(server_first.data())
        .map_err(|e| fail(format!("invalid server challenge: {e}")))?;
    frontend::sasl_response(scram.message(), wire.wbuf()).map_err(|e| fail(e.to_string()))?;
    wire.flush().await?;

    let server_final = match read_auth(wire, cfg).await? {
        Message::AuthenticationSaslFinal(body) => body,
        _ => return Err(PgError::protocol("expected AuthenticationSASLFinal")),
    };
    scram
        .finish(server_final.data())
        .map_err(|e| fail(format!("the server's proof is invalid: {e}")))
}

/// The next authentication message; an `ErrorResponse` becomes an auth error.
async fn read_auth(wire: &mut Wire, cfg: &PgConfig) -> Result<Message, PgError> {
    match wire.read_message().await? {
        Backend::Message(Message::ErrorResponse(body)) => {
            let error = error_fields(body.fields());
            if error.code.starts_with("28") {
                Err(PgError::Auth {
                    user: cfg.user.clone(),
                    method: SCRAM_SHA_256.to_string(),
                    message: error.message,
                })
            } else {
                Err(PgError::Server(Box::new(error)))
            }
        }
        Backend::Message(message) => Ok(message),
        Backend::CopyBothResponse => {
            Err(PgError::protocol("CopyBothResponse during authentication"))
        }
    }
}

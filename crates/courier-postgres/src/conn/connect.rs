//! Opening connections: regular ones through tokio-postgres, and the
//! hand-driven protocol connections the replication client builds on.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::SslMode as ClientSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::startup::{startup, Session};
use super::tls::client_config;
use super::transport;
use super::wire::Wire;
use super::{PgConfig, PgError, SslMode};

/// Session settings every Courier connection runs with, so that values
/// render the same way everywhere (pgoutput renders text with the
/// walsender's settings; snapshots read with the regular connection's).
pub const SESSION_OPTIONS: &str =
    "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=iso_8601 -c extra_float_digits=3";

impl PgConfig {
    /// A regular (non-replication) tokio-postgres client, with TLS per
    /// `sslmode` and its connection task spawned on the current runtime.
    /// The session runs with `TimeZone=UTC`, `DateStyle=ISO`,
    /// `IntervalStyle=iso_8601` and `extra_float_digits=3`.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, PgError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name(&self.application_name)
            .options(SESSION_OPTIONS)
            .connect_timeout(self.connect_timeout)
            .ssl_mode(match self.sslmode {
                SslMode::Disable => ClientSslMode::Disable,
                SslMode::Prefer => ClientSslMode::Prefer,
                SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                    ClientSslMode::Require
                }
            });
        if let Some(password) = &self.password {
            config.password(password.expose());
        }
        let connecting = async {
            Ok::<_, PgError>(match client_config(self)? {
                None => {
                    let (client, connection) = config
                        .connect(tokio_postgres::NoTls)
                        .await
                        .map_err(|e| self.client_connect_error(e))?;
                    spawn_connection(connection, self.addr());
                    client
                }
                Some(tls) => {
                    let (client, connection) = config
                        .connect(MakeRustlsConnect::new(tls))
                        .await
                        .map_err(|e| self.client_connect_error(e))?;
                    spawn_connection(connection, self.addr());
                    client
                }
            })
        };
        // tokio-postgres bounds only the TCP connect; bound TLS and login too.
        let client = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| PgError::Timeout {
                addr: self.addr(),
                after: self.connect_timeout,
            })??;
        Ok(client)
    }

    /// Makes authentication failures of tokio-postgres read like ours.
    fn client_connect_error(&self, error: tokio_postgres::Error) -> PgError {
        match error.as_db_error() {
            Some(db) if db.code().code().starts_with("28") => PgError::Auth {
                user: self.user.clone(),
                method: "password".to_string(),
                message: db.message().to_string(),
            },
            _ => PgError::Client(error),
        }
    }
}

/// Drives a tokio-postgres connection in the background until it closes.
fn spawn_connection<S, T>(connection: tokio_postgres::Connection<S, T>, addr: String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%addr, %error, "PostgreSQL connection ended");
        }
    });
}

/// Opens a protocol connection with the given startup parameters (user and
/// database are added from `cfg`), authenticated and ready for queries,
/// within `cfg.connect_timeout`.
pub(crate) async fn open_wire(
    cfg: &PgConfig,
    params: &[(&str, &str)],
) -> Result<(Wire, Session), PgError> {
    let attempt = async {
        let stream = transport::open(cfg).await?;
        let mut wire = Wire::new(stream, cfg.addr());
        let session = startup(&mut wire, cfg, params).await?;
        Ok((wire, session))
    };
    match tokio::time::timeout(cfg.connect_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(PgError::Timeout {
            addr: cfg.addr(),
            after: cfg.connect_timeout,
        }),
    }
}

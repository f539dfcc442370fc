//! Opening connections: regular ones through tokio-postgres, and the
//! hand-driven protocol connections the replication client builds on.
//! Both try the configured hosts in order ([`connect_first`]).

use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::SslMode as ClientSslMode;
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::startup::{startup, Session};
use super::target::{connect_first, ServerRole};
use super::tls::client_config;
use super::transport;
use super::wire::Wire;
use super::{HostAddr, PgConfig, PgError, SslMode};

/// Session settings every Courier connection runs with, so that values
/// render the same way everywhere (pgoutput renders text with the
/// walsender's settings; snapshots read with the regular connection's).
pub const SESSION_OPTIONS: &str =
    "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=iso_8601 -c extra_float_digits=3";

impl PgConfig {
    /// A regular (non-replication) tokio-postgres client, with TLS per
    /// `sslmode` and its connection task spawned on the current runtime,
    /// to the first host that fits `target_session_attrs`.
    /// The session runs with `TimeZone=UTC`, `DateStyle=ISO`,
    /// `IntervalStyle=iso_8601` and `extra_float_digits=3`.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, PgError> {
        connect_first(self, |host, wants_role| async move {
            let client = self.connect_host(host).await?;
            let role = match wants_role {
                true => Some(client_role(&client).await?),
                false => None,
            };
            Ok((client, role))
        })
        .await
    }

    /// A regular client to `host`.
    async fn connect_host(&self, host: &HostAddr) -> Result<tokio_postgres::Client, PgError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&host.host)
            .port(host.port)
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
                        .map_err(|e| self.client_connect_error(host, e))?;
                    spawn_connection(connection, host.to_string());
                    client
                }
                Some(tls) => {
                    let (client, connection) = config
                        .connect(MakeRustlsConnect::new(tls))
                        .await
                        .map_err(|e| self.client_connect_error(host, e))?;
                    spawn_connection(connection, host.to_string());
                    client
                }
            })
        };
        // tokio-postgres bounds only the TCP connect; bound TLS and login too.
        let client = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| PgError::Timeout {
                addr: host.to_string(),
                after: self.connect_timeout,
            })??;
        Ok(client)
    }

    /// Makes authentication and network failures of tokio-postgres read
    /// like the replication connection's (naming the host).
    fn client_connect_error(&self, host: &HostAddr, error: tokio_postgres::Error) -> PgError {
        if let Some(db) = error.as_db_error() {
            if db.code().code().starts_with("28") {
                return PgError::Auth {
                    user: self.user.clone(),
                    method: "password".to_string(),
                    message: db.message().to_string(),
                };
            }
        }
        let io = std::error::Error::source(&error).and_then(|s| s.downcast_ref::<io::Error>());
        match io {
            Some(io) => PgError::Io {
                addr: host.to_string(),
                source: io::Error::new(io.kind(), io.to_string()),
            },
            None => PgError::Client(error),
        }
    }
}

/// The role of the server a regular client is connected to.
async fn client_role(client: &tokio_postgres::Client) -> Result<ServerRole, PgError> {
    let messages = client.simple_query(ServerRole::QUERY).await?;
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => ServerRole::from_text(row.get(0), row.get(1)),
            _ => None,
        })
        .ok_or_else(|| PgError::protocol("the server's role could not be read"))
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

/// Opens a protocol connection to `host` with the given startup parameters
/// (user and database are added from `cfg`), authenticated and ready for
/// queries, within `cfg.connect_timeout`.
pub(crate) async fn open_wire(
    cfg: &PgConfig,
    host: &HostAddr,
    params: &[(&str, &str)],
) -> Result<(Wire, Session), PgError> {
    let attempt = async {
        let stream = transport::open(cfg, host).await?;
        let mut wire = Wire::new(stream, host.to_string());
        let session = startup(&mut wire, cfg, params).await?;
        Ok((wire, session))
    };
    match tokio::time::timeout(cfg.connect_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(PgError::Timeout {
            addr: host.to_string(),
            after: cfg.connect_timeout,
        }),
    }
}

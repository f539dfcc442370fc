//! A `replication=database` connection in command mode: identify the
//! system, create and drop slots, then switch to streaming.

use std::collections::HashMap;

use courier_core::Lsn;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio_postgres::fallible_iterator::FallibleIterator;

use super::command;
use super::stream::ReplicationStream;
use crate::conn::wire::{server_error, Backend, Wire};
use crate::conn::{connect_first, open_wire, PgConfig, PgError, ServerRole, SESSION_OPTIONS};

/// A logical replication connection to one database, before streaming.
///
/// It runs with the same session settings as [`PgConfig::connect`]
/// (UTC, ISO dates, ISO 8601 intervals, exact floats), because pgoutput
/// renders column values as text with the walsender's settings.
pub struct ReplicationClient {
    wire: Wire,
    backend_pid: i32,
    parameters: HashMap<String, String>,
}

impl std::fmt::Debug for ReplicationClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationClient")
            .field("backend_pid", &self.backend_pid)
            .finish_non_exhaustive()
    }
}

/// The answer to `IDENTIFY_SYSTEM`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemInfo {
    /// The cluster's unique system identifier (a decimal string).
    pub systemid: String,
    /// The current timeline.
    pub timeline: u32,
    /// The current WAL flush position.
    pub xlogpos: Lsn,
    /// The database this connection is bound to.
    pub dbname: Option<String>,
}

/// A newly created logical replication slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedSlot {
    /// The slot's name.
    pub slot_name: String,
    /// Every transaction committed after this LSN will be streamed from the
    /// slot; every one committed before it is in the exported snapshot.
    pub consistent_point: Lsn,
    /// The exported snapshot, when asked for one: pass it to
    /// `SET TRANSACTION SNAPSHOT '...'` in a `REPEATABLE READ` transaction.
    pub snapshot_name: Option<String>,
}

impl ReplicationClient {
    /// Connects with `replication=database` to `cfg`'s database on the
    /// first host that fits `target_session_attrs`, and authenticates.
    pub async fn connect(cfg: &PgConfig) -> Result<ReplicationClient, PgError> {
        let params = [
            ("replication", "database"),
            ("application_name", cfg.application_name.as_str()),
            ("client_encoding", "UTF8"),
            ("options", SESSION_OPTIONS),
        ];
        let params = &params;
        connect_first(cfg, |host, wants_role| async move {
            let (wire, session) = open_wire(cfg, host, params).await?;
            let mut client = ReplicationClient {
                wire,
                backend_pid: session.backend_pid,
                parameters: session.parameters,
            };
            let role = match wants_role {
                true => Some(client.server_role().await?),
                false => None,
            };
            Ok((client, role))
        })
        .await
    }

    /// Whether the server is a standby, and whether its sessions may write.
    pub async fn server_role(&mut self) -> Result<ServerRole, PgError> {
        let rows = self.simple_query(ServerRole::QUERY).await?;
        let row = single_row(&rows, "the server role query", 2)?;
        ServerRole::from_text(row[0].as_deref(), row[1].as_deref())
            .ok_or_else(|| PgError::protocol("the server's role could not be read"))
    }

    /// Process id of the walsender serving this connection (as in
    /// `pg_stat_replication.pid`).
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// A server parameter reported at startup, e.g. `server_version`.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// Runs `IDENTIFY_SYSTEM`.
    pub async fn identify_system(&mut self) -> Result<SystemInfo, PgError> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = single_row(&rows, "IDENTIFY_SYSTEM", 4)?;
        let field = |i: usize, name: &str| {
            row[i]
                .clone()
                .ok_or_else(|| PgError::protocol(format!("IDENTIFY_SYSTEM returned no {name}")))
        };
        let timeline = field(1, "timeline")?;
        let xlogpos = field(2, "xlogpos")?;
        Ok(SystemInfo {
            systemid: field(0, "systemid")?,
            timeline: timeline
                .parse()
                .map_err(|_| PgError::protocol(format!("IDENTIFY_SYSTEM timeline {timeline:?}")))?,
            xlogpos: parse_lsn(&xlogpos)?,
            dbname: row[3].clone(),
        })
    }

    /// Creates a logical slot for pgoutput, `TEMPORARY` (dropped when this
    /// connection closes) or permanent, optionally exporting a snapshot.
    ///
    /// The exported snapshot stays valid only until the next command on this
    /// connection, or until it closes: import it (`SET TRANSACTION SNAPSHOT`)
    /// in every reading transaction before using this client again or
    /// starting replication with it.
    pub async fn create_logical_slot(
        &mut self,
        name: &str,
        temporary: bool,
        export_snapshot: bool,
    ) -> Result<CreatedSlot, PgError> {
        command::check_slot_name(name)?;
        let sql = command::create_logical_slot(name, temporary, export_snapshot);
        self.create_slot(name, &sql).await
    }

    /// Creates a permanent pgoutput slot that a standby with
    /// `sync_replication_slots` keeps in step, so that it survives a
    /// failover (PostgreSQL 17+); the snapshot as for
    /// [`create_logical_slot`](Self::create_logical_slot).
    pub async fn create_failover_slot(
        &mut self,
        name: &str,
        export_snapshot: bool,
    ) -> Result<CreatedSlot, PgError> {
        command::check_slot_name(name)?;
        let sql = command::create_failover_slot(name, export_snapshot);
        self.create_slot(name, &sql).await
    }

    /// Makes an existing slot a failover slot (PostgreSQL 17+).
    pub async fn make_failover_slot(&mut self, name: &str) -> Result<(), PgError> {
        command::check_slot_name(name)?;
        self.simple_query(&command::make_failover_slot(name))
            .await
            .map(|_| ())
    }

    async fn create_slot(&mut self, name: &str, sql: &str) -> Result<CreatedSlot, PgError> {
        let rows = self.simple_query(sql).await?;
        let row = single_row(&rows, "CREATE_REPLICATION_SLOT", 3)?;
        let consistent_point = row[1].as_deref().ok_or_else(|| {
            PgError::protocol("CREATE_REPLICATION_SLOT returned no consistent_point")
        })?;
        Ok(CreatedSlot {
            slot_name: row[0].clone().unwrap_or_else(|| name.to_string()),
            consistent_point: parse_lsn(consistent_point)?,
            snapshot_name: row[2].clone(),
        })
    }

    /// Runs one command with the simple query protocol (e.g.
    /// `DROP_REPLICATION_SLOT x WAIT`, `SHOW wal_level`) and returns the rows
    /// of all its results as text; `None` is SQL NULL.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
        self.send_query(sql).await?;
        let mut rows = Vec::new();
        let mut failure = None;
        loop {
            match self.wire.read_message().await? {
                Backend::Message(Message::DataRow(body)) => rows.push(data_row(&body)?),
                Backend::Message(Message::ErrorResponse(body)) => {
                    failure = Some(server_error(body.fields()))
                }
                Backend::Message(Message::ReadyForQuery(_)) => break,
                Backend::Message(
                    Message::RowDescription(_)
                    | Message::CommandComplete(_)
                    | Message::EmptyQueryResponse
                    | Message::NoticeResponse(_)
                    | Message::ParameterStatus(_),
                ) => {}
                _ => {
                    return Err(PgError::protocol(format!(
                        "{sql:?} started a COPY; use start_logical_replication to stream"
                    )))
                }
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(rows),
        }
    }

    /// Starts streaming from `slot` at `start` (`Lsn::ZERO` means "from the
    /// slot's confirmed position") with pgoutput `options`, e.g.
    /// `[("proto_version", "1"), ("publication_names", "courier")]`.
    /// Names and values are quoted here; pass them unquoted.
    pub async fn start_logical_replication(
        mut self,
        slot: &str,
        start: Lsn,
        options: &[(&str, &str)],
    ) -> Result<ReplicationStream, PgError> {
        command::check_slot_name(slot)?;
        let sql = command::start_logical_replication(slot, start, options);
        self.send_query(&sql).await?;
        let mut failure = None;
        loop {
            match self.wire.read_message().await? {
                Backend::CopyBothResponse => {
                    return Ok(ReplicationStream::new(self.wire, self.backend_pid))
                }
                Backend::Message(Message::ErrorResponse(body)) => {
                    failure = Some(server_error(body.fields()))
                }
                Backend::Message(Message::ReadyForQuery(_)) => {
                    return Err(failure.unwrap_or_else(|| {
                        PgError::protocol("START_REPLICATION ended without streaming")
                    }))
                }
                Backend::Message(Message::NoticeResponse(_) | Message::ParameterStatus(_)) => {}
                _ => return Err(PgError::protocol("unexpected reply to START_REPLICATION")),
            }
        }
    }

    /// Closes the connection (dropping any temporary slot it created).
    pub async fn close(self) {
        self.wire.close().await;
    }

    async fn send_query(&mut self, sql: &str) -> Result<(), PgError> {
        frontend::query(sql, self.wire.wbuf())
            .map_err(|e| PgError::config("query", format!("cannot send {sql:?}: {e}")))?;
        self.wire.flush().await
    }
}

fn data_row(
    body: &postgres_protocol::message::backend::DataRowBody,
) -> Result<Vec<Option<String>>, PgError> {
    let buffer = body.buffer();
    let mut ranges = body.ranges();
    let mut row = Vec::new();
    loop {
        match ranges.next() {
            Ok(Some(Some(range))) => {
                let bytes = buffer
                    .get(range)
                    .ok_or_else(|| PgError::protocol("DataRow value out of bounds"))?;
                let text = std::str::from_utf8(bytes)
                    .map_err(|_| PgError::protocol("DataRow value is not UTF-8"))?;
                row.push(Some(text.to_string()));
            }
            Ok(Some(None)) => row.push(None),
            Ok(None) => return Ok(row),
            Err(e) => return Err(PgError::protocol(format!("malformed DataRow: {e}"))),
        }
    }
}

fn single_row<'a>(
    rows: &'a [Vec<Option<String>>],
    command: &str,
    min_columns: usize,
) -> Result<&'a [Option<String>], PgError> {
    match rows {
        [row] if row.len() >= min_columns => Ok(row),
        _ => Err(PgError::protocol(format!(
            "{command} returned {} rows; expected one with {min_columns} columns",
            rows.len()
        ))),
    }
}

fn parse_lsn(text: &str) -> Result<Lsn, PgError> {
    text.parse()
        .map_err(|e| PgError::protocol(format!("server sent {e}")))
}

//! The `clickhouse` sink: analytics tables that track PostgreSQL exactly,
//! written in large blocks.
//!
//! # Building it
//!
//! ```ignore
//! let config: ClickHouseSinkConfig = toml::Value::Table(settings).try_into()?;
//! let sink = courier_sinks::clickhouse::build("analytics", config).await?;
//! ```
//!
//! ```toml
//! [sinks.analytics]
//! type = "clickhouse"
//! url = "http://127.0.0.1:8123"     # the HTTP interface; https:// for TLS
//! database = "shop"                  # created if missing
//! # user = "default"; password = "${CLICKHOUSE_PASSWORD}"  (or in the URL)
//! # tables = ["public.*"]; table = "{table}"  (also {schema})
//! # max_rows = 100000; max_bytes = 16777216; max_delay = "200ms"; timeout = "60s"
//! # concurrency = 2                 # INSERTs in flight at once per table
//! # compression = "gzip"            # default: "none" to a loopback server
//! # tls_ca_file = "/etc/courier/clickhouse-ca.pem"
//! ```
//!
//! # Tables
//!
//! One table per source table, created by Courier: the source's columns
//! (types in [`types::ChType::of_column`], documented in the README) plus
//! `_version UInt64` (the commit LSN of the row's change), `_deleted UInt8`
//! and `_synced_at DateTime` (when ClickHouse received it). The engine is
//! `ReplacingMergeTree(_version, _deleted)` on servers that have it (23.2),
//! else `ReplacingMergeTree(_version)`, ordered by the key columns: of all
//! rows with one key, the one with the greatest `_version` (the last
//! inserted among equals) is the row. The view `<table>_current` shows that
//! row when it is not deleted (`FINAL`, `_deleted = 0`).
//!
//! # Writes
//!
//! Courier gathers consecutive batches for this sink until `max_rows`
//! changes are waiting or the first has waited `max_delay`. Per table, the
//! group keeps per key only the change that wins the version rule, so
//! ClickHouse never has to choose within a block; as each key is then in
//! one row only, the rows go out as `concurrency` INSERTs of about equal
//! size at once (more when they exceed `max_rows` or `max_bytes`). A delete inserts
//! the key with `_deleted = 1`. A TRUNCATE inserts a tombstone, at its
//! version, for every current row that is not newer, in order with the
//! stream; the tombstones keep older replayed writes out as deletes do. A
//! batch is applied once ClickHouse answered 200 for each INSERT; on servers
//! with `insert_deduplication_token` (22.2) a retried INSERT carries the same
//! token, so it is not stored twice.
//!
//! # Why RowBinary over plain HTTP
//!
//! The oldest server Courier supports, 18.16, has no
//! `RowBinaryWithNamesAndTypes`, `DateTime64` or query parameters, and the
//! `clickhouse` crate only talks to it with validation turned off. Plain
//! `FORMAT RowBinary` over HTTP works the same on every version: each value
//! in its column's binary form, the column list and types taken from the
//! table Courier created. Nothing is parsed from text on the server, so
//! every value arrives exact (18.16 parses some float texts a unit in the
//! last place off), and the body is smaller and cheaper to write than
//! text. Values are checked against their column type first, so ClickHouse
//! never guesses. Where the server has `async_insert` (21.11), INSERTs set
//! it to 0: a batch is applied when its rows are stored, not queued.
//!
//! # Swapping tables
//!
//! [`ClickHouseSink::exchange_tables`] swaps two tables atomically
//! (`EXCHANGE TABLES`), as a rebuild into a shadow table ends; it needs a
//! database of the `Atomic` engine (the default from 20.10), which
//! [`ClickHouseSink::can_exchange_tables`] tells.
//!
//! # Schema changes
//!
//! Each change carries its relation; when it differs from the one a table
//! was last aligned with, the table follows: a new column is added
//! (Nullable: rows written before hold NULL), a dropped column is kept and
//! made Nullable (NULL from then on), a widened type (int4 → int8, numeric
//! precision, a nullable column) is modified, and the view is recreated. A
//! change ClickHouse cannot follow without losing data is a fatal error
//! naming table, column, both types and the fix (rebuild the table).
//!
//! # Errors
//!
//! Errors say what happened: no answer is *unreachable* (connection refused
//! or reset, host name not resolved) or *timed out* (also
//! `TIMEOUT_EXCEEDED`); `TOO_MANY_PARTS`, `MEMORY_LIMIT_EXCEEDED` and
//! `TOO_MANY_SIMULTANEOUS_QUERIES` are *overloaded*; read-only replicas,
//! Keeper failures and a 5xx without a ClickHouse exception are
//! *unavailable*. All of these are retriable. Authentication and unknown
//! databases are configuration errors, a schema change the table cannot
//! follow is a schema error, and any other exception, like a value the
//! column's type cannot hold (checked before sending), rejects the data:
//! fatal, naming the server (`host:port`), the table, the column where
//! known, and the LSN — never the value.

mod client;
mod config;
mod encode;
mod inspect;
#[cfg(any(test, feature = "compliance"))]
pub mod readback;
mod schema;

#[cfg(test)]
mod tests;
pub mod types;
mod winners;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use courier_core::{
    Batch, Change, Grouping, Lsn, Op, Relation, Sink, SinkError, SinkErrorKind, TableId, Value,
};
use tokio::task::JoinSet;

pub use config::ClickHouseSinkConfig;
pub use inspect::{inspector, ClickHouseInspector, STAGING_SUFFIX};
pub use schema::{DELETED_COLUMN, SYNCED_AT_COLUMN, VERSION_COLUMN, VIEW_SUFFIX};

use client::{ChError, Client};
use config::{redact, Settings};
use encode::write_field;
use schema::{quote, sync_table, TableState};
use types::Features;
use winners::Winners;

use crate::BuildError;

/// Checks the configuration, asks the server its version and creates the
/// database.
///
/// Errors name the setting to fix, or the server (password hidden) that
/// could not be reached.
pub async fn build(name: &str, config: ClickHouseSinkConfig) -> Result<ClickHouseSink, BuildError> {
    let shown_url = redact(&config.url);
    let settings = config.validate().map_err(|message| BuildError::Config {
        sink: name.to_string(),
        message,
    })?;
    let client = Client::new(&settings).map_err(|message| BuildError::Config {
        sink: name.to_string(),
        message,
    })?;
    let connect_err = |what: &str, e: ChError| BuildError::Connect {
        sink: name.to_string(),
        kind: e.kind(),
        message: format!("{what} (url {shown_url}): {e}"),
        source: None,
    };
    let version = client
        .query("SELECT version()")
        .await
        .map_err(|e| connect_err("connect", e))?;
    let features = Features::of_version(&version);
    client
        .query(&format!(
            "CREATE DATABASE IF NOT EXISTS {}",
            quote(&settings.database)
        ))
        .await
        .map_err(|e| connect_err(&format!("create database {}", settings.database), e))?;
    let engine = client
        .query(&format!(
            "SELECT engine FROM system.databases WHERE name = {}",
            schema::literal(&settings.database)
        ))
        .await
        .map_err(|e| {
            connect_err(
                &format!("read the engine of database {}", settings.database),
                e,
            )
        })?
        .trim()
        .to_string();
    tracing::info!(
        sink = name,
        version = version.trim(),
        "clickhouse server version"
    );
    Ok(ClickHouseSink {
        settings,
        client,
        features,
        database_engine: engine,
        tables: HashMap::new(),
        names: HashMap::new(),
    })
}

/// Keeps one ClickHouse table per selected source table; see the module
/// documentation.
pub struct ClickHouseSink {
    settings: Settings,
    client: Client,
    features: Features,
    /// The engine of the sink's database (`Atomic`, `Ordinary`, ...).
    database_engine: String,
    tables: HashMap<TableId, TableState>,
    /// ClickHouse table name → the source table it belongs to.
    names: HashMap<String, TableId>,
}

impl ClickHouseSink {
    /// The server features this sink detected.
    pub fn features(&self) -> Features {
        self.features
    }

    /// Whether [`exchange_tables`](Self::exchange_tables) can work here:
    /// the sink's database has the `Atomic` engine.
    pub fn can_exchange_tables(&self) -> bool {
        self.database_engine == "Atomic"
    }

    /// Swaps the tables `a` and `b` of the sink's database in one atomic
    /// step (`EXCHANGE TABLES`): readers see either the old pair or the
    /// swapped one, never a missing table. Views that name a table (such as
    /// `<table>_current`) show the other table's rows from then on. The
    /// sink forgets what it knew of both tables, so its next write to
    /// either reads its columns again.
    ///
    /// A database of another engine than `Atomic` (18.16 has only
    /// `Ordinary`) is a configuration error saying so; a table that does
    /// not exist is rejected by the server.
    pub async fn exchange_tables(&mut self, a: &str, b: &str) -> Result<(), SinkError> {
        let db = &self.settings.database;
        if !self.can_exchange_tables() {
            return Err(SinkError::new(
                SinkErrorKind::Config,
                format!(
                    "clickhouse: cannot swap tables {a} and {b}: database {db} has the {} engine, and EXCHANGE TABLES needs Atomic (ClickHouse 20.10 or later creates databases Atomic by default; recreate {db} there)",
                    self.database_engine
                ),
            ));
        }
        let (qa, qb) = (
            format!("{}.{}", quote(db), quote(a)),
            format!("{}.{}", quote(db), quote(b)),
        );
        let swapped = self
            .client
            .query(&format!("EXCHANGE TABLES {qa} AND {qb}"))
            .await;
        // Forget both tables even on an error: the swap may have happened.
        for name in [a, b] {
            if let Some(id) = self.names.get(name) {
                self.tables.remove(id);
            }
        }
        swapped.map(|_| ()).map_err(|e| {
            let message = format!("clickhouse: exchange tables {qa} and {qb}: {e}");
            SinkError::new(e.kind(), message).with_source(e)
        })
    }
}

#[async_trait]
impl Sink for ClickHouseSink {
    async fn apply(&mut self, batch: &Batch) -> Result<(), SinkError> {
        self.apply_all(&[batch]).await
    }

    fn grouping(&self) -> Grouping {
        Grouping {
            max_changes: self.settings.max_rows,
            max_bytes: self.settings.max_bytes,
            max_delay: self.settings.max_delay,
        }
    }

    async fn apply_all(&mut self, batches: &[&Batch]) -> Result<(), SinkError> {
        // Tables are independent; within a table, stream order is kept.
        // Consecutive changes mostly share one relation: only a change of
        // another relation than the one before looks its table up.
        let mut order: Vec<&TableId> = Vec::new();
        let mut per_table: HashMap<&TableId, Vec<&Change>> = HashMap::new();
        let mut last: Option<(&Arc<Relation>, bool)> = None;
        for c in batches.iter().flat_map(|b| b.changes.iter()) {
            // An outbox event's source is never a row, whatever its table.
            if c.outbox().is_some() {
                continue;
            }
            let selected = match last {
                Some((rel, selected)) if Arc::ptr_eq(rel, c.relation()) => selected,
                _ => self.settings.selection.selects(c),
            };
            last = Some((c.relation(), selected));
            if !selected {
                continue;
            }
            per_table
                .entry(&c.relation().id)
                .or_insert_with(|| {
                    order.push(&c.relation().id);
                    Vec::new()
                })
                .push(c);
        }
        for t in order {
            self.apply_table(&per_table[t]).await?;
        }
        Ok(())
    }
}

impl ClickHouseSink {
    async fn apply_table(&mut self, changes: &[&Change]) -> Result<(), SinkError> {
        let mut run: Vec<&Change> = Vec::new();
        let mut aligned_to: Option<&Arc<Relation>> = None;
        for &c in changes {
            let aligned = aligned_to.is_some_and(|r| Arc::ptr_eq(r, c.relation()))
                || self.tables.get(&c.relation().id).is_some_and(|s| {
                    Arc::ptr_eq(&s.relation, c.relation()) || s.relation == *c.relation()
                });
            if !aligned {
                self.write_rows(&run).await?;
                run.clear();
                self.align(c.relation()).await?;
            }
            aligned_to = Some(c.relation());
            if c.op() == Op::Truncate {
                self.write_rows(&run).await?;
                run.clear();
                self.truncate(c).await?;
            } else {
                run.push(c);
            }
        }
        self.write_rows(&run).await
    }

    /// Creates or evolves the table for `rel`.
    async fn align(&mut self, rel: &Arc<Relation>) -> Result<(), SinkError> {
        let name = self.settings.table_name(&rel.id);
        if let Some(other) = self.names.get(&name).filter(|t| **t != rel.id) {
            return Err(SinkError::new(SinkErrorKind::Config, format!(
                "clickhouse: {} and {other} would both be written to table {name}; set the sink's table template to tell them apart, e.g. table = \"{{schema}}_{{table}}\"",
                rel.id
            ))
            .with_table(&rel.id));
        }
        let state = sync_table(
            &self.client,
            &self.features,
            &self.settings.database,
            &name,
            rel,
        )
        .await?;
        self.names.insert(name, rel.id.clone());
        self.tables.insert(rel.id.clone(), state);
        Ok(())
    }

    /// Inserts the winning change of each key among `run` (one relation).
    async fn write_rows(&self, run: &[&Change]) -> Result<(), SinkError> {
        let Some(first) = run.first() else {
            return Ok(());
        };
        let Some(state) = self.tables.get(&first.relation().id) else {
            return Ok(());
        };
        let rel = &state.relation;
        let keys: Vec<usize> = rel.key_indexes().collect();
        let fatal_at = |c: &Change, column: &str, reason: &str| {
            SinkError::new(
                SinkErrorKind::Rejected,
                format!(
                    "clickhouse: column {column} of {} ({}): {reason}",
                    rel.id, state.qualified
                ),
            )
            .with_table(&rel.id)
            .with_lsn(c.version())
        };

        // An update that changed the key moves the row: the old key gets a
        // deletion at the update's version, just before the update in stream
        // order (a later change to the old key in the same transaction wins).
        let moves: Vec<Option<Change>> = run.iter().map(|c| c.key_move()).collect();
        let expanded: Vec<&Change> = run
            .iter()
            .zip(&moves)
            .flat_map(|(c, m)| m.iter().chain(std::iter::once(*c)))
            .collect();
        let run = &expanded[..];

        // Per key, the change that wins: the greatest version, later in
        // stream order among equals. A snapshot's rows need no choosing:
        // each key is read once per snapshot.
        let winners: Vec<&Change> = if run.iter().all(|c| c.op() == Op::Read) {
            run.to_vec()
        } else {
            let mut winners = Winners::with_capacity(run.len());
            let mut key_buf = Vec::new();
            for &c in run {
                let Some(row) = c.key_row() else { continue };
                key_buf.clear();
                for &k in &keys {
                    // RowBinary fields delimit themselves: the bytes name one key.
                    write_field(&mut key_buf, &state.types[k], &row[k], &rel.columns[k].name)
                        .map_err(|e| fatal_at(c, &e.column, &e.reason))?;
                }
                winners.offer(&key_buf, c);
            }
            winners.into_changes()
        };

        // The winners name distinct keys, so they can go out as several
        // INSERTs at once without any order between them mattering: about
        // equal parts, `concurrency` in flight, each within the limits.
        let table = &first.relation().id;
        let in_flight = self.settings.concurrency;
        let per_insert = winners
            .len()
            .div_ceil(in_flight)
            .clamp(1, self.settings.max_rows);
        let mut inserts = JoinSet::new();
        let mut body = Vec::with_capacity(per_insert * 128);
        let mut rows = 0;
        for c in winners {
            let (row, deleted) = match (c.after(), c.op()) {
                (Some(r), Op::Insert | Op::Update | Op::Read) => (r, false),
                _ => match c.before() {
                    Some(r) => (r, true),
                    None => continue,
                },
            };
            for (i, (col, t)) in rel.columns.iter().zip(&state.types).enumerate() {
                let v = if deleted && !col.is_key {
                    &Value::Null
                } else {
                    row.get(i).unwrap_or(&Value::Null)
                };
                write_field(&mut body, t, v, &col.name)
                    .map_err(|e| fatal_at(c, &e.column, &e.reason))?;
            }
            body.extend_from_slice(&c.version().as_u64().to_le_bytes());
            body.push(u8::from(deleted));
            rows += 1;
            if rows >= per_insert || body.len() >= self.settings.max_bytes {
                if inserts.len() >= in_flight {
                    finish_one(&mut inserts).await?;
                }
                let full = std::mem::replace(&mut body, Vec::with_capacity(per_insert * 128));
                self.start_insert(&mut inserts, table, c.version(), full);
                rows = 0;
            }
        }
        if !body.is_empty() {
            self.start_insert(&mut inserts, table, first.version(), body);
        }
        while !inserts.is_empty() {
            finish_one(&mut inserts).await?;
        }
        Ok(())
    }

    /// Starts an INSERT of `body` into the table of `table`; `at` is the
    /// version its errors name.
    fn start_insert(
        &self,
        inserts: &mut JoinSet<Result<(), SinkError>>,
        table: &TableId,
        at: Lsn,
        body: Vec<u8>,
    ) {
        let Some(state) = self.tables.get(table) else {
            return;
        };
        let mut settings = Vec::new();
        if self.features.async_insert {
            // Never queued: applied means stored (and clickhouse-local,
            // which defaults to 1, runs no queue at all).
            settings.push(("async_insert", "0".to_string()));
        }
        if self.features.dedup_token {
            settings.push((
                "insert_deduplication_token",
                format!("courier-{:016x}-{}", fnv1a(&body), body.len()),
            ));
        }
        let client = self.client.clone();
        let (statement, qualified) = (state.insert.clone(), state.qualified.clone());
        let table = table.clone();
        inserts.spawn(async move {
            client
                .insert(&statement, body, &settings)
                .await
                .map_err(|e| insert_error(e, "insert into", &qualified, &table, at))
        });
    }

    /// Turns every current row at or below the truncate's version into a
    /// tombstone at that version (`_version <= v`: the rows the truncate
    /// wins over, per `courier_core::version::incoming_wins`).
    async fn truncate(&self, c: &Change) -> Result<(), SinkError> {
        let Some(state) = self.tables.get(&c.relation().id) else {
            return Ok(());
        };
        let keys: Vec<String> = state
            .relation
            .key_indexes()
            .map(|k| quote(&state.relation.columns[k].name))
            .collect();
        let v = c.version().as_u64();
        let sql = format!(
            "INSERT INTO {t} ({k}, {ver}, {del}) SELECT {k}, {v}, 1 FROM {t} FINAL WHERE {ver} <= {v} AND {del} = 0",
            t = state.qualified,
            k = keys.join(", "),
            ver = quote(VERSION_COLUMN),
            del = quote(DELETED_COLUMN),
        );
        self.client.query(&sql).await.map(|_| ()).map_err(|e| {
            insert_error(
                e,
                "truncate",
                &state.qualified,
                &c.relation().id,
                c.version(),
            )
        })
    }
}

/// Waits for one of the INSERTs in flight.
async fn finish_one(inserts: &mut JoinSet<Result<(), SinkError>>) -> Result<(), SinkError> {
    match inserts.join_next().await {
        None => Ok(()),
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(SinkError::new(
            SinkErrorKind::Unavailable,
            format!("clickhouse: an INSERT ended abnormally: {e}"),
        )),
    }
}

fn insert_error(e: ChError, what: &str, qualified: &str, table: &TableId, at: Lsn) -> SinkError {
    let message = format!("clickhouse: {what} {qualified}: {e}");
    SinkError::new(e.kind(), message)
        .with_table(table)
        .with_lsn(at)
        .with_source(e)
}

/// FNV-1a: a stable digest of an INSERT's rows, for its deduplication token.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

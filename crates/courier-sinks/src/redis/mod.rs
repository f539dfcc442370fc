//! The `redis` sink: a cache of rows that applications read instead of
//! PostgreSQL, kept right through crashes, replays and rebuilds.
//!
//! # Building it
//!
//! Parse the `[sinks.NAME]` table (without `type`) into [`RedisSinkConfig`]
//! with serde (unknown keys are rejected by name), then call [`build`]:
//!
//! ```ignore
//! let config: RedisSinkConfig = toml::Value::Table(settings).try_into()?;
//! let sink = courier_sinks::redis::build("cache", config).await?;
//! ```
//!
//! ```toml
//! [sinks.cache]
//! type = "redis"
//! url = "redis://:${REDIS_PASSWORD}@127.0.0.1:6379/0"  # rediss:// for TLS
//! tables = ["public.products"]      # default: every source table
//! key = "{schema}.{table}:{pk}"     # the default
//! mode = "upsert"                   # or "invalidate"
//! format = "json"                   # or "hash"
//! ttl = "1h"                        # rows expire (default: never)
//! tombstone_ttl = "24h"             # the default
//! # cluster = true; url = ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"]
//! # tls_ca_file = "/etc/courier/redis-ca.pem"; batch_size = 512; max_in_flight = 8
//! # timeout = "10s"
//! ```
//!
//! # Key layout
//!
//! Each row lives under one key, rendered from the `key` template: `{schema}`
//! and `{table}` with `\`, `.` and `:` escaped by a backslash, and `{pk}` the
//! key columns' values joined with `:` (each with `\` and `:` escaped;
//! strings as themselves, numbers and booleans as JSON, NULL as `\N`). So
//! product 42 is `public.products:42`, and different rows never share a key.
//!
//! In `upsert` mode the key is a hash:
//!
//! | field              | `format = "json"`          | `format = "hash"`                  |
//! |--------------------|----------------------------|------------------------------------|
//! | `row`              | the row as a JSON object   | —                                  |
//! | each column        | —                          | its JSON value, strings unquoted; NULL columns absent |
//! | `_courier_version` | the version (decimal)      | the version (decimal)              |
//!
//! Values follow Courier's type mapping (numeric as exact strings, bytea as
//! base64, timestamps in ISO 8601, json embedded). An application reads a
//! row with `HGET key row` (json) or `HGETALL key` / `HMGET key col...` (hash).
//!
//! # Versions
//!
//! `_courier_version` is the commit LSN of the row's last change, as the u64
//! the change envelope calls `source.lsn`. Every write runs one server-side
//! script (loaded once, called with `EVALSHA`, reloaded after a server
//! restart or `SCRIPT FLUSH`) that applies the change only if its version is
//! greater than or equal to the stored one, atomically per row (one call
//! carries up to 64 rows, each on its own key). So a replayed or late, older
//! change never overwrites newer data, and within a transaction the later
//! change to a row wins.
//!
//! # Tombstones
//!
//! A delete replaces the row by a tombstone: the hash `{_courier_version:
//! <lsn>, _courier_deleted: "1"}` with no `row` and no column fields, which
//! expires after `tombstone_ttl` (default 24 hours). `HGET key row` returns
//! nil for it, as for a missing key; with `format = "hash"` a reader treats a
//! hash holding `_courier_deleted` as absent. While the tombstone lives, a
//! replayed older write cannot bring the row back, so keep `tombstone_ttl`
//! longer than any replay (the slot's unacknowledged backlog, a rebuild).
//!
//! # TTL
//!
//! With `ttl`, every upsert sets the key to expire after `ttl`. An expired
//! row is gone, version included: the application refills from PostgreSQL
//! (cache-aside), and a replay older than the expiry can write the row again
//! with the data of its version, which later changes then overwrite.
//!
//! # Truncate
//!
//! A TRUNCATE scans the table's keys (`SCAN MATCH` on the template with
//! `*` for `{pk}`, never `KEYS`) and turns every row whose version is at or
//! below the truncate's into a tombstone at that version; newer rows stay.
//! Give each table its own key prefix, so that a scan only meets its rows.
//!
//! # `invalidate` mode
//!
//! Every change to a row `UNLINK`s its key (a truncate unlinks every key of
//! the table), for caches the application fills itself. Replays are
//! harmless: they delete again.
//!
//! # Cluster
//!
//! Everything a row needs is under one key, so every row's change is
//! single-key and runs unchanged on Redis Cluster (`cluster = true`, one or
//! more seed URLs); a script call carries only rows whose keys share a hash
//! slot. The client follows `MOVED`/`ASK` redirects and reloads the slot
//! map; the script is loaded on every master; truncates scan every master.
//!
//! # Applied, and errors
//!
//! A batch is applied when Redis acknowledged every command of it. Rows are
//! sent as script calls (or `UNLINK`s) of up to 64 rows, pipelined
//! (`batch_size` rows per pipeline, `max_in_flight` pipelines at once; on a
//! cluster, where a pipeline must stay within one slot, at most
//! `batch_size × max_in_flight` calls at once). A failed call of several
//! rows is sent again one row per call, so that the error names the row's
//! table and LSN.
//! Errors say what happened: a server that refuses or drops connections is
//! *unreachable*, one that does not answer in time *timed out*, `BUSY` (a
//! script running long) and `OOM` (`maxmemory` under `noeviction`) are
//! *overloaded*, and `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`, `LOADING` and
//! failovers *unavailable*: all retriable, so Courier retries the batch,
//! which the versions make harmless (an `OOM` passes once memory is freed,
//! e.g. as rows expire). Any other rejection (a key of the wrong type, a
//! script error) is fatal; a refused password is a configuration error.
//! Messages name the servers (`host:port`), the key template, the table and
//! the LSN — never row values or passwords.

mod client;
mod config;
mod encode;
mod inspect;
mod key;
#[cfg(any(test, feature = "compliance"))]
pub mod readback;
mod script;
mod slot;
#[cfg(test)]
mod tests;

use async_trait::async_trait;
use courier_core::{Batch, Change, Sink, SinkError, SinkErrorKind};

pub use config::{Format, Mode, RedisSinkConfig};
pub use inspect::{inspector, RedisInspector};
pub use key::{KeyTemplate, KeyTemplateError};
pub use script::{DELETED_FIELD, ROW_FIELD, VERSION_FIELD};

use client::{Client, Failure};
use config::Settings;
use encode::{Action, Encoder, KeyCommand};

use crate::failure;
use crate::selection::Segment;
use crate::BuildError;

/// Checks the configuration, connects to Redis (every node, for a cluster)
/// and loads the write script.
///
/// Errors name the setting to fix, or the server (password hidden) that
/// could not be reached.
pub async fn build(name: &str, config: RedisSinkConfig) -> Result<RedisSink, BuildError> {
    let settings = config.validate().map_err(|message| BuildError::Config {
        sink: name.to_string(),
        message,
    })?;
    let servers = settings
        .urls
        .iter()
        .map(|u| failure::address(u))
        .collect::<Vec<_>>()
        .join(", ");
    let client = Client::connect(&settings).await.map_err(|e| {
        let f = Failure::from(&e);
        BuildError::Connect {
            sink: name.to_string(),
            kind: f.kind,
            message: format!("connect: redis at {servers} {} ({})", f.kind, f.message),
            source: None,
        }
    })?;
    Ok(RedisSink {
        settings,
        client,
        servers,
    })
}

/// Keeps rows of the selected tables in Redis; see the module documentation.
pub struct RedisSink {
    settings: Settings,
    client: Client,
    /// `host:port` of the configured servers, for messages.
    servers: String,
}

#[async_trait]
impl Sink for RedisSink {
    async fn apply(&mut self, batch: &Batch) -> Result<(), SinkError> {
        // Runs of row changes are applied concurrently (one winner per key);
        // a truncate is a barrier between them.
        for segment in self.settings.selection.segments(&batch.changes) {
            match segment {
                Segment::Rows(rows) => self.apply_rows(&rows).await?,
                Segment::Truncate(c) => self.truncate(c).await?,
            }
        }
        Ok(())
    }
}

impl RedisSink {
    async fn apply_rows(&mut self, changes: &[&Change]) -> Result<(), SinkError> {
        if changes.is_empty() {
            return Ok(());
        }
        let encoder = Encoder {
            key: &self.settings.key,
            mode: self.settings.mode,
            format: self.settings.format,
        };
        let cmds = encoder.encode(changes)?;
        self.execute(cmds).await
    }

    async fn truncate(&mut self, c: &Change) -> Result<(), SinkError> {
        let pattern = self.settings.key.scan_pattern(&c.relation().id);
        let (action, kind) = match self.settings.mode {
            config::Mode::Upsert => (Action::Truncate, Some("hash")),
            config::Mode::Invalidate => (Action::Unlink, None),
        };
        let template = self.settings.key.as_str().to_string();
        let servers = self.servers.clone();
        let scan_err = |e: redis::RedisError| {
            sink_error(
                &servers,
                &template,
                &Failure::from(&e),
                "scan the keys of",
                &c.relation().id,
                c.version(),
            )
        };
        let nodes = self.client.scan_nodes().await.map_err(scan_err)?;
        for node in nodes {
            let mut cursor = 0;
            loop {
                let (next, keys) = self
                    .client
                    .scan_page(&node, cursor, &pattern, kind)
                    .await
                    .map_err(scan_err)?;
                let cmds = keys
                    .into_iter()
                    .map(|key| KeyCommand {
                        key,
                        action: action.clone(),
                        version: c.version(),
                        relation: c.relation().clone(),
                    })
                    .collect();
                self.execute(cmds).await?;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }

    /// Runs the commands until each is acknowledged, reloading the script
    /// when the server lost it.
    async fn execute(&mut self, mut pending: Vec<KeyCommand>) -> Result<(), SinkError> {
        for _ in 0..3 {
            if pending.is_empty() {
                return Ok(());
            }
            let results = self.client.run(&pending).await;
            let mut again = Vec::new();
            let mut retriable = None;
            for (kc, r) in pending.into_iter().zip(results) {
                match r {
                    Ok(_) => {}
                    Err(f) if f.no_script => again.push(kc),
                    Err(f) if !f.kind.is_retriable() => {
                        return Err(sink_error(
                            &self.servers,
                            self.settings.key.as_str(),
                            &f,
                            "write a row of",
                            &kc.relation.id,
                            kc.version,
                        ))
                    }
                    Err(f) => {
                        retriable.get_or_insert((f, kc));
                    }
                }
            }
            if let Some((f, kc)) = retriable {
                return Err(sink_error(
                    &self.servers,
                    self.settings.key.as_str(),
                    &f,
                    "write a row of",
                    &kc.relation.id,
                    kc.version,
                ));
            }
            if !again.is_empty() {
                tracing::info!(
                    "redis lost Courier's write script (restart or SCRIPT FLUSH); loading it again"
                );
                self.client.load_script().await.map_err(|e| {
                    let f = Failure::from(&e);
                    SinkError::new(
                        f.kind,
                        format!(
                            "redis: load the write script: redis at {} {} ({})",
                            self.servers, f.kind, f.message
                        ),
                    )
                })?;
            }
            pending = again;
        }
        Err(SinkError::new(
            SinkErrorKind::Unavailable,
            format!(
                "redis: redis at {} unavailable (it keeps losing Courier's write script: NOSCRIPT after reloading it)",
                self.servers
            ),
        ))
    }
}

/// A sink error naming the servers, key template, table and LSN, of the
/// failure's kind.
fn sink_error(
    servers: &str,
    template: &str,
    f: &Failure,
    what: &str,
    table: &courier_core::TableId,
    lsn: courier_core::Lsn,
) -> SinkError {
    let message = format!(
        "redis: {what} {table} at key pattern {template:?}: redis at {servers} {} ({})",
        f.kind, f.message
    );
    SinkError::new(f.kind, message)
        .with_table(table)
        .with_lsn(lsn)
        .with_source(f.clone())
}

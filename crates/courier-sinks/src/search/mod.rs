//! The `elasticsearch` / `opensearch` sink: every selected table as a search
//! index that stays exact through crashes, replays, overload and bad rows.
//!
//! ```toml
//! [sinks.search]
//! type = "opensearch"                 # or "elasticsearch"; the server is detected either way
//! url = "http://127.0.0.1:9200"       # https://user:password@host:9200 for basic auth
//! # api_key = "${ES_API_KEY}"         # instead of a password
//! tables = ["public.products"]        # default: every source table
//! index = "{table}"                   # the alias users query ({schema}, {table})
//! on_error = "dead_letter"            # or "stop" (the default)
//! # dead_letter_index = "courier_dead_letter"; mappings = "mappings.json"
//! # batch_size = 1000; batch_bytes = 5242880; gc_deletes = "7d"
//! # number_of_shards = 1; number_of_replicas = 1; timeout_secs = 60; retry_secs = 120
//! ```
//!
//! # Indexes and aliases
//!
//! Each table's rows live in the concrete index `<alias>_v1`, which Courier
//! creates on the table's first change with an explicit mapping derived
//! from the PostgreSQL column types (see [`mapping`]'s table; a `mappings`
//! JSON file `{"schema.table": {"column": {...}}}` replaces a column's
//! field) and `index.gc_deletes` raised to `gc_deletes`. Users query the
//! alias (`products` → `products_v1`), so an index can be rebuilt beside it
//! and the alias moved without downtime. A new column is added to the
//! mapping; a column whose type changed beyond what the mapping holds stops
//! the table with an error naming table, column, both types and the fix.
//!
//! # Documents and versions
//!
//! A row is the document whose `_id` is its primary key: one key column as
//! its value (`42`, `abc`), several as the JSON array of their values
//! (`[42,"abc"]`). Its fields are the columns per Courier's type mapping
//! (NULL columns left out). Every write and delete goes through `_bulk`
//! with `version_type=external_gte` and the commit LSN as the version, so
//! a replayed or late, older change gets a 409 (counted as applied) and a
//! delete leaves a tombstone for `gc_deletes`, during which an older replayed
//! write cannot bring the row back. Within a batch only the winning change
//! per document is sent. A TRUNCATE deletes every document of the table at
//! the truncate's version (newer documents stay).
//!
//! # Overload and rejected documents
//!
//! Every item result of a bulk response is read. Items refused with 429,
//! `es_rejected_execution_exception` (`rejected_execution_exception` on
//! OpenSearch) — the server is overloaded — or 5xx — unavailable — are
//! sent again without the items that were applied,
//! with exponential backoff and jitter (reset whenever a round makes
//! progress) and counted by `courier_sink_retried_items_total{sink}`, for
//! up to `retry_secs`; after that the
//! batch fails as retriable and Courier retries it. A request that gets no
//! answer fails the batch at once, as unreachable (connection refused or
//! reset, host name not resolved) or timed out, and Courier retries it;
//! messages name the server (`host:port`) and say which it was. A document refused for
//! its content (a mapping conflict, too large) stops the table with an
//! error naming table, key and LSN when `on_error = "stop"`; with
//! `"dead_letter"` it is written to the dead-letter index (table, key, LSN,
//! operation, the server's reason and the document), counted in the metric
//! `courier_sink_dead_letters_total`, and the rest flows on. A batch is
//! applied when every document is applied or dead-lettered.
//!
//! # Servers
//!
//! `GET /` tells the flavour and version at start (`GET /_nodes/_local`
//! when the node has no root endpoint, as Elasticsearch 8 and 9 without
//! their `rest-root` module, or answers as Elasticsearch 7.10.2 without
//! saying which server it is, as OpenSearch 1 and 2 in compatibility mode): Elasticsearch 7, 8, 9 and OpenSearch 1, 2, 3 are
//! supported (JSON columns map as `flattened` on Elasticsearch ≥ 7.3 and
//! `flat_object` on OpenSearch ≥ 2.7; when the server refuses that type as
//! unknown, as clusters without its module do, they map as unindexed
//! objects from then on, with a warning).

mod bulk;
mod client;
mod config;
mod dead_letter;
mod encode;
mod indexes;
mod inspect;
pub mod mapping;
#[cfg(any(test, feature = "compliance"))]
pub mod readback;
pub mod rebuild;
mod refresh;
mod server;
#[cfg(test)]
mod tests;
mod truncate;

use async_trait::async_trait;
use std::time::Duration;

use courier_core::{Batch, Change, Grouping, Sink, SinkError, SinkErrorKind, Visibility};

pub use config::{OnError, SearchSinkConfig};
pub use inspect::{inspector, SearchInspector};
pub use server::{Flavour, Server};

use bulk::{send_items, Limits};
use client::Client;
use config::{redact, Settings};
use encode::{collapse, doc_id, Item};
use indexes::Indexes;

use crate::selection::Segment;
use crate::BuildError;

/// Checks the configuration, reaches the server and reads its flavour and
/// version. Indexes are created on each table's first change.
pub async fn build(name: &str, config: SearchSinkConfig) -> Result<SearchSink, BuildError> {
    let config_err = |message| BuildError::Config {
        sink: name.to_string(),
        message,
    };
    let settings = config.validate().map_err(config_err)?;
    let client = Client::new(&settings).map_err(|e| config_err(format!("url: {e}")))?;
    let connect = |kind, message: String| BuildError::Connect {
        sink: name.to_string(),
        kind,
        message,
        source: None,
    };
    let server = client
        .detect()
        .await
        .map_err(|e| {
            connect(
                e.kind(),
                format!("detect the server (url {}): {e}", redact(&settings.base)),
            )
        })?
        .ok_or_else(|| {
            connect(SinkErrorKind::Config, format!(
                "{} does not answer as Elasticsearch or OpenSearch (neither GET / nor GET /_nodes/_local names a version)",
                settings.base
            ))
        })?;
    if !server.supported() {
        return Err(connect(SinkErrorKind::Config, format!(
            "{server} at {} is not supported; Courier works with Elasticsearch 7 to 9 and OpenSearch 1 to 3",
            settings.base
        )));
    }
    tracing::info!(sink = name, %server, "search server detected");
    Ok(SearchSink {
        name: name.to_string(),
        settings,
        client,
        server,
        indexes: Indexes::default(),
        dead_letter_ready: false,
        shadows: rebuild::Shadows::default(),
    })
}

/// Keeps the selected tables in search indexes; see the module documentation.
pub struct SearchSink {
    name: String,
    settings: Settings,
    client: Client,
    server: Server,
    indexes: Indexes,
    dead_letter_ready: bool,
    /// The indexes `courier rebuild` is filling behind each alias, which
    /// every write also goes to.
    shadows: rebuild::Shadows,
}

impl SearchSink {
    /// The server detected at start.
    pub fn server(&self) -> Server {
        self.server
    }
}

#[async_trait]
impl Sink for SearchSink {
    async fn apply(&mut self, batch: &Batch) -> Result<(), SinkError> {
        self.apply_all(&[batch]).await
    }

    /// What is already queued, up to a few rounds of requests: enough for
    /// `concurrency` requests to stay busy, without waiting for more.
    fn grouping(&self) -> Grouping {
        Grouping {
            max_changes: self.settings.batch_size * self.settings.concurrency * 8,
            max_bytes: self.settings.batch_bytes * self.settings.concurrency * 2,
            max_delay: Duration::ZERO,
        }
    }

    async fn apply_all(&mut self, batches: &[&Batch]) -> Result<(), SinkError> {
        let changes = batches.iter().flat_map(|b| b.changes.iter());
        for segment in self.settings.selection.segments(changes) {
            match segment {
                Segment::Rows(rows) => self.apply_rows(&rows).await?,
                Segment::Truncate(c) => self.truncate(c).await?,
            }
        }
        Ok(())
    }

    /// A document is searchable after a refresh: Courier refreshes the
    /// sink's indexes when someone waits for them (see `refresh.rs`).
    fn visibility(&self) -> Visibility {
        Visibility::AfterRefresh(std::sync::Arc::new(refresh::Refresher::new(
            self.client.clone(),
            self.indexes.written(),
        )))
    }
}

impl SearchSink {
    fn limits(&self) -> Limits {
        Limits {
            batch_size: self.settings.batch_size,
            batch_bytes: self.settings.batch_bytes,
            concurrency: self.settings.concurrency,
            retry_for: self.settings.retry_for,
            sink: self.name.clone(),
        }
    }

    async fn apply_rows(&mut self, changes: &[&Change]) -> Result<(), SinkError> {
        if changes.is_empty() {
            return Ok(());
        }
        // An update that changed the key moves the document: the old `_id`
        // is deleted at the update's version, just before the update.
        let moves: Vec<Option<Change>> = changes.iter().map(|c| c.key_move()).collect();
        let changes: Vec<&Change> = changes
            .iter()
            .zip(&moves)
            .flat_map(|(c, m)| m.iter().chain(std::iter::once(*c)))
            .collect();
        let mut items = Vec::with_capacity(changes.len());
        let mut unkeyed = Vec::new();
        for c in changes {
            let alias = self
                .indexes
                .ensure(&self.client, &self.settings, &self.server, c.relation())
                .await?;
            let Some(row) = c.key_row() else { continue };
            match doc_id(c.relation(), row) {
                Ok(id) => items.push(Item {
                    change: c,
                    alias,
                    id,
                }),
                Err(reason) if c.relation().key_indexes().next().is_none() => {
                    return Err(SinkError::new(
                        SinkErrorKind::Schema,
                        format!(
                            "search: {} cannot be indexed: {reason}; give it a primary key",
                            c.relation().id
                        ),
                    )
                    .with_table(&c.relation().id)
                    .with_lsn(c.version()))
                }
                Err(reason) => unkeyed.push((c, reason)),
            }
        }
        self.shadows.add_writes(&self.client, &mut items).await?;
        let items = collapse(items);
        let rejected = send_items(&self.client, &items, &self.limits()).await?;
        if rejected.is_empty() && unkeyed.is_empty() {
            return Ok(());
        }
        let mut letters: Vec<dead_letter::Letter> = Vec::new();
        for (c, reason) in unkeyed {
            letters.push(dead_letter::Letter::new(c, None, 0, "invalid_id", &reason));
        }
        for r in &rejected {
            let item = &items[r.index];
            letters.push(dead_letter::Letter::new(
                item.change,
                Some(&item.id),
                r.status,
                &r.error_type,
                &r.reason,
            ));
        }
        match self.settings.on_error {
            OnError::Stop => Err(letters[0].stop_error()),
            OnError::DeadLetter => {
                if !self.dead_letter_ready {
                    dead_letter::ensure_index(&self.client, &self.settings.dead_letter_index)
                        .await?;
                    self.dead_letter_ready = true;
                }
                dead_letter::write(
                    &self.client,
                    &self.settings.dead_letter_index,
                    &self.name,
                    &letters,
                )
                .await
            }
        }
    }

    async fn truncate(&mut self, c: &Change) -> Result<(), SinkError> {
        let alias = self
            .indexes
            .ensure(&self.client, &self.settings, &self.server, c.relation())
            .await?;
        truncate::truncate(&self.client, &alias, c, &self.limits()).await?;
        if let Some(shadow) = self.shadows.of(&self.client, &alias).await? {
            truncate::truncate(&self.client, &shadow, c, &self.limits()).await?;
        }
        Ok(())
    }
}

//! The `kafka` sink: every change as a Debezium-compatible record in a
//! topic per table, so Debezium's consumers, Kafka Connect sinks and
//! Courier's own Kafka workers can read them.
//!
//! ```toml
//! [sinks.bus]
//! type = "kafka"
//! brokers = "127.0.0.1:9092"            # or ["h1:9092", "h2:9092"]
//! topic_prefix = "shop"                 # Debezium's topic.prefix; default: the slot name
//! topic = "{prefix}.{schema}.{table}"   # the default, Debezium's naming
//! format = "json"                       # or "json-schema" (Connect's JsonConverter, schemas.enable=true)
//! decimal_handling = "precise"          # json-schema numerics: precise | string | double
//! tombstones = true                     # a null-value record after each delete
//! exactly_once = false                  # true: one transaction per group of batches
//! # transactional_id = "courier-shop-bus"; offsets_topic = "courier-offsets"
//! # create_topics = true; partitions = 6; replication_factor = 3; compact = true
//! # tls_ca_file = "/etc/courier/kafka-ca.pem" (or tls = true)
//! # sasl_mechanism = "SCRAM-SHA-512"; sasl_username = "courier"; sasl_password = "${KAFKA_PASSWORD}"
//! # delivery_timeout = "30s"
//! # [sinks.bus.librdkafka]              # any other librdkafka setting, e.g.
//! # "compression.type" = "zstd"
//! ```
//!
//! # Records
//!
//! * **Topic**: `{prefix}.{schema}.{table}` (characters Kafka does not
//!   allow become `_`). Missing topics are created with `partitions`,
//!   `replication_factor` (default: the broker's) and, with `compact`,
//!   `cleanup.policy=compact`; an existing topic is used as it is. With
//!   `create_topics = false`, a missing topic stops the sink with an error
//!   naming table, LSN, topic and fix.
//! * **Key**: the primary key as an object, `{"id": 42}` (with
//!   `json-schema`, `{"schema": {... "name": "<prefix>.<schema>.<table>.Key"},
//!   "payload": {"id": 42}}`), partitioned with the Java client's murmur2,
//!   so every change to a row lands on one partition, in order. A table
//!   without key columns gets null keys.
//! * **Value**: the change envelope (`before`, `after`, `source` with `lsn`
//!   = the commit LSN and `txId`, `op` `r`/`c`/`u`/`d`/`t`, `ts_ms`); with
//!   `json` it is the envelope of the file and stdout sinks, values in
//!   Courier's type mapping; with `json-schema`, the envelope as Debezium's
//!   PostgreSQL connector and Connect's JsonConverter write it (table below).
//! * **Headers**: `courier.lsn` (the commit LSN, decimal) and `courier.txid`.
//! * **Timestamp**: the transaction's commit time.
//! * **Deletes** are followed by a tombstone (same key, null value) unless
//!   `tombstones = false`, so a compacted topic forgets the row. With the
//!   default replica identity PostgreSQL sends a delete's key only: in
//!   `before`, the other columns are null, except that with `json-schema`
//!   NOT NULL columns (required fields, which JsonConverter refuses as
//!   null) carry Debezium's fallbacks: `0`, `false`, `""`, `"{}"` for JSON,
//!   `[]`, the epoch for zoned times, a zero decimal.
//! * **Primary-key changes** are emitted as Debezium does: a delete of the
//!   old key (header `__debezium.newkey`), its tombstone, and a create of
//!   the new key (header `__debezium.oldkey`). The header holds the other
//!   key as a plain JSON object, `{"id": 3}`, in either format: what a
//!   Connect worker's default header converter (`SimpleHeaderConverter`)
//!   writes for Debezium's key struct, and reads back as a map.
//! * **Truncate** is one record with op `t` and a null key, as Debezium
//!   sends it: it lands on one partition chosen by the producer, so a
//!   consumer of several partitions orders it only against that partition's
//!   rows; consumers that must apply it precisely use its `source.lsn`.
//!
//! # Column types with `format = "json-schema"`
//!
//! Debezium's defaults (`decimal.handling.mode=precise`,
//! `time.precision.mode=adaptive`, `binary.handling.mode=bytes`) except
//! where the last column says otherwise.
//!
//! | PostgreSQL | Connect schema (`name`) | payload | Debezium |
//! |---|---|---|---|
//! | `boolean` | `boolean` | `true` | same |
//! | `smallint`, `integer`, `bigint` | `int16`, `int32`, `int64` | number | same |
//! | `oid` | `int64` | number | same |
//! | `real`, `double precision` | `float`, `double` | number; `"NaN"`, `"Infinity"`, `"-Infinity"` | same (Jackson's strings) |
//! | `numeric(p,s)` | `bytes` `org.apache.kafka.connect.data.Decimal`, parameters `scale`, `connect.decimal.precision` | base64 of the unscaled value, big-endian two's complement | same, but for NaN/Infinity: an error naming the column here (use `decimal_handling = "string"`), where Debezium writes null |
//! | `numeric` | `struct` `io.debezium.data.VariableScaleDecimal` {`scale` int32, `value` bytes} | `{"scale": 2, "value": "BNI="}`, trailing zeros stripped | same |
//! | `numeric` with `decimal_handling = "string"` / `"double"` | `string` / `double` | `"12.34"` / `12.34` | same |
//! | `text`, `varchar`, `char`, `name`, `citext` | `string` | text | same |
//! | `bytea` | `bytes` | base64 | same |
//! | `uuid` | `string` `io.debezium.data.Uuid` | text | same |
//! | `json`, `jsonb` | `string` `io.debezium.data.Json` | the document as a string | same |
//! | `date` | `int32` `io.debezium.time.Date` | days since 1970-01-01 | same, but for `±infinity`: i32 max/min here, other day numbers from Debezium (Courier's Kafka source reads both) |
//! | `time(0..3)` | `int32` `io.debezium.time.Time` | milliseconds since midnight | same |
//! | `time`, `time(4..6)` | `int64` `io.debezium.time.MicroTime` | microseconds since midnight | same |
//! | `timetz` | `string` `io.debezium.time.ZonedTime` | ISO 8601 in UTC, `08:00:00Z` | same |
//! | `timestamp(0..3)` | `int64` `io.debezium.time.Timestamp` | milliseconds since the epoch | same |
//! | `timestamp`, `timestamp(4..6)` | `int64` `io.debezium.time.MicroTimestamp` | microseconds since the epoch | same, but for `±infinity`: i64 max/min here, pgjdbc's infinity constants from Debezium (Courier's Kafka source reads both) |
//! | `timestamptz` | `string` `io.debezium.time.ZonedTimestamp` | ISO 8601 in UTC, `2024-01-02T03:04:05.5Z` | same instant; Debezium may pad the fraction to the column's precision |
//! | `interval` | `string` `io.debezium.time.Interval` | ISO 8601 duration | Debezium's `interval.handling.mode=string` (its default is `MicroDuration`, int64) |
//! | enums | `string` `io.debezium.data.Enum` | the label | Debezium adds the `allowed` labels as a parameter |
//! | arrays of the above | `array` of the element's schema (optional items) | array | same; multi-dimensional arrays are an error (use `format = "json"`) |
//! | `inet`, `cidr`, `macaddr`, ranges | `string` | PostgreSQL's text | same |
//! | `money`, `bit`, geometric types, others | `string` | PostgreSQL's text | Debezium: `Decimal` (money), `Bits`/`boolean` (bit), `Point`/`Geometry` structs |
//!
//! The envelope schema is `<prefix>.<schema>.<table>.Envelope` (version 2)
//! with `before`/`after` structs `<prefix>.<schema>.<table>.Value`, `source`
//! `io.debezium.connector.postgresql.Source` (`version`, `connector`,
//! `name`, `ts_ms`, `snapshot`, `db`, `sequence`, `ts_us`, `ts_ns`,
//! `schema`, `table`, `txId`, `lsn`, `xmin`), `op`, `ts_ms`, `ts_us`,
//! `ts_ns` and `transaction` (always null).
//!
//! # Applied, retries and errors
//!
//! The producer is idempotent with `acks=all`. A group of batches is
//! applied once every record of it is acknowledged by the broker; a broker
//! that is down, a leader that moves or too few in-sync replicas make
//! Courier retry the group (records may then appear twice, in order; a
//! reader keeps per key the record with the greatest `source.lsn`, the
//! later one on a tie). A record the broker refuses for good (too large, no
//! authorization, a missing topic) stops the sink with an error naming
//! table, LSN, topic and the fix.
//!
//! # Exactly once
//!
//! With `exactly_once = true` each group of batches is one Kafka
//! transaction (transactional id `courier-{prefix}-{sink}` by default), and
//! the position it covers ([`CommittedPosition`]) is written in the same
//! transaction to the compacted `offsets_topic`, keyed by the
//! transactional id. At start the sink fences any older producer with its
//! id (the broker aborts its open transaction), reads the committed
//! position back ([`read_committed_position`]) and leaves out the replayed
//! changes that a committed transaction already holds. Consumers with
//! `isolation.level=read_committed` then see every streamed change exactly
//! once, across kill -9; snapshot reads (`op = r`) of a resumed snapshot
//! may repeat.

mod check;
mod client;
mod config;
mod deliveries;
mod encode;
mod heartbeat;
mod offsets;
mod outbox;
mod produce;
mod schema;
#[cfg(test)]
mod tests;
mod transactions;

pub use config::{Brokers, DecimalHandling, Format, KafkaSinkConfig};
pub use encode::{LSN_HEADER, NEW_KEY_HEADER, OLD_KEY_HEADER, TXID_HEADER};
pub use offsets::CommittedPosition;
pub use produce::KafkaSink;

use courier_core::TableId;

use crate::envelope::SourceInfo;
use crate::preflight::Finding;
use crate::BuildError;

/// Checks the configuration, connects to the brokers and, for exactly
/// once, registers the transactional id and reads the committed position.
/// The sink writes no outbox events until given routers
/// ([`KafkaSink::with_outbox`]).
///
/// Errors name the setting to fix, or the brokers that could not be
/// reached (never a password).
pub async fn build(
    name: &str,
    config: KafkaSinkConfig,
    source: &SourceInfo,
) -> Result<KafkaSink, BuildError> {
    let settings = validated(name, config, source)?;
    KafkaSink::start(name, settings, source).await
}

/// What `courier check` reports for the sink `name`: each topic the
/// sink would write for `tables` (and the exactly-once positions topic),
/// as Courier would create it, different (used as it is), missing, or not
/// accessible. Produces nothing and starts no producer, so it never fences
/// a running Courier's transactional id.
///
/// `Err` when a setting is wrong or no broker answers.
pub async fn check(
    name: &str,
    config: KafkaSinkConfig,
    source: &SourceInfo,
    tables: &[TableId],
) -> Result<Vec<Finding>, BuildError> {
    let settings = validated(name, config, source)?;
    check::check(&settings, name, tables)
        .await
        .map_err(|f| BuildError::Connect {
            sink: name.to_string(),
            kind: f.kind,
            message: format!("kafka at {} {} ({})", settings.brokers, f.kind, f.message),
            source: None,
        })
}

/// The position the sink `name` (configured by `config`) last committed
/// with `exactly_once = true`: `None` when it never committed, or when
/// exactly once is off.
///
/// A restarted pipeline may resume replication from `through` (every
/// change of a transaction that committed before it is in the topics); the
/// sink itself leaves out replayed changes it already committed, so
/// resuming from the slot's own position is correct too, only slower.
pub async fn read_committed_position(
    name: &str,
    config: KafkaSinkConfig,
    source: &SourceInfo,
) -> Result<Option<CommittedPosition>, BuildError> {
    let settings = validated(name, config, source)?;
    offsets::read(&settings)
        .await
        .map_err(|f| BuildError::Connect {
            sink: name.to_string(),
            kind: f.kind,
            message: format!("kafka at {}: {}", settings.brokers, f.message),
            source: None,
        })
}

/// The sink's settings, checked once; a bad one is a configuration error.
fn validated(
    name: &str,
    config: KafkaSinkConfig,
    source: &SourceInfo,
) -> Result<config::Settings, BuildError> {
    config
        .validate(name, source)
        .map_err(|message| BuildError::Config {
            sink: name.to_string(),
            message,
        })
}

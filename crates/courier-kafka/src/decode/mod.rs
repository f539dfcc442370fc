//! Kafka records of change topics back into [`courier_core::Change`]s: the
//! records of Courier's own Kafka sink and those of Debezium's PostgreSQL
//! connector, so a worker applies them to its sinks exactly as a capture
//! from PostgreSQL would. Plain bytes in, changes out: the consumer reads
//! the records, a [`Decoder`] turns each into a change, `Ok(None)` or an
//! error.
//!
//! ```
//! use courier_kafka::{Decoder, Format, Record};
//!
//! let mut decoder = Decoder::new(Format::Auto);
//! let value = br#"{"before":null,"after":{"id":1,"name":"Tea"},
//!   "source":{"version":"courier-0.1.0","connector":"postgresql","db":"shop",
//!             "schema":"public","table":"products","lsn":23655712,"txId":771},
//!   "op":"c"}"#;
//! let change = decoder
//!     .decode(&Record {
//!         topic: "shop.public.products",
//!         partition: 0,
//!         offset: 42,
//!         timestamp_ms: None,
//!         key: Some(br#"{"id":1}"#),
//!         value: Some(value),
//!         headers: &[],
//!     })
//!     .unwrap()
//!     .expect("a change");
//! assert_eq!(change.version().as_u64(), 23655712);
//! assert_eq!(change.relation().id.to_string(), "public.products");
//! ```
//!
//! # Formats
//!
//! Each record is read as it comes ([`Format::Auto`]; `source.format`
//! restricts it to one):
//!
//! * **Kafka Connect JSON with schemas**, `{"schema": ..., "payload": ...}`:
//!   Debezium's PostgreSQL connector with JsonConverter and
//!   `schemas.enable=true`, and Courier's sink with `format =
//!   "json-schema"`. The value schema's `before`/`after` struct gives the
//!   columns, in its order, and their types (table below); the key's
//!   fields are the key columns.
//! * **Schemaless JSON**, the bare envelope: Debezium with
//!   `schemas.enable=false`, and Courier's `format = "json"`. Columns come
//!   in the order of the row's fields and their types are inferred from the
//!   values (below).
//!
//! Keys are read in either form, whatever the value's. A record is Courier's
//! when it has the `courier.lsn` header or its `source.version` is
//! `courier-<version>`; otherwise Debezium's (`source.connector` must be
//! `postgresql`). Records that carry no change give `Ok(None)`: Debezium's
//! heartbeats (`{"ts_ms": ...}` or the `io.debezium.connector.common.Heartbeat`
//! schema), transaction metadata (`status` BEGIN/END, or the
//! `TransactionMetadataValue` schema), logical decoding messages (`op =
//! "m"`), and tombstones that follow their delete (below). Skips are
//! logged at `debug` with topic, partition and offset.
//!
//! # Relations
//!
//! A change's relation has the table of `source.schema`/`source.table`, the
//! columns above, `nullable` from the field's `optional` (schemaless: every
//! non-key column), `oid` a stable number derived from the table's name
//! (FNV-1a; no PostgreSQL OID is known), `type_oid` 0, and `type_modifier`
//! where the schema tells it (`numeric(p,s)`; 3 for the millisecond
//! times). The decoder keeps one relation per table and gives every change
//! the same `Arc` while the columns stay the same; a schema change (a
//! column added, dropped or retyped upstream) gives a new one, as a
//! PostgreSQL relation message does. Columns Debezium leaves out (types it
//! does not know, such as `box`) are not in the relation.
//!
//! # Types
//!
//! Values equal what Courier's own capture gives for the same row (the
//! `courier_core::Value` of the type mapping), except where the last column
//! says a Debezium setting lost information:
//!
//! | Connect schema (`name`) | value | what a record cannot carry |
//! |---|---|---|
//! | `boolean` | `Bool` | |
//! | `int16`, `int32`, `int64` (`int8`) | `Int` | `oid` arrives as `int64` |
//! | `float`, `double` | `Float4`, `Float8` (`"NaN"`, `"Infinity"`, `"-Infinity"` too) | |
//! | `string` | `Text` | text types, `inet`, `cidr`, `macaddr`, ranges, `xml` (`io.debezium.data.Xml`), enums (`io.debezium.data.Enum`) |
//! | `bytes` | `Bytes` | |
//! | `bytes` `org.apache.kafka.connect.data.Decimal` (`scale`, `connect.decimal.precision`) | `Numeric` with `scale` digits after the point | `money` arrives as its amount (`9.99`), where Courier's capture has PostgreSQL's text (`$9.99`) |
//! | `struct` `io.debezium.data.VariableScaleDecimal` | `Numeric` | Debezium strips trailing zeros (`1.50` → `1.5`) and sends `NaN`/`Infinity` as null |
//! | `string` / `double` with source type `NUMERIC` (Debezium's `column.propagate.source.type`) | `Numeric` | `decimal.handling.mode=string`: exact (`NAN` → `NaN`); `double`: the double's digits |
//! | `string` / `double` without a source type | `Text` / `Float8` | `decimal.handling.mode=string` / `double` make a `numeric` look like text / a double; domains over `numeric` keep their own name as source type, so they stay `Text` |
//! | `string` `io.debezium.data.Uuid` | `Uuid` (lowercase) | |
//! | `string` `io.debezium.data.Json` | `Json` (the document's text) | `json` and `jsonb` look alike: the relation says `jsonb` |
//! | `int32` `io.debezium.time.Date` (Connect's `Date`) | `Date` | Debezium's infinity days (while streaming and in a snapshot) and Courier's (`i32` max/min) become `infinity`/`-infinity`; Debezium's snapshot writes dates before 1 AD without their era (`0044-03-15 BC` as 44 AD) |
//! | `int32` `io.debezium.time.Time` (Connect's `Time`) | `Time` | milliseconds: `time(0..3)`, and with `time.precision.mode=connect` every `time`, cut to milliseconds |
//! | `int64` `io.debezium.time.MicroTime`, `NanoTime` | `Time` | |
//! | `string` `io.debezium.time.ZonedTime` | `Time` in UTC (`11:45:06+00`) | the original offset (`13:45:06+02`) |
//! | `int64` `io.debezium.time.Timestamp` (Connect's `Timestamp`) | `Timestamp` | milliseconds, as `time` |
//! | `int64` `io.debezium.time.MicroTimestamp`, `NanoTimestamp` | `Timestamp` (infinities, BC) | |
//! | `string` `io.debezium.time.ZonedTimestamp` | `TimestampTz` (UTC, fraction without trailing zeros, BC) | |
//! | `int64` `io.debezium.time.MicroDuration`, `NanoDuration` | `Text`, `PT<h>H<m>M<s>S` | Debezium counts a month as 30.4375 days and a day as 24 hours (`P1D` arrives as `PT24H`): use `interval.handling.mode=string` |
//! | `string` `io.debezium.time.Interval` | `Text`, PostgreSQL's `iso_8601` form | |
//! | `bytes` `io.debezium.data.Bits` (`length`) | `Text`, the bit string | `bit varying` loses leading zeros; `bit(1)` is a `boolean` |
//! | `struct` `io.debezium.data.geometry.Point` | `Text`, `(x,y)` | |
//! | `array` of the above | `Array` | Debezium writes each inner array of a multi-dimensional array as null, and a `numeric[]` holding NaN as null |
//! | `map` | `Json` | |
//! | another name on a primitive type | as the primitive | |
//! | other `struct`s (PostGIS geometries, ...) | an error naming the column | |
//!
//! Debezium's placeholder for an unchanged TOASTed value (its default
//! `unavailable.value.placeholder`, in each column kind's form) is an
//! error naming the table, the column and the fix (`REPLICA IDENTITY
//! FULL`, with which Debezium sends the whole row): stores receive whole
//! rows. Courier's own `json-schema` records are the same types written by
//! Courier's sink, so they decode to the captured values but for what the
//! types cannot carry (a `timetz`'s offset, an unconstrained `numeric`'s
//! trailing zeros).
//!
//! # Schemaless records
//!
//! Without a schema each column's type is inferred from its JSON values,
//! the record's and the table's earlier ones: `true`/`false` → `bool`
//! (`Bool`); an integer → `bigint` (`Int`); another number → `double
//! precision` (`Float8`, which also takes integers and `"NaN"`,
//! `"Infinity"`, `"-Infinity"`); a string → `text` (`Text`); an object →
//! `jsonb` (`Json`, the value's exact JSON text); an array → an array of
//! its elements' type; null → `text` until a value says more. Types only
//! widen (integer to double, anything else that disagrees to `jsonb`,
//! which keeps every value's JSON), each widening a new relation; so the
//! decoded JSON is always the record's. What the JSON cannot tell stays
//! as the record has it: Courier's `json` records hold numerics, dates,
//! times, timestamps, UUIDs, intervals and bytea as strings (their text is
//! Courier's exactly, as `Text`), and `jsonb` scalars and arrays look like
//! the JSON they are; Debezium's records without schemas hold its numbers
//! and strings (a precise decimal as the base64 of its unscaled value, a
//! `VariableScaleDecimal` as an object, dates as days, timestamps as
//! microseconds, `json` as a string). Use schemas for typed stores.
//!
//! # Ops, tombstones, key changes
//!
//! `op` `r`, `c`, `u`, `d`, `t` are [`courier_core::Op`]'s read, insert,
//! update, delete and truncate; another op is an error. A delete's `before`
//! is what the record holds: with the default replica identity the key,
//! and in NOT NULL columns the fallbacks Debezium writes there (`0`, `""`,
//! where Courier's capture has null); only its key matters to a store. A
//! delete without a `before` (REPLICA IDENTITY NOTHING) takes its key from
//! the record key.
//! A tombstone (a null value) that directly follows the delete of the same
//! key in the same partition, as Courier and Debezium write them, gives
//! `Ok(None)`: the delete was decoded. Any other tombstone (its delete
//! compacted away, or a worker starting between the two) is the delete of
//! its key, in the relation of the topic's last change (other columns
//! null), or `Ok(None)` when no change of the topic was decoded yet (no
//! relation to delete from). A primary-key change arrives as Debezium
//! writes it (Courier's sink too): the delete of the old key (header
//! `__debezium.newkey`), its tombstone, and the create of the new key
//! (`__debezium.oldkey`); decoded as a delete and an insert of the same
//! version, it leaves only the new row, whichever partitions the two keys
//! are on.
//!
//! # Versions
//!
//! Sinks keep, per row, the change that wins under
//! [`courier_core::version::incoming_wins`] (newer or equal); a version
//! must therefore never rank a state of a row above a later one, whether a
//! partition is read once, replayed from an older offset after a
//! rebalance, or after a Debezium snapshot.
//!
//! * **Courier's records**: the `courier.lsn` header (else `source.lsn`),
//!   the commit LSN of the change's transaction or a snapshot's consistent
//!   point, exactly the version of direct mode. Its tombstones carry the
//!   header too.
//! * **Debezium's records**: the first element of `source.sequence`,
//!   Debezium's `lastCommitLsn`. With pgoutput, Debezium sets it at each
//!   Commit message to the position the message arrives at, which is the
//!   *end* of that transaction's commit record; the changes of the next
//!   transaction carry it. So every change of a transaction T has the end
//!   of the commit record of the transaction before T in commit order, and
//!   the changes of any transaction after T have at least the end of T's
//!   own commit record, which lies above every LSN of T: versions are
//!   non-decreasing in commit order and strictly greater from one
//!   transaction to a later one. Two transactions that touch the same row
//!   commit in the order of their writes (the row lock makes the second
//!   wait), so the later state always wins. When the sequence's first
//!   element is null, Debezium processed no commit yet: its initial
//!   snapshot's reads get version 0, and the first transaction after it
//!   its changes' own LSN (above 0, below its commit, so below the next
//!   transaction's version).
//! * **Why not `source.lsn`**: for Debezium it is the change's own LSN. A
//!   transaction can write a row before the snapshot's position (the
//!   slot's consistent point) and commit after it: the snapshot reads the
//!   older row, and the change, whose LSN is below the snapshot's, would
//!   lose to it. Under the rule above every streamed change outranks the
//!   initial snapshot's rows. The crate's `tests/debezium.rs` reproduces
//!   this with a transaction open across the real connector's snapshot.
//! * **Lone tombstones**: a Debezium tombstone carries no position. It
//!   gets the greatest version decoded from its partition since
//!   [`Decoder::reset_partition`] (0 when none): a partition's records are
//!   in version order, so that is never above its delete's version, and a
//!   later record of the key (a re-insert) still wins.
//!
//! What the rule needs:
//!
//! * One producer per topic: Courier's versions (commit LSNs) and
//!   Debezium's (last commit ends) are not comparable.
//! * The consumer calls [`Decoder::reset_partition`] when a partition is
//!   assigned, so a tombstone is matched only with the delete just before
//!   it (a partition read again from an earlier offset resets itself).
//! * A Debezium snapshot whose reads carry no last commit ranks below every
//!   change: right for the initial snapshot, but a re-snapshot into a
//!   topic that already holds the table's changes (`snapshot.mode=always`,
//!   or after the connector lost its offsets or slot) cannot replace rows
//!   the stream left stale during a gap; rebuild the store from a new
//!   topic or consumer group then. Incremental snapshots carry the last
//!   commit and rank where they were read.
//! * A lone Debezium tombstone may rank below its delete, so a store that
//!   holds the row and never saw the delete (compacted away before a
//!   worker of the group read it) keeps the row: give compacted topics a
//!   `min.compaction.lag.ms` longer than a worker may lag.
//!
//! # Errors
//!
//! A record Courier cannot decode is a [`DecodeError`] naming topic,
//! partition and offset, what is wrong (not JSON, not a change event, an
//! unknown op, another connector, a type Courier cannot map, a value that
//! does not fit its schema, a key that is not the row's key columns, a
//! TOAST placeholder, a format other than `source.format`) and the fix;
//! it never holds a row value.

mod datetime;
mod decimal;
mod decoder;
mod envelope;
mod error;
mod infer;
mod interval;
mod schema;
mod semantic;
mod version;

use std::str::FromStr;

pub use decoder::Decoder;
pub use error::{DecodeError, DecodeErrorKind, Part};

/// One Kafka record, as the consumer read it.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp in milliseconds, when it has one.
    pub timestamp_ms: Option<i64>,
    pub key: Option<&'a [u8]>,
    /// `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
}

impl Record<'_> {
    /// The value of the first header called `name`.
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| *v)
    }
}

/// Which records a source accepts (`source.format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Each record as it comes: Kafka Connect JSON with schemas, or
    /// schemaless JSON.
    #[default]
    Auto,
    /// Schemaless JSON only: Courier's `format = "json"`, Debezium with
    /// `value.converter.schemas.enable=false`.
    Json,
    /// Kafka Connect JSON with schemas only: Courier's `format =
    /// "json-schema"`, Debezium with JsonConverter's `schemas.enable=true`.
    JsonSchema,
}

impl Format {
    /// The configuration's word for the format.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Json => "json",
            Format::JsonSchema => "json-schema",
        }
    }
}

impl FromStr for Format {
    type Err = String;

    /// `auto`, `json` or `json-schema`; anything else is an error naming them.
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "auto" => Ok(Format::Auto),
            "json" => Ok(Format::Json),
            "json-schema" => Ok(Format::JsonSchema),
            other => Err(format!(
                "unknown format {other:?}: use \"auto\" (each record as it comes), \"json\" or \"json-schema\""
            )),
        }
    }
}

#[cfg(test)]
mod tests;

//! Why a record could not be decoded, in words that name the record, what
//! is wrong and how to fix it, and never a row value.

use courier_core::TableId;

/// A record that cannot become a change. Its message names the record
/// (topic, partition, offset), what is wrong and the fix; it never holds a
/// row value. Decoding the same record again gives the same error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("topic {topic} partition {partition} offset {offset}: {kind}")]
pub struct DecodeError {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub kind: Box<DecodeErrorKind>,
}

impl DecodeError {
    /// Always `false`: the record's bytes will not change.
    pub fn is_retriable(&self) -> bool {
        false
    }
}

/// Which part of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Key,
    Value,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Part::Key => "key",
            Part::Value => "value",
        })
    }
}

/// What is wrong with a record; each message ends with the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// The key or value is not JSON (`detail`: where the parser stopped).
    #[error("the {part} is not JSON ({detail}); Courier reads JSON records: Kafka Connect's JsonConverter (as Debezium writes with it) or Courier's own format = \"json\" / \"json-schema\"; give the producer value.converter=org.apache.kafka.connect.json.JsonConverter (and key.converter), or leave this topic out of the source's topics")]
    NotJson { part: Part, detail: String },
    /// The value is JSON, but not a change event.
    #[error("the value is not a change event: {reason}; this topic does not hold Debezium-style change events (before, after, source, op): leave it out of the source's topics")]
    NotAnEnvelope { reason: String },
    /// The record's format is not the one the source is configured for.
    #[error("source.format = \"{configured}\" but the value is {found}; {fix}")]
    FormatMismatch {
        configured: &'static str,
        found: &'static str,
        fix: &'static str,
    },
    /// An `op` that is none of `r`, `c`, `u`, `d`, `t`, `m`.
    #[error("unknown op {op:?} (Debezium's ops are r, c, u, d, t and m); the producer is not Debezium's PostgreSQL connector nor Courier: leave this topic out of the source's topics")]
    UnknownOp { op: String },
    /// A change of another Debezium connector than PostgreSQL's.
    #[error("the change comes from Debezium's {connector:?} connector; Courier reads the topics of Debezium's PostgreSQL connector and its own: leave this topic out of the source's topics")]
    Connector { connector: String },
    /// `source.schema` or `source.table` is missing.
    #[error("the change names no table (source.schema and source.table); Debezium's PostgreSQL connector and Courier always write them: check that no transform removes the source block")]
    NoTable,
    /// A column whose Connect schema Courier has no type for.
    #[error("column {column} of {table}: Courier has no type for the Connect schema {schema}; leave the column out on the producer's side (Debezium: column.exclude.list) or change its type")]
    UnmappedType {
        table: TableId,
        column: String,
        schema: String,
    },
    /// A value that does not fit its column's schema.
    #[error("column {column} of {table}: {reason}")]
    BadValue {
        table: TableId,
        column: String,
        reason: String,
    },
    /// A record key that does not name its row.
    #[error("the key of a change of {table}: {reason}")]
    BadKey { table: TableId, reason: String },
    /// Debezium's placeholder for an unchanged TOASTed value, instead of
    /// the value.
    #[error("column {column} of {table} holds Debezium's placeholder for an unchanged TOASTed value (unavailable.value.placeholder), not the value, and a store must receive whole rows; make PostgreSQL send whole old rows: ALTER TABLE {quoted} REPLICA IDENTITY FULL (Debezium then fills the column), then re-snapshot the table on the Debezium side (or rebuild the store from a fresh topic)", quoted = table.quoted())]
    ToastPlaceholder { table: TableId, column: String },
    /// Nothing in the record gives its version.
    #[error("a change of {table} carries no version ({what}); the producer is not Debezium's PostgreSQL connector nor Courier, or a transform removed source.lsn: leave this topic out of the source's topics")]
    NoVersion { table: TableId, what: &'static str },
    /// A null value without a key: neither a change nor a tombstone.
    #[error("the record has neither a key nor a value; it is no change and no tombstone: leave this topic out of the source's topics")]
    Empty,
}

use courier_core::{Lsn, RowShapeError, TableId};

use crate::types::ValueError;

/// Why a pgoutput message could not be turned into Courier events.
///
/// Errors name the table, column, type and LSN involved, never row values.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes do not follow pgoutput's message layout.
    #[error("malformed pgoutput {message} message: {reason}")]
    Malformed {
        message: &'static str,
        reason: &'static str,
    },
    /// A message type this decoder does not know (or did not ask for).
    #[error("unexpected pgoutput message type {tag:?} (Courier uses proto_version 1, or 2 with streaming, without binary mode)")]
    UnknownMessage { tag: char },
    /// A message out of place in the stream, e.g. a change outside a transaction.
    #[error("pgoutput protocol error at LSN {lsn}: {reason}")]
    Protocol { lsn: Lsn, reason: &'static str },
    /// A change for a relation whose Relation message was never received.
    #[error("pgoutput change at LSN {lsn} for relation OID {oid}, which was never described by a Relation message")]
    UnknownRelation { oid: u32, lsn: Lsn },
    /// A column value that cannot be decoded into its type.
    #[error("column {column} of {table} (type {type_name}) at LSN {lsn}: {source}")]
    Value {
        table: TableId,
        column: String,
        type_name: String,
        lsn: Lsn,
        #[source]
        source: Box<ValueError>,
    },
    /// A column value that is not valid UTF-8 (the database must use UTF8).
    #[error(
        "column {column} of {table} at LSN {lsn} is not valid UTF-8; Courier needs a UTF8 database"
    )]
    NotUtf8 {
        table: TableId,
        column: String,
        lsn: Lsn,
    },
    /// An unchanged TOAST value could not be filled in.
    #[error("cannot fill unchanged TOAST column {column} of {table} at LSN {lsn}: {reason}")]
    Toast {
        table: TableId,
        column: String,
        lsn: Lsn,
        reason: &'static str,
    },
    /// A catalog query failed.
    #[error("catalog query failed: {what}")]
    Catalog {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The catalog does not know a type the stream uses.
    #[error("type OID {oid} is not in pg_type")]
    UnknownType { oid: u32 },
    /// A streamed transaction's file could not be written or read back.
    #[error("streamed transaction file {}: {source}", path.display())]
    Spill {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A decoded row does not have one value per column of its relation.
    #[error(transparent)]
    RowShape(#[from] RowShapeError),
}

impl DecodeError {
    /// Whether retrying (after reconnecting) may succeed: true only for
    /// connection-level failures of catalog queries, never for bad data.
    pub fn is_retriable(&self) -> bool {
        match self {
            DecodeError::Catalog { source, .. } => match source.as_db_error() {
                None => true,
                Some(db) => {
                    let code = db.code().code();
                    // connection exception, transaction rollback (serialization,
                    // deadlock), insufficient resources, operator intervention.
                    ["08", "40", "53", "57"]
                        .iter()
                        .any(|class| code.starts_with(class))
                }
            },
            _ => false,
        }
    }

    pub(crate) fn catalog(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Self {
        let what = what.into();
        move |source| DecodeError::Catalog { what, source }
    }
}

use courier_core::TableId;

/// PostgreSQL is not ready for capture, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("table {0} does not exist (or the role cannot see it): create it, or remove it from source.tables")]
    MissingTable(TableId),
    #[error(
        "outbox table {0} does not exist (or the role cannot see it): create it (the README's Outbox \
         section has the DDL), or fix the router's table"
    )]
    MissingOutboxTable(TableId),
    #[error(
        "outbox table {0} has no primary key and no replica identity, so PostgreSQL refuses DELETEs on it \
         once it is published: give it a primary key (the event id), or run ALTER TABLE {1} REPLICA IDENTITY FULL"
    )]
    OutboxNoKey(TableId, String),
    #[error(
        "replication slot {slot} was invalidated by PostgreSQL (wal_status = lost): it fell further behind \
         than max_slot_wal_keep_size allows, so PostgreSQL removed WAL it had not delivered. Changes committed \
         since the slot's last confirmed position are gone for every store. To recover: stop Courier, drop the \
         slot (SELECT pg_drop_replication_slot('{slot}')), delete the state directory's snapshot-{slot}.json, \
         and start Courier again: it creates a new slot and snapshots every table anew; then run \
         `courier verify --repair` to remove rows deleted in PostgreSQL while the slot was lost. To keep it \
         from happening again, raise max_slot_wal_keep_size (or set it to -1) and watch \
         courier_slot_safe_wal_bytes"
    )]
    SlotLost { slot: String },
    #[error("source.tables pattern {0:?} matches no table: create one, or fix the pattern")]
    EmptyPattern(String),
    #[error(
        "table {0} has no primary key and no replica identity: add a primary key, or run \
         ALTER TABLE {1} REPLICA IDENTITY FULL (or USING INDEX <unique index>)"
    )]
    NoKey(TableId, String),
    #[error(
        "publication {publication} exists but does not publish {table}, and adding it failed: \
         run ALTER PUBLICATION {publication} ADD TABLE {quoted} as its owner, or use another publication name"
    )]
    PublicationMissingTable {
        publication: String,
        table: TableId,
        quoted: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "publication {publication} publishes other generated columns than source.generated_columns asks, \
         and changing it failed: run {sql} as its owner"
    )]
    PublicationGeneratedColumns {
        publication: String,
        sql: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "publication {publication} is missing or lacks what Courier needs, and source.url points at a \
         standby, where a publication can be neither created nor changed: run {sql} on the primary \
         (the standby receives it through replication), then start Courier again"
    )]
    PublicationOnStandby { publication: String, sql: String },
    #[error(
        "source.generated_columns = true needs PostgreSQL 18 or later (the publication option \
         publish_generated_columns); this server's version is {0}: remove source.generated_columns, or upgrade"
    )]
    GeneratedColumnsNeed18(String),
    #[error(
        "publication {0} does not publish {1}: run ALTER PUBLICATION {0} SET (publish = 'insert, update, delete, truncate')"
    )]
    PublicationOps(String, &'static str),
    #[error(
        "replication slot {slot} uses plugin {plugin:?} on database {database:?}; Courier needs pgoutput on \
         {expected:?}: drop it (SELECT pg_drop_replication_slot('{slot}')) or choose another source.slot"
    )]
    ForeignSlot {
        slot: String,
        plugin: String,
        database: String,
        expected: String,
    },
    #[error(
        "wal_level is {0:?}, logical replication needs \"logical\": run ALTER SYSTEM SET wal_level = logical; \
         then restart PostgreSQL"
    )]
    WalLevel(String),
    #[error(
        "role {0} may not replicate: run ALTER ROLE {0} REPLICATION as a superuser (superuser itself is not needed)"
    )]
    NoReplication(String),
    #[error("{context}: {source}")]
    Query {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl SetupError {
    pub(crate) fn query(
        context: impl Into<String>,
    ) -> impl FnOnce(tokio_postgres::Error) -> SetupError {
        let context = context.into();
        move |source| SetupError::Query { context, source }
    }

    /// Whether retrying later can help (the server was unreachable or restarting).
    pub fn is_retriable(&self) -> bool {
        match self {
            SetupError::Query { source, .. } => source.is_closed() || source.code().is_none(),
            _ => false,
        }
    }
}

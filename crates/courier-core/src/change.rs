use std::sync::Arc;

use crate::{Lsn, Relation, TableId, Value};

/// A row's values, aligned with its relation's columns.
pub type Row = Vec<Value>;

/// What happened to a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Read by a snapshot (envelope `r`).
    Read,
    /// `c`
    Insert,
    /// `u`
    Update,
    /// `d`
    Delete,
    /// The whole table was truncated (`t`); the change has no row.
    Truncate,
}

impl Op {
    /// The Debezium envelope's one-letter code.
    pub fn code(self) -> &'static str {
        match self {
            Op::Read => "r",
            Op::Insert => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Truncate => "t",
        }
    }
}

/// Where an outbox event's source came from (see [`Change::outbox`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutboxSource {
    /// A row change of an outbox table; the change's relation is the
    /// table's.
    Table,
    /// A transactional `pg_logical_emit_message` message; the change's
    /// relation is [`Relation::logical_message`] of the message's prefix
    /// and its row holds the message's content.
    Message,
}

/// One change to one row (or, for [`Op::Truncate`], to a whole table).
///
/// `version` is the commit LSN of the change's transaction, or the consistent
/// point of the snapshot that read it: sinks keep, per row, the change that
/// wins under [`crate::version::incoming_wins`].
///
/// A change's rows always have exactly one value per column of its relation
/// ([`Change::new`] checks it, and nothing can change a row's length or the
/// relation afterwards), so a row may be indexed by column position.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    relation: Arc<Relation>,
    op: Op,
    before: Option<Row>,
    after: Option<Row>,
    version: Lsn,
    xid: u32,
    commit_time_us: i64,
    outbox: Option<OutboxSource>,
}

/// A row whose number of values is not its relation's number of columns.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the {which} row of {table} at LSN {lsn} has {actual} values for {expected} columns")]
pub struct RowShapeError {
    /// The table the row claims to belong to.
    pub table: TableId,
    /// `"before"` or `"after"`.
    pub which: &'static str,
    /// The number of the relation's columns.
    pub expected: usize,
    /// The number of values the row has.
    pub actual: usize,
    /// The change's version.
    pub lsn: Lsn,
}

impl Change {
    /// A change of a row of `relation`, if each row given has one value per
    /// column of the relation; else an error naming table, row, expected
    /// and actual counts.
    ///
    /// `before` is the row before the change: the old row for updates and
    /// deletes when the table's replica identity provides it, else only its
    /// key columns (other columns `Null`), or `None` when PostgreSQL sent
    /// nothing. `after` is the whole row after the change (inserts,
    /// updates, snapshot reads). `xid` is the transaction id (0 for
    /// snapshot reads); `commit_time_us` the commit time in microseconds
    /// since the Unix epoch (snapshot reads: when the snapshot was taken).
    pub fn new(
        relation: Arc<Relation>,
        op: Op,
        before: Option<Row>,
        after: Option<Row>,
        version: Lsn,
        xid: u32,
        commit_time_us: i64,
    ) -> Result<Change, RowShapeError> {
        let expected = relation.columns.len();
        for (which, row) in [("before", &before), ("after", &after)] {
            if let Some(row) = row.as_ref().filter(|r| r.len() != expected) {
                return Err(RowShapeError {
                    table: relation.id.clone(),
                    which,
                    expected,
                    actual: row.len(),
                    lsn: version,
                });
            }
        }
        Ok(Change {
            relation,
            op,
            before,
            after,
            version,
            xid,
            commit_time_us,
            outbox: None,
        })
    }

    /// A TRUNCATE of `relation`'s table: an [`Op::Truncate`] change without rows.
    pub fn truncate(
        relation: Arc<Relation>,
        version: Lsn,
        xid: u32,
        commit_time_us: i64,
    ) -> Change {
        Change {
            relation,
            op: Op::Truncate,
            before: None,
            after: None,
            version,
            xid,
            commit_time_us,
            outbox: None,
        }
    }

    /// A transactional `pg_logical_emit_message` message carrying `content`,
    /// as the source of an outbox event: an [`Op::Insert`] of
    /// `relation` (the prefix's [`Relation::logical_message`]) whose one
    /// value is the content's bytes.
    pub fn logical_message(
        relation: Arc<Relation>,
        content: Vec<u8>,
        version: Lsn,
        xid: u32,
        commit_time_us: i64,
    ) -> Result<Change, RowShapeError> {
        let row = vec![Value::Bytes(content)];
        let change = Change::new(
            relation,
            Op::Insert,
            None,
            Some(row),
            version,
            xid,
            commit_time_us,
        )?;
        Ok(Change {
            outbox: Some(OutboxSource::Message),
            ..change
        })
    }

    /// The change, marked as a row change of an outbox table: the source of
    /// an outbox event, not a change any sink applies as a row.
    pub fn into_outbox_row(self) -> Change {
        Change {
            outbox: Some(OutboxSource::Table),
            ..self
        }
    }

    /// `Some` when the change is the source of an outbox event (a row of an
    /// outbox table, or a logical decoding message): only the outbox routers
    /// of a sink turn it into an event, and no sink applies it as a change
    /// of a table. `None` for the changes of captured tables.
    pub fn outbox(&self) -> Option<OutboxSource> {
        self.outbox
    }

    /// The table's shape when the change was decoded; its columns align
    /// with the values of [`Change::before`] and [`Change::after`].
    pub fn relation(&self) -> &Arc<Relation> {
        &self.relation
    }

    /// What happened to the row.
    pub fn op(&self) -> Op {
        self.op
    }

    /// The row before the change (see [`Change::new`]), one value per column.
    pub fn before(&self) -> Option<&[Value]> {
        self.before.as_deref()
    }

    /// The whole row after the change, one value per column.
    pub fn after(&self) -> Option<&[Value]> {
        self.after.as_deref()
    }

    /// The row after the change, to replace values in place (filling
    /// unchanged TOAST values); its length cannot change.
    pub fn after_mut(&mut self) -> Option<&mut [Value]> {
        self.after.as_deref_mut()
    }

    /// The change's version: its transaction's commit LSN, or the
    /// consistent point of the snapshot that read it.
    pub fn version(&self) -> Lsn {
        self.version
    }

    /// The transaction id, or 0 for snapshot reads.
    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// Commit time in microseconds since the Unix epoch (snapshot reads:
    /// the time the snapshot was taken).
    pub fn commit_time_us(&self) -> i64 {
        self.commit_time_us
    }

    /// Roughly the bytes of the change's values (see [`Value::approx_bytes`]).
    pub fn approx_bytes(&self) -> usize {
        let row = |r: &Option<Row>| r.iter().flatten().map(Value::approx_bytes).sum::<usize>();
        row(&self.before) + row(&self.after)
    }

    /// The row that identifies this change's key: `after` if present, else `before`.
    pub fn key_row(&self) -> Option<&[Value]> {
        self.after().or(self.before())
    }

    /// For an update that changed the row's key (PostgreSQL sends the old
    /// key in `before`): the deletion of the old key, at this change's
    /// version. A store keyed by the primary key applies it just before this
    /// change, so the row moves instead of staying under its old key too.
    pub fn key_move(&self) -> Option<Change> {
        let (before, after) = (self.before()?, self.after()?);
        let mut keys = self.relation.key_indexes().peekable();
        keys.peek()?;
        let keys: Vec<usize> = keys.collect();
        if self.op != Op::Update
            || keys.iter().all(|&k| before[k].is_null())
            || keys.iter().all(|&k| before[k] == after[k])
        {
            return None;
        }
        Some(Change {
            relation: self.relation.clone(),
            op: Op::Delete,
            before: Some(before.to_vec()),
            after: None,
            version: self.version,
            xid: self.xid,
            commit_time_us: self.commit_time_us,
            outbox: self.outbox,
        })
    }

    /// The key values, in key-column order.
    pub fn key_values(&self) -> Option<Vec<&Value>> {
        let row = self.key_row()?;
        // Rows have one value per column (checked by `new`), so every key
        // index is within the row.
        Some(self.relation.key_indexes().map(|i| &row[i]).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Column, PgType};

    fn relation(columns: usize) -> Arc<Relation> {
        let column = |i: usize| Column {
            name: format!("c{i}"),
            type_oid: 20,
            type_modifier: -1,
            type_name: "bigint".into(),
            pg_type: PgType::Int8,
            nullable: i > 0,
            is_key: i == 0,
        };
        Arc::new(Relation {
            oid: 1,
            id: TableId::new("public", "t"),
            columns: (0..columns).map(column).collect(),
        })
    }

    #[test]
    fn a_row_must_have_one_value_per_column() {
        let rel = relation(2);
        let ok = Change::new(
            Arc::clone(&rel),
            Op::Update,
            Some(vec![Value::Int(1), Value::Null]),
            Some(vec![Value::Int(1), Value::Int(2)]),
            Lsn(7),
            1,
            0,
        )
        .unwrap();
        assert_eq!(ok.key_values(), Some(vec![&Value::Int(1)]));

        let short = Change::new(
            Arc::clone(&rel),
            Op::Insert,
            None,
            Some(vec![]),
            Lsn(7),
            1,
            0,
        );
        let err = short.unwrap_err();
        assert_eq!((err.which, err.expected, err.actual), ("after", 2, 0));
        assert_eq!(
            err.to_string(),
            "the after row of public.t at LSN 0/7 has 0 values for 2 columns"
        );

        let long = vec![Value::Int(1), Value::Int(2), Value::Int(3)];
        let err = Change::new(rel, Op::Delete, Some(long), None, Lsn(7), 1, 0).unwrap_err();
        assert_eq!((err.which, err.expected, err.actual), ("before", 2, 3));
    }

    #[test]
    fn outbox_sources_are_marked() {
        let row = Change::new(
            relation(1),
            Op::Insert,
            None,
            Some(vec![Value::Int(1)]),
            Lsn(7),
            1,
            0,
        )
        .unwrap();
        assert_eq!(row.outbox(), None);
        assert_eq!(row.into_outbox_row().outbox(), Some(OutboxSource::Table));

        let rel = Arc::new(Relation::logical_message("orders"));
        assert_eq!(rel.id.to_string(), "pg_logical_emit_message.orders");
        let m = Change::logical_message(rel, b"{}".to_vec(), Lsn(9), 2, 3).unwrap();
        assert_eq!(m.outbox(), Some(OutboxSource::Message));
        assert_eq!((m.op(), m.version(), m.xid()), (Op::Insert, Lsn(9), 2));
        assert_eq!(m.after(), Some(&[Value::Bytes(b"{}".to_vec())][..]));
    }
}

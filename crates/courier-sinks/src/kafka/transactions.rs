//! Debezium's transaction metadata (`transaction_metadata = true`): a BEGIN
//! record before a transaction's first change record, an END record with
//! its counts per table once the stream is complete through its commit, and
//! a `transaction` block (`id`, `total_order`, `data_collection_order`) in
//! every change record between them.
//!
//! A transaction's id is `"<txid>:<commit LSN>"` in all three places.
//! Debezium's PostgreSQL connector writes `"<txid>:<LSN of the message at
//! hand>"`, so its BEGIN, changes and END of one transaction carry
//! different ids that share the `txid` part; Courier's carry one id per
//! transaction, which consumers can join on. Only transactions that change
//! a table the sink selects get records, and snapshot reads carry no block,
//! as with Debezium.

use std::fmt::Write as _;

use courier_core::{write_json_string, Change, Lsn, Op, TableId};

use super::config::Format;

/// The transaction whose records are being written, and what its END
/// record will count. Cloned before a group so a failed group can be
/// retried from the same state.
#[derive(Clone, Debug, Default)]
pub(crate) struct Transactions {
    open: Option<Open>,
}

/// A transaction that had a BEGIN and no END yet.
#[derive(Clone, Debug)]
pub(crate) struct Open {
    pub version: Lsn,
    pub xid: u32,
    pub commit_us: i64,
    id: String,
    total: u64,
    /// Change records per table, in the order first seen.
    tables: Vec<(TableId, u64)>,
}

/// Where one change record stands in its transaction.
pub(crate) struct Step<'a> {
    /// The transaction before it, which no `through` ended.
    pub ended: Option<Open>,
    /// The record is its transaction's first: a BEGIN goes before it.
    pub begins: bool,
    /// The open transaction, counting this record.
    pub open: &'a Open,
    /// The record's order within its table's records of the transaction.
    pub table_order: u64,
}

impl Transactions {
    /// Counts one change record of `change` (not a snapshot read) into its
    /// transaction.
    pub fn record(&mut self, change: &Change) -> Step<'_> {
        let version = change.version();
        let ended = match &self.open {
            Some(open) if open.version != version => self.open.take(),
            _ => None,
        };
        let begins = self.open.is_none();
        let open = self.open.get_or_insert_with(|| Open {
            version,
            xid: change.xid(),
            commit_us: change.commit_time_us(),
            id: format!("{}:{}", change.xid(), version.as_u64()),
            total: 0,
            tables: Vec::new(),
        });
        open.total += 1;
        let id = &change.relation().id;
        let table_order = match open.tables.iter_mut().find(|(t, _)| t == id) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                open.tables.push((id.clone(), 1));
                1
            }
        };
        Step {
            ended,
            begins,
            open,
            table_order,
        }
    }

    /// The open transaction, when a stream complete through `through` holds
    /// all of it (its version is below `through`); it is then closed.
    pub fn end_through(&mut self, through: Lsn) -> Option<Open> {
        match &self.open {
            Some(open) if open.version < through => self.open.take(),
            _ => None,
        }
    }
}

/// Whether `change` gets a `transaction` block (every change but snapshot
/// reads).
pub(crate) fn in_transaction(change: &Change) -> bool {
    change.op() != Op::Read
}

impl Open {
    /// The `transaction` block of the record counted last, with its order in
    /// its table.
    pub fn block(&self, table_order: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(b"{\"id\":");
        write_json_string(out, &self.id);
        let mut num = itoa::Buffer::new();
        out.extend_from_slice(b",\"total_order\":");
        out.extend_from_slice(num.format(self.total).as_bytes());
        out.extend_from_slice(b",\"data_collection_order\":");
        out.extend_from_slice(num.format(table_order).as_bytes());
        out.push(b'}');
    }

    /// The key of the BEGIN and END records: `{"id": ...}`.
    pub fn key(&self, format: Format, out: &mut Vec<u8>) {
        out.clear();
        if format == Format::JsonSchema {
            out.extend_from_slice(KEY_SCHEMA_PREFIX.as_bytes());
        }
        out.extend_from_slice(b"{\"id\":");
        write_json_string(out, &self.id);
        out.push(b'}');
        if format == Format::JsonSchema {
            out.push(b'}');
        }
    }

    /// The BEGIN record's value, or with `end` the END record's, which
    /// counts the records per table.
    pub fn value(&self, end: bool, format: Format, out: &mut Vec<u8>) {
        out.clear();
        if format == Format::JsonSchema {
            out.extend_from_slice(VALUE_SCHEMA_PREFIX.as_bytes());
        }
        out.extend_from_slice(if end {
            b"{\"status\":\"END\",\"id\":"
        } else {
            b"{\"status\":\"BEGIN\",\"id\":"
        });
        write_json_string(out, &self.id);
        if end {
            let mut text = String::new();
            let _ = write!(
                text,
                ",\"event_count\":{},\"data_collections\":[",
                self.total
            );
            out.extend_from_slice(text.as_bytes());
            for (i, (table, n)) in self.tables.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"data_collection\":");
                write_json_string(out, &table.to_string());
                out.extend_from_slice(format!(",\"event_count\":{n}}}").as_bytes());
            }
            out.push(b']');
        } else {
            out.extend_from_slice(b",\"event_count\":null,\"data_collections\":null");
        }
        out.extend_from_slice(
            format!(",\"ts_ms\":{}}}", self.commit_us.div_euclid(1000)).as_bytes(),
        );
        if format == Format::JsonSchema {
            out.push(b'}');
        }
    }
}

/// Connect's schema of the BEGIN and END records' key, as Debezium names it.
const KEY_SCHEMA_PREFIX: &str = concat!(
    r#"{"schema":{"type":"struct","fields":[{"type":"string","optional":false,"field":"id"}],"#,
    r#""optional":false,"name":"io.debezium.connector.common.TransactionMetadataKey","version":1},"#,
    r#""payload":"#
);

/// Connect's schema of the BEGIN and END records' value, as Debezium names it.
const VALUE_SCHEMA_PREFIX: &str = concat!(
    r#"{"schema":{"type":"struct","fields":["#,
    r#"{"type":"string","optional":false,"field":"status"},"#,
    r#"{"type":"string","optional":false,"field":"id"},"#,
    r#"{"type":"int64","optional":true,"field":"event_count"},"#,
    r#"{"type":"array","items":{"type":"struct","fields":["#,
    r#"{"type":"string","optional":false,"field":"data_collection"},"#,
    r#"{"type":"int64","optional":false,"field":"event_count"}],"#,
    r#""optional":true,"name":"event.collection","version":1},"optional":true,"field":"data_collections"},"#,
    r#"{"type":"int64","optional":false,"field":"ts_ms"}],"#,
    r#""optional":false,"name":"io.debezium.connector.common.TransactionMetadataValue","version":1},"#,
    r#""payload":"#
);

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use courier_core::{Column, PgType, Relation, TableId, Value};
    use serde_json::json;

    use super::*;

    fn relation(name: &str) -> Arc<Relation> {
        Arc::new(Relation {
            oid: 1,
            id: TableId::new("public", name),
            columns: vec![Column {
                name: "id".into(),
                type_oid: 20,
                type_modifier: -1,
                type_name: "int8".into(),
                pg_type: PgType::Int8,
                nullable: false,
                is_key: true,
            }],
        })
    }

    fn change(rel: &Arc<Relation>, version: u64, xid: u32) -> Change {
        Change::new(
            Arc::clone(rel),
            Op::Insert,
            None,
            Some(vec![Value::Int(1)]),
            Lsn(version),
            xid,
            1_700_000_000_123_456,
        )
        .unwrap()
    }

    fn json_of(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn records_are_counted_per_transaction_and_table() {
        let (a, b) = (relation("a"), relation("b"));
        let mut txns = Transactions::default();
        let mut block = Vec::new();

        let step = txns.record(&change(&a, 100, 7));
        assert!(step.begins && step.ended.is_none());
        step.open.block(step.table_order, &mut block);
        assert_eq!(
            json_of(&block),
            json!({"id": "7:100", "total_order": 1, "data_collection_order": 1})
        );
        let step = txns.record(&change(&b, 100, 7));
        assert!(!step.begins);
        assert_eq!((step.open.total, step.table_order), (2, 1));
        let step = txns.record(&change(&a, 100, 7));
        assert_eq!((step.open.total, step.table_order), (3, 2));

        // The next transaction's first record ends the one before it.
        let step = txns.record(&change(&b, 200, 8));
        assert!(step.begins);
        let ended = step.ended.expect("transaction 7 ended");
        let mut value = Vec::new();
        ended.value(true, Format::Json, &mut value);
        assert_eq!(
            json_of(&value),
            json!({"status": "END", "id": "7:100", "event_count": 3,
                   "data_collections": [{"data_collection": "public.a", "event_count": 2},
                                        {"data_collection": "public.b", "event_count": 1}],
                   "ts_ms": 1_700_000_000_123i64})
        );

        // A stream complete through 200 holds no more of it; through 201 does.
        assert!(txns.end_through(Lsn(200)).is_none());
        let ended = txns.end_through(Lsn(201)).expect("transaction 8 ended");
        assert_eq!(ended.id, "8:200");
        assert!(txns.end_through(Lsn(300)).is_none(), "ended once");
    }

    #[test]
    fn json_schema_records_carry_debezium_schemas() {
        let a = relation("a");
        let mut txns = Transactions::default();
        let step = txns.record(&change(&a, 100, 7));
        let (mut key, mut value) = (Vec::new(), Vec::new());
        step.open.key(Format::JsonSchema, &mut key);
        step.open.value(false, Format::JsonSchema, &mut value);
        let (key, value) = (json_of(&key), json_of(&value));
        assert_eq!(
            key["schema"]["name"],
            "io.debezium.connector.common.TransactionMetadataKey"
        );
        assert_eq!(key["payload"], json!({"id": "7:100"}));
        assert_eq!(
            value["schema"]["name"],
            "io.debezium.connector.common.TransactionMetadataValue"
        );
        assert_eq!(
            value["payload"],
            json!({"status": "BEGIN", "id": "7:100", "event_count": null,
                   "data_collections": null, "ts_ms": 1_700_000_000_123i64})
        );
        let fields: Vec<&str> = value["schema"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["field"].as_str().unwrap())
            .collect();
        assert_eq!(
            fields,
            ["status", "id", "event_count", "data_collections", "ts_ms"]
        );
    }
}

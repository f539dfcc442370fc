//! Records as Kafka Connect's JsonConverter (`schemas.enable=true`) writes
//! Debezium's PostgreSQL events: `{"schema": ..., "payload": ...}` for the
//! key and the envelope, with Debezium's schema names.

use courier_core::{write_json_string, Change, Relation, Value};
use serde_json::json;

use super::config::DecimalHandling;
use crate::connect::{self, Unrepresentable};
use crate::envelope::SourceInfo;

/// The `allowed` values of Debezium's `source.snapshot` enum.
const SNAPSHOT_VALUES: &str =
    "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental";

/// The schemas of one table's records, serialised once per relation.
pub(crate) struct TableSchemas {
    /// `{"schema":<key struct>,"payload":`
    key_prefix: Vec<u8>,
    /// `{"schema":<envelope struct>,"payload":`
    value_prefix: Vec<u8>,
}

impl TableSchemas {
    /// The schemas of `relation`'s records, named after `prefix` as
    /// Debezium names them (`<prefix>.<schema>.<table>.Key`, `.Value`,
    /// `.Envelope`).
    pub fn new(relation: &Relation, prefix: &str, decimal: DecimalHandling) -> Self {
        let base = format!("{prefix}.{}.{}", relation.id.schema, relation.id.name);
        let field = |i: usize, optional: bool| {
            let c = &relation.columns[i];
            let mut s = connect::type_schema(c, decimal);
            s["optional"] = json!(optional);
            s["field"] = json!(c.name);
            s
        };
        let key_fields: Vec<_> = relation.key_indexes().map(|i| field(i, false)).collect();
        let value_fields: Vec<_> = (0..relation.columns.len())
            .map(|i| field(i, relation.columns[i].nullable))
            .collect();
        let key = json!({
            "type": "struct",
            "fields": key_fields,
            "optional": false,
            "name": format!("{base}.Key"),
        });
        let row = |name: &str| {
            json!({
                "type": "struct",
                "fields": value_fields,
                "optional": true,
                "name": format!("{base}.Value"),
                "field": name,
            })
        };
        let int64 = |name: &str, optional: bool| json!({"type": "int64", "optional": optional, "field": name});
        let string = |name: &str, optional: bool| json!({"type": "string", "optional": optional, "field": name});
        let source = json!({
            "type": "struct",
            "fields": [
                string("version", false),
                string("connector", false),
                string("name", false),
                int64("ts_ms", false),
                {
                    "type": "string", "optional": true, "name": "io.debezium.data.Enum",
                    "version": 1, "parameters": {"allowed": SNAPSHOT_VALUES},
                    "default": "false", "field": "snapshot",
                },
                string("db", false),
                string("sequence", true),
                int64("ts_us", true),
                int64("ts_ns", true),
                string("schema", false),
                string("table", false),
                int64("txId", true),
                int64("lsn", true),
                int64("xmin", true),
            ],
            "optional": false,
            "name": "io.debezium.connector.postgresql.Source",
            "version": 1,
            "field": "source",
        });
        let transaction = json!({
            "type": "struct",
            "fields": [
                string("id", false),
                int64("total_order", false),
                int64("data_collection_order", false),
            ],
            "optional": true,
            "name": "event.block",
            "version": 1,
            "field": "transaction",
        });
        let envelope = json!({
            "type": "struct",
            "fields": [
                row("before"),
                row("after"),
                source,
                string("op", false),
                int64("ts_ms", true),
                int64("ts_us", true),
                int64("ts_ns", true),
                transaction,
            ],
            "optional": false,
            "name": format!("{base}.Envelope"),
            "version": 2,
        });
        let prefix_of = |schema: &serde_json::Value| {
            let mut out = b"{\"schema\":".to_vec();
            out.extend_from_slice(schema.to_string().as_bytes());
            out.extend_from_slice(b",\"payload\":");
            out
        };
        TableSchemas {
            key_prefix: prefix_of(&key),
            value_prefix: prefix_of(&envelope),
        }
    }

    /// Appends the key record of `row` (the key columns of a whole row).
    pub fn write_key(
        &self,
        change: &Change,
        row: &[Value],
        decimal: DecimalHandling,
        out: &mut Vec<u8>,
    ) -> Result<(), Unrepresentable> {
        out.extend_from_slice(&self.key_prefix);
        write_key_payload(change, row, decimal, out)?;
        out.push(b'}');
        Ok(())
    }

    /// Appends the envelope record of `change`, with `transaction` (a
    /// `transaction` block's JSON) or a null one.
    pub fn write_value(
        &self,
        change: &Change,
        source: &SourceInfo,
        now_ms: i64,
        decimal: DecimalHandling,
        transaction: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> Result<(), Unrepresentable> {
        out.extend_from_slice(&self.value_prefix);
        out.extend_from_slice(b"{\"before\":");
        write_row(change, change.before(), decimal, out)?;
        out.extend_from_slice(b",\"after\":");
        write_row(change, change.after(), decimal, out)?;
        let mut num = itoa::Buffer::new();
        out.extend_from_slice(b",\"source\":{\"version\":");
        write_json_string(out, concat!("courier-", env!("CARGO_PKG_VERSION")));
        out.extend_from_slice(b",\"connector\":\"postgresql\",\"name\":");
        write_json_string(out, &source.name);
        let us = change.commit_time_us();
        out.extend_from_slice(b",\"ts_ms\":");
        out.extend_from_slice(num.format(us.div_euclid(1000)).as_bytes());
        out.extend_from_slice(if change.op() == courier_core::Op::Read {
            b",\"snapshot\":\"true\",\"db\":"
        } else {
            b",\"snapshot\":\"false\",\"db\":"
        });
        write_json_string(out, &source.database);
        out.extend_from_slice(b",\"sequence\":null,\"ts_us\":");
        out.extend_from_slice(num.format(us).as_bytes());
        out.extend_from_slice(b",\"ts_ns\":");
        out.extend_from_slice(num.format(i128::from(us) * 1000).as_bytes());
        out.extend_from_slice(b",\"schema\":");
        write_json_string(out, &change.relation().id.schema);
        out.extend_from_slice(b",\"table\":");
        write_json_string(out, &change.relation().id.name);
        out.extend_from_slice(b",\"txId\":");
        out.extend_from_slice(num.format(change.xid()).as_bytes());
        out.extend_from_slice(b",\"lsn\":");
        out.extend_from_slice(num.format(change.version().as_u64()).as_bytes());
        out.extend_from_slice(b",\"xmin\":null},\"op\":\"");
        out.extend_from_slice(change.op().code().as_bytes());
        out.extend_from_slice(b"\",\"ts_ms\":");
        out.extend_from_slice(num.format(now_ms).as_bytes());
        out.extend_from_slice(b",\"ts_us\":");
        out.extend_from_slice(num.format(now_ms * 1000).as_bytes());
        out.extend_from_slice(b",\"ts_ns\":");
        out.extend_from_slice(num.format(i128::from(now_ms) * 1_000_000).as_bytes());
        out.extend_from_slice(b",\"transaction\":");
        out.extend_from_slice(transaction.unwrap_or(b"null"));
        out.extend_from_slice(b"}}");
        Ok(())
    }
}

fn write_row(
    change: &Change,
    row: Option<&[Value]>,
    decimal: DecimalHandling,
    out: &mut Vec<u8>,
) -> Result<(), Unrepresentable> {
    let Some(row) = row else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    out.push(b'{');
    for (i, (c, v)) in change.relation().columns.iter().zip(row).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(out, &c.name);
        out.push(b':');
        if v.is_null() && !c.nullable {
            connect::write_fallback(c, decimal, out);
        } else {
            connect::write_value(c, v, decimal, out)?;
        }
    }
    out.push(b'}');
    Ok(())
}

/// Appends the key columns of `row` as a JSON object, without a schema:
/// the key record's `payload`, and the `__debezium.oldkey` /
/// `__debezium.newkey` headers as a Connect worker's default header
/// converter (`SimpleHeaderConverter`) writes Debezium's key struct there.
pub(crate) fn write_key_payload(
    change: &Change,
    row: &[Value],
    decimal: DecimalHandling,
    out: &mut Vec<u8>,
) -> Result<(), Unrepresentable> {
    let relation = change.relation();
    out.push(b'{');
    for (n, i) in relation.key_indexes().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let c = &relation.columns[i];
        write_json_string(out, &c.name);
        out.push(b':');
        connect::write_value(c, &row[i], decimal, out)?;
    }
    out.push(b'}');
    Ok(())
}

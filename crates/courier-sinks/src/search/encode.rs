//! Row changes → `_bulk` NDJSON: one action line (and, for writes, one
//! document line) per row, versioned by the commit LSN.

use std::collections::HashMap;

use courier_core::{version, write_json_string, Change, Op, Relation, Value};

/// The longest `_id` the servers accept, in bytes.
const MAX_ID_BYTES: usize = 512;

/// One row's write or delete, ready to be encoded (a truncate change
/// deletes the document at the truncate's version).
#[derive(Clone, Debug)]
pub(crate) struct Item<'a> {
    pub change: &'a Change,
    /// The alias (write index) the document goes to.
    pub alias: String,
    /// The document `_id` (the primary key).
    pub id: String,
}

impl Item<'_> {
    /// Appends the item's NDJSON lines to `out`.
    ///
    /// `version_type=external_gte` makes the server apply the item only when
    /// its version is greater than or equal to the stored one: the rule of
    /// [`version::incoming_wins`], which [`collapse`] applies within a batch.
    pub fn write(&self, out: &mut Vec<u8>) {
        let c = self.change;
        let action: &[u8] = if matches!(c.op(), Op::Delete | Op::Truncate) {
            b"{\"delete\":{\"_index\":"
        } else {
            b"{\"index\":{\"_index\":"
        };
        out.extend_from_slice(action);
        write_json_string(out, &self.alias);
        out.extend_from_slice(b",\"_id\":");
        write_json_string(out, &self.id);
        out.extend_from_slice(b",\"version\":");
        out.extend_from_slice(itoa::Buffer::new().format(c.version().as_u64()).as_bytes());
        out.extend_from_slice(b",\"version_type\":\"external_gte\"}}\n");
        if let (Op::Insert | Op::Update | Op::Read, Some(row)) = (c.op(), &c.after()) {
            write_document(c.relation(), row, out);
            out.push(b'\n');
        }
    }
}

/// The row as a JSON object per Courier's type mapping; NULL columns are
/// left out (a search server treats both alike).
pub(crate) fn write_document(rel: &Relation, row: &[Value], out: &mut Vec<u8>) {
    out.push(b'{');
    let mut first = true;
    for (col, v) in rel.columns.iter().zip(row) {
        if v.is_null() {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_json_string(out, &col.name);
        out.push(b':');
        v.write_json(out);
    }
    out.push(b'}');
}

/// The document `_id` of a row: a single key column's value as itself
/// (strings unquoted, numbers in decimal), several key columns as the JSON
/// array of their values, so that different keys never share an `_id`.
pub(crate) fn doc_id(rel: &Relation, row: &[Value]) -> Result<String, String> {
    let keys: Vec<&Value> = rel.key_indexes().map(|i| &row[i]).collect();
    let id = match keys.as_slice() {
        [] => return Err("the table has no primary key or replica identity".into()),
        [v] => match v {
            Value::Null => return Err("the key column is NULL".into()),
            Value::Text(s)
            | Value::Uuid(s)
            | Value::Numeric(s)
            | Value::Date(s)
            | Value::Time(s)
            | Value::Timestamp(s)
            | Value::TimestampTz(s) => s.clone(),
            other => json_text(other),
        },
        many => {
            let mut out = vec![b'['];
            for (i, v) in many.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                v.write_json(&mut out);
            }
            out.push(b']');
            String::from_utf8_lossy(&out).into_owned()
        }
    };
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(format!(
            "the key is {} bytes; a document _id holds 1 to {MAX_ID_BYTES}",
            id.len()
        ));
    }
    Ok(id)
}

fn json_text(v: &Value) -> String {
    let mut out = Vec::new();
    v.write_json(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Keeps, per document, only the change that wins under the version rule
/// ([`version::incoming_wins`]: the greatest version; among equal versions
/// the later one), so that a
/// `_bulk` request holds each document once and items can be retried in
/// any order.
pub(crate) fn collapse<'a>(items: Vec<Item<'a>>) -> Vec<Item<'a>> {
    let mut winner: HashMap<(&str, &str), usize> = HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let key = (item.alias.as_str(), item.id.as_str());
        match winner.get(&key) {
            Some(&j)
                if !version::incoming_wins(items[j].change.version(), item.change.version()) => {}
            _ => {
                winner.insert(key, i);
            }
        }
    }
    let mut keep: Vec<usize> = winner.into_values().collect();
    keep.sort_unstable();
    let mut slots: Vec<Option<Item<'a>>> = items.into_iter().map(Some).collect();
    keep.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// Percent-encodes everything but unreserved characters.
pub(crate) fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compliance::fixtures::{change, table};
    use courier_core::{Column, PgType, TableId};
    use std::sync::Arc;

    #[test]
    fn writes_versioned_bulk_lines() {
        let rel = table("public", "products");
        let c = change(&rel, Op::Update, 7, "Tea", 0x1_0000_0002);
        let item = Item {
            change: &c,
            alias: "products".into(),
            id: "7".into(),
        };
        let mut out = Vec::new();
        item.write(&mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "{\"index\":{\"_index\":\"products\",\"_id\":\"7\",\"version\":4294967298,\"version_type\":\"external_gte\"}}"
        );
        let doc: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(doc["price"], "70.50");
        assert!(doc.get("note").is_none());
        let d = change(&rel, Op::Delete, 7, "", 9);
        let mut out = Vec::new();
        Item {
            change: &d,
            alias: "p".into(),
            id: "7".into(),
        }
        .write(&mut out);
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 1);
    }

    #[test]
    fn composite_keys_are_unambiguous() {
        let col = |name: &str, key: bool| Column {
            name: name.into(),
            type_oid: 25,
            type_modifier: -1,
            type_name: "text".into(),
            pg_type: PgType::Text,
            nullable: !key,
            is_key: key,
        };
        let rel = Arc::new(Relation {
            oid: 1,
            id: TableId::new("s", "t"),
            columns: vec![col("a", true), col("b", true)],
        });
        let id = |a: &str, b: &str| {
            doc_id(&rel, &[Value::Text(a.into()), Value::Text(b.into())]).unwrap()
        };
        assert_eq!(id("x", "y"), "[\"x\",\"y\"]");
        assert_ne!(id("x,", "y"), id("x", ",y"));
        assert_ne!(id("a\",\"b", "c"), id("a", "b\",\"c"));
    }

    #[test]
    fn collapse_keeps_the_winner_per_document() {
        let rel = table("s", "t");
        let cs = [
            change(&rel, Op::Update, 1, "newer", 300),
            change(&rel, Op::Read, 1, "snapshot-older", 250),
            change(&rel, Op::Insert, 2, "first", 400),
            change(&rel, Op::Update, 2, "second", 400),
        ];
        let items = cs
            .iter()
            .map(|c| Item {
                change: c,
                alias: "t".into(),
                id: doc_id(&rel, c.key_row().unwrap()).unwrap(),
            })
            .collect();
        let kept = collapse(items);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].change.version().as_u64(), 300);
        assert_eq!(
            kept[1].change.after().unwrap()[1],
            Value::Text("second".into())
        );
    }
}

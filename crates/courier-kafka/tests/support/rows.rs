//! Changes folded into rows as a store keeps them, and values compared as
//! Courier's type mapping has them.

use std::collections::BTreeMap;

use courier_core::version::incoming_wins;
use courier_core::{Change, Lsn, Op, Value};

/// A row by column name.
pub type Row = BTreeMap<String, Value>;

/// The change's key as JSON (`[1]`).
pub fn key(change: &Change) -> String {
    let values = change.key_values().unwrap_or_default();
    let json: Vec<serde_json::Value> = values.iter().map(|v| v.to_json()).collect();
    serde_json::Value::Array(json).to_string()
}

/// The row of `values` aligned with the change's relation.
pub fn row(change: &Change, values: &[Value]) -> Row {
    change
        .relation()
        .columns
        .iter()
        .zip(values)
        .map(|(c, v)| (c.name.clone(), v.clone()))
        .collect()
}

/// A store applying changes by the version rule: per key, a change
/// replaces what is kept only if `incoming_wins`; deletes leave a
/// tombstone; a truncate removes what it is newer than.
#[derive(Clone, Debug, Default)]
pub struct Store {
    kept: BTreeMap<String, (Lsn, Option<Row>)>,
}

impl Store {
    pub fn apply(&mut self, c: &Change) {
        if c.op() == Op::Truncate {
            for entry in self.kept.values_mut() {
                if incoming_wins(entry.0, c.version()) {
                    *entry = (c.version(), None);
                }
            }
            return;
        }
        let k = key(c);
        if self
            .kept
            .get(&k)
            .is_some_and(|(stored, _)| !incoming_wins(*stored, c.version()))
        {
            return;
        }
        let row = match c.op() {
            Op::Delete => None,
            _ => c.after().map(|a| row(c, a)),
        };
        self.kept.insert(k, (c.version(), row));
    }

    pub fn apply_all<'a>(&mut self, changes: impl IntoIterator<Item = &'a Change>) {
        for c in changes {
            self.apply(c);
        }
    }

    /// The live rows by key.
    pub fn rows(&self) -> BTreeMap<String, Row> {
        self.kept
            .iter()
            .filter_map(|(k, (_, r))| r.clone().map(|r| (k.clone(), r)))
            .collect()
    }
}

/// A value's JSON in Courier's type mapping.
pub fn json(v: &Value) -> String {
    let mut out = Vec::new();
    v.write_json(&mut out);
    String::from_utf8(out).unwrap()
}

/// The value's variant name.
pub fn variant(v: &Value) -> &'static str {
    match v {
        Value::Null => "Null",
        Value::Bool(_) => "Bool",
        Value::Int(_) => "Int",
        Value::Float4(_) => "Float4",
        Value::Float8(_) => "Float8",
        Value::Numeric(_) => "Numeric",
        Value::Text(_) => "Text",
        Value::Bytes(_) => "Bytes",
        Value::Uuid(_) => "Uuid",
        Value::Date(_) => "Date",
        Value::Time(_) => "Time",
        Value::Timestamp(_) => "Timestamp",
        Value::TimestampTz(_) => "TimestampTz",
        Value::Json(_) => "Json",
        Value::Array(items) => {
            if items.iter().any(|i| matches!(i, Value::Array(_))) {
                "Array of arrays"
            } else {
                "Array"
            }
        }
    }
}

/// The same value: the same variant (element variants too) and the same
/// JSON (so NaN equals NaN).
pub fn same(a: &Value, b: &Value) -> bool {
    let elements_agree = match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        _ => true,
    };
    variant(a) == variant(b) && elements_agree && json(a) == json(b)
}

/// `"variant json"`, for messages.
pub fn show(v: &Value) -> String {
    let text = json(v);
    let short: String = text.chars().take(120).collect();
    format!("{} {short}", variant(v))
}

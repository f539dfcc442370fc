//! Folds envelope lines into the rows a sink holds: per key the change with
//! the greatest version, later lines winning ties, deletes removing the row.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// Rows by table, then by key (the `id` column's JSON text).
pub type Rows = BTreeMap<String, BTreeMap<String, Value>>;

/// Reads `path` and folds it.
pub fn fold_file(path: &Path) -> Rows {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    fold_lines(text.lines())
}

/// Folds envelope lines (see module doc). Keys are the `id` column.
pub fn fold_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Rows {
    let mut state: BTreeMap<String, BTreeMap<String, (u64, Option<Value>)>> = BTreeMap::new();
    let mut truncated_at: BTreeMap<String, u64> = BTreeMap::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("bad envelope line ({e}): {line}"));
        let table = format!(
            "{}.{}",
            v["source"]["schema"].as_str().unwrap(),
            v["source"]["table"].as_str().unwrap()
        );
        let version = v["source"]["lsn"].as_u64().unwrap();
        let op = v["op"].as_str().unwrap();
        let rows = state.entry(table.clone()).or_default();
        if op == "t" {
            rows.retain(|_, (ver, _)| *ver > version);
            let t = truncated_at.entry(table).or_default();
            *t = (*t).max(version);
            continue;
        }
        if truncated_at.get(&table).is_some_and(|t| version < *t) {
            continue;
        }
        let row = if op == "d" { &v["before"] } else { &v["after"] };
        let key = row["id"].to_string();
        // An update that changed the key moved the row away from its old key.
        let old = v["before"]["id"].to_string();
        if op == "u" && old != "null" && old != key {
            let entry = rows.entry(old).or_insert((0, None));
            if version >= entry.0 {
                *entry = (version, None);
            }
        }
        let entry = rows.entry(key).or_insert((0, None));
        if version >= entry.0 {
            *entry = (
                version,
                if op == "d" {
                    None
                } else {
                    Some(v["after"].clone())
                },
            );
        }
    }
    state
        .into_iter()
        .map(|(t, rows)| {
            (
                t,
                rows.into_iter()
                    .filter_map(|(k, (_, r))| r.map(|r| (k, r)))
                    .collect(),
            )
        })
        .collect()
}

/// How a store's rows differ from the expected ones, by key.
pub struct RowDiff<'a> {
    /// Expected, not held.
    pub missing: Vec<&'a String>,
    /// Held, not expected.
    pub extra: Vec<&'a String>,
    /// Held with another value.
    pub differing: Vec<&'a String>,
}

impl<'a> RowDiff<'a> {
    pub fn of(expected: &'a BTreeMap<String, Value>, got: &'a BTreeMap<String, Value>) -> Self {
        RowDiff {
            missing: expected.keys().filter(|k| !got.contains_key(*k)).collect(),
            extra: got.keys().filter(|k| !expected.contains_key(*k)).collect(),
            differing: expected
                .keys()
                .filter(|k| got.get(*k).is_some_and(|g| g != &expected[*k]))
                .collect(),
        }
    }
}

//! Change → the single-key Redis command that applies it.

use std::collections::HashMap;
use std::sync::Arc;

use courier_core::{version, Change, Lsn, Op, Relation, SinkError, SinkErrorKind, Value};

use super::config::{Format, Mode};
use super::key::KeyTemplate;
use super::script::{DELETED_FIELD, VERSION_FIELD};

/// The row an upsert stores, per the configured format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fields {
    /// `format = "json"`: the row as one JSON object (the field `row`).
    Json(Vec<u8>),
    /// `format = "hash"`: each non-NULL column's index in the relation and
    /// its value (the column's name is the field).
    Hash(Vec<(usize, Vec<u8>)>),
}

impl Fields {
    /// How many field/value pairs the row has in the hash.
    pub fn len(&self) -> usize {
        match self {
            Fields::Json(_) => 1,
            Fields::Hash(f) => f.len(),
        }
    }
}

/// What to do to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Store the row (field/value pairs) if `version` is not older than the stored one.
    Upsert(Fields),
    /// Leave a tombstone if `version` is not older than the stored one.
    Delete,
    /// Turn a row of a truncated table into a tombstone, under the same
    /// version rule; keys without a version (not Courier's) are left alone.
    Truncate,
    /// Remove the key whatever it holds (`invalidate` mode).
    Unlink,
}

/// One key's command, with what an error message needs (never row values).
#[derive(Clone, Debug)]
pub(crate) struct KeyCommand {
    pub key: Vec<u8>,
    pub action: Action,
    pub version: Lsn,
    pub relation: Arc<Relation>,
}

/// Turns changes into key commands, keeping per key only the change that
/// wins under the version rule ([`version::incoming_wins`]: greatest
/// version, the later change on a tie).
///
/// Applying only the winner is equivalent to applying every change in order,
/// and it makes the commands of one segment independent of each other, so
/// they may run concurrently.
pub(crate) struct Encoder<'a> {
    pub key: &'a KeyTemplate,
    pub mode: Mode,
    pub format: Format,
}

impl Encoder<'_> {
    /// Appends the commands of `changes` (none of which is a truncate).
    pub fn encode(&self, changes: &[&Change]) -> Result<Vec<KeyCommand>, SinkError> {
        let mut all: Vec<KeyCommand> = Vec::with_capacity(changes.len());
        for c in changes {
            self.commands(c, &mut all)?;
        }
        // The winner per key, found without copying keys: the map borrows them.
        let mut keep = vec![false; all.len()];
        {
            let mut winner: HashMap<&[u8], usize> = HashMap::with_capacity(all.len());
            for (i, cmd) in all.iter().enumerate() {
                match winner.get_mut(cmd.key.as_slice()) {
                    Some(w) => {
                        if version::incoming_wins(all[*w].version, cmd.version) {
                            keep[*w] = false;
                            keep[i] = true;
                            *w = i;
                        }
                    }
                    None => {
                        keep[i] = true;
                        winner.insert(&cmd.key, i);
                    }
                }
            }
        }
        if keep.iter().all(|&k| k) {
            return Ok(all);
        }
        let mut keep = keep.into_iter();
        all.retain(|_| keep.next().unwrap_or(false));
        Ok(all)
    }

    fn commands(&self, c: &Change, out: &mut Vec<KeyCommand>) -> Result<(), SinkError> {
        let rel = c.relation();
        let cmd = |key: Vec<u8>, action: Action| KeyCommand {
            key,
            action,
            version: c.version(),
            relation: Arc::clone(rel),
        };
        let missing = || {
            SinkError::new(
                SinkErrorKind::Rejected,
                format!("a {:?} change carries no row to take the key from", c.op()),
            )
            .with_table(&rel.id)
            .with_lsn(c.version())
        };
        if c.op() != Op::Truncate && rel.key_indexes().next().is_none() {
            return Err(SinkError::new(
                SinkErrorKind::Schema,
                "the table has no key columns, so its rows have no Redis key; \
                 give it a primary key or a replica identity index",
            )
            .with_table(&rel.id)
            .with_lsn(c.version()));
        }
        match c.op() {
            Op::Truncate => {}
            Op::Delete => {
                let before = c.before().ok_or_else(missing)?;
                out.push(cmd(self.key_of(rel, before), self.removal()));
            }
            Op::Insert | Op::Update | Op::Read => {
                let after = c.after().ok_or_else(missing)?;
                let key = self.key_of(rel, after);
                // An update that changed the key moves the row: the old key goes.
                if let Some(before) = c.before() {
                    let old = self.key_of(rel, before);
                    if old != key && rel.key_indexes().any(|i| !before[i].is_null()) {
                        out.push(cmd(old, self.removal()));
                    }
                }
                let action = match self.mode {
                    Mode::Invalidate => Action::Unlink,
                    Mode::Upsert => Action::Upsert(self.fields(c, after)?),
                };
                out.push(cmd(key, action));
            }
        }
        Ok(())
    }

    fn removal(&self) -> Action {
        match self.mode {
            Mode::Invalidate => Action::Unlink,
            Mode::Upsert => Action::Delete,
        }
    }

    fn key_of(&self, rel: &Relation, row: &[Value]) -> Vec<u8> {
        let pk: Vec<&Value> = rel.key_indexes().map(|i| &row[i]).collect();
        self.key.render(&rel.id, &pk)
    }

    fn fields(&self, c: &Change, row: &[Value]) -> Result<Fields, SinkError> {
        let rel = c.relation();
        match self.format {
            Format::Json => Ok(Fields::Json(row_json(rel, row))),
            Format::Hash => {
                let mut fields = Vec::with_capacity(row.len());
                for (i, (col, v)) in rel.columns.iter().zip(row).enumerate() {
                    if col.name == VERSION_FIELD || col.name == DELETED_FIELD {
                        return Err(SinkError::new(SinkErrorKind::Config, format!(
                            "column {:?} has a name the hash format reserves; use format = \"json\"",
                            col.name
                        ))
                        .with_table(&rel.id)
                        .with_lsn(c.version()));
                    }
                    if !v.is_null() {
                        fields.push((i, hash_field(v)));
                    }
                }
                Ok(Fields::Hash(fields))
            }
        }
    }
}

/// The row as one JSON object, `{"column": value, ...}`, per the type mapping.
pub(crate) fn row_json(rel: &Relation, row: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + row.len() * 16);
    out.push(b'{');
    for (i, (col, v)) in rel.columns.iter().zip(row).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        courier_core::write_json_string(&mut out, &col.name);
        out.push(b':');
        v.write_json(&mut out);
    }
    out.push(b'}');
    out
}

/// A hash field's value: the value's JSON form, without the quotes when it
/// is a JSON string (so `HGET key name` gives `Tea`, not `"Tea"`).
pub(crate) fn hash_field(v: &Value) -> Vec<u8> {
    match v {
        Value::Numeric(s)
        | Value::Text(s)
        | Value::Uuid(s)
        | Value::Date(s)
        | Value::Time(s)
        | Value::Timestamp(s)
        | Value::TimestampTz(s) => s.as_bytes().to_vec(),
        other => {
            let mut json = Vec::new();
            other.write_json(&mut json);
            match json.as_slice() {
                [b'"', inner @ .., b'"']
                    if matches!(other, Value::Bytes(_) | Value::Float4(_) | Value::Float8(_)) =>
                {
                    inner.to_vec()
                }
                _ => json,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compliance::fixtures::{change, table};

    #[test]
    fn keeps_the_winning_change_per_key() {
        let rel = table("public", "t");
        let key = KeyTemplate::parse("{table}:{pk}").unwrap();
        let enc = Encoder {
            key: &key,
            mode: Mode::Upsert,
            format: Format::Json,
        };
        let a = change(&rel, Op::Insert, 1, "first", 10);
        let b = change(&rel, Op::Update, 1, "second", 10);
        let old = change(&rel, Op::Update, 1, "older", 5);
        let other = change(&rel, Op::Insert, 2, "x", 1);
        let cmds = enc.encode(&[&a, &b, &old, &other]).unwrap();
        assert_eq!(cmds.len(), 2);
        assert_eq!(cmds[0].key, b"t:1");
        let Action::Upsert(Fields::Json(json)) = &cmds[0].action else {
            panic!("expected an upsert of a JSON row")
        };
        let row: serde_json::Value = serde_json::from_slice(json).unwrap();
        assert_eq!(row["name"], "second");
    }

    #[test]
    fn a_table_without_key_columns_is_a_clear_error() {
        let mut rel = (*table("public", "t")).clone();
        rel.columns[0].is_key = false;
        let rel = std::sync::Arc::new(rel);
        let key = KeyTemplate::parse("{table}:{pk}").unwrap();
        let enc = Encoder {
            key: &key,
            mode: Mode::Upsert,
            format: Format::Json,
        };
        let err = enc
            .encode(&[&change(&rel, Op::Insert, 1, "x", 9)])
            .unwrap_err();
        assert!(!err.is_retriable());
        assert!(err.to_string().contains("no key columns"), "{err}");
        assert!(err.to_string().contains("public.t"), "{err}");
    }

    #[test]
    fn hash_fields_drop_quotes_of_strings_only() {
        assert_eq!(hash_field(&Value::Text("Tea".into())), b"Tea");
        assert_eq!(hash_field(&Value::Int(3)), b"3");
        assert_eq!(hash_field(&Value::Bool(true)), b"true");
        assert_eq!(hash_field(&Value::Float8(f64::NAN)), b"NaN");
        assert_eq!(hash_field(&Value::Bytes(vec![1, 2])), b"AQI=");
        assert_eq!(
            hash_field(&Value::Json("{\"a\":\"b\"}".into())),
            b"{\"a\":\"b\"}"
        );
        assert_eq!(
            hash_field(&Value::Array(vec![Value::Text("x".into())])),
            b"[\"x\"]"
        );
    }
}

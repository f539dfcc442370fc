//! The reference model of the version rule: what a compliant sink holds.

use std::collections::{BTreeMap, BTreeSet};

use courier_core::{version, Change, Lsn, Op, Row, Value};

/// Per key `id`: the greatest version seen and the row (`None` = deleted).
#[derive(Default)]
pub(super) struct Model {
    rows: BTreeMap<i64, (Lsn, Option<Row>)>,
    seen: BTreeSet<i64>,
    truncate_tombstones: bool,
}

impl Model {
    /// A model whose truncates leave tombstones (older writes stay deleted)
    /// when `tombstones`, or forget the rows otherwise.
    pub fn with_truncate_tombstones(tombstones: bool) -> Self {
        Model {
            truncate_tombstones: tombstones,
            ..Model::default()
        }
    }

    pub fn apply(&mut self, c: &Change) {
        // An outbox event's source is never a row of the sink's tables; its
        // key is still read back, to see that it stays absent.
        if c.outbox().is_some() {
            if let Some(Value::Int(id)) = c.key_row().map(|r| &r[0]) {
                self.seen.insert(*id);
            }
            return;
        }
        if c.op() == Op::Truncate {
            let v = c.version();
            if self.truncate_tombstones {
                for entry in self.rows.values_mut() {
                    if version::incoming_wins(entry.0, v) {
                        *entry = (v, None);
                    }
                }
            } else {
                self.rows
                    .retain(|_, (ver, _)| !version::incoming_wins(*ver, v));
            }
            return;
        }
        // An update that changed the key first deletes the old key.
        if let (Op::Update, Some(Value::Int(old)), Some(Value::Int(new))) =
            (c.op(), c.before().map(|r| &r[0]), c.after().map(|r| &r[0]))
        {
            if old != new {
                self.put(*old, c.version(), None);
            }
        }
        let Some(Value::Int(id)) = c.key_row().map(|r| &r[0]) else {
            return;
        };
        let id = *id;
        self.seen.insert(id);
        if let Some((stored, _)) = self.rows.get(&id) {
            if !version::incoming_wins(*stored, c.version()) {
                return;
            }
        }
        let row = match c.op() {
            Op::Delete => None,
            _ => c.after().map(<[Value]>::to_vec),
        };
        self.rows.insert(id, (c.version(), row));
    }

    /// `row` (`None`: deleted) for key `id` at `version`, if it wins.
    fn put(&mut self, id: i64, version: Lsn, row: Option<Row>) {
        self.seen.insert(id);
        if let Some((stored, _)) = self.rows.get(&id) {
            if !version::incoming_wins(*stored, version) {
                return;
            }
        }
        self.rows.insert(id, (version, row));
    }

    /// Every key seen, with the row a compliant sink returns for it.
    pub fn rows(&self) -> Vec<(i64, Option<Row>)> {
        self.seen
            .iter()
            .map(|id| (*id, self.rows.get(id).and_then(|(_, r)| r.clone())))
            .collect()
    }
}

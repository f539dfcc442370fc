//! Choosing, per row key, the change a block of inserted rows keeps.

use courier_core::{version, Change};
use hashbrown::HashTable;

/// Per key, the change that wins the version rule
/// ([`version::incoming_wins`]): the greatest version, the later in stream
/// order among equals. Keys are encoded bytes, kept in one
/// buffer so that offering a change allocates nothing per row.
pub(crate) struct Winners<'a> {
    changes: Vec<&'a Change>,
    /// Where each winner's key lies in `keys`.
    spans: Vec<(usize, usize)>,
    keys: Vec<u8>,
    /// Indexes into `changes`, by key.
    table: HashTable<usize>,
    hasher: foldhash::fast::FixedState,
}

impl<'a> Winners<'a> {
    pub fn with_capacity(n: usize) -> Self {
        Winners {
            changes: Vec::with_capacity(n),
            spans: Vec::with_capacity(n),
            keys: Vec::new(),
            table: HashTable::with_capacity(n),
            hasher: foldhash::fast::FixedState::default(),
        }
    }

    /// Offers the change `c` for the row whose encoded key is `key`; changes
    /// must be offered in stream order.
    pub fn offer(&mut self, key: &[u8], c: &'a Change) {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(key);
        let (keys, spans) = (&self.keys, &self.spans);
        let found = self
            .table
            .find(hash, |&i| &keys[spans[i].0..spans[i].1] == key)
            .copied();
        match found {
            Some(i) => {
                if version::incoming_wins(self.changes[i].version(), c.version()) {
                    self.changes[i] = c;
                }
            }
            None => {
                let start = self.keys.len();
                self.keys.extend_from_slice(key);
                self.spans.push((start, self.keys.len()));
                self.changes.push(c);
                let (keys, spans) = (&self.keys, &self.spans);
                let hasher = &self.hasher;
                self.table
                    .insert_unique(hash, self.changes.len() - 1, |&i| {
                        hasher.hash_one(&keys[spans[i].0..spans[i].1])
                    });
            }
        }
    }

    /// The winning changes, in the order their keys first appeared.
    pub fn into_changes(self) -> Vec<&'a Change> {
        self.changes
    }
}

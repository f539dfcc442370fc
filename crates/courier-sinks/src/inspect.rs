//! Reading a store back, for `courier verify`: what a sink should hold for a
//! row, and what it holds.
//!
//! Each store addresses a row its own way (a Redis key, a document `_id`)
//! and holds it in its own form (a JSON string, hash fields, a `_source`).
//! An [`Inspector`] states both for its sink: [`Inspector::expect`] renders a
//! source row the way the sink would write it, [`Inspector::scan`] and
//! [`Inspector::read`] read what the store holds. Both sides are reduced to
//! a [`Digest`] of the same canonical form, so a comparison never depends on
//! field order or on how a store spells NULL, and a large table is compared
//! without keeping its rows.

use std::hash::{Hash, Hasher};

use async_trait::async_trait;
use courier_core::{Batch, Lsn, Relation, SinkError, TableId, Value};
use serde_json::Value as Json;

/// A 64-bit digest of a row's stored form; equal rows have equal digests.
pub type Digest = u64;

/// One row as a store holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRow {
    /// Where the store keeps it, in the store's own terms (a Redis key, a
    /// document `_id`); what reports show, never the values.
    pub address: Vec<u8>,
    /// The version it was written with (the change's commit LSN).
    pub version: Lsn,
    /// The digest of its contents; `None` for a tombstone.
    pub digest: Option<Digest>,
    /// The key columns' values as the store holds them (JSON, per the type
    /// mapping), when it holds them: what repairing a row the source no
    /// longer has deletes by.
    pub key: Option<Vec<Json>>,
}

/// What the store should hold for one source row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedRow {
    pub address: Vec<u8>,
    pub digest: Digest,
}

/// A page of stored rows handed to a scan's caller.
pub type Page<'a> = &'a mut (dyn FnMut(Vec<StoredRow>) + Send);

/// A page of expected rows handed to [`Inspector::staged`]'s caller.
pub type ExpectedPage<'a> = &'a mut (dyn FnMut(Vec<ExpectedRow>) + Send);

/// A store read back for verification. Implemented next to each sink that
/// keeps rows (not by the sinks that only pass changes on).
#[async_trait]
pub trait Inspector: Send + Sync {
    /// Whether the sink receives this table (its `tables` setting).
    fn includes(&self, table: &TableId) -> bool;

    /// Whether the store keeps the rows it is sent (an invalidating cache
    /// deletes them instead), so that they can be rewritten by a rebuild.
    fn keeps_rows(&self) -> bool {
        true
    }

    /// Why verifying this sink's contents would mean nothing, when it would
    /// (an invalidating cache holds only what applications put back).
    fn unverifiable(&self) -> Option<String> {
        None
    }

    /// Where and how the sink would store `row` of `relation`. A store that
    /// can only tell by storing it ([`Inspector::stages`]) gives the
    /// address, and a digest that means nothing.
    fn expect(&self, relation: &Relation, row: &[Value]) -> Result<ExpectedRow, String>;

    /// Whether what the store would hold is learnt by writing the snapshot
    /// into a scratch copy of the store ([`Inspector::stage`]) and reading it
    /// back the way the store itself is read ([`Inspector::staged`]): for a
    /// store whose own rendering of a value (a server's column types) is not
    /// Courier's to reproduce.
    fn stages(&self) -> bool {
        false
    }

    /// Writes snapshot rows of `relation` into the scratch copy (the first
    /// call after [`Inspector::unstage`] starts it empty).
    async fn stage(&mut self, relation: &Relation, batch: &Batch) -> Result<(), SinkError> {
        let _ = (relation, batch);
        Ok(())
    }

    /// What the scratch copy holds for `relation`, a page at a time.
    async fn staged(
        &mut self,
        relation: &Relation,
        page: ExpectedPage<'_>,
    ) -> Result<(), SinkError> {
        let _ = (relation, page);
        Ok(())
    }

    /// Removes the scratch copy of `relation`.
    async fn unstage(&mut self, relation: &Relation) -> Result<(), SinkError> {
        let _ = relation;
        Ok(())
    }

    /// Every row the store holds for `relation`, tombstones included where
    /// the store keeps them, handed to `page` a page at a time.
    async fn scan(&mut self, relation: &Relation, page: Page<'_>) -> Result<(), SinkError>;

    /// The rows at `addresses` (`None` where the store holds nothing), in
    /// the same order.
    async fn read(
        &mut self,
        relation: &Relation,
        addresses: &[Vec<u8>],
    ) -> Result<Vec<Option<StoredRow>>, SinkError>;
}

/// The digest of a JSON object with its NULL members left out (stores
/// differ in whether they keep them), independent of member order.
pub fn object_digest(object: &serde_json::Map<String, Json>) -> Digest {
    let mut h = std::hash::DefaultHasher::new();
    hash_object(object, true, &mut h);
    h.finish()
}

/// The digest of a row held as named text fields (a Redis hash): the
/// fields sorted by name.
pub fn fields_digest<'a>(fields: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Digest {
    let mut fields: Vec<_> = fields.collect();
    fields.sort_unstable();
    let mut h = std::hash::DefaultHasher::new();
    for (name, value) in fields {
        name.hash(&mut h);
        value.hash(&mut h);
    }
    h.finish()
}

fn hash_object(object: &serde_json::Map<String, Json>, skip_nulls: bool, h: &mut impl Hasher) {
    let mut members: Vec<_> = object
        .iter()
        .filter(|(_, v)| !(skip_nulls && v.is_null()))
        .collect();
    members.sort_unstable_by(|a, b| a.0.cmp(b.0));
    h.write_u8(b'{');
    for (k, v) in members {
        k.hash(h);
        hash_json(v, h);
    }
    h.write_u8(b'}');
}

fn hash_json(v: &Json, h: &mut impl Hasher) {
    match v {
        Json::Null => h.write_u8(0),
        Json::Bool(b) => {
            h.write_u8(1);
            b.hash(h);
        }
        // The number's text: 1 and 1.0 are different values in a store.
        Json::Number(n) => {
            h.write_u8(2);
            n.to_string().hash(h);
        }
        Json::String(s) => {
            h.write_u8(3);
            s.hash(h);
        }
        Json::Array(items) => {
            h.write_u8(4);
            h.write_usize(items.len());
            for i in items {
                hash_json(i, h);
            }
        }
        Json::Object(o) => {
            h.write_u8(5);
            hash_object(o, false, h);
        }
    }
}

/// The key columns of `relation` taken from a stored JSON object, in key
/// order; `None` when one is missing.
pub fn key_from_object(
    relation: &Relation,
    object: &serde_json::Map<String, Json>,
) -> Option<Vec<Json>> {
    relation
        .key_indexes()
        .map(|i| object.get(&relation.columns[i].name).cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Json) -> serde_json::Map<String, Json> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn member_order_and_nulls_do_not_change_the_digest() {
        let a = obj(json!({"id": 1, "name": "x", "note": null}));
        let b = obj(json!({"name": "x", "id": 1}));
        assert_eq!(object_digest(&a), object_digest(&b));
    }

    #[test]
    fn a_changed_value_or_type_changes_the_digest() {
        let a = obj(json!({"id": 1, "price": "1.50"}));
        for other in [
            json!({"id": 1, "price": "1.5"}),
            json!({"id": 1, "price": 1.5}),
            json!({"id": 2, "price": "1.50"}),
            json!({"id": 1}),
            json!({"id": 1, "price": "1.50", "extra": true}),
        ] {
            assert_ne!(
                object_digest(&a),
                object_digest(&obj(other.clone())),
                "{other}"
            );
        }
    }

    #[test]
    fn nulls_inside_nested_documents_count() {
        let a = obj(json!({"doc": {"a": null}}));
        let b = obj(json!({"doc": {}}));
        assert_ne!(object_digest(&a), object_digest(&b));
    }

    #[test]
    fn field_order_does_not_change_a_hash_digest() {
        let a = [(&b"a"[..], &b"1"[..]), (&b"b"[..], &b"2"[..])];
        let b = [(&b"b"[..], &b"2"[..]), (&b"a"[..], &b"1"[..])];
        assert_eq!(
            fields_digest(a.iter().copied()),
            fields_digest(b.iter().copied())
        );
        let c = [(&b"a"[..], &b"1"[..]), (&b"b"[..], &b"3"[..])];
        assert_ne!(
            fields_digest(a.iter().copied()),
            fields_digest(c.iter().copied())
        );
    }
}

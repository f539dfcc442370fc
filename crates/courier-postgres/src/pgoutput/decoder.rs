//! The stateful decoder: pgoutput messages in, Courier events out.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use courier_core::{Change, Column, Lsn, Op, PgType, Relation, TableId};

use super::message::{self, Message, OldTuple, RelationMessage, Update};
use super::toast::{ToastGap, ToastReader};
use super::{tuple, DecodeError};
use crate::catalog::Catalog;

/// What one pgoutput message means for Courier.
#[derive(Clone, Debug, PartialEq)]
pub enum DecodedEvent {
    /// A transaction starts; its changes follow.
    Begin {
        final_lsn: Lsn,
        xid: u32,
        commit_time_us: i64,
    },
    /// A row change. Its version is the transaction's commit LSN.
    Change(Change),
    /// Only from a decoder that defers TOAST re-reads
    /// ([`Decoder::defer_toast_reads`]): an update whose unchanged TOAST
    /// columns are `Null` until [`Decoder::fill_toast`] fills them.
    PartialChange(Change, ToastGap),
    /// One [`Op::Truncate`] change per truncated table.
    Truncate(Vec<Change>),
    /// The transaction ends; `end_lsn` is where the stream may resume.
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time_us: i64,
    },
    /// A `pg_logical_emit_message` message whose prefix is not an outbox
    /// source (transactional ones arrive between Begin and Commit). A
    /// transactional message of an outbox prefix arrives as a
    /// [`DecodedEvent::Change`] instead (see [`Decoder::route_outbox`]).
    Message {
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Bytes,
    },
    /// A table seen for the first time, or whose shape changed (columns
    /// added, dropped, retyped). Later changes of the table carry it.
    Relation(Arc<Relation>),
    /// A non-transactional message of an outbox prefix: it belongs to no
    /// transaction (PostgreSQL writes it even when the transaction that
    /// emitted it rolls back), so it cannot be an outbox event and is left
    /// out; the caller counts it.
    UnroutableMessage { prefix: String, lsn: Lsn },
}

/// The parts of the stream that are sources of outbox events rather than
/// changes of captured tables: the outbox tables, and the prefixes of the
/// `pg_logical_emit_message` messages routed as events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboxSources {
    pub tables: HashSet<TableId>,
    pub prefixes: HashSet<String>,
}

/// The transaction being decoded.
#[derive(Clone, Copy)]
struct Transaction {
    final_lsn: Lsn,
    xid: u32,
    commit_time_us: i64,
}

/// Turns pgoutput messages of one replication stream into [`DecodedEvent`]s.
///
/// Every change it returns holds whole rows: unchanged TOAST values are
/// filled from the old row or re-read through the catalog's connection
/// (DESIGN §1.5), at once or, when deferred, for many changes together.
pub struct Decoder {
    catalog: Catalog,
    relations: HashMap<u32, Arc<Relation>>,
    toast: ToastReader,
    defer_toast: bool,
    transaction: Option<Transaction>,
    outbox_tables: HashSet<TableId>,
    /// The relations of the stream that are outbox tables.
    outbox_oids: HashSet<u32>,
    /// The relation of each outbox prefix's messages.
    outbox_prefixes: HashMap<String, Arc<Relation>>,
}

impl Decoder {
    /// A decoder that resolves types, keys and TOAST values through `catalog`.
    pub fn new(catalog: Catalog) -> Self {
        Decoder {
            catalog,
            relations: HashMap::new(),
            toast: ToastReader::default(),
            defer_toast: false,
            transaction: None,
            outbox_tables: HashSet::new(),
            outbox_oids: HashSet::new(),
            outbox_prefixes: HashMap::new(),
        }
    }

    /// Makes the decoder mark the changes of the outbox tables as outbox
    /// sources ([`Change::into_outbox_row`]), and return each transactional
    /// message of an outbox prefix as a change of its own
    /// ([`Change::logical_message`]), in its place in the transaction.
    pub fn route_outbox(mut self, sources: OutboxSources) -> Self {
        self.outbox_prefixes = sources
            .prefixes
            .into_iter()
            .map(|p| {
                let relation = Arc::new(Relation::logical_message(&p));
                (p, relation)
            })
            .collect();
        self.outbox_tables = sources.tables;
        self
    }

    /// Makes the decoder return updates that lack unchanged TOAST values as
    /// [`DecodedEvent::PartialChange`] instead of re-reading each row as it
    /// comes: the caller collects them and fills them together with
    /// [`Decoder::fill_toast`] before handing the changes on.
    pub fn defer_toast_reads(mut self) -> Self {
        self.defer_toast = true;
        self
    }

    /// Fills the unchanged TOAST columns of `changes[i]` for every
    /// `(i, gap)` of `gaps`, with one query per table and set of columns.
    pub async fn fill_toast(
        &mut self,
        changes: &mut [Change],
        gaps: &[(usize, ToastGap)],
    ) -> Result<(), DecodeError> {
        self.toast.fill(self.catalog.client(), changes, gaps).await
    }

    /// The current shape of the relation with this OID, once the stream described it.
    pub fn relation(&self, oid: u32) -> Option<&Arc<Relation>> {
        self.relations.get(&oid)
    }

    /// Decodes one message (the payload of an XLogData). `None` for messages
    /// that carry nothing for Courier (origins, types, unchanged relations).
    pub async fn decode(&mut self, data: Bytes) -> Result<Option<DecodedEvent>, DecodeError> {
        Ok(match message::parse(data)? {
            Message::Begin(b) => {
                self.transaction = Some(Transaction {
                    final_lsn: b.final_lsn,
                    xid: b.xid,
                    commit_time_us: b.commit_time_us,
                });
                Some(DecodedEvent::Begin {
                    final_lsn: b.final_lsn,
                    xid: b.xid,
                    commit_time_us: b.commit_time_us,
                })
            }
            Message::Commit(c) => {
                self.transaction = None;
                Some(DecodedEvent::Commit {
                    commit_lsn: c.commit_lsn,
                    end_lsn: c.end_lsn,
                    commit_time_us: c.commit_time_us,
                })
            }
            Message::Origin(_) | Message::Type(_) => None,
            Message::Relation(r) => self.on_relation(r).await?,
            Message::Insert(i) => {
                let (relation, txn) = self.context(i.relation_oid)?;
                let decoded = tuple::decode(&relation, &i.new, txn.final_lsn)?;
                if !decoded.unchanged.is_empty() {
                    return Err(DecodeError::Protocol {
                        lsn: txn.final_lsn,
                        reason: "an insert with an unchanged TOAST value",
                    });
                }
                let after = decoded.row;
                let c = change(relation, Op::Insert, None, Some(after), txn)?;
                Some(DecodedEvent::Change(self.mark(c)))
            }
            Message::Update(u) => Some(self.on_update(u).await?),
            Message::Delete(d) => {
                let (relation, txn) = self.context(d.relation_oid)?;
                let before = tuple::decode(&relation, d.old.tuple(), txn.final_lsn)?.row;
                let c = change(relation, Op::Delete, Some(before), None, txn)?;
                Some(DecodedEvent::Change(self.mark(c)))
            }
            Message::Truncate(t) => {
                let mut changes = Vec::with_capacity(t.relation_oids.len());
                for oid in t.relation_oids {
                    let (relation, txn) = self.context(oid)?;
                    let c = Change::truncate(relation, txn.final_lsn, txn.xid, txn.commit_time_us);
                    changes.push(self.mark(c));
                }
                Some(DecodedEvent::Truncate(changes))
            }
            Message::Logical(m) => self.on_message(m)?,
        })
    }

    /// The change, marked as an outbox source when its table is one.
    fn mark(&self, change: Change) -> Change {
        if self.outbox_oids.contains(&change.relation().oid) {
            change.into_outbox_row()
        } else {
            change
        }
    }

    fn on_message(&self, m: message::LogicalMessage) -> Result<Option<DecodedEvent>, DecodeError> {
        let Some(relation) = self.outbox_prefixes.get(&m.prefix) else {
            return Ok(Some(DecodedEvent::Message {
                transactional: m.transactional,
                lsn: m.lsn,
                prefix: m.prefix,
                content: m.content,
            }));
        };
        if !m.transactional {
            return Ok(Some(DecodedEvent::UnroutableMessage {
                prefix: m.prefix,
                lsn: m.lsn,
            }));
        }
        let txn = self.transaction.ok_or(DecodeError::Protocol {
            lsn: m.lsn,
            reason: "a transactional message outside a transaction",
        })?;
        let c = Change::logical_message(
            Arc::clone(relation),
            m.content.to_vec(),
            txn.final_lsn,
            txn.xid,
            txn.commit_time_us,
        )?;
        Ok(Some(DecodedEvent::Change(c)))
    }

    /// The relation and transaction a row change belongs to.
    fn context(&self, oid: u32) -> Result<(Arc<Relation>, Transaction), DecodeError> {
        let txn = self.transaction.ok_or(DecodeError::Protocol {
            lsn: Lsn::ZERO,
            reason: "row change outside a transaction",
        })?;
        let relation = self
            .relations
            .get(&oid)
            .ok_or(DecodeError::UnknownRelation {
                oid,
                lsn: txn.final_lsn,
            })?;
        Ok((Arc::clone(relation), txn))
    }

    async fn on_update(&mut self, u: Update) -> Result<DecodedEvent, DecodeError> {
        let (relation, txn) = self.context(u.relation_oid)?;
        let lsn = txn.final_lsn;
        let old = match &u.old {
            // Values an old row could not carry stay null in `before`.
            Some(old) => Some(tuple::decode(&relation, old.tuple(), lsn)?.row),
            None => None,
        };
        let decoded = tuple::decode(&relation, &u.new, lsn)?;
        let mut after = decoded.row;
        let mut missing = decoded.unchanged;
        if let (Some(OldTuple::Full(old_tuple)), Some(old_row)) = (&u.old, &old) {
            missing.retain(|&i| {
                if matches!(old_tuple[i], message::TupleValue::UnchangedToast) {
                    return true;
                }
                after[i] = old_row[i].clone();
                false
            });
        }
        let mut change = self.mark(change(relation, Op::Update, old, Some(after), txn)?);
        if missing.is_empty() {
            return Ok(DecodedEvent::Change(change));
        }
        let gap = ToastGap::new(
            change.relation(),
            &u.new,
            u.old.as_ref().map(OldTuple::tuple),
            missing,
            lsn,
        )?;
        if self.defer_toast {
            return Ok(DecodedEvent::PartialChange(change, gap));
        }
        self.fill_toast(std::slice::from_mut(&mut change), &[(0, gap)])
            .await?;
        Ok(DecodedEvent::Change(change))
    }

    async fn on_relation(
        &mut self,
        message: RelationMessage,
    ) -> Result<Option<DecodedEvent>, DecodeError> {
        let relation = self.build_relation(message).await?;
        if self
            .relations
            .get(&relation.oid)
            .is_some_and(|known| **known == relation)
        {
            return Ok(None);
        }
        let relation = Arc::new(relation);
        // A table renamed into or out of an outbox table's name changes role.
        if self.outbox_tables.contains(&relation.id) {
            self.outbox_oids.insert(relation.oid);
        } else {
            self.outbox_oids.remove(&relation.oid);
        }
        self.toast.forget(relation.oid);
        self.relations.insert(relation.oid, Arc::clone(&relation));
        Ok(Some(DecodedEvent::Relation(relation)))
    }

    /// The stream's column list, order and types are the truth; the catalog
    /// adds keys, nullability and the meaning of user-defined types. The
    /// catalog describes the table as it is now, which may be newer than
    /// the stream: columns it no longer knows fall back to the message's
    /// replica identity flags.
    async fn build_relation(&mut self, message: RelationMessage) -> Result<Relation, DecodeError> {
        let info = self.catalog.table_columns(message.oid).await?;
        let mut columns = Vec::with_capacity(message.columns.len());
        for c in message.columns {
            // Keys and nullability by name; the SQL type name only while the
            // catalog still has the stream's type.
            let known = info.as_ref().and_then(|info| info.column(&c.name));
            let same_type =
                known.filter(|k| k.type_oid == c.type_oid && k.type_modifier == c.type_modifier);
            let (pg_type, type_name) = match (PgType::from_builtin_oid(c.type_oid), same_type) {
                (Some(t), Some(k)) => (t, k.type_name.clone()),
                (_, same_type) => {
                    let resolved = self.catalog.resolve_type(c.type_oid).await?;
                    let name = same_type.map_or(resolved.name, |k| k.type_name.clone());
                    (resolved.pg_type, name)
                }
            };
            let is_key = known.map_or(c.is_key, |k| k.is_key);
            columns.push(Column {
                nullable: !is_key && !known.is_some_and(|k| k.not_null),
                is_key,
                type_name,
                pg_type: pg_type.with_modifier(c.type_modifier),
                type_oid: c.type_oid,
                type_modifier: c.type_modifier,
                name: c.name,
            });
        }
        let schema = if message.namespace.is_empty() {
            "pg_catalog".to_owned()
        } else {
            message.namespace
        };
        Ok(Relation {
            oid: message.oid,
            id: TableId::new(schema, message.name),
            columns,
        })
    }
}

fn change(
    relation: Arc<Relation>,
    op: Op,
    before: Option<courier_core::Row>,
    after: Option<courier_core::Row>,
    txn: Transaction,
) -> Result<Change, DecodeError> {
    let (version, xid, time) = (txn.final_lsn, txn.xid, txn.commit_time_us);
    Change::new(relation, op, before, after, version, xid, time).map_err(DecodeError::from)
}

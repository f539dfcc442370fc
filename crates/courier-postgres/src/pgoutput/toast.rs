//! Filling unchanged TOAST values by re-reading them from PostgreSQL.
//!
//! pgoutput leaves out a TOASTed value that an UPDATE did not touch (the `u`
//! marker). Without the old row (REPLICA IDENTITY FULL) the only source of
//! the value is the table itself, read by primary key. The decoder records
//! what each such update lacks as a [`ToastGap`]; [`ToastReader::fill`]
//! reads the gaps of many changes at once, with one query per table and set
//! of missing columns, so an update-heavy stream costs a round trip per
//! batch rather than one per row.
//!
//! The re-read sees the row as it is *now*, which may be newer than the
//! change being decoded; the changes in between follow in the stream with
//! greater versions, so every sink still converges on the latest row. If the
//! row no longer exists, a delete follows in the stream: the missing columns
//! stay `Null` and the change goes on (logged at debug, without values).
//! Likewise when the table or column was dropped since: the stream's next
//! Relation message describes the new shape.

use std::collections::HashMap;
use std::sync::Arc;

use courier_core::{quote_ident, Change, Lsn, Relation};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};

use super::message::{Tuple, TupleValue};
use super::{tuple, DecodeError};

/// Keys looked up per query; larger gaps are read in several queries.
const KEYS_PER_QUERY: usize = 5000;

/// What an update left out: the columns to re-read and the key of its row.
#[derive(Clone, Debug, PartialEq)]
pub struct ToastGap {
    /// Text of each key column, in the order of `Relation::key_indexes`.
    key: Vec<String>,
    /// Indexes of the columns the change holds as `Null` until filled.
    missing: Vec<usize>,
    lsn: Lsn,
}

impl ToastGap {
    /// How many columns the change lacks.
    pub fn columns(&self) -> usize {
        self.missing.len()
    }

    /// The gap of an update of `relation` whose `missing` columns were left
    /// out; the key comes from `new`, or from `old` for key columns that
    /// are themselves unchanged.
    pub(super) fn new(
        relation: &Relation,
        new: &Tuple,
        old: Option<&Tuple>,
        missing: Vec<usize>,
        lsn: Lsn,
    ) -> Result<Self, DecodeError> {
        let toast_error = |reason| DecodeError::Toast {
            table: relation.id.clone(),
            column: relation.columns[missing[0]].name.clone(),
            lsn,
            reason,
        };
        let mut key = Vec::new();
        for k in relation.key_indexes() {
            let text = match (&new[k], old.map(|o| &o[k])) {
                (TupleValue::Text(t), _) | (_, Some(TupleValue::Text(t))) => t,
                _ => return Err(toast_error("a key column value is missing from the change")),
            };
            let text = std::str::from_utf8(text)
                .map_err(|_| toast_error("a key column value is not valid UTF-8"))?;
            key.push(text.to_owned());
        }
        if key.is_empty() {
            return Err(toast_error(
                "the table has no primary key; give it one or set REPLICA IDENTITY FULL",
            ));
        }
        Ok(ToastGap { key, missing, lsn })
    }
}

/// Prepared re-read statements, per relation and set of missing columns.
#[derive(Default)]
pub(super) struct ToastReader {
    statements: HashMap<(u32, Vec<usize>), (Arc<Relation>, Statement)>,
}

impl ToastReader {
    /// Drops the statements of a relation whose shape changed.
    pub(super) fn forget(&mut self, relation_oid: u32) {
        self.statements.retain(|(oid, _), _| *oid != relation_oid);
    }

    /// Fills the missing columns of `changes[i]` for every `(i, gap)` in
    /// `gaps`, reading the rows of each table in as few queries as it can.
    pub(super) async fn fill(
        &mut self,
        client: &Client,
        changes: &mut [Change],
        gaps: &[(usize, ToastGap)],
    ) -> Result<(), DecodeError> {
        for group in group_gaps(changes, gaps) {
            self.fill_group(client, changes, &group).await?;
        }
        Ok(())
    }

    async fn fill_group(
        &mut self,
        client: &Client,
        changes: &mut [Change],
        group: &[&(usize, ToastGap)],
    ) -> Result<(), DecodeError> {
        let relation = Arc::clone(changes[group[0].0].relation());
        let missing = &group[0].1.missing;
        // Each distinct key once; the changes that share it.
        let mut keys: Vec<&[String]> = Vec::new();
        let mut users: Vec<Vec<usize>> = Vec::new();
        let mut key_index: HashMap<&[String], usize> = HashMap::new();
        for (change, gap) in group.iter().map(|e| (e.0, &e.1)) {
            let n = *key_index.entry(gap.key.as_slice()).or_insert_with(|| {
                keys.push(&gap.key);
                users.push(Vec::new());
                keys.len() - 1
            });
            users[n].push(change);
        }
        let lsn = group.iter().map(|e| e.1.lsn).max().unwrap_or(Lsn::ZERO);
        let mut found = vec![false; keys.len()];
        for (chunk_no, chunk) in keys.chunks(KEYS_PER_QUERY).enumerate() {
            let offset = chunk_no * KEYS_PER_QUERY;
            let columns: Vec<Vec<&str>> = (0..chunk[0].len())
                .map(|c| chunk.iter().map(|k| k[c].as_str()).collect())
                .collect();
            let params: Vec<&(dyn ToSql + Sync)> =
                columns.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
            let rows = match self.read(client, &relation, missing, &params).await {
                Ok(rows) => rows,
                Err(e) if table_changed_since(&e) => {
                    tracing::debug!(
                        table = %relation.id,
                        %lsn,
                        "table no longer has the columns of these changes; leaving their unchanged TOAST columns null until the new shape arrives"
                    );
                    return Ok(());
                }
                Err(e) => {
                    return Err(DecodeError::catalog(format!(
                        "re-read unchanged TOAST columns of {}",
                        relation.id
                    ))(e))
                }
            };
            let read_error =
                || DecodeError::catalog(format!("read re-read TOAST columns of {}", relation.id));
            for row in rows {
                let ordinal: i64 = row.try_get(0).map_err(read_error())?;
                let Some(n) = usize::try_from(ordinal - 1)
                    .ok()
                    .map(|i| offset + i)
                    .filter(|&n| n < keys.len())
                else {
                    continue;
                };
                found[n] = true;
                for (i, &column) in missing.iter().enumerate() {
                    let text: Option<&str> = row.try_get(i + 1).map_err(read_error())?;
                    let Some(text) = text else { continue };
                    let value = tuple::decode_value(&relation, column, text, lsn)?;
                    for &c in &users[n] {
                        if let Some(after) = changes[c].after_mut() {
                            after[column] = value.clone();
                        }
                    }
                }
            }
        }
        let gone = found.iter().filter(|f| !**f).count();
        if gone > 0 {
            tracing::debug!(
                table = %relation.id,
                %lsn,
                rows = gone,
                "rows with unchanged TOAST columns no longer exist; leaving them null until their deletes arrive"
            );
        }
        Ok(())
    }

    async fn read(
        &mut self,
        client: &Client,
        relation: &Arc<Relation>,
        missing: &[usize],
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let statement_key = (relation.oid, missing.to_vec());
        let cached = self
            .statements
            .get(&statement_key)
            .filter(|(shape, _)| shape == relation)
            .map(|(_, s)| s.clone());
        let statement = match cached {
            Some(s) => s,
            None => {
                let sql = select_sql(relation, missing);
                let s = client
                    .prepare_typed(&sql, &vec![Type::TEXT_ARRAY; params.len()])
                    .await?;
                self.statements
                    .insert(statement_key, (Arc::clone(relation), s.clone()));
                s
            }
        };
        client.query(&statement, params).await
    }
}

/// The gaps that one query can answer together: same table shape, same
/// missing columns.
fn group_gaps<'g>(
    changes: &[Change],
    gaps: &'g [(usize, ToastGap)],
) -> Vec<Vec<&'g (usize, ToastGap)>> {
    let mut groups: Vec<Vec<&(usize, ToastGap)>> = Vec::new();
    let mut group_of: HashMap<(*const Relation, &[usize]), usize> = HashMap::new();
    for entry in gaps {
        let relation = Arc::as_ptr(changes[entry.0].relation());
        let n = *group_of
            .entry((relation, entry.1.missing.as_slice()))
            .or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
        groups[n].push(entry);
    }
    groups
}

/// Whether a re-read failed because the table or a column is gone: the
/// stream is behind a later ALTER/DROP, whose Relation message will follow.
fn table_changed_since(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|code| {
        *code == SqlState::UNDEFINED_COLUMN || *code == SqlState::UNDEFINED_TABLE
    })
}

/// `SELECT <ordinal>, <missing columns as output text> FROM t JOIN
/// unnest(<one text array per key column>) WITH ORDINALITY ON <keys match>`:
/// the rows of the keys given, each tagged with its key's position.
///
/// `format('%s', c)` renders through the type's output function, exactly the
/// text pgoutput sends (a cast to text differs for bool, char(n), inet, ...).
fn select_sql(relation: &Relation, missing: &[usize]) -> String {
    let columns: Vec<String> = missing
        .iter()
        .map(|&i| {
            let c = quote_ident(&relation.columns[i].name);
            format!("CASE WHEN t.{c} IS NULL THEN NULL ELSE format('%s', t.{c}) END")
        })
        .collect();
    let keys: Vec<usize> = relation.key_indexes().collect();
    let arrays: Vec<String> = (1..=keys.len()).map(|n| format!("${n}::text[]")).collect();
    let names: Vec<String> = (1..=keys.len()).map(|n| format!("k{n}")).collect();
    let conditions: Vec<String> = keys
        .iter()
        .zip(&names)
        .map(|(&i, name)| {
            let c = &relation.columns[i];
            format!(
                "t.{} = CAST(u.{name} AS {})",
                quote_ident(&c.name),
                c.type_name
            )
        })
        .collect();
    format!(
        "SELECT u.ord, {} FROM {} AS t JOIN unnest({}) WITH ORDINALITY AS u({}, ord) ON {}",
        columns.join(", "),
        relation.id.quoted(),
        arrays.join(", "),
        names.join(", "),
        conditions.join(" AND ")
    )
}

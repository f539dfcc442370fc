//! Filling unchanged TOAST values by re-reading them from PostgreSQL.
//!
//! pgoutput leaves out a TOASTed value that an UPDATE did not touch (the `u`
//! marker). Without the old row (REPLICA IDENTITY FULL) the only source of
//! the value is the table itself, read by primary key.
//!
//! The re-read sees the row as it is *now*, which may be newer than the
//! change being decoded; the changes in between follow in the stream with
//! greater versions, so every sink still converges on the latest row. If the
//! row no longer exists, a delete follows in the stream: the missing columns
//! stay `Null` and the change goes on (logged at debug, without values).
//! Likewise when the table or column was dropped since: the stream's next
//! Relation message describes the new shape.

use std::collections::HashMap;

use courier_core::{quote_ident, Lsn, Relation, Row};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};

use super::message::{Tuple, TupleValue};
use super::{tuple, DecodeError};

/// Prepared re-read statements, per relation and set of missing columns.
#[derive(Default)]
pub(super) struct ToastReader {
    statements: HashMap<(u32, Vec<usize>), Statement>,
}

impl ToastReader {
    /// Drops the statements of a relation whose shape changed.
    pub(super) fn forget(&mut self, relation_oid: u32) {
        self.statements.retain(|(oid, _), _| *oid != relation_oid);
    }

    /// Reads the `missing` columns of the row that `new` (or, for key
    /// columns that are themselves unchanged, `old`) identifies, and stores
    /// them into `row`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fill(
        &mut self,
        client: &Client,
        relation: &Relation,
        new: &Tuple,
        old: Option<&Tuple>,
        row: &mut Row,
        missing: &[usize],
        lsn: Lsn,
    ) -> Result<(), DecodeError> {
        let toast_error = |reason| DecodeError::Toast {
            table: relation.id.clone(),
            column: relation.columns[missing[0]].name.clone(),
            lsn,
            reason,
        };
        let keys: Vec<usize> = relation.key_indexes().collect();
        if keys.is_empty() {
            return Err(toast_error(
                "the table has no primary key; give it one or set REPLICA IDENTITY FULL",
            ));
        }
        let mut key_texts = Vec::with_capacity(keys.len());
        for &k in &keys {
            let text = match (&new[k], old.map(|o| &o[k])) {
                (TupleValue::Text(t), _) | (_, Some(TupleValue::Text(t))) => t,
                _ => return Err(toast_error("a key column value is missing from the change")),
            };
            key_texts.push(
                std::str::from_utf8(text)
                    .map_err(|_| toast_error("a key column value is not valid UTF-8"))?,
            );
        }

        let params: Vec<&(dyn ToSql + Sync)> =
            key_texts.iter().map(|t| t as &(dyn ToSql + Sync)).collect();
        let rows = match self.read(client, relation, &keys, missing, &params).await {
            Ok(rows) => rows,
            Err(e) if table_changed_since(&e) => {
                tracing::debug!(
                    table = %relation.id,
                    %lsn,
                    "table no longer has the columns of this change; leaving its unchanged TOAST columns null until the new shape arrives"
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
        let Some(found) = rows.first() else {
            tracing::debug!(
                table = %relation.id,
                %lsn,
                "row with unchanged TOAST columns no longer exists; leaving them null until its delete arrives"
            );
            return Ok(());
        };
        for (i, &column) in missing.iter().enumerate() {
            let text: Option<&str> = found.try_get(i).map_err(DecodeError::catalog(format!(
                "read re-read TOAST column of {}",
                relation.id
            )))?;
            if let Some(text) = text {
                row[column] = tuple::decode_value(relation, column, text, lsn)?;
            }
        }
        Ok(())
    }
}

impl ToastReader {
    async fn read(
        &mut self,
        client: &Client,
        relation: &Relation,
        keys: &[usize],
        missing: &[usize],
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let statement_key = (relation.oid, missing.to_vec());
        let statement = match self.statements.get(&statement_key) {
            Some(s) => s.clone(),
            None => {
                let sql = select_sql(relation, keys, missing);
                let s = client
                    .prepare_typed(&sql, &vec![Type::TEXT; keys.len()])
                    .await?;
                self.statements.insert(statement_key, s.clone());
                s
            }
        };
        client.query(&statement, params).await
    }
}

/// Whether a re-read failed because the table or a column is gone: the
/// stream is behind a later ALTER/DROP, whose Relation message will follow.
fn table_changed_since(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|code| {
        *code == SqlState::UNDEFINED_COLUMN || *code == SqlState::UNDEFINED_TABLE
    })
}

/// `SELECT <missing columns as output text> FROM t WHERE <keys> = $n`.
///
/// `format('%s', c)` renders through the type's output function, exactly the
/// text pgoutput sends (a cast to text differs for bool, char(n), inet, ...).
fn select_sql(relation: &Relation, keys: &[usize], missing: &[usize]) -> String {
    let columns: Vec<String> = missing
        .iter()
        .map(|&i| {
            let c = quote_ident(&relation.columns[i].name);
            format!("CASE WHEN {c} IS NULL THEN NULL ELSE format('%s', {c}) END")
        })
        .collect();
    let conditions: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(n, &i)| {
            let c = &relation.columns[i];
            format!(
                "{} = CAST(${}::text AS {})",
                quote_ident(&c.name),
                n + 1,
                c.type_name
            )
        })
        .collect();
    format!(
        "SELECT {} FROM {} WHERE {} LIMIT 1",
        columns.join(", "),
        relation.id.quoted(),
        conditions.join(" AND ")
    )
}

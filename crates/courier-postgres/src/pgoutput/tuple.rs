//! Turning a pgoutput tuple into a row of typed values.

use courier_core::{Lsn, Relation, Row, Value};

use super::message::{Tuple, TupleValue};
use super::DecodeError;
use crate::types;

/// A decoded row, and the indexes of its unchanged-TOAST columns (which the
/// row holds as `Null` until they are filled).
pub(super) struct DecodedRow {
    pub row: Row,
    pub unchanged: Vec<usize>,
}

/// Decodes every column of `tuple` with the types of `relation`.
pub(super) fn decode(
    relation: &Relation,
    tuple: &Tuple,
    lsn: Lsn,
) -> Result<DecodedRow, DecodeError> {
    if tuple.len() != relation.columns.len() {
        return Err(DecodeError::Protocol {
            lsn,
            reason: "a row has a different number of columns than its Relation message",
        });
    }
    let mut row = Vec::with_capacity(tuple.len());
    let mut unchanged = Vec::new();
    for (i, (value, column)) in tuple.iter().zip(&relation.columns).enumerate() {
        row.push(match value {
            TupleValue::Null => Value::Null,
            TupleValue::UnchangedToast => {
                unchanged.push(i);
                Value::Null
            }
            TupleValue::Text(bytes) => {
                let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8 {
                    table: relation.id.clone(),
                    column: column.name.clone(),
                    lsn,
                })?;
                decode_value(relation, i, text, lsn)?
            }
        });
    }
    Ok(DecodedRow { row, unchanged })
}

/// Decodes the text of column `index` of `relation`.
pub(super) fn decode_value(
    relation: &Relation,
    index: usize,
    text: &str,
    lsn: Lsn,
) -> Result<Value, DecodeError> {
    let column = &relation.columns[index];
    types::decode_column(column, text).map_err(|source| DecodeError::Value {
        table: relation.id.clone(),
        column: column.name.clone(),
        type_name: column.type_name.clone(),
        lsn,
        source: Box::new(source),
    })
}

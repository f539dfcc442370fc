//! A stored row's key, as the store holds it in JSON, back into the values
//! a delete of that row carries.

use courier_core::{PgType, Relation, Row, Value};
use serde_json::Value as Json;

/// A row of NULLs but for the key columns, from their stored JSON values
/// (in key order); `None` when a value does not fit its column's type.
pub fn delete_row(relation: &Relation, key: &[Json]) -> Option<Row> {
    let mut row = vec![Value::Null; relation.columns.len()];
    let indexes: Vec<usize> = relation.key_indexes().collect();
    if indexes.len() != key.len() {
        return None;
    }
    for (i, json) in indexes.into_iter().zip(key) {
        row[i] = value(&relation.columns[i].pg_type, json)?;
    }
    Some(row)
}

/// A key value of type `pg` from its JSON form (the type mapping's).
fn value(pg: &PgType, json: &Json) -> Option<Value> {
    let text = || match json {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    Some(match pg {
        PgType::Bool => Value::Bool(json.as_bool()?),
        PgType::Int2 | PgType::Int4 | PgType::Int8 | PgType::Oid => {
            Value::Int(json.as_i64().or_else(|| json.as_str()?.parse().ok())?)
        }
        PgType::Float4 => Value::Float4(json.as_f64()? as f32),
        PgType::Float8 => Value::Float8(json.as_f64()?),
        PgType::Numeric { .. } => Value::Numeric(text()?),
        PgType::Uuid => Value::Uuid(text()?),
        PgType::Date => Value::Date(text()?),
        PgType::Time | PgType::TimeTz => Value::Time(text()?),
        PgType::Timestamp => Value::Timestamp(text()?),
        PgType::TimestampTz => Value::TimestampTz(text()?),
        PgType::Json | PgType::Jsonb | PgType::Array(_) | PgType::Bytea => return None,
        _ => Value::Text(text()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_core::{Column, TableId};
    use serde_json::json;

    fn relation() -> Relation {
        let col = |name: &str, pg_type, key: bool| Column {
            name: name.into(),
            type_oid: 0,
            type_modifier: -1,
            type_name: String::new(),
            pg_type,
            nullable: !key,
            is_key: key,
        };
        Relation {
            oid: 1,
            id: TableId::new("public", "t"),
            columns: vec![
                col("tenant", PgType::Text, true),
                col("note", PgType::Text, false),
                col("id", PgType::Int8, true),
            ],
        }
    }

    #[test]
    fn key_values_land_in_their_columns() {
        let row = delete_row(&relation(), &[json!("acme"), json!(42)]).unwrap();
        assert_eq!(
            row,
            vec![Value::Text("acme".into()), Value::Null, Value::Int(42)]
        );
    }

    #[test]
    fn a_key_that_does_not_fit_is_refused() {
        assert_eq!(delete_row(&relation(), &[json!("acme"), json!("x")]), None);
        assert_eq!(delete_row(&relation(), &[json!("acme")]), None);
    }
}

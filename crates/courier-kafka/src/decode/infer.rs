//! Tables of schemaless records (Courier's `format = "json"`, Debezium's
//! with `schemas.enable=false`): the records name their columns but carry
//! no types, so each column's type is inferred from the JSON values seen so
//! far (the rules are in the module documentation of [`super`]).

use std::sync::Arc;

use courier_core::{Column, PgType, TableId};
use serde_json::value::RawValue;

use super::envelope::Row;
use super::error::DecodeErrorKind;
use super::schema::{check_key, relation, TableCodec};
use super::semantic::Codec;

/// What the values of a column have been so far. Kinds only widen:
/// `Unknown` (only nulls) to a kind, `Int` to `Float`, and any two kinds
/// that differ otherwise to `Json`, which keeps every value as its JSON.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Kind {
    Unknown,
    Bool,
    Int,
    Float,
    Text,
    Json,
    Array(Box<Kind>),
}

/// A schemaless table as inferred so far.
#[derive(Debug)]
pub(super) struct Inferred {
    columns: Vec<(String, Kind)>,
    key: Vec<String>,
    pub codec: Arc<TableCodec>,
}

/// A table's shape after a record.
pub(super) enum Shape<'p> {
    /// The earlier shape still describes it (the relation stays the same
    /// `Arc`).
    Same(&'p Inferred),
    New(Inferred),
}

/// The table's shape after `rows` (the `after` row first) and the key
/// columns `key`, starting from `previous`.
pub(super) fn infer<'p>(
    table: &TableId,
    previous: Option<&'p Inferred>,
    rows: &[&Row<'_>],
    key: &[&str],
) -> Result<Shape<'p>, DecodeErrorKind> {
    let same_names = |cols: &[(String, Kind)]| {
        rows.iter()
            .all(|r| r.0.len() == cols.len() && r.0.iter().zip(cols).all(|((n, _), (c, _))| n == c))
    };
    let mut columns: Vec<(String, Kind)> = match previous {
        Some(p) if same_names(&p.columns) || rows.is_empty() => p.columns.clone(),
        _ => {
            let mut cols: Vec<(String, Kind)> = Vec::new();
            for row in rows {
                for (name, _) in &row.0 {
                    if !cols.iter().any(|(c, _)| c == name) {
                        let kind = previous
                            .and_then(|p| p.columns.iter().find(|(c, _)| c == name))
                            .map_or(Kind::Unknown, |(_, k)| k.clone());
                        cols.push((name.to_string(), kind));
                    }
                }
            }
            cols
        }
    };
    for row in rows {
        for (name, raw) in &row.0 {
            if let Some((_, kind)) = columns.iter_mut().find(|(c, _)| c == name) {
                *kind = merge(kind, raw);
            }
        }
    }
    let key: Vec<String> = if key.is_empty() {
        previous.map(|p| p.key.clone()).unwrap_or_default()
    } else {
        key.iter().map(|k| k.to_string()).collect()
    };
    if let Some(p) = previous {
        if p.columns == columns && p.key == key {
            return Ok(Shape::Same(p));
        }
    }
    let mut cols = Vec::with_capacity(columns.len());
    let mut codecs = Vec::with_capacity(columns.len());
    for (name, kind) in &columns {
        let (codec, pg_type, type_name) = column_of(kind);
        let is_key = key.contains(name);
        cols.push(Column {
            name: name.clone(),
            type_oid: 0,
            type_modifier: -1,
            type_name,
            pg_type,
            nullable: !is_key,
            is_key,
        });
        codecs.push(codec);
    }
    let names: Vec<&str> = key.iter().map(String::as_str).collect();
    check_key(table, &cols, &names)?;
    Ok(Shape::New(Inferred {
        codec: Arc::new(TableCodec {
            relation: Arc::new(relation(table, cols)),
            codecs,
        }),
        columns,
        key,
    }))
}

/// The codec, type and type name of a kind.
fn column_of(kind: &Kind) -> (Codec, PgType, String) {
    let (codec, pg_type, name) = match kind {
        Kind::Unknown | Kind::Text => (Codec::Text, PgType::Text, "text"),
        Kind::Bool => (Codec::Bool, PgType::Bool, "boolean"),
        Kind::Int => (Codec::Int, PgType::Int8, "bigint"),
        Kind::Float => (Codec::Float8, PgType::Float8, "double precision"),
        Kind::Json => (Codec::RawJson, PgType::Jsonb, "jsonb"),
        Kind::Array(inner) => {
            let (codec, pg_type, name) = column_of(inner);
            return (
                Codec::Array(Box::new(codec)),
                PgType::Array(Box::new(pg_type)),
                format!("{name}[]"),
            );
        }
    };
    (codec, pg_type, name.to_owned())
}

/// `kind` widened by the value `raw`.
fn merge(kind: &Kind, raw: &RawValue) -> Kind {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'n') => kind.clone(),
        Some(b't' | b'f') => join(kind, Kind::Bool),
        Some(b'"') => match (kind, text) {
            // The floats JSON numbers cannot hold, in a float column.
            (Kind::Float, "\"NaN\"" | "\"Infinity\"" | "\"-Infinity\"") => Kind::Float,
            _ => join(kind, Kind::Text),
        },
        Some(b'{') => Kind::Json,
        Some(b'[') => {
            let inner = match kind {
                Kind::Unknown => Kind::Unknown,
                Kind::Array(inner) => (**inner).clone(),
                _ => return Kind::Json,
            };
            match serde_json::from_str::<Vec<&RawValue>>(text) {
                Ok(items) => Kind::Array(Box::new(items.iter().fold(inner, |k, i| merge(&k, i)))),
                Err(_) => Kind::Json,
            }
        }
        _ => {
            let integral = !text.contains(['.', 'e', 'E']) && text.parse::<i64>().is_ok();
            join(kind, if integral { Kind::Int } else { Kind::Float })
        }
    }
}

fn join(a: &Kind, b: Kind) -> Kind {
    match (a, b) {
        (Kind::Unknown, b) => b,
        (a, b) if *a == b => b,
        (Kind::Int, Kind::Float) | (Kind::Float, Kind::Int) => Kind::Float,
        _ => Kind::Json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::envelope::parse_row;

    fn row(json: &str) -> Row<'_> {
        parse_row(serde_json::from_str::<&RawValue>(json).unwrap()).unwrap()
    }

    fn new(shape: Shape<'_>) -> Inferred {
        match shape {
            Shape::New(i) => i,
            Shape::Same(_) => panic!("expected a new shape"),
        }
    }

    fn types(i: &Inferred) -> Vec<PgType> {
        i.codec
            .relation
            .columns
            .iter()
            .map(|c| c.pg_type.clone())
            .collect()
    }

    #[test]
    fn kinds_come_from_values_and_only_widen() {
        let t = TableId::new("public", "t");
        let r1 = row(r#"{"id":1,"f":1.5,"n":null,"a":[1,null],"j":{"x":1},"s":"NaN","b":true}"#);
        let first = new(infer(&t, None, &[&r1], &["id"]).unwrap());
        assert_eq!(
            types(&first),
            [
                PgType::Int8,
                PgType::Float8,
                PgType::Text,
                PgType::Array(Box::new(PgType::Int8)),
                PgType::Jsonb,
                PgType::Text,
                PgType::Bool
            ]
        );
        assert!(first.codec.relation.columns[0].is_key);
        // The same kinds again: the same relation.
        let r2 = row(r#"{"id":2,"f":"NaN","n":null,"a":[],"j":{"y":[]},"s":"x","b":false}"#);
        assert!(matches!(
            infer(&t, Some(&first), &[&r2], &["id"]).unwrap(),
            Shape::Same(_)
        ));
        // An integer in a float column stays a float; a known type for n; a
        // number where strings were widens to JSON.
        let r3 = row(r#"{"id":3,"f":2,"n":"x","a":[1.5],"j":null,"s":5,"b":null}"#);
        let third = new(infer(&t, Some(&first), &[&r3], &["id"]).unwrap());
        assert_eq!(
            types(&third)[1..6],
            [
                PgType::Float8,
                PgType::Text,
                PgType::Array(Box::new(PgType::Float8)),
                PgType::Jsonb,
                PgType::Jsonb
            ]
        );
        assert!(!Arc::ptr_eq(&first.codec.relation, &third.codec.relation));
    }

    #[test]
    fn a_key_field_must_be_a_column() {
        let t = TableId::new("public", "t");
        let r = row(r#"{"id":1}"#);
        assert!(matches!(
            infer(&t, None, &[&r], &["other"]),
            Err(DecodeErrorKind::BadKey { .. })
        ));
    }
}

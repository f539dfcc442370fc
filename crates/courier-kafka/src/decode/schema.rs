//! Tables from Kafka Connect schemas: a change event's value schema gives
//! the columns (the fields of its `before`/`after` struct, in order) and
//! their types, the record key's fields give the key columns.

use std::collections::HashMap;
use std::sync::Arc;

use courier_core::{Column, PgType, Relation, TableId};
use serde::Deserialize;

use super::error::DecodeErrorKind;
use super::semantic::{Codec, Unit};

/// A table's shape and how to read each of its columns.
#[derive(Debug)]
pub(super) struct TableCodec {
    pub relation: Arc<Relation>,
    /// One per column of `relation`.
    pub codecs: Vec<Codec>,
}

/// A Kafka Connect schema as JsonConverter writes it.
#[derive(Debug, Deserialize)]
pub(super) struct ConnectSchema {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub optional: bool,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub fields: Vec<ConnectSchema>,
    #[serde(default)]
    pub items: Option<Box<ConnectSchema>>,
    #[serde(default)]
    pub parameters: HashMap<String, String>,
}

impl ConnectSchema {
    /// `type name`, for messages (`struct io.debezium.data.geometry.Geometry`).
    fn describe(&self) -> String {
        match &self.name {
            Some(n) => format!("{} {n}", self.kind),
            None => self.kind.clone(),
        }
    }
}

/// The columns of a change event's value schema (`envelope`) with the key
/// columns named by `key` (the key's field names, in order).
pub(super) fn table_codec(
    table: &TableId,
    envelope: &ConnectSchema,
    key: &[&str],
) -> Result<TableCodec, DecodeErrorKind> {
    let row = envelope
        .fields
        .iter()
        .find(|f| f.kind == "struct" && matches!(f.field.as_deref(), Some("after")))
        .or_else(|| {
            envelope
                .fields
                .iter()
                .find(|f| f.kind == "struct" && matches!(f.field.as_deref(), Some("before")))
        })
        .ok_or_else(|| DecodeErrorKind::NotAnEnvelope {
            reason: "its schema has no before or after struct".into(),
        })?;
    let mut columns = Vec::with_capacity(row.fields.len());
    let mut codecs = Vec::with_capacity(row.fields.len());
    for f in &row.fields {
        let name = f
            .field
            .clone()
            .ok_or_else(|| DecodeErrorKind::NotAnEnvelope {
                reason: "a field of its row schema has no name".into(),
            })?;
        let t = column_type(f).map_err(|schema| DecodeErrorKind::UnmappedType {
            table: table.clone(),
            column: name.clone(),
            schema,
        })?;
        let is_key = key.contains(&name.as_str());
        columns.push(Column {
            name,
            type_oid: 0,
            type_modifier: t.type_modifier,
            type_name: t.type_name,
            pg_type: t.pg_type,
            nullable: f.optional && !is_key,
            is_key,
        });
        codecs.push(t.codec);
    }
    check_key(table, &columns, key)?;
    Ok(TableCodec {
        relation: Arc::new(relation(table, columns)),
        codecs,
    })
}

/// Every key field must be a column.
pub(super) fn check_key(
    table: &TableId,
    columns: &[Column],
    key: &[&str],
) -> Result<(), DecodeErrorKind> {
    match key.iter().find(|k| !columns.iter().any(|c| c.name == **k)) {
        Some(missing) => Err(DecodeErrorKind::BadKey {
            table: table.clone(),
            reason: format!(
                "key field {missing} is not a column of the value; the key must be the row's key columns (as Debezium and Courier write it): check the producer's key transforms (message.key.columns)"
            ),
        }),
        None => Ok(()),
    }
}

/// A relation decoded from Kafka: no PostgreSQL OID is known, so `oid` is
/// a stable number derived from the table's name (FNV-1a), distinct per
/// table in practice, and column `type_oid`s are 0.
pub(super) fn relation(table: &TableId, columns: Vec<Column>) -> Relation {
    let mut hash: u32 = 0x811c_9dc5;
    for b in table
        .schema
        .bytes()
        .chain(std::iter::once(b'.'))
        .chain(table.name.bytes())
    {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    Relation {
        oid: hash.max(1),
        id: table.clone(),
        columns,
    }
}

/// A column's codec and the PostgreSQL type it stands for.
pub(super) struct ColumnType {
    pub codec: Codec,
    pub pg_type: PgType,
    pub type_name: String,
    pub type_modifier: i32,
}

impl ColumnType {
    fn new(codec: Codec, pg_type: PgType, type_name: &str) -> ColumnType {
        ColumnType {
            codec,
            pg_type,
            type_name: type_name.to_owned(),
            type_modifier: -1,
        }
    }

    fn with_modifier(mut self, typmod: i32) -> ColumnType {
        self.type_modifier = typmod;
        self
    }
}

/// The Courier type of a Connect field schema, or its description when
/// Courier has none.
pub(super) fn column_type(s: &ConnectSchema) -> Result<ColumnType, String> {
    use Codec as C;
    let t = |codec, pg_type, name: &str| Ok(ColumnType::new(codec, pg_type, name));
    if let Some(numeric) = propagated_numeric(s) {
        return Ok(numeric);
    }
    match (s.kind.as_str(), s.name.as_deref()) {
        ("array", _) => {
            let items = s.items.as_deref().ok_or_else(|| s.describe())?;
            let inner = column_type(items).map_err(|d| format!("array of {d}"))?;
            Ok(ColumnType {
                codec: C::Array(Box::new(inner.codec)),
                pg_type: PgType::Array(Box::new(inner.pg_type)),
                type_name: format!("{}[]", inner.type_name),
                type_modifier: inner.type_modifier,
            })
        }
        ("bytes", Some("org.apache.kafka.connect.data.Decimal")) => {
            let scale: i32 = s
                .parameters
                .get("scale")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{} without a scale parameter", s.describe()))?;
            let precision: Option<u16> = s
                .parameters
                .get("connect.decimal.precision")
                .and_then(|v| v.parse().ok());
            let scale16 = u16::try_from(scale).ok();
            let (name, typmod) = match (precision, scale16) {
                (Some(p), Some(sc)) => (
                    format!("numeric({p},{sc})"),
                    ((i32::from(p) << 16) | i32::from(sc)) + 4,
                ),
                _ => ("numeric".to_owned(), -1),
            };
            Ok(ColumnType {
                codec: C::Decimal { scale },
                pg_type: PgType::Numeric {
                    precision: precision.filter(|_| scale16.is_some()),
                    scale: scale16,
                },
                type_name: name,
                type_modifier: typmod,
            })
        }
        ("struct", Some("io.debezium.data.VariableScaleDecimal")) => t(
            C::VariableDecimal,
            PgType::Numeric {
                precision: None,
                scale: None,
            },
            "numeric",
        ),
        ("struct", Some("io.debezium.data.geometry.Point")) => t(C::Point, PgType::Other, "point"),
        ("string", Some("io.debezium.data.Uuid")) => t(C::Uuid, PgType::Uuid, "uuid"),
        ("string", Some("io.debezium.data.Json")) => t(C::JsonText, PgType::Jsonb, "jsonb"),
        ("string", Some("io.debezium.data.Xml")) => t(C::Text, PgType::Other, "xml"),
        ("string", Some("io.debezium.data.Enum")) => t(C::Text, PgType::Enum, "enum"),
        ("string", Some("io.debezium.time.ZonedTime")) => {
            t(C::ZonedTime, PgType::TimeTz, "time with time zone")
        }
        ("string", Some("io.debezium.time.ZonedTimestamp")) => t(
            C::ZonedTimestamp,
            PgType::TimestampTz,
            "timestamp with time zone",
        ),
        ("string", Some("io.debezium.time.Interval")) => {
            t(C::Interval, PgType::Interval, "interval")
        }
        ("int32", Some("io.debezium.time.Date" | "org.apache.kafka.connect.data.Date")) => {
            t(C::Date, PgType::Date, "date")
        }
        ("int32", Some("io.debezium.time.Time" | "org.apache.kafka.connect.data.Time")) => {
            Ok(ColumnType::new(C::Time(Unit::Millis), PgType::Time, "time(3)").with_modifier(3))
        }
        ("int64", Some("io.debezium.time.MicroTime")) => {
            t(C::Time(Unit::Micros), PgType::Time, "time")
        }
        ("int64", Some("io.debezium.time.NanoTime")) => {
            t(C::Time(Unit::Nanos), PgType::Time, "time")
        }
        (
            "int64",
            Some("io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp"),
        ) => Ok(ColumnType::new(
            C::Timestamp(Unit::Millis),
            PgType::Timestamp,
            "timestamp(3)",
        )
        .with_modifier(3)),
        ("int64", Some("io.debezium.time.MicroTimestamp")) => {
            t(C::Timestamp(Unit::Micros), PgType::Timestamp, "timestamp")
        }
        ("int64", Some("io.debezium.time.NanoTimestamp")) => {
            t(C::Timestamp(Unit::Nanos), PgType::Timestamp, "timestamp")
        }
        ("int64", Some("io.debezium.time.MicroDuration")) => {
            t(C::Duration(Unit::Micros), PgType::Interval, "interval")
        }
        ("int64", Some("io.debezium.time.NanoDuration")) => {
            t(C::Duration(Unit::Nanos), PgType::Interval, "interval")
        }
        ("bytes", Some("io.debezium.data.Bits")) => {
            // Debezium gives varbit columns the greatest length.
            let length = s
                .parameters
                .get("length")
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|n| *n < i32::MAX as usize);
            let name = length.map_or("bit varying".to_owned(), |n| format!("bit({n})"));
            Ok(ColumnType::new(C::Bits { length }, PgType::Other, &name))
        }
        ("map", _) => t(C::RawJson, PgType::Jsonb, "jsonb"),
        ("struct", _) => Err(s.describe()),
        // Other names on a primitive (a converter's own semantic type): the
        // primitive's value, as the record holds it.
        ("boolean", _) => t(C::Bool, PgType::Bool, "boolean"),
        ("int8" | "int16", _) => t(C::Int, PgType::Int2, "smallint"),
        ("int32", _) => t(C::Int, PgType::Int4, "integer"),
        ("int64", _) => t(C::Int, PgType::Int8, "bigint"),
        ("float" | "float32", _) => t(C::Float4, PgType::Float4, "real"),
        ("double" | "float64", _) => t(C::Float8, PgType::Float8, "double precision"),
        ("string", _) => t(C::Text, PgType::Text, "text"),
        ("bytes", _) => t(C::Bytes, PgType::Bytea, "bytea"),
        _ => Err(s.describe()),
    }
}

/// A `numeric` column written as a string or a double
/// (`decimal.handling.mode`), which the schema tells only when Debezium
/// propagates the column's source type (`column.propagate.source.type`, or
/// `datatype.propagate.source.type` with `NUMERIC`): parameters
/// `__debezium.source.column.type`, `.length` (precision) and `.scale`.
fn propagated_numeric(s: &ConnectSchema) -> Option<ColumnType> {
    let source_type = s
        .parameters
        .get("__debezium.source.column.type")?
        .to_ascii_uppercase();
    let number = |p: &str| {
        s.parameters
            .get(&format!("__debezium.source.column.{p}"))
            .and_then(|v| v.parse::<u16>().ok())
    };
    // An array type's name is its element type's with a leading `_`.
    if let Some(element) = source_type.strip_prefix('_') {
        if s.kind != "array" || !matches!(element, "NUMERIC" | "DECIMAL") {
            return None;
        }
        let codec = numeric_codec(&s.items.as_ref()?.kind)?;
        return Some(ColumnType {
            codec: Codec::Array(Box::new(codec)),
            pg_type: PgType::Array(Box::new(PgType::Numeric {
                precision: None,
                scale: None,
            })),
            type_name: "numeric[]".to_owned(),
            type_modifier: -1,
        });
    }
    if !matches!(source_type.as_str(), "NUMERIC" | "DECIMAL") {
        return None;
    }
    let codec = numeric_codec(&s.kind)?;
    // PostgreSQL reports an unconstrained numeric with a length of 0 (or
    // the greatest one), and no scale.
    let (precision, scale) = match (number("length"), number("scale")) {
        (Some(p @ 1..=1000), scale) => (Some(p), Some(scale.unwrap_or(0))),
        _ => (None, None),
    };
    let (type_name, type_modifier) = match (precision, scale) {
        (Some(p), Some(sc)) => (
            format!("numeric({p},{sc})"),
            ((i32::from(p) << 16) | i32::from(sc)) + 4,
        ),
        _ => ("numeric".to_owned(), -1),
    };
    Some(ColumnType {
        codec,
        pg_type: PgType::Numeric { precision, scale },
        type_name,
        type_modifier,
    })
}

/// How a `numeric` arrives in a Connect type: a string or a double.
fn numeric_codec(kind: &str) -> Option<Codec> {
    match kind {
        "string" => Some(Codec::NumericText),
        "double" => Some(Codec::NumericDouble),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(json: &str) -> Result<ColumnType, String> {
        column_type(&serde_json::from_str(json).unwrap())
    }

    #[test]
    fn maps_debeziums_schemas_to_courier_types() {
        let d = field(r#"{"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"3","connect.decimal.precision":"12"}}"#).unwrap();
        assert_eq!(
            d.pg_type,
            PgType::Numeric {
                precision: Some(12),
                scale: Some(3)
            }
        );
        assert_eq!(
            (d.type_name.as_str(), d.type_modifier),
            ("numeric(12,3)", (12 << 16 | 3) + 4)
        );
        let money = field(r#"{"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2"}}"#).unwrap();
        assert_eq!(
            money.pg_type,
            PgType::Numeric {
                precision: None,
                scale: Some(2)
            }
        );
        let moods = field(r#"{"type":"array","items":{"type":"string","optional":false,"name":"io.debezium.data.Enum","parameters":{"allowed":"sad,ok,happy"}}}"#).unwrap();
        assert_eq!(moods.pg_type, PgType::Array(Box::new(PgType::Enum)));
        let ts3 = field(r#"{"type":"int64","name":"io.debezium.time.Timestamp"}"#).unwrap();
        assert_eq!((ts3.pg_type, ts3.type_modifier), (PgType::Timestamp, 3));
        let bits = field(r#"{"type":"bytes","name":"io.debezium.data.Bits","parameters":{"length":"2147483647"}}"#).unwrap();
        assert_eq!(bits.codec, Codec::Bits { length: None });
        let err =
            field(r#"{"type":"struct","name":"io.debezium.data.geometry.Geometry","fields":[]}"#)
                .err()
                .unwrap();
        assert_eq!(err, "struct io.debezium.data.geometry.Geometry");
        assert_eq!(
            field(r#"{"type":"array","items":{"type":"struct","fields":[]}}"#)
                .err()
                .unwrap(),
            "array of struct"
        );
    }

    #[test]
    fn propagated_source_types_make_string_and_double_decimals_numeric() {
        let s = field(r#"{"type":"string","parameters":{"__debezium.source.column.type":"NUMERIC","__debezium.source.column.length":"12","__debezium.source.column.scale":"3"}}"#).unwrap();
        assert_eq!(s.codec, Codec::NumericText);
        assert_eq!(
            s.pg_type,
            PgType::Numeric {
                precision: Some(12),
                scale: Some(3)
            }
        );
        let d = field(r#"{"type":"double","parameters":{"__debezium.source.column.type":"NUMERIC","__debezium.source.column.length":"131089","__debezium.source.column.scale":"0"}}"#).unwrap();
        assert_eq!(d.codec, Codec::NumericDouble);
        assert_eq!(
            d.pg_type,
            PgType::Numeric {
                precision: None,
                scale: None
            }
        );
        let text =
            field(r#"{"type":"string","parameters":{"__debezium.source.column.type":"TEXT"}}"#)
                .unwrap();
        assert_eq!(text.codec, Codec::Text);
    }

    #[test]
    fn oids_are_stable_per_table() {
        let a = relation(&TableId::new("public", "a"), vec![]);
        let b = relation(&TableId::new("public", "b"), vec![]);
        assert_ne!(a.oid, b.oid);
        assert_eq!(a.oid, relation(&TableId::new("public", "a"), vec![]).oid);
    }
}

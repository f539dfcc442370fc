//! Decoding of PostgreSQL's text output into Courier [`Value`]s, per the type
//! mapping (DESIGN §4), and parsing of `COPY ... TO STDOUT` text rows.
//!
//! Every function here expects the text PostgreSQL writes in a session with
//! `TimeZone=UTC`, `DateStyle=ISO`, `IntervalStyle=iso_8601` and
//! `extra_float_digits=3` (see [`crate::catalog::SESSION_OPTIONS`]); other
//! time zones are still converted to UTC correctly.

mod array;
pub mod binary;
mod bytea;
pub mod copy;
mod datetime;
mod error;
mod scalar;

use std::borrow::Cow;

use courier_core::{Column, PgType, Value};

pub use error::ValueError;

/// OID of `box[]`, the one built-in array type whose elements are separated
/// by `;` instead of `,`.
const BOX_ARRAY_OID: u32 = 1020;

/// Decodes the text form of one value of type `ty`.
///
/// Arrays use `,` between elements; use [`decode_column`] when the column may
/// be a `box[]`.
pub fn decode_text(ty: &PgType, text: &str) -> Result<Value, ValueError> {
    decode_with_delimiter(ty, text, b',')
}

/// Decodes the text form of one value of `column`, choosing the array
/// element delimiter from the column's type.
pub fn decode_column(column: &Column, text: &str) -> Result<Value, ValueError> {
    decode_with_delimiter(&column.pg_type, text, array_delimiter(column.type_oid))
}

/// The element delimiter of arrays of the given array type OID.
pub fn array_delimiter(array_type_oid: u32) -> u8 {
    if array_type_oid == BOX_ARRAY_OID {
        b';'
    } else {
        b','
    }
}

pub(crate) fn decode_with_delimiter(
    ty: &PgType,
    text: &str,
    delimiter: u8,
) -> Result<Value, ValueError> {
    let err = |reason: &str| ValueError::new(type_label(ty), reason);
    Ok(match ty {
        PgType::Bool => Value::Bool(scalar::bool(text).ok_or_else(|| err("expected t or f"))?),
        PgType::Int2 | PgType::Int4 | PgType::Int8 | PgType::Oid => Value::Int(
            text.parse::<i64>()
                .map_err(|_| err("not an integer in range"))?,
        ),
        PgType::Float4 => Value::Float4(text.parse::<f32>().map_err(|_| err("not a float"))?),
        PgType::Float8 => Value::Float8(text.parse::<f64>().map_err(|_| err("not a float"))?),
        PgType::Numeric { .. } => {
            if !scalar::is_numeric(text) {
                return Err(err("not a decimal number, NaN or Infinity"));
            }
            Value::Numeric(text.to_owned())
        }
        PgType::Text | PgType::Enum | PgType::Interval | PgType::Other => {
            Value::Text(text.to_owned())
        }
        PgType::Bytea => Value::Bytes(bytea::decode(text).map_err(err)?),
        PgType::Uuid => {
            if !scalar::is_uuid(text) {
                return Err(err("not a UUID"));
            }
            Value::Uuid(text.to_ascii_lowercase())
        }
        PgType::Date => Value::Date(datetime::date(text).map_err(err)?),
        PgType::Time => Value::Time(datetime::time(text, false).map_err(err)?),
        PgType::TimeTz => Value::Time(datetime::time(text, true).map_err(err)?),
        PgType::Timestamp => Value::Timestamp(datetime::timestamp(text).map_err(err)?),
        PgType::TimestampTz => Value::TimestampTz(datetime::timestamptz(text).map_err(err)?),
        PgType::Json | PgType::Jsonb => Value::Json(text.to_owned()),
        PgType::Array(element) => array::decode(element, delimiter, text)?,
    })
}

/// A short name of the type for error messages, e.g. `int4`, `text[]`.
pub fn type_label(ty: &PgType) -> Cow<'static, str> {
    Cow::Borrowed(match ty {
        PgType::Bool => "bool",
        PgType::Int2 => "int2",
        PgType::Int4 => "int4",
        PgType::Int8 => "int8",
        PgType::Oid => "oid",
        PgType::Float4 => "float4",
        PgType::Float8 => "float8",
        PgType::Numeric { .. } => "numeric",
        PgType::Text => "text",
        PgType::Bytea => "bytea",
        PgType::Uuid => "uuid",
        PgType::Date => "date",
        PgType::Time => "time",
        PgType::TimeTz => "timetz",
        PgType::Timestamp => "timestamp",
        PgType::TimestampTz => "timestamptz",
        PgType::Interval => "interval",
        PgType::Json => "json",
        PgType::Jsonb => "jsonb",
        PgType::Enum => "enum",
        PgType::Other => "other",
        PgType::Array(inner) => return Cow::Owned(format!("{}[]", type_label(inner))),
    })
}

#[cfg(test)]
mod tests;

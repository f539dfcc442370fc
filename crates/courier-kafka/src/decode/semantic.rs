//! Column values in Debezium's semantic types (and Courier's json-schema
//! records, which use the same): how one column's raw JSON becomes the
//! [`Value`] Courier's own capture produces. The module documentation of
//! [`super`] has the table.

use base64::Engine;
use courier_core::Value;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{datetime, decimal, interval};

/// How one column's JSON value is read.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Codec {
    Bool,
    Int,
    Float4,
    Float8,
    /// A string: text, enum labels, `inet`, `xml`, ...
    Text,
    Uuid,
    /// `io.debezium.data.Json`: the document as a string.
    JsonText,
    /// Any JSON, kept as it is (Connect maps; schemaless columns whose
    /// values are objects or of mixed kinds).
    RawJson,
    Bytes,
    /// `org.apache.kafka.connect.data.Decimal`: base64 of the unscaled
    /// value, at this scale.
    Decimal {
        scale: i32,
    },
    /// `io.debezium.data.VariableScaleDecimal`: `{"scale", "value"}`.
    VariableDecimal,
    /// A `numeric` column with `decimal.handling.mode=string`, known as
    /// one from the column's propagated source type.
    NumericText,
    /// A `numeric` column with `decimal.handling.mode=double`, known as one
    /// from the column's propagated source type.
    NumericDouble,
    Date,
    Time(Unit),
    ZonedTime,
    Timestamp(Unit),
    ZonedTimestamp,
    /// `MicroDuration` / `NanoDuration`.
    Duration(Unit),
    /// `io.debezium.time.Interval`: an ISO 8601 duration string.
    Interval,
    /// `io.debezium.data.Bits`: the bits as a little-endian integer;
    /// `length` when the column has a fixed one.
    Bits {
        length: Option<usize>,
    },
    /// `io.debezium.data.geometry.Point`: `{"x", "y", ...}`.
    Point,
    Array(Box<Codec>),
}

/// The unit of a temporal number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Unit {
    Millis,
    Micros,
    Nanos,
}

impl Unit {
    /// `n` of this unit in microseconds (nanoseconds are cut: PostgreSQL
    /// has none).
    fn micros(self, n: i64) -> Option<i64> {
        match self {
            Unit::Millis => n.checked_mul(1000),
            Unit::Micros => Some(n),
            Unit::Nanos => Some(n.div_euclid(1000)),
        }
    }
}

/// Debezium's `timestamp` infinities: pgjdbc's `DATE_POSITIVE_INFINITY` and
/// `DATE_NEGATIVE_INFINITY` read as microseconds (as milliseconds in
/// `io.debezium.time.Timestamp` and Connect's `Timestamp`).
const TIMESTAMP_INFINITY_US: i64 = 9_223_372_036_825_200_000;
const TIMESTAMP_MINUS_INFINITY_US: i64 = -9_223_372_036_832_400_000;

/// Debezium's `date` infinities: while streaming, the epoch days of
/// -5877611-06-21 and -22; in a snapshot (read through JDBC), what its JVM
/// makes of pgjdbc's infinity dates, give or take the day its time zone
/// moves them.
const DATE_INFINITY_DAYS: [i64; 2] = [-2_147_472_692, -622_191_234];
const DATE_MINUS_INFINITY_DAYS: [i64; 2] = [-2_147_472_691, -625_821_272];

/// Debezium's default `unavailable.value.placeholder`, as each column kind
/// carries it in place of an unchanged TOASTed value.
const PLACEHOLDER: &str = "\"__debezium_unavailable_value\"";
const PLACEHOLDER_BYTES: &str = "\"X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==\"";
const PLACEHOLDER_UUID: &str = "\"b68a35a7-17ad-35b3-af2a-ae46edb4545a\"";
const PLACEHOLDER_INTS: &str =
    "[95,95,100,101,98,101,122,105,117,109,95,117,110,97,118,97,105,108,97,98,108,101,95,118,97,108,117,101]";

impl Codec {
    /// The column's value in `raw`; an error says why not, without the value.
    pub(super) fn decode(&self, raw: &RawValue) -> Result<Value, String> {
        let text = raw.get();
        if text == "null" {
            return Ok(Value::Null);
        }
        let wrong = |what: &str| format!("expected {what} for its schema");
        Ok(match self {
            Codec::Bool => match text {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(wrong("a boolean")),
            },
            Codec::Int => Value::Int(integer(text).ok_or_else(|| wrong("an integer"))?),
            Codec::Float4 => Value::Float4(match float_word(text) {
                Some(f) => f as f32,
                None => text.parse().map_err(|_| wrong("a number"))?,
            }),
            Codec::Float8 => Value::Float8(match float_word(text) {
                Some(f) => f,
                None => text.parse().map_err(|_| wrong("a number"))?,
            }),
            Codec::Text => Value::Text(string(raw).ok_or_else(|| wrong("a string"))?),
            Codec::Uuid => Value::Uuid(
                string(raw)
                    .ok_or_else(|| wrong("a string"))?
                    .to_ascii_lowercase(),
            ),
            Codec::JsonText => Value::Json(string(raw).ok_or_else(|| wrong("a string"))?),
            Codec::RawJson => Value::Json(text.to_owned()),
            Codec::Bytes => Value::Bytes(base64(raw).ok_or_else(|| wrong("base64 bytes"))?),
            Codec::Decimal { scale } => {
                let bytes = base64(raw).ok_or_else(|| wrong("a base64 decimal"))?;
                Value::Numeric(decimal::from_unscaled(&bytes, *scale))
            }
            Codec::VariableDecimal => {
                #[derive(Deserialize)]
                struct Variable {
                    scale: i32,
                    value: String,
                }
                let v: Variable = serde_json::from_str(text)
                    .map_err(|_| wrong("a {\"scale\", \"value\"} object"))?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(v.value)
                    .map_err(|_| wrong("a base64 value"))?;
                Value::Numeric(decimal::from_unscaled(&bytes, v.scale))
            }
            Codec::NumericText => Value::Numeric(
                string(raw)
                    .as_deref()
                    .and_then(decimal::numeric_text)
                    .ok_or_else(|| wrong("a decimal string"))?,
            ),
            Codec::NumericDouble => {
                let f = match float_word(text) {
                    Some(f) => f,
                    None => text.parse::<f64>().map_err(|_| wrong("a number"))?,
                };
                Value::Numeric(
                    decimal::numeric_text(&format!("{f:e}"))
                        .filter(|_| f.is_finite())
                        .unwrap_or_else(|| decimal::float8_text(f)),
                )
            }
            Codec::Date => Value::Date(date(text).ok_or_else(|| {
                wrong("days since 1970-01-01 within PostgreSQL's dates (or Debezium's infinity)")
            })?),
            Codec::Time(unit) => Value::Time(
                integer(text)
                    .and_then(|n| unit.micros(n))
                    .and_then(datetime::time_text)
                    .ok_or_else(|| wrong("a time of day"))?,
            ),
            Codec::ZonedTime => Value::Time(
                string(raw)
                    .as_deref()
                    .and_then(datetime::zoned_time)
                    .ok_or_else(|| wrong("an ISO 8601 time with a zone"))?,
            ),
            Codec::Timestamp(unit) => Value::Timestamp(
                integer(text)
                    .and_then(|n| timestamp(n, *unit))
                    .ok_or_else(|| wrong("a timestamp number"))?,
            ),
            Codec::ZonedTimestamp => Value::TimestampTz(
                string(raw)
                    .as_deref()
                    .and_then(datetime::zoned_timestamp)
                    .ok_or_else(|| wrong("an ISO 8601 timestamp with a zone"))?,
            ),
            Codec::Duration(unit) => Value::Text(interval::micros_text(
                integer(text)
                    .and_then(|n| unit.micros(n))
                    .ok_or_else(|| wrong("a duration number"))?,
            )),
            Codec::Interval => Value::Text(
                string(raw)
                    .as_deref()
                    .and_then(interval::iso_text)
                    .ok_or_else(|| wrong("an ISO 8601 duration"))?,
            ),
            Codec::Bits { length } => {
                let bytes = base64(raw).ok_or_else(|| wrong("base64 bits"))?;
                Value::Text(bit_string(&bytes, *length))
            }
            Codec::Point => {
                #[derive(Deserialize)]
                struct Point {
                    x: f64,
                    y: f64,
                }
                let p: Point =
                    serde_json::from_str(text).map_err(|_| wrong("an {\"x\", \"y\"} object"))?;
                Value::Text(format!(
                    "({},{})",
                    decimal::float8_text(p.x),
                    decimal::float8_text(p.y)
                ))
            }
            Codec::Array(inner) => {
                let items: Vec<&RawValue> =
                    serde_json::from_str(text).map_err(|_| wrong("an array"))?;
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(inner.decode(item)?);
                }
                Value::Array(out)
            }
        })
    }

    /// Whether `raw` is Debezium's placeholder for an unchanged TOASTed
    /// value of a column read with this codec.
    pub(super) fn is_placeholder(&self, raw: &RawValue) -> bool {
        let text = raw.get();
        match self {
            Codec::Text | Codec::JsonText | Codec::Interval | Codec::NumericText => {
                text == PLACEHOLDER
            }
            Codec::Bytes => text == PLACEHOLDER_BYTES,
            Codec::RawJson => {
                text == PLACEHOLDER
                    || text == "{\"__debezium_unavailable_value\":\"__debezium_unavailable_value\"}"
            }
            Codec::Array(_) => {
                [PLACEHOLDER, PLACEHOLDER_BYTES, PLACEHOLDER_UUID]
                    .iter()
                    .any(|p| text.len() == p.len() + 2 && text[1..text.len() - 1] == **p)
                    || text == PLACEHOLDER_INTS
            }
            _ => false,
        }
    }
}

/// A JSON integer.
fn integer(text: &str) -> Option<i64> {
    text.parse().ok()
}

/// The float JsonConverter writes as a string: `NaN`, `Infinity`, `-Infinity`.
fn float_word(text: &str) -> Option<f64> {
    match text {
        "\"NaN\"" => Some(f64::NAN),
        "\"Infinity\"" => Some(f64::INFINITY),
        "\"-Infinity\"" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// A JSON string's content.
fn string(raw: &RawValue) -> Option<String> {
    if !raw.get().starts_with('"') {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

/// The bytes of a base64 JSON string.
fn base64(raw: &RawValue) -> Option<Vec<u8>> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    base64::engine::general_purpose::STANDARD.decode(inner).ok()
}

/// The `date` of Debezium's epoch days, its infinities, and Courier's
/// (`i32::MAX` / `i32::MIN`).
fn date(text: &str) -> Option<String> {
    let days = integer(text)?;
    let near = |sentinels: &[i64; 2]| {
        days == sentinels[0] || (sentinels[1] - 1..=sentinels[1] + 1).contains(&days)
    };
    if days == i64::from(i32::MAX) || near(&DATE_INFINITY_DAYS) {
        return Some("infinity".to_owned());
    }
    if days == i64::from(i32::MIN) || near(&DATE_MINUS_INFINITY_DAYS) {
        return Some("-infinity".to_owned());
    }
    if !datetime::PG_DATE_RANGE.contains(&days) {
        return None;
    }
    Some(datetime::date_text(days))
}

/// The `timestamp` of `n` units since the epoch, with Debezium's and
/// Courier's infinities.
fn timestamp(n: i64, unit: Unit) -> Option<String> {
    let infinity = match unit {
        Unit::Millis => (
            TIMESTAMP_INFINITY_US / 1000,
            TIMESTAMP_MINUS_INFINITY_US / 1000,
        ),
        Unit::Micros => (TIMESTAMP_INFINITY_US, TIMESTAMP_MINUS_INFINITY_US),
        Unit::Nanos => (i64::MAX, i64::MIN),
    };
    if n == infinity.0 || n == i64::MAX {
        return Some("infinity".to_owned());
    }
    if n == infinity.1 || n == i64::MIN {
        return Some("-infinity".to_owned());
    }
    Some(datetime::timestamp_text(unit.micros(n)?, false))
}

/// The bit string (`101`) of Debezium's `Bits` bytes (a little-endian
/// integer whose lowest bit is the last bit), padded with leading zeros to
/// `length` when the column has a fixed length.
fn bit_string(bytes: &[u8], length: Option<usize>) -> String {
    let mut bits: Vec<u8> = Vec::with_capacity(bytes.len() * 8);
    for byte in bytes {
        for bit in 0..8 {
            bits.push(if byte >> bit & 1 == 1 { b'1' } else { b'0' });
        }
    }
    // `bits` is least significant first.
    let significant = bits.iter().rposition(|b| *b == b'1').map_or(0, |p| p + 1);
    let width = length.unwrap_or(significant).max(significant);
    let mut out = String::with_capacity(width);
    for i in (0..width).rev() {
        out.push(char::from(*bits.get(i).unwrap_or(&b'0')));
    }
    if out.is_empty() {
        out.push('0');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(codec: &Codec, json: &str) -> Result<Value, String> {
        codec.decode(serde_json::from_str::<&RawValue>(json).unwrap())
    }

    fn ok(codec: &Codec, json: &str) -> Value {
        decode(codec, json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    #[test]
    fn numbers_and_decimals() {
        assert_eq!(ok(&Codec::Int, "-32768"), Value::Int(-32768));
        assert!(decode(&Codec::Int, "1.5").is_err());
        assert_eq!(ok(&Codec::Float4, "0.1"), Value::Float4(0.1));
        assert!(matches!(ok(&Codec::Float8, "\"NaN\""), Value::Float8(f) if f.is_nan()));
        assert_eq!(
            ok(&Codec::Float8, "\"-Infinity\""),
            Value::Float8(f64::NEG_INFINITY)
        );
        assert_eq!(
            ok(&Codec::Decimal { scale: 3 }, "\"+iQ=\""),
            Value::Numeric("-1.500".into())
        );
        assert_eq!(
            ok(
                &Codec::VariableDecimal,
                r#"{"scale":9,"value":"J+QbMka+ybFuOYEV"}"#
            ),
            Value::Numeric("12345678901234567890.123456789".into())
        );
        assert_eq!(ok(&Codec::Decimal { scale: 2 }, "null"), Value::Null);
        assert_eq!(
            ok(&Codec::NumericText, "\"NAN\""),
            Value::Numeric("NaN".into())
        );
        assert_eq!(
            ok(&Codec::NumericText, "\"1.50\""),
            Value::Numeric("1.50".into())
        );
        assert_eq!(
            ok(&Codec::NumericDouble, "1.2345678901234567E19"),
            Value::Numeric("12345678901234567000".into())
        );
        assert_eq!(
            ok(&Codec::NumericDouble, "-1.5"),
            Value::Numeric("-1.5".into())
        );
        assert_eq!(
            ok(&Codec::NumericDouble, "\"NaN\""),
            Value::Numeric("NaN".into())
        );
        let err = decode(&Codec::Decimal { scale: 2 }, "\"not base64 secret!\"").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn temporal_types_and_infinities() {
        assert_eq!(ok(&Codec::Date, "19782"), Value::Date("2024-02-29".into()));
        assert_eq!(
            ok(&Codec::Date, "-735160"),
            Value::Date("0044-03-15 BC".into())
        );
        for inf in ["-2147472692", "-622191234", "-622191233", "2147483647"] {
            assert_eq!(
                ok(&Codec::Date, inf),
                Value::Date("infinity".into()),
                "{inf}"
            );
        }
        for inf in ["-2147472691", "-625821272", "-2147483648"] {
            assert_eq!(
                ok(&Codec::Date, inf),
                Value::Date("-infinity".into()),
                "{inf}"
            );
        }
        assert!(decode(&Codec::Date, "-1000000000").is_err());
        assert_eq!(
            ok(&Codec::Time(Unit::Millis), "49506500"),
            Value::Time("13:45:06.5".into())
        );
        assert_eq!(
            ok(&Codec::Time(Unit::Micros), "86400000000"),
            Value::Time("24:00:00".into())
        );
        assert_eq!(
            ok(&Codec::Timestamp(Unit::Micros), "9223372036825200000"),
            Value::Timestamp("infinity".into())
        );
        assert_eq!(
            ok(&Codec::Timestamp(Unit::Millis), "-9223372036832400"),
            Value::Timestamp("-infinity".into())
        );
        assert_eq!(
            ok(&Codec::Timestamp(Unit::Millis), "-14182939877"),
            Value::Timestamp("1969-07-20T20:17:40.123".into())
        );
        assert_eq!(
            ok(&Codec::Timestamp(Unit::Nanos), "1500"),
            Value::Timestamp("1970-01-01T00:00:00.000001".into())
        );
        assert_eq!(
            ok(&Codec::ZonedTimestamp, "\"2024-02-29T18:29:59.500000Z\""),
            Value::TimestampTz("2024-02-29T18:29:59.5Z".into())
        );
        assert_eq!(
            ok(&Codec::ZonedTime, "\"11:45:06Z\""),
            Value::Time("11:45:06+00".into())
        );
        assert_eq!(
            ok(&Codec::Duration(Unit::Micros), "37091106000000"),
            Value::Text("PT10303H5M6S".into())
        );
        assert_eq!(
            ok(&Codec::Interval, "\"P1Y2M3DT4H5M6S\""),
            Value::Text("P1Y2M3DT4H5M6S".into())
        );
    }

    #[test]
    fn other_semantic_types() {
        assert_eq!(
            ok(&Codec::Bits { length: Some(3) }, "\"BQ==\""),
            Value::Text("101".into())
        );
        assert_eq!(
            ok(&Codec::Bits { length: Some(10) }, "\"AQI=\""),
            Value::Text("1000000001".into())
        );
        assert_eq!(
            ok(&Codec::Bits { length: Some(4) }, "\"AA==\""),
            Value::Text("0000".into())
        );
        assert_eq!(
            ok(&Codec::Bits { length: None }, "\"Fg==\""),
            Value::Text("10110".into())
        );
        assert_eq!(
            ok(
                &Codec::Point,
                r#"{"x":1.5,"y":2.0,"wkb":"AQEAAAAAAAAAAAD4PwAAAAAAAABA","srid":null}"#
            ),
            Value::Text("(1.5,2)".into())
        );
        assert_eq!(
            ok(&Codec::Uuid, "\"A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11\""),
            Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into())
        );
        assert_eq!(
            ok(&Codec::JsonText, r#""{\"a\": [1, 2.5, null]}""#),
            Value::Json(r#"{"a": [1, 2.5, null]}"#.into())
        );
        assert_eq!(
            ok(&Codec::Bytes, "\"3q2+7w==\""),
            Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef])
        );
        assert_eq!(
            ok(&Codec::Array(Box::new(Codec::Int)), "[1,null,3]"),
            Value::Array(vec![Value::Int(1), Value::Null, Value::Int(3)])
        );
        assert!(decode(&Codec::Array(Box::new(Codec::Int)), "[[1]]").is_err());
    }

    #[test]
    fn recognises_debeziums_toast_placeholders() {
        fn raw(s: &str) -> &RawValue {
            serde_json::from_str(s).unwrap()
        }
        assert!(Codec::Text.is_placeholder(raw(PLACEHOLDER)));
        assert!(Codec::Bytes.is_placeholder(raw(PLACEHOLDER_BYTES)));
        assert!(Codec::Array(Box::new(Codec::Text))
            .is_placeholder(raw("[\"__debezium_unavailable_value\"]")));
        assert!(Codec::Array(Box::new(Codec::Int)).is_placeholder(raw(PLACEHOLDER_INTS)));
        assert!(!Codec::Text.is_placeholder(raw("\"x\"")));
    }
}

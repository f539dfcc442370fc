//! Column values in Debezium's semantic types: the Connect schema of a
//! column and its value as JsonConverter writes it. The Kafka sink's
//! `format = "json-schema"` writes whole rows this way (its module
//! documentation has the table of every type); the outbox router writes an
//! event's key, headers and fields this way, as Debezium's EventRouter does.

use base64::Engine;
use courier_core::{write_json_string, Column, PgType, Value};
use serde::Deserialize;
use serde_json::json;

/// How `numeric` values are written with `format = "json-schema"` (and the outbox router), as
/// Debezium's `decimal.handling.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum DecimalHandling {
    /// Connect's `Decimal` (bytes) or Debezium's `VariableScaleDecimal`.
    #[default]
    Precise,
    /// The exact decimal text.
    String,
    /// A JSON number (may lose precision).
    Double,
}

impl TryFrom<String> for DecimalHandling {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "precise" => Ok(DecimalHandling::Precise),
            "string" => Ok(DecimalHandling::String),
            "double" => Ok(DecimalHandling::Double),
            other => Err(format!(
                "decimal_handling: {other:?} is not a mode; use \"precise\", \"string\" or \"double\""
            )),
        }
    }
}

/// Why a value has no form in its column's Connect type; the message names
/// the column and the fix, never the value.
#[derive(Debug)]
pub(crate) struct Unrepresentable(pub String);

/// The Connect schema of a column's type (without `field` and `optional`).
// Only the Kafka sink's json-schema format writes schemas and fallbacks.
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
pub(crate) fn type_schema(column: &Column, decimal: DecimalHandling) -> serde_json::Value {
    pg_type_schema(&column.pg_type, column.type_modifier, decimal)
}

// Only the Kafka sink's json-schema format writes schemas and fallbacks.
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
fn named(kind: &str, name: &str) -> serde_json::Value {
    json!({"type": kind, "name": name, "version": 1})
}

// Only the Kafka sink's json-schema format writes schemas and fallbacks.
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
fn pg_type_schema(t: &PgType, typmod: i32, decimal: DecimalHandling) -> serde_json::Value {
    match t {
        PgType::Bool => json!({"type": "boolean"}),
        PgType::Int2 => json!({"type": "int16"}),
        PgType::Int4 => json!({"type": "int32"}),
        PgType::Int8 | PgType::Oid => json!({"type": "int64"}),
        PgType::Float4 => json!({"type": "float"}),
        PgType::Float8 => json!({"type": "double"}),
        PgType::Numeric { precision, scale } => match (decimal, precision) {
            (DecimalHandling::String, _) => json!({"type": "string"}),
            (DecimalHandling::Double, _) => json!({"type": "double"}),
            (DecimalHandling::Precise, Some(p)) => json!({
                "type": "bytes",
                "name": "org.apache.kafka.connect.data.Decimal",
                "version": 1,
                "parameters": {
                    "scale": scale.unwrap_or(0).to_string(),
                    "connect.decimal.precision": p.to_string(),
                },
            }),
            (DecimalHandling::Precise, None) => json!({
                "type": "struct",
                "fields": [
                    {"type": "int32", "optional": false, "field": "scale"},
                    {"type": "bytes", "optional": false, "field": "value"},
                ],
                "name": "io.debezium.data.VariableScaleDecimal",
                "version": 1,
                "doc": "Variable scaled decimal",
            }),
        },
        PgType::Bytea => json!({"type": "bytes"}),
        PgType::Uuid => named("string", "io.debezium.data.Uuid"),
        PgType::Json | PgType::Jsonb => named("string", "io.debezium.data.Json"),
        PgType::Date => named("int32", "io.debezium.time.Date"),
        PgType::Time if millis_precision(typmod) => named("int32", "io.debezium.time.Time"),
        PgType::Time => named("int64", "io.debezium.time.MicroTime"),
        PgType::TimeTz => named("string", "io.debezium.time.ZonedTime"),
        PgType::Timestamp if millis_precision(typmod) => {
            named("int64", "io.debezium.time.Timestamp")
        }
        PgType::Timestamp => named("int64", "io.debezium.time.MicroTimestamp"),
        PgType::TimestampTz => named("string", "io.debezium.time.ZonedTimestamp"),
        PgType::Interval => named("string", "io.debezium.time.Interval"),
        PgType::Enum => named("string", "io.debezium.data.Enum"),
        PgType::Array(inner) => {
            let mut items = pg_type_schema(inner, typmod, decimal);
            items["optional"] = json!(true);
            json!({"type": "array", "items": items})
        }
        PgType::Text | PgType::Other => json!({"type": "string"}),
    }
}

/// Debezium's adaptive time precision: `time(0..3)` and `timestamp(0..3)`
/// travel in milliseconds, others (and no declared precision) in
/// microseconds.
fn millis_precision(typmod: i32) -> bool {
    (0..=3).contains(&typmod)
}

/// Appends the column's value as JsonConverter writes it for the schema of
/// [`type_schema`].
pub(crate) fn write_value(
    column: &Column,
    value: &Value,
    decimal: DecimalHandling,
    out: &mut Vec<u8>,
) -> Result<(), Unrepresentable> {
    write_typed(&column.pg_type, column, value, decimal, out)
}

fn write_typed(
    t: &PgType,
    column: &Column,
    value: &Value,
    decimal: DecimalHandling,
    out: &mut Vec<u8>,
) -> Result<(), Unrepresentable> {
    let bad = |what: &str| {
        Unrepresentable(format!(
            "column {} ({}) holds {what}",
            column.name, column.type_name
        ))
    };
    let mut num = itoa::Buffer::new();
    match (t, value) {
        (_, Value::Null) => out.extend_from_slice(b"null"),
        (PgType::Numeric { precision, scale }, Value::Numeric(text)) => match decimal {
            DecimalHandling::String => write_json_string(out, text),
            DecimalHandling::Double => match text.parse::<f64>() {
                Ok(f) => Value::Float8(f).write_json(out),
                Err(_) => return Err(bad("a value that is not a number")),
            },
            DecimalHandling::Precise => {
                let Some(d) = Decimal::parse(text) else {
                    return Err(Unrepresentable(format!(
                        "column {} ({}) holds NaN or Infinity, which Connect's Decimal cannot hold; set decimal_handling = \"string\" (or \"double\")",
                        column.name, column.type_name
                    )));
                };
                match precision {
                    Some(_) => {
                        let d = d.with_scale(u32::from(scale.unwrap_or(0)));
                        write_base64(out, &d.twos_complement());
                    }
                    None => {
                        let d = d.normalized();
                        out.extend_from_slice(b"{\"scale\":");
                        out.extend_from_slice(num.format(d.scale).as_bytes());
                        out.extend_from_slice(b",\"value\":");
                        write_base64(out, &d.twos_complement());
                        out.push(b'}');
                    }
                }
            }
        },
        (PgType::Date, Value::Date(text)) => {
            let days = match text.as_str() {
                "infinity" => i64::from(i32::MAX),
                "-infinity" => i64::from(i32::MIN),
                _ => date_days(text).ok_or_else(|| bad("a date Courier cannot read"))?,
            };
            out.extend_from_slice(num.format(days).as_bytes());
        }
        (PgType::Time, Value::Time(text)) => {
            let us = time_micros(text).ok_or_else(|| bad("a time Courier cannot read"))?;
            let v = if millis_precision(column.type_modifier) {
                us / 1000
            } else {
                us
            };
            out.extend_from_slice(num.format(v).as_bytes());
        }
        (PgType::TimeTz, Value::Time(text)) => {
            let utc = zoned_time_utc(text).ok_or_else(|| bad("a time Courier cannot read"))?;
            write_json_string(out, &utc);
        }
        (PgType::Timestamp, Value::Timestamp(text)) => {
            let us = match text.as_str() {
                "infinity" => i64::MAX,
                "-infinity" => i64::MIN,
                _ => {
                    timestamp_micros(text).ok_or_else(|| bad("a timestamp Courier cannot read"))?
                }
            };
            let v = if millis_precision(column.type_modifier) && us.abs() != i64::MAX {
                us.div_euclid(1000)
            } else {
                us
            };
            out.extend_from_slice(num.format(v).as_bytes());
        }
        (PgType::Json | PgType::Jsonb, Value::Json(text)) => write_json_string(out, text),
        (PgType::Array(inner), Value::Array(items)) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if matches!(item, Value::Array(_)) && !matches!(**inner, PgType::Array(_)) {
                    return Err(Unrepresentable(format!(
                        "column {} ({}) holds a multi-dimensional array, which Debezium's array schema cannot describe; use format = \"json\"",
                        column.name, column.type_name
                    )));
                }
                write_typed(inner, column, item, decimal, out)?;
            }
            out.push(b']');
        }
        // Every other type's value is already in its Connect form: booleans,
        // integers, floats (NaN and infinities as strings, as Jackson writes
        // them), text, base64 bytes, uuid and timestamptz text.
        (_, v) => v.write_json(out),
    }
    Ok(())
}

/// Appends the value Debezium writes for a NOT NULL column whose value the
/// change does not carry (the non-key columns of a delete's `before` with
/// the default replica identity, which holds the key only): the schema says
/// the field is required, so JsonConverter refuses a null there. These are
/// the fallbacks of Debezium's value converters: zero, false, the empty
/// string or bytes, `{}` for JSON, the epoch for zoned times, `[]`.
// Only the Kafka sink's json-schema format writes schemas and fallbacks.
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
pub(crate) fn write_fallback(column: &Column, decimal: DecimalHandling, out: &mut Vec<u8>) {
    let text: &[u8] = match (&column.pg_type, decimal) {
        (PgType::Bool, _) => b"false",
        (PgType::Float4 | PgType::Float8, _) => b"0.0",
        (PgType::Numeric { .. }, DecimalHandling::String) => b"\"0\"",
        (PgType::Numeric { .. }, DecimalHandling::Double) => b"0.0",
        (
            PgType::Numeric {
                precision: Some(_), ..
            },
            DecimalHandling::Precise,
        ) => b"\"AA==\"",
        (
            PgType::Numeric {
                precision: None, ..
            },
            DecimalHandling::Precise,
        ) => b"{\"scale\":0,\"value\":\"AA==\"}",
        (
            PgType::Int2
            | PgType::Int4
            | PgType::Int8
            | PgType::Oid
            | PgType::Date
            | PgType::Time
            | PgType::Timestamp,
            _,
        ) => b"0",
        (PgType::TimeTz, _) => b"\"00:00:00Z\"",
        (PgType::TimestampTz, _) => b"\"1970-01-01T00:00:00Z\"",
        (PgType::Json | PgType::Jsonb, _) => b"\"{}\"",
        (PgType::Array(_), _) => b"[]",
        (
            PgType::Bytea
            | PgType::Uuid
            | PgType::Interval
            | PgType::Enum
            | PgType::Text
            | PgType::Other,
            _,
        ) => b"\"\"",
    };
    out.extend_from_slice(text);
}

fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut text = String::with_capacity(bytes.len() * 4 / 3 + 4);
    base64::engine::general_purpose::STANDARD.encode_string(bytes, &mut text);
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
}

/// An exact decimal: sign, digits without a point, and how many of them
/// are after the point.
#[derive(Debug, PartialEq)]
struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    scale: u32,
}

impl Decimal {
    /// `-123.450`, `7`, `.5`; `None` for NaN, infinities and anything else.
    fn parse(text: &str) -> Option<Decimal> {
        let (negative, rest) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let (int, frac) = rest.split_once('.').unwrap_or((rest, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let all = int.bytes().chain(frac.bytes());
        if !all.clone().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Decimal {
            negative,
            digits: all.map(|b| b - b'0').collect(),
            scale: u32::try_from(frac.len()).ok()?,
        })
    }

    /// The same number with `scale` digits after the point (extra digits
    /// are cut; PostgreSQL never sends more than the column's scale).
    fn with_scale(mut self, scale: u32) -> Decimal {
        while self.scale < scale {
            self.digits.push(0);
            self.scale += 1;
        }
        while self.scale > scale {
            self.digits.pop();
            self.scale -= 1;
        }
        self
    }

    /// Without trailing zeros after the point (Java's `stripTrailingZeros`,
    /// with a scale never below zero).
    fn normalized(mut self) -> Decimal {
        while self.scale > 0 && self.digits.last() == Some(&0) {
            self.digits.pop();
            self.scale -= 1;
        }
        self
    }

    /// The unscaled value as big-endian two's complement in the fewest
    /// bytes (Java's `BigInteger.toByteArray`).
    fn twos_complement(&self) -> Vec<u8> {
        // Little-endian base-256 magnitude.
        let mut mag: Vec<u8> = Vec::new();
        for &d in &self.digits {
            let mut carry = u32::from(d);
            for byte in mag.iter_mut() {
                let v = u32::from(*byte) * 10 + carry;
                *byte = (v & 0xFF) as u8;
                carry = v >> 8;
            }
            if carry > 0 {
                mag.push(carry as u8);
            }
        }
        while mag.last() == Some(&0) {
            mag.pop();
        }
        if mag.is_empty() {
            return vec![0];
        }
        if self.negative {
            // Two's complement: invert and add one.
            let mut carry = 1u16;
            for byte in mag.iter_mut() {
                let v = u16::from(!*byte) + carry;
                *byte = (v & 0xFF) as u8;
                carry = v >> 8;
            }
            if mag.last().is_some_and(|b| b & 0x80 == 0) {
                mag.push(0xFF);
            }
            while mag.len() > 1 && mag[mag.len() - 1] == 0xFF && mag[mag.len() - 2] & 0x80 != 0 {
                mag.pop();
            }
        } else if mag.last().is_some_and(|b| b & 0x80 != 0) {
            mag.push(0);
        }
        mag.reverse();
        mag
    }
}

/// Days since 1970-01-01 of `YYYY-MM-DD[ BC]`.
fn date_days(text: &str) -> Option<i64> {
    let (text, bc) = match text.strip_suffix(" BC") {
        Some(t) => (t, true),
        None => (text, false),
    };
    let mut parts = text.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let y = if bc { 1 - y } else { y };
    Some(days_from_civil(y, m, d))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (year 0 = 1 BC).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Microseconds since midnight of `HH:MM:SS[.ffffff]` (no zone).
fn time_micros(text: &str) -> Option<i64> {
    let mut parts = text.splitn(3, ':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let sec = parts.next()?;
    let (s, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let s: i64 = s.parse().ok()?;
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_us: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().ok()?
    };
    Some(((h * 60 + m) * 60 + s) * 1_000_000 + frac_us)
}

/// Microseconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.ffffff][ BC]`.
pub(crate) fn timestamp_micros(text: &str) -> Option<i64> {
    let (text, bc) = match text.strip_suffix(" BC") {
        Some(t) => (t, " BC"),
        None => (text, ""),
    };
    let (date, time) = text.split_once('T')?;
    let days = date_days(&format!("{date}{bc}"))?;
    days.checked_mul(86_400_000_000)?
        .checked_add(time_micros(time)?)
}

/// `HH:MM:SS[.ffffff]±HH[:MM[:SS]]` as the same time in UTC, in ISO 8601
/// with `Z`, as Debezium's `ZonedTime`.
fn zoned_time_utc(text: &str) -> Option<String> {
    let at = text.rfind(['+', '-'])?;
    let (local, zone) = text.split_at(at);
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let mut z = zone[1..].split(':');
    let zh: i64 = z.next()?.parse().ok()?;
    let zm: i64 = z.next().map_or(Some(0), |v| v.parse().ok())?;
    let zs: i64 = z.next().map_or(Some(0), |v| v.parse().ok())?;
    let offset_us = sign * ((zh * 60 + zm) * 60 + zs) * 1_000_000;
    let day = 86_400_000_000;
    let utc = (time_micros(local)? - offset_us).rem_euclid(day);
    let (secs, us) = (utc / 1_000_000, utc % 1_000_000);
    let mut out = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if us > 0 {
        let frac = format!("{us:06}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(text: &str) -> Vec<u8> {
        Decimal::parse(text).unwrap().twos_complement()
    }

    #[test]
    fn decimals_are_javas_two_complement_bytes() {
        assert_eq!(bytes("0"), vec![0]);
        assert_eq!(bytes("127"), vec![0x7F]);
        assert_eq!(bytes("128"), vec![0x00, 0x80]);
        assert_eq!(bytes("-1"), vec![0xFF]);
        assert_eq!(bytes("-128"), vec![0x80]);
        assert_eq!(bytes("-129"), vec![0xFF, 0x7F]);
        assert_eq!(bytes("-256"), vec![0xFF, 0x00]);
        // 12.34 at scale 2: unscaled 1234 = 0x04D2.
        assert_eq!(bytes("12.34"), vec![0x04, 0xD2]);
        let big = "123456789012345678901234567890";
        assert_eq!(
            bytes(big),
            vec![0x01, 0x8E, 0xE9, 0x0F, 0xF6, 0xC3, 0x73, 0xE0, 0xEE, 0x4E, 0x3F, 0x0A, 0xD2]
        );
        let d = Decimal::parse("1.500").unwrap().normalized();
        assert_eq!((d.scale, d.twos_complement()), (1, vec![15]));
        let d = Decimal::parse("100").unwrap().normalized();
        assert_eq!(d.scale, 0, "a scale never goes below zero");
        assert_eq!(
            Decimal::parse("7.5").unwrap().with_scale(3).digits,
            vec![7, 5, 0, 0]
        );
        assert!(Decimal::parse("NaN").is_none());
        assert!(Decimal::parse("-Infinity").is_none());
    }

    #[test]
    fn dates_and_times_are_debezium_numbers() {
        assert_eq!(date_days("1970-01-01"), Some(0));
        assert_eq!(date_days("2024-02-29"), Some(19_782));
        assert_eq!(date_days("1969-12-31"), Some(-1));
        assert_eq!(date_days("0001-01-01 BC"), Some(-719_528), "1 BC is year 0");
        assert_eq!(time_micros("10:11:12.5"), Some(36_672_500_000));
        assert_eq!(time_micros("24:00:00"), Some(86_400_000_000));
        assert_eq!(
            timestamp_micros("2024-01-02T03:04:05.000006"),
            Some(1_704_164_645_000_006)
        );
        assert_eq!(timestamp_micros("1969-12-31T23:59:59.999999"), Some(-1));
        assert_eq!(zoned_time_utc("10:00:00+02").as_deref(), Some("08:00:00Z"));
        assert_eq!(
            zoned_time_utc("23:30:00.25-01:30").as_deref(),
            Some("01:00:00.25Z")
        );
    }
}

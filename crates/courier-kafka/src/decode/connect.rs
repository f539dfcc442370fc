//! Kafka Connect schemas and values (JsonConverter's JSON) back into
//! Courier's column types and values: the inverse of the Kafka sink's
//! `json-schema` encoding, which is Debezium's.

use base64::Engine;
use courier_core::{PgType, Value};
use serde_json::Value as Json;

/// A column's type from its Connect field schema (`type`, `name`,
/// `parameters`, `items`). `None` for a schema this decoder cannot map.
pub(super) fn pg_type(schema: &Json) -> Option<PgType> {
    let kind = schema["type"].as_str()?;
    let name = schema["name"].as_str().unwrap_or("");
    let scale = || {
        schema["parameters"]["scale"]
            .as_str()
            .and_then(|s| s.parse::<u16>().ok())
    };
    let precision = || {
        schema["parameters"]["connect.decimal.precision"]
            .as_str()
            .and_then(|s| s.parse::<u16>().ok())
    };
    Some(match (kind, name) {
        ("bytes", "org.apache.kafka.connect.data.Decimal") => PgType::Numeric {
            precision: precision(),
            scale: scale(),
        },
        ("struct", "io.debezium.data.VariableScaleDecimal") => PgType::Numeric {
            precision: None,
            scale: None,
        },
        ("int32", "io.debezium.time.Date") | ("int32", "org.apache.kafka.connect.data.Date") => {
            PgType::Date
        }
        ("int64", "io.debezium.time.MicroTime")
        | ("int32", "io.debezium.time.Time")
        | ("int64", "io.debezium.time.NanoTime")
        | ("int32", "org.apache.kafka.connect.data.Time") => PgType::Time,
        ("string", "io.debezium.time.ZonedTime") => PgType::TimeTz,
        ("int64", "io.debezium.time.MicroTimestamp")
        | ("int64", "io.debezium.time.Timestamp")
        | ("int64", "io.debezium.time.NanoTimestamp")
        | ("int64", "org.apache.kafka.connect.data.Timestamp") => PgType::Timestamp,
        ("string", "io.debezium.time.ZonedTimestamp") => PgType::TimestampTz,
        ("string", "io.debezium.time.Interval") => PgType::Interval,
        ("string", "io.debezium.data.Json") => PgType::Jsonb,
        ("string", "io.debezium.data.Uuid") => PgType::Uuid,
        ("string", "io.debezium.data.Enum") => PgType::Enum,
        ("array", _) => PgType::Array(Box::new(pg_type(&schema["items"])?)),
        ("boolean", _) => PgType::Bool,
        ("int8" | "int16", _) => PgType::Int2,
        ("int32", _) => PgType::Int4,
        ("int64", _) => PgType::Int8,
        ("float" | "float32", _) => PgType::Float4,
        ("double" | "float64", _) => PgType::Float8,
        ("bytes", _) => PgType::Bytea,
        ("string", _) => PgType::Text,
        _ => return None,
    })
}

/// The column type of a value seen without a schema.
pub(super) fn inferred_type(v: &Json) -> PgType {
    match v {
        Json::Bool(_) => PgType::Bool,
        Json::Number(n) if n.is_i64() || n.is_u64() => PgType::Int8,
        Json::Number(_) => PgType::Float8,
        Json::Object(_) => PgType::Jsonb,
        Json::Array(items) => PgType::Array(Box::new(
            items
                .iter()
                .find(|i| !i.is_null())
                .map_or(PgType::Text, inferred_type),
        )),
        Json::String(_) | Json::Null => PgType::Text,
    }
}

/// The value of a column of type `t` (with its Connect `schema`, when the
/// record has one) from its JSON; `Err` says what does not fit.
pub(super) fn value(t: &PgType, schema: Option<&Json>, v: &Json) -> Result<Value, String> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    let name = schema.and_then(|s| s["name"].as_str()).unwrap_or("");
    let bad = || format!("{} does not fit the column's type {t:?}", kind_of(v));
    Ok(match t {
        PgType::Bool => Value::Bool(v.as_bool().ok_or_else(bad)?),
        PgType::Int2 | PgType::Int4 | PgType::Int8 | PgType::Oid => {
            Value::Int(v.as_i64().ok_or_else(bad)?)
        }
        PgType::Float4 => Value::Float4(float(v).ok_or_else(bad)? as f32),
        PgType::Float8 => Value::Float8(float(v).ok_or_else(bad)?),
        PgType::Numeric { scale, .. } => Value::Numeric(numeric(v, *scale).ok_or_else(bad)?),
        PgType::Bytea => match v {
            Json::String(s) => Value::Bytes(
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|_| "bytes that are not base64".to_string())?,
            ),
            _ => return Err(bad()),
        },
        PgType::Uuid => Value::Uuid(v.as_str().ok_or_else(bad)?.to_string()),
        PgType::Date => match v {
            Json::Number(n) => Value::Date(date_text(n.as_i64().ok_or_else(bad)?)),
            Json::String(s) => Value::Date(s.clone()),
            _ => return Err(bad()),
        },
        PgType::Time => match v {
            Json::Number(n) => {
                let n = n.as_i64().ok_or_else(bad)?;
                let micros = match name {
                    "io.debezium.time.Time" | "org.apache.kafka.connect.data.Time" => n * 1000,
                    "io.debezium.time.NanoTime" => n / 1000,
                    _ => n,
                };
                Value::Time(time_text(micros))
            }
            Json::String(s) => Value::Time(s.clone()),
            _ => return Err(bad()),
        },
        PgType::TimeTz => Value::Time(trim_fraction(v.as_str().ok_or_else(bad)?, "Z")),
        PgType::Timestamp => match v {
            Json::Number(n) => {
                let n = n.as_i64().ok_or_else(bad)?;
                let micros = match name {
                    "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp" => {
                        n.saturating_mul(1000)
                    }
                    "io.debezium.time.NanoTimestamp" => n / 1000,
                    _ => n,
                };
                Value::Timestamp(timestamp_text(micros))
            }
            Json::String(s) => Value::Timestamp(s.clone()),
            _ => return Err(bad()),
        },
        PgType::TimestampTz => Value::TimestampTz(trim_fraction(v.as_str().ok_or_else(bad)?, "Z")),
        PgType::Json | PgType::Jsonb => match v {
            // Connect's io.debezium.data.Json: the document as a string.
            Json::String(s) if schema.is_some() => Value::Json(s.clone()),
            // Courier's json format embeds the document itself.
            other => Value::Json(other.to_string()),
        },
        PgType::Array(inner) => {
            let items = v.as_array().ok_or_else(bad)?;
            let item_schema = schema.map(|s| &s["items"]);
            let items = items
                .iter()
                .map(|i| match (i, &**inner) {
                    // Nested arrays of Courier's json format.
                    (Json::Array(_), t) if !matches!(t, PgType::Array(_)) => {
                        value(&PgType::Array(Box::new(t.clone())), item_schema, i)
                    }
                    _ => value(inner, item_schema, i),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Value::Array(items)
        }
        PgType::Text | PgType::Enum | PgType::Interval | PgType::Other => match v {
            Json::String(s) => Value::Text(s.clone()),
            other => Value::Text(other.to_string()),
        },
    })
}

fn kind_of(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// A float, or the strings Jackson writes for NaN and the infinities.
fn float(v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// A decimal's text from any of Debezium's forms: base64 two's-complement
/// bytes with the schema's scale (`precise`), `{"scale", "value"}`
/// (VariableScaleDecimal), a string (`string`), a number (`double`).
fn numeric(v: &Json, scale: Option<u16>) -> Option<String> {
    match v {
        Json::String(s) if scale.is_some() => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
            Some(decimal_text(&bytes, u32::from(scale?)))
        }
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => {
            let scale = o.get("scale")?.as_u64()? as u32;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(o.get("value")?.as_str()?)
                .ok()?;
            Some(decimal_text(&bytes, scale))
        }
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The decimal text of a big-endian two's-complement unscaled value.
fn decimal_text(bytes: &[u8], scale: u32) -> String {
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    // Magnitude in base 10^9 limbs, from the bytes (negated when negative).
    let mut mag: Vec<u8> = bytes.to_vec();
    if negative {
        for b in mag.iter_mut() {
            *b = !*b;
        }
        for b in mag.iter_mut().rev() {
            let (v, carry) = b.overflowing_add(1);
            *b = v;
            if !carry {
                break;
            }
        }
    }
    let mut digits = Vec::new(); // little-endian base-10 digits
    let mut limbs: Vec<u32> = Vec::new(); // little-endian base 1e9
    for &byte in &mag {
        // limbs = limbs * 256 + byte
        let mut carry = u64::from(byte);
        for l in limbs.iter_mut() {
            let v = u64::from(*l) * 256 + carry;
            *l = (v % 1_000_000_000) as u32;
            carry = v / 1_000_000_000;
        }
        while carry > 0 {
            limbs.push((carry % 1_000_000_000) as u32);
            carry /= 1_000_000_000;
        }
    }
    for (i, l) in limbs.iter().enumerate() {
        let mut l = *l;
        for _ in 0..9 {
            digits.push((l % 10) as u8);
            l /= 10;
            if l == 0 && i == limbs.len() - 1 {
                break;
            }
        }
    }
    while digits.len() > 1 && digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        digits.push(0);
    }
    let scale = scale as usize;
    while digits.len() <= scale {
        digits.push(0);
    }
    let mut out = String::new();
    if negative && digits.iter().any(|d| *d != 0) {
        out.push('-');
    }
    for (i, d) in digits.iter().enumerate().rev() {
        out.push(char::from(b'0' + d));
        if i == scale && scale > 0 {
            out.push('.');
        }
    }
    out
}

/// `YYYY-MM-DD` of days since 1970-01-01 (PostgreSQL's `BC` suffix before year 1).
fn date_text(days: i64) -> String {
    match days {
        d if d == i64::from(i32::MAX) => return "infinity".into(),
        d if d == i64::from(i32::MIN) => return "-infinity".into(),
        _ => {}
    }
    let (y, m, d) = civil_from_days(days);
    if y <= 0 {
        format!("{:04}-{m:02}-{d:02} BC", 1 - y)
    } else {
        format!("{y:04}-{m:02}-{d:02}")
    }
}

/// `HH:MM:SS[.ffffff]` of microseconds since midnight (trailing zeros of
/// the fraction dropped, as PostgreSQL prints it).
fn time_text(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let us = micros.rem_euclid(1_000_000);
    let mut out = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    push_fraction(&mut out, us);
    out
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]` of microseconds since the epoch.
fn timestamp_text(micros: i64) -> String {
    match micros {
        i64::MAX => return "infinity".into(),
        i64::MIN => return "-infinity".into(),
        _ => {}
    }
    let days = micros.div_euclid(86_400_000_000);
    let rest = micros.rem_euclid(86_400_000_000);
    let (y, m, d) = civil_from_days(days);
    let time = time_text(rest);
    if y <= 0 {
        format!("{:04}-{m:02}-{d:02}T{time} BC", 1 - y)
    } else {
        format!("{y:04}-{m:02}-{d:02}T{time}")
    }
}

fn push_fraction(out: &mut String, us: i64) {
    if us > 0 {
        let frac = format!("{us:06}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
}

/// `text` with the trailing zeros of its fraction dropped, keeping `suffix`
/// (Debezium's ISO forms print fractions in groups of three digits).
fn trim_fraction(text: &str, suffix: &str) -> String {
    let Some(body) = text.strip_suffix(suffix) else {
        return text.to_string();
    };
    match body.rsplit_once('.') {
        Some((head, frac)) if frac.bytes().all(|b| b.is_ascii_digit()) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                format!("{head}{suffix}")
            } else {
                format!("{head}.{frac}{suffix}")
            }
        }
        _ => text.to_string(),
    }
}

/// The proleptic Gregorian date of days since 1970-01-01 (year 0 = 1 BC).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decimals_come_back_from_every_form() {
        // 1.50 at scale 2 is the unscaled 150 = 0x0096.
        assert_eq!(numeric(&json!("AJY="), Some(2)).unwrap(), "1.50");
        // -1.5 at scale 1: -15 = 0xF1.
        assert_eq!(numeric(&json!("8Q=="), Some(1)).unwrap(), "-1.5");
        assert_eq!(
            numeric(&json!({"scale": 3, "value": "AA=="}), None).unwrap(),
            "0.000"
        );
        assert_eq!(numeric(&json!("12.30"), None).unwrap(), "12.30");
        // 2^64 + 1, unscaled, scale 0.
        let big = base64::engine::general_purpose::STANDARD.encode([1u8, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(
            numeric(&json!(big), Some(0)).unwrap(),
            "18446744073709551617"
        );
    }

    #[test]
    fn dates_and_times_print_as_postgresql_does() {
        assert_eq!(date_text(0), "1970-01-01");
        assert_eq!(date_text(-1), "1969-12-31");
        assert_eq!(date_text(19_724), "2024-01-02");
        assert_eq!(time_text(45_296_500_000), "12:34:56.5");
        assert_eq!(timestamp_text(-1), "1969-12-31T23:59:59.999999");
        assert_eq!(
            timestamp_text(1_704_164_645_123_456),
            "2024-01-02T03:04:05.123456"
        );
        assert_eq!(
            trim_fraction("2024-01-02T03:04:05.500Z", "Z"),
            "2024-01-02T03:04:05.5Z"
        );
        assert_eq!(
            trim_fraction("2024-01-02T03:04:05.000Z", "Z"),
            "2024-01-02T03:04:05Z"
        );
    }
}

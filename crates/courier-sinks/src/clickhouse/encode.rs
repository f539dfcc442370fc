//! Rows → the body of an `INSERT ... FORMAT TabSeparated`.
//!
//! Values are checked against their ClickHouse column type before they are
//! written, so a value ClickHouse cannot hold exactly is an error naming the
//! column (never the value) instead of a silently changed row.

use courier_core::Value;

use super::types::ChType;

/// A value that the column's ClickHouse type cannot hold.
#[derive(Debug)]
pub(crate) struct EncodeError {
    pub column: String,
    pub reason: String,
}

/// Appends one column's value of a row in TabSeparated form.
///
/// `Null` in a column that is not `Nullable` writes the type's default: this
/// happens for the non-key columns of a tombstone, and for NULL arrays.
pub(crate) fn write_field(
    out: &mut Vec<u8>,
    t: &ChType,
    v: &Value,
    column: &str,
) -> Result<(), EncodeError> {
    let err = |reason: String| EncodeError {
        column: column.to_string(),
        reason,
    };
    match (t, v) {
        (ChType::Nullable(_), Value::Null) => out.extend_from_slice(b"\\N"),
        (ChType::Nullable(inner), v) => return write_field(out, inner, v, column),
        (t, Value::Null) => write_default(out, t),
        (ChType::Array(inner), Value::Array(items)) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_element(out, inner, item).map_err(err)?;
            }
            out.push(b']');
        }
        (t, v) => write_scalar(out, t, v, false).map_err(err)?,
    }
    Ok(())
}

/// An array element, in ClickHouse's quoted form.
fn write_element(out: &mut Vec<u8>, t: &ChType, v: &Value) -> Result<(), String> {
    match (t, v) {
        (ChType::Nullable(_), Value::Null) => {
            out.extend_from_slice(b"NULL");
            Ok(())
        }
        (ChType::Nullable(inner), v) => write_element(out, inner, v),
        (_, Value::Array(_)) => Err(
            "a multi-dimensional array does not fit a one-dimensional ClickHouse Array column"
                .into(),
        ),
        (t, v) => write_scalar(out, t, v, true),
    }
}

fn write_scalar(out: &mut Vec<u8>, t: &ChType, v: &Value, quoted: bool) -> Result<(), String> {
    let text = |out: &mut Vec<u8>, s: &[u8]| {
        if quoted {
            out.push(b'\'');
            escape(out, s, true);
            out.push(b'\'');
        } else {
            escape(out, s, false);
        }
    };
    match (t, v) {
        (ChType::String, Value::Bytes(b)) => text(out, b),
        (ChType::String, v) => match v {
            Value::Text(s)
            | Value::Numeric(s)
            | Value::Uuid(s)
            | Value::Date(s)
            | Value::Time(s)
            | Value::Timestamp(s)
            | Value::TimestampTz(s)
            | Value::Json(s) => text(out, s.as_bytes()),
            other => {
                // Scalars in a column that became String: their JSON form.
                let mut j = Vec::new();
                other.write_json(&mut j);
                text(out, &j)
            }
        },
        (ChType::UInt8, Value::Bool(b)) => out.push(if *b { b'1' } else { b'0' }),
        (ChType::Int16 | ChType::Int32 | ChType::Int64 | ChType::UInt32, Value::Int(i)) => {
            out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes())
        }
        (ChType::Float32 | ChType::Float64, Value::Int(i)) => {
            out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes())
        }
        (ChType::Float32, Value::Float4(f)) => write_float(out, f64::from(*f), &format!("{f:?}")),
        (ChType::Float64, Value::Float4(f)) => write_float(out, f64::from(*f), &format!("{f:?}")),
        (ChType::Float64, Value::Float8(f)) => write_float(out, *f, &format!("{f:?}")),
        (ChType::Decimal(p, s), Value::Numeric(n)) => {
            check_decimal(n, *p, *s)?;
            out.extend_from_slice(n.as_bytes());
        }
        (ChType::Decimal(p, s), Value::Int(i)) => {
            let n = i.to_string();
            check_decimal(&n, *p, *s)?;
            out.extend_from_slice(n.as_bytes());
        }
        (ChType::Uuid, Value::Uuid(u)) => text(out, u.as_bytes()),
        (ChType::Date | ChType::Date32, Value::Date(d)) => {
            let d = date(d, t == &ChType::Date32)?;
            text(out, d.as_bytes())
        }
        (ChType::DateTime | ChType::DateTime64, Value::Timestamp(ts) | Value::TimestampTz(ts)) => {
            let ts = timestamp(ts, t == &ChType::DateTime64)?;
            text(out, ts.as_bytes())
        }
        (t, v) => {
            return Err(format!(
                "a {} value does not fit the ClickHouse column type {t}",
                value_kind(v)
            ))
        }
    }
    Ok(())
}

fn write_float(out: &mut Vec<u8>, probe: f64, repr: &str) {
    if probe.is_nan() {
        out.extend_from_slice(b"nan");
    } else if probe.is_infinite() {
        out.extend_from_slice(if probe > 0.0 { b"inf" } else { b"-inf" });
    } else {
        out.extend_from_slice(repr.as_bytes());
    }
}

/// Writes the default of a non-Nullable type (what ClickHouse itself fills in).
fn write_default(out: &mut Vec<u8>, t: &ChType) {
    let d: &[u8] = match t {
        ChType::String | ChType::Other(_) => b"",
        ChType::Uuid => b"00000000-0000-0000-0000-000000000000",
        ChType::Date | ChType::Date32 => b"1970-01-01",
        ChType::DateTime | ChType::DateTime64 => b"1970-01-01 00:00:00",
        ChType::Array(_) => b"[]",
        ChType::Nullable(_) => b"\\N",
        _ => b"0",
    };
    out.extend_from_slice(d);
}

/// Checks that an exact decimal fits `Decimal(p, s)` without rounding.
fn check_decimal(n: &str, p: u16, s: u16) -> Result<(), String> {
    let digits = n.trim_start_matches('-');
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let ok = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && int.trim_start_matches('0').len() <= usize::from(p - s)
        && frac.trim_end_matches('0').len() <= usize::from(s);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a numeric value (NaN, infinite or out of range) does not fit Decimal({p}, {s})"
        ))
    }
}

/// `YYYY-MM-DD` within the ClickHouse type's range; infinities become the
/// range's ends.
fn date(d: &str, date32: bool) -> Result<&str, String> {
    let (lo, hi) = if date32 {
        ("1900-01-01", "2299-12-31")
    } else {
        ("1970-01-01", "2105-12-31")
    };
    match d {
        "infinity" => return Ok(hi),
        "-infinity" => return Ok(lo),
        _ => {}
    }
    let ok = d.len() == 10 && d.as_bytes()[4] == b'-' && (lo..=hi).contains(&d);
    if ok {
        Ok(d)
    } else {
        Err(format!(
            "a date outside {lo}..{hi} (the range of ClickHouse's {})",
            if date32 { "Date32" } else { "Date" }
        ))
    }
}

/// A ClickHouse timestamp's text, built without allocating.
struct Stamp {
    buf: [u8; 26],
    len: usize,
}

impl Stamp {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]` within the ClickHouse type's range;
/// `DateTime` keeps whole seconds. Infinities become the range's ends.
fn timestamp(ts: &str, micros: bool) -> Result<Stamp, String> {
    let (lo, hi): (&[u8], &[u8]) = if micros {
        (b"1900-01-01 00:00:00.000000", b"2299-12-31 23:59:59.999999")
    } else {
        (b"1970-01-01 00:00:00", b"2105-12-31 23:59:59")
    };
    let mut stamp = Stamp {
        buf: [b'0'; 26],
        len: if micros { 26 } else { 19 },
    };
    let t = match ts {
        "infinity" => hi,
        "-infinity" => lo,
        _ => {
            let t = ts.strip_suffix('Z').unwrap_or(ts).as_bytes();
            if t.len() < 19 || t[10] != b'T' || t.ends_with(b" BC") {
                return Err("a timestamp ClickHouse cannot hold".into());
            }
            t
        }
    };
    stamp.buf[..19].copy_from_slice(&t[..19]);
    stamp.buf[10] = b' ';
    if micros {
        stamp.buf[19] = b'.';
        let frac = t.get(20..).unwrap_or(b"");
        let n = frac.len().min(6);
        stamp.buf[20..20 + n].copy_from_slice(&frac[..n]);
    }
    if (lo..=hi).contains(&stamp.as_bytes()) {
        Ok(stamp)
    } else {
        Err(format!(
            "a timestamp outside {}..{} (the range of ClickHouse's {})",
            String::from_utf8_lossy(&lo[..10]),
            String::from_utf8_lossy(&hi[..10]),
            if micros { "DateTime64" } else { "DateTime" }
        ))
    }
}

/// Escapes for TabSeparated (and, when `quoted`, for a quoted string inside it).
fn escape(out: &mut Vec<u8>, s: &[u8], quoted: bool) {
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let rep: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            0 => b"\\0",
            b'\'' if quoted => b"\\'",
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        out.extend_from_slice(rep);
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
}

fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Bool(_) => "boolean",
        Value::Int(_) => "integer",
        Value::Float4(_) | Value::Float8(_) => "floating-point",
        Value::Numeric(_) => "numeric",
        Value::Text(_) => "text",
        Value::Bytes(_) => "bytea",
        Value::Uuid(_) => "uuid",
        Value::Date(_) => "date",
        Value::Time(_) => "time",
        Value::Timestamp(_) | Value::TimestampTz(_) => "timestamp",
        Value::Json(_) => "json",
        Value::Array(_) => "array",
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn field(t: &ChType, v: &Value) -> Result<String, String> {
        let mut out = Vec::new();
        write_field(&mut out, t, v, "c").map_err(|e| e.reason)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn writes_tab_separated_values() {
        let n = |t| ChType::Nullable(Box::new(t));
        assert_eq!(field(&n(ChType::String), &Value::Null).unwrap(), "\\N");
        assert_eq!(
            field(&ChType::String, &Value::Text("a\tb\\c\nd'".into())).unwrap(),
            "a\\tb\\\\c\\nd'"
        );
        let arr = ChType::Array(Box::new(n(ChType::String)));
        assert_eq!(
            field(
                &arr,
                &Value::Array(vec![Value::Text("it's".into()), Value::Null])
            )
            .unwrap(),
            "['it\\'s',NULL]"
        );
        assert_eq!(field(&arr, &Value::Null).unwrap(), "[]");
        assert_eq!(
            field(&ChType::Float64, &Value::Float8(f64::NEG_INFINITY)).unwrap(),
            "-inf"
        );
        assert_eq!(
            field(&ChType::Float64, &Value::Float8(1e300)).unwrap(),
            "1e300"
        );
        assert_eq!(
            field(
                &ChType::DateTime,
                &Value::TimestampTz("2024-01-02T03:04:05.123456Z".into())
            )
            .unwrap(),
            "2024-01-02 03:04:05"
        );
        assert_eq!(
            field(
                &ChType::DateTime64,
                &Value::Timestamp("2024-01-02T03:04:05.5".into())
            )
            .unwrap(),
            "2024-01-02 03:04:05.500000"
        );
        assert_eq!(
            field(&ChType::Date, &Value::Date("infinity".into())).unwrap(),
            "2105-12-31"
        );
        assert_eq!(
            field(&ChType::DateTime64, &Value::Timestamp("-infinity".into())).unwrap(),
            "1900-01-01 00:00:00.000000"
        );
        assert_eq!(
            field(&ChType::DateTime, &Value::TimestampTz("infinity".into())).unwrap(),
            "2105-12-31 23:59:59"
        );
    }

    #[test]
    fn refuses_values_the_type_cannot_hold() {
        assert!(field(&ChType::Decimal(4, 2), &Value::Numeric("NaN".into())).is_err());
        assert!(field(&ChType::Decimal(4, 2), &Value::Numeric("123.4".into())).is_err());
        assert!(field(&ChType::Decimal(4, 2), &Value::Numeric("-12.30".into())).is_ok());
        assert!(field(&ChType::Date, &Value::Date("1969-12-31".into())).is_err());
        assert!(field(&ChType::Date32, &Value::Date("1969-12-31".into())).is_ok());
        let arr = ChType::Array(Box::new(ChType::Nullable(Box::new(ChType::Int32))));
        let nested = Value::Array(vec![Value::Array(vec![Value::Int(1)])]);
        assert!(field(&arr, &nested).is_err());
        assert!(field(&ChType::Int32, &Value::Text("x".into())).is_err());
    }
}

//! Rows → the body of an `INSERT ... FORMAT RowBinary`.
//!
//! RowBinary is each value in its column type's binary form, in column
//! order: no text for the server to parse, so a float arrives with the very
//! bits PostgreSQL sent (text parsing on 18.16 can land a unit in the last
//! place off), and a date or timestamp as the number of days, seconds or
//! microseconds it is. Values are checked against their column type first,
//! so a value ClickHouse cannot hold exactly is an error naming the column
//! (never the value) instead of a silently changed row.
//!
//! The types are those of the table's columns as ClickHouse reports them,
//! which may be wider than the ones the relation maps to (a column widened
//! earlier and narrowed since in PostgreSQL).

use courier_core::Value;

use super::types::ChType;

/// A value that the column's ClickHouse type cannot hold.
#[derive(Debug)]
pub(crate) struct EncodeError {
    pub column: String,
    pub reason: String,
}

/// Appends one column's value of a row in RowBinary form.
///
/// `Null` in a column that is not `Nullable` writes the type's default: this
/// happens for the non-key columns of a tombstone, and for NULL arrays.
pub(crate) fn write_field(
    out: &mut Vec<u8>,
    t: &ChType,
    v: &Value,
    column: &str,
) -> Result<(), EncodeError> {
    write_value(out, t, v).map_err(|reason| EncodeError {
        column: column.to_string(),
        reason,
    })
}

fn write_value(out: &mut Vec<u8>, t: &ChType, v: &Value) -> Result<(), String> {
    match (t, v) {
        (ChType::Nullable(_), Value::Null) => out.push(1),
        (ChType::Nullable(inner), v) => {
            out.push(0);
            write_value(out, inner, v)?;
        }
        (t, Value::Null) => write_default(out, t)?,
        (ChType::Array(inner), Value::Array(items)) => {
            write_varint(out, items.len() as u64);
            for item in items {
                if matches!(item, Value::Array(_)) && !matches!(inner.inner(), ChType::Array(_)) {
                    return Err("a multi-dimensional array does not fit a one-dimensional ClickHouse Array column".into());
                }
                write_value(out, inner, item)?;
            }
        }
        (t, v) => write_scalar(out, t, v)?,
    }
    Ok(())
}

/// A string's RowBinary form: its length as a varint, then its bytes.
fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    write_varint(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Unsigned LEB128, as RowBinary prefixes strings and arrays.
pub(crate) fn write_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn write_scalar(out: &mut Vec<u8>, t: &ChType, v: &Value) -> Result<(), String> {
    let range = |kind: &str| format!("an integer outside the range of ClickHouse's {kind}");
    match (t, v) {
        (ChType::String, Value::Bytes(b)) => write_string(out, b),
        (ChType::String, v) => match v {
            Value::Text(s)
            | Value::Numeric(s)
            | Value::Uuid(s)
            | Value::Date(s)
            | Value::Time(s)
            | Value::Timestamp(s)
            | Value::TimestampTz(s)
            | Value::Json(s) => write_string(out, s.as_bytes()),
            other => {
                // Scalars in a column that became String: their JSON form.
                let mut j = Vec::new();
                other.write_json(&mut j);
                write_string(out, &j)
            }
        },
        (ChType::UInt8, Value::Bool(b)) => out.push(u8::from(*b)),
        (ChType::Int16, Value::Int(i)) => {
            let n = i16::try_from(*i).map_err(|_| range("Int16"))?;
            out.extend_from_slice(&n.to_le_bytes())
        }
        (ChType::Int32, Value::Int(i)) => {
            let n = i32::try_from(*i).map_err(|_| range("Int32"))?;
            out.extend_from_slice(&n.to_le_bytes())
        }
        (ChType::UInt32, Value::Int(i)) => {
            let n = u32::try_from(*i).map_err(|_| range("UInt32"))?;
            out.extend_from_slice(&n.to_le_bytes())
        }
        (ChType::Int64, Value::Int(i)) => out.extend_from_slice(&i.to_le_bytes()),
        // Integers in a float column (a column widened to Float64): the
        // nearest float, as ClickHouse's own conversion gives.
        (ChType::Float32, Value::Int(i)) => out.extend_from_slice(&(*i as f32).to_le_bytes()),
        (ChType::Float64, Value::Int(i)) => out.extend_from_slice(&(*i as f64).to_le_bytes()),
        (ChType::Float32, Value::Float4(f)) => out.extend_from_slice(&f.to_le_bytes()),
        (ChType::Float64, Value::Float4(f)) => out.extend_from_slice(&f64::from(*f).to_le_bytes()),
        (ChType::Float64, Value::Float8(f)) => out.extend_from_slice(&f.to_le_bytes()),
        (ChType::Decimal(p, s), Value::Numeric(n)) => write_decimal(out, n, *p, *s)?,
        (ChType::Decimal(p, s), Value::Int(i)) => write_decimal(out, &i.to_string(), *p, *s)?,
        (ChType::Uuid, Value::Uuid(u)) => write_uuid(out, u)?,
        (ChType::Date, Value::Date(d)) => {
            let days = date(d, false)?;
            // Within 1970..2105: 0..=49_673 days.
            out.extend_from_slice(&(days as u16).to_le_bytes())
        }
        (ChType::Date32, Value::Date(d)) => {
            out.extend_from_slice(&(date(d, true)? as i32).to_le_bytes())
        }
        (ChType::DateTime, Value::Timestamp(ts) | Value::TimestampTz(ts)) => {
            let micros = timestamp(ts, false)?;
            // Within 1970..2105, whole seconds: fits a UInt32.
            out.extend_from_slice(&(micros.div_euclid(1_000_000) as u32).to_le_bytes())
        }
        (ChType::DateTime64, Value::Timestamp(ts) | Value::TimestampTz(ts)) => {
            out.extend_from_slice(&timestamp(ts, true)?.to_le_bytes())
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

/// Writes the default of a non-Nullable type (what ClickHouse itself fills in).
fn write_default(out: &mut Vec<u8>, t: &ChType) -> Result<(), String> {
    let width = match t {
        ChType::String | ChType::Array(_) => 1, // length 0
        ChType::UInt8 => 1,
        ChType::Int16 | ChType::Date => 2,
        ChType::UInt32 | ChType::Int32 | ChType::Float32 | ChType::Date32 | ChType::DateTime => 4,
        ChType::UInt64 | ChType::Int64 | ChType::Float64 | ChType::DateTime64 => 8,
        ChType::Decimal(p, _) => decimal_width(*p),
        ChType::Uuid => 16,
        ChType::Nullable(_) => {
            out.push(1);
            return Ok(());
        }
        ChType::Other(name) => {
            return Err(format!(
                "Courier cannot write the ClickHouse column type {name}, which it did not create"
            ))
        }
    };
    out.resize(out.len() + width, 0);
    Ok(())
}

/// Bytes of `Decimal(p, _)`: Decimal32, Decimal64 or Decimal128.
fn decimal_width(p: u16) -> usize {
    match p {
        0..=9 => 4,
        10..=18 => 8,
        _ => 16,
    }
}

/// An exact decimal as `Decimal(p, s)`'s scaled integer, refusing what it
/// cannot hold without rounding.
fn write_decimal(out: &mut Vec<u8>, n: &str, p: u16, s: u16) -> Result<(), String> {
    let unfit = || {
        format!("a numeric value (NaN, infinite or out of range) does not fit Decimal({p}, {s})")
    };
    let (negative, digits) = match n.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, n),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let int_digits = int.trim_start_matches('0');
    let frac_digits = frac.trim_end_matches('0');
    let ok = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && int_digits.len() <= usize::from(p - s)
        && frac_digits.len() <= usize::from(s);
    if !ok {
        return Err(unfit());
    }
    // At most 38 digits: fits an i128.
    let mut scaled: i128 = 0;
    for b in int_digits.bytes().chain(frac_digits.bytes()) {
        scaled = scaled * 10 + i128::from(b - b'0');
    }
    for _ in frac_digits.len()..usize::from(s) {
        scaled *= 10;
    }
    if negative {
        scaled = -scaled;
    }
    match decimal_width(p) {
        4 => out.extend_from_slice(&(scaled as i32).to_le_bytes()),
        8 => out.extend_from_slice(&(scaled as i64).to_le_bytes()),
        _ => out.extend_from_slice(&scaled.to_le_bytes()),
    }
    Ok(())
}

/// A UUID's 128 bits as ClickHouse holds them: the high 64 bits, then the
/// low 64 bits, each a little-endian UInt64.
fn write_uuid(out: &mut Vec<u8>, u: &str) -> Result<(), String> {
    let mut bits: u128 = 0;
    let mut n = 0;
    for c in u.chars().filter(|c| *c != '-') {
        let d = c
            .to_digit(16)
            .ok_or_else(|| "a uuid that is not 32 hexadecimal digits".to_string())?;
        bits = (bits << 4) | u128::from(d);
        n += 1;
    }
    if n != 32 {
        return Err("a uuid that is not 32 hexadecimal digits".into());
    }
    out.extend_from_slice(&((bits >> 64) as u64).to_le_bytes());
    out.extend_from_slice(&(bits as u64).to_le_bytes());
    Ok(())
}

/// Days from 1970-01-01 to the proleptic Gregorian date `y-m-d`
/// (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The digits of `s` as a number; `None` unless all are ASCII digits.
fn digits(s: &[u8]) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0i64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0'))
    })
}

/// Days since 1970-01-01 of `YYYY-MM-DD` (as text `s`), if well formed.
fn parse_date(s: &[u8]) -> Option<i64> {
    if s.len() != 10 || s[4] != b'-' || s[7] != b'-' {
        return None;
    }
    let (y, m, d) = (digits(&s[..4])?, digits(&s[5..7])?, digits(&s[8..10])?);
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then(|| days_from_civil(y, m, d))
}

/// Days since 1970-01-01, within the ClickHouse type's range; infinities
/// become the range's ends.
fn date(d: &str, date32: bool) -> Result<i64, String> {
    let (lo, hi) = if date32 {
        ("1900-01-01", "2299-12-31")
    } else {
        ("1970-01-01", "2105-12-31")
    };
    let d = match d {
        "infinity" => hi,
        "-infinity" => lo,
        d => d,
    };
    match parse_date(d.as_bytes()) {
        Some(days) if (lo..=hi).contains(&d) => Ok(days),
        _ => Err(format!(
            "a date outside {lo}..{hi} (the range of ClickHouse's {})",
            if date32 { "Date32" } else { "Date" }
        )),
    }
}

/// Microseconds since 1970-01-01 00:00:00 UTC of `YYYY-MM-DDTHH:MM:SS[.ffffff][Z]`,
/// within the ClickHouse type's range (`DateTime64` when `micros`, else
/// `DateTime`, which keeps whole seconds: the fraction is dropped).
/// Infinities become the range's ends.
fn timestamp(ts: &str, micros: bool) -> Result<i64, String> {
    let (lo, hi): (&str, &str) = if micros {
        ("1900-01-01T00:00:00.000000", "2299-12-31T23:59:59.999999")
    } else {
        ("1970-01-01T00:00:00", "2105-12-31T23:59:59")
    };
    let out_of_range = || {
        format!(
            "a timestamp outside {}..{} (the range of ClickHouse's {})",
            &lo[..10],
            &hi[..10],
            if micros { "DateTime64" } else { "DateTime" }
        )
    };
    let t = match ts {
        "infinity" => hi,
        "-infinity" => lo,
        ts => ts.strip_suffix('Z').unwrap_or(ts),
    };
    let b = t.as_bytes();
    let unfit = || "a timestamp ClickHouse cannot hold".to_string();
    if b.len() < 19 || b[10] != b'T' || b[13] != b':' || b[16] != b':' || t.ends_with(" BC") {
        return Err(unfit());
    }
    let days = parse_date(&b[..10]).ok_or_else(unfit)?;
    let (h, m, s) = (
        digits(&b[11..13]).ok_or_else(unfit)?,
        digits(&b[14..16]).ok_or_else(unfit)?,
        digits(&b[17..19]).ok_or_else(unfit)?,
    );
    let mut frac = 0;
    if micros && b.len() > 19 {
        if b[19] != b'.' {
            return Err(unfit());
        }
        let f = &b[20..b.len().min(26)];
        frac = digits(f).ok_or_else(unfit)?;
        for _ in f.len()..6 {
            frac *= 10;
        }
    }
    // Compare the fixed-width text: lexical order is time order.
    let probe = &b[..b.len().min(lo.len())];
    if probe < &lo.as_bytes()[..probe.len()] || probe > hi.as_bytes() {
        return Err(out_of_range());
    }
    Ok(((days * 86_400 + h * 3_600 + m * 60 + s) * 1_000_000) + frac)
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

    fn field(t: &ChType, v: &Value) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        write_field(&mut out, t, v, "c").map_err(|e| e.reason)?;
        Ok(out)
    }

    fn n(t: ChType) -> ChType {
        ChType::Nullable(Box::new(t))
    }

    #[test]
    fn writes_row_binary_values() {
        assert_eq!(field(&n(ChType::String), &Value::Null).unwrap(), [1]);
        assert_eq!(
            field(&n(ChType::String), &Value::Text("a\tb".into())).unwrap(),
            b"\x00\x03a\tb"
        );
        let arr = ChType::Array(Box::new(n(ChType::Int32)));
        assert_eq!(
            field(&arr, &Value::Array(vec![Value::Int(-1), Value::Null])).unwrap(),
            [2, 0, 0xff, 0xff, 0xff, 0xff, 1]
        );
        assert_eq!(field(&arr, &Value::Null).unwrap(), [0]);
        let f = 1.777_777_777_777_778_f64;
        assert_eq!(
            field(&ChType::Float64, &Value::Float8(f)).unwrap(),
            f.to_le_bytes()
        );
        assert_eq!(
            field(&ChType::Decimal(12, 3), &Value::Numeric("-1.5".into())).unwrap(),
            (-1500i64).to_le_bytes()
        );
        assert_eq!(
            field(&ChType::Decimal(4, 2), &Value::Numeric("12.30".into())).unwrap(),
            1230i32.to_le_bytes()
        );
        assert_eq!(
            field(
                &ChType::Decimal(38, 9),
                &Value::Numeric("1.000000001".into())
            )
            .unwrap(),
            1_000_000_001i128.to_le_bytes()
        );
        assert_eq!(
            field(
                &ChType::Uuid,
                &Value::Uuid("00112233-4455-6677-8899-aabbccddeeff".into())
            )
            .unwrap(),
            [
                0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00, 0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa,
                0x99, 0x88
            ]
        );
        let mut long = Vec::new();
        write_varint(&mut long, 300);
        assert_eq!(long, [0xac, 0x02]);
    }

    #[test]
    fn converts_dates_and_timestamps() {
        assert_eq!(date("1970-01-01", false), Ok(0));
        assert_eq!(date("2024-02-29", false), Ok(19_782));
        assert_eq!(date("1969-12-31", true), Ok(-1));
        assert_eq!(date("1900-01-01", true), Ok(-25_567));
        assert_eq!(date("infinity", false), Ok(49_672));
        assert_eq!(
            timestamp("2024-01-02T03:04:05.123456Z", false),
            Ok(1_704_164_645_000_000)
        );
        assert_eq!(
            timestamp("2024-01-02T03:04:05.5", true),
            Ok(1_704_164_645_500_000)
        );
        assert_eq!(timestamp("1969-12-31T23:59:59.999999", true), Ok(-1));
        assert_eq!(timestamp("-infinity", false), Ok(0));
        assert_eq!(
            timestamp("infinity", true),
            Ok(days_from_civil(2300, 1, 1) * 86_400_000_000 - 1)
        );
        assert_eq!(
            field(
                &ChType::DateTime,
                &Value::TimestampTz("2024-01-02T03:04:05.9Z".into())
            )
            .unwrap(),
            1_704_164_645u32.to_le_bytes()
        );
    }

    #[test]
    fn refuses_values_the_type_cannot_hold() {
        assert!(field(&ChType::Decimal(4, 2), &Value::Numeric("NaN".into())).is_err());
        assert!(field(&ChType::Decimal(4, 2), &Value::Numeric("123.4".into())).is_err());
        assert!(field(&ChType::Decimal(4, 2), &Value::Numeric("-12.30".into())).is_ok());
        assert!(field(&ChType::Date, &Value::Date("1969-12-31".into())).is_err());
        assert!(field(&ChType::Date32, &Value::Date("1969-12-31".into())).is_ok());
        assert!(field(&ChType::Date32, &Value::Date("1899-12-31".into())).is_err());
        assert!(field(
            &ChType::DateTime,
            &Value::Timestamp("1969-12-31T23:59:59".into())
        )
        .is_err());
        assert!(field(
            &ChType::DateTime64,
            &Value::Timestamp("0044-03-15T12:00:00 BC".into())
        )
        .is_err());
        let arr = ChType::Array(Box::new(n(ChType::Int32)));
        let nested = Value::Array(vec![Value::Array(vec![Value::Int(1)])]);
        assert!(field(&arr, &nested).is_err());
        assert!(field(&ChType::Int32, &Value::Text("x".into())).is_err());
        assert!(field(&ChType::Int16, &Value::Int(40_000)).is_err());
        assert!(field(&ChType::Uuid, &Value::Uuid("nope".into())).is_err());
    }
}

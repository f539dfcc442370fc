//! Decoding of PostgreSQL's binary forms (what `COPY ... (FORMAT binary)`
//! sends) into the same [`Value`]s the text forms decode to.
//!
//! Only types whose binary form is fixed and simple are read in binary:
//! they cost PostgreSQL less to send (no output function: a timestamp is
//! eight bytes instead of a formatted string) and Courier less to read (no
//! escapes, no number parsing). Every other type, and every domain, is read
//! as its output function's text, so both paths agree by construction.

use courier_core::{Column, Value};

use super::{datetime, decode_column, type_label, ValueError};

/// How a column is read from a binary COPY.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryForm {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    Numeric,
    Text,
    Bytea,
    Uuid,
    Date,
    Timestamp,
    TimestampTz,
    Json,
    Jsonb,
    /// The query sends the output function's text (see [`BinaryForm::select`]).
    AsText,
}

impl BinaryForm {
    /// The form of `column`'s values, by its exact type OID (domains and
    /// types not listed are read as text).
    pub fn of(column: &Column) -> BinaryForm {
        match column.type_oid {
            16 => BinaryForm::Bool,
            21 => BinaryForm::Int2,
            23 => BinaryForm::Int4,
            20 => BinaryForm::Int8,
            26 => BinaryForm::Oid,
            700 => BinaryForm::Float4,
            701 => BinaryForm::Float8,
            1700 => BinaryForm::Numeric,
            // name, text, bpchar, varchar: the binary form is the text.
            19 | 25 | 1042 | 1043 => BinaryForm::Text,
            17 => BinaryForm::Bytea,
            2950 => BinaryForm::Uuid,
            1082 => BinaryForm::Date,
            1114 => BinaryForm::Timestamp,
            1184 => BinaryForm::TimestampTz,
            114 => BinaryForm::Json,
            3802 => BinaryForm::Jsonb,
            _ => BinaryForm::AsText,
        }
    }

    /// The select-list expression that reads `quoted` (a quoted column name)
    /// in this form. `format('%s', c)` renders through the type's output
    /// function, exactly the text a text COPY or pgoutput sends.
    pub fn select(self, quoted: &str) -> String {
        match self {
            BinaryForm::AsText => {
                format!("CASE WHEN {quoted} IS NULL THEN NULL ELSE format('%s', {quoted}) END")
            }
            _ => quoted.to_owned(),
        }
    }

    /// Decodes one non-NULL value of `column` sent in this form.
    pub fn decode(self, column: &Column, data: &[u8]) -> Result<Value, ValueError> {
        let err = |reason: &str| ValueError::new(type_label(&column.pg_type), reason);
        let wrong_size = || err("binary value of the wrong size");
        let text = |bytes: &[u8]| {
            std::str::from_utf8(bytes)
                .map(str::to_owned)
                .map_err(|_| err("not valid UTF-8"))
        };
        Ok(match self {
            BinaryForm::Bool => Value::Bool(fixed::<1>(data).ok_or_else(wrong_size)?[0] != 0),
            BinaryForm::Int2 => Value::Int(i64::from(i16::from_be_bytes(
                fixed(data).ok_or_else(wrong_size)?,
            ))),
            BinaryForm::Int4 => Value::Int(i64::from(i32::from_be_bytes(
                fixed(data).ok_or_else(wrong_size)?,
            ))),
            BinaryForm::Oid => Value::Int(i64::from(u32::from_be_bytes(
                fixed(data).ok_or_else(wrong_size)?,
            ))),
            BinaryForm::Int8 => Value::Int(i64::from_be_bytes(fixed(data).ok_or_else(wrong_size)?)),
            BinaryForm::Float4 => {
                Value::Float4(f32::from_be_bytes(fixed(data).ok_or_else(wrong_size)?))
            }
            BinaryForm::Float8 => {
                Value::Float8(f64::from_be_bytes(fixed(data).ok_or_else(wrong_size)?))
            }
            BinaryForm::Numeric => Value::Numeric(numeric(data).map_err(err)?),
            BinaryForm::Text => Value::Text(text(data)?),
            BinaryForm::Bytea => Value::Bytes(data.to_vec()),
            BinaryForm::Uuid => Value::Uuid(uuid(&fixed::<16>(data).ok_or_else(wrong_size)?)),
            BinaryForm::Date => Value::Date(datetime::date_from_days(i32::from_be_bytes(
                fixed(data).ok_or_else(wrong_size)?,
            ))),
            BinaryForm::Timestamp => Value::Timestamp(datetime::timestamp_from_micros(
                i64::from_be_bytes(fixed(data).ok_or_else(wrong_size)?),
                false,
            )),
            BinaryForm::TimestampTz => Value::TimestampTz(datetime::timestamp_from_micros(
                i64::from_be_bytes(fixed(data).ok_or_else(wrong_size)?),
                true,
            )),
            BinaryForm::Json => Value::Json(text(data)?),
            BinaryForm::Jsonb => match data.split_first() {
                Some((1, json)) => Value::Json(text(json)?),
                _ => return Err(err("unknown jsonb binary version")),
            },
            BinaryForm::AsText => {
                let text = std::str::from_utf8(data).map_err(|_| err("not valid UTF-8"))?;
                decode_column(column, text)?
            }
        })
    }
}

/// The value's bytes when it has exactly `N` of them.
fn fixed<const N: usize>(data: &[u8]) -> Option<[u8; N]> {
    data.try_into().ok()
}

/// Lower-case hex with hyphens, as `uuid_out` writes it.
fn uuid(b: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out
}

/// `numeric_send`'s form (digit count, weight, sign, display scale, then
/// base-10000 digits) as `numeric_out` writes it.
fn numeric(b: &[u8]) -> Result<String, &'static str> {
    let word = |i: usize| -> Result<u16, &'static str> {
        b.get(i..i + 2)
            .map(|w| u16::from_be_bytes([w[0], w[1]]))
            .ok_or("numeric binary value is truncated")
    };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(2)? as i16);
    let sign = word(4)?;
    let dscale = usize::from(word(6)?);
    match sign {
        0xC000 => return Ok("NaN".to_owned()),
        0xD000 => return Ok("Infinity".to_owned()),
        0xF000 => return Ok("-Infinity".to_owned()),
        0x0000 | 0x4000 => {}
        _ => return Err("numeric binary value has an unknown sign"),
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        let d = word(8 + 2 * i)?;
        if d > 9999 {
            return Err("numeric binary digit out of range");
        }
        digits.push(d);
    }
    // The base-10000 digit at position `p` (10000^p), zero outside the value.
    let digit = |p: i64| -> u16 {
        usize::try_from(weight - p)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut out = String::with_capacity(ndigits * 4 + dscale + 3);
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for p in (0..=weight).rev() {
            let d = digit(p);
            if p == weight {
                out.push_str(&d.to_string());
            } else {
                push_four(&mut out, d, 4);
            }
        }
    }
    if dscale > 0 {
        out.push('.');
        let mut left = dscale;
        let mut p = -1;
        while left > 0 {
            let take = left.min(4);
            push_four(&mut out, digit(p), take);
            left -= take;
            p -= 1;
        }
    }
    Ok(out)
}

/// Writes the first `take` of the four decimal digits of `d` (zero-padded).
fn push_four(out: &mut String, d: u16, take: usize) {
    let four = [d / 1000, d / 100 % 10, d / 10 % 10, d % 10];
    for v in &four[..take] {
        out.push(char::from(b'0' + *v as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_bytes(ndigits: &[u16], weight: i16, sign: u16, dscale: u16) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(ndigits.len() as u16).to_be_bytes());
        b.extend_from_slice(&weight.to_be_bytes());
        b.extend_from_slice(&sign.to_be_bytes());
        b.extend_from_slice(&dscale.to_be_bytes());
        for d in ndigits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    #[test]
    fn numerics_read_as_numeric_out_writes_them() {
        let cases: &[(&[u16], i16, u16, u16, &str)] = &[
            (&[], 0, 0, 0, "0"),
            (&[], 0, 0, 2, "0.00"),
            (&[1, 2345], 1, 0, 0, "12345"),
            (&[1, 2345, 6700], 1, 0x4000, 2, "-12345.67"),
            (&[500], -1, 0, 2, "0.05"),
            (&[5], -2, 0, 8, "0.00000005"),
            (&[1], 2, 0, 0, "100000000"),
            (&[1], 0, 0, 5, "1.00000"),
            (&[], 0, 0xC000, 0, "NaN"),
            (&[], 0, 0xF000, 0, "-Infinity"),
        ];
        for (digits, weight, sign, dscale, want) in cases {
            let got = numeric(&numeric_bytes(digits, *weight, *sign, *dscale)).unwrap();
            assert_eq!(&got, want, "{digits:?} weight {weight}");
        }
        assert!(numeric(&[0, 1]).is_err());
    }

    #[test]
    fn uuids_read_lower_case_with_hyphens() {
        let b: Vec<u8> = (0u8..16).map(|i| i * 17).collect();
        assert_eq!(uuid(&b), "00112233-4455-6677-8899-aabbccddeeff");
    }
}

use base64::Engine;

/// A column value, decoded from PostgreSQL's text form into the shape of
/// Courier's type mapping (README "Type mapping").
///
/// Values that have no lossless native JSON form (exact numerics, dates,
/// timestamps, ...) keep PostgreSQL's text, normalised where the mapping says
/// so (timestamptz in UTC with `Z`). A value is never a placeholder: unchanged
/// TOAST values are filled before a change leaves the decoder.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// int2, int4, int8, oid.
    Int(i64),
    Float4(f32),
    Float8(f64),
    /// Exact decimal text, or `NaN` / `Infinity` / `-Infinity`.
    Numeric(String),
    /// Text types, enums, intervals (ISO 8601), and the text form of every
    /// type without a dedicated variant.
    Text(String),
    Bytes(Vec<u8>),
    Uuid(String),
    /// `YYYY-MM-DD`, or `infinity` / `-infinity`.
    Date(String),
    /// `HH:MM:SS[.ffffff][+TZ]`.
    Time(String),
    /// `YYYY-MM-DDTHH:MM:SS[.ffffff]`, or `infinity` / `-infinity`.
    Timestamp(String),
    /// `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` (UTC), or `infinity` / `-infinity`.
    TimestampTz(String),
    /// The JSON document as PostgreSQL holds it (valid JSON text).
    Json(String),
    /// Elements of an array; nested arrays for multi-dimensional ones.
    Array(Vec<Value>),
}

impl Value {
    /// Roughly the bytes the value takes: its text or bytes, or 8 for a
    /// scalar. What batches and groups are bounded by (not an exact
    /// memory figure).
    pub fn approx_bytes(&self) -> usize {
        match self {
            Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float4(_) | Value::Float8(_) => 8,
            Value::Numeric(s)
            | Value::Text(s)
            | Value::Uuid(s)
            | Value::Date(s)
            | Value::Time(s)
            | Value::Timestamp(s)
            | Value::TimestampTz(s)
            | Value::Json(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::Array(items) => items.iter().map(Value::approx_bytes).sum::<usize>() + 8,
        }
    }

    /// Appends the value's JSON form, per the type mapping, to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(true) => out.extend_from_slice(b"true"),
            Value::Bool(false) => out.extend_from_slice(b"false"),
            Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
            Value::Float4(f) => write_float(out, f64::from(*f), *f),
            Value::Float8(f) => write_float(out, *f, *f),
            Value::Numeric(s)
            | Value::Text(s)
            | Value::Uuid(s)
            | Value::Date(s)
            | Value::Time(s)
            | Value::Timestamp(s)
            | Value::TimestampTz(s) => write_json_str(out, s),
            Value::Bytes(b) => {
                out.push(b'"');
                let mut text = String::with_capacity(b.len() * 4 / 3 + 4);
                base64::engine::general_purpose::STANDARD.encode_string(b, &mut text);
                out.extend_from_slice(text.as_bytes());
                out.push(b'"');
            }
            Value::Json(s) => out.extend_from_slice(s.as_bytes()),
            Value::Array(items) => {
                out.push(b'[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    v.write_json(out);
                }
                out.push(b']');
            }
        }
    }

    /// The value as a `serde_json::Value`, per the type mapping.
    pub fn to_json(&self) -> serde_json::Value {
        let mut buf = Vec::new();
        self.write_json(&mut buf);
        serde_json::from_slice(&buf).unwrap_or(serde_json::Value::Null)
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

/// Writes a float as a JSON number, or as the strings `NaN`, `Infinity`,
/// `-Infinity`, which JSON numbers cannot hold.
fn write_float<F: serde::Serialize>(out: &mut Vec<u8>, probe: f64, f: F) {
    if probe.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if probe.is_infinite() {
        out.extend_from_slice(if probe > 0.0 {
            b"\"Infinity\""
        } else {
            b"\"-Infinity\""
        });
    } else {
        // Serialising a finite float into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &f);
    }
}

/// Appends `s` as a JSON string literal.
pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !NEEDS_ESCAPE[b as usize] {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xF) as usize]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Bytes that cannot appear raw inside a JSON string.
static NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Public entry for encoders that write JSON strings next to values.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    write_json_str(out, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: &Value) -> String {
        let mut out = Vec::new();
        v.write_json(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn maps_values_to_lossless_json() {
        assert_eq!(json(&Value::Int(-42)), "-42");
        assert_eq!(json(&Value::Float4(0.1)), "0.1");
        assert_eq!(json(&Value::Float8(f64::NAN)), "\"NaN\"");
        assert_eq!(json(&Value::Float8(f64::NEG_INFINITY)), "\"-Infinity\"");
        assert_eq!(
            json(&Value::Numeric("12345678901234567890.000001".into())),
            "\"12345678901234567890.000001\""
        );
        assert_eq!(
            json(&Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef])),
            "\"3q2+7w==\""
        );
        assert_eq!(
            json(&Value::Text("a\"b\\c\n\u{1}é".into())),
            "\"a\\\"b\\\\c\\n\\u0001é\""
        );
        assert_eq!(
            json(&Value::Json("{\"a\": [1, 2]}".into())),
            "{\"a\": [1, 2]}"
        );
        let nested = Value::Array(vec![
            Value::Array(vec![Value::Int(1), Value::Null]),
            Value::Array(vec![]),
        ]);
        assert_eq!(json(&nested), "[[1,null],[]]");
    }

    #[test]
    fn escaped_strings_parse_back() {
        let s = "tab\t quote\" back\\ ctrl\u{7} 東京";
        let parsed: String = serde_json::from_str(&json(&Value::Text(s.into()))).unwrap();
        assert_eq!(parsed, s);
    }
}

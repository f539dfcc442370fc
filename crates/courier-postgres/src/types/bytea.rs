//! `bytea` text forms: hex (`\x0a1b`, the default since PostgreSQL 9.0) and
//! the older escape form (`abc\000\\`).

/// Decodes either bytea text form into bytes.
pub(super) fn decode(text: &str) -> Result<Vec<u8>, &'static str> {
    match text.strip_prefix("\\x") {
        Some(hex) => decode_hex(hex.as_bytes()),
        None => decode_escape(text.as_bytes()),
    }
}

fn decode_hex(hex: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(hex.len() / 2);
    let mut digits = hex.iter().filter(|b| !b.is_ascii_whitespace());
    while let Some(&hi) = digits.next() {
        let lo = *digits.next().ok_or("odd number of hex digits")?;
        out.push(hex_value(hi)? << 4 | hex_value(lo)?);
    }
    Ok(out)
}

fn hex_value(b: u8) -> Result<u8, &'static str> {
    match b {
        b'0'..=b'9' => Ok(b - b'0'),
        b'a'..=b'f' => Ok(b - b'a' + 10),
        b'A'..=b'F' => Ok(b - b'A' + 10),
        _ => Err("invalid hex digit"),
    }
}

fn decode_escape(text: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
        } else if text.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let octal = text.get(i + 1..i + 4).ok_or("truncated escape")?;
            let mut v: u16 = 0;
            for &d in octal {
                if !(b'0'..=b'7').contains(&d) {
                    return Err("invalid escape");
                }
                v = v * 8 + u16::from(d - b'0');
            }
            out.push(u8::try_from(v).map_err(|_| "octal escape out of range")?);
            i += 4;
        }
    }
    Ok(out)
}

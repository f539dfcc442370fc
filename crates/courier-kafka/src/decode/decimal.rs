//! Exact decimals from the forms Debezium writes them in: Connect's
//! `Decimal` (the unscaled value as big-endian two's complement bytes, and
//! a scale), `VariableScaleDecimal`, and `decimal.handling.mode=string`
//! text; and the text PostgreSQL writes for a `float8` inside other types.

/// The decimal text (`-1.500`, `0.005`, `1000`) of the unscaled integer in
/// `bytes` (big-endian two's complement, as Java's
/// `BigInteger.toByteArray`) divided by 10^`scale`. A negative scale
/// multiplies. Empty bytes are zero.
pub(super) fn from_unscaled(bytes: &[u8], scale: i32) -> String {
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut magnitude: Vec<u8> = bytes.to_vec();
    if negative {
        // Two's complement: invert and add one.
        let mut carry = true;
        for b in magnitude.iter_mut().rev() {
            *b = !*b;
            if carry {
                let (v, overflow) = b.overflowing_add(1);
                *b = v;
                carry = overflow;
            }
        }
    }
    let mut digits = to_decimal_digits(&magnitude);
    if scale < 0 {
        if digits != "0" {
            digits.push_str(&"0".repeat(scale.unsigned_abs() as usize));
        }
        return with_sign(negative && digits != "0", digits);
    }
    let scale = scale as usize;
    if digits.len() <= scale {
        let pad = scale + 1 - digits.len();
        digits.insert_str(0, &"0".repeat(pad));
    }
    let point = digits.len() - scale;
    if scale > 0 {
        digits.insert(point, '.');
    }
    let zero = digits.bytes().all(|b| b == b'0' || b == b'.');
    with_sign(negative && !zero, digits)
}

fn with_sign(negative: bool, digits: String) -> String {
    if negative {
        format!("-{digits}")
    } else {
        digits
    }
}

/// The decimal digits of a big-endian unsigned integer (`"0"` for none).
fn to_decimal_digits(bytes: &[u8]) -> String {
    // Base 10^9 limbs, least significant first.
    let mut limbs: Vec<u32> = Vec::new();
    for &byte in bytes {
        let mut carry = u64::from(byte);
        for limb in limbs.iter_mut() {
            let v = u64::from(*limb) * 256 + carry;
            *limb = (v % 1_000_000_000) as u32;
            carry = v / 1_000_000_000;
        }
        while carry > 0 {
            limbs.push((carry % 1_000_000_000) as u32);
            carry /= 1_000_000_000;
        }
    }
    let Some((last, rest)) = limbs.split_last() else {
        return "0".to_owned();
    };
    let mut out = last.to_string();
    for limb in rest.iter().rev() {
        out.push_str(&format!("{limb:09}"));
    }
    out
}

/// A decimal as `decimal.handling.mode=string` writes it (Java's
/// `BigDecimal.toPlainString`, or its `toString` with an exponent, and
/// `NAN`/`INFINITY` in any case) in Courier's form: plain digits, or
/// `NaN`, `Infinity`, `-Infinity`. `None` when it is not a number.
pub(super) fn numeric_text(text: &str) -> Option<String> {
    for special in ["NaN", "Infinity", "-Infinity"] {
        if text.eq_ignore_ascii_case(special) {
            return Some(special.to_owned());
        }
    }
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (negative, body) = match mantissa.as_bytes().first()? {
        b'-' => (true, &mantissa[1..]),
        b'+' => (false, &mantissa[1..]),
        _ => (false, mantissa),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    if exponent == 0 {
        let int = if int.is_empty() { "0" } else { int };
        let mut out = String::with_capacity(text.len() + 1);
        if negative {
            out.push('-');
        }
        out.push_str(int);
        if !frac.is_empty() {
            out.push('.');
            out.push_str(frac);
        }
        return Some(out);
    }
    // digits × 10^(exponent - frac.len())
    let digits: String = int.chars().chain(frac.chars()).collect();
    let scale = i64::from(exponent) - frac.len() as i64;
    let scale = i32::try_from(-scale).ok()?;
    let trimmed = digits.trim_start_matches('0');
    let digits = if trimmed.is_empty() { "0" } else { trimmed };
    let text = if scale <= 0 {
        let mut d = digits.to_owned();
        if d != "0" {
            d.push_str(&"0".repeat(scale.unsigned_abs() as usize));
        }
        d
    } else {
        let scale = scale as usize;
        let mut d = digits.to_owned();
        if d.len() <= scale {
            d.insert_str(0, &"0".repeat(scale + 1 - d.len()));
        }
        d.insert(d.len() - scale, '.');
        d
    };
    Some(
        if negative && text.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
            format!("-{text}")
        } else {
            text
        },
    )
}

/// The text PostgreSQL (12 and later) writes for a `float8`: the shortest
/// digits that read back as the same number, in plain notation when the
/// decimal exponent is in -4..15, else as `1.5e+20`.
pub(super) fn float8_text(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // Rust's `{:e}` is the shortest round-trip form: `1.5e20`, `-2e-5`.
    let sci = format!("{f:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..15).contains(&exponent) {
        return format!("{f}");
    }
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unscaled_bytes_become_decimal_text() {
        assert_eq!(from_unscaled(&[0xFA, 0x24], 3), "-1.500");
        assert_eq!(from_unscaled(&[0x03, 0xE7], 2), "9.99");
        assert_eq!(from_unscaled(&[0x03, 0xE8], 3), "1.000");
        assert_eq!(from_unscaled(&[0xFF], 3), "-0.001");
        assert_eq!(from_unscaled(&[0x01], 7), "0.0000001");
        assert_eq!(from_unscaled(&[0x00], 2), "0.00");
        assert_eq!(from_unscaled(&[], 0), "0");
        assert_eq!(from_unscaled(&[0x80], 0), "-128");
        assert_eq!(from_unscaled(&[0xFF, 0x7F], 0), "-129");
        assert_eq!(from_unscaled(&[0x00, 0x80], 0), "128");
        assert_eq!(from_unscaled(&[0x01], -3), "1000");
        assert_eq!(from_unscaled(&[0xFF], -2), "-100");
        // 12345678901234567890.123456789 at scale 9 (as Debezium sends it).
        let b = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            "J+QbMka+ybFuOYEV",
        )
        .unwrap();
        assert_eq!(from_unscaled(&b, 9), "12345678901234567890.123456789");
        let big = [
            0x01, 0x8E, 0xE9, 0x0F, 0xF6, 0xC3, 0x73, 0xE0, 0xEE, 0x4E, 0x3F, 0x0A, 0xD2,
        ];
        assert_eq!(from_unscaled(&big, 0), "123456789012345678901234567890");
    }

    #[test]
    fn string_mode_decimals_become_plain() {
        assert_eq!(numeric_text("1.50").as_deref(), Some("1.50"));
        assert_eq!(numeric_text("-0.001").as_deref(), Some("-0.001"));
        assert_eq!(numeric_text("NAN").as_deref(), Some("NaN"));
        assert_eq!(numeric_text("-infinity").as_deref(), Some("-Infinity"));
        assert_eq!(numeric_text("1E-7").as_deref(), Some("0.0000001"));
        assert_eq!(numeric_text("1.5E+3").as_deref(), Some("1500"));
        assert_eq!(numeric_text("-2.50E-2").as_deref(), Some("-0.0250"));
        assert_eq!(numeric_text(".5").as_deref(), Some("0.5"));
        assert_eq!(numeric_text("abc"), None);
        assert_eq!(numeric_text(""), None);
    }

    #[test]
    fn floats_read_as_postgresql_writes_them() {
        assert_eq!(float8_text(1.5), "1.5");
        assert_eq!(float8_text(2.0), "2");
        assert_eq!(float8_text(-0.0001), "-0.0001");
        assert_eq!(float8_text(1e20), "1e+20");
        assert_eq!(float8_text(1.5e-5), "1.5e-05");
        assert_eq!(float8_text(123456789012345.0), "123456789012345");
        assert_eq!(float8_text(f64::NAN), "NaN");
    }
}

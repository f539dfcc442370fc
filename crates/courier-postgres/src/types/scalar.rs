//! Checks and conversions for the simple scalar types.

/// `t` / `f` as PostgreSQL writes booleans (the long forms are accepted too).
pub(super) fn bool(text: &str) -> Option<bool> {
    match text {
        "t" | "true" => Some(true),
        "f" | "false" => Some(false),
        _ => None,
    }
}

/// Whether `text` is a numeric as PostgreSQL writes it: an optionally signed
/// decimal (`-12.50`), `NaN`, `Infinity` or `-Infinity`.
pub(super) fn is_numeric(text: &str) -> bool {
    if matches!(text, "NaN" | "Infinity" | "-Infinity") {
        return true;
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, f),
        None => (digits, ""),
    };
    !(int.is_empty() && frac.is_empty())
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `text` is a UUID in its canonical 8-4-4-4-12 form.
pub(super) fn is_uuid(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

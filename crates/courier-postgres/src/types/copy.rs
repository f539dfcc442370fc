//! One line of `COPY ... TO STDOUT` in text format, split into fields.
//!
//! Fields are separated by tabs; `\N` is NULL; backslash escapes stand for
//! the characters COPY cannot write literally (`\t`, `\n`, `\\`, octal
//! `\NNN`, hex `\xHH`, ...). Fields without escapes are borrowed from the
//! line, so the common case allocates nothing.

use std::borrow::Cow;

/// A COPY text line that is not well formed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CopyRowError {
    /// The field's bytes (after unescaping) are not valid UTF-8.
    #[error("COPY field {field} is not valid UTF-8")]
    InvalidUtf8 { field: usize },
    /// The line ends in the middle of an escape sequence.
    #[error("COPY field {field} ends with a lone backslash")]
    TrailingBackslash { field: usize },
}

/// Splits one COPY text line (with or without its trailing newline) into
/// `fields`, which is cleared first. `None` is SQL NULL.
///
/// `fields` is an out-parameter so that a caller reading many rows can reuse
/// one vector.
pub fn split_row<'a>(
    line: &'a [u8],
    fields: &mut Vec<Option<Cow<'a, str>>>,
) -> Result<(), CopyRowError> {
    fields.clear();
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut start = 0;
    loop {
        let field = fields.len();
        let rest = &line[start..];
        let end = start + memchr::memchr(b'\t', rest).unwrap_or(rest.len());
        let raw = &line[start..end];
        fields.push(if raw == b"\\N" {
            None
        } else if memchr::memchr(b'\\', raw).is_none() {
            Some(Cow::Borrowed(
                std::str::from_utf8(raw).map_err(|_| CopyRowError::InvalidUtf8 { field })?,
            ))
        } else {
            Some(Cow::Owned(unescape(raw, field)?))
        });
        if end == line.len() {
            return Ok(());
        }
        start = end + 1;
    }
}

/// Splits one COPY text line into owned fields.
pub fn split_row_owned(line: &[u8]) -> Result<Vec<Option<String>>, CopyRowError> {
    let mut fields = Vec::new();
    split_row(line, &mut fields)?;
    Ok(fields.into_iter().map(|f| f.map(Cow::into_owned)).collect())
}

fn unescape(raw: &[u8], field: usize) -> Result<String, CopyRowError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let c = *raw
            .get(i + 1)
            .ok_or(CopyRowError::TrailingBackslash { field })?;
        i += 2;
        match c {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                // PostgreSQL keeps the low byte of an over-long octal escape.
                out.push((v & 0xff) as u8);
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut v = hex(raw[i]);
                i += 1;
                if let Some(&d) = raw.get(i).filter(|d| d.is_ascii_hexdigit()) {
                    v = v * 16 + hex(d);
                    i += 1;
                }
                out.push(v);
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).map_err(|_| CopyRowError::InvalidUtf8 { field })
}

fn hex(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        _ => d - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str) -> Vec<Option<String>> {
        split_row_owned(line.as_bytes()).unwrap()
    }

    #[test]
    fn splits_plain_and_null_fields() {
        assert_eq!(
            split("1\tTea\t\\N\t\n"),
            vec![Some("1".into()), Some("Tea".into()), None, Some("".into())]
        );
        assert_eq!(split(""), vec![Some(String::new())]);
    }

    #[test]
    fn unescapes_every_escape_form() {
        assert_eq!(
            split("a\\tb\\nc\\\\d\\r\\b\\f\\v\tx\\101\\x42\\x7\\q\t東京\\\\N"),
            vec![
                Some("a\tb\nc\\d\r\u{8}\u{c}\u{b}".into()),
                Some("xAB\u{7}q".into()),
                Some("東京\\N".into()),
            ]
        );
        // Octal escapes may spell multi-byte UTF-8.
        assert_eq!(split("\\303\\251"), vec![Some("é".into())]);
    }

    #[test]
    fn borrows_fields_without_escapes() {
        let mut fields = Vec::new();
        split_row(b"abc\tdef", &mut fields).unwrap();
        assert!(matches!(fields[0], Some(Cow::Borrowed("abc"))));
    }

    #[test]
    fn rejects_malformed_lines() {
        assert_eq!(
            split_row_owned(b"ok\tbad\\"),
            Err(CopyRowError::TrailingBackslash { field: 1 })
        );
        assert_eq!(
            split_row_owned(b"\\377"),
            Err(CopyRowError::InvalidUtf8 { field: 0 })
        );
        assert_eq!(
            split_row_owned(b"\xff"),
            Err(CopyRowError::InvalidUtf8 { field: 0 })
        );
    }
}

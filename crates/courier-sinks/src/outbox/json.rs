//! JSON text as an event carries it: checked, and written compactly with
//! its members in their order (parsing into a map would reorder them).

/// Why `text` is not one JSON value, as a position (never its content).
pub(crate) fn invalid(text: &[u8]) -> Option<String> {
    match serde_json::from_slice::<serde::de::IgnoredAny>(text) {
        Ok(_) => None,
        Err(e) => Some(match e.classify() {
            serde_json::error::Category::Eof => "is not valid JSON (it ends too early)".to_string(),
            _ => format!(
                "is not valid JSON (syntax error at line {} column {})",
                e.line(),
                e.column()
            ),
        }),
    }
}

/// Appends valid JSON `text` without the whitespace between its tokens.
pub(crate) fn write_compact(text: &[u8], out: &mut Vec<u8>) {
    out.reserve(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for &b in text {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            in_string = b == b'"';
            out.push(b);
        }
    }
}

/// The string a JSON string literal holds (`text` starts with `"`), or
/// `None` when it is not one.
pub(crate) fn string_content(text: &[u8]) -> Option<String> {
    if text.first() != Some(&b'"') {
        return None;
    }
    serde_json::from_slice::<String>(text).ok()
}

/// Whether `text` (valid JSON) is `null`.
pub(crate) fn is_null(text: &[u8]) -> bool {
    text.trim_ascii() == b"null"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_keeps_strings_and_order() {
        let mut out = Vec::new();
        write_compact(
            br#"{"b": [1, 2], "a": "x \" y\\", "c" : {"d": null}}"#,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"b":[1,2],"a":"x \" y\\","c":{"d":null}}"#
        );
    }

    #[test]
    fn invalid_json_is_named_by_position() {
        assert_eq!(invalid(br#"{"a": 1}"#), None);
        assert_eq!(invalid(b"42"), None);
        let e = invalid(b"{\"secret\": tru}").unwrap();
        assert!(e.contains("line 1 column"), "{e}");
        assert!(!e.contains("secret"), "{e}");
        assert!(invalid(br#"{"a": 1"#).unwrap().contains("ends too early"));
        assert!(invalid(b"").is_some());
        assert!(invalid(b"{} {}").is_some(), "one value only");
    }

    #[test]
    fn strings_are_unescaped() {
        assert_eq!(string_content(br#""a\"b""#).as_deref(), Some("a\"b"));
        assert_eq!(string_content(b"42"), None);
        assert!(is_null(b" null "));
    }
}

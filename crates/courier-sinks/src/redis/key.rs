//! The `key` template: how a row's identity becomes a Redis key.

use std::fmt;

use courier_core::{TableId, Value};

/// A validated `key` template such as `{schema}.{table}:{pk}`.
///
/// Placeholders: `{schema}`, `{table}` and `{pk}` (required, exactly once).
/// Substituted parts are escaped so that two different rows can never share a
/// key: in schema and table names `\`, `.` and `:` become `\\`, `\.` and `\:`;
/// in key values `\` and `:` become `\\` and `\:`, and parts of a composite
/// key are joined with `:`. A NULL key part renders as `\N`.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    text: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Schema,
    Table,
    Pk,
}

/// Why a `key` template is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyTemplateError {
    #[error("key {0:?}: unknown placeholder {{{1}}}; use {{schema}}, {{table}} and {{pk}}")]
    UnknownPlaceholder(String, String),
    #[error("key {0:?}: an opening brace has no closing brace")]
    Unclosed(String),
    #[error("key {0:?}: must contain {{pk}} exactly once, or rows would share a key")]
    Pk(String),
}

impl KeyTemplate {
    /// Parses a template; see the type's documentation for the placeholders.
    pub fn parse(text: &str) -> Result<Self, KeyTemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            literal.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| KeyTemplateError::Unclosed(text.to_string()))?;
            let part = match &after[..close] {
                "schema" => Part::Schema,
                "table" => Part::Table,
                "pk" => Part::Pk,
                other => {
                    return Err(KeyTemplateError::UnknownPlaceholder(
                        text.to_string(),
                        other.to_string(),
                    ))
                }
            };
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(part);
            rest = &after[close + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        if parts.iter().filter(|p| **p == Part::Pk).count() != 1 {
            return Err(KeyTemplateError::Pk(text.to_string()));
        }
        Ok(KeyTemplate {
            text: text.to_string(),
            parts,
        })
    }

    /// The template as configured, for messages (it holds no row values).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The key of the row of `table` whose key columns hold `pk`.
    pub fn render(&self, table: &TableId, pk: &[&Value]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() + 32);
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.extend_from_slice(s.as_bytes()),
                Part::Schema => escape_ident(&table.schema, &mut out),
                Part::Table => escape_ident(&table.name, &mut out),
                Part::Pk => {
                    for (i, v) in pk.iter().enumerate() {
                        if i > 0 {
                            out.push(b':');
                        }
                        write_key_value(v, &mut out);
                    }
                }
            }
        }
        out
    }

    /// A `SCAN MATCH` pattern for every key of `table`: the rendered template
    /// with `*` for the key values and glob characters escaped elsewhere.
    pub fn scan_pattern(&self, table: &TableId) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        for part in &self.parts {
            buf.clear();
            match part {
                Part::Literal(s) => buf.extend_from_slice(s.as_bytes()),
                Part::Schema => escape_ident(&table.schema, &mut buf),
                Part::Table => escape_ident(&table.name, &mut buf),
                Part::Pk => {
                    out.push(b'*');
                    continue;
                }
            }
            for &b in &buf {
                if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
                    out.push(b'\\');
                }
                out.push(b);
            }
        }
        out
    }
}

impl fmt::Debug for KeyTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyTemplate({:?})", self.text)
    }
}

fn escape_ident(s: &str, out: &mut Vec<u8>) {
    for &b in s.as_bytes() {
        if matches!(b, b'\\' | b'.' | b':') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

fn escape_key_part(s: &[u8], out: &mut Vec<u8>) {
    for &b in s {
        if matches!(b, b'\\' | b':') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// A key value's plain text: strings as themselves, other values as their
/// JSON form (numbers, booleans, arrays, documents).
fn write_key_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"\\N"),
        Value::Numeric(s)
        | Value::Text(s)
        | Value::Uuid(s)
        | Value::Date(s)
        | Value::Time(s)
        | Value::Timestamp(s)
        | Value::TimestampTz(s) => escape_key_part(s.as_bytes(), out),
        other => {
            let mut json = Vec::new();
            other.write_json(&mut json);
            // Bytes render as a quoted base64 string; keep the text only.
            let text = match other {
                Value::Bytes(_) => json.get(1..json.len().saturating_sub(1)).unwrap_or(&[]),
                _ => &json[..],
            };
            escape_key_part(text, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &KeyTemplate, table: &TableId, pk: &[Value]) -> String {
        let refs: Vec<&Value> = pk.iter().collect();
        String::from_utf8(t.render(table, &refs)).unwrap()
    }

    #[test]
    fn renders_the_default_template() {
        let t = KeyTemplate::parse("{schema}.{table}:{pk}").unwrap();
        let products = TableId::new("public", "products");
        assert_eq!(key(&t, &products, &[Value::Int(7)]), "public.products:7");
        assert_eq!(
            key(&t, &products, &[Value::Text("a:b".into()), Value::Int(2)]),
            "public.products:a\\:b:2"
        );
        assert_eq!(
            key(&t, &TableId::new("a.b", "c"), &[Value::Int(1)]),
            "a\\.b.c:1"
        );
        assert_eq!(t.scan_pattern(&products), b"public.products:*");
    }

    #[test]
    fn escaped_parts_never_collide() {
        let t = KeyTemplate::parse("{table}:{pk}").unwrap();
        let tb = TableId::new("public", "t");
        let one = key(&t, &tb, &[Value::Text("a:b".into())]);
        let two = key(&t, &tb, &[Value::Text("a".into()), Value::Text("b".into())]);
        let three = key(
            &t,
            &tb,
            &[Value::Text("a\\".into()), Value::Text("b".into())],
        );
        let null = key(&t, &tb, &[Value::Null]);
        let text_null = key(&t, &tb, &[Value::Text("\\N".into())]);
        let all = [&one, &two, &three, &null, &text_null];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn scan_pattern_escapes_glob_characters() {
        let t = KeyTemplate::parse("cache[{table}]:{pk}:v1").unwrap();
        let p = t.scan_pattern(&TableId::new("public", "we*rd"));
        assert_eq!(p, b"cache\\[we\\*rd\\]:*:v1");
    }

    #[test]
    fn rejects_bad_templates() {
        assert!(matches!(
            KeyTemplate::parse("{table}:{id}"),
            Err(KeyTemplateError::UnknownPlaceholder(_, p)) if p == "id"
        ));
        assert!(matches!(
            KeyTemplate::parse("{table}"),
            Err(KeyTemplateError::Pk(_))
        ));
        assert!(matches!(
            KeyTemplate::parse("{pk}:{pk}"),
            Err(KeyTemplateError::Pk(_))
        ));
        assert!(matches!(
            KeyTemplate::parse("{table:{pk}"),
            Err(KeyTemplateError::UnknownPlaceholder(..))
        ));
        assert!(matches!(
            KeyTemplate::parse("x{pk"),
            Err(KeyTemplateError::Unclosed(_))
        ));
    }
}

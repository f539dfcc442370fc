//! PostgreSQL's array literal syntax: `{1,2,NULL}`, `{{"a b","c\"d"},{e,f}}`,
//! `[0:1]={1,2}`, `{}`.

use std::borrow::Cow;

use courier_core::{PgType, Value};

use super::{decode_with_delimiter, type_label, ValueError};

/// PostgreSQL allows at most 6 dimensions; a little headroom, then refuse.
const MAX_DEPTH: usize = 8;

/// Decodes an array literal whose elements are of type `element`.
pub(super) fn decode(element: &PgType, delimiter: u8, text: &str) -> Result<Value, ValueError> {
    let mut parser = Parser {
        text,
        i: 0,
        element,
        delimiter,
    };
    parser.skip_dimensions()?;
    let value = parser.level(0)?;
    parser.skip_ws();
    if parser.i != text.len() {
        return Err(parser.err("unexpected text after the closing brace"));
    }
    Ok(value)
}

struct Parser<'a> {
    text: &'a str,
    i: usize,
    element: &'a PgType,
    delimiter: u8,
}

impl<'a> Parser<'a> {
    fn err(&self, reason: &str) -> ValueError {
        ValueError::new(format_args!("{}[]", type_label(self.element)), reason)
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    /// Skips a `[lo:hi][lo:hi]=` prefix: bounds do not change the elements.
    fn skip_dimensions(&mut self) -> Result<(), ValueError> {
        if self.peek() != Some(b'[') {
            return Ok(());
        }
        match self.text.find('=') {
            Some(eq) => {
                self.i = eq + 1;
                Ok(())
            }
            None => Err(self.err("dimension decoration without '='")),
        }
    }

    /// Parses `{...}` at the cursor.
    fn level(&mut self, depth: usize) -> Result<Value, ValueError> {
        if depth >= MAX_DEPTH {
            return Err(self.err("too many dimensions"));
        }
        self.skip_ws();
        if self.peek() != Some(b'{') {
            return Err(self.err("expected '{'"));
        }
        self.i += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            let item = match self.peek() {
                Some(b'{') => self.level(depth + 1)?,
                Some(b'"') => {
                    let text = self.quoted()?;
                    self.element_value(&text)?
                }
                Some(_) => match self.unquoted()? {
                    None => Value::Null,
                    Some(text) => self.element_value(&text)?,
                },
                None => return Err(self.err("unterminated array")),
            };
            items.push(item);
            self.skip_ws();
            match self.peek() {
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Value::Array(items));
                }
                Some(b) if b == self.delimiter => self.i += 1,
                _ => return Err(self.err("expected a delimiter or '}'")),
            }
        }
    }

    fn element_value(&self, text: &str) -> Result<Value, ValueError> {
        decode_with_delimiter(self.element, text, self.delimiter).map_err(|e| {
            ValueError::new(
                format_args!("{}[]", type_label(self.element)),
                format!("element: {}", e.reason),
            )
        })
    }

    /// A `"..."` element; `\x` stands for `x`.
    fn quoted(&mut self) -> Result<Cow<'a, str>, ValueError> {
        self.i += 1;
        let start = self.i;
        let bytes = self.text.as_bytes();
        let mut owned: Option<String> = None;
        let mut run = start;
        while self.i < bytes.len() {
            match bytes[self.i] {
                b'"' => {
                    let end = self.i;
                    self.i += 1;
                    return Ok(match owned {
                        None => Cow::Borrowed(&self.text[start..end]),
                        Some(mut s) => {
                            s.push_str(&self.text[run..end]);
                            Cow::Owned(s)
                        }
                    });
                }
                b'\\' => {
                    let s = owned.get_or_insert_with(String::new);
                    s.push_str(&self.text[run..self.i]);
                    // Escaped characters are kept whole (they may be multi-byte).
                    let ch = self.text[self.i + 1..]
                        .chars()
                        .next()
                        .ok_or_else(|| self.err("unterminated escape"))?;
                    s.push(ch);
                    self.i += 1 + ch.len_utf8();
                    run = self.i;
                }
                _ => self.i += 1,
            }
        }
        Err(self.err("unterminated quoted element"))
    }

    /// An unquoted element up to the next delimiter or `}`; `None` for `NULL`.
    fn unquoted(&mut self) -> Result<Option<Cow<'a, str>>, ValueError> {
        let start = self.i;
        let bytes = self.text.as_bytes();
        let mut owned: Option<String> = None;
        let mut run = start;
        while self.i < bytes.len() {
            let b = bytes[self.i];
            if b == self.delimiter || b == b'}' {
                break;
            }
            match b {
                b'{' | b'"' => return Err(self.err("unexpected character in element")),
                b'\\' => {
                    let s = owned.get_or_insert_with(String::new);
                    s.push_str(&self.text[run..self.i]);
                    let ch = self.text[self.i + 1..]
                        .chars()
                        .next()
                        .ok_or_else(|| self.err("unterminated escape"))?;
                    s.push(ch);
                    self.i += 1 + ch.len_utf8();
                    run = self.i;
                }
                _ => self.i += 1,
            }
        }
        Ok(match owned {
            None => {
                let text = self.text[start..self.i].trim_end();
                if text.is_empty() {
                    return Err(self.err("empty unquoted element"));
                }
                if text.eq_ignore_ascii_case("NULL") {
                    None
                } else {
                    Some(Cow::Borrowed(text))
                }
            }
            Some(mut s) => {
                s.push_str(self.text[run..self.i].trim_end());
                Some(Cow::Owned(s))
            }
        })
    }
}

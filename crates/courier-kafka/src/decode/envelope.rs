//! The JSON of a record: which of the formats it is in, and its parts,
//! borrowed from the record's bytes (values stay raw JSON until their
//! column's type decides how to read them).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::{DecodeErrorKind, Part};

/// What a record's value holds.
#[derive(Debug)]
pub(super) enum Parsed<'a> {
    /// A change event; `schema` is its Connect schema when the record is
    /// Kafka Connect JSON with schemas.
    Event {
        schema: Option<&'a RawValue>,
        event: Event<'a>,
    },
    /// A record of Debezium's that carries no change.
    Nothing(Nothing),
    /// JSON `null`: as a Kafka null value, a tombstone.
    Null,
}

/// Debezium's records that are not changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Nothing {
    /// A heartbeat (`__debezium-heartbeat.<prefix>` topics).
    Heartbeat,
    /// A transaction's BEGIN or END (`<prefix>.transaction` topics).
    TransactionMetadata,
}

/// A change event's fields (Debezium's envelope).
#[derive(Debug)]
pub(super) struct Event<'a> {
    pub before: Option<&'a RawValue>,
    pub after: Option<&'a RawValue>,
    pub source: Option<&'a RawValue>,
    pub op: Cow<'a, str>,
}

/// The fields a record's value (or a `payload`) may have at its top level.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    schema: Option<&'a RawValue>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(borrow, default)]
    before: Option<&'a RawValue>,
    #[serde(borrow, default)]
    after: Option<&'a RawValue>,
    #[serde(borrow, default)]
    source: Option<&'a RawValue>,
    #[serde(borrow, default)]
    op: Option<Cow<'a, str>>,
}

/// Debezium's heartbeat value, schemaless: `{"ts_ms": ...}` and nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Only the shape matters.
struct Heartbeat {
    ts_ms: i64,
}

/// Debezium's transaction metadata value, schemaless.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Only the shape matters.
struct TransactionMetadata<'a> {
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    event_count: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data_collections: Option<&'a RawValue>,
    #[serde(default)]
    ts_ms: Option<i64>,
}

/// A Connect schema's name, when only the name matters.
#[derive(Deserialize)]
struct SchemaName<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

const HEARTBEAT_SCHEMA: &str = "io.debezium.connector.common.Heartbeat";
const TRANSACTION_SCHEMA: &str = "io.debezium.connector.common.TransactionMetadataValue";

/// Reads a record's value.
pub(super) fn parse(bytes: &[u8]) -> Result<Parsed<'_>, DecodeErrorKind> {
    if is_null(bytes) {
        return Ok(Parsed::Null);
    }
    let top: Fields = read(bytes, Part::Value)?;
    if let (Some(schema), Some(payload)) = (top.schema, top.payload) {
        if is_null(payload.get().as_bytes()) {
            return Ok(Parsed::Null);
        }
        return match parse_event(payload.get().as_bytes())? {
            Some(event) => Ok(Parsed::Event {
                schema: Some(schema),
                event,
            }),
            None => {
                let name = serde_json::from_str::<SchemaName>(schema.get())
                    .ok()
                    .and_then(|s| s.name);
                match name.as_deref() {
                    Some(HEARTBEAT_SCHEMA) => Ok(Parsed::Nothing(Nothing::Heartbeat)),
                    Some(TRANSACTION_SCHEMA) => Ok(Parsed::Nothing(Nothing::TransactionMetadata)),
                    _ => Err(DecodeErrorKind::NotAnEnvelope {
                        reason: "its payload has no op".into(),
                    }),
                }
            }
        };
    }
    if let Some(op) = top.op {
        return Ok(Parsed::Event {
            schema: None,
            event: Event {
                before: top.before,
                after: top.after,
                source: top.source,
                op,
            },
        });
    }
    if serde_json::from_slice::<Heartbeat>(bytes).is_ok() {
        return Ok(Parsed::Nothing(Nothing::Heartbeat));
    }
    if serde_json::from_slice::<TransactionMetadata>(bytes)
        .is_ok_and(|t| matches!(&*t.status, "BEGIN" | "END") && !t.id.is_empty())
    {
        return Ok(Parsed::Nothing(Nothing::TransactionMetadata));
    }
    Err(DecodeErrorKind::NotAnEnvelope {
        reason: "it has no op field".into(),
    })
}

/// The change event in a `payload` (Kafka Connect JSON with schemas), or
/// `None` when the payload has no `op`.
pub(super) fn parse_event(payload: &[u8]) -> Result<Option<Event<'_>>, DecodeErrorKind> {
    if payload.trim_ascii_start().first() != Some(&b'{') {
        return Err(DecodeErrorKind::NotAnEnvelope {
            reason: "its payload is not a JSON object".into(),
        });
    }
    let inner: Fields = serde_json::from_slice(payload).map_err(|e| shape(&e, "payload"))?;
    Ok(inner.op.map(|op| Event {
        before: inner.before,
        after: inner.after,
        source: inner.source,
        op,
    }))
}

/// A record key: its fields in order, and its Connect schema when the key
/// is Kafka Connect JSON with schemas.
pub(super) struct Key<'a> {
    pub schema: Option<&'a RawValue>,
    pub fields: Row<'a>,
}

/// Reads a record's key: `{"schema": {"type": "struct", ...}, "payload":
/// {...}}` or a plain object of the key columns.
pub(super) fn parse_key(bytes: &[u8]) -> Result<Key<'_>, DecodeErrorKind> {
    let row: Row = read(bytes, Part::Key)?;
    if let [(a, x), (b, y)] = row.0.as_slice() {
        let (schema, payload) = match (a.as_ref(), b.as_ref()) {
            ("schema", "payload") => (*x, *y),
            ("payload", "schema") => (*y, *x),
            _ => {
                return Ok(Key {
                    schema: None,
                    fields: row,
                })
            }
        };
        if is_struct_schema(schema) {
            let fields: Row =
                serde_json::from_str(payload.get()).map_err(|e| shape(&e, "key's payload"))?;
            return Ok(Key {
                schema: Some(schema),
                fields,
            });
        }
    }
    Ok(Key {
        schema: None,
        fields: row,
    })
}

fn is_struct_schema(schema: &RawValue) -> bool {
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
    }
    serde_json::from_str::<Head>(schema.get()).is_ok_and(|h| h.kind == "struct")
}

/// The `source` block of a change event: what Courier reads of it.
#[derive(Deserialize)]
pub(super) struct Source<'a> {
    #[serde(borrow, default)]
    pub version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub connector: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub schema: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub table: Option<Cow<'a, str>>,
    #[serde(default)]
    pub lsn: Option<u64>,
    #[serde(default, rename = "txId")]
    pub tx_id: Option<u64>,
    #[serde(default)]
    pub ts_ms: Option<i64>,
    #[serde(default)]
    pub ts_us: Option<i64>,
    #[serde(borrow, default)]
    pub sequence: Option<Cow<'a, str>>,
}

/// Reads a change event's `source` block.
pub(super) fn parse_source(raw: &RawValue) -> Result<Source<'_>, DecodeErrorKind> {
    if !raw.get().starts_with('{') {
        return Err(DecodeErrorKind::NotAnEnvelope {
            reason: "its source block is not a JSON object".into(),
        });
    }
    serde_json::from_str(raw.get()).map_err(|e| shape(&e, "source block"))
}

/// A JSON object's fields in the order they appear, values unread.
pub(super) struct Row<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Row<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RowVisitor;
        impl<'de> Visitor<'de> for RowVisitor {
            type Value = Row<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Row<'de>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(Name(name)) = map.next_key()? {
                    let value: &'de RawValue = map.next_value()?;
                    fields.push((name, value));
                }
                Ok(Row(fields))
            }
        }
        deserializer.deserialize_map(RowVisitor)
    }
}

/// A field name, borrowed unless it has escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

/// Reads a row object (`before` or `after`).
pub(super) fn parse_row(raw: &RawValue) -> Result<Row<'_>, DecodeErrorKind> {
    serde_json::from_str(raw.get()).map_err(|e| shape(&e, "row"))
}

/// Whether `bytes` is the JSON literal `null` (with optional whitespace).
fn is_null(bytes: &[u8]) -> bool {
    bytes.trim_ascii() == b"null"
}

/// Reads the top of a key or value, telling bytes that are not JSON from
/// JSON of the wrong shape.
fn read<'a, T: Deserialize<'a>>(bytes: &'a [u8], part: Part) -> Result<T, DecodeErrorKind> {
    let object = bytes.trim_ascii_start().first() == Some(&b'{');
    let parsed = serde_json::from_slice(bytes);
    if !object && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
        return Err(DecodeErrorKind::NotAnEnvelope {
            reason: format!("the {part} is {}, not a JSON object", json_kind(bytes)),
        });
    }
    parsed.map_err(|e| match e.classify() {
        serde_json::error::Category::Data => DecodeErrorKind::NotAnEnvelope {
            reason: format!("the {part} is {}, not a JSON object", json_kind(bytes)),
        },
        // Syntax and end-of-input messages are fixed words and a position,
        // never the input itself.
        _ => DecodeErrorKind::NotJson {
            part,
            detail: e.to_string(),
        },
    })
}

/// An error in a nested part, without the parser's words (which may quote
/// a value).
fn shape(e: &serde_json::Error, what: &str) -> DecodeErrorKind {
    DecodeErrorKind::NotAnEnvelope {
        reason: format!(
            "its {what} is not what Debezium writes (at line {} column {})",
            e.line(),
            e.column()
        ),
    }
}

/// What kind of JSON value `bytes` starts with, for messages.
fn json_kind(bytes: &[u8]) -> &'static str {
    match bytes.trim_ascii_start().first() {
        Some(b'[') => "a JSON array",
        Some(b'"') => "a JSON string",
        Some(b't' | b'f') => "a JSON boolean",
        Some(b'n') => "JSON null",
        Some(b'{') => "a JSON object of another shape",
        _ => "a JSON number",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(bytes: &[u8]) -> (bool, String) {
        match parse(bytes) {
            Ok(Parsed::Event { schema, event }) => (schema.is_some(), event.op.into_owned()),
            Ok(_) => panic!("not an event"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn tells_the_formats_apart() {
        assert_eq!(
            event(br#"{"before":null,"after":{"id":1},"source":{},"op":"c"}"#),
            (false, "c".into())
        );
        assert_eq!(
            event(br#"{"schema":{"type":"struct"},"payload":{"before":null,"after":{"id":1},"source":{},"op":"u"}}"#),
            (true, "u".into())
        );
        assert!(matches!(parse(b" null "), Ok(Parsed::Null)));
        assert!(matches!(
            parse(br#"{"ts_ms":1796171938879}"#),
            Ok(Parsed::Nothing(Nothing::Heartbeat))
        ));
        assert!(matches!(
            parse(br#"{"schema":{"type":"struct","name":"io.debezium.connector.common.Heartbeat"},"payload":{"ts_ms":1}}"#),
            Ok(Parsed::Nothing(Nothing::Heartbeat))
        ));
        assert!(matches!(
            parse(br#"{"status":"END","id":"571:53195832","event_count":4,"data_collections":[],"ts_ms":1}"#),
            Ok(Parsed::Nothing(Nothing::TransactionMetadata))
        ));
        // A ts_ms beside other fields is no heartbeat.
        assert!(parse(br#"{"ts_ms":1,"secret":"x"}"#).is_err());
    }

    #[test]
    fn bad_values_are_errors_without_their_content() {
        let not_json = parse(b"\xff\xfesecret").unwrap_err();
        assert!(matches!(
            not_json,
            DecodeErrorKind::NotJson {
                part: Part::Value,
                ..
            }
        ));
        assert!(!not_json.to_string().contains("secret"));
        let array = parse(br#"["secret"]"#).unwrap_err();
        assert!(array.to_string().contains("a JSON array"), "{array}");
        assert!(!array.to_string().contains("secret"));
        let wrong = parse(br#"{"op":["secret"]}"#).unwrap_err();
        assert!(!wrong.to_string().contains("secret"), "{wrong}");
        let plain = parse(br#"{"name":"secret"}"#).unwrap_err();
        assert!(plain.to_string().contains("no op"), "{plain}");
        let payload = parse(br#"{"schema":{"type":"struct"},"payload":{"op":7}}"#).unwrap_err();
        assert!(payload.to_string().contains("payload"), "{payload}");
    }

    #[test]
    fn keys_with_and_without_schemas() {
        let k =
            parse_key(br#"{"schema":{"type":"struct","fields":[]},"payload":{"id":1,"b":"x"}}"#)
                .unwrap();
        assert!(k.schema.is_some());
        let names: Vec<_> = k.fields.0.iter().map(|(n, _)| n.as_ref()).collect();
        assert_eq!(names, ["id", "b"]);
        // A table whose key columns are named schema and payload.
        let k = parse_key(br#"{"schema":1,"payload":2}"#).unwrap();
        assert!(k.schema.is_none());
        assert_eq!(k.fields.0.len(), 2);
        let escaped =
            parse_row(serde_json::from_str::<&RawValue>(r#"{"a\"b":1}"#).unwrap()).unwrap();
        assert_eq!(escaped.0[0].0, "a\"b");
    }
}

//! The fields an event is built from: the columns of an outbox row, or the
//! members of a message's JSON object, each in the form Debezium's
//! EventRouter gives it.
//!
//! A column's value takes its Debezium form (the Kafka Connect value of
//! Debezium's PostgreSQL connector, as JsonConverter writes it without
//! schemas: `uuid` and `text` as strings, `timestamp` as microseconds,
//! `jsonb` as the string holding the document, `numeric` as Connect's
//! `Decimal`). A message's member is already JSON and is used as written.

use std::collections::HashMap;

use courier_core::{write_json_string, Change, Column, OutboxSource, PgType, Relation, Value};
use serde_json::value::RawValue;

use super::json;
use crate::connect::{self, DecimalHandling};

/// Why a field cannot take its part in an event: what is wrong and how to
/// fix it, never the value itself.
#[derive(Debug)]
pub(crate) struct Bad {
    pub reason: String,
    pub fix: String,
}

impl Bad {
    pub fn new(reason: impl Into<String>, fix: impl Into<String>) -> Bad {
        Bad {
            reason: reason.into(),
            fix: fix.into(),
        }
    }
}

/// The fields of one outbox change.
pub(crate) enum Fields<'a> {
    Row {
        relation: &'a Relation,
        row: &'a [Value],
    },
    Message(HashMap<String, &'a RawValue>),
}

/// One field: a column and its value, or a message's member (its name
/// and its JSON).
#[derive(Clone, Copy)]
pub(crate) enum Field<'a> {
    Column(&'a Column, &'a Value),
    Json(&'a str, &'a RawValue),
}

impl<'a> Fields<'a> {
    /// The fields of `change`: its row's columns, or its message's members.
    pub fn of(change: &'a Change) -> Result<Fields<'a>, Bad> {
        let row = change.after().or(change.before()).unwrap_or(&[]);
        if change.outbox() != Some(OutboxSource::Message) {
            return Ok(Fields::Row {
                relation: change.relation(),
                row,
            });
        }
        let content: &[u8] = match row.first() {
            Some(Value::Bytes(b)) => b,
            _ => &[],
        };
        let fix = "emit a JSON object, e.g. pg_logical_emit_message(true, '<prefix>', \
                   json_build_object('id', ..., 'aggregatetype', ..., 'aggregateid', ..., 'payload', ...)::text)";
        if let Some(problem) = json::invalid(content) {
            return Err(Bad::new(format!("the message's content {problem}"), fix));
        }
        match serde_json::from_slice::<HashMap<String, &RawValue>>(content) {
            Ok(members) => Ok(Fields::Message(members)),
            Err(_) => Err(Bad::new("the message's content is not a JSON object", fix)),
        }
    }

    /// The field named `name`, if the row has such a column (the message
    /// such a member).
    pub fn get<'s>(&'s self, name: &'s str) -> Option<Field<'s>> {
        match self {
            Fields::Row { relation, row } => relation
                .column_index(name)
                .map(|i| Field::Column(&relation.columns[i], &row[i])),
            Fields::Message(members) => members.get_key_value(name).map(|(k, v)| Field::Json(k, v)),
        }
    }

    /// The fields as JSON, for a dead-letter record: the row in Courier's
    /// type mapping, or the message's members as written.
    pub fn write_all(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        match self {
            Fields::Row { relation, row } => {
                for (i, (c, v)) in relation.columns.iter().zip(row.iter()).enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json_string(out, &c.name);
                    out.push(b':');
                    v.write_json(out);
                }
            }
            Fields::Message(members) => {
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json_string(out, k);
                    out.push(b':');
                    json::write_compact(v.get().as_bytes(), out);
                }
            }
        }
        out.push(b'}');
    }
}

impl Field<'_> {
    /// `column "x"`, or `field "x"` of a message, for messages.
    pub fn describe(&self) -> String {
        match self {
            Field::Column(c, _) => format!("column {:?}", c.name),
            Field::Json(name, _) => format!("field {name:?}"),
        }
    }

    pub fn is_null(&self) -> bool {
        match self {
            Field::Column(_, v) => v.is_null(),
            Field::Json(_, raw) => json::is_null(raw.get().as_bytes()),
        }
    }

    /// Appends the field's JSON: a column's Debezium form, a member as
    /// written (without whitespace).
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), Bad> {
        match self {
            Field::Column(c, v) => write_debezium(c, v, out),
            Field::Json(_, raw) => {
                json::write_compact(raw.get().as_bytes(), out);
                Ok(())
            }
        }
    }

    /// The field as a record header's bytes, as a Kafka Connect worker's
    /// default header converter writes Debezium's value: a string as its
    /// text, anything else as its JSON; `None` for null.
    pub fn header(&self) -> Result<Option<Vec<u8>>, Bad> {
        if self.is_null() {
            return Ok(None);
        }
        let mut out = Vec::new();
        self.write_json(&mut out)?;
        Ok(Some(match json::string_content(&out) {
            Some(text) => text.into_bytes(),
            None => out,
        }))
    }

    /// The field's text in a topic name: a string as it is, a number or a
    /// boolean as written; an error for null and anything else.
    pub fn topic_text(&self) -> Result<String, Bad> {
        let unusable = |kind: &str| {
            Bad::new(
                format!("{}, which names the topic, {kind}", self.describe()),
                "fill it with a short name (letters, digits, '.', '_', '-'), or change the router's topic",
            )
        };
        if self.is_null() {
            return Err(unusable("is null"));
        }
        match self {
            Field::Column(_, v) => match v {
                Value::Text(s)
                | Value::Uuid(s)
                | Value::Numeric(s)
                | Value::Date(s)
                | Value::Time(s)
                | Value::Timestamp(s)
                | Value::TimestampTz(s) => Ok(s.clone()),
                Value::Int(i) => Ok(i.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                Value::Float4(f) => Ok(f.to_string()),
                Value::Float8(f) => Ok(f.to_string()),
                Value::Json(text) => json::string_content(text.as_bytes())
                    .ok_or_else(|| unusable("holds a JSON document, not a string")),
                Value::Bytes(_) => Err(unusable("is bytea")),
                Value::Array(_) => Err(unusable("is an array")),
                Value::Null => Err(unusable("is null")),
            },
            Field::Json(_, raw) => {
                let text = raw.get().trim();
                if let Some(s) = json::string_content(text.as_bytes()) {
                    Ok(s)
                } else if text.starts_with(['{', '[']) {
                    Err(unusable("is an object or an array"))
                } else {
                    Ok(text.to_string())
                }
            }
        }
    }

    /// The record timestamp the field gives, in milliseconds since the
    /// epoch: a `timestamp` or `timestamptz` column, an integer of epoch
    /// milliseconds, or (in a message) an ISO 8601 string; `None` for null.
    pub fn timestamp_ms(&self) -> Result<Option<i64>, Bad> {
        let bad = || {
            Bad::new(
                format!(
                    "{}, the event's timestamp, is not a timestamp",
                    self.describe()
                ),
                "hold a timestamp, a timestamptz or epoch milliseconds in it",
            )
        };
        if self.is_null() {
            return Ok(None);
        }
        let micros = match self {
            Field::Column(_, Value::Timestamp(t)) => connect::timestamp_micros(t),
            Field::Column(_, Value::TimestampTz(t)) => {
                connect::timestamp_micros(t.strip_suffix('Z').unwrap_or(t))
            }
            Field::Column(_, Value::Int(ms)) => ms.checked_mul(1000),
            Field::Column(..) => None,
            Field::Json(_, raw) => {
                let text = raw.get().trim();
                match json::string_content(text.as_bytes()) {
                    Some(s) => iso_micros(&s),
                    None => text.parse::<i64>().ok().and_then(|ms| ms.checked_mul(1000)),
                }
            }
        };
        micros.map(|us| Some(us.div_euclid(1000))).ok_or_else(bad)
    }

    /// The partition the field names: a non-negative integer.
    pub fn partition(&self) -> Result<Option<i32>, Bad> {
        if self.is_null() {
            return Ok(None);
        }
        let n = match self {
            Field::Column(_, Value::Int(i)) => Some(*i),
            Field::Column(..) => None,
            Field::Json(_, raw) => raw.get().trim().parse::<i64>().ok(),
        };
        n.and_then(|n| i32::try_from(n).ok())
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| {
                Bad::new(
                    format!(
                        "{}, the event's partition, is not a partition number",
                        self.describe()
                    ),
                    "hold a partition number (0 up to the topic's partition count) in it",
                )
            })
    }

    /// The payload's JSON, or `None` for null. With `expand`, a JSON
    /// document (a `json`/`jsonb` column, a `text` column, a message
    /// member, or a JSON string holding one) travels as the JSON value it
    /// is; without, as Debezium sends it (a document as the string holding
    /// it).
    pub fn payload(&self, expand: bool) -> Result<Option<Vec<u8>>, Bad> {
        if self.is_null() {
            return Ok(None);
        }
        let mut out = Vec::new();
        let document: Option<&[u8]> = match (self, expand) {
            (Field::Column(_, Value::Json(text)), true) => Some(text.as_bytes()),
            (Field::Column(c, Value::Text(text)), true) if c.pg_type == PgType::Text => {
                Some(text.as_bytes())
            }
            (Field::Json(_, raw), _) => {
                let raw = raw.get().as_bytes();
                match (json::string_content(raw), expand) {
                    (Some(inner), true) => {
                        self.check_document(inner.as_bytes())?;
                        json::write_compact(inner.as_bytes(), &mut out);
                        return Ok(Some(out));
                    }
                    (Some(_), false) | (None, true) => Some(raw),
                    // A document as the string holding it, as the table's
                    // jsonb column would give it.
                    (None, false) => {
                        let text = std::str::from_utf8(raw).unwrap_or_default().trim();
                        write_json_string(&mut out, text);
                        return Ok(Some(out));
                    }
                }
            }
            (Field::Column(..), _) => None,
        };
        match document {
            Some(doc) => {
                self.check_document(doc)?;
                json::write_compact(doc, &mut out);
            }
            None => self.write_json(&mut out)?,
        }
        Ok(Some(out))
    }

    /// Whether the field is a string of whitespace only (or empty).
    pub fn is_blank(&self) -> bool {
        match self {
            Field::Column(_, Value::Text(s)) => s.trim().is_empty(),
            Field::Column(..) => false,
            Field::Json(_, raw) => {
                json::string_content(raw.get().as_bytes()).is_some_and(|s| s.trim().is_empty())
            }
        }
    }
    fn check_document(&self, doc: &[u8]) -> Result<(), Bad> {
        match json::invalid(doc) {
            None => Ok(()),
            Some(problem) => Err(Bad::new(
                format!(
                    "{}, the payload, {problem} (expand_json_payload = true)",
                    self.describe()
                ),
                "write valid JSON into it (a json or jsonb column cannot hold anything else), \
                 or set expand_json_payload = false to send it as a string",
            )),
        }
    }
}

/// A column's value as Debezium's PostgreSQL connector gives it to Kafka
/// Connect, in JsonConverter's JSON without schemas.
fn write_debezium(column: &Column, value: &Value, out: &mut Vec<u8>) -> Result<(), Bad> {
    // Debezium writes a zoned timestamp's fraction with the column's
    // precision (six digits unless declared), where Courier's text keeps
    // only the digits that matter.
    if let (PgType::TimestampTz, Value::TimestampTz(text)) = (&column.pg_type, value) {
        write_json_string(out, &fraction_to_precision(text, column.type_modifier));
        return Ok(());
    }
    connect::write_value(column, value, DecimalHandling::Precise, out)
        .map_err(|e| Bad::new(e.0, "change the column's type or value"))
}

/// `YYYY-MM-DDTHH:MM:SS[.f]Z` with exactly `typmod` digits of fraction (6
/// when the column declares none); other text (`infinity`) as it is.
fn fraction_to_precision(text: &str, typmod: i32) -> String {
    let digits = if (0..=6).contains(&typmod) {
        typmod as usize
    } else {
        6
    };
    let Some(body) = text.strip_suffix('Z') else {
        return text.to_string();
    };
    let (whole, fraction) = body.split_once('.').unwrap_or((body, ""));
    let mut out = String::with_capacity(whole.len() + digits + 2);
    out.push_str(whole);
    if digits > 0 {
        out.push('.');
        out.extend(fraction.chars().chain(std::iter::repeat('0')).take(digits));
    }
    out.push('Z');
    out
}

/// Microseconds since the epoch of an ISO 8601 timestamp with a zone:
/// `YYYY-MM-DD[T ]HH:MM:SS[.f](Z|±HH[:MM])`, as `to_json(timestamptz)`
/// writes it; without a zone, UTC.
fn iso_micros(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.len() < 19 || !text.is_char_boundary(10) {
        return None;
    }
    let (date, rest) = text.split_at(10);
    let rest = rest.strip_prefix(['T', ' '])?;
    let (local, offset_us) = if let Some(local) = rest.strip_suffix('Z') {
        (local, 0)
    } else if let Some(at) = rest.rfind(['+', '-']) {
        let (local, zone) = rest.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let mut z = zone[1..].split(':');
        let h: i64 = z.next()?.parse().ok()?;
        let m: i64 = z.next().map_or(Some(0), |m| m.parse().ok())?;
        (local, sign * (h * 60 + m) * 60_000_000)
    } else {
        (rest, 0)
    };
    connect::timestamp_micros(&format!("{date}T{local}"))?.checked_sub(offset_us)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(pg_type: PgType, typmod: i32) -> Column {
        Column {
            name: "c".into(),
            type_oid: 0,
            type_modifier: typmod,
            type_name: "t".into(),
            pg_type,
            nullable: true,
            is_key: false,
        }
    }

    fn json_of(f: Field<'_>) -> String {
        let mut out = Vec::new();
        f.write_json(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn columns_take_their_debezium_form() {
        let ts = column(PgType::Timestamp, -1);
        let v = Value::Timestamp("2024-01-02T03:04:05.5".into());
        assert_eq!(json_of(Field::Column(&ts, &v)), "1704164645500000");
        let tz = column(PgType::TimestampTz, -1);
        let v = Value::TimestampTz("2024-01-02T03:04:05Z".into());
        assert_eq!(
            json_of(Field::Column(&tz, &v)),
            "\"2024-01-02T03:04:05.000000Z\""
        );
        let tz3 = column(PgType::TimestampTz, 3);
        let v = Value::TimestampTz("2024-01-02T03:04:05.12Z".into());
        assert_eq!(
            json_of(Field::Column(&tz3, &v)),
            "\"2024-01-02T03:04:05.120Z\""
        );
        let doc = column(PgType::Jsonb, -1);
        let v = Value::Json(r#"{"a": 1}"#.into());
        assert_eq!(json_of(Field::Column(&doc, &v)), r#""{\"a\": 1}""#);
        assert_eq!(
            Field::Column(
                &tz,
                &Value::TimestampTz("2024-01-02T03:04:05.123456Z".into())
            )
            .header()
            .unwrap(),
            Some(b"2024-01-02T03:04:05.123456Z".to_vec())
        );
        let int = column(PgType::Int4, -1);
        assert_eq!(
            Field::Column(&int, &Value::Int(7)).header().unwrap(),
            Some(b"7".to_vec())
        );
        assert_eq!(Field::Column(&int, &Value::Null).header().unwrap(), None);
    }

    #[test]
    fn payloads_expand_into_json_values() {
        let doc = column(PgType::Jsonb, -1);
        let v = Value::Json(r#"{"a": [1, null], "b": {}}"#.into());
        let f = Field::Column(&doc, &v);
        assert_eq!(
            f.payload(true).unwrap().unwrap(),
            br#"{"a":[1,null],"b":{}}"#
        );
        assert_eq!(
            f.payload(false).unwrap().unwrap(),
            br#""{\"a\": [1, null], \"b\": {}}""#
        );
        let text = column(PgType::Text, -1);
        let bad = Value::Text("{not json".into());
        let e = Field::Column(&text, &bad).payload(true).unwrap_err();
        assert!(e.reason.contains("not valid JSON"), "{}", e.reason);
        assert!(
            !e.reason.contains("not json"),
            "never the value: {}",
            e.reason
        );
        assert!(Field::Column(&text, &bad).payload(false).is_ok());
        assert_eq!(
            Field::Column(&doc, &Value::Null).payload(true).unwrap(),
            None
        );
    }

    #[test]
    fn message_members_are_used_as_written() {
        let raw: HashMap<String, &RawValue> =
            serde_json::from_str(r#"{"p": {"x" : [1, 2]}, "s": "{\"y\": 1}", "n": 42, "t": "2024-01-02T03:04:05.5+01:00"}"#)
                .unwrap();
        let p = Field::Json("p", raw["p"]);
        assert_eq!(p.payload(true).unwrap().unwrap(), br#"{"x":[1,2]}"#);
        assert_eq!(p.payload(false).unwrap().unwrap(), br#""{\"x\" : [1, 2]}""#);
        let s = Field::Json("s", raw["s"]);
        assert_eq!(s.payload(true).unwrap().unwrap(), br#"{"y":1}"#);
        assert_eq!(s.payload(false).unwrap().unwrap(), br#""{\"y\": 1}""#);
        let n = Field::Json("n", raw["n"]);
        assert_eq!(n.topic_text().unwrap(), "42");
        assert_eq!(n.header().unwrap(), Some(b"42".to_vec()));
        assert_eq!(n.timestamp_ms().unwrap(), Some(42));
        let t = Field::Json("t", raw["t"]);
        assert_eq!(t.timestamp_ms().unwrap(), Some(1_704_161_045_500));
        assert!(p.topic_text().is_err());
    }
}

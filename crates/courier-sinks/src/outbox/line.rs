//! An event as one JSON line, for the `stdout` and `file` sinks: what the
//! Kafka sink would write, spelled out.
//!
//! ```json
//! {"outbox": "orders", "topic": "outbox.event.order", "partition": null,
//!  "key": "42", "headers": {"id": "8d3c..."}, "value": {"total": 12},
//!  "timestamp_ms": 1764400000000, "lsn": 23655712, "txId": 771}
//! ```
//!
//! `key` and `value` are the record's JSON (null when it has none); header
//! values are strings, or null.

use courier_core::{write_json_string, Change};

use super::Event;

/// Appends `event` of router `router`, made from `change`, and a newline.
pub(crate) fn write_line(router: &str, change: &Change, event: &Event, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"outbox\":");
    write_json_string(out, router);
    out.extend_from_slice(b",\"topic\":");
    write_json_string(out, &event.topic);
    out.extend_from_slice(b",\"partition\":");
    match event.partition {
        Some(p) => out.extend_from_slice(p.to_string().as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"key\":");
    out.extend_from_slice(event.key.as_deref().unwrap_or(b"null"));
    out.extend_from_slice(b",\"headers\":{");
    for (i, (name, value)) in event.headers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(out, name);
        out.push(b':');
        match value {
            Some(v) => write_json_string(out, &String::from_utf8_lossy(v)),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b"},\"value\":");
    out.extend_from_slice(event.value.as_deref().unwrap_or(b"null"));
    out.extend_from_slice(b",\"timestamp_ms\":");
    out.extend_from_slice(event.timestamp_ms.to_string().as_bytes());
    out.extend_from_slice(b",\"lsn\":");
    out.extend_from_slice(change.version().as_u64().to_string().as_bytes());
    out.extend_from_slice(b",\"txId\":");
    out.extend_from_slice(change.xid().to_string().as_bytes());
    out.extend_from_slice(b"}\n");
}

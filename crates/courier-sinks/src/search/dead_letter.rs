//! Documents the server rejected for their content: the error that stops
//! the table, or the dead-letter index they go to instead.

use courier_core::{Change, Lsn, SinkError, SinkErrorKind, TableId};
use reqwest::Method;
use serde_json::{json, Value as Json};

use super::client::Client;
use super::encode::write_document;

/// One rejected row, with what a person needs to find and fix it.
pub(crate) struct Letter {
    table: TableId,
    key: Option<String>,
    lsn: Lsn,
    op: &'static str,
    status: u16,
    error_type: String,
    reason: String,
    document: Option<String>,
}

impl Letter {
    pub fn new(c: &Change, key: Option<&str>, status: u16, error_type: &str, reason: &str) -> Self {
        let document = c.after().map(|row| {
            let mut out = Vec::new();
            write_document(c.relation(), row, &mut out);
            String::from_utf8_lossy(&out).into_owned()
        });
        Letter {
            table: c.relation().id.clone(),
            key: key.map(str::to_string),
            lsn: c.version(),
            op: c.op().code(),
            status,
            error_type: error_type.to_string(),
            reason: reason.to_string(),
            document,
        }
    }

    /// The fatal error for `on_error = "stop"`: table, key, LSN and the
    /// server's reason without any quoted value of the row.
    pub fn stop_error(&self) -> SinkError {
        SinkError::new(SinkErrorKind::Rejected, format!(
            "search: the server rejected the row with key {} of {} at LSN {}: HTTP {} {}; \
             fix the mapping or the row, or set on_error = \"dead_letter\" to route such rows aside",
            self.key.as_deref().unwrap_or("(invalid)"),
            self.table,
            self.lsn,
            self.status,
            without_values(&self.reason)
        ))
        .with_table(&self.table)
        .with_lsn(self.lsn)
    }
}

/// The server's reason up to where it starts quoting the document's values.
fn without_values(reason: &str) -> &str {
    let cut = ["Preview of field's value", "value: '", "Current token"]
        .iter()
        .filter_map(|m| reason.find(m))
        .min()
        .unwrap_or(reason.len());
    reason[..cut].trim_end_matches([' ', '.'])
}

/// Creates the dead-letter index if missing.
pub(crate) async fn ensure_index(client: &Client, index: &str) -> Result<(), SinkError> {
    let body = json!({
        "mappings": {
            "dynamic": false,
            "properties": {
                "sink": {"type": "keyword"},
                "table": {"type": "keyword"},
                "key": {"type": "keyword"},
                "lsn": {"type": "long"},
                "lsn_text": {"type": "keyword"},
                "op": {"type": "keyword"},
                "status": {"type": "integer"},
                "error_type": {"type": "keyword"},
                "reason": {"type": "text"},
                "document": {"type": "text", "index": false},
                "at": {"type": "date"}
            }
        }
    });
    match client
        .json(Method::PUT, &format!("/{index}"), &body, &[400])
        .await
    {
        Ok((status, resp))
            if status.as_u16() == 400
                && resp.pointer("/error/type").and_then(Json::as_str)
                    != Some("resource_already_exists_exception") =>
        {
            Err(SinkError::new(
                SinkErrorKind::Config,
                format!(
                    "search: create the dead-letter index {index}: {}",
                    resp.get("error")
                        .map(super::client::error_text)
                        .unwrap_or_default()
                ),
            ))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(SinkError::new(
            e.kind(),
            format!("search: create the dead-letter index {index}: {e}"),
        )),
    }
}

/// Writes the letters; `Ok` once the server holds every one of them.
pub(crate) async fn write(
    client: &Client,
    index: &str,
    sink: &str,
    letters: &[Letter],
) -> Result<(), SinkError> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut body = Vec::new();
    for l in letters {
        let action = json!({"index": {"_index": index}});
        let doc = json!({
            "sink": sink,
            "table": l.table.to_string(),
            "key": l.key,
            "lsn": l.lsn.as_u64(),
            "lsn_text": l.lsn.to_string(),
            "op": l.op,
            "status": l.status,
            "error_type": l.error_type,
            "reason": l.reason,
            "document": l.document,
            "at": now_ms,
        });
        for line in [action, doc] {
            body.extend_from_slice(line.to_string().as_bytes());
            body.push(b'\n');
        }
    }
    let first = &letters[0];
    let resp = client.bulk(body).await.map_err(|e| {
        let m = format!("search: write to the dead-letter index {index}: {e}");
        SinkError::new(e.kind(), m)
            .with_table(&first.table)
            .with_lsn(first.lsn)
    })?;
    let failed = resp
        .get("items")
        .and_then(Json::as_array)
        .map(|items| {
            items
                .iter()
                .filter(|i| {
                    let status = i
                        .pointer("/index/status")
                        .and_then(Json::as_u64)
                        .unwrap_or(0);
                    !(200..300).contains(&status)
                })
                .count()
        })
        .unwrap_or(letters.len());
    if failed > 0 {
        return Err(SinkError::new(
            SinkErrorKind::Unavailable,
            format!(
                "search: the dead-letter index {index} did not take {failed} of {} rejected rows",
                letters.len()
            ),
        )
        .with_table(&first.table)
        .with_lsn(first.lsn));
    }
    for l in letters {
        tracing::warn!(
            sink,
            table = %l.table,
            lsn = %l.lsn,
            error = %l.error_type,
            "search: a row the server rejected went to the dead-letter index {index}"
        );
        metrics::counter!(
            "courier_sink_dead_letters_total",
            "sink" => sink.to_string(),
            "table" => l.table.to_string()
        )
        .increment(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_lose_the_quoted_values() {
        let r = "mapper_parsing_exception: failed to parse field [id] of type [long] in document with id '3'. Preview of field's value: 'secret'";
        assert_eq!(
            without_values(r),
            "mapper_parsing_exception: failed to parse field [id] of type [long] in document with id '3'"
        );
    }
}

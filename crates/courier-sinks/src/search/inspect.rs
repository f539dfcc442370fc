//! The search sink read back for `courier verify`: a row's address is its
//! document `_id`, its digest that of the `_source`, its version the
//! document's external version (the commit LSN). Deleted documents are
//! gone from searches, so the index holds no tombstones to read.

use async_trait::async_trait;
use courier_core::{Lsn, Relation, SinkError, TableId, Value};
use reqwest::Method;
use serde_json::{json, Map, Value as Json};

use super::client::{Client, HttpError};
use super::config::Settings;
use super::encode::{doc_id, path_segment, write_document};
use crate::inspect::{self, ExpectedRow, Inspector, Page, StoredRow};
use crate::BuildError;

/// Documents per page of a scan or a multi-get.
const PAGE: usize = 1000;

/// Reads the documents a search sink with these settings writes.
pub struct SearchInspector {
    settings: Settings,
    client: Client,
}

/// Reaches the server as the sink would, to read what it wrote.
pub async fn inspector(
    name: &str,
    config: super::SearchSinkConfig,
) -> Result<SearchInspector, BuildError> {
    let sink = super::build(name, config).await?;
    Ok(SearchInspector {
        settings: sink.settings,
        client: sink.client,
    })
}

impl SearchInspector {
    fn alias(&self, table: &TableId) -> Result<String, SinkError> {
        self.settings
            .index
            .alias(table)
            .map_err(|e| SinkError::new(courier_core::SinkErrorKind::Config, e).with_table(table))
    }

    fn error(table: &TableId, what: &str, e: HttpError) -> SinkError {
        SinkError::new(e.kind(), format!("{what} of {table}: {e}")).with_table(table)
    }
}

/// A hit or a multi-get document as a stored row.
fn stored(relation: &Relation, doc: &Json) -> Option<StoredRow> {
    let id = doc.get("_id")?.as_str()?;
    let version = doc.get("_version")?.as_u64()?;
    let source = doc.get("_source").and_then(Json::as_object);
    Some(StoredRow {
        address: id.as_bytes().to_vec(),
        version: Lsn(version),
        // A document without its source cannot equal a row.
        digest: Some(source.map_or(u64::MAX, inspect::object_digest)),
        key: source.and_then(|s| inspect::key_from_object(relation, s)),
    })
}

#[async_trait]
impl Inspector for SearchInspector {
    fn includes(&self, table: &TableId) -> bool {
        self.settings.selection.includes(table)
    }

    fn expect(&self, relation: &Relation, row: &[Value]) -> Result<ExpectedRow, String> {
        let id = doc_id(relation, row)?;
        let mut doc = Vec::new();
        write_document(relation, row, &mut doc);
        let doc: Map<String, Json> = serde_json::from_slice(&doc)
            .map_err(|e| format!("a document of {} is not valid JSON: {e}", relation.id))?;
        Ok(ExpectedRow {
            address: id.into_bytes(),
            digest: inspect::object_digest(&doc),
        })
    }

    async fn scan(&mut self, relation: &Relation, page: Page<'_>) -> Result<(), SinkError> {
        let table = &relation.id;
        let alias = self.alias(table)?;
        // What the stream wrote before the snapshot must be searchable.
        self.client
            .send(
                Method::POST,
                &format!("/{}/_refresh", path_segment(&alias)),
                None,
                &[404],
            )
            .await
            .map_err(|e| Self::error(table, "refresh the index", e))?;
        let body =
            json!({"size": PAGE, "version": true, "sort": ["_doc"], "query": {"match_all": {}}});
        let scroll = self
            .client
            .scroll(&path_segment(&alias), &body)
            .await
            .map_err(|e| Self::error(table, "search the documents", e))?;
        // No index yet: the sink holds nothing of this table.
        let Some(mut scroll) = scroll else {
            return Ok(());
        };
        loop {
            let hits = scroll
                .page()
                .await
                .map_err(|e| Self::error(table, "read a page of documents", e))?;
            if hits.is_empty() {
                break;
            }
            page(hits.iter().filter_map(|h| stored(relation, h)).collect());
        }
        scroll.close().await;
        Ok(())
    }

    async fn read(
        &mut self,
        relation: &Relation,
        addresses: &[Vec<u8>],
    ) -> Result<Vec<Option<StoredRow>>, SinkError> {
        let table = &relation.id;
        let alias = self.alias(table)?;
        let mut out = Vec::with_capacity(addresses.len());
        for chunk in addresses.chunks(PAGE) {
            let ids: Vec<String> = chunk
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let (status, resp) = self
                .client
                .json(
                    Method::POST,
                    &format!("/{}/_mget", path_segment(&alias)),
                    &json!({"ids": ids}),
                    &[404],
                )
                .await
                .map_err(|e| Self::error(table, "read documents", e))?;
            if status.as_u16() == 404 {
                out.extend(chunk.iter().map(|_| None));
                continue;
            }
            let docs = resp
                .get("docs")
                .and_then(Json::as_array)
                .cloned()
                .unwrap_or_default();
            for i in 0..chunk.len() {
                let doc = docs
                    .get(i)
                    .filter(|d| d.get("found") == Some(&Json::Bool(true)));
                out.push(doc.and_then(|d| stored(relation, d)));
            }
        }
        Ok(out)
    }
}

//! The Redis sink read back for `courier verify`: a row's address is its
//! key, its digest that of its `row` JSON (`format = "json"`) or of its
//! fields (`format = "hash"`), its version the `_courier_version` field.

use async_trait::async_trait;
use courier_core::{Lsn, Relation, SinkError, TableId, Value};
use redis::RedisError;
use serde_json::{Map, Value as Json};

use super::client::{Client, Failure};
use super::config::{Format, Mode, Settings};
use super::encode::{hash_field, row_json};
use super::script::{DELETED_FIELD, ROW_FIELD, VERSION_FIELD};
use crate::inspect::{self, ExpectedRow, Inspector, Page, StoredRow};
use crate::BuildError;

/// Keys read per round trip.
const PAGE: usize = 1000;

/// Reads the keys a Redis sink with these settings writes.
pub struct RedisInspector {
    settings: Settings,
    client: Client,
    servers: String,
}

/// Connects as the sink would, to read what it wrote.
pub async fn inspector(
    name: &str,
    config: super::RedisSinkConfig,
) -> Result<RedisInspector, BuildError> {
    let sink = super::build(name, config).await?;
    Ok(RedisInspector {
        settings: sink.settings,
        client: sink.client,
        servers: sink.servers,
    })
}

impl RedisInspector {
    fn error(&self, table: &TableId, e: &RedisError) -> SinkError {
        let f = Failure::from(e);
        SinkError::new(
            f.kind,
            format!(
                "redis at {}: read the keys of {table} back: {}",
                self.servers, f.message
            ),
        )
        .with_table(table)
    }

    /// The stored row of one key's fields, `None` when the key holds none of
    /// Courier's rows (absent, or not written by Courier).
    fn stored(
        &self,
        relation: &Relation,
        address: Vec<u8>,
        fields: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Option<StoredRow> {
        let version = fields
            .iter()
            .find(|(f, _)| f == VERSION_FIELD.as_bytes())
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<u64>().ok())?;
        if fields.iter().any(|(f, _)| f == DELETED_FIELD.as_bytes()) {
            return Some(StoredRow {
                address,
                version: Lsn(version),
                digest: None,
                key: None,
            });
        }
        let (digest, key) = match self.settings.format {
            Format::Json => {
                let row = fields.iter().find(|(f, _)| f == ROW_FIELD.as_bytes());
                match row.map(|(_, r)| serde_json::from_slice::<Json>(r)) {
                    Some(Ok(Json::Object(o))) => (
                        inspect::object_digest(&o),
                        inspect::key_from_object(relation, &o),
                    ),
                    // Not a row Courier could have written: it differs.
                    _ => (u64::MAX, None),
                }
            }
            Format::Hash => {
                let columns = fields
                    .iter()
                    .filter(|(f, _)| f != VERSION_FIELD.as_bytes())
                    .map(|(f, v)| (f.as_slice(), v.as_slice()));
                let digest = inspect::fields_digest(columns);
                let key = hash_key(relation, &fields);
                (digest, key)
            }
        };
        Some(StoredRow {
            address,
            version: Lsn(version),
            digest: Some(digest),
            key,
        })
    }
}

/// The key columns of a hash row as JSON values.
fn hash_key(relation: &Relation, fields: &[(Vec<u8>, Vec<u8>)]) -> Option<Vec<Json>> {
    relation
        .key_indexes()
        .map(|i| {
            let col = &relation.columns[i];
            let (_, v) = fields.iter().find(|(f, _)| f == col.name.as_bytes())?;
            let text = String::from_utf8_lossy(v).into_owned();
            Some(serde_json::from_str::<Json>(&text).unwrap_or(Json::String(text)))
        })
        .collect()
}

#[async_trait]
impl Inspector for RedisInspector {
    fn includes(&self, table: &TableId) -> bool {
        self.settings.selection.includes(table)
    }

    fn keeps_rows(&self) -> bool {
        self.settings.mode == Mode::Upsert
    }

    fn unverifiable(&self) -> Option<String> {
        match (self.settings.mode, self.settings.ttl) {
            (Mode::Invalidate, _) => Some(
                "mode = \"invalidate\" deletes keys and applications fill them: there are no rows to compare"
                    .into(),
            ),
            (_, Some(_)) => Some(
                "rows expire after `ttl`, so a missing key is expected: remove `ttl` to verify this cache"
                    .into(),
            ),
            _ => None,
        }
    }

    fn expect(&self, relation: &Relation, row: &[Value]) -> Result<ExpectedRow, String> {
        let key: Vec<&Value> = relation.key_indexes().map(|i| &row[i]).collect();
        if key.is_empty() {
            return Err(format!(
                "{} has no primary key or replica identity",
                relation.id
            ));
        }
        let address = self.settings.key.render(&relation.id, &key);
        let digest = match self.settings.format {
            Format::Json => {
                match serde_json::from_slice::<Map<String, Json>>(&row_json(relation, row)) {
                    Ok(o) => inspect::object_digest(&o),
                    Err(e) => {
                        return Err(format!("a row of {} is not valid JSON: {e}", relation.id))
                    }
                }
            }
            Format::Hash => {
                let fields: Vec<(Vec<u8>, Vec<u8>)> = relation
                    .columns
                    .iter()
                    .zip(row)
                    .filter(|(_, v)| !v.is_null())
                    .map(|(c, v)| (c.name.as_bytes().to_vec(), hash_field(v)))
                    .collect();
                inspect::fields_digest(fields.iter().map(|(f, v)| (f.as_slice(), v.as_slice())))
            }
        };
        Ok(ExpectedRow { address, digest })
    }

    async fn scan(&mut self, relation: &Relation, page: Page<'_>) -> Result<(), SinkError> {
        let table = &relation.id;
        let pattern = self.settings.key.scan_pattern(table);
        let nodes = self
            .client
            .scan_nodes()
            .await
            .map_err(|e| self.error(table, &e))?;
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for node in nodes {
            let mut cursor = 0;
            loop {
                let (next, found) = self
                    .client
                    .scan_page(&node, cursor, &pattern, Some("hash"))
                    .await
                    .map_err(|e| self.error(table, &e))?;
                keys.extend(found);
                if keys.len() >= PAGE || next == 0 {
                    let rows = self.read(relation, &keys).await?;
                    page(rows.into_iter().flatten().collect());
                    keys.clear();
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }

    async fn read(
        &mut self,
        relation: &Relation,
        addresses: &[Vec<u8>],
    ) -> Result<Vec<Option<StoredRow>>, SinkError> {
        let mut out = Vec::with_capacity(addresses.len());
        for chunk in addresses.chunks(PAGE) {
            let hashes = self
                .client
                .hgetall_many(chunk)
                .await
                .map_err(|e| self.error(&relation.id, &e))?;
            for (address, fields) in chunk.iter().zip(hashes) {
                out.push(self.stored(relation, address.clone(), fields));
            }
        }
        Ok(out)
    }
}

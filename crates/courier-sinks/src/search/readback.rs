//! Reading documents back by primary key, for the compliance suite and tests.

use async_trait::async_trait;
use courier_core::{Relation, Value};
use serde_json::{Map, Value as Json};

use super::client::Client;
use super::config::{SearchSinkConfig, Settings};
use super::encode::{doc_id, path_segment};
use crate::compliance::Readback;

/// Reads a table's documents through its alias, in real time (no refresh
/// needed).
pub struct SearchReadback {
    client: Client,
    settings: Settings,
}

impl SearchReadback {
    /// A reader for the server at `url`, with the sink's `index` template.
    pub fn new(url: &str, index: &str) -> Result<Self, String> {
        let config: SearchSinkConfig = toml::from_str(&format!("url = {url:?}\nindex = {index:?}"))
            .map_err(|e| e.to_string())?;
        let settings = config.validate()?;
        let client = Client::new(&settings).map_err(|e| e.to_string())?;
        Ok(SearchReadback { client, settings })
    }

    /// The stored document of the row with these key values, NULL fields
    /// left out; `None` when absent or deleted.
    pub async fn document(&self, relation: &Relation, key: &[Value]) -> Option<Map<String, Json>> {
        let mut row = vec![Value::Null; relation.columns.len()];
        for (i, v) in relation.key_indexes().zip(key) {
            row[i] = v.clone();
        }
        let id = doc_id(relation, &row).ok()?;
        let alias = self.settings.index.alias(&relation.id).ok()?;
        let path = format!("/{alias}/_doc/{}", path_segment(&id));
        let (status, body) = match self.client.get(&path, &[404]).await {
            Ok(r) => r,
            Err(e) => panic!("read back {path}: {e}"),
        };
        if status.as_u16() == 404 || body.get("found") != Some(&Json::Bool(true)) {
            return None;
        }
        let source = body.get("_source")?.as_object()?;
        Some(
            source
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }
}

#[async_trait]
impl Readback for SearchReadback {
    async fn read_row(&mut self, relation: &Relation, key: &[Value]) -> Option<Map<String, Json>> {
        self.document(relation, key).await
    }
}

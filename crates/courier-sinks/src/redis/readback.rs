//! Reading rows back from Redis the way an application does, for the
//! compliance suite and end-to-end tests.

use async_trait::async_trait;
use courier_core::{PgType, Relation, Value};
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use serde_json::Map;

use super::config::Format;
use super::key::KeyTemplate;
use super::script::{DELETED_FIELD, ROW_FIELD, VERSION_FIELD};
use crate::compliance::Readback;

/// Reads rows written by a Redis sink with the same `key` and `format`.
pub struct RedisReadback {
    conn: Conn,
    key: KeyTemplate,
    format: Format,
}

enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl RedisReadback {
    /// Connects to `urls` (cluster seed nodes when `cluster`).
    pub async fn connect(
        urls: &[&str],
        cluster: bool,
        key: &str,
        format: Format,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let conn = if cluster {
            let client = redis::cluster::ClusterClient::new(urls.to_vec())?;
            Conn::Cluster(client.get_async_connection().await?)
        } else {
            let url = urls.first().ok_or("no URL")?;
            let client = redis::Client::open(*url)?;
            Conn::Single(client.get_multiplexed_async_connection().await?)
        };
        Ok(RedisReadback {
            conn,
            key: KeyTemplate::parse(key)?,
            format,
        })
    }

    /// Every field of the key's hash (empty when the key is absent).
    pub async fn fields(&mut self, key: &[u8]) -> redis::RedisResult<Vec<(String, Vec<u8>)>> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(key);
        match &mut self.conn {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }

    /// The key of a row, as the sink renders it.
    pub fn key_of(&self, relation: &Relation, key: &[Value]) -> Vec<u8> {
        let refs: Vec<&Value> = key.iter().collect();
        self.key.render(&relation.id, &refs)
    }
}

#[async_trait]
impl Readback for RedisReadback {
    async fn read_row(
        &mut self,
        relation: &Relation,
        key: &[Value],
    ) -> Option<Map<String, serde_json::Value>> {
        let k = self.key_of(relation, key);
        let fields = match self.fields(&k).await {
            Ok(f) => f,
            Err(e) => panic!("read {} back from redis: {e}", relation.id),
        };
        if fields.is_empty() || fields.iter().any(|(f, _)| f == DELETED_FIELD) {
            return None;
        }
        match self.format {
            Format::Json => {
                let (_, row) = fields.iter().find(|(f, _)| f == ROW_FIELD)?;
                match serde_json::from_slice::<serde_json::Value>(row) {
                    Ok(serde_json::Value::Object(mut m)) => {
                        m.retain(|_, v| !v.is_null());
                        Some(m)
                    }
                    other => panic!("row of {} is not a JSON object: {other:?}", relation.id),
                }
            }
            Format::Hash => Some(
                fields
                    .into_iter()
                    .filter(|(f, _)| f != VERSION_FIELD)
                    .map(|(f, v)| {
                        let text = String::from_utf8_lossy(&v).into_owned();
                        let pg = relation
                            .column_index(&f)
                            .map(|i| &relation.columns[i].pg_type);
                        (f, from_hash_field(pg, text))
                    })
                    .collect(),
            ),
        }
    }
}

/// A hash field back to its JSON value, knowing the column's type.
fn from_hash_field(pg: Option<&PgType>, text: String) -> serde_json::Value {
    match pg {
        Some(
            PgType::Bool
            | PgType::Int2
            | PgType::Int4
            | PgType::Int8
            | PgType::Oid
            | PgType::Float4
            | PgType::Float8
            | PgType::Json
            | PgType::Jsonb
            | PgType::Array(_),
        ) => serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        _ => serde_json::Value::String(text),
    }
}

//! Reading a row back from the ClickHouse sink's current-rows view, in the
//! shape the compliance suite compares: Courier's JSON type mapping, NULL
//! columns left out.

use async_trait::async_trait;
use courier_core::{PgType, Relation, Value};
use serde_json::{Map, Value as Json};

use super::schema::{literal, quote, VIEW_SUFFIX};
use crate::compliance::Readback;

/// Reads rows from `<database>.<table>_current` over HTTP.
pub struct ClickHouseReadback {
    http: reqwest::Client,
    endpoint: String,
    database: String,
    /// Whether the server drops a decimal's trailing zeros in text unless
    /// told not to (21.9 and later), once known.
    decimal_zeros_setting: Option<bool>,
}

impl ClickHouseReadback {
    /// A reader for the server at `endpoint` (e.g. `http://127.0.0.1:58123/`).
    pub fn new(endpoint: &str, database: &str) -> Self {
        ClickHouseReadback {
            http: reqwest::Client::new(),
            endpoint: endpoint.to_string(),
            database: database.to_string(),
            decimal_zeros_setting: None,
        }
    }

    /// Runs a query and returns the body, panicking on failure (test use).
    pub async fn query(&self, sql: &str) -> String {
        self.query_with(sql, &[]).await
    }

    async fn query_with(&self, sql: &str, settings: &[(&str, &str)]) -> String {
        let resp = self
            .http
            .post(&self.endpoint)
            .query(&[("output_format_json_quote_64bit_integers", "0")])
            .query(settings)
            .body(sql.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("clickhouse query: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "clickhouse query {sql}: {text}");
        text
    }
}

#[async_trait]
impl Readback for ClickHouseReadback {
    async fn read_row(&mut self, relation: &Relation, key: &[Value]) -> Option<Map<String, Json>> {
        let zeros = match self.decimal_zeros_setting {
            Some(z) => z,
            None => {
                let v = super::types::Features::of_version(&self.query("SELECT version()").await);
                let z = v.version >= (21, 9);
                self.decimal_zeros_setting = Some(z);
                z
            }
        };
        // Exact text, as the JSON mapping has it: `numeric(p, s)` keeps its
        // scale (10.50). 18.16's toString keeps trailing zeros; later
        // servers drop them there, and keep them in JSON when told to.
        let settings: &[(&str, &str)] = if zeros {
            &[
                ("output_format_decimal_trailing_zeros", "1"),
                ("output_format_json_quote_decimals", "1"),
            ]
        } else {
            &[]
        };
        let cols: Vec<String> = relation
            .columns
            .iter()
            .map(|c| match c.pg_type {
                PgType::Numeric { .. } if !zeros => format!("toString({0}) AS {0}", quote(&c.name)),
                _ => quote(&c.name),
            })
            .collect();

        let cond: Vec<String> = relation
            .key_indexes()
            .zip(key)
            .map(|(i, v)| {
                let lit = match v {
                    Value::Int(n) => n.to_string(),
                    Value::Text(s) => literal(s),
                    other => literal(&other.to_json().to_string()),
                };
                format!("{} = {lit}", quote(&relation.columns[i].name))
            })
            .collect();
        let sql = format!(
            "SELECT {} FROM {}.{} WHERE {} FORMAT JSONEachRow",
            cols.join(", "),
            quote(&self.database),
            quote(&format!("{}{VIEW_SUFFIX}", relation.id.name)),
            cond.join(" AND ")
        );
        let body = self.query_with(&sql, settings).await;
        let line = body.lines().find(|l| !l.trim().is_empty())?;
        let mut row: Map<String, Json> = serde_json::from_str(line).ok()?;
        row.retain(|_, v| !v.is_null());
        for c in &relation.columns {
            if matches!(c.pg_type, PgType::Json | PgType::Jsonb) {
                if let Some(Json::String(s)) = row.get(&c.name) {
                    let parsed = serde_json::from_str(s).unwrap_or(Json::Null);
                    row.insert(c.name.clone(), parsed);
                }
            }
        }
        Some(row)
    }
}

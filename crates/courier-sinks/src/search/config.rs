//! `[sinks.NAME]` with `type = "elasticsearch"` or `"opensearch"`: the
//! settings as written, and the validated form the sink runs with.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::selection::TableSelection;
use crate::settings::percent_decode;
pub(crate) use crate::settings::redact_url as redact;

/// The search sink's settings, as written in the configuration (minus `type`).
///
/// Unknown keys are rejected by name. `Debug` hides the password and API key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSinkConfig {
    /// `http://host:9200` or `https://...`; `user:password@` for basic auth.
    pub url: String,
    /// An API key (`id:key` base64-encoded, as the server issues it), sent as
    /// `Authorization: ApiKey ...`. Excludes a password in `url`.
    pub api_key: Option<String>,
    /// Tables this sink receives: `schema.table` or `schema.*` (default: all).
    pub tables: Option<Vec<String>>,
    /// The alias users query, from `{schema}` and `{table}` (default `{table}`).
    pub index: Option<String>,
    /// A JSON file `{"schema.table": {"column": <mapping>, ...}, ...}` whose
    /// field mappings replace the derived ones.
    pub mappings: Option<PathBuf>,
    /// `stop` (default) or `dead_letter`: what a document the server rejects
    /// for its content does.
    #[serde(default)]
    pub on_error: OnError,
    /// The dead-letter index (default `courier_dead_letter`).
    pub dead_letter_index: Option<String>,
    /// Documents per `_bulk` request (default 1000).
    pub batch_size: Option<usize>,
    /// Bytes per `_bulk` request, roughly (default 5 MiB).
    pub batch_bytes: Option<usize>,
    /// `_bulk` requests in flight at once (default 3: one more than a small
    /// node has write threads, so none idles between requests).
    pub concurrency: Option<usize>,
    /// How long delete tombstones are kept (`index.gc_deletes`, default `7d`).
    pub gc_deletes: Option<String>,
    /// Shards and replicas of the indexes Courier creates (defaults 1 and
    /// the server's default).
    pub number_of_shards: Option<u32>,
    pub number_of_replicas: Option<u32>,
    /// Per-request timeout in seconds (default 60).
    pub timeout_secs: Option<u64>,
    /// How long overloaded items are retried within one batch before the
    /// batch is retried as a whole, in seconds (default 120).
    pub retry_secs: Option<u64>,
}

/// What the sink does with a document the server rejects for its content.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Stop the table's progress with an error naming table, key and LSN.
    #[default]
    Stop,
    /// Write it to the dead-letter index and go on.
    DeadLetter,
}

impl fmt::Debug for SearchSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SearchSinkConfig")
            .field("url", &redact(&self.url))
            .field("api_key", &self.api_key.as_ref().map(|_| "<hidden>"))
            .field("tables", &self.tables)
            .field("index", &self.index)
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

/// The settings the sink runs with: checked, defaults applied.
#[derive(Clone)]
pub(crate) struct Settings {
    /// The base URL without credentials, ending without `/`.
    pub base: String,
    /// The `Authorization` header value, if any.
    pub auth: Option<String>,
    pub selection: TableSelection,
    pub index: IndexTemplate,
    /// `schema.table` → column → mapping that replaces the derived one.
    pub overrides: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    pub on_error: OnError,
    pub dead_letter_index: String,
    pub batch_size: usize,
    pub batch_bytes: usize,
    pub concurrency: usize,
    pub gc_deletes: String,
    pub number_of_shards: u32,
    pub number_of_replicas: Option<u32>,
    pub timeout: Duration,
    pub retry_for: Duration,
}

impl SearchSinkConfig {
    /// Checks the settings; the error says which key is wrong and how to fix it.
    pub(crate) fn validate(self) -> Result<Settings, String> {
        let (base, basic) = split_url(&self.url)?;
        let auth = match (basic, &self.api_key) {
            (Some(_), Some(_)) => {
                return Err("api_key: give either a password in url or api_key, not both".into())
            }
            (Some(b), None) => Some(format!("Basic {b}")),
            (None, Some(k)) if k.trim().is_empty() => return Err("api_key: is empty".into()),
            (None, Some(k)) => Some(format!("ApiKey {}", k.trim())),
            (None, None) => None,
        };
        let selection = TableSelection::from_setting(self.tables.as_deref())
            .map_err(|e| format!("tables: {e}"))?;
        let index = IndexTemplate::parse(self.index.as_deref().unwrap_or("{table}"))?;
        let overrides = match &self.mappings {
            None => BTreeMap::new(),
            Some(path) => read_overrides(path)?,
        };
        let dead_letter_index = self
            .dead_letter_index
            .unwrap_or_else(|| "courier_dead_letter".into());
        check_index_name(&dead_letter_index).map_err(|e| format!("dead_letter_index: {e}"))?;
        let count = |name: &str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(format!("{name}: must be at least 1")),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let gc_deletes = self.gc_deletes.unwrap_or_else(|| "7d".into());
        if gc_deletes.is_empty() || !gc_deletes.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "gc_deletes: {gc_deletes:?} is not a duration such as \"7d\" or \"48h\""
            ));
        }
        Ok(Settings {
            base,
            auth,
            selection,
            index,
            overrides,
            on_error: self.on_error,
            dead_letter_index,
            batch_size: count("batch_size", self.batch_size, 1000)?,
            batch_bytes: count("batch_bytes", self.batch_bytes, 5 << 20)?,
            concurrency: count("concurrency", self.concurrency, 3)?,
            gc_deletes,
            number_of_shards: self.number_of_shards.unwrap_or(1).max(1),
            number_of_replicas: self.number_of_replicas,
            timeout: Duration::from_secs(self.timeout_secs.unwrap_or(60).max(1)),
            retry_for: Duration::from_secs(self.retry_secs.unwrap_or(120)),
        })
    }
}

/// The `index` template: the alias name for a table.
#[derive(Clone, Debug)]
pub(crate) struct IndexTemplate(String);

impl IndexTemplate {
    fn parse(t: &str) -> Result<Self, String> {
        let probe = t.replace("{schema}", "s").replace("{table}", "t");
        if probe.contains('{') || probe.contains('}') {
            return Err(format!(
                "index: {t:?} has an unknown placeholder; use {{schema}} and {{table}}"
            ));
        }
        check_index_name(&probe).map_err(|e| format!("index: {t:?}: {e}"))?;
        Ok(IndexTemplate(t.to_string()))
    }

    /// The alias for `table`: the template filled in, lowercased (index
    /// names cannot hold capitals).
    pub fn alias(&self, table: &courier_core::TableId) -> Result<String, String> {
        let name = self
            .0
            .replace("{schema}", &table.schema)
            .replace("{table}", &table.name)
            .to_lowercase();
        check_index_name(&name)?;
        Ok(name)
    }
}

/// The rules Elasticsearch and OpenSearch apply to index and alias names.
fn check_index_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 200 {
        return Err("an index name must have 1 to 200 characters".into());
    }
    if name.starts_with(['_', '-', '+', '.']) {
        return Err(format!(
            "index name {name:?} must not start with _, -, + or ."
        ));
    }
    if let Some(c) = name.chars().find(|c| {
        matches!(
            c,
            '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ' ' | ',' | '#' | ':'
        )
    }) {
        return Err(format!("index name {name:?} must not contain {c:?}"));
    }
    Ok(())
}

/// Splits `http://user:pass@host:port/` into the base URL without
/// credentials and the base64 of `user:pass`.
fn split_url(url: &str) -> Result<(String, Option<String>), String> {
    let (scheme, rest) = url
        .split_once("://")
        .filter(|(s, _)| *s == "http" || *s == "https")
        .ok_or_else(|| {
            format!(
                "url {}: expected http://host:port or https://host:port",
                redact(url)
            )
        })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if host.is_empty() {
        return Err(format!("url {}: has no host", redact(url)));
    }
    let basic = userinfo.map(|u| {
        use base64::Engine;
        let decoded = percent_decode(u);
        base64::engine::general_purpose::STANDARD.encode(decoded)
    });
    Ok((format!("{scheme}://{host}{path}"), basic))
}

fn read_overrides(
    path: &PathBuf,
) -> Result<BTreeMap<String, serde_json::Map<String, serde_json::Value>>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("mappings: read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "mappings: {}: {e}; expected {{\"schema.table\": {{\"column\": {{\"type\": ...}}}}}}",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Settings, String> {
        toml::from_str::<SearchSinkConfig>(t)
            .map_err(|e| e.to_string())?
            .validate()
    }

    #[test]
    fn credentials_leave_the_url_for_a_header() {
        let s = parse("url = \"http://elastic:s%40cret@127.0.0.1:9200/\"").unwrap();
        assert_eq!(s.base, "http://127.0.0.1:9200");
        assert_eq!(s.auth.as_deref(), Some("Basic ZWxhc3RpYzpzQGNyZXQ="));
        assert_eq!(
            redact("http://elastic:secret@h:9200"),
            "http://elastic:***@h:9200"
        );
    }

    #[test]
    fn bad_settings_name_the_key() {
        let e = parse("url = \"ftp://h\"").err().unwrap();
        assert!(e.contains("url"), "{e}");
        let e = parse("url = \"http://h\"\nindex = \"{tabel}\"")
            .err()
            .unwrap();
        assert!(e.contains("placeholder"), "{e}");
        let e = parse("url = \"http://h\"\nbogus = 1").err().unwrap();
        assert!(e.contains("bogus"), "{e}");
        let e = parse("url = \"http://h\"\non_error = \"skip\"")
            .err()
            .unwrap();
        assert!(e.contains("skip"), "{e}");
    }

    #[test]
    fn aliases_are_lowercase_names() {
        let s = parse("url = \"http://h\"\nindex = \"{schema}_{table}\"").unwrap();
        let t = courier_core::TableId::new("public", "Products");
        assert_eq!(s.index.alias(&t).unwrap(), "public_products");
    }
}

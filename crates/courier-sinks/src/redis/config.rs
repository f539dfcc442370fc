//! `[sinks.NAME]` with `type = "redis"`: the settings as written, and the
//! validated form the sink runs with.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::key::KeyTemplate;
use crate::selection::TableSelection;
use crate::settings::{opt_duration, redact_url};

/// The Redis sink's settings, as written in the configuration (minus `type`).
///
/// Unknown keys are rejected by name. `Debug` hides passwords in `url`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkConfig {
    /// `redis://[user:password@]host:port[/db]`, `rediss://...` for TLS. For a
    /// cluster: several seed URLs, as an array or comma-separated, with
    /// `cluster = true`.
    #[serde(deserialize_with = "one_or_many")]
    pub url: Vec<String>,
    /// Whether `url` names Redis Cluster seed nodes (default `false`).
    #[serde(default)]
    pub cluster: bool,
    /// Tables this sink receives: `schema.table` or `schema.*` (default: all).
    pub tables: Option<Vec<String>>,
    /// The key template (default `{schema}.{table}:{pk}`).
    pub key: Option<String>,
    /// `upsert` (default) or `invalidate`.
    #[serde(default)]
    pub mode: Mode,
    /// `json` (default) or `hash`: how `upsert` stores a row.
    #[serde(default)]
    pub format: Format,
    /// Expiry of rows written by `upsert`, e.g. `"1h"` or seconds (default: none).
    #[serde(default, deserialize_with = "opt_duration")]
    pub ttl: Option<Duration>,
    /// Expiry of delete tombstones (default `"24h"`).
    #[serde(default, deserialize_with = "opt_duration")]
    pub tombstone_ttl: Option<Duration>,
    /// Rows per pipeline (default 512), sent as script calls of up to 64 rows.
    pub batch_size: Option<usize>,
    /// Pipelines in flight at once (default 8).
    pub max_in_flight: Option<usize>,
    /// Connect and response timeout (default `"10s"`).
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// A PEM file of CA certificates that `rediss://` servers are verified
    /// against, instead of the system's roots.
    pub tls_ca_file: Option<PathBuf>,
}

/// What the sink does with a changed row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Keep the newest version of the row under its key.
    #[default]
    Upsert,
    /// Delete the key on every change; the application refills it.
    Invalidate,
}

/// How `upsert` lays out a row under its key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A hash with the row as one JSON object in the field `row`.
    #[default]
    Json,
    /// A hash with one field per non-NULL column.
    Hash,
}

/// The settings the sink runs with: checked, defaults applied.
#[derive(Clone)]
pub(crate) struct Settings {
    pub urls: Vec<String>,
    pub cluster: bool,
    pub selection: TableSelection,
    pub key: KeyTemplate,
    pub mode: Mode,
    pub format: Format,
    pub ttl: Option<Duration>,
    pub tombstone_ttl: Duration,
    pub batch_size: usize,
    pub max_in_flight: usize,
    pub timeout: Duration,
    pub tls_ca: Option<Vec<u8>>,
}

const DEFAULT_KEY: &str = "{schema}.{table}:{pk}";
const DEFAULT_TOMBSTONE_TTL: Duration = Duration::from_secs(24 * 3600);

impl RedisSinkConfig {
    /// Checks the settings; the error says which key is wrong and how to fix it.
    pub(crate) fn validate(self) -> Result<Settings, String> {
        let urls: Vec<String> = self.url.iter().flat_map(|u| split_urls(u)).collect();
        if urls.is_empty() {
            return Err("url: give at least one redis:// or rediss:// URL".into());
        }
        for u in &urls {
            if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                return Err(format!(
                    "url {}: expected redis://host:port or rediss://host:port",
                    redact(u)
                ));
            }
            redis::IntoConnectionInfo::into_connection_info(u.as_str())
                .map_err(|e| format!("url {}: {e}", redact(u)))?;
        }
        if urls.len() > 1 && !self.cluster {
            return Err(
                "url: several URLs are Redis Cluster seed nodes; add cluster = true".into(),
            );
        }
        let selection = TableSelection::from_setting(self.tables.as_deref())
            .map_err(|e| format!("tables: {e}"))?;
        let key = KeyTemplate::parse(self.key.as_deref().unwrap_or(DEFAULT_KEY))
            .map_err(|e| e.to_string())?;
        if self.mode == Mode::Invalidate && (self.ttl.is_some() || self.tombstone_ttl.is_some()) {
            return Err(
                "ttl and tombstone_ttl have no effect with mode = \"invalidate\"; remove them"
                    .into(),
            );
        }
        let positive = |name: &str, d: Option<Duration>| match d {
            Some(d) if d.is_zero() => Err(format!(
                "{name}: must be longer than zero; omit it for no expiry"
            )),
            _ => Ok(d),
        };
        let ttl = positive("ttl", self.ttl)?;
        let tombstone_ttl =
            positive("tombstone_ttl", self.tombstone_ttl)?.unwrap_or(DEFAULT_TOMBSTONE_TTL);
        let count = |name: &str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(format!("{name}: must be at least 1")),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let tls_ca = match &self.tls_ca_file {
            None => None,
            Some(_) if urls.iter().any(|u| !u.starts_with("rediss://")) => {
                return Err("tls_ca_file: TLS needs rediss:// URLs".into())
            }
            Some(p) => {
                Some(std::fs::read(p).map_err(|e| format!("tls_ca_file {}: {e}", p.display()))?)
            }
        };
        Ok(Settings {
            urls,
            cluster: self.cluster,
            selection,
            key,
            mode: self.mode,
            format: self.format,
            ttl,
            tombstone_ttl,
            batch_size: count("batch_size", self.batch_size, 512)?,
            max_in_flight: count("max_in_flight", self.max_in_flight, 8)?,
            timeout: positive("timeout", self.timeout)?.unwrap_or(Duration::from_secs(10)),
            tls_ca,
        })
    }
}

impl fmt::Debug for RedisSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.url.iter().map(|u| redact(u)).collect();
        f.debug_struct("RedisSinkConfig")
            .field("url", &urls)
            .field("cluster", &self.cluster)
            .field("tables", &self.tables)
            .field("key", &self.key)
            .field("mode", &self.mode)
            .field("format", &self.format)
            .field("ttl", &self.ttl)
            .field("tombstone_ttl", &self.tombstone_ttl)
            .field("batch_size", &self.batch_size)
            .field("max_in_flight", &self.max_in_flight)
            .field("timeout", &self.timeout)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|u| redact(u)).collect();
        f.debug_struct("Settings")
            .field("urls", &urls)
            .field("cluster", &self.cluster)
            .field("key", &self.key)
            .field("mode", &self.mode)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// The URL with its password replaced by `***`, safe to show.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some(at) = rest.rfind('@') else {
        return url.to_string();
    };
    let (userinfo, host) = rest.split_at(at);
    if userinfo.is_empty() || userinfo.contains(':') {
        return redact_url(url);
    }
    // `redis://password@host` is also read as a password.
    format!("{scheme}://***{host}")
}

/// Splits `redis://a:1,redis://b:2` into URLs; a comma not followed by a
/// scheme stays inside the URL (it may be part of a password).
fn split_urls(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for piece in s.split(',') {
        let trimmed = piece.trim();
        match out.last_mut() {
            Some(last)
                if !(trimmed.starts_with("redis://") || trimmed.starts_with("rediss://")) =>
            {
                last.push(',');
                last.push_str(piece);
            }
            _ if trimmed.is_empty() => {}
            _ => out.push(trimmed.to_string()),
        }
    }
    out
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a URL string or an array of URL strings")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

//! `[sinks.NAME]` with `type = "clickhouse"`: the settings as written, and
//! the validated form the sink runs with.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use courier_core::TableId;
use serde::Deserialize;

use crate::selection::TableSelection;
pub(crate) use crate::settings::redact_url as redact;
use crate::settings::{opt_duration, percent_decode};

/// The ClickHouse sink's settings, as written in the configuration (minus `type`).
///
/// Unknown keys are rejected by name. `Debug` hides the password.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseSinkConfig {
    /// The HTTP interface: `http://[user[:password]@]host:8123`, or `https://`.
    pub url: String,
    /// The user (default: the URL's, else `default`).
    pub user: Option<String>,
    /// The password (default: the URL's, else none).
    pub password: Option<String>,
    /// The database Courier creates its tables in.
    pub database: String,
    /// Tables this sink receives: `schema.table` or `schema.*` (default: all).
    pub tables: Option<Vec<String>>,
    /// The ClickHouse table name of a source table (default `{table}`;
    /// `{schema}` is also available).
    pub table: Option<String>,
    /// Most rows in one INSERT (default 100,000). Under load Courier gathers
    /// this many changes into one INSERT per table.
    pub max_rows: Option<usize>,
    /// Most bytes of encoded rows in one INSERT, and of row values in one
    /// group (default 16 MiB).
    pub max_bytes: Option<usize>,
    /// The longest a change waits for others to share its INSERT (default
    /// `"200ms"`; `"0s"` inserts whatever is queued at once). ClickHouse
    /// prefers a few large inserts per second to many small ones.
    #[serde(default, deserialize_with = "opt_duration")]
    pub max_delay: Option<Duration>,
    /// INSERTs in flight at once per table (default 2). A group's rows go
    /// out in about equal parts; each key is in one part only, so their
    /// order does not matter.
    pub concurrency: Option<usize>,
    /// `"gzip"` or `"none"`: how INSERT bodies travel. Default: `"none"` to
    /// a server on this machine (loopback), else `"gzip"`.
    pub compression: Option<String>,
    /// Connect and response timeout (default `"60s"`).
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// A PEM file of CA certificates that an `https://` server is verified
    /// against, in addition to the usual roots.
    pub tls_ca_file: Option<PathBuf>,
}

/// The settings the sink runs with: checked, defaults applied.
#[derive(Clone)]
pub(crate) struct Settings {
    /// `scheme://host:port/` without credentials.
    pub endpoint: String,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    pub selection: TableSelection,
    pub table: String,
    pub max_rows: usize,
    pub max_bytes: usize,
    pub max_delay: Duration,
    pub concurrency: usize,
    pub compression: Compression,
    pub timeout: Duration,
    pub tls_ca: Option<Vec<u8>>,
}

impl Settings {
    /// The ClickHouse table name for a source table.
    pub fn table_name(&self, id: &TableId) -> String {
        self.table
            .replace("{schema}", &id.schema)
            .replace("{table}", &id.name)
    }
}

/// How INSERT bodies travel to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    /// `Content-Encoding: gzip`, which every ClickHouse release accepts.
    Gzip,
}

/// Whether the URL names this machine, where compressing costs more CPU
/// than it saves bandwidth.
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

impl ClickHouseSinkConfig {
    /// Checks the settings; the error says which key is wrong and how to fix it.
    pub(crate) fn validate(self) -> Result<Settings, String> {
        let parsed =
            url::Url::parse(&self.url).map_err(|e| format!("url {}: {e}", redact(&self.url)))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "url {}: expected http://host:port or https://host:port (the HTTP interface)",
                redact(&self.url)
            ));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("url {}: no host", redact(&self.url)))?;
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| format!("url {}: no port", redact(&self.url)))?;
        let endpoint = format!("{}://{host}:{port}/", parsed.scheme());
        let url_user = match parsed.username() {
            "" => None,
            u => Some(String::from_utf8_lossy(&percent_decode(u)).into_owned()),
        };
        let url_password = parsed
            .password()
            .map(|p| String::from_utf8_lossy(&percent_decode(p)).into_owned());
        if self.database.is_empty() {
            return Err("database: give the ClickHouse database to write into".into());
        }
        let template = self.table.unwrap_or_else(|| "{table}".to_string());
        if !template.contains("{table}") {
            return Err(format!(
                "table {template:?}: the template must contain {{table}}"
            ));
        }
        let selection = TableSelection::from_setting(self.tables.as_deref())
            .map_err(|e| format!("tables: {e}"))?;
        let count = |name: &str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(format!("{name}: must be at least 1")),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let timeout = match self.timeout {
            Some(d) if d.is_zero() => return Err("timeout: must be longer than zero".into()),
            Some(d) => d,
            None => Duration::from_secs(60),
        };
        let tls_ca = match &self.tls_ca_file {
            None => None,
            Some(_) if parsed.scheme() != "https" => {
                return Err("tls_ca_file: TLS needs an https:// URL".into())
            }
            Some(p) => {
                Some(std::fs::read(p).map_err(|e| format!("tls_ca_file {}: {e}", p.display()))?)
            }
        };
        let compression = match self.compression.as_deref() {
            None if is_loopback(&parsed) => Compression::None,
            None | Some("gzip") => Compression::Gzip,
            Some("none") => Compression::None,
            Some(other) => {
                return Err(format!(
                    "compression {other:?}: expected \"gzip\" or \"none\""
                ))
            }
        };
        Ok(Settings {
            endpoint,
            user: self.user.or(url_user).unwrap_or_else(|| "default".into()),
            password: self.password.or(url_password),
            database: self.database,
            selection,
            table: template,
            max_rows: count("max_rows", self.max_rows, 100_000)?,
            max_bytes: count("max_bytes", self.max_bytes, 16 << 20)?,
            max_delay: self.max_delay.unwrap_or(Duration::from_millis(200)),
            concurrency: count("concurrency", self.concurrency, 2)?,
            compression,
            timeout,
            tls_ca,
        })
    }
}

impl fmt::Debug for ClickHouseSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseSinkConfig")
            .field("url", &redact(&self.url))
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("database", &self.database)
            .field("tables", &self.tables)
            .field("table", &self.table)
            .field("max_rows", &self.max_rows)
            .field("max_bytes", &self.max_bytes)
            .field("max_delay", &self.max_delay)
            .field("concurrency", &self.concurrency)
            .field("compression", &self.compression)
            .field("timeout", &self.timeout)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("endpoint", &self.endpoint)
            .field("user", &self.user)
            .field("database", &self.database)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn parse(text: &str) -> Result<Settings, String> {
        let c: ClickHouseSinkConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate()
    }

    #[test]
    fn takes_credentials_from_the_url_and_hides_them() {
        let s = parse("url = \"http://bob:s%40cret@127.0.0.1:8123\"\ndatabase = \"shop\"").unwrap();
        assert_eq!(s.endpoint, "http://127.0.0.1:8123/");
        assert_eq!(s.user, "bob");
        assert_eq!(s.password.as_deref(), Some("s@cret"));
        assert!(!format!("{s:?}").contains("cret"));
        assert_eq!(
            redact("http://bob:s%40cret@h:1"),
            "http://bob:***@h:1".to_string()
        );
    }

    #[test]
    fn names_the_wrong_key() {
        let e = parse("url = \"redis://h:1\"\ndatabase = \"d\"").unwrap_err();
        assert!(e.starts_with("url "), "{e}");
        let e = parse("url = \"http://h:1\"\ndatabase = \"d\"\nmax_rows = 0").unwrap_err();
        assert!(e.starts_with("max_rows"), "{e}");
        let e = parse("url = \"http://h:1\"\ndatabase = \"d\"\nbogus = 1").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e = parse("url = \"http://h:1\"\ndatabase = \"d\"\ntable = \"x\"").unwrap_err();
        assert!(e.starts_with("table"), "{e}");
        let e =
            parse("url = \"http://h:1\"\ndatabase = \"d\"\ncompression = \"lzma\"").unwrap_err();
        assert!(e.starts_with("compression"), "{e}");
    }

    #[test]
    fn compresses_unless_the_server_is_local() {
        let at = |url: &str| parse(&format!("url = \"{url}\"\ndatabase = \"d\"")).unwrap();
        assert_eq!(at("http://127.0.0.1:8123").compression, Compression::None);
        assert_eq!(at("http://localhost:8123").compression, Compression::None);
        assert_eq!(
            at("https://ch.example.com:8443").compression,
            Compression::Gzip
        );
        let s = parse("url = \"http://h:1\"\ndatabase = \"d\"\ncompression = \"none\"").unwrap();
        assert_eq!(s.compression, Compression::None);
    }

    #[test]
    fn renders_table_names() {
        let s =
            parse("url = \"http://h:1\"\ndatabase = \"d\"\ntable = \"{schema}_{table}\"").unwrap();
        assert_eq!(
            s.table_name(&TableId::new("public", "orders")),
            "public_orders"
        );
    }
}

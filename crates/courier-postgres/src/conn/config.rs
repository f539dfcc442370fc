//! Where and how to connect to PostgreSQL: parsed once from a URL (or a
//! libpq `key=value` string) into a [`PgConfig`] that cannot be invalid.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::{PgError, Secret};

/// How a connection uses TLS; the same meanings as libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it, without verifying the certificate;
    /// fall back to plain text when the server has no TLS.
    Prefer,
    /// Always use TLS, without verifying the certificate (libpq's meaning).
    Require,
    /// Always use TLS and verify the certificate chain, not the host name.
    VerifyCa,
    /// Always use TLS, verify the certificate chain and that it names the host.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling: `disable`, `prefer`, `require`, `verify-ca`, `verify-full`.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = PgError;

    fn from_str(s: &str) -> Result<SslMode, PgError> {
        match s {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            "allow" => Err(PgError::config(
                "sslmode",
                "`allow` is not supported; use `prefer` or `disable`",
            )),
            other => Err(PgError::config(
                "sslmode",
                format!(
                    "unknown value {other:?}; expected disable, prefer, require, verify-ca or verify-full"
                ),
            )),
        }
    }
}

/// Validated connection settings for one PostgreSQL server.
///
/// `Debug` never shows the password; use [`PgConfig::redacted`] to show the
/// settings to a user.
#[derive(Clone, Debug)]
pub struct PgConfig {
    /// Host name or IP address (TCP only).
    pub host: String,
    /// TCP port, 5432 unless given.
    pub port: u16,
    /// Role to log in as.
    pub user: String,
    /// Password, when the server asks for one.
    pub password: Option<Secret>,
    /// Database to connect to; defaults to the user name, like libpq.
    pub dbname: String,
    /// TLS policy; `prefer` unless given, like libpq.
    pub sslmode: SslMode,
    /// PEM file with the root certificate(s) to trust for `verify-ca` and
    /// `verify-full`; the system's roots when absent.
    pub sslrootcert: Option<PathBuf>,
    /// Shown in `pg_stat_activity` / `pg_stat_replication`; `courier` unless given.
    pub application_name: String,
    /// Limit on TCP connect, TLS and authentication together; 10 s unless given.
    pub connect_timeout: Duration,
}

const DEFAULT_PORT: u16 = 5432;
const DEFAULT_APPLICATION_NAME: &str = "courier";
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings accepted both as URL query parameters and as conninfo keys.
const SUPPORTED_KEYS: &str =
    "host, port, user, password, dbname, sslmode, sslrootcert, application_name, connect_timeout";

/// Settings gathered before defaults and validation are applied.
#[derive(Default)]
struct Draft {
    host: Option<String>,
    port: Option<String>,
    user: Option<String>,
    password: Option<String>,
    dbname: Option<String>,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    application_name: Option<String>,
    connect_timeout: Option<String>,
}

impl Draft {
    fn set(&mut self, key: &str, value: String) -> Result<(), PgError> {
        let slot = match key {
            "host" => &mut self.host,
            "port" => &mut self.port,
            "user" => &mut self.user,
            "password" => &mut self.password,
            "dbname" => &mut self.dbname,
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "application_name" => &mut self.application_name,
            "connect_timeout" => &mut self.connect_timeout,
            other => {
                return Err(PgError::config(
                    other,
                    format!("unknown connection parameter; supported: {SUPPORTED_KEYS}"),
                ))
            }
        };
        *slot = Some(value);
        Ok(())
    }

    fn finish(self) -> Result<PgConfig, PgError> {
        let host = self.host.filter(|h| !h.is_empty()).ok_or_else(|| {
            PgError::config("host", "missing; give the server's host name or IP address")
        })?;
        if host.starts_with('/') {
            return Err(PgError::config(
                "host",
                "Unix-domain sockets are not supported; use a TCP host such as 127.0.0.1",
            ));
        }
        let port = match self.port.filter(|p| !p.is_empty()) {
            None => DEFAULT_PORT,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                PgError::config("port", format!("{p:?} is not a TCP port number"))
            })?,
        };
        let user = self.user.filter(|u| !u.is_empty()).ok_or_else(|| {
            PgError::config(
                "user",
                "missing; give the role to log in as, e.g. postgres://courier@host/db",
            )
        })?;
        let dbname = self
            .dbname
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| user.clone());
        let sslmode = match self.sslmode {
            None => SslMode::Prefer,
            Some(s) => s.parse()?,
        };
        let connect_timeout = match self.connect_timeout {
            None => DEFAULT_CONNECT_TIMEOUT,
            Some(s) => match s.parse::<u64>() {
                Ok(0) | Err(_) => {
                    return Err(PgError::config(
                        "connect_timeout",
                        format!("{s:?} is not a positive number of seconds"),
                    ))
                }
                Ok(secs) => Duration::from_secs(secs),
            },
        };
        Ok(PgConfig {
            host,
            port,
            user,
            password: self.password.map(Secret::new),
            dbname,
            sslmode,
            sslrootcert: self
                .sslrootcert
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            application_name: self
                .application_name
                .unwrap_or_else(|| DEFAULT_APPLICATION_NAME.to_string()),
            connect_timeout,
        })
    }
}

impl PgConfig {
    /// Parses `postgres://user:password@host:port/dbname?sslmode=...`
    /// (`postgresql://` too). Query parameters: `sslmode`, `sslrootcert`,
    /// `application_name`, `connect_timeout` (seconds), and `host`, `port`,
    /// `user`, `password`, `dbname` overriding the URL's parts. Unknown
    /// parameters are errors, and every error names the part at fault.
    pub fn from_url(s: &str) -> Result<PgConfig, PgError> {
        let url = url::Url::parse(s).map_err(|e| {
            PgError::config(
                "url",
                format!(
                    "not a valid URL ({e}); expected postgres://user:password@host:port/dbname"
                ),
            )
        })?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(PgError::config(
                "url",
                format!(
                    "scheme {:?} is not postgres:// or postgresql://",
                    url.scheme()
                ),
            ));
        }
        let mut draft = Draft {
            host: url
                .host_str()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string()),
            port: url.port().map(|p| p.to_string()),
            user: Some(decode("user", url.username())?),
            password: url.password().map(|p| decode("password", p)).transpose()?,
            dbname: Some(decode("dbname", url.path().trim_start_matches('/'))?),
            ..Draft::default()
        };
        for (key, value) in url.query_pairs() {
            draft.set(&key, value.into_owned())?;
        }
        draft.finish()
    }

    /// Parses a libpq `key=value` connection string, e.g.
    /// `host=127.0.0.1 port=5432 user=courier password='s e cret' dbname=shop`.
    pub fn from_conninfo(s: &str) -> Result<PgConfig, PgError> {
        let mut draft = Draft::default();
        let mut chars = s.chars().peekable();
        loop {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            if chars.peek().is_none() {
                break;
            }
            let key: String =
                std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            if chars.next() != Some('=') {
                return Err(PgError::config(
                    &key,
                    "expected `key=value` (missing `=`) in the connection string",
                ));
            }
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            let mut value = String::new();
            if chars.next_if_eq(&'\'').is_some() {
                loop {
                    match chars.next() {
                        None => return Err(PgError::config(&key, "unterminated quoted value")),
                        Some('\'') => break,
                        Some('\\') => value.extend(chars.next()),
                        Some(c) => value.push(c),
                    }
                }
            } else {
                while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                    if c == '\\' {
                        value.extend(chars.next());
                    } else {
                        value.push(c);
                    }
                }
            }
            draft.set(&key, value)?;
        }
        draft.finish()
    }

    /// Parses either form: a URL when it starts with `postgres://` or
    /// `postgresql://`, a conninfo string otherwise.
    pub fn parse(s: &str) -> Result<PgConfig, PgError> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            PgConfig::from_url(s)
        } else {
            PgConfig::from_conninfo(s)
        }
    }

    /// The settings as a URL with the password replaced by `***`, safe to
    /// log or show to a user.
    pub fn redacted(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let mut url = match url::Url::parse(&format!("postgres://{host}:{}/", self.port)) {
            Ok(url) => url,
            Err(_) => return format!("postgres://{}:{}/{}", self.host, self.port, self.dbname),
        };
        // Setting parts of a URL with a host cannot fail.
        let _ = url.set_username(&self.user);
        if self.password.is_some() {
            let _ = url.set_password(Some("***"));
        }
        url.set_path(&self.dbname);
        url.query_pairs_mut()
            .append_pair("sslmode", self.sslmode.as_str());
        if let Some(root) = &self.sslrootcert {
            url.query_pairs_mut()
                .append_pair("sslrootcert", &root.to_string_lossy());
        }
        url.query_pairs_mut()
            .append_pair("application_name", &self.application_name);
        // `set_password` percent-encodes `*`; show the plain placeholder.
        url.to_string().replacen("%2A%2A%2A@", "***@", 1)
    }

    /// `host:port`, for error messages.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn decode(key: &str, raw: &str) -> Result<String, PgError> {
    url::form_urlencoded::parse(format!("x={}", raw.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| PgError::config(key, "could not be percent-decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_url() {
        let cfg = PgConfig::from_url(
            "postgres://cour%40ier:p%2Fss+w@db.example:6543/shop?sslmode=verify-full&sslrootcert=/tmp/ca.pem&application_name=c1&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(cfg.host, "db.example");
        assert_eq!(cfg.port, 6543);
        assert_eq!(cfg.user, "cour@ier");
        assert_eq!(cfg.password.as_ref().map(Secret::expose), Some("p/ss+w"));
        assert_eq!(cfg.dbname, "shop");
        assert_eq!(cfg.sslmode, SslMode::VerifyFull);
        assert_eq!(cfg.sslrootcert, Some(PathBuf::from("/tmp/ca.pem")));
        assert_eq!(cfg.application_name, "c1");
        assert_eq!(cfg.connect_timeout, Duration::from_secs(3));
    }

    #[test]
    fn applies_libpq_defaults() {
        let cfg = PgConfig::from_url("postgresql://courier@[::1]").unwrap();
        assert_eq!(cfg.host, "::1");
        assert_eq!(cfg.port, 5432);
        assert_eq!(cfg.dbname, "courier");
        assert_eq!(cfg.sslmode, SslMode::Prefer);
        assert!(cfg.password.is_none());
        assert_eq!(cfg.addr(), "[::1]:5432");
    }

    #[test]
    fn errors_name_the_setting() {
        let err = |s: &str| PgConfig::from_url(s).unwrap_err().to_string();
        assert!(err("postgres://u@h/db?sslmode=strict").contains("`sslmode`"));
        assert!(err("postgres://u@h/db?colour=blue").contains("`colour`"));
        assert!(err("mysql://u@h/db").contains("scheme"));
        assert!(err("postgres://h/db").contains("`user`"));
        assert!(err("postgres://u@h/db?connect_timeout=x").contains("`connect_timeout`"));
    }

    #[test]
    fn debug_and_redacted_hide_the_password() {
        let cfg = PgConfig::from_url("postgres://courier:hunter2@127.0.0.1:55432/shop").unwrap();
        let debug = format!("{cfg:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        let shown = cfg.redacted();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.starts_with("postgres://courier:***@127.0.0.1:55432/shop?sslmode=prefer"),
            "{shown}"
        );
    }

    #[test]
    fn parses_conninfo() {
        let cfg = PgConfig::parse(
            "host=127.0.0.1 port = 5433 user=courier password='it''s' dbname=shop sslmode=disable",
        );
        // libpq escapes quotes with a backslash, not by doubling.
        assert!(cfg.is_err());
        let cfg = PgConfig::parse(
            r"host=127.0.0.1 port = 5433 user=courier password='it\'s a secret' dbname=shop sslmode=disable",
        )
        .unwrap();
        assert_eq!(cfg.port, 5433);
        assert_eq!(
            cfg.password.as_ref().map(Secret::expose),
            Some("it's a secret")
        );
        assert_eq!(cfg.sslmode, SslMode::Disable);
    }
}

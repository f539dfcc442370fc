//! Where and how to connect to PostgreSQL: parsed once from a URL (or a
//! libpq `key=value` string) into a [`PgConfig`] that cannot be invalid.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::target::TargetSessionAttrs;
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

/// One server of a connection's host list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostAddr {
    /// Host name or IP address (TCP only).
    pub host: String,
    /// TCP port, 5432 unless given.
    pub port: u16,
}

impl fmt::Display for HostAddr {
    /// `host:port`, with an IPv6 address in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Validated connection settings for one PostgreSQL server, or for several
/// tried in order (libpq's multi-host URLs, `target_session_attrs`).
///
/// `Debug` never shows the password; use [`PgConfig::redacted`] to show the
/// settings to a user.
#[derive(Clone, Debug)]
pub struct PgConfig {
    /// The servers to try, in order; never empty.
    hosts: Vec<HostAddr>,
    /// Which kind of server a connection wants; `any` unless given.
    pub target_session_attrs: TargetSessionAttrs,
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
    /// Limit on TCP connect, TLS and authentication together, per host;
    /// 10 s unless given.
    pub connect_timeout: Duration,
}

const DEFAULT_PORT: u16 = 5432;
const DEFAULT_APPLICATION_NAME: &str = "courier";
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings accepted both as URL query parameters and as conninfo keys.
const SUPPORTED_KEYS: &str = "host, port, user, password, dbname, sslmode, sslrootcert, \
     application_name, connect_timeout, target_session_attrs";

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
    target_session_attrs: Option<String>,
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
            "target_session_attrs" => &mut self.target_session_attrs,
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
        let hosts = host_list(self.host.as_deref(), self.port.as_deref())?;
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
        let target_session_attrs = match self.target_session_attrs.filter(|t| !t.is_empty()) {
            None => TargetSessionAttrs::Any,
            Some(t) => t.parse()?,
        };
        Ok(PgConfig {
            hosts,
            target_session_attrs,
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

/// The hosts of a comma-separated `host` list with their ports: `port` is
/// one port for every host or one per host (an empty entry is 5432).
fn host_list(host: Option<&str>, port: Option<&str>) -> Result<Vec<HostAddr>, PgError> {
    let names: Vec<&str> = host.unwrap_or_default().split(',').collect();
    if names.iter().any(|h| h.is_empty()) {
        return Err(PgError::config(
            "host",
            "missing; give the server's host name or IP address (a list of hosts is separated by commas)",
        ));
    }
    if let Some(socket) = names.iter().find(|h| h.starts_with('/')) {
        return Err(PgError::config(
            "host",
            format!(
                "{socket}: Unix-domain sockets are not supported; use a TCP host such as 127.0.0.1"
            ),
        ));
    }
    let ports: Vec<&str> = port.unwrap_or_default().split(',').collect();
    if ports.len() != 1 && ports.len() != names.len() {
        return Err(PgError::config(
            "port",
            format!(
                "{} ports for {} hosts; give one port for all hosts or one per host",
                ports.len(),
                names.len()
            ),
        ));
    }
    let parse_port = |p: &str| match p {
        "" => Ok(DEFAULT_PORT),
        p => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| PgError::config("port", format!("{p:?} is not a TCP port number"))),
    };
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or_default();
            Ok(HostAddr {
                host: name.to_string(),
                port: parse_port(port)?,
            })
        })
        .collect()
}

/// The hosts of a URL, each with its port as written (empty when absent).
type HostEntries = Vec<(String, String)>;

/// A URL's authority split libpq's way, since a list of hosts is not a URL
/// host: `user:password@h1:p1,[::1]:p2` → (`user:password`, [(`h1`, `p1`),
/// (`::1`, `p2`)]).
fn split_authority(authority: &str) -> Result<(Option<&str>, HostEntries), PgError> {
    let (userinfo, hostlist) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let mut hosts = Vec::new();
    if hostlist.is_empty() {
        return Ok((userinfo, hosts));
    }
    for entry in hostlist.split(',') {
        let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
            let (v6, after) = rest.split_once(']').ok_or_else(|| {
                PgError::config(
                    "host",
                    format!("{entry:?} opens an IPv6 address with [ but has no ]"),
                )
            })?;
            let port = match after {
                "" => "",
                p => p.strip_prefix(':').ok_or_else(|| {
                    PgError::config("host", format!("{entry:?}: expected :PORT after the ]"))
                })?,
            };
            (v6.to_string(), port.to_string())
        } else {
            match entry.split_once(':') {
                Some((h, p)) => (decode("host", h)?, p.to_string()),
                None => (decode("host", entry)?, String::new()),
            }
        };
        hosts.push((host, port));
    }
    Ok((userinfo, hosts))
}

impl PgConfig {
    /// Parses `postgres://user:password@host:port/dbname?sslmode=...`
    /// (`postgresql://` too), or with several hosts as libpq does:
    /// `postgres://user@h1:p1,h2:p2/dbname?target_session_attrs=read-write`.
    /// Query parameters: `sslmode`, `sslrootcert`, `application_name`,
    /// `connect_timeout` (seconds), `target_session_attrs`, and `host`,
    /// `port`, `user`, `password`, `dbname` overriding the URL's parts
    /// (`host` and `port` as comma-separated lists). Unknown parameters are
    /// errors, and every error names the part at fault.
    pub fn from_url(s: &str) -> Result<PgConfig, PgError> {
        // The URL parser takes one host: parse the rest with a placeholder
        // host and the list on its own.
        let (scheme, rest) = s.split_once("://").unwrap_or(("", s));
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let (userinfo, hosts) = split_authority(authority)?;
        let single = match userinfo {
            Some(u) => format!("{scheme}://{u}@placeholder{tail}"),
            None => format!("{scheme}://placeholder{tail}"),
        };
        let url = url::Url::parse(&single).map_err(|e| {
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
        let (names, ports): (Vec<String>, Vec<String>) = hosts.into_iter().unzip();
        let mut draft = Draft {
            host: Some(names.join(",")),
            port: Some(ports.join(",")),
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

    /// The servers a connection tries, in order (at least one).
    pub fn hosts(&self) -> &[HostAddr] {
        &self.hosts
    }

    /// The same settings for `host` alone, taken whatever its role
    /// (`target_session_attrs=any`): to look at one server of a list.
    pub fn only(&self, host: &HostAddr) -> PgConfig {
        PgConfig {
            hosts: vec![host.clone()],
            target_session_attrs: TargetSessionAttrs::Any,
            ..self.clone()
        }
    }

    /// The settings as a URL with the password replaced by `***`, safe to
    /// log or show to a user.
    pub fn redacted(&self) -> String {
        let mut url = match url::Url::parse("postgres://placeholder/") {
            Ok(url) => url,
            Err(_) => return format!("postgres://{}/{}", self.addr(), self.dbname),
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
        if self.target_session_attrs != TargetSessionAttrs::Any {
            url.query_pairs_mut()
                .append_pair("target_session_attrs", self.target_session_attrs.as_str());
        }
        // `set_password` percent-encodes `*`; show the plain placeholder.
        url.to_string().replacen("%2A%2A%2A@", "***@", 1).replacen(
            "@placeholder/",
            &format!("@{}/", self.addr()),
            1,
        )
    }

    /// `host:port`, or the comma-separated list of them, for messages.
    pub fn addr(&self) -> String {
        let hosts: Vec<String> = self.hosts.iter().map(ToString::to_string).collect();
        hosts.join(",")
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

    fn host(name: &str, port: u16) -> HostAddr {
        HostAddr {
            host: name.to_string(),
            port,
        }
    }

    #[test]
    fn parses_a_multi_host_url() {
        let cfg = PgConfig::from_url(
            "postgres://courier:s%40cret@10.0.0.1:5433,db2,[::1]:6000/shop?target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(
            cfg.hosts(),
            [host("10.0.0.1", 5433), host("db2", 5432), host("::1", 6000)]
        );
        assert_eq!(cfg.target_session_attrs, TargetSessionAttrs::ReadWrite);
        assert_eq!(cfg.user, "courier");
        assert_eq!(cfg.password.as_ref().map(Secret::expose), Some("s@cret"));
        assert_eq!(cfg.dbname, "shop");
        assert_eq!(cfg.addr(), "10.0.0.1:5433,db2:5432,[::1]:6000");
        let shown = cfg.redacted();
        assert!(!shown.contains("cret"), "{shown}");
        assert!(
            shown.starts_with("postgres://courier:***@10.0.0.1:5433,db2:5432,[::1]:6000/shop?"),
            "{shown}"
        );
        assert!(
            shown.ends_with("&target_session_attrs=read-write"),
            "{shown}"
        );
        // What `redacted` shows parses back to the same hosts.
        assert_eq!(PgConfig::from_url(&shown).unwrap().hosts(), cfg.hosts());

        let only = cfg.only(&cfg.hosts()[1]);
        assert_eq!(only.hosts(), [host("db2", 5432)]);
        assert_eq!(only.target_session_attrs, TargetSessionAttrs::Any);
        assert_eq!(only.dbname, "shop");
    }

    #[test]
    fn host_lists_in_parameters_and_conninfo() {
        let cfg = PgConfig::parse("host=a,b port=1,2 user=u target_session_attrs=primary").unwrap();
        assert_eq!(cfg.hosts(), [host("a", 1), host("b", 2)]);
        assert_eq!(cfg.target_session_attrs, TargetSessionAttrs::Primary);
        let cfg = PgConfig::parse("host=a,b port=7 user=u").unwrap();
        assert_eq!(cfg.hosts(), [host("a", 7), host("b", 7)]);
        let cfg = PgConfig::from_url("postgres://u@x/db?host=a,b&port=3").unwrap();
        assert_eq!(cfg.hosts(), [host("a", 3), host("b", 3)]);
        for t in ["any", "read-only", "standby", "prefer-standby"] {
            let cfg = PgConfig::from_url(&format!("postgres://u@a,b/db?target_session_attrs={t}"))
                .unwrap();
            assert_eq!(cfg.target_session_attrs.as_str(), t);
        }
    }

    #[test]
    fn bad_host_lists_name_the_setting() {
        let err = |s: &str| PgConfig::parse(s).unwrap_err().to_string();
        assert!(err("postgres://u@a,,b/db").contains("`host`"));
        assert!(err("postgres://u@a:1,b:x/db").contains("`port`"));
        assert!(err("postgres://u@[::1/db").contains("`host`"));
        assert!(err("host=a,b,c port=1,2 user=u").contains("3 hosts"));
        assert!(
            err("postgres://u@a,b/db?target_session_attrs=rw").contains("`target_session_attrs`")
        );
        assert!(err("host=a,/tmp user=u").contains("Unix-domain"));
    }

    #[test]
    fn parses_a_full_url() {
        let cfg = PgConfig::from_url(
            "postgres://cour%40ier:p%2Fss+w@db.example:6543/shop?sslmode=verify-full&sslrootcert=/tmp/ca.pem&application_name=c1&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(cfg.hosts(), [host("db.example", 6543)]);
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
        assert_eq!(cfg.hosts(), [host("::1", 5432)]);
        assert_eq!(cfg.target_session_attrs, TargetSessionAttrs::Any);
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
        assert_eq!(cfg.hosts(), [host("127.0.0.1", 5433)]);
        assert_eq!(
            cfg.password.as_ref().map(Secret::expose),
            Some("it's a secret")
        );
        assert_eq!(cfg.sslmode, SslMode::Disable);
    }
}

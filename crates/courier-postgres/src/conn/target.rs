//! Which of several hosts a connection lands on: libpq's
//! `target_session_attrs`. Hosts are tried in the order given; a server
//! whose role does not fit is left for the next one, so that after a
//! failover a reconnect finds the promoted standby.

use std::fmt;
use std::future::Future;
use std::str::FromStr;

use super::{HostAddr, PgConfig, PgError};

/// What kind of server a connection wants; the same meanings as libpq's
/// `target_session_attrs`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TargetSessionAttrs {
    /// Any server that accepts the connection (the default).
    #[default]
    Any,
    /// A server that accepts writes: `transaction_read_only` is off.
    ReadWrite,
    /// A server that refuses writes: `transaction_read_only` is on.
    ReadOnly,
    /// A server not in recovery.
    Primary,
    /// A server in recovery (a hot standby).
    Standby,
    /// A standby when one of the hosts is, else any server.
    PreferStandby,
}

impl TargetSessionAttrs {
    /// The libpq spelling: `any`, `read-write`, `read-only`, `primary`,
    /// `standby`, `prefer-standby`.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetSessionAttrs::Any => "any",
            TargetSessionAttrs::ReadWrite => "read-write",
            TargetSessionAttrs::ReadOnly => "read-only",
            TargetSessionAttrs::Primary => "primary",
            TargetSessionAttrs::Standby => "standby",
            TargetSessionAttrs::PreferStandby => "prefer-standby",
        }
    }

    /// Whether a server's role decides if it fits (everything but `any`).
    pub(crate) fn needs_role(self) -> bool {
        self != TargetSessionAttrs::Any
    }

    /// Whether a server in `role` is what this asks for. `prefer-standby`
    /// accepts only a standby here; its fallback is [`connect_first`]'s.
    fn accepts(self, role: ServerRole) -> bool {
        match self {
            TargetSessionAttrs::Any => true,
            TargetSessionAttrs::ReadWrite => !role.read_only,
            TargetSessionAttrs::ReadOnly => role.read_only,
            TargetSessionAttrs::Primary => !role.in_recovery,
            TargetSessionAttrs::Standby | TargetSessionAttrs::PreferStandby => role.in_recovery,
        }
    }
}

impl fmt::Display for TargetSessionAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TargetSessionAttrs {
    type Err = PgError;

    fn from_str(s: &str) -> Result<TargetSessionAttrs, PgError> {
        Ok(match s {
            "any" => TargetSessionAttrs::Any,
            "read-write" => TargetSessionAttrs::ReadWrite,
            "read-only" => TargetSessionAttrs::ReadOnly,
            "primary" => TargetSessionAttrs::Primary,
            "standby" => TargetSessionAttrs::Standby,
            "prefer-standby" => TargetSessionAttrs::PreferStandby,
            other => {
                return Err(PgError::config(
                    "target_session_attrs",
                    format!(
                        "unknown value {other:?}; expected any, read-write, read-only, primary, standby or prefer-standby"
                    ),
                ))
            }
        })
    }
}

/// What a server said about itself once connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerRole {
    /// `pg_is_in_recovery()`: a standby.
    pub in_recovery: bool,
    /// `transaction_read_only`: the session may not write.
    pub read_only: bool,
}

impl ServerRole {
    /// The query that reads a role, and its one row's two text values.
    pub(crate) const QUERY: &'static str =
        "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')";

    /// Reads the answer to [`ServerRole::QUERY`] (`t`/`f`, `on`/`off`).
    pub(crate) fn from_text(in_recovery: Option<&str>, read_only: Option<&str>) -> Option<Self> {
        let flag = |v: Option<&str>| match v? {
            "t" | "true" | "on" => Some(true),
            "f" | "false" | "off" => Some(false),
            _ => None,
        };
        Some(ServerRole {
            in_recovery: flag(in_recovery)?,
            read_only: flag(read_only)?,
        })
    }
}

impl fmt::Display for ServerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.in_recovery, self.read_only) {
            (true, _) => f.write_str("a standby (in recovery, read-only)"),
            (false, true) => f.write_str("a primary whose sessions are read-only"),
            (false, false) => f.write_str("a primary (read-write)"),
        }
    }
}

/// Why one host was passed over.
#[derive(Debug)]
pub enum HostRejection {
    /// Connecting failed.
    Failed(Box<PgError>),
    /// The server answered, but its role is not what was asked for.
    Unfit(ServerRole),
}

/// One host tried, and why it was not used.
#[derive(Debug)]
pub struct HostAttempt {
    /// `host:port`.
    pub addr: String,
    /// What went wrong there.
    pub rejection: HostRejection,
}

impl fmt::Display for HostAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rejection {
            HostRejection::Failed(e) => write!(f, "{}: {e}", self.addr),
            HostRejection::Unfit(role) => write!(f, "{}: is {role}", self.addr),
        }
    }
}

impl HostAttempt {
    /// Whether trying again later can find this host usable: it was
    /// unreachable or restarting, or its role may change (a promotion).
    pub fn is_retriable(&self) -> bool {
        match &self.rejection {
            HostRejection::Failed(e) => e.is_retriable(),
            HostRejection::Unfit(_) => true,
        }
    }
}

/// Connects to the first of `cfg`'s hosts, in order, that accepts the
/// connection and fits `cfg.target_session_attrs`. `open` connects to one
/// host and, when asked (`true`), reads its role. With one host and
/// `any`, its error is returned as it is; otherwise the error names every
/// host tried and why it was passed over.
pub(crate) async fn connect_first<'a, T, F, Fut>(
    cfg: &'a PgConfig,
    mut open: F,
) -> Result<T, PgError>
where
    F: FnMut(&'a HostAddr, bool) -> Fut,
    Fut: Future<Output = Result<(T, Option<ServerRole>), PgError>>,
{
    let target = cfg.target_session_attrs;
    let mut attempts = Vec::new();
    // prefer-standby: the first host that answered, in case none is a standby.
    let mut fallback = None;
    for host in cfg.hosts() {
        match open(host, target.needs_role()).await {
            Ok((conn, None)) => return Ok(conn),
            Ok((conn, Some(role))) if target.accepts(role) => return Ok(conn),
            Ok((conn, Some(role))) => {
                if target == TargetSessionAttrs::PreferStandby && fallback.is_none() {
                    fallback = Some(conn);
                }
                attempts.push(HostAttempt {
                    addr: host.to_string(),
                    rejection: HostRejection::Unfit(role),
                });
            }
            Err(e) if cfg.hosts().len() == 1 && !target.needs_role() => return Err(e),
            Err(e) => attempts.push(HostAttempt {
                addr: host.to_string(),
                rejection: HostRejection::Failed(Box::new(e)),
            }),
        }
    }
    if let Some(conn) = fallback {
        return Ok(conn);
    }
    Err(PgError::NoHostFits { target, attempts })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: ServerRole = ServerRole {
        in_recovery: false,
        read_only: false,
    };
    const STANDBY: ServerRole = ServerRole {
        in_recovery: true,
        read_only: true,
    };
    const READ_ONLY_PRIMARY: ServerRole = ServerRole {
        in_recovery: false,
        read_only: true,
    };

    #[test]
    fn each_target_accepts_its_roles() {
        use TargetSessionAttrs::*;
        assert!(Any.accepts(STANDBY) && Any.accepts(PRIMARY));
        assert!(ReadWrite.accepts(PRIMARY) && !ReadWrite.accepts(STANDBY));
        assert!(!ReadWrite.accepts(READ_ONLY_PRIMARY));
        assert!(ReadOnly.accepts(STANDBY) && ReadOnly.accepts(READ_ONLY_PRIMARY));
        assert!(Primary.accepts(READ_ONLY_PRIMARY) && !Primary.accepts(STANDBY));
        assert!(Standby.accepts(STANDBY) && !Standby.accepts(PRIMARY));
        assert!(PreferStandby.accepts(STANDBY) && !PreferStandby.accepts(PRIMARY));
    }

    #[test]
    fn parses_every_libpq_spelling() {
        for t in [
            TargetSessionAttrs::Any,
            TargetSessionAttrs::ReadWrite,
            TargetSessionAttrs::ReadOnly,
            TargetSessionAttrs::Primary,
            TargetSessionAttrs::Standby,
            TargetSessionAttrs::PreferStandby,
        ] {
            assert_eq!(t.as_str().parse::<TargetSessionAttrs>().unwrap(), t);
        }
        let err = "readwrite".parse::<TargetSessionAttrs>().unwrap_err();
        assert!(err.to_string().contains("`target_session_attrs`"), "{err}");
    }

    #[test]
    fn reads_a_role_from_text() {
        assert_eq!(ServerRole::from_text(Some("t"), Some("on")), Some(STANDBY));
        assert_eq!(ServerRole::from_text(Some("f"), Some("off")), Some(PRIMARY));
        assert_eq!(ServerRole::from_text(Some("x"), Some("off")), None);
        assert_eq!(ServerRole::from_text(None, Some("off")), None);
    }

    fn two_hosts(target: &str) -> PgConfig {
        PgConfig::from_url(&format!(
            "postgres://u@a:1,b:2/db?target_session_attrs={target}"
        ))
        .unwrap()
    }

    /// Connects to a pretend pair: `a` answers with `roles.0`, `b` with
    /// `roles.1` (`None`: refuses the connection); the host it got.
    async fn pick(
        target: &str,
        roles: (Option<ServerRole>, Option<ServerRole>),
    ) -> Result<String, PgError> {
        let cfg = two_hosts(target);
        connect_first(&cfg, |host, wants_role| async move {
            let role = if host.host == "a" { roles.0 } else { roles.1 };
            match role {
                Some(role) => Ok((host.host.clone(), wants_role.then_some(role))),
                None => Err(PgError::Io {
                    addr: host.to_string(),
                    source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
                }),
            }
        })
        .await
    }

    #[tokio::test]
    async fn hosts_are_tried_in_order_until_one_fits() {
        let got = pick("read-write", (Some(STANDBY), Some(PRIMARY))).await;
        assert_eq!(got.unwrap(), "b");
        let got = pick("read-write", (None, Some(PRIMARY))).await;
        assert_eq!(got.unwrap(), "b");
        let got = pick("any", (Some(STANDBY), Some(PRIMARY))).await;
        assert_eq!(got.unwrap(), "a");
        let got = pick("standby", (Some(PRIMARY), Some(STANDBY))).await;
        assert_eq!(got.unwrap(), "b");
        let got = pick("prefer-standby", (Some(PRIMARY), Some(STANDBY))).await;
        assert_eq!(got.unwrap(), "b");
        let got = pick("prefer-standby", (Some(PRIMARY), Some(PRIMARY))).await;
        assert_eq!(got.unwrap(), "a");
    }

    #[tokio::test]
    async fn the_error_names_every_host_and_why() {
        let err = pick("read-write", (None, Some(STANDBY))).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("target_session_attrs=read-write"), "{text}");
        assert!(
            text.contains("a:1: connection to PostgreSQL at a:1 failed"),
            "{text}"
        );
        assert!(text.contains("b:2: is a standby"), "{text}");
        // A standby may be promoted and a stopped server may start again.
        assert!(err.is_retriable(), "{text}");
        assert!(err.awaits_promotion(), "{text}");
        let err = pick("read-write", (None, None)).await.unwrap_err();
        assert!(err.is_retriable() && !err.awaits_promotion(), "{err}");
    }
}

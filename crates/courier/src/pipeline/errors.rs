//! Which failures Courier waits out and which stop it: one classification,
//! asked of every error in a failure's chain, so each library's own
//! `is_retriable` decides for its errors.

use courier_postgres::pgoutput::DecodeError;
use courier_postgres::snapshot::SnapshotError;
use courier_postgres::PgError;

/// PostgreSQL closed the replication stream without an error.
#[derive(Debug, thiserror::Error)]
#[error("PostgreSQL ended the replication stream")]
pub struct StreamEnded;

/// Whether trying again later can get past `e`: the server was unreachable,
/// restarting or overloaded, or closed the stream.
pub fn is_retriable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<PgError>()
            .is_some_and(PgError::is_retriable)
            || c.downcast_ref::<DecodeError>()
                .is_some_and(DecodeError::is_retriable)
            || c.downcast_ref::<SnapshotError>()
                .is_some_and(SnapshotError::is_retriable)
            || c.downcast_ref::<StreamEnded>().is_some()
    })
}

/// Whether `e` says a failover may be under way: no host fits
/// `target_session_attrs`, but one of them is a standby.
pub fn awaits_promotion(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<PgError>()
            .is_some_and(PgError::awaits_promotion)
    })
}

/// Whether a failed snapshot can be resumed under a new snapshot: any
/// retriable failure, or a table whose columns changed while it was copied
/// (undefined column or table, or a changed type: the new snapshot sees the
/// new shape).
pub fn snapshot_can_resume(e: &anyhow::Error) -> bool {
    is_retriable(e)
        || e.chain().any(|c| {
            c.downcast_ref::<PgError>()
                .is_some_and(|p| matches!(p.code(), Some("42703" | "42P01" | "42804")))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_chain_decides() {
        let ended = anyhow::Error::new(StreamEnded).context("read replication stream");
        assert!(is_retriable(&ended));
        let plain: anyhow::Result<()> = Err(anyhow::anyhow!("no such table")).context("resolve");
        assert!(!is_retriable(&plain.unwrap_err()));
        let refused = anyhow::Error::new(PgError::Protocol("bad message".into()));
        assert!(!snapshot_can_resume(&refused));
    }

    #[test]
    fn a_standby_among_unfit_hosts_means_a_failover_may_be_under_way() {
        use courier_postgres::conn::{HostAttempt, HostRejection, ServerRole, TargetSessionAttrs};
        let no_host = |in_recovery| PgError::NoHostFits {
            target: TargetSessionAttrs::ReadWrite,
            attempts: vec![HostAttempt {
                addr: "db2:5432".into(),
                rejection: HostRejection::Unfit(ServerRole {
                    in_recovery,
                    read_only: true,
                }),
            }],
        };
        let e = anyhow::Error::new(no_host(true)).context("open replication connection");
        assert!(is_retriable(&e) && awaits_promotion(&e));
        let e = anyhow::Error::new(no_host(false)).context("open replication connection");
        assert!(is_retriable(&e) && !awaits_promotion(&e));
    }
}

//! Small background tasks beside the stream: the heartbeat and the poller
//! that keeps the source's positions in the status fresh.

use std::time::{Duration, Instant};

use courier_core::Lsn;
use courier_postgres::PgConfig;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::SourceConfig;
use crate::status::Status;

/// Starts the heartbeat (when configured) and the position poller; they
/// stop at shutdown, or when the returned set is dropped.
pub fn spawn(
    source: &SourceConfig,
    pg: &PgConfig,
    status: &Status,
    shutdown: &watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    if let Some(every) = source.heartbeat {
        tasks.spawn(heartbeat(pg.clone(), every, shutdown.clone()));
    }
    tasks.spawn(poll_positions(
        pg.clone(),
        source.slot.clone(),
        status.clone(),
        shutdown.clone(),
    ));
    tasks
}

/// Emits a small WAL message now and then, so a slot whose tables are quiet
/// still sees traffic and its position keeps moving.
async fn heartbeat(pg: PgConfig, every: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    let mut client = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if client.is_none() {
            client = pg.connect().await.ok();
        }
        if let Some(c) = &client {
            if let Err(e) = c
                .execute(
                    "SELECT pg_logical_emit_message(false, 'courier.heartbeat', '')",
                    &[],
                )
                .await
            {
                tracing::debug!(error = %e, "heartbeat");
                client = None;
            }
        }
    }
}

/// Keeps the source's positions in the status fresh (for the API and metrics).
async fn poll_positions(
    pg: PgConfig,
    slot: String,
    status: Status,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut client = None;
    let mut last_warning = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if client.is_none() {
            client = pg.connect().await.ok();
        }
        let Some(c) = &client else { continue };
        let row = c
            .query_opt(
                "SELECT (SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1), \
                        (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                              ELSE pg_current_wal_lsn() END)::text, \
                        (SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1), \
                        (SELECT safe_wal_size FROM pg_replication_slots WHERE slot_name = $1), \
                        pg_size_bytes(current_setting('max_slot_wal_keep_size'))",
                &[&slot],
            )
            .await;
        match row {
            Ok(Some(r)) => {
                let parse = |s: Option<String>| s.and_then(|s| s.parse::<Lsn>().ok());
                status.set_source_positions(parse(r.get(0)), parse(r.get(1)));
                let (wal_status, safe, keep): (Option<String>, Option<i64>, i64) =
                    (r.get(2), r.get(3), r.get(4));
                if let Some(why) = slot_in_danger(wal_status.as_deref(), safe, keep) {
                    if last_warning.is_none_or(|t: Instant| t.elapsed() >= WARN_EVERY) {
                        tracing::warn!(slot = %slot, wal_status = wal_status.as_deref().unwrap_or(""),
                            safe_wal_bytes = safe.unwrap_or(-1), max_slot_wal_keep_size_bytes = keep,
                            "{why}: if it is invalidated, changes are lost to every store; let Courier catch up \
                             (is a store slow or down?) or raise max_slot_wal_keep_size");
                        last_warning = Some(Instant::now());
                    }
                }
                status.set_slot_safety(wal_status, safe);
            }
            Ok(None) => {}
            Err(_) => client = None,
        }
    }
}

/// How often the slot-danger warning repeats while it holds.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Why the slot is close to being invalidated, if it is: PostgreSQL says its
/// WAL goes at the next checkpoint, or less than a fifth of
/// `max_slot_wal_keep_size` is left.
fn slot_in_danger(
    wal_status: Option<&str>,
    safe_wal_bytes: Option<i64>,
    keep_bytes: i64,
) -> Option<String> {
    match (wal_status, safe_wal_bytes) {
        (Some("unreserved"), _) => Some(
            "PostgreSQL will remove WAL the slot still needs at its next checkpoint (wal_status = unreserved)".into(),
        ),
        (_, Some(safe)) if keep_bytes > 0 && safe < keep_bytes / 5 => Some(format!(
            "the slot is {} MB away from max_slot_wal_keep_size",
            safe.max(0) / (1 << 20)
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::slot_in_danger;

    #[test]
    fn a_slot_is_in_danger_near_its_limit_or_when_unreserved() {
        let gb = 1 << 30;
        assert!(slot_in_danger(Some("reserved"), None, -1).is_none());
        assert!(slot_in_danger(Some("reserved"), Some(gb / 2), gb).is_none());
        assert!(slot_in_danger(Some("extended"), Some(gb / 10), gb).is_some());
        assert!(slot_in_danger(Some("unreserved"), Some(0), gb).is_some());
    }
}

//! Small background tasks beside the stream: the heartbeat and the poller
//! that keeps the source's positions in the status fresh.

use std::time::Duration;

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
                        pg_current_wal_lsn()::text",
                &[&slot],
            )
            .await;
        match row {
            Ok(Some(r)) => {
                let parse = |s: Option<String>| s.and_then(|s| s.parse::<Lsn>().ok());
                status.set_source_positions(parse(r.get(0)), parse(r.get(1)));
            }
            Ok(None) => {}
            Err(_) => client = None,
        }
    }
}

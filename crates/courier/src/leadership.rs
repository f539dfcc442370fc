//! Which of several `courier run` processes with the same PostgreSQL source
//! captures it: the one holding a PostgreSQL advisory lock named after the
//! slot, on a session of its own. The others are standbys: they wait for the
//! lock, and the first to get it takes over once the slot is free. No
//! coordinator besides PostgreSQL is needed.
//!
//! The lock is released the moment PostgreSQL sees the leader's session end:
//! at once when the process dies (its socket closes), after the session's
//! TCP keepalives give up when its machine or network goes away. The slot
//! is the fence behind the lock: PostgreSQL lets one session stream from it
//! at a time, and a new leader starts only once the old one's is gone.

use std::time::{Duration, Instant};

use anyhow::Context;
use courier_postgres::PgConfig;
use tokio::sync::watch;

use crate::retry::Backoff;

/// How often a standby asks for the lock, and a leader checks its session.
const POLL: Duration = Duration::from_millis(500);
/// How long a new leader waits for the slot's previous consumer to go.
const SLOT_RELEASE_WAIT: Duration = Duration::from_secs(60);
/// A leader's session notices a vanished peer within about 5 + 2 × 3 s.
const SESSION_SETTINGS: &str =
    "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3";

/// The lock's key: the slot name's hash, the same in every Courier.
const LOCK_KEY_SQL: &str =
    "('x' || substr(md5('courier slot ' || $1::text), 1, 16))::bit(64)::bigint";

/// The lead of one slot, held on its own session until dropped.
pub struct Lead {
    pg: PgConfig,
    slot: String,
    client: tokio_postgres::Client,
}

/// What [`wait_for_lead`] ended with.
pub enum Outcome {
    /// This process leads; the slot is free.
    Leading(Box<Lead>),
    /// Shutdown was requested while waiting.
    Shutdown,
}

/// Waits until this process holds the lead of `slot`, calling `on_standby`
/// once if another process holds it first; then waits for the slot's
/// previous consumer to go. A first attempt that fails ends with its error
/// (a wrong URL or password is for a person to fix); a standby retries
/// later failures.
pub async fn wait_for_lead(
    pg: &PgConfig,
    slot: &str,
    mut shutdown: watch::Receiver<bool>,
    on_standby: impl FnOnce(),
) -> anyhow::Result<Outcome> {
    let mut on_standby = Some(on_standby);
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    let client = loop {
        if *shutdown.borrow() {
            return Ok(Outcome::Shutdown);
        }
        let wait = match try_lock(pg, slot).await {
            Ok(Some(client)) => break client,
            Ok(None) => {
                if let Some(f) = on_standby.take() {
                    tracing::info!(
                        slot,
                        "standby: another Courier leads this slot; taking over when it stops"
                    );
                    f();
                }
                backoff.reset();
                POLL
            }
            Err(e) if on_standby.is_some() => return Err(e),
            Err(e) => {
                let wait = backoff.next_delay();
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?wait, "could not ask PostgreSQL for the lead");
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    };
    if on_standby.is_none() {
        tracing::info!(slot, "took over the lead");
    }
    let lead = Lead {
        pg: pg.clone(),
        slot: slot.to_string(),
        client,
    };
    lead.wait_for_slot(shutdown).await
}

/// A session holding the lock of `slot`, or `None` when another holds it.
async fn try_lock(pg: &PgConfig, slot: &str) -> anyhow::Result<Option<tokio_postgres::Client>> {
    let client = pg
        .connect()
        .await
        .with_context(|| format!("connect to {}", pg.redacted()))?;
    client
        .batch_execute(SESSION_SETTINGS)
        .await
        .context("set the lead session's keepalives")?;
    let got: bool = client
        .query_one(
            &format!("SELECT pg_try_advisory_lock({LOCK_KEY_SQL})"),
            &[&slot],
        )
        .await
        .context("ask for the lead's advisory lock")?
        .get(0);
    Ok(got.then_some(client))
}

impl Lead {
    /// Waits until no session streams from the slot (a leader that just
    /// died may still hold it for a moment).
    async fn wait_for_slot(self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<Outcome> {
        let start = Instant::now();
        loop {
            let active: Option<i32> = self
                .client
                .query_opt(
                    "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                    &[&self.slot],
                )
                .await
                .context("look up the replication slot")?
                .and_then(|row| row.get(0));
            if active.is_none() || start.elapsed() > SLOT_RELEASE_WAIT {
                // Past the wait, preparing the run names the slot's consumer.
                return Ok(Outcome::Leading(Box::new(self)));
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => return Ok(Outcome::Shutdown),
            }
        }
    }

    /// Holds the lead: returns only when it is lost to another process,
    /// with the error that says so. When the lead's session fails (PostgreSQL
    /// restarting, the network), it asks for the lock again; the run goes on
    /// meanwhile, fenced by the slot.
    pub async fn hold(mut self) -> anyhow::Error {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        loop {
            tokio::time::sleep(POLL).await;
            let alive = tokio::time::timeout(
                Duration::from_secs(10),
                self.client.simple_query("SELECT 1"),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            if alive {
                continue;
            }
            tracing::warn!(slot = %self.slot, "lost the session that holds the lead; asking for it again");
            loop {
                match try_lock(&self.pg, &self.slot).await {
                    Ok(Some(client)) => {
                        tracing::info!(slot = %self.slot, "holds the lead again");
                        self.client = client;
                        backoff.reset();
                        break;
                    }
                    Ok(None) => {
                        return anyhow::anyhow!(
                            "another Courier took the lead of slot {} while this one had lost its session to PostgreSQL; \
                             stopping (start this one again to make it a standby)",
                            self.slot
                        )
                    }
                    Err(e) => {
                        let wait = backoff.next_delay();
                        tracing::warn!(error = %format!("{e:#}"), retry_in = ?wait, "could not ask PostgreSQL for the lead");
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
    }
}

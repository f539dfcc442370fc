use courier_core::Lsn;
use tokio_postgres::Client;

use super::SetupError;

/// A replication slot as PostgreSQL reports it.
#[derive(Clone, Debug)]
pub struct SlotInfo {
    pub confirmed_flush: Lsn,
    /// The pid of the walsender using it, if any.
    pub active_pid: Option<i32>,
    /// `reserved`, `extended`, `unreserved` (its WAL goes at the next
    /// checkpoint unless it catches up) or `lost`.
    pub wal_status: Option<String>,
}

/// The slot's state, or `None` when it does not exist. A slot of another
/// plugin or database, or one PostgreSQL invalidated, is an error naming
/// the fix.
pub async fn slot_info(client: &Client, slot: &str) -> Result<Option<SlotInfo>, SetupError> {
    let row = client
        .query_opt(
            "SELECT coalesce(plugin, ''), coalesce(database, ''), current_database(), \
                    coalesce(confirmed_flush_lsn, '0/0')::text, active_pid, wal_status \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(SetupError::query(format!(
            "look up replication slot {slot}"
        )))?;
    let Some(r) = row else { return Ok(None) };
    let (plugin, database, expected): (String, String, String) = (r.get(0), r.get(1), r.get(2));
    if plugin != "pgoutput" || database != expected {
        return Err(SetupError::ForeignSlot {
            slot: slot.to_string(),
            plugin,
            database,
            expected,
        });
    }
    let lsn: String = r.get(3);
    let wal_status: Option<String> = r.get(5);
    if wal_status.as_deref() == Some("lost") {
        return Err(SetupError::SlotLost {
            slot: slot.to_string(),
        });
    }
    Ok(Some(SlotInfo {
        confirmed_flush: lsn.parse().unwrap_or(Lsn::ZERO),
        active_pid: r.get(4),
        wal_status,
    }))
}

/// Drops the slot if it exists (used by tests and rebuilds).
pub async fn drop_slot(client: &Client, slot: &str) -> Result<(), SetupError> {
    client
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(SetupError::query(format!("drop replication slot {slot}")))?;
    Ok(())
}

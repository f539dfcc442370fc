use tokio_postgres::Client;

use super::SetupError;

/// Checks what logical replication needs before anything is created:
/// `wal_level = logical` and a role that may replicate.
pub async fn preflight(client: &Client) -> Result<(), SetupError> {
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'), current_user::text, \
                    (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)",
            &[],
        )
        .await
        .map_err(SetupError::query("read wal_level and role attributes"))?;
    let (wal_level, user, can_replicate): (String, String, Option<bool>) =
        (row.get(0), row.get(1), row.get(2));
    if wal_level != "logical" {
        return Err(SetupError::WalLevel(wal_level));
    }
    if can_replicate != Some(true) {
        return Err(SetupError::NoReplication(user));
    }
    Ok(())
}

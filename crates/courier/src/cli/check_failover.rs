//! `courier check` with `source.failover = true`: whether the slot would
//! survive a failover. On the primary, the slot must be a failover slot and
//! `synchronized_standby_slots` must name the standbys' slots (else Courier
//! may acknowledge changes a standby never received); on each standby the
//! URL lists, slot synchronization must be on and the slot synchronized.

use courier_postgres::{PgConfig, TargetSessionAttrs};
use tokio_postgres::Client;

use super::check::Report;
use crate::pipeline::error_chain;

/// Checks the primary `client` is connected to and every standby among
/// `pg`'s hosts.
pub(super) async fn check_failover(r: &mut Report, pg: &PgConfig, client: &Client, slot: &str) {
    let version = show(client, "server_version_num")
        .await
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0);
    if version < 170_000 {
        r.fail(
            "failover",
            format!("source.failover = true needs PostgreSQL 17 or later; this server's version is {version}"),
            "remove source.failover, or upgrade",
        );
        return;
    }
    if in_recovery(client).await == Some(true) {
        r.fail(
            "failover",
            "Courier's connection landed on a standby",
            "add target_session_attrs=read-write to source.url, so that Courier connects to the primary",
        );
        return;
    }
    check_primary_slot(r, client, slot).await;
    let synchronized = check_synchronized_standby_slots(r, client).await;
    check_host_list(r, pg);
    let mut standbys = 0;
    for host in pg.hosts() {
        let one = pg.only(host);
        let standby = match one.connect().await {
            Ok(c) => c,
            Err(e) => {
                r.note(
                    &format!("failover host {host}"),
                    format!("cannot connect to check it: {}", error_chain(&e)),
                );
                continue;
            }
        };
        if in_recovery(&standby).await != Some(true) {
            // The primary, or another primary: nothing to synchronize there.
            continue;
        }
        standbys += 1;
        let what = format!("failover standby {host}");
        check_standby(r, &what, &standby, slot, &synchronized).await;
    }
    if standbys == 0 && pg.hosts().len() > 1 {
        r.note(
            "failover standbys",
            "none of source.url's other hosts is a standby right now",
        );
    }
}

/// Whether the server is a standby, or `None` when it cannot tell.
async fn in_recovery(client: &Client) -> Option<bool> {
    client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .ok()
        .map(|row| row.get::<_, bool>(0))
}

/// One setting's value, or `None` when it cannot be read.
async fn show(client: &Client, name: &str) -> Option<String> {
    client
        .query_one(&format!("SHOW {name}"), &[])
        .await
        .ok()
        .map(|row| row.get::<_, String>(0))
}

async fn check_primary_slot(r: &mut Report, client: &Client, slot: &str) {
    let row = client
        .query_opt(
            "SELECT failover FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await;
    match row {
        Ok(Some(row)) if row.get::<_, bool>(0) => {
            r.ok("failover slot", format!("{slot} is a failover slot"))
        }
        Ok(Some(_)) => r.note(
            "failover slot",
            format!("{slot} is not a failover slot yet; `courier run` makes it one when it starts"),
        ),
        Ok(None) => r.ok(
            "failover slot",
            format!("{slot} will be created as a failover slot"),
        ),
        Err(e) => r.fail(
            "failover slot",
            error_chain(&e),
            "check the role's access to pg_replication_slots",
        ),
    }
}

/// The primary's `synchronized_standby_slots`, each checked to be a
/// physical slot there; the names it holds.
async fn check_synchronized_standby_slots(r: &mut Report, client: &Client) -> Vec<String> {
    let what = "synchronized_standby_slots";
    let value = show(client, what).await.unwrap_or_default();
    let names: Vec<String> = value
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        r.fail(
            what,
            "is empty on the primary: Courier may receive and acknowledge changes a standby has not received, \
             which a failover then loses from PostgreSQL but not from the stores",
            "name the standby's physical slot on the primary: ALTER SYSTEM SET synchronized_standby_slots = '<slot>'; \
             SELECT pg_reload_conf()",
        );
        return names;
    }
    for name in &names {
        let physical = client
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND slot_type = 'physical'",
                &[name],
            )
            .await
            .ok()
            .flatten()
            .is_some();
        if physical {
            r.ok(
                what,
                format!("names {name}, a physical slot on the primary"),
            );
        } else {
            r.fail(
                what,
                format!("names {name}, which is not a physical slot on the primary: Courier's stream waits for it"),
                format!(
                    "create it (SELECT pg_create_physical_replication_slot('{name}')) and set it as the standby's \
                     primary_slot_name, or remove it from synchronized_standby_slots"
                ),
            );
        }
    }
    names
}

/// A failover is followed only with several hosts, and only to a primary.
fn check_host_list(r: &mut Report, pg: &PgConfig) {
    if pg.hosts().len() < 2 {
        r.note(
            "failover hosts",
            "source.url names one host: after a failover Courier keeps trying it; list the standby too, \
             e.g. postgres://USER@PRIMARY:5432,STANDBY:5432/DB?target_session_attrs=read-write",
        );
        return;
    }
    match pg.target_session_attrs {
        TargetSessionAttrs::ReadWrite | TargetSessionAttrs::Primary => r.ok(
            "failover hosts",
            format!(
                "{} hosts, target_session_attrs={}: a reconnect finds the new primary",
                pg.hosts().len(),
                pg.target_session_attrs
            ),
        ),
        other => r.fail(
            "failover hosts",
            format!("source.url lists several hosts with target_session_attrs={other}, so Courier may connect to a standby"),
            "add target_session_attrs=read-write to source.url",
        ),
    }
}

/// A standby's settings for slot synchronization, and the slot's copy.
async fn check_standby(
    r: &mut Report,
    what: &str,
    standby: &Client,
    slot: &str,
    synchronized: &[String],
) {
    let mut ready = true;
    for setting in ["sync_replication_slots", "hot_standby_feedback"] {
        let value = show(standby, setting).await.unwrap_or_default();
        if value == "on" {
            r.ok(what, format!("{setting} = on"));
        } else {
            ready = false;
            r.fail(
                what,
                format!("{setting} is {value:?}: the standby does not keep the failover slot"),
                format!("on the standby: ALTER SYSTEM SET {setting} = on; SELECT pg_reload_conf()"),
            );
        }
    }
    let primary_slot = show(standby, "primary_slot_name").await.unwrap_or_default();
    if primary_slot.is_empty() {
        ready = false;
        r.fail(
            what,
            "primary_slot_name is not set: slot synchronization needs the standby to stream through a physical slot",
            "create a physical slot on the primary and set primary_slot_name to it on the standby",
        );
    } else if synchronized.contains(&primary_slot) {
        r.ok(
            what,
            format!("primary_slot_name = {primary_slot}, named by the primary's synchronized_standby_slots"),
        );
    } else {
        r.fail(
            what,
            format!("streams through slot {primary_slot}, which the primary's synchronized_standby_slots does not name"),
            format!("add {primary_slot} to synchronized_standby_slots on the primary"),
        );
    }
    // Readable by superusers and pg_read_all_settings only.
    if let Some(conninfo) = show(standby, "primary_conninfo").await {
        if !conninfo.contains("dbname") {
            ready = false;
            r.fail(
                what,
                "primary_conninfo has no dbname: slot synchronization needs one",
                "add dbname=<any database> to the standby's primary_conninfo",
            );
        }
    }
    let copy = standby
        .query_opt(
            "SELECT synced, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await;
    match copy {
        Ok(Some(row)) if row.get::<_, bool>(0) => r.ok(
            what,
            format!(
                "slot {slot} is synchronized here (synced, at {})",
                row.get::<_, Option<String>>(1).unwrap_or_default()
            ),
        ),
        Ok(Some(_)) => r.fail(
            what,
            format!("slot {slot} exists here but is not a synchronized copy (synced = false)"),
            format!("drop it on the standby (SELECT pg_drop_replication_slot('{slot}')) so that the primary's is synchronized"),
        ),
        Ok(None) if ready => r.note(
            what,
            format!(
                "slot {slot} is not synchronized here yet: the standby copies a failover slot once it exists on the \
                 primary and the standby has replayed past it (see the standby's log if it stays missing)"
            ),
        ),
        Ok(None) => r.fail(
            what,
            format!("slot {slot} is not synchronized here"),
            "fix the settings above",
        ),
        Err(e) => r.fail(
            what,
            error_chain(&e),
            "check the role's access to pg_replication_slots",
        ),
    }
}

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use courier_core::TableId;
use courier_postgres::catalog::Catalog;
use courier_postgres::setup::{resolve_outbox_table, resolve_tables, slot_info};
use courier_postgres::{PgConfig, ReplicationClient};
use courier_sinks::envelope::SourceInfo;
use courier_sinks::outbox::{Router, Source as OutboxSource};
use courier_sinks::preflight::Verdict;
use tokio_postgres::Client;

use crate::config::{Config, Source, SourceConfig};
use crate::pipeline::error_chain;

/// Prints one line per check and remembers whether any failed.
#[derive(Default)]
pub(super) struct Report {
    failed: usize,
}

impl Report {
    pub(super) fn ok(&mut self, what: &str, detail: impl AsRef<str>) {
        println!("ok    {what}: {}", detail.as_ref());
    }

    /// Usable as it is, but worth knowing; does not fail the check.
    pub(super) fn note(&mut self, what: &str, detail: impl AsRef<str>) {
        println!("note  {what}: {}", detail.as_ref());
    }

    pub(super) fn fail(&mut self, what: &str, problem: impl AsRef<str>, fix: impl AsRef<str>) {
        self.failed += 1;
        println!("FAIL  {what}: {} — fix: {}", problem.as_ref(), fix.as_ref());
    }
}

/// `courier check`: preflight of the source and every sink. Exit 1 if any fails.
pub async fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let mut r = Report::default();
    let config = match Config::load(path) {
        Ok(c) => {
            r.ok(
                "config",
                format!("{} parsed, {} sink(s)", path.display(), c.sinks.len()),
            );
            c
        }
        Err(e) => {
            r.fail(
                "config",
                e.to_string(),
                "edit the config file as the message says",
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    // The source's tables, when PostgreSQL answers: sinks check the places
    // they will write for them (a Kafka worker's tables are not known ahead).
    let (source, tables) = match &config.source {
        Source::Postgres(s) => match check_postgres_source(&mut r, s, &config.outbox).await {
            Some(found) => found,
            None => return Ok(ExitCode::FAILURE),
        },
        #[cfg(feature = "kafka")]
        Source::Kafka(k) => (
            super::check_kafka::check_kafka_source(&mut r, k).await,
            Vec::new(),
        ),
        #[cfg(not(feature = "kafka"))]
        Source::Kafka(_) => {
            r.fail(
                "source",
                "source.type = \"kafka\" needs a Courier built with the kafka feature",
                "build with --features kafka",
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    for (name, (kind, settings)) in &config.sinks {
        match courier_sinks::check_sink(name, kind, settings.clone(), &source, &tables).await {
            Ok(findings) => {
                r.ok(&format!("sink {name}"), format!("{kind} ready"));
                for f in findings {
                    let what = format!("sink {name} {}", f.subject);
                    match f.verdict {
                        Verdict::Ok(detail) => r.ok(&what, detail),
                        Verdict::Note(detail) => r.note(&what, detail),
                        Verdict::Fail { problem, fix } => r.fail(&what, problem, fix),
                    }
                }
            }
            Err(e) => r.fail(
                &format!("sink {name}"),
                error_chain(&e),
                "fix the sink's settings or start its server",
            ),
        }
    }
    if r.failed == 0 {
        println!("all checks passed");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{} check(s) failed", r.failed);
        Ok(ExitCode::FAILURE)
    }
}

/// PostgreSQL: the connection, its settings and privileges, the
/// replication connection; what sinks write as the source, and the tables
/// Courier would capture. `None` when the URL itself is unusable.
async fn check_postgres_source(
    r: &mut Report,
    source: &SourceConfig,
    outbox: &[Router],
) -> Option<(SourceInfo, Vec<TableId>)> {
    let mut tables = Vec::new();
    let pg = match PgConfig::from_url(&source.url) {
        Ok(pg) => pg,
        Err(e) => {
            r.fail(
                "source.url",
                e.to_string(),
                "use postgres://USER:PASSWORD@HOST:PORT/DATABASE",
            );
            return None;
        }
    };
    match pg.connect().await {
        Ok(client) => {
            let client = Arc::new(client);
            let version = client
                .query_one("SHOW server_version", &[])
                .await
                .map(|r| r.get::<_, String>(0))
                .unwrap_or_default();
            r.ok("postgres", format!("connected to {} (PostgreSQL {version})", pg.redacted()));
            tables = check_postgres(r, source, outbox, &client).await;
            check_outbox(r, outbox, &client).await;
            if source.failover {
                super::check_failover::check_failover(r, &pg, &client, &source.slot).await;
            }
        }
        Err(e) => r.fail(
            "postgres",
            format!("cannot connect to {}: {}", pg.redacted(), error_chain(&e)),
            "check that PostgreSQL runs and that source.url's host, port, user, password and database are right \
             (and pg_hba.conf allows this client)",
        ),
    }
    match ReplicationClient::connect(&pg).await {
        Ok(mut repl) => match repl.identify_system().await {
            Ok(sys) => r.ok("replication connection", format!("IDENTIFY_SYSTEM ok, server WAL at {}", sys.xlogpos)),
            Err(e) => r.fail("replication connection", error_chain(&e), "grant the role REPLICATION"),
        },
        Err(e) => r.fail(
            "replication connection",
            error_chain(&e),
            "allow replication connections for this role in pg_hba.conf (a line with database 'replication' \
             is not needed for logical replication; 'all' or the database name must match), and check max_wal_senders",
        ),
    }
    let info = SourceInfo {
        name: source.slot.clone(),
        database: pg.dbname.clone(),
    };
    Some((info, tables))
}

/// Checks PostgreSQL's settings, the role, publication, slot and tables;
/// returns the tables Courier would capture (not the outbox tables).
async fn check_postgres(
    r: &mut Report,
    source: &SourceConfig,
    outbox: &[Router],
    client: &Client,
) -> Vec<TableId> {
    let setting = |name: &'static str| async move {
        client
            .query_one(&format!("SHOW {name}"), &[])
            .await
            .map(|row| row.get::<_, String>(0))
            .unwrap_or_default()
    };
    let wal_level = setting("wal_level").await;
    if wal_level == "logical" {
        r.ok("wal_level", "logical");
    } else {
        r.fail(
            "wal_level",
            format!("is {wal_level:?}, logical replication needs \"logical\""),
            "run ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
        );
    }

    let role = client
        .query_one(
            "SELECT current_user::text, rolreplication OR rolsuper, \
                    has_database_privilege(current_database(), 'CREATE') \
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await;
    match role {
        Ok(row) => {
            let (user, repl, create): (String, bool, bool) = (row.get(0), row.get(1), row.get(2));
            if repl {
                r.ok("role", format!("{user} may replicate"));
            } else {
                r.fail(
                    "role",
                    format!("{user} lacks the REPLICATION attribute"),
                    format!("run ALTER ROLE {user} REPLICATION (as a superuser); superuser is not needed"),
                );
            }
            let has_pub = client
                .query_opt(
                    "SELECT 1 FROM pg_publication WHERE pubname = $1",
                    &[&source.publication],
                )
                .await
                .ok()
                .flatten()
                .is_some();
            if has_pub {
                r.ok("publication", format!("{} exists", source.publication));
            } else if create {
                r.ok(
                    "publication",
                    format!("{} will be created", source.publication),
                );
            } else {
                r.fail(
                    "publication",
                    format!("{} does not exist and {user} may not create it", source.publication),
                    format!(
                        "create it as the tables' owner: CREATE PUBLICATION {} FOR TABLE ...; or GRANT CREATE ON DATABASE to {user}",
                        source.publication
                    ),
                );
            }
        }
        Err(e) => r.fail("role", error_chain(&e), "check that the role exists"),
    }

    let slots = client
        .query_one(
            "SELECT current_setting('max_replication_slots')::int, (SELECT count(*)::int FROM pg_replication_slots), \
                    current_setting('max_wal_senders')::int, \
                    (SELECT count(*)::int FROM pg_stat_replication)",
            &[],
        )
        .await;
    match (slots, slot_info(client, &source.slot).await) {
        (_, Err(e)) => r.fail("slot", e.to_string(), "see the message"),
        (Ok(row), Ok(existing)) => {
            let (max_slots, used, max_senders, senders): (i32, i32, i32, i32) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            match existing {
                Some(s) if s.active_pid.is_some() => r.fail(
                    "slot",
                    format!("{} is in use by backend pid {}", source.slot, s.active_pid.unwrap_or(0)),
                    "stop the other Courier using this slot, or choose another source.slot",
                ),
                Some(s) => r.ok("slot", format!("{} exists at {}", source.slot, s.confirmed_flush)),
                None if used < max_slots - 1 => {
                    r.ok("slot", format!("{} will be created ({used} of {max_slots} slots used)", source.slot))
                }
                None => r.fail(
                    "slot",
                    format!("{used} of {max_slots} replication slots are used; Courier needs one, plus one during snapshots"),
                    "raise max_replication_slots (restart needed) or drop unused slots",
                ),
            }
            if senders + 2 <= max_senders {
                r.ok("wal senders", format!("{senders} of {max_senders} in use"));
            } else {
                r.fail(
                    "wal senders",
                    format!("{senders} of {max_senders} in use; Courier needs up to 2"),
                    "raise max_wal_senders (restart needed)",
                );
            }
        }
        (Err(e), _) => r.fail(
            "slot",
            error_chain(&e),
            "check the role's access to pg_replication_slots",
        ),
    }

    match resolve_tables(client, &source.tables, &source.table_patterns).await {
        Ok(mut tables) => {
            tables.retain(|t| {
                !outbox
                    .iter()
                    .any(|o| matches!(&o.source, OutboxSource::Table(id) if *id == t.id))
            });
            let ids = tables.iter().map(|t| t.id.clone()).collect();
            for t in tables {
                let can_select = client
                    .query_one("SELECT has_table_privilege($1::oid, 'SELECT')", &[&t.oid])
                    .await
                    .map(|row| row.get::<_, bool>(0))
                    .unwrap_or(false);
                if can_select {
                    r.ok(
                        &format!("table {}", t.id),
                        format!("keyed, ~{} rows", t.estimated_rows),
                    );
                } else {
                    r.fail(
                        &format!("table {}", t.id),
                        "the role may not SELECT it (needed for the snapshot)",
                        format!("GRANT SELECT ON {} TO <courier role>", t.id.quoted()),
                    );
                }
            }
            ids
        }
        Err(e) => {
            r.fail("tables", e.to_string(), "see the message");
            Vec::new()
        }
    }
}

/// One line per outbox router: its table exists, has a key and holds every
/// column the router reads (or, for messages, what the application emits).
async fn check_outbox(r: &mut Report, outbox: &[Router], client: &Arc<Client>) {
    let mut catalog = Catalog::new(Arc::clone(client));
    for o in outbox {
        let what = format!("outbox {}", o.name);
        let id = match &o.source {
            OutboxSource::Messages(prefix) => {
                r.ok(
                    &what,
                    format!(
                        "routes pg_logical_emit_message(true, '{prefix}', <JSON object with {}, {}, {}>) to sink {}",
                        o.columns.id, o.columns.key, o.columns.payload, o.sink
                    ),
                );
                continue;
            }
            OutboxSource::Table(id) => id,
        };
        let table = match resolve_outbox_table(client, id).await {
            Ok(t) => t,
            Err(e) => {
                r.fail(&what, e.to_string(), "see the message");
                continue;
            }
        };
        match catalog.relation(table.oid).await {
            Ok(Some(relation)) => {
                let problems = o.check_table(&relation);
                if problems.is_empty() {
                    r.ok(
                        &what,
                        format!(
                            "table {id} has the columns it reads; its events go to sink {} (the table is published, never snapshotted)",
                            o.sink
                        ),
                    );
                }
                for p in problems {
                    let (problem, fix) = p.split_once(": ").unwrap_or((&p, "see the message"));
                    r.fail(&what, problem, fix);
                }
            }
            Ok(None) => r.fail(&what, format!("table {id} was dropped"), "create it again"),
            Err(e) => r.fail(
                &what,
                error_chain(&e),
                "check the role's access to the catalog",
            ),
        }
    }
}

//! The connection layer and the replication client against a real
//! PostgreSQL: `COURIER_TEST_PG` (default: the `dev/pg.sh` cluster) names
//! it. The server needs
//! `wal_level=logical`, TLS, and the roles `courier` (scram-sha-256) and
//! `courier_md5` (md5), both with password `courier`, as `dev/pg.sh` sets up.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use courier_core::Lsn;
use courier_postgres::{
    PgConfig, PgError, ReplicationClient, ReplicationMessage, ReplicationStream, Secret, SslMode,
};

const DEFAULT_URL: &str = "postgres://postgres:postgres@127.0.0.1:55432/postgres";

/// The superuser settings.
fn base() -> PgConfig {
    let url = std::env::var("COURIER_TEST_PG").unwrap_or_else(|_| DEFAULT_URL.to_string());
    PgConfig::from_url(&url).expect("COURIER_TEST_PG is a valid URL")
}

fn as_role(base: &PgConfig, user: &str, sslmode: SslMode) -> PgConfig {
    let mut cfg = base.clone();
    cfg.user = user.to_string();
    cfg.password = Some(Secret::new("courier"));
    cfg.sslmode = sslmode;
    cfg
}

/// The CA that signed the test server's certificate.
fn test_ca() -> PathBuf {
    if let Ok(path) = std::env::var("COURIER_TEST_PG_CA") {
        return PathBuf::from(path);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../dev/pg.sh");
    let out = std::process::Command::new(&script)
        .arg("cert-path")
        .output()
        .expect("run dev/pg.sh cert-path (or set COURIER_TEST_PG_CA)");
    assert!(out.status.success(), "dev/pg.sh cert-path failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A name unique to this test run, usable as slot, table and publication name.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

async fn admin(base: &PgConfig) -> tokio_postgres::Client {
    base.connect().await.expect("superuser connection")
}

async fn ssl_in_use(admin: &tokio_postgres::Client, pid: i32) -> bool {
    admin
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = $1", &[&pid])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn connects_with_scram_md5_and_every_sslmode() {
    let base = base();
    let admin = admin(&base).await;
    let cases = [
        ("courier", SslMode::Disable, false),
        ("courier", SslMode::Prefer, true),
        ("courier", SslMode::Require, true),
        ("courier_md5", SslMode::Disable, false),
        ("courier_md5", SslMode::Require, true),
    ];
    for (user, sslmode, expect_ssl) in cases {
        let cfg = as_role(&base, user, sslmode);
        let mut client = ReplicationClient::connect(&cfg)
            .await
            .unwrap_or_else(|e| panic!("{user} sslmode={sslmode}: {e}"));
        let system = client.identify_system().await.unwrap();
        assert!(system.xlogpos > Lsn::ZERO);
        assert!(system.timeline >= 1);
        assert_eq!(system.dbname.as_deref(), Some(cfg.dbname.as_str()));
        assert_eq!(ssl_in_use(&admin, client.backend_pid()).await, expect_ssl);
        client.close().await;

        let regular = cfg.connect().await.unwrap();
        let row = regular
            .query_one("SELECT current_user::text, current_setting('TimeZone'), current_setting('IntervalStyle'), pg_backend_pid()", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), user);
        assert_eq!(row.get::<_, String>(1), "UTC");
        assert_eq!(row.get::<_, String>(2), "iso_8601");
        assert_eq!(ssl_in_use(&admin, row.get(3)).await, expect_ssl);
    }
    // The md5 role really has an md5 password, so the md5 exchange ran.
    let stored: String = admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'courier_md5'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("md5"));
}

#[tokio::test]
async fn verify_full_trusts_only_the_given_root() {
    let base = base();
    let admin = admin(&base).await;
    let mut cfg = as_role(&base, "courier", SslMode::VerifyFull);
    cfg.sslrootcert = Some(test_ca());
    let client = ReplicationClient::connect(&cfg).await.unwrap();
    assert!(ssl_in_use(&admin, client.backend_pid()).await);
    client.close().await;
    let regular = cfg.connect().await.unwrap();
    regular.simple_query("SELECT 1").await.unwrap();

    // Without the project's CA the self-signed chain must not verify.
    cfg.sslrootcert = None;
    let err = ReplicationClient::connect(&cfg)
        .await
        .expect_err("untrusted certificate");
    assert!(matches!(err, PgError::Tls { .. }), "{err}");
    assert!(!err.is_retriable());
    assert!(cfg.connect().await.is_err());
}

#[tokio::test]
async fn wrong_password_is_an_auth_error_without_the_password() {
    let base = base();
    for user in ["courier", "courier_md5"] {
        let mut cfg = as_role(&base, user, SslMode::Prefer);
        cfg.password = Some(Secret::new("not-the-password"));
        let err = ReplicationClient::connect(&cfg)
            .await
            .expect_err("login must fail");
        let text = err.to_string();
        assert!(matches!(err, PgError::Auth { .. }), "{text}");
        assert!(!err.is_retriable());
        assert!(!text.contains("not-the-password"), "{text}");
        assert!(text.contains("pg_hba.conf"), "{text}");
        let expected_method = if user == "courier" {
            "SCRAM-SHA-256"
        } else {
            "md5"
        };
        assert!(text.contains(expected_method), "{text}");

        let err = cfg.connect().await.expect_err("login must fail");
        assert!(matches!(err, PgError::Auth { .. }), "{err}");
    }
}

#[tokio::test]
async fn exported_snapshot_is_importable_until_the_next_command() {
    let base = base();
    let admin = admin(&base).await;
    let table = unique("snap_t");
    admin
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY); INSERT INTO {table} VALUES (1)"
        ))
        .await
        .unwrap();

    let slot_name = unique("snap_slot");
    let mut client = ReplicationClient::connect(&base).await.unwrap();
    let slot = client
        .create_logical_slot(&slot_name, true, true)
        .await
        .unwrap();
    assert!(slot.consistent_point > Lsn::ZERO);
    assert_eq!(slot.slot_name, slot_name);
    let snapshot = slot.snapshot_name.clone().expect("an exported snapshot");

    // Written after the consistent point: invisible in the snapshot.
    admin
        .execute(&format!("INSERT INTO {table} VALUES (2)"), &[])
        .await
        .unwrap();

    let mut reader = base.connect().await.unwrap();
    let tx = reader
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .unwrap();
    tx.batch_execute(&format!("SET TRANSACTION SNAPSHOT '{snapshot}'"))
        .await
        .unwrap();
    let count: i64 = tx
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        count, 1,
        "the snapshot sees exactly the rows before its consistent point"
    );
    tx.commit().await.unwrap();

    let temporary: bool = admin
        .query_one(
            "SELECT temporary FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot_name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(temporary);
    client.close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = admin
            .query(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot_name],
            )
            .await
            .unwrap();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "temporary slot outlived its connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    admin
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn server_errors_keep_their_sqlstate() {
    let base = base();
    let mut client = ReplicationClient::connect(&base).await.unwrap();
    let rows = client.simple_query("SHOW wal_level").await.unwrap();
    assert_eq!(rows, vec![vec![Some("logical".to_string())]]);

    let slot = unique("dup_slot");
    client
        .create_logical_slot(&slot, true, false)
        .await
        .unwrap();
    let err = client
        .create_logical_slot(&slot, true, false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("42710"), "{err}");
    assert!(!err.is_retriable());

    let err = client
        .simple_query("DROP_REPLICATION_SLOT no_such_slot_here")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("42704"), "{err}");
    // The connection stays usable after an error.
    assert!(client.identify_system().await.is_ok());

    let err = client
        .create_logical_slot("Bad-Name", true, false)
        .await
        .unwrap_err();
    assert!(matches!(err, PgError::Config { .. }), "{err}");
    client.close().await;
}

/// A table in a publication and a permanent slot, dropped on `cleanup`.
struct Fixture {
    admin: tokio_postgres::Client,
    name: String,
}

impl Fixture {
    async fn new(base: &PgConfig, prefix: &str) -> Fixture {
        let admin = admin(base).await;
        let name = unique(prefix);
        admin
            .batch_execute(&format!(
                "CREATE TABLE {name} (id int PRIMARY KEY, v text);
                 CREATE PUBLICATION {name} FOR TABLE {name};"
            ))
            .await
            .unwrap();
        let mut client = ReplicationClient::connect(base).await.unwrap();
        client
            .create_logical_slot(&name, false, false)
            .await
            .unwrap();
        client.close().await;
        Fixture { admin, name }
    }

    async fn stream(&self, base: &PgConfig, start: Lsn) -> ReplicationStream {
        let client = ReplicationClient::connect(base).await.unwrap();
        client
            .start_logical_replication(
                &self.name,
                start,
                &[
                    ("proto_version", "1"),
                    ("publication_names", &self.name),
                    ("messages", "true"),
                ],
            )
            .await
            .unwrap()
    }

    async fn confirmed_flush(&self) -> Lsn {
        let text: Option<String> = self
            .admin
            .query_one(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.name],
            )
            .await
            .unwrap()
            .get(0);
        text.expect("a logical slot has a confirmed_flush_lsn")
            .parse()
            .unwrap()
    }

    async fn cleanup(self, base: &PgConfig) {
        let mut client = ReplicationClient::connect(base).await.unwrap();
        client
            .simple_query(&format!("DROP_REPLICATION_SLOT {} WAIT", self.name))
            .await
            .unwrap();
        client.close().await;
        self.admin
            .batch_execute(&format!("DROP PUBLICATION {0}; DROP TABLE {0};", self.name))
            .await
            .unwrap();
    }
}

/// The end LSN of a pgoutput Commit message (`C`, flags, commit, end, time).
fn commit_end(data: &[u8]) -> Lsn {
    Lsn(u64::from_be_bytes(data[10..18].try_into().unwrap()))
}

#[tokio::test]
async fn streams_a_transaction_and_advances_the_slot() {
    let base = base();
    let fx = Fixture::new(&base, "stream_t").await;
    let mut stream = fx.stream(&base, Lsn::ZERO).await;
    fx.admin
        .batch_execute(&format!(
            "BEGIN;
             INSERT INTO {0} VALUES (1, 'a'), (2, 'b'), (3, 'c');
             SELECT pg_logical_emit_message(true, 'courier-test', 'hello');
             COMMIT;",
            fx.name
        ))
        .await
        .unwrap();

    let mut kinds = Vec::new();
    let mut end = Lsn::ZERO;
    while end == Lsn::ZERO {
        let message = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("the transaction arrives")
            .unwrap()
            .expect("stream open");
        match message {
            ReplicationMessage::XLogData { data, .. } => {
                kinds.push(data[0]);
                if kinds == b"BC" {
                    // PostgreSQL 14 sends other sessions' transactions that
                    // change none of the publication's tables, empty.
                    kinds.clear();
                } else if data[0] == b'C' {
                    end = commit_end(&data);
                }
            }
            ReplicationMessage::Keepalive {
                wal_end,
                reply_requested,
                ..
            } => {
                if reply_requested {
                    stream
                        .send_status(wal_end, Lsn::ZERO, Lsn::ZERO, false)
                        .await
                        .unwrap();
                }
            }
        }
    }
    assert_eq!(
        kinds,
        b"BRIIIMC".to_vec(),
        "pgoutput message kinds: {:?}",
        String::from_utf8_lossy(&kinds)
    );
    assert!(fx.confirmed_flush().await < end);

    // Acknowledge the commit and ask for a reply: the server answers with a
    // keepalive, and the slot's confirmed_flush_lsn moves to what we sent.
    stream.send_status(end, end, end, true).await.unwrap();
    let keepalive = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(ReplicationMessage::Keepalive { wal_end, .. }) =
                stream.next().await.unwrap()
            {
                return wal_end;
            }
        }
    })
    .await
    .expect("a keepalive in reply");
    assert!(keepalive >= end);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fx.confirmed_flush().await != end {
        assert!(
            Instant::now() < deadline,
            "confirmed_flush_lsn did not reach {end}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::timeout(Duration::from_secs(20), stream.finish())
        .await
        .expect("finish completes")
        .unwrap();

    // Resuming the slot does not replay the acknowledged transaction.
    let mut stream = fx.stream(&base, Lsn::ZERO).await;
    fx.admin
        .execute(&format!("INSERT INTO {} VALUES (4, 'd')", fx.name), &[])
        .await
        .unwrap();
    let mut inserts = 0;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("the new transaction arrives")
            .unwrap()
            .expect("stream open");
        if let ReplicationMessage::XLogData { data, .. } = message {
            match data[0] {
                b'I' => inserts += 1,
                // Not an empty transaction of another session (PostgreSQL 14).
                b'C' if inserts > 0 => break,
                _ => {}
            }
        }
    }
    assert_eq!(
        inserts, 1,
        "only the unacknowledged transaction is sent again"
    );
    drop(stream);
    fx.cleanup(&base).await;
}

#[tokio::test]
async fn next_is_cancel_safe_under_select() {
    let base = base();
    let fx = Fixture::new(&base, "cancel_t").await;
    let mut stream = fx.stream(&base, Lsn::ZERO).await;
    const ROWS: i32 = 20_000;
    fx.admin
        .execute(
            &format!(
                "INSERT INTO {} SELECT g, repeat('x', g % 300) FROM generate_series(1, $1) g",
                fx.name
            ),
            &[&ROWS],
        )
        .await
        .unwrap();

    let mut inserts = 0;
    let mut cancelled = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut timer = tokio::time::interval(Duration::from_micros(20));
    loop {
        assert!(
            Instant::now() < deadline,
            "timed out after {inserts} inserts"
        );
        tokio::select! {
            message = stream.next() => {
                if let ReplicationMessage::XLogData { data, .. } = message.unwrap().expect("stream open") {
                    match data[0] {
                        b'I' => {
                            // Every row arrives whole: 'I', relation, 'N', columns.
                            assert_eq!(data[5], b'N');
                            inserts += 1;
                        }
                        // Not an empty transaction of another session (PostgreSQL 14).
                        b'C' if inserts > 0 => break,
                        _ => {}
                    }
                }
            }
            _ = timer.tick() => cancelled += 1,
        }
    }
    assert_eq!(inserts, ROWS);
    assert!(cancelled > 0, "the timer never interrupted a read");
    drop(stream);
    fx.cleanup(&base).await;
}

#[tokio::test]
async fn terminated_walsender_ends_the_stream_with_a_retriable_error() {
    let base = base();
    let fx = Fixture::new(&base, "term_t").await;
    let mut stream = fx.stream(&base, Lsn::ZERO).await;
    let terminated: bool = fx
        .admin
        .query_one("SELECT pg_terminate_backend($1)", &[&stream.backend_pid()])
        .await
        .unwrap()
        .get(0);
    assert!(terminated);
    let err = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.next().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended cleanly instead of failing"),
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("the stream fails");
    assert!(err.is_retriable(), "{err}");
    assert_eq!(err.code(), Some("57P01"), "{err}");
    drop(stream);
    // The walsender may take a moment to release the slot.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let active: bool = fx
            .admin
            .query_one(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&fx.name],
            )
            .await
            .unwrap()
            .get(0);
        if !active || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fx.cleanup(&base).await;
}

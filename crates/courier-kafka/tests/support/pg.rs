//! The test PostgreSQL (`dev/pg.sh`, or `COURIER_TEST_PG`): a fresh
//! database per test, and Courier's own capture of it, the reference every
//! decoded record is compared with.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use courier_core::{Batch, Change, Lsn, Relation};
use courier_postgres::catalog::{Catalog, SESSION_OPTIONS};
use courier_postgres::pgoutput::{DecodedEvent, Decoder};
use courier_postgres::snapshot::{self, Chunk, OutputError, SnapshotOutput};
use courier_postgres::PgConfig;
use tokio_postgres::{Client, NoTls};

/// The URL of database `db` on the test server.
pub fn url(db: &str) -> String {
    let base = std::env::var("COURIER_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:55432/postgres".to_string());
    match base.rsplit_once('/') {
        Some((head, _)) => format!("{head}/{db}"),
        None => base,
    }
}

/// The host and port of the test server.
pub fn host_port() -> (String, u16) {
    let u = url("postgres");
    let rest = u.split_once('@').map_or(u.as_str(), |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or("127.0.0.1:55432");
    let (h, p) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
    (h.to_string(), p.parse().unwrap_or(5432))
}

/// Whether the test server answers.
pub async fn available() -> bool {
    tokio_postgres::connect(&url("postgres"), NoTls)
        .await
        .is_ok()
}

/// A client of `db` in Courier's session settings (UTC, ISO dates,
/// iso_8601 intervals), as Courier's capture reads.
pub async fn connect(db: &str) -> Client {
    let mut config: tokio_postgres::Config = url(db).parse().expect("COURIER_TEST_PG is a URL");
    config.options(SESSION_OPTIONS);
    let (client, conn) = config
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {db} on the test PostgreSQL: {e}"));
    tokio::spawn(conn);
    client
}

/// A new, empty database `name` (dropping an older one and its slots).
pub async fn fresh_db(name: &str) -> Client {
    let admin = connect("postgres").await;
    drop_slots(&admin, name).await;
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
    connect(name).await
}

/// Drops the test's database and its inactive slots.
pub async fn drop_db(name: &str) {
    let admin = connect("postgres").await;
    drop_slots(&admin, name).await;
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
}

async fn drop_slots(admin: &Client, db: &str) {
    let _ = admin
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE database = $1 AND NOT active",
            &[&db],
        )
        .await;
}

/// Drops slot `slot` once it is no longer active (a connector just
/// deleted may hold it for a moment).
pub async fn drop_slot(slot: &str) {
    let admin = connect("postgres").await;
    for _ in 0..50 {
        let dropped = admin
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = $1 AND NOT active",
                &[&slot],
            )
            .await
            .unwrap_or(0);
        let left = admin
            .query_one(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0);
        if dropped > 0 || left == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Courier's own capture of a database: its pgoutput decoder on a
/// temporary slot created before the workload, so every change the
/// workload makes is decoded exactly as `courier run` decodes it.
pub struct Reference {
    client: Arc<Client>,
    slot: String,
    decoder: Decoder,
}

impl Reference {
    /// A publication and a temporary slot `slot` for `tables` of `db`.
    pub async fn start(db: &str, slot: &str, tables: &[&str]) -> Reference {
        let client = Arc::new(connect(db).await);
        client
            .batch_execute(&format!(
                "CREATE PUBLICATION {slot} FOR TABLE {}",
                tables.join(", ")
            ))
            .await
            .expect("create the reference publication");
        client
            .execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput', true)",
                &[&slot],
            )
            .await
            .expect("create the reference slot");
        Reference {
            decoder: Decoder::new(Catalog::new(Arc::clone(&client))),
            client,
            slot: slot.to_string(),
        }
    }

    /// The client the slot belongs to (a temporary slot lives as long as
    /// its session).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Every change since the last call, as Courier's decoder gives it.
    pub async fn changes(&mut self) -> Vec<Change> {
        let rows = self
            .client
            .query(
                "SELECT data FROM pg_logical_slot_get_binary_changes($1::text::name, NULL, NULL, \
                 'proto_version', '1', 'publication_names', $1::text)",
                &[&self.slot],
            )
            .await
            .expect("read the reference slot");
        let mut out = Vec::new();
        for r in rows {
            let data = Bytes::from(r.get::<_, Vec<u8>>(0));
            if let Some(DecodedEvent::Change(c)) = self.decoder.decode(data).await.expect("decode")
            {
                out.push(c);
            }
        }
        out
    }
}

/// The rows of `table` (schema-qualified) now, read by Courier's snapshot
/// (binary COPY under an exported snapshot), as `Op::Read` changes.
pub async fn snapshot_rows(db: &str, table: &str) -> Vec<Change> {
    let holder = connect(db).await;
    holder
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    let name: String = holder
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .unwrap()
        .get(0);
    let oid: u32 = holder
        .query_one("SELECT $1::text::regclass::oid", &[&table])
        .await
        .unwrap()
        .get(0);
    let mut catalog = Catalog::new(Arc::new(connect(db).await));
    let relation = snapshot::relation_from_catalog(&mut catalog, oid, Default::default())
        .await
        .unwrap()
        .expect("the table exists");
    let out = Arc::new(Collect::default());
    let chunk = Chunk {
        start_page: 0,
        end_page: None,
    };
    let pg = PgConfig::parse(&url(db)).expect("the test URL");
    snapshot::copy_chunks(
        &pg,
        &name,
        Lsn(1),
        vec![(relation, chunk)],
        1,
        Arc::clone(&out) as Arc<dyn SnapshotOutput>,
    )
    .await
    .expect("Courier's snapshot of the table");
    holder.batch_execute("COMMIT").await.unwrap();
    let rows = std::mem::take(&mut *out.0.lock().unwrap());
    rows
}

#[derive(Default)]
struct Collect(Mutex<Vec<Change>>);

#[async_trait]
impl SnapshotOutput for Collect {
    async fn send(&self, batch: Batch) -> Result<(), OutputError> {
        self.0.lock().unwrap().extend(batch.changes);
        Ok(())
    }
    async fn sync(&self) -> Result<(), OutputError> {
        Ok(())
    }
    async fn chunk_done(&self, _: &Relation, _: Chunk, _: u64) -> Result<(), OutputError> {
        Ok(())
    }
    fn rows_read(&self, _: &Relation, _: u64) {}
}

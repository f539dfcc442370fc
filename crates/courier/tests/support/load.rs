//! A concurrent write load: inserts, updates and deletes on a simple table
//! whose every column maps to JSON unambiguously, and a reader of the
//! table's rows in that mapping.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

/// Creates `name` (id bigint PK, val int, note text, amount numeric(12,2))
/// with `rows` rows.
pub async fn create_table(client: &Client, name: &str, rows: i64) {
    client
        .batch_execute(&format!(
            "CREATE TABLE {name} (id bigint PRIMARY KEY, val int NOT NULL, note text, amount numeric(12,2));
             INSERT INTO {name} SELECT g, g % 1000, 'row ' || g, g * 0.25 FROM generate_series(1, {rows}) g;"
        ))
        .await
        .unwrap();
}

/// The table's rows in Courier's JSON mapping, by `id`.
pub async fn pg_rows(client: &Client, name: &str) -> BTreeMap<String, Value> {
    let rows = client
        .query(
            &format!("SELECT id, val, note, amount::text FROM {name}"),
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let id: i64 = r.get(0);
            let row = json!({"id": id, "val": r.get::<_, i32>(1), "note": r.get::<_, Option<String>>(2),
                             "amount": r.get::<_, Option<String>>(3)});
            (id.to_string(), row)
        })
        .collect()
}

/// A running write load: `writers` connections committing random small
/// transactions on one table until it is stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    writers: JoinHandle<()>,
}

impl Load {
    /// Starts `writers` connections of random small transactions on
    /// `db.name`.
    pub fn start(db: &str, name: &str, writers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let writers = tokio::spawn(run_writers(
            db.to_string(),
            name.to_string(),
            writers,
            stop.clone(),
            committed.clone(),
        ));
        Load {
            stop,
            committed,
            writers,
        }
    }

    /// Transactions committed so far.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Waits until the load committed `n` more transactions than it had
    /// when called, panicking after `timeout` (a guard: the load's speed is
    /// not what a test asserts).
    pub async fn commit_more(&self, n: u64, timeout: Duration) {
        let target = self.committed() + n;
        let what = format!("the load to commit {n} more transactions");
        super::wait_until(&what, timeout, || async { self.committed() >= target }).await;
    }

    /// Stops the writers; the number of transactions they committed.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.writers.await.unwrap();
        self.committed.load(Ordering::Relaxed)
    }
}

/// Runs `writers` connections of random small transactions on `name`
/// until `stop` is set, counting each commit in `committed`.
async fn run_writers(
    db: String,
    name: String,
    writers: usize,
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
) {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (db, name, stop, committed) =
            (db.clone(), name.clone(), stop.clone(), committed.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = super::connect(&db).await;
            let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64 + 1);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id: i64 = rng.gen_range(1..20_000);
                let sql = match rng.gen_range(0..10) {
                    0..=3 => format!(
                        "INSERT INTO {name} VALUES ({id}, {v}, 'w{w} n{n}', {a}.5) ON CONFLICT (id) DO UPDATE SET val = excluded.val, note = excluded.note",
                        v = rng.gen_range(0..1000),
                        a = rng.gen_range(0..100000)
                    ),
                    4..=7 => format!("UPDATE {name} SET val = val + 1, note = 'w{w} u{n}', amount = amount + 1 WHERE id = {id}"),
                    8 => format!("DELETE FROM {name} WHERE id = {id}"),
                    _ => format!(
                        "BEGIN; UPDATE {name} SET val = val - 1 WHERE id = {id}; INSERT INTO {name} VALUES ({id2}, 1, NULL, NULL) ON CONFLICT DO NOTHING; COMMIT",
                        id2 = id + 20_000
                    ),
                };
                // Deadlocks and serialization failures between writers are fine to skip.
                if client.batch_execute(&sql).await.is_ok() {
                    n += 1;
                    committed.fetch_add(1, Ordering::Relaxed);
                } else if client.is_closed() {
                    // The server restarted: reconnect once it is back.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if let Ok(c) = super::try_connect(&db).await {
                        client = c;
                    }
                } else {
                    let _ = client.batch_execute("ROLLBACK").await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

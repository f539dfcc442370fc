//! A concurrent write load: inserts, updates and deletes on a simple table
//! whose every column maps to JSON unambiguously, and a reader of the
//! table's rows in that mapping.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
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

/// Runs `writers` connections of random small transactions on `name`
/// until `stop` is set; returns the number of transactions committed.
pub async fn run_writers(db: &str, name: &str, writers: usize, stop: Arc<AtomicBool>) -> u64 {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (db, name, stop) = (db.to_string(), name.to_string(), stop.clone());
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
                } else if client.is_closed() {
                    // The server restarted: reconnect once it is back.
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    if let Ok(c) = super::try_connect(&db).await {
                        client = c;
                    }
                } else {
                    let _ = client.batch_execute("ROLLBACK").await;
                }
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total
}

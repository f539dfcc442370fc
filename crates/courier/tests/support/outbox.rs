//! An application that publishes events with the outbox pattern: each
//! transaction changes an order and inserts its events into `outbox`
//! (some also emit them with `pg_logical_emit_message`), some roll back,
//! some delete their outbox rows again before committing; and the checks
//! of what a consumer of the event topics then reads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::task::JoinHandle;

use super::kafka::Record;

/// The business table and the outbox table, as Debezium's documentation
/// shapes it.
pub const SCHEMA: &str = "
CREATE TABLE orders (id bigint PRIMARY KEY, status text NOT NULL, total numeric(12,2) NOT NULL, version int NOT NULL);
CREATE TABLE outbox (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    aggregatetype text NOT NULL,
    aggregateid text NOT NULL,
    type text NOT NULL,
    payload jsonb,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);";

/// The prefix of the events the application emits as messages.
pub const MESSAGE_PREFIX: &str = "orders";

/// What the application committed and rolled back.
#[derive(Debug, Default)]
pub struct Written {
    /// Every committed event by id: its aggregate (the record key) and its
    /// aggregate type.
    pub committed: HashMap<String, (String, String)>,
    /// Each aggregate's committed events, in commit order.
    pub per_aggregate: BTreeMap<String, Vec<String>>,
    /// Events of transactions that rolled back.
    pub rolled_back: HashSet<String>,
    /// Committed events whose outbox row the transaction deleted again.
    pub deleted_in_transaction: usize,
}

impl Written {
    fn merge(&mut self, other: Written) {
        self.committed.extend(other.committed);
        self.per_aggregate.extend(other.per_aggregate);
        self.rolled_back.extend(other.rolled_back);
        self.deleted_in_transaction += other.deleted_in_transaction;
    }
}

/// A running application.
pub struct App {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    writers: Vec<JoinHandle<Written>>,
}

impl App {
    /// `writers` connections to `db`, each the only writer of its own
    /// aggregates (four orders and a customer), so that each aggregate's
    /// events have one commit order. With `emit_messages`, every event is
    /// also emitted, in the same transaction, as
    /// `pg_logical_emit_message(true, 'orders', <its outbox row as JSON>)`.
    pub fn start(db: &str, writers: usize, emit_messages: bool) -> App {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let writers = (0..writers)
            .map(|w| {
                let (db, stop, committed) = (db.to_string(), stop.clone(), committed.clone());
                tokio::spawn(async move {
                    write(&db, w, writers, emit_messages, &stop, &committed).await
                })
            })
            .collect();
        App {
            stop,
            committed,
            writers,
        }
    }

    /// Waits until the application committed `n` more transactions.
    pub async fn commit_more(&self, n: u64, timeout: Duration) {
        let target = self.committed.load(Ordering::Relaxed) + n;
        super::wait_until("the application to commit more", timeout, || async {
            assert!(
                !self.writers.iter().any(JoinHandle::is_finished),
                "an application writer stopped (its panic is above)"
            );
            self.committed.load(Ordering::Relaxed) >= target
        })
        .await;
    }

    /// Stops the writers; what they wrote.
    pub async fn stop(self) -> Written {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Written::default();
        for w in self.writers {
            all.merge(w.await.expect("an application writer failed"));
        }
        all
    }
}

async fn write(
    db: &str,
    w: usize,
    writers: usize,
    emit_messages: bool,
    stop: &AtomicBool,
    committed: &AtomicU64,
) -> Written {
    let mut client = super::connect(db).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64 * 7919 + 1);
    let mut out = Written::default();
    let orders: Vec<i64> = (0..4).map(|i| (i * writers + w) as i64 + 1).collect();
    let mut next_seq: HashMap<String, i64> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let roll: u32 = rng.gen_range(0..100);
        let order = orders[rng.gen_range(0..orders.len())];
        let (kind, aggregate) = if rng.gen_bool(0.2) {
            ("customer", format!("customer-{w}"))
        } else {
            ("order", format!("order-{order}"))
        };
        let events = if rng.gen_bool(0.2) { 2 } else { 1 };
        let seq = *next_seq.get(&aggregate).unwrap_or(&0);
        let tx = client.transaction().await.unwrap();
        tx.execute(
            "INSERT INTO orders VALUES ($1, 'open', $2::text::numeric, 1)
             ON CONFLICT (id) DO UPDATE SET version = orders.version + 1, total = EXCLUDED.total",
            &[&order, &format!("{}.50", rng.gen_range(1..999))],
        )
        .await
        .unwrap();
        let mut ids = Vec::new();
        for k in 0..events {
            let payload = json!({
                "aggregate": aggregate, "seq": seq + k, "writer": w, "total": 12.5,
                "lines": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}],
                "note": "caf\u{e9} \"quoted\" \\ back", "tags": ["new", null], "empty": {},
            });
            let id: String = tx
                .query_one(
                    "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES ($1, $2, $3, $4::text::jsonb) RETURNING id::text",
                    &[&kind, &aggregate, &format!("{kind}.changed"), &payload.to_string()],
                )
                .await
                .unwrap()
                .get(0);
            if emit_messages {
                tx.execute(
                    "SELECT pg_logical_emit_message(true, $1, (SELECT row_to_json(o)::text FROM outbox o WHERE id = $2::text::uuid))",
                    &[&MESSAGE_PREFIX, &id],
                )
                .await
                .unwrap();
            }
            ids.push(id);
        }
        let delete_again = roll < 15;
        if delete_again {
            tx.execute(
                "DELETE FROM outbox WHERE id = ANY($1::text[]::uuid[])",
                &[&ids],
            )
            .await
            .unwrap();
        }
        if roll >= 88 {
            tx.rollback().await.unwrap();
            out.rolled_back.extend(ids);
        } else {
            tx.commit().await.unwrap();
            if delete_again {
                out.deleted_in_transaction += ids.len();
            }
            for id in ids {
                out.committed
                    .insert(id.clone(), (aggregate.clone(), kind.to_string()));
                out.per_aggregate
                    .entry(aggregate.clone())
                    .or_default()
                    .push(id);
            }
            next_seq.insert(aggregate, seq + events);
            committed.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1..6))).await;
    }
    out
}

/// Checks what a `read_committed` consumer of the event topics (records
/// by topic, each in partition and offset order) read against what the
/// application wrote: every committed event is there, on the topic of its
/// aggregate type, keyed by its aggregate, with its id header; none of a
/// rolled-back transaction; each aggregate's events on one partition in
/// commit order; and, when `exactly_once`, each event once (otherwise a
/// repeat may follow, as at-least-once delivery allows). Returns how many
/// records were read.
pub fn assert_delivered(
    topics: &[(String, Vec<Record>)],
    written: &Written,
    exactly_once: bool,
) -> usize {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut per_key: BTreeMap<String, Vec<(i32, String)>> = BTreeMap::new();
    let mut total = 0;
    for (topic, records) in topics {
        for r in records {
            total += 1;
            let id = r
                .header("id")
                .flatten()
                .unwrap_or_else(|| panic!("a record of {topic} has no id header: {r:?}"))
                .to_string();
            assert!(
                !written.rolled_back.contains(&id),
                "event {id} of a rolled-back transaction was published on {topic}"
            );
            let (aggregate, kind) = written.committed.get(&id).unwrap_or_else(|| {
                panic!("event {id} on {topic} is not one the application committed")
            });
            assert!(
                topic.ends_with(&format!(".{kind}")),
                "event {id} of a {kind} is on topic {topic}"
            );
            assert_eq!(r.key, Some(json!(aggregate)), "the key of event {id}");
            let value = r
                .value
                .as_ref()
                .unwrap_or_else(|| panic!("event {id} has no value"));
            assert_eq!(
                value["aggregate"],
                json!(aggregate),
                "the payload of event {id}: {value}"
            );
            *seen.entry(id.clone()).or_default() += 1;
            per_key
                .entry(aggregate.clone())
                .or_default()
                .push((r.partition, id));
        }
    }
    if exactly_once {
        let repeated: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            repeated.is_empty(),
            "with exactly_once, events were published more than once: {repeated:?}"
        );
    }
    let missing: Vec<&String> = written
        .committed
        .keys()
        .filter(|id| !seen.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} committed events are missing, e.g. {:?}",
        missing.len(),
        written.committed.len(),
        missing.first()
    );
    for (aggregate, expected) in &written.per_aggregate {
        let got = per_key
            .get(aggregate)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let partitions: HashSet<i32> = got.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            partitions.len(),
            1,
            "the events of {aggregate} are on several partitions: {partitions:?}"
        );
        // A repeat (at least once) comes again in order after what it
        // repeats; the first time each event appears is commit order.
        let mut first_seen: Vec<&String> = Vec::new();
        let mut known = HashSet::new();
        for (_, id) in got {
            if known.insert(id) {
                first_seen.push(id);
            }
        }
        let expected: Vec<&String> = expected.iter().collect();
        assert_eq!(
            first_seen, expected,
            "the events of {aggregate} are not in commit order"
        );
    }
    assert!(!written.committed.is_empty() && !written.rolled_back.is_empty() && written.deleted_in_transaction > 0,
        "the application wrote too little to check anything: {} committed, {} rolled back, {} deleted in their transaction",
        written.committed.len(), written.rolled_back.len(), written.deleted_in_transaction);
    total
}

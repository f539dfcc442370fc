//! The Kafka sink's transaction metadata and heartbeats, against the broker
//! started by `dev/kafka.sh`: BEGIN and END records that count what each
//! PostgreSQL transaction wrote, the `transaction` block in every change
//! record, and heartbeat records while the database is quiet.
//!
//! Each test has its own database, slot and topic prefix.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::kafka::{fold, kafka_config, op, read_any, read_topic, run_prefix, Format, Record};
use support::load::{create_table, pg_rows, Load};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(180);

/// What a test transaction wrote: its xid and the records it made per table.
type Written = BTreeMap<u32, BTreeMap<String, u64>>;

/// An END record's `data_collections`: change records per table.
fn collection_counts(end: &Value) -> BTreeMap<String, u64> {
    end["data_collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["data_collection"].as_str().unwrap().to_string(),
                c["event_count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Runs `statements` in one transaction and returns its xid as records
/// carry it (the 32-bit part of `txid_current()`).
async fn commit_returning_xid(client: &tokio_postgres::Client, statements: &str) -> u32 {
    let rows = client
        .simple_query(&format!(
            "BEGIN; {statements}; SELECT txid_current()::text; COMMIT;"
        ))
        .await
        .unwrap();
    let xid = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap();
    (xid.parse::<u64>().unwrap() & 0xffff_ffff) as u32
}

/// Transactions that change two rows of `pairs` and move a row of `notes`
/// to a new key (a delete and a create in Debezium's form) or update it,
/// one after another until stopped; returns what each committed transaction
/// wrote per table. (The load of `items` deletes rows; these tables keep
/// theirs, so every statement changes exactly one row.)
struct Mixed {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Written>,
}

impl Mixed {
    fn start(db: &'static str) -> Mixed {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let client = connect(db).await;
            // Transactions that start once the slot exists are streamed;
            // earlier ones reach Kafka only as snapshot reads.
            loop {
                let slot = client
                    .query(
                        "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
                        &[&db],
                    )
                    .await
                    .unwrap();
                if !slot.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let mut written = Written::new();
            let mut n: i64 = 0;
            while !flag.load(Ordering::Relaxed) {
                n += 1;
                let moves = n % 3 == 0;
                let note = if moves {
                    format!("UPDATE notes SET id = id + 100000 WHERE id = (SELECT min(id) FROM notes WHERE id > {})", n % 50)
                } else {
                    "UPDATE notes SET val = val + 1 WHERE id = (SELECT max(id) FROM notes)"
                        .to_string()
                };
                let sql = format!(
                    "UPDATE pairs SET val = val + 1 WHERE id = {}; UPDATE pairs SET val = val + 1 WHERE id = {}; {note}",
                    1 + n % 100,
                    101 + n % 100
                );
                let xid = commit_returning_xid(&client, &sql).await;
                let per_table = written.entry(xid).or_default();
                per_table.insert("public.pairs".into(), 2);
                per_table.insert("public.notes".into(), if moves { 2 } else { 1 });
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            written
        });
        Mixed { stop, task }
    }

    async fn stop(self) -> Written {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// One transaction as its BEGIN and END records and its change records
/// tell it.
#[derive(Default, Debug)]
struct Told {
    begins: Vec<(i32, i64)>,
    ends: Vec<(i32, i64, Value)>,
    /// `(table, total_order, data_collection_order)` of each change record.
    records: Vec<(String, i64, i64)>,
}

/// Reads the transaction topic and the change records' blocks, by
/// transaction id. Panics when a change record (not a snapshot read, not a
/// tombstone) lacks its block, or a block's id disagrees with the record's
/// own txid and LSN.
async fn told(prefix: &str, tables: &[&str], format: Format) -> BTreeMap<String, Told> {
    let payload = |v: &Value| -> Value {
        match format {
            Format::Json => v.clone(),
            Format::JsonSchema => v["payload"].clone(),
        }
    };
    let mut out: BTreeMap<String, Told> = BTreeMap::new();
    for r in read_topic(&format!("{prefix}.transaction")).await {
        let key = payload(r.key.as_ref().expect("transaction records have keys"));
        let value = payload(r.value.as_ref().expect("transaction records have values"));
        let id = value["id"].as_str().unwrap().to_string();
        assert_eq!(key["id"], value["id"], "key and value of {id}");
        assert_eq!(
            id,
            format!("{}:{}", r.txid, r.lsn),
            "id of a transaction record"
        );
        let t = out.entry(id.clone()).or_default();
        match value["status"].as_str() {
            Some("BEGIN") => {
                assert!(value["event_count"].is_null() && value["data_collections"].is_null());
                t.begins.push((r.partition, r.offset));
            }
            Some("END") => t.ends.push((r.partition, r.offset, value)),
            other => panic!("transaction {id}: status {other:?}"),
        }
    }
    for table in tables {
        for r in read_topic(&format!("{prefix}.{table}")).await {
            let Some(v) = &r.value else { continue };
            if op(&r) == Some("r") {
                assert!(
                    payload(v)["transaction"].is_null(),
                    "a snapshot read has no block: {v}"
                );
                continue;
            }
            let block = &payload(v)["transaction"];
            let id = block["id"].as_str().unwrap_or_else(|| {
                panic!("a change record of {table} without a transaction block: {v}")
            });
            assert_eq!(
                id,
                format!("{}:{}", r.txid, r.lsn),
                "block of a {table} record"
            );
            out.entry(id.to_string()).or_default().records.push((
                table.to_string(),
                block["total_order"].as_i64().unwrap(),
                block["data_collection_order"].as_i64().unwrap(),
            ));
        }
    }
    out
}

/// Every transaction has exactly one BEGIN, then one END (`exactly`), or at
/// least one of each; the END counts the change records carrying its id,
/// per table, and their orders run 1..=n without gaps (once each with
/// `exactly`).
fn assert_consistent(told: &BTreeMap<String, Told>, exactly: bool) {
    for (id, t) in told {
        if exactly {
            assert_eq!(
                t.begins.len(),
                1,
                "transaction {id}: BEGIN records {:?}",
                t.begins
            );
            assert_eq!(
                t.ends.len(),
                1,
                "transaction {id}: END records {:?}",
                t.ends
            );
        } else {
            assert!(
                !t.begins.is_empty() && !t.ends.is_empty(),
                "transaction {id}: {t:?}"
            );
        }
        let (bp, bo) = t.begins[0];
        let (ep, eo, end) = &t.ends[0];
        assert!(
            bp == *ep && bo < *eo,
            "transaction {id}: BEGIN at {bp}/{bo}, END at {ep}/{eo}"
        );
        let total: BTreeSet<i64> = t.records.iter().map(|r| r.1).collect();
        let count = end["event_count"].as_i64().unwrap();
        assert_eq!(
            total,
            (1..=count).collect(),
            "transaction {id}: total_order of its records"
        );
        if exactly {
            assert_eq!(
                t.records.len() as i64,
                count,
                "transaction {id}: records written twice"
            );
        }
        let mut per_table: BTreeMap<&str, BTreeSet<i64>> = BTreeMap::new();
        for (table, _, order) in &t.records {
            per_table.entry(table).or_default().insert(*order);
        }
        let counted = collection_counts(end);
        let seen: BTreeMap<String, u64> = per_table
            .iter()
            .map(|(t, o)| (t.to_string(), o.len() as u64))
            .collect();
        assert_eq!(counted, seen, "transaction {id}: END's data_collections");
        for (table, orders) in per_table {
            assert_eq!(
                orders,
                (1..=orders.len() as i64).collect(),
                "transaction {id}: data_collection_order of {table}"
            );
        }
    }
}

/// With `exactly_once`, under a write load and four kill -9 restarts, with
/// small batches so that Kafka transactions end inside PostgreSQL ones:
/// every PostgreSQL transaction that changed the tables has one BEGIN and
/// one END in the committed log, the END counts exactly the change records
/// that carry the transaction's id, and for the test's own two-table
/// transactions those counts are what the transaction did.
#[tokio::test(flavor = "multi_thread")]
async fn transaction_metadata_is_written_once_across_kill_9() {
    let db = "e2e_kafka_txmeta";
    let client = fresh_db(db).await;
    create_table(&client, "items", 1_000).await;
    create_table(&client, "notes", 200).await;
    create_table(&client, "pairs", 200).await;
    let dir = scratch(db);
    let prefix = run_prefix(db);
    let config = kafka_config(
        db,
        &["public.items", "public.notes", "public.pairs"],
        &dir,
        &prefix,
        "partitions = 3\nexactly_once = true\ntransaction_metadata = true",
    ) + "\n[pipeline]\nbatch_changes = 64\n";

    let mixed = Mixed::start(db);
    support::chaos::kill_9_under_load(&client, db, &dir, &config, 4, 150, CATCH_UP).await;
    let written = mixed.stop().await;
    let mut courier = CourierProc::start(&dir, &config);
    wait_caught_up(&client, db, CATCH_UP).await;
    assert!(courier.stop().success(), "log:\n{}", courier.log());

    let told = told(
        &prefix,
        &["public.items", "public.notes", "public.pairs"],
        Format::Json,
    )
    .await;
    assert_consistent(&told, true);
    let by_xid: BTreeMap<u32, &Told> = told
        .iter()
        .map(|(id, t)| (id.split(':').next().unwrap().parse().unwrap(), t))
        .collect();
    // A transaction that committed before the snapshot that finally
    // completed (the first two kills land in snapshots) is in the topics
    // as snapshot reads only; every other one must have been counted
    // (assert_consistent already failed any record without its BEGIN/END).
    let mut checked = 0;
    for (xid, tables) in &written {
        let Some(t) = by_xid.get(xid) else {
            continue;
        };
        checked += 1;
        let counted = collection_counts(&t.ends[0].2);
        assert_eq!(&counted, tables, "transaction {xid}'s END");
    }
    assert!(
        checked > 20,
        "only {checked} of {} two-table transactions streamed",
        written.len()
    );
    for table in ["items", "notes", "pairs"] {
        let records: Vec<Record> = read_topic(&format!("{prefix}.public.{table}")).await;
        assert_eq!(
            fold(&records, Format::Json),
            pg_rows(&client, table).await,
            "{table}"
        );
    }
    eprintln!(
        "{} transactions, {checked} of them the test's two-table ones ({} committed)",
        told.len(),
        written.len()
    );
    drop_db(db).await;
}

/// `format = "json-schema"`: the BEGIN and END records and the heartbeats
/// carry Debezium's Connect schemas, change records a filled `transaction`
/// block, and heartbeats keep coming while nothing changes.
#[tokio::test(flavor = "multi_thread")]
async fn json_schema_metadata_and_heartbeats_follow_debezium() {
    let db = "e2e_kafka_heartbeat";
    let client = fresh_db(db).await;
    create_table(&client, "items", 300).await;
    let dir = scratch(db);
    let prefix = run_prefix(db);
    let config = kafka_config(
        db,
        &["public.items"],
        &dir,
        &prefix,
        "format = \"json-schema\"\ntransaction_metadata = true\nheartbeat_interval = \"200ms\"",
    );
    let mut courier = CourierProc::start(&dir, &config);
    wait_caught_up(&client, db, CATCH_UP).await;
    let load = Load::start(db, "items", 2);
    load.commit_more(200, CATCH_UP).await;
    load.stop().await;
    wait_caught_up(&client, db, CATCH_UP).await;
    let heartbeats = format!("__debezium-heartbeat.{prefix}");
    let quiet_from = read_any(&heartbeats).await.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(courier.stop().success(), "log:\n{}", courier.log());

    let told = told(&prefix, &["public.items"], Format::JsonSchema).await;
    assert_consistent(&told, false);
    // Some of the load's transactions change no row (a row another deleted).
    assert!(told.len() >= 100, "{} transactions", told.len());
    for r in read_topic(&format!("{prefix}.transaction")).await {
        let (k, v) = (r.key.unwrap(), r.value.unwrap());
        assert_eq!(
            k["schema"]["name"],
            "io.debezium.connector.common.TransactionMetadataKey"
        );
        assert_eq!(
            v["schema"]["name"],
            "io.debezium.connector.common.TransactionMetadataValue"
        );
    }

    let beats = read_any(&heartbeats).await;
    assert!(
        beats.len() >= quiet_from + 5,
        "{} heartbeats in 2 s of quiet (every 200 ms)",
        beats.len() - quiet_from
    );
    let mut last = 0;
    for b in &beats {
        let (k, v) = (b.key.as_ref().unwrap(), b.value.as_ref().unwrap());
        assert_eq!(
            k["schema"]["name"],
            "io.debezium.connector.common.ServerNameKey"
        );
        assert_eq!(k["payload"]["serverName"], prefix.as_str());
        assert_eq!(
            v["schema"]["name"],
            "io.debezium.connector.common.Heartbeat"
        );
        let ts = v["payload"]["ts_ms"].as_i64().unwrap();
        assert!(ts >= last, "heartbeats go back in time: {ts} after {last}");
        last = ts;
    }
    drop_db(db).await;
}

/// The END records of `topic` by transaction id's `txId` part: per table,
/// how many change records the transaction had. Reads any producer's
/// records, with or without Connect schemas.
async fn ends_by_xid(topic: &str) -> BTreeMap<u32, BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for r in read_any(topic).await {
        let Some(v) = r.value else { continue };
        let v = if v.get("schema").is_some() {
            v["payload"].clone()
        } else {
            v
        };
        if v["status"] != "END" {
            continue;
        }
        let id = v["id"].as_str().unwrap();
        let xid: u32 = id.split(':').next().unwrap().parse().unwrap();
        let counts = collection_counts(&v);
        out.insert(xid, counts);
    }
    out
}

/// Side by side with Debezium's PostgreSQL connector
/// (`provide.transaction.metadata=true`) in the dev Connect worker,
/// capturing the same tables: for every transaction of a mixed load
/// (inserts, updates and deletes over two tables, primary-key changes),
/// Courier's END record counts the same records per table as Debezium's.
#[tokio::test(flavor = "multi_thread")]
async fn transaction_counts_match_debeziums() {
    let db: &'static str = "e2e_kafka_txmeta_dbz";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE a (id int PRIMARY KEY, v int); CREATE TABLE b (id int PRIMARY KEY, v int);
             INSERT INTO a SELECT g, g FROM generate_series(1, 50) g;
             INSERT INTO b SELECT g, g FROM generate_series(1, 50) g;",
        )
        .await
        .unwrap();
    let prefix = run_prefix(db).replace('-', "_");
    let dbz_prefix = format!("{prefix}_dbz");
    let settings = support::connect::debezium_postgres(
        db,
        &dbz_prefix,
        &dbz_prefix,
        "public.a,public.b",
        1,
        serde_json::json!({ "provide.transaction.metadata": "true" }),
    );
    let connector = support::connect::Connector::create(&dbz_prefix, settings).await;
    let dir = scratch(db);
    let config = kafka_config(
        db,
        &["public.a", "public.b"],
        &dir,
        &prefix,
        "transaction_metadata = true",
    );
    let mut courier = CourierProc::start(&dir, &config);
    wait_caught_up(&client, db, CATCH_UP).await;
    // Debezium streams what commits after its snapshot (which it writes as
    // op "r" records); its slot moves only when Connect commits offsets.
    for table in ["a", "b"] {
        let topic = format!("{dbz_prefix}.public.{table}");
        wait_until("Debezium's snapshot", CATCH_UP, || async {
            read_any(&topic).await.len() >= 50
        })
        .await;
    }

    let statements = [
        "INSERT INTO a VALUES (1000, 1), (1001, 2); UPDATE b SET v = v + 1 WHERE id <= 3",
        "UPDATE a SET id = id + 2000 WHERE id = 1; DELETE FROM b WHERE id = 4",
        "DELETE FROM a WHERE id BETWEEN 5 AND 7",
        "UPDATE b SET id = id + 2000 WHERE id IN (8, 9); UPDATE a SET v = 0 WHERE id = 10",
        "INSERT INTO b VALUES (3000, 0); UPDATE b SET v = 1 WHERE id = 3000; DELETE FROM b WHERE id = 3000",
        "UPDATE a SET v = v * 2 WHERE id BETWEEN 11 AND 20; INSERT INTO b SELECT g, g FROM generate_series(4000, 4004) g",
    ];
    let mut xids = Vec::new();
    for round in 0..5 {
        for sql in statements {
            let sql = sql.replace("id + 2000", &format!("id + {}", 2000 + round * 10_000));
            let sql = sql.replace(
                "1000, 1), (1001",
                &format!("{}, 1), ({}", 1000 + round * 10, 1001 + round * 10),
            );
            let sql = sql
                .replace("(3000", &format!("({}", 3000 + round))
                .replace("= 3000", &format!("= {}", 3000 + round));
            let sql = sql.replace(
                "generate_series(4000, 4004)",
                &format!(
                    "generate_series({}, {})",
                    4000 + round * 10,
                    4004 + round * 10
                ),
            );
            xids.push(commit_returning_xid(&client, &sql).await);
        }
    }
    wait_caught_up(&client, db, CATCH_UP).await;
    assert!(courier.stop().success(), "log:\n{}", courier.log());
    let ours = ends_by_xid(&format!("{prefix}.transaction")).await;
    // Later rounds repeat deletes and key changes of rows already gone:
    // those transactions change nothing, and PostgreSQL sends neither
    // connector anything for them.
    let changed: Vec<u32> = xids
        .iter()
        .copied()
        .filter(|x| ours.contains_key(x))
        .collect();
    assert!(
        changed.len() >= 20,
        "{} of {} transactions changed rows",
        changed.len(),
        xids.len()
    );
    let dbz_topic = format!("{dbz_prefix}.transaction");
    let deadline = std::time::Instant::now() + CATCH_UP;
    let theirs = loop {
        let theirs = ends_by_xid(&dbz_topic).await;
        if changed.iter().all(|x| theirs.contains_key(x)) {
            break theirs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Debezium wrote END records for {} of the {} transactions Courier wrote them for",
            changed.iter().filter(|x| theirs.contains_key(x)).count(),
            changed.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    connector.delete().await;
    for xid in &xids {
        assert_eq!(
            ours.get(xid),
            theirs.get(xid),
            "transaction {xid}: Courier's END counts (left) and Debezium's (right)"
        );
    }
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&dbz_prefix])
        .await
        .ok();
    drop_db(db).await;
}

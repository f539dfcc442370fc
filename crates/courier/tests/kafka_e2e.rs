//! End to end: PostgreSQL → courier → Kafka, against the broker started by
//! `dev/kafka.sh`, read back by a `read_committed` consumer that is not
//! Courier and folded by key into rows to compare with PostgreSQL's.
//!
//! Each test has its own database, slot and a topic prefix no earlier run
//! used, so they run in parallel with each other and with the sink's own
//! tests.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::kafka::{
    by_key, create_topic, fold, kafka_config, op, read_topic, run_prefix, topic_exists, Format,
    Record,
};
use support::load::{create_table, pg_rows, Load};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(180);

/// Panics naming how `got` (folded from Kafka) differs from `expected`
/// (PostgreSQL's rows).
fn assert_same_rows(what: &str, expected: &BTreeMap<String, Value>, got: &BTreeMap<String, Value>) {
    let support::fold::RowDiff {
        missing,
        extra,
        differing,
    } = support::fold::RowDiff::of(expected, got);
    assert!(
        missing.is_empty() && extra.is_empty() && differing.is_empty(),
        "{what}: {} rows missing (e.g. {:?}), {} resurrected (e.g. {:?}), {} differ{}",
        missing.len(),
        missing.first(),
        extra.len(),
        extra.first(),
        differing.len(),
        differing
            .first()
            .map(|k| format!(
                ", e.g. id {k}: kafka {} vs postgres {}",
                got[*k], expected[*k]
            ))
            .unwrap_or_default(),
    );
    assert!(!expected.is_empty(), "{what}: the table is empty");
}

/// Every key the fold dropped (a row PostgreSQL no longer has) ends in a
/// tombstone that follows its delete; returns how many keys that is.
///
/// "Ends" is by version: a snapshot read of a snapshot resumed after
/// kill -9 may land after the delete, with an older `source.lsn`, so the
/// key's last record among those of its newest LSN is the one that counts.
fn assert_deleted_keys_end_in_tombstones(records: &[Record], format: Format) -> usize {
    let rows = fold(records, format);
    let mut deleted = 0;
    for (key, recs) in by_key(records, format) {
        if rows.contains_key(&key) {
            continue;
        }
        deleted += 1;
        let newest = recs.iter().map(|r| r.lsn).max().unwrap();
        let recs: Vec<&&Record> = recs.iter().filter(|r| r.lsn == newest).collect();
        let last = recs.last().unwrap();
        assert!(
            last.value.is_none(),
            "deleted row {key} ends in {:?}, not a tombstone",
            last.value
        );
        let before = recs.iter().rev().find(|r| r.value.is_some());
        assert!(
            before.is_some_and(|r| op(r) == Some("d")),
            "the tombstone of row {key} does not follow its delete: {before:?}"
        );
    }
    deleted
}

/// Snapshot, then a concurrent write load with four kill -9 restarts of
/// Courier (`format = "json"`, at least once): a consumer folding the topic
/// by key (newest `source.lsn`, later offset on a tie) holds exactly
/// PostgreSQL's rows, and every deleted row's key ends in a tombstone after
/// its delete.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_under_load_json() {
    let db = "e2e_kafka_kill9";
    let client = fresh_db(db).await;
    create_table(&client, "items", 3_000).await;
    let dir = scratch(db);
    let prefix = run_prefix(db);
    let config = kafka_config(db, &["public.items"], &dir, &prefix, "partitions = 3");

    support::chaos::kill_9_under_load(&client, db, &dir, &config, 4, 150, CATCH_UP).await;

    let records = read_topic(&format!("{prefix}.public.items")).await;
    let rows = fold(&records, Format::Json);
    assert_same_rows("after kill -9", &pg_rows(&client, "items").await, &rows);
    let deleted = assert_deleted_keys_end_in_tombstones(&records, Format::Json);
    assert!(deleted > 0, "the load deleted no row: nothing to check");
    eprintln!(
        "{} records, {} rows, {deleted} deleted keys",
        records.len(),
        rows.len()
    );
    drop_db(db).await;
}

/// Transactions that each change 50 rows of `multi` four times, the fourth
/// change repeating the third's values (`SET val = val`): the ids
/// (`courier.txid`) of those that committed.
struct Repeats {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<u32>>,
}

/// Rows each repeat transaction changes (of the 200 of `multi`), and
/// changes per row.
const REPEAT_ROWS: i64 = 50;
const REPEAT_CHANGES: usize = 4;

impl Repeats {
    fn start(db: &'static str) -> Repeats {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut client = connect(db).await;
            // Transactions from here on are streamed, not in the snapshot.
            wait_until("the slot to exist", CATCH_UP, || async {
                client
                    .query_opt(
                        "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND confirmed_flush_lsn IS NOT NULL",
                        &[&db],
                    )
                    .await
                    .unwrap()
                    .is_some()
            })
            .await;
            let mut xids = Vec::new();
            let mut first = 1i64;
            while !flag.load(Ordering::Relaxed) {
                let last = first + REPEAT_ROWS - 1;
                let tx = client.transaction().await.unwrap();
                let xid: i64 = tx
                    .query_one("SELECT txid_current()", &[])
                    .await
                    .unwrap()
                    .get(0);
                for _ in 0..REPEAT_CHANGES - 1 {
                    let n = tx
                        .execute(
                            "UPDATE multi SET val = val + 1 WHERE id BETWEEN $1 AND $2",
                            &[&first, &last],
                        )
                        .await
                        .unwrap();
                    assert_eq!(n, REPEAT_ROWS as u64, "rows {first}..={last} of multi");
                }
                tx.execute(
                    "UPDATE multi SET val = val WHERE id BETWEEN $1 AND $2",
                    &[&first, &last],
                )
                .await
                .unwrap();
                tx.commit().await.unwrap();
                xids.push(xid as u32);
                first = (first + 36) % 150 + 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            xids
        });
        Repeats { stop, task }
    }

    async fn stop(self) -> Vec<u32> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// The streamed records (snapshot reads left out) of each key, split into
/// runs of one transaction each, in offset order; panics if a key's
/// transactions ever go back in LSN (a change written again after later
/// ones).
fn transactions_per_key(records: &[Record], format: Format) -> Vec<(String, Vec<&Record>)> {
    let mut out = Vec::new();
    for (key, recs) in by_key(records, format) {
        let mut last_lsn = 0;
        for r in recs.into_iter().filter(|r| op(r) != Some("r")) {
            assert!(
                r.lsn >= last_lsn,
                "row {key}: a change of LSN {} follows one of LSN {last_lsn}: written twice",
                r.lsn
            );
            if r.lsn > last_lsn {
                out.push((key.clone(), Vec::new()));
            }
            out.last_mut().unwrap().1.push(r);
            last_lsn = r.lsn;
        }
    }
    out
}

/// `exactly_once = true` under the same load and four kill -9 restarts,
/// with small batches so that groups, and so transactions of Kafka, end in
/// the middle of PostgreSQL transactions. The committed log holds every
/// streamed change exactly once, in order: per row, a transaction's changes
/// are exactly the ones it made, no more, no fewer — one create or update,
/// or a delete and its tombstone, for the load's single-change
/// transactions; four updates, the last repeating the third, for the
/// transactions that change a row four times (two records of one row may
/// then be identical in key, LSN, op and value and still be two changes);
/// and no row's changes ever go back in LSN. Folded, both topics equal
/// PostgreSQL.
#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_under_kill_9_writes_each_change_once() {
    let db = "e2e_kafka_eos";
    let client = fresh_db(db).await;
    create_table(&client, "items", 3_000).await;
    create_table(&client, "multi", 200).await;
    let dir = scratch(db);
    let prefix = run_prefix(db);
    let config = kafka_config(
        db,
        &["public.items", "public.multi"],
        &dir,
        &prefix,
        "partitions = 3\nexactly_once = true",
    ) + "\n[pipeline]\nbatch_changes = 64\n";

    let repeats = Repeats::start(db);
    support::chaos::kill_9_under_load(&client, db, &dir, &config, 4, 150, CATCH_UP).await;
    let xids = repeats.stop().await;
    // The repeat transactions committed after that stop are still to write.
    let mut courier = CourierProc::start(&dir, &config);
    wait_caught_up(&client, db, CATCH_UP).await;
    assert!(courier.stop().success(), "log:\n{}", courier.log());

    let items = read_topic(&format!("{prefix}.public.items")).await;
    assert_same_rows(
        "items, exactly once",
        &pg_rows(&client, "items").await,
        &fold(&items, Format::Json),
    );
    for (key, txn) in transactions_per_key(&items, Format::Json) {
        let ops: Vec<Option<&str>> = txn.iter().map(|r| op(r)).collect();
        assert!(
            matches!(ops.as_slice(), [Some("c" | "u")] | [Some("d"), None]),
            "row {key}: transaction {} (LSN {}) wrote {ops:?}, expected one change",
            txn[0].txid,
            txn[0].lsn
        );
    }

    let multi = read_topic(&format!("{prefix}.public.multi")).await;
    assert_same_rows(
        "multi, exactly once",
        &pg_rows(&client, "multi").await,
        &fold(&multi, Format::Json),
    );
    let committed: HashSet<u32> = xids.iter().copied().collect();
    let mut seen: BTreeMap<u32, i64> = BTreeMap::new();
    // Only the repeat transactions change `multi`: each of a row's starts
    // one above where the one before it left the row, or one was lost.
    let mut row_val: BTreeMap<String, i64> = BTreeMap::new();
    for (key, txn) in transactions_per_key(&multi, Format::Json) {
        let txid = txn[0].txid;
        assert!(
            committed.contains(&txid),
            "row {key}: transaction {txid} is not one the test committed"
        );
        let vals: Vec<i64> = txn
            .iter()
            .map(|r| {
                assert_eq!(op(r), Some("u"), "row {key}, transaction {txid}: {r:?}");
                r.value.as_ref().unwrap()["after"]["val"].as_i64().unwrap()
            })
            .collect();
        let v = vals[0];
        assert_eq!(
            vals,
            [v, v + 1, v + 2, v + 2],
            "row {key}: transaction {txid} (LSN {}) changed it four times, the log holds these values",
            txn[0].lsn
        );
        if let Some(prev) = row_val.insert(key.clone(), v + 2) {
            assert_eq!(
                v,
                prev + 1,
                "row {key}: transaction {txid} found val {} but the log left it at {prev}",
                v - 1
            );
        }
        *seen.entry(txid).or_default() += 1;
    }
    for xid in &xids {
        assert_eq!(
            seen.get(xid).copied().unwrap_or(0),
            REPEAT_ROWS,
            "transaction {xid} changed {REPEAT_ROWS} rows four times each"
        );
    }
    assert!(xids.len() > 20, "only {} repeat transactions", xids.len());
    eprintln!(
        "{} + {} records, {} repeat transactions",
        items.len(),
        multi.len(),
        xids.len()
    );
    drop_db(db).await;
}

/// `format = "json-schema"`: every record is a Kafka Connect JsonConverter
/// document (`schema` + `payload`, with Debezium's schema names), and
/// folding the payloads (decimals decoded by their schema) gives
/// PostgreSQL's rows.
#[tokio::test(flavor = "multi_thread")]
async fn json_schema_records_fold_to_postgres_rows() {
    let db = "e2e_kafka_jsonschema";
    let client = fresh_db(db).await;
    create_table(&client, "items", 1_000).await;
    let dir = scratch(db);
    let prefix = run_prefix(db);
    let config = kafka_config(
        db,
        &["public.items"],
        &dir,
        &prefix,
        "format = \"json-schema\"",
    );
    let mut courier = CourierProc::start(&dir, &config);
    wait_caught_up(&client, db, CATCH_UP).await;
    let load = Load::start(db, "items", 2);
    load.commit_more(300, CATCH_UP).await;
    load.stop().await;
    client
        .batch_execute("DELETE FROM items WHERE id % 97 = 0")
        .await
        .unwrap();
    wait_caught_up(&client, db, CATCH_UP).await;
    assert!(courier.stop().success(), "log:\n{}", courier.log());

    let records = read_topic(&format!("{prefix}.public.items")).await;
    let name = format!("{prefix}.public.items");
    for r in &records {
        let key = r.key.as_ref().unwrap();
        assert_eq!(key["schema"]["name"], format!("{name}.Key"), "{key}");
        if let Some(v) = &r.value {
            assert_eq!(v["schema"]["name"], format!("{name}.Envelope"), "{v}");
            assert!(v["payload"]["source"].is_object(), "{v}");
        }
    }
    assert_same_rows(
        "json-schema",
        &pg_rows(&client, "items").await,
        &fold(&records, Format::JsonSchema),
    );
    assert!(assert_deleted_keys_end_in_tombstones(&records, Format::JsonSchema) > 0);
    drop_db(db).await;
}

/// Runs `courier run` on `config` until it exits on its own (within
/// `timeout`): its exit code and log.
async fn run_until_exit(dir: &std::path::Path, config: &str, timeout: Duration) -> (i32, String) {
    let mut courier = CourierProc::start(dir, config);
    let status = courier.wait_exit("courier to stop", timeout).await;
    (status.code().unwrap_or(-1), courier.log())
}

/// An unknown `format` is a configuration error at start: exit 1, and the
/// message names the key and the formats there are.
#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_format_stops_courier_naming_the_key() {
    let db = "e2e_kafka_badformat";
    let client = fresh_db(db).await;
    create_table(&client, "items", 10).await;
    let dir = scratch(db);
    let config = kafka_config(
        db,
        &["public.items"],
        &dir,
        &run_prefix(db),
        "format = \"avro\"",
    );
    let (code, log) = run_until_exit(&dir, &config, Duration::from_secs(60)).await;
    assert_eq!(code, 1, "log:\n{log}");
    let error = log
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in:\n{log}"));
    for words in [
        "sink bus",
        "format: \"avro\"",
        "\"json\"",
        "\"json-schema\"",
    ] {
        assert!(error.contains(words), "no {words:?} in: {error}");
    }
    drop_db(db).await;
}

/// Brokers nobody listens on: `courier check` prints a FAIL line naming
/// them; `courier run` keeps trying, the sink shown as `connecting`.
#[tokio::test(flavor = "multi_thread")]
async fn unreachable_brokers_fail_check_and_are_waited_for_by_run() {
    let db = "e2e_kafka_unreachable";
    let client = fresh_db(db).await;
    create_table(&client, "items", 10).await;
    let dir = scratch(db);
    let brokers = format!("127.0.0.1:{}", free_port());
    let api = free_port();
    let config = sink_config(
        db,
        db,
        &["public.items"],
        &dir,
        "bus",
        &format!("type = \"kafka\"\nbrokers = {brokers:?}"),
    )
    .replace("listen = \"off\"", &format!("listen = \"127.0.0.1:{api}\""));
    let path = dir.join("check.toml");
    std::fs::write(&path, &config).unwrap();

    let (code, out, err) = courier_cmd(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    let fail = out
        .lines()
        .find(|l| l.starts_with("FAIL") && l.contains("sink bus"))
        .unwrap_or_else(|| panic!("no FAIL line for the sink:\n{out}"));
    assert!(fail.contains(&brokers), "{fail}");

    let mut courier = CourierProc::start(&dir, &config);
    let status = || async {
        let resp = reqwest::get(format!("http://127.0.0.1:{api}/v1/status"))
            .await
            .ok()?;
        serde_json::from_str::<Value>(&resp.text().await.ok()?).ok()
    };
    wait_until("the sink to show as connecting", CATCH_UP, || async {
        status()
            .await
            .is_some_and(|s| s["sinks"]["bus"]["state"] == "connecting")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(courier.is_running(), "courier gave up:\n{}", courier.log());
    let s = status().await.unwrap();
    assert_eq!(s["sinks"]["bus"]["state"], "connecting", "{s}");
    courier.stop();
    drop_db(db).await;
}

/// `courier check` looks at every topic the sink will write: one made by
/// someone else with other partitions and no compaction is noted with the
/// settings it differs from (and the check passes: Courier uses it as it
/// is); a missing one is reported as to be created, without creating it;
/// what cannot work fails naming topic and fix: a replication factor the
/// cluster cannot give, creation off, an exactly-once positions topic that
/// is not compacted.
#[tokio::test(flavor = "multi_thread")]
async fn check_notes_topics_that_differ_and_fails_what_cannot_work() {
    let db = "e2e_kafka_check_topics";
    let client = fresh_db(db).await;
    for t in ["items", "orders", "fresh"] {
        create_table(&client, t, 1).await;
    }
    let dir = scratch(db);
    let prefix = run_prefix(db);
    let topic = |t: &str| format!("{prefix}.public.{t}");
    create_topic(&topic("items"), 1, false).await;
    create_topic(&topic("orders"), 3, true).await;
    let offsets = format!("{prefix}-offsets");
    create_topic(&offsets, 1, false).await;
    let tables = ["public.items", "public.orders", "public.fresh"];
    let check = |extra: &str| {
        let config = kafka_config(db, &tables, &dir, &prefix, extra);
        let path = dir.join("check.toml");
        std::fs::write(&path, &config).unwrap();
        let (code, out, err) = courier_cmd(&["check", "--config", path.to_str().unwrap()]);
        let line = |t: &str| {
            let subject = format!("sink bus topic {t}:");
            out.lines()
                .find(|l| l.contains(&subject))
                .unwrap_or_else(|| panic!("no line for {t}:\n{out}\n{err}"))
                .to_string()
        };
        let lines: Vec<String> = [topic("items"), topic("orders"), topic("fresh")]
            .iter()
            .map(|t| line(t))
            .collect();
        let positions = out
            .lines()
            .find(|l| l.contains(&format!("sink bus topic {offsets}:")))
            .map(str::to_string);
        (code, out, lines, positions)
    };

    let (code, out, lines, _) = check("partitions = 3\ncompact = true");
    assert_eq!(code, 0, "notes do not fail the check:\n{out}");
    let [items, orders, fresh] = &lines[..] else {
        unreachable!()
    };
    assert!(items.starts_with("note"), "{items}");
    for words in [
        "1 partition(s), not 3 (partitions = 3)",
        "cleanup.policy=delete, not compact (compact = true)",
        "uses it as it is",
    ] {
        assert!(items.contains(words), "no {words:?} in: {items}");
    }
    assert!(
        orders.starts_with("ok") && orders.contains("3 partition(s)"),
        "{orders}"
    );
    assert!(
        fresh.starts_with("ok") && fresh.contains("will create it (3 partition(s)"),
        "{fresh}"
    );
    assert!(
        !topic_exists(&topic("fresh")).await,
        "check created topic {}",
        topic("fresh")
    );

    let (code, out, lines, offsets_line) = check(&format!(
        "replication_factor = 5\nexactly_once = true\noffsets_topic = {offsets:?}"
    ));
    assert_eq!(code, 1, "{out}");
    let [items, _, fresh] = &lines[..] else {
        unreachable!()
    };
    assert!(
        items.contains("replication factor 1, not 5 (replication_factor = 5)"),
        "{items}"
    );
    assert!(fresh.starts_with("FAIL"), "{fresh}");
    assert!(
        fresh.contains("lower replication_factor to at most 1"),
        "{fresh}"
    );
    let offsets_line = offsets_line.unwrap_or_else(|| panic!("no line for {offsets}:\n{out}"));
    assert!(offsets_line.starts_with("FAIL"), "{offsets_line}");
    assert!(
        offsets_line.contains("cleanup.policy=compact"),
        "{offsets_line}"
    );

    let (code, out, lines, _) = check("create_topics = false");
    assert_eq!(code, 1, "{out}");
    let fresh = &lines[2];
    assert!(fresh.starts_with("FAIL"), "{fresh}");
    assert!(fresh.contains("set create_topics = true"), "{fresh}");
    drop_db(db).await;
}

/// With `create_topics = false` and no topic, Courier stops non-zero
/// naming the topic, the table and the fix.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_topic_without_creation_stops_courier_with_the_fix() {
    let db = "e2e_kafka_notopic";
    let client = fresh_db(db).await;
    create_table(&client, "items", 10).await;
    let dir = scratch(db);
    let prefix = run_prefix(db);
    let config = kafka_config(
        db,
        &["public.items"],
        &dir,
        &prefix,
        "create_topics = false",
    );
    let (code, log) = run_until_exit(&dir, &config, CATCH_UP).await;
    assert_ne!(code, 0, "log:\n{log}");
    let topic = format!("topic {prefix}.public.items");
    for words in [
        topic.as_str(),
        "table public.items",
        "set create_topics = true",
    ] {
        assert!(log.contains(words), "no {words:?} in:\n{log}");
    }
    drop_db(db).await;
}

/// A row whose record is larger than the broker takes (a ~2 MB text over
/// the 1 MB `message.max.bytes`): Courier stops non-zero naming the table,
/// the change's LSN and the setting to raise.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_over_the_size_limit_stops_courier_with_the_fix() {
    let db = "e2e_kafka_toolarge";
    let client = fresh_db(db).await;
    create_table(&client, "items", 10).await;
    let dir = scratch(db);
    let prefix = run_prefix(db);
    let config = kafka_config(db, &["public.items"], &dir, &prefix, "");
    let mut courier = CourierProc::start(&dir, &config);
    wait_caught_up(&client, db, CATCH_UP).await;
    let lsn = |row: tokio_postgres::Row| -> u64 {
        let text: String = row.get(0);
        let (hi, lo) = text.split_once('/').unwrap();
        (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
    };
    let before = lsn(client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap());
    client
        .batch_execute("INSERT INTO items VALUES (100, 1, repeat('x', 2000000), 1)")
        .await
        .unwrap();
    let after = lsn(client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap());
    let code = courier
        .wait_exit("courier to stop on the large record", CATCH_UP)
        .await
        .code();
    let log = courier.log();
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}, log:\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains("max.message.bytes"))
        .unwrap_or_else(|| panic!("no fix naming max.message.bytes in:\n{log}"));
    assert!(line.contains("table public.items"), "{line}");
    let named = line
        .split("LSN ")
        .nth(1)
        .and_then(|s| s.split(|c: char| c != '/' && !c.is_ascii_hexdigit()).next())
        .unwrap_or_else(|| panic!("no LSN in: {line}"));
    let (hi, lo) = named.split_once('/').unwrap();
    let named = (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap();
    assert!(
        (before..=after).contains(&named),
        "LSN {named} is not that of the insert ({before}..={after}): {line}"
    );
    drop_db(db).await;
}

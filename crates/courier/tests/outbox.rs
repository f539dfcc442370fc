//! End to end: the outbox event router. An application writes its orders
//! and their events in the same transactions (some rolled back, some
//! deleting their outbox rows again before committing); Courier routes the
//! events into Kafka (the broker of `dev/kafka.sh`), where a
//! `read_committed` consumer that is not Courier checks them against what
//! the application committed, across kill -9. Also: the
//! `pg_logical_emit_message` path against the table path, bad input, the
//! file sink's event lines, and `courier check`.
//!
//! Each test has its own database, slot and a topic prefix no earlier run
//! used.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value};
use support::kafka::{fold, kafka_config, read_topic, run_prefix, Format, Record};
use support::outbox::{assert_delivered, App, Written, MESSAGE_PREFIX, SCHEMA};
use support::seed::seeded_rng;
use support::*;
use tokio_postgres::Client;

const CATCH_UP: Duration = Duration::from_secs(180);

/// `[outbox.NAME]` routing `source` (`table = ...` or `messages = ...`)
/// into the sink `bus`, on topics `<prefix>.<kind>.<aggregatetype>`.
fn router(name: &str, source: &str, prefix: &str, kind: &str, extra: &str) -> String {
    format!(
        "\n[outbox.{name}]\n{source}\nsink = \"bus\"\ntopic = \"{prefix}.{kind}.{{aggregatetype}}\"\n{extra}\n"
    )
}

/// The event topics of `prefix` and `kind`, one per aggregate type.
async fn event_topics(prefix: &str, kind: &str) -> Vec<(String, Vec<Record>)> {
    let mut out = Vec::new();
    for aggregate in ["order", "customer"] {
        let topic = format!("{prefix}.{kind}.{aggregate}");
        let records = read_topic(&topic).await;
        out.push((topic, records));
    }
    out
}

/// Waits until Courier created its slot and streams.
async fn wait_streaming(courier: &CourierProc, times: usize) {
    wait_until("courier to stream", CATCH_UP, || async {
        courier.log().matches("streaming changes").count() >= times
    })
    .await;
}

/// The orders as PostgreSQL holds them, as the Kafka sink's change records
/// fold them.
async fn pg_orders(client: &Client) -> BTreeMap<String, Value> {
    client
        .query("SELECT id, status, total::text, version FROM orders", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let id: i64 = r.get(0);
            let row = json!({"id": id, "status": r.get::<_, String>(1),
                             "total": r.get::<_, String>(2), "version": r.get::<_, i32>(3)});
            (id.to_string(), row)
        })
        .collect()
}

/// The application writes while Courier is killed with SIGKILL three times
/// and restarted; then it writes more, and Courier catches up.
async fn write_through_kills(
    db: &str,
    client: &Client,
    dir: &std::path::Path,
    config: &str,
    messages: bool,
) -> Written {
    let mut rng = seeded_rng(&format!("kill -9 timings of {db}"));
    let mut courier = CourierProc::start(dir, config);
    // Events committed before the slot exists are not in its stream.
    wait_streaming(&courier, 1).await;
    let app = App::start(db, 4, messages);
    for round in 1..=3 {
        wait_streaming(&courier, round).await;
        tokio::time::sleep(Duration::from_millis(300 + rng.gen_range(0..1500))).await;
        courier.kill9();
        courier.restart();
    }
    wait_streaming(&courier, 4).await;
    app.commit_more(100, CATCH_UP).await;
    let written = app.stop().await;
    wait_caught_up(client, db, CATCH_UP).await;
    assert!(courier.stop().success(), "log:\n{}", courier.log());
    written
}

/// With `exactly_once`, across three kill -9 restarts under the
/// application's load, a `read_committed` consumer sees every committed
/// event exactly once, none of a rolled-back transaction (and every event
/// whose outbox row its transaction deleted again), each aggregate's
/// events on one partition in commit order; the orders' own change records,
/// written by the same sink in the same Kafka transactions, fold to
/// PostgreSQL's rows.
#[tokio::test(flavor = "multi_thread")]
async fn each_committed_event_reaches_kafka_once_in_commit_order_across_kill_9() {
    let db = "e2e_outbox_eos";
    let client = fresh_db(db).await;
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = scratch(db);
    let prefix = run_prefix(db);
    let config = kafka_config(
        db,
        &["public.orders"],
        &dir,
        &prefix,
        "partitions = 3\nexactly_once = true",
    ) + &router(
        "orders",
        "table = \"public.outbox\"",
        &prefix,
        "outbox",
        "expand_json_payload = true",
    ) + "\n[pipeline]\nbatch_changes = 64\n";

    let written = write_through_kills(db, &client, &dir, &config, false).await;

    let read = assert_delivered(&event_topics(&prefix, "outbox").await, &written, true);
    let orders = fold(
        &read_topic(&format!("{prefix}.public.orders")).await,
        Format::Json,
    );
    assert_eq!(
        orders,
        pg_orders(&client).await,
        "the orders' change records"
    );
    let left: i64 = client
        .query_one("SELECT count(*) FROM outbox", &[])
        .await
        .unwrap()
        .get(0);
    eprintln!(
        "{read} events read, {} committed ({} of them deleted in their transaction, {left} rows left in outbox), {} rolled back",
        written.committed.len(),
        written.deleted_in_transaction,
        written.rolled_back.len()
    );
    drop_db(db).await;
}

/// Without `exactly_once` (at least once), across three kill -9 restarts:
/// no committed event is missing, none of a rolled-back transaction
/// appears, and each aggregate's events are in commit order (a repeat
/// after a restart comes again in order, and consumers deduplicate on the
/// `id` header).
#[tokio::test(flavor = "multi_thread")]
async fn no_committed_event_is_lost_across_kill_9() {
    let db = "e2e_outbox_kill9";
    let client = fresh_db(db).await;
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = scratch(db);
    let prefix = run_prefix(db);
    let config = kafka_config(db, &[], &dir, &prefix, "partitions = 2")
        + &router(
            "orders",
            "table = \"public.outbox\"",
            &prefix,
            "outbox",
            "expand_json_payload = true",
        );

    let written = write_through_kills(db, &client, &dir, &config, false).await;

    let read = assert_delivered(&event_topics(&prefix, "outbox").await, &written, false);
    eprintln!(
        "{read} records for {} committed events",
        written.committed.len()
    );
    drop_db(db).await;
}

/// The same events, written as outbox rows and, in the same transactions,
/// as `pg_logical_emit_message(true, 'orders', <the row as JSON>)`: the
/// message routers publish exactly the records the table routers publish
/// (partition, key, value, headers, timestamp), with and without
/// `expand_json_payload`. A non-transactional message is not an event.
#[tokio::test(flavor = "multi_thread")]
async fn messages_make_the_same_events_as_the_table() {
    let db = "e2e_outbox_messages";
    let client = fresh_db(db).await;
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = scratch(db);
    let prefix = run_prefix(db);
    let shared = "columns = { timestamp = \"created_at\" }\n\
                  additional = [{ column = \"type\", placement = \"header\", name = \"eventType\" }]";
    let expand = format!("expand_json_payload = true\n{shared}");
    let messages = format!("messages = \"{MESSAGE_PREFIX}\"");
    let config = kafka_config(db, &[], &dir, &prefix, "partitions = 2")
        + &router(
            "rows",
            "table = \"public.outbox\"",
            &prefix,
            "rows",
            &expand,
        )
        + &router("messages", &messages, &prefix, "messages", &expand)
        + &router(
            "rows_raw",
            "table = \"public.outbox\"",
            &prefix,
            "rows_raw",
            shared,
        )
        + &router("messages_raw", &messages, &prefix, "messages_raw", shared);

    let mut courier = CourierProc::start(&dir, &config);
    wait_streaming(&courier, 1).await;
    let app = App::start(db, 2, true);
    app.commit_more(300, CATCH_UP).await;
    client
        .batch_execute(&format!(
            "SELECT pg_logical_emit_message(false, '{MESSAGE_PREFIX}', '{{\"id\": \"not-an-event\"}}')"
        ))
        .await
        .unwrap();
    let written = app.stop().await;
    wait_caught_up(&client, db, CATCH_UP).await;
    assert!(courier.stop().success(), "log:\n{}", courier.log());
    assert!(
        courier
            .log()
            .contains("non-transactional pg_logical_emit_message"),
        "the non-transactional message is reported: {}",
        courier.log()
    );

    assert_delivered(&event_topics(&prefix, "rows").await, &written, false);
    for (table_kind, message_kind) in [("rows", "messages"), ("rows_raw", "messages_raw")] {
        let from_rows = event_topics(&prefix, table_kind).await;
        let from_messages = event_topics(&prefix, message_kind).await;
        for ((rt, rows), (mt, msgs)) in from_rows.iter().zip(&from_messages) {
            let shape = |r: &Record| {
                (
                    r.partition,
                    r.key.clone(),
                    r.value.clone(),
                    r.headers.clone(),
                    r.timestamp_ms,
                )
            };
            let rows: Vec<_> = rows.iter().map(shape).collect();
            let msgs: Vec<_> = msgs.iter().map(shape).collect();
            assert_eq!(rows.len(), msgs.len(), "{rt} and {mt} hold as many records");
            for (i, (r, m)) in rows.iter().zip(&msgs).enumerate() {
                assert_eq!(r, m, "record {i} of {rt} and of {mt}");
            }
            assert!(!rows.is_empty(), "{rt} is empty");
        }
    }
    // Without expand_json_payload the value is the string holding the
    // document, as Debezium's EventRouter sends a jsonb column.
    let expanded = &event_topics(&prefix, "rows").await[0].1;
    let raw = &event_topics(&prefix, "rows_raw").await[0].1;
    for (e, r) in expanded.iter().zip(raw) {
        let text = r
            .value
            .as_ref()
            .and_then(Value::as_str)
            .expect("a string value");
        assert_eq!(serde_json::from_str::<Value>(text).ok(), e.value);
        assert!(e
            .header("eventType")
            .flatten()
            .is_some_and(|t| t.ends_with(".changed")));
    }
    drop_db(db).await;
}

/// An outbox table whose payload is `text`, routed with
/// `expand_json_payload`: an event whose payload is not JSON stops Courier
/// with a message naming the router, table, event id, LSN and fix (never
/// the payload), and nothing from it on is published or acknowledged. With
/// `dead_letter_topic` set, the next run sends it (and an event whose
/// routing value makes an invalid topic name) there and routes the rest.
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_stops_with_the_fix_or_goes_to_the_dead_letter_topic() {
    let db = "e2e_outbox_bad";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE outbox (id text PRIMARY KEY, aggregatetype text, aggregateid text, type text, payload text)",
        )
        .await
        .unwrap();
    let dir = scratch(db);
    let prefix = run_prefix(db);
    let base = kafka_config(db, &[], &dir, &prefix, "");
    let routed = |extra: &str| {
        base.clone()
            + &router(
                "orders",
                "table = \"public.outbox\"",
                &prefix,
                "outbox",
                &format!("expand_json_payload = true\n{extra}"),
            )
    };
    let insert = |id: &str, kind: &str, payload: &str| {
        format!("INSERT INTO outbox VALUES ('{id}', '{kind}', 'a-{id}', 'created', '{payload}')")
    };
    let ids = |records: &[Record]| -> Vec<String> {
        records
            .iter()
            .map(|r| r.header("id").flatten().unwrap_or_default().to_string())
            .collect()
    };

    let mut courier = CourierProc::start(&dir, &routed(""));
    wait_streaming(&courier, 1).await;
    client
        .batch_execute(&insert("e1", "order", "{\"n\": 1}"))
        .await
        .unwrap();
    wait_caught_up(&client, db, CATCH_UP).await;
    client
        .batch_execute(&format!(
            "{}; {}",
            insert("e2", "order", "{\"card\": \"4111 1111\""),
            insert("e3", "order", "{\"n\": 3}")
        ))
        .await
        .unwrap();
    let status = courier
        .wait_exit("courier to stop at the bad event", CATCH_UP)
        .await;
    assert!(!status.success());
    let log = courier.log();
    for part in [
        "outbox orders (table public.outbox): event \"e2\"",
        "not valid JSON",
        "LSN",
        "dead_letter_topic",
    ] {
        assert!(log.contains(part), "{part:?} is not in the log:\n{log}");
    }
    assert!(!log.contains("4111"), "the log shows the payload:\n{log}");
    let topic = format!("{prefix}.outbox.order");
    assert_eq!(
        ids(&read_topic(&topic).await),
        ["e1"],
        "nothing from the bad event on is published"
    );

    let dead = format!("{prefix}.outbox.dead");
    let mut courier = CourierProc::start(&dir, &routed(&format!("dead_letter_topic = \"{dead}\"")));
    client
        .batch_execute(&format!(
            "{}; {}",
            insert("e4", "order items", "{\"n\": 4}"),
            insert("e5", "order", "{\"n\": 5}")
        ))
        .await
        .unwrap();
    wait_caught_up(&client, db, CATCH_UP).await;
    assert!(courier.stop().success(), "log:\n{}", courier.log());
    assert_eq!(ids(&read_topic(&topic).await), ["e1", "e3", "e5"]);
    let dead_letters = read_topic(&dead).await;
    assert_eq!(ids(&dead_letters), ["e2", "e4"]);
    for (r, reason) in dead_letters.iter().zip(["not valid JSON", "topic"]) {
        let v = r.value.as_ref().unwrap();
        assert_eq!(v["router"], "orders");
        assert_eq!(v["table"], "public.outbox");
        assert_eq!(v["lsn"].as_u64(), Some(r.lsn));
        assert!(v["reason"].as_str().unwrap().contains(reason), "{v}");
        assert_eq!(v["fields"]["id"], r.header("id").flatten().unwrap());
    }
    drop_db(db).await;
}

/// An additional column placed as the partition chooses each event's
/// partition; a partition the topic does not have stops Courier with the
/// fix instead of retrying for ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_column_chooses_the_partition_and_a_missing_one_stops() {
    let db = "e2e_outbox_partition";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE outbox (id text PRIMARY KEY, aggregatetype text, aggregateid text, payload jsonb, shard int)",
        )
        .await
        .unwrap();
    let dir = scratch(db);
    let prefix = run_prefix(db);
    let config = kafka_config(db, &[], &dir, &prefix, "partitions = 2")
        + &router(
            "orders",
            "table = \"public.outbox\"",
            &prefix,
            "outbox",
            "additional = [{ column = \"shard\", placement = \"partition\" }]",
        );
    let mut courier = CourierProc::start(&dir, &config);
    wait_streaming(&courier, 1).await;
    client
        .batch_execute(
            "INSERT INTO outbox VALUES ('e1', 'order', 'a', '{}', 1), ('e2', 'order', 'a', '{}', 0)",
        )
        .await
        .unwrap();
    wait_caught_up(&client, db, CATCH_UP).await;
    let placed: Vec<(String, i32)> = read_topic(&format!("{prefix}.outbox.order"))
        .await
        .iter()
        .map(|r| (r.header("id").flatten().unwrap().to_string(), r.partition))
        .collect();
    assert_eq!(placed, [("e2".to_string(), 0), ("e1".to_string(), 1)]);
    client
        .batch_execute("INSERT INTO outbox VALUES ('e3', 'order', 'a', '{}', 7)")
        .await
        .unwrap();
    let status = courier
        .wait_exit("courier to stop at the missing partition", CATCH_UP)
        .await;
    assert!(!status.success());
    let log = courier.log();
    assert!(
        log.contains("chose a partition topic") && log.contains("add partitions"),
        "{log}"
    );
    drop_db(db).await;
}

/// The file sink writes one JSON line per event beside the change
/// envelopes of its tables. A `source.tables` pattern that matches the
/// outbox table captures it as events only; its deletes and (with the
/// default `on_update`) updates make no event. The metrics count the
/// events per router and topic, and what was skipped.
#[tokio::test(flavor = "multi_thread")]
async fn the_file_sink_writes_one_line_per_event() {
    let db = "e2e_outbox_file";
    let client = fresh_db(db).await;
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = scratch(db);
    let api = format!("127.0.0.1:{}", free_port());
    let config = file_config(db, db, &["public.*"], &dir, "")
        .replace("listen = \"off\"", &format!("listen = \"{api}\""))
        + "\n[outbox.orders]\ntable = \"public.outbox\"\nsink = \"out\"\nexpand_json_payload = true\n";
    let mut courier = CourierProc::start(&dir, &config);
    wait_streaming(&courier, 1).await;
    client
        .batch_execute(
            "BEGIN;
             INSERT INTO orders VALUES (1, 'open', 10, 1);
             INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
                 VALUES ('00000000-0000-0000-0000-000000000001', 'order', '1', 'order.created', '{\"total\": 10}');
             COMMIT;
             BEGIN;
             UPDATE orders SET status = 'paid', version = 2 WHERE id = 1;
             INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
                 VALUES ('00000000-0000-0000-0000-000000000002', 'order', '1', 'order.paid', NULL);
             DELETE FROM outbox WHERE id = '00000000-0000-0000-0000-000000000002';
             COMMIT;
             UPDATE outbox SET type = 'order.opened';
             DELETE FROM outbox;",
        )
        .await
        .unwrap();
    wait_caught_up(&client, db, CATCH_UP).await;
    let metrics = reqwest::get(format!("http://{api}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "courier_outbox_events_total{router=\"orders\",topic=\"outbox.event.order\"} 2",
        "courier_outbox_skipped_total{router=\"orders\",op=\"update\"} 1",
        "courier_outbox_skipped_total{router=\"orders\",op=\"delete\"} 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} is not in:\n{metrics}"
        );
    }
    assert!(courier.stop().success(), "log:\n{}", courier.log());
    assert!(courier
        .log()
        .contains("an UPDATE of an outbox row is not an event"));

    let text = std::fs::read_to_string(dir.join("out.jsonl")).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events: Vec<&Value> = lines.iter().filter(|l| l.get("outbox").is_some()).collect();
    let tables: Vec<String> = lines
        .iter()
        .filter_map(|l| l["source"]["table"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        tables,
        ["orders", "orders"],
        "the outbox table's rows are never envelopes"
    );
    assert_eq!(events.len(), 2, "{events:#?}");
    let strip = |e: &Value| {
        let mut e = e.clone();
        for volatile in ["timestamp_ms", "lsn", "txId"] {
            assert!(e[volatile].as_u64().is_some(), "{e}");
            e.as_object_mut().unwrap().remove(volatile);
        }
        e
    };
    assert_eq!(
        strip(events[0]),
        json!({"outbox": "orders", "topic": "outbox.event.order", "partition": null, "key": "1",
               "headers": {"id": "00000000-0000-0000-0000-000000000001"}, "value": {"total": 10}})
    );
    assert_eq!(
        strip(events[1]),
        json!({"outbox": "orders", "topic": "outbox.event.order", "partition": null, "key": "1",
               "headers": {"id": "00000000-0000-0000-0000-000000000002"}, "value": null})
    );
    drop_db(db).await;
}

/// Routing messages alone needs no table: the publication Courier creates
/// publishes none, and the messages still arrive, in their transactions'
/// order, one line each; a rolled-back transaction's message is not an
/// event.
#[tokio::test(flavor = "multi_thread")]
async fn messages_alone_need_no_table() {
    let db = "e2e_outbox_messages_only";
    let client = fresh_db(db).await;
    let dir = scratch(db);
    let config = file_config(db, db, &[], &dir, "")
        + "\n[outbox.orders]\nmessages = \"orders\"\nsink = \"out\"\nexpand_json_payload = true\n";
    let mut courier = CourierProc::start(&dir, &config);
    wait_streaming(&courier, 1).await;
    let published: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_publication_tables WHERE pubname = $1",
            &[&db],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(published, 0, "the publication publishes no table");
    let emit = |id: u32| {
        format!(
            "SELECT pg_logical_emit_message(true, 'orders', json_build_object('id', 'm{id}', 'aggregatetype', 'order', \
             'aggregateid', 'o1', 'payload', json_build_object('n', {id}))::text)"
        )
    };
    // One statement at a time: in one query string, a BEGIN would take
    // the statement before it into its transaction.
    for sql in [
        emit(1),
        format!("BEGIN; {}; ROLLBACK", emit(2)),
        format!("BEGIN; {}; {}; COMMIT", emit(3), emit(4)),
    ] {
        client.batch_execute(&sql).await.unwrap();
    }
    wait_caught_up(&client, db, CATCH_UP).await;
    assert!(courier.stop().success(), "log:\n{}", courier.log());
    let text = std::fs::read_to_string(dir.join("out.jsonl")).unwrap();
    let events: Vec<(String, Value)> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|l| {
            (
                l["headers"]["id"].as_str().unwrap().to_string(),
                l["value"].clone(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("m1".to_string(), json!({"n": 1})),
            ("m3".to_string(), json!({"n": 3})),
            ("m4".to_string(), json!({"n": 4}))
        ]
    );
    drop_db(db).await;
}

/// `courier check` validates each outbox table against its router: a
/// missing column, a missing table and a table without a key fail with the
/// fix; `courier run` refuses to start on them the same way.
#[tokio::test(flavor = "multi_thread")]
async fn courier_check_validates_the_outbox_table() {
    let db = "e2e_outbox_check";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE outbox (id uuid PRIMARY KEY, aggregatetype text, order_id text, type text, payload bytea);
             CREATE TABLE keyless (id uuid, aggregatetype text, aggregateid text, payload jsonb)",
        )
        .await
        .unwrap();
    let dir = scratch(db);
    let write = |routers: &str| {
        let path = dir.join("courier.toml");
        std::fs::write(&path, file_config(db, db, &[], &dir, "") + routers).unwrap();
        path.display().to_string()
    };
    let run_check = |path: &str| courier_cmd(&["check", "--config", path]);

    let path = write(
        "[outbox.orders]\ntable = \"public.outbox\"\nsink = \"out\"\nexpand_json_payload = true\n\
         [outbox.events]\nmessages = \"events\"\nsink = \"out\"\n",
    );
    let (code, out, _) = run_check(&path);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "FAIL  outbox orders: public.outbox has no column \"aggregateid\" (columns.key)"
        ),
        "{out}"
    );
    assert!(out.contains("set outbox.orders.columns.key"), "{out}");
    assert!(
        out.contains("expand_json_payload = true needs json, jsonb or text"),
        "{out}"
    );
    assert!(
        out.contains("ok    outbox events: routes pg_logical_emit_message(true, 'events'"),
        "{out}"
    );
    let (code, _, err) = courier_cmd(&["run", "--config", &path]);
    assert_ne!(code, 0);
    assert!(
        err.contains("outbox.orders") && err.contains("\"aggregateid\""),
        "{err}"
    );

    let path = write(
        "[outbox.orders]\ntable = \"public.outbox\"\nsink = \"out\"\ncolumns = { key = \"order_id\" }\n",
    );
    let (code, out, _) = run_check(&path);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok    outbox orders: table public.outbox has the columns it reads"),
        "{out}"
    );

    for (table, problem) in [
        ("public.missing", "does not exist"),
        ("public.keyless", "no primary key"),
    ] {
        let path = write(&format!(
            "[outbox.orders]\ntable = \"{table}\"\nsink = \"out\"\n"
        ));
        let (code, out, _) = run_check(&path);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("FAIL  outbox orders") && out.contains(problem),
            "{out}"
        );
    }
    drop_db(db).await;
}

//! Side by side with Debezium: the same outbox table routed by Courier and
//! by Debezium's own EventRouter (`io.debezium.transforms.outbox.EventRouter`
//! on Debezium's PostgreSQL connector 3.6.1.Final in the Kafka Connect 4.3.1
//! worker of `dev/kafka-connect.sh`, `table.expand.json.payload=true`,
//! JsonConverter without schemas), each into topics of its own prefix: for
//! every event, the two have the same topic suffix, key, value and `id`
//! header (and the `eventType` header both place).
//!
//! Where Debezium's JSON expansion differs, the comparison says how:
//!
//! * Debezium leaves out object members that are null or empty arrays,
//!   and gives the objects of an array every member any of them has
//!   (null where one lacks it); Courier sends the payload as written. Both
//!   sides are compared without null members and empty arrays.
//! * For some payloads Debezium 3.6.1's expansion fails (it logs "JSON
//!   expansion failed") and it sends the document as the string holding
//!   it: arrays holding only nulls, arrays mixing number types, JSON
//!   scalars. Courier sends the JSON value itself; such a Debezium string
//!   counts as the JSON it holds.
//! * Payloads that make Debezium's task fail are left out (a top-level
//!   array, an integer beyond 64 bits: its expansion builds a schema its
//!   conversion then breaks), as are updates of outbox rows (both skip
//!   them with a warning) — they are in the workload, not compared.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::connect::{debezium_postgres, services_missing, Connector};
use support::kafka::{delete_topics, kafka_config, read_any, read_topic, AnyRecord, Record};
use support::outbox::{assert_delivered, App, SCHEMA};
use support::skip::skip;
use support::*;

const CATCH_UP: Duration = Duration::from_secs(180);
const PG_SOURCE: &str = "io.debezium.connector.postgresql.PostgresConnector";

/// Payloads beyond the application's, each in a transaction of its own
/// (the aggregate type `special`): nulls, nesting, numbers, escapes,
/// scalars, and the ones Debezium's expansion gives up on.
const SPECIAL_PAYLOADS: &[&str] = &[
    r#"{"a": 1, "b": "x", "c": null, "d": [1, 2], "e": {"f": true}}"#,
    r#"{"tags": ["a", null]}"#,
    r#"{"x": [null]}"#,
    r#""a JSON string""#,
    "42",
    "true",
    r#"{"n": 1.0, "m": 1e2, "l": 3000000000, "arr": [{"a": 1}, {"b": 2}], "eo": {}}"#,
    r#"{"mix": [1, 2.5]}"#,
    r#"{"empty": [], "s": "caf\u00e9 \u0001 \"q\" \\", "f": 0.1, "neg": -5, "exp": 1.5e-10}"#,
    r#"{"arr": [{"a": null}], "nested": {"z": null, "y": [true, false]}}"#,
    "{}",
    r#"{"a": {"b": {"c": {"d": [1, {"e": "f"}]}}}}"#,
    r#"{"ключ": "значение", "emoji": "😀"}"#,
];

/// The object members Debezium's expansion leaves out (null, `[]`) left
/// out, and every number as a float.
fn comparable(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
                .map(|(k, v)| (k.clone(), comparable(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(comparable).collect()),
        Value::Number(n) => json!(n.as_f64()),
        other => other.clone(),
    }
}

/// Whether Debezium's value `d` is Courier's `c`, as the module doc says;
/// `Some(true)` when Debezium sent the payload as the string holding it.
/// With `envelope`, the payload is the value's `payload` member.
fn same_value(c: &Option<Value>, d: &Option<Value>, envelope: bool) -> Option<bool> {
    let (Some(c), Some(d)) = (c, d) else {
        return (c.is_none() && d.is_none()).then_some(false);
    };
    let mut d = d.clone();
    let payload = if envelope {
        d.get_mut("payload")?
    } else {
        &mut d
    };
    let courier_payload = if envelope { c.get("payload")? } else { c };
    let mut as_string = false;
    if let Value::String(text) = &*payload {
        if *courier_payload != *payload {
            *payload = serde_json::from_str(text).ok()?;
            as_string = true;
        }
    }
    (comparable(c) == comparable(&d)).then_some(as_string)
}

/// Courier and a Debezium connector routing the outbox table `table` of
/// a fresh database `db`, each into topics of its own prefix:
/// `<prefix>.<kind>.<aggregatetype>`, Debezium with the EventRouter options
/// `transform` beside its defaults, Courier with the router keys `router`
/// (the same choices).
struct SideBySide {
    db: &'static str,
    client: tokio_postgres::Client,
    courier: CourierProc,
    connector: Connector,
    courier_prefix: String,
    debezium_prefix: String,
    kind: &'static str,
    /// Additional fields go to the value's envelope, beside `payload`.
    envelope: bool,
    started: Instant,
}

impl SideBySide {
    /// `None` when the worker or broker is missing (the test is skipped).
    async fn start(
        db: &'static str,
        ddl: &str,
        table: &str,
        kind: &'static str,
        router: &str,
        transform: &[(&str, &str)],
    ) -> Option<SideBySide> {
        if let Some(reason) = services_missing(PG_SOURCE).await {
            skip(
                &reason,
                "run dev/kafka-connect.sh start (it starts dev/kafka.sh's broker too), or set COURIER_TEST_KAFKA_CONNECT and COURIER_TEST_KAFKA",
            );
            return None;
        }
        let started = Instant::now();
        let client = fresh_db(db).await;
        client.batch_execute(ddl).await.unwrap();
        let run = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let tag = db.trim_start_matches("e2e_");
        let (courier_prefix, debezium_prefix) = (format!("{tag}{run}c"), format!("{tag}{run}d"));
        let dir = scratch(db);
        // Exactly once: the comparison is record by record, and an
        // at-least-once retry could repeat one.
        let config = kafka_config(db, &[], &dir, &courier_prefix, "partitions = 1\nexactly_once = true")
            + &format!(
                "\n[outbox.events]\ntable = \"{table}\"\nsink = \"bus\"\n\
                 topic = \"{courier_prefix}.{kind}.{{aggregatetype}}\"\nexpand_json_payload = true\n{router}\n"
            );
        let courier = CourierProc::start(&dir, &config);
        wait_until("courier to stream", CATCH_UP, || async {
            courier.log().contains("streaming changes")
        })
        .await;

        let slot = format!("dbz_{db}");
        let mut connector = debezium_postgres(
            db,
            &debezium_prefix,
            &slot,
            table,
            1,
            json!({
                // Outbox rows are never replayed as new events.
                "snapshot.mode": "no_data",
                "topic.creation.default.replication.factor": "1",
                "topic.creation.default.partitions": "1",
                "key.converter": "org.apache.kafka.connect.json.JsonConverter",
                "key.converter.schemas.enable": "false",
                "value.converter": "org.apache.kafka.connect.json.JsonConverter",
                "value.converter.schemas.enable": "false",
                "transforms": "outbox",
                "transforms.outbox.type": "io.debezium.transforms.outbox.EventRouter",
                "transforms.outbox.table.expand.json.payload": "true",
                "transforms.outbox.route.topic.replacement": format!("{debezium_prefix}.{kind}.${{routedByValue}}"),
            }),
        );
        for (k, v) in transform {
            connector[format!("transforms.outbox.{k}")] = json!(v);
        }
        // Named after the database too: the tests of this file start in
        // parallel, often within the same millisecond.
        let connector = Connector::create(&format!("courier-{db}-{run}"), connector).await;
        Some(SideBySide {
            db,
            client,
            courier,
            connector,
            courier_prefix,
            debezium_prefix,
            kind,
            envelope: transform.iter().any(|(_, v)| v.contains(":envelope")),
            started,
        })
    }

    /// Once Courier caught up (and stopped) and Debezium wrote as many
    /// events: compares the events of each aggregate type, record by
    /// record. Returns Courier's records by topic, how many events were
    /// compared, and how many of them Debezium sent as the string holding
    /// the JSON.
    async fn compare(
        &mut self,
        aggregate_types: &[&str],
    ) -> (Vec<(String, Vec<Record>)>, usize, usize) {
        wait_caught_up(&self.client, self.db, CATCH_UP).await;
        assert!(
            self.courier.stop().success(),
            "log:\n{}",
            self.courier.log()
        );
        let mut compared = 0;
        let mut debezium_strings = 0;
        let mut courier = Vec::new();
        // Each side's events are on the topic of the same suffix, so
        // comparing topic by topic compares the topics too.
        for aggregate in aggregate_types {
            let ours_topic = format!("{}.{}.{aggregate}", self.courier_prefix, self.kind);
            let ours = read_topic(&ours_topic).await;
            let topic = format!("{}.{}.{aggregate}", self.debezium_prefix, self.kind);
            let deadline = Instant::now() + Duration::from_secs(120);
            let theirs: Vec<AnyRecord> = loop {
                let theirs = read_any(&topic).await;
                if theirs.len() >= ours.len() {
                    break theirs;
                }
                self.connector
                    .assert_not_failed(&self.connector.status().await);
                assert!(
                    Instant::now() < deadline,
                    "Debezium wrote {} of the {} events of {aggregate} within 120 s",
                    theirs.len(),
                    ours.len()
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            assert_eq!(
                theirs.len(),
                ours.len(),
                "events of {aggregate}: Debezium's and Courier's"
            );
            assert!(!ours.is_empty(), "no events of {aggregate}");
            for (i, (c, d)) in ours.iter().zip(&theirs).enumerate() {
                let what = format!("event {i} of {aggregate} (id {:?})", c.header("id"));
                assert_eq!(c.key, d.key, "{what}: key");
                // Every header Debezium's router placed (not its
                // `__debezium.context.*` ones), with Courier's value.
                for (name, value) in d
                    .headers
                    .iter()
                    .filter(|(n, _)| !n.starts_with("__debezium"))
                {
                    assert_eq!(
                        c.header(name),
                        Some(value.as_deref()),
                        "{what}: header {name}"
                    );
                }
                match same_value(&c.value, &d.value, self.envelope) {
                    Some(as_string) => debezium_strings += usize::from(as_string),
                    None => panic!(
                        "{what}: value differs: Courier {:?}, Debezium {:?}",
                        c.value, d.value
                    ),
                }
                compared += 1;
            }
            courier.push((ours_topic, ours));
        }
        (courier, compared, debezium_strings)
    }

    async fn finish(self, compared: usize, debezium_strings: usize) {
        self.connector.delete().await;
        delete_topics(&self.courier_prefix);
        delete_topics(&self.debezium_prefix);
        eprintln!(
            "{}: {compared} events identical ({debezium_strings} of them sent by Debezium as the string holding the JSON); the test took {:?}",
            self.db,
            self.started.elapsed()
        );
        drop_db(self.db).await;
    }
}

/// The application's load (concurrent writers; rollbacks; outbox rows
/// deleted in their own transaction) and the special payloads, in the
/// table as Debezium's documentation shapes it, with `type` placed as the
/// header `eventType` on both sides: every event identical, and Courier's
/// exactly what the application committed.
#[tokio::test(flavor = "multi_thread")]
async fn courier_and_debeziums_event_router_publish_the_same_events() {
    let Some(mut side) = SideBySide::start(
        "e2e_outbox_debezium",
        SCHEMA,
        "public.outbox",
        "outbox.event",
        "additional = [{ column = \"type\", placement = \"header\", name = \"eventType\" }]",
        &[("table.fields.additional.placement", "type:header:eventType")],
    )
    .await
    else {
        return;
    };
    let app = App::start(side.db, 3, false);
    for (i, payload) in SPECIAL_PAYLOADS.iter().enumerate() {
        side.client
            .execute(
                "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES ('special', $1, 'special.case', $2::text::jsonb)",
                &[&format!("special-{i}"), payload],
            )
            .await
            .unwrap();
    }
    side.client
        .batch_execute(
            "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES ('special', 'special-null', 'special.case', NULL);
             UPDATE outbox SET type = 'updated' WHERE aggregatetype = 'special';",
        )
        .await
        .unwrap();
    app.commit_more(300, CATCH_UP).await;
    let written = app.stop().await;

    let (mut courier, compared, strings) = side.compare(&["order", "customer", "special"]).await;
    assert_eq!(
        compared,
        written.committed.len() + SPECIAL_PAYLOADS.len() + 1,
        "every committed event compared"
    );
    courier.pop();
    assert_delivered(&courier, &written, true);
    side.finish(compared, strings).await;
}

/// Columns of other types, in Debezium's forms on both sides: a `bigint`
/// event id (header `"7"`), a `uuid` key, `timestamptz` (Debezium pads the
/// fraction to the column's precision), `timestamp(3)` (milliseconds) and
/// `boolean` headers, and `numeric` (Connect's `Decimal`) and `int`
/// fields in the value's envelope beside the payload; some NULL.
#[tokio::test(flavor = "multi_thread")]
async fn typed_columns_take_debeziums_forms() {
    let ddl = "CREATE TABLE typed_outbox (
        id bigint PRIMARY KEY, aggregatetype text NOT NULL, aggregateid uuid, type text NOT NULL,
        payload jsonb, at timestamptz, created timestamp(3), amount numeric(10,2), flag boolean, seq int)";
    let placement = "at:header,created:header,flag:header,amount:envelope,seq:envelope:sequence";
    let Some(mut side) = SideBySide::start(
        "e2e_outbox_debezium_typed",
        ddl,
        "public.typed_outbox",
        "typed",
        "additional = [{ column = \"at\", placement = \"header\" }, { column = \"created\", placement = \"header\" }, \
         { column = \"flag\", placement = \"header\" }, { column = \"amount\", placement = \"envelope\" }, \
         { column = \"seq\", placement = \"envelope\", name = \"sequence\" }]",
        &[("table.fields.additional.placement", placement)],
    )
    .await
    else {
        return;
    };
    side.client
        .batch_execute(
            "INSERT INTO typed_outbox
             SELECT g, CASE WHEN g % 3 = 0 THEN 'invoice' ELSE 'payment' END,
                    CASE WHEN g % 7 = 0 THEN NULL ELSE md5(g::text)::uuid END,
                    'paid', jsonb_build_object('n', g, 'half', g / 2.0,
                        'list', CASE WHEN g % 2 = 0 THEN jsonb_build_array(g::text, 'x') ELSE jsonb_build_array(g, 'x') END),
                    CASE WHEN g % 5 = 0 THEN NULL
                         ELSE '2024-01-02 03:04:05+00'::timestamptz + g * interval '1.25 second' END,
                    '2024-01-02 03:04:05'::timestamp + g * interval '0.5 second',
                    CASE WHEN g % 4 = 0 THEN NULL ELSE g * 1.25 - 20 END,
                    g % 2 = 0, g
             FROM generate_series(1, 40) g;
             DELETE FROM typed_outbox WHERE id <= 10;",
        )
        .await
        .unwrap();
    let (_, compared, strings) = side.compare(&["invoice", "payment"]).await;
    assert_eq!(compared, 40);
    side.finish(compared, strings).await;
}

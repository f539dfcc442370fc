use std::sync::Arc;

use courier_core::{Change, Column, Lsn, Op, PgType, Relation, TableId, Value};
use serde_json::{json, Value as Json};

use super::*;

/// `public.outbox` as Debezium's documentation shapes it, plus a tenant
/// and a creation time.
fn outbox() -> Arc<Relation> {
    let col = |name: &str, pg_type: PgType, key: bool| Column {
        name: name.into(),
        type_oid: 0,
        type_modifier: -1,
        type_name: name.into(),
        pg_type,
        nullable: !key,
        is_key: key,
    };
    Arc::new(Relation {
        oid: 7,
        id: TableId::new("public", "outbox"),
        columns: vec![
            col("id", PgType::Uuid, true),
            col("aggregatetype", PgType::Text, false),
            col("aggregateid", PgType::Text, false),
            col("type", PgType::Text, false),
            col("payload", PgType::Jsonb, false),
            col("tenant", PgType::Text, false),
            col("created", PgType::Timestamp, false),
            col("shard", PgType::Int4, false),
        ],
    })
}

const ID: &str = "6f2b3e6a-2f1c-4c43-9d0e-000000000001";
const COMMIT_US: i64 = 1_704_164_645_123_456;

fn row(aggregatetype: &str, payload: Value) -> Vec<Value> {
    vec![
        Value::Uuid(ID.into()),
        Value::Text(aggregatetype.into()),
        Value::Text("42".into()),
        Value::Text("created".into()),
        payload,
        Value::Text("acme".into()),
        Value::Timestamp("2024-01-02T03:04:05.5".into()),
        Value::Int(3),
    ]
}

fn insert(rel: &Arc<Relation>, row: Vec<Value>) -> Change {
    Change::new(
        Arc::clone(rel),
        Op::Insert,
        None,
        Some(row),
        Lsn(0x16B3748),
        771,
        COMMIT_US,
    )
    .unwrap()
    .into_outbox_row()
}

fn routers(extra: &str) -> Routers {
    let text = format!("table = \"public.outbox\"\nsink = \"bus\"\n{extra}");
    let config: RouterConfig = toml::from_str(&text).unwrap();
    Routers::new(vec![config.validate("orders").unwrap()])
}

fn events(routers: &mut Routers, change: &Change) -> Result<Vec<Event>, String> {
    let mut out = Vec::new();
    routers.route(change, &mut out).map_err(|e| e.to_string())?;
    Ok(out.into_iter().map(|(_, e)| e).collect())
}

fn one(routers: &mut Routers, change: &Change) -> Event {
    let mut all = events(routers, change).unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

fn json_of(bytes: &Option<Vec<u8>>) -> Json {
    serde_json::from_slice(bytes.as_deref().expect("a value")).unwrap()
}

fn header(e: &Event, name: &str) -> Option<String> {
    e.headers
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no header {name}: {e:?}"))
        .1
        .as_ref()
        .map(|v| String::from_utf8(v.clone()).unwrap())
}

#[test]
fn an_insert_is_the_event_debezium_makes() {
    let rel = outbox();
    let doc = Value::Json(r#"{"total": 12, "lines": [1, 2]}"#.into());
    let e = one(&mut routers(""), &insert(&rel, row("order", doc.clone())));
    assert_eq!(e.topic, "outbox.event.order");
    assert_eq!(
        e.key.as_deref(),
        Some(&b"\"42\""[..]),
        "the key is the JSON of a text column"
    );
    assert_eq!(
        json_of(&e.value),
        json!(r#"{"total": 12, "lines": [1, 2]}"#),
        "without expand_json_payload, the jsonb payload is the string holding it"
    );
    assert_eq!(header(&e, "id").as_deref(), Some(ID));
    assert_eq!(e.headers.len(), 1);
    assert_eq!(e.partition, None);
    assert_eq!(e.timestamp_ms, COMMIT_US / 1000, "the commit time");

    let e = one(
        &mut routers("expand_json_payload = true"),
        &insert(&rel, row("order", doc)),
    );
    assert_eq!(
        e.value.as_deref(),
        Some(&br#"{"total":12,"lines":[1,2]}"#[..])
    );
}

#[test]
fn additional_columns_go_where_they_are_placed() {
    let rel = outbox();
    let r = &mut routers(
        r#"expand_json_payload = true
topic = "{tenant}.events.{aggregatetype}"
columns = { timestamp = "created" }
additional = [
  { column = "type", placement = "header", name = "eventType" },
  { column = "created", placement = "header" },
  { column = "tenant", placement = "envelope" },
  { column = "shard", placement = "partition" },
]"#,
    );
    let e = one(
        r,
        &insert(&rel, row("order", Value::Json(r#"{"a": 1}"#.into()))),
    );
    assert_eq!(e.topic, "acme.events.order");
    assert_eq!(header(&e, "eventType").as_deref(), Some("created"));
    assert_eq!(
        header(&e, "created").as_deref(),
        Some("1704164645500000"),
        "Debezium's MicroTimestamp"
    );
    assert_eq!(
        json_of(&e.value),
        json!({"payload": {"a": 1}, "tenant": "acme"})
    );
    assert_eq!(e.partition, Some(3));
    assert_eq!(e.timestamp_ms, 1_704_164_645_500);

    let mut nulls = row("order", Value::Null);
    nulls[3] = Value::Null;
    let e = one(r, &insert(&rel, nulls));
    assert_eq!(
        header(&e, "eventType"),
        None,
        "a null column is a null header"
    );
    assert_eq!(
        json_of(&e.value),
        json!({"payload": null, "tenant": "acme"})
    );
}

#[test]
fn a_null_payload_is_json_null_or_with_the_setting_a_tombstone() {
    let rel = outbox();
    let e = one(&mut routers(""), &insert(&rel, row("order", Value::Null)));
    assert_eq!(
        e.value.as_deref(),
        Some(&b"null"[..]),
        "as Debezium's JsonConverter writes it"
    );
    let r = &mut routers(
        "tombstone_on_empty_payload = true\nadditional = [{ column = \"tenant\", placement = \"envelope\" }]",
    );
    assert_eq!(one(r, &insert(&rel, row("order", Value::Null))).value, None);
}

#[test]
fn deletes_truncates_and_updates_make_no_event_by_default() {
    let rel = outbox();
    let r = &mut routers("");
    let mut key_only = vec![Value::Null; rel.columns.len()];
    key_only[0] = Value::Uuid(ID.into());
    let delete = Change::new(
        Arc::clone(&rel),
        Op::Delete,
        Some(key_only),
        None,
        Lsn(9),
        1,
        0,
    )
    .unwrap()
    .into_outbox_row();
    assert!(events(r, &delete).unwrap().is_empty());
    let truncate = Change::truncate(Arc::clone(&rel), Lsn(9), 1, 0).into_outbox_row();
    assert!(events(r, &truncate).unwrap().is_empty());
    let update = Change::new(
        Arc::clone(&rel),
        Op::Update,
        None,
        Some(row("order", Value::Null)),
        Lsn(9),
        1,
        0,
    )
    .unwrap()
    .into_outbox_row();
    assert!(events(r, &update).unwrap().is_empty());
    let e = events(&mut routers("on_update = \"error\""), &update).unwrap_err();
    assert!(
        e.contains("UPDATE") && e.contains("on_update") && e.contains("LSN 0/9"),
        "{e}"
    );
    assert_eq!(
        events(&mut routers("on_update = \"route\""), &update)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn only_the_routers_sources_are_routed() {
    let rel = outbox();
    let other = Arc::new(Relation {
        id: TableId::new("public", "other_outbox"),
        ..(*rel).clone()
    });
    assert!(
        events(&mut routers(""), &insert(&other, row("order", Value::Null)))
            .unwrap()
            .is_empty()
    );
    let unmarked = Change::new(
        Arc::clone(&rel),
        Op::Insert,
        None,
        Some(row("order", Value::Null)),
        Lsn(9),
        1,
        0,
    )
    .unwrap();
    assert!(events(&mut routers(""), &unmarked).unwrap().is_empty());
}

#[test]
fn bad_input_names_router_table_event_and_lsn_never_the_value() {
    let rel = outbox();
    let mut text_payload = (*rel).clone();
    text_payload.columns[4].pg_type = PgType::Text;
    let text_payload = Arc::new(text_payload);
    let bad_json = insert(
        &text_payload,
        row("order", Value::Text("{\"card\": 4111".into())),
    );
    let e = events(&mut routers("expand_json_payload = true"), &bad_json).unwrap_err();
    for part in [
        "outbox orders",
        "table public.outbox",
        ID,
        "LSN 0/16B3748",
        "payload",
        "dead_letter_topic",
    ] {
        assert!(e.contains(part), "{part:?} missing: {e}");
    }
    assert!(!e.contains("4111"), "never the value: {e}");

    let bad_topic = insert(&rel, row("Order Items", Value::Null));
    let e = events(&mut routers(""), &bad_topic).unwrap_err();
    assert!(e.contains("topic") && e.contains(ID), "{e}");
    assert!(!e.contains("Order Items"), "never the value: {e}");

    let null_route = insert(&rel, {
        let mut r = row("order", Value::Null);
        r[1] = Value::Null;
        r
    });
    let e = events(&mut routers(""), &null_route).unwrap_err();
    assert!(e.contains("aggregatetype") && e.contains("is null"), "{e}");

    let e = events(
        &mut routers("columns = { key = \"order_id\" }"),
        &insert(&rel, row("order", Value::Null)),
    )
    .unwrap_err();
    assert!(
        e.contains("no column \"order_id\"") && e.contains("columns.key"),
        "{e}"
    );

    let mut no_id = row("order", Value::Null);
    no_id[0] = Value::Null;
    let e = events(&mut routers(""), &insert(&rel, no_id)).unwrap_err();
    assert!(e.contains("event id") && e.contains("null"), "{e}");

    let mut null_key = row("order", Value::Null);
    null_key[2] = Value::Null;
    assert_eq!(
        one(&mut routers(""), &insert(&rel, null_key))
            .key
            .as_deref(),
        Some(&b"null"[..]),
        "a null key is JSON's null, as Debezium's JsonConverter writes it"
    );
}

#[test]
fn bad_input_goes_to_the_dead_letter_topic_when_there_is_one() {
    let rel = outbox();
    let r = &mut routers("dead_letter_topic = \"outbox.dead\"");
    let e = one(
        r,
        &insert(&rel, row("Order Items", Value::Json("{}".into()))),
    );
    assert_eq!(e.topic, "outbox.dead");
    assert_eq!(header(&e, "id").as_deref(), Some(ID));
    let v = json_of(&e.value);
    assert_eq!(v["router"], "orders");
    assert_eq!(v["table"], "public.outbox");
    assert_eq!(v["event_id"], ID);
    assert_eq!(v["lsn"], 0x16B3748);
    assert_eq!(v["lsn_text"], "0/16B3748");
    assert!(v["reason"].as_str().unwrap().contains("topic"), "{v}");
    assert_eq!(v["fields"]["aggregatetype"], "Order Items");
    // The next good event still routes.
    assert_eq!(
        one(r, &insert(&rel, row("order", Value::Null))).topic,
        "outbox.event.order"
    );
}

fn message(prefix: &str, content: &str) -> Change {
    let rel = Arc::new(Relation::logical_message(prefix));
    Change::logical_message(
        rel,
        content.as_bytes().to_vec(),
        Lsn(0x16B3748),
        771,
        COMMIT_US,
    )
    .unwrap()
}

fn message_routers(extra: &str) -> Routers {
    let text = format!("messages = \"orders\"\nsink = \"bus\"\n{extra}");
    let config: RouterConfig = toml::from_str(&text).unwrap();
    Routers::new(vec![config.validate("orders").unwrap()])
}

#[test]
fn a_message_makes_the_event_its_row_would() {
    let rel = outbox();
    let content = format!(
        r#"{{"id": "{ID}", "aggregatetype": "order", "aggregateid": "42", "type": "created",
            "payload": {{"total": 12, "lines": [1, 2]}}, "tenant": "acme"}}"#
    );
    for extra in ["", "expand_json_payload = true"] {
        let extra =
            format!("{extra}\nadditional = [{{ column = \"tenant\", placement = \"header\" }}]");
        let from_row = one(
            &mut routers(&extra),
            &insert(
                &rel,
                row(
                    "order",
                    Value::Json(r#"{"total": 12, "lines": [1, 2]}"#.into()),
                ),
            ),
        );
        let from_message = one(&mut message_routers(&extra), &message("orders", &content));
        assert_eq!(from_message, from_row, "{extra}");
    }
    assert!(
        events(&mut message_routers(""), &message("other", &content))
            .unwrap()
            .is_empty()
    );
    let e = events(&mut message_routers(""), &message("orders", "[1, 2]")).unwrap_err();
    assert!(
        e.contains("not a JSON object") && e.contains("messages of prefix \"orders\""),
        "{e}"
    );
    let e = events(&mut message_routers(""), &message("orders", "{\"id\": ")).unwrap_err();
    assert!(e.contains("ends too early"), "{e}");
}

#[test]
fn lines_spell_the_record_out() {
    let rel = outbox();
    let c = insert(&rel, row("order", Value::Json(r#"{"a": 1}"#.into())));
    let e = one(&mut routers("expand_json_payload = true"), &c);
    let mut out = Vec::new();
    write_line("orders", &c, &e, &mut out);
    assert_eq!(out.last(), Some(&b'\n'));
    let v: Json = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v,
        json!({"outbox": "orders", "topic": "outbox.event.order", "partition": null, "key": "42",
               "headers": {"id": ID}, "value": {"a": 1}, "timestamp_ms": COMMIT_US / 1000,
               "lsn": 0x16B3748, "txId": 771})
    );
}

#[test]
fn a_table_is_checked_for_what_the_router_reads() {
    let rel = outbox();
    let config: RouterConfig = toml::from_str(
        r#"table = "public.outbox"
sink = "bus"
expand_json_payload = true
columns = { timestamp = "created" }
additional = [{ column = "shard", placement = "partition" }, { column = "tenant", placement = "header" }]"#,
    )
    .unwrap();
    let router = config.validate("orders").unwrap();
    assert_eq!(router.check_table(&rel), Vec::<String>::new());

    let mut other = (*rel).clone();
    other
        .columns
        .retain(|c| c.name != "aggregateid" && c.name != "tenant");
    other.columns[3].pg_type = PgType::Bytea;
    other.columns[3].type_name = "bytea".into();
    let problems = router.check_table(&other);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems[0].contains("\"aggregateid\" (columns.key)"),
        "{problems:#?}"
    );
    assert!(
        problems[1].contains("\"tenant\" (additional[1])"),
        "{problems:#?}"
    );
    assert!(problems[2].contains("expand_json_payload"), "{problems:#?}");
}

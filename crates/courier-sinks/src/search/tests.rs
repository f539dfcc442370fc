//! The search sink against the real OpenSearch node started by
//! `dev/opensearch.sh` (or the server at `COURIER_TEST_SEARCH` when set).

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use courier_core::{Column, Op, PgType, Relation, Sink, SinkErrorKind, Value};
use reqwest::Method;
use serde_json::json;

use super::readback::SearchReadback;
use super::*;
use crate::compliance::fixtures::{batch, change, table};
use crate::compliance::{run_compliance, Options};

fn url() -> String {
    static STARTED: OnceLock<()> = OnceLock::new();
    std::env::var("COURIER_TEST_SEARCH").unwrap_or_else(|_| {
        STARTED.get_or_init(|| {
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../dev/opensearch.sh");
            let status = Command::new("bash")
                .arg(script)
                .arg("start")
                .status()
                .unwrap_or_else(|e| panic!("run dev/opensearch.sh: {e}"));
            assert!(status.success(), "dev/opensearch.sh start failed");
        });
        "http://127.0.0.1:59200".to_string()
    })
}

async fn sink(extra: &str) -> SearchSink {
    let text = format!("url = {:?}\n{extra}", url());
    let config: SearchSinkConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("config: {e}"));
    build("test", config)
        .await
        .unwrap_or_else(|e| panic!("build: {e}"))
}

fn raw() -> Client {
    let config: SearchSinkConfig = toml::from_str(&format!("url = {:?}", url())).unwrap();
    Client::new(&config.validate().unwrap()).unwrap()
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}{:x}", nanos ^ u128::from(std::process::id()))
}

#[tokio::test]
async fn passes_the_compliance_suite() {
    let extra = "tables = [\"courier_compliance.*\"]\nindex = \"{schema}.{table}\"\n";
    let mut readback = SearchReadback::new(&url(), "{schema}.{table}").unwrap();
    run_compliance(|| sink(extra), &mut readback, Options::default()).await;
}

#[tokio::test]
async fn detects_the_server() {
    let s = sink("").await;
    assert_eq!(s.server().flavour, Flavour::OpenSearch);
    assert!(s.server().supported());
}

#[tokio::test]
async fn creates_an_alias_over_a_versioned_index_with_the_derived_mapping() {
    let name = unique("alias_");
    let rel = table("public", &name);
    let mut s = sink("").await;
    s.apply(&batch(vec![change(
        &rel,
        Op::Insert,
        1,
        "Red wool scarf",
        10,
    )]))
    .await
    .unwrap();
    let c = raw();
    let (_, aliases) = c.get(&format!("/_alias/{name}"), &[]).await.unwrap();
    let concrete = format!("{name}_v1");
    assert!(aliases.get(&concrete).is_some(), "{aliases}");
    let (_, settings) = c.get(&format!("/{concrete}/_settings"), &[]).await.unwrap();
    assert_eq!(settings[&concrete]["settings"]["index"]["gc_deletes"], "7d");
    let (_, mapping) = c.get(&format!("/{concrete}/_mapping"), &[]).await.unwrap();
    let props = &mapping[&concrete]["mappings"]["properties"];
    assert_eq!(props["id"]["type"], "long");
    assert_eq!(props["name"]["type"], "text");
    assert_eq!(props["doc"]["type"], "flat_object");
    // Full-text search finds the row through the alias.
    c.send(Method::POST, &format!("/{name}/_refresh"), None, &[])
        .await
        .unwrap();
    let (_, found) = c
        .json(
            Method::POST,
            &format!("/{name}/_search"),
            &json!({"query": {"match": {"name": "scarf"}}}),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(found["hits"]["hits"][0]["_id"], "1", "{found}");
}

fn with_column(rel: &Relation, name: &str, pg_type: PgType) -> Arc<Relation> {
    let mut r = rel.clone();
    r.columns.push(Column {
        name: name.into(),
        type_oid: 0,
        type_modifier: -1,
        type_name: "x".into(),
        pg_type,
        nullable: true,
        is_key: false,
    });
    Arc::new(r)
}

#[tokio::test]
async fn a_new_column_joins_the_mapping_and_a_changed_type_is_a_clear_error() {
    let name = unique("schema_");
    let rel = table("public", &name);
    let mut s = sink("").await;
    s.apply(&batch(vec![change(&rel, Op::Insert, 1, "a", 10)]))
        .await
        .unwrap();
    let wider = with_column(&rel, "stock", PgType::Int4);
    let mut c = change(&wider, Op::Insert, 2, "b", 20);
    c.after.as_mut().unwrap().push(Value::Int(5));
    s.apply(&batch(vec![c])).await.unwrap();
    let (_, mapping) = raw()
        .get(&format!("/{name}_v1/_mapping"), &[])
        .await
        .unwrap();
    assert_eq!(
        mapping[format!("{name}_v1")]["mappings"]["properties"]["stock"]["type"],
        "long"
    );

    let mut changed = (*wider).clone();
    changed.columns.last_mut().unwrap().pg_type = PgType::Uuid;
    let changed = Arc::new(changed);
    let mut c = change(&changed, Op::Insert, 3, "c", 30);
    c.after.as_mut().unwrap().push(Value::Uuid("x".into()));
    let e = s.apply(&batch(vec![c])).await.unwrap_err();
    assert_eq!(e.kind, SinkErrorKind::Fatal);
    let text = e.to_string();
    for part in ["stock", &name, "keyword", "long", "rebuild"] {
        assert!(text.contains(part), "{text:?} lacks {part:?}");
    }
}

/// A relation like the fixture's whose `doc` column the index maps as a
/// long, so that the fixture's JSON documents conflict with the mapping.
async fn conflicting_table(name: &str) -> Arc<Relation> {
    let rel = table("public", name);
    let c = raw();
    c.json(
        Method::PUT,
        &format!("/{name}_v1"),
        &json!({
            "mappings": {"properties": {"doc": {"type": "long"}}},
            "aliases": {name: {"is_write_index": true}}
        }),
        &[],
    )
    .await
    .unwrap();
    rel
}

#[tokio::test]
async fn rejected_rows_go_to_the_dead_letter_index_while_others_flow() {
    let name = unique("dlq_");
    let dlq = format!("{name}_dead");
    // A mappings file keeps the sink's view of `doc` in line with the index.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.json");
    std::fs::write(
        &file,
        json!({ format!("public.{name}"): {"doc": {"type": "long"}} }).to_string(),
    )
    .unwrap();
    let rel = conflicting_table(&name).await;
    let mut s = sink(&format!(
        "on_error = \"dead_letter\"\ndead_letter_index = {dlq:?}\nmappings = {:?}\n",
        file.display().to_string()
    ))
    .await;
    let mut good = change(&rel, Op::Insert, 2, "fine", 10);
    good.after.as_mut().unwrap()[4] = Value::Json("7".into());
    s.apply(&batch(vec![change(&rel, Op::Insert, 1, "bad", 10), good]))
        .await
        .unwrap();
    let readback = SearchReadback::new(&url(), "{table}").unwrap();
    assert!(readback.document(&rel, &[Value::Int(1)]).await.is_none());
    assert!(readback.document(&rel, &[Value::Int(2)]).await.is_some());
    let c = raw();
    c.send(Method::POST, &format!("/{dlq}/_refresh"), None, &[])
        .await
        .unwrap();
    let (_, hits) = c
        .json(Method::POST, &format!("/{dlq}/_search"), &json!({}), &[])
        .await
        .unwrap();
    let letters = hits["hits"]["hits"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{hits}");
    let l = &letters[0]["_source"];
    assert_eq!(l["table"], format!("public.{name}"));
    assert_eq!(l["key"], "1");
    assert_eq!(l["lsn"], 10);
    assert_eq!(l["error_type"], "mapper_parsing_exception");
    assert!(l["reason"].as_str().unwrap().contains("doc"), "{l}");
}

#[tokio::test]
async fn with_stop_a_rejected_row_names_table_key_and_lsn() {
    let name = unique("stop_");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.json");
    std::fs::write(
        &file,
        json!({ format!("public.{name}"): {"doc": {"type": "long"}} }).to_string(),
    )
    .unwrap();
    let rel = conflicting_table(&name).await;
    let mut s = sink(&format!("mappings = {:?}\n", file.display().to_string())).await;
    let e = s
        .apply(&batch(vec![change(
            &rel,
            Op::Insert,
            41,
            "secret-name",
            0x2_0000_0010,
        )]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, SinkErrorKind::Fatal);
    let text = e.to_string();
    let table_name = format!("public.{name}");
    for part in [
        table_name.as_str(),
        "key 41",
        "2/10",
        "mapper_parsing_exception",
    ] {
        assert!(text.contains(part), "{text:?} lacks {part:?}");
    }
    assert!(!text.contains("secret-name"), "{text:?} shows a row value");
}

//! The search sink against the real nodes started by `dev/opensearch.sh`
//! and `dev/elasticsearch.sh`: every test runs against OpenSearch 1, 2 and 3
//! and Elasticsearch 7, 8 and 9 (or the servers at `COURIER_TEST_SEARCH`,
//! `COURIER_TEST_OPENSEARCH_1`, `COURIER_TEST_OPENSEARCH_3`,
//! `COURIER_TEST_ELASTICSEARCH`, `COURIER_TEST_ELASTICSEARCH_7` and
//! `COURIER_TEST_ELASTICSEARCH_9` when set); `COURIER_TEST_SEARCH_NODES`
//! narrows the run to the nodes it names.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use courier_core::{Column, Op, PgType, Relation, Sink, SinkErrorKind, Value};
use reqwest::Method;
use serde_json::json;

use super::readback::SearchReadback;
use super::*;
use crate::compliance::fixtures::{self, batch, change, table};
use crate::compliance::{run_compliance, Options};

/// A real search node: a flavour and major version, one per instance of
/// `dev/opensearch.sh` and `dev/elasticsearch.sh`.
#[derive(Clone, Copy, Debug)]
struct Node {
    flavour: Flavour,
    major: u32,
}

impl Node {
    /// The node of that flavour and major version when the test run selects
    /// it: every node unless `COURIER_TEST_SEARCH_NODES` lists the names of
    /// those to test (`opensearch-1 elasticsearch-9 ...`). A node left out
    /// makes the test a skip.
    fn selected(flavour: Flavour, major: u32) -> Option<Node> {
        let node = Node { flavour, major };
        match std::env::var("COURIER_TEST_SEARCH_NODES") {
            Ok(list)
                if !list.trim().is_empty() && !list.split([' ', ',']).any(|n| n == node.name()) =>
            {
                crate::skips::skip(
                    &format!(
                        "{} is not in COURIER_TEST_SEARCH_NODES={list:?}",
                        node.name()
                    ),
                    "unset COURIER_TEST_SEARCH_NODES to test every search node",
                );
                None
            }
            _ => Some(node),
        }
    }

    /// `opensearch-2`, `elasticsearch-8`, ...
    fn name(self) -> String {
        match self.flavour {
            Flavour::OpenSearch => format!("opensearch-{}", self.major),
            Flavour::Elasticsearch => format!("elasticsearch-{}", self.major),
        }
    }

    /// The variable that names a server to use instead of the dev node, the
    /// dev script, its instance variable and the dev node's URL.
    fn dev(self) -> (String, &'static str, &'static str, String) {
        let (script, instance) = match self.flavour {
            Flavour::OpenSearch => ("opensearch.sh", "COURIER_OPENSEARCH_INSTANCE"),
            Flavour::Elasticsearch => ("elasticsearch.sh", "COURIER_ELASTICSEARCH_INSTANCE"),
        };
        // The ports of dev/opensearch.sh's and dev/elasticsearch.sh's instances.
        let port = match (self.flavour, self.major) {
            (Flavour::OpenSearch, 1) => 59202,
            (Flavour::OpenSearch, 3) => 59203,
            (Flavour::OpenSearch, _) => 59200,
            (Flavour::Elasticsearch, 7) => 59211,
            (Flavour::Elasticsearch, 9) => 59212,
            (Flavour::Elasticsearch, _) => 59210,
        };
        let var = match (self.flavour, self.major) {
            (Flavour::OpenSearch, 2) => "COURIER_TEST_SEARCH".to_string(),
            (Flavour::Elasticsearch, 8) => "COURIER_TEST_ELASTICSEARCH".to_string(),
            (Flavour::OpenSearch, n) => format!("COURIER_TEST_OPENSEARCH_{n}"),
            (Flavour::Elasticsearch, n) => format!("COURIER_TEST_ELASTICSEARCH_{n}"),
        };
        (var, script, instance, format!("http://127.0.0.1:{port}"))
    }

    /// The node's URL, after starting it with its `dev/` script (once per
    /// test process and node) unless its environment variable names a server.
    fn url(self) -> String {
        static STARTED: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let (var, script, instance, url) = self.dev();
        if let Ok(url) = std::env::var(&var) {
            return url;
        }
        let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
        if !started.contains(&self.name()) {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../dev")
                .join(script);
            let status = Command::new("bash")
                .arg(path)
                .arg("start")
                .env(instance, self.major.to_string())
                .status()
                .unwrap_or_else(|e| panic!("run dev/{script}: {e}"));
            assert!(
                status.success(),
                "{instance}={} dev/{script} start failed",
                self.major
            );
            started.push(self.name());
        }
        url
    }

    /// The field type of JSON columns on the development node: OpenSearch
    /// before 2.7 has no flat type, so an unindexed object.
    fn json_field_type(self) -> &'static str {
        match (self.flavour, self.major) {
            (Flavour::OpenSearch, 1) => "object",
            (Flavour::OpenSearch, _) => "flat_object",
            (Flavour::Elasticsearch, _) => "flattened",
        }
    }

    /// The error type of a document whose field does not fit its mapping
    /// (Elasticsearch renamed it in 8.x).
    fn parse_error_type(self) -> &'static str {
        match (self.flavour, self.major) {
            (Flavour::Elasticsearch, 8..) => "document_parsing_exception",
            _ => "mapper_parsing_exception",
        }
    }
}

/// Runs the async test function `name(node)` once per node, as the tests
/// `name::opensearch_1`, ..., `name::elasticsearch_9`.
macro_rules! on_every_node {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use crate::search::Flavour::{Elasticsearch, OpenSearch};
            on_every_node!(@node $name, opensearch_1, OpenSearch, 1);
            on_every_node!(@node $name, opensearch_2, OpenSearch, 2);
            on_every_node!(@node $name, opensearch_3, OpenSearch, 3);
            on_every_node!(@node $name, elasticsearch_7, Elasticsearch, 7);
            on_every_node!(@node $name, elasticsearch_8, Elasticsearch, 8);
            on_every_node!(@node $name, elasticsearch_9, Elasticsearch, 9);
        }
    )*};
    (@node $name:ident, $test:ident, $flavour:expr, $major:literal) => {
        #[tokio::test]
        async fn $test() {
            if let Some(node) = super::Node::selected($flavour, $major) {
                super::$name(node).await
            }
        }
    };
}

on_every_node!(
    passes_the_compliance_suite,
    detects_the_server,
    creates_an_alias_over_a_versioned_index_with_the_derived_mapping,
    a_new_column_joins_the_mapping_and_a_changed_type_is_a_clear_error,
    rejected_rows_go_to_the_dead_letter_index_while_others_flow,
    with_stop_a_rejected_row_names_table_key_and_lsn,
    a_server_lost_while_running_is_unreachable_not_overloaded,
);

#[tokio::test]
async fn a_server_nobody_listens_on_is_unreachable_at_start() {
    let port = crate::outage::unused_port();
    let config: SearchSinkConfig =
        toml::from_str(&format!("url = \"http://127.0.0.1:{port}\"")).unwrap();
    let e = build("search", config)
        .await
        .err()
        .expect("nothing listens");
    crate::outage::assert_unreachable_at_start(
        &e,
        &format!("search server 127.0.0.1:{port} unreachable (connection refused)"),
    );
}

async fn a_server_lost_while_running_is_unreachable_not_overloaded(node: Node) {
    let relay = crate::outage::Relay::start(crate::failure::address(&node.url())).await;
    let text = format!("url = \"http://{}\"\nretry_secs = 2\n", relay.addr);
    let mut s = build("search", toml::from_str(&text).unwrap())
        .await
        .unwrap_or_else(|e| panic!("build: {e}"));
    let rel = table("public", &unique("lost_"));
    s.apply(&batch(vec![change(&rel, Op::Insert, 1, "one", 10)]))
        .await
        .unwrap();
    relay.cut().await;
    let e = s
        .apply(&batch(vec![change(&rel, Op::Insert, 2, "two", 20)]))
        .await
        .expect_err("the server is gone");
    assert_eq!(e.kind, SinkErrorKind::Unreachable, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("unreachable") && !text.contains("overload"),
        "{text}"
    );
}

/// OpenSearch 1 and 2 can answer `GET /` as Elasticsearch 7.10.2 for older
/// clients; the sink still sees OpenSearch and its real version.
mod compatibility_mode {
    use crate::search::Flavour::OpenSearch;

    #[tokio::test]
    async fn opensearch_1() {
        if let Some(node) = super::Node::selected(OpenSearch, 1) {
            super::detects_opensearch_in_compatibility_mode(node).await
        }
    }

    #[tokio::test]
    async fn opensearch_2() {
        if let Some(node) = super::Node::selected(OpenSearch, 2) {
            super::detects_opensearch_in_compatibility_mode(node).await
        }
    }
}

async fn detects_opensearch_in_compatibility_mode(node: Node) {
    let c = raw(node);
    let set = |on: Option<bool>| json!({"transient": {"compatibility.override_main_response_version": on}});
    c.json(Method::PUT, "/_cluster/settings", &set(Some(true)), &[])
        .await
        .unwrap();
    let (_, root) = c.get("/", &[]).await.unwrap();
    let s = sink(node, "").await;
    c.json(Method::PUT, "/_cluster/settings", &set(None), &[])
        .await
        .unwrap();
    assert_eq!(root["version"]["number"], "7.10.2", "{root}");
    assert_eq!(s.server().flavour, Flavour::OpenSearch);
    assert_eq!(s.server().major, node.major);
    let flat = s.server().flat_json_type().unwrap_or("object");
    assert_eq!(flat, node.json_field_type());
}

async fn sink(node: Node, extra: &str) -> SearchSink {
    let text = format!("url = {:?}\n{extra}", node.url());
    let config: SearchSinkConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("config: {e}"));
    build("test", config)
        .await
        .unwrap_or_else(|e| panic!("build: {e}"))
}

fn raw(node: Node) -> Client {
    let config: SearchSinkConfig = toml::from_str(&format!("url = {:?}", node.url())).unwrap();
    Client::new(&config.validate().unwrap()).unwrap()
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}{:x}", nanos ^ u128::from(std::process::id()))
}

async fn passes_the_compliance_suite(node: Node) {
    let extra = "tables = [\"courier_compliance.*\"]\nindex = \"{schema}.{table}\"\n";
    let mut readback = SearchReadback::new(&node.url(), "{schema}.{table}").unwrap();
    run_compliance(|| sink(node, extra), &mut readback, Options::default()).await;
}

async fn detects_the_server(node: Node) {
    let s = sink(node, "").await;
    assert_eq!(s.server().flavour, node.flavour);
    assert_eq!(s.server().major, node.major);
    assert!(s.server().supported());
    let flat = s.server().flat_json_type().unwrap_or("object");
    assert_eq!(flat, node.json_field_type(), "{}", s.server());
}

async fn creates_an_alias_over_a_versioned_index_with_the_derived_mapping(node: Node) {
    let name = unique("alias_");
    let rel = table("public", &name);
    let mut s = sink(node, "").await;
    s.apply(&batch(vec![change(
        &rel,
        Op::Insert,
        1,
        "Red wool scarf",
        10,
    )]))
    .await
    .unwrap();
    let c = raw(node);
    let (_, aliases) = c.get(&format!("/_alias/{name}"), &[]).await.unwrap();
    let concrete = format!("{name}_v1");
    assert!(aliases.get(&concrete).is_some(), "{aliases}");
    let (_, settings) = c.get(&format!("/{concrete}/_settings"), &[]).await.unwrap();
    assert_eq!(settings[&concrete]["settings"]["index"]["gc_deletes"], "7d");
    let (_, mapping) = c.get(&format!("/{concrete}/_mapping"), &[]).await.unwrap();
    let props = &mapping[&concrete]["mappings"]["properties"];
    assert_eq!(props["id"]["type"], "long");
    assert_eq!(props["name"]["type"], "text");
    assert_eq!(props["doc"]["type"], node.json_field_type());
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

async fn a_new_column_joins_the_mapping_and_a_changed_type_is_a_clear_error(node: Node) {
    let name = unique("schema_");
    let rel = table("public", &name);
    let mut s = sink(node, "").await;
    s.apply(&batch(vec![change(&rel, Op::Insert, 1, "a", 10)]))
        .await
        .unwrap();
    let wider = with_column(&rel, "stock", PgType::Int4);
    let mut row = fixtures::row(2, "b");
    row.push(Value::Int(5));
    let c = fixtures::row_change(&wider, Op::Insert, row, 20);
    s.apply(&batch(vec![c])).await.unwrap();
    let (_, mapping) = raw(node)
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
    let mut row = fixtures::row(3, "c");
    row.push(Value::Uuid("x".into()));
    let c = fixtures::row_change(&changed, Op::Insert, row, 30);
    let e = s.apply(&batch(vec![c])).await.unwrap_err();
    assert_eq!(e.kind, SinkErrorKind::Schema);
    let text = e.to_string();
    for part in ["stock", &name, "keyword", "long", "rebuild"] {
        assert!(text.contains(part), "{text:?} lacks {part:?}");
    }
}

/// A relation like the fixture's whose `doc` column the index maps as a
/// long, so that the fixture's JSON documents conflict with the mapping.
async fn conflicting_table(node: Node, name: &str) -> Arc<Relation> {
    let rel = table("public", name);
    let c = raw(node);
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

/// A mappings file that keeps the sink's view of `doc` (a long) in line with
/// the index `conflicting_table` makes.
fn doc_as_long(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let file = dir.join("m.json");
    std::fs::write(
        &file,
        json!({ format!("public.{name}"): {"doc": {"type": "long"}} }).to_string(),
    )
    .unwrap();
    file
}

async fn rejected_rows_go_to_the_dead_letter_index_while_others_flow(node: Node) {
    let name = unique("dlq_");
    let dlq = format!("{name}_dead");
    let dir = tempfile::tempdir().unwrap();
    let file = doc_as_long(dir.path(), &name);
    let rel = conflicting_table(node, &name).await;
    let mut s = sink(
        node,
        &format!(
            "on_error = \"dead_letter\"\ndead_letter_index = {dlq:?}\nmappings = {:?}\n",
            file.display().to_string()
        ),
    )
    .await;
    let mut good = change(&rel, Op::Insert, 2, "fine", 10);
    good.after_mut().unwrap()[4] = Value::Json("7".into());
    s.apply(&batch(vec![change(&rel, Op::Insert, 1, "bad", 10), good]))
        .await
        .unwrap();
    let readback = SearchReadback::new(&node.url(), "{table}").unwrap();
    assert!(readback.document(&rel, &[Value::Int(1)]).await.is_none());
    assert!(readback.document(&rel, &[Value::Int(2)]).await.is_some());
    let c = raw(node);
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
    assert_eq!(l["error_type"], node.parse_error_type());
    assert!(l["reason"].as_str().unwrap().contains("doc"), "{l}");
}

async fn with_stop_a_rejected_row_names_table_key_and_lsn(node: Node) {
    let name = unique("stop_");
    let dir = tempfile::tempdir().unwrap();
    let file = doc_as_long(dir.path(), &name);
    let rel = conflicting_table(node, &name).await;
    let mut s = sink(
        node,
        &format!("mappings = {:?}\n", file.display().to_string()),
    )
    .await;
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
    assert_eq!(e.kind, SinkErrorKind::Rejected);
    let text = e.to_string();
    let table_name = format!("public.{name}");
    for part in [
        table_name.as_str(),
        "key 41",
        "2/10",
        node.parse_error_type(),
    ] {
        assert!(text.contains(part), "{text:?} lacks {part:?}");
    }
    assert!(!text.contains("secret-name"), "{text:?} shows a row value");
}

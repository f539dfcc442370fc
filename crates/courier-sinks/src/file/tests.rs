use std::path::PathBuf;

use async_trait::async_trait;
use courier_core::{Relation, Value};
use serde_json::{Map, Value as Json};

use super::*;
use crate::compliance::{run_compliance, Options, Readback};

/// Reads a row back the way a consumer of the file would: fold the lines of
/// its table, keeping per key the greatest `source.lsn` (later lines win
/// ties), dropping deleted rows, and ignoring writes older than a truncate.
struct FoldReadback {
    path: PathBuf,
}

#[async_trait]
impl Readback for FoldReadback {
    async fn read_row(&mut self, relation: &Relation, key: &[Value]) -> Option<Map<String, Json>> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let key_names: Vec<&str> = relation
            .key_indexes()
            .map(|i| relation.columns[i].name.as_str())
            .collect();
        let wanted: Vec<Json> = key.iter().map(Value::to_json).collect();
        let mut best: Option<(u64, Option<Map<String, Json>>)> = None;
        let mut truncated_at = 0;
        for line in text.lines() {
            let v: Json = serde_json::from_str(line).expect("every line is an envelope");
            if v["source"]["schema"] != relation.id.schema.as_str()
                || v["source"]["table"] != relation.id.name.as_str()
            {
                continue;
            }
            let version = v["source"]["lsn"].as_u64().expect("lsn");
            if v["op"] == "t" {
                truncated_at = truncated_at.max(version);
                if best.as_ref().is_some_and(|(b, _)| *b <= version) {
                    best = None;
                }
                continue;
            }
            let row = if v["op"] == "d" {
                &v["before"]
            } else {
                &v["after"]
            };
            let this: Vec<Json> = key_names.iter().map(|k| row[*k].clone()).collect();
            if this != wanted || version < truncated_at {
                continue;
            }
            if best.as_ref().is_none_or(|(b, _)| version >= *b) {
                // The suite reads an absent column as NULL; drop NULLs to compare.
                let after = if v["op"] == "d" {
                    None
                } else {
                    v["after"].as_object().map(|m| {
                        m.iter()
                            .filter(|(_, x)| !x.is_null())
                            .map(|(k, x)| (k.clone(), x.clone()))
                            .collect()
                    })
                };
                best = Some((version, after));
            }
        }
        best.and_then(|(_, row)| row)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn file_sink_passes_the_compliance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("changes.jsonl");
    let source = SourceInfo {
        name: "courier".into(),
        database: "db".into(),
    };
    let make = || {
        let config = FileConfig {
            path: path.clone(),
            tables: None,
        };
        let sink = FileSink::new(config, &source).expect("open the file");
        async move { sink }
    };
    let mut readback = FoldReadback { path: path.clone() };
    run_compliance(make, &mut readback, Options::default()).await;
}

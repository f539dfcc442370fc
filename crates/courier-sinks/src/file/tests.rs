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
            // An update that changed the key moved the row away from its old key.
            let old: Vec<Json> = key_names.iter().map(|k| v["before"][*k].clone()).collect();
            let moved_away = v["op"] == "u" && old == wanted && this != wanted;
            if version < truncated_at {
                continue;
            }
            if moved_away {
                if best.as_ref().is_none_or(|(b, _)| version >= *b) {
                    best = Some((version, None));
                }
                continue;
            }
            if this != wanted {
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

fn source() -> SourceInfo {
    SourceInfo {
        name: "courier".into(),
        database: "db".into(),
    }
}

fn open(path: &std::path::Path) -> FileSink {
    let config = FileConfig {
        path: path.to_path_buf(),
        tables: None,
    };
    FileSink::new(config, &source()).expect("open the file")
}

/// Every line of the file, parsed; panics naming the first line that is
/// not a whole envelope.
fn envelopes(path: &std::path::Path) -> Vec<Json> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the file ends inside a line"
    );
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("line {} is torn ({e}): {line:.120}", i + 1))
        })
        .collect()
}

fn changes(rel: &std::sync::Arc<Relation>, from: i64, n: i64) -> Batch {
    use crate::compliance::fixtures::{batch, change};
    batch(
        (from..from + n)
            .map(|id| {
                change(
                    rel,
                    courier_core::Op::Insert,
                    id,
                    "some text",
                    10 + id as u64,
                )
            })
            .collect(),
    )
}

/// Set in the child process that [`a_write_cut_short_leaves_no_torn_line`]
/// starts: the directory to work in.
const CUT_SHORT_DIR: &str = "COURIER_FILE_SINK_CUT_SHORT_DIR";

/// A write that fails part-way (a full disk) must not leave its fragment in
/// front of the retried batch. The write is cut short for real by a file
/// size limit (`RLIMIT_FSIZE`, with `SIGXFSZ` ignored, so `write` returns
/// what fit and then `EFBIG`); the limit applies to the whole process, so
/// the test runs in a child process of its own.
#[test]
fn a_write_cut_short_leaves_no_torn_line() {
    if let Some(dir) = std::env::var_os(CUT_SHORT_DIR) {
        return cut_short_in_this_process(std::path::Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "file::tests::a_write_cut_short_leaves_no_torn_line",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CUT_SHORT_DIR, dir.path())
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the child process failed:\n{log}");
    assert!(log.contains("1 passed"), "the child ran no test:\n{log}");
}

fn cut_short_in_this_process(dir: &std::path::Path) {
    let path = dir.join("changes.jsonl");
    let rel = crate::compliance::fixtures::table("public", "t");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut sink = open(&path);
        sink.apply(&changes(&rel, 1, 3)).await.unwrap();
        let whole = std::fs::metadata(&path).unwrap().len();

        let limit = file_size_limit(whole + 200);
        let err = sink
            .apply(&changes(&rel, 10, 50))
            .await
            .expect_err("the write goes past the file size limit");
        restore_file_size_limit(limit);
        assert_eq!(err.kind, courier_core::SinkErrorKind::Io, "{err}");
        assert!(err.to_string().contains("changes.jsonl"), "{err}");

        sink.apply(&changes(&rel, 10, 50)).await.unwrap();
        let lines = envelopes(&path);
        assert_eq!(
            lines.len(),
            53,
            "the first batch, then the retried batch once"
        );
        let ids: Vec<i64> = lines
            .iter()
            .map(|l| l["after"]["id"].as_i64().unwrap())
            .collect();
        let want: Vec<i64> = (1..4).chain(10..60).collect();
        assert_eq!(ids, want);
    });
}

/// Limits the size of files this process writes to `bytes`, making writes
/// past it fail with `EFBIG` rather than kill the process; returns the
/// limit before.
fn file_size_limit(bytes: u64) -> libc::rlimit {
    let mut before = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on values owned here.
    unsafe {
        assert_ne!(libc::signal(libc::SIGXFSZ, libc::SIG_IGN), libc::SIG_ERR);
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut before), 0);
        let limit = libc::rlimit {
            rlim_cur: bytes as libc::rlim_t,
            rlim_max: before.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    before
}

fn restore_file_size_limit(before: libc::rlimit) {
    // SAFETY: a plain system call on a value owned here.
    unsafe {
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &before), 0);
    }
}

/// A process killed in the middle of a write leaves a torn last line; the
/// sink opened again cuts it off (it was never reported applied, so the
/// replay brings it back whole) instead of appending to it.
#[tokio::test(flavor = "multi_thread")]
async fn a_torn_last_line_is_cut_off_when_the_file_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("changes.jsonl");
    let rel = crate::compliance::fixtures::table("public", "t");
    open(&path).apply(&changes(&rel, 1, 2)).await.unwrap();
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(b"{\"before\":null,\"after\":{\"id\":3,\"na")
        .unwrap();
    drop(file);

    open(&path).apply(&changes(&rel, 3, 2)).await.unwrap();
    let ids: Vec<i64> = envelopes(&path)
        .iter()
        .map(|l| l["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3, 4]);
}

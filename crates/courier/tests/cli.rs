//! `courier tail` and the admin API, against the real server.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::load::create_table;
use support::*;

/// `GET path` on the admin API: (status code, body).
fn http_get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the admin API");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_reports_status_and_metrics() {
    let db = "e2e_api";
    let client = fresh_db(db).await;
    create_table(&client, "items", 500).await;
    let dir = scratch("api");
    let addr = &format!("127.0.0.1:{}", free_port());
    let config = file_config(db, "api", &["public.items"], &dir, "").replace(
        "listen = \"off\"",
        &format!("listen = \"{addr}\"\ntoken = \"s3cret\""),
    );
    let mut courier = CourierProc::start(&dir, &config);
    wait_caught_up(&client, "api", Duration::from_secs(60)).await;
    client
        .batch_execute("UPDATE items SET val = 0 WHERE id <= 3; DELETE FROM items WHERE id = 4")
        .await
        .unwrap();
    wait_caught_up(&client, "api", Duration::from_secs(60)).await;

    assert_eq!(http_get(addr, "/healthz", None).0, 200);
    assert_eq!(
        http_get(addr, "/v1/status", None).0,
        401,
        "the token is required"
    );
    let (code, body) = http_get(addr, "/v1/status", Some("s3cret"));
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["streaming"], true);
    assert_eq!(status["source"]["slot"], "api");
    assert_eq!(status["sinks"]["out"]["state"], "running");
    assert_eq!(status["sinks"]["out"]["events"], 504);
    assert_eq!(status["snapshot"]["public.items"]["rows_done"], 500);
    assert_eq!(status["snapshot"]["public.items"]["state"], "done");
    assert!(status["sinks"]["out"]["applied_lsn"]
        .as_str()
        .unwrap()
        .contains('/'));

    let (code, metrics) = http_get(addr, "/metrics", Some("s3cret"));
    assert_eq!(code, 200);
    for line in [
        "courier_events_total{table=\"public.items\",op=\"u\"} 3",
        "courier_events_total{table=\"public.items\",op=\"d\"} 1",
        "courier_snapshot_rows_done{table=\"public.items\"} 500",
        "courier_sink_applied_lsn{sink=\"out\"}",
        "courier_retained_wal_bytes",
        "courier_sink_lag_bytes{sink=\"out\"}",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in:\n{metrics}");
    }
    assert!(courier.stop().success());
    drop_db(db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_prints_changes_without_moving_the_slot() {
    let db = "e2e_tail";
    let client = fresh_db(db).await;
    create_table(&client, "items", 10).await;
    let dir = scratch("tail");
    let config_path = dir.join("courier.toml");
    std::fs::write(
        &config_path,
        file_config(db, "tailslot", &["public.items"], &dir, ""),
    )
    .unwrap();
    let mut tail = Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(["tail", "--config"])
        .arg(&config_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the temporary slot, then change a row.
    wait_until(
        "courier tail to create its temporary slot",
        Duration::from_secs(120),
        || async {
            client
                .query(
                    "SELECT 1 FROM pg_replication_slots WHERE slot_name LIKE 'tailslot_tail_%'",
                    &[],
                )
                .await
                .is_ok_and(|rows| !rows.is_empty())
        },
    )
    .await;
    client
        .batch_execute("UPDATE items SET note = 'tailed' WHERE id = 7")
        .await
        .unwrap();
    let mut line = String::new();
    BufReader::new(tail.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = tail.kill();
    let _ = tail.wait();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["op"], "u");
    assert_eq!(v["after"]["id"], 7);
    assert_eq!(v["after"]["note"], "tailed");
    let slots = client
        .query(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'tailslot'",
            &[],
        )
        .await
        .unwrap();
    assert!(
        slots.is_empty(),
        "tail must not create or move the configured slot"
    );
    drop_db(db).await;
}

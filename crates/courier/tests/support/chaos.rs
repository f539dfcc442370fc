//! kill -9 under a concurrent write load: the scenario every sink's
//! end-to-end test runs before comparing its rows with PostgreSQL's.

use std::path::Path;
use std::time::Duration;

use rand::Rng;
use tokio_postgres::Client;

use super::load::Load;
use super::seed::seeded_rng;
use super::{wait_caught_up, CourierProc};

/// Transactions the load commits after the last restart, so that the last
/// process streams changes made while it runs.
const AFTER_LAST_RESTART: u64 = 100;

/// Starts Courier on `config` while three writers change `db.items`, kills
/// it with SIGKILL `rounds` times (two kills during the snapshot, the rest
/// each once the restarted process streams again) and restarts it, lets the
/// load commit more transactions, stops it, waits until the slot `db`
/// caught up, and stops Courier cleanly. The pause before each kill is at
/// least `first_wait_ms`, plus a random part from a seed the test prints.
pub async fn kill_9_under_load(
    client: &Client,
    db: &'static str,
    dir: &Path,
    config: &str,
    rounds: u64,
    first_wait_ms: u64,
    catch_up: Duration,
) {
    let mut rng = seeded_rng(&format!("kill -9 timings of {db}"));
    let load = Load::start(db, "items", 3);
    let mut courier = CourierProc::start(dir, config);
    for round in 0..rounds {
        if round >= 2 {
            wait_streaming(&mut courier, round as usize - 1, catch_up).await;
        }
        let wait_ms = first_wait_ms + (round * 397 + rng.gen_range(0..700)) % 1600;
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        courier.kill9();
        courier.restart();
    }
    load.commit_more(AFTER_LAST_RESTART, catch_up).await;
    load.stop().await;

    wait_caught_up(client, db, catch_up).await;
    assert!(courier.stop().success(), "log:\n{}", courier.log());
}

/// Waits until the process's log says it started streaming `times` times in
/// all (its restarts append to one log). Panics with the log's end when the
/// process exited instead, or after `timeout`.
async fn wait_streaming(courier: &mut CourierProc, times: usize, timeout: Duration) {
    let start = std::time::Instant::now();
    while courier.log().matches("streaming changes").count() < times {
        let why = if !courier.is_running() {
            "courier exited before it streamed again".to_string()
        } else if start.elapsed() > timeout {
            format!("timed out after {timeout:?} waiting for courier to stream again")
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let log = courier.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        panic!("{why} (start {times} of the process); the log's last lines:\n{tail}");
    }
}

//! Two `courier run` processes on one configuration: one leads, the other
//! waits as a standby and takes over when the leader is killed.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::Rng;
use support::fold::fold_file;
use support::load::{create_table, pg_rows, Load};
use support::seed::seeded_rng;
use support::*;

const CATCH_UP: Duration = Duration::from_secs(120);
/// The longest a takeover may take: a standby asks for the lead twice a
/// second, then prepares the source and starts streaming.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(15);

/// One of the two processes: its API port and log file.
struct Twin {
    proc: CourierProc,
    port: u16,
    log: String,
}

impl Twin {
    fn start(dir: &Path, config: &Path, port: u16, log: &str) -> Twin {
        let env = [("COURIER_TEST_API_PORT", port.to_string())];
        Twin {
            proc: CourierProc::start_with(dir, config, log, &env),
            port,
            log: log.to_string(),
        }
    }

    fn restart(&mut self) {
        let (dir, config) = (self.proc.dir.clone(), self.proc.config.clone());
        *self = Twin::start(&dir, &config, self.port, &self.log.clone());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.proc.dir.join(&self.log)).unwrap_or_default()
    }

    /// `/healthz`: (status code, body), or None while the API is not up.
    async fn health(&self) -> Option<(u16, String)> {
        let resp = reqwest::get(format!("http://127.0.0.1:{}/healthz", self.port))
            .await
            .ok()?;
        let code = resp.status().as_u16();
        Some((code, resp.text().await.ok()?))
    }

    async fn role(&self) -> Option<String> {
        let resp = reqwest::get(format!("http://127.0.0.1:{}/v1/status", self.port))
            .await
            .ok()?;
        let v: serde_json::Value = serde_json::from_str(&resp.text().await.ok()?).ok()?;
        v["role"].as_str().map(str::to_string)
    }

    async fn wait_streaming(&self, timeout: Duration) {
        let what = format!("the Courier on port {} to stream", self.port);
        wait_until(&what, timeout, || async {
            self.health().await.is_some_and(|(code, _)| code == 200)
        })
        .await;
    }

    async fn wait_standby(&self) {
        let what = format!("the Courier on port {} to be a standby", self.port);
        wait_until(&what, Duration::from_secs(30), || async {
            let health = self.health().await;
            health.is_some_and(|(code, body)| code == 503 && body.trim() == "standby")
                && self.role().await.as_deref() == Some("standby")
        })
        .await;
    }
}

/// Under a write load, the leader is killed with SIGKILL ten times, each
/// time the standby takes over (its /healthz turns 200), and the killed one
/// comes back as the standby; the file sink both write then equals
/// PostgreSQL. Prints the takeover times.
#[tokio::test(flavor = "multi_thread")]
async fn the_standby_takes_over_from_a_killed_leader() {
    let db = "e2e_standby";
    let client = fresh_db(db).await;
    create_table(&client, "items", 20_000).await;
    let dir = scratch("standby");
    let config = file_config(db, "standby", &["public.items"], &dir, "").replace(
        "listen = \"off\"",
        "listen = \"127.0.0.1:${COURIER_TEST_API_PORT}\"",
    );
    let config_path: PathBuf = dir.join("courier.toml");
    std::fs::write(&config_path, config).unwrap();

    let load = Load::start(db, "items", 3);
    let mut leader = Twin::start(&dir, &config_path, free_port(), "a.log");
    leader.wait_streaming(CATCH_UP).await;
    let mut standby = Twin::start(&dir, &config_path, free_port(), "b.log");
    standby.wait_standby().await;
    assert_eq!(leader.role().await.as_deref(), Some("leader"));

    let mut rng = seeded_rng("standby kill timings");
    let mut takeovers = Vec::new();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1500))).await;
        leader.proc.kill9();
        let killed = Instant::now();
        standby.wait_streaming(CATCH_UP).await;
        takeovers.push(killed.elapsed());
        leader.restart();
        leader.wait_standby().await;
        std::mem::swap(&mut leader, &mut standby);
    }
    load.commit_more(100, CATCH_UP).await;
    load.stop().await;
    wait_caught_up(&client, "standby", CATCH_UP).await;
    assert!(
        standby.proc.stop().success(),
        "log:\n{}",
        standby.log_text()
    );
    assert!(leader.proc.stop().success(), "log:\n{}", leader.log_text());

    takeovers.sort();
    let ms: Vec<u128> = takeovers.iter().map(|d| d.as_millis()).collect();
    eprintln!(
        "takeover after kill -9 (until the standby streams), ms: min {} median {} max {} (all: {ms:?})",
        ms[0],
        ms[ms.len() / 2],
        ms[ms.len() - 1]
    );
    assert!(
        takeovers.iter().all(|t| *t < TAKEOVER_LIMIT),
        "a takeover took over {TAKEOVER_LIMIT:?}: {ms:?}"
    );
    let expected = pg_rows(&client, "items").await;
    let got = fold_file(&dir.join("out.jsonl"))
        .get("public.items")
        .cloned()
        .unwrap_or_default();
    let missing = expected.keys().filter(|k| !got.contains_key(*k)).count();
    let extra = got.keys().filter(|k| !expected.contains_key(*k)).count();
    assert_eq!((missing, extra), (0, 0), "rows missing / resurrected");
    assert_eq!(got, expected);
    drop_db(db).await;
}

//! Reading what the Redis sink wrote, the way an application would, on the
//! project's Redis (`dev/redis.sh`, 56379) and Redis Cluster
//! (`dev/redis-cluster.sh`, 57001-57003).
//!
//! Every node is read with a plain connection: on a cluster each master is
//! scanned and read on its own, so a key is always read where it lives.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde_json::Value;

/// The standalone test server's URL for logical database `db`.
pub fn standalone_url(db: u8) -> String {
    started("redis.sh");
    format!("redis://127.0.0.1:56379/{db}")
}

/// A seed URL of the test cluster.
pub fn cluster_url() -> String {
    started("redis-cluster.sh");
    "redis://127.0.0.1:57001".to_string()
}

/// Runs `dev/<script> start` once per test process (a no-op when running).
fn started(script: &str) {
    static PLAIN: OnceLock<()> = OnceLock::new();
    static CLUSTER: OnceLock<()> = OnceLock::new();
    let cell = if script == "redis.sh" {
        &PLAIN
    } else {
        &CLUSTER
    };
    cell.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../dev")
            .join(script);
        let st = Command::new("bash")
            .arg(path)
            .arg("start")
            .status()
            .unwrap_or_else(|e| panic!("run dev/{script}: {e}"));
        assert!(st.success(), "dev/{script} start failed");
    });
}

/// Connections to every node holding keys: the server, or each cluster master.
pub struct RedisNodes {
    nodes: Vec<MultiplexedConnection>,
}

impl RedisNodes {
    /// Connects to the server at `url`, or to every master of the cluster
    /// `url` belongs to.
    pub async fn connect(url: &str, cluster: bool) -> RedisNodes {
        let first = conn(url).await;
        if !cluster {
            return RedisNodes { nodes: vec![first] };
        }
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut first.clone())
            .await
            .unwrap();
        let mut nodes = Vec::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 2 && fields[2].split(',').any(|f| f == "master") {
                let addr = fields[1].split(['@', ',']).next().unwrap();
                nodes.push(conn(&format!("redis://{addr}")).await);
            }
        }
        assert!(!nodes.is_empty(), "no masters in CLUSTER NODES:\n{text}");
        RedisNodes { nodes }
    }

    /// The node a single-server test uses (the first one).
    pub fn first(&self) -> MultiplexedConnection {
        self.nodes[0].clone()
    }

    /// Every key matching `pattern`, on every node, with `SCAN MATCH`.
    pub async fn keys(&self, pattern: &str) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let mut c = node.clone();
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut c)
                    .await
                    .unwrap();
                out.extend(keys.into_iter().map(|k| (i, k)));
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        out
    }

    /// The rows readable under keys `<prefix><id>`: by `id`, the JSON
    /// object of the hash field `row` (tombstones and other keys have none).
    pub async fn json_rows(&self, prefix: &str) -> BTreeMap<String, Value> {
        let keys = self.keys(&format!("{prefix}*")).await;
        let mut rows = BTreeMap::new();
        for chunk in keys.chunks(1000) {
            // Keys of one chunk may sit on different nodes: one pipeline per node.
            let mut by_node: BTreeMap<usize, Vec<&String>> = BTreeMap::new();
            for (node, key) in chunk {
                by_node.entry(*node).or_default().push(key);
            }
            for (node, keys) in by_node {
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.cmd("HGET").arg(k.as_str()).arg("row");
                }
                let values: Vec<Option<String>> = pipe
                    .query_async(&mut self.nodes[node].clone())
                    .await
                    .unwrap();
                for (k, v) in keys.into_iter().zip(values) {
                    if let Some(text) = v {
                        let id = k.strip_prefix(prefix).unwrap().to_string();
                        let row = serde_json::from_str(&text)
                            .unwrap_or_else(|e| panic!("row under {k} is not JSON: {e}"));
                        rows.insert(id, row);
                    }
                }
            }
        }
        rows
    }
}

async fn conn(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!("connect to the test Redis at {url}: {e}; run dev/redis.sh start")
        })
}

/// Deletes every key matching `<prefix>*` (leftovers of an earlier run).
pub async fn clear(nodes: &RedisNodes, prefix: &str) {
    for (node, key) in nodes.keys(&format!("{prefix}*")).await {
        let _: i64 = redis::cmd("UNLINK")
            .arg(&key)
            .query_async(&mut nodes.nodes[node].clone())
            .await
            .unwrap();
    }
}

/// A config with one Redis sink `cache` (extra sink keys in `sink`).
pub fn redis_config(db: &str, slot: &str, tables: &[&str], dir: &Path, sink: &str) -> String {
    super::sink_config(
        db,
        slot,
        tables,
        dir,
        "cache",
        &format!("type = \"redis\"\n{sink}"),
    )
}

/// A Redis server of a test's own, which the test starts and stops: it
/// keeps its data in an append-only file, so a restart loses nothing.
pub struct OwnRedis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    pub fn new(dir: &Path) -> OwnRedis {
        let dir = dir.join("redis");
        std::fs::create_dir_all(&dir).unwrap();
        OwnRedis {
            port: super::free_port(),
            dir,
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn start(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (dev/redis.sh start installs it)");
        self.child = Some(child);
        let url = self.url();
        super::wait_until(
            "the test's Redis to answer",
            Duration::from_secs(30),
            || {
                let url = url.clone();
                async move {
                    let Ok(c) = ::redis::Client::open(url.as_str()) else {
                        return false;
                    };
                    let Ok(mut conn) = c.get_multiplexed_async_connection().await else {
                        return false;
                    };
                    ::redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .is_ok()
                }
            },
        )
        .await;
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

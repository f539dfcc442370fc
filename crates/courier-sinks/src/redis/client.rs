//! The I/O: connections to a Redis server or cluster, pipelined commands
//! with bounded concurrency, the script's loading, and key scans.

use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ErrorKind, RedisError, TlsCertificates, Value};

use super::config::Settings;
use super::encode::{Action, KeyCommand};
use super::script::APPLY;

/// How a failed command should be handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// The server lost the script (restart, `SCRIPT FLUSH`): load it, run again.
    NoScript,
    /// Connection loss, timeout, failover, loading: retry later.
    Retriable,
    /// The server rejected the command for a reason retrying cannot fix.
    Fatal,
}

/// A failed command: its class and the server's or client's message (which
/// never holds row values: the script's errors name no data).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Failure {
    pub class: Class,
    pub message: String,
}

impl From<&RedisError> for Failure {
    fn from(e: &RedisError) -> Self {
        Failure {
            class: classify(e),
            message: e.to_string(),
        }
    }
}

/// Which class a Redis error belongs to.
pub(crate) fn classify(e: &RedisError) -> Class {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return Class::Retriable;
    }
    match e.kind() {
        ErrorKind::NoScriptError => Class::NoScript,
        ErrorKind::TryAgain
        | ErrorKind::ClusterDown
        | ErrorKind::MasterDown
        | ErrorKind::BusyLoadingError
        | ErrorKind::Moved
        | ErrorKind::Ask
        | ErrorKind::ReadOnly
        | ErrorKind::ClusterConnectionNotFound
        | ErrorKind::IoError
        | ErrorKind::ParseError => Class::Retriable,
        _ => Class::Fatal,
    }
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Where to scan: the one server, or one master of the cluster.
pub(crate) enum ScanNode {
    Single,
    Master { host: String, port: u16 },
}

/// A connection to the configured Redis, ready to run the sink's commands.
pub(crate) struct Client {
    conn: Conn,
    sha: String,
    batch_size: usize,
    max_in_flight: usize,
    ttl_ms: u64,
    tombstone_ttl_ms: u64,
}

impl Client {
    /// Connects (to every cluster node, for a cluster) and loads the script.
    pub async fn connect(s: &Settings) -> Result<Client, RedisError> {
        let certs = || TlsCertificates {
            client_tls: None,
            root_cert: s.tls_ca.clone(),
        };
        let conn = if s.cluster {
            let mut b = redis::cluster::ClusterClientBuilder::new(s.urls.clone())
                .connection_timeout(s.timeout)
                .response_timeout(s.timeout);
            if s.tls_ca.is_some() {
                b = b.certs(certs());
            }
            Conn::Cluster(b.build()?.get_async_connection().await?)
        } else {
            let url = s.urls[0].as_str();
            let client = match s.tls_ca {
                Some(_) => redis::Client::build_with_tls(url, certs())?,
                None => redis::Client::open(url)?,
            };
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(s.timeout)
                .set_response_timeout(s.timeout)
                // Courier retries failed batches with its own backoff; the
                // client only bridges a short blip (delays of about 1-2 s).
                .set_number_of_retries(1)
                .set_factor(2)
                .set_max_delay(2000);
            Conn::Single(ConnectionManager::new_with_config(client, config).await?)
        };
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut client = Client {
            conn,
            sha: redis::Script::new(APPLY).get_hash().to_string(),
            batch_size: s.batch_size,
            max_in_flight: s.max_in_flight,
            ttl_ms: s.ttl.map(ms).unwrap_or(0),
            tombstone_ttl_ms: ms(s.tombstone_ttl),
        };
        client.load_script().await?;
        Ok(client)
    }

    /// Loads the script (on every master, for a cluster).
    pub async fn load_script(&mut self) -> Result<(), RedisError> {
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(APPLY);
        let _: Value = match &mut self.conn {
            Conn::Single(c) => load.query_async(c).await?,
            Conn::Cluster(c) => load.query_async(c).await?,
        };
        Ok(())
    }

    /// The Redis command for a key command.
    pub fn command(&self, kc: &KeyCommand) -> Cmd {
        let mut cmd = match &kc.action {
            Action::Unlink => {
                let mut c = redis::cmd("UNLINK");
                c.arg(&kc.key);
                return c;
            }
            _ => redis::cmd("EVALSHA"),
        };
        cmd.arg(&self.sha).arg(1).arg(&kc.key);
        let version = kc.version.as_u64().to_string();
        match &kc.action {
            Action::Upsert(fields) => {
                cmd.arg("set").arg(version).arg(self.ttl_ms);
                for (f, v) in fields {
                    cmd.arg(f).arg(v);
                }
            }
            Action::Delete => {
                cmd.arg("del").arg(version).arg(self.tombstone_ttl_ms);
            }
            Action::Truncate => {
                cmd.arg("trunc").arg(version).arg(self.tombstone_ttl_ms);
            }
            Action::Unlink => {}
        }
        cmd
    }

    /// Runs the commands, at most `batch_size` per pipeline and
    /// `max_in_flight` pipelines at once; one result per command, in order.
    ///
    /// The commands must touch distinct keys: they may complete in any order.
    /// Each pipeline is built just before it is sent, so building the next
    /// overlaps with the server working on the previous ones.
    pub async fn run(&self, cmds: &[KeyCommand]) -> Vec<Result<Value, Failure>> {
        match &self.conn {
            Conn::Single(conn) => {
                // Futures do nothing until polled: at most `max_in_flight` run.
                let pipelines: Vec<_> = cmds
                    .chunks(self.batch_size)
                    .map(|chunk| self.send_pipeline(conn.clone(), chunk))
                    .collect();
                stream::iter(pipelines)
                    .buffered(self.max_in_flight)
                    .flat_map(stream::iter)
                    .collect()
                    .await
            }
            // A cluster pipeline must stay within one slot, so commands go
            // one by one; the client still pipelines them per node.
            Conn::Cluster(conn) => {
                let sends: Vec<_> = cmds
                    .iter()
                    .map(|kc| self.send_one(conn.clone(), kc))
                    .collect();
                stream::iter(sends)
                    .buffered(self.batch_size.saturating_mul(self.max_in_flight))
                    .collect()
                    .await
            }
        }
    }

    async fn send_pipeline(
        &self,
        mut conn: ConnectionManager,
        chunk: &[KeyCommand],
    ) -> Vec<Result<Value, Failure>> {
        let n = chunk.len();
        let mut pipe = redis::pipe();
        for kc in chunk {
            pipe.add_command(self.command(kc));
        }
        match conn.req_packed_commands(&pipe, 0, n).await {
            Ok(values) if values.len() == n => values.into_iter().map(value_result).collect(),
            Ok(values) => {
                let f = Failure {
                    class: Class::Retriable,
                    message: format!(
                        "redis answered {} replies to a pipeline of {n}",
                        values.len()
                    ),
                };
                vec![Err(f); n]
            }
            Err(e) => vec![Err(Failure::from(&e)); n],
        }
    }

    async fn send_one(
        &self,
        mut conn: ClusterConnection,
        kc: &KeyCommand,
    ) -> Result<Value, Failure> {
        self.command(kc)
            .query_async::<Value>(&mut conn)
            .await
            .map_err(|e| Failure::from(&e))
    }

    /// The nodes whose keys together are all keys: the server, or every master.
    pub async fn scan_nodes(&mut self) -> Result<Vec<ScanNode>, RedisError> {
        let conn = match &mut self.conn {
            Conn::Single(_) => return Ok(vec![ScanNode::Single]),
            Conn::Cluster(c) => c,
        };
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("NODES");
        let text: String = redis::from_owned_redis_value(
            conn.route_command(&cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random))
                .await?,
        )?;
        Ok(masters(&text))
    }

    /// One `SCAN` step on `node`: the next cursor (0 when done) and keys
    /// matching `pattern` (of type `kind`, when given).
    pub async fn scan_page(
        &mut self,
        node: &ScanNode,
        cursor: u64,
        pattern: &[u8],
        kind: Option<&str>,
    ) -> Result<(u64, Vec<Vec<u8>>), RedisError> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000);
        if let Some(k) = kind {
            cmd.arg("TYPE").arg(k);
        }
        let reply = match (&mut self.conn, node) {
            (Conn::Single(c), _) => cmd.query_async(c).await?,
            (Conn::Cluster(c), ScanNode::Master { host, port }) => {
                let route = SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                };
                c.route_command(&cmd, RoutingInfo::SingleNode(route))
                    .await?
            }
            (Conn::Cluster(_), ScanNode::Single) => {
                return Err(RedisError::from((
                    ErrorKind::ClientError,
                    "a cluster is scanned per master",
                )))
            }
        };
        redis::from_owned_redis_value(reply)
    }
}

fn value_result(v: Value) -> Result<Value, Failure> {
    match v {
        Value::ServerError(e) => Err(Failure::from(&RedisError::from(e))),
        other => Ok(other),
    }
}

/// The healthy masters listed by `CLUSTER NODES`.
fn masters(nodes: &str) -> Vec<ScanNode> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let addr = fields.nth(1)?;
            let flags = fields.next()?;
            let healthy = flags
                .split(',')
                .all(|f| !matches!(f, "fail" | "noaddr" | "handshake"));
            if !flags.split(',').any(|f| f == "master") || !healthy {
                return None;
            }
            let hostport = addr.split(['@', ',']).next()?;
            let (host, port) = hostport.rsplit_once(':')?;
            Some(ScanNode::Master {
                host: host.to_string(),
                port: port.parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_healthy_masters() {
        let text = "\
a1 127.0.0.1:57001@47001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:57002@47002,node-b master - 0 0 2 connected 5461-10922
c3 127.0.0.1:57003@47003 master,fail - 0 0 3 connected
d4 127.0.0.1:57004@47004 slave a1 0 0 1 connected
";
        let got: Vec<(String, u16)> = masters(text)
            .into_iter()
            .filter_map(|n| match n {
                ScanNode::Master { host, port } => Some((host, port)),
                ScanNode::Single => None,
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("127.0.0.1".to_string(), 57001),
                ("127.0.0.1".to_string(), 57002)
            ]
        );
    }
}

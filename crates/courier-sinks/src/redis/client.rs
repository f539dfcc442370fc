//! The I/O: connections to a Redis server or cluster, pipelined commands
//! with bounded concurrency, the script's loading, and key scans.

use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ErrorKind, RedisError, TlsCertificates, Value};

use courier_core::SinkErrorKind;

use super::config::Settings;
use super::encode::{Action, Fields, KeyCommand};
use super::script::{APPLY, OP_DELETE, OP_JSON, OP_SET, OP_TRUNCATE, ROW_FIELD};
use super::slot::slot;
use crate::failure;

/// Rows per script call (or `UNLINK`): enough that the call's own cost in
/// the server is shared, few enough that one call holds the single-threaded
/// server only briefly (well under a millisecond).
pub(crate) const ROWS_PER_CALL: usize = 64;

/// A failed command: what kind of failure it is and the server's or
/// client's message (which never holds row values: the script's errors
/// name no data).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Failure {
    pub kind: SinkErrorKind,
    /// The server lost the script (restart, `SCRIPT FLUSH`): load it, run again.
    pub no_script: bool,
    pub message: String,
}

impl From<&RedisError> for Failure {
    fn from(e: &RedisError) -> Self {
        let (kind, message) = classify(e);
        Failure {
            kind,
            no_script: e.kind() == ErrorKind::NoScriptError,
            message,
        }
    }
}

/// The kind of a Redis error, and its reason in words.
///
/// Connection failures are unreachable or timed out; `BUSY` (a script
/// running too long) and `OOM` (`maxmemory` reached under `noeviction`)
/// are overload: both pass once the server catches up or memory is freed.
/// Failovers, loading and redirects are unavailable; a refused password or
/// an invalid setting is configuration; any other refusal (a key of the
/// wrong type, a script error) is a rejection of the data.
pub(crate) fn classify(e: &RedisError) -> (SinkErrorKind, String) {
    if e.is_timeout() {
        return (SinkErrorKind::TimedOut, "no answer in time".into());
    }
    if e.is_connection_refusal() || e.is_io_error() || e.is_connection_dropped() {
        return failure::of_network(e, SinkErrorKind::Unreachable);
    }
    let kind = match e.kind() {
        _ if matches!(e.code(), Some("BUSY" | "OOM")) => SinkErrorKind::Overloaded,
        ErrorKind::NoScriptError
        | ErrorKind::TryAgain
        | ErrorKind::ClusterDown
        | ErrorKind::MasterDown
        | ErrorKind::BusyLoadingError
        | ErrorKind::Moved
        | ErrorKind::Ask
        | ErrorKind::ReadOnly
        | ErrorKind::ClusterConnectionNotFound
        | ErrorKind::ParseError => SinkErrorKind::Unavailable,
        ErrorKind::IoError => SinkErrorKind::Unreachable,
        ErrorKind::AuthenticationFailed
        | ErrorKind::InvalidClientConfig
        | ErrorKind::ClientError => SinkErrorKind::Config,
        _ => SinkErrorKind::Rejected,
    };
    (kind, e.to_string())
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

    /// One command applying `rows` (all `Unlink`, or none; on a cluster all
    /// in one hash slot): an `UNLINK` of their keys, or one call of the script.
    pub fn call(&self, rows: &[&KeyCommand]) -> Cmd {
        if rows.first().is_some_and(|kc| kc.action == Action::Unlink) {
            let mut cmd = redis::cmd("UNLINK");
            for kc in rows {
                cmd.arg(&kc.key);
            }
            return cmd;
        }
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(rows.len());
        for kc in rows {
            cmd.arg(&kc.key);
        }
        cmd.arg(self.ttl_ms).arg(self.tombstone_ttl_ms);
        let mut version = itoa::Buffer::new();
        for kc in rows {
            let (op, fields) = match &kc.action {
                Action::Upsert(fields @ Fields::Json(_)) => (OP_JSON, Some(fields)),
                Action::Upsert(fields @ Fields::Hash(_)) => (OP_SET, Some(fields)),
                Action::Delete | Action::Unlink => (OP_DELETE, None),
                Action::Truncate => (OP_TRUNCATE, None),
            };
            cmd.arg(op)
                .arg(version.format(kc.version.as_u64()))
                .arg(fields.map_or(0, Fields::len));
            match fields {
                Some(Fields::Json(row)) => {
                    cmd.arg(ROW_FIELD).arg(row.as_slice());
                }
                Some(Fields::Hash(columns)) => {
                    for (i, value) in columns {
                        cmd.arg(kc.relation.columns[*i].name.as_str())
                            .arg(value.as_slice());
                    }
                }
                None => {}
            }
        }
        cmd
    }

    /// Runs the commands, one result per command, in order.
    ///
    /// Rows are grouped into calls of up to [`ROWS_PER_CALL`] (on a cluster,
    /// rows of one hash slot), sent in pipelines of about `batch_size` rows,
    /// `max_in_flight` pipelines at once. The commands must touch distinct
    /// keys: they may complete in any order. Each pipeline is built just
    /// before it is sent, so building the next overlaps with the server
    /// working on the previous ones.
    pub async fn run(&self, cmds: &[KeyCommand]) -> Vec<Result<(), Failure>> {
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
            // A cluster pipeline must stay within one slot, so calls go one
            // by one, each with rows of one slot; the client still
            // pipelines them per node.
            Conn::Cluster(conn) => {
                let groups = slot_groups(cmds);
                let sends: Vec<_> = groups
                    .iter()
                    .map(|g| {
                        let rows: Vec<&KeyCommand> = g.iter().map(|&i| &cmds[i]).collect();
                        self.send_call(conn.clone(), rows)
                    })
                    .collect();
                let results: Vec<Vec<Result<(), Failure>>> = stream::iter(sends)
                    .buffered(self.batch_size.saturating_mul(self.max_in_flight))
                    .collect()
                    .await;
                let mut out = vec![Ok(()); cmds.len()];
                for (g, rs) in groups.iter().zip(results) {
                    for (&i, r) in g.iter().zip(rs) {
                        out[i] = r;
                    }
                }
                out
            }
        }
    }

    async fn send_pipeline(
        &self,
        mut conn: ConnectionManager,
        chunk: &[KeyCommand],
    ) -> Vec<Result<(), Failure>> {
        let calls: Vec<Vec<&KeyCommand>> = calls(chunk.iter());
        let mut pipe = redis::pipe();
        for rows in &calls {
            pipe.add_command(self.call(rows));
        }
        let n = calls.len();
        let replies = match conn.req_packed_commands(&pipe, 0, n).await {
            Ok(values) if values.len() == n => values,
            Ok(values) => {
                let f = Failure {
                    kind: SinkErrorKind::Unavailable,
                    no_script: false,
                    message: format!(
                        "redis answered {} replies to a pipeline of {n}",
                        values.len()
                    ),
                };
                return vec![Err(f); chunk.len()];
            }
            Err(e) => return vec![Err(Failure::from(&e)); chunk.len()],
        };
        let mut out = Vec::with_capacity(chunk.len());
        for (rows, reply) in calls.iter().zip(replies) {
            match value_result(reply) {
                Err(f) if !f.kind.is_retriable() && rows.len() > 1 => {
                    out.extend(self.one_by_one(&mut conn, rows).await)
                }
                r => out.extend(std::iter::repeat_n(r, rows.len())),
            }
        }
        out
    }

    async fn send_call(
        &self,
        mut conn: ClusterConnection,
        rows: Vec<&KeyCommand>,
    ) -> Vec<Result<(), Failure>> {
        match self.call(&rows).query_async::<Value>(&mut conn).await {
            Ok(_) => vec![Ok(()); rows.len()],
            Err(e) => match Failure::from(&e) {
                f if !f.kind.is_retriable() && rows.len() > 1 => {
                    self.one_by_one(&mut conn, &rows).await
                }
                f => vec![Err(f); rows.len()],
            },
        }
    }

    /// Runs each row as a call of its own, to tell which row a failed call
    /// of several failed on (rows it applied before failing are applied
    /// again, which their versions make harmless).
    async fn one_by_one<C: ConnectionLike>(
        &self,
        conn: &mut C,
        rows: &[&KeyCommand],
    ) -> Vec<Result<(), Failure>> {
        let mut out = Vec::with_capacity(rows.len());
        for kc in rows {
            let r = match conn.req_packed_command(&self.call(&[kc])).await {
                Ok(v) => value_result(v),
                Err(e) => Err(Failure::from(&e)),
            };
            out.push(r);
        }
        out
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

    /// Every field of each key's hash (empty for an absent key), in order:
    /// one pipeline on a single server, concurrent reads on a cluster.
    pub async fn hgetall_many(
        &self,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Vec<(Vec<u8>, Vec<u8>)>>, RedisError> {
        match &self.conn {
            Conn::Single(c) => {
                let mut pipe = redis::pipe();
                for k in keys {
                    pipe.cmd("HGETALL").arg(k);
                }
                let mut c = c.clone();
                pipe.query_async(&mut c).await
            }
            Conn::Cluster(c) => {
                use futures_util::TryStreamExt;
                let reads: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        let mut c = c.clone();
                        let mut cmd = redis::cmd("HGETALL");
                        cmd.arg(k);
                        async move { cmd.query_async::<Vec<(Vec<u8>, Vec<u8>)>>(&mut c).await }
                    })
                    .collect();
                stream::iter(reads)
                    .buffered(self.max_in_flight.max(1) * 8)
                    .try_collect()
                    .await
            }
        }
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

fn value_result(v: Value) -> Result<(), Failure> {
    match v {
        Value::ServerError(e) => Err(Failure::from(&RedisError::from(e))),
        _ => Ok(()),
    }
}

/// Splits rows into calls: runs of up to [`ROWS_PER_CALL`] rows, an
/// `UNLINK` never sharing a call with a script row.
fn calls<'a>(rows: impl Iterator<Item = &'a KeyCommand>) -> Vec<Vec<&'a KeyCommand>> {
    let mut out: Vec<Vec<&KeyCommand>> = Vec::new();
    for kc in rows {
        let unlink = kc.action == Action::Unlink;
        match out.last_mut() {
            Some(call)
                if call.len() < ROWS_PER_CALL && (call[0].action == Action::Unlink) == unlink =>
            {
                call.push(kc)
            }
            _ => out.push(vec![kc]),
        }
    }
    out
}

/// The commands' indexes grouped into calls whose keys share a hash slot.
fn slot_groups(cmds: &[KeyCommand]) -> Vec<Vec<usize>> {
    let mut by_slot: Vec<(u16, usize)> = cmds
        .iter()
        .enumerate()
        .map(|(i, kc)| (slot(&kc.key), i))
        .collect();
    by_slot.sort_unstable();
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut last_slot = None;
    for (s, i) in by_slot {
        let unlink = cmds[i].action == Action::Unlink;
        match out.last_mut() {
            Some(call)
                if last_slot == Some(s)
                    && call.len() < ROWS_PER_CALL
                    && (cmds[call[0]].action == Action::Unlink) == unlink =>
            {
                call.push(i)
            }
            _ => out.push(vec![i]),
        }
        last_slot = Some(s);
    }
    out
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

    /// The kind of the error reply `reply` (RESP bytes).
    fn kind_of_reply(reply: &[u8]) -> SinkErrorKind {
        match redis::parse_redis_value(reply) {
            Ok(Value::ServerError(e)) => classify(&RedisError::from(e)).0,
            other => panic!("not an error reply: {other:?}"),
        }
    }

    #[test]
    fn classifies_error_replies() {
        let oom = b"-OOM command not allowed when used memory > 'maxmemory'.\r\n";
        assert_eq!(kind_of_reply(oom), SinkErrorKind::Overloaded);
        let busy = b"-BUSY Redis is busy running a script.\r\n";
        assert_eq!(kind_of_reply(busy), SinkErrorKind::Overloaded);
        let loading = b"-LOADING Redis is loading the dataset in memory\r\n";
        assert_eq!(kind_of_reply(loading), SinkErrorKind::Unavailable);
        let wrong = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
        assert_eq!(kind_of_reply(wrong), SinkErrorKind::Rejected);
        let noscript = b"-NOSCRIPT No matching script.\r\n";
        let f = match redis::parse_redis_value(noscript) {
            Ok(Value::ServerError(e)) => Failure::from(&RedisError::from(e)),
            other => panic!("not an error reply: {other:?}"),
        };
        assert!(f.no_script && f.kind.is_retriable());
    }

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

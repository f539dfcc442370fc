//! Outages for the sinks' tests against real servers: a loopback port
//! nothing listens on, and a relay to a real server that a test can cut, so
//! that a sink built while the server was reachable then loses it.

use std::net::{SocketAddr, TcpListener};

use courier_core::SinkErrorKind;

use crate::BuildError;

use tokio::task::JoinSet;

/// A loopback port with nothing listening on it (bound, then released).
pub(crate) fn unused_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("the bound address").port()
}

/// Checks that a sink built against a port nobody listens on failed as an
/// unreachable store (retriable, so Courier waits for it) with a message
/// holding `words`; returns the message.
pub(crate) fn assert_unreachable_at_start(e: &BuildError, words: &str) -> String {
    assert!(e.is_retriable(), "{e}");
    assert!(
        matches!(
            e,
            BuildError::Connect {
                kind: SinkErrorKind::Unreachable,
                ..
            }
        ),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(text.contains(words), "{text}");
    text
}

/// Forwards TCP connections from a loopback port to `target` until cut.
pub(crate) struct Relay {
    /// `host:port` to connect to instead of the target.
    pub addr: SocketAddr,
    tasks: JoinSet<()>,
}

impl Relay {
    /// Starts relaying to `target` (`host:port`).
    pub async fn start(target: &str) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        let target = target.to_string();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut pipes = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                pipes.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Relay { addr, tasks }
    }

    /// Closes the port and every relayed connection: from now on the
    /// address refuses connections.
    pub async fn cut(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

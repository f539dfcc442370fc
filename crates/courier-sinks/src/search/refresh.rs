//! Making applied documents searchable on demand: `POST /<aliases>/_refresh`
//! over every alias the sink writes. Courier calls it only while someone
//! waits for a position the sink applied but has not yet shown to
//! searches, so an index nobody waits on keeps its own refresh interval
//! and its indexing throughput.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use courier_core::{Refresh, SinkError};
use reqwest::Method;

use super::client::Client;

/// Refreshes the aliases a search sink has written.
pub(crate) struct Refresher {
    client: Client,
    written: Arc<Mutex<BTreeSet<String>>>,
}

impl Refresher {
    pub fn new(client: Client, written: Arc<Mutex<BTreeSet<String>>>) -> Self {
        Refresher { client, written }
    }
}

#[async_trait]
impl Refresh for Refresher {
    async fn refresh(&self) -> Result<(), SinkError> {
        let aliases: Vec<String> = {
            let w = self.written.lock().unwrap_or_else(|e| e.into_inner());
            w.iter().cloned().collect()
        };
        if aliases.is_empty() {
            // Nothing written yet: nothing to make searchable.
            return Ok(());
        }
        // A refresh of a missing index (dropped by hand) must not block
        // every waiter: ignore_unavailable leaves it out.
        let path = format!("/{}/_refresh?ignore_unavailable=true", aliases.join(","));
        self.client
            .send(Method::POST, &path, None, &[])
            .await
            .map(|_| ())
            .map_err(|e| {
                SinkError::new(
                    e.kind(),
                    format!("search: refresh {}: {e}", aliases.join(",")),
                )
            })
    }
}

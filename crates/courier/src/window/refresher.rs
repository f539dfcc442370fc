//! Refreshes on demand: a sink whose changes are readable only after a
//! refresh (a search index) gets one while someone waits for a position it
//! applied but has not shown, at most [`MAX_REFRESHES_PER_SECOND`] times a
//! second. Nobody waiting, no refresh: the index keeps its own refresh
//! interval and its indexing throughput.

use std::sync::Arc;
use std::time::Duration;

use courier_core::Refresh;

use super::SinkWindow;
use crate::pipeline::error_chain;

/// The most refreshes Courier makes per second and sink: a burst of waiters
/// shares one refresh, and a refresh costs the index a small segment.
pub const MAX_REFRESHES_PER_SECOND: u32 = 20;

/// Runs until dropped (the sink task aborts it when it ends).
pub async fn refresh_on_demand(sink: String, window: Arc<SinkWindow>, refresh: Arc<dyn Refresh>) {
    let gap = Duration::from_secs(1) / MAX_REFRESHES_PER_SECOND;
    let mut failures = 0u32;
    loop {
        let Some(lowest) = window.visible.lowest_waiting() else {
            window.visible.demanded().await;
            continue;
        };
        // Refresh only once the sink applied what the first waiter needs;
        // a new waiter may need less.
        tokio::select! {
            _ = window.applied.reached(lowest) => {}
            _ = window.visible.demanded() => continue,
        }
        let through = window.applied_position();
        if !window.has_unshown_writes() {
            window.refreshed_through(through);
            continue;
        }
        match refresh.refresh().await {
            Ok(()) => {
                failures = 0;
                window.refreshed_through(through);
                tokio::time::sleep(gap).await;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = (gap * failures).min(Duration::from_secs(5));
                tracing::warn!(sink = %sink, error = %error_chain(&e), retry_in_ms = wait.as_millis() as u64,
                    "refresh for a waiting reader failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::Windows;
    use async_trait::async_trait;
    use courier_core::{Position, SinkError};
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Default)]
    struct Counting(AtomicU32);

    #[async_trait]
    impl Refresh for Counting {
        async fn refresh(&self) -> Result<(), SinkError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_get_a_refresh_and_share_it() {
        let windows = Windows::new(["search"], Position(10));
        let w = windows.get("search").unwrap().clone();
        w.needs_refresh();
        let counting = Arc::new(Counting::default());
        let task = tokio::spawn(refresh_on_demand(
            "search".into(),
            w.clone(),
            counting.clone(),
        ));
        // Applied but unwaited: no refresh.
        w.applied(Some(Position(20)), &[1], true);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(counting.0.load(Ordering::SeqCst), 0);
        // A hundred waiters for what is applied, one for what is not yet.
        let waits: Vec<_> = (0..100)
            .map(|n| tokio::spawn(w.visible_at(Position(11 + n % 10))))
            .collect();
        let later = tokio::spawn(w.visible_at(Position(40)));
        for wait in waits {
            wait.await.unwrap();
        }
        assert_eq!(counting.0.load(Ordering::SeqCst), 1);
        w.applied(Some(Position(40)), &[2], true);
        later.await.unwrap();
        assert_eq!(counting.0.load(Ordering::SeqCst), 2);
        assert_eq!(w.visible_position(), Position(40));
        task.abort();
    }
}

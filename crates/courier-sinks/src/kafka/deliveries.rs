//! Delivery reports counted, not awaited one by one: the producer's context
//! numbers every record it is handed, and a round of records is done once
//! as many reports came back as records were enqueued in it.
//!
//! librdkafka calls [`Deliveries::delivery`] from the producer's polling
//! thread; the sink waits in [`Deliveries::wait_for`]. One lock, taken once
//! per report, and no allocation per record.

use std::sync::{Mutex, MutexGuard};

use rdkafka::client::ClientContext;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::ProducerContext;
use rdkafka::Message;
use tokio::sync::Notify;

use super::client::Failure;

/// The first record of a round that the broker did not take, and why.
#[derive(Debug)]
pub(crate) struct Refused {
    /// The record's number, as given to [`Deliveries::begin`]'s round.
    pub seq: u64,
    pub failure: Failure,
    pub topic: String,
}

/// The producer's context: counts the reports of the current round.
#[derive(Default)]
pub(crate) struct Deliveries {
    state: Mutex<Round>,
    changed: Notify,
}

#[derive(Default)]
struct Round {
    /// Records numbered below this belong to an earlier round (one that
    /// failed and was given up): their late reports are ignored.
    first: u64,
    /// Reports of this round so far, delivered or not.
    reported: u64,
    /// The waiter wants to hear when `reported` reaches this.
    wake_at: u64,
    refused: Option<Refused>,
}

impl Deliveries {
    /// Starts a round whose records are numbered from `first` on; reports
    /// of records before it no longer count.
    pub fn begin(&self, first: u64) {
        *self.lock() = Round {
            first,
            reported: 0,
            wake_at: u64::MAX,
            refused: None,
        };
    }

    /// Waits until `count` reports of the round came back, or one of them
    /// is a refusal: `Err` with the first record the broker did not take.
    ///
    /// Every enqueued record is reported within librdkafka's
    /// `message.timeout.ms`, so this wait is bounded.
    pub async fn wait_for(&self, count: u64) -> Result<(), Refused> {
        loop {
            // Registered before the check, so a report between the check
            // and the wait still wakes it.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut round = self.lock();
                if let Some(refused) = round.refused.take() {
                    return Err(refused);
                }
                if round.reported >= count {
                    return Ok(());
                }
                round.wake_at = count;
            }
            notified.await;
        }
    }

    /// The first refusal of the round, if one came back.
    pub fn take_refused(&self) -> Option<Refused> {
        self.lock().refused.take()
    }

    /// How many reports of the round came back.
    pub fn reported(&self) -> u64 {
        self.lock().reported
    }

    fn lock(&self) -> MutexGuard<'_, Round> {
        // The lock guards counters only, which stay consistent even if a
        // holder panicked.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    /// The record's number in its round.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: Self::DeliveryOpaque) {
        self.report(seq as u64, || match result {
            Ok(_) => None,
            Err((e, message)) => Some((Failure::from(e), message.topic().to_string())),
        });
    }
}

impl Deliveries {
    /// Counts the report of record `seq`; `refusal` says why the broker did
    /// not take it (`None`: delivered), asked only when it matters.
    fn report(&self, seq: u64, refusal: impl FnOnce() -> Option<(Failure, String)>) {
        let mut round = self.lock();
        if seq < round.first {
            return;
        }
        round.reported += 1;
        let mut wake = round.reported >= round.wake_at;
        if round.refused.is_none() {
            if let Some((failure, topic)) = refusal() {
                round.refused = Some(Refused {
                    seq,
                    failure,
                    topic,
                });
                wake = true;
            }
        }
        drop(round);
        if wake {
            self.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use courier_core::SinkErrorKind;

    use super::*;

    fn delivered() -> Option<(Failure, String)> {
        None
    }

    #[tokio::test]
    async fn a_round_is_done_when_each_of_its_records_is_reported() {
        let d = Arc::new(Deliveries::default());
        d.begin(10);
        let waiter = tokio::spawn({
            let d = Arc::clone(&d);
            async move { d.wait_for(3).await }
        });
        d.report(10, delivered);
        d.report(11, delivered);
        // A late report of an earlier round does not count.
        d.report(4, delivered);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "two of three reported");
        d.report(12, delivered);
        let done = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
        assert_eq!(d.reported(), 3);
    }

    #[tokio::test]
    async fn the_first_refusal_ends_the_wait_and_names_its_record() {
        let d = Arc::new(Deliveries::default());
        d.begin(0);
        let waiter = tokio::spawn({
            let d = Arc::clone(&d);
            async move { d.wait_for(100).await }
        });
        d.report(0, delivered);
        let refuse = |why: &str| {
            let why = why.to_string();
            move || Some((Failure::new(SinkErrorKind::Rejected, why), "t".to_string()))
        };
        d.report(1, refuse("too large"));
        d.report(2, refuse("later"));
        let refused = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined")
            .expect_err("a refusal");
        assert_eq!(
            (refused.seq, refused.failure.message.as_str()),
            (1, "too large")
        );
        assert_eq!(refused.topic, "t");

        // A new round forgets the old one's refusal and counts.
        d.begin(3);
        d.report(1, refuse("stale"));
        d.report(3, delivered);
        assert!(d.wait_for(1).await.is_ok());
        assert!(d.take_refused().is_none());
    }
}

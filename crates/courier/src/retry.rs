//! Trying again after errors that may pass: exponential backoff with
//! jitter, and one loop that every retrying stage of Courier shares.

use std::future::Future;
use std::time::Duration;

/// Doubles the delay after each failure up to `max`, with ±25% jitter.
pub struct Backoff {
    next: Duration,
    initial: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            next: initial,
            initial,
            max,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = 0.75 + rand::random::<f64>() * 0.5;
        base.mul_f64(jitter)
    }

    /// Call after a success: the next failure starts from the initial delay.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Runs `attempt` until it succeeds or fails with an error `retriable`
/// rejects, waiting `backoff`'s delay between attempts. `on_retry` sees each
/// error that is retried and the wait before the next attempt (to log it
/// and show it in the status). Never gives up on a retriable error: callers
/// bound the whole with their own deadline (the shutdown timeout).
pub async fn retry<T, E, Fut>(
    mut backoff: Backoff,
    retriable: impl Fn(&E) -> bool,
    mut on_retry: impl FnMut(&E, Duration),
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if retriable(&e) => {
                let wait = backoff.next_delay();
                on_retry(&e, wait);
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_what_may_pass_and_returns_what_cannot() {
        let mut calls = 0;
        let mut retried = Vec::new();
        let r: Result<u32, &str> = retry(
            Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
            |e: &&str| *e == "busy",
            |e, _| retried.push(e.to_string()),
            || {
                calls += 1;
                let n = calls;
                async move {
                    match n {
                        1 | 2 => Err("busy"),
                        _ => Ok(n),
                    }
                }
            },
        )
        .await;
        assert_eq!(r, Ok(3));
        assert_eq!(retried, ["busy", "busy"]);

        let mut calls = 0;
        let r: Result<u32, &str> = retry(
            Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
            |e: &&str| *e == "busy",
            |_, _| {},
            || {
                calls += 1;
                async { Err("refused") }
            },
        )
        .await;
        assert_eq!((r, calls), (Err("refused"), 1));
    }

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert!((75..=125).contains(&delays[0]), "{delays:?}");
        assert!((150..=250).contains(&delays[1]), "{delays:?}");
        assert!((300..=500).contains(&delays[3]), "{delays:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }
}

//! Exponential backoff with jitter, for reconnects and retries.

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

//! A position that many tasks can wait on. Each waiter is woken once, by
//! the advance that reaches its position, never by polling: waiting costs
//! one map entry and a oneshot channel, and an advance wakes only the
//! waiters it satisfies.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;

use courier_core::Position;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

/// A position that only grows, with the tasks waiting for it to reach theirs.
pub struct Progress {
    state: Mutex<State>,
    /// Signalled when a task starts waiting for a position not reached yet.
    demand: Notify,
}

struct State {
    position: Position,
    waiters: BTreeMap<Position, Vec<oneshot::Sender<Instant>>>,
    waiting: usize,
    /// Past this many waiters, the ones that gave up are swept out.
    sweep_at: usize,
}

const FIRST_SWEEP: usize = 4096;

impl Progress {
    pub fn new(start: Position) -> Self {
        Progress {
            state: Mutex::new(State {
                position: start,
                waiters: BTreeMap::new(),
                waiting: 0,
                sweep_at: FIRST_SWEEP,
            }),
            demand: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn position(&self) -> Position {
        self.state().position
    }

    /// Moves the position to `to` if that is further, waking every waiter
    /// it reaches.
    pub fn advance(&self, to: Position) {
        let reached = {
            let mut s = self.state();
            if to <= s.position {
                return;
            }
            s.position = to;
            let later = match to.0.checked_add(1) {
                Some(next) => s.waiters.split_off(&Position(next)),
                None => BTreeMap::new(),
            };
            let reached = std::mem::replace(&mut s.waiters, later);
            s.waiting -= reached.values().map(Vec::len).sum::<usize>();
            reached
        };
        let now = Instant::now();
        for tx in reached.into_values().flatten() {
            let _ = tx.send(now);
        }
    }

    /// Resolves once the position is at least `at` (at once if it is), or
    /// when the progress is dropped, with the instant of the advance that
    /// reached it (`None` when it was reached before). The future owns what
    /// it needs, so it may outlive the borrow.
    pub fn reached(&self, at: Position) -> impl Future<Output = Option<Instant>> + Send + 'static {
        let rx = {
            let mut s = self.state();
            if s.position >= at {
                None
            } else {
                let (tx, rx) = oneshot::channel();
                s.waiters.entry(at).or_default().push(tx);
                s.waiting += 1;
                if s.waiting >= s.sweep_at {
                    s.sweep();
                }
                Some(rx)
            }
        };
        if rx.is_some() {
            self.demand.notify_one();
        }
        async move {
            match rx {
                Some(rx) => rx.await.ok(),
                None => None,
            }
        }
    }

    /// The lowest position someone still waits for, if any.
    pub fn lowest_waiting(&self) -> Option<Position> {
        let mut s = self.state();
        loop {
            let mut first = s.waiters.first_entry()?;
            first.get_mut().retain(|tx| !tx.is_closed());
            if !first.get().is_empty() {
                return Some(*first.key());
            }
            first.remove();
            s.waiting = s.waiters.values().map(Vec::len).sum();
        }
    }

    /// Resolves when a task started waiting since the last call (a start
    /// before the call counts too).
    pub async fn demanded(&self) {
        self.demand.notified().await
    }

    /// How many tasks wait now (including some that gave up, until swept).
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.state().waiting
    }
}

impl State {
    /// Forgets the waiters that stopped waiting (timed out).
    fn sweep(&mut self) {
        for v in self.waiters.values_mut() {
            v.retain(|tx| !tx.is_closed());
        }
        self.waiters.retain(|_, v| !v.is_empty());
        self.waiting = self.waiters.values().map(Vec::len).sum();
        self.sweep_at = (self.waiting * 2).max(FIRST_SWEEP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn an_advance_wakes_exactly_the_waiters_it_reaches() {
        let p = Progress::new(Position(10));
        p.reached(Position(5)).await;
        p.reached(Position(10)).await;
        let a = tokio::spawn(p.reached(Position(20)));
        let b = tokio::spawn(p.reached(Position(30)));
        assert_eq!(p.waiting(), 2);
        p.advance(Position(25));
        a.await.unwrap();
        assert_eq!(p.waiting(), 1);
        assert!(!b.is_finished());
        p.advance(Position(20));
        assert_eq!(p.position(), Position(25), "never moves back");
        p.advance(Position(30));
        b.await.unwrap();
        assert_eq!(p.waiting(), 0);
    }

    #[tokio::test]
    async fn waiters_that_give_up_are_forgotten() {
        let p = Progress::new(Position(0));
        for n in 1..=10 {
            let _ = tokio::time::timeout(Duration::from_millis(1), p.reached(Position(n))).await;
        }
        assert_eq!(p.lowest_waiting(), None);
        let _keep = p.reached(Position(7));
        assert_eq!(p.lowest_waiting(), Some(Position(7)));
        for n in 0..(FIRST_SWEEP as u64 * 3) {
            drop(p.reached(Position(100 + n)));
        }
        assert!(p.waiting() < FIRST_SWEEP * 2, "{}", p.waiting());
    }

    #[tokio::test]
    async fn a_new_waiter_is_a_demand() {
        let p = Progress::new(Position(0));
        let _w = p.reached(Position(1));
        tokio::time::timeout(Duration::from_secs(1), p.demanded())
            .await
            .expect("the waiter registered before the call counts");
    }
}

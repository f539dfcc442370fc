use std::sync::{Arc, Mutex};

use crate::Position;

/// The ack watermark: per sink, the source [`Position`] through which it has
/// applied everything; the source may acknowledge the minimum over all sinks
/// (PostgreSQL: the slot advances to it).
///
/// Cheap to clone; clones share state.
#[derive(Clone, Debug, Default)]
pub struct Watermark {
    inner: Arc<Mutex<Vec<(String, Position)>>>,
}

impl Watermark {
    /// A watermark over the named sinks, all starting at `start`.
    pub fn new(sinks: impl IntoIterator<Item = String>, start: Position) -> Self {
        let v = sinks.into_iter().map(|s| (s, start)).collect();
        Watermark {
            inner: Arc::new(Mutex::new(v)),
        }
    }

    /// Records that `sink` has applied everything through `position`. Never moves backwards.
    pub fn advance(&self, sink: &str, position: Position) {
        let mut v = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, p)) = v.iter_mut().find(|(n, _)| n == sink) {
            if position > *p {
                *p = position;
            }
        }
    }

    /// Moves every sink to at least `position` (e.g. a new slot's starting point).
    pub fn advance_all(&self, position: Position) {
        let mut v = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for (_, p) in v.iter_mut() {
            if position > *p {
                *p = position;
            }
        }
    }

    /// The position every sink has reached; `None` with no sinks.
    pub fn min(&self) -> Option<Position> {
        let v = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        v.iter().map(|(_, l)| *l).min()
    }

    /// Each sink's position.
    pub fn per_sink(&self) -> Vec<(String, Position)> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_over_sinks_never_moves_back() {
        let w = Watermark::new(["a".to_string(), "b".to_string()], Position(10));
        w.advance("a", Position(50));
        assert_eq!(w.min(), Some(Position(10)));
        w.advance("b", Position(40));
        assert_eq!(w.min(), Some(Position(40)));
        w.advance("b", Position(20));
        assert_eq!(w.min(), Some(Position(40)));
    }
}

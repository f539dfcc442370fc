use std::sync::{Arc, Mutex};

use crate::Lsn;

/// The ack watermark: per sink, the LSN through which it has applied every
/// committed change; the slot may advance to the minimum over all sinks.
///
/// Cheap to clone; clones share state.
#[derive(Clone, Debug, Default)]
pub struct Watermark {
    inner: Arc<Mutex<Vec<(String, Lsn)>>>,
}

impl Watermark {
    /// A watermark over the named sinks, all starting at `start`.
    pub fn new(sinks: impl IntoIterator<Item = String>, start: Lsn) -> Self {
        let v = sinks.into_iter().map(|s| (s, start)).collect();
        Watermark {
            inner: Arc::new(Mutex::new(v)),
        }
    }

    /// Records that `sink` has applied everything through `lsn`. Never moves backwards.
    pub fn advance(&self, sink: &str, lsn: Lsn) {
        let mut v = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, l)) = v.iter_mut().find(|(n, _)| n == sink) {
            if lsn > *l {
                *l = lsn;
            }
        }
    }

    /// Moves every sink to at least `lsn` (e.g. a new slot's starting point).
    pub fn advance_all(&self, lsn: Lsn) {
        let mut v = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for (_, l) in v.iter_mut() {
            if lsn > *l {
                *l = lsn;
            }
        }
    }

    /// The position every sink has reached; `None` with no sinks.
    pub fn min(&self) -> Option<Lsn> {
        let v = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        v.iter().map(|(_, l)| *l).min()
    }

    /// Each sink's position.
    pub fn per_sink(&self) -> Vec<(String, Lsn)> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_over_sinks_never_moves_back() {
        let w = Watermark::new(["a".to_string(), "b".to_string()], Lsn(10));
        w.advance("a", Lsn(50));
        assert_eq!(w.min(), Some(Lsn(10)));
        w.advance("b", Lsn(40));
        assert_eq!(w.min(), Some(Lsn(40)));
        w.advance("b", Lsn(20));
        assert_eq!(w.min(), Some(Lsn(40)));
    }
}

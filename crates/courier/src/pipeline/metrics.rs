//! Event counters per table and operation, aggregated locally and published
//! to the metrics registry in bulk (a label look-up per change would cost
//! more than decoding it).

use std::collections::HashMap;

use courier_core::{Change, Op};

/// Counts changes per (table, op) until flushed.
#[derive(Default)]
pub struct EventCounter {
    counts: HashMap<(u32, Op), (String, u64)>,
}

impl EventCounter {
    pub fn count(&mut self, c: &Change) {
        self.counts
            .entry((c.relation().oid, c.op()))
            .or_insert_with(|| (c.relation().id.to_string(), 0))
            .1 += 1;
    }

    /// Adds the counts to `courier_events_total{table, op}` and resets them.
    pub fn flush(&mut self) {
        for ((_, op), (table, n)) in self.counts.iter_mut() {
            if *n > 0 {
                metrics::counter!("courier_events_total", "table" => table.clone(), "op" => op.code())
                    .increment(*n);
                *n = 0;
            }
        }
    }
}

impl Drop for EventCounter {
    fn drop(&mut self) {
        self.flush();
    }
}

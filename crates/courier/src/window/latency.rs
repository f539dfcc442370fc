//! Latency over the last minute, for `/v1/status`: sixty one-second slots
//! of a log-scale histogram (buckets 10% apart from 0.1 ms), so a quantile
//! is exact to within 10% and costs no allocation per sample.

use std::sync::Mutex;

/// Buckets 10% apart from 0.1 ms reach about 380 s.
const BUCKETS: usize = 160;
const FIRST_BOUND_SECS: f64 = 0.000_1;
const GROWTH: f64 = 1.1;
const SLOTS: usize = 60;

/// Samples of the last minute.
pub struct LastMinute {
    slots: Mutex<Vec<Slot>>,
}

#[derive(Clone)]
struct Slot {
    /// The second (since the epoch) this slot counts; stale slots are reused.
    second: u64,
    counts: [u32; BUCKETS],
}

fn bucket(secs: f64) -> usize {
    if secs <= FIRST_BOUND_SECS {
        return 0;
    }
    let b = ((secs / FIRST_BOUND_SECS).ln() / GROWTH.ln()).ceil();
    (b as usize).min(BUCKETS - 1)
}

fn upper_bound(bucket: usize) -> f64 {
    FIRST_BOUND_SECS * GROWTH.powi(bucket as i32)
}

impl Default for LastMinute {
    fn default() -> Self {
        LastMinute {
            slots: Mutex::new(vec![
                Slot {
                    second: 0,
                    counts: [0; BUCKETS]
                };
                SLOTS
            ]),
        }
    }
}

impl LastMinute {
    /// Counts `n` samples of `secs` seconds, seen at `now_s`.
    pub fn record(&self, now_s: u64, secs: f64, n: u32) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut slots[(now_s % SLOTS as u64) as usize];
        if slot.second != now_s {
            slot.second = now_s;
            slot.counts = [0; BUCKETS];
        }
        let b = &mut slot.counts[bucket(secs.max(0.0))];
        *b = b.saturating_add(n);
    }

    /// The quantiles `qs` (0 to 1) of the samples of the 60 seconds up to
    /// `now_s`, in seconds (each a bucket's upper bound); `None` without samples.
    pub fn quantiles<const N: usize>(&self, now_s: u64, qs: [f64; N]) -> Option<[f64; N]> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut counts = [0u64; BUCKETS];
        for s in slots
            .iter()
            .filter(|s| s.second + (SLOTS as u64) > now_s && s.second <= now_s)
        {
            for (c, n) in counts.iter_mut().zip(s.counts.iter()) {
                *c += u64::from(*n);
            }
        }
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        Some(qs.map(|q| {
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
            let mut seen = 0;
            for (b, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return upper_bound(b);
                }
            }
            upper_bound(BUCKETS - 1)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_ten_percent() {
        let m = LastMinute::default();
        for ms in 1..=100 {
            m.record(1000, ms as f64 / 1000.0, 1);
        }
        let [p50, p99] = m.quantiles(1000, [0.5, 0.99]).unwrap();
        assert!((0.050..0.056).contains(&p50), "{p50}");
        assert!((0.099..0.109).contains(&p99), "{p99}");
    }

    #[test]
    fn samples_older_than_a_minute_are_forgotten() {
        let m = LastMinute::default();
        m.record(1000, 5.0, 10);
        m.record(1030, 0.001, 10);
        let [p99] = m.quantiles(1030, [0.99]).unwrap();
        assert!(p99 > 4.9);
        let [p99] = m.quantiles(1061, [0.99]).unwrap();
        assert!(p99 < 0.0011, "{p99}");
        assert!(m.quantiles(1100, [0.5]).is_none());
    }
}

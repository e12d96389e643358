//! What the control server counts about itself, for the metrics endpoint: request
//! latency histograms per op (from the moment a request is complete to the moment its
//! answer is ready, queueing behind other requests included), requests by outcome, and
//! the connection table (open, evicted, closed by a deadline, answers that could not be
//! delivered). Written by the control thread only, read by the metrics thread: plain
//! relaxed atomics, no lock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds (Prometheus `le`).
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Every op the control protocol knows (`other` for anything undecodable).
pub const OPS: [&str; 16] = [
    "endpoint_add",
    "endpoint_del",
    "endpoint_list",
    "endpoint_check",
    "stats",
    "status",
    "ipam_allocate",
    "ipam_release",
    "ipam_list",
    "policy_apply",
    "policy_delete",
    "policy_list",
    "pod_label",
    "trace",
    "invalid",
    "other",
];

/// A latency histogram with fixed buckets ([`LATENCY_BUCKETS`]).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts; the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

/// A histogram read at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSample {
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`], then `+Inf` (= count).
    pub cumulative: Vec<u64>,
    pub sum_secs: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(LATENCY_BUCKETS.len());
        bump(&self.buckets[i]);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns
            .store(self.sum_ns.load(Relaxed).saturating_add(ns), Relaxed);
        bump(&self.count);
    }

    pub fn sample(&self) -> HistogramSample {
        let mut acc = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                acc += b.load(Relaxed);
                acc
            })
            .collect();
        HistogramSample {
            cumulative,
            sum_secs: self.sum_ns.load(Relaxed) as f64 / 1e9,
            count: acc,
        }
    }
}

/// Single writer (the control thread): load + store is enough.
fn bump(c: &AtomicU64) {
    c.store(c.load(Relaxed) + 1, Relaxed);
}

/// The control server's counters. See the module doc.
#[derive(Debug, Default)]
pub struct ControlMetrics {
    latency: [Histogram; OPS.len()],
    errors: [AtomicU64; OPS.len()],
    pub connections_open: AtomicU64,
    pub connections_accepted: AtomicU64,
    /// Oldest idle connections closed to make room for a new one.
    pub connections_evicted: AtomicU64,
    /// Connections closed because no complete request arrived in time (or the answer
    /// could not be written in time).
    pub connections_deadline: AtomicU64,
    /// Answers whose client had gone away (an ADD among them is undone).
    pub answers_abandoned: AtomicU64,
}

/// Index of `op` in [`OPS`] (`other` if unknown).
pub fn op_index(op: &str) -> usize {
    OPS.iter().position(|&o| o == op).unwrap_or(OPS.len() - 1)
}

impl ControlMetrics {
    /// A request of `op` took `d` to answer; `ok` = answered without an error.
    pub fn observe(&self, op: &str, d: Duration, ok: bool) {
        let i = op_index(op);
        self.latency[i].observe(d);
        if !ok {
            bump(&self.errors[i]);
        }
    }

    pub fn count(&self, c: &AtomicU64) {
        bump(c);
    }

    pub fn set_open(&self, n: usize) {
        self.connections_open.store(n as u64, Relaxed);
    }

    /// `(op, latency, errors)` for every op that was seen at least once.
    pub fn per_op(&self) -> Vec<(&'static str, HistogramSample, u64)> {
        OPS.iter()
            .enumerate()
            .filter_map(|(i, &op)| {
                let s = self.latency[i].sample();
                (s.count > 0).then(|| (op, s, self.errors[i].load(Relaxed)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_sums() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(10));
        let s = h.sample();
        assert_eq!(s.count, 3);
        assert_eq!(s.cumulative[0], 1);
        assert_eq!(s.cumulative[5], 1); // le 0.025
        assert_eq!(s.cumulative[6], 2); // le 0.05
        assert_eq!(*s.cumulative.last().unwrap(), 3);
        assert!((s.sum_secs - 10.0301).abs() < 1e-6);
    }

    #[test]
    fn unknown_ops_count_as_other() {
        let m = ControlMetrics::default();
        m.observe("no_such_op", Duration::from_millis(1), false);
        m.observe("endpoint_add", Duration::from_millis(1), true);
        let per = m.per_op();
        assert_eq!(per.len(), 2);
        assert_eq!(per[0].0, "endpoint_add");
        assert_eq!((per[1].0, per[1].2), ("other", 1));
    }
}

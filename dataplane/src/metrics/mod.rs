//! Metrics: what the daemon counts, rendered in the Prometheus text exposition format
//! (0.0.4) and served over HTTP on a thread of its own ([`http`]), off unless
//! `metrics.listen` is set in node.yaml.
//!
//! The metrics thread never touches the daemon: the control thread publishes a
//! [`Sample`] (its `stats` and `status` answers and persistence error count) into the
//! [`Exporter`] about once a second, in its housekeeping tick — one lock held for a
//! pointer swap — and the control server counts request latency and its connection
//! table into [`control::ControlMetrics`] (relaxed atomics). A scrape renders the
//! latest sample ([`render`]); it never blocks the control thread or a worker, and the
//! workers are not involved at all (their counters are read by the control thread as
//! for `xsknetctl stats`). Families (all prefixed `xsknet_`):
//!
//! - per port (`port`, `ifname`, `kind`, `worker`): `port_{rx,tx}_{packets,bytes}_total`,
//!   `port_drops_total{reason}`;
//! - per worker (`worker`): `worker_{rx,tx}_packets_total`, `worker_drops_total{reason}`,
//!   `worker_handoff_{in,out}_total`, `worker_sleeps_total`, `worker_generation`,
//!   `conntrack_entries`, `conntrack_capacity`, `conntrack_{inserts,evictions,full}_total`;
//! - `policy_hits_total{policy}`;
//! - control: `control_request_duration_seconds{op}` (histogram),
//!   `control_request_errors_total{op}`, `control_connections`,
//!   `control_connections_{accepted,evicted,deadline_closed}_total`,
//!   `control_answers_abandoned_total`;
//! - daemon: `status_*` (every number or boolean of the `status` answer, one level of
//!   nesting flattened with `_`), `persist_errors_total`, `datastore_enabled` (0 in
//!   static mode; `datastore_healthy` only when a datastore is configured),
//!   `sample_age_seconds`.

pub mod control;
pub mod http;
pub mod render;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::control::proto::Stats;

/// What the control thread publishes for the metrics thread.
#[derive(Clone, Debug)]
pub struct Sample {
    pub stats: Stats,
    /// The `status` answer as JSON (numbers and booleans become gauges).
    pub status: serde_json::Value,
    pub persist_errors: u64,
    /// `None`: static mode (no datastore). `Some(healthy)` otherwise.
    pub datastore: Option<bool>,
    pub taken: Instant,
}

/// Shared between the control thread (writes) and the metrics thread (reads).
#[derive(Debug, Default)]
pub struct Exporter {
    pub control: Arc<control::ControlMetrics>,
    sample: Mutex<Option<Arc<Sample>>>,
}

impl Exporter {
    /// Replace the published sample (a pointer swap under the lock).
    pub fn publish(&self, sample: Sample) {
        let sample = Arc::new(sample);
        if let Ok(mut s) = self.sample.lock() {
            *s = Some(sample);
        }
    }

    pub fn sample(&self) -> Option<Arc<Sample>> {
        self.sample.lock().ok().and_then(|s| s.clone())
    }

    /// The exposition text of the latest sample and the control counters.
    pub fn render(&self) -> String {
        render::render(self.sample().as_deref(), &self.control)
    }
}

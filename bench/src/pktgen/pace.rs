//! Fixed-rate pacing: a token bucket on the monotonic clock.
//!
//! The allowance is `elapsed × rate` from the start instant, minus what was granted, so
//! however long a sleep overshoots, the next grant catches up (no drift), and the bucket
//! holds at most `burst` tokens, so a stall (descheduled, socket buffer full) does not
//! turn into an unbounded line-rate burst afterwards: beyond the bucket (the larger of
//! one batch and 2 ms of packets) it is lost, and the achieved rate says so. Tokens are handed out in quanta of up to 200 µs worth of packets (at most
//! `burst`, at least 1), so a fixed rate costs one ring flush / sendmmsg per quantum,
//! not one per packet. Without a rate every request is granted whole (max-rate mode).

use std::time::{Duration, Instant};

/// A per-batch pacer.
#[derive(Clone, Debug)]
pub struct Pacer {
    rate: Option<u64>,
    start: Instant,
    /// Tokens granted so far plus tokens dropped by the bucket cap.
    used: u64,
    /// Bucket size: max(batch, 2 ms of packets).
    burst: u64,
    /// Smallest grant worth a flush: min(burst, 200 µs of packets), ≥ 1.
    quantum: u64,
    batch: u64,
}

/// Time worth of tokens handed out at once in fixed-rate mode.
pub const QUANTUM_NS: u64 = 200_000;
/// Time worth of tokens the bucket holds (late wake-ups up to this are caught up).
pub const BUCKET_NS: u64 = 2_000_000;

impl Pacer {
    /// `rate` packets per second (None: max rate); `batch` is the most one grant
    /// hands out (≥ 1).
    pub fn new(rate: Option<u64>, batch: u64, start: Instant) -> Pacer {
        let batch = batch.max(1);
        let per = |ns: u64| {
            rate.map_or(0, |r| {
                (u128::from(r) * u128::from(ns) / 1_000_000_000) as u64
            })
        };
        let quantum = per(QUANTUM_NS).clamp(1, batch);
        let burst = per(BUCKET_NS).max(batch);
        Pacer {
            rate,
            start,
            used: 0,
            burst,
            quantum,
            batch,
        }
    }

    fn allowed(&self, now: Instant, rate: u64) -> u64 {
        let ns = now.saturating_duration_since(self.start).as_nanos();
        (ns * u128::from(rate) / 1_000_000_000).min(u128::from(u64::MAX)) as u64
    }

    /// How many of `want` packets may go now (0..=want).
    #[inline]
    pub fn grant(&mut self, now: Instant, want: u64) -> u64 {
        let Some(rate) = self.rate else { return want };
        let allowed = self.allowed(now, rate);
        let mut avail = allowed.saturating_sub(self.used);
        if avail > self.burst {
            self.used = allowed - self.burst;
            avail = self.burst;
        }
        if avail < self.quantum.min(want) {
            return 0;
        }
        let n = avail.min(want).min(self.batch);
        self.used += n;
        n
    }

    /// Give back `n` of the last grant that could not be sent (back-pressure).
    #[inline]
    pub fn refund(&mut self, n: u64) {
        if self.rate.is_some() {
            self.used = self.used.saturating_sub(n);
        }
    }

    /// Time until the next quantum of tokens (zero in max-rate mode or when it is there).
    pub fn next_token_in(&self, now: Instant) -> Duration {
        let Some(rate) = self.rate else {
            return Duration::ZERO;
        };
        let due_ns =
            (u128::from(self.used) + u128::from(self.quantum)) * 1_000_000_000 / u128::from(rate);
        let due = self.start + Duration::from_nanos(due_ns.min(u128::from(u64::MAX)) as u64);
        due.saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_rate_grants_everything() {
        let t0 = Instant::now();
        let mut p = Pacer::new(None, 64, t0);
        assert_eq!(p.grant(t0, 64), 64);
        assert_eq!(p.grant(t0, 1000), 1000);
        assert_eq!(p.next_token_in(t0), Duration::ZERO);
    }

    #[test]
    fn fixed_rate_follows_absolute_time() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Some(1000), 64, t0); // 1 packet per ms
        assert_eq!(p.grant(t0, 64), 0);
        assert_eq!(p.next_token_in(t0), Duration::from_millis(1));
        let mut sent = 0;
        // grants at irregular instants (late wake-ups) over one second add up to the rate
        let mut t = t0;
        for step in [3u64, 17, 1, 40, 9, 30].iter().cycle().take(60) {
            t += Duration::from_millis(*step);
            if t > t0 + Duration::from_secs(1) {
                break;
            }
            sent += p.grant(t, 64);
        }
        let elapsed_ms = (t.min(t0 + Duration::from_secs(1)) - t0).as_millis() as u64;
        assert!(
            sent <= elapsed_ms && sent + 64 >= elapsed_ms,
            "sent {sent} in {elapsed_ms} ms"
        );
    }

    #[test]
    fn bucket_caps_bursts_after_a_stall() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Some(1_000_000), 32, t0);
        // a 10 ms stall would allow 10,000; the bucket keeps 2 ms (2000), in grants of
        // at most one batch
        let t = t0 + Duration::from_millis(10);
        let mut got = 0;
        for _ in 0..100 {
            got += p.grant(t, 10_000);
        }
        // 62 grants of 32; the last 16 wait for a full quantum
        assert_eq!(got, 1984);
        assert_eq!(p.grant(t, 10_000), 0);
        // and the rate continues from there: the next 32 are due 16 µs later
        assert_eq!(p.next_token_in(t), Duration::from_micros(16));
        assert_eq!(p.grant(t + Duration::from_micros(15), 10_000), 0);
        assert_eq!(p.grant(t + Duration::from_micros(16), 10_000), 32);
    }

    #[test]
    fn quantum_is_200us_of_packets() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Some(100_000), 64, t0); // 20 packets per 200 µs
        assert_eq!(p.grant(t0 + Duration::from_micros(190), 64), 0);
        assert_eq!(p.grant(t0 + Duration::from_micros(200), 64), 20);
        // a smaller request (the end of --count) needs only its own tokens
        assert_eq!(p.grant(t0 + Duration::from_micros(250), 5), 5);
    }

    #[test]
    fn refund_returns_tokens() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Some(1000), 64, t0);
        let t = t0 + Duration::from_millis(10);
        assert_eq!(p.grant(t, 64), 10);
        p.refund(4);
        assert_eq!(p.grant(t, 64), 4);
    }
}

//! The `stats` answer: per-port counters (the shared [`PortCounters`] of each slot,
//! drops by reason with zeros left out, and the kernel's ring statistics read through
//! the registry's own fd), and per-worker sums over the worker's ports plus the
//! worker's loop and connection-table counters. Reads only atomics and the registry;
//! never blocks a worker.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;

use crate::control::proto::{ConntrackStats, PortStats, WorkerStats};
use crate::pipeline::{DropReason, PortCounters};
use crate::worker::WorkerShared;

use super::ports::Socket;

/// What kind of port a [`PortStats`] row is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortRole {
    Pod,
    Host,
    /// A queue of the uplink (issue 9).
    Uplink,
}

impl PortRole {
    fn as_str(self) -> &'static str {
        match self {
            PortRole::Pod => "pod",
            PortRole::Host => "host",
            PortRole::Uplink => "uplink",
        }
    }
}

/// Drops by reason name, zeros left out.
pub fn drops(c: &PortCounters) -> BTreeMap<String, u64> {
    DropReason::ALL
        .iter()
        .map(|r| (r.as_str().to_string(), c.drops[*r as usize].load(Relaxed)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// One port's row.
pub fn port_stats(s: &Socket, c: &PortCounters, role: PortRole, ip: Option<Ipv4Addr>) -> PortStats {
    PortStats {
        port: s.id,
        ifname: s.ifname.clone(),
        kind: role.as_str().to_string(),
        worker: s.info.worker,
        ip,
        rx_packets: c.rx_packets.load(Relaxed),
        rx_bytes: c.rx_bytes.load(Relaxed),
        tx_packets: c.tx_packets.load(Relaxed),
        tx_bytes: c.tx_bytes.load(Relaxed),
        drops: drops(c),
        xdp: s.xdp_stats(),
    }
}

/// One worker's row: sums over its rows in `ports`, plus its own counters.
pub fn worker_stats(w: &WorkerShared, ports: &[PortStats]) -> WorkerStats {
    let mine: Vec<&PortStats> = ports.iter().filter(|p| p.worker == w.id).collect();
    let mut drops: BTreeMap<String, u64> = BTreeMap::new();
    for p in &mine {
        for (k, v) in &p.drops {
            *drops.entry(k.clone()).or_default() += v;
        }
    }
    let c = &w.counters;
    WorkerStats {
        worker: w.id,
        core: w.core,
        ports: mine.len(),
        rx_packets: mine.iter().map(|p| p.rx_packets).sum(),
        tx_packets: mine.iter().map(|p| p.tx_packets).sum(),
        drops,
        handoff_out: c.handoff_out.load(Relaxed),
        handoff_in: c.handoff_in.load(Relaxed),
        sleeps: c.sleeps.load(Relaxed),
        generation: c.generation.load(Relaxed),
        conntrack: ConntrackStats {
            entries: c.ct_entries.load(Relaxed),
            capacity: c.ct_capacity.load(Relaxed),
            inserts: c.ct_inserts.load(Relaxed),
            evictions: c.ct_evictions.load(Relaxed),
            full: c.ct_full.load(Relaxed),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::bump;

    fn row(port: u16, worker: u16, rx: u64, drops: &[(&str, u64)]) -> PortStats {
        PortStats {
            port,
            ifname: format!("veth{port}"),
            kind: "pod".into(),
            worker,
            ip: None,
            rx_packets: rx,
            rx_bytes: rx * 100,
            tx_packets: rx / 2,
            tx_bytes: 0,
            drops: drops.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            xdp: None,
        }
    }

    #[test]
    fn drops_leave_out_zeros_and_use_reason_names() {
        let c = PortCounters::default();
        assert!(drops(&c).is_empty());
        c.count_drop(DropReason::ALL[0]);
        c.count_drop(DropReason::ALL[0]);
        let d = drops(&c);
        assert_eq!(d.len(), 1);
        assert_eq!(d.get(DropReason::ALL[0].as_str()), Some(&2));
    }

    #[test]
    fn worker_rows_sum_their_own_ports_only() {
        let w = WorkerShared::new(1, 3).unwrap();
        bump(&w.counters.handoff_in, 7);
        bump(&w.counters.ct_entries, 4);
        let ports = [
            row(0, 0, 10, &[("a", 1)]),
            row(1, 1, 20, &[("a", 2), ("b", 5)]),
            row(2, 1, 30, &[("a", 3)]),
        ];
        let s = worker_stats(&w, &ports);
        assert_eq!((s.worker, s.core, s.ports), (1, 3, 2));
        assert_eq!((s.rx_packets, s.tx_packets), (50, 25));
        assert_eq!(s.drops.get("a"), Some(&5));
        assert_eq!(s.drops.get("b"), Some(&5));
        assert_eq!(s.handoff_in, 7);
        assert_eq!(s.conntrack.entries, 4);
        let idle = worker_stats(&WorkerShared::new(2, 0).unwrap(), &ports);
        assert_eq!((idle.ports, idle.rx_packets), (0, 0));
        assert!(idle.drops.is_empty());
    }
}

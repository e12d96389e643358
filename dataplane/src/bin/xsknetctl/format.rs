//! Human output: the tables and lines printed for each command (`--json` bypasses them).

use super::*;

pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            s.push_str(cell);
            s.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

pub(crate) fn drops_cell(drops: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = drops
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(reason, n)| format!("{reason}={n}"))
        .collect();
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(",")
    }
}

/// One line: `etcd http://… (node a): connected, registered, revision 12, 3 nodes …`.
pub(crate) fn format_datastore(d: &DatastoreStatus) -> String {
    let mut s = format!(
        "{} {} (node {}): {}, {}, revision {}, {} nodes, {} pods, {} namespaces, {} policies",
        d.kind,
        d.endpoints.join(","),
        d.node_name,
        if d.connected {
            "connected"
        } else {
            "DISCONNECTED"
        },
        if d.registered {
            "registered"
        } else {
            "NOT registered"
        },
        d.revision,
        d.nodes,
        d.pods,
        d.namespaces,
        d.policies
    );
    if d.refused > 0 {
        s += &format!(", {} records refused", d.refused);
    }
    if let Some(synced) = d.synced {
        s += if synced {
            ", watch synced"
        } else {
            ", watch NOT synced"
        };
    }
    if !d.resource_versions.is_empty() {
        let rvs: Vec<String> = d
            .resource_versions
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        s += &format!(", resourceVersion {}", rvs.join(" "));
    }
    if let Some(a) = &d.annotation {
        s += &format!(", annotation {a}");
    }
    if let Some(e) = &d.last_error {
        s += &format!("; last error: {e}");
    }
    s
}

/// `node list` as a table, then the datastore line.
pub(crate) fn format_nodes(l: &NodeList) -> String {
    let mut out = format!(
        "{:<2}{:<20} {:<18} {:<15} {:<17} {:>8} {:>5}  {}\n",
        "", "NAME", "POD CIDR", "UNDERLAY", "VTEP MAC", "VNI", "PORT", "STATE"
    );
    for n in &l.nodes {
        let state = match (n.alive, &n.unused) {
            (_, Some(why)) => format!("unused: {why}"),
            (Some(true), None) => "alive".to_string(),
            (Some(false), None) => "not registered".to_string(),
            (None, None) => "static".to_string(),
        };
        out += &format!(
            "{:<2}{:<20} {:<18} {:<15} {:<17} {:>8} {:>5}  {}\n",
            if n.local { "*" } else { "" },
            n.name,
            n.pod_cidr,
            n.underlay_ip
                .map_or_else(|| "?".to_string(), |i| i.to_string()),
            n.vtep_mac,
            n.vni,
            n.port,
            state
        );
    }
    match &l.datastore {
        Some(d) => out += &format!("datastore: {}\n", format_datastore(d)),
        None => out += "datastore: none (static mode)\n",
    }
    out
}

/// Wait (polling `status`) until the policy generation of `r` is in force, at most
/// `wait`. Returns whether it is; past the wait, an error saying the change is saved
/// and where compilation stands. A daemon without policy generations (older, which
/// answered once in force) counts as in force.
pub(crate) fn in_force_line(r: &PolicyApplied, in_force: bool) -> String {
    if r.policy_generation == 0 {
        format!("in force from table generation {}\n", r.generation)
    } else if in_force {
        format!("in force: policy generation {}\n", r.policy_generation)
    } else {
        format!(
            "saved; in force once policy generation {} is (xsknetctl status)\n",
            r.policy_generation
        )
    }
}

pub(crate) fn format_status(s: &Status) -> String {
    let mut out = String::new();
    let mut kv = |k: &str, v: String| out.push_str(&format!("{k:<12}{v}\n"));
    kv("version", s.version.clone());
    kv("ready", if s.ready { "yes" } else { "no" }.to_string());
    kv("uptime", format!("{}s", s.uptime_secs));
    kv("workers", s.workers.to_string());
    kv("endpoints", s.endpoints.to_string());
    kv("generation", s.generation.to_string());
    kv("pod cidr", s.pod_cidr.clone());
    let host = match (&s.host_port, s.host_ip) {
        (Some(p), Some(ip)) => format!("{p} ({ip})"),
        (Some(p), None) => p.clone(),
        (None, Some(ip)) => ip.to_string(),
        (None, None) => "disabled".to_string(),
    };
    kv("host port", host);
    if let Some(o) = &s.overlay {
        let ip = o
            .underlay_ip
            .map_or_else(|| "?".to_string(), |ip| ip.to_string());
        kv(
            "uplink",
            format!(
                "{} ({ip}), {} queue(s), MTU {}",
                o.uplink, o.queues, o.uplink_mtu
            ),
        );
        kv(
            "overlay",
            format!(
                "VNI {} port {}, VTEP {}, pod MTU {}",
                o.vni, o.port, o.vtep_mac, o.pod_mtu
            ),
        );
        kv(
            "nodes",
            format!("{} ({} resolved)", o.nodes, o.nodes_resolved),
        );
    }
    if let Some(d) = &s.datastore {
        kv("datastore", format_datastore(d));
    }
    if let Some(p) = &s.persistence {
        let state = match (p.failing, &p.last_error) {
            (true, Some(e)) => format!(
                "FAILING since {} (unix s), {} errors; last: {e}",
                p.failing_since_unix.unwrap_or(0),
                p.errors
            ),
            (false, Some(e)) => format!("ok ({} errors, last: {e})", p.errors),
            _ => "ok".to_string(),
        };
        kv("persistence", state);
        for r in &p.recovered {
            kv("recovered", r.clone());
        }
        if !p.fail_closed_namespaces.is_empty() {
            kv("fail-closed", p.fail_closed_namespaces.join(","));
        }
    }
    if let Some(p) = &s.policy {
        let compiling = p
            .compiling
            .map(|g| format!(", compiling {g}"))
            .unwrap_or_default();
        kv(
            "policy",
            format!(
                "generation {} in force ({} requested{compiling}), {} pod(s) held until compiled",
                p.in_force, p.requested, p.pending_endpoints
            ),
        );
        kv(
            "compiles",
            format!(
                "{} (last {} ms, max {} ms), {} coalesced, {} failed",
                p.compiles, p.last_compile_ms, p.max_compile_ms, p.coalesced, p.compile_errors
            ),
        );
        if let Some(e) = &p.last_compile_error {
            kv("compile err", e.clone());
        }
    }
    out
}

pub(crate) fn format_stats(s: &Stats) -> String {
    let workers: Vec<Vec<String>> = s
        .workers
        .iter()
        .map(|w| {
            vec![
                w.worker.to_string(),
                w.core.to_string(),
                w.ports.to_string(),
                w.rx_packets.to_string(),
                w.tx_packets.to_string(),
                w.handoff_out.to_string(),
                w.handoff_in.to_string(),
                w.sleeps.to_string(),
                w.generation.to_string(),
                drops_cell(&w.drops),
            ]
        })
        .collect();
    let ports: Vec<Vec<String>> = s
        .ports
        .iter()
        .map(|p| {
            vec![
                p.port.to_string(),
                p.ifname.clone(),
                p.kind.clone(),
                p.worker.to_string(),
                p.ip.map_or_else(|| "-".to_string(), |ip| ip.to_string()),
                p.rx_packets.to_string(),
                p.rx_bytes.to_string(),
                p.tx_packets.to_string(),
                p.tx_bytes.to_string(),
                drops_cell(&p.drops),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "WORKER",
            "CORE",
            "PORTS",
            "RX_PKTS",
            "TX_PKTS",
            "HANDOFF_OUT",
            "HANDOFF_IN",
            "SLEEPS",
            "GEN",
            "DROPS",
        ],
        &workers,
    );
    out.push('\n');
    out.push_str(&table(
        &[
            "PORT", "IFNAME", "KIND", "WORKER", "IP", "RX_PKTS", "RX_BYTES", "TX_PKTS", "TX_BYTES",
            "DROPS",
        ],
        &ports,
    ));
    out
}

/// Rates between two `stats` samples `dt` apart: per port (matched by slot and
/// ifname; a port new since `prev` counts from zero) and per worker.
pub(crate) fn format_top(prev: &Stats, cur: &Stats, dt: Duration) -> String {
    let secs = dt.as_secs_f64().max(1e-3);
    let rate = |now: u64, before: u64| format!("{:.0}", now.saturating_sub(before) as f64 / secs);
    let bits = |now: u64, before: u64| {
        let bps = now.saturating_sub(before) as f64 * 8.0 / secs;
        if bps >= 1e9 {
            format!("{:.2}G", bps / 1e9)
        } else if bps >= 1e6 {
            format!("{:.2}M", bps / 1e6)
        } else if bps >= 1e3 {
            format!("{:.1}k", bps / 1e3)
        } else {
            format!("{bps:.0}")
        }
    };
    let drop_sum = |d: &std::collections::BTreeMap<String, u64>| d.values().sum::<u64>();
    let drop_rates =
        |now: &std::collections::BTreeMap<String, u64>,
         before: Option<&std::collections::BTreeMap<String, u64>>| {
            let cells: Vec<String> = now
                .iter()
                .filter_map(|(reason, n)| {
                    let b = before.and_then(|b| b.get(reason)).copied().unwrap_or(0);
                    (*n > b).then(|| format!("{reason}={}", rate(*n, b)))
                })
                .collect();
            if cells.is_empty() {
                "-".to_string()
            } else {
                cells.join(",")
            }
        };
    let ports: Vec<Vec<String>> = cur
        .ports
        .iter()
        .map(|p| {
            let b = prev
                .ports
                .iter()
                .find(|q| q.port == p.port && q.ifname == p.ifname);
            let (rxp, rxb, txp, txb, drops) = b.map_or((0, 0, 0, 0, 0), |b| {
                (
                    b.rx_packets,
                    b.rx_bytes,
                    b.tx_packets,
                    b.tx_bytes,
                    drop_sum(&b.drops),
                )
            });
            vec![
                p.port.to_string(),
                p.ifname.clone(),
                p.kind.clone(),
                p.worker.to_string(),
                rate(p.rx_packets, rxp),
                bits(p.rx_bytes, rxb),
                rate(p.tx_packets, txp),
                bits(p.tx_bytes, txb),
                rate(drop_sum(&p.drops), drops),
                drop_rates(&p.drops, b.map(|b| &b.drops)),
            ]
        })
        .collect();
    let workers: Vec<Vec<String>> = cur
        .workers
        .iter()
        .map(|w| {
            let b = prev.workers.iter().find(|v| v.worker == w.worker);
            vec![
                w.worker.to_string(),
                w.core.to_string(),
                w.ports.to_string(),
                rate(w.rx_packets, b.map_or(0, |b| b.rx_packets)),
                rate(w.tx_packets, b.map_or(0, |b| b.tx_packets)),
                rate(drop_sum(&w.drops), b.map_or(0, |b| drop_sum(&b.drops))),
                format!("{}/{}", w.conntrack.entries, w.conntrack.capacity),
                rate(w.sleeps, b.map_or(0, |b| b.sleeps)),
            ]
        })
        .collect();
    let mut out = format!("xsknet top: rates over {secs:.1} s\n\n");
    out.push_str(&table(
        &[
            "WORKER",
            "CORE",
            "PORTS",
            "RX_PPS",
            "TX_PPS",
            "DROP_PPS",
            "CONNTRACK",
            "SLEEPS/S",
        ],
        &workers,
    ));
    out.push('\n');
    out.push_str(&table(
        &[
            "PORT", "IFNAME", "KIND", "WORKER", "RX_PPS", "RX_BPS", "TX_PPS", "TX_BPS", "DROP_PPS",
            "DROPS/S",
        ],
        &ports,
    ));
    out
}

pub(crate) fn format_endpoints(entries: &[xsknet_proto::wire::EndpointEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|entry| {
            let e = &entry.endpoint;
            let pod = match (&e.namespace, &e.name) {
                (Some(ns), Some(n)) => format!("{ns}/{n}"),
                (None, Some(n)) => n.clone(),
                _ => "-".to_string(),
            };
            let labels = if e.labels.is_empty() {
                "-".to_string()
            } else {
                e.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            vec![
                e.ifname.clone(),
                e.ip.to_string(),
                e.mac.clone(),
                pod,
                e.worker.to_string(),
                e.port.to_string(),
                labels,
                if entry.labels_source.is_empty() {
                    "-".to_string()
                } else {
                    entry.labels_source.clone()
                },
            ]
        })
        .collect();
    table(
        &[
            "IFNAME", "IP", "MAC", "POD", "WORKER", "PORT", "LABELS", "SOURCE",
        ],
        &rows,
    )
}

#[cfg(test)]
mod top_tests {
    use super::*;
    use xsknet_dataplane::control::proto::{PortStats, WorkerStats};

    #[test]
    fn top_shows_rates_between_samples() {
        let port = |rx: u64, drops: u64| PortStats {
            port: 3,
            ifname: "xskA".into(),
            kind: "pod".into(),
            rx_packets: rx,
            rx_bytes: rx * 100,
            drops: [("no_route".to_string(), drops)].into_iter().collect(),
            ..PortStats::default()
        };
        let stats = |rx, drops| Stats {
            ports: vec![port(rx, drops)],
            workers: vec![WorkerStats {
                rx_packets: rx,
                ..WorkerStats::default()
            }],
            ..Stats::default()
        };
        let text = format_top(&stats(100, 1), &stats(300, 5), Duration::from_secs(2));
        let row = text.lines().find(|l| l.contains("xskA")).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        // PORT IFNAME KIND WORKER RX_PPS RX_BPS TX_PPS TX_BPS DROP_PPS DROPS/S
        assert_eq!(cells[4], "100", "{text}");
        assert_eq!(cells[5], "80.0k", "{text}");
        assert_eq!(cells[8], "2", "{text}");
        assert_eq!(cells[9], "no_route=2", "{text}");
        // A port new since the last sample counts from zero; a counter going back
        // (port replaced) never shows a negative rate.
        let text = format_top(&Stats::default(), &stats(10, 0), Duration::from_secs(1));
        assert!(text
            .lines()
            .any(|l| l.contains("xskA") && l.split_whitespace().nth(4) == Some("10")));
        let text = format_top(&stats(50, 0), &stats(10, 0), Duration::from_secs(1));
        assert!(text
            .lines()
            .any(|l| l.contains("xskA") && l.split_whitespace().nth(4) == Some("0")));
    }
}

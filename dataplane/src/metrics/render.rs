//! The Prometheus text exposition format, version 0.0.4: one `# HELP` and `# TYPE`
//! line per family, then its samples; label values escaped (`\\`, `\"`, `\n`).
//! Families with no samples are left out.

use std::fmt::Write;

use super::control::{ControlMetrics, LATENCY_BUCKETS};
use super::Sample;

/// Escape a label value.
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

type Labels = Vec<(&'static str, String)>;

struct Family {
    name: String,
    kind: &'static str,
    help: &'static str,
    rows: Vec<(String, Labels, f64)>,
}

impl Family {
    fn new(name: &str, kind: &'static str, help: &'static str) -> Family {
        Family {
            name: format!("xsknet_{name}"),
            kind,
            help,
            rows: Vec::new(),
        }
    }

    fn add(&mut self, labels: Labels, value: impl Into<f64>) {
        self.rows.push((String::new(), labels, value.into()));
    }

    fn add_suffixed(&mut self, suffix: &str, labels: Labels, value: f64) {
        self.rows.push((suffix.to_string(), labels, value));
    }

    fn write(&self, out: &mut String) {
        if self.rows.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for (suffix, labels, value) in &self.rows {
            out.push_str(&self.name);
            out.push_str(suffix);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", number(*value));
        }
    }
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Metric-name-safe form of a JSON key (`[a-zA-Z0-9_]`).
fn name_part(k: &str) -> String {
    k.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Render everything (see the [module doc](super) for the families).
pub fn render(sample: Option<&Sample>, control: &ControlMetrics) -> String {
    let mut fams: Vec<Family> = Vec::new();
    let mut up = Family::new("up", "gauge", "1 while the daemon serves metrics.");
    up.add(vec![], 1.0);
    fams.push(up);

    if let Some(s) = sample {
        let mut age = Family::new(
            "sample_age_seconds",
            "gauge",
            "Age of the counters below (published by the control thread about once a second).",
        );
        age.add(vec![], s.taken.elapsed().as_secs_f64());
        fams.push(age);
        fams.extend(port_families(s));
        fams.extend(worker_families(s));
        let mut hits = Family::new(
            "policy_hits_total",
            "counter",
            "Flows admitted per NetworkPolicy (namespace/name), summed over workers.",
        );
        for (policy, n) in &s.stats.policy_hits {
            hits.add(vec![("policy", policy.clone())], *n as f64);
        }
        fams.push(hits);
        fams.extend(status_families(&s.status));
        let mut pe = Family::new(
            "persist_errors_total",
            "counter",
            "State writes (endpoints, policy store) that failed since start.",
        );
        pe.add(vec![], s.persist_errors as f64);
        fams.push(pe);
        let mut ds = Family::new(
            "datastore_enabled",
            "gauge",
            "1 when the node follows a cluster datastore (etcd); 0 in static mode.",
        );
        ds.add(vec![], if s.datastore.is_some() { 1.0 } else { 0.0 });
        fams.push(ds);
        if let Some(healthy) = s.datastore {
            let mut dh = Family::new(
                "datastore_healthy",
                "gauge",
                "1 while the datastore connection and watch are healthy.",
            );
            dh.add(vec![], if healthy { 1.0 } else { 0.0 });
            fams.push(dh);
        }
    }
    fams.extend(control_families(control));

    let mut out = String::new();
    for f in &fams {
        f.write(&mut out);
    }
    out
}

fn port_families(s: &Sample) -> Vec<Family> {
    let mut rxp = Family::new(
        "port_rx_packets_total",
        "counter",
        "Packets received on the port.",
    );
    let mut rxb = Family::new(
        "port_rx_bytes_total",
        "counter",
        "Bytes received on the port.",
    );
    let mut txp = Family::new(
        "port_tx_packets_total",
        "counter",
        "Packets sent on the port.",
    );
    let mut txb = Family::new("port_tx_bytes_total", "counter", "Bytes sent on the port.");
    let mut drops = Family::new(
        "port_drops_total",
        "counter",
        "Packets dropped on the port, by reason.",
    );
    for p in &s.stats.ports {
        let labels = || -> Labels {
            vec![
                ("port", p.port.to_string()),
                ("ifname", p.ifname.clone()),
                ("kind", p.kind.clone()),
                ("worker", p.worker.to_string()),
            ]
        };
        rxp.add(labels(), p.rx_packets as f64);
        rxb.add(labels(), p.rx_bytes as f64);
        txp.add(labels(), p.tx_packets as f64);
        txb.add(labels(), p.tx_bytes as f64);
        for (reason, n) in &p.drops {
            let mut l = labels();
            l.push(("reason", reason.clone()));
            drops.add(l, *n as f64);
        }
    }
    vec![rxp, rxb, txp, txb, drops]
}

fn worker_families(s: &Sample) -> Vec<Family> {
    let mut rxp = Family::new(
        "worker_rx_packets_total",
        "counter",
        "Packets the worker received.",
    );
    let mut txp = Family::new(
        "worker_tx_packets_total",
        "counter",
        "Packets the worker sent.",
    );
    let mut drops = Family::new(
        "worker_drops_total",
        "counter",
        "Packets the worker dropped, by reason.",
    );
    let mut hout = Family::new(
        "worker_handoff_out_total",
        "counter",
        "Packets handed to other workers.",
    );
    let mut hin = Family::new(
        "worker_handoff_in_total",
        "counter",
        "Packets taken from other workers.",
    );
    let mut sleeps = Family::new(
        "worker_sleeps_total",
        "counter",
        "Times the worker fell back to sleeping in poll(2).",
    );
    let mut gen = Family::new(
        "worker_generation",
        "gauge",
        "Table generation the worker runs on.",
    );
    let mut entries = Family::new(
        "conntrack_entries",
        "gauge",
        "Connection table entries (live or not yet swept).",
    );
    let mut cap = Family::new("conntrack_capacity", "gauge", "Connection table capacity.");
    let mut ins = Family::new(
        "conntrack_inserts_total",
        "counter",
        "Connection table inserts.",
    );
    let mut ev = Family::new(
        "conntrack_evictions_total",
        "counter",
        "Connection table early-drop evictions.",
    );
    let mut full = Family::new(
        "conntrack_full_total",
        "counter",
        "New flows refused: connection table bucket full.",
    );
    for w in &s.stats.workers {
        let l = || -> Labels { vec![("worker", w.worker.to_string())] };
        rxp.add(l(), w.rx_packets as f64);
        txp.add(l(), w.tx_packets as f64);
        for (reason, n) in &w.drops {
            let mut x = l();
            x.push(("reason", reason.clone()));
            drops.add(x, *n as f64);
        }
        hout.add(l(), w.handoff_out as f64);
        hin.add(l(), w.handoff_in as f64);
        sleeps.add(l(), w.sleeps as f64);
        gen.add(l(), w.generation as f64);
        entries.add(l(), w.conntrack.entries as f64);
        cap.add(l(), w.conntrack.capacity as f64);
        ins.add(l(), w.conntrack.inserts as f64);
        ev.add(l(), w.conntrack.evictions as f64);
        full.add(l(), w.conntrack.full as f64);
    }
    vec![
        rxp, txp, drops, hout, hin, sleeps, gen, entries, cap, ins, ev, full,
    ]
}

/// Every number or boolean of the status answer (one level of nesting flattened).
fn status_families(status: &serde_json::Value) -> Vec<Family> {
    use serde_json::Value;
    let mut out = Vec::new();
    let mut leaf = |name: String, v: &Value| {
        let x = match v {
            Value::Bool(b) => f64::from(u8::from(*b)),
            Value::Number(n) => match n.as_f64() {
                Some(x) => x,
                None => return,
            },
            _ => return,
        };
        let mut f = Family::new(&name, "gauge", "A field of the daemon's status answer.");
        f.add(vec![], x);
        out.push(f);
    };
    if let Value::Object(obj) = status {
        for (k, v) in obj {
            match v {
                Value::Object(inner) => {
                    for (k2, v2) in inner {
                        leaf(format!("status_{}_{}", name_part(k), name_part(k2)), v2);
                    }
                }
                v => leaf(format!("status_{}", name_part(k)), v),
            }
        }
    }
    out
}

fn control_families(c: &ControlMetrics) -> Vec<Family> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut hist = Family::new(
        "control_request_duration_seconds",
        "histogram",
        "Control requests from complete to answered (queueing included), per op.",
    );
    let mut errors = Family::new(
        "control_request_errors_total",
        "counter",
        "Control requests answered with an error, per op.",
    );
    for (op, s, e) in c.per_op() {
        for (i, n) in s.cumulative.iter().enumerate() {
            let le = LATENCY_BUCKETS
                .get(i)
                .map_or("+Inf".to_string(), |b| b.to_string());
            hist.add_suffixed(
                "_bucket",
                vec![("op", op.to_string()), ("le", le)],
                *n as f64,
            );
        }
        hist.add_suffixed("_sum", vec![("op", op.to_string())], s.sum_secs);
        hist.add_suffixed("_count", vec![("op", op.to_string())], s.count as f64);
        errors.add(vec![("op", op.to_string())], e as f64);
    }
    let gauge = |name: &str, help: &'static str, v: u64, kind: &'static str| {
        let mut f = Family::new(name, kind, help);
        f.add(vec![], v as f64);
        f
    };
    vec![
        hist,
        errors,
        gauge(
            "control_connections",
            "Control socket connections open.",
            c.connections_open.load(Relaxed),
            "gauge",
        ),
        gauge(
            "control_connections_accepted_total",
            "Control socket connections accepted.",
            c.connections_accepted.load(Relaxed),
            "counter",
        ),
        gauge(
            "control_connections_evicted_total",
            "Idle control connections closed to make room for a new one.",
            c.connections_evicted.load(Relaxed),
            "counter",
        ),
        gauge(
            "control_connections_deadline_closed_total",
            "Control connections closed for not completing a request (or reading its answer) in time.",
            c.connections_deadline.load(Relaxed),
            "counter",
        ),
        gauge(
            "control_answers_abandoned_total",
            "Answers whose client had gone away (an ADD among them is undone).",
            c.answers_abandoned.load(Relaxed),
            "counter",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::proto::{PortStats, Stats, WorkerStats};
    use std::time::{Duration, Instant};

    /// A minimal check of the 0.0.4 grammar: every non-comment line is
    /// `name{labels} value` with a known family, labels well-formed, value a float.
    pub fn check_exposition(text: &str) -> Result<usize, String> {
        let mut typed = std::collections::HashSet::new();
        let mut n = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let name = it.next().ok_or("TYPE without name")?;
                let kind = it.next().ok_or("TYPE without kind")?;
                if !["counter", "gauge", "histogram"].contains(&kind) {
                    return Err(format!("kind {kind}"));
                }
                if !typed.insert(name.to_string()) {
                    return Err(format!("family {name} typed twice"));
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').ok_or(format!("no value: {line}"))?;
            if value != "+Inf" {
                value.parse::<f64>().map_err(|_| format!("value {value}"))?;
            }
            let name = series.split('{').next().unwrap();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| typed.contains(*b)))
                .unwrap_or(name);
            if !typed.contains(base) {
                return Err(format!("sample of untyped family {name}"));
            }
            n += 1;
        }
        Ok(n)
    }

    #[test]
    fn renders_valid_exposition_with_escaped_labels() {
        let control = ControlMetrics::default();
        control.observe("endpoint_add", Duration::from_millis(3), true);
        let mut drops = std::collections::BTreeMap::new();
        drops.insert("no_route".to_string(), 2);
        let sample = Sample {
            stats: Stats {
                ports: vec![PortStats {
                    port: 1,
                    ifname: "we\"ird\\".into(),
                    kind: "pod".into(),
                    rx_packets: 5,
                    drops: drops.clone(),
                    ..PortStats::default()
                }],
                workers: vec![WorkerStats {
                    worker: 0,
                    drops,
                    ..WorkerStats::default()
                }],
                policy_hits: [("x/allow".to_string(), 7)].into_iter().collect(),
            },
            status: serde_json::json!({"ready": true, "endpoints": 1, "version": "0.1.0",
                "persistence": {"healthy": false, "errors": 3}}),
            persist_errors: 4,
            datastore: None,
            taken: Instant::now(),
        };
        let text = render(Some(&sample), &control);
        let n = check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(n > 20);
        for want in [
            "xsknet_port_rx_packets_total{port=\"1\",ifname=\"we\\\"ird\\\\\",kind=\"pod\",worker=\"0\"} 5",
            "xsknet_port_drops_total{port=\"1\",ifname=\"we\\\"ird\\\\\",kind=\"pod\",worker=\"0\",reason=\"no_route\"} 2",
            "xsknet_policy_hits_total{policy=\"x/allow\"} 7",
            "xsknet_status_ready 1",
            "xsknet_status_persistence_healthy 0",
            "xsknet_persist_errors_total 4",
            "xsknet_datastore_enabled 0",
            "xsknet_control_request_duration_seconds_bucket{op=\"endpoint_add\",le=\"0.005\"} 1",
            "xsknet_control_request_duration_seconds_bucket{op=\"endpoint_add\",le=\"+Inf\"} 1",
            "xsknet_control_request_duration_seconds_count{op=\"endpoint_add\"} 1",
        ] {
            assert!(text.contains(want), "missing {want}\n{text}");
        }
        assert!(!text.contains("datastore_healthy"));
        assert!(!text.contains("status_version"));
    }
}

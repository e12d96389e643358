//! One function per chart: from parsed inputs to the series and labels handed to
//! [`render`], returning an [`Outcome`] (a chart never stops the others).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::parse::{self, E2e, Udp64};
use super::render::{self, Bars, Line};
use super::{ChartError, Outcome};

fn outcome(chart: &'static str, r: Result<PathBuf, ChartError>) -> Outcome {
    match r {
        Ok(p) => Outcome::Written(p),
        Err(error) => Outcome::Failed { chart, error },
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The caption under a title: source file, date, commit, load.
fn caption(e: &E2e, json: &Path) -> String {
    let m = e.meta.as_ref();
    let s = |v: Option<&String>| v.map(String::as_str).unwrap_or("?").to_string();
    format!(
        "{} · {} · commit {} · {} CPUs · load {} → {}",
        file_name(json),
        s(m.and_then(|m| m.date.as_ref())),
        s(m.and_then(|m| m.commit.as_ref())),
        m.and_then(|m| m.cpus).map_or("?".into(), |c| c.to_string()),
        s(m.and_then(|m| m.loadavg_start.as_ref())),
        s(m.and_then(|m| m.loadavg_end.as_ref())),
    )
}

/// `1234567` → `1.23M`, `187000` → `187k`.
pub fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

pub fn pps(e: &E2e, json: &Path, out: &Path) -> Outcome {
    let path = out.join("pps.png");
    // One group per datapath; one offered and one delivered bar per generator row
    // (row i of every peer is the same generator setup: 1 CPU, then the saturation row).
    let peers: Vec<_> = e
        .peers
        .iter()
        .filter(|p| p.udp64.as_ref().is_some_and(|u| !u.is_empty()))
        .collect();
    if peers.is_empty() {
        return Outcome::Skipped {
            chart: "pps.png",
            why: format!("{}: no peer has udp64 results", json.display()),
        };
    }
    let cats: Vec<String> = peers.iter().map(|p| p.name().to_string()).collect();
    let rows = peers
        .iter()
        .map(|p| p.udp64.as_ref().map_or(0, Vec::len))
        .max()
        .unwrap_or(0);
    let mut series = Vec::new();
    for i in 0..rows {
        let gen = peers
            .iter()
            .find_map(|p| p.udp64.as_ref().and_then(|u| u.get(i)))
            .map(|u| {
                format!(
                    "{} ×{}",
                    u.generator.as_deref().unwrap_or("?"),
                    u.procs.unwrap_or(1)
                )
            })
            .unwrap_or_default();
        let row = |f: fn(&Udp64) -> Option<f64>| -> Vec<Option<f64>> {
            peers
                .iter()
                .map(|p| p.udp64.as_ref().and_then(|u| u.get(i)).and_then(f))
                .collect()
        };
        series.push(Bars {
            name: format!("offered ({gen})"),
            values: row(|u| u.offered_pps),
        });
        series.push(Bars {
            name: format!("delivered ({gen})"),
            values: row(|u| u.delivered_pps),
        });
    }
    outcome(
        "pps.png",
        render::grouped_bars(
            &path,
            "64 B UDP packets per second, pod to pod on one node",
            &caption(e, json),
            "packets/s",
            &cats,
            &series,
            &si,
        )
        .map(|()| path.clone()),
    )
}

pub fn tcp(e: &E2e, json: &Path, out: &Path) -> Outcome {
    let path = out.join("tcp.png");
    let peers: Vec<_> = e
        .peers
        .iter()
        .filter(|p| p.tcp.is_some() || p.tcp_offloads_on.is_some())
        .collect();
    if peers.is_empty() {
        return Outcome::Skipped {
            chart: "tcp.png",
            why: format!("{}: no peer has tcp results", json.display()),
        };
    }
    let cats: Vec<String> = peers.iter().map(|p| p.name().to_string()).collect();
    let series = [
        Bars {
            name: "pod offloads off".into(),
            values: peers
                .iter()
                .map(|p| p.tcp.as_ref().and_then(|t| t.gbps))
                .collect(),
        },
        Bars {
            name: "pod offloads on".into(),
            values: peers
                .iter()
                .map(|p| p.tcp_offloads_on.as_ref().and_then(|t| t.gbps))
                .collect(),
        },
    ];
    outcome(
        "tcp.png",
        render::grouped_bars(
            &path,
            "TCP (iperf3) pod to pod on one node, Gbit/s",
            &caption(e, json),
            "Gbit/s",
            &cats,
            &series,
            &|v| format!("{v:.2}"),
        )
        .map(|()| path.clone()),
    )
}

/// The percentile axis: x = 1/(1−q), so 10 is p90, 100 p99, 1000 p99.9.
pub fn percentile_label(x: f64) -> String {
    if x <= 1.0 + 1e-9 {
        return "p0".into();
    }
    let p = 100.0 * (1.0 - 1.0 / x);
    let s = format!("{p:.4}");
    format!("p{}", s.trim_end_matches('0').trim_end_matches('.'))
}

pub fn latency(e: &E2e, json: &Path, out: &Path) -> Outcome {
    let path = out.join("latency.png");
    let mut lines = Vec::new();
    for p in &e.peers {
        let Some(l) = &p.latency else { continue };
        if let Some(name) = &l.samples_file {
            let h = parse::samples_path(json, name).and_then(|f| parse::sockperf_log(&f));
            let h = match h {
                Ok(h) => h,
                Err(error) => {
                    return Outcome::Failed {
                        chart: "latency.png",
                        error,
                    }
                }
            };
            let count = h.len() as f64;
            let mut points = Vec::new();
            for i in 0..=120 {
                let x = 10f64.powf(i as f64 / 20.0);
                if x > count {
                    break;
                }
                let q = 1.0 - 1.0 / x;
                points.push((x, h.value_at_quantile(q) as f64 / 1e3));
            }
            points.push((count.max(1.0), h.max() as f64 / 1e3));
            lines.push(Line {
                name: format!(
                    "{} (p50 {:.1} / p99 {:.1} / p99.9 {:.1} µs, {} samples)",
                    p.name(),
                    h.value_at_quantile(0.5) as f64 / 1e3,
                    h.value_at_quantile(0.99) as f64 / 1e3,
                    h.value_at_quantile(0.999) as f64 / 1e3,
                    h.len()
                ),
                points,
                reference: false,
                labels: Vec::new(),
            });
        } else {
            let pts: Vec<(f64, f64)> = [(2.0, l.p50_us), (100.0, l.p99_us), (1000.0, l.p999_us)]
                .into_iter()
                .filter_map(|(x, v)| v.map(|v| (x, v.max(1e-3))))
                .collect();
            if !pts.is_empty() {
                lines.push(Line {
                    name: format!("{} (summary only: p50/p99/p99.9)", p.name()),
                    points: pts,
                    reference: true,
                    labels: Vec::new(),
                });
            }
        }
    }
    if lines.is_empty() {
        return Outcome::Skipped {
            chart: "latency.png",
            why: format!("{}: no peer has latency results", json.display()),
        };
    }
    outcome(
        "latency.png",
        render::lines(
            &path,
            "Latency, sockperf ping-pong, one way (RTT/2), by percentile",
            &caption(e, json),
            ("percentile", true),
            ("µs (log)", true),
            &lines,
            &percentile_label,
            &|v| format!("{v}"),
        )
        .map(|()| path.clone()),
    )
}

pub fn tcp_mtu(csv: &Path, out: &Path) -> Outcome {
    let path = out.join("tcp-mtu.png");
    let rows = match parse::tcp_mtu(csv) {
        Ok(r) => r,
        Err(error) => {
            return Outcome::Failed {
                chart: "tcp-mtu.png",
                error,
            }
        }
    };
    if rows.is_empty() {
        return Outcome::Skipped {
            chart: "tcp-mtu.png",
            why: format!("{}: no rows", csv.display()),
        };
    }
    // The x axis is categorical: the distinct MTUs measured, evenly spaced.
    let mut mtus: Vec<u32> = rows.iter().map(|r| r.local_mtu).collect();
    mtus.sort_unstable();
    mtus.dedup();
    let xi = |mtu: u32| mtus.iter().position(|&m| m == mtu).unwrap_or(0) as f64;
    let (lo, hi) = (0.0, (mtus.len() - 1) as f64);
    // One series per (datapath, frame size), ordered by datapath then frame.
    // (reference line, datapath, frame size) -> points
    type Key = (bool, String, Option<u32>);
    let mut series: BTreeMap<Key, Vec<(f64, f64)>> = BTreeMap::new();
    for r in &rows {
        let reference = r.frame_size.is_none();
        series
            .entry((reference, r.datapath.clone(), r.frame_size))
            .or_default()
            .push((xi(r.local_mtu), r.gbps));
    }
    let lines: Vec<Line> = series
        .into_iter()
        .map(|((reference, dp, frame), mut pts)| {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            if reference && pts.len() == 1 {
                // A single measurement: a horizontal reference across the MTU range.
                pts = vec![(lo - 0.2, pts[0].1), (hi + 0.2, pts[0].1)];
            }
            let name = match frame {
                Some(f) => format!("{dp}, {f} B frames"),
                None => format!("{dp} ({:.2} Gbit/s)", pts[0].1),
            };
            let labels = if reference {
                Vec::new()
            } else {
                pts.iter().map(|p| format!("{:.2}", p.1)).collect()
            };
            Line {
                name,
                points: pts,
                reference,
                labels,
            }
        })
        .collect();
    outcome(
        "tcp-mtu.png",
        render::lines(
            &path,
            "TCP (iperf3) pod to pod on one node, by local MTU",
            &file_name(csv),
            ("pod MTU (bytes)", false),
            ("Gbit/s", false),
            &lines,
            &|v| {
                let i = v.round();
                if (v - i).abs() < 1e-6 && i >= 0.0 {
                    mtus.get(i as usize)
                        .map(|m| m.to_string())
                        .unwrap_or_default()
                } else {
                    String::new()
                }
            },
            &|v| format!("{v:.1}"),
        )
        .map(|()| path.clone()),
    )
}

pub fn scaling(files: &[PathBuf], out: &Path) -> Outcome {
    let path = out.join("scaling.png");
    // Per mode, the rows of the newest file (greatest name) that has it.
    let mut by_mode: BTreeMap<String, (PathBuf, Vec<parse::Scaling>)> = BTreeMap::new();
    for f in files {
        let rows = match parse::scaling(f) {
            Ok(r) => r,
            Err(error) => {
                return Outcome::Failed {
                    chart: "scaling.png",
                    error,
                }
            }
        };
        let mut fresh: BTreeMap<String, Vec<parse::Scaling>> = BTreeMap::new();
        for r in rows {
            fresh.entry(r.mode.clone()).or_default().push(r);
        }
        for (mode, rows) in fresh {
            by_mode.insert(mode, (f.clone(), rows));
        }
    }
    if by_mode.is_empty() {
        return Outcome::Skipped {
            chart: "scaling.png",
            why: "scaling CSVs have no rows".into(),
        };
    }
    let mut lines = Vec::new();
    let mut sources: Vec<String> = Vec::new();
    for (mode, (f, rows)) in by_mode {
        let name = file_name(&f);
        if !sources.contains(&name) {
            sources.push(name);
        }
        // A mode measured with several pair counts per worker count (e2e: 1 and 2
        // sending pairs) gets one line per pair count; else one line.
        let mut workers: Vec<u32> = rows.iter().map(|r| r.workers).collect();
        workers.sort_unstable();
        let split = workers.windows(2).any(|w| w[0] == w[1]);
        let mut groups: BTreeMap<Option<u32>, Vec<&parse::Scaling>> = BTreeMap::new();
        for r in &rows {
            groups.entry(split.then_some(r.pairs)).or_default().push(r);
        }
        for (pairs, rows) in groups {
            let mut pts: Vec<(f64, f64)> = rows
                .iter()
                .map(|r| (r.workers as f64, r.delivered_pps))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let load = rows.first().map_or("", |r| r.loadavg.as_str());
            let labels = pts
                .iter()
                .map(|&(w, pps)| format!("{} ({}/worker)", si(pps), si(pps / w.max(1.0))))
                .collect();
            let what = match pairs {
                Some(p) => format!("{mode}, {p} sending pair(s)"),
                None => mode.clone(),
            };
            lines.push(Line {
                name: format!("{what} (load {load})"),
                points: pts,
                reference: false,
                labels,
            });
        }
    }
    outcome(
        "scaling.png",
        render::lines(
            &path,
            "Delivered packets per second by number of workers",
            &sources.join(", "),
            ("workers", false),
            ("delivered packets/s (log)", true),
            &lines,
            &|v| {
                if (v - v.round()).abs() < 1e-6 {
                    format!("{v:.0}")
                } else {
                    String::new()
                }
            },
            &si,
        )
        .map(|()| path.clone()),
    )
}

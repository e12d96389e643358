//! Readers for the chart tool's inputs, all treated as untrusted: the end-to-end JSON
//! (`e2e-*.json`, written by `bench/e2e/run.sh`), the CSVs (`tcp-mtu-*.csv`,
//! `scaling-*.csv`), sockperf `--full-log` sample files and criterion's
//! `estimates.json`/`benchmark.json`. Every file is size-capped before it is read, every
//! number must be finite and non-negative, and every error names the file and line.

use std::path::{Component, Path, PathBuf};

use hdrhistogram::Histogram;
use serde::Deserialize;

use super::ChartError;

/// Largest input file read (sockperf logs of long runs are the big ones).
pub const MAX_FILE_BYTES: u64 = 256 << 20;
/// Most rows (or samples) taken from one file.
pub const MAX_ROWS: usize = 20_000_000;

/// Read a whole file, refusing ones past [`MAX_FILE_BYTES`].
pub fn read_capped(path: &Path) -> Result<String, ChartError> {
    let io = |source| ChartError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_FILE_BYTES {
        return Err(ChartError::parse(
            path,
            0,
            format!("{len} bytes, more than the {MAX_FILE_BYTES} this tool reads"),
        ));
    }
    std::fs::read_to_string(path).map_err(io)
}

/// `run.sh`'s result file. Unknown fields are ignored; any field may be null.
#[derive(Debug, Default, Deserialize)]
pub struct E2e {
    #[serde(default)]
    pub meta: Option<Meta>,
    pub peers: Vec<Peer>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Meta {
    pub date: Option<String>,
    pub commit: Option<String>,
    pub kernel: Option<String>,
    pub cpus: Option<u32>,
    pub duration_s: Option<f64>,
    pub loadavg_start: Option<String>,
    pub loadavg_end: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Peer {
    pub peer: String,
    pub label: Option<String>,
    #[serde(default)]
    pub udp64: Option<Vec<Udp64>>,
    pub tcp: Option<Tcp>,
    pub tcp_offloads_on: Option<Tcp>,
    pub latency: Option<Latency>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Udp64 {
    pub generator: Option<String>,
    pub procs: Option<u32>,
    pub offered_pps: Option<f64>,
    pub delivered_pps: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Tcp {
    pub gbps: Option<f64>,
    pub retransmits: Option<u64>,
    pub offloads: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Latency {
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub samples_file: Option<String>,
}

impl Peer {
    /// The name to show: the label, else the peer's id.
    pub fn name(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.peer)
    }
}

/// Parse and check an e2e JSON file.
pub fn e2e(path: &Path) -> Result<E2e, ChartError> {
    let text = read_capped(path)?;
    let e: E2e = serde_json::from_str(&text).map_err(|e| {
        ChartError::parse(path, e.line(), format!("not the e2e result schema: {e}"))
    })?;
    if e.peers.len() > 64 {
        return Err(ChartError::parse(path, 0, "more than 64 peers"));
    }
    let check = |what: &str, v: Option<f64>| -> Result<(), ChartError> {
        match v {
            Some(x) if !(x.is_finite() && x >= 0.0) => Err(ChartError::parse(
                path,
                0,
                format!("{what} is {x}, not a finite non-negative number"),
            )),
            _ => Ok(()),
        }
    };
    for p in &e.peers {
        for u in p.udp64.iter().flatten() {
            check(&format!("peer {} offered_pps", p.peer), u.offered_pps)?;
            check(&format!("peer {} delivered_pps", p.peer), u.delivered_pps)?;
        }
        for t in [&p.tcp, &p.tcp_offloads_on].into_iter().flatten() {
            check(&format!("peer {} tcp gbps", p.peer), t.gbps)?;
        }
        if let Some(l) = &p.latency {
            for (w, v) in [
                ("p50_us", l.p50_us),
                ("p99_us", l.p99_us),
                ("p999_us", l.p999_us),
            ] {
                check(&format!("peer {} {w}", p.peer), v)?;
            }
        }
    }
    Ok(e)
}

/// Resolve a `samples_file` against the JSON's directory: relative, no `..`.
pub fn samples_path(json: &Path, name: &str) -> Result<PathBuf, ChartError> {
    let rel = Path::new(name);
    if name.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(ChartError::parse(
            json,
            0,
            format!("samples_file {name:?} must be a relative path without `..`"),
        ));
    }
    Ok(json.parent().unwrap_or(Path::new(".")).join(rel))
}

/// Split one CSV line: commas, fields optionally in double quotes ("" inside quotes is a
/// quote). None if a quote is left open.
pub fn split_csv(line: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if cur.trim().is_empty() => {
                cur.clear();
                quoted = true;
            }
            (false, ',') => out.push(std::mem::take(&mut cur).trim().to_string()),
            (_, c) => cur.push(c),
        }
    }
    if quoted {
        return None;
    }
    out.push(cur.trim().to_string());
    Some(out)
}

/// A CSV with a header naming (at least) `columns`: each data row as those columns'
/// values in that order, with its 1-based line number. Blank lines and `#` comments
/// are skipped.
pub fn csv(path: &Path, columns: &[&str]) -> Result<Vec<(usize, Vec<String>)>, ChartError> {
    let text = read_capped(path)?;
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let Some((hl, header)) = lines.next() else {
        return Err(ChartError::parse(path, 1, "empty file, no header"));
    };
    let header = split_csv(header).ok_or_else(|| ChartError::parse(path, hl, "open quote"))?;
    let idx: Vec<usize> = columns
        .iter()
        .map(|c| {
            header.iter().position(|h| h == c).ok_or_else(|| {
                ChartError::parse(
                    path,
                    hl,
                    format!("header has no column {c:?} (want {})", columns.join(",")),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let mut rows = Vec::new();
    for (n, line) in lines {
        if rows.len() >= MAX_ROWS {
            return Err(ChartError::parse(path, n, "too many rows"));
        }
        let f = split_csv(line).ok_or_else(|| ChartError::parse(path, n, "open quote"))?;
        if f.len() != header.len() {
            return Err(ChartError::parse(
                path,
                n,
                format!("{} fields, the header has {}", f.len(), header.len()),
            ));
        }
        rows.push((n, idx.iter().map(|&i| f[i].clone()).collect()));
    }
    Ok(rows)
}

/// A finite non-negative number from a CSV field.
pub fn number(path: &Path, line: usize, what: &str, s: &str) -> Result<f64, ChartError> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(ChartError::parse(
            path,
            line,
            format!("{what} {s:?} is not a finite non-negative number"),
        )),
    }
}

/// One row of `tcp-mtu-*.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpMtu {
    pub datapath: String,
    pub local_mtu: u32,
    /// None when the datapath has no frame size (the kernel peers: empty, `-` or 0).
    pub frame_size: Option<u32>,
    pub gbps: f64,
}

pub fn tcp_mtu(path: &Path) -> Result<Vec<TcpMtu>, ChartError> {
    let cols = [
        "datapath",
        "local_mtu",
        "frame_size",
        "gbps",
        "retransmits",
        "loadavg",
    ];
    csv(path, &cols)?
        .into_iter()
        .map(|(n, f)| {
            let int = |what: &str, s: &str| {
                s.parse::<u32>().map_err(|_| {
                    ChartError::parse(path, n, format!("{what} {s:?} is not an integer"))
                })
            };
            let frame_size = match f[2].as_str() {
                "" | "-" | "0" => None,
                s => Some(int("frame_size", s)?),
            };
            Ok(TcpMtu {
                datapath: f[0].clone(),
                local_mtu: int("local_mtu", &f[1])?,
                frame_size,
                gbps: number(path, n, "gbps", &f[3])?,
            })
        })
        .collect()
}

/// One row of `scaling-*.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scaling {
    pub mode: String,
    pub workers: u32,
    pub pairs: u32,
    pub delivered_pps: f64,
    pub loadavg: String,
}

pub const SCALING_HEADER: &str = "mode,workers,pairs,delivered_pps,loadavg";

pub fn scaling(path: &Path) -> Result<Vec<Scaling>, ChartError> {
    csv(
        path,
        &["mode", "workers", "pairs", "delivered_pps", "loadavg"],
    )?
    .into_iter()
    .map(|(n, f)| {
        let int = |what: &str, s: &str| match s.parse::<u32>() {
            Ok(v) if (1..=1024).contains(&v) => Ok(v),
            _ => Err(ChartError::parse(
                path,
                n,
                format!("{what} {s:?} is not an integer in 1..=1024"),
            )),
        };
        Ok(Scaling {
            mode: f[0].clone(),
            workers: int("workers", &f[1])?,
            pairs: int("pairs", &f[2])?,
            delivered_pps: number(path, n, "delivered_pps", &f[3])?,
            loadavg: f[4].clone(),
        })
    })
    .collect()
}

/// Seconds as written by sockperf (`2.467976962`) to nanoseconds, exactly.
fn seconds_to_ns(s: &str) -> Option<u64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || frac.len() > 9
        || !(int.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int: u64 = int.parse().ok()?;
    let frac_ns: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse::<u64>().ok()? * 10u64.pow(9 - frac.len() as u32)
    };
    int.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}

/// Longest one-way latency recorded (larger samples are an error: 60 s).
pub const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// A `sockperf ping-pong --full-log` file as a histogram of one-way latency in
/// nanoseconds (RTT/2, RTT = rxTime − txTime, as sockperf's own summary). The lines
/// before the `packet, txTime(sec), rxTime(sec), latency(usec)` header are sockperf's
/// report and are skipped; after it every line is a sample, a blank or a `---` rule.
pub fn sockperf_log(path: &Path) -> Result<Histogram<u64>, ChartError> {
    let text = read_capped(path)?;
    let mut h = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_NS, 3)
        .map_err(|e| ChartError::parse(path, 0, format!("histogram: {e}")))?;
    let mut in_samples = false;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let t = line.trim();
        if !in_samples {
            in_samples = t.starts_with("packet") && t.contains("txTime") && t.contains("rxTime");
            continue;
        }
        if t.is_empty() || t.bytes().all(|b| b == b'-') {
            continue;
        }
        let f: Vec<&str> = t.split(',').map(str::trim).collect();
        let (Some(tx), Some(rx)) = (
            f.get(1).and_then(|s| seconds_to_ns(s)),
            f.get(2).and_then(|s| seconds_to_ns(s)),
        ) else {
            return Err(ChartError::parse(
                path,
                n,
                format!("not a sample `packet, txTime, rxTime, latency`: {t:?}"),
            ));
        };
        if f.len() != 4 {
            return Err(ChartError::parse(
                path,
                n,
                format!("{} fields, want 4", f.len()),
            ));
        }
        let Some(rtt) = rx.checked_sub(tx) else {
            return Err(ChartError::parse(path, n, "rxTime before txTime"));
        };
        let one_way = (rtt / 2).max(1);
        if one_way > MAX_LATENCY_NS {
            return Err(ChartError::parse(path, n, "latency above 60 s"));
        }
        if h.len() as usize >= MAX_ROWS {
            return Err(ChartError::parse(path, n, "too many samples"));
        }
        h.record(one_way)
            .map_err(|e| ChartError::parse(path, n, format!("histogram: {e}")))?;
    }
    if !in_samples {
        return Err(ChartError::parse(
            path,
            0,
            "no `packet, txTime(sec), rxTime(sec), latency(usec)` header (not a sockperf --full-log file)",
        ));
    }
    if h.is_empty() {
        return Err(ChartError::parse(path, 0, "no samples"));
    }
    Ok(h)
}

/// Criterion's `new/estimates.json`: its typical time per iteration in ns — the slope
/// of the linear fit where there is one (what `cargo bench` prints), else the mean.
pub fn criterion_typical_ns(path: &Path) -> Result<f64, ChartError> {
    #[derive(Deserialize)]
    struct Est {
        point_estimate: f64,
    }
    #[derive(Deserialize)]
    struct Estimates {
        mean: Est,
        #[serde(default)]
        slope: Option<Est>,
    }
    let e: Estimates = serde_json::from_str(&read_capped(path)?)
        .map_err(|e| ChartError::parse(path, e.line(), format!("not criterion estimates: {e}")))?;
    let v = e.slope.unwrap_or(e.mean).point_estimate;
    if !(v.is_finite() && v > 0.0) {
        return Err(ChartError::parse(
            path,
            0,
            format!("time per iteration {v} is not positive"),
        ));
    }
    Ok(v)
}

/// Criterion's `new/benchmark.json`: the elements per iteration it was told.
pub fn criterion_elements(path: &Path) -> Result<u64, ChartError> {
    #[derive(Deserialize)]
    enum Throughput {
        Elements(u64),
        Bytes(serde::de::IgnoredAny),
        BytesDecimal(serde::de::IgnoredAny),
    }
    #[derive(Deserialize)]
    struct Bench {
        throughput: Option<Throughput>,
    }
    let b: Bench = serde_json::from_str(&read_capped(path)?).map_err(|e| {
        ChartError::parse(
            path,
            e.line(),
            format!("not a criterion benchmark.json: {e}"),
        )
    })?;
    match b.throughput {
        Some(Throughput::Elements(n)) if n > 0 => Ok(n),
        _ => Err(ChartError::parse(path, 0, "no element throughput")),
    }
}

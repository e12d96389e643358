//! The chart tool's library (`bin/charts.rs`): reads the benchmark results in a
//! directory (by default `bench/out`) and writes PNGs (by default into `bench/charts`):
//!
//! * `pps.png` — offered and delivered 64 B pps per datapath, from the newest
//!   `e2e-*.json` (newest = greatest file name; the names carry UTC stamps);
//! * `tcp.png` — TCP Gbit/s per datapath, pod offloads off and on (same JSON);
//! * `latency.png` — one-way latency percentiles per datapath (log-log: percentile
//!   axis as 1/(1−q), latency µs), from the sockperf `--full-log` files the JSON names
//!   (built into an hdrhistogram), else the JSON's p50/p99/p99.9;
//! * `tcp-mtu.png` — TCP Gbit/s by local MTU from the newest `tcp-mtu-*.csv` (one
//!   xsknet line per frame size, other datapaths as dashed reference lines);
//! * `scaling.png` — delivered pps by worker count from `scaling-*.csv` (per mode, the
//!   rows of the newest file that has that mode).
//!
//! A chart whose input is missing is skipped with a message; a malformed input is an
//! error naming file and line, and the other charts are still drawn. It also turns
//! criterion's scaling results into `scaling-criterion-<stamp>.csv` ([`criterion`]).

use std::path::{Path, PathBuf};

pub mod criterion;
pub mod draw;
pub mod parse;
pub mod render;
#[cfg(test)]
mod tests;

/// What can go wrong; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Malformed input (`line` 0: the file as a whole).
    #[error("{}:{line}: {msg}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{}: drawing failed: {msg}", path.display())]
    Render { path: PathBuf, msg: String },
    #[error("font {}: {msg} (Debian: apt-get install fonts-dejavu-core)", path.display())]
    Font { path: PathBuf, msg: String },
}

impl ChartError {
    pub fn parse(path: &Path, line: usize, msg: impl Into<String>) -> Self {
        ChartError::Parse {
            path: path.to_path_buf(),
            line,
            msg: msg.into(),
        }
    }
}

/// The font every chart's text is drawn with.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Register `path` as plotters' "sans-serif" font, once per process (later calls
/// return the first call's outcome; the bytes live for the process).
pub fn font(path: &Path) -> Result<(), ChartError> {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, bytes)
            .map_err(|_| "not a TrueType font".to_string())
    })
    .clone()
    .map_err(|msg| ChartError::Font {
        path: path.to_path_buf(),
        msg,
    })
}

/// What became of one chart.
#[derive(Debug)]
pub enum Outcome {
    Written(PathBuf),
    Skipped {
        chart: &'static str,
        why: String,
    },
    Failed {
        chart: &'static str,
        error: ChartError,
    },
}

/// The files in `dir` named `prefix*suffix`, sorted by name (oldest stamp first).
pub fn matching(dir: &Path, prefix: &str, suffix: &str) -> Result<Vec<PathBuf>, ChartError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ChartError::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            (name.starts_with(prefix) && name.ends_with(suffix)).then(|| e.path())
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Render every chart whose input is in `input` into `out` (created if missing).
pub fn run(input: &Path, out: &Path, font_path: &Path) -> Result<Vec<Outcome>, ChartError> {
    font(font_path)?;
    std::fs::create_dir_all(out).map_err(|source| ChartError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let mut done = Vec::new();
    let e2e = matching(input, "e2e-", ".json")?.pop();
    match &e2e {
        None => {
            for chart in ["pps.png", "tcp.png", "latency.png"] {
                done.push(Outcome::Skipped {
                    chart,
                    why: format!("no e2e-*.json in {}", input.display()),
                });
            }
        }
        Some(json) => match parse::e2e(json) {
            Ok(e) => {
                done.push(draw::pps(&e, json, out));
                done.push(draw::tcp(&e, json, out));
                done.push(draw::latency(&e, json, out));
            }
            Err(error) => done.push(Outcome::Failed {
                chart: "pps.png, tcp.png, latency.png",
                error,
            }),
        },
    }
    done.push(match matching(input, "tcp-mtu-", ".csv")?.pop() {
        None => Outcome::Skipped {
            chart: "tcp-mtu.png",
            why: format!("no tcp-mtu-*.csv in {}", input.display()),
        },
        Some(csv) => draw::tcp_mtu(&csv, out),
    });
    let scaling = matching(input, "scaling-", ".csv")?;
    done.push(if scaling.is_empty() {
        Outcome::Skipped {
            chart: "scaling.png",
            why: format!("no scaling-*.csv in {}", input.display()),
        }
    } else {
        draw::scaling(&scaling, out)
    });
    Ok(done)
}

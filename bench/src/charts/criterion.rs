//! Criterion's scaling results as a scaling CSV. `benches/forward.rs`'s group
//! `forward_scaling` has one benchmark per case, named `<workers>_worker[s]_<local|cross>`;
//! for each, criterion leaves `new/estimates.json` (ns per iteration: the slope, else
//! the mean) and
//! `new/benchmark.json` (packets per iteration), and the bench itself leaves
//! `loadavg.txt` (the 1-minute load average before → after the case). Delivered pps =
//! packets per iteration / time per iteration; `pairs` = sending pods (one per
//! worker in every case).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::parse::{self, SCALING_HEADER};
use super::ChartError;

/// The criterion group the scaling cases are in.
pub const GROUP: &str = "forward_scaling";

/// `(mode, workers)` from a case name such as `2_workers_cross`.
pub fn case(name: &str) -> Option<(&'static str, u32)> {
    let (n, rest) = name.split_once('_')?;
    let workers: u32 = n.parse().ok()?;
    let mode = match rest
        .strip_prefix("workers_")
        .or_else(|| rest.strip_prefix("worker_"))?
    {
        "local" => "criterion-local",
        "cross" => "criterion-cross",
        _ => return None,
    };
    (workers > 0).then_some((mode, workers))
}

/// The CSV text for the scaling cases under `criterion_dir` (e.g. `target/criterion`).
pub fn scaling_csv(criterion_dir: &Path) -> Result<String, ChartError> {
    let group = criterion_dir.join(GROUP);
    let rd = std::fs::read_dir(&group).map_err(|source| ChartError::Io {
        path: group.clone(),
        source,
    })?;
    let mut cases: Vec<(String, PathBuf)> = rd
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .filter(|(n, _)| case(n).is_some())
        .collect();
    cases.sort();
    if cases.is_empty() {
        return Err(ChartError::parse(
            &group,
            0,
            "no scaling cases (run the forward bench first)",
        ));
    }
    let mut out = format!("{SCALING_HEADER}\n");
    for (name, dir) in cases {
        let (mode, workers) = case(&name).unwrap_or_default();
        let ns = parse::criterion_typical_ns(&dir.join("new/estimates.json"))?;
        let elements = parse::criterion_elements(&dir.join("new/benchmark.json"))?;
        let load = match std::fs::read_to_string(dir.join("loadavg.txt")) {
            Ok(s) => s
                .trim()
                .chars()
                .filter(|c| c.is_ascii_digit() || matches!(c, '.' | ' ' | '-' | '>'))
                .take(40)
                .collect(),
            Err(_) => "unknown".to_string(),
        };
        let pps = elements as f64 * 1e9 / ns;
        let _ = writeln!(out, "{mode},{workers},{workers},{pps:.0},{load}");
    }
    Ok(out)
}

/// Write [`scaling_csv`] to `out_dir/scaling-criterion-<stamp>.csv`.
pub fn write_scaling_csv(criterion_dir: &Path, out_dir: &Path) -> Result<PathBuf, ChartError> {
    let text = scaling_csv(criterion_dir)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ChartError::Io { path, source }
    };
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let path = out_dir.join(format!(
        "scaling-criterion-{}.csv",
        utc_stamp(std::time::SystemTime::now())
    ));
    std::fs::write(&path, text).map_err(io(&path))?;
    Ok(path)
}

/// `YYYYMMDDTHHMMSSZ` (UTC) for a time.
pub fn utc_stamp(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

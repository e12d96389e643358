//! charts: the benchmark results in `bench/out` as PNGs in `bench/charts` (see
//! `bench::charts` for which chart comes from which file), and criterion's scaling
//! cases as a scaling CSV.
//!
//! ```text
//! cargo run --release -p bench --bin charts -- --in bench/out --out bench/charts
//! cargo run --release -p bench --bin charts -- --criterion target/criterion --out-csv bench/out
//! ```
//!
//! A chart whose input is missing is skipped with a message; a malformed input is
//! reported with its file and line and makes the exit status 1 (other charts are still
//! drawn).

#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use bench::charts::{self, Outcome};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Render xsknet benchmark results as PNG charts")]
struct Args {
    /// Directory with e2e-*.json, tcp-mtu-*.csv, scaling-*.csv (and the sockperf logs).
    #[arg(long = "in", default_value = "bench/out")]
    input: PathBuf,
    /// Directory the PNGs are written to.
    #[arg(long, default_value = "bench/charts")]
    out: PathBuf,
    /// TrueType font for the charts' text.
    #[arg(long, default_value = charts::DEFAULT_FONT)]
    font: PathBuf,
    /// Instead of drawing: turn criterion's forward_scaling results under this directory
    /// (e.g. target/criterion) into scaling-criterion-<stamp>.csv in --out-csv.
    #[arg(long)]
    criterion: Option<PathBuf>,
    /// Where --criterion writes its CSV.
    #[arg(long, default_value = "bench/out")]
    out_csv: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(dir) = &args.criterion {
        return match charts::criterion::write_scaling_csv(dir, &args.out_csv) {
            Ok(p) => {
                println!("wrote {}", p.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("charts: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let outcomes = match charts::run(&args.input, &args.out, &args.font) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("charts: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for o in outcomes {
        match o {
            Outcome::Written(p) => println!("wrote {}", p.display()),
            Outcome::Skipped { chart, why } => println!("skipped {chart}: {why}"),
            Outcome::Failed { chart, error } => {
                failed = true;
                eprintln!("failed {chart}: {error}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

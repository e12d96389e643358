//! xsknetd: the xsknet node daemon. Loads the XDP program, runs the pinned workers and
//! serves the control socket until SIGTERM/SIGINT, then detaches everything it
//! attached and removes the host port it created.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xsknet_dataplane::config::Config;
use xsknet_dataplane::control::server;
use xsknet_dataplane::daemon::Daemon;
use xsknet_dataplane::state::StateDir;
use xsknet_dataplane::sys::signal::install_stop_handlers;

#[derive(Parser, Debug)]
#[command(
    name = "xsknetd",
    version,
    about = "xsknet node daemon (AF_XDP dataplane)"
)]
struct Args {
    /// node.yaml; without it the embedded defaults apply.
    #[arg(long, global = true, env = "XSKNET_CONFIG")]
    config: Option<PathBuf>,
    /// Control socket path (overrides `socket` in the config).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// State directory (overrides `stateDir` in the config).
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Validate the configuration and print it as the daemon would use it.
    CheckConfig,
}

fn load_config(args: &Args) -> anyhow::Result<Config> {
    let mut cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(s) = &args.socket {
        cfg.socket = s.clone();
    }
    if let Some(s) = &args.state_dir {
        cfg.state_dir = s.clone();
    }
    Ok(cfg)
}

fn run(args: Args) -> anyhow::Result<()> {
    let cfg = load_config(&args)?;
    if matches!(args.command, Some(Command::CheckConfig)) {
        println!("{}", serde_json::to_string_pretty(&cfg)?);
        return Ok(());
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cfg.log_level.clone()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let state = StateDir::new(&cfg.state_dir);
    state.create()?;
    let _lock = state.lock()?;
    let stop = install_stop_handlers()?;
    let socket = cfg.socket.clone();
    let listener = server::bind(&socket)?;
    tracing::info!(socket = %socket.display(), state = %cfg.state_dir.display(), workers = cfg.workers.len(), "starting");
    let mut daemon = Daemon::start(cfg, state)?;
    let served = server::serve_listener(
        listener,
        &socket,
        &mut daemon,
        stop,
        &server::ServeOptions::default(),
    );
    daemon.shutdown();
    served?;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xsknetd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

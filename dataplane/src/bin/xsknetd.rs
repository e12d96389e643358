//! xsknetd: the xsknet node daemon. Loads the XDP program, runs the pinned workers and
//! serves the control socket until SIGTERM/SIGINT, then detaches everything it
//! attached and removes the host port it created.
//!
//! Besides `run` (the default) and `check-config`, it installs itself as the node's CNI
//! (`install-cni`, `uninstall-cni`, or `run --install-cni` for a DaemonSet: install
//! once the dataplane is ready, uninstall on SIGTERM) and answers a readiness probe
//! (`probe`). The install logic lives in `xsknet_dataplane::install`.

#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use xsknet_dataplane::config::Config;
use xsknet_dataplane::control::client::call_as;
use xsknet_dataplane::control::proto::{Request, Status};
use xsknet_dataplane::control::server;
use xsknet_dataplane::daemon::Daemon;
use xsknet_dataplane::install::{self, InstallOptions};
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
    Run(RunArgs),
    /// Validate the configuration and print it as the daemon would use it.
    CheckConfig,
    /// Copy the CNI plugin into the CNI binary directory, wait until the daemon is
    /// ready, then write the conflist (both atomically).
    InstallCni(InstallArgs),
    /// Remove the conflist, then the plugin binary (missing files are fine).
    UninstallCni(CniPaths),
    /// Exit 0 when the daemon answers `status` with ready=true, 1 otherwise (for a
    /// Kubernetes readinessProbe).
    Probe {
        /// Longest wait for the daemon's answer, in seconds.
        #[arg(long, default_value_t = 2.0)]
        timeout: f64,
    },
}

#[derive(clap::Args, Debug, Default)]
struct RunArgs {
    /// Install the CNI plugin and conflist once the dataplane is ready, and remove them
    /// on SIGTERM/SIGINT (conflist first).
    #[arg(long)]
    install_cni: bool,
    /// With --install-cni: leave the CNI files in place on exit (the node stays Ready
    /// across a daemon restart; pods created meanwhile fail with "try again later").
    #[arg(long, requires = "install_cni")]
    keep_cni_on_exit: bool,
    #[command(flatten)]
    install: InstallArgs,
}

/// Where the CNI files go.
#[derive(clap::Args, Debug)]
struct CniPaths {
    /// Directory of CNI plugin executables.
    #[arg(long, default_value = install::DEFAULT_CNI_BIN_DIR)]
    cni_bin_dir: PathBuf,
    /// Directory of CNI network configurations.
    #[arg(long, default_value = install::DEFAULT_CNI_CONF_DIR)]
    cni_conf_dir: PathBuf,
    /// File name of the conflist.
    #[arg(long, default_value = install::DEFAULT_CONFLIST_NAME)]
    conflist_name: String,
}

impl Default for CniPaths {
    fn default() -> Self {
        CniPaths {
            cni_bin_dir: install::DEFAULT_CNI_BIN_DIR.into(),
            cni_conf_dir: install::DEFAULT_CNI_CONF_DIR.into(),
            conflist_name: install::DEFAULT_CONFLIST_NAME.into(),
        }
    }
}

#[derive(clap::Args, Debug)]
struct InstallArgs {
    #[command(flatten)]
    paths: CniPaths,
    /// The plugin executable to install (default: `xsknet` next to this executable).
    #[arg(long)]
    plugin_binary: Option<PathBuf>,
    /// Seconds to wait for the daemon to report ready before giving up.
    #[arg(long, default_value_t = install::DEFAULT_WAIT_READY.as_secs_f64())]
    wait_ready_timeout: f64,
    /// Pod MTU written into the conflist.
    #[arg(long, default_value_t = install::DEFAULT_MTU)]
    mtu: u32,
    /// Plugins chained after xsknet: reference plugin names (`portmap,bandwidth`,
    /// `none`) or a JSON array of plugin objects.
    #[arg(long, default_value = install::DEFAULT_CHAIN)]
    chain: String,
}

impl Default for InstallArgs {
    fn default() -> Self {
        InstallArgs {
            paths: CniPaths::default(),
            plugin_binary: None,
            wait_ready_timeout: install::DEFAULT_WAIT_READY.as_secs_f64(),
            mtu: install::DEFAULT_MTU,
            chain: install::DEFAULT_CHAIN.into(),
        }
    }
}

fn seconds(flag: &str, secs: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(secs).with_context(|| format!("--{flag} {secs}: not a duration"))
}

fn install_options(
    cfg: &Config,
    paths: &CniPaths,
    a: Option<&InstallArgs>,
) -> anyhow::Result<InstallOptions> {
    let defaults = InstallArgs::default();
    let a = a.unwrap_or(&defaults);
    Ok(InstallOptions {
        cni_bin_dir: paths.cni_bin_dir.clone(),
        cni_conf_dir: paths.cni_conf_dir.clone(),
        plugin_binary: a
            .plugin_binary
            .clone()
            .unwrap_or_else(install::default_plugin_binary),
        conflist_name: paths.conflist_name.clone(),
        socket: cfg.socket.clone(),
        state_dir: cfg.state_dir.clone(),
        mtu: a.mtu,
        chain: install::parse_chain(&a.chain)?,
        wait_ready_timeout: seconds("wait-ready-timeout", a.wait_ready_timeout)?,
    })
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

fn install_cni(cfg: &Config, a: &InstallArgs) -> anyhow::Result<()> {
    let opts = install_options(cfg, &a.paths, Some(a))?;
    let stop = install_stop_handlers()?;
    let binary = install::install_binary(&opts)?;
    println!("installed {}", binary.display());
    println!(
        "waiting up to {:?} for xsknetd at {} to be ready",
        opts.wait_ready_timeout,
        opts.socket.display()
    );
    let status = install::wait_ready(&opts.socket, opts.wait_ready_timeout, stop)?;
    let conflist = install::write_conflist(&opts)?;
    println!(
        "xsknetd {} ready (pod CIDR {}); wrote {}",
        status.version,
        status.pod_cidr,
        conflist.display()
    );
    Ok(())
}

fn uninstall_cni(cfg: &Config, paths: &CniPaths) -> anyhow::Result<()> {
    let opts = install_options(cfg, paths, None)?;
    let done = install::uninstall(&opts)?;
    let said = |existed: bool| {
        if existed {
            "removed"
        } else {
            "already absent:"
        }
    };
    println!("{} {}", said(done.conflist), opts.conflist_path().display());
    println!("{} {}", said(done.binary), opts.binary_path().display());
    // The node leaves the network: its pod egress masquerade goes too. A failure
    // (e.g. no CAP_NET_ADMIN) is reported, not fatal: the CNI files are gone already.
    let table = &cfg.masquerade.table;
    match xsknet_dataplane::daemon::masq::remove(cfg) {
        Ok(()) => println!(
            "removed (or already absent): nftables table ip {table} (pod egress masquerade)"
        ),
        Err(e) => eprintln!("warning: pod egress masquerade table ip {table} not removed: {e}"),
    }
    Ok(())
}

fn probe(cfg: &Config, timeout: f64) -> anyhow::Result<()> {
    let timeout = seconds("timeout", timeout)?;
    let status: Status = call_as(&cfg.socket, &Request::Status, timeout)?;
    anyhow::ensure!(
        status.ready,
        "xsknetd at {} is not ready",
        cfg.socket.display()
    );
    println!("ready");
    Ok(())
}

/// The `run --install-cni` helper thread: installs once the daemon's own socket says
/// ready; on failure stops the daemon so the DaemonSet restarts it visibly.
fn spawn_installer(
    opts: InstallOptions,
    stop: &'static AtomicBool,
    owned: Arc<Mutex<install::Owned>>,
) -> anyhow::Result<std::thread::JoinHandle<Result<(), install::InstallError>>> {
    std::thread::Builder::new()
        .name("install-cni".into())
        .spawn(move || match install::install(&opts, stop, &owned) {
            Ok(done) => {
                tracing::info!(binary = %done.binary.display(), conflist = %done.conflist.display(), "CNI installed; the node can turn Ready");
                Ok(())
            }
            Err(install::InstallError::Interrupted { .. }) => Ok(()),
            Err(e) => {
                tracing::error!("install-cni: {e}; stopping");
                stop.store(true, Ordering::SeqCst);
                Err(e)
            }
        })
        .context("spawn the install-cni thread")
}

fn run(args: Args) -> anyhow::Result<()> {
    let cfg = load_config(&args)?;
    let run_args = match args.command {
        Some(Command::CheckConfig) => {
            println!("{}", serde_json::to_string_pretty(&cfg)?);
            return Ok(());
        }
        Some(Command::InstallCni(a)) => return install_cni(&cfg, &a),
        Some(Command::UninstallCni(p)) => return uninstall_cni(&cfg, &p),
        Some(Command::Probe { timeout }) => return probe(&cfg, timeout),
        Some(Command::Run(r)) => r,
        None => RunArgs::default(),
    };
    let cni = if run_args.install_cni {
        Some(install_options(
            &cfg,
            &run_args.install.paths,
            Some(&run_args.install),
        )?)
    } else {
        None
    };
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
    let (metrics, metrics_server) = start_metrics(&cfg)?;
    tracing::info!(socket = %socket.display(), state = %cfg.state_dir.display(), workers = cfg.workers.len(), "starting");
    let mut daemon = Daemon::start(cfg, state)?;
    if let Some(exporter) = &metrics {
        daemon.attach_metrics(exporter.clone());
    }
    let owned = Arc::new(Mutex::new(install::Owned::default()));
    let installer = match &cni {
        Some(opts) => Some(spawn_installer(opts.clone(), stop, owned.clone())?),
        None => None,
    };
    let served = server::serve_listener(
        listener,
        &socket,
        &mut daemon,
        stop,
        &server::ServeOptions {
            metrics: metrics.as_ref().map(|e| e.control.clone()),
            ..server::ServeOptions::default()
        },
    );
    drop(metrics_server);
    // Make sure the installer has finished (it sees the stop flag) before removing what
    // it may just have written.
    stop.store(true, Ordering::SeqCst);
    let installed = installer.map(|t| {
        t.join().unwrap_or_else(|_| {
            Err(install::InstallError::Interrupted {
                socket: socket.clone(),
            })
        })
    });
    let uninstalled = match &cni {
        // Conflist first, while the dataplane still forwards: the node goes NotReady
        // before anything stops working. Only files this process put in place (and
        // nobody replaced since) are removed.
        Some(opts) if !run_args.keep_cni_on_exit => {
            install::uninstall_owned(opts, &owned).map(|removed| {
                tracing::info!(
                    conflist = removed.conflist,
                    binary = removed.binary,
                    "CNI files removed"
                );
            })
        }
        _ => Ok(()),
    };
    daemon.shutdown();
    served?;
    if let Some(r) = installed {
        r?;
    }
    uninstalled?;
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

/// The metrics endpoint, when `metrics.listen` is set (bound before the daemon starts,
/// so a bad address fails the start).
fn start_metrics(
    cfg: &Config,
) -> anyhow::Result<(
    Option<Arc<xsknet_dataplane::metrics::Exporter>>,
    Option<xsknet_dataplane::metrics::http::MetricsServer>,
)> {
    let Some(addr) = cfg.metrics.listen else {
        return Ok((None, None));
    };
    let exporter = Arc::new(xsknet_dataplane::metrics::Exporter::default());
    let server = xsknet_dataplane::metrics::http::MetricsServer::start(addr, exporter.clone())?;
    Ok((Some(exporter), Some(server)))
}

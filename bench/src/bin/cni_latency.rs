//! cni_latency: how long a pod waits for its network, and what the daemon holds per pod.
//!
//! Calls the real `xsknet` plugin the way a container runtime does (fork/exec with the
//! `CNI_*` environment and the network config on stdin) against a real `xsknetd`, both
//! inside a throwaway node network namespace, for `--pods` pods each in its own netns.
//! ADD returns only once the dataplane forwards for the pod, so the time from exec to
//! the plugin's exit is the ADD→ready latency a kubelet sees. Reports p50/p90/p99/max
//! of ADD and DEL (hdrhistogram, microseconds) and the daemon's VmRSS and VmSize growth
//! per attached pod. Every namespace and the daemon are removed on exit, also on error.
//!
//! ```text
//! sudo target/release/cni_latency --pods 64 [--parallel 4] [--xsknetd PATH] [--plugin PATH]
//! ```
//!
//! Measured on the shared 2-CPU development VM (kernel 6.18), 2026-11-22, release build:
//!
//! | run (commit) | load avg | ADD p50 / p99 | DEL p50 / p99 | RSS per pod |
//! |---|---|---|---|---|
//! | 100 pods, 1 at a time (2ef71d2) | 1.3 | 5.5 / 32.3 ms | 52.0 / 70.1 ms | 2055 KiB |
//! | 100 pods, 4 at a time (2ef71d2) | 1.4 | 63.8 / 82.8 ms | 63.3 / 137.9 ms | 2056 KiB |
//! | 32 pods, 32 at a time (2ef71d2) | 1.6 | 429 / 688 ms | 767 / 832 ms | 2059 KiB |
//! | 100 pods, 1 at a time (7bd809f) | 5.0 | 23.7 / 39.5 ms | 56.0 / 68.0 ms | 2056 KiB |
//! | 100 pods, 4 at a time (7bd809f) | 5.0 | 59.6 / 100.1 ms | 95.5 / 134.8 ms | 2056 KiB |
//!
//! Concurrent calls share two CPUs and the daemon's single control thread, so the
//! latency of one call grows with the calls in flight (where the time goes inside one
//! call was not broken down). The RSS per pod matches its UMEM (1000 × 2 KiB) plus
//! rings, and is returned on DEL.

#![deny(unsafe_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use xsknet_proto::client::call;
use xsknet_proto::wire::Request;
use xsknet_sys::netns::run_in_netns;

#[derive(Parser, Debug)]
#[command(about = "ADD->ready latency of the xsknet CNI plugin and daemon memory per pod")]
struct Args {
    /// Pods to add (then delete).
    #[arg(long, default_value_t = 32)]
    pods: usize,
    /// Concurrent plugin calls (a runtime starting many pods at once).
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// xsknetd executable (default: next to this one).
    #[arg(long)]
    xsknetd: Option<PathBuf>,
    /// xsknet plugin executable (default: next to this one).
    #[arg(long)]
    plugin: Option<PathBuf>,
}

fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().context("run ip")?;
    ensure!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The node namespace, the daemon, the pod namespaces; all removed on drop.
struct Bench {
    tag: String,
    node_ns: String,
    dir: PathBuf,
    daemon: Option<Child>,
    pod_ns: Vec<String>,
}

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            // A child we spawned and have not reaped: its pid is still its own.
            let _ = xsknet_sys::process::terminate(child.id());
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for ns in self.pod_ns.iter().chain(std::iter::once(&self.node_ns)) {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn vm_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

fn call_plugin(
    plugin: &Path,
    command: &str,
    container: &str,
    netns: &str,
    pod: &str,
    conf: &str,
) -> anyhow::Result<Duration> {
    let cni_path = plugin
        .parent()
        .unwrap_or(Path::new("/"))
        .display()
        .to_string()
        + ":/usr/lib/cni";
    let t = Instant::now();
    let mut child = Command::new(plugin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", cni_path)
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={pod}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("exec {}", plugin.display()))?;
    child
        .stdin
        .take()
        .context("plugin stdin")?
        .write_all(conf.as_bytes())?;
    let out = child.wait_with_output()?;
    let took = t.elapsed();
    if !out.status.success() {
        bail!(
            "{command} {container}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

fn report(name: &str, h: &Histogram<u64>) {
    let ms = |v: u64| v as f64 / 1000.0;
    println!(
        "{name:<4} n={:<4} p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        h.len(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    );
}

/// Runs `op(i)` for `0..n` on `parallel` threads (each created in the node netns by
/// the caller's closure), recording each duration.
fn run_all(
    n: usize,
    parallel: usize,
    node_ns: &Path,
    op: &(dyn Fn(usize) -> anyhow::Result<Duration> + Sync),
) -> anyhow::Result<Histogram<u64>> {
    let hist = Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?);
    let next = AtomicUsize::new(0);
    let first_error = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1) {
            s.spawn(|| {
                let r = run_in_netns(node_ns, || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok(());
                    }
                    let took = op(i)?;
                    let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
                    hist.lock().unwrap().record(us.min(60_000_000))?;
                });
                let r = match r {
                    Ok(inner) => inner,
                    Err(e) => Err(anyhow::Error::from(e)),
                };
                if let Err(e) = r {
                    first_error.lock().unwrap().get_or_insert(e);
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap() {
        return Err(e);
    }
    Ok(hist.into_inner().unwrap())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(xsknet_sys::process::is_root(), "cni_latency needs root");
    let xsknetd = args.xsknetd.clone().unwrap_or_else(|| sibling("xsknetd"));
    let plugin = args.plugin.clone().unwrap_or_else(|| sibling("xsknet"));
    for b in [&xsknetd, &plugin] {
        ensure!(
            b.exists(),
            "{} missing (cargo build --release --bins)",
            b.display()
        );
    }
    ensure!(args.pods <= 250, "--pods: at most 250 (one /24)");

    let tag = format!("xlat{}", std::process::id() % 100_000);
    let dir = std::env::temp_dir().join(format!("xsknet-{tag}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let mut bench = Bench {
        node_ns: tag.clone(),
        tag,
        dir: dir.clone(),
        daemon: None,
        pod_ns: Vec::new(),
    };
    ip(&["netns", "add", &bench.node_ns])?;
    ip(&["-n", &bench.node_ns, "link", "set", "lo", "up"])?;
    let node_ns_path = PathBuf::from(format!("/run/netns/{}", bench.node_ns));

    let socket = dir.join("xsknetd.sock");
    let state = dir.join("state");
    let config = dir.join("node.yaml");
    fs::write(
        &config,
        format!(
            "socket: {}\nstateDir: {}\npodCidr: 10.244.0.0/24\numem:\n  maxPortsPerWorker: 256\nlogLevel: warn\n",
            socket.display(),
            state.display()
        ),
    )?;
    let log = fs::File::create(dir.join("xsknetd.log"))?;
    let child = run_in_netns(&node_ns_path, || {
        Command::new(&xsknetd)
            .arg("--config")
            .arg(&config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
    })??;
    let pid = child.id();
    bench.daemon = Some(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(v) = call(&socket, &Request::Status, Duration::from_secs(2)) {
            if v["ready"] == true {
                break;
            }
        }
        ensure!(
            Instant::now() < deadline,
            "xsknetd not ready; see {}",
            dir.join("xsknetd.log").display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (rss0, vsz0) = (vm_kib(pid, "VmRSS:")?, vm_kib(pid, "VmSize:")?);

    for i in 0..args.pods {
        let ns = format!("{}p{i}", bench.tag);
        ip(&["netns", "add", &ns])?;
        bench.pod_ns.push(ns);
    }
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"xsknet","type":"xsknet","socket":"{}","stateDir":"{}","mtu":1500}}"#,
        socket.display(),
        state.display()
    );
    let pod = |i: usize| {
        (
            format!("{}-{i}", bench.tag),
            format!("/run/netns/{}", bench.pod_ns[i]),
            format!("p{i}"),
        )
    };

    let add = run_all(args.pods, args.parallel, &node_ns_path, &|i| {
        let (c, ns, name) = pod(i);
        call_plugin(&plugin, "ADD", &c, &ns, &name, &conf)
    })?;
    let endpoints = call(&socket, &Request::EndpointList, Duration::from_secs(5))?;
    let attached = endpoints.as_array().map_or(0, Vec::len);
    ensure!(
        attached == args.pods,
        "{attached} endpoints after {} ADDs",
        args.pods
    );
    std::thread::sleep(Duration::from_millis(300));
    let (rss1, vsz1) = (vm_kib(pid, "VmRSS:")?, vm_kib(pid, "VmSize:")?);

    let del = run_all(args.pods, args.parallel, &node_ns_path, &|i| {
        let (c, ns, name) = pod(i);
        call_plugin(&plugin, "DEL", &c, &ns, &name, &conf)
    })?;
    let left = call(&socket, &Request::EndpointList, Duration::from_secs(5))?;
    ensure!(
        left.as_array().is_some_and(Vec::is_empty),
        "endpoints left after DEL: {left}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let rss2 = vm_kib(pid, "VmRSS:")?;

    println!(
        "cni_latency: {} pods, {} at a time, plugin {}, on {} CPUs",
        args.pods,
        args.parallel.max(1),
        plugin.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    report("ADD", &add);
    report("DEL", &del);
    let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / args.pods as f64;
    println!(
        "daemon VmRSS {rss0} KiB idle -> {rss1} KiB with {} pods ({:.0} KiB/pod) -> {rss2} KiB after DEL",
        args.pods,
        per(rss0, rss1)
    );
    println!(
        "daemon VmSize {vsz0} KiB -> {vsz1} KiB ({:.0} KiB/pod reserved: UMEM + rings)",
        per(vsz0, vsz1)
    );
    drop(bench);
    Ok(())
}

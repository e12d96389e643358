//! Privileged smoke test of `pktgen`: a veth pair between two namespaces the test makes,
//! `pktgen send` in one (AF_XDP mode, then sendmmsg mode, then auto with a frame above
//! one UMEM frame), `pktgen sink` in the other; the sink must count exactly the packets
//! the sender reports, with no sequence gaps. Paced (no speed is asserted), so the sink
//! keeps up even on a loaded machine. Namespaces go with their RAII guards and the sink
//! process is killed by pid, also when an assertion fails.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::{prefix, privileged, sh, wait_until, workspace_bin, Netns};

/// The sink child, killed by pid on drop unless its output was taken.
struct Proc(Option<Child>);

impl Proc {
    /// Wait (bounded by the caller's poll) and take the child's output.
    fn output(&mut self) -> std::process::Output {
        let child = self.0.take().expect("sink already collected");
        child.wait_with_output().expect("sink output")
    }

    fn exited(&mut self) -> bool {
        self.0
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Pair {
    a: Netns,
    b: Netns,
    mac_b: String,
}

const IP_A: &str = "10.99.0.1";
const IP_B: &str = "10.99.0.2";

fn pair(mtu: u32) -> Pair {
    let p = prefix("pg");
    let a = Netns::new(&format!("{p}-a"));
    let b = Netns::new(&format!("{p}-b"));
    sh(&[
        "ip", "-n", &a.name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
        "netns", &b.name,
    ]);
    for (ns, ip) in [(&a, IP_A), (&b, IP_B)] {
        sh(&[
            "ip",
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ]);
        sh(&[
            "ip",
            "-n",
            &ns.name,
            "link",
            "set",
            "eth0",
            "mtu",
            &mtu.to_string(),
            "up",
        ]);
    }
    let mac_b = String::from_utf8(b.exec(&["cat", "/sys/class/net/eth0/address"]).stdout)
        .unwrap()
        .trim()
        .to_string();
    Pair { a, b, mac_b }
}

fn json(out: &[u8]) -> serde_json::Value {
    let s = String::from_utf8_lossy(out);
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Start a sink in B on `port` for `count` datagrams, send `count` from A with `args`,
/// return (sender JSON, sink JSON).
fn run(p: &Pair, port: u16, count: u64, args: &[&str]) -> (serde_json::Value, serde_json::Value) {
    let bin = workspace_bin("pktgen", "XSKNET_PKTGEN");
    let bind = format!("{IP_B}:{port}");
    let sink = Command::new("ip")
        .args(["netns", "exec", &p.b.name])
        .arg(&bin)
        .args([
            "sink",
            "--bind",
            &bind,
            "--count",
            &count.to_string(),
            "--duration",
            "60",
            "--idle",
            "5",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sink");
    let mut sink = Proc(Some(sink));
    wait_until("sink bound", Duration::from_secs(20), || {
        let o = p.b.exec(&["ss", "-ulnH", &format!("sport = :{port}")]);
        !o.stdout.is_empty()
    });
    let count_s = count.to_string();
    let port_s = port.to_string();
    let mut send = vec![
        "send",
        "--dev",
        "eth0",
        "--dst-mac",
        &p.mac_b,
        "--src-ip",
        IP_A,
        "--dst-ip",
        IP_B,
        "--dst-port",
        &port_s,
        "--count",
        &count_s,
        "--flows",
        "3",
        "--duration",
        "60",
    ];
    send.extend_from_slice(args);
    let bin_s = bin.to_string_lossy().to_string();
    let mut cmd = vec![bin_s.as_str()];
    cmd.extend_from_slice(&send);
    let out = p.a.exec(&cmd);
    assert!(
        out.status.success(),
        "pktgen send failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tx = json(&out.stdout);
    // the sink exits by itself once it has `count` datagrams (or after --idle 5 s)
    wait_until("sink exit", Duration::from_secs(60), || sink.exited());
    let o = sink.output();
    assert!(
        o.status.success(),
        "sink failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (tx, json(&o.stdout))
}

fn check(tx: &serde_json::Value, rx: &serde_json::Value, count: u64, mode: &str, size: u64) {
    assert_eq!(tx["mode"], mode, "sender: {tx}");
    assert_eq!(tx["offered_packets"], count, "sender: {tx}");
    assert_eq!(tx["offered_bytes"], count * size, "sender: {tx}");
    assert_eq!(tx["tx_errors"], 0, "sender: {tx}");
    assert_eq!(rx["datagrams"], count, "sink: {rx} (sender {tx})");
    assert_eq!(
        rx["bytes"],
        count * (size - 42),
        "sink counts UDP payload bytes: {rx}"
    );
    assert_eq!(rx["gaps"], 0, "sink: {rx}");
    assert_eq!(rx["late"], 0, "sink: {rx}");
    assert_eq!(rx["unstamped"], 0, "sink: {rx}");
    assert_eq!(rx["streams"], 1, "sink: {rx}");
}

#[test]
fn pktgen_xdp_and_mmsg_into_sink() {
    if !privileged() {
        return;
    }
    let p = pair(1500);
    assert!(
        p.a.ping(IP_B.parse::<Ipv4Addr>().unwrap(), 1),
        "veth pair up"
    );
    let n = 3000;
    let (tx, rx) = run(
        &p,
        9001,
        n,
        &["--mode", "xdp", "--pps", "20000", "--size", "60"],
    );
    check(&tx, &rx, n, "xdp", 60);
    let (tx, rx) = run(
        &p,
        9002,
        n,
        &["--mode", "mmsg", "--pps", "20000", "--size", "1000"],
    );
    check(&tx, &rx, n, "mmsg", 1000);
    // a larger AF_XDP frame (4 KiB UMEM frames)
    let (tx, rx) = run(
        &p,
        9003,
        500,
        &["--mode", "xdp", "--pps", "5000", "--size", "1514"],
    );
    check(&tx, &rx, 500, "xdp", 1514);
}

#[test]
fn pktgen_jumbo_falls_back_to_mmsg() {
    if !privileged() {
        return;
    }
    let p = pair(9000);
    let (tx, rx) = run(
        &p,
        9004,
        300,
        &["--mode", "auto", "--pps", "5000", "--size", "9014"],
    );
    check(&tx, &rx, 300, "mmsg", 9014);
    assert!(
        tx["fallback"].as_str().unwrap_or("").contains("UMEM frame"),
        "the fallback says why: {tx}"
    );
}

#[test]
fn pktgen_rejects_bad_arguments() {
    let bin = workspace_bin("pktgen", "XSKNET_PKTGEN");
    let out = Command::new(&bin)
        .args([
            "send",
            "--dst-mac",
            "02:00:00:00:00:01",
            "--src-ip",
            "10.0.0.1",
            "--dst-ip",
            "10.0.0.2",
            "--count",
            "1",
            "--pps",
            "0",
        ])
        .output()
        .expect("run pktgen");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--pps must be 1..=100000000"), "{err}");
    assert!(out.stdout.is_empty());
}

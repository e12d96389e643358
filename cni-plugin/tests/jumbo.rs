//! Node-local jumbo MTU (issue 11) through the real `xsknet` plugin and a real
//! `xsknetd` with `localMtu`: the pod interface gets the local MTU, this node's pod
//! CIDR is routed at it while the default route (other nodes, Services, the world)
//! keeps the pod MTU (read back with `ip route`), and two pods exchange a TCP stream
//! byte-identical both ways, unfragmented packets near the local MTU, and ICMP/UDP
//! datagrams larger than a UMEM frame (IP fragments) both ways. A second run with a
//! local MTU above one frame (multi-buffer AF_XDP chains) sends unfragmented (DF)
//! ICMP and UDP datagrams of several frames each both ways, and a TCP stream whose
//! segments span frames. Needs root; without it prints SKIP (fails with
//! XSKNET_REQUIRE_PRIVILEGED).

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use common::*;

const LOCAL_MTU: u32 = 3500;
const FRAME: usize = 4096;

fn routes(pod: &Pod, args: &[&str]) -> String {
    let mut v = vec!["ip", "-n", &pod.ns.name, "route"];
    v.extend_from_slice(args);
    String::from_utf8_lossy(&sh(&v).stdout).into_owned()
}

/// One UDP datagram of `len` bytes from `from` to `dst` in `to`; true when it arrives
/// whole and byte-identical (retried a few times: UDP may lose the first one while ARP
/// or the route cache settle).
fn udp_ok(from: &Pod, to: &Pod, dst: Ipv4Addr, port: u16, len: usize) -> bool {
    let rx: UdpSocket = to.ns.run(|| UdpSocket::bind((dst, port)).expect("bind"));
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let tx: UdpSocket = from
        .ns
        .run(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap());
    let data: Vec<u8> = (0..len).map(|i| (i * 13 + i / 241) as u8).collect();
    let mut buf = vec![0u8; len + 1];
    for _ in 0..5 {
        tx.send_to(&data, (dst, port)).expect("send");
        if let Ok(n) = rx.recv(&mut buf) {
            return buf[..n] == data[..];
        }
    }
    false
}

fn ping(from: &Pod, dst: Ipv4Addr, size: usize, df: bool) -> bool {
    let (s, d) = (size.to_string(), dst.to_string());
    let m = if df { "do" } else { "dont" };
    from.ns
        .exec(&[
            "ping", "-c", "2", "-i", "0.2", "-W", "2", "-q", "-M", m, "-s", &s, &d,
        ])
        .status
        .success()
}

#[test]
fn local_mtu_routes_and_large_packets_between_local_pods() {
    if !privileged() {
        return;
    }
    let t = prefix("cj");
    let node = Node::start_with(
        &t,
        &format!(
            "localMtu: {LOCAL_MTU}\numem:\n  frameSize: {FRAME}\n  ringSize: 256\n  framesPerPort: 496\n"
        ),
    );
    single_buffer_checks(&node, &t);
}

#[test]
fn default_local_mtu_is_multi_buffer_and_carries_unfragmented_datagrams_of_several_frames() {
    if !privileged() {
        return;
    }
    if !kernel_has_xdp_sg() {
        eprintln!("SKIP: no multi-buffer AF_XDP (XDP_USE_SG) before Linux 6.6");
        return;
    }
    // The default node-local MTU (no localMtu in the config): multi-buffer chains.
    const MTU: usize = 65535;
    let t = prefix("cm");
    let node = Node::start_with(&t, "");
    let a = Pod::new(&t, "a");
    let b = Pod::new(&t, "b");
    let conf = node.conf("1.1.0");
    let (rc, ra) = node.cni("ADD", &a, &conf);
    assert_eq!(rc, 0, "ADD a: {ra}\n{}", node.log_text());
    let (rc, rb) = node.cni("ADD", &b, &conf);
    assert_eq!(rc, 0, "ADD b: {rb}");
    let (ipa, ipb) = (result_ip(&ra), result_ip(&rb));
    assert_eq!(ra["interfaces"][1]["mtu"], MTU);
    let default = routes(&a, &["show", "default"]);
    assert!(default.contains("mtu 1500"), "{default}");
    let to_b = routes(&a, &["get", &ipb.to_string()]);
    assert!(!to_b.contains("mtu"), "{to_b}");
    // DF: each packet travels whole, as a chain of 18 frames (4 KiB frames hold 3840
    // bytes of packet each; 65535 + 14 bytes of frame); 9000 bytes: 3 frames.
    let big = MTU - 28;
    assert!(
        ping(&a, ipb, big, true),
        "a → b ping -M do -s {big}\n{}",
        node.log_text()
    );
    assert!(ping(&b, ipa, big, true), "b → a ping -M do -s {big}");
    assert!(
        udp_ok(&a, &b, ipb, 7001, big),
        "UDP a → b, {big} bytes, one packet"
    );
    assert!(
        udp_ok(&b, &a, ipa, 7002, big),
        "UDP b → a, {big} bytes, one packet"
    );
    assert!(udp_ok(&a, &b, ipb, 7003, 5000), "UDP a → b, 2 frames");
    assert!(ping(&b, ipa, 9000, true), "b → a ping -M do -s 9000");
    assert!(tcp_ok(&a, &b, ipb, 5201, 16 << 20), "TCP a → b");
    assert!(tcp_ok(&b, &a, ipa, 5202, 16 << 20), "TCP b → a");
    // The node (host port at the local MTU too) and a pod, whole datagrams.
    assert!(
        ping(&a, testkit_node_ip(), big, true),
        "a → node ping -M do -s {big}"
    );
    for (p, r) in [(&a, &ra), (&b, &rb)] {
        let mut c = conf.clone();
        c["prevResult"] = r.clone();
        let (rc, v) = node.cni("DEL", p, &c);
        assert_eq!(rc, 0, "DEL: {v}");
    }
    node.assert_empty();
}

/// The node's address on the host port: the first of the pod CIDR.
fn testkit_node_ip() -> Ipv4Addr {
    let cidr: &str = testkit::POD_CIDR;
    let base: Ipv4Addr = cidr.split('/').next().unwrap().parse().unwrap();
    Ipv4Addr::from(u32::from(base) + 1)
}

fn single_buffer_checks(node: &Node, t: &str) {
    let a = Pod::new(t, "a");
    let b = Pod::new(t, "b");
    let conf = node.conf("1.1.0");
    let (rc, ra) = node.cni("ADD", &a, &conf);
    assert_eq!(rc, 0, "ADD a: {ra}\n{}", node.log_text());
    let (rc, rb) = node.cni("ADD", &b, &conf);
    assert_eq!(rc, 0, "ADD b: {rb}");
    let (ipa, ipb) = (result_ip(&ra), result_ip(&rb));
    assert_eq!(ra["interfaces"][1]["mtu"], LOCAL_MTU);
    assert!(
        ra["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == testkit::POD_CIDR),
        "{ra}"
    );

    // Routes as the kernel has them: the default capped at the pod MTU, this node's
    // pod CIDR at the interface's; what the kernel picks for a pod of this node and
    // for a Service / another node's pod.
    let default = routes(&a, &["show", "default"]);
    assert!(
        default.contains("via 169.254.1.1") && default.contains("mtu 1500"),
        "{default}"
    );
    let local = routes(&a, &["show", testkit::POD_CIDR]);
    assert!(local.contains("via 169.254.1.1"), "{local}");
    assert!(
        !local.contains("mtu"),
        "the local route takes the interface MTU: {local}"
    );
    let link = String::from_utf8_lossy(&a.ns.exec(&["ip", "-o", "link", "show", "eth0"]).stdout)
        .into_owned();
    assert!(link.contains(&format!("mtu {LOCAL_MTU} ")), "{link}");
    let to_b = routes(&a, &["get", &ipb.to_string()]);
    assert!(!to_b.contains("mtu"), "{to_b}");
    for far in ["10.96.0.10", "10.245.1.7", "192.0.2.1"] {
        let r = routes(&a, &["get", far]);
        assert!(r.contains("mtu 1500"), "{far}: {r}");
    }

    // One packet near the local MTU, unfragmented (DF) — above 1500, one frame each.
    let big = LOCAL_MTU as usize - 28;
    assert!(ping(&a, ipb, big, true), "a → b ping -s {big} DF");
    assert!(ping(&b, ipa, big, true), "b → a ping -s {big} DF");
    // Larger than a UMEM frame: the sender's IP layer fragments at the local MTU.
    assert!(
        ping(&a, ipb, 2 * FRAME, false),
        "a → b ping -s {}",
        2 * FRAME
    );
    assert!(
        ping(&b, ipa, 2 * FRAME, false),
        "b → a ping -s {}",
        2 * FRAME
    );
    assert!(udp_ok(&a, &b, ipb, 7001, 3 * FRAME), "UDP a → b");
    assert!(udp_ok(&b, &a, ipa, 7002, 3 * FRAME), "UDP b → a");
    assert!(udp_ok(&a, &b, ipb, 7003, big - 8), "UDP a → b, one frame");
    // A stream, both ways.
    assert!(tcp_ok(&a, &b, ipb, 5201, 16 << 20), "TCP a → b");
    assert!(tcp_ok(&b, &a, ipa, 5202, 16 << 20), "TCP b → a");

    // CHECK accepts the extra route; DEL leaves nothing.
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = ra.clone();
    let (rc, v) = node.cni("CHECK", &a, &with_prev);
    assert_eq!(rc, 0, "CHECK: {v}");
    for (p, r) in [(&a, &ra), (&b, &rb)] {
        let mut c = conf.clone();
        c["prevResult"] = r.clone();
        let (rc, v) = node.cni("DEL", p, &c);
        assert_eq!(rc, 0, "DEL: {v}");
    }
    node.assert_empty();
}

//! Privileged end-to-end tests of the node dataplane: real network namespaces, real
//! veths, the real XDP program and AF_XDP sockets, the real `xsknetd` and `xsknetctl`.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use common::*;

const TWO_WORKERS: &str = "workers: [{core: 0}, {core: 1}]\n";

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 0, last)
}

/// Node namespace + daemon + `n` attached pods.
fn node_with_pods(tag: &str, n: u8) -> (Netns, Daemon, Vec<Pod>) {
    let p = prefix(tag);
    let node = Netns::new(&format!("{p}n"));
    let daemon = Daemon::start(&node, &p, TWO_WORKERS);
    let pods: Vec<Pod> = (0..n)
        .map(|i| {
            let pod = Pod::new(&node, &format!("{p}p{i}"), &format!("{p}h{i}"), ip(10 + i));
            daemon.attach(&pod);
            pod
        })
        .collect();
    (node, daemon, pods)
}

fn ipv4_frame(dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    let udp_len = (8 + payload.len()) as u16;
    f.extend_from_slice(&[0x30, 0x39, 0x30, 0x39]);
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn drops(port: &serde_json::Value, reason: &str) -> u64 {
    port["drops"][reason].as_u64().unwrap_or(0)
}

#[test]
fn three_pods_node_and_host_port_reach_each_other() {
    if !privileged() {
        return;
    }
    let (node, daemon, pods) = node_with_pods("xa", 3);
    for a in &pods {
        for b in &pods {
            if a.ip != b.ip {
                assert!(
                    a.ping(b.ip, 2),
                    "{} cannot ping {}\n{}",
                    a.ip,
                    b.ip,
                    daemon.log_text()
                );
            }
        }
    }
    for p in &pods {
        let d = p.ip.to_string();
        let out = node.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "-q", &d]);
        assert!(
            out.status.success(),
            "node cannot ping pod {}: {}",
            p.ip,
            String::from_utf8_lossy(&out.stdout)
        );
        // And a pod reaches an address of the node (the host port's address).
        assert!(
            p.ping(ip(1), 2),
            "pod {} cannot reach the node at 10.244.0.1",
            p.ip
        );
    }
    let s = daemon.stats();
    let workers: Vec<u64> = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["ports"].as_u64().unwrap())
        .collect();
    assert_eq!(workers.len(), 2);
    assert!(
        workers.iter().all(|n| *n >= 1),
        "ports spread over both workers: {s}"
    );
    let handoffs: u64 = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["handoff_out"].as_u64().unwrap())
        .sum();
    assert!(
        handoffs > 0,
        "cross-worker traffic went through the handoff rings: {s}"
    );
}

#[test]
fn tcp_and_udp_between_pods_deliver_every_byte_and_counters_account() {
    if !privileged() {
        return;
    }
    let (_node, daemon, pods) = node_with_pods("xb", 2);
    let (a, b) = (&pods[0], &pods[1]);
    assert!(a.ping(b.ip, 1));

    let (sent, got, same) = tcp_transfer(a, b, 5001, 8 << 20);
    assert_eq!(sent, got, "TCP bytes received equal bytes sent");
    assert!(same, "TCP content intact");

    assert_eq!(
        udp_echo(a, b, 5002, 300),
        300,
        "every UDP datagram echoed intact"
    );

    // One-way UDP: the counters account for exactly what was sent (plus a little
    // unrelated traffic such as ARP).
    let before_a = daemon.port_stats(&a.host_if);
    let before_b = daemon.port_stats(&b.host_if);
    let rx: UdpSocket = b.ns.run(|| UdpSocket::bind((b.ip, 5003)).unwrap());
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let tx: UdpSocket = a.ns.run(|| UdpSocket::bind((a.ip, 0)).unwrap());
    const N: u64 = 500;
    let mut received = 0u64;
    let mut buf = [0u8; 256];
    for i in 0..N {
        tx.send_to(&[i as u8; 100], (b.ip, 5003)).unwrap();
        if i % 50 == 49 {
            while rx.recv(&mut buf).is_ok() {
                received += 1;
                if received.is_multiple_of(50) {
                    break;
                }
            }
        }
    }
    while rx.recv(&mut buf).is_ok() {
        received += 1;
    }
    assert_eq!(received, N, "all datagrams delivered");
    let after_a = daemon.port_stats(&a.host_if);
    let after_b = daemon.port_stats(&b.host_if);
    let d = |x: &serde_json::Value, y: &serde_json::Value, k: &str| {
        y[k].as_u64().unwrap() - x[k].as_u64().unwrap()
    };
    let rx_a = d(&before_a, &after_a, "rx_packets");
    let tx_b = d(&before_b, &after_b, "tx_packets");
    assert!(
        (N..N + 20).contains(&rx_a),
        "pod A port rx counted {rx_a} for {N} sent"
    );
    assert!(
        (N..N + 20).contains(&tx_b),
        "pod B port tx counted {tx_b} for {N} sent"
    );
    assert!(
        d(&before_a, &after_a, "rx_bytes") >= N * 142,
        "rx bytes cover the frames"
    );
}

#[test]
fn malformed_frames_are_counted_drops_and_forwarding_continues() {
    if !privileged() {
        return;
    }
    let (_node, daemon, pods) = node_with_pods("xc", 2);
    let (a, b) = (&pods[0], &pods[1]);
    assert!(a.ping(b.ip, 1));
    let gw = [0xff; 6];
    let good = ipv4_frame(gw, a.ip, b.ip, &[0u8; 32]);
    let mut frames = Vec::new();
    // truncated: IPv4 ethertype, 10 bytes of header
    frames.push(good[..24].to_vec());
    // bad IHL
    let mut f = good.clone();
    f[14] = 0x43;
    frames.push(f);
    // bad header checksum
    let mut f = good.clone();
    f[24] ^= 0xff;
    frames.push(f);
    // total length beyond the frame
    let mut f = good.clone();
    f[16..18].copy_from_slice(&2000u16.to_be_bytes());
    let s = checksum(&{
        let mut h = f[14..34].to_vec();
        h[10] = 0;
        h[11] = 0;
        h
    });
    f[24..26].copy_from_slice(&s.to_be_bytes());
    frames.push(f);
    // version 6 inside an IPv4 ethertype
    let mut f = good.clone();
    f[14] = 0x65;
    frames.push(f);
    // IPv6 ethertype
    let mut f = good.clone();
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    frames.push(f);
    // spoofed source address
    frames.push(ipv4_frame(gw, Ipv4Addr::new(10, 9, 9, 9), b.ip, &[0u8; 32]));
    let before = daemon.port_stats(&a.host_if);
    for _ in 0..3 {
        inject_frames(&a.ns, "eth0", &frames);
    }
    let reasons = [
        "truncated",
        "ipv4_bad_header_length",
        "ipv4_bad_checksum",
        "ipv4_bad_total_length",
        "ipv4_bad_version",
        "unsupported_ethertype",
        "spoofed_source",
    ];
    wait_until("drops counted", Duration::from_secs(5), || {
        let now = daemon.port_stats(&a.host_if);
        reasons
            .iter()
            .all(|r| drops(&now, r) >= drops(&before, r) + 3)
    });
    assert!(
        a.ping(b.ip, 2),
        "forwarding continues after malformed input"
    );
    assert!(
        tcp_transfer(a, b, 5004, 1 << 20).2,
        "TCP intact after malformed input"
    );
}

#[test]
fn stop_leaves_nothing_behind_and_restart_reattaches_pods() {
    if !privileged() {
        return;
    }
    let (node, mut daemon, pods) = node_with_pods("xd", 2);
    let (a, b) = (&pods[0], &pods[1]);
    assert!(a.ping(b.ip, 1));
    let xdp_on = |ifname: &str| {
        let out = sh(&["ip", "-n", &node.name, "-d", "link", "show", ifname]);
        String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
    };
    assert!(xdp_on(&a.host_if), "XDP attached while running");
    assert!(
        daemon.stop(),
        "daemon exits 0 on SIGTERM: {}",
        daemon.log_text()
    );
    assert!(
        !xdp_on(&a.host_if) && !xdp_on(&b.host_if),
        "no XDP program left on pod veths"
    );
    let links =
        String::from_utf8_lossy(&sh(&["ip", "-n", &node.name, "-br", "link"]).stdout).to_string();
    assert!(!links.contains("xsknet0"), "host port removed: {links}");
    assert!(
        links.contains(&a.host_if),
        "pod veths belong to their owner and stay"
    );
    assert!(!daemon.socket.exists(), "control socket removed");
    assert!(!a.ping(b.ip, 1), "no forwarding without the daemon");

    daemon.spawn();
    let list: serde_json::Value =
        serde_json::from_str(&daemon.ctl_ok(&["endpoint", "list", "--json"])).unwrap();
    assert_eq!(
        list.as_array().unwrap().len(),
        2,
        "endpoints restored from state: {list}"
    );
    assert!(
        a.ping(b.ip, 2),
        "traffic flows again after restart\n{}",
        daemon.log_text()
    );
    assert!(tcp_transfer(a, b, 5005, 1 << 20).2);
}

#[test]
fn endpoint_errors_are_clear_and_del_detaches() {
    if !privileged() {
        return;
    }
    let (node, daemon, pods) = node_with_pods("xe", 2);
    let (a, b) = (&pods[0], &pods[1]);
    // Unknown interface, duplicate address, bad MAC: errors, daemon keeps serving.
    let out = daemon.ctl(&[
        "endpoint",
        "add",
        "--ifname",
        "nosuchif0",
        "--ip",
        "10.244.0.99",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuchif0"));
    let c = Pod::new(
        &node,
        &format!("{}x", node.name),
        &format!("{}x", &a.host_if[..a.host_if.len() - 1]),
        ip(12),
    );
    let ipa = a.ip.to_string();
    let out = daemon.ctl(&["endpoint", "add", "--ifname", &c.host_if, "--ip", &ipa]);
    assert!(!out.status.success(), "duplicate address refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&ipa));
    // Without --mac the daemon reads the pod MAC from the veth peer over netlink.
    let ipc = c.ip.to_string();
    daemon.ctl_ok(&["endpoint", "add", "--ifname", &c.host_if, "--ip", &ipc]);
    assert!(c.ping(b.ip, 1), "pod attached without --mac works");
    daemon.ctl_ok(&["endpoint", "del", "--ip", &ipc]);
    assert!(!c.ping(b.ip, 1), "detached pod no longer forwarded");
    let out = sh(&["ip", "-n", &node.name, "-d", "link", "show", &c.host_if]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("prog/xdp"),
        "XDP detached on del"
    );
    assert!(a.ping(b.ip, 1), "others unaffected");
}

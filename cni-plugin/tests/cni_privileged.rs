//! The real `xsknet` binary over the real CNI protocol against a real `xsknetd`, each
//! test on its own throwaway node namespace: pods reach each other, CHECK notices a
//! removed address, DEL is idempotent and survives a vanished netns, bad input leaves
//! nothing behind, chaining with the reference portmap and bandwidth plugins and
//! delegation to host-local work, GC releases stale attachments, 32 parallel ADDs and
//! DELs stay consistent, and a DEL made while the daemon is down is finished by the
//! daemon when it is back, also for a container ID of the longest accepted length. Needs root and Debian's containernetworking-plugins
//! (/usr/lib/cni); without root it prints SKIP (fails with XSKNET_REQUIRE_PRIVILEGED).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

#[test]
fn two_pods_ping_tcp_check_del() {
    if !privileged() {
        return;
    }
    let t = prefix("ca");
    let node = Node::start(&t);
    let a = Pod::new(&t, "a");
    let b = Pod::new(&t, "b");
    let conf = node.conf("1.1.0");
    let t0 = Instant::now();
    let (rc, ra) = node.cni("ADD", &a, &conf);
    let add_ms = t0.elapsed().as_secs_f64() * 1e3;
    assert_eq!(rc, 0, "ADD a: {ra}\n{}", node.log_text());
    let (rc, rb) = node.cni("ADD", &b, &conf);
    assert_eq!(rc, 0, "ADD b: {rb}");
    eprintln!("ADD a took {add_ms:.1} ms (incl. ip netns exec)");
    let (ipa, ipb) = (result_ip(&ra), result_ip(&rb));
    assert_ne!(ipa, ipb);
    // The node-local MTU by default (localMtu unset: 65535, multi-buffer chains; on a
    // kernel before 6.6 the largest a 4 KiB frame holds).
    let multi = kernel_has_xdp_sg();
    assert_eq!(ra["interfaces"][1]["mtu"], if multi { 65535 } else { 3506 });
    // The result is only printed once the dataplane forwards: no settling time.
    assert!(a.ns.ping(ipb, 2), "a → b ping");
    assert!(b.ns.ping(ipa, 2), "b → a ping");
    assert!(a.ns.ping("169.254.1.1".parse().unwrap(), 1), "gateway ping");
    assert!(tcp_ok(&a, &b, ipb, 5201, 2 << 20), "TCP a → b");
    let eps = node.endpoints();
    let ep = eps.iter().find(|e| e["ip"] == ipa.to_string()).unwrap();
    assert_eq!(ep["name"], "a");
    assert_eq!(ep["namespace"], "default");
    assert_eq!(ep["cni"]["container_id"], a.container_id);

    // CHECK passes, then fails clearly once the pod's address is gone.
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = ra.clone();
    let (rc, v) = node.cni("CHECK", &a, &with_prev);
    assert_eq!(rc, 0, "CHECK: {v}");
    sh(&[
        "ip",
        "-n",
        &a.ns.name,
        "addr",
        "del",
        &format!("{ipa}/32"),
        "dev",
        "eth0",
    ]);
    let (rc, v) = node.cni("CHECK", &a, &with_prev);
    assert_eq!((rc, v["code"].as_u64()), (1, Some(101)), "{v}");
    let msg = v["msg"].as_str().unwrap();
    assert!(
        msg.contains(&format!("pod address {ipa}/32 is missing from eth0")),
        "{msg}"
    );

    // DEL twice; DEL with the netns already gone.
    for _ in 0..2 {
        let (rc, v) = node.cni("DEL", &a, &with_prev);
        assert_eq!(rc, 0, "DEL a: {v}");
    }
    sh(&["ip", "netns", "del", &b.ns.name]);
    let (rc, v) = node.cni("DEL", &b, &conf);
    assert_eq!(rc, 0, "DEL b without netns: {v}");
    node.assert_empty();
}

#[test]
fn bad_input_returns_codes_and_leaves_nothing() {
    if !privileged() {
        return;
    }
    let t = prefix("cb");
    let node = Node::start(&t);
    let a = Pod::new(&t, "a");
    let mut bad = node.conf("1.0.0");
    bad["mtu"] = json!("big");
    let (rc, v) = node.cni("ADD", &a, &bad);
    assert_eq!((rc, v["code"].as_u64()), (1, Some(7)), "{v}");
    assert!(v["msg"].as_str().unwrap().contains("mtu"), "{v}");
    let (rc, v) = node.cni("ADD", &a, &node.conf("0.3.1"));
    assert_eq!((rc, v["code"].as_u64()), (1, Some(1)), "{v}");
    // The spec's fields are checked strictly, the field named.
    let mut nameless = node.conf("1.0.0");
    nameless.as_object_mut().unwrap().remove("name");
    let mut typeless = node.conf("1.0.0");
    typeless.as_object_mut().unwrap().remove("type");
    let mut bridge = node.conf("1.0.0");
    bridge["type"] = json!("bridge");
    let mut empty_name = node.conf("1.0.0");
    empty_name["name"] = json!("");
    for (conf, msg) in [
        (nameless, "network config: name: required"),
        (
            empty_name,
            "network config: name: \"\" is not a valid network name",
        ),
        (typeless, "network config: type: required"),
        (
            bridge,
            "network config: type: must be \"xsknet\" (got \"bridge\")",
        ),
    ] {
        let (rc, v) = node.cni("ADD", &a, &conf);
        assert_eq!((rc, v["code"].as_u64()), (1, Some(7)), "{v}");
        assert!(v["msg"].as_str().unwrap().starts_with(msg), "{v}");
    }
    // Missing CNI_NETNS.
    let (rc, v) = node.exec_plugin(
        &xsknet(),
        "ADD",
        Att {
            container_id: &a.container_id,
            ifname: "eth0",
            ..Att::default()
        },
        &node.conf("1.0.0"),
    );
    assert_eq!((rc, v["code"].as_u64()), (1, Some(4)), "{v}");
    // A netns that does not exist: allocated address given back.
    let (rc, v) = node.exec_plugin(
        &xsknet(),
        "ADD",
        Att {
            container_id: "nonexistent",
            netns: "/run/netns/xsknet-no-such-ns",
            ifname: "eth0",
            args: "",
        },
        &node.conf("1.0.0"),
    );
    assert_eq!((rc, v["code"].as_u64()), (1, Some(3)), "{v}");
    // Requested address outside the pod CIDR.
    let mut pod = Pod::new(&t, "c");
    pod.args = "IP=192.168.77.5".into();
    let (rc, v) = node.cni("ADD", &pod, &node.conf("1.0.0"));
    assert_eq!(rc, 1, "{v}");
    assert!(v["msg"].as_str().unwrap().contains("192.168.77.5"), "{v}");
    node.assert_empty();
    assert!(a.ns.links("eth0").is_empty(), "no pod interface left");
    // STATUS: ready now, 50 once the daemon is gone.
    let (rc, v) = node.exec_plugin(&xsknet(), "STATUS", Att::default(), &node.conf("1.1.0"));
    assert_eq!(rc, 0, "{v}");
    let mut node = node;
    node.stop();
    let t0 = Instant::now();
    let (rc, v) = node.exec_plugin(&xsknet(), "STATUS", Att::default(), &node.conf("1.1.0"));
    assert_eq!((rc, v["code"].as_u64()), (1, Some(50)), "{v}");
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[test]
fn chained_with_portmap_and_bandwidth() {
    if !privileged() {
        return;
    }
    let portmap = Path::new("/usr/lib/cni/portmap");
    let bandwidth = Path::new("/usr/lib/cni/bandwidth");
    assert!(
        portmap.exists() && bandwidth.exists(),
        "install containernetworking-plugins (Debian) for /usr/lib/cni"
    );
    let t = prefix("cc");
    let node = Node::start(&t);
    let a = Pod::new(&t, "a");
    // The reference plugins speak up to 1.0.0.
    let conf = node.conf("1.0.0");
    let (rc, r1) = node.cni("ADD", &a, &conf);
    assert_eq!(rc, 0, "{r1}");
    let ip = result_ip(&r1);
    let pm_conf = json!({
        "cniVersion": "1.0.0", "name": "xsknet-test", "type": "portmap",
        "capabilities": {"portMappings": true}, "snat": true,
        "runtimeConfig": {"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]},
        "prevResult": r1,
    });
    let (rc, r2) = node.exec_plugin(
        portmap,
        "ADD",
        Att {
            container_id: &a.container_id,
            netns: &a.ns.netns_path(),
            ifname: "eth0",
            args: "",
        },
        &pm_conf,
    );
    assert_eq!(rc, 0, "portmap ADD: {r2}");
    let bw_conf = json!({
        "cniVersion": "1.0.0", "name": "xsknet-test", "type": "bandwidth",
        "capabilities": {"bandwidth": true},
        "runtimeConfig": {"bandwidth": {"ingressRate": 100_000_000, "ingressBurst": 1_000_000,
                                          "egressRate": 100_000_000, "egressBurst": 1_000_000}},
        "prevResult": r2,
    });
    let (rc, r3) = node.exec_plugin(
        bandwidth,
        "ADD",
        Att {
            container_id: &a.container_id,
            netns: &a.ns.netns_path(),
            ifname: "eth0",
            args: "",
        },
        &bw_conf,
    );
    assert_eq!(rc, 0, "bandwidth ADD: {r3}");
    assert_eq!(result_ip(&r3), ip, "the chain keeps xsknet's address");
    // bandwidth shaped the host veth xsknet reported.
    let host = r1["interfaces"][0]["name"].as_str().unwrap();
    let qd = sh(&[
        "ip",
        "netns",
        "exec",
        &node.ns.name,
        "tc",
        "qdisc",
        "show",
        "dev",
        host,
    ]);
    assert!(
        String::from_utf8_lossy(&qd.stdout).contains("tbf"),
        "no tbf on {host}"
    );
    // portmap: the node's host port reaches the pod through the dataplane.
    let hostport_ok = {
        use std::io::{Read, Write};
        let listener =
            a.ns.run(|| std::net::TcpListener::bind((ip, 80)).expect("bind :80"));
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        });
        let node_ip: std::net::Ipv4Addr = "10.244.0.1".parse().unwrap();
        let echoed = node.ns.run(|| -> std::io::Result<[u8; 5]> {
            let mut c = std::net::TcpStream::connect_timeout(
                &(node_ip, 18080).into(),
                Duration::from_secs(5),
            )?;
            c.write_all(b"hello")?;
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf)?;
            Ok(buf)
        });
        if echoed.is_err() {
            let nat = node.ns.exec(&["iptables-save", "-t", "nat"]);
            let st = node.daemon(json!({"op": "stats"}));
            panic!(
                "host port: {echoed:?}\n{}\n{st:?}",
                String::from_utf8_lossy(&nat.stdout)
            );
        }
        server.join().unwrap();
        echoed.is_ok_and(|b| &b == b"hello")
    };
    assert!(hostport_ok, "hostPort 18080 → pod:80");
    // DEL in reverse order, each with the chain's final result.
    let mut bw_del = bw_conf.clone();
    bw_del["prevResult"] = r3.clone();
    let (rc, v) = node.exec_plugin(
        bandwidth,
        "DEL",
        Att {
            container_id: &a.container_id,
            netns: &a.ns.netns_path(),
            ifname: "eth0",
            args: "",
        },
        &bw_del,
    );
    assert_eq!(rc, 0, "bandwidth DEL: {v}");
    let mut pm_del = pm_conf.clone();
    pm_del["prevResult"] = r3.clone();
    let (rc, v) = node.exec_plugin(
        portmap,
        "DEL",
        Att {
            container_id: &a.container_id,
            netns: &a.ns.netns_path(),
            ifname: "eth0",
            args: "",
        },
        &pm_del,
    );
    assert_eq!(rc, 0, "portmap DEL: {v}");
    let mut x_del = conf.clone();
    x_del["prevResult"] = r3;
    let (rc, v) = node.cni("DEL", &a, &x_del);
    assert_eq!(rc, 0, "xsknet DEL: {v}");
    node.assert_empty();
}

#[test]
fn delegates_to_host_local() {
    if !privileged() {
        return;
    }
    let t = prefix("cd");
    let node = Node::start(&t);
    let a = Pod::new(&t, "a");
    let b = Pod::new(&t, "b");
    let data_dir = node.dir.join("host-local");
    let mut conf = node.conf("1.0.0");
    conf["ipam"] = json!({"type": "host-local", "dataDir": data_dir.display().to_string(),
        "ranges": [[{"subnet": "10.244.0.0/24", "rangeStart": "10.244.0.100", "rangeEnd": "10.244.0.120"}]]});
    let (rc, ra) = node.cni("ADD", &a, &conf);
    assert_eq!(rc, 0, "{ra}");
    let (rc, rb) = node.cni("ADD", &b, &conf);
    assert_eq!(rc, 0, "{rb}");
    let (ipa, ipb) = (result_ip(&ra), result_ip(&rb));
    for ip in [ipa, ipb] {
        assert!(
            (100..=120).contains(&ip.octets()[3]),
            "{ip} from host-local's range"
        );
    }
    assert_eq!(ra["ips"][0]["address"], format!("{ipa}/32"));
    assert!(
        node.allocations().is_empty(),
        "the daemon allocated nothing"
    );
    assert!(a.ns.ping(ipb, 2), "a → b");
    let held = |ip: std::net::Ipv4Addr| data_dir.join("xsknet-test").join(ip.to_string()).exists();
    assert!(held(ipa) && held(ipb));
    for (p, r) in [(&a, &ra), (&b, &rb)] {
        let mut c = conf.clone();
        c["prevResult"] = r.clone();
        let (rc, v) = node.cni("CHECK", p, &c);
        assert_eq!(rc, 0, "CHECK: {v}");
        let (rc, v) = node.cni("DEL", p, &c);
        assert_eq!(rc, 0, "DEL: {v}");
    }
    assert!(!held(ipa) && !held(ipb), "host-local got its DEL");
    node.assert_empty();
}

#[test]
fn gc_releases_attachments_not_in_valid_list() {
    if !privileged() {
        return;
    }
    let t = prefix("cg");
    let node = Node::start(&t);
    let pods: Vec<Pod> = ["a", "b", "c"].iter().map(|n| Pod::new(&t, n)).collect();
    let conf = node.conf("1.1.0");
    let ips: Vec<_> = pods
        .iter()
        .map(|p| {
            let (rc, v) = node.cni("ADD", p, &conf);
            assert_eq!(rc, 0, "{v}");
            result_ip(&v)
        })
        .collect();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] =
        json!([{"containerID": pods[0].container_id, "ifname": "eth0"}]);
    let (rc, v) = node.exec_plugin(&xsknet(), "GC", Att::default(), &gc);
    assert_eq!(rc, 0, "GC: {v}");
    let eps = node.endpoints();
    assert_eq!(eps.len(), 1, "{eps:?}");
    assert_eq!(eps[0]["ip"], ips[0].to_string());
    assert_eq!(node.ns.pod_veths().len(), 1);
    let allocs = node.allocations();
    assert_eq!(allocs.len(), 1, "{allocs:?}");
    assert!(
        pods[1].ns.links("eth0").is_empty(),
        "stale pod lost its interface"
    );
    assert!(
        pods[0].ns.ping("169.254.1.1".parse().unwrap(), 1),
        "valid pod still forwarded"
    );
    gc["cni.dev/valid-attachments"] = json!([]);
    let (rc, v) = node.exec_plugin(&xsknet(), "GC", Att::default(), &gc);
    assert_eq!(rc, 0, "GC: {v}");
    node.assert_empty();
}

#[test]
fn del_while_daemon_down_is_finished_at_restart() {
    if !privileged() {
        return;
    }
    let t = prefix("cp");
    let mut node = Node::start(&t);
    let a = Pod::new(&t, "a");
    let conf = node.conf("1.1.0");
    let (rc, v) = node.cni("ADD", &a, &conf);
    assert_eq!(rc, 0, "{v}");
    node.stop();
    let (rc, v) = node.cni("DEL", &a, &conf);
    assert_eq!(rc, 0, "DEL with the daemon down: {v}");
    assert!(node.ns.pod_veths().is_empty(), "veth removed anyway");
    let pending = node.state.join("pending-del");
    assert_eq!(std::fs::read_dir(&pending).unwrap().count(), 1);
    node.spawn();
    node.assert_empty();
    assert_eq!(
        std::fs::read_dir(&pending).unwrap().count(),
        0,
        "record consumed"
    );
}

/// The longest container ID the plugin accepts (256 bytes) through ADD, and DEL with
/// the daemon down: the DEL is recorded (under a fixed-length name, the full ID inside)
/// and finished by the daemon when it is back.
#[test]
fn del_while_daemon_down_with_longest_container_id() {
    if !privileged() {
        return;
    }
    let t = prefix("cl");
    let mut node = Node::start(&t);
    let mut a = Pod::new(&t, "a");
    a.container_id = format!("{}-{}", a.container_id, "f".repeat(256))[..256].to_string();
    let conf = node.conf("1.1.0");
    let (rc, v) = node.cni("ADD", &a, &conf);
    assert_eq!(rc, 0, "ADD with a 256-byte container ID: {v}");
    assert_eq!(
        node.allocations()[0]["container_id"],
        a.container_id.as_str()
    );
    node.stop();
    let (rc, v) = node.cni("DEL", &a, &conf);
    assert_eq!(rc, 0, "DEL with the daemon down: {v}");
    assert!(node.ns.pod_veths().is_empty(), "veth removed anyway");
    let pending = node.state.join("pending-del");
    let records: Vec<_> = std::fs::read_dir(&pending)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let rec: Value = serde_json::from_slice(&std::fs::read(&records[0]).unwrap()).unwrap();
    assert_eq!(rec["container_id"], a.container_id.as_str(), "full ID kept");
    node.spawn();
    node.assert_empty();
    assert_eq!(
        std::fs::read_dir(&pending).unwrap().count(),
        0,
        "record consumed"
    );
    // One byte more is refused by ADD and DEL alike, before anything is done.
    a.container_id.push('0');
    for cmd in ["ADD", "DEL"] {
        let (rc, v) = node.cni(cmd, &a, &conf);
        assert_eq!((rc, v["code"].as_u64()), (1, Some(4)), "{cmd}: {v}");
    }
    node.assert_empty();
}

#[test]
fn parallel_adds_and_dels() {
    if !privileged() {
        return;
    }
    const N: usize = 32;
    let t = prefix("cq");
    let node = Node::start(&t);
    let pods: Vec<Pod> = (0..N).map(|i| Pod::new(&t, &format!("p{i}"))).collect();
    let conf = node.conf("1.1.0");
    let t0 = Instant::now();
    let results: Vec<(i32, Value)> = std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .map(|p| s.spawn(|| node.cni("ADD", p, &conf)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    eprintln!("{N} parallel ADDs: {:?}", t0.elapsed());
    for (rc, v) in &results {
        assert_eq!(*rc, 0, "{v}");
    }
    let ips: Vec<_> = results.iter().map(|(_, v)| result_ip(v)).collect();
    let distinct: BTreeSet<_> = ips.iter().collect();
    assert_eq!(distinct.len(), N, "{ips:?}");
    assert_eq!(node.endpoints().len(), N);
    assert_eq!(node.allocations().len(), N);
    for (a, b) in [(0, N - 1), (5, 17), (N - 1, 3), (12, 13)] {
        assert!(pods[a].ns.ping(ips[b], 1), "pod {a} → pod {b} ({})", ips[b]);
    }
    let rcs: Vec<(i32, Value)> = std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .map(|p| s.spawn(|| node.cni("DEL", p, &conf)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (rc, v) in &rcs {
        assert_eq!(*rc, 0, "{v}");
    }
    node.assert_empty();
}

#[test]
fn daemon_restart_keeps_addresses_and_connectivity() {
    if !privileged() {
        return;
    }
    let t = prefix("cr");
    let mut node = Node::start(&t);
    let a = Pod::new(&t, "a");
    let b = Pod::new(&t, "b");
    let conf = node.conf("1.1.0");
    let (rc, ra) = node.cni("ADD", &a, &conf);
    assert_eq!(rc, 0, "ADD a: {ra}");
    let (rc, rb) = node.cni("ADD", &b, &conf);
    assert_eq!(rc, 0, "ADD b: {rb}");
    let (ipa, ipb) = (result_ip(&ra), result_ip(&rb));
    assert!(a.ns.ping(ipb, 1));

    node.stop();
    assert!(!a.ns.ping(ipb, 1), "no forwarding while the daemon is down");
    node.spawn();

    // Same addresses, traffic flows again, the runtime's CHECK is satisfied.
    let eps = node.endpoints();
    let ips: Vec<String> = eps
        .iter()
        .map(|e| e["ip"].as_str().unwrap().to_string())
        .collect();
    assert!(
        ips.contains(&ipa.to_string()) && ips.contains(&ipb.to_string()),
        "{eps:?}"
    );
    assert!(
        a.ns.ping(ipb, 2),
        "a → b after restart\n{}",
        node.log_text()
    );
    assert!(
        tcp_ok(&a, &b, ipb, 5301, 1 << 20),
        "TCP a → b after restart"
    );
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = ra.clone();
    let (rc, v) = node.cni("CHECK", &a, &with_prev);
    assert_eq!(rc, 0, "CHECK after restart: {v}");

    // The allocations survived: a new pod does not get a live pod's address.
    let c = Pod::new(&t, "c");
    let (rc, rc_res) = node.cni("ADD", &c, &conf);
    assert_eq!(rc, 0, "ADD c: {rc_res}");
    let ipc = result_ip(&rc_res);
    assert!(ipc != ipa && ipc != ipb, "{ipc} reused a live address");
    for p in [&a, &b, &c] {
        let (rc, v) = node.cni("DEL", p, &conf);
        assert_eq!(rc, 0, "DEL: {v}");
    }
    node.assert_empty();
}

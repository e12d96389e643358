//! nf_tables masquerade against the real kernel, in throwaway namespaces: the rule set
//! the kernel holds (read back with `nft`, as an operator would), atomic replacement,
//! idempotent removal, and a pod's packet leaving a "node" namespace with the node's
//! address as seen by an "outside" namespace.

use std::net::Ipv4Addr;

use testkit::{prefix, privileged, sh, Netns};
use xsknet_sys::nft::{install_masquerade, remove_table, MasqSpec, Prefix};

fn spec(table: &str) -> MasqSpec {
    MasqSpec {
        table: table.to_string(),
        cluster_cidr: Prefix::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap(),
    }
}

#[test]
fn rule_set_is_flannels_ipmasq_and_replaced_atomically() {
    if !privileged() {
        return;
    }
    let ns = Netns::new(&prefix("nft"));
    let s = spec("xsknet");
    ns.run(|| install_masquerade(&s)).unwrap();
    ns.run(|| install_masquerade(&s)).unwrap(); // restart: replaced, not stacked
    let out = String::from_utf8(ns.exec(&["nft", "list", "table", "ip", "xsknet"]).stdout).unwrap();
    let rules: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("ip "))
        .collect();
    assert_eq!(
        rules,
        [
            "ip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 return",
            "ip saddr 10.244.0.0/16 ip daddr 224.0.0.0/4 return",
            "ip saddr 10.244.0.0/16 masquerade fully-random",
        ],
        "{out}"
    );
    assert!(
        out.contains("type nat hook postrouting priority srcnat; policy accept;"),
        "{out}"
    );
    ns.run(|| remove_table("xsknet")).unwrap();
    ns.run(|| remove_table("xsknet")).unwrap(); // absent is fine
    let out = ns.exec(&["nft", "list", "tables"]).stdout;
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    // Refusals are errors naming what was applied, not panics.
    let bad = MasqSpec {
        table: String::new(),
        ..spec("x")
    };
    assert!(ns.run(|| install_masquerade(&bad)).is_err());
}

#[test]
fn pod_egress_leaves_with_the_node_address() {
    if !privileged() {
        return;
    }
    let p = prefix("nfm");
    let node = Netns::new(&format!("{p}n"));
    let pod = Netns::new(&format!("{p}p"));
    let out = Netns::new(&format!("{p}o"));
    let (pn, np, no, on) = (
        format!("{p}a"),
        format!("{p}b"),
        format!("{p}c"),
        format!("{p}d"),
    );
    // pod 10.244.0.5 ── node (10.244.0.1 | 198.18.0.1) ── outside 198.18.0.2
    sh(&[
        "ip", "link", "add", &pn, "netns", &pod.name, "type", "veth", "peer", "name", &np, "netns",
        &node.name,
    ]);
    sh(&[
        "ip", "link", "add", &no, "netns", &node.name, "type", "veth", "peer", "name", &on,
        "netns", &out.name,
    ]);
    pod.exec(&["ip", "addr", "add", "10.244.0.5/24", "dev", &pn]);
    pod.exec(&["ip", "link", "set", &pn, "up"]);
    pod.exec(&["ip", "route", "add", "default", "via", "10.244.0.1"]);
    node.exec(&["ip", "addr", "add", "10.244.0.1/24", "dev", &np]);
    node.exec(&["ip", "addr", "add", "198.18.0.1/24", "dev", &no]);
    node.exec(&["ip", "link", "set", &np, "up"]);
    node.exec(&["ip", "link", "set", &no, "up"]);
    node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    out.exec(&["ip", "addr", "add", "198.18.0.2/24", "dev", &on]);
    out.exec(&["ip", "link", "set", &on, "up"]);
    // No route back to the pod network outside: only masquerade makes the ping work.
    assert!(
        !pod.ping(Ipv4Addr::new(198, 18, 0, 2), 1),
        "reached outside without NAT"
    );
    node.run(|| install_masquerade(&spec("xsknet"))).unwrap();
    assert!(
        pod.ping(Ipv4Addr::new(198, 18, 0, 2), 2),
        "egress through masquerade"
    );
    node.run(|| remove_table("xsknet")).unwrap();
    // The outside knows no route to 10.244.0.0/16: only replies addressed to the node's
    // 198.18.0.1 come back, so the pings above prove the source was rewritten, and a new
    // flow after removal fails again.
    assert!(
        !pod.ping(Ipv4Addr::new(198, 18, 0, 2), 1),
        "egress without the table"
    );
}

//! A two-or-more-node underlay for tests that run their own nodes (etcd_node, kube).

use std::net::Ipv4Addr;

use testkit::{sh, Netns};

/// The underlay: a bridge in the test's namespace at `.250` (etcd or the API server
/// listens there, reachable from the nodes), node namespaces as its ports; removed on
/// drop.
pub struct Bridge {
    name: String,
    net: [u8; 3],
    p: String,
}

impl Bridge {
    pub fn new(p: &str, net: [u8; 3]) -> Bridge {
        let name = format!("{p}br");
        let _ = testkit::try_sh(&["ip", "link", "del", &name]);
        sh(&["ip", "link", "add", &name, "type", "bridge"]);
        let b = Bridge {
            name,
            net,
            p: p.into(),
        };
        let a = format!("{}/24", b.ip(250));
        sh(&["ip", "addr", "add", &a, "dev", &b.name]);
        sh(&["ip", "link", "set", &b.name, "up"]);
        // A wire carries complete checksums (see tests/overlay.rs).
        sh(&["ethtool", "-K", &b.name, "tx", "off"]);
        b
    }

    pub fn ip(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.net[0], self.net[1], self.net[2], last)
    }

    /// A node namespace whose `up0` (`.last`) is a port of the bridge; default route
    /// through `.250`.
    pub fn node(&self, tag: &str, last: u8) -> Netns {
        let node = Netns::new(&format!("{}{tag}", self.p));
        let end = format!("{}{tag}", self.p);
        sh(&[
            "ip", "link", "add", &end, "type", "veth", "peer", "name", "up0", "netns", &node.name,
        ]);
        sh(&["ip", "link", "set", &end, "master", &self.name, "up"]);
        let a = format!("{}/24", self.ip(last));
        sh(&["ip", "-n", &node.name, "addr", "add", &a, "dev", "up0"]);
        sh(&["ip", "-n", &node.name, "link", "set", "up0", "up"]);
        let gw = self.ip(250).to_string();
        sh(&[
            "ip", "-n", &node.name, "route", "add", "default", "via", &gw, "dev", "up0",
        ]);
        node
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = testkit::try_sh(&["ip", "link", "del", &self.name]);
    }
}

//! Unit tests of every verb, version and error path through [`super::run`], with an
//! injected environment, stdin and stdout and an in-memory [`Fake`] platform (kernel,
//! daemon and delegated IPAM plugin).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use xsknet_proto::client::ClientError;
use xsknet_proto::wire::{
    Endpoint, EndpointCheck, ErrorKind, IpamAllocation, IpamLease, IpamReleased, PendingDel,
    Request, Status, PENDING_DEL_DIR, POD_GATEWAY,
};

use super::run;
use crate::config::MAX_CONTAINER_ID_LEN;
use crate::platform::{ExecOutput, Platform};
use crate::wire::{host_ifname, LinkPlan, PodLink, PodView, WireError};

#[derive(Default)]
struct State {
    daemon_up: bool,
    daemon_ready: bool,
    /// `status.local_mtu` (with `pod_cidr` 10.244.0.0/24).
    local_mtu: Option<u32>,
    /// The last plan `create_pod_link` got.
    last_plan: Option<LinkPlan>,
    /// Fail the next endpoint_add with this kind.
    fail_endpoint_add: Option<ErrorKind>,
    endpoints: BTreeMap<String, Endpoint>,
    ipam: Option<FakeIpam>,
    netns: BTreeSet<String>,
    host_links: BTreeSet<String>,
    /// (netns, ifname) → view
    pods: BTreeMap<(String, String), PodView>,
    fail_wire: bool,
    execs: Vec<(PathBuf, String)>,
    exec_reply: Option<ExecOutput>,
    requests: Vec<String>,
}

struct Fake {
    s: RefCell<State>,
}

/// The daemon's IPAM as the plugin sees it, for 10.244.0.0/24: per-attachment
/// addresses from .2 up (.1 is the host port), a requested address when free.
#[derive(Default)]
struct FakeIpam {
    by_ip: BTreeMap<Ipv4Addr, IpamAllocation>,
}

impl FakeIpam {
    fn allocate(
        &mut self,
        container_id: &str,
        ifname: &str,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, String> {
        let held = self
            .by_ip
            .values()
            .find(|a| a.container_id == container_id && a.ifname == ifname);
        if let Some(a) = held {
            return match requested {
                Some(r) if r != a.ip => Err(format!("{container_id} already holds {}", a.ip)),
                _ => Ok(a.ip),
            };
        }
        let ip = match requested {
            Some(ip) if self.by_ip.contains_key(&ip) => return Err(format!("{ip} is in use")),
            Some(ip) => ip,
            None => (2..255)
                .map(|n| Ipv4Addr::new(10, 244, 0, n))
                .find(|ip| !self.by_ip.contains_key(ip))
                .ok_or("10.244.0.0/24 is exhausted")?,
        };
        let a = IpamAllocation {
            ip,
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
        };
        self.by_ip.insert(ip, a);
        Ok(ip)
    }

    fn release(&mut self, container_id: &str, ifname: &str) -> Option<Ipv4Addr> {
        let ip = self
            .by_ip
            .values()
            .find(|a| a.container_id == container_id && a.ifname == ifname)?
            .ip;
        self.by_ip.remove(&ip).map(|a| a.ip)
    }

    fn list(&self) -> Vec<IpamAllocation> {
        self.by_ip.values().cloned().collect()
    }
}

impl Fake {
    fn new() -> Fake {
        let s = State {
            daemon_up: true,
            daemon_ready: true,
            ipam: Some(FakeIpam::default()),
            netns: ["/run/netns/p1".to_string(), "/run/netns/p2".to_string()].into(),
            ..Default::default()
        };
        Fake { s: RefCell::new(s) }
    }
}

fn derr(kind: ErrorKind, m: &str) -> ClientError {
    ClientError::Daemon {
        kind,
        message: m.to_string(),
    }
}

impl Platform for Fake {
    fn daemon_call(
        &self,
        socket: &Path,
        req: &Request,
        _timeout: Duration,
    ) -> Result<Value, ClientError> {
        let mut s = self.s.borrow_mut();
        if !s.daemon_up {
            return Err(ClientError::Connect {
                path: socket.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let op = serde_json::to_value(req).unwrap()["op"]
            .as_str()
            .unwrap()
            .to_string();
        s.requests.push(op);
        let to = |v: &dyn Erased| v.json();
        match req.clone() {
            Request::Status => Ok(to(&Status {
                ready: s.daemon_ready,
                local_mtu: s.local_mtu,
                pod_cidr: "10.244.0.0/24".into(),
                ..Default::default()
            })),
            Request::EndpointAdd(spec) => {
                if let Some(k) = s.fail_endpoint_add.take() {
                    return Err(derr(k, "injected failure"));
                }
                if !s.host_links.contains(&spec.ifname) {
                    return Err(derr(ErrorKind::NotFound, "no such interface"));
                }
                let ep = Endpoint {
                    ifname: spec.ifname.clone(),
                    ip: spec.ip,
                    mac: spec.mac.unwrap_or_default(),
                    namespace: spec.namespace,
                    name: spec.name,
                    labels: spec.labels,
                    cni: spec.cni,
                    port: 0,
                    worker: 0,
                };
                s.endpoints.insert(spec.ifname, ep.clone());
                Ok(to(&ep))
            }
            Request::EndpointDel { ifname, .. } => {
                let k = ifname.unwrap_or_default();
                s.endpoints
                    .remove(&k)
                    .map(|e| to(&e))
                    .ok_or_else(|| derr(ErrorKind::NotFound, "no endpoint"))
            }
            Request::EndpointList => {
                let v: Vec<Endpoint> = s.endpoints.values().cloned().collect();
                Ok(to(&v))
            }
            Request::EndpointCheck { ifname } => s
                .endpoints
                .get(&ifname)
                .map(|e| {
                    to(&EndpointCheck {
                        endpoint: e.clone(),
                        generation: 1,
                    })
                })
                .ok_or_else(|| derr(ErrorKind::NotFound, &format!("no endpoint on {ifname}"))),
            Request::IpamAllocate {
                container_id,
                ifname,
                ip,
            } => {
                let ipam = s.ipam.as_mut().unwrap();
                let ip = ipam
                    .allocate(&container_id, &ifname, ip)
                    .map_err(|e| derr(ErrorKind::Conflict, &e))?;
                Ok(to(&IpamLease {
                    ip,
                    prefix: 32,
                    gateway: POD_GATEWAY,
                }))
            }
            Request::IpamRelease {
                container_id,
                ifname,
            } => {
                let released = s.ipam.as_mut().unwrap().release(&container_id, &ifname);
                Ok(to(&IpamReleased { released }))
            }
            Request::IpamList => {
                let v: Vec<IpamAllocation> = s.ipam.as_ref().unwrap().list();
                Ok(to(&v))
            }
            Request::Stats => Ok(json!({})),
        }
    }

    fn create_pod_link(&self, plan: &LinkPlan) -> Result<PodLink, WireError> {
        let mut s = self.s.borrow_mut();
        let ns = plan.netns.display().to_string();
        if !s.netns.contains(&ns) {
            return Err(WireError::NetnsGone {
                path: plan.netns.clone(),
            });
        }
        if s.fail_wire {
            return Err(WireError::Other("injected wiring failure".into()));
        }
        let mac = plan
            .mac
            .map(|m| m.to_string())
            .unwrap_or_else(|| "0a:00:00:00:00:02".into());
        s.last_plan = Some(plan.clone());
        s.host_links.insert(plan.host_ifname.clone());
        s.pods.insert(
            (ns, plan.ifname.clone()),
            PodView {
                mac: mac.clone(),
                mtu: plan.mtu,
                up: true,
                addresses: vec![(plan.ip, 32)],
                routes: vec![
                    (POD_GATEWAY, 32, None),
                    (Ipv4Addr::UNSPECIFIED, 0, Some(POD_GATEWAY)),
                ],
            },
        );
        Ok(PodLink {
            host_mac: "0a:00:00:00:00:01".into(),
            pod_mac: mac,
        })
    }

    fn delete_host_link(&self, host_ifname: &str) -> Result<bool, WireError> {
        let mut s = self.s.borrow_mut();
        let existed = s.host_links.remove(host_ifname);
        // The pod end goes with it; find it by name (tests use one pod per netns).
        if existed {
            let keys: Vec<_> = s.pods.keys().cloned().collect();
            for k in keys {
                if host_ifname == host_ifname_of(&k) {
                    s.pods.remove(&k);
                }
            }
        }
        Ok(existed)
    }

    fn host_link_exists(&self, name: &str) -> Result<bool, WireError> {
        Ok(self.s.borrow().host_links.contains(name))
    }

    fn inspect_pod(&self, netns: &Path, ifname: &str) -> Result<Option<PodView>, WireError> {
        let s = self.s.borrow();
        let ns = netns.display().to_string();
        if !s.netns.contains(&ns) {
            return Err(WireError::NetnsGone {
                path: netns.to_path_buf(),
            });
        }
        Ok(s.pods.get(&(ns, ifname.to_string())).cloned())
    }

    fn exec_plugin(
        &self,
        path: &Path,
        env: &[(String, String)],
        _stdin: &[u8],
    ) -> std::io::Result<ExecOutput> {
        let mut s = self.s.borrow_mut();
        let cmd = env
            .iter()
            .find(|(k, _)| k == "CNI_COMMAND")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        s.execs.push((path.to_path_buf(), cmd.clone()));
        if let Some(r) = s.exec_reply.clone() {
            return Ok(r);
        }
        let stdout = if cmd == "ADD" {
            serde_json::to_vec(&json!({"cniVersion":"1.0.0","ips":[
                {"address":"10.9.0.7/24","gateway":"10.9.0.1"}],"dns":{"nameservers":["10.9.0.2"]}}))
            .unwrap()
        } else {
            Vec::new()
        };
        Ok(ExecOutput {
            success: true,
            stdout,
            stderr: Vec::new(),
        })
    }
}

/// The container id of a fake pod is its netns basename.
fn host_ifname_of(k: &(String, String)) -> String {
    let cid = k.0.rsplit('/').next().unwrap_or_default();
    host_ifname(cid, &k.1)
}

trait Erased {
    fn json(&self) -> Value;
}
impl<T: serde::Serialize> Erased for T {
    fn json(&self) -> Value {
        serde_json::to_value(self).unwrap()
    }
}

struct Harness {
    fake: Fake,
    dir: tempfile::TempDir,
    plugin_dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        let plugin_dir = tempfile::tempdir().unwrap();
        std::fs::write(plugin_dir.path().join("host-local"), b"#!/bin/sh\n").unwrap();
        Harness {
            fake: Fake::new(),
            dir: tempfile::tempdir().unwrap(),
            plugin_dir,
        }
    }

    fn conf(&self, version: &str, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": version, "name": "xnet", "type": "xsknet",
            "socket": "/nonexistent/xsknetd.sock",
            "stateDir": self.dir.path().join("state").display().to_string(),
        });
        if let Value::Object(m) = extra {
            for (k, v) in m {
                c[k] = v;
            }
        }
        c
    }

    fn env(&self, command: &str, pod: &str) -> HashMap<String, String> {
        [
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", pod.to_string()),
            ("CNI_NETNS", format!("/run/netns/{pod}")),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_PATH", self.plugin_dir.path().display().to_string()),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1".to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn call(&self, env: &HashMap<String, String>, stdin: &Value) -> (i32, Value) {
        let input = serde_json::to_vec(stdin).unwrap();
        self.call_raw(env, &input)
    }

    fn call_raw(&self, env: &HashMap<String, String>, input: &[u8]) -> (i32, Value) {
        let mut out = Vec::new();
        let rc = run(env, &mut &input[..], &mut out, &self.fake);
        let v = if out.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&out).unwrap_or_else(|e| {
                panic!(
                    "stdout is not JSON ({e}): {}",
                    String::from_utf8_lossy(&out)
                )
            })
        };
        (rc, v)
    }

    fn add(&self, version: &str, pod: &str) -> Value {
        let (rc, v) = self.call(&self.env("ADD", pod), &self.conf(version, json!({})));
        assert_eq!(rc, 0, "{v}");
        v
    }

    fn nothing_left(&self) {
        let s = self.fake.s.borrow();
        assert!(s.host_links.is_empty(), "veths left: {:?}", s.host_links);
        assert!(s.endpoints.is_empty(), "endpoints left: {:?}", s.endpoints);
        assert!(
            s.ipam.as_ref().unwrap().list().is_empty(),
            "allocations left"
        );
    }
}

#[test]
fn version_reports_supported_versions() {
    let h = Harness::new();
    let env: HashMap<String, String> = [("CNI_COMMAND".to_string(), "VERSION".to_string())].into();
    let (rc, v) = h.call(&env, &json!({"cniVersion":"1.0.0"}));
    assert_eq!(rc, 0);
    assert_eq!(
        v,
        json!({"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]})
    );
    let (rc, v) = h.call_raw(&env, b"");
    assert_eq!(rc, 0);
    assert_eq!(v["cniVersion"], "1.1.0");
    // libcni's probe (podman sends it before every command) sets dummy attachment
    // variables, which VERSION ignores.
    let mut probe = env.clone();
    for k in ["CNI_NETNS", "CNI_IFNAME", "CNI_PATH"] {
        probe.insert(k.to_string(), "dummy".to_string());
    }
    let (rc, v) = h.call(&probe, &json!({"cniVersion":"1.0.0"}));
    assert_eq!(rc, 0, "{v}");
}

#[test]
fn add_result_per_version() {
    for ver in ["0.4.0", "1.0.0", "1.1.0"] {
        let h = Harness::new();
        let v = h.add(ver, "p1");
        assert_eq!(v["cniVersion"], ver);
        assert_eq!(v["ips"][0]["address"], "10.244.0.2/32");
        assert_eq!(v["ips"][0]["gateway"], "169.254.1.1");
        assert_eq!(v["ips"][0]["interface"], 1);
        assert_eq!(v["interfaces"][0]["name"], host_ifname("p1", "eth0"));
        assert_eq!(v["interfaces"][1]["name"], "eth0");
        assert_eq!(v["interfaces"][1]["sandbox"], "/run/netns/p1");
        assert_eq!(
            v["routes"][1],
            json!({"dst":"0.0.0.0/0","gw":"169.254.1.1"})
        );
        assert_eq!(v["ips"][0].get("version").is_some(), ver == "0.4.0");
        assert_eq!(v["interfaces"][1].get("mtu").is_some(), ver == "1.1.0");
        let s = h.fake.s.borrow();
        let ep = s.endpoints.values().next().unwrap();
        assert_eq!(ep.namespace.as_deref(), Some("default"));
        assert_eq!(ep.name.as_deref(), Some("web-1"));
        let cni = ep.cni.as_ref().unwrap();
        assert_eq!(
            (cni.container_id.as_str(), cni.ifname.as_str()),
            ("p1", "eth0")
        );
        assert_eq!(cni.netns.as_deref(), Some("/run/netns/p1"));
    }
}

#[test]
fn add_with_local_mtu_plans_per_destination_routes() {
    let h = Harness::new();
    h.fake.s.borrow_mut().local_mtu = Some(3500);
    let (rc, v) = h.call(&h.env("ADD", "p1"), &h.conf("1.1.0", json!({})));
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["interfaces"][1]["mtu"], 3500);
    assert!(
        v["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == "10.244.0.0/24"),
        "{v}"
    );
    let plan = h.fake.s.borrow().last_plan.clone().unwrap();
    assert_eq!(plan.mtu, 3500);
    let local = plan.local_routes.unwrap();
    assert_eq!(local.pod_cidr, ("10.244.0.0".parse().unwrap(), 24));
    assert_eq!(local.default_mtu, 1500);
    let routes = crate::wire::pod_routes(7, plan.local_routes);
    assert_eq!(routes.len(), 3);
    assert_eq!((routes[1].prefix_len, routes[1].mtu), (0, Some(1500)));
    assert_eq!(
        (routes[2].prefix_len, routes[2].mtu, routes[2].gateway),
        (24, None, Some(POD_GATEWAY))
    );
    // A local MTU not above the pod MTU changes nothing.
    let h = Harness::new();
    h.fake.s.borrow_mut().local_mtu = Some(1400);
    let (rc, v) = h.call(&h.env("ADD", "p1"), &h.conf("1.1.0", json!({"mtu": 1400})));
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["interfaces"][1]["mtu"], 1400);
    assert_eq!(v["routes"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(
        h.fake.s.borrow().last_plan.as_ref().unwrap().local_routes,
        None
    );
}

#[test]
fn add_honours_ip_mac_labels_mtu() {
    let h = Harness::new();
    let mut env = h.env("ADD", "p1");
    env.insert(
        "CNI_ARGS".into(),
        "IgnoreUnknown=1;IP=10.244.0.77;MAC=02:11:22:33:44:55".into(),
    );
    let conf = h.conf(
        "1.1.0",
        json!({"mtu": 1400, "args": {"cni": {"labels": [{"key":"app","value":"db"}]}}}),
    );
    let (rc, v) = h.call(&env, &conf);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["ips"][0]["address"], "10.244.0.77/32");
    assert_eq!(v["interfaces"][1]["mac"], "02:11:22:33:44:55");
    assert_eq!(v["interfaces"][1]["mtu"], 1400);
    let s = h.fake.s.borrow();
    let ep = s.endpoints.values().next().unwrap();
    assert_eq!(ep.labels.get("app").map(String::as_str), Some("db"));
    assert_eq!(ep.mac, "02:11:22:33:44:55");
    drop(s);
    // The capabilities form: runtimeConfig.ips / .mac.
    let conf = h.conf(
        "1.0.0",
        json!({"runtimeConfig": {"ips": ["10.244.0.88/24"], "mac": "02:aa:aa:aa:aa:aa"}}),
    );
    let (rc, v) = h.call(&h.env("ADD", "p2"), &conf);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["ips"][0]["address"], "10.244.0.88/32");
    assert_eq!(v["interfaces"][1]["mac"], "02:aa:aa:aa:aa:aa");
}

#[test]
fn add_errors_leave_nothing_behind() {
    let h = Harness::new();
    // Missing env.
    let mut env = h.env("ADD", "p1");
    env.remove("CNI_NETNS");
    let (rc, v) = h.call(&env, &h.conf("1.0.0", json!({})));
    assert_eq!((rc, v["code"].as_u64()), (1, Some(4)), "{v}");
    assert!(v["msg"].as_str().unwrap().contains("CNI_NETNS"), "{v}");
    // Bad config / version / JSON.
    let (rc, v) = h.call(&h.env("ADD", "p1"), &h.conf("1.0.0", json!({"mtu": "big"})));
    assert_eq!((rc, v["code"].as_u64()), (1, Some(7)), "{v}");
    assert_eq!(v["cniVersion"], "1.0.0");
    let (rc, v) = h.call(&h.env("ADD", "p1"), &h.conf("0.3.1", json!({})));
    assert_eq!((rc, v["code"].as_u64()), (1, Some(1)), "{v}");
    let (rc, v) = h.call_raw(&h.env("ADD", "p1"), b"{\"cniVersion\":");
    assert_eq!((rc, v["code"].as_u64()), (1, Some(6)), "{v}");
    // Bad CNI_ARGS IP.
    let mut env = h.env("ADD", "p1");
    env.insert("CNI_ARGS".into(), "IP=banana".into());
    let (rc, v) = h.call(&env, &h.conf("1.0.0", json!({})));
    assert_eq!((rc, v["code"].as_u64()), (1, Some(4)), "{v}");
    // Netns gone: unknown container.
    let (rc, v) = h.call(&h.env("ADD", "nope"), &h.conf("1.0.0", json!({})));
    assert_eq!((rc, v["code"].as_u64()), (1, Some(3)), "{v}");
    // Wiring fails.
    h.fake.s.borrow_mut().fail_wire = true;
    let (rc, v) = h.call(&h.env("ADD", "p1"), &h.conf("1.0.0", json!({})));
    assert_eq!((rc, v["code"].as_u64()), (1, Some(102)), "{v}");
    h.fake.s.borrow_mut().fail_wire = false;
    // The daemon refuses the endpoint: veth and address are rolled back.
    h.fake.s.borrow_mut().fail_endpoint_add = Some(ErrorKind::Capacity);
    let (rc, v) = h.call(&h.env("ADD", "p1"), &h.conf("1.0.0", json!({})));
    assert_eq!((rc, v["code"].as_u64()), (1, Some(100)), "{v}");
    assert!(
        v["msg"].as_str().unwrap().contains("injected failure"),
        "{v}"
    );
    h.nothing_left();
    // Unknown command.
    let (rc, v) = h.call(&h.env("FROB", "p1"), &h.conf("1.0.0", json!({})));
    assert_eq!((rc, v["code"].as_u64()), (1, Some(4)), "{v}");
    // No CNI_COMMAND at all.
    let (rc, v) = h.call(&HashMap::new(), &h.conf("1.0.0", json!({})));
    assert_eq!((rc, v["code"].as_u64()), (1, Some(4)), "{v}");
}

#[test]
fn add_with_daemon_down_is_try_again_and_actionable() {
    let h = Harness::new();
    h.fake.s.borrow_mut().daemon_up = false;
    let (rc, v) = h.call(&h.env("ADD", "p1"), &h.conf("1.0.0", json!({})));
    assert_eq!((rc, v["code"].as_u64()), (1, Some(11)), "{v}");
    let msg = v["msg"].as_str().unwrap();
    assert!(
        msg.contains("xsknetd not reachable at /nonexistent/xsknetd.sock"),
        "{msg}"
    );
    assert!(msg.contains("is the xsknet DaemonSet running?"), "{msg}");
    h.fake.s.borrow_mut().daemon_up = true;
    h.nothing_left();
}

#[test]
fn second_add_of_live_attachment_fails_and_keeps_it() {
    let h = Harness::new();
    h.add("1.0.0", "p1");
    let (rc, v) = h.call(&h.env("ADD", "p1"), &h.conf("1.0.0", json!({})));
    assert_eq!(rc, 1, "{v}");
    assert!(
        v["msg"].as_str().unwrap().contains("already attached"),
        "{v}"
    );
    let s = h.fake.s.borrow();
    assert_eq!(s.endpoints.len(), 1);
    assert_eq!(s.ipam.as_ref().unwrap().list().len(), 1);
}

#[test]
fn distinct_pods_get_distinct_addresses() {
    let h = Harness::new();
    let a = h.add("1.0.0", "p1");
    let b = h.add("1.0.0", "p2");
    assert_ne!(a["ips"][0]["address"], b["ips"][0]["address"]);
}

#[test]
fn del_is_idempotent_and_tolerates_missing_netns() {
    let h = Harness::new();
    let result = h.add("1.0.0", "p1");
    let mut conf = h.conf("1.0.0", json!({}));
    conf["prevResult"] = result;
    for _ in 0..2 {
        let (rc, v) = h.call(&h.env("DEL", "p1"), &conf);
        assert_eq!(rc, 0, "{v}");
        assert_eq!(v, Value::Null, "DEL prints nothing");
    }
    h.nothing_left();
    // Netns already gone (and even no CNI_NETNS at all).
    h.add("1.0.0", "p2");
    h.fake.s.borrow_mut().netns.remove("/run/netns/p2");
    let mut env = h.env("DEL", "p2");
    env.remove("CNI_NETNS");
    let (rc, v) = h.call(&env, &h.conf("1.0.0", json!({})));
    assert_eq!(rc, 0, "{v}");
    h.nothing_left();
}

#[test]
fn del_with_daemon_down_records_pending() {
    let h = Harness::new();
    h.add("1.1.0", "p1");
    h.fake.s.borrow_mut().daemon_up = false;
    let (rc, v) = h.call(&h.env("DEL", "p1"), &h.conf("1.1.0", json!({})));
    assert_eq!(rc, 0, "{v}");
    assert!(
        h.fake.s.borrow().host_links.is_empty(),
        "veth removed anyway"
    );
    let dir = h.dir.path().join("state").join(PENDING_DEL_DIR);
    assert_eq!(
        pending_records(&dir),
        ["del-238db929b74ff78df25e1a64588e0b1f.json"]
    );
    let p: PendingDel = serde_json::from_slice(
        &std::fs::read(dir.join(PendingDel::file_name("p1", "eth0"))).unwrap(),
    )
    .unwrap();
    assert_eq!(p.container_id, "p1");
    assert_eq!(p.ifname, "eth0");
    assert_eq!(p.host_ifname, host_ifname("p1", "eth0"));
}

fn pending_records(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn del_with_daemon_down_replaces_a_record_under_the_old_name() {
    let h = Harness::new();
    h.add("1.0.0", "p1");
    let dir = h.dir.path().join("state").join(PENDING_DEL_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    let old = |cid: &str, ifname: &str| PendingDel {
        container_id: cid.into(),
        ifname: ifname.into(),
        host_ifname: host_ifname(cid, ifname),
    };
    // What an earlier release wrote for this attachment, and a record of another
    // attachment that has the same old-style name ("p1-eth0" + "-" + ...).
    std::fs::write(
        dir.join("p1-eth0.json"),
        serde_json::to_vec(&old("p1", "eth0")).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("p1-eth0-x.json"),
        serde_json::to_vec(&old("p1", "eth0-x")).unwrap(),
    )
    .unwrap();
    h.fake.s.borrow_mut().daemon_up = false;
    let (rc, v) = h.call(&h.env("DEL", "p1"), &h.conf("1.0.0", json!({})));
    assert_eq!(rc, 0, "{v}");
    assert_eq!(
        pending_records(&dir),
        [
            PendingDel::file_name("p1", "eth0"),
            "p1-eth0-x.json".to_string()
        ]
    );
}

/// The longest container ID ADD accepts works in every verb, DEL with the daemon down
/// included; one byte more is refused by every verb with code 4.
#[test]
fn longest_container_id_works_in_every_verb() {
    let h = Harness::new();
    let id = format!("c{}", "0123456789abcdef".repeat(16))[..MAX_CONTAINER_ID_LEN].to_string();
    let env = |cmd: &str, id: &str| {
        let mut e = h.env(cmd, "p1");
        e.insert("CNI_CONTAINERID".into(), id.to_string());
        e
    };
    let (rc, result) = h.call(&env("ADD", &id), &h.conf("1.1.0", json!({})));
    assert_eq!(rc, 0, "{result}");
    let mut conf = h.conf("1.1.0", json!({}));
    conf["prevResult"] = result;
    let (rc, v) = h.call(&env("CHECK", &id), &conf);
    assert_eq!(rc, 0, "{v}");
    h.fake.s.borrow_mut().daemon_up = false;
    let (rc, v) = h.call(&env("DEL", &id), &conf);
    assert_eq!(rc, 0, "DEL with the daemon down: {v}");
    let dir = h.dir.path().join("state").join(PENDING_DEL_DIR);
    let names = pending_records(&dir);
    assert_eq!(names, [PendingDel::file_name(&id, "eth0")]);
    assert_eq!(names[0].len(), 41);
    let p: PendingDel =
        serde_json::from_slice(&std::fs::read(dir.join(&names[0])).unwrap()).unwrap();
    assert_eq!(p.container_id, id, "the full ID is kept in the record");
    assert_eq!(p.host_ifname, host_ifname(&id, "eth0"));
    h.fake.s.borrow_mut().daemon_up = true;
    let (rc, v) = h.call(&env("DEL", &id), &conf);
    assert_eq!(rc, 0, "DEL again with the daemon up: {v}");
    h.nothing_left();
    let over = format!("{id}x");
    for cmd in ["ADD", "CHECK", "DEL"] {
        let (rc, v) = h.call(&env(cmd, &over), &conf);
        assert_eq!((rc, v["code"].as_u64()), (1, Some(4)), "{cmd}: {v}");
        assert!(
            v["msg"]
                .as_str()
                .unwrap()
                .starts_with("CNI_CONTAINERID: 257 bytes"),
            "{cmd}: {v}"
        );
    }
}

/// Bad configurations are refused with code 7 naming the field by every verb, before
/// the plugin touches the daemon, the kernel or the state directory.
#[test]
fn strict_config_refused_before_anything_happens() {
    let h = Harness::new();
    let list = |plugins: Value| json!({"cniVersion":"1.0.0","name":"xnet","plugins":plugins});
    let without = |field: &str| {
        let mut c = h.conf("1.0.0", json!({}));
        c.as_object_mut().unwrap().remove(field);
        c
    };
    let cases = [
        (without("name"), "network config: name: required"),
        (
            h.conf("1.0.0", json!({"name": ""})),
            r#"network config: name: "" is not a valid network name"#,
        ),
        (
            h.conf("1.0.0", json!({"name": "my net"})),
            r#"network config: name: "my net" is not a valid network name"#,
        ),
        (without("type"), "network config: type: required"),
        (
            h.conf("1.0.0", json!({"type": "bridge"})),
            r#"network config: type: must be "xsknet" (got "bridge")"#,
        ),
        (
            without("cniVersion"),
            "network config: cniVersion: required",
        ),
        (
            list(json!([{"type": "bridge"}])),
            r#"network config: plugins: no entry of type "xsknet" (got ["bridge"])"#,
        ),
        (
            list(json!([{"type": "xsknet"}, {"type": "xsknet"}])),
            "network config: plugins: entries 0 and 1",
        ),
        (
            h.conf("1.0.0", json!({"stateDir": "state"})),
            "network config: stateDir: must be an absolute path",
        ),
    ];
    for (conf, msg) in cases {
        for cmd in ["ADD", "CHECK", "DEL"] {
            let (rc, v) = h.call(&h.env(cmd, "p1"), &conf);
            assert_eq!((rc, v["code"].as_u64()), (1, Some(7)), "{cmd} {conf}: {v}");
            let got = v["msg"].as_str().unwrap();
            assert!(got.starts_with(msg), "{cmd}: want {msg:?}, got {got:?}");
        }
    }
    let s = h.fake.s.borrow();
    assert!(s.requests.is_empty(), "daemon asked: {:?}", s.requests);
    assert!(s.host_links.is_empty() && s.execs.is_empty());
    assert!(!h.dir.path().join("state").exists(), "state dir untouched");
}

#[test]
fn check_passes_then_fails_clearly() {
    let h = Harness::new();
    for ver in ["0.4.0", "1.0.0", "1.1.0"] {
        let result = h.add(ver, "p1");
        let mut conf = h.conf(ver, json!({}));
        conf["prevResult"] = result.clone();
        let (rc, v) = h.call(&h.env("CHECK", "p1"), &conf);
        assert_eq!(rc, 0, "{ver}: {v}");
        // Address removed.
        let key = ("/run/netns/p1".to_string(), "eth0".to_string());
        let saved = h.fake.s.borrow().pods[&key].clone();
        h.fake
            .s
            .borrow_mut()
            .pods
            .get_mut(&key)
            .unwrap()
            .addresses
            .clear();
        let (rc, v) = h.call(&h.env("CHECK", "p1"), &conf);
        assert_eq!((rc, v["code"].as_u64()), (1, Some(101)), "{v}");
        let msg = v["msg"].as_str().unwrap();
        assert!(
            msg.contains("pod address 10.244.0.") && msg.contains("missing from eth0"),
            "{msg}"
        );
        // Route removed.
        {
            let mut s = h.fake.s.borrow_mut();
            let p = s.pods.get_mut(&key).unwrap();
            *p = saved.clone();
            p.routes.retain(|r| r.1 != 0);
        }
        let (rc, v) = h.call(&h.env("CHECK", "p1"), &conf);
        assert_eq!(rc, 1);
        assert!(
            v["msg"]
                .as_str()
                .unwrap()
                .contains("route 0.0.0.0/0 via 169.254.1.1"),
            "{v}"
        );
        h.fake.s.borrow_mut().pods.insert(key.clone(), saved);
        // Endpoint gone from the daemon.
        let ep = h.fake.s.borrow_mut().endpoints.pop_first().unwrap();
        let (rc, v) = h.call(&h.env("CHECK", "p1"), &conf);
        assert_eq!((rc, v["code"].as_u64()), (1, Some(101)), "{v}");
        assert!(
            v["msg"].as_str().unwrap().contains("does not forward"),
            "{v}"
        );
        h.fake.s.borrow_mut().endpoints.insert(ep.0, ep.1);
        // Without prevResult.
        let (rc, v) = h.call(&h.env("CHECK", "p1"), &h.conf(ver, json!({})));
        assert_eq!((rc, v["code"].as_u64()), (1, Some(7)), "{v}");
        // Netns gone.
        h.fake.s.borrow_mut().netns.remove("/run/netns/p1");
        let (rc, v) = h.call(&h.env("CHECK", "p1"), &conf);
        assert_eq!((rc, v["code"].as_u64()), (1, Some(3)), "{v}");
        h.fake.s.borrow_mut().netns.insert("/run/netns/p1".into());
        let (rc, _) = h.call(&h.env("DEL", "p1"), &conf);
        assert_eq!(rc, 0);
    }
}

#[test]
fn status_ready_not_ready_unreachable() {
    let h = Harness::new();
    let env: HashMap<String, String> = [("CNI_COMMAND".to_string(), "STATUS".to_string())].into();
    let (rc, v) = h.call(&env, &h.conf("1.1.0", json!({})));
    assert_eq!((rc, &v), (0, &Value::Null));
    h.fake.s.borrow_mut().daemon_ready = false;
    let (rc, v) = h.call(&env, &h.conf("1.1.0", json!({})));
    assert_eq!((rc, v["code"].as_u64()), (1, Some(50)), "{v}");
    assert!(v["msg"].as_str().unwrap().contains("not ready"), "{v}");
    h.fake.s.borrow_mut().daemon_up = false;
    let (rc, v) = h.call(&env, &h.conf("1.1.0", json!({})));
    assert_eq!((rc, v["code"].as_u64()), (1, Some(50)), "{v}");
    // STATUS is a 1.1.0 verb.
    let (rc, v) = h.call(&env, &h.conf("1.0.0", json!({})));
    assert_eq!((rc, v["code"].as_u64()), (1, Some(1)), "{v}");
}

#[test]
fn gc_removes_attachments_not_in_valid_list() {
    let h = Harness::new();
    h.add("1.1.0", "p1");
    h.add("1.1.0", "p2");
    // A leaked allocation with no endpoint.
    h.fake
        .s
        .borrow_mut()
        .ipam
        .as_mut()
        .unwrap()
        .allocate("ghost", "eth0", None)
        .unwrap();
    let env: HashMap<String, String> = [("CNI_COMMAND".to_string(), "GC".to_string())].into();
    let conf = h.conf(
        "1.1.0",
        json!({"cni.dev/valid-attachments": [{"containerID":"p1","ifname":"eth0"}]}),
    );
    let (rc, v) = h.call(&env, &conf);
    assert_eq!(rc, 0, "{v}");
    let s = h.fake.s.borrow();
    assert_eq!(s.endpoints.len(), 1);
    assert_eq!(
        s.endpoints
            .values()
            .next()
            .unwrap()
            .cni
            .as_ref()
            .unwrap()
            .container_id,
        "p1"
    );
    assert_eq!(s.host_links.len(), 1);
    let left = s.ipam.as_ref().unwrap().list();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].container_id, "p1");
    drop(s);
    let (rc, v) = h.call(&env, &h.conf("1.1.0", json!({})));
    assert_eq!(
        (rc, v["code"].as_u64()),
        (1, Some(7)),
        "GC without the list: {v}"
    );
}

#[test]
fn delegated_ipam_add_del_check_and_rollback() {
    let h = Harness::new();
    let ipam = json!({"ipam": {"type": "host-local", "subnet": "10.9.0.0/24"}});
    let (rc, v) = h.call(&h.env("ADD", "p1"), &h.conf("1.0.0", ipam.clone()));
    assert_eq!(rc, 0, "{v}");
    assert_eq!(
        v["ips"][0]["address"], "10.9.0.7/32",
        "first IPv4 of the plugin, as a /32"
    );
    assert_eq!(
        v["ips"][0]["gateway"], "169.254.1.1",
        "our gateway, not the plugin's"
    );
    assert_eq!(v["dns"]["nameservers"][0], "10.9.0.2");
    assert!(h.fake.s.borrow().ipam.as_ref().unwrap().list().is_empty());
    let mut conf = h.conf("1.0.0", ipam.clone());
    conf["prevResult"] = v;
    let (rc, v) = h.call(&h.env("CHECK", "p1"), &conf);
    assert_eq!(rc, 0, "{v}");
    let (rc, v) = h.call(&h.env("DEL", "p1"), &conf);
    assert_eq!(rc, 0, "{v}");
    let cmds: Vec<String> = h
        .fake
        .s
        .borrow()
        .execs
        .iter()
        .map(|e| e.1.clone())
        .collect();
    assert_eq!(cmds, ["ADD", "CHECK", "DEL"]);
    assert!(h.fake.s.borrow().execs[0].0.ends_with("host-local"));
    // A failed ADD gives the delegated address back with DEL.
    h.fake.s.borrow_mut().execs.clear();
    h.fake.s.borrow_mut().fail_wire = true;
    let (rc, _) = h.call(&h.env("ADD", "p1"), &h.conf("1.0.0", ipam.clone()));
    assert_eq!(rc, 1);
    let cmds: Vec<String> = h
        .fake
        .s
        .borrow()
        .execs
        .iter()
        .map(|e| e.1.clone())
        .collect();
    assert_eq!(cmds, ["ADD", "DEL"]);
    h.fake.s.borrow_mut().fail_wire = false;
    // The plugin's own error is passed on with its code.
    h.fake.s.borrow_mut().exec_reply = Some(ExecOutput {
        success: false,
        stdout: br#"{"cniVersion":"1.0.0","code":11,"msg":"range exhausted"}"#.to_vec(),
        stderr: Vec::new(),
    });
    let (rc, v) = h.call(&h.env("ADD", "p2"), &h.conf("1.0.0", ipam.clone()));
    assert_eq!((rc, v["code"].as_u64()), (1, Some(11)), "{v}");
    assert!(
        v["msg"]
            .as_str()
            .unwrap()
            .contains("host-local ADD: range exhausted"),
        "{v}"
    );
    h.fake.s.borrow_mut().exec_reply = None;
    // A plugin not in CNI_PATH.
    let (rc, v) = h.call(
        &h.env("ADD", "p2"),
        &h.conf("1.0.0", json!({"ipam": {"type": "dhcp"}})),
    );
    assert_eq!((rc, v["code"].as_u64()), (1, Some(103)), "{v}");
    assert!(
        v["msg"]
            .as_str()
            .unwrap()
            .contains("\"dhcp\" not found in CNI_PATH"),
        "{v}"
    );
    h.nothing_left();
}

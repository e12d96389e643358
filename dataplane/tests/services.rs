//! Kubernetes Services through kube-proxy's NAT in the node's stack, with xsknet as the
//! pod network (issue 8). Privileged: each test builds a node namespace running
//! `xsknetd` (two workers, so flows cross workers), pods made by the real CNI plugin,
//! an "outside" namespace behind a veth on the node, and writes the rules kube-proxy
//! writes: its iptables mode (KUBE-SERVICES / KUBE-SVC / KUBE-SEP chains with DNAT in
//! nat PREROUTING and OUTPUT, KUBE-MARK-MASQ / KUBE-POSTROUTING masquerade for
//! hairpin and NodePort) or its nftables mode (a `kube-proxy` table with a
//! `service-ips` verdict map). Both modes must pass the same checks:
//!
//! * ClusterIP TCP and UDP from a *connected* socket, pod → pod on the same node;
//! * a DNS query through a Service to a resolver pod (a small responder that answers
//!   A queries), from a connected UDP socket as resolvers use;
//! * hairpin: a pod reaching itself through its own Service;
//! * NodePort from a client in the outside namespace;
//! * hostPort through the reference `portmap` plugin chained after xsknet;
//! * pod egress to the outside namespace, seen there from the node's address (the
//!   daemon's masquerade);
//! * NetworkPolicy allow/deny identical on the direct path and through the Service.
//!
//! Everything (namespaces, daemon, rules living in the namespaces) goes away with the
//! fixtures' `Drop`, also when a test fails.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use common::{prefix, privileged, serve, sh, Daemon, Netns, Pod};

const A_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 10);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 11);
/// ClusterIP of "web" (TCP and UDP 80 → B:8080).
const WEB: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// ClusterIP of "self" (TCP 80 → A:8080): A's hairpin.
const SELF_SVC: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
/// ClusterIP of "dns" (UDP 53 → B:5353, the resolver).
const DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 53);
const NODE_PORT: u16 = 30080;
const HOST_PORT: u16 = 18080;
/// The node's address towards the outside namespace, and the outside client's.
const NODE_OUT: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
/// The address the resolver answers for any A query.
const ANSWER: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const TIMEOUT: Duration = Duration::from_secs(3);

/// One Service port as kube-proxy sees it.
struct Svc {
    name: &'static str,
    ip: Ipv4Addr,
    port: u16,
    proto: &'static str,
    endpoint: Ipv4Addr,
    target: u16,
    node_port: Option<u16>,
}

const SERVICES: &[Svc] = &[
    Svc {
        name: "web-tcp",
        ip: WEB,
        port: 80,
        proto: "tcp",
        endpoint: B_IP,
        target: 8080,
        node_port: Some(NODE_PORT),
    },
    Svc {
        name: "web-udp",
        ip: WEB,
        port: 80,
        proto: "udp",
        endpoint: B_IP,
        target: 8080,
        node_port: None,
    },
    Svc {
        name: "self-tcp",
        ip: SELF_SVC,
        port: 80,
        proto: "tcp",
        endpoint: A_IP,
        target: 8080,
        node_port: None,
    },
    Svc {
        name: "dns-udp",
        ip: DNS,
        port: 53,
        proto: "udp",
        endpoint: B_IP,
        target: 5353,
        node_port: None,
    },
];

/// kube-proxy's iptables mode, as `iptables-save` shows it for these Services.
fn iptables_rules() -> String {
    let mut r = String::from(
        "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n",
    );
    for s in SERVICES {
        r.push_str(&format!(
            ":KUBE-SVC-{0} - [0:0]\n:KUBE-SEP-{0} - [0:0]\n",
            s.name.to_uppercase()
        ));
        if s.node_port.is_some() {
            r.push_str(&format!(":KUBE-EXT-{} - [0:0]\n", s.name.to_uppercase()));
        }
    }
    r.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n\
         -A KUBE-POSTROUTING -j MASQUERADE --random-fully\n",
    );
    for s in SERVICES {
        let n = s.name.to_uppercase();
        r.push_str(&format!(
            "-A KUBE-SERVICES -d {ip}/32 -p {p} -m {p} --dport {port} -j KUBE-SVC-{n}\n\
             -A KUBE-SVC-{n} ! -s 10.244.0.0/16 -d {ip}/32 -p {p} -m {p} --dport {port} -j KUBE-MARK-MASQ\n\
             -A KUBE-SVC-{n} -j KUBE-SEP-{n}\n\
             -A KUBE-SEP-{n} -s {ep}/32 -j KUBE-MARK-MASQ\n\
             -A KUBE-SEP-{n} -p {p} -m {p} -j DNAT --to-destination {ep}:{t}\n",
            ip = s.ip,
            p = s.proto,
            port = s.port,
            ep = s.endpoint,
            t = s.target,
        ));
        if let Some(np) = s.node_port {
            r.push_str(&format!(
                "-A KUBE-NODEPORTS -p {p} -m {p} --dport {np} -j KUBE-EXT-{n}\n\
                 -A KUBE-EXT-{n} -j KUBE-MARK-MASQ\n\
                 -A KUBE-EXT-{n} -j KUBE-SVC-{n}\n",
                p = s.proto
            ));
        }
    }
    r.push_str("-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\nCOMMIT\n");
    r
}

/// kube-proxy's nftables mode: its `kube-proxy` table (maps of verdicts, the same
/// masquerade mark) for these Services.
fn nft_rules() -> String {
    let mut chains = String::new();
    let mut svc_elems = Vec::new();
    let mut np_elems = Vec::new();
    for s in SERVICES {
        let n = s.name;
        svc_elems.push(format!(
            "{} . {} . {} : goto service-{n}",
            s.ip, s.proto, s.port
        ));
        chains.push_str(&format!(
            "  chain service-{n} {{\n    ip daddr {ip} {p} dport {port} ip saddr != 10.244.0.0/16 jump mark-for-masquerade\n    numgen random mod 1 vmap {{ 0 : goto endpoint-{n} }}\n  }}\n  chain endpoint-{n} {{\n    ip saddr {ep} jump mark-for-masquerade\n    meta l4proto {p} dnat to {ep}:{t}\n  }}\n",
            ip = s.ip,
            p = s.proto,
            port = s.port,
            ep = s.endpoint,
            t = s.target,
        ));
        if let Some(np) = s.node_port {
            np_elems.push(format!("{} . {np} : goto external-{n}", s.proto));
            chains.push_str(&format!(
                "  chain external-{n} {{\n    jump mark-for-masquerade\n    goto service-{n}\n  }}\n"
            ));
        }
    }
    format!(
        "table ip kube-proxy {{\n\
         \x20 map service-ips {{\n    type ipv4_addr . inet_proto . inet_service : verdict\n    elements = {{ {} }}\n  }}\n\
         \x20 map service-nodeports {{\n    type inet_proto . inet_service : verdict\n    elements = {{ {} }}\n  }}\n\
         \x20 chain mark-for-masquerade {{\n    meta mark set meta mark or 0x4000\n  }}\n\
         \x20 chain masquerading {{\n    meta mark & 0x4000 == 0 return\n    meta mark set meta mark xor 0x4000\n    masquerade fully-random\n  }}\n\
         \x20 chain nodeports {{\n    meta l4proto . th dport vmap @service-nodeports\n  }}\n\
         \x20 chain services {{\n    ip daddr . meta l4proto . th dport vmap @service-ips\n    fib daddr type local ip daddr != 127.0.0.0/8 jump nodeports\n  }}\n\
         \x20 chain nat-prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    jump services\n  }}\n\
         \x20 chain nat-output {{\n    type nat hook output priority -100; policy accept;\n    jump services\n  }}\n\
         \x20 chain nat-postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    jump masquerading\n  }}\n\
         {chains}}}\n",
        svc_elems.join(", "),
        np_elems.join(", "),
    )
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Iptables,
    Nftables,
}

/// The node, its daemon, pods A and B, and the outside namespace.
struct World {
    node: Netns,
    daemon: Daemon,
    a: Pod,
    b: Pod,
    outside: Netns,
    dir: std::path::PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        for p in [&self.a, &self.b] {
            self.daemon.cni_del(&self.node, p);
        }
    }
}

impl World {
    fn new(tag: &str, mode: Mode) -> World {
        let t = prefix(tag);
        let node = Netns::new(&format!("{t}-node"));
        let daemon = Daemon::start(&node, &t, "workers:\n- core: 0\n- core: 1\n");
        let a = daemon.cni_pod(
            &node,
            &format!("{t}-a"),
            "default",
            "a",
            &[("app", "a")],
            A_IP,
        );
        let b = daemon.cni_pod(
            &node,
            &format!("{t}-b"),
            "default",
            "b",
            &[("app", "b")],
            B_IP,
        );
        serve(&b, &[8080]);
        serve(&a, &[8080]);
        resolver(&b, 5353);
        // The outside: a veth from the node, the node forwards.
        let outside = Netns::new(&format!("{t}-out"));
        let (nif, oif) = (format!("{t}-o0"), format!("{t}-o1"));
        let nif = &nif[nif.len().saturating_sub(15)..];
        let oif = &oif[oif.len().saturating_sub(15)..];
        sh(&[
            "ip",
            "-n",
            &node.name,
            "link",
            "add",
            nif,
            "type",
            "veth",
            "peer",
            "name",
            oif,
            "netns",
            &outside.name,
        ]);
        sh(&[
            "ip",
            "-n",
            &node.name,
            "addr",
            "add",
            &format!("{NODE_OUT}/24"),
            "dev",
            nif,
        ]);
        sh(&["ip", "-n", &node.name, "link", "set", nif, "up"]);
        sh(&[
            "ip",
            "-n",
            &outside.name,
            "addr",
            "add",
            &format!("{OUTSIDE}/24"),
            "dev",
            oif,
        ]);
        sh(&["ip", "-n", &outside.name, "link", "set", oif, "up"]);
        for kv in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            sh(&["ip", "netns", "exec", &node.name, "sysctl", "-qw", kv]);
        }
        let dir = daemon.dir.join("svc");
        std::fs::create_dir_all(&dir).unwrap();
        let w = World {
            node,
            daemon,
            a,
            b,
            outside,
            dir,
        };
        w.program(mode);
        w
    }

    /// Write kube-proxy's rules into the node namespace.
    fn program(&self, mode: Mode) {
        let (file, cmd): (&str, Vec<&str>) = match mode {
            Mode::Iptables => ("iptables.rules", vec!["iptables-restore", "--noflush"]),
            Mode::Nftables => ("kube-proxy.nft", vec!["nft", "-f"]),
        };
        let text = match mode {
            Mode::Iptables => iptables_rules(),
            Mode::Nftables => nft_rules(),
        };
        let path = self.dir.join(file);
        std::fs::write(&path, &text).unwrap();
        let p = path.to_string_lossy().to_string();
        let mut args = vec!["ip", "netns", "exec", &self.node.name];
        args.extend(cmd);
        args.push(&p);
        let out = common::try_sh(&args);
        assert!(
            out.status.success(),
            "{mode:?} rules refused: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn set_policy(&self, name: &str, yaml: &str) {
        let p = self.dir.join(format!("{name}.yaml"));
        std::fs::write(&p, yaml).unwrap();
        self.daemon
            .ctl_ok(&["policy", "apply", "-f", &p.to_string_lossy()]);
    }

    fn clear_policy(&self, name: &str) {
        self.daemon
            .ctl_ok(&["policy", "delete", &format!("default/{name}")]);
    }

    fn log(&self) -> String {
        self.daemon.log_text()
    }
}

/// TCP: connect, read the server's greeting, echo a line; the peer address the
/// client's socket saw.
fn tcp_echo(ns: &Netns, to: SocketAddr) -> Result<SocketAddr, String> {
    ns.run(|| -> std::io::Result<SocketAddr> {
        let mut c = TcpStream::connect_timeout(&to, TIMEOUT)?;
        c.set_read_timeout(Some(TIMEOUT))?;
        let mut k = [0u8; 1];
        c.read_exact(&mut k)?;
        c.write_all(b"hello")?;
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf)?;
        if &buf != b"hello" {
            return Err(std::io::Error::other("echo mismatch"));
        }
        c.peer_addr()
    })
    .map_err(|e| format!("TCP {to}: {e}"))
}

/// UDP from a *connected* socket (replies from any other address are dropped by the
/// kernel, exactly what breaks a resolver when the NAT is not reversed).
fn udp_connected(ns: &Netns, to: SocketAddr, msg: &[u8]) -> Result<Vec<u8>, String> {
    ns.run(|| -> std::io::Result<Vec<u8>> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(to)?;
        s.set_read_timeout(Some(Duration::from_millis(700)))?;
        let mut buf = [0u8; 1500];
        // A few tries: the first datagram may race the ARP of a fresh pod.
        let mut last = None;
        for _ in 0..4 {
            s.send(msg)?;
            match s.recv(&mut buf) {
                Ok(n) => return Ok(buf[..n].to_vec()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no reply")))
    })
    .map_err(|e| format!("UDP {to}: {e}"))
}

/// A DNS query for `name`, type A, class IN, with `id`.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// A resolver in `pod` on UDP `port`: answers every standard query with one A record
/// for [`ANSWER`] (a name pointer to the question, TTL 30).
fn resolver(pod: &Pod, port: u16) {
    let ip = pod.ip;
    let s: UdpSocket = pod
        .ns
        .run(|| UdpSocket::bind((ip, port)).expect("bind resolver"));
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            if n < 12 + 5 || buf[2] & 0x80 != 0 {
                continue;
            }
            let mut r = buf[..n].to_vec();
            r[2] = 0x81; // response, recursion desired
            r[3] = 0x80; // recursion available, no error
            r[6..8].copy_from_slice(&1u16.to_be_bytes()); // one answer
            r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
            r.extend_from_slice(&ANSWER.octets());
            let _ = s.send_to(&r, from);
        }
    });
}

/// Parse a response to [`dns_query`]: (id, the first A record).
fn dns_answer(r: &[u8], qlen: usize) -> Option<(u16, Ipv4Addr)> {
    if r.len() < qlen + 16 || r[2] & 0x80 == 0 || r[3] & 0x0f != 0 {
        return None;
    }
    let a = &r[qlen..];
    (a[2..4] == [0, 1]).then(|| {
        (
            u16::from_be_bytes([r[0], r[1]]),
            Ipv4Addr::new(a[12], a[13], a[14], a[15]),
        )
    })
}

/// A listener in the outside namespace: accepts one connection and reports the peer
/// address it saw.
fn outside_peer(out: &Netns, port: u16) -> std::thread::JoinHandle<Option<Ipv4Addr>> {
    let l: TcpListener = out.run(|| TcpListener::bind((OUTSIDE, port)).expect("bind outside"));
    l.set_nonblocking(false).unwrap();
    std::thread::spawn(move || {
        let (mut s, peer) = l.accept().ok()?;
        let _ = s.write_all(b"k");
        let mut buf = [0u8; 5];
        let _ = s.set_read_timeout(Some(TIMEOUT));
        if s.read_exact(&mut buf).is_ok() {
            let _ = s.write_all(&buf);
        }
        match peer {
            SocketAddr::V4(v) => Some(*v.ip()),
            SocketAddr::V6(_) => None,
        }
    })
}

/// hostPort through the reference portmap plugin chained after xsknet (the CNI
/// result of pod B's ADD as prevResult): DNAT of node:HOST_PORT to B:8080.
fn portmap_add(w: &World, command: &str) -> (i32, String) {
    let portmap = Path::new("/usr/lib/cni/portmap");
    assert!(
        portmap.exists(),
        "install containernetworking-plugins (Debian) for /usr/lib/cni"
    );
    let att = w.b.cni.as_ref().expect("B made by the CNI plugin");
    let prev = serde_json::json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": w.b.host_if}, {"name": "eth0", "sandbox": w.b.ns.path()}],
        "ips": [{"address": format!("{}/32", w.b.ip), "interface": 1}],
    });
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "xsknet", "type": "portmap",
        "capabilities": {"portMappings": true}, "snat": true,
        "runtimeConfig": {"portMappings": [{"hostPort": HOST_PORT, "containerPort": 8080, "protocol": "tcp"}]},
        "prevResult": prev,
    });
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &w.node.name])
        .arg(portmap)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &att.container_id)
        .env("CNI_NETNS", w.b.ns.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn portmap");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(&conf).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// Every Service case, in one world programmed in `mode`.
fn services_work(tag: &str, mode: Mode) {
    let w = World::new(tag, mode);
    let ctx = |what: &str| format!("{mode:?}: {what}\n--- daemon log\n{}", w.log());

    // Direct first (the baseline), then ClusterIP TCP: the client's socket sees the
    // Service address.
    tcp_echo(&w.a.ns, sa(B_IP, 8080)).unwrap_or_else(|e| panic!("{}", ctx(&e)));
    let peer = tcp_echo(&w.a.ns, sa(WEB, 80)).unwrap_or_else(|e| panic!("{}", ctx(&e)));
    assert_eq!(peer, sa(WEB, 80));
    // Many short connections: every one (new ports, new conntrack entries) works.
    for i in 0..20 {
        tcp_echo(&w.a.ns, sa(WEB, 80)).unwrap_or_else(|e| panic!("{}", ctx(&format!("#{i}: {e}"))));
    }

    // Connected UDP through the Service.
    let got =
        udp_connected(&w.a.ns, sa(WEB, 80), b"ping-udp").unwrap_or_else(|e| panic!("{}", ctx(&e)));
    assert_eq!(got, b"ping-udp");

    // DNS through the kube-dns-like Service, from a connected socket.
    let q = dns_query(0x1234, "web.default.svc.cluster.local");
    let r = udp_connected(&w.a.ns, sa(DNS, 53), &q).unwrap_or_else(|e| panic!("{}", ctx(&e)));
    assert_eq!(
        dns_answer(&r, q.len()),
        Some((0x1234, ANSWER)),
        "{}",
        ctx("DNS answer")
    );

    // Hairpin: A through its own Service (kube-proxy masquerades it).
    let peer = tcp_echo(&w.a.ns, sa(SELF_SVC, 80)).unwrap_or_else(|e| panic!("{}", ctx(&e)));
    assert_eq!(peer, sa(SELF_SVC, 80));

    // NodePort from the outside.
    tcp_echo(&w.outside, sa(NODE_OUT, NODE_PORT)).unwrap_or_else(|e| panic!("{}", ctx(&e)));

    // Pod egress to the outside, masqueraded to the node's address.
    sh(&[
        "ip",
        "-n",
        &w.outside.name,
        "route",
        "add",
        "default",
        "via",
        &NODE_OUT.to_string(),
    ]);
    let seen = outside_peer(&w.outside, 9000);
    tcp_echo(&w.a.ns, sa(OUTSIDE, 9000)).unwrap_or_else(|e| panic!("{}", ctx(&e)));
    assert_eq!(
        seen.join().unwrap(),
        Some(NODE_OUT),
        "{}",
        ctx("egress source")
    );

    // hostPort via portmap chained after xsknet (its own chains, next to kube-proxy's).
    let (rc, out) = portmap_add(&w, "ADD");
    assert_eq!(rc, 0, "portmap ADD: {out}");
    let r = tcp_echo(&w.outside, sa(NODE_OUT, HOST_PORT));
    let (rc_del, out_del) = portmap_add(&w, "DEL");
    r.unwrap_or_else(|e| panic!("{}", ctx(&format!("hostPort: {e}"))));
    assert_eq!(rc_del, 0, "portmap DEL: {out_del}");

    // NetworkPolicy: identical on the direct path and through the Service.
    let both = |what: &str, expect: bool| {
        let direct = tcp_echo(&w.a.ns, sa(B_IP, 8080)).is_ok();
        let svc = tcp_echo(&w.a.ns, sa(WEB, 80)).is_ok();
        let udp_direct = udp_connected(&w.a.ns, sa(B_IP, 8080), b"x").is_ok();
        let udp_svc = udp_connected(&w.a.ns, sa(WEB, 80), b"x").is_ok();
        assert_eq!(
            (direct, svc, udp_direct, udp_svc),
            (expect, expect, expect, expect),
            "{}",
            ctx(&format!(
                "{what}: (tcp direct, tcp via Service, udp direct, udp via Service)"
            ))
        );
    };
    let pol = |name: &str, spec: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n{spec}"
        )
    };
    both("no policy", true);
    // B isolated for ingress, nothing allowed.
    w.set_policy(
        "b-deny",
        &pol(
            "b-deny",
            "  podSelector: {matchLabels: {app: b}}\n  policyTypes: [Ingress]\n",
        ),
    );
    both("B denies all ingress", false);
    // … A allowed in (by its pod).
    w.set_policy(
        "b-allow-a",
        &pol("b-allow-a", "  podSelector: {matchLabels: {app: b}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {app: a}}\n"),
    );
    both("B allows A", true);
    w.clear_policy("b-allow-a");
    w.clear_policy("b-deny");
    // A isolated for egress: everything refused, through the Service too.
    w.set_policy(
        "a-deny",
        &pol(
            "a-deny",
            "  podSelector: {matchLabels: {app: a}}\n  policyTypes: [Egress]\n",
        ),
    );
    both("A denies all egress", false);
    // … except to B on 8080: the direct path and the Service (deferred to the DNATed
    // packet) both pass.
    w.set_policy(
        "a-allow-b",
        &pol("a-allow-b", "  podSelector: {matchLabels: {app: a}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - podSelector: {matchLabels: {app: b}}\n    ports:\n    - {port: 8080, protocol: TCP}\n    - {port: 8080, protocol: UDP}\n"),
    );
    both("A allows egress to B:8080", true);
    // The node itself (NodePort, masqueraded to the node's address) still reaches B
    // while B is isolated: the exemption is by address.
    w.clear_policy("a-allow-b");
    w.clear_policy("a-deny");
    w.set_policy(
        "b-deny",
        &pol(
            "b-deny",
            "  podSelector: {matchLabels: {app: b}}\n  policyTypes: [Ingress]\n",
        ),
    );
    tcp_echo(&w.outside, sa(NODE_OUT, NODE_PORT))
        .unwrap_or_else(|e| panic!("{}", ctx(&format!("NodePort with B isolated: {e}"))));
    tcp_echo(&w.a.ns, sa(WEB, 80)).expect_err("A through the Service with B isolated");
}

#[test]
fn kube_proxy_iptables_mode() {
    if !privileged() {
        return;
    }
    services_work("svi", Mode::Iptables);
}

#[test]
fn kube_proxy_nftables_mode() {
    if !privileged() {
        return;
    }
    services_work("svn", Mode::Nftables);
}

/// The daemon's masquerade table: installed at start, replaced (not stacked) by a
/// restart, kept across a restart, removed when turned off.
#[test]
fn masquerade_table_lifecycle() {
    if !privileged() {
        return;
    }
    let t = prefix("svm");
    let node = Netns::new(&format!("{t}-node"));
    let list = || {
        let out = common::try_sh(&[
            "ip", "netns", "exec", &node.name, "nft", "list", "table", "ip", "xsknet",
        ]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    };
    let mut d = Daemon::start(&node, &t, "clusterCidr: 10.244.0.0/16\n");
    let first = list().expect("table installed at start");
    assert!(first.contains("10.244.0.0/16"), "{first}");
    assert!(first.contains("masquerade"), "{first}");
    d.stop();
    assert!(list().is_some(), "kept across a restart");
    d.spawn();
    let again = list().expect("still there");
    assert_eq!(
        again.matches("masquerade").count(),
        first.matches("masquerade").count(),
        "not stacked"
    );
    d.stop();
    std::fs::write(
        &d.config,
        format!(
            "socket: {}\nstateDir: {}\npodCidr: {}\nmasquerade:\n  enabled: false\n",
            d.socket.display(),
            d.state.display(),
            testkit::POD_CIDR
        ),
    )
    .unwrap();
    d.spawn();
    assert!(list().is_none(), "removed when turned off");
}

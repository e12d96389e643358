//! Privileged integration tests of `sys::{netlink, ethtool, netns}` against the real
//! kernel, in throwaway network namespaces named `xs-sys-<pid>-<n>`.
//!
//! The product code only talks netlink/ioctl; these tests look at what it did with
//! `ip` and `ethtool`, the way an operator would. Every namespace and root-namespace
//! link a test makes is owned by a [`Scratch`] guard that removes it on drop, also when
//! the test panics. Without root the tests print `SKIP: needs root` and pass.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use xsknet_dataplane::sys::ethtool::{get_offloads, prepare_pod_interface, set_offloads};
use xsknet_dataplane::sys::netlink::{format_mac, Netlink, NetlinkError, RouteSpec};
use xsknet_dataplane::sys::netns::{current_netns_fd, open_netns, run_in_netns};
use xsknet_dataplane::sys::{read_sysctl, write_sysctl};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Skip (or, under the README's test command, fail) without root.
macro_rules! require_root {
    () => {
        if !testkit::privileged() {
            return;
        }
    };
}

/// Runs a command, panics with its output if it fails, returns stdout.
fn run(args: &[&str]) -> String {
    String::from_utf8_lossy(&testkit::sh(args).stdout).into_owned()
}

fn succeeds(args: &[&str]) -> bool {
    testkit::try_sh(args).status.success()
}

/// Owns the namespaces and root-namespace links a test creates.
struct Scratch {
    id: usize,
    netns: Vec<String>,
    links: Vec<String>,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            id: COUNTER.fetch_add(1, Ordering::Relaxed),
            netns: Vec::new(),
            links: Vec::new(),
        }
    }

    /// Creates namespace `xs-sys-<pid>-<n><tag>` and returns its name.
    fn netns(&mut self, tag: &str) -> String {
        let name = format!("xs-sys-{}-{}{tag}", std::process::id(), self.id);
        run(&["ip", "netns", "add", &name]);
        self.netns.push(name.clone());
        name
    }

    /// A root-namespace link name unique to this process and test (<= 15 bytes),
    /// registered for deletion.
    fn link_name(&mut self, tag: &str) -> String {
        let name = format!("xs{}{}{tag}", std::process::id() % 100_000, self.id);
        assert!(name.len() <= 15, "{name}");
        self.links.push(name.clone());
        name
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for link in &self.links {
            let _ = Command::new("ip").args(["link", "del", link]).output();
        }
        for ns in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn ns_path(ns: &str) -> PathBuf {
    PathBuf::from(format!("/run/netns/{ns}"))
}

/// The MAC `ip` shows for `dev` (in `ns` if given).
fn ip_mac(ns: Option<&str>, dev: &str) -> String {
    let mut args = vec!["ip"];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    args.extend(["-o", "link", "show", "dev", dev]);
    let out = run(&args);
    let mut words = out.split_whitespace();
    words
        .find(|w| *w == "link/ether")
        .and_then(|_| words.next())
        .unwrap_or_else(|| panic!("no link/ether in {out:?}"))
        .to_owned()
}

/// `ip netns exec NS ethtool -k IF` as a feature -> "on"/"off" lookup.
fn ethtool_k(ns: &str, dev: &str, feature: &str) -> String {
    let out = run(&["ip", "netns", "exec", ns, "ethtool", "-k", dev]);
    out.lines()
        .find_map(|l| {
            let (name, rest) = l.trim().split_once(':')?;
            (name == feature).then(|| rest.split_whitespace().next().unwrap_or("").to_owned())
        })
        .unwrap_or_else(|| panic!("{feature} not in ethtool -k output:\n{out}"))
}

#[test]
fn veth_with_peer_in_netns_mac_mtu_up() {
    require_root!();
    let mut s = Scratch::new();
    let pod = s.netns("p");
    let host = s.link_name("h");
    let pod_fd = open_netns(&ns_path(&pod)).unwrap();

    let mut nl = Netlink::new().unwrap();
    nl.create_veth(&host, "eth0", Some(pod_fd.as_fd())).unwrap();

    // The peer was created inside the pod namespace, never in ours.
    let link = nl.link_by_name(&host).unwrap().expect("host end exists");
    assert_eq!(link.kind.as_deref(), Some("veth"));
    assert!(link.peer_index.is_some());
    assert!(link.link_netnsid.is_some(), "peer lives in another netns");
    assert!(succeeds(&["ip", "-n", &pod, "link", "show", "dev", "eth0"]));

    // Same name again is EEXIST, reported with what was being done.
    let err = nl
        .create_veth(&host, "eth0", Some(pod_fd.as_fd()))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");
    assert!(
        err.to_string().contains(&format!("create veth {host}")),
        "{err}"
    );

    nl.set_mac(link.index, [0x02, 0x78, 0x73, 0, 0, 0x01])
        .unwrap();
    nl.set_mtu(link.index, 1450).unwrap();
    nl.set_link_up(link.index, true).unwrap();
    let shown = run(&["ip", "-o", "link", "show", "dev", &host]);
    assert!(shown.contains("mtu 1450"), "{shown}");
    assert!(shown.contains("link/ether 02:78:73:00:00:01"), "{shown}");
    assert!(
        shown.contains("<") && shown.split('>').next().unwrap().contains("UP"),
        "{shown}"
    );
    let again = nl.link_by_index(link.index).unwrap().unwrap();
    assert_eq!((again.mtu, again.up), (1450, true));
    assert_eq!(again.mac, Some([0x02, 0x78, 0x73, 0, 0, 0x01]));

    nl.set_link_up(link.index, false).unwrap();
    assert!(!nl.link_by_index(link.index).unwrap().unwrap().up);

    // Pod side, through a socket opened inside the pod namespace.
    let mut pod_nl = Netlink::new_in_netns(&ns_path(&pod)).unwrap();
    let eth0 = pod_nl.link_by_name("eth0").unwrap().expect("eth0 in pod");
    assert_eq!(Some(eth0.index), link.peer_index);
    pod_nl.set_mtu(eth0.index, 1400).unwrap();
    pod_nl.set_link_up(eth0.index, true).unwrap();
    let shown = run(&["ip", "-n", &pod, "-o", "link", "show", "dev", "eth0"]);
    assert!(shown.contains("mtu 1400"), "{shown}");
}

#[test]
fn addresses_and_routes_in_netns() {
    require_root!();
    let mut s = Scratch::new();
    let node = s.netns("n");
    let pod = s.netns("p");
    let pod_fd = open_netns(&ns_path(&pod)).unwrap();

    // A "node" namespace stands in for the root namespace so no route touches the host.
    let mut node_nl = Netlink::new_in_netns(&ns_path(&node)).unwrap();
    node_nl
        .create_veth("xsh1", "eth0", Some(pod_fd.as_fd()))
        .unwrap();
    let host = node_nl.link_by_name("xsh1").unwrap().unwrap();
    node_nl.set_link_up(host.index, true).unwrap();

    let mut nl = Netlink::new_in_netns(&ns_path(&pod)).unwrap();
    let eth0 = nl.link_by_name("eth0").unwrap().unwrap();
    nl.set_link_up(eth0.index, true).unwrap();

    let ip = "10.77.0.5".parse().unwrap();
    nl.add_address(eth0.index, ip, 32).unwrap();
    nl.add_address(eth0.index, ip, 32)
        .expect("second add is idempotent");
    assert_eq!(nl.list_addresses(eth0.index).unwrap(), vec![(ip, 32)]);
    let shown = run(&["ip", "-n", &pod, "-4", "addr", "show", "dev", "eth0"]);
    assert!(shown.contains("inet 10.77.0.5/32"), "{shown}");

    // Default route via the link-local gateway, as every pod gets it.
    let gw = "169.254.1.1".parse().unwrap();
    let default = RouteSpec {
        dst: "0.0.0.0".parse().unwrap(),
        prefix_len: 0,
        gateway: Some(gw),
        oif: eth0.index,
        onlink: true,
        src: None,
        scope_link: false,
        mtu: None,
    };
    nl.add_route(&default).unwrap();
    nl.add_route(&default).expect("replace semantics");
    let with_src = RouteSpec {
        src: Some(ip),
        ..default
    };
    nl.add_route(&with_src)
        .expect("replace an existing default route");
    let shown = run(&["ip", "-n", &pod, "route", "show", "default"]);
    assert!(
        shown.contains("default via 169.254.1.1 dev eth0")
            && shown.contains("onlink")
            && shown.contains("src 10.77.0.5"),
        "{shown}"
    );
    assert_eq!(shown.lines().count(), 1, "replaced, not appended: {shown}");
    let routes = nl.list_routes_v4().unwrap();
    let r = routes
        .iter()
        .find(|r| r.matches(&default))
        .unwrap_or_else(|| panic!("default route not listed: {routes:?}"));
    assert!(r.onlink);
    assert_eq!(r.table, 254);
    assert_eq!(r.src, Some(ip));

    // Node side: a scope-link host route to the pod over the host end.
    let to_pod = RouteSpec {
        dst: ip,
        prefix_len: 32,
        gateway: None,
        oif: host.index,
        onlink: false,
        src: None,
        scope_link: true,
        mtu: None,
    };
    node_nl.add_route(&to_pod).unwrap();
    let shown = run(&["ip", "-n", &node, "route", "show", "10.77.0.5/32"]);
    assert!(
        shown.contains("10.77.0.5 dev xsh1") && shown.contains("scope link"),
        "{shown}"
    );

    // Deletes report whether something was there; missing is not an error.
    assert!(node_nl.del_route(&to_pod).unwrap());
    assert!(!node_nl.del_route(&to_pod).unwrap());
    assert!(nl.del_route(&default).unwrap());
    assert!(!nl.del_route(&default).unwrap());
    assert_eq!(
        run(&["ip", "-n", &pod, "route", "show", "default"]).trim(),
        ""
    );
    assert!(nl.del_address(eth0.index, ip, 32).unwrap());
    assert!(!nl.del_address(eth0.index, ip, 32).unwrap());
    assert!(nl.list_addresses(eth0.index).unwrap().is_empty());

    // A kernel refusal names the operation and carries the errno.
    let bad = RouteSpec {
        dst: "10.1.2.3".parse().unwrap(),
        prefix_len: 8, // host bits set
        ..to_pod
    };
    let err = node_nl.add_route(&bad).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    assert!(err.to_string().starts_with("add route 10.1.2.3/8"), "{err}");
    eprintln!("kernel refusal reads: {err}");
}

#[test]
fn peer_mac_across_netns_matches_ip_link() {
    require_root!();
    let mut s = Scratch::new();
    let pod = s.netns("p");
    let host = s.link_name("h");
    let pod_fd = open_netns(&ns_path(&pod)).unwrap();
    let mut nl = Netlink::new().unwrap();
    nl.create_veth(&host, "eth0", Some(pod_fd.as_fd())).unwrap();

    let mac = nl.peer_mac(&host).unwrap();
    assert_eq!(format_mac(&mac), ip_mac(Some(&pod), "eth0"));
    assert_ne!(format_mac(&mac), ip_mac(None, &host), "peer, not self");

    // Follows a change made inside the pod.
    let mut pod_nl = Netlink::new_in_netns(&ns_path(&pod)).unwrap();
    let eth0 = pod_nl.link_by_name("eth0").unwrap().unwrap();
    pod_nl
        .set_mac(eth0.index, [0x02, 0, 0, 0xab, 0xcd, 0xef])
        .unwrap();
    assert_eq!(nl.peer_mac(&host).unwrap(), [0x02, 0, 0, 0xab, 0xcd, 0xef]);
    assert_eq!(ip_mac(Some(&pod), "eth0"), "02:00:00:ab:cd:ef");

    // From the pod side the host end is the peer, in the root namespace.
    assert_eq!(
        format_mac(&pod_nl.peer_mac("eth0").unwrap()),
        ip_mac(None, &host)
    );

    // Both ends in one namespace: no netnsid involved.
    let a = s.link_name("a");
    let b = s.link_name("b");
    nl.create_veth(&a, &b, None).unwrap();
    assert_eq!(format_mac(&nl.peer_mac(&a).unwrap()), ip_mac(None, &b));

    // Not a veth, or not there: typed errors, no panic.
    assert!(matches!(
        nl.peer_mac("lo"),
        Err(NetlinkError::WrongLink { .. })
    ));
    assert!(matches!(
        nl.peer_mac("xs-none-0"),
        Err(NetlinkError::NoSuchLink { .. })
    ));
}

#[test]
fn delete_link_is_idempotent_and_takes_the_peer() {
    require_root!();
    let mut s = Scratch::new();
    let pod = s.netns("p");
    let host = s.link_name("h");
    let pod_fd = open_netns(&ns_path(&pod)).unwrap();
    let mut nl = Netlink::new().unwrap();
    nl.create_veth(&host, "eth0", Some(pod_fd.as_fd())).unwrap();

    assert!(nl.delete_link(&host).unwrap());
    assert!(!nl.delete_link(&host).unwrap());
    assert_eq!(nl.link_by_name(&host).unwrap(), None);
    assert!(!succeeds(&[
        "ip", "-n", &pod, "link", "show", "dev", "eth0"
    ]));
    assert!(nl.link_by_index(0).unwrap().is_none());
    assert!(nl.link_by_index(u32::MAX).unwrap().is_none());

    // Bad names are refused before reaching the kernel.
    for bad in ["", "a/b", "0123456789abcdef"] {
        assert!(matches!(
            nl.delete_link(bad),
            Err(NetlinkError::InvalidArgument { .. })
        ));
    }
}

#[test]
fn set_netns_moves_and_renames() {
    require_root!();
    let mut s = Scratch::new();
    let a = s.netns("a");
    let b = s.netns("b");
    let b_fd = open_netns(&ns_path(&b)).unwrap();
    let mut nl = Netlink::new_in_netns(&ns_path(&a)).unwrap();
    nl.create_veth("xsa", "eth0", None).unwrap();
    let eth0 = nl.link_by_name("eth0").unwrap().unwrap();
    // Renamed while moving, so a name taken in the target does not matter.
    run(&[
        "ip", "-n", &b, "link", "add", "eth0", "type", "veth", "peer", "name", "xsb",
    ]);
    nl.set_netns(eth0.index, b_fd.as_fd(), Some("eth1"))
        .unwrap();
    assert_eq!(nl.link_by_name("eth0").unwrap(), None);
    assert!(succeeds(&["ip", "-n", &b, "link", "show", "dev", "eth1"]));
    // The remaining end now points across namespaces.
    let xsa = nl.link_by_name("xsa").unwrap().unwrap();
    assert!(xsa.link_netnsid.is_some());
    assert_eq!(
        format_mac(&nl.peer_mac("xsa").unwrap()),
        ip_mac(Some(&b), "eth1")
    );
}

#[test]
fn prepare_pod_interface_turns_offloads_off() {
    require_root!();
    let mut s = Scratch::new();
    let pod = s.netns("p");
    let host = s.link_name("h");
    let pod_fd = open_netns(&ns_path(&pod)).unwrap();
    let mut nl = Netlink::new().unwrap();
    nl.create_veth(&host, "eth0", Some(pod_fd.as_fd())).unwrap();

    // A fresh veth offloads everything: that is the problem being solved.
    assert_eq!(ethtool_k(&pod, "eth0", "tx-checksumming"), "on");
    assert_eq!(ethtool_k(&pod, "eth0", "tcp-segmentation-offload"), "on");

    run_in_netns(&ns_path(&pod), || prepare_pod_interface("eth0"))
        .unwrap()
        .unwrap();
    for feature in [
        "tx-checksumming",
        "scatter-gather",
        "tcp-segmentation-offload",
        "generic-segmentation-offload",
    ] {
        assert_eq!(ethtool_k(&pod, "eth0", feature), "off", "{feature}");
    }
    let read = run_in_netns(&ns_path(&pod), || get_offloads("eth0"))
        .unwrap()
        .unwrap();
    assert!(!read.tx_checksum && !read.scatter_gather && !read.tso && !read.gso);
    eprintln!(
        "after prepare_pod_interface, ethtool -k eth0 shows:\n{}",
        run(&["ip", "netns", "exec", &pod, "ethtool", "-k", "eth0"])
            .lines()
            .filter(|l| !l.contains("[fixed]"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Idempotent, and set_offloads can turn things back on.
    run_in_netns(&ns_path(&pod), || prepare_pod_interface("eth0"))
        .unwrap()
        .unwrap();
    let on = xsknet_dataplane::sys::ethtool::Offloads {
        tx_checksum: true,
        scatter_gather: true,
        tso: true,
        gso: true,
        gro: read.gro,
    };
    run_in_netns(&ns_path(&pod), || set_offloads("eth0", &on))
        .unwrap()
        .unwrap();
    assert_eq!(ethtool_k(&pod, "eth0", "tx-checksumming"), "on");
    assert_eq!(ethtool_k(&pod, "eth0", "tcp-segmentation-offload"), "on");

    // Outside the pod namespace there is no eth0 of that pod: ENODEV, named.
    let err = run_in_netns(&ns_path(&pod), || prepare_pod_interface("nope0"))
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("nope0"), "{err}");
}

#[test]
fn run_in_netns_sees_the_namespace_and_leaves_caller_alone() {
    require_root!();
    let mut s = Scratch::new();
    let pod = s.netns("p");
    let host = s.link_name("h");
    let pod_fd = open_netns(&ns_path(&pod)).unwrap();
    Netlink::new()
        .unwrap()
        .create_veth(&host, "eth0", Some(pod_fd.as_fd()))
        .unwrap();

    let ino = |p: &str| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    let before = ino("/proc/thread-self/ns/net").unwrap();
    let pod_ino = ino(&format!("/run/netns/{pod}")).unwrap();

    let (names, inside) = run_in_netns(&ns_path(&pod), || {
        let links = Netlink::new().unwrap().list_links().unwrap();
        let names: Vec<String> = links.into_iter().map(|l| l.name).collect();
        (names, ino("/proc/thread-self/ns/net").unwrap())
    })
    .unwrap();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, vec!["eth0".to_owned(), "lo".to_owned()]);
    assert_eq!(inside, pod_ino, "closure ran in the pod namespace");
    assert_eq!(
        ino("/proc/thread-self/ns/net").unwrap(),
        before,
        "caller unchanged"
    );
    current_netns_fd().unwrap();

    // Sysctls written inside belong to the pod.
    run_in_netns(&ns_path(&pod), || {
        write_sysctl("net/ipv4/conf/eth0/arp_ignore", "1")
    })
    .unwrap()
    .unwrap();
    let shown = run(&[
        "ip",
        "netns",
        "exec",
        &pod,
        "cat",
        "/proc/sys/net/ipv4/conf/eth0/arp_ignore",
    ]);
    assert_eq!(shown.trim(), "1");
    let inside = run_in_netns(&ns_path(&pod), || {
        read_sysctl("net/ipv4/conf/eth0/arp_ignore")
    })
    .unwrap()
    .unwrap();
    assert_eq!(inside, "1");

    // A panicking closure is an error, not a crash of the caller.
    let err = run_in_netns::<()>(&ns_path(&pod), || panic!("boom")).unwrap_err();
    assert!(err.to_string().contains("panicked"), "{err}");
    // A missing namespace is a typed error.
    assert!(run_in_netns(&ns_path("xs-sys-none"), || ()).is_err());
}

/// Opens an AF_PACKET socket bound to `ifindex` in the calling thread's namespace,
/// non-blocking, so a test can drain what crossed the link.
fn packet_socket(ifindex: u32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) with constant arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: sll is a valid sockaddr_ll and the length passed is its size.
    let rc = unsafe {
        libc::bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
    fd
}

/// One's-complement sum over `data` (big-endian 16-bit words), folded.
fn csum_add(mut sum: u32, data: &[u8]) -> u32 {
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// For an Ethernet/IPv4/TCP frame from `src`: (frame length, TCP checksum valid).
fn tcp_frame_check(frame: &[u8], src: [u8; 4]) -> Option<(usize, bool)> {
    if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip[9] != 6 || ip[12..16] != src || ihl < 20 || total < ihl || ip.len() < total {
        return None;
    }
    let tcp = &ip[ihl..total];
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    let sum = csum_add(csum_add(0, &pseudo), tcp);
    Some((frame.len(), sum == 0xffff))
}

/// What a pod's TCP bulk send looks like on the host end of its veth, with and
/// without `prepare_pod_interface`: (frames seen, largest frame, frames with a bad
/// TCP checksum).
fn capture_pod_tcp(prepare: bool) -> (usize, usize, usize) {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let mut s = Scratch::new();
    let node = s.netns("n");
    let pod = s.netns("p");
    let pod_fd = open_netns(&ns_path(&pod)).unwrap();
    let mut node_nl = Netlink::new_in_netns(&ns_path(&node)).unwrap();
    let mut pod_nl = Netlink::new_in_netns(&ns_path(&pod)).unwrap();
    node_nl
        .create_veth("xsh1", "eth0", Some(pod_fd.as_fd()))
        .unwrap();
    let host = node_nl.link_by_name("xsh1").unwrap().unwrap();
    let eth0 = pod_nl.link_by_name("eth0").unwrap().unwrap();
    node_nl
        .add_address(host.index, "10.78.0.1".parse().unwrap(), 24)
        .unwrap();
    pod_nl
        .add_address(eth0.index, "10.78.0.2".parse().unwrap(), 24)
        .unwrap();
    node_nl.set_link_up(host.index, true).unwrap();
    pod_nl.set_link_up(eth0.index, true).unwrap();
    if prepare {
        run_in_netns(&ns_path(&pod), || prepare_pod_interface("eth0"))
            .unwrap()
            .unwrap();
    }

    // Sockets keep the namespace they were created in.
    let capture = run_in_netns(&ns_path(&node), || packet_socket(host.index)).unwrap();
    let listener = run_in_netns(&ns_path(&node), || {
        std::net::TcpListener::bind("10.78.0.1:0").unwrap()
    })
    .unwrap();
    let addr = listener.local_addr().unwrap();
    let sender = std::thread::spawn(move || {
        let mut stream = run_in_netns(&ns_path(&pod), || {
            std::net::TcpStream::connect(addr).unwrap()
        })
        .unwrap();
        stream.write_all(&vec![0x5a; 512 * 1024]).unwrap();
    });
    let (mut conn, _) = listener.accept().unwrap();
    let mut received = Vec::new();
    conn.read_to_end(&mut received).unwrap();
    sender.join().unwrap();
    assert_eq!(received.len(), 512 * 1024);

    let (mut frames, mut largest, mut bad) = (0, 0, 0);
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        // SAFETY: buf is a live, writable buffer of buf.len() bytes.
        let n = unsafe { libc::recv(capture.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            break;
        }
        if let Some((len, ok)) = tcp_frame_check(&buf[..n as usize], [10, 78, 0, 2]) {
            frames += 1;
            largest = largest.max(len);
            bad += usize::from(!ok);
        }
    }
    (frames, largest, bad)
}

#[test]
fn prepared_pod_sends_complete_mtu_sized_frames() {
    require_root!();
    // Control: an unprepared veth pod really hands over super-frames and/or partial
    // checksums, so this test can see the problem it guards against.
    let (frames, largest, bad) = capture_pod_tcp(false);
    eprintln!("unprepared pod: {frames} TCP frames, largest {largest} B, {bad} bad checksums");
    assert!(frames > 0);
    assert!(largest > 1514 || bad > 0, "unprepared veth looked clean");

    let (frames, largest, bad) = capture_pod_tcp(true);
    eprintln!("prepared pod: {frames} TCP frames, largest {largest} B, {bad} bad checksums");
    // The capture socket's receive buffer may drop part of the burst; a few dozen
    // full-sized frames are plenty of evidence.
    assert!(
        frames > 20,
        "expected the bulk transfer to be seen, got {frames}"
    );
    assert!(largest <= 1514, "frame of {largest} bytes exceeds MTU 1500");
    assert_eq!(bad, 0, "frames with incomplete TCP checksum");
}

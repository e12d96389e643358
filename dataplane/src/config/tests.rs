//! Tests of the node configuration: defaults, round trips, every refusal.

use super::*;

fn err(yaml: &str) -> ConfigError {
    Config::from_yaml_str(yaml).expect_err(yaml)
}

fn assert_names(yaml: &str, field: &str) {
    let e = err(yaml);
    assert_eq!(e.field(), Some(field), "{yaml} -> {e}");
    let msg = e.to_string();
    assert!(msg.starts_with("invalid config <string>: "), "{msg}");
    assert!(msg.contains(field), "{msg}");
}

#[test]
fn empty_and_comment_only_files_are_defaults() {
    for yaml in ["", "\n", "# nothing\n", "---\n", "~\n", "{}\n"] {
        let c = Config::from_yaml_str(yaml).unwrap_or_else(|e| panic!("{yaml:?}: {e}"));
        assert_eq!(c, Config::default());
    }
}

#[test]
fn defaults() {
    let c = Config::default();
    assert_eq!(c.socket, PathBuf::from("/run/xsknet/xsknetd.sock"));
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/xsknet"));
    assert_eq!(c.pod_cidr.to_string(), "10.244.0.0/24");
    assert_eq!(c.workers.len(), 1);
    assert_eq!(Some(&c.workers[0].core), online_cpus().last());
    assert_eq!(c.umem.frame_size, 4096);
    assert_eq!(c.umem.frames_per_port, 992);
    assert_eq!(c.umem.ring_size, 512);
    assert_eq!(c.local_mtu(), Some(65535));
    assert_eq!(c.umem.max_ports_per_worker, 64);
    assert!(c.host_port.enabled);
    assert_eq!(c.host_port.name, "xsknet0");
    assert_eq!(c.host_port.peer_name, "xsknet0-dp");
    assert_eq!(c.idle.busy_poll_us, 1000);
    assert_eq!(c.idle.poll_timeout_ms, 100);
    assert_eq!(c.log_level, "info");
    assert_eq!(c.total_frames_per_worker(), 992 * 64);
    c.validate().unwrap();
}

#[test]
fn full_document_round_trips() {
    let yaml = "\
socket: /tmp/x/ctl.sock
stateDir: /tmp/x/state
podCidr: 10.1.2.0/23
workers:
  - core: 0
umem:
  frameSize: 4096
  framesPerPort: 2048
  ringSize: 1024
  maxPortsPerWorker: 8
hostPort:
  enabled: false
  name: hp0
  peerName: hp0-dp
idle:
  busyPollUs: 0
  pollTimeoutMs: 5
logLevel: debug,xsknet_dataplane=trace
";
    let c = Config::from_yaml_str(yaml).unwrap();
    assert_eq!(c.pod_cidr, "10.1.2.0/23".parse().unwrap());
    assert_eq!(c.umem.frame_size, 4096);
    assert!(!c.host_port.enabled);
    assert_eq!(c.total_frames_per_worker(), 16384);
    let again = serde_yaml_ng::to_string(&c).unwrap();
    assert_eq!(Config::from_yaml_str(&again).unwrap(), c);
}

#[test]
fn local_mtu_single_buffer_default_and_multi_buffer_limit() {
    assert_eq!(
        (max_single_buffer_mtu(2048), max_single_buffer_mtu(4096)),
        (1778, 3506)
    );
    assert_eq!((max_local_mtu(2048), max_local_mtu(4096)), (32242, 65535));
    let v = Config::from_yaml_str;
    let c = v("localMtu: 3500\numem:\n  frameSize: 4096\n").unwrap();
    assert_eq!(c.local_mtu(), Some(3500));
    let two_k = "umem:\n  frameSize: 2048\n  framesPerPort: 992\n  ringSize: 512\n";
    assert_eq!(
        v(&format!("localMtu: 1778\n{two_k}")).unwrap().local_mtu(),
        Some(1778)
    );
    // Unset: the default (multi-buffer), or one frame on an older kernel; 0: off.
    assert_eq!(v("").unwrap().local_mtu(), Some(65535));
    assert_eq!(v(two_k).unwrap().local_mtu(), Some(32242));
    let mut old = v("").unwrap();
    assert_eq!(old.fit_kernel("6.1.0-28-amd64"), Some(3506));
    assert_eq!((old.local_mtu(), old.multi_buffer()), (Some(3506), false));
    let mut new = v("").unwrap();
    assert_eq!(new.fit_kernel("6.18.44-fc-v669"), None);
    assert_eq!(new.local_mtu(), Some(65535));
    let mut explicit = v("localMtu: 9000\n").unwrap();
    assert_eq!(explicit.fit_kernel("5.15.0"), None);
    assert!(kernel_has_xdp_sg("6.6.0") && kernel_has_xdp_sg("7.0") && kernel_has_xdp_sg("?"));
    assert!(!kernel_has_xdp_sg("6.5.13") && !kernel_has_xdp_sg("5.19.1-x"));
    assert_eq!(v("localMtu: 0\n").unwrap().local_mtu(), None);
    // Above one frame: multi-buffer, up to MAX_CHAIN buffers (or 65535).
    let c = v("localMtu: 9000\n").unwrap();
    assert_eq!((c.local_mtu(), c.multi_buffer()), (Some(9000), true));
    assert!(v("").unwrap().multi_buffer());
    assert!(!v("localMtu: 3506\n").unwrap().multi_buffer());
    assert!(v(&format!("localMtu: 3000\n{two_k}"))
        .unwrap()
        .multi_buffer());
    for (y, range) in [
        (format!("localMtu: 32243\n{two_k}"), "1280..=32242"),
        ("localMtu: 65536\n".into(), "1280..=65535"),
        ("localMtu: 1000\n".into(), "1280..=65535"),
    ] {
        let e = v(&y).unwrap_err().to_string();
        assert!(e.contains("localMtu") && e.contains(range), "{y}: {e}");
    }
}

#[test]
fn partial_sections_keep_other_defaults() {
    let c = Config::from_yaml_str("umem:\n  ringSize: 128\n").unwrap();
    assert_eq!(c.umem.ring_size, 128);
    assert_eq!(c.umem.frame_size, 4096);
}

#[test]
fn type_errors_name_the_field_path() {
    assert_names("umem:\n  frameSize: big\n", "umem.frameSize");
    assert_names(
        "idle:\n  pollTimeoutMs: -5000000000\n",
        "idle.pollTimeoutMs",
    );
    assert_names("workers:\n  - core: x\n", "workers[0].core");
    assert_names("podCidr: 10.0.0.0\n", "podCidr");
    assert_names("podCidr: 10.0.0.0/33\n", "podCidr");
    assert_names("hostPort:\n  enabled: maybe\n", "hostPort.enabled");
}

#[test]
fn unknown_fields_are_refused_by_name() {
    let e = err("umem:\n  frameSze: 2048\n");
    let msg = e.to_string();
    assert!(msg.contains("umem"), "{msg}");
    assert!(msg.contains("frameSze"), "{msg}");
    let msg = err("sokcet: /x\n").to_string();
    assert!(msg.contains("sokcet"), "{msg}");
    let msg = err("workers:\n  - core: 0\n    cpu: 1\n").to_string();
    assert!(msg.contains("cpu"), "{msg}");
}

#[test]
fn bad_yaml_is_an_error() {
    let msg = err("umem: [\n").to_string();
    assert!(msg.starts_with("invalid config <string>: "), "{msg}");
    let msg = err("- a\n- b\n").to_string();
    assert!(msg.contains("invalid type"), "{msg}");
}

#[test]
fn every_validation_error_names_its_field() {
    let cases: &[(&str, &str)] = &[
        ("socket: relative.sock", "socket"),
        (&format!("socket: /{}", "s".repeat(120)), "socket"),
        ("stateDir: var/lib", "stateDir"),
        ("podCidr: 10.244.0.1/24", "podCidr"),
        ("podCidr: 10.0.0.0/7", "podCidr"),
        ("podCidr: 10.0.0.0/31", "podCidr"),
        ("workers: []", "workers"),
        ("workers: [{core: 100000}]", "workers[0].core"),
        ("workers: [{core: 0}, {core: 0}]", "workers[1].core"),
        ("umem: {frameSize: 3000}", "umem.frameSize"),
        ("umem: {ringSize: 500}", "umem.ringSize"),
        ("umem: {ringSize: 32}", "umem.ringSize"),
        (
            "umem: {ringSize: 32768, framesPerPort: 65536}",
            "umem.ringSize",
        ),
        (
            "umem: {framesPerPort: 64, ringSize: 64}",
            "umem.framesPerPort",
        ),
        (
            "umem: {framesPerPort: 256, ringSize: 512}",
            "umem.framesPerPort",
        ),
        ("umem: {maxPortsPerWorker: 0}", "umem.maxPortsPerWorker"),
        ("umem: {maxPortsPerWorker: 1025}", "umem.maxPortsPerWorker"),
        ("hostPort: {name: ''}", "hostPort.name"),
        ("hostPort: {name: abcdefghijklmnop}", "hostPort.name"),
        ("hostPort: {name: 'a/b'}", "hostPort.name"),
        ("hostPort: {name: 'a b'}", "hostPort.name"),
        ("hostPort: {peerName: '..'}", "hostPort.peerName"),
        ("hostPort: {peerName: xsknet0}", "hostPort.peerName"),
        ("idle: {busyPollUs: 1000001}", "idle.busyPollUs"),
        ("idle: {pollTimeoutMs: 0}", "idle.pollTimeoutMs"),
        ("idle: {pollTimeoutMs: 10001}", "idle.pollTimeoutMs"),
        ("logLevel: ''", "logLevel"),
        ("logLevel: 'info,foo=loud'", "logLevel"),
        ("uplink: {interface: 'a b'}", "uplink.interface"),
        ("overlay: {vni: 16777216}", "overlay.vni"),
        ("overlay: {port: 0}", "overlay.port"),
        (
            "podCidr: 10.244.1.0/24\noverlay: {podCidr: 10.244.2.0/24}",
            "overlay.podCidr",
        ),
        (
            "podCidr: 10.244.1.0/24\noverlay: {peers: [{name: b, podCidr: 10.244.1.0/25, underlayIp: 10.0.0.2, vtepMac: '02:00:00:00:00:02'}]}",
            "overlay.peers[0].podCidr",
        ),
        (
            "overlay: {peers: [{name: b, podCidr: 10.244.9.0/24, underlayIp: 0.0.0.0, vtepMac: '02:00:00:00:00:02'}]}",
            "overlay.peers[0].underlayIp",
        ),
    ];
    for (yaml, field) in cases {
        assert_names(yaml, field);
        let msg = err(yaml).to_string();
        assert!(msg.contains("(got "), "{msg}");
    }
}

#[test]
fn overlay_and_uplink_sections() {
    let c = Config::from_yaml_str(
        "podCidr: 10.244.1.0/24\nuplink: {interface: eth1, xdpMode: skb, zeroCopy: true}\n\
         overlay:\n  vni: 4096\n  port: 4789\n  peers:\n  - {name: b, podCidr: 10.244.2.0/24, underlayIp: 10.0.0.2, vtepMac: '02:00:00:00:00:02'}\n",
    )
    .unwrap();
    assert_eq!(c.uplink.interface.as_deref(), Some("eth1"));
    assert_eq!(
        (c.uplink.xdp_mode, c.uplink.zero_copy),
        (XdpMode::Skb, true)
    );
    let o = c.overlay.as_ref().unwrap();
    let peers = o.peer_records();
    assert_eq!(peers.len(), 1);
    assert_eq!((peers[0].vni, peers[0].vxlan_port), (4096, 4789));
    // No overlay section: a single node, as before.
    let c = Config::from_yaml_str("podCidr: 10.244.1.0/24\n").unwrap();
    assert_eq!((c.overlay, c.uplink), (None, UplinkConfig::default()));
    assert!(Config::from_yaml_str("uplink: {xdpMode: driver}").is_err());
    assert!(Config::from_yaml_str("overlay: {peers: [{name: b}]}").is_err());
}

#[test]
fn validation_message_format() {
    let msg = err("umem: {frameSize: 3000}").to_string();
    assert_eq!(
        msg,
        "invalid config <string>: umem.frameSize: must be 2048 or 4096 (got 3000)"
    );
}

#[test]
fn metrics_endpoint_is_off_by_default_and_takes_an_address() {
    assert_eq!(Config::default().metrics.listen, None);
    let c = Config::from_yaml_str("metrics: {listen: \"127.0.0.1:9464\"}\n").unwrap();
    assert_eq!(c.metrics.listen, Some("127.0.0.1:9464".parse().unwrap()));
    let e = Config::from_yaml_str("metrics: {listen: \"localhost\"}\n").unwrap_err();
    assert_eq!(e.field(), Some("metrics.listen"), "{e}");
    let e = Config::from_yaml_str("metrics: {port: 1}\n").unwrap_err();
    assert!(e.to_string().contains("port"), "{e}");
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.yaml");
    fs::write(&path, "umem: {frameSize: 1}\n").unwrap();
    let msg = Config::load(&path).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!(
            "invalid config {}: umem.frameSize",
            path.display()
        )),
        "{msg}"
    );
    let missing = dir.path().join("nope.yaml");
    let msg = Config::load(&missing).unwrap_err().to_string();
    assert!(msg.contains("nope.yaml"), "{msg}");
}

#[test]
fn example_node_yaml_documents_the_defaults() {
    let example = include_str!("../../../config/node.yaml");
    // The example writes podCidr out (which only matters with a datastore).
    let defaults = Config {
        pod_cidr_explicit: true,
        ..Config::default()
    };
    assert_eq!(Config::from_yaml_str(example).unwrap(), defaults);
    // Every field of the schema appears in the example (workers as a comment).
    for key in [
        "socket:",
        "stateDir:",
        "podCidr:",
        "workers:",
        "core:",
        "umem:",
        "frameSize:",
        "framesPerPort:",
        "ringSize:",
        "maxPortsPerWorker:",
        "hostPort:",
        "enabled:",
        "name:",
        "peerName:",
        "idle:",
        "busyPollUs:",
        "pollTimeoutMs:",
        "logLevel:",
    ] {
        assert!(example.contains(key), "config/node.yaml lacks {key}");
    }
}

#[test]
fn cidr_parse_and_display() {
    let c: Ipv4Cidr = "10.244.0.0/24".parse().unwrap();
    assert_eq!(c.addr, Ipv4Addr::new(10, 244, 0, 0));
    assert_eq!(c.prefix, 24);
    assert_eq!(c.to_string(), "10.244.0.0/24");
    assert!(c.contains(Ipv4Addr::new(10, 244, 0, 200)));
    assert!(!c.contains(Ipv4Addr::new(10, 244, 1, 0)));
    let h: Ipv4Cidr = "10.244.0.9/24".parse().unwrap();
    assert!(h.has_host_bits());
    assert_eq!(h.network(), Ipv4Addr::new(10, 244, 0, 0));
    let z: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
    assert_eq!(z.mask(), 0);
    for bad in [
        "10.0.0.0",
        "10.0.0/8",
        "10.0.0.0/33",
        "10.0.0.0/",
        "10.0.0.0/+8",
        "x/8",
    ] {
        assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
    }
    assert_eq!(serde_json::to_string(&c).unwrap(), "\"10.244.0.0/24\"");
}

#[test]
fn cpu_lists() {
    assert_eq!(parse_cpu_list("0-3,6\n"), Some(vec![0, 1, 2, 3, 6]));
    assert_eq!(parse_cpu_list("0"), Some(vec![0]));
    assert_eq!(parse_cpu_list("3-1"), None);
    assert_eq!(format_cpu_list(&[0, 1, 2, 3, 6, 8, 9]), "0-3,6,8-9");
    let c = Config {
        workers: vec![WorkerConfig { core: 5 }],
        ..Config::default()
    };
    assert!(c.validate_with_cpus(&[4, 5]).is_ok());
    let msg = c.validate_with_cpus(&[0, 1]).unwrap_err().to_string();
    assert!(msg.contains("online: 0-1"), "{msg}");
}

const DS: &str = "datastore: {type: etcd, endpoints: ['http://10.0.0.1:2379']}\n";

#[test]
fn datastore_and_node_name() {
    use crate::cluster::config::DatastoreConfig;
    use crate::cluster::etcd::SubnetRequest;
    // Static mode: nothing changes, no subnet request.
    let c = Config::from_yaml_str("podCidr: 10.244.3.0/24").unwrap();
    assert!(c.pod_cidr_explicit && c.datastore.is_none());
    assert_eq!(c.subnet_request(), None);
    assert!(
        !Config::from_yaml_str("logLevel: info")
            .unwrap()
            .pod_cidr_explicit
    );

    // Datastore, no prefix anywhere: claimed from overlay.clusterCidr.
    let c = Config::from_yaml_str(&format!("nodeName: node-a\n{DS}overlay: {{}}\n")).unwrap();
    assert_eq!(c.node_name(), "node-a");
    let Some(DatastoreConfig::Etcd(e)) = &c.datastore else {
        panic!("datastore decoded")
    };
    assert_eq!(e.endpoints, ["http://10.0.0.1:2379"]);
    assert_eq!(e.prefix, "/xsknet/v1/");
    assert_eq!(
        c.subnet_request(),
        Some(SubnetRequest::FromCluster {
            cluster: "10.244.0.0/16".parse().unwrap(),
            len: 24
        })
    );
    assert_eq!(
        c.masquerade_exclude(),
        "10.244.0.0/16".parse().unwrap(),
        "the whole cluster stays unmasqueraded"
    );
    // The top-level podCidr when set; overlay.podCidr first.
    let c = Config::from_yaml_str(&format!("podCidr: 10.244.9.0/24\n{DS}overlay: {{}}\n")).unwrap();
    assert_eq!(
        c.subnet_request(),
        Some(SubnetRequest::Fixed("10.244.9.0/24".parse().unwrap()))
    );
    let c = Config::from_yaml_str(&format!("{DS}overlay: {{podCidr: 10.244.7.0/24}}\n")).unwrap();
    assert_eq!(
        c.subnet_request(),
        Some(SubnetRequest::Fixed("10.244.7.0/24".parse().unwrap()))
    );
    // The default name is the host's.
    assert_eq!(
        Config::default().node_name(),
        host_name().to_ascii_lowercase()
    );
}

#[test]
fn datastore_errors_name_their_field() {
    for (yaml, field) in [
        (DS.to_string(), "overlay"),
        (
            format!("{DS}overlay: {{peers: [{{name: b, podCidr: 10.244.2.0/24, underlayIp: 10.0.0.2, vtepMac: '02:00:00:00:00:02'}}]}}\n"),
            "overlay.peers",
        ),
        (format!("podCidr: 10.9.0.0/24\n{DS}overlay: {{}}\n"), "podCidr"),
        (format!("nodeName: Node_A\n{DS}overlay: {{}}\n"), "nodeName"),
        ("nodeName: -x\n".to_string(), "nodeName"),
        (format!("policyDir: /etc/xsknet/policies\n{DS}overlay: {{}}\n"), "policyDir"),
        (
            "datastore: {type: etcd, endpoints: []}\noverlay: {}\n".to_string(),
            "datastore.endpoints",
        ),
        (
            "datastore: {type: etcd, endpoints: ['https://x:1']}\noverlay: {}\n".to_string(),
            "datastore.endpoints[0]",
        ),
        (
            "datastore: {type: etcd, endpoints: ['http://x:1'], leaseTtlSeconds: 1}\noverlay: {}\n"
                .to_string(),
            "datastore.leaseTtlSeconds",
        ),
    ] {
        assert_names(&yaml, field);
    }
    // Unknown keys and types are refused at decode time.
    assert!(Config::from_yaml_str("datastore: {type: consul, endpoints: []}").is_err());
    assert!(Config::from_yaml_str(&format!("{DS}overlay: {{}}\nnodename: a\n")).is_err());
}

//! Privileged test of the metrics endpoint (issue 12 point 7): `curl` of
//! `metrics.listen` inside the node's namespace shows the port and worker counters
//! moving with traffic between two pods, the control latency histogram, and parses as
//! Prometheus text (0.0.4, checked by a small parser here; by `promtool check metrics`
//! too when it is installed).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;

const LISTEN: &str = "127.0.0.1:9464";

fn scrape(node: &Netns) -> String {
    let url = format!("http://{LISTEN}/metrics");
    let out = node.exec(&["curl", "-sS", "--max-time", "5", "-D", "-", &url]);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8 exposition");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_string()
}

/// Parse the text exposition format 0.0.4: `# HELP`/`# TYPE` once per family before
/// its samples, sample lines `name{label="value",…} value` with escaped values.
/// Returns every sample as (name, labels) → value; panics naming the bad line.
fn parse(text: &str) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let mut typed = HashSet::new();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut it = rest.splitn(3, ' ');
            let (what, name) = (it.next().unwrap(), it.next().expect("family name"));
            if what == "TYPE" {
                let kind = it.next().expect("kind");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line}"
                );
                assert!(typed.insert(name.to_string()), "{name} typed twice");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                (name, parse_labels(body, line))
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "sample before its TYPE: {line}");
        assert!(
            out.insert((name.to_string(), labels), value).is_none(),
            "duplicate series: {line}"
        );
    }
    out
}

fn parse_labels(mut body: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while !body.is_empty() {
        let (k, rest) = body.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
        let mut v = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => v.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => v.push(c),
                    _ => panic!("bad escape in {line}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => v.push(c),
                None => panic!("unterminated label value in {line}"),
            }
        };
        labels.insert(k.to_string(), v);
        body = rest[end + 1..]
            .strip_prefix(',')
            .unwrap_or(&rest[end + 1..]);
    }
    labels
}

fn value(
    m: &BTreeMap<(String, BTreeMap<String, String>), f64>,
    name: &str,
    l: &[(&str, &str)],
) -> f64 {
    m.iter()
        .find(|((n, labels), _)| {
            n == name
                && l.iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {name}{l:?}"))
}

#[test]
fn metrics_endpoint_counts_traffic_and_parses_as_prometheus_text() {
    if !privileged() {
        return;
    }
    let p = prefix("mx");
    let node = Netns::new(&format!("{p}n"));
    let daemon = Daemon::start(&node, &p, &format!("metrics: {{listen: \"{LISTEN}\"}}\n"));
    let a = Pod::new(
        &node,
        &format!("{p}a"),
        &format!("{p}ha"),
        Ipv4Addr::new(10, 244, 0, 50),
    );
    let b = Pod::new(
        &node,
        &format!("{p}b"),
        &format!("{p}hb"),
        Ipv4Addr::new(10, 244, 0, 51),
    );
    daemon.attach(&a);
    daemon.attach(&b);

    let mut before = parse(&scrape(&node));
    // The sample follows within about a second of the attach.
    wait_until("both ports in the metrics", Duration::from_secs(10), || {
        before = parse(&scrape(&node));
        before
            .keys()
            .filter(|(n, _)| n == "xsknet_port_rx_packets_total")
            .count()
            >= 2
    });
    let rx = |m: &_| value(m, "xsknet_port_rx_packets_total", &[("ifname", &a.host_if)]);
    let rx_bytes = |m: &_| value(m, "xsknet_port_rx_bytes_total", &[("ifname", &a.host_if)]);
    let tx_b = |m: &_| value(m, "xsknet_port_tx_packets_total", &[("ifname", &b.host_if)]);
    let worker_rx = |m: &_| value(m, "xsknet_worker_rx_packets_total", &[("worker", "0")]);

    assert!(a.ping(b.ip, 3), "{}", daemon.log_text());
    let mut after = before.clone();
    wait_until(
        "counters moved with the pings",
        Duration::from_secs(10),
        || {
            after = parse(&scrape(&node));
            rx(&after) >= rx(&before) + 3.0 && tx_b(&after) >= tx_b(&before) + 3.0
        },
    );
    eprintln!(
        "metrics: port {} rx packets {} -> {}, bytes {} -> {}; worker 0 rx {} -> {}",
        a.host_if,
        rx(&before),
        rx(&after),
        rx_bytes(&before),
        rx_bytes(&after),
        worker_rx(&before),
        worker_rx(&after)
    );
    assert!(rx_bytes(&after) > rx_bytes(&before));
    assert!(worker_rx(&after) > worker_rx(&before));

    // The other families are there.
    let has = |name: &str| after.keys().any(|(n, _)| n == name);
    for name in [
        "xsknet_up",
        "xsknet_conntrack_entries",
        "xsknet_conntrack_capacity",
        "xsknet_worker_generation",
        "xsknet_status_ready",
        "xsknet_status_endpoints",
        "xsknet_persist_errors_total",
        "xsknet_datastore_enabled",
        "xsknet_control_connections",
        "xsknet_control_request_duration_seconds_count",
    ] {
        assert!(has(name), "no {name} in\n{}", scrape(&node));
    }
    assert_eq!(value(&after, "xsknet_status_endpoints", &[]), 2.0);
    assert_eq!(value(&after, "xsknet_datastore_enabled", &[]), 0.0);
    // Two endpoint_add requests were timed (histogram buckets cumulative, +Inf = count).
    let adds = value(
        &after,
        "xsknet_control_request_duration_seconds_count",
        &[("op", "endpoint_add")],
    );
    assert_eq!(adds, 2.0);
    let inf = value(
        &after,
        "xsknet_control_request_duration_seconds_bucket",
        &[("op", "endpoint_add"), ("le", "+Inf")],
    );
    assert_eq!(inf, adds);

    // Dropped packets show by reason: a packet from a spoofed source.
    let spoofed = |m: &_| {
        m_get(
            m,
            "xsknet_port_drops_total",
            &[("ifname", &a.host_if), ("reason", "spoofed_source")],
        )
    };
    let s0 = spoofed(&after);
    let _ =
        a.ns.exec(&["ip", "addr", "add", "10.244.0.99/32", "dev", "eth0"]);
    let _ = a.ns.exec(&[
        "ping",
        "-c",
        "2",
        "-i",
        "0.2",
        "-W",
        "1",
        "-I",
        "10.244.0.99",
        &b.ip.to_string(),
    ]);
    wait_until("spoofed drops counted", Duration::from_secs(10), || {
        spoofed(&parse(&scrape(&node))) > s0
    });

    // promtool, when installed, agrees the text is valid.
    if std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok()
    {
        let body = scrape(&node);
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        // Lint warnings (exit 3) are fine; a parse error (exit 1) is not.
        assert_ne!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Other paths are refused.
    let out = node.exec(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{LISTEN}/nope"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
}

fn m_get(
    m: &BTreeMap<(String, BTreeMap<String, String>), f64>,
    name: &str,
    l: &[(&str, &str)],
) -> f64 {
    m.iter()
        .find(|((n, labels), _)| {
            n == name
                && l.iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map_or(0.0, |(_, v)| *v)
}

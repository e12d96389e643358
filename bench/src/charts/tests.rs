//! The chart tool on hand-written fixtures (`fixtures/`, in the formats `run.sh`,
//! the TCP-by-MTU script, the scaling bench and `sockperf pp --full-log` write):
//! parsing, errors that name file and line, and rendering into a temporary directory
//! (each PNG exists with the chart's dimensions). Needs the DejaVu font (Debian
//! fonts-dejavu-core).

use std::path::{Path, PathBuf};

use super::render::{HEIGHT, WIDTH};
use super::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/charts/fixtures")
}

/// Width and height from a PNG's IHDR chunk (after checking the signature).
fn png_size(p: &Path) -> (u32, u32) {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(b.len() > 24, "{}: too short for a PNG", p.display());
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{}: not a PNG", p.display());
    assert_eq!(&b[12..16], b"IHDR");
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn parse_error_line(e: ChartError) -> (PathBuf, usize, String) {
    match e {
        ChartError::Parse { path, line, msg } => (path, line, msg),
        other => panic!("want a parse error, got {other}"),
    }
}

#[test]
fn renders_every_chart_from_the_fixtures() {
    let out = tempfile::tempdir().unwrap();
    let done = run(&fixtures(), out.path(), Path::new(DEFAULT_FONT)).unwrap();
    let mut written: Vec<String> = Vec::new();
    for o in done {
        match o {
            Outcome::Written(p) => {
                assert_eq!(png_size(&p), (WIDTH, HEIGHT), "{}", p.display());
                written.push(p.file_name().unwrap().to_string_lossy().into());
            }
            other => panic!("every fixture chart renders: {other:?}"),
        }
    }
    written.sort();
    assert_eq!(
        written,
        [
            "latency.png",
            "pps.png",
            "scaling.png",
            "tcp-mtu.png",
            "tcp.png"
        ]
    );
}

#[test]
fn missing_inputs_skip_their_charts() {
    let input = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write(
        input.path(),
        "scaling-x.csv",
        "mode,workers,pairs,delivered_pps,loadavg\nm,1,1,100,0.5\n",
    );
    let done = run(input.path(), out.path(), Path::new(DEFAULT_FONT)).unwrap();
    let skipped: Vec<&str> = done
        .iter()
        .filter_map(|o| match o {
            Outcome::Skipped { chart, .. } => Some(*chart),
            _ => None,
        })
        .collect();
    assert_eq!(
        skipped,
        ["pps.png", "tcp.png", "latency.png", "tcp-mtu.png"]
    );
    assert!(matches!(&done[4], Outcome::Written(p) if png_size(p) == (WIDTH, HEIGHT)));
    // A directory that does not exist: everything skipped, nothing fails.
    let none = run(
        &input.path().join("nope"),
        out.path(),
        Path::new(DEFAULT_FONT),
    )
    .unwrap();
    assert!(none.iter().all(|o| matches!(o, Outcome::Skipped { .. })));
}

#[test]
fn sockperf_log_is_one_way_latency_from_tx_and_rx_times() {
    let h =
        parse::sockperf_log(&fixtures().join("e2e-20261130T000000Z-bridge-latency.csv")).unwrap();
    assert_eq!(h.len(), 400);
    // The fixture's one-way latency is 11..13 µs, plus 15 µs on every 97th sample.
    assert!(
        (11_000..13_100).contains(&h.value_at_quantile(0.5)),
        "{}",
        h.value_at_quantile(0.5)
    );
    assert!(h.max() >= 26_000 && h.max() < 28_100, "{}", h.max());
    // Exact arithmetic on the timestamps: RTT 7,777 ns is 3,888 ns one way.
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "one.csv",
        "packet, txTime(sec), rxTime(sec), latency(usec)\n0, 2.467976962, 2.467984739, 3.888\n",
    );
    let h = parse::sockperf_log(&p).unwrap();
    assert_eq!((h.len(), h.max()), (1, h.highest_equivalent(3_888)));
}

#[test]
fn malformed_inputs_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hdr = "packet, txTime(sec), rxTime(sec), latency(usec)\n";
    for (text, line, says) in [
        (
            format!("x\n{hdr}0, 1.0, 1.1, 5\nbanana\n"),
            4,
            "not a sample",
        ),
        (format!("{hdr}0, 2.0, 1.0, 5\n"), 2, "before txTime"),
        (format!("{hdr}0, 1.0, 1.x, 5\n"), 2, "not a sample"),
        (format!("{hdr}0, 1.0, 1.0000000001, 5\n"), 2, "not a sample"),
        (format!("{hdr}0, 1.0, 1.1, 5, 6\n"), 2, "5 fields"),
        ("no header at all\n1, 2, 3, 4\n".into(), 0, "not a sockperf"),
        (hdr.into(), 0, "no samples"),
    ] {
        let p = write(d, "s.csv", &text);
        let (path, l, msg) = parse_error_line(parse::sockperf_log(&p).unwrap_err());
        assert_eq!((path, l), (p.clone(), line), "{text:?}: {msg}");
        assert!(msg.contains(says), "{text:?}: {msg}");
    }
    let scal = "mode,workers,pairs,delivered_pps,loadavg\n";
    for (text, line, says) in [
        (
            format!("{scal}m,1,1,100,0.5\nm,0,1,100,0.5\n"),
            3,
            "workers",
        ),
        (format!("{scal}m,1,1,-3,0.5\n"), 2, "delivered_pps"),
        (format!("{scal}m,1,1,NaN,0.5\n"), 2, "delivered_pps"),
        (format!("{scal}m,1,1,100\n"), 2, "4 fields"),
        (format!("{scal}m,1,1,\"100,0.5\n"), 2, "open quote"),
        (
            "mode,workers,delivered_pps\n".into(),
            1,
            "no column \"pairs\"",
        ),
        (String::new(), 1, "no header"),
    ] {
        let p = write(d, "scaling-bad.csv", &text);
        let (path, l, msg) = parse_error_line(parse::scaling(&p).unwrap_err());
        assert_eq!((path, l), (p.clone(), line), "{text:?}: {msg}");
        assert!(msg.contains(says), "{text:?}: {msg}");
    }
    let tcp = "datapath,local_mtu,frame_size,gbps,retransmits,loadavg\n";
    let p = write(d, "t.csv", &format!("{tcp}xsknet,9000,4k,1,0,1\n"));
    let (_, l, msg) = parse_error_line(parse::tcp_mtu(&p).unwrap_err());
    assert_eq!(l, 2, "{msg}");
    // JSON: a syntax error reports its line; a schema error too; bad numbers are named.
    let p = write(d, "e2e-a.json", "{\"peers\": [\n {\"peer\": 3}\n]}");
    let (_, l, msg) = parse_error_line(parse::e2e(&p).unwrap_err());
    assert_eq!(l, 2, "{msg}");
    let p = write(
        d,
        "e2e-b.json",
        "{\"peers\": [{\"peer\":\"x\",\"tcp\":{\"gbps\":-1}}]}",
    );
    let (_, _, msg) = parse_error_line(parse::e2e(&p).unwrap_err());
    assert!(msg.contains("peer x tcp gbps"), "{msg}");
    // samples_file may not leave the JSON's directory.
    for bad in ["../etc/passwd", "/etc/passwd", ""] {
        assert!(parse::samples_path(&p, bad).is_err(), "{bad}");
    }
    assert_eq!(
        parse::samples_path(&p, "a/b.csv").unwrap(),
        d.join("a/b.csv")
    );
}

#[test]
fn a_bad_input_fails_its_chart_and_the_others_still_render() {
    let input = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let fx = fixtures();
    for f in [
        "e2e-20261130T000000Z.json",
        "e2e-20261130T000000Z-bridge-latency.csv",
    ] {
        std::fs::copy(fx.join(f), input.path().join(f)).unwrap();
    }
    // xsknet's samples file is corrupt at line 3.
    write(
        input.path(),
        "e2e-20261130T000000Z-xsknet-latency.csv",
        "packet, txTime(sec), rxTime(sec), latency(usec)\n0, 1.0, 1.00001, 5\nzzz\n",
    );
    let done = run(input.path(), out.path(), Path::new(DEFAULT_FONT)).unwrap();
    let failed: Vec<String> = done
        .iter()
        .filter_map(|o| match o {
            Outcome::Failed { chart, error } => Some(format!("{chart}: {error}")),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].starts_with("latency.png: ") && failed[0].contains("xsknet-latency.csv:3:"),
        "{failed:?}"
    );
    for png in ["pps.png", "tcp.png"] {
        assert_eq!(png_size(&out.path().join(png)), (WIDTH, HEIGHT));
    }
}

#[test]
fn newest_file_wins_and_criterion_results_become_a_scaling_csv() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for n in [
        "e2e-20261129T000000Z.json",
        "e2e-20261130T000000Z.json",
        "e2e-x.md",
    ] {
        write(d, n, "{}");
    }
    let m = matching(d, "e2e-", ".json").unwrap();
    assert_eq!(m.last().unwrap(), &d.join("e2e-20261130T000000Z.json"));
    assert_eq!(m.len(), 2);
    // A criterion tree as `cargo bench` leaves it.
    let g = d.join("criterion/forward_scaling");
    for (case, ns, elements) in [
        ("1_worker_local", 3200.0, 64),
        ("2_workers_cross", 5120.0, 128),
    ] {
        // The local case has a slope (used; its mean is off by 2x), the cross case none.
        let slope = if case == "1_worker_local" {
            format!("{{\"point_estimate\":{ns},\"standard_error\":1.0}}")
        } else {
            "null".to_string()
        };
        let c = g.join(case).join("new");
        std::fs::create_dir_all(&c).unwrap();
        write(
            &c,
            "estimates.json",
            &format!("{{\"mean\":{{\"confidence_interval\":{{}},\"point_estimate\":{},\"standard_error\":1.0}},\"slope\":{slope}}}", if slope == "null" { ns } else { ns * 2.0 }),
        );
        write(
            &c,
            "benchmark.json",
            &format!("{{\"group_id\":\"forward_scaling\",\"function_id\":\"{case}\",\"throughput\":{{\"Elements\":{elements}}}}}"),
        );
    }
    write(&g.join("1_worker_local"), "loadavg.txt", "1.50 -> 1.70\n");
    std::fs::create_dir_all(g.join("report")).unwrap();
    let csv = criterion::scaling_csv(&d.join("criterion")).unwrap();
    assert_eq!(
        csv,
        "mode,workers,pairs,delivered_pps,loadavg\n\
         criterion-local,1,1,20000000,1.50 -> 1.70\n\
         criterion-cross,2,2,25000000,unknown\n"
    );
    let p = criterion::write_scaling_csv(&d.join("criterion"), &d.join("out")).unwrap();
    let rows = parse::scaling(&p).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(p
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("scaling-criterion-20"));
    assert_eq!(
        criterion::utc_stamp(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_000_000)),
        "20261130T005320Z"
    );
}

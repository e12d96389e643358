//! `pktgen`: the e2e bench's UDP generator (`send`) and counter (`sink`); see
//! `bench::pktgen` for the contract and bench/e2e/README.md for how run.sh uses it.
//!
//!   ip netns exec POD pktgen send --dst-mac M --src-ip A --dst-ip B --duration 5
//!   ip netns exec POD pktgen sink --bind B:9000 --idle 2
//!
//! Prints one JSON object on stdout; diagnostics (the fallback reason) on stderr.
//! Exit status: 0 ok, 2 bad arguments, 1 any other failure.

use std::time::Instant;

use bench::pktgen::frame::FrameSpec;
use bench::pktgen::mmsg::MmsgSender;
use bench::pktgen::xdp::XdpSender;
use bench::pktgen::{
    self, args::XDP_MAX_SIZE, Frame, Limits, Mode, Pacer, PktgenError, SendArgs, SinkArgs,
};
use clap::{Parser, Subcommand};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "pktgen",
    about = "UDP/IPv4 generator (AF_XDP TX or sendmmsg) and sink"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Send UDP/IPv4 frames on an interface.
    Send(SendArgs),
    /// Count UDP datagrams on a socket (sequence gaps per stream).
    Sink(SinkArgs),
}

fn main() {
    let cli = Cli::parse();
    let stop = match xsknet_sys::signal::install_stop_handlers() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pktgen: signal handlers: {e}");
            std::process::exit(1);
        }
    };
    let r = match cli.cmd {
        Cmd::Send(a) => send(&a, stop),
        Cmd::Sink(a) => sink(&a, stop),
    };
    match r {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("pktgen: {e}");
            std::process::exit(if matches!(e, PktgenError::Args(_)) {
                2
            } else {
                1
            });
        }
    }
}

enum Sender {
    Xdp(Box<XdpSender>),
    Mmsg(Box<MmsgSender>),
}

fn send(
    a: &SendArgs,
    stop: &'static std::sync::atomic::AtomicBool,
) -> Result<serde_json::Value, PktgenError> {
    let spec = a.validate()?;
    let src_mac = match spec.src_mac {
        Some(m) => m,
        None => pktgen::mac_of(&spec.dev)?,
    };
    let frame = Frame::new(&FrameSpec {
        dst_mac: spec.dst_mac,
        src_mac,
        src_ip: spec.src_ip,
        dst_ip: spec.dst_ip,
        src_port: spec.src_port,
        dst_port: spec.dst_port,
        flows: spec.flows,
        size: spec.size,
        stream: spec.stream,
    })?;
    if let Some(cpu) = spec.cpu {
        pktgen::pin_to_cpu(cpu).map_err(|source| PktgenError::Io {
            what: "pin to --cpu",
            ifname: spec.dev.clone(),
            source,
        })?;
    }
    let mut fallback: Option<String> = None;
    let mut sender = match spec.mode {
        Mode::Xdp => Sender::Xdp(Box::new(XdpSender::open(&spec.dev, &frame)?)),
        Mode::Mmsg => Sender::Mmsg(Box::new(MmsgSender::open(&spec.dev, &frame, spec.batch)?)),
        Mode::Auto if frame.len() > XDP_MAX_SIZE => {
            fallback = Some(format!(
                "frame of {} bytes is larger than one UMEM frame allows ({XDP_MAX_SIZE})",
                frame.len()
            ));
            Sender::Mmsg(Box::new(MmsgSender::open(&spec.dev, &frame, spec.batch)?))
        }
        Mode::Auto => match XdpSender::open(&spec.dev, &frame) {
            Ok(s) => Sender::Xdp(Box::new(s)),
            Err(e) => {
                fallback = Some(e.to_string());
                Sender::Mmsg(Box::new(MmsgSender::open(&spec.dev, &frame, spec.batch)?))
            }
        },
    };
    if let Some(why) = &fallback {
        eprintln!("pktgen: AF_XDP not used ({why}); falling back to sendmmsg");
    }
    let start = Instant::now();
    let limits = Limits {
        deadline: spec.duration.map(|d| start + d),
        count: spec.count,
        stop,
    };
    let mut pacer = Pacer::new(spec.pps, spec.batch as u64, start);
    let (mode, (report, end)) = match &mut sender {
        Sender::Xdp(s) => ("xdp", s.run(&frame, &mut pacer, &limits, spec.batch)),
        Sender::Mmsg(s) => ("mmsg", s.run(&frame, &mut pacer, &limits)?),
    };
    let secs = end.duration_since(start).as_secs_f64().max(1e-9);
    Ok(json!({
        "mode": mode,
        "fallback": fallback,
        "dev": spec.dev,
        "frame_size": frame.len(),
        "flows": spec.flows,
        "stream": spec.stream,
        "target_pps": spec.pps,
        "offered_packets": report.packets,
        "offered_bytes": report.bytes,
        "seconds": (secs * 1e6).round() / 1e6,
        "pps": (report.packets as f64 / secs).round(),
        "gbps": ((report.bytes as f64 * 8.0 / secs / 1e9) * 1e4).round() / 1e4,
        "tx_errors": report.tx_errors,
        "ring_full": report.ring_full,
    }))
}

fn sink(
    a: &SinkArgs,
    stop: &'static std::sync::atomic::AtomicBool,
) -> Result<serde_json::Value, PktgenError> {
    let spec = a.validate()?;
    if let Some(cpu) = spec.cpu {
        pktgen::pin_to_cpu(cpu).map_err(|source| PktgenError::Io {
            what: "pin to --cpu",
            ifname: spec.bind.to_string(),
            source,
        })?;
    }
    let r = pktgen::sink::run(&spec, stop)?;
    let pps = if r.seconds > 0.0 {
        (r.datagrams as f64 / r.seconds).round()
    } else {
        0.0
    };
    Ok(json!({
        "bind": spec.bind.to_string(),
        "datagrams": r.datagrams,
        "bytes": r.bytes,
        "seconds": (r.seconds * 1e6).round() / 1e6,
        "pps": pps,
        "gaps": r.gaps.gaps,
        "late": r.gaps.late,
        "unstamped": r.gaps.unstamped,
        "streams": r.gaps.streams(),
        "one_way_mean_us": (r.one_way_mean_us * 10.0).round() / 10.0,
        "one_way_max_us": (r.one_way_max_us * 10.0).round() / 10.0,
        "recv_errors": r.recv_errors,
    }))
}

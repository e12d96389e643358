//! Command-line arguments of `pktgen send` and `pktgen sink`, and their validation.
//!
//! clap parses plain numbers and strings; [`SendArgs::validate`] and
//! [`SinkArgs::validate`] turn them into specs whose every field is in range, or an
//! [`ArgError`] that names the flag and the accepted range. Nothing here touches a
//! socket, so every rule is unit-tested.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use xsknet_dataplane::xsk::HEADROOM;

/// Smallest frame: 60 bytes without FCS (64 on the wire), room for the 18-byte stamp.
pub const MIN_SIZE: usize = 60;
/// Largest frame (an IPv4 total length of 65521: within the 16-bit length field).
pub const MAX_SIZE: usize = 65535;
/// Largest UMEM frame the dataplane's port takes.
pub const UMEM_FRAME_MAX: usize = 4096;
/// Largest frame AF_XDP TX carries here: one UMEM frame minus the headroom the port
/// leaves in front of every packet (no multi-buffer TX).
pub const XDP_MAX_SIZE: usize = UMEM_FRAME_MAX - HEADROOM;
pub const MAX_PPS: u64 = 100_000_000;
pub const MAX_BATCH: usize = 256;
pub const MAX_DURATION_S: f64 = 86_400.0;

/// Which transmit path to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// AF_XDP when it opens and the frame fits one UMEM frame, else sendmmsg (logged).
    Auto,
    /// AF_XDP TX only (copy mode).
    Xdp,
    /// sendmmsg on an AF_PACKET socket (qdisc bypass).
    Mmsg,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Xdp => "xdp",
            Mode::Mmsg => "mmsg",
        }
    }
}

/// `pktgen send`: UDP/IPv4 frames out of one interface.
#[derive(Clone, Debug, clap::Args)]
pub struct SendArgs {
    /// Interface to send on (in the current network namespace).
    #[arg(long, default_value = "eth0")]
    pub dev: String,
    /// Destination MAC (the gateway's, or the receiving pod's on a plain L2 path).
    #[arg(long)]
    pub dst_mac: String,
    /// Source MAC [default: the interface's own].
    #[arg(long)]
    pub src_mac: Option<String>,
    #[arg(long)]
    pub src_ip: String,
    #[arg(long)]
    pub dst_ip: String,
    /// First UDP source port; flow i uses src-port + i.
    #[arg(long, default_value_t = 40000)]
    pub src_port: u32,
    #[arg(long, default_value_t = 9)]
    pub dst_port: u32,
    /// Number of flows (UDP source ports, round robin per packet).
    #[arg(long, default_value_t = 1)]
    pub flows: u32,
    /// Ethernet frame length without FCS: 60 is a 64-byte frame on the wire.
    #[arg(long, default_value_t = 60)]
    pub size: u64,
    /// Fixed rate in packets per second [default: max rate].
    #[arg(long)]
    pub pps: Option<u64>,
    /// Seconds to send (fractions allowed).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Packets to send.
    #[arg(long)]
    pub count: Option<u64>,
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    /// Packets per batch (one ring flush / one sendmmsg).
    #[arg(long, default_value_t = 64)]
    pub batch: u64,
    /// Pin the sender to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Stream id written into every payload (tells the sink's gap counts apart when
    /// several generators send to one sink).
    #[arg(long, default_value_t = 0)]
    pub stream: u32,
}

/// Validated `send` arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct SendSpec {
    pub dev: String,
    pub dst_mac: [u8; 6],
    pub src_mac: Option<[u8; 6]>,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub flows: u16,
    pub size: usize,
    pub pps: Option<u64>,
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    pub mode: Mode,
    pub batch: usize,
    pub cpu: Option<usize>,
    pub stream: u16,
}

/// `pktgen sink`: count UDP datagrams arriving on one socket.
#[derive(Clone, Debug, clap::Args)]
pub struct SinkArgs {
    /// Address and port to bind, e.g. 10.244.0.3:9000.
    #[arg(long)]
    pub bind: String,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Stop after this many datagrams.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop when nothing arrived for this many seconds after the first datagram.
    #[arg(long)]
    pub idle: Option<f64>,
    /// Datagrams per recvmmsg.
    #[arg(long, default_value_t = 64)]
    pub batch: u64,
    /// Pin the sink to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
}

/// Validated `sink` arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkSpec {
    pub bind: SocketAddrV4,
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    pub idle: Option<Duration>,
    pub batch: usize,
    pub cpu: Option<usize>,
}

/// A rejected argument: the flag, what was wrong, what is accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgError {
    #[error("{flag} must be {range} (got {got})")]
    Range {
        flag: &'static str,
        range: String,
        got: String,
    },
    #[error("{flag}: {got:?} is not {what}")]
    Format {
        flag: &'static str,
        what: &'static str,
        got: String,
    },
    #[error("give --duration S or --count N (or both): the generator needs an end")]
    NoEnd,
    #[error("--src-port {src_port} + --flows {flows} runs past port 65535")]
    FlowsPastPortRange { src_port: u16, flows: u16 },
    #[error("--size {size} does not fit one UMEM frame (AF_XDP carries at most {XDP_MAX_SIZE} bytes here, no multi-buffer): use --mode mmsg or auto")]
    XdpFrameTooBig { size: usize },
}

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    flag: &'static str,
    v: T,
    lo: T,
    hi: T,
) -> Result<T, ArgError> {
    if v < lo || v > hi {
        return Err(ArgError::Range {
            flag,
            range: format!("{lo}..={hi}"),
            got: v.to_string(),
        });
    }
    Ok(v)
}

fn seconds(flag: &'static str, s: f64) -> Result<Duration, ArgError> {
    if !s.is_finite() || !(0.001..=MAX_DURATION_S).contains(&s) {
        return Err(ArgError::Range {
            flag,
            range: format!("0.001..={MAX_DURATION_S} seconds"),
            got: s.to_string(),
        });
    }
    Ok(Duration::from_secs_f64(s))
}

/// `aa:bb:cc:dd:ee:ff` (case-insensitive); None when it is not one.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(out)
}

fn mac(flag: &'static str, s: &str) -> Result<[u8; 6], ArgError> {
    parse_mac(s).ok_or_else(|| ArgError::Format {
        flag,
        what: "a MAC address (aa:bb:cc:dd:ee:ff)",
        got: s.to_string(),
    })
}

fn ipv4(flag: &'static str, s: &str) -> Result<Ipv4Addr, ArgError> {
    s.parse().map_err(|_| ArgError::Format {
        flag,
        what: "an IPv4 address",
        got: s.to_string(),
    })
}

impl SendArgs {
    pub fn validate(&self) -> Result<SendSpec, ArgError> {
        let dst_mac = mac("--dst-mac", &self.dst_mac)?;
        let src_mac = self
            .src_mac
            .as_deref()
            .map(|m| mac("--src-mac", m))
            .transpose()?;
        let src_ip = ipv4("--src-ip", &self.src_ip)?;
        let dst_ip = ipv4("--dst-ip", &self.dst_ip)?;
        let src_port = range("--src-port", self.src_port, 1, 65535)? as u16;
        let dst_port = range("--dst-port", self.dst_port, 1, 65535)? as u16;
        let flows = range("--flows", self.flows, 1, 65535)? as u16;
        if u32::from(src_port) + u32::from(flows) - 1 > 65535 {
            return Err(ArgError::FlowsPastPortRange { src_port, flows });
        }
        let size = range("--size", self.size, MIN_SIZE as u64, MAX_SIZE as u64)? as usize;
        let pps = self
            .pps
            .map(|p| range("--pps", p, 1, MAX_PPS))
            .transpose()?;
        let duration = self
            .duration
            .map(|s| seconds("--duration", s))
            .transpose()?;
        let count = self
            .count
            .map(|c| range("--count", c, 1, u64::MAX))
            .transpose()?;
        if duration.is_none() && count.is_none() {
            return Err(ArgError::NoEnd);
        }
        let batch = range("--batch", self.batch, 1, MAX_BATCH as u64)? as usize;
        let stream = range("--stream", self.stream, 0, 65535)? as u16;
        if self.mode == Mode::Xdp && size > XDP_MAX_SIZE {
            return Err(ArgError::XdpFrameTooBig { size });
        }
        Ok(SendSpec {
            dev: self.dev.clone(),
            dst_mac,
            src_mac,
            src_ip,
            dst_ip,
            src_port,
            dst_port,
            flows,
            size,
            pps,
            duration,
            count,
            mode: self.mode,
            batch,
            cpu: self.cpu,
            stream,
        })
    }
}

impl SinkArgs {
    pub fn validate(&self) -> Result<SinkSpec, ArgError> {
        let bind = self.bind.parse().map_err(|_| ArgError::Format {
            flag: "--bind",
            what: "an IPv4 address:port",
            got: self.bind.clone(),
        })?;
        Ok(SinkSpec {
            bind,
            duration: self
                .duration
                .map(|s| seconds("--duration", s))
                .transpose()?,
            count: self
                .count
                .map(|c| range("--count", c, 1, u64::MAX))
                .transpose()?,
            idle: self.idle.map(|s| seconds("--idle", s)).transpose()?,
            batch: range("--batch", self.batch, 1, MAX_BATCH as u64)? as usize,
            cpu: self.cpu,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send() -> SendArgs {
        SendArgs {
            dev: "eth0".into(),
            dst_mac: "02:00:00:00:00:02".into(),
            src_mac: None,
            src_ip: "10.244.0.2".into(),
            dst_ip: "10.244.0.3".into(),
            src_port: 40000,
            dst_port: 9,
            flows: 1,
            size: 60,
            pps: None,
            duration: Some(1.0),
            count: None,
            mode: Mode::Auto,
            batch: 64,
            cpu: None,
            stream: 0,
        }
    }

    fn err(a: SendArgs) -> String {
        a.validate().unwrap_err().to_string()
    }

    #[test]
    fn defaults_validate() {
        let s = send().validate().unwrap();
        assert_eq!(s.dst_mac, [2, 0, 0, 0, 0, 2]);
        assert_eq!(s.size, 60);
        assert_eq!(s.pps, None);
        assert_eq!(s.duration, Some(Duration::from_secs(1)));
    }

    #[test]
    fn pps_range() {
        assert_eq!(
            err(SendArgs {
                pps: Some(0),
                ..send()
            }),
            "--pps must be 1..=100000000 (got 0)"
        );
        assert!(err(SendArgs {
            pps: Some(MAX_PPS + 1),
            ..send()
        })
        .starts_with("--pps must be 1..=100000000"));
        assert_eq!(
            SendArgs {
                pps: Some(1000),
                ..send()
            }
            .validate()
            .unwrap()
            .pps,
            Some(1000)
        );
    }

    #[test]
    fn size_range_and_xdp_limit() {
        assert_eq!(
            err(SendArgs { size: 59, ..send() }),
            "--size must be 60..=65535 (got 59)"
        );
        assert!(err(SendArgs {
            size: 70000,
            ..send()
        })
        .starts_with("--size must be 60..=65535"));
        let big = SendArgs {
            size: XDP_MAX_SIZE as u64 + 1,
            mode: Mode::Xdp,
            ..send()
        };
        assert_eq!(
            big.validate(),
            Err(ArgError::XdpFrameTooBig {
                size: XDP_MAX_SIZE + 1
            })
        );
        assert!(err(big).contains("use --mode mmsg"));
        // the same frame is fine for mmsg and auto (which falls back)
        for mode in [Mode::Mmsg, Mode::Auto] {
            assert!(SendArgs {
                size: 9000,
                mode,
                ..send()
            }
            .validate()
            .is_ok());
        }
        assert!(SendArgs {
            size: XDP_MAX_SIZE as u64,
            mode: Mode::Xdp,
            ..send()
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn needs_an_end() {
        assert_eq!(
            SendArgs {
                duration: None,
                count: None,
                ..send()
            }
            .validate(),
            Err(ArgError::NoEnd)
        );
        assert!(err(SendArgs {
            duration: Some(0.0),
            ..send()
        })
        .starts_with("--duration must be 0.001..="));
        assert!(err(SendArgs {
            duration: Some(f64::NAN),
            ..send()
        })
        .starts_with("--duration must be"));
        assert_eq!(
            err(SendArgs {
                count: Some(0),
                duration: None,
                ..send()
            }),
            format!("--count must be 1..={} (got 0)", u64::MAX)
        );
    }

    #[test]
    fn flows_and_ports() {
        assert_eq!(
            err(SendArgs { flows: 0, ..send() }),
            "--flows must be 1..=65535 (got 0)"
        );
        assert_eq!(
            SendArgs {
                src_port: 65000,
                flows: 536,
                ..send()
            }
            .validate()
            .unwrap()
            .flows,
            536
        );
        assert_eq!(
            SendArgs {
                src_port: 65000,
                flows: 537,
                ..send()
            }
            .validate(),
            Err(ArgError::FlowsPastPortRange {
                src_port: 65000,
                flows: 537
            })
        );
        assert_eq!(
            err(SendArgs {
                dst_port: 70000,
                ..send()
            }),
            "--dst-port must be 1..=65535 (got 70000)"
        );
        assert_eq!(
            err(SendArgs { batch: 0, ..send() }),
            "--batch must be 1..=256 (got 0)"
        );
    }

    #[test]
    fn addresses() {
        assert_eq!(
            err(SendArgs {
                dst_mac: "02:00:00:00:00".into(),
                ..send()
            }),
            "--dst-mac: \"02:00:00:00:00\" is not a MAC address (aa:bb:cc:dd:ee:ff)"
        );
        assert!(err(SendArgs {
            src_mac: Some("zz:00:00:00:00:01".into()),
            ..send()
        })
        .starts_with("--src-mac"));
        assert!(err(SendArgs {
            dst_ip: "10.244.0".into(),
            ..send()
        })
        .starts_with("--dst-ip: \"10.244.0\" is not an IPv4 address"));
        assert_eq!(
            parse_mac("AA:bb:0:1:2:ff"),
            Some([0xaa, 0xbb, 0, 1, 2, 0xff])
        );
        assert!(parse_mac("aa:bb:cc:dd:ee:ff:00").is_none());
        assert!(parse_mac("aaa:bb:cc:dd:ee:ff").is_none());
    }

    #[test]
    fn sink_args() {
        let s = SinkArgs {
            bind: "10.244.0.3:9000".into(),
            duration: None,
            count: Some(10),
            idle: Some(2.0),
            batch: 64,
            cpu: None,
        };
        let v = s.validate().unwrap();
        assert_eq!(v.bind, "10.244.0.3:9000".parse().unwrap());
        assert_eq!(v.idle, Some(Duration::from_secs(2)));
        assert_eq!(
            SinkArgs {
                bind: "10.244.0.3".into(),
                ..s.clone()
            }
            .validate()
            .unwrap_err()
            .to_string(),
            "--bind: \"10.244.0.3\" is not an IPv4 address:port"
        );
        assert!(SinkArgs { batch: 1000, ..s }.validate().is_err());
    }
}

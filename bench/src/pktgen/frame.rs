//! The generator's frame: Ethernet + IPv4 + UDP, built once as a template, then
//! stamped per packet in O(1).
//!
//! Layout (offsets in the frame): Ethernet 0..14, IPv4 14..34 (no options, DF, TTL 64,
//! ident 0, header checksum filled once: it never changes), UDP 34..42, payload 42..,
//! whose first [`STAMP_LEN`] bytes are the stamp: sequence number (u64 BE), send time
//! in CLOCK_MONOTONIC nanoseconds (u64 BE) and the generator's stream id (u16 BE, fixed
//! per generator, part of the template). The rest of the payload is zero.
//!
//! Per packet [`Frame::stamp`] writes the UDP source port (flow), sequence number and
//! timestamp and the UDP checksum, computed from a precomputed sum of everything that
//! does not change (pseudo-header, fixed header words, payload) plus the changed words:
//! no re-summing of the payload, so a 9000-byte frame costs what a 60-byte one does.

use std::net::Ipv4Addr;

use xsknet_dataplane::packet::checksum;

/// Ethernet header length.
pub const ETH_LEN: usize = 14;
/// Offset of the IPv4 header.
pub const OFF_IP: usize = ETH_LEN;
/// Offset of the UDP header.
pub const OFF_UDP: usize = OFF_IP + 20;
/// Offset of the UDP payload (the stamp).
pub const OFF_PAYLOAD: usize = OFF_UDP + 8;
/// Bytes of the stamp at the start of the payload.
pub const STAMP_LEN: usize = 18;

/// What one generator sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSpec {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub flows: u16,
    /// Frame length without FCS.
    pub size: usize,
    pub stream: u16,
}

/// A frame that cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame size {0} outside {min}..={max}", min = OFF_PAYLOAD + STAMP_LEN, max = 65535)]
    Size(usize),
    #[error("flows must be at least 1 and src port + flows - 1 at most 65535")]
    Flows,
}

/// The per-packet fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub seq: u64,
    pub ts_ns: u64,
    /// Flow index, 0..flows: the UDP source port is `src_port + flow`.
    pub flow: u16,
}

/// The template and the checksum sum of its fixed part.
#[derive(Clone, Debug)]
pub struct Frame {
    template: Vec<u8>,
    base_sum: u64,
    src_port: u16,
    flows: u16,
}

#[inline]
fn words64(v: u64) -> u64 {
    (v >> 48) + ((v >> 32) & 0xffff) + ((v >> 16) & 0xffff) + (v & 0xffff)
}

impl Frame {
    pub fn new(spec: &FrameSpec) -> Result<Frame, FrameError> {
        if spec.size < OFF_PAYLOAD + STAMP_LEN || spec.size > 65535 {
            return Err(FrameError::Size(spec.size));
        }
        if spec.flows == 0 || u32::from(spec.src_port) + u32::from(spec.flows) - 1 > 65535 {
            return Err(FrameError::Flows);
        }
        let mut f = vec![0u8; spec.size];
        f[0..6].copy_from_slice(&spec.dst_mac);
        f[6..12].copy_from_slice(&spec.src_mac);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip_len = (spec.size - ETH_LEN) as u16;
        let udp_len = ip_len - 20;
        {
            let ip = &mut f[OFF_IP..OFF_UDP];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
            ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
            ip[8] = 64;
            ip[9] = 17;
            ip[12..16].copy_from_slice(&spec.src_ip.octets());
            ip[16..20].copy_from_slice(&spec.dst_ip.octets());
            let c = checksum::checksum(ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
        }
        f[OFF_UDP + 2..OFF_UDP + 4].copy_from_slice(&spec.dst_port.to_be_bytes());
        f[OFF_UDP + 4..OFF_UDP + 6].copy_from_slice(&udp_len.to_be_bytes());
        f[OFF_PAYLOAD + 16..OFF_PAYLOAD + 18].copy_from_slice(&spec.stream.to_be_bytes());
        // Fixed part of the UDP checksum: pseudo-header + the UDP header and payload as
        // they are in the template (source port, checksum, seq and time still zero).
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&spec.src_ip.octets());
        pseudo[4..8].copy_from_slice(&spec.dst_ip.octets());
        pseudo[9] = 17;
        pseudo[10..12].copy_from_slice(&udp_len.to_be_bytes());
        let base_sum = checksum::sum(&pseudo) + checksum::sum(&f[OFF_UDP..]);
        Ok(Frame {
            template: f,
            base_sum,
            src_port: spec.src_port,
            flows: spec.flows,
        })
    }

    /// The template (stamp fields zero). Buffers handed to [`stamp`](Self::stamp)
    /// must start with a copy of it.
    pub fn template(&self) -> &[u8] {
        &self.template
    }

    pub fn len(&self) -> usize {
        self.template.len()
    }

    pub fn is_empty(&self) -> bool {
        self.template.is_empty()
    }

    pub fn flows(&self) -> u16 {
        self.flows
    }

    /// Write the per-packet fields into `buf`, which holds a copy of the template.
    /// O(1): the UDP checksum is the fixed sum plus the changed words.
    #[inline]
    pub fn stamp(&self, buf: &mut [u8], st: Stamp) {
        let port = self.src_port.wrapping_add(st.flow);
        let acc = self.base_sum + u64::from(port) + words64(st.seq) + words64(st.ts_ns);
        let mut c = !checksum::fold(acc);
        if c == 0 {
            c = 0xffff; // RFC 768: a computed zero is sent as all ones
        }
        buf[OFF_UDP..OFF_UDP + 2].copy_from_slice(&port.to_be_bytes());
        buf[OFF_UDP + 6..OFF_UDP + 8].copy_from_slice(&c.to_be_bytes());
        buf[OFF_PAYLOAD..OFF_PAYLOAD + 8].copy_from_slice(&st.seq.to_be_bytes());
        buf[OFF_PAYLOAD + 8..OFF_PAYLOAD + 16].copy_from_slice(&st.ts_ns.to_be_bytes());
    }
}

/// The stamp of a received UDP payload: (sequence, send time ns, stream), if the
/// payload is long enough to hold one.
#[inline]
pub fn read_stamp(payload: &[u8]) -> Option<(u64, u64, u16)> {
    let s = payload.get(..STAMP_LEN)?;
    let seq = u64::from_be_bytes(s[0..8].try_into().ok()?);
    let ts = u64::from_be_bytes(s[8..16].try_into().ok()?);
    let stream = u16::from_be_bytes([s[16], s[17]]);
    Some((seq, ts, stream))
}

#[cfg(test)]
mod tests {
    use super::*;
    use xsknet_dataplane::packet::{ethernet, ipv4, udp};

    fn spec(size: usize) -> FrameSpec {
        FrameSpec {
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_mac: [2, 0, 0, 0, 0, 1],
            src_ip: Ipv4Addr::new(10, 244, 0, 2),
            dst_ip: Ipv4Addr::new(10, 244, 0, 3),
            src_port: 40000,
            dst_port: 9,
            flows: 4,
            size,
            stream: 7,
        }
    }

    /// Parse `f` with the dataplane's views and check both checksums; returns the UDP
    /// source port and payload stamp.
    fn check(f: &[u8], s: &FrameSpec) -> (u16, (u64, u64, u16)) {
        let eth = ethernet::Frame::new_checked(f).expect("ethernet");
        assert_eq!(eth.dst_addr(), s.dst_mac);
        assert_eq!(eth.src_addr(), s.src_mac);
        assert_eq!(eth.ethertype(), 0x0800);
        let ip = ipv4::Packet::new_checked(eth.payload()).expect("ipv4");
        assert!(ip.verify_checksum(), "IPv4 header checksum");
        assert_eq!(ip.total_len(), s.size - ETH_LEN);
        assert_eq!(ip.ttl(), 64);
        assert!(ip.is_unfragmented());
        assert_eq!(ip.protocol(), 17);
        assert_eq!(ip.src_addr(), u32::from(s.src_ip));
        assert_eq!(ip.dst_addr(), u32::from(s.dst_ip));
        let u = udp::Packet::new_checked(ip.payload()).expect("udp");
        assert_eq!(u.len(), s.size - OFF_UDP);
        assert_eq!(u.dst_port(), s.dst_port);
        assert_ne!(u.checksum(), 0, "UDP checksum present");
        // verify the UDP checksum independently: pseudo-header + the whole datagram
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&s.src_ip.octets());
        pseudo[4..8].copy_from_slice(&s.dst_ip.octets());
        pseudo[9] = 17;
        pseudo[10..12].copy_from_slice(&(u.len() as u16).to_be_bytes());
        let total = checksum::sum(&pseudo) + checksum::sum(ip.payload());
        assert_eq!(checksum::fold(total), 0xffff, "UDP checksum verifies");
        (u.src_port(), read_stamp(u.payload()).expect("stamp"))
    }

    #[test]
    fn frames_parse_and_checksums_verify() {
        for size in [60, 64, 61, 1514, 3840, 9014, 65535] {
            let s = spec(size);
            let f = Frame::new(&s).unwrap();
            assert_eq!(f.len(), size);
            let mut buf = f.template().to_vec();
            for (i, (seq, ts)) in [
                (0u64, 0u64),
                (1, 123_456_789),
                (u64::MAX, u64::MAX),
                (0xffff_0000_ffff_0000, 0x0001_0002_0003_0004),
            ]
            .into_iter()
            .enumerate()
            {
                let flow = (i % 4) as u16;
                f.stamp(
                    &mut buf,
                    Stamp {
                        seq,
                        ts_ns: ts,
                        flow,
                    },
                );
                let (port, st) = check(&buf, &s);
                assert_eq!(port, 40000 + flow);
                assert_eq!(st, (seq, ts, 7));
            }
        }
    }

    #[test]
    fn every_checksum_value_verifies() {
        // sweep the sequence number: the checksum takes many values, including the
        // one that would compute to zero (sent as 0xffff)
        let s = spec(60);
        let f = Frame::new(&s).unwrap();
        let mut buf = f.template().to_vec();
        let mut seen_ffff = false;
        for seq in 0..70_000u64 {
            f.stamp(
                &mut buf,
                Stamp {
                    seq,
                    ts_ns: 42,
                    flow: 0,
                },
            );
            let c = u16::from_be_bytes([buf[OFF_UDP + 6], buf[OFF_UDP + 7]]);
            seen_ffff |= c == 0xffff;
            if seq % 997 == 0 || c == 0xffff {
                check(&buf, &s);
            }
        }
        assert!(seen_ffff, "the zero corner was exercised");
    }

    #[test]
    fn bad_specs() {
        assert_eq!(Frame::new(&spec(59)).unwrap_err(), FrameError::Size(59));
        assert_eq!(
            Frame::new(&spec(65536)).unwrap_err(),
            FrameError::Size(65536)
        );
        let mut s = spec(60);
        s.flows = 0;
        assert_eq!(Frame::new(&s).unwrap_err(), FrameError::Flows);
        s.flows = 2;
        s.src_port = 65535;
        assert_eq!(Frame::new(&s).unwrap_err(), FrameError::Flows);
        assert_eq!(read_stamp(&[0; 17]), None);
    }
}

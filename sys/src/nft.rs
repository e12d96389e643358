//! Pod egress masquerade through nf_tables, spoken over netlink (`NETLINK_NETFILTER`).
//!
//! Owns one nf_tables table of family `ip` (named by the caller, `xsknet` by default)
//! holding a single NAT chain on the postrouting hook at the `srcnat` priority. The rules
//! are flannel's `ipMasq` rules written in nftables terms, for a cluster CIDR `C`:
//!
//! ```text
//! ip saddr C ip daddr C return                 # pod → pod (any node): never NAT
//! ip saddr C ip daddr 224.0.0.0/4 return       # multicast keeps its source
//! ip saddr C masquerade fully-random           # pod → the world: the node's address
//! ```
//!
//! Installing replaces the table atomically in one nf_tables batch (`add table; delete
//! table; add table, chain, rules`): a restarted daemon never stacks duplicate rules and
//! never leaves a moment with half a rule set. Removing deletes the table (absent is
//! fine). Everything the kernel refuses becomes an [`NftError`] with the errno and the
//! message that was being applied; nothing here runs the `nft` tool.
//!
//! Control-path code (daemon start, config change, uninstall); never per packet.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

/// nfnetlink subsystem id of nf_tables.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_HDR_LEN: usize = 16;

const NFPROTO_IPV4: u8 = 2;
const NF_INET_POST_ROUTING: u32 = 4;
/// `srcnat` priority of the NAT postrouting hook.
const NF_IP_PRI_NAT_SRC: i32 = 100;
const NF_ACCEPT: u32 = 1;

// Attribute numbers from include/uapi/linux/netfilter/nf_tables.h.
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_MASQ_FLAGS: u16 = 1;

const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_CMP_EQ: u32 = 0;
const NFT_RETURN: i32 = -5;
const NF_NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 0x10;

/// IPv4 header offsets of the addresses the rules match.
const IPV4_SADDR: u32 = 12;
const IPV4_DADDR: u32 = 16;

/// Name of the one chain in the table.
pub const CHAIN: &str = "postrouting";
/// Longest table name nf_tables accepts (`NFT_NAME_MAXLEN - 1`).
pub const MAX_TABLE_NAME: usize = 255;

/// An IPv4 prefix (`addr` with its host bits cleared).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Prefix {
    /// The prefix of `addr/len`, host bits cleared; `None` for `len > 32`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Prefix> {
        if len > 32 {
            return None;
        }
        let mask = mask(len);
        Some(Prefix {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            len,
        })
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// What to masquerade.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasqSpec {
    /// The nf_tables table to own (family `ip`).
    pub table: String,
    /// The cluster's pod CIDR: traffic from it to anywhere outside it is masqueraded.
    pub cluster_cidr: Prefix,
}

/// Errors of the nf_tables client.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The table name is not one nf_tables accepts.
    #[error("nftables table name {0:?}: must be 1 to 255 bytes without NUL")]
    BadName(String),
    /// Creating or using the netlink socket failed.
    #[error("NETLINK_NETFILTER socket: {0}")]
    Socket(io::Error),
    /// The kernel refused the batch.
    #[error("{op}: {source}")]
    Kernel {
        /// What was being applied, e.g. `install masquerade table ip xsknet`.
        op: String,
        /// The kernel's errno.
        source: io::Error,
    },
    /// The kernel did not answer every message of the batch.
    #[error("{op}: no answer from nf_tables for {missing} of {sent} messages")]
    NoAnswer {
        op: String,
        missing: usize,
        sent: usize,
    },
}

/// Install (or replace) the masquerade table described by `spec`, atomically.
pub fn install_masquerade(spec: &MasqSpec) -> Result<(), NftError> {
    check_name(&spec.table)?;
    let mut b = Batch::new();
    // "add; delete; add": the first add makes the delete valid when the table is
    // absent; the whole batch commits or nothing does.
    b.table(NFT_MSG_NEWTABLE, &spec.table, NLM_F_CREATE);
    b.table(NFT_MSG_DELTABLE, &spec.table, 0);
    b.table(NFT_MSG_NEWTABLE, &spec.table, NLM_F_CREATE | NLM_F_EXCL);
    b.nat_chain(&spec.table);
    let c = spec.cluster_cidr;
    b.rule(&spec.table, |e| {
        e.match_prefix(IPV4_SADDR, c);
        e.match_prefix(IPV4_DADDR, c);
        e.verdict(NFT_RETURN);
    });
    let multicast = Prefix {
        addr: Ipv4Addr::new(224, 0, 0, 0),
        len: 4,
    };
    b.rule(&spec.table, |e| {
        e.match_prefix(IPV4_SADDR, c);
        e.match_prefix(IPV4_DADDR, multicast);
        e.verdict(NFT_RETURN);
    });
    b.rule(&spec.table, |e| {
        e.match_prefix(IPV4_SADDR, c);
        e.masquerade(NF_NAT_RANGE_PROTO_RANDOM_FULLY);
    });
    b.commit(&format!("install masquerade table ip {}", spec.table))
}

/// Remove the table if it exists.
pub fn remove_table(table: &str) -> Result<(), NftError> {
    check_name(table)?;
    let mut b = Batch::new();
    b.table(NFT_MSG_NEWTABLE, table, NLM_F_CREATE);
    b.table(NFT_MSG_DELTABLE, table, 0);
    b.commit(&format!("remove table ip {table}"))
}

fn check_name(name: &str) -> Result<(), NftError> {
    if name.is_empty() || name.len() > MAX_TABLE_NAME || name.contains('\0') {
        return Err(NftError::BadName(name.to_string()));
    }
    Ok(())
}

/// An nfnetlink batch under construction: netlink messages back to back.
struct Batch {
    buf: Vec<u8>,
    seq: u32,
    /// Sequence numbers of the messages that ask for an ack.
    acked: Vec<u32>,
}

impl Batch {
    fn new() -> Batch {
        let mut b = Batch {
            buf: Vec::with_capacity(1024),
            seq: 1,
            acked: Vec::new(),
        };
        let start = b.begin(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
        b.end(start);
        b
    }

    /// Start a message: netlink header + nfgenmsg. Returns its offset for [`end`].
    fn begin(&mut self, ty: u16, flags: u16, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        let seq = self.seq;
        self.seq += 1;
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by end()
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        self.buf.push(family);
        self.buf.push(0); // NFNETLINK_V0
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        if flags & NLM_F_ACK != 0 {
            self.acked.push(seq);
        }
        start
    }

    fn end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn nft_msg(&mut self, msg: u16, flags: u16) -> usize {
        let ty = (NFNL_SUBSYS_NFTABLES << 8) | msg;
        self.begin(ty, NLM_F_REQUEST | NLM_F_ACK | flags, NFPROTO_IPV4, 0)
    }

    fn table(&mut self, msg: u16, name: &str, flags: u16) {
        let m = self.nft_msg(msg, flags);
        attr_str(&mut self.buf, NFTA_TABLE_NAME, name);
        self.end(m);
    }

    fn nat_chain(&mut self, table: &str) {
        let m = self.nft_msg(NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_EXCL);
        attr_str(&mut self.buf, NFTA_CHAIN_TABLE, table);
        attr_str(&mut self.buf, NFTA_CHAIN_NAME, CHAIN);
        let hook = nest_begin(&mut self.buf, NFTA_CHAIN_HOOK);
        attr_be32(&mut self.buf, NFTA_HOOK_HOOKNUM, NF_INET_POST_ROUTING);
        attr_be32(&mut self.buf, NFTA_HOOK_PRIORITY, NF_IP_PRI_NAT_SRC as u32);
        nest_end(&mut self.buf, hook);
        attr_be32(&mut self.buf, NFTA_CHAIN_POLICY, NF_ACCEPT);
        attr_str(&mut self.buf, NFTA_CHAIN_TYPE, "nat");
        self.end(m);
    }

    fn rule(&mut self, table: &str, exprs: impl FnOnce(&mut Exprs<'_>)) {
        let m = self.nft_msg(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND);
        attr_str(&mut self.buf, NFTA_RULE_TABLE, table);
        attr_str(&mut self.buf, NFTA_RULE_CHAIN, CHAIN);
        let list = nest_begin(&mut self.buf, NFTA_RULE_EXPRESSIONS);
        exprs(&mut Exprs { buf: &mut self.buf });
        nest_end(&mut self.buf, list);
        self.end(m);
    }

    /// Close the batch, send it and wait for every ack; the first refusal wins.
    fn commit(mut self, op: &str) -> Result<(), NftError> {
        let start = self.begin(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
        self.end(start);
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(NftError::Socket)?;
        sock.bind_auto().map_err(NftError::Socket)?;
        set_recv_timeout(&sock, 2).map_err(NftError::Socket)?;
        sock.send_to(&self.buf, &SocketAddr::new(0, 0), 0)
            .map_err(NftError::Socket)?;
        let sent = self.acked.len();
        let mut pending = self.acked.clone();
        let mut first_err: Option<io::Error> = None;
        let mut rx = vec![0u8; 64 * 1024];
        while !pending.is_empty() {
            let n = match sock.recv(&mut &mut rx[..], 0) {
                Ok(n) => n,
                // After a refusal the kernel may skip acks of the aborted messages.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && first_err.is_some() => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(NftError::NoAnswer {
                        op: op.to_string(),
                        missing: pending.len(),
                        sent,
                    })
                }
                Err(e) => return Err(NftError::Socket(e)),
            };
            for (seq, errno) in acks(&rx[..n]) {
                pending.retain(|s| *s != seq);
                if errno != 0 && first_err.is_none() {
                    first_err = Some(io::Error::from_raw_os_error(errno));
                }
            }
        }
        match first_err {
            Some(source) => Err(NftError::Kernel {
                op: op.to_string(),
                source,
            }),
            None => Ok(()),
        }
    }
}

/// Builder of one rule's expression list.
struct Exprs<'a> {
    buf: &'a mut Vec<u8>,
}

impl Exprs<'_> {
    fn expr(&mut self, name: &str, data: impl FnOnce(&mut Vec<u8>)) {
        let elem = nest_begin(self.buf, NFTA_LIST_ELEM);
        attr_str(self.buf, NFTA_EXPR_NAME, name);
        let d = nest_begin(self.buf, NFTA_EXPR_DATA);
        data(self.buf);
        nest_end(self.buf, d);
        nest_end(self.buf, elem);
    }

    /// `ip saddr|daddr PREFIX`: load 4 bytes of the IPv4 header, mask, compare.
    fn match_prefix(&mut self, offset: u32, p: Prefix) {
        if p.len == 0 {
            return; // matches everything
        }
        self.expr("payload", |b| {
            attr_be32(b, NFTA_PAYLOAD_DREG, NFT_REG_1);
            attr_be32(b, NFTA_PAYLOAD_BASE, NFT_PAYLOAD_NETWORK_HEADER);
            attr_be32(b, NFTA_PAYLOAD_OFFSET, offset);
            attr_be32(b, NFTA_PAYLOAD_LEN, 4);
        });
        if p.len < 32 {
            self.expr("bitwise", |b| {
                attr_be32(b, NFTA_BITWISE_SREG, NFT_REG_1);
                attr_be32(b, NFTA_BITWISE_DREG, NFT_REG_1);
                attr_be32(b, NFTA_BITWISE_LEN, 4);
                data_value(b, NFTA_BITWISE_MASK, &mask(p.len).to_be_bytes());
                data_value(b, NFTA_BITWISE_XOR, &[0; 4]);
            });
        }
        self.expr("cmp", |b| {
            attr_be32(b, NFTA_CMP_SREG, NFT_REG_1);
            attr_be32(b, NFTA_CMP_OP, NFT_CMP_EQ);
            data_value(b, NFTA_CMP_DATA, &p.addr.octets());
        });
    }

    fn verdict(&mut self, code: i32) {
        self.expr("immediate", |b| {
            attr_be32(b, NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
            let data = nest_begin(b, NFTA_IMMEDIATE_DATA);
            let v = nest_begin(b, NFTA_DATA_VERDICT);
            attr_be32(b, NFTA_VERDICT_CODE, code as u32);
            nest_end(b, v);
            nest_end(b, data);
        });
    }

    fn masquerade(&mut self, flags: u32) {
        self.expr("masq", |b| attr_be32(b, NFTA_MASQ_FLAGS, flags));
    }
}

fn attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    pad(buf);
}

fn pad(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn attr_str(buf: &mut Vec<u8>, ty: u16, s: &str) {
    let mut v = Vec::with_capacity(s.len() + 1);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    attr(buf, ty, &v);
}

/// nf_tables integers are big-endian on the wire.
fn attr_be32(buf: &mut Vec<u8>, ty: u16, v: u32) {
    attr(buf, ty, &v.to_be_bytes());
}

fn data_value(buf: &mut Vec<u8>, ty: u16, bytes: &[u8]) {
    let n = nest_begin(buf, ty);
    attr(buf, NFTA_DATA_VALUE, bytes);
    nest_end(buf, n);
}

fn nest_begin(buf: &mut Vec<u8>, ty: u16) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&0u16.to_ne_bytes());
    buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    start
}

fn nest_end(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

/// The (sequence, errno) of every `NLMSG_ERROR` (acks carry errno 0) in a datagram.
/// Malformed or truncated messages end the walk; never panics.
fn acks(mut d: &[u8]) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    while d.len() >= NLMSG_HDR_LEN {
        let len = u32::from_ne_bytes([d[0], d[1], d[2], d[3]]) as usize;
        if len < NLMSG_HDR_LEN || len > d.len() {
            break;
        }
        let ty = u16::from_ne_bytes([d[4], d[5]]);
        let seq = u32::from_ne_bytes([d[8], d[9], d[10], d[11]]);
        if ty == NLMSG_ERROR && len >= NLMSG_HDR_LEN + 4 {
            let e = &d[NLMSG_HDR_LEN..NLMSG_HDR_LEN + 4];
            let errno = -i32::from_ne_bytes([e[0], e[1], e[2], e[3]]);
            out.push((seq, errno));
        }
        let step = (len + 3) & !3;
        if step >= d.len() {
            break;
        }
        d = &d[step..];
    }
    out
}

fn set_recv_timeout(sock: &Socket, secs: i64) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: secs,
        tv_usec: 0,
    };
    // SAFETY: setsockopt reads `size_of::<timeval>()` bytes from a live timeval on the
    // stack; the fd is the socket's own, open for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_clears_host_bits() {
        let p = Prefix::new(Ipv4Addr::new(10, 244, 2, 12), 16).unwrap();
        assert_eq!(p.addr, Ipv4Addr::new(10, 244, 0, 0));
        assert!(Prefix::new(Ipv4Addr::UNSPECIFIED, 33).is_none());
        assert_eq!(mask(0), 0);
        assert_eq!(mask(32), u32::MAX);
    }

    #[test]
    fn names_are_checked() {
        assert!(matches!(check_name(""), Err(NftError::BadName(_))));
        assert!(matches!(check_name("a\0b"), Err(NftError::BadName(_))));
        assert!(check_name(&"x".repeat(256)).is_err());
        assert!(check_name("xsknet").is_ok());
    }

    #[test]
    fn messages_are_well_formed() {
        let mut b = Batch::new();
        b.table(NFT_MSG_NEWTABLE, "t", NLM_F_CREATE);
        b.rule("t", |e| {
            e.match_prefix(
                IPV4_SADDR,
                Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 8).unwrap(),
            );
            e.verdict(NFT_RETURN);
        });
        // Walk the batch: every message length is aligned and adds up to the buffer.
        let mut off = 0;
        let mut n = 0;
        while off < b.buf.len() {
            let len = u32::from_ne_bytes(b.buf[off..off + 4].try_into().unwrap()) as usize;
            assert!(len >= NLMSG_HDR_LEN + 4);
            assert_eq!(len % 4, 0, "message {n} length {len}");
            off += len;
            n += 1;
        }
        assert_eq!(off, b.buf.len());
        assert_eq!(n, 3);
        assert_eq!(b.acked, vec![2, 3]);
    }

    #[test]
    fn acks_are_read_and_garbage_is_not_a_panic() {
        let mut d = Vec::new();
        for (seq, err) in [(5u32, 0i32), (6, -17)] {
            d.extend_from_slice(&36u32.to_ne_bytes());
            d.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            d.extend_from_slice(&0u16.to_ne_bytes());
            d.extend_from_slice(&seq.to_ne_bytes());
            d.extend_from_slice(&0u32.to_ne_bytes());
            d.extend_from_slice(&err.to_ne_bytes());
            d.extend_from_slice(&[0; 16]);
        }
        assert_eq!(acks(&d), vec![(5, 0), (6, 17)]);
        assert!(acks(&d[..20]).is_empty());
        assert!(acks(&[0xff; 40]).is_empty());
    }
}

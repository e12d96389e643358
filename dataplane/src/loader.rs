//! Loads xsknet's XDP program (ebpf/xsknet.bpf.c, compiled by build.rs and embedded)
//! once per daemon, attaches it to port interfaces with bpf_links, and registers AF_XDP
//! sockets in its maps.
//!
//! The program looks up (ifindex, rx queue) in the `ports` hash map and redirects to
//! the `xsks` XSKMAP slot found there. Attachments are bpf_links owned by
//! [`XdpAttachment`]: dropping one detaches the program from that interface, and a
//! daemon that exits (or crashes) leaves nothing attached, because the kernel destroys
//! links whose last fd is closed. Nothing is pinned in bpffs.
//!
//! Uplink queues are registered with [`MODE_VXLAN`]: the program then redirects only
//! IPv4 UDP to the address and port in its `uplink_cfg` map ([`XdpLoader::set_uplink`])
//! and passes everything else to the kernel; an uplink attachment's link goes with the
//! daemon like every other, so with the daemon down the uplink is the kernel's alone.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd, RawFd};

use libbpf_rs::{Link, MapCore, MapFlags, MapHandle, Object, ObjectBuilder};

/// The compiled XDP object.
static BPF_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xsknet.bpf.o"));

/// Capacity of the XSKMAP and ports map (`XSKNET_MAX_PORTS` in ebpf/xsknet.h).
pub const MAX_PORTS: u32 = 4096;

/// Key of the `ports` map; mirrors `struct xsknet_port_key`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PortKey {
    pub ifindex: u32,
    pub queue: u32,
}

/// Value of the `ports` map; mirrors `struct xsknet_port_cfg`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PortCfg {
    pub slot: u32,
    pub mode: u32,
}

impl PortKey {
    /// The key as the kernel map stores it: the C struct's bytes, field by field in
    /// native byte order (two `u32`s, no padding).
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&self.ifindex.to_ne_bytes());
        b[4..].copy_from_slice(&self.queue.to_ne_bytes());
        b
    }
}

impl PortCfg {
    /// The value as the kernel map stores it (see [`PortKey::to_bytes`]).
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&self.slot.to_ne_bytes());
        b[4..].copy_from_slice(&self.mode.to_ne_bytes());
        b
    }
}

/// `XSKNET_MODE_ALL`: every frame goes to the dataplane.
pub const MODE_ALL: u32 = 0;
/// `XSKNET_MODE_VXLAN`: only VXLAN to this node (the `uplink_cfg` map) goes to the
/// dataplane, everything else to the kernel.
pub const MODE_VXLAN: u32 = 1;

/// Value of the `uplink_cfg` map; mirrors `struct xsknet_uplink_cfg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UplinkCfg {
    pub local_ip: Ipv4Addr,
    pub vxlan_port: u16,
}

impl UplinkCfg {
    /// The value as the kernel map stores it: address and port in network byte order
    /// (the program compares them with the packet's bytes), two bytes of padding.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&self.local_ip.octets());
        b[4..6].copy_from_slice(&self.vxlan_port.to_be_bytes());
        b
    }
}

/// How the program is attached to an interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// The driver's native XDP where it has one (veth, most NIC drivers), generic
    /// (skb) XDP otherwise: the kernel picks.
    #[default]
    Native,
    /// Generic (skb) XDP, whatever the driver has.
    Skb,
}

/// Loader failures.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("load the xsknet XDP object: {0} (is the kernel built with BPF and XDP sockets? is /sys/fs/bpf needed?)")]
    Load(libbpf_rs::Error),
    #[error("the XDP object has no {0}")]
    Missing(&'static str),
    #[error("attach XDP program to {ifname} (ifindex {ifindex}): {source}")]
    Attach {
        ifname: String,
        ifindex: u32,
        source: libbpf_rs::Error,
    },
    #[error("register AF_XDP socket of {ifname} in slot {slot}: {source}")]
    Register {
        ifname: String,
        slot: u32,
        source: libbpf_rs::Error,
    },
    #[error("slot {0} is beyond the XSKMAP capacity {MAX_PORTS}")]
    Slot(u32),
    #[error("write the uplink filter (underlay address and VXLAN port): {0}")]
    UplinkCfg(libbpf_rs::Error),
}

/// The loaded program and its maps.
pub struct XdpLoader {
    obj: Object,
    xsks: MapHandle,
    ports: MapHandle,
    uplink_cfg: MapHandle,
}

impl std::fmt::Debug for XdpLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpLoader").finish_non_exhaustive()
    }
}

/// One interface with the program attached. Dropping it detaches.
pub struct XdpAttachment {
    _link: LinkHandle,
    pub ifindex: u32,
}

/// A bpf_link as libbpf-rs made it, or the fd of one made with explicit XDP flags;
/// either way closing it detaches.
enum LinkHandle {
    Libbpf(#[allow(dead_code)] Link),
    Fd(#[allow(dead_code)] OwnedFd),
}

impl std::fmt::Debug for XdpAttachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpAttachment")
            .field("ifindex", &self.ifindex)
            .finish()
    }
}

impl XdpLoader {
    /// Load the embedded object into the kernel.
    pub fn load() -> Result<Self, LoaderError> {
        let open = ObjectBuilder::default()
            .open_memory(BPF_OBJECT)
            .map_err(LoaderError::Load)?;
        let obj = open.load().map_err(LoaderError::Load)?;
        let find = |name: &'static str| -> Result<MapHandle, LoaderError> {
            let m = obj
                .maps()
                .find(|m| m.name() == name)
                .ok_or(LoaderError::Missing(name))?;
            MapHandle::try_from(&m).map_err(LoaderError::Load)
        };
        let xsks = find("xsks")?;
        let ports = find("ports")?;
        let uplink_cfg = find("uplink_cfg")?;
        Ok(XdpLoader {
            obj,
            xsks,
            ports,
            uplink_cfg,
        })
    }

    /// Set what uplink queues redirect: IPv4 UDP to `local_ip`:`vxlan_port`.
    pub fn set_uplink(&self, cfg: UplinkCfg) -> Result<(), LoaderError> {
        self.uplink_cfg
            .update(&0u32.to_ne_bytes(), &cfg.to_bytes(), MapFlags::ANY)
            .map_err(LoaderError::UplinkCfg)
    }

    /// Attach the program to an interface (native/driver mode where the driver has it,
    /// as veth does).
    pub fn attach(&self, ifname: &str, ifindex: u32) -> Result<XdpAttachment, LoaderError> {
        self.attach_mode(ifname, ifindex, AttachMode::Native)
    }

    /// Attach the program to an interface in `mode`.
    pub fn attach_mode(
        &self,
        ifname: &str,
        ifindex: u32,
        mode: AttachMode,
    ) -> Result<XdpAttachment, LoaderError> {
        let prog = self
            .obj
            .progs_mut()
            .find(|p| p.name() == "xsknet_redirect")
            .ok_or(LoaderError::Missing("xsknet_redirect program"))?;
        let err = |source| LoaderError::Attach {
            ifname: ifname.to_string(),
            ifindex,
            source,
        };
        let link = match mode {
            AttachMode::Native => LinkHandle::Libbpf(prog.attach_xdp(ifindex as i32).map_err(err)?),
            AttachMode::Skb => LinkHandle::Fd(
                crate::xsk::link::xdp_link_create(
                    prog.as_fd(),
                    ifindex,
                    crate::xsk::link::XDP_FLAGS_SKB_MODE,
                )
                .map_err(|e| err(libbpf_rs::Error::from(e)))?,
            ),
        };
        Ok(XdpAttachment {
            _link: link,
            ifindex,
        })
    }

    /// Register an AF_XDP socket: `slot` in the XSKMAP gets `fd`, and frames from
    /// (ifindex, queue) are redirected to it.
    pub fn register(
        &self,
        ifname: &str,
        ifindex: u32,
        queue: u32,
        slot: u32,
        fd: RawFd,
        mode: u32,
    ) -> Result<(), LoaderError> {
        if slot >= MAX_PORTS {
            return Err(LoaderError::Slot(slot));
        }
        let err = |source| LoaderError::Register {
            ifname: ifname.to_string(),
            slot,
            source,
        };
        let fd = fd as u32;
        self.xsks
            .update(&slot.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
            .map_err(err)?;
        let key = PortKey { ifindex, queue };
        let cfg = PortCfg { slot, mode };
        self.ports
            .update(&key.to_bytes(), &cfg.to_bytes(), MapFlags::ANY)
            .map_err(err)
    }

    /// Forget a socket; frames from (ifindex, queue) then go to the kernel (or are
    /// dropped, while the port entry exists but the XSKMAP slot is empty).
    pub fn unregister(&self, ifindex: u32, queue: u32, slot: u32) {
        let key = PortKey { ifindex, queue };
        // Missing entries are fine: unregister is idempotent.
        let _ = self.ports.delete(&key.to_bytes());
        let _ = self.xsks.delete(&slot.to_ne_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_struct_layouts_match_the_c_header() {
        assert_eq!(std::mem::size_of::<PortKey>(), 8);
        assert_eq!(std::mem::align_of::<PortKey>(), 4);
        assert_eq!(std::mem::size_of::<PortCfg>(), 8);
        let k = PortKey {
            ifindex: 1,
            queue: 2,
        };
        assert_eq!(k.to_bytes()[..4], 1u32.to_ne_bytes());
        assert_eq!(k.to_bytes()[4..], 2u32.to_ne_bytes());
        let c = PortCfg { slot: 7, mode: 9 };
        assert_eq!(c.to_bytes()[..4], 7u32.to_ne_bytes());
        assert_eq!(c.to_bytes()[4..], 9u32.to_ne_bytes());
        // struct xsknet_uplink_cfg: __be32 address, __be16 port, pad.
        let u = UplinkCfg {
            local_ip: Ipv4Addr::new(192, 168, 7, 1),
            vxlan_port: 8472,
        };
        assert_eq!(u.to_bytes(), [192, 168, 7, 1, 0x21, 0x18, 0, 0]);
    }

    #[test]
    fn embedded_object_is_bpf_elf() {
        assert_eq!(&BPF_OBJECT[..4], b"\x7fELF");
        // e_machine at offset 18 is EM_BPF (247) for the little-endian object.
        assert_eq!(u16::from_le_bytes([BPF_OBJECT[18], BPF_OBJECT[19]]), 247);
    }
}

/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Types shared between the XDP program and the daemon (mirrored by #[repr(C)] types in
 * dataplane/src/loader.rs, with a layout test). */
#ifndef XSKNET_H
#define XSKNET_H

#define XSKNET_MAX_PORTS 4096

/* Key of the `ports` map: which interface and rx queue a frame arrived on. */
struct xsknet_port_key {
	__u32 ifindex;
	__u32 queue;
};

/* What to do with frames from that (interface, queue). */
enum xsknet_port_mode {
	/* Pod and host ports: every frame goes to the dataplane. */
	XSKNET_MODE_ALL = 0,
	/* The uplink: only IPv4 UDP to this node's underlay address on the VXLAN port
	 * (both from the `uplink_cfg` map) goes to the dataplane; everything else is
	 * passed to the kernel (SSH, kubelet, etcd never depend on the dataplane). */
	XSKNET_MODE_VXLAN = 1,
};

struct xsknet_port_cfg {
	__u32 slot; /* index in the `xsks` XSKMAP */
	__u32 mode; /* enum xsknet_port_mode */
};

/* The single entry of the `uplink_cfg` array map, written by the loader. Both
 * fields in network byte order, as they appear on the wire; an all-zero entry (no
 * uplink configured) matches nothing, so every frame is passed. */
struct xsknet_uplink_cfg {
	__u32 local_ip;   /* this node's underlay IPv4 address */
	__u16 vxlan_port; /* UDP destination port of the tunnel */
	__u16 pad;
};

#endif

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
};

struct xsknet_port_cfg {
	__u32 slot; /* index in the `xsks` XSKMAP */
	__u32 mode; /* enum xsknet_port_mode */
};

#endif

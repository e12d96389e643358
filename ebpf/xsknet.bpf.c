// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* xsknet XDP program: attached (native mode) to every port's interface, it redirects
 * frames to the AF_XDP socket the daemon registered for (ifindex, rx queue).
 *
 * One object is loaded per daemon; the program is attached to each port with a
 * bpf_link, so it detaches when the daemon closes the link or exits. A frame from an
 * interface/queue the daemon has not (yet) registered is passed to the kernel. A
 * registered port whose socket is missing from the XSKMAP (daemon restarting) drops:
 * pod traffic never leaks into the node's stack unpoliced. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "xsknet.h"

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, XSKNET_MAX_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XSKNET_MAX_PORTS);
	__type(key, struct xsknet_port_key);
	__type(value, struct xsknet_port_cfg);
} ports SEC(".maps");

SEC("xdp")
int xsknet_redirect(struct xdp_md *ctx)
{
	struct xsknet_port_key key = {
		.ifindex = ctx->ingress_ifindex,
		.queue = ctx->rx_queue_index,
	};
	struct xsknet_port_cfg *cfg = bpf_map_lookup_elem(&ports, &key);

	if (!cfg)
		return XDP_PASS;
	/* XSKNET_MODE_ALL: no header is read, so no data_end check is needed here. */
	return bpf_redirect_map(&xsks, cfg->slot, XDP_DROP);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

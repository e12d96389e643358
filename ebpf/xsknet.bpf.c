// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* xsknet XDP program: attached to every port's interface, it redirects frames to the
 * AF_XDP socket the daemon registered for (ifindex, rx queue).
 *
 * One object is loaded per daemon; the program is attached to each port with a
 * bpf_link, so it detaches when the daemon closes the link or exits. A frame from an
 * interface/queue the daemon has not (yet) registered is passed to the kernel. A
 * registered pod/host port whose socket is missing from the XSKMAP (daemon
 * restarting) drops: pod traffic never leaks into the node's stack unpoliced.
 *
 * Uplink queues (XSKNET_MODE_VXLAN) are different: only IPv4 UDP addressed to this
 * node's underlay IP on the VXLAN port (the `uplink_cfg` map) is redirected, and if
 * its socket is missing the frame is passed, not dropped. Everything else — ARP,
 * IPv6, TCP, other UDP, IP fragments, IPv4 with options included — is XDP_PASS.
 *
 * The program is frags-aware (SEC("xdp.frags"), loaded with BPF_F_XDP_HAS_FRAGS):
 * a veth takes a peer MTU above one page only with such a program, and a packet
 * larger than one UMEM frame reaches a socket bound with XDP_USE_SG as a chain of
 * descriptors (issue 11). The program reads headers only from the linear part
 * (data..data_end), which always holds the Ethernet/IPv4/UDP headers it checks; a
 * frame too short there is simply not VXLAN. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
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

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xsknet_uplink_cfg);
} uplink_cfg SEC(".maps");

/* Whether the frame is VXLAN for this node: Ethernet (no VLAN tag) | IPv4 without
 * options, not a fragment | UDP to the configured port, addressed to local_ip. */
static __always_inline int is_vxlan_for_us(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	__u32 zero = 0;
	struct xsknet_uplink_cfg *cfg;

	if ((void *)(udp + 1) > data_end)
		return 0;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	if (ip->version != 4 || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return 0;
	/* More-fragments flag or a fragment offset: leave reassembly to the kernel. */
	if (ip->frag_off & bpf_htons(0x3fff))
		return 0;
	cfg = bpf_map_lookup_elem(&uplink_cfg, &zero);
	if (!cfg || cfg->local_ip == 0 || cfg->vxlan_port == 0)
		return 0;
	return ip->daddr == cfg->local_ip && udp->dest == cfg->vxlan_port;
}

SEC("xdp.frags")
int xsknet_redirect(struct xdp_md *ctx)
{
	struct xsknet_port_key key = {
		.ifindex = ctx->ingress_ifindex,
		.queue = ctx->rx_queue_index,
	};
	struct xsknet_port_cfg *cfg = bpf_map_lookup_elem(&ports, &key);

	if (!cfg)
		return XDP_PASS;
	if (cfg->mode == XSKNET_MODE_VXLAN) {
		if (!is_vxlan_for_us(ctx))
			return XDP_PASS;
		return bpf_redirect_map(&xsks, cfg->slot, XDP_PASS);
	}
	/* XSKNET_MODE_ALL: no header is read, so no data_end check is needed here. */
	return bpf_redirect_map(&xsks, cfg->slot, XDP_DROP);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

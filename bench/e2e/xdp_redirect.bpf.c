// SPDX-License-Identifier: GPL-2.0
/* Peer "xdp-redirect" of the e2e bench: the in-kernel eBPF dataplane ceiling.
 *
 * xdp_redirect_devmap: attached to each host-side veth; sends every frame to the
 *   interface stored at key 0 of its own DEVMAP (the other host veth). run.sh fills the
 *   map with bpftool after `ip link set dev X xdp obj ...` created it.
 * xdp_pass: attached to the pods' eth0, because a veth delivers XDP-redirected frames
 *   only when its peer has an XDP program.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tx_port SEC(".maps");

SEC("xdp")
int xdp_redirect_devmap(struct xdp_md *ctx)
{
	return bpf_redirect_map(&tx_port, 0, 0);
}

SEC("xdp.pass")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";

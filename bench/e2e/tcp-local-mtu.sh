#!/usr/bin/env bash
# Node-local pod-to-pod TCP by local MTU and UMEM frame size (issue 11), xsknet and the
# Linux bridge in one run. For every (frame size, MTU) pair: a node netns with its own
# xsknetd (`localMtu` = the MTU, so above one frame the pods' sockets are bound for
# multi-buffer chains), two pods wired as the CNI plugin wires them (veth at the MTU
# both ends, gateway routes, tx/sg/tso/gso off in the pod), one iperf3 run a → b; then
# the Linux bridge at MTU 1500 with pod offloads off and on. Pairs a frame size cannot
# carry (an MTU above its multi-buffer limit: 18 buffers) are skipped.
#
#   sudo bash bench/e2e/tcp-local-mtu.sh [SECS]          (default 5; ~2.5 min at 5 s)
#
# Environment: MTUS (default "1500 3506 9000 16384 32768 65535"), FRAMES ("2048 4096"),
# BRIDGE (1; 0 skips the bridge rows), RX (0: nothing; 1: RPS on the pods' eth0 to all
# CPUs; other: RPS to every CPU but the worker's; gro; threaded: GRO + threaded NAPI),
# TXBUDGET (umem.txBudget, 0 = kernel default), RING/FRAMES_PER_PORT (per frame size:
# 2048 → 512/992 (~2 MiB of UMEM per pod), 4096 → 512/992 (~4 MiB, the daemon's default)).
# Output: bench/out/tcp-mtu-<UTC stamp>.csv with the header
# `datapath,local_mtu,frame_size,gbps,retransmits,loadavg`, and a markdown table on
# stdout; the xsknet ports' drop and kernel ring counters of each run on stderr.
# Everything it creates is removed on exit (trap); it kills only what it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-5}
MTUS=${MTUS:-1500 3506 9000 16384 32768 65535}
FRAME_SIZES=${FRAMES:-2048 4096}
BRIDGE=${BRIDGE:-1}; RX=${RX:-0}; TXBUDGET=${TXBUDGET:-0}
BIN=$PWD/target/release
[ -x "$BIN/xsknetd" ] || cargo build --release -q -p dataplane --bins
command -v iperf3 >/dev/null || { echo "tcp-local-mtu: needs iperf3 (scripts/setup.sh)" >&2; exit 1; }
mkdir -p bench/out
CSV=bench/out/tcp-mtu-$(date -u +%Y%m%dT%H%M%SZ).csv
P=tm$$; W=$(mktemp -d); D=""; SRV=""; NSS=()
stop_daemon() { [ -n "$D" ] || return 0; kill -TERM "$D" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$D" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$D" 2>/dev/null || true; wait "$D" 2>/dev/null || true; D=""; }
del_ns() { for n in "${NSS[@]}"; do ip netns del "$n" 2>/dev/null || true; done; NSS=(); }
cleanup() { set +e; [ -n "$SRV" ] && kill "$SRV" 2>/dev/null; stop_daemon; del_ns; rm -rf "$W"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
load() { cut -d' ' -f1 /proc/loadavg; }
iperf() { # ns dst -> "gbps retransmits" (0 0 when iperf3 failed)
  ip netns exec "$1" timeout $((SECS + 20)) iperf3 -c "$2" -t "$SECS" -J 2>/dev/null | python3 -c "
import json,sys
try:
    e=json.load(sys.stdin)['end']['sum_sent']; print('%.2f %d' % (e['bits_per_second']/1e9, e['retransmits']))
except Exception: print('0 0')" ; }
rxknob() { local mask; case "$RX" in
  1) mask=$(( (1 << $(nproc)) - 1 ));; other) mask=$(( (1 << ($(nproc) - 1)) - 1 ));;
  gro) ip netns exec "$1" ethtool -K eth0 gro on >/dev/null; return;;
  threaded) ip netns exec "$1" ethtool -K eth0 gro on >/dev/null
            ip netns exec "$1" sh -c 'echo 1 > /sys/class/net/eth0/threaded'; return;;
  *) return;; esac
  ip netns exec "$1" sh -c "printf %x $mask > /sys/class/net/eth0/queues/rx-0/rps_cpus"; }
max_mtu() { # the multi-buffer limit of a frame size: 18 buffers of (frame - 256), IPv4 65535
  local m=$(( 18 * ($1 - 256) - 14 )); [ $m -gt 65535 ] && m=65535; echo $m; }
row() { echo "$1,$2,$3,$4,$5,$6" >> "$CSV"; printf '| %s | %s | %s | %s | %s | %s |\n' "$@"; }

echo "datapath,local_mtu,frame_size,gbps,retransmits,loadavg" > "$CSV"
echo "| datapath | local MTU | frame size | Gbit/s | retransmits | load |"
echo "|---|---:|---:|---:|---:|---:|"
run_xsknet() { # frame mtu
  local frame=$1 mtu=$2 ring frames node=${P}n$1x$2 sock=$W/s$1x$2
  if [ "$frame" = 2048 ]; then ring=${RING_2048:-512}; frames=${FRAMES_2048:-992}
  else ring=${RING_4096:-512}; frames=${FRAMES_4096:-992}; fi
  printf 'localMtu: %s\numem:\n  frameSize: %s\n  ringSize: %s\n  framesPerPort: %s\n  txBudget: %s\n' \
    "$mtu" "$frame" "$ring" "$frames" "$TXBUDGET" > "$W/node.yaml"
  ip netns add "$node"; NSS+=("$node"); ip -n "$node" link set lo up
  ip netns exec "$node" "$BIN/xsknetd" --config "$W/node.yaml" --socket "$sock" \
    --state-dir "$W/st$1x$2" 2>"$W/log" & D=$!
  for _ in $(seq 100); do "$BIN/xsknetctl" --socket "$sock" status >/dev/null 2>&1 && break; sleep 0.1; done
  local x n ip ns
  for x in a:2 b:3; do n=${x%%:*}; ip=10.244.0.${x##*:}; ns=${P}$n$1x$2
    ip netns add "$ns"; NSS+=("$ns"); ip -n "$ns" link set lo up
    ip -n "$node" link add "${P}h$n" mtu "$mtu" type veth peer name eth0 mtu "$mtu" netns "$ns"
    ip -n "$ns" addr add "$ip/32" dev eth0; ip -n "$ns" link set eth0 up
    ip -n "$ns" route add 169.254.1.1 dev eth0 scope link
    ip -n "$ns" route add default via 169.254.1.1 dev eth0 onlink
    ip netns exec "$ns" ethtool -K eth0 tx off sg off tso off gso off >/dev/null 2>&1 || true
    rxknob "$ns"
    "$BIN/xsknetctl" --socket "$sock" endpoint add --ifname "${P}h$n" --ip "$ip" >/dev/null \
      || { echo "endpoint add failed (frame $frame, MTU $mtu):" >&2; tail -5 "$W/log" >&2; stop_daemon; del_ns; return 0; }
  done
  ip netns exec "${P}a$1x$2" ping -c1 -W2 10.244.0.3 >/dev/null || true
  ip netns exec "${P}b$1x$2" iperf3 -s -1 >/dev/null 2>&1 & SRV=$!
  sleep 0.3
  local l; l=$(load); read -r gbps rtx < <(iperf "${P}a$1x$2" 10.244.0.3)
  kill "$SRV" 2>/dev/null || true; wait "$SRV" 2>/dev/null || true; SRV=""
  row xsknet "$mtu" "$frame" "$gbps" "$rtx" "$l"
  "$BIN/xsknetctl" --socket "$sock" stats --json | python3 -c "
import json,sys
for p in json.load(sys.stdin)['ports'][1:]:
    x = {k: v for k, v in (p.get('xdp') or {}).items() if v and k != 'tx_ring_empty_descs'}
    print('   frame $frame mtu $mtu', p['ifname'], 'drops', p['drops'] or '{}', 'kernel', x or '{}')" >&2 || true
  stop_daemon; del_ns
}
for frame in $FRAME_SIZES; do
  for mtu in $MTUS; do
    if [ "$mtu" -gt "$(max_mtu "$frame")" ]; then continue; fi
    run_xsknet "$frame" "$mtu"
  done
done
if [ "$BRIDGE" = 1 ]; then # the Linux bridge at MTU 1500, pod offloads off then on
  node=${P}br; ip netns add "$node"; NSS+=("$node"); ip -n "$node" link set lo up
  ip -n "$node" link add br0 type bridge; ip -n "$node" link set br0 up
  for x in c:2 d:3; do n=${x%%:*}; ns=${P}$n; ip netns add "$ns"; NSS+=("$ns"); ip -n "$ns" link set lo up
    ip -n "$node" link add "${P}h$n" type veth peer name eth0 netns "$ns"
    ip -n "$node" link set "${P}h$n" master br0 up
    ip -n "$ns" addr add "10.245.0.${x##*:}/24" dev eth0; ip -n "$ns" link set eth0 up
    rxknob "$ns"
  done
  for off in off on; do
    for n in c d; do ip netns exec "${P}$n" ethtool -K eth0 tx $off sg $off tso $off gso $off >/dev/null 2>&1 || true; done
    ip netns exec "${P}c" ping -c1 -W2 10.245.0.3 >/dev/null || true
    ip netns exec "${P}d" iperf3 -s -1 >/dev/null 2>&1 & SRV=$!; sleep 0.3
    l=$(load); read -r gbps rtx < <(iperf "${P}c" 10.245.0.3)
    kill "$SRV" 2>/dev/null || true; wait "$SRV" 2>/dev/null || true; SRV=""
    row "bridge-$off" 1500 0 "$gbps" "$rtx" "$l"
  done
  del_ns
fi
echo
echo "CSV: $CSV (rx=$RX txBudget=$TXBUDGET, ${SECS}s per run, $(uname -r), $(date -u +%FT%TZ))"

#!/usr/bin/env bash
# Node-local pod-to-pod TCP vs. pod MTU and UMEM frame size, xsknet and the Linux bridge
# in the same run: node netns + two pods + xsknetd (frame size, ring, frames per pod as
# given), one iperf3 run per datapath, retransmits and the sender port's kernel ring
# counters. RX (on both pods' eth0, to move the receiving pod's softirq work off the
# worker's core): 0 nothing; 1 RPS to all CPUs; other: RPS to every CPU but the
# worker's (the last one, xsknetd's default); gro: GRO on (veth then runs NAPI);
# threaded: GRO + threaded NAPI.
#   sudo bash bench/e2e/tcp-local-mtu.sh [FRAME] [MTU] [RING] [FRAMES] [SECS] [RX] [BRIDGE] [TXBUDGET]
# e.g. `tcp-local-mtu.sh 4096 3500 256 496 5 0 1`. Cleans up everything it created
# (trap), kills only what it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
FRAME=${1:-2048}; MTU=${2:-1500}; RING=${3:-512}; FRAMES=${4:-992}; SECS=${5:-5}; RPS=${6:-0}; BR=${7:-0}; BUDGET=${8:-0}
BIN=$PWD/target/release
[ -x "$BIN/xsknetd" ] || cargo build --release -q -p dataplane --bins
P=tm$$; NODE=${P}n; W=$(mktemp -d); SOCK=$W/s; D=""; SRV=""
cleanup() { set +e; [ -n "$SRV" ] && kill "$SRV" 2>/dev/null; [ -n "$D" ] && kill -TERM "$D" 2>/dev/null && sleep 0.5
  for n in a b c d; do ip netns del ${P}$n 2>/dev/null; done; ip netns del $NODE 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT INT TERM
iperf() { # ns dst -> "Gbit/s retransmits"
  ip netns exec "$1" iperf3 -c "$2" -t "$SECS" -J | python3 -c \
    "import json,sys; e=json.load(sys.stdin)['end']['sum_sent']; print('%.2f Gbit/s, %d retransmits' % (e['bits_per_second']/1e9, e['retransmits']))"; }
rxknob() { local mask; case "$RPS" in
  1) mask=$(( (1 << $(nproc)) - 1 ));; other) mask=$(( (1 << ($(nproc) - 1)) - 1 ));;
  gro) ip netns exec "$1" ethtool -K eth0 gro on >/dev/null; return;;
  threaded) ip netns exec "$1" ethtool -K eth0 gro on >/dev/null; ip netns exec "$1" sh -c 'echo 1 > /sys/class/net/eth0/threaded'; return;;
  *) return;; esac
  ip netns exec "$1" sh -c "printf %x $mask > /sys/class/net/eth0/queues/rx-0/rps_cpus"; }
printf 'umem:\n  frameSize: %s\n  ringSize: %s\n  framesPerPort: %s\n  txBudget: %s\n' "$FRAME" "$RING" "$FRAMES" "$BUDGET" > "$W/node.yaml"
ip netns add $NODE; ip -n $NODE link set lo up
ip netns exec $NODE "$BIN/xsknetd" --config "$W/node.yaml" --socket "$SOCK" --state-dir "$W/st" 2>"$W/log" & D=$!
for _ in $(seq 100); do "$BIN/xsknetctl" --socket "$SOCK" status >/dev/null 2>&1 && break; sleep 0.1; done
for x in a:2 b:3; do n=${x%%:*}; ip=10.244.0.${x##*:}; ns=${P}$n
  ip netns add $ns; ip -n $ns link set lo up
  ip -n $NODE link add ${P}h$n mtu "$MTU" type veth peer name eth0 mtu "$MTU" netns $ns
  ip -n $ns addr add $ip/32 dev eth0; ip -n $ns link set eth0 up
  ip -n $ns route add 169.254.1.1 dev eth0 scope link
  ip -n $ns route add default via 169.254.1.1 dev eth0 onlink
  ip netns exec $ns ethtool -K eth0 tx off sg off tso off gso off >/dev/null 2>&1 || true
  rxknob $ns
  "$BIN/xsknetctl" --socket "$SOCK" endpoint add --ifname ${P}h$n --ip $ip >/dev/null || { cat "$W/log"; exit 1; }
done
ip netns exec ${P}a ping -c1 -W2 10.244.0.3 >/dev/null
ip netns exec ${P}b iperf3 -s -1 >/dev/null 2>&1 & SRV=$!
sleep 0.3
echo "frameSize=$FRAME mtu=$MTU ringSize=$RING framesPerPort=$FRAMES ($(( FRAMES * FRAME / 1024 )) KiB UMEM per pod) rx=$RPS txBudget=$BUDGET, load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "xsknet: $(iperf ${P}a 10.244.0.3)"
wait $SRV 2>/dev/null || true; SRV=""
"$BIN/xsknetctl" --socket "$SOCK" stats --json | python3 -c "
import json,sys
for p in json.load(sys.stdin)['ports'][1:]:
    x = {k: v for k, v in (p.get('xdp') or {}).items() if v and k != 'tx_ring_empty_descs'}
    print('  ', p['ifname'], 'drops', p['drops'] or '{}', 'kernel', x or '{}')"
if [ "$BR" = 1 ]; then  # the Linux bridge, same MTU, pod offloads off then on
  ip -n $NODE link add ${P}br type bridge; ip -n $NODE link set ${P}br mtu "$MTU" up
  for x in c:2 d:3; do n=${x%%:*}; ns=${P}$n; ip netns add $ns; ip -n $ns link set lo up
    ip -n $NODE link add ${P}h$n mtu "$MTU" type veth peer name eth0 mtu "$MTU" netns $ns
    ip -n $NODE link set ${P}h$n master ${P}br up
    ip -n $ns addr add 10.245.0.${x##*:}/24 dev eth0; ip -n $ns link set eth0 up
    rxknob $ns
  done
  for off in off on; do
    for n in c d; do ip netns exec ${P}$n ethtool -K eth0 tx $off sg $off tso $off gso $off >/dev/null 2>&1 || true; done
    ip netns exec ${P}c ping -c1 -W2 10.245.0.3 >/dev/null
    ip netns exec ${P}d iperf3 -s -1 >/dev/null 2>&1 & SRV=$!; sleep 0.3
    echo "bridge (offloads $off): $(iperf ${P}c 10.245.0.3)"
    wait $SRV 2>/dev/null || true; SRV=""
  done
fi

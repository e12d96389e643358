#!/usr/bin/env bash
# TCP through xsknet vs. AF_XDP ring depth: node netns + two pods + xsknetd with the
# given ring size and frames per pod, one iperf3 run, then the sender port's kernel
# ring counters. Shows whether retransmits come from RX ring overflow.
#   sudo bash bench/e2e/tcp-ring-depth.sh [RING_SIZE] [FRAMES_PER_POD] [SECONDS]
# Cleans up everything it created (trap), kills only what it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
RING=${1:-512}; FRAMES=${2:-1000}; SECS=${3:-4}
BIN=$PWD/target/release
[ -x "$BIN/xsknetd" ] || cargo build --release -q -p dataplane --bins
P=tr$$; NODE=${P}n; W=$(mktemp -d); SOCK=$W/s; D=""; SRV=""
cleanup() { set +e; [ -n "$SRV" ] && kill "$SRV" 2>/dev/null; [ -n "$D" ] && kill -TERM "$D" 2>/dev/null && sleep 0.5
  ip netns del ${P}a 2>/dev/null; ip netns del ${P}b 2>/dev/null; ip netns del $NODE 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT INT TERM
printf 'umem:\n  ringSize: %s\n  framesPerPort: %s\n' "$RING" "$FRAMES" > "$W/node.yaml"
ip netns add $NODE; ip -n $NODE link set lo up
ip netns exec $NODE "$BIN/xsknetd" --config "$W/node.yaml" --socket "$SOCK" --state-dir "$W/st" 2>"$W/log" & D=$!
for _ in $(seq 50); do "$BIN/xsknetctl" --socket "$SOCK" status >/dev/null 2>&1 && break; sleep 0.1; done
for x in a:2 b:3; do n=${x%%:*}; ip=10.244.0.${x##*:}; ns=${P}$n
  ip netns add $ns; ip -n $ns link set lo up
  ip -n $NODE link add ${P}h$n type veth peer name eth0 netns $ns
  ip -n $ns addr add $ip/32 dev eth0; ip -n $ns link set eth0 up
  ip -n $ns route add 169.254.1.1 dev eth0 scope link
  ip -n $ns route add default via 169.254.1.1 dev eth0 onlink
  ip netns exec $ns ethtool -K eth0 tx off sg off tso off gso off >/dev/null 2>&1 || true
  "$BIN/xsknetctl" --socket "$SOCK" endpoint add --ifname ${P}h$n --ip $ip >/dev/null
done
ip netns exec ${P}a ping -c1 -W1 10.244.0.3 >/dev/null
ip netns exec ${P}b iperf3 -s -1 >/dev/null 2>&1 & SRV=$!
sleep 0.3
echo "ringSize=$RING framesPerPort=$FRAMES ($(( FRAMES * 2 )) KiB UMEM per pod), load: $(cut -d' ' -f1-3 /proc/loadavg)"
ip netns exec ${P}a iperf3 -c 10.244.0.3 -t "$SECS" -J | python3 -c \
  "import json,sys; e=json.load(sys.stdin)['end']['sum_sent']; print('TCP %.2f Gbit/s, %d retransmits' % (e['bits_per_second']/1e9, e['retransmits']))"
"$BIN/xsknetctl" --socket "$SOCK" stats --json | python3 -c "
import json,sys
for p in json.load(sys.stdin)['ports'][1:]:
    x = {k: v for k, v in (p.get('xdp') or {}).items() if v and k != 'tx_ring_empty_descs'}
    print(p['ifname'], 'drops', p['drops'] or '{}', 'kernel', x or '{}')"

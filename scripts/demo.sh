#!/usr/bin/env bash
# The xsknet demo on a fresh machine (run as root): installs what it needs, builds,
# starts xsknetd on a node made of network namespaces with three pods, shows the pods
# pinging each other and the node, a TCP transfer through the AF_XDP dataplane, the
# counters, and cleans everything up (also on failure or Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates namespaces and XDP programs)"; exit 1; }
bash scripts/setup.sh
echo "== building (release)"
cargo build --release --locked -q -p dataplane --bins

BIN=$PWD/target/release
P=xd$$                      # per-run prefix for every name
NODE=${P}node
WORK=$(mktemp -d /tmp/xsknet-demo.XXXXXX)
SOCK=$WORK/xsknetd.sock
DAEMON_PID=""
IPERF_PID=""

cleanup() {
  set +e
  [ -n "$IPERF_PID" ] && kill "$IPERF_PID" 2>/dev/null
  if [ -n "$DAEMON_PID" ]; then
    kill -TERM "$DAEMON_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DAEMON_PID" 2>/dev/null
  fi
  for i in 1 2 3; do ip netns del "${P}pod$i" 2>/dev/null; done
  ip netns del "$NODE" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

ctl() { "$BIN/xsknetctl" --socket "$SOCK" "$@"; }

echo "== node namespace $NODE, xsknetd with its embedded defaults (state and socket in $WORK)"
ip netns add "$NODE"
ip -n "$NODE" link set lo up
ip netns exec "$NODE" "$BIN/xsknetd" --socket "$SOCK" --state-dir "$WORK/state" 2>"$WORK/xsknetd.log" &
DAEMON_PID=$!
for _ in $(seq 100); do ctl status >/dev/null 2>&1 && break; sleep 0.1; done
ctl status

for i in 1 2 3; do
  POD=${P}pod$i; HOST=${P}h$i; IP=10.244.0.$((i + 1))
  ip netns add "$POD"
  ip -n "$POD" link set lo up
  ip -n "$NODE" link add "$HOST" type veth peer name eth0 netns "$POD"
  ip -n "$POD" addr add "$IP/32" dev eth0
  ip -n "$POD" link set eth0 up
  ip -n "$POD" route add 169.254.1.1 dev eth0 scope link
  ip -n "$POD" route add default via 169.254.1.1 dev eth0 onlink
  # What the CNI plugin does through xsknet's prepare_pod_interface(): complete
  # checksums and MTU-sized frames from the pod.
  ip netns exec "$POD" ethtool -K eth0 tx off sg off tso off gso off >/dev/null 2>&1 || true
  ip netns exec "$POD" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  ctl endpoint add --ifname "$HOST" --ip "$IP" --namespace demo --name "pod$i" --label app=demo
done
echo "== endpoints"
ctl endpoint list

echo "== every pod pings every other pod, and the node (10.244.0.1, the host port)"
for i in 1 2 3; do
  for j in 1 2 3; do
    [ "$i" = "$j" ] && continue
    ip netns exec "${P}pod$i" ping -c 2 -i 0.2 -W 2 -q "10.244.0.$((j + 1))" | tail -2 | head -1 | sed "s/^/pod$i -> pod$j: /"
  done
  ip netns exec "${P}pod$i" ping -c 2 -i 0.2 -W 2 -q 10.244.0.1 | tail -2 | head -1 | sed "s/^/pod$i -> node: /"
done
echo "== the node pings pod1 over the host port"
ip netns exec "$NODE" ping -c 2 -i 0.2 -W 2 -q 10.244.0.2 | tail -2 | head -1

echo "== TCP: iperf3 from pod1 to pod2 through the dataplane (5 s)"
ip netns exec "${P}pod2" iperf3 -s -1 -B 10.244.0.3 >/dev/null 2>&1 &
IPERF_PID=$!
sleep 0.5
ip netns exec "${P}pod1" iperf3 -c 10.244.0.3 -t 5 -f g | grep -E 'sender|receiver'
wait "$IPERF_PID" 2>/dev/null || true
IPERF_PID=""

echo "== counters (xsknetctl stats)"
ctl stats
echo "== stopping the daemon: it detaches its XDP programs and removes the host port"
kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID" || true; DAEMON_PID=""
if ip -n "$NODE" -d link show | grep -q 'prog/xdp'; then echo "demo: XDP program left behind!"; exit 1; fi
echo "demo: ok"

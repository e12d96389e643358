#!/usr/bin/env bash
# Short TCP connections per second, pod -> pod direct next to pod -> ClusterIP -> pod
# (issue 8), in one run. Node netns + xsknetd + pods a (10.244.0.2) and b (10.244.0.3);
# a ClusterIP 10.96.0.10:80 -> b:8080 written the way kube-proxy's iptables mode writes
# it (KUBE-SERVICES / KUBE-SVC / KUBE-SEP, DNAT in nat PREROUTING + OUTPUT). B runs a
# one-request-per-connection server (accept, read 8 bytes, answer, close); A runs a
# client loop (connect, send 8 bytes, read the answer, close) for SECS seconds per
# path, several rounds alternating the paths.
#   sudo bash bench/e2e/services-rps.sh [--secs S] [--rounds N]
# Prints connections/s per path and round, the load average, and the pod ports' drop
# counters. Cleans up everything it created (trap), kills only its own pids.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=5; ROUNDS=3
while [ $# -gt 0 ]; do case $1 in
  --secs) SECS=$2; shift ;;
  --rounds) ROUNDS=$2; shift ;;
  *) echo "usage: $0 [--secs S] [--rounds N]" >&2; exit 2 ;;
esac; shift; done
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
[ -x "$BIN/xsknetd" ] && [ -x "$BIN/xsknetctl" ] || cargo build --release -q -p dataplane --bins
P=sr$$; NODE=${P}n; W=$(mktemp -d); SOCK=$W/s; D=""; SRV=""
CTL() { "$BIN/xsknetctl" --socket "$SOCK" "$@"; }
cleanup() { set +e
  [ -n "$SRV" ] && kill "$SRV" 2>/dev/null
  [ -n "$D" ] && kill -TERM "$D" 2>/dev/null && sleep 0.5
  ip netns del ${P}a 2>/dev/null; ip netns del ${P}b 2>/dev/null; ip netns del $NODE 2>/dev/null
  rm -rf "$W"; }
trap cleanup EXIT INT TERM

printf 'podCidr: 10.244.0.0/24\n' > "$W/node.yaml"
ip netns add $NODE; ip -n $NODE link set lo up
ip netns exec $NODE "$BIN/xsknetd" --config "$W/node.yaml" --socket "$SOCK" --state-dir "$W/st" 2>"$W/log" & D=$!
for _ in $(seq 100); do CTL status 2>/dev/null | grep -q '"ready": *true\|ready: true\|ready *true' && break; CTL status >/dev/null 2>&1 && break; sleep 0.1; done
for x in a:2 b:3; do n=${x%%:*}; ip=10.244.0.${x##*:}; ns=${P}$n
  ip netns add $ns; ip -n $ns link set lo up
  ip -n $NODE link add ${P}h$n type veth peer name eth0 netns $ns
  ip -n $ns addr add $ip/32 dev eth0; ip -n $ns link set eth0 up
  ip -n $ns route add 169.254.1.1 dev eth0 scope link
  ip -n $ns route add default via 169.254.1.1 dev eth0 onlink
  ip netns exec $ns ethtool -K eth0 tx off sg off tso off gso off >/dev/null 2>&1 || true
  CTL endpoint add --ifname ${P}h$n --ip $ip --namespace x --name $n --label pod=$n >/dev/null
done
sleep 0.5
ip netns exec $NODE iptables-restore --noflush <<'EOF'
*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-WEB - [0:0]
:KUBE-SEP-WEB - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A OUTPUT -j KUBE-SERVICES
-A POSTROUTING -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -j MASQUERADE --random-fully
-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-WEB
-A KUBE-SVC-WEB ! -s 10.244.0.0/16 -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-WEB -j KUBE-SEP-WEB
-A KUBE-SEP-WEB -s 10.244.0.3/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-WEB -p tcp -m tcp -j DNAT --to-destination 10.244.0.3:8080
COMMIT
EOF

cat > "$W/srv.py" <<'EOF'
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.244.0.3", 8080)); s.listen(1024)
while True:
    c, _ = s.accept()
    try:
        c.recv(64); c.sendall(b"answer!!")
    except OSError: pass
    c.close()
EOF
cat > "$W/cli.py" <<'EOF'
import socket, sys, time
host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
n = err = 0; end = time.monotonic() + secs; t0 = time.monotonic()
while time.monotonic() < end:
    try:
        c = socket.create_connection((host, port), timeout=2)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        c.sendall(b"request!"); r = c.recv(64); c.close()
        if r == b"answer!!": n += 1
        else: err += 1
    except OSError: err += 1
print("%.0f %d %d" % (n / (time.monotonic() - t0), n, err))
EOF
ip netns exec ${P}b python3 "$W/srv.py" & SRV=$!
sleep 0.5
ip netns exec ${P}a python3 "$W/cli.py" 10.244.0.3 8080 1 >/dev/null   # warm up (ARP, caches)
ip netns exec ${P}a python3 "$W/cli.py" 10.96.0.10 80 1 >/dev/null
echo "# conn/s (connect, 8 B request, 8 B answer, close; RST on close), ${SECS}s per path"
for r in $(seq "$ROUNDS"); do
  d=$(ip netns exec ${P}a python3 "$W/cli.py" 10.244.0.3 8080 "$SECS")
  s=$(ip netns exec ${P}a python3 "$W/cli.py" 10.96.0.10 80 "$SECS")
  echo "round $r  direct: $d   clusterip: $s   (rate ok err)"
done
echo "loadavg: $(cut -d' ' -f1-3 /proc/loadavg)"
CTL stats --json | python3 -c 'import json,sys; s=json.load(sys.stdin)
for p in s["ports"]:
    d={k:v for k,v in p.get("drops",{}).items() if v}
    print("port", p.get("ifname"), "rx", p.get("rx_packets", p.get("rx")), "drops", d)' 2>/dev/null || true

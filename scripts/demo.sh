#!/usr/bin/env bash
# The xsknet demo on a fresh machine (run as root). Installs what it needs, builds, then:
#  1. one node: xsknetd in a network namespace, three pods created through the xsknet CNI
#     plugin over the real CNI protocol (ADD with CNI_* env and a JSON config on stdin,
#     as kubelet's runtime does); every pod pings every other pod and the node, a TCP
#     transfer through the AF_XDP dataplane, a ClusterIP Service (kube-proxy's iptables
#     DNAT in the node's own stack) with a TCP request and a DNS query, the counters,
#     CNI DEL;
#  2. a three-node cluster (scripts/testbed.sh): nodes are network namespaces on an
#     underlay bridge, a three-member etcd holds the nodes (each claims its pod prefix),
#     pods and policies; cross-node ping and TCP (iperf3) over the VXLAN overlay, a
#     NetworkPolicy applied on one node about pods on the others (allowed from one pod,
#     refused from another), `xsknetctl node list`;
#  3. installs the plugin for podman (xsknetd install-cni: binary + conflist written
#     atomically once the dataplane is ready) and shows two podman containers pinging
#     each other and moving a TCP stream through xsknet.
# Everything it creates is removed on exit, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates namespaces and XDP programs)"; exit 1; }
bash scripts/setup.sh
echo "== building (release)"
cargo build --release --locked -q --workspace --bins

BIN=$PWD/target/release
P=xd$$                      # per-run prefix for every name
NODE=${P}node
WORK=$(mktemp -d /tmp/xsknet-demo.XXXXXX)
SOCK=$WORK/xsknetd.sock
DAEMON_PID=""
IPERF_PID=""
SVC_PIDS=()
PODMAN_DAEMON_PID=""
PW=""                       # podman's private directory
CONTAINERS=()
CLUSTER=""                  # set while the three-node testbed is up
CLUSTER_PIDS=()
export TB_NAME=${P}c TB_BIN=$BIN
# shellcheck source=testbed.sh
. scripts/testbed.sh
set -eu

stop_pid() { # SIGTERM a process we started, by pid, and wait for it
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  set +e
  [ -n "$IPERF_PID" ] && kill "$IPERF_PID" 2>/dev/null
  for p in "${SVC_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for c in "${CONTAINERS[@]}"; do pm rm -f -t 0 "$c" >/dev/null 2>&1; done
  [ -n "$PODMAN_DAEMON_PID" ] && stop_pid "$PODMAN_DAEMON_PID"
  [ -n "$DAEMON_PID" ] && stop_pid "$DAEMON_PID"
  for i in 1 2 3; do ip netns del "${P}pod$i" 2>/dev/null; done
  ip netns del "$NODE" 2>/dev/null
  for p in "${CLUSTER_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  [ -n "$CLUSTER" ] && tb_down
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM   # cleanup runs once, on the way out

ctl() { "$BIN/xsknetctl" --socket "$SOCK" "$@"; }

# One CNI call, as a container runtime makes it: env + config on stdin, JSON on stdout.
cni() { # cni ADD|DEL pod-number
  local cmd=$1 i=$2
  ip netns exec "$NODE" env CNI_COMMAND="$cmd" CNI_CONTAINERID="demo-pod$i" \
    CNI_NETNS="/run/netns/${P}pod$i" CNI_IFNAME=eth0 CNI_PATH="$BIN:/usr/lib/cni" \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=pod$i" \
    "$BIN/xsknet" <"$WORK/net.conf"
}

echo
echo "== 1. node namespace $NODE, xsknetd on its embedded defaults"
ip netns add "$NODE"
ip -n "$NODE" link set lo up
ip netns exec "$NODE" "$BIN/xsknetd" --socket "$SOCK" --state-dir "$WORK/state" 2>"$WORK/xsknetd.log" &
DAEMON_PID=$!
for _ in $(seq 100); do "$BIN/xsknetd" --socket "$SOCK" probe >/dev/null 2>&1 && break; sleep 0.1; done
ctl status

cat >"$WORK/net.conf" <<CONF
{"cniVersion": "1.0.0", "name": "xsknet", "type": "xsknet",
 "socket": "$SOCK", "stateDir": "$WORK/state", "mtu": 1500,
 "args": {"labels": {"app": "demo"}}}
CONF
echo "== CNI ADD of three pods through the xsknet plugin (the result of the first one in full)"
for i in 1 2 3; do
  ip netns add "${P}pod$i"
  if [ "$i" = 1 ]; then cni ADD $i; echo; else cni ADD $i >/dev/null; fi
done
ctl endpoint list

echo "== every pod pings every other pod, and the node (10.244.0.1, the host port)"
pod_ip() { ip -n "${P}pod$1" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1; }
for i in 1 2 3; do
  for j in 1 2 3; do
    [ "$i" = "$j" ] && continue
    ip netns exec "${P}pod$i" ping -c 2 -i 0.2 -W 2 -q "$(pod_ip $j)" | tail -2 | head -1 | sed "s/^/pod$i -> pod$j: /"
  done
  ip netns exec "${P}pod$i" ping -c 2 -i 0.2 -W 2 -q 10.244.0.1 | tail -2 | head -1 | sed "s/^/pod$i -> node: /"
done
echo "== the node pings pod1 over the host port"
ip netns exec "$NODE" ping -c 2 -i 0.2 -W 2 -q "$(pod_ip 1)" | tail -2 | head -1

echo "== TCP: iperf3 from pod1 to pod2 through the dataplane (3 s)"
ip netns exec "${P}pod2" iperf3 -s -1 -B "$(pod_ip 2)" >/dev/null 2>&1 &
IPERF_PID=$!
sleep 0.5
ip netns exec "${P}pod1" iperf3 -c "$(pod_ip 2)" -t 3 -f g | grep -E 'sender|receiver'
wait "$IPERF_PID" 2>/dev/null || true
IPERF_PID=""

echo "== a ClusterIP Service: 10.96.0.10 (TCP 80 -> pod2:8080, UDP 53 -> pod2:5353), written"
echo "   as kube-proxy's iptables mode writes it (DNAT in nat PREROUTING/OUTPUT of the node)"
B=$(pod_ip 2)
ip netns exec "$NODE" iptables-restore --noflush <<RULES
*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-DEMO-TCP - [0:0]
:KUBE-SEP-DEMO-TCP - [0:0]
:KUBE-SVC-DEMO-DNS - [0:0]
:KUBE-SEP-DEMO-DNS - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-DEMO-TCP
-A KUBE-SVC-DEMO-TCP -j KUBE-SEP-DEMO-TCP
-A KUBE-SEP-DEMO-TCP -p tcp -m tcp -j DNAT --to-destination $B:8080
-A KUBE-SERVICES -d 10.96.0.10/32 -p udp -m udp --dport 53 -j KUBE-SVC-DEMO-DNS
-A KUBE-SVC-DEMO-DNS -j KUBE-SEP-DEMO-DNS
-A KUBE-SEP-DEMO-DNS -p udp -m udp -j DNAT --to-destination $B:5353
COMMIT
RULES
ip netns exec "$NODE" iptables -t nat -S | grep -E 'KUBE-(SERVICES|SEP)' | sed 's/^/   /'
# pod2: an HTTP server and a tiny resolver (answers every A query with 10.96.0.10).
ip netns exec "${P}pod2" python3 -m http.server 8080 --bind "$B" >/dev/null 2>&1 &
SVC_PIDS+=($!)
ip netns exec "${P}pod2" python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 5353))
while True:
    q, a = s.recvfrom(512)
    r = bytearray(q); r[2] = 0x81; r[3] = 0x80; r[6:8] = b"\x00\x01"
    s.sendto(bytes(r) + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x1e\x00\x04" + socket.inet_aton("10.96.0.10"), a)
' "$B" &
SVC_PIDS+=($!)
sleep 0.5
echo "   pod1 -> http://10.96.0.10:80/ (the node DNATs to pod2; the reply goes back through the node):"
ip netns exec "${P}pod1" python3 -c '
import urllib.request
r = urllib.request.urlopen("http://10.96.0.10/", timeout=3)
print("   HTTP", r.status, "from the Service address,", len(r.read()), "bytes")'
echo "   pod1 -> DNS query for web.demo.svc.cluster.local to 10.96.0.10:53 (connected UDP socket, as resolvers use):"
ip netns exec "${P}pod1" python3 -c '
import socket, struct
q = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(l)]) + l.encode() for l in "web.demo.svc.cluster.local".split(".")) + b"\0\0\1\0\1"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.connect(("10.96.0.10", 53)); s.send(q); r = s.recv(512)
assert r[:2] == q[:2] and r[2] & 0x80, "not an answer to our query"
print("   answer id 0x%04x from %s: web.demo.svc.cluster.local A %s" % (struct.unpack("!H", r[:2])[0], s.getpeername()[0], socket.inet_ntoa(r[-4:])))'
for p in "${SVC_PIDS[@]}"; do kill "$p" 2>/dev/null; done
SVC_PIDS=()

echo "== counters (xsknetctl stats, first lines)"
ctl stats | head -8
echo "== CNI DEL of the pods: endpoints, veths and addresses released"
for i in 1 2 3; do cni DEL $i; done
ctl endpoint list
echo "== stopping the daemon: it detaches its XDP programs and removes the host port"
stop_pid "$DAEMON_PID"; DAEMON_PID=""
if ip -n "$NODE" -d link show | grep -q 'prog/xdp'; then echo "demo: XDP program left behind!"; exit 1; fi

echo
echo "== 2. a three-node cluster: nodes as network namespaces on an underlay bridge, etcd with three members"
tb_up 3 3 8472 claim
CLUSTER=1
for n in n1 n2 n3; do
  tb_ctl $n status | grep -E 'pod cidr|uplink|overlay' | sed "s/^/$n: /"
done
echo "== xsknetctl node list (on n1): every node's record from etcd, prefixes claimed"
tb_ctl n1 node list
echo "== pods through the CNI plugin: web on n1, good on n2, bad on n3"
WEB=$(tb_pod n1 web app=web)
GOOD=$(tb_pod n2 good app=good)
BAD=$(tb_pod n3 bad app=bad)
echo "web $WEB (n1), good $GOOD (n2), bad $BAD (n3)"
echo "== cross-node ping over the VXLAN overlay"
for pair in "good $WEB" "web $BAD" "bad $GOOD"; do
  set -- $pair
  tb_exec "$1" ping -c 2 -i 0.2 -W 2 -q "$2" | tail -2 | head -1 | sed "s/^/$1 -> $2: /"
done
echo "== TCP across nodes: iperf3 from good (n2) to web (n1), 3 s"
ip netns exec "${TB_NAME}p-web" iperf3 -s -1 -B "$WEB" >/dev/null 2>&1 &   # $! is iperf3 itself
CLUSTER_PIDS+=($!)
sleep 0.5
tb_exec good iperf3 -c "$WEB" -t 3 -f g | grep -E 'sender|receiver'
echo "== a NetworkPolicy applied on n3, about web (n1): only app=good may connect to TCP 8080"
cat >"$WORK/web-from-good.yaml" <<YAML
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-good, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: good}}}]
    ports: [{protocol: TCP, port: 8080}]
YAML
ip netns exec "${TB_NAME}p-web" python3 -m http.server 8080 --bind "$WEB" >/dev/null 2>&1 &
CLUSTER_PIDS+=($!)
try_web() { # try_web POD: an HTTP request from POD to web:8080
  tb_exec "$1" python3 -c '
import sys, urllib.request
try:
    r = urllib.request.urlopen("http://%s:8080/" % sys.argv[1], timeout=2); print("allowed: HTTP", r.status)
except Exception as e:
    print("refused:", getattr(e, "reason", e)); sys.exit(1)' "$WEB"
}
# The server answers (asked from inside web itself, which no policy sees).
up=""
for _ in $(seq 40); do try_web web >/dev/null 2>&1 && { up=1; break; }; sleep 0.5; done
[ -n "$up" ] || { echo "demo: web's HTTP server does not answer"; exit 1; }
tb_ctl n3 policy apply -f "$WORK/web-from-good.yaml"
for _ in $(seq 50); do try_web bad >/dev/null 2>&1 || break; sleep 0.2; done  # until it reached n1
echo -n "   good (n2) -> web (n1):8080  "; try_web good || { echo "demo: good was refused"; exit 1; }
echo -n "   bad  (n3) -> web (n1):8080  "; try_web bad && { echo "demo: bad was let in"; exit 1; }
tb_ctl n1 policy list
echo "== xsknetctl node list (on n2)"
tb_ctl n2 node list
for p in "${CLUSTER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
CLUSTER_PIDS=()
tb_down; CLUSTER=""

echo
echo "== 3. podman (CNI backend) with xsknet"
PW=$WORK/podman
bash scripts/podman-setup.sh "$PW" | grep -v '^[A-Z_]*=' || true
pm() { CONTAINERS_CONF="$PW/containers.conf" CONTAINERS_STORAGE_CONF="$PW/storage.conf" timeout -k 5 90 podman "$@"; }
N=$(( $$ % 200 + 20 ))
PSOCK=$WORK/podman-xsknetd.sock
cat >"$WORK/podman-node.yaml" <<YAML
socket: $PSOCK
stateDir: $WORK/podman-state
podCidr: 10.246.$N.0/24
hostPort: {name: xsd$N, peerName: xsd${N}d}
# the root namespace: no masquerade table left there (podman's containers need none)
masquerade: {enabled: false, table: xsd$N}
YAML
"$BIN/xsknetd" --config "$WORK/podman-node.yaml" run 2>"$WORK/podman-xsknetd.log" &
PODMAN_DAEMON_PID=$!
"$BIN/xsknetd" --config "$WORK/podman-node.yaml" install-cni --cni-bin-dir "$PW/cni-bin" \
  --cni-conf-dir "$PW/net.d" --plugin-binary "$BIN/xsknet" --wait-ready-timeout 20
echo "conflist written once the dataplane was ready:"; cat "$PW/net.d/10-xsknet.conflist"; echo
for c in a b; do
  CONTAINERS+=("${P}-$c")
  pm run -d --name "${P}-$c" --network xsknet localhost/busybox:local sleep 600 >/dev/null
done
cip() { pm inspect -f '{{.NetworkSettings.Networks.xsknet.IPAddress}}' "${P}-$1"; }
echo "containers: ${P}-a $(cip a), ${P}-b $(cip b)"
pm exec "${P}-a" ping -c 3 -W 2 "$(cip b)" | tail -2 | head -1 | sed "s/^/podman a -> b: /"
echo "== TCP: 20 MiB from container a to container b with busybox nc"
# busybox nc -l quits when its stdin closes, so the listener keeps one open.
pm exec -d "${P}-b" sh -c "sleep 60 | nc -l -p 5000 > /tmp/got" >/dev/null
sleep 0.5
sent=$(pm exec "${P}-a" sh -c "head -c 20971520 /dev/urandom > /tmp/data && nc $(cip b) 5000 < /tmp/data && md5sum < /tmp/data" | awk '{print $1}')
for _ in $(seq 100); do
  size=$(pm exec "${P}-b" sh -c "wc -c < /tmp/got" | tr -d ' ')
  [ "$size" = 20971520 ] && break
  sleep 0.2
done
got=$(pm exec "${P}-b" sh -c "md5sum < /tmp/got" | awk '{print $1}')
echo "sent 20971520 bytes md5 $sent; received $size bytes md5 $got"
[ "$sent" = "$got" ] || { echo "demo: TCP stream corrupted or incomplete"; exit 1; }
"$BIN/xsknetctl" --socket "$PSOCK" stats | sed -n '1,2p'
for c in "${CONTAINERS[@]}"; do pm rm -f -t 0 "$c" >/dev/null; done
CONTAINERS=()
"$BIN/xsknetd" --config "$WORK/podman-node.yaml" uninstall-cni --cni-bin-dir "$PW/cni-bin" --cni-conf-dir "$PW/net.d"
stop_pid "$PODMAN_DAEMON_PID"; PODMAN_DAEMON_PID=""
echo "demo: ok"

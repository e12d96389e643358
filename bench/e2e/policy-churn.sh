#!/usr/bin/env bash
# Packet loss while NetworkPolicy churns (issue 4): node netns + pods x/a (10.244.0.2)
# and x/b (10.244.0.3) + xsknetd. B is isolated for ingress except UDP 9000 from
# pod=a. A sends N = RATE*SECS numbered UDP datagrams to B at a steady rate while a
# python3 client re-applies the policy ~UPS times a second over the control socket,
# alternating two versions that both allow the flow (they differ in an unrelated extra
# TCP port), so every update recompiles the policy the flow is classified by.
#   sudo bash bench/e2e/policy-churn.sh [--no-updates] [--rate PPS] [--secs S] [--ups N]
# --no-updates is the baseline: same traffic, no policy updates, so loss at that
# packet rate is separated from loss caused by updates.
# Reports sent/received/lost, achieved updates/s, table generation before/after and
# the pod ports' drop counters (policy_denied must be 0).
# Cleans up everything it created (trap), kills only what it started (by pid).
set -euo pipefail
cd "$(dirname "$0")/../.."
UPDATES=1; RATE=20000; SECS=10; UPS=100
while [ $# -gt 0 ]; do case $1 in
  --no-updates) UPDATES=0 ;;
  --rate) RATE=$2; shift ;;
  --secs) SECS=$2; shift ;;
  --ups) UPS=$2; shift ;;
  *) echo "usage: $0 [--no-updates] [--rate PPS] [--secs S] [--ups N]" >&2; exit 2 ;;
esac; shift; done
N=$(( RATE * SECS ))
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
[ -x "$BIN/xsknetd" ] && [ -x "$BIN/xsknetctl" ] || cargo build --release -q -p dataplane --bins
P=pc$$; NODE=${P}n; W=$(mktemp -d); SOCK=$W/s; D=""; RCV=""; CH=""
CTL() { "$BIN/xsknetctl" --socket "$SOCK" "$@"; }
cleanup() { set +e
  for p in $CH $RCV; do kill "$p" 2>/dev/null; done
  [ -n "$D" ] && kill -TERM "$D" 2>/dev/null && sleep 0.5
  ip netns del ${P}a 2>/dev/null; ip netns del ${P}b 2>/dev/null; ip netns del $NODE 2>/dev/null
  rm -rf "$W"; }
trap cleanup EXIT INT TERM

# --- policies: v1 and v2 both allow UDP 9000 from pod=a; they differ in an extra port.
policy() { cat <<EOF
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: b-from-a
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: b}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels: {pod: a}
    ports:
    - {protocol: UDP, port: 9000}
    - {protocol: TCP, port: $1}
EOF
}
{ printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n---\n'; policy 8080; } > "$W/p1.yaml"
policy 8081 > "$W/p2.yaml"

# --- node, daemon, pods (as in tcp-ring-depth.sh)
printf 'umem:\n  ringSize: 2048\n  framesPerPort: 4096\n' > "$W/node.yaml"
ip netns add $NODE; ip -n $NODE link set lo up
ip netns exec $NODE "$BIN/xsknetd" --config "$W/node.yaml" --socket "$SOCK" --state-dir "$W/st" 2>"$W/log" & D=$!
for _ in $(seq 50); do CTL status >/dev/null 2>&1 && break; sleep 0.1; done
for x in a:2 b:3; do n=${x%%:*}; ip=10.244.0.${x##*:}; ns=${P}$n
  ip netns add $ns; ip -n $ns link set lo up
  ip -n $NODE link add ${P}h$n type veth peer name eth0 netns $ns
  ip -n $ns addr add $ip/32 dev eth0; ip -n $ns link set eth0 up
  ip -n $ns route add 169.254.1.1 dev eth0 scope link
  ip -n $ns route add default via 169.254.1.1 dev eth0 onlink
  ip netns exec $ns ethtool -K eth0 tx off sg off tso off gso off >/dev/null 2>&1 || true
  CTL endpoint add --ifname ${P}h$n --ip $ip --namespace x --name $n --label pod=$n >/dev/null
done
CTL policy apply -f "$W/p1.yaml" >/dev/null
ip netns exec ${P}a ping -c1 -W1 10.244.0.3 >/dev/null 2>&1 \
  && echo "note: ICMP a->b allowed (policy not isolating?)" || true

# --- receiver in B: counts distinct sequence numbers until 2 s idle after the first.
cat > "$W/rcv.py" <<'EOF'
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try: s.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE (root)
except OSError: s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
s.bind(("10.244.0.3", 9000))
open(sys.argv[1] + ".ready", "w").close()
seen = set(); total = 0; s.settimeout(60)
while True:
    try: d = s.recv(2048)
    except socket.timeout: break
    total += 1; seen.add(struct.unpack_from("!Q", d)[0]); s.settimeout(2)
open(sys.argv[1], "w").write("%d %d\n" % (total, len(seen)))
EOF
# --- sender in A: N numbered 64-byte datagrams, paced per 1 ms slot.
cat > "$W/snd.py" <<'EOF'
import socket, struct, sys, time
n, rate = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
s.connect(("10.244.0.3", 9000)); pad = b"\0" * 56; err = 0
t0 = time.monotonic(); i = 0
while i < n:
    due = min(n, int((time.monotonic() - t0) * rate) + 1)
    while i < due:
        try: s.send(struct.pack("!Q", i) + pad); i += 1
        except OSError: err += 1; time.sleep(0.0001)
    time.sleep(0.0005)
print(n, "%.3f" % (time.monotonic() - t0), err)
EOF
# --- churner: one policy_apply per connection on the control socket, paced to UPS/s.
cat > "$W/churn.py" <<'EOF'
import json, socket, sys, time
sock, ups, f1, f2, out = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
docs = [open(f1).read(), open(f2).read()]
ok = fail = 0; gens = []; lat = []; stop = False; t0 = time.monotonic(); k = 0
import signal
def h(*_):
    global stop; stop = True
signal.signal(signal.SIGTERM, h)
while not stop:
    t = time.monotonic()
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.connect(sock)
    c.sendall(json.dumps({"v": 1, "op": "policy_apply", "yaml": docs[k % 2], "file": "churn"}).encode() + b"\n")
    buf = b""
    while not buf.endswith(b"\n"):
        b = c.recv(65536)
        if not b: break
        buf += b
    c.close(); lat.append(time.monotonic() - t)
    r = json.loads(buf)
    if r.get("ok"): ok += 1; gens.append(r["result"]["generation"])
    else:
        fail += 1
        if fail < 4: print("apply failed:", r, file=sys.stderr)
    k += 1
    nxt = t0 + k / ups
    d = nxt - time.monotonic()
    if d > 0: time.sleep(d)
el = time.monotonic() - t0; lat.sort()
open(out, "w").write("%d %d %.3f %.1f %.2f %.2f %s %s\n" % (ok, fail, el, (ok + fail) / el,
    1e3 * lat[len(lat) // 2] if lat else 0, 1e3 * lat[-1] if lat else 0,
    gens[0] if gens else "-", gens[-1] if gens else "-"))
EOF

gen() { CTL status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["generation"])'; }
G0=$(gen)
CTL stats --json > "$W/stats0.json"   # counters so far (the ICMP isolation probe above)
ip netns exec ${P}b python3 "$W/rcv.py" "$W/rcv.out" & RCV=$!
for _ in $(seq 50); do [ -e "$W/rcv.out.ready" ] && break; sleep 0.1; done
if [ $UPDATES = 1 ]; then
  python3 "$W/churn.py" "$SOCK" "$UPS" "$W/p2.yaml" "$W/p1.yaml" "$W/churn.out" & CH=$!
  sleep 0.5   # churn already running when traffic starts
fi
echo "policy-churn: $( [ $UPDATES = 1 ] && echo "updates ~${UPS}/s" || echo "baseline, no updates"), $N datagrams at $RATE pps, load: $(cut -d' ' -f1-3 /proc/loadavg)"
read -r SENT SDUR SERR < <(ip netns exec ${P}a python3 "$W/snd.py" "$N" "$RATE")
if [ -n "$CH" ]; then sleep 0.3; kill -TERM "$CH"; wait "$CH" || true; CH=""; fi
wait "$RCV" || true; RCV=""
G1=$(gen)
read -r RTOT RUNIQ < "$W/rcv.out"
echo "sent $SENT in ${SDUR}s (send errors/retries $SERR), received $RTOT (distinct $RUNIQ), lost $(( SENT - RUNIQ ))"
if [ $UPDATES = 1 ]; then
  read -r OK FAIL EL RPS P50 PMAX GF GL < "$W/churn.out"
  echo "policy updates: $OK ok, $FAIL failed in ${EL}s = ${RPS}/s achieved (apply latency p50 ${P50} ms, max ${PMAX} ms), generations $GF..$GL"
fi
echo "table generation before traffic $G0, after $G1"
CTL stats --json > "$W/stats1.json"
python3 - "$W/stats0.json" "$W/stats1.json" <<'EOF'
import json, sys
s0, s1 = (json.load(open(f)) for f in sys.argv[1:3])
before = {p['ifname']: p for p in s0['ports']}
for p in s1['ports'][1:]:
    b = before.get(p['ifname'], {})
    d = {k: v - (b.get('drops') or {}).get(k, 0) for k, v in p['drops'].items()}
    d = {k: v for k, v in d.items() if v}
    x = {k: (v or 0) - ((b.get('xdp') or {}).get(k) or 0) for k, v in (p.get('xdp') or {}).items() if k != 'tx_ring_empty_descs'}
    x = {k: v for k, v in x.items() if v}
    print('%s (during run) rx %d tx %d drops %s policy_denied %d kernel %s' % (p['ifname'],
          p['rx_packets'] - b.get('rx_packets', 0), p['tx_packets'] - b.get('tx_packets', 0),
          d or '{}', d.get('policy_denied', 0), x or '{}'))
print('policy hits (total)', s1.get('policy_hits') or '{}')
EOF
grep -iE 'panic|error' "$W/log" | head -5 || true

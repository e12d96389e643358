#!/usr/bin/env bash
# End-to-end scaling of xsknet's workers (issue 11 point 5): 4 pods on one node (two
# sender -> receiver pairs), pktgen at max rate in the senders, delivered pps per pair and
# in total, with 1 worker (`workers: [{core: 1}]`) and with 2 (`[{core: 0}, {core: 1}]`).
#
#   bench/e2e/scaling.sh [--duration S] [--out CSV] [--xsknet-bin DIR] [--pktgen-bin FILE]
#                        [--pps N]
#
# The daemon gives each new pod port to the worker with the fewest ports (lowest id on a
# tie, daemon/ports.rs least_loaded), so the endpoints are added in the order s1, s2, r1,
# r2: with 2 workers, worker 0 owns pair 1 (s1 -> r1) and worker 1 owns pair 2; the
# script checks that in `xsknetctl endpoint list`. Each configuration is measured with
# one pair sending and with both. The machine has 2 CPUs: the generators (pair 1's on
# CPU 0, pair 2's on CPU 1) share them with the workers, so this shows how the work
# spreads, not a clean per-worker ceiling. --pps N paces each sender instead of max rate
# (so the generators leave CPU to the workers; the CSV's mode is then e2e-pps<N>).
#
# Writes bench/out/scaling-<UTC stamp>.csv (mode,workers,pairs,delivered_pps,loadavg; mode
# e2e) and prints a per-pair table. Runs as root; touches only the namespaces it creates
# (xs<pid>-*), kills what it started by pid, removes everything on exit (trap).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
DUR=5
OUT=""
XSKNET_BIN=""
PKTGEN=""
PPS=""
usage() { sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DUR=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --xsknet-bin) XSKNET_BIN=$2; shift 2 ;;
    --pktgen-bin) PKTGEN=$2; shift 2 ;;
    --pps) PPS=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "scaling.sh: unknown argument $1" >&2; usage 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "scaling.sh: must run as root" >&2; exit 1; }
case "$DUR" in ''|*[!0-9]*) echo "scaling.sh: --duration wants whole seconds" >&2; exit 2 ;; esac
[ "$DUR" -ge 1 ] && [ "$DUR" -le 60 ] || { echo "scaling.sh: --duration must be 1..60" >&2; exit 2; }
case "$PPS" in '') ;; *[!0-9]*) echo "scaling.sh: --pps wants a whole number" >&2; exit 2 ;; esac
MODE=e2e; RATE=(); RATE_TXT="max rate"
[ -z "$PPS" ] || { MODE=e2e-pps$PPS; RATE=(--pps "$PPS"); RATE_TXT="paced at $PPS pps each"; }
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
[ -n "$OUT" ] || OUT="$REPO/bench/out/scaling-$STAMP.csv"
mkdir -p "$(dirname "$OUT")"
if [ -z "$XSKNET_BIN" ]; then
  XSKNET_BIN=$REPO/target/release
  [ -x "$XSKNET_BIN/xsknetd" ] || [ -z "${CARGO_TARGET_DIR:-}" ] || XSKNET_BIN=$CARGO_TARGET_DIR/release
fi
[ -n "$PKTGEN" ] || PKTGEN=$XSKNET_BIN/pktgen
for b in "$XSKNET_BIN/xsknetd" "$XSKNET_BIN/xsknetctl" "$PKTGEN"; do
  [ -x "$b" ] || { echo "scaling.sh: $b not found (cargo build --release -p dataplane --bins && cargo build --release -p bench --bin pktgen)" >&2; exit 1; }
done

P="xs$$"
NS_NODE="$P-node"
PODS=(s1 s2 r1 r2)                       # endpoint add order (see above)
declare -A IP=([s1]=10.244.0.2 [s2]=10.244.0.3 [r1]=10.244.0.4 [r2]=10.244.0.5)
declare -A MAC=()
GW=169.254.1.1
TMP=$(mktemp -d "/tmp/$P.XXXXXX")
PIDS=()
LAST_PID=""
log() { printf '[%s scaling] %s\n' "$(date +%T)" "$*" >&2; }

start_bg() { # start_bg LOG CMD...: own session, so the pid is the process group
  local logf=$1; shift
  setsid "$@" >"$logf" 2>&1 </dev/null &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}
alive() { kill -0 "$1" 2>/dev/null; }
group_alive() { kill -0 -- "-$1" 2>/dev/null || alive "$1"; }
stop_pid() {
  local pid=$1 sig=${2:-TERM} i
  if group_alive "$pid"; then
    kill -s "$sig" -- "-$pid" 2>/dev/null || kill -s "$sig" "$pid" 2>/dev/null
    for i in $(seq 1 30); do group_alive "$pid" || break; sleep 0.1; done
    if group_alive "$pid"; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null; fi
  fi
  wait "$pid" 2>/dev/null
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
ctr() { nsx "$P-$1" cat "/sys/class/net/eth0/statistics/$2"; }
teardown() {
  local pid ns
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  PIDS=()
  for ns in "${PODS[@]/#/$P-}" "$NS_NODE"; do
    if ip netns list | grep -qx "$ns\( (id: [0-9]*)\)\?"; then ip netns del "$ns" 2>/dev/null; fi
  done
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  teardown
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM
wait_for() {
  local secs=$1; shift
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do [ $SECONDS -lt $deadline ] || return 1; sleep 0.2; done
}

# node_up WORKERS_YAML: namespaces, veths, pods, xsknetd, endpoints in the order s1 s2 r1 r2
node_up() {
  local workers_yaml=$1 pod ns
  ip netns add "$NS_NODE" || return 1
  ip -n "$NS_NODE" link set lo up
  nsx "$NS_NODE" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  for pod in "${PODS[@]}"; do
    ns=$P-$pod
    ip netns add "$ns" || return 1
    nsx "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n "$ns" link set lo up
    ip -n "$NS_NODE" link add "h$pod" type veth peer name eth0 netns "$ns" || return 1
    ip -n "$NS_NODE" link set "h$pod" up || return 1
    ip -n "$ns" addr add "${IP[$pod]}/32" dev eth0 &&
    ip -n "$ns" link set eth0 up &&
    ip -n "$ns" route add "$GW" dev eth0 scope link &&
    ip -n "$ns" route add default via "$GW" dev eth0 onlink &&
    nsx "$ns" ethtool -K eth0 tx off tso off gso off >/dev/null || return 1
    MAC[$pod]=$(nsx "$ns" cat /sys/class/net/eth0/address)
  done
  local d=$TMP/xsknet sock=$TMP/xsknet/xsknetd.sock
  rm -rf "$d"; mkdir -p "$d/state"
  cat >"$d/node.yaml" <<YAML
socket: $sock
stateDir: $d/state
podCidr: 10.244.0.0/24
workers:
$workers_yaml
hostPort:
  enabled: false
YAML
  start_bg "$d/xsknetd.log" ip netns exec "$NS_NODE" env RUST_LOG=info "$XSKNET_BIN/xsknetd" \
    --config "$d/node.yaml" --socket "$sock" --state-dir "$d/state"
  local pid=$LAST_PID
  CTL=("$XSKNET_BIN/xsknetctl" --socket "$sock")
  ready() { alive "$pid" || return 0; "${CTL[@]}" status --json 2>/dev/null |
    python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("ready") is True else 1)'; }
  wait_for 20 ready && alive "$pid" ||
    { log "xsknetd not ready: $(tail -n 3 "$d/xsknetd.log" | tr '\n' ' ')"; return 1; }
  for pod in "${PODS[@]}"; do
    nsx "$NS_NODE" "${CTL[@]}" endpoint add --ifname "h$pod" --ip "${IP[$pod]}" --mac "${MAC[$pod]}" \
      >>"$d/ctl.log" 2>&1 || { log "endpoint add h$pod failed: $(tail -n 2 "$d/ctl.log" | tr '\n' ' ')"; return 1; }
  done
  # reachability and ARP for the gateway (the dataplane answers it)
  local i
  for i in 1 2; do
    nsx "$P-s$i" ping -c 2 -i 0.2 -W 1 "${IP[r$i]}" >/dev/null 2>&1 &&
    nsx "$P-r$i" ping -c 1 -W 1 "${IP[s$i]}" >/dev/null 2>&1 ||
      { log "pair $i cannot ping through xsknet"; return 1; }
  done
}

# worker_of POD: the worker owning the pod's port (xsknetctl endpoint list --json)
worker_of() {
  "${CTL[@]}" endpoint list --json 2>/dev/null | python3 -c '
import json, sys
want = sys.argv[1]
j = json.load(sys.stdin)
eps = j if isinstance(j, list) else j.get("endpoints", [])
for e in eps:
    if e.get("ifname") == want:
        print(e.get("worker")); break' "h$1"
}

# window PAIRS: pktgen (max rate) in s1 (CPU 0) [and s2 (CPU 1)] for 1 s warm-up + DUR s;
# sets D1 D2 (delivered pps at r1/r2 eth0) and TOTAL
window() {
  local pairs=$1 i pids=() gwmac
  for i in $(seq 1 "$pairs"); do
    gwmac=$(ip -n "$P-s$i" neigh show "$GW" dev eth0 | awk '{for(k=1;k<NF;k++) if($k=="lladdr") print $(k+1)}')
    [ -n "$gwmac" ] || { log "gateway not resolved in s$i"; return 1; }
    start_bg "$TMP/pktgen-$i.log" ip netns exec "$P-s$i" "$PKTGEN" send --dev eth0 \
      --dst-mac "$gwmac" --src-ip "${IP[s$i]}" --dst-ip "${IP[r$i]}" --dst-port 9 --size 60 \
      --duration $((DUR + 10)) --mode auto --cpu $((i - 1)) --stream "$i" "${RATE[@]}"
    pids+=("$LAST_PID")
  done
  sleep 1
  local a1 a2 b1 b2 t0 t1
  t0=$EPOCHREALTIME; a1=$(ctr r1 rx_packets); a2=$(ctr r2 rx_packets)
  sleep "$DUR" & wait $!
  t1=$EPOCHREALTIME; b1=$(ctr r1 rx_packets); b2=$(ctr r2 rx_packets)
  for i in "${pids[@]}"; do
    alive "$i" || log "a pktgen exited early: $(tail -n 1 "$TMP"/pktgen-*.log | tr '\n' ' ')"
    stop_pid "$i" INT
  done
  read -r D1 D2 TOTAL < <(python3 -c "
dt=$t1-$t0
d1=($b1-$a1)/dt; d2=($b2-$a2)/dt
print('%.0f %.0f %.0f' % (d1, d2, d1 + d2))")
  grep -h '"mode"' "$TMP"/pktgen-*.log | python3 -c '
import json, sys
for l in sys.stdin:
    j = json.loads(l)
    print("  pktgen stream %s: %s, offered %.0f pps%s" % (j["stream"], j["mode"], j["pps"],
          " (fallback: %s)" % j["fallback"] if j.get("fallback") else ""))' >&2
  rm -f "$TMP"/pktgen-*.log
}

echo "mode,workers,pairs,delivered_pps,loadavg" >"$OUT"
SUMMARY=()
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for workers in 1 2; do
  if [ "$workers" = 1 ]; then wy="  - core: 1"; else wy=$'  - core: 0\n  - core: 1'; fi
  log "xsknet with $workers worker(s)"
  node_up "$wy" || { teardown; exit 1; }
  owners="s1:w$(worker_of s1) s2:w$(worker_of s2) r1:w$(worker_of r1) r2:w$(worker_of r2)"
  log "ports: $owners"
  if [ "$workers" = 2 ] && [ "$owners" != "s1:w0 s2:w1 r1:w0 r2:w1" ]; then
    log "unexpected port placement ($owners): each worker should own one pair"; exit 1
  fi
  for pairs in 1 2; do
    log "$workers worker(s), $pairs pair(s) sending, ${DUR}s"
    window "$pairs" || exit 1
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    echo "$MODE,$workers,$pairs,$TOTAL,$load" >>"$OUT"
    SUMMARY+=("| $workers | $pairs | $D1 | $([ "$pairs" = 2 ] && echo "$D2" || echo —) | $TOTAL | $load |")
  done
  teardown
done
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

echo
echo "## xsknet worker scaling, end to end, $(date -u +%FT%TZ)"
echo
echo "- command: \`bench/e2e/scaling.sh --duration $DUR${PPS:+ --pps $PPS}\`; commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown); nproc=$(nproc), kernel $(uname -r)"
echo "- load average before/after: $LOAD0 / $LOAD1"
echo "- 64-byte UDP, pktgen $RATE_TXT (AF_XDP TX) in s1 (CPU 0) and s2 (CPU 1); delivered = r1/r2 eth0 rx_packets over a ${DUR} s window; the generators share the machine's 2 CPUs with the workers"
echo
echo "| workers | pairs sending | pair 1 delivered pps | pair 2 delivered pps | total pps | loadavg |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${SUMMARY[@]}"
echo
echo "CSV: $OUT"

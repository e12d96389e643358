#!/usr/bin/env bash
# Latency of xsknet against its idle policy: sockperf ping-pong between two pods through
# a real xsknetd, once per (idle.busyPollUs, worker core) case, with the worker's sleep
# count over each run.
#
#   bench/e2e/latency-idle.sh [--busy-poll 200,1000,10000] [--cores 1] [--duration 5]
#                             [--mps max|N] [--xsknet-bin DIR] [--out FILE]
#
# Prints one line per case and appends it to FILE (default
# bench/out/latency-idle-<UTC stamp>.csv): busy_poll_us,core,mps,p50_us,p99_us,p999_us,
# max_us,observations,sleeps,busy_cpu_pct,idle_cpu_pct,loadavg. Latency is sockperf's one
# way (RTT/2); busy_cpu_pct is the worker thread's CPU during the ping-pong, idle_cpu_pct
# over 3 s starting 1 s after it (an idle node must burn ~0). Runs as root;
# creates only namespaces named li<pid>-*, kills only the pids it started, removes
# everything on exit. Whole run: about (duration + 3) s per case.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BUSY="200,1000,10000"
CORES="1"
DUR=5
MPS=max
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release
OUT=""
usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --busy-poll) BUSY=$2; shift 2 ;;
    --cores) CORES=$2; shift 2 ;;
    --duration) DUR=$2; shift 2 ;;
    --mps) MPS=$2; shift 2 ;;
    --xsknet-bin) BIN=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "latency-idle.sh: unknown argument $1" >&2; usage 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "latency-idle.sh: must run as root" >&2; exit 1; }
case "$DUR" in ''|*[!0-9]*) echo "--duration wants whole seconds" >&2; exit 2 ;; esac
[ "$DUR" -ge 1 ] && [ "$DUR" -le 60 ] || { echo "--duration must be 1..60" >&2; exit 2; }
case "$MPS" in max|[1-9]*) ;; *) echo "--mps wants max or a number" >&2; exit 2 ;; esac
for t in sockperf ip ethtool python3 setsid; do
  command -v "$t" >/dev/null || { echo "latency-idle.sh: $t missing (bench/e2e/setup-peers.sh)" >&2; exit 1; }
done
[ -x "$BIN/xsknetd" ] && [ -x "$BIN/xsknetctl" ] ||
  { echo "latency-idle.sh: no xsknetd/xsknetctl in $BIN (cargo build --release -p dataplane)" >&2; exit 1; }
[ -n "$OUT" ] || OUT="$REPO/bench/out/latency-idle-$(date -u +%Y%m%dT%H%M%SZ).csv"

P="li$$"
NS_NODE="$P-node" NS_A="$P-a" NS_B="$P-b"
IP_A=10.244.0.2 IP_B=10.244.0.3 GW=169.254.1.1
TMP=$(mktemp -d "/tmp/$P.XXXXXX")
PIDS=()

start_bg() { local logf=$1; shift; setsid "$@" >"$logf" 2>&1 </dev/null & LAST_PID=$!; PIDS+=("$LAST_PID"); }
stop_pid() {
  local pid=$1 i
  if kill -0 -- "-$pid" 2>/dev/null || kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    for i in $(seq 1 30); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
teardown() {
  local pid ns
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  for ns in "$NS_A" "$NS_B" "$NS_NODE"; do
    ip netns list | grep -q "^$ns\b" && ip netns del "$ns" 2>/dev/null
  done
}
cleanup() { local rc=$?; trap - EXIT INT TERM; teardown; rm -rf "$TMP"; exit $rc; }
trap cleanup EXIT
trap 'exit 130' INT TERM
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

topo_up() {
  local ns
  for ns in "$NS_NODE" "$NS_A" "$NS_B"; do
    ip netns add "$ns" && ip -n "$ns" link set lo up || return 1
    nsx "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
  ip -n "$NS_NODE" link add hA type veth peer name eth0 netns "$NS_A" &&
  ip -n "$NS_NODE" link add hB type veth peer name eth0 netns "$NS_B" &&
  ip -n "$NS_NODE" link set hA up && ip -n "$NS_NODE" link set hB up || return 1
  local pod
  for pod in "$NS_A:$IP_A" "$NS_B:$IP_B"; do
    ns=${pod%%:*}
    ip -n "$ns" addr add "${pod#*:}/32" dev eth0 && ip -n "$ns" link set eth0 up &&
    ip -n "$ns" route add "$GW" dev eth0 scope link &&
    ip -n "$ns" route add default via "$GW" dev eth0 onlink &&
    nsx "$ns" ethtool -K eth0 tx off tso off gso off >/dev/null || return 1
  done
}

ticks() { # CPU clock ticks (user+system) of xsknetd PID's worker threads
  local t sum=0 f
  for t in /proc/"$1"/task/*; do
    [ "$(cat "$t/comm" 2>/dev/null)" = xsknet-w0 ] || continue
    read -ra f <"$t/stat" || continue
    # fields after the ")" of comm: utime and stime are the 14th and 15th overall
    local rest=${f[*]}; rest=${rest##*) }; read -ra f <<<"$rest"
    sum=$((sum + f[11] + f[12]))
  done
  echo "$sum"
}
pct() { # ticks-delta seconds -> percent of one CPU
  awk -v t="$1" -v s="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN{ printf "%.1f", 100 * t / hz / s }'
}

sleeps() { # the worker's sleep counter (sum over workers)
  "$BIN/xsknetctl" --socket "$TMP/x.sock" stats --json 2>/dev/null |
    python3 -c 'import json,sys; print(sum(w.get("sleeps",0) for w in json.load(sys.stdin).get("workers",[])))'
}

one_case() { # busy_poll_us core
  local busy=$1 core=$2 d=$TMP/x
  rm -rf "$d"; mkdir -p "$d/state"
  cat >"$d/node.yaml" <<EOF
socket: $TMP/x.sock
stateDir: $d/state
podCidr: 10.244.0.0/24
workers:
  - core: $core
hostPort:
  enabled: false
idle:
  busyPollUs: $busy
EOF
  start_bg "$d/xsknetd.log" ip netns exec "$NS_NODE" "$BIN/xsknetd" --config "$d/node.yaml" \
    --socket "$TMP/x.sock" --state-dir "$d/state"
  local dpid=$LAST_PID i
  for i in $(seq 1 100); do
    "$BIN/xsknetctl" --socket "$TMP/x.sock" status --json 2>/dev/null | grep -q '"ready": *true' && break
    kill -0 "$dpid" 2>/dev/null || break
    sleep 0.2
  done
  nsx "$NS_NODE" "$BIN/xsknetctl" --socket "$TMP/x.sock" endpoint add --ifname hA --ip "$IP_A" \
    --mac "$(nsx "$NS_A" cat /sys/class/net/eth0/address)" >"$d/ctl.log" 2>&1 &&
  nsx "$NS_NODE" "$BIN/xsknetctl" --socket "$TMP/x.sock" endpoint add --ifname hB --ip "$IP_B" \
    --mac "$(nsx "$NS_B" cat /sys/class/net/eth0/address)" >>"$d/ctl.log" 2>&1 ||
    { echo "case $busy/$core: xsknetd not usable: $(tail -n 3 "$d/xsknetd.log" "$d/ctl.log" | tr '\n' ' ')" >&2
      stop_pid "$dpid"; return 1; }
  nsx "$NS_A" ping -c 2 -i 0.2 -W 1 "$IP_B" >/dev/null 2>&1
  start_bg "$d/sr.log" ip netns exec "$NS_B" sockperf sr -i "$IP_B" -p 11111
  local spid=$LAST_PID
  sleep 0.5
  local s0 load0 mpsarg=()
  [ "$MPS" = max ] || mpsarg=(--mps "$MPS")
  s0=$(sleeps); load0=$(cut -d' ' -f1 /proc/loadavg)
  local t0=$(ticks "$dpid") w0=$SECONDS
  timeout $((DUR + 10)) ip netns exec "$NS_A" sockperf pp -i "$IP_B" -p 11111 -t "$DUR" \
    "${mpsarg[@]}" >"$d/pp.log" 2>&1
  local t1=$(ticks "$dpid") w1=$SECONDS
  local s1 load1; s1=$(sleeps); load1=$(cut -d' ' -f1 /proc/loadavg)
  stop_pid "$spid"
  sleep 1
  local t2=$(ticks "$dpid"); sleep 3; local t3=$(ticks "$dpid")
  local busy_cpu idle_cpu
  busy_cpu=$(pct $((t1 - t0)) $((w1 - w0 > 0 ? w1 - w0 : 1)))
  idle_cpu=$(pct $((t3 - t2)) 3)
  stop_pid "$dpid"
  local row
  row=$(awk -v b="$busy" -v c="$core" -v m="$MPS" -v s=$((s1 - s0)) -v l="$load0 -> $load1" \
    -v bc="$busy_cpu" -v ic="$idle_cpu" '
    /percentile 50.000/{p50=$NF} /percentile 99.000/{p99=$NF} /percentile 99.900/{p999=$NF}
    /<MAX> observation/{mx=$NF} /Total [0-9]+ observations/{ for (i=1;i<=NF;i++) if ($i ~ /observations/ && n == "") n=$(i-1); gsub(/[^0-9]/,"",n) }
    END{ if (p50 != "") printf "%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s", b, c, m, p50, p99, p999, mx, n, s, bc, ic, l }' "$d/pp.log")
  [ -n "$row" ] || { echo "case $busy/$core: sockperf failed: $(tail -n 2 "$d/pp.log" | tr '\n' ' ')" >&2; return 1; }
  echo "$row" | tee -a "$OUT"
}

mkdir -p "$(dirname "$OUT")"
[ -s "$OUT" ] || echo "busy_poll_us,core,mps,p50_us,p99_us,p999_us,max_us,observations,sleeps,busy_cpu_pct,idle_cpu_pct,loadavg" >"$OUT"
topo_up || { echo "latency-idle.sh: topology setup failed" >&2; exit 1; }
rc=0
IFS=, read -ra busy_list <<<"$BUSY"
IFS=, read -ra core_list <<<"$CORES"
for core in "${core_list[@]}"; do
  for busy in "${busy_list[@]}"; do
    one_case "$busy" "$core" || rc=1
  done
done
echo "latency-idle.sh: wrote $OUT" >&2
exit $rc

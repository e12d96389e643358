#!/usr/bin/env bash
# End-to-end two-pod benchmark: the same topology and the same tools for every datapath.
#
#   bench/e2e/run.sh [--peers veth,bridge,ovs,testpmd,xdp-redirect,xsknet] [--duration S]
#                    [--out FILE] [--json FILE] [--gen-cpus N] [--xsknet-bin DIR]
#                    [--pktgen-bin FILE] [--build-xsknet] [--keep-logs DIR] [--no-offloads-on]
#
# See bench/e2e/README.md. Runs as root. Touches nothing outside the namespaces it creates
# (named xb<pid>-node, xb<pid>-a, xb<pid>-b) and a temp dir; everything it starts is
# killed by pid (process group) and everything it creates is removed on exit (trap).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ALL_PEERS="veth,bridge,ovs,testpmd,xdp-redirect,xsknet"
PEERS=$ALL_PEERS
DUR=5
GEN_CPUS=2
OUT=""
JSON_OUT=""
XSKNET_BIN=""
PKTGEN=""
BUILD_XSKNET=0
KEEP_LOGS=""
TCP_OFFLOADS_ON=1
CMDLINE="bench/e2e/run.sh $*"

usage() { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --peers) PEERS=$2; shift 2 ;;
    --duration) DUR=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --json) JSON_OUT=$2; shift 2 ;;
    --gen-cpus) GEN_CPUS=$2; shift 2 ;;
    --xsknet-bin) XSKNET_BIN=$2; shift 2 ;;
    --pktgen-bin) PKTGEN=$2; shift 2 ;;
    --build-xsknet) BUILD_XSKNET=1; shift ;;
    --keep-logs) KEEP_LOGS=$2; shift 2 ;;
    --no-offloads-on) TCP_OFFLOADS_ON=0; shift ;;
    -h|--help) usage 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; usage 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "run.sh: must run as root" >&2; exit 1; }
case "$DUR" in ''|*[!0-9]*) echo "run.sh: --duration wants whole seconds" >&2; exit 2 ;; esac
[ "$DUR" -ge 1 ] && [ "$DUR" -le 120 ] || { echo "run.sh: --duration must be 1..120" >&2; exit 2; }
case "$GEN_CPUS" in 1|2) ;; *) echo "run.sh: --gen-cpus must be 1 or 2 (the saturation row runs pktgen xdp + pktgen mmsg)" >&2; exit 2 ;; esac
[ "$GEN_CPUS" -le "$(nproc)" ] || GEN_CPUS=$(nproc)
DATE=$(date -u +%F)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUTDIR=$REPO/bench/out
[ -n "$OUT" ] || OUT="$OUTDIR/e2e-$DATE.md"
[ -n "$JSON_OUT" ] || JSON_OUT="$OUTDIR/e2e-$STAMP.json"
mkdir -p "$OUTDIR" "$(dirname "$OUT")" "$(dirname "$JSON_OUT")"

# The binaries of this repo: --xsknet-bin DIR, else target/release, else
# $CARGO_TARGET_DIR/release; --build-xsknet builds what is missing.
bin_dir() {
  local bin=${XSKNET_BIN:-}
  if [ -z "$bin" ]; then
    bin=$REPO/target/release
    [ -x "$bin/$1" ] || [ -z "${CARGO_TARGET_DIR:-}" ] || bin=$CARGO_TARGET_DIR/release
  fi
  echo "$bin"
}
if [ -z "$PKTGEN" ]; then
  PKTGEN=$(bin_dir pktgen)/pktgen
  if [ ! -x "$PKTGEN" ] && [ "$BUILD_XSKNET" = 1 ]; then
    echo "run.sh: building pktgen (cargo build --release -p bench --bin pktgen)" >&2
    (cd "$REPO" && cargo build --release -p bench --bin pktgen) >&2 || exit 1
    PKTGEN=${CARGO_TARGET_DIR:-$REPO/target}/release/pktgen
  fi
fi
[ -x "$PKTGEN" ] || { echo "run.sh: pktgen not found at $PKTGEN (cargo build --release -p bench --bin pktgen, or --pktgen-bin FILE / --build-xsknet)" >&2; exit 1; }

P="xb$$"                 # per-run prefix of everything global we create
NS_NODE="$P-node"        # the private "node": host ends hA, hB and the datapath
NS_A="$P-a"              # pod A: eth0 10.244.0.2/32, the generator / client side
NS_B="$P-b"              # pod B: eth0 10.244.0.3/32, the sink / server side
IP_A=10.244.0.2
IP_B=10.244.0.3
GW=169.254.1.1
TMP=$(mktemp -d "/tmp/$P.XXXXXX")
PIDS=()
LAST_PID=""
DPDK_RUNDIR=""
DPDK_PARENT_EXISTED=0; [ -d /var/run/dpdk ] && DPDK_PARENT_EXISTED=1

log() { printf '[%s %s] %s\n' "$(date +%T)" "${PEER:-run}" "$*" >&2; }

# ---------------------------------------------------------------- processes, by pid
# start_bg LOGFILE CMD...: run CMD in its own session (so its pid is its process group
# and any children it forks can be signalled with it), remember the pid.
start_bg() {
  local logf=$1; shift
  setsid "$@" >"$logf" 2>&1 </dev/null &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}
alive() { kill -0 "$1" 2>/dev/null; }
# stop_pid PID [SIGNAL]: signal the process group we created, wait up to 3 s, then KILL.
# The group is signalled even when its leader already exited: a forking generator
# (several pktgen processes, a forking tool) can leave children behind when its parent fails.
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
# run_bounded SECS LOGFILE CMD...: run CMD (own session) for at most SECS; returns its rc
# (124 on timeout).
run_bounded() {
  local secs=$1 logf=$2; shift 2
  start_bg "$logf" "$@"
  local pid=$LAST_PID deadline=$((SECONDS + secs)) rc
  while alive "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  if alive "$pid"; then stop_pid "$pid" INT; return 124; fi
  wait "$pid"; rc=$?
  stop_pid "$pid"
  return $rc
}

# ---------------------------------------------------------------- topology
teardown() {
  local pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  PIDS=()
  unset OVS_RUNDIR OVS_DBDIR OVS_LOGDIR OVS_SYSCONFDIR
  if [ -n "${DPDK_RUNDIR:-}" ]; then
    rm -rf "$DPDK_RUNDIR"; DPDK_RUNDIR=""
    [ "$DPDK_PARENT_EXISTED" = 1 ] || rmdir /var/run/dpdk 2>/dev/null
  fi
  local ns
  for ns in "$NS_A" "$NS_B" "$NS_NODE"; do
    if ip netns list | grep -qx "$ns\( (id: [0-9]*)\)\?"; then ip netns del "$ns" 2>/dev/null; fi
  done
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  teardown
  if [ -n "$KEEP_LOGS" ]; then mkdir -p "$KEEP_LOGS" && cp -r "$TMP"/. "$KEEP_LOGS"/; fi
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
mac_of() { nsx "$1" cat "/sys/class/net/$2/address"; }
ctr() { nsx "$1" cat "/sys/class/net/$2/statistics/$3"; }

topo_up() {
  local ns
  for ns in "$NS_NODE" "$NS_A" "$NS_B"; do
    ip netns add "$ns" || return 1
    nsx "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n "$ns" link set lo up
  done
  if [ "$PEER" = veth ]; then
    # the generator's ceiling: pod A's eth0 is the veth peer of pod B's eth0, no datapath
    ip -n "$NS_A" link add eth0 type veth peer name eth0 netns "$NS_B" || return 1
  else
    ip -n "$NS_NODE" link add hA type veth peer name eth0 netns "$NS_A" || return 1
    ip -n "$NS_NODE" link add hB type veth peer name eth0 netns "$NS_B" || return 1
    ip -n "$NS_NODE" link set hA up && ip -n "$NS_NODE" link set hB up || return 1
  fi
  pod_up "$NS_A" "$IP_A" && pod_up "$NS_B" "$IP_B" || return 1
  MAC_A=$(mac_of "$NS_A" eth0); MAC_B=$(mac_of "$NS_B" eth0)
}
# Every pod, for every peer: address/32 on eth0, the link-local gateway, offloads off.
pod_up() {
  local ns=$1 ip=$2
  ip -n "$ns" addr add "$ip/32" dev eth0 &&
  ip -n "$ns" link set eth0 up &&
  ip -n "$ns" route add "$GW" dev eth0 scope link &&
  ip -n "$ns" route add default via "$GW" dev eth0 onlink &&
  nsx "$ns" ethtool -K eth0 tx off tso off gso off >/dev/null
}
# Peers that only move frames (no L3, no ARP responder): the "gateway" of each pod is
# resolved statically to the other pod's MAC, so the pods' addressing and routes stay the
# same as with xsknet and no ARP crosses the datapath during the measurements.
static_gw_neigh() {
  ip -n "$NS_A" neigh replace "$GW" lladdr "$MAC_B" dev eth0 nud permanent &&
  ip -n "$NS_B" neigh replace "$GW" lladdr "$MAC_A" dev eth0 nud permanent
}
wait_for() { # wait_for SECS CMD...: poll CMD until it succeeds
  local secs=$1; shift
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do [ $SECONDS -lt $deadline ] || return 1; sleep 0.2; done
}

# ---------------------------------------------------------------- datapaths
# Each dp_<peer> builds the datapath on hA/hB in $NS_NODE; returns non-zero with a reason
# in DP_ERR when it cannot.
dp_veth() { # no datapath: pod A's eth0 and pod B's eth0 are one veth pair
  static_gw_neigh
}

dp_bridge() {
  ip -n "$NS_NODE" link add br0 type bridge &&
  ip -n "$NS_NODE" link set hA master br0 &&
  ip -n "$NS_NODE" link set hB master br0 &&
  ip -n "$NS_NODE" link set br0 up || { DP_ERR="bridge setup failed"; return 1; }
  static_gw_neigh
}

dp_ovs() {
  local d=$TMP/ovs
  mkdir -p "$d"
  export OVS_RUNDIR=$d OVS_DBDIR=$d OVS_LOGDIR=$d OVS_SYSCONFDIR=$d
  local db=unix:$d/db.sock vsctl=(ovs-vsctl --db="unix:$d/db.sock" --timeout=30)
  ovsdb-tool create "$d/conf.db" /usr/share/openvswitch/vswitch.ovsschema ||
    { DP_ERR="ovsdb-tool create failed"; return 1; }
  start_bg "$d/ovsdb-server.out" ip netns exec "$NS_NODE" ovsdb-server "$d/conf.db" \
    --remote="punix:$d/db.sock" --pidfile="$d/ovsdb-server.pid" \
    --unixctl="$d/ovsdb-server.ctl" --log-file="$d/ovsdb-server.log"
  wait_for 10 test -S "$d/db.sock" || { DP_ERR="ovsdb-server did not start"; return 1; }
  "${vsctl[@]}" --no-wait init &&
  # one PMD thread on core 1, like testpmd's forwarding lcore and xsknet's worker
  "${vsctl[@]}" --no-wait set Open_vSwitch . other_config:pmd-cpu-mask=0x2 ||
    { DP_ERR="ovs-vsctl init failed"; return 1; }
  start_bg "$d/ovs-vswitchd.out" ip netns exec "$NS_NODE" ovs-vswitchd "$db" \
    --pidfile="$d/ovs-vswitchd.pid" --unixctl="$d/ovs-vswitchd.ctl" \
    --log-file="$d/ovs-vswitchd.log"
  "${vsctl[@]}" add-br br0 -- set bridge br0 datapath_type=netdev &&
  "${vsctl[@]}" add-port br0 hA -- set interface hA type=afxdp &&
  "${vsctl[@]}" add-port br0 hB -- set interface hB type=afxdp ||
    { DP_ERR="ovs add-br/add-port failed: $(tail -n 3 "$d/ovs-vswitchd.log" | tr '\n' ' ')"; return 1; }
  local i err
  for i in hA hB; do
    err=$("${vsctl[@]}" get interface "$i" error 2>&1)
    case "$err" in '[]'|'""'|'') ;; *) DP_ERR="ovs interface $i: $err"; return 1 ;; esac
  done
  ip -n "$NS_NODE" link set br0 up 2>/dev/null
  static_gw_neigh
}

testpmd_started() { # fails fast when testpmd exited
  alive "$1" || return 0
  grep -q "Press enter to exit\|Start automatic packet forwarding\|io packet forwarding" "$TMP/testpmd.log"
}
dp_testpmd() {
  # bpffs is mounted inside the private mount namespace `ip netns exec` creates, so libxdp
  # can pin its dispatcher without touching the machine's /sys/fs/bpf.
  start_bg "$TMP/testpmd.log" ip netns exec "$NS_NODE" sh -c \
    'mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf; exec "$@"' sh \
    dpdk-testpmd --no-huge -m 1024 --no-pci --no-shconf --file-prefix "$P" -l 0,1 \
      --vdev net_af_xdp0,iface=hA --vdev net_af_xdp1,iface=hB -- \
      --forward-mode=io --auto-start --stats-period 60
  local pid=$LAST_PID
  DPDK_RUNDIR=/var/run/dpdk/$P   # removed by teardown
  wait_for 30 testpmd_started "$pid" ||
    { DP_ERR="testpmd did not start: $(tail -n 3 "$TMP/testpmd.log" | tr '\n' ' ')"; return 1; }
  sleep 1
  alive "$pid" || { DP_ERR="testpmd exited: $(tail -n 3 "$TMP/testpmd.log" | tr '\n' ' ')"; return 1; }
  static_gw_neigh
}

dp_xdp_redirect() {
  local obj=$TMP/xdp_redirect.o
  clang -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu \
    -c "$HERE/xdp_redirect.bpf.c" -o "$obj" 2>"$TMP/clang.log" ||
    { DP_ERR="clang failed: $(head -n 3 "$TMP/clang.log" | tr '\n' ' ')"; return 1; }
  local h peer
  for h in hA hB; do
    ip -n "$NS_NODE" link set dev "$h" xdpdrv obj "$obj" sec xdp 2>>"$TMP/ip.log" ||
      { DP_ERR="attach XDP to $h failed: $(tail -n 2 "$TMP/ip.log" | tr '\n' ' ')"; return 1; }
  done
  for h in "$NS_A" "$NS_B"; do
    ip -n "$h" link set dev eth0 xdpdrv obj "$obj" sec xdp.pass 2>>"$TMP/ip.log" ||
      { DP_ERR="attach XDP_PASS to $h eth0 failed: $(tail -n 2 "$TMP/ip.log" | tr '\n' ' ')"; return 1; }
  done
  # DEVMAP key 0 of hA's program -> hB, and of hB's -> hA
  for h in hA hB; do
    if [ "$h" = hA ]; then peer=hB; else peer=hA; fi
    local prog map ifx
    prog=$(ip -n "$NS_NODE" -j -d link show dev "$h" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["xdp"]["prog"]["id"])') ||
      { DP_ERR="no XDP prog id on $h"; return 1; }
    map=$(bpftool -j prog show id "$prog" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["map_ids"][0])') ||
      { DP_ERR="no map on prog $prog"; return 1; }
    ifx=$(nsx "$NS_NODE" cat "/sys/class/net/$peer/ifindex")
    # a DEVMAP resolves the ifindex in the netns of the process updating it: run bpftool
    # inside the node netns (from the root netns it would name one of the machine's devices)
    nsx "$NS_NODE" bpftool map update id "$map" key 0 0 0 0 value \
      $((ifx & 255)) $(((ifx >> 8) & 255)) $(((ifx >> 16) & 255)) $(((ifx >> 24) & 255)) ||
      { DP_ERR="bpftool map update failed"; return 1; }
  done
  static_gw_neigh
}

xsknet_ready() { # succeeds when xsknetd exited (caught by the caller) or says ready
  alive "$1" || return 0
  "${XSKNETCTL[@]}" status --json 2>/dev/null |
    python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("ready") is True else 1)'
}
dp_xsknet() {
  local bin=${XSKNET_BIN:-}
  if [ -z "$bin" ]; then
    bin=$REPO/target/release
    [ -x "$bin/xsknetd" ] || [ -z "${CARGO_TARGET_DIR:-}" ] || bin=$CARGO_TARGET_DIR/release
  fi
  if [ ! -x "$bin/xsknetd" ] && [ "$BUILD_XSKNET" = 1 ]; then
    log "building xsknet (cargo build --release -p dataplane)"
    (cd "$REPO" && cargo build --release -p dataplane) >"$TMP/cargo.log" 2>&1 ||
      { DP_ERR="cargo build failed: $(tail -n 3 "$TMP/cargo.log" | tr '\n' ' ')"; return 1; }
    bin=${CARGO_TARGET_DIR:-$REPO/target}/release
  fi
  [ -x "$bin/xsknetd" ] && [ -x "$bin/xsknetctl" ] ||
    { DP_ERR="xsknetd/xsknetctl not found in $bin (build: cargo build --release -p dataplane, or pass --build-xsknet / --xsknet-bin DIR)"; return 1; }
  local d=$TMP/xsknet sock=$TMP/xsknet/xsknetd.sock
  mkdir -p "$d/state"
  cat >"$d/node.yaml" <<EOF
socket: $sock
stateDir: $d/state
podCidr: 10.244.0.0/24
workers:
  - core: 1
hostPort:
  enabled: false
${XSKNET_YAML_EXTRA:-}
EOF
  start_bg "$d/xsknetd.log" ip netns exec "$NS_NODE" env RUST_LOG=info "$bin/xsknetd" \
    --config "$d/node.yaml" --socket "$sock" --state-dir "$d/state"
  local pid=$LAST_PID
  XSKNETCTL=("$bin/xsknetctl" --socket "$sock")
  wait_for 20 xsknet_ready "$pid" ||
    { DP_ERR="xsknetd not ready in 20 s: $(tail -n 3 "$d/xsknetd.log" | tr '\n' ' ')"; return 1; }
  alive "$pid" || { DP_ERR="xsknetd exited: $(tail -n 3 "$d/xsknetd.log" | tr '\n' ' ')"; return 1; }
  nsx "$NS_NODE" "$bin/xsknetctl" --socket "$sock" endpoint add --ifname hA --ip "$IP_A" --mac "$MAC_A" >"$d/ctl.log" 2>&1 &&
  nsx "$NS_NODE" "$bin/xsknetctl" --socket "$sock" endpoint add --ifname hB --ip "$IP_B" --mac "$MAC_B" >>"$d/ctl.log" 2>&1 ||
    { DP_ERR="xsknetctl endpoint add failed: $(tail -n 3 "$d/ctl.log" | tr '\n' ' ')"; return 1; }
  # no static neighbour: the dataplane answers ARP for the gateway
}
post_xsknet() { # keep the dataplane's own view of the run (drops, per-port counters)
  "${XSKNETCTL[@]}" stats --json >"$TMP/xsknet/stats.json" 2>&1 || true
  "${XSKNETCTL[@]}" endpoint list --json >"$TMP/xsknet/endpoints.json" 2>&1 || true
  local summary
  summary=$(python3 - "$TMP/xsknet/stats.json" <<'EOF'
import json, sys
try:
    s = json.load(open(sys.argv[1]))
except Exception:
    sys.exit(0)
out = []
for p in s.get("ports", []):
    d = {k: v for k, v in (p.get("drops") or {}).items() if v}
    x = {k: v for k, v in (p.get("xdp") or {}).items() if v and k != "tx_ring_empty_descs"}
    out.append("%s rx %s tx %s drops %s xdp %s" % (p.get("ifname"), p.get("rx_packets"),
               p.get("tx_packets"), d or "{}", x or "{}"))
print("; ".join(out))
EOF
)
  [ -z "$summary" ] || NOTES+=("xsknet: its own counters over the whole run (xsknetctl stats): $summary")
}

# ---------------------------------------------------------------- measurements
warm() { # ARP (where the datapath answers it) and reachability both ways
  nsx "$NS_A" ping -c 3 -i 0.2 -W 1 "$IP_B" >"$TMP/ping.log" 2>&1 &&
  nsx "$NS_B" ping -c 2 -i 0.2 -W 1 "$IP_A" >>"$TMP/ping.log" 2>&1
}

# pktgen_json LOG KEY: KEY of the JSON summary pktgen printed into LOG (its last line
# that is a JSON object), empty when there is none.
pktgen_json() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
obj = None
for line in open(sys.argv[1], errors="replace"):
    line = line.strip()
    if line.startswith("{"):
        try:
            obj = json.loads(line)
        except ValueError:
            pass
v = (obj or {}).get(sys.argv[2])
print("" if v is None else v)
EOF
}

# gen_window PROCS: pktgen in pod A, max rate, 60-byte frames (64 B with FCS) to B:9, for
# 1 s warm-up + DUR s window. PROCS=1: one process, AF_XDP TX (auto: sendmmsg when the
# socket cannot be opened, reason in the notes), on CPU 0. PROCS=2: that one plus a
# sendmmsg process on CPU 1 (one AF_XDP socket per queue: veth has one). Sets G_OFF,
# G_DEL, G_DROP (kpps), G_RATIO, G_GEN (label) and G_NOTE. Offered = A eth0 tx_packets,
# delivered = B eth0 rx_packets, over the same window; G_DROP = A eth0 tx_dropped
# (frames the veth refused, e.g. its peer's XDP ring was full).
gen_window() {
  local procs=$1 gwmac
  gwmac=$(ip -n "$NS_A" neigh show "$GW" dev eth0 | awk '{for(i=1;i<NF;i++) if($i=="lladdr") print $(i+1)}')
  [ -n "$gwmac" ] || { G_NOTE="gateway not resolved in pod A"; return 1; }
  local base=("$PKTGEN" send --dev eth0 --dst-mac "$gwmac" --src-mac "$MAC_A" --src-ip "$IP_A"
              --dst-ip "$IP_B" --dst-port 9 --size 60 --duration $((DUR + 15)))
  local txS rxS txE rxE i pids=() logs=()
  txS=$(ctr "$NS_A" eth0 tx_packets); rxS=$(ctr "$NS_B" eth0 rx_packets)
  for i in $(seq 0 $((procs - 1))); do
    local mode=auto; [ "$i" -ge 1 ] && mode=mmsg
    logs+=("$TMP/pktgen-$procs-$i.log")
    start_bg "$TMP/pktgen-$procs-$i.log" ip netns exec "$NS_A" "${base[@]}" --mode "$mode" --cpu "$i" --stream "$i"
    pids+=("$LAST_PID")
  done
  sleep 1
  for i in "${!pids[@]}"; do
    if ! alive "${pids[$i]}"; then
      G_NOTE="pktgen exited: $(grep -v '^$' "${logs[$i]}" | tail -n 1)"
      for i in "${pids[@]}"; do stop_pid "$i" INT; done
      return 1
    fi
  done
  local tx0 rx0 d0 t0 tx1 rx1 d1 t1
  t0=$EPOCHREALTIME; tx0=$(ctr "$NS_A" eth0 tx_packets); d0=$(ctr "$NS_A" eth0 tx_dropped); rx0=$(ctr "$NS_B" eth0 rx_packets)
  sleep "$DUR" & wait $!   # (waiting on a background sleep lets a TERM/INT trap run at once)
  t1=$EPOCHREALTIME; tx1=$(ctr "$NS_A" eth0 tx_packets); d1=$(ctr "$NS_A" eth0 tx_dropped); rx1=$(ctr "$NS_B" eth0 rx_packets)
  local died=""
  for i in "${!pids[@]}"; do alive "${pids[$i]}" || died+="$(grep -v '^$' "${logs[$i]}" | tail -n 1) "; done
  for i in "${pids[@]}"; do stop_pid "$i" INT; done   # pktgen prints its summary on SIGINT
  if [ -n "$died" ]; then G_NOTE="pktgen died during the window: $died"; return 1; fi
  sleep 0.3   # drain what is still in flight
  txE=$(ctr "$NS_A" eth0 tx_packets); rxE=$(ctr "$NS_B" eth0 rx_packets)
  # rates over the window; the ratio over the generators' whole run (counters read
  # before they started and after they stopped and drained: no read-timing skew)
  read -r G_OFF G_DEL G_DROP G_RATIO G_OFF_PPS G_DEL_PPS < <(python3 -c "
dt=$t1-$t0
off=$txE-$txS
print('%.0f %.0f %.0f %s %.1f %.1f' % (($tx1-$tx0)/dt/1e3, ($rx1-$rx0)/dt/1e3, ($d1-$d0)/dt/1e3,
      '%.3f' % (($rxE-$rxS)/off) if off > 0 else '-', ($tx1-$tx0)/dt, ($rx1-$rx0)/dt))")
  local modes=() fb lg
  G_NOTE=""
  for lg in "${logs[@]}"; do
    modes+=("$(pktgen_json "$lg" mode)")
    fb=$(pktgen_json "$lg" fallback)
    [ -z "$fb" ] || G_NOTE+="pktgen fell back to sendmmsg: $fb. "
  done
  G_GEN="pktgen $(IFS=+; echo "${modes[*]}")"
  [ "${G_OFF%.*}" -ge 1 ] || { G_NOTE="pktgen offered nothing"; return 1; }
}
drop_note() { # frames the sender's veth refused during the window
  [ "${G_DROP:-0}" -ge 1 ] && NOTES+=("$PEER: $1: pod A eth0 tx_dropped $G_DROP kpps during the window (refused before the datapath, not in 'offered')")
  return 0
}

tcp() { # tcp [TAG]: sets TCP_G (Gbit/s, or "fail"), TCP_RETR and TCP_ERR
  local tag=${1:-off}
  TCP_G=""; TCP_ERR=""; TCP_RETR=""
  start_bg "$TMP/iperf3-s-$tag.log" ip netns exec "$NS_B" iperf3 -s -B "$IP_B" -p 5201 -1
  local spid=$LAST_PID
  wait_for 5 sh -c "ip netns exec $NS_B ss -ltnH 'sport = :5201' | grep -q ." ||
    { TCP_ERR="iperf3 server did not listen"; stop_pid "$spid"; TCP_G="fail"; return 1; }
  run_bounded $((DUR + 8)) "$TMP/iperf3-c-$tag.json" ip netns exec "$NS_A" \
    iperf3 -c "$IP_B" -p 5201 -t "$DUR" -J --connect-timeout 3000
  local rc=$?
  stop_pid "$spid"
  read -r TCP_G TCP_RETR < <(python3 - "$TMP/iperf3-c-$tag.json" <<'EOF'
import json, sys
try:
    j = json.load(open(sys.argv[1]))
    # a transfer that stalls (bad checksums, dropped super-frames) shows as ~0
    print("%.2f %s" % (j["end"]["sum_received"]["bits_per_second"] / 1e9,
                       j["end"].get("sum_sent", {}).get("retransmits", "")))
except Exception:
    print("")
EOF
)
  if [ -z "$TCP_G" ] || [ $rc != 0 ]; then
    TCP_ERR="iperf3 rc=$rc: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("error",""))' "$TMP/iperf3-c-$tag.json" 2>/dev/null | head -c 200)"
    TCP_G="fail"; TCP_RETR=""; return 1
  fi
}

tcp_csum_errors() { # Tcp InCsumErrors of a namespace (/proc/net/snmp is per netns)
  nsx "$1" cat /proc/net/snmp | awk '/^Tcp:/{ if (!h) { for (i=1;i<=NF;i++) if ($i=="InCsumErrors") c=i; h=1 } else print $c }'
}

# latency: sets LAT ("p50 / p99 / p99.9" µs, sockperf's one-way = RTT/2), LAT_FILE (the
# per-sample log, sockperf --full-log, in bench/out) or LAT_ERR
latency() {
  LAT=""; LAT_ERR=""; LAT_FILE="e2e-$STAMP-$PEER-latency.csv"
  start_bg "$TMP/sockperf-s.log" ip netns exec "$NS_B" sockperf sr -i "$IP_B" -p 11111
  local spid=$LAST_PID
  sleep 0.5
  run_bounded $((DUR + 10)) "$TMP/sockperf-c.log" ip netns exec "$NS_A" \
    sockperf pp -i "$IP_B" -p 11111 -t "$DUR" --full-log "$OUTDIR/$LAT_FILE"
  local rc=$?
  stop_pid "$spid"
  LAT=$(awk '/percentile 50.000/{p50=$NF} /percentile 99.000/{p99=$NF} /percentile 99.900/{p999=$NF}
             END{ if (p50 != "") printf "%.1f / %.1f / %.1f", p50, p99, p999 }' "$TMP/sockperf-c.log")
  [ -s "$OUTDIR/$LAT_FILE" ] || LAT_FILE=""
  [ -n "$LAT" ] || { LAT_ERR="sockperf rc=$rc: $(tail -n 2 "$TMP/sockperf-c.log" | tr '\n' ' ')"; LAT="fail"; return 1; }
}

# ---------------------------------------------------------------- machine-readable record
# One tab-separated line per fact, turned into the JSON file at the end:
#   peer PEER LABEL | udp PEER GENERATOR PROCS OFFERED_PPS DELIVERED_PPS
#   tcp PEER off|on GBPS|fail RETRANSMITS | lat PEER P50 P99 P999 FILE
REC=$TMP/records.tsv
: >"$REC"
rec() { local IFS=$'\t'; echo "$*" >>"$REC"; }
label_of() {
  case "$1" in
    veth) echo "pktgen ceiling (plain veth)" ;;
    bridge) echo "Linux bridge" ;;
    ovs) echo "OVS AF_XDP" ;;
    testpmd) echo "testpmd io (af_xdp)" ;;
    xdp-redirect) echo "in-kernel XDP redirect" ;;
    xsknet) echo "xsknet" ;;
    *) echo "$1" ;;
  esac
}

# ---------------------------------------------------------------- one peer
ROWS=()     # main table rows
SAT_ROWS=() # generators on two CPUs
OFFL_ROWS=() # TCP with the pods' offloads off / on
NOTES=()

run_peer() {
  PEER=$1
  local t_start=$SECONDS fn=dp_${1//-/_}
  declare -F "$fn" >/dev/null || { NOTES+=("$PEER: unknown peer"); PEER=""; return; }
  rec peer "$PEER" "$(label_of "$PEER")"
  log "setting up"
  DP_ERR=""
  if ! topo_up; then
    ROWS+=("| $PEER | — | — | — | — | — | — |"); NOTES+=("$PEER: topology setup failed"); teardown; return
  fi
  if ! "$fn"; then
    log "datapath failed: $DP_ERR"
    ROWS+=("| $PEER | — | — | — | — | — | — |"); NOTES+=("$PEER: not measured: $DP_ERR"); teardown; return
  fi
  if ! warm; then
    log "no connectivity between pods"
    ROWS+=("| $PEER | — | — | — | — | — | — |")
    NOTES+=("$PEER: pods cannot ping each other through it: $(tail -n 2 "$TMP/ping.log" | tr '\n' ' ')")
    teardown; return
  fi
  local off="—" del="—" rat="—" gen="pktgen"
  log "UDP 64B, pktgen on 1 CPU, max rate, ${DUR}s"
  if gen_window 1; then
    off=$G_OFF del=$G_DEL rat=$G_RATIO gen=$G_GEN
    rec udp "$PEER" "$G_GEN" 1 "$G_OFF_PPS" "$G_DEL_PPS"
    [ -n "$G_NOTE" ] && NOTES+=("$PEER: $G_NOTE")
    drop_note "1 × pktgen"
  else
    NOTES+=("$PEER: UDP: $G_NOTE")
  fi
  if [ "$GEN_CPUS" -gt 1 ]; then
    log "UDP 64B, pktgen on $GEN_CPUS CPUs (xdp + mmsg), max rate, ${DUR}s"
    if gen_window "$GEN_CPUS"; then
      SAT_ROWS+=("| $PEER | $G_GEN | $G_OFF | $G_DEL | $G_RATIO |")
      rec udp "$PEER" "$G_GEN" "$GEN_CPUS" "$G_OFF_PPS" "$G_DEL_PPS"
      [ -n "$G_NOTE" ] && NOTES+=("$PEER: $GEN_CPUS processes: $G_NOTE")
      drop_note "$GEN_CPUS × pktgen"
    else
      SAT_ROWS+=("| $PEER | $GEN_CPUS × pktgen | — | — | — |"); NOTES+=("$PEER: pktgen on $GEN_CPUS CPUs: $G_NOTE")
    fi
  fi
  TCP_G="—"; LAT="—"
  if [ "$PEER" != veth ]; then   # the ceiling row measures the generator only
    warm >/dev/null 2>&1   # the generators may have flooded out a dynamic neighbour entry
    log "TCP iperf3, ${DUR}s"
    tcp || NOTES+=("$PEER: TCP: $TCP_ERR")
    rec tcp "$PEER" off "$TCP_G" "$TCP_RETR"
    log "latency sockperf ping-pong, ${DUR}s"
    if latency; then rec lat "$PEER" ${LAT// \/ / } "$LAT_FILE"; else NOTES+=("$PEER: latency: $LAT_ERR"); fi
    local tcp_off=$TCP_G
    if [ "$TCP_OFFLOADS_ON" = 1 ]; then
      # the veth defaults (tx checksum offload, TSO, GSO on in the pods): what a CNI that
      # leaves the pods alone gets (PEERS.md: the AF_XDP peers fail here)
      log "TCP iperf3 with the pods' offloads on, ${DUR}s"
      nsx "$NS_A" ethtool -K eth0 tx on tso on gso on >/dev/null 2>&1
      nsx "$NS_B" ethtool -K eth0 tx on tso on gso on >/dev/null 2>&1
      local cs0 cs1
      cs0=$(tcp_csum_errors "$NS_B")
      tcp on || NOTES+=("$PEER: TCP with offloads on: $TCP_ERR")
      rec tcp "$PEER" on "$TCP_G" "$TCP_RETR"
      cs1=$(tcp_csum_errors "$NS_B")
      [ "$cs1" -gt "$cs0" ] 2>/dev/null &&
        NOTES+=("$PEER: TCP with offloads on: pod B counted $((cs1 - cs0)) TCP checksum errors (Tcp InCsumErrors)")
      OFFL_ROWS+=("| $PEER | $tcp_off | $TCP_G |")
      TCP_G=$tcp_off
    fi
  fi
  ROWS+=("| $PEER | $gen | $off | $del | $rat | $TCP_G | $LAT |")
  if declare -F "post_${1//-/_}" >/dev/null; then "post_${1//-/_}"; fi
  teardown
  log "done in $((SECONDS - t_start)) s: offered $off kpps, delivered $del kpps, TCP $TCP_G Gbit/s, lat $LAT µs"
  PEER=""
}

# ---------------------------------------------------------------- main
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u +%FT%TZ)
IFS=',' read -r -a PEER_LIST <<<"$PEERS"
for pr in "${PEER_LIST[@]}"; do run_peer "$pr"; done
PEER=""
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

{
  echo
  echo "## e2e two-pod bench, $STARTED"
  echo
  echo "- command: \`$CMDLINE\` (window ${DUR} s per measurement)"
  echo "- machine: nproc=$(nproc), kernel $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
  echo "- commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- load average before/after: $LOAD0 / $LOAD1 (other work on the machine makes figures noisy)"
  echo "- topology: pods A ($IP_A/32) and B ($IP_B/32), default route via $GW onlink, offloads off (tx, tso, gso) on both eth0; host ends hA/hB in a private node netns (peer veth: A's eth0 is B's eth0's veth peer, no datapath: the generator's ceiling)"
  echo "- UDP: 60-byte frames (64 B with FCS) from pktgen (bench/src/pktgen, max rate; xdp = AF_XDP TX, mmsg = sendmmsg on AF_PACKET) in pod A to B:9; offered = A eth0 tx_packets, delivered = B eth0 rx_packets, rates over the same ${DUR} s window after 1 s warm-up; delivered/offered = counts over the generator's whole run (read before start and after stop + drain)"
  echo "- latency: sockperf ping-pong UDP, sockperf's figures (RTT/2), µs; per-sample logs bench/out/e2e-$STAMP-<peer>-latency.csv"
  echo "- machine-readable: $JSON_OUT"
  echo
  echo "| datapath | generator (1 CPU) | offered kpps | delivered kpps | delivered/offered | TCP Gbit/s | lat p50/p99/p99.9 µs |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  if [ ${#SAT_ROWS[@]} -gt 0 ]; then
    echo
    echo "Saturation: pktgen on $GEN_CPUS CPUs (AF_XDP TX on CPU 0 + sendmmsg on CPU 1; the generators compete with the datapath for the same $(nproc) CPUs):"
    echo
    echo "| datapath | generator | offered kpps | delivered kpps | delivered/offered |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${SAT_ROWS[@]}"
  fi
  if [ ${#OFFL_ROWS[@]} -gt 0 ]; then
    echo
    echo "TCP (iperf3, Gbit/s) with the pods' offloads off (as above) and on (veth defaults: tx checksum, TSO, GSO):"
    echo
    echo "| datapath | offloads off | offloads on |"
    echo "|---|---|---|"
    printf '%s\n' "${OFFL_ROWS[@]}"
  fi
  if [ ${#NOTES[@]} -gt 0 ]; then
    echo
    echo "Notes:"
    printf -- '- %s\n' "${NOTES[@]}"
  fi
} | tee -a "$OUT"
log "appended to $OUT"

# the machine-readable result (rendered by bench's chart tool)
python3 - "$REC" "$JSON_OUT.tmp" "$STARTED" "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  "$(uname -r)" "$(nproc)" "$DUR" "$LOAD0" "$LOAD1" <<'EOF'
import json, sys
rec, out, date, commit, kernel, cpus, dur, l0, l1 = sys.argv[1:10]
peers, order = {}, []
def num(s):
    try:
        return float(s)
    except ValueError:
        return None
for line in open(rec):
    f = line.rstrip("\n").split("\t")
    kind, peer = f[0], f[1]
    if kind == "peer":
        order.append(peer)
        peers[peer] = {"peer": peer, "label": f[2], "udp64": [], "tcp": None,
                       "tcp_offloads_on": None, "latency": None}
        continue
    p = peers[peer]
    if kind == "udp":
        p["udp64"].append({"generator": f[2], "procs": int(f[3]),
                           "offered_pps": num(f[4]), "delivered_pps": num(f[5])})
    elif kind == "tcp":
        r = num(f[4]) if len(f) > 4 else None
        t = {"gbps": num(f[3]), "retransmits": int(r) if r is not None else None,
             "offloads": f[2]}
        p["tcp" if f[2] == "off" else "tcp_offloads_on"] = t
    elif kind == "lat":
        p["latency"] = {"p50_us": num(f[2]), "p99_us": num(f[3]), "p999_us": num(f[4]),
                        "samples_file": f[5] if len(f) > 5 and f[5] else None}
doc = {"meta": {"date": date, "commit": commit, "kernel": kernel, "cpus": int(cpus),
                "duration_s": int(dur), "loadavg_start": l0, "loadavg_end": l1},
       "peers": [peers[p] for p in order]}
json.dump(doc, open(out, "w"), indent=1)
EOF
if python3 -m json.tool "$JSON_OUT.tmp" >/dev/null; then
  mv "$JSON_OUT.tmp" "$JSON_OUT"; log "wrote $JSON_OUT"
else
  log "the JSON result does not validate (left at $JSON_OUT.tmp)"; exit 1
fi

#!/usr/bin/env bash
# The multi-node testbed from bash (issue 9): N xsknet nodes as network namespaces whose
# uplink (eth0 inside each node) is a veth on an underlay bridge in this namespace, an
# xsknetd per node, pods made through the real xsknet CNI plugin, and the datastore:
# none (static overlay.peers) or a real etcd of 1 or 3 members on the bridge's addresses.
# Uses only the built binaries (target/release), iproute2, ethtool and etcd.
#
#   scripts/testbed.sh up   [--name NAME] [--nodes N] [--etcd 0|1|3] [--port P] [--claim]
#                           [--lease-ttl S]   # datastore.leaseTtlSeconds, default 30
#   scripts/testbed.sh pod  [--name NAME] NODE POD [label=value ...]   # prints the pod IP
#   scripts/testbed.sh ctl  [--name NAME] NODE xsknetctl-args...
#   scripts/testbed.sh exec [--name NAME] POD command...              # inside pod POD
#   scripts/testbed.sh down [--name NAME]                             # idempotent
#
# NAME (default tb) prefixes every namespace and link; state lives in /tmp/xsknet-tb-NAME.
# Addresses: underlay 10.K.0.0/24 (K free in this namespace's routes), bridge .1 (.2, .3:
# etcd members), node i at .(10+i); node i's pod prefix 10.244.i.0/24, or one claimed
# from 10.244.0.0/16 in etcd with --claim. `up` cleans up after itself if it fails.
# Sourced (`. scripts/testbed.sh`), it only defines the tb_* functions (scripts/demo.sh).
set -uo pipefail

TB_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TB_BIN=${TB_BIN:-$TB_REPO/target/release}
TB_NAME=${TB_NAME:-tb}

tb_dir() { echo "/tmp/xsknet-tb-$TB_NAME"; }
tb_log() { echo "testbed[$TB_NAME]: $*" >&2; }

# Stop one process we started, by pid: TERM, then KILL after 10 s.
tb_stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

# etcd's /health on ADDR:PORT, through bash's /dev/tcp (no curl needed).
tb_etcd_healthy() {
  local out
  out=$(timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2 && printf 'GET /health HTTP/1.0\r\n\r\n' >&3 && cat <&3" 2>/dev/null) || return 1
  [[ $out == *'"health":"true"'* ]]
}

tb_pick_k() {
  local k
  for k in $(seq 100 219); do
    ip -4 route show to match "10.$k.0.1" | grep -qv '^default' || { echo "$k"; return 0; }
  done
  return 1
}

# datastore.leaseTtlSeconds of the nodes. 30 s: xsknetd pings etcd every TTL/3 (at most
# 10 s), and etcd (default --grpc-keepalive-min-time 5s) closes connections that ping
# more often, so a short TTL breaks the nodes' watches.
TB_LEASE_TTL=${TB_LEASE_TTL:-30}

# tb_up NODES MEMBERS [PORT] [claim]: build it all; on failure remove what was made.
tb_up() {
  local nodes=$1 members=$2 port=${3:-8472} claim=${4:-} d k i m
  d=$(tb_dir)
  [ -e "$d" ] && { tb_log "already up (scripts/testbed.sh down --name $TB_NAME first)"; return 1; }
  for b in xsknetd xsknetctl xsknet; do
    [ -x "$TB_BIN/$b" ] || { tb_log "$TB_BIN/$b missing: cargo build --release --workspace --bins"; return 1; }
  done
  [ "$members" = 0 ] || command -v etcd >/dev/null || { tb_log "etcd missing (scripts/setup.sh installs etcd-server)"; return 1; }
  k=$(tb_pick_k) || { tb_log "no free 10.K.0.0/24"; return 1; }
  mkdir -p "$d/pids"
  printf 'K=%s\nNODES=%s\nMEMBERS=%s\nPORT=%s\n' "$k" "$nodes" "$members" "$port" >"$d/env"
  if ! _tb_up "$nodes" "$members" "$port" "$claim" "$k"; then
    tb_log "up failed; cleaning up"; tb_down; return 1
  fi
}

_tb_up() {
  local nodes=$1 members=$2 port=$3 claim=$4 k=$5 d br i m endpoints=""
  d=$(tb_dir); br="${TB_NAME}br"
  ip link add "$br" type bridge || return 1
  ip link set "$br" up || return 1
  ethtool -K "$br" tx off >/dev/null 2>&1   # a wire carries complete checksums
  for m in $(seq 1 $(( members > 1 ? members : 1 ))); do
    ip addr add "10.$k.0.$m/24" dev "$br" || return 1
  done
  if [ "$members" -gt 0 ]; then
    local cluster=""
    for m in $(seq 1 "$members"); do cluster+="${cluster:+,}m$m=http://10.$k.0.$m:2380"; done
    for m in $(seq 1 "$members"); do
      local a="10.$k.0.$m"
      endpoints+="${endpoints:+, }http://$a:2379"
      setsid etcd --name "m$m" --data-dir "$d/etcd-m$m" \
        --listen-client-urls "http://$a:2379" --advertise-client-urls "http://$a:2379" \
        --listen-peer-urls "http://$a:2380" --initial-advertise-peer-urls "http://$a:2380" \
        --initial-cluster "$cluster" --initial-cluster-state new \
        --initial-cluster-token "xsknet-$TB_NAME" --logger zap --log-outputs stderr \
        >"$d/etcd-m$m.log" 2>&1 </dev/null &
      echo $! >"$d/pids/etcd-m$m"
    done
    for m in $(seq 1 "$members"); do
      for _ in $(seq 300); do tb_etcd_healthy "10.$k.0.$m" 2379 && break; sleep 0.1; done
      tb_etcd_healthy "10.$k.0.$m" 2379 || { tb_log "etcd m$m not healthy: $(tail -3 "$d/etcd-m$m.log")"; return 1; }
    done
    tb_log "etcd: $members member(s) at $endpoints"
  fi
  local cpus; cpus=$(nproc)
  for i in $(seq 1 "$nodes"); do
    local ns="${TB_NAME}n$i" nd="$d/n$i"
    mkdir -p "$nd"
    ip netns add "$ns" || return 1
    ip -n "$ns" link set lo up
    ip link add "${TB_NAME}n${i}u" type veth peer name eth0 netns "$ns" || return 1
    ip link set "${TB_NAME}n${i}u" master "$br" up || return 1
    ip -n "$ns" addr add "10.$k.0.$((10 + i))/24" dev eth0 || return 1
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "10.$k.0.1" dev eth0 || return 1
    ip netns exec "$ns" ethtool -K eth0 tx off >/dev/null 2>&1
  done
  for i in $(seq 1 "$nodes"); do
    local nd="$d/n$i" y
    y="socket: $nd/xsknetd.sock
stateDir: $nd/state
workers: [{core: $(( (i - 1) % cpus ))}]
clusterCidr: 10.244.0.0/16
uplink: {interface: eth0}
"
    if [ "$members" -gt 0 ]; then
      y="nodeName: n$i
datastore:
  type: etcd
  endpoints: [$endpoints]
  leaseTtlSeconds: $TB_LEASE_TTL
$y"
      [ -n "$claim" ] || y+="podCidr: 10.244.$i.0/24
"
      y+="overlay:
  vni: 1
  port: $port
  clusterCidr: 10.244.0.0/16
  subnetLen: 24
"
      [ -n "$claim" ] || y+="  podCidr: 10.244.$i.0/24
"
    else
      y+="podCidr: 10.244.$i.0/24
overlay:
  vni: 1
  port: $port
  clusterCidr: 10.244.0.0/16
  peers:
"
      local j
      for j in $(seq 1 "$nodes"); do
        [ "$j" = "$i" ] && continue
        y+="  - {name: n$j, podCidr: 10.244.$j.0/24, underlayIp: 10.$k.0.$((10 + j)), vtepMac: \"$(printf '02:78:0a:%02x:00:%02x' "$k" $((10 + j)))\"}
"
      done
    fi
    printf '%s' "$y" >"$nd/node.yaml"
    ip netns exec "${TB_NAME}n$i" setsid "$TB_BIN/xsknetd" --config "$nd/node.yaml" run \
      >/dev/null 2>"$nd/xsknetd.log" </dev/null &
    echo $! >"$d/pids/xsknetd-n$i"
  done
  for i in $(seq 1 "$nodes"); do
    local ok=""
    for _ in $(seq 300); do
      if "$TB_BIN/xsknetctl" --socket "$d/n$i/xsknetd.sock" status --json 2>/dev/null | grep -q '"ready": *true'; then ok=1; break; fi
      kill -0 "$(cat "$d/pids/xsknetd-n$i")" 2>/dev/null || break
      sleep 0.1
    done
    [ -n "$ok" ] || { tb_log "xsknetd on n$i not ready: $(tail -5 "$d/n$i/xsknetd.log")"; return 1; }
  done
  [ "$members" = 0 ] || tb_wait_nodes "$nodes" || return 1
  tb_log "up: $nodes node(s) on 10.$k.0.0/24 (bridge $br), state in $d"
}

# tb_wait_nodes N: until every node's `node list` shows N live nodes (etcd mode), 30 s.
tb_wait_nodes() {
  local want=$1 i n d; d=$(tb_dir)
  for i in $(seq 1 "$want"); do
    for _ in $(seq 150); do
      n=$("$TB_BIN/xsknetctl" --socket "$d/n$i/xsknetd.sock" node list --json 2>/dev/null | python3 -c '
import json, sys
try:
    v = json.load(sys.stdin); print(sum(1 for r in v.get("nodes", []) if r.get("alive") is not False))
except Exception: print(0)')
      [ "$n" = "$want" ] && break
      sleep 0.2
    done
    [ "$n" = "$want" ] || { tb_log "n$i sees $n of $want nodes"; return 1; }
  done
}

# tb_pod NODE POD [label=value ...]: CNI ADD through the real plugin; prints the IP.
tb_pod() {
  local node=$1 pod=$2; shift 2
  local d ns labels="" l out ip
  d=$(tb_dir); ns="${TB_NAME}p-$pod"
  for l in "$@"; do labels+="${labels:+, }\"${l%%=*}\": \"${l#*=}\""; done
  ip netns add "$ns" || return 1
  echo "$node $pod" >>"$d/pods"
  ip -n "$ns" link set lo up   # as a runtime's loopback plugin does
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  out=$(printf '{"cniVersion": "1.0.0", "name": "xsknet", "type": "xsknet", "socket": "%s", "stateDir": "%s", "args": {"labels": {%s}}}' \
      "$d/$node/xsknetd.sock" "$d/$node/state" "$labels" | _tb_cni ADD "$node" "$pod") \
    || { tb_log "CNI ADD $pod on $node failed: $out"; return 1; }
  ip=$(ip -n "$ns" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
  [ -n "$ip" ] || { tb_log "pod $pod has no address"; return 1; }
  echo "$ip"
}

_tb_cni() { # _tb_cni ADD|DEL NODE POD, config on stdin
  local d; d=$(tb_dir)
  ip netns exec "${TB_NAME}$2" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    CNI_COMMAND="$1" CNI_CONTAINERID="tb-$TB_NAME-$3" CNI_NETNS="/run/netns/${TB_NAME}p-$3" \
    CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$3" "$TB_BIN/xsknet"
}

tb_ctl() { local node=$1; shift; "$TB_BIN/xsknetctl" --socket "$(tb_dir)/$node/xsknetd.sock" "$@"; }
tb_exec() { local pod=$1; shift; ip netns exec "${TB_NAME}p-$pod" "$@"; }

# tb_down: remove everything `up` and `pod` made for TB_NAME, whatever state it is in.
tb_down() {
  local d f node pod ns
  d=$(tb_dir)
  if [ -f "$d/pods" ]; then
    while read -r node pod; do
      [ -S "$d/$node/xsknetd.sock" ] || continue
      printf '{"cniVersion": "1.0.0", "name": "xsknet", "type": "xsknet", "socket": "%s", "stateDir": "%s"}' \
        "$d/$node/xsknetd.sock" "$d/$node/state" | _tb_cni DEL "$node" "$pod" >/dev/null 2>&1
    done <"$d/pods"
  fi
  if [ -d "$d/pids" ]; then
    for f in "$d"/pids/xsknetd-* "$d"/pids/etcd-*; do
      [ -f "$f" ] && tb_stop_pid "$(cat "$f")"
    done
  fi
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^${TB_NAME}(n[0-9]+|p-.*)$"); do
    ip netns del "$ns" 2>/dev/null
  done
  ip link show "${TB_NAME}br" >/dev/null 2>&1 && ip link del "${TB_NAME}br"
  rm -rf "$d"
  return 0
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  [ "$(id -u)" = 0 ] || { echo "testbed.sh: run as root" >&2; exit 1; }
  cmd=${1:-}; shift || true
  nodes=3 members=1 port=8472 claim=""
  if [ "${1:-}" = --name ]; then TB_NAME=$2; shift 2; fi
  case "$cmd" in
    up)
      while [ $# -gt 0 ]; do
        case "$1" in
          --name) TB_NAME=$2; shift 2 ;;
          --nodes) nodes=$2; shift 2 ;;
          --etcd) members=$2; shift 2 ;;
          --port) port=$2; shift 2 ;;
          --claim) claim=1; shift ;;
          --lease-ttl) TB_LEASE_TTL=$2; shift 2 ;;
          *) echo "testbed.sh up: unknown argument $1" >&2; exit 2 ;;
        esac
      done
      case "$members" in 0|1|3) ;; *) echo "testbed.sh: --etcd 0|1|3" >&2; exit 2 ;; esac
      case "$nodes" in [1-9]) ;; *) echo "testbed.sh: --nodes 1..9" >&2; exit 2 ;; esac
      [ "$members" = 0 ] && [ -n "$claim" ] && { echo "testbed.sh: --claim needs etcd" >&2; exit 2; }
      # A failure or an interrupt half-way removes what was made.
      trap 'tb_down; exit 130' INT TERM
      tb_up "$nodes" "$members" "$port" "$claim" ;;
    pod) tb_pod "$@" ;;
    ctl) tb_ctl "$@" ;;
    exec) tb_exec "$@" ;;
    down) tb_down ;;
    *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
fi

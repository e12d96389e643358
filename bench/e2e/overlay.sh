#!/usr/bin/env bash
# Cross-node bench (issue 9): pod → pod across two nodes over VXLAN, xsknet side by side
# with the Linux kernel's vxlan datapath programmed the way flannel's vxlan backend does
# it, on the same underlay bridge, in one run.
#
#   bench/e2e/overlay.sh [--duration S] [--gen-cpus N] [--out FILE] [--keep-logs DIR]
#
# xsknet: two nodes of scripts/testbed.sh (static overlay.peers, no etcd), one pod each
# made by the real CNI plugin (pod MTU 1450 from the daemon, offloads as the plugin sets
# them). Kernel: two more node namespaces on the same bridge, each with a vxlan device
# `flannel.1` (id 1, dstport 8472, nolearning), a permanent neighbour + fdb entry + onlink
# route per remote node (DESIGN.md's recipe), and a pod on a veth with MTU 1450 and the
# same offloads the xsknet plugin sets (tx checksum, sg, tso, gso off). An extra TCP row
# gives the kernel pods their offloads back (flannel's default).
# Measures: TCP (iperf3, DUR s) and 64-byte UDP (bench/e2e/udpgen.c, sendmmsg on
# AF_PACKET in pod A; offered = A eth0 tx_packets, delivered = B eth0 rx_packets over the
# same window after 1 s warm-up). Runs as root; needs target/release binaries
# (cargo build --release --workspace --bins), iperf3, gcc. Everything it makes is named
# xo<pid>… and removed on exit (trap); processes are killed by pid.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
DUR=5
GEN_CPUS=$(nproc)
OUT=""
KEEP_LOGS=""
CMDLINE="bench/e2e/overlay.sh $*"
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DUR=$2; shift 2 ;;
    --gen-cpus) GEN_CPUS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --keep-logs) KEEP_LOGS=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "overlay.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "overlay.sh: must run as root" >&2; exit 1; }
case "$DUR" in ''|*[!0-9]*) echo "overlay.sh: --duration wants whole seconds" >&2; exit 2 ;; esac
[ "$DUR" -ge 1 ] && [ "$DUR" -le 120 ] || { echo "overlay.sh: --duration 1..120" >&2; exit 2; }
DATE=$(date -u +%F)
[ -n "$OUT" ] || OUT="$REPO/bench/out/overlay-$DATE.md"

export TB_NAME="xo$$"
# shellcheck source=../../scripts/testbed.sh
. "$REPO/scripts/testbed.sh"
P=$TB_NAME
TMP=$(mktemp -d "/tmp/$P.XXXXXX")
PIDS=()
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do tb_stop_pid "$p"; done
  for p in k1 k2 kp1 kp2; do ip netns del "$P$p" 2>/dev/null; done
  tb_down
  if [ -n "$KEEP_LOGS" ]; then mkdir -p "$KEEP_LOGS" && cp -r "$TMP"/. "$KEEP_LOGS"/; fi
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

gcc -O2 -Wall -o "$TMP/udpgen" "$HERE/udpgen.c" || { log "udpgen does not build"; exit 1; }
for b in xsknetd xsknetctl xsknet; do
  [ -x "$TB_BIN/$b" ] || { log "$TB_BIN/$b missing: cargo build --release --workspace --bins"; exit 1; }
done

log "xsknet: two nodes on the testbed (static peers)"
tb_up 2 0 8472 || exit 1
. "$(tb_dir)/env"      # K
XA=$(tb_pod n1 a) || exit 1
XB=$(tb_pod n2 b) || exit 1

# ---------------------------------------------------------------- the kernel (flannel) pair
kmac() { ip netns exec "$P$1" cat /sys/class/net/flannel.1/address; }
knode() { # knode N: node k$N at 10.K.0.(20+N), pod 10.245.N.5 behind it
  local n=$1 ns="$P"k$1 pod="$P"kp$1 ip="10.$K.0.$((20 + $1))"
  ip netns add "$ns" && ip -n "$ns" link set lo up || return 1
  ip link add "${P}k${n}u" type veth peer name eth0 netns "$ns" || return 1
  ip link set "${P}k${n}u" master "${P}br" up
  ip -n "$ns" addr add "$ip/24" dev eth0 && ip -n "$ns" link set eth0 up || return 1
  ip netns exec "$ns" ethtool -K eth0 tx off >/dev/null 2>&1   # as on the xsknet nodes
  ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
  ip -n "$ns" link add flannel.1 type vxlan id 1 dstport 8472 nolearning local "$ip" dev eth0 || return 1
  ip -n "$ns" addr add "10.245.$n.0/32" dev flannel.1
  ip -n "$ns" link set flannel.1 up
  ip netns add "$pod" && ip -n "$pod" link set lo up || return 1
  ip -n "$ns" link add kp type veth peer name eth0 netns "$pod" || return 1
  ip -n "$ns" addr add "10.245.$n.1/24" dev kp && ip -n "$ns" link set kp up
  ip -n "$pod" addr add "10.245.$n.5/24" dev eth0
  ip -n "$pod" link set eth0 mtu 1450 up
  ip -n "$pod" route add default via "10.245.$n.1"
  ip netns exec "$pod" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  koffloads "$n" off
}
koffloads() { # the offloads the xsknet CNI plugin turns off in its pods, off or on
  ip netns exec "$P"kp$1 ethtool -K eth0 tx "$2" sg "$2" tso "$2" gso "$2" >/dev/null 2>&1
  ip netns exec "$P"k$1 ethtool -K kp tx "$2" sg "$2" tso "$2" gso "$2" >/dev/null 2>&1
}
kpeer() { # kpeer N M: node N learns node M the flannel way
  local ns="$P"k$1 mac; mac=$(kmac "k$2")
  ip -n "$ns" neigh add "10.245.$2.0" lladdr "$mac" dev flannel.1 nud permanent
  ip netns exec "$ns" bridge fdb append "$mac" dev flannel.1 dst "10.$K.0.$((20 + $2))"
  ip -n "$ns" route add "10.245.$2.0/24" via "10.245.$2.0" dev flannel.1 onlink
}
log "kernel: two vxlan nodes on the same bridge, programmed as flannel does"
knode 1 && knode 2 && kpeer 1 2 && kpeer 2 1 || { log "kernel pair setup failed"; exit 1; }

# ---------------------------------------------------------------- measurements
ctr() { ip netns exec "$1" cat "/sys/class/net/eth0/statistics/$2"; }

# tcp_run NSA NSB IPB TAG: sets TCP_G (Gbit/s at the receiver) or TCP_G=fail
tcp_run() {
  local a=$1 b=$2 ipb=$3 tag=$4
  ip netns exec "$b" iperf3 -s -B "$ipb" -p 5201 -1 >"$TMP/iperf3-s-$tag.log" 2>&1 &
  local spid=$!; PIDS+=("$spid")
  for _ in $(seq 50); do ip netns exec "$b" ss -ltnH 'sport = :5201' | grep -q . && break; sleep 0.1; done
  timeout $((DUR + 10)) ip netns exec "$a" iperf3 -c "$ipb" -p 5201 -t "$DUR" -J --connect-timeout 3000 \
    >"$TMP/iperf3-c-$tag.json" 2>&1
  TCP_G=$(python3 -c "
import json,sys
try:
    j=json.load(open('$TMP/iperf3-c-$tag.json')); print('%.2f' % (j['end']['sum_received']['bits_per_second']/1e9))
except Exception: print('fail')")
  tb_stop_pid "$spid"
}

# pps_run NSA NSB IPA IPB GW CPUS TAG: sets OFF, DEL (kpps over the window), RATIO
pps_run() {
  local a=$1 b=$2 ipa=$3 ipb=$4 gw=$5 cpus=$6 tag=$7 gwmac srcmac
  ip netns exec "$a" ping -c 2 -i 0.2 -W 1 "$ipb" >/dev/null 2>&1
  gwmac=$(ip -n "$a" neigh show "$gw" dev eth0 | awk '{for(i=1;i<NF;i++) if($i=="lladdr") print $(i+1)}')
  srcmac=$(ip netns exec "$a" cat /sys/class/net/eth0/address)
  [ -n "$gwmac" ] || { OFF=-; DEL=-; RATIO="gateway not resolved"; return 1; }
  local txS rxS t0 tx0 rx0 t1 tx1 rx1 txE rxE
  txS=$(ctr "$a" tx_packets); rxS=$(ctr "$b" rx_packets)
  setsid ip netns exec "$a" "$TMP/udpgen" eth0 "$gwmac" "$srcmac" "$ipa" "$ipb" 9 \
    --procs "$cpus" --seconds $((DUR + 10)) >"$TMP/udpgen-$tag.log" 2>&1 </dev/null &
  local gpid=$!; PIDS+=("$gpid")
  sleep 1
  t0=$EPOCHREALTIME; tx0=$(ctr "$a" tx_packets); rx0=$(ctr "$b" rx_packets)
  sleep "$DUR"
  t1=$EPOCHREALTIME; tx1=$(ctr "$a" tx_packets); rx1=$(ctr "$b" rx_packets)
  kill -INT "$gpid" 2>/dev/null; tb_stop_pid "$gpid"
  sleep 0.3
  txE=$(ctr "$a" tx_packets); rxE=$(ctr "$b" rx_packets)
  read -r OFF DEL RATIO < <(python3 -c "
dt=$t1-$t0; off=$txE-$txS
print('%.0f %.0f %s' % (($tx1-$tx0)/dt/1e3, ($rx1-$rx0)/dt/1e3, '%.3f' % (($rxE-$rxS)/off) if off>0 else '-'))")
}

ROWS=(); SAT=()
measure() { # measure LABEL NSA NSB IPA IPB GW
  local label=$1 a=$2 b=$3 ipa=$4 ipb=$5 gw=$6
  log "$label: warm-up ping"
  ip netns exec "$a" ping -c 3 -i 0.2 -W 2 -q "$ipb" >/dev/null 2>&1 ||
    { log "$label: no ping"; ROWS+=("| $label | no connectivity | | | |"); return; }
  log "$label: TCP iperf3 ${DUR}s"
  tcp_run "$a" "$b" "$ipb" "$label"
  local tcp=$TCP_G
  log "$label: UDP 64B, udpgen on 1 CPU, ${DUR}s"
  pps_run "$a" "$b" "$ipa" "$ipb" "$gw" 1 "$label-1"
  ROWS+=("| $label | $tcp | $OFF | $DEL | $RATIO |")
  if [ "$GEN_CPUS" -gt 1 ]; then
    log "$label: UDP 64B, udpgen on $GEN_CPUS CPUs, ${DUR}s"
    pps_run "$a" "$b" "$ipa" "$ipb" "$gw" "$GEN_CPUS" "$label-$GEN_CPUS"
    SAT+=("| $label | $GEN_CPUS × udpgen | $OFF | $DEL | $RATIO |")
  fi
}

measure "xsknet (AF_XDP workers, VXLAN)" "${P}p-a" "${P}p-b" "$XA" "$XB" 169.254.1.1
measure "kernel vxlan (flannel recipe)" "${P}kp1" "${P}kp2" 10.245.1.5 10.245.2.5 10.245.1.1
log "kernel vxlan, pod offloads on: TCP iperf3 ${DUR}s"
koffloads 1 on; koffloads 2 on
tcp_run "${P}kp1" "${P}kp2" 10.245.2.5 kernel-offloads
KOFF_TCP=$TCP_G
koffloads 1 off; koffloads 2 off

# ---------------------------------------------------------------- report
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo "+dirty")
mkdir -p "$(dirname "$OUT")"
{
  echo "### Overlay: cross-node — $DATE, commit $COMMIT$DIRTY"
  echo
  echo "- command: \`sudo $CMDLINE\`"
  echo "- machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), kernel $(uname -r), load before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- topology: two nodes per datapath (network namespaces, uplink eth0 = veth on one underlay bridge, MTU 1500), one pod per node, pod MTU 1450, pod offloads tx-checksum/sg/tso/gso off in both; xsknet: static peers, one worker per node (cores 0 and 1), copy-mode AF_XDP on veth; kernel: vxlan device + permanent neigh + fdb + onlink route (flannel's vxlan backend)"
  echo "- TCP: iperf3 ${DUR}s, receiver's rate; UDP: 60-byte frames (64 B with FCS) from udpgen in pod A to pod B:9, offered = A eth0 tx_packets, delivered = B eth0 rx_packets over the same ${DUR}s window after 1 s warm-up; delivered/offered over the generator's whole run"
  echo
  echo "| datapath | TCP Gbit/s | UDP offered kpps (1 × udpgen) | delivered kpps | delivered/offered |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo "| kernel vxlan, pod offloads on (flannel's default) | $KOFF_TCP | | | |"
  if [ ${#SAT[@]} -gt 0 ]; then
    echo
    echo "| datapath | generator | offered kpps | delivered kpps | delivered/offered |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${SAT[@]}"
  fi
} >"$OUT"
cat "$OUT"
log "written to $OUT"

#!/usr/bin/env bash
# Install what bench/e2e/run.sh needs (Debian 12). Idempotent: when every tool is
# already present it does not touch apt at all and returns in well under a second.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "setup-peers.sh: must run as root" >&2; exit 1; }

# package -> a file it provides (to check presence without dpkg-query per package)
declare -A PROVIDES=(
  [iperf3]=/usr/bin/iperf3
  [sockperf]=/usr/bin/sockperf
  [iputils-ping]=/usr/bin/ping
  [openvswitch-switch-dpdk]=/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk
  [dpdk-dev]=/usr/bin/dpdk-testpmd
  [ethtool]=/usr/sbin/ethtool
  [iproute2]=/usr/sbin/ip
  [clang]=/usr/bin/clang
  [llvm]=/usr/bin/llc
  [libbpf-dev]=/usr/include/bpf/bpf_helpers.h
  [linux-libc-dev]=/usr/include/linux/bpf.h
  [python3]=/usr/bin/python3
  [procps]=/usr/bin/pgrep
  [bpftool]=/usr/sbin/bpftool
  [util-linux]=/usr/bin/setsid
)

missing=()
for p in "${!PROVIDES[@]}"; do
  [ -e "${PROVIDES[$p]}" ] || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-peers.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # the -dpdk flavour of ovs-vswitchd is selected through alternatives; make sure the
  # plain ovs-vswitchd name resolves to a binary with AF_XDP support.
  if [ -x /usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk ] && command -v update-alternatives >/dev/null; then
    update-alternatives --set ovs-vswitchd /usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk >/dev/null 2>&1 || true
  fi
fi

# OVS installs a system service; the bench runs its own private daemons, so make sure the
# packaged ones do not hold /var/run/openvswitch state we might confuse with ours.
# (We never stop a system service we did not start: just report.)
if pgrep -x ovs-vswitchd >/dev/null 2>&1; then
  echo "setup-peers.sh: note: a system ovs-vswitchd is running; the bench uses private ones" >&2
fi

for f in "${PROVIDES[@]}"; do
  [ -e "$f" ] || { echo "setup-peers.sh: still missing $f" >&2; exit 1; }
done
echo "setup-peers.sh: ok"

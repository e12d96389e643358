#!/usr/bin/env bash
# Installs what xsknet needs to build, test and demo on a fresh Debian machine
# (run as root). Idempotent: fast when everything is already there.
set -euo pipefail

# etcd-server: the cluster datastore the tests and the testbed start themselves (their own
# ports and data dirs; the packaged service is not used). protobuf-compiler and
# libprotobuf-dev: etcd-client's build script compiles etcd's .proto files.
# fonts-dejavu-core: the TTF bench's chart tool (and its tests) draws text with.
PKGS=(clang llvm libelf-dev zlib1g-dev pkg-config m4 libbpf-dev linux-libc-dev gcc-multilib
      iproute2 ethtool iputils-ping netcat-openbsd iperf3 tcpdump procps
      containernetworking-plugins iptables nftables
      etcd-server protobuf-compiler libprotobuf-dev fonts-dejavu-core)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# bpffs is not mounted on a fresh machine. xsknet itself pins nothing, but libbpf and
# operators' tools expect it.
if ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf 2>/dev/null || echo "setup: could not mount bpffs (continuing)"
fi

command -v cargo >/dev/null || { echo "setup: cargo not found (install the Rust toolchain)"; exit 1; }
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt 2>/dev/null || true
echo "setup: ok"

#!/usr/bin/env bash
# Prepares podman (4.3, CNI backend) for the xsknet end-to-end test, following
# ../shared/RUNTIMES.md: installs podman, runc, the reference CNI plugins and
# busybox-static (idempotent), and builds the registry-free busybox image into a
# private podman storage under $W (default /var/tmp/xsknet-podman). Nothing of the
# machine's own podman configuration is touched: everything podman needs is in
# $W/containers.conf and $W/storage.conf, selected through CONTAINERS_CONF and
# CONTAINERS_STORAGE_CONF. Prints the environment to use on its last lines.
#
#   sudo bash scripts/podman-setup.sh [W]
set -euo pipefail

W=${1:-${XSKNET_PODMAN_DIR:-/var/tmp/xsknet-podman}}
IMAGE=localhost/busybox:local

if [ "$(id -u)" != 0 ]; then
  echo "podman-setup: must run as root"; exit 1
fi

PKGS=(podman runc containernetworking-plugins busybox-static)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "podman-setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$W"/{cni-bin,net.d,tmp,storage,run}
# The settings this machine needs (RUNTIMES.md): root lacks CAP_SYS_RESOURCE, crun
# refuses hybrid cgroups, podman reads only *.conflist from network_config_dir.
cat >"$W/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[network]
network_backend = "cni"
cni_plugin_dirs = ["$W/cni-bin", "/usr/lib/cni"]
network_config_dir = "$W/net.d"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$W/events.log"
tmp_dir = "$W/tmp"
EOF
cat >"$W/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$W/storage"
runroot = "$W/run"
EOF
export CONTAINERS_CONF="$W/containers.conf" CONTAINERS_STORAGE_CONF="$W/storage.conf"

if ! podman image exists "$IMAGE" 2>/dev/null; then
  echo "podman-setup: building $IMAGE from busybox-static"
  rootfs=$(mktemp -d "$W/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs" "$rootfs.tar"' EXIT
  mkdir -p "$rootfs/bin" "$rootfs"/{etc,proc,sys,dev,tmp,run}
  cp /bin/busybox "$rootfs/bin/busybox"
  chroot "$rootfs" /bin/busybox --install -s /bin
  echo "root:x:0:0:root:/root:/bin/sh" >"$rootfs/etc/passwd"
  echo "root:x:0:" >"$rootfs/etc/group"
  tar -C "$rootfs" -cf "$rootfs.tar" .
  podman import --change 'CMD ["/bin/sh"]' "$rootfs.tar" "$IMAGE" >/dev/null
fi
podman image exists "$IMAGE"
echo "podman-setup: ok"
echo "CONTAINERS_CONF=$W/containers.conf"
echo "CONTAINERS_STORAGE_CONF=$W/storage.conf"
echo "IMAGE=$IMAGE"

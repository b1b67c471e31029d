#!/usr/bin/env bash
# Installs what the container builds and the compose test need, from Debian's packages, when
# missing (as root; CI and a fresh machine): podman 4.3 with runc (crun 1.8 refuses this
# kernel's hybrid cgroups; containers.conf selects runc), netavark + aardvark-dns + iptables
# (bridge networks, name resolution, published ports), slirp4netns (a network that reaches the
# host's loopback), debootstrap (the offline base image). --no-install-recommends keeps crun,
# buildah and dbus out. podman-compose comes from PyPI (compose.sh).
set -euo pipefail
pkgs=(podman runc debootstrap netavark aardvark-dns iptables slirp4netns uidmap fuse-overlayfs catatonit)
missing=()
for p in "${pkgs[@]}"; do
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || missing+=("$p")
done
[[ ${#missing[@]} == 0 ]] && exit 0
echo "[install-deps] apt-get install ${missing[*]}" >&2
[[ $(id -u) == 0 ]] || { echo "[install-deps] error: needs root (apt-get)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

#!/usr/bin/env bash
# Makes the runtime base image offline, from Debian's packages only (no image registry):
#   debootstrap --variant=minbase bookworm + ca-certificates + curl, trimmed like Debian's -slim
#   images, imported into podman as localhost/attestmesh-base:bookworm.
# Idempotent: does nothing when the image exists (--force rebuilds it). Needs root, debootstrap
# and podman (deploy/podman/install-deps.sh installs them).
#
# Environment:
#   ATTESTMESH_BASE_IMAGE     image name (default localhost/attestmesh-base:bookworm)
#   ATTESTMESH_DEBIAN_MIRROR  Debian mirror (default: the one the host's apt uses for bookworm,
#                             else http://deb.debian.org/debian)
#   ATTESTMESH_PODMAN_WORK    scratch directory (default <repo>/target/podman)
set -euo pipefail

suite=bookworm
image=${ATTESTMESH_BASE_IMAGE:-localhost/attestmesh-base:$suite}
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

exit_if_built "$image" "$@"   # sets force; holds the lock

old_id=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
rootfs=$work/rootfs-base-$suite
trap 'remove_rootfs "$rootfs"' EXIT
debootstrap_slim "$rootfs" ca-certificates,curl
import_rootfs "$rootfs" "$image" \
  'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  'CMD ["bash"]'
# The image this tag named before (--force): removed unless images built on it still exist
# (build-images.sh removes those, and with them this one, once it rebuilt them).
if [[ -n $old_id ]]; then podman rmi "$old_id" >/dev/null 2>&1 || true; fi

#!/usr/bin/env bash
# Optional: a stand-in for docker.io/library/rust:1.95-slim-bookworm made without a registry,
# so the registry recipe (the Dockerfiles' default `compiled` target, which compiles inside the
# build) can be built and checked here too:
#   debootstrap --variant=minbase bookworm + ca-certificates gcc libc6-dev (what rust:*-slim
#   adds), plus the host's own Rust toolchain (`rustc --print sysroot`: bin, lib, libexec, etc;
#   no docs) at /usr/local/rust, CARGO_HOME=/usr/local/cargo as in the official image.
# Imported as localhost/attestmesh-rust:bookworm (ATTESTMESH_TOOLCHAIN_IMAGE). Idempotent
# (--force rebuilds). Then, from the repository root (crates come from crates.io inside the
# build; here through the sandbox's TLS proxy, hence the host's CA bundle mounted):
#   podman build --format docker \
#     --build-arg BASE=localhost/attestmesh-base:bookworm \
#     --build-arg RUST_IMAGE=localhost/attestmesh-rust:bookworm \
#     --ignorefile deploy/docker/agent.Dockerfile.dockerignore \
#     -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
#     -f deploy/docker/agent.Dockerfile -t localhost/attestmesh/cluster-mesh-agent:compiled .
set -euo pipefail

suite=bookworm
image=${ATTESTMESH_TOOLCHAIN_IMAGE:-localhost/attestmesh-rust:$suite}
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

exit_if_built "$image" "$@"   # sets force; holds the lock
sysroot=$(cd "$repo" && rustc --print sysroot)
version=$(cd "$repo" && rustc --version)
rootfs=$work/rootfs-rust-$suite
trap 'remove_rootfs "$rootfs"' EXIT
debootstrap_slim "$rootfs" ca-certificates,gcc,libc6-dev
mkdir -p "$rootfs/usr/local/rust" "$rootfs/usr/local/cargo/bin"
for d in bin lib libexec etc; do
  [[ -d $sysroot/$d ]] && cp -a "$sysroot/$d" "$rootfs/usr/local/rust/"
done
log "toolchain: $version from $sysroot ($(du -sh "$rootfs/usr/local/rust" | cut -f1))"
import_rootfs "$rootfs" "$image" \
  'ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  'ENV CARGO_HOME=/usr/local/cargo' \
  'CMD ["bash"]'

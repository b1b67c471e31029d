#!/usr/bin/env bash
# Builds the agent, webhook and indexer images with podman, pulling nothing from any registry:
#   1. the offline base (make-base-image.sh; skipped when it exists),
#   2. the release binaries with the host's toolchain (cargo build --release --locked),
#   3. each deploy/docker/*.Dockerfile at its `prebuilt` target, BASE = the offline base, the
#      build context = target/podman/context holding only the three binaries.
# Tags: localhost/attestmesh/<bin>:dev and ghcr.io/attestmesh/<bin>:<workspace version> (the
# name the compose file uses, so it runs the local image without pulling).
#
# Options: --no-cargo        use the binaries already built (no cargo build)
#          --profile NAME    cargo profile of the binaries (default release; `dev` takes
#                            target/debug, e.g. what the test suite built already)
# Environment: ATTESTMESH_BASE_IMAGE (default localhost/attestmesh-base:bookworm), CARGO,
#   CARGO_TARGET_DIR (honoured), ATTESTMESH_PODMAN_WORK (default <repo>/target/podman).
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
base=${ATTESTMESH_BASE_IMAGE:-localhost/attestmesh-base:bookworm}
cargo=${CARGO:-cargo}
run_cargo=1
profile=release
while [[ $# -gt 0 ]]; do
  case $1 in
    --no-cargo) run_cargo=0 ;;
    --profile) profile=$2; shift ;;
    --profile=*) profile=${1#*=} ;;
    *) echo "usage: $0 [--no-cargo] [--profile release|dev|NAME]" >&2; exit 2 ;;
  esac
  shift
done
case $profile in dev | test) profile_dir=debug ;; bench) profile_dir=release ;; *) profile_dir=$profile ;; esac

# image name (as in deploy/docker/<file>.Dockerfile) : cargo package : binary
images=(
  "agent:cluster-mesh-agent:cluster-mesh-agent"
  "webhook:attestmesh-webhook:attestmesh-webhook"
  "indexer:attestmesh-indexer:attestmesh-indexer"
)

mkdir -p "$work"
exec 8>"$work/build-images.lock"
flock 8    # one build at a time: the context folder and the tags are shared

# The images these tags name now: once re-tagged, the old ones are removed (no dangling images
# pile up in storage over rebuilds).
old_ids=()
for spec in "${images[@]}"; do
  IFS=: read -r _ _ bin <<<"$spec"
  id=$(podman image inspect --format '{{.Id}}' "localhost/attestmesh/$bin:dev" 2>/dev/null) && old_ids+=("$id")
done

ATTESTMESH_BASE_IMAGE=$base "$here/make-base-image.sh"

cd "$repo"
meta=$("$cargo" metadata --format-version 1 --no-deps --locked)
target_dir=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' <<<"$meta")
version=$(python3 -c '
import json, sys
pk = {p["name"]: p["version"] for p in json.load(sys.stdin)["packages"]}
print(pk["cluster-mesh-agent"])' <<<"$meta")

if [[ $run_cargo == 1 ]]; then
  pkgs=()
  for spec in "${images[@]}"; do IFS=: read -r _ pkg _ <<<"$spec"; pkgs+=(-p "$pkg"); done
  log "cargo build --profile $profile --locked ${pkgs[*]} --bins"
  t0=$SECONDS
  "$cargo" build --profile "$profile" --locked "${pkgs[@]}" --bins
  log "cargo build ($profile) took $((SECONDS - t0)) s"
fi

# The binaries run on the base's glibc: refuse a host newer than the base (a bookworm base
# runs binaries linked against glibc <= 2.36).
host_glibc=$(getconf GNU_LIBC_VERSION | awk '{print $2}')
base_glibc=$(podman run --rm --network none --entrypoint /usr/bin/getconf "$base" GNU_LIBC_VERSION | awk '{print $2}')
if [[ $(printf '%s\n%s\n' "$host_glibc" "$base_glibc" | sort -V | tail -n1) != "$base_glibc" ]]; then
  log "error: the host's glibc $host_glibc is newer than the base's $base_glibc: binaries built here may not run in $base"
  exit 1
fi

context=$work/context
rm -rf "$context"
mkdir -p "$context"
for spec in "${images[@]}"; do
  IFS=: read -r _ _ bin <<<"$spec"
  [[ -x $target_dir/$profile_dir/$bin ]] || { log "error: $target_dir/$profile_dir/$bin missing (run without --no-cargo)"; exit 1; }
  cp -p "$target_dir/$profile_dir/$bin" "$context/$bin"
done

for spec in "${images[@]}"; do
  IFS=: read -r file _ bin <<<"$spec"
  log "podman build $file ($bin)"
  t0=$SECONDS
  podman build --format docker --target prebuilt \
    --build-arg "BASE=$base" \
    -f "$repo/deploy/docker/$file.Dockerfile" \
    -t "localhost/attestmesh/$bin:dev" \
    -t "ghcr.io/attestmesh/$bin:$version" \
    "$context" >"$work/build-$file.log" 2>&1 || { tail -n 30 "$work/build-$file.log" >&2; exit 1; }
  log "$file image took $((SECONDS - t0)) s"
done

for id in "${old_ids[@]}"; do
  # Untagged now and used by no container: remove it (its no longer tagged base goes with it).
  if [[ -z $(podman image inspect --format '{{join .RepoTags ","}}' "$id" 2>/dev/null) ]]; then
    podman rmi "$id" >/dev/null 2>&1 || true
  fi
done

podman images --format '{{.Repository}}:{{.Tag}}\t{{.ID}}\t{{.Size}}' \
  | grep -E "attestmesh-base|attestmesh/" | sort >&2

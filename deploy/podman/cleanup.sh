#!/usr/bin/env bash
# Removes everything a compose project left in podman, whatever state it is in (a test's
# teardown after a failure, or after `down` to make sure): its containers, pod, networks and
# volumes, found by podman-compose's label io.podman.compose.project=<project> and its names.
#   deploy/podman/cleanup.sh <project>...
# Prints what it removed; exit 0 even when there was nothing. Images are kept.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
for p in "$@"; do
  [[ $p =~ ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$ ]] || { echo "cleanup: bad project name '$p'" >&2; exit 2; }
  label=io.podman.compose.project=$p
  mapfile -t ctrs < <(podman ps -a --filter "label=$label" --format '{{.Names}}')
  [[ ${#ctrs[@]} -gt 0 ]] && podman rm -f -t 2 "${ctrs[@]}" 2>/dev/null
  podman pod exists "pod_$p" 2>/dev/null && podman pod rm -f "pod_$p"
  mapfile -t nets < <(podman network ls --filter "label=$label" --format '{{.Name}}')
  podman network exists "${p}_default" 2>/dev/null && nets+=("${p}_default")
  for n in $(printf '%s\n' "${nets[@]}" | sort -u); do podman network rm -f "$n"; done
  mapfile -t vols < <(podman volume ls --filter "label=$label" --format '{{.Name}}')
  [[ ${#vols[@]} -gt 0 ]] && podman volume rm -f "${vols[@]}"
done
exit 0

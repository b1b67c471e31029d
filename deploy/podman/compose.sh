#!/usr/bin/env bash
# podman-compose as the project's tests run it: the pinned podman-compose from PyPI in a venv
# under target/ (made on first use), the project's containers.conf, and podman-shim for
# `depends_on: condition: service_healthy` on podman 4.3 without systemd (see podman-shim).
#   deploy/podman/compose.sh -p <project> -f <compose file> [-f <override>] up -d
#   deploy/podman/compose.sh -p <project> -f <compose file> down -v
# Environment: ATTESTMESH_PODMAN_WORK (default <repo>/target/podman), PYTHON (default python3).
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
venv=$work/compose-venv
version=1.6.0   # podman-compose; the shim's --version trick is checked against this version

if [[ $("$venv/bin/podman-compose" version --short 2>/dev/null || true) != "$version" ]]; then
  mkdir -p "$work"
  exec 9>"$work/compose-venv.lock"
  flock 9
  if [[ $("$venv/bin/podman-compose" version --short 2>/dev/null || true) != "$version" ]]; then
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "podman-compose==$version" >&2
  fi
  exec 9>&-
fi

exec "$venv/bin/podman-compose" --podman-path "$here/podman-shim" "$@"

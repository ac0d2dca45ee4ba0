#!/usr/bin/env bash
# Build the project's image with podman from a Debian base made by mmdebstrap:
# no Docker engine, no registry (research/containers.md has the measurements).
#
#   scripts/build-image.sh                 build (or reuse) the image, print its name
#   scripts/build-image.sh --with-containerd   also install containerd/ctr (the e2e test)
#
# Reuses what it can, keyed by the inputs' hashes, from a cache directory
# outside the repo (VIGIL_IMAGE_CACHE, default /var/cache/vigil-image):
#   base-<key>.tar.zst   the mmdebstrap bookworm rootfs (saves ~40 s)
#   vigil-<key>.tar      the built image (podman save), for a CI that restores
#                        the directory but not /var/lib/containers
# and podman's own layer cache: a source-only change reruns the last layer.
#
# Prints the image reference (localhost/vigil:<key>) on stdout; logs on stderr.
# The image is also tagged VIGIL_IMAGE_TAG (default vigil:dev).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${VIGIL_IMAGE_CACHE:-/var/cache/vigil-image}
TAG=${VIGIL_IMAGE_TAG:-vigil:dev}
SUITE=bookworm
MIRROR=${VIGIL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_REF=docker.io/library/debian:bookworm-slim
# Bump when the base recipe changes (packages, variant, import options).
BASE_RECIPE="mmdebstrap --variant=minbase $SUITE nodoc merged-usr v3"

log() { printf 'build-image: %s\n' "$*" >&2; }

with_containerd=0
for arg in "$@"; do
    case "$arg" in
        --with-containerd) with_containerd=1 ;;
        *) log "unknown argument $arg"; exit 2 ;;
    esac
done

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

install_tools() {
    # runc, not crun: crun refuses these hybrid-cgroup hosts. podman depends on
    # `crun | runc`, so naming runc is enough; its Recommends are not needed as root.
    local want=(podman runc mmdebstrap zstd) missing=()
    [ $with_containerd -eq 1 ] && want+=(containerd)
    for pkg in "${want[@]}"; do have_pkg "$pkg" || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# podman's settings for these hosts, without touching /etc: runc; rlimits below
# the hard limits root has here (no CAP_SYS_RESOURCE); no systemd, no journald.
containers_conf() {
    mkdir -p "$CACHE"
    cat > "$CACHE/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
    export CONTAINERS_CONF="$CACHE/containers.conf"
}

base() {
    local key label tarball
    key=$(printf '%s' "$BASE_RECIPE" | sha256sum | cut -c1-16)
    label=$(podman image inspect --format '{{index .Labels "dev.vigil.base"}}' "$BASE_REF" 2>/dev/null || true)
    if [ "$label" = "$key" ]; then
        return 0
    fi
    tarball="$CACHE/base-$key.tar.zst"
    if [ ! -s "$tarball" ]; then
        log "mmdebstrap $SUITE (minbase) -> $tarball"
        # As Debian's -slim images: no manuals, docs or translations, in the base
        # and (the dpkg options stay in the rootfs) in every package added later.
        # merged-usr: /usr merged by mmdebstrap with usr-is-merged, instead of the
        # usrmerge package, which pulls in perl (~50 MB) on bookworm.
        mmdebstrap --quiet --variant=minbase \
            --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
            --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/doc/*' \
            --dpkgopt='path-include=/usr/share/doc/*/copyright' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            --dpkgopt='path-exclude=/usr/share/info/*' \
            --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
            "$SUITE" "$tarball.tmp.tar.zst" "$MIRROR"
        mv "$tarball.tmp.tar.zst" "$tarball"
        find "$CACHE" -maxdepth 1 -name 'base-*.tar.zst' ! -name "base-$key.tar.zst" -delete
    fi
    log "podman import $tarball as $BASE_REF"
    zstd -dc "$tarball" | podman import --change 'CMD ["bash"]' \
        --change "LABEL dev.vigil.base=$key" - "$BASE_REF" >/dev/null
}

# Everything the build context holds that git knows of (tracked, or untracked
# but not ignored), by content: the image key. The plain names in .dockerignore
# (folders such as tests, e2e) are left out, as they are of the context.
inputs_key() {
    (
        cd "$ROOT"
        local excluded=(-e '^\.venv/' -e '^\.git/')
        while IFS= read -r entry; do
            case "$entry" in '' | '#'* | *'*'* | *'?'*) continue ;; esac
            excluded+=(-e "^${entry%/}(/|\$)")
        done < .dockerignore
        git ls-files -co --exclude-standard \
            | grep -Ev "${excluded[@]}" \
            | sort \
            | tr '\n' '\0' \
            | xargs -0 -r sha256sum 2>/dev/null
        printf '%s\n' "$BASE_RECIPE"
    ) | sha256sum | cut -c1-16
}

build() {
    local key ref archive
    key=$(inputs_key)
    ref="localhost/vigil:$key"
    archive="$CACHE/vigil-$key.tar"
    if podman image exists "$ref"; then
        log "reusing $ref"
    elif [ -s "$archive" ]; then
        log "podman load $archive"
        podman load -q -i "$archive" >/dev/null
    else
        # The host's CA directory: HTTPS (PyPI) may go through a TLS-inspecting
        # proxy whose CA only the host trusts. Mounted for the build only.
        local ca=()
        [ -d /usr/local/share/ca-certificates ] \
            && ca=(-v /usr/local/share/ca-certificates:/usr/local/share/ca-certificates:ro)
        local pip_env=()
        [ -n "${PIP_INDEX_URL:-}" ] && pip_env+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")
        log "podman build $ref"
        local started=$SECONDS
        podman build -q --pull=never --network host "${ca[@]}" "${pip_env[@]}" \
            -t "$ref" -f "$ROOT/Dockerfile" "$ROOT" >/dev/null
        log "built $ref in $((SECONDS - started)) s"
        rm -f "$CACHE"/vigil-*.tar
        podman save -q -o "$archive.tmp" "$ref" && mv "$archive.tmp" "$archive"
    fi
    podman tag "$ref" "$TAG"
    # Earlier builds' tags (their layers stay as long as the build cache uses them).
    podman images --format '{{.Repository}}:{{.Tag}}' \
        | grep -E '^localhost/vigil:[0-9a-f]{16}$' | grep -vx "$ref" \
        | xargs -r podman rmi >/dev/null 2>&1 || true
    echo "$ref"
}

main() {
    if [ "$(id -u)" -ne 0 ]; then
        log "needs root (podman as root, cgroupfs manager)"
        exit 1
    fi
    install_tools
    containers_conf
    base
    build
}

main

#!/usr/bin/env bash
# One-command, idempotent set-up for a fresh Debian machine (and the image build).
#
#   OS packages  python3-bpfcc (bcc), bpftool, iproute2; kernel headers when the
#                running kernel ships none (see prepare_headers); with the dev
#                extras also prometheus (a real server for the scrape test)
#   tracefs      mounted at /sys/kernel/tracing when it is not
#   .venv        with the OS bcc module linked in and vigil installed editable
#
# Every step checks first and does nothing when already done, so a second run
# takes well under a second. VIGIL_SETUP_NO_DEV=1 installs without dev extras
# (the image); VIGIL_VENV picks another virtualenv path.
#
# One optional argument runs a part only, so the Dockerfile can cache the slow
# parts in layers of their own before it copies the sources:
#   os     OS packages and the header tree (needs only this script)
#   deps   the virtualenv with vigil's dependencies (needs pyproject.toml too)
#   all    everything (the default): the above, tracefs, and vigil itself
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VIGIL_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
# The agent looks here by itself when the host has no headers (vigil.agent.kernel.headers).
HEADERS_TREE=${VIGIL_HEADERS_TREE:-/var/lib/vigil/kernel-headers}
BCC_OS_MODULE=/usr/lib/python3/dist-packages/bcc

log() { printf 'setup: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

have_pkg() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

apt_updated=0
apt_refresh() {
    if [ $apt_updated -eq 0 ]; then
        log "apt-get update"
        as_root apt-get update -qq
        apt_updated=1
    fi
}

apt_install() {
    local missing=()
    for pkg in "$@"; do have_pkg "$pkg" || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    apt_refresh
    log "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

host_has_headers() {
    local release
    release=$(uname -r)
    [ -e "/lib/modules/$release/build/include/linux/kconfig.h" ] \
        || [ -e "/lib/modules/$release/source/include/linux/kconfig.h" ] \
        || [ -e /sys/kernel/kheaders.tar.xz ]
}

# bcc wants one kernel tree; Debian splits headers into <ver>-amd64 (generated,
# arch-specific) and <ver>-common. Lay the newest pair out once as one tree.
prepare_headers() {
    if host_has_headers; then
        return 0
    fi
    if [ -f "$HEADERS_TREE/.vigil-headers" ]; then
        return 0
    fi
    # Download and unpack the two header packages rather than installing
    # linux-headers-amd64: that one depends on gcc (~200 MB in the image) and
    # would keep a second copy of the tree under /usr/src.
    apt_refresh
    local arch_pkg common_pkg unpack arch_dir common_dir
    arch_pkg=$(apt-cache depends linux-headers-amd64 | sed -n 's/^ *Depends: \(linux-headers-.*-amd64\)$/\1/p' | head -n 1)
    if [ -z "$arch_pkg" ]; then
        log "apt knows no linux-headers-*-amd64 behind linux-headers-amd64"
        return 1
    fi
    common_pkg=${arch_pkg%-amd64}-common
    unpack=$(mktemp -d)
    log "unpacking $arch_pkg + $common_pkg"
    (cd "$unpack" && apt-get download -qq "$arch_pkg" "$common_pkg" >/dev/null)
    for deb in "$unpack"/*.deb; do dpkg-deb -x "$deb" "$unpack/root"; done
    arch_dir="$unpack/root/usr/src/$arch_pkg"
    common_dir=${arch_dir%-amd64}-common
    if [ ! -d "$common_dir" ]; then
        log "missing $common_dir (sibling of $arch_dir)"
        return 1
    fi
    log "laying out $(basename "$arch_dir") + common at $HEADERS_TREE"
    local staging="$HEADERS_TREE.tmp.$$"
    as_root rm -rf "$staging"
    as_root mkdir -p "$staging"
    as_root cp -a "$common_dir/." "$staging/"
    # The arch tree (generated headers, .config) goes over common; its scripts/
    # and tools/ links point into kbuild, which bcc never uses.
    as_root cp -a "$arch_dir/." "$staging/"
    # bcc compiles for this machine only: the other architectures' trees and the
    # device-tree, DRM, sound and media headers are never reached from what the
    # probes include (~29 MB less; every probe compiled without them).
    as_root find "$staging/arch" -mindepth 1 -maxdepth 1 ! -name x86 -exec rm -rf {} +
    as_root rm -rf "$staging/include/dt-bindings" "$staging/include/drm" \
        "$staging/include/sound" "$staging/include/media"
    echo "$(basename "$arch_dir")" | as_root tee "$staging/.vigil-headers" >/dev/null
    as_root rm -rf "$HEADERS_TREE"
    as_root mv "$staging" "$HEADERS_TREE"
    rm -rf "$unpack"
}

mount_tracefs() {
    if [ -d /sys/kernel/tracing/events ]; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        log "tracefs is not mounted at /sys/kernel/tracing (needs root); BPF tests will skip"
        return 0
    fi
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null \
        || log "could not mount tracefs at /sys/kernel/tracing"
}

dev() { [ "${VIGIL_SETUP_NO_DEV:-0}" != "1" ]; }

make_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating $VENV with $($PYTHON --version)"
        "$PYTHON" -m venv "$VENV"
    fi
    # Only the bcc module, never all of dist-packages: that would let pip treat
    # Debian's packages as installed ones.
    local site shim
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    shim="$VENV/bcc-os"
    if [ ! -L "$shim/bcc" ]; then
        mkdir -p "$shim"
        ln -sfn "$BCC_OS_MODULE" "$shim/bcc"
    fi
    [ -f "$site/bcc_os.pth" ] || echo "$shim" > "$site/bcc_os.pth"
}

extras() { if dev; then echo "[dev]"; fi; }

# vigil's dependencies (and its build backend) without vigil: pyproject.toml
# alone decides them, so the image caches this layer until pyproject changes.
install_deps() {
    local stamp="$VENV/.vigil-deps" want
    want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1) $(extras)"
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
    log "installing vigil's dependencies$(extras) into $VENV"
    local requirements
    requirements=$("$VENV/bin/python" - "$ROOT/pyproject.toml" "$(extras)" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    data = tomllib.load(f)
wanted = list(data["build-system"]["requires"]) + list(data["project"]["dependencies"])
if sys.argv[2]:
    wanted += data["project"]["optional-dependencies"]["dev"]
print("\n".join(wanted))
PY
)
    # shellcheck disable=SC2086 # one requirement per line, none has spaces
    (IFS=$'\n'; "$VENV/bin/python" -m pip install -q --disable-pip-version-check $requirements)
    echo "$want" > "$stamp"
}

# vigil itself, editable: seconds, since the dependencies are there already.
install_vigil() {
    local stamp="$VENV/.vigil-installed" want
    want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1) $(extras) $ROOT"
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
    log "installing vigil$(extras) into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        --no-deps --no-build-isolation -e "$ROOT"
    echo "$want" > "$stamp"
}

os_packages() {
    apt_install python3-bpfcc bpftool iproute2
    # Tests only: never in the image. Debian's prometheus unit is not started
    # (policy-rc.d); the test runs its own server on 127.0.0.1. gcc builds the
    # tests' small C workloads.
    if dev; then apt_install prometheus gcc libc6-dev; fi
    prepare_headers
}

main() {
    case "${1:-all}" in
        os) os_packages ;;
        venv) make_venv ;;  # an empty virtualenv with the OS bcc linked in (test-otel-floor.sh)
        deps) make_venv; install_deps ;;
        all) os_packages; mount_tracefs; make_venv; install_deps; install_vigil ;;
        *) log "unknown part '$1': choose os, venv, deps or all"; return 2 ;;
    esac
}

main "$@"

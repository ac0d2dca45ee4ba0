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
apt_install() {
    local missing=()
    for pkg in "$@"; do have_pkg "$pkg" || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ $apt_updated -eq 0 ]; then
        log "apt-get update"
        as_root apt-get update -qq
        apt_updated=1
    fi
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
    apt_install linux-headers-amd64
    local arch_dir common_dir
    arch_dir=$(find /usr/src -maxdepth 1 -name 'linux-headers-*-amd64' -type d | sort -V | tail -n 1)
    if [ -z "$arch_dir" ]; then
        log "no /usr/src/linux-headers-*-amd64 after installing linux-headers-amd64"
        return 1
    fi
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
    echo "$(basename "$arch_dir")" | as_root tee "$staging/.vigil-headers" >/dev/null
    as_root rm -rf "$HEADERS_TREE"
    as_root mv "$staging" "$HEADERS_TREE"
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

    local extras="[dev]"
    [ "${VIGIL_SETUP_NO_DEV:-0}" = "1" ] && extras=""
    local stamp="$VENV/.vigil-installed" want
    want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1) $extras $ROOT"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        log "installing vigil$extras into $VENV"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT$extras"
        echo "$want" > "$stamp"
    fi
}

main() {
    apt_install python3-bpfcc bpftool iproute2
    # Tests only: never in the image. Debian's unit is not started (policy-rc.d);
    # the test runs its own server on 127.0.0.1. gcc: tests build workloads and
    # run the tracepoint generator's C (tests/unit/test_tracepoint_gen.py).
    [ "${VIGIL_SETUP_NO_DEV:-0}" = "1" ] || apt_install prometheus gcc
    prepare_headers
    mount_tracefs
    make_venv
}

main "$@"

#!/usr/bin/env bash
# prepare.sh: everything `make test-kernels` boots, built once and cached.
#
#   host packages  qemu-system-x86, mmdebstrap, kmod, cpio (apt, when missing)
#   kernels        the newest linux-image-amd64 of each suite in $SUITES, resolved
#                  from a throwaway apt config (the host's sources stay untouched);
#                  bullseye's 5.10 from $SHARED_KERNELS when the mirror lacks it
#   initramfs      per kernel: busybox + its 9p/virtio modules (mkinitrd.sh)
#   rootfs         one bookworm tree by mmdebstrap: Debian's bcc, gcc, a header tree,
#                  and a venv at /opt/vigil with vigil's dependencies and pytest
#
# Writes $CACHE/kernels.list: "<suite> <version> <release> <vmlinuz> <initrd>" per
# kernel, and $CACHE/rootfs (a link to the rootfs of the current recipe). Cache keys
# are hashes of the recipe files and pyproject.toml, so a changed recipe rebuilds.
# Nothing is written to the project tree or to $SHARED_KERNELS.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${VIGIL_KERNELS_CACHE:-/var/cache/vigil-kernels}
SHARED_KERNELS=${VIGIL_SHARED_KERNELS:-$ROOT/../shared/kernels}
MIRROR=${VIGIL_DEBIAN_MIRROR:-http://deb.debian.org}
SUITES=${SUITES:-"bullseye-security bookworm-security trixie-security trixie-backports sid"}
LISTS_MAX_AGE_MIN=${VIGIL_KERNELS_LISTS_MAX_AGE_MIN:-360}  # re-resolve "newest" after this

log() { printf 'prepare: %s\n' "$*" >&2; }
now() { date +%s.%N; }
since() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }
sha() { cat "$@" | sha256sum | cut -c1-16; }

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

host_packages() {
    local missing=()
    for pkg in qemu-system-x86 mmdebstrap kmod cpio xz-utils zstd bc debian-archive-keyring; do
        have_pkg "$pkg" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local t; t=$(now)
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    log "host packages: $(since "$t") s"
}

apt_config() {
    mkdir -p "$CACHE/apt/etc" "$CACHE/apt/lists/partial" "$CACHE/apt/cache/archives/partial"
    cat > "$CACHE/apt/apt.conf" <<EOC
Dir::Etc::sourcelist "/dev/null";
Dir::Etc::sourceparts "$CACHE/apt/etc";
Dir::State::Lists "$CACHE/apt/lists";
Dir::Cache "$CACHE/apt/cache";
Dir::Cache::archives "$CACHE/apt/cache/archives";
Dir::State::status "/dev/null";
APT::Architecture "amd64";
APT::Sandbox::User "root";
Acquire::Languages "none";
EOC
    local main=() security=()
    for suite in $SUITES; do
        case $suite in *-security) security+=("$suite") ;; *) main+=("$suite") ;; esac
    done
    {
        echo "Types: deb"; echo "URIs: $MIRROR/debian"; echo "Suites: ${main[*]}"
        echo "Components: main"; echo "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
        if [ ${#security[@]} -gt 0 ]; then
            echo; echo "Types: deb"; echo "URIs: $MIRROR/debian-security"; echo "Suites: ${security[*]}"
            echo "Components: main"; echo "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
        fi
    } > "$CACHE/apt/etc/kernels.sources.new"
    if ! cmp -s "$CACHE/apt/etc/kernels.sources.new" "$CACHE/apt/etc/kernels.sources"; then
        mv "$CACHE/apt/etc/kernels.sources.new" "$CACHE/apt/etc/kernels.sources"
        rm -f "$CACHE/apt/updated"
    else
        rm -f "$CACHE/apt/etc/kernels.sources.new"
    fi
    export APT_CONFIG=$CACHE/apt/apt.conf
    if [ -z "$(find "$CACHE/apt/updated" -mmin -"$LISTS_MAX_AGE_MIN" 2>/dev/null)" ]; then
        local t; t=$(now)
        # A suite that left the mirror (bullseye after its LTS) must not stop the others.
        apt-get update -qq 2>&1 | sed 's/^/prepare: apt: /' >&2 || true
        touch "$CACHE/apt/updated"
        log "apt lists: $(since "$t") s"
    fi
}

initrd_key() { sha "$HERE/mkinitrd.sh" "$CACHE/busybox"; }

# kernel_ready SUITE VERSION: vmlinuz and an initramfs of the current recipe are cached
kernel_ready() {
    local dir=$CACHE/k/$1/$2
    [ -f "$dir/vmlinuz" ] && [ "$(cat "$dir/initrd.key" 2>/dev/null)" = "$(initrd_key)" ]
}

# extract_kernel SUITE VERSION DEB...: vmlinuz + initrd.img under $CACHE/k/SUITE/VERSION
extract_kernel() {
    local suite=$1 version=$2; shift 2
    local dir=$CACHE/k/$suite/$version
    kernel_ready "$suite" "$version" && return 0
    local t; t=$(now)
    local x; x=$(mktemp -d "$CACHE/x.XXXXXX")
    for deb in "$@"; do dpkg-deb -x "$deb" "$x"; done
    local rel vmlinuz
    rel=$(basename "$( (ls -d "$x"/lib/modules/* "$x"/usr/lib/modules/* 2>/dev/null || true) | head -1)")
    if [ -f "$x/boot/vmlinuz-$rel" ]; then vmlinuz=$x/boot/vmlinuz-$rel      # up to 6.x
    else vmlinuz=$x/usr/lib/modules/$rel/vmlinuz; fi                         # 7.x: linux-binary-*
    [ -f "$vmlinuz" ] || { log "$suite $version: no vmlinuz in $*"; rm -rf "$x"; return 1; }
    mkdir -p "$dir"
    cp "$vmlinuz" "$dir/vmlinuz.tmp" && mv "$dir/vmlinuz.tmp" "$dir/vmlinuz"
    echo "$rel" > "$dir/release"
    bash "$HERE/mkinitrd.sh" "$x" "$CACHE/busybox" "$dir/initrd.img"
    initrd_key > "$dir/initrd.key"
    rm -rf "$x"
    log "$suite $version ($rel): extracted, initramfs built: $(since "$t") s"
}

busybox() {
    [ -x "$CACHE/busybox" ] && return 0
    local d; d=$(mktemp -d)
    (cd "$d" && apt-get download -qq busybox-static >/dev/null 2>&1 && dpkg-deb -x busybox-static_*.deb x)
    cp "$(find "$d/x" -path '*bin/busybox' -type f | head -1)" "$CACHE/busybox"  # bin/ or usr/bin/
    rm -rf "$d"
}

kernels() {
    local resolved t
    resolved=$(python3 "$HERE/resolve.py" "$CACHE/apt/lists" $SUITES)
    : > "$CACHE/kernels.list.new"
    for suite in $SUITES; do
        local line version pins debs=()
        line=$(grep "^$suite " <<<"$resolved" || true)
        if [ -n "$line" ]; then
            read -r _ version pins <<<"$line"
            mkdir -p "$CACHE/debs"
            if ! kernel_ready "$suite" "$version"; then
                t=$(now)
                (cd "$CACHE/debs" && apt-get download -qq $pins >/dev/null) || line=""
                log "$suite $version: downloaded $pins: $(since "$t") s"
            fi
            for pin in $pins; do
                local name=${pin%%=*} ver=${pin#*=}
                debs+=("$CACHE/debs/${name}_${ver//:/%3a}_amd64.deb")
            done
        fi
        if [ -z "$line" ] && [ "${suite%%-*}" = bullseye ]; then
            # bullseye leaves deb.debian.org when its LTS ends: the kept copy.
            local kept; kept=$(ls "$SHARED_KERNELS"/linux-image-5.10.*_amd64.deb 2>/dev/null | sort -V | tail -1)
            if [ -n "$kept" ]; then
                version=$(dpkg-deb -f "$kept" Version); debs=("$kept")
                line=kept
                log "$suite: not on the mirror; using $kept"
            fi
        fi
        if [ -z "$line" ]; then
            log "$suite: no kernel found (not on $MIRROR, no kept copy)"
            echo "$suite - - - -" >> "$CACHE/kernels.list.new"
            continue
        fi
        extract_kernel "$suite" "$version" "${debs[@]}"
        # The .debs are not needed once vmlinuz and the initramfs exist.
        for deb in "${debs[@]}"; do case $deb in "$CACHE"/*) rm -f "$deb" ;; esac; done
        local dir=$CACHE/k/$suite/$version
        echo "$suite $version $(cat "$dir/release") $dir/vmlinuz $dir/initrd.img" >> "$CACHE/kernels.list.new"
    done
    mv "$CACHE/kernels.list.new" "$CACHE/kernels.list"
}

requirements() {
    # vigil's runtime dependencies and the test runner; vigil itself comes from /src.
    python3 - "$ROOT/pyproject.toml" <<'EOP'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
dev = project["optional-dependencies"]["dev"]
# the test runner and what tests/support imports (the fake API server: aiohttp, jsonschema)
test_deps = ("pytest", "hypothesis", "aiohttp", "jsonschema")
print("\n".join(project["dependencies"] + [d for d in dev if d.split(">")[0] in test_deps]))
EOP
}

rootfs() {
    local key dir
    requirements > "$CACHE/requirements.txt"
    key=$(sha "$HERE/mkrootfs.sh" "$HERE/guest-init" "$CACHE/requirements.txt")
    dir=$CACHE/rootfs-$key
    if [ ! -f "$dir/.vigil-rootfs" ]; then
        local t; t=$(now)
        bash "$HERE/mkrootfs.sh" "$dir" "$CACHE/requirements.txt" "$MIRROR"
        log "rootfs $key: $(since "$t") s, $(du -sh "$dir" | cut -f1)"
    fi
    ln -sfn "$dir" "$CACHE/rootfs"
    # Older recipes' trees are ~1 GB each.
    for old in "$CACHE"/rootfs-*; do [ "$old" = "$dir" ] || rm -rf "$old"; done
}

main() {
    [ "$(id -u)" -eq 0 ] || { log "needs root (apt, mmdebstrap, qemu's 9p passthrough)"; exit 1; }
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock 9
    host_packages
    apt_config
    busybox
    kernels
    rootfs
}

main "$@"

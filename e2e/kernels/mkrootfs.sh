#!/usr/bin/env bash
# mkrootfs.sh DIR REQUIREMENTS MIRROR: the guests' root, shared read-only over 9p.
# A bookworm tree with Debian's bcc, gcc (the tests build small C workloads), one
# kernel header tree laid out as scripts/setup.sh does (offsets come from BTF; the
# headers only give bcc its helper definitions, so one tree serves every kernel),
# and a venv at /opt/vigil that sees the OS bcc, holding vigil's dependencies and
# pytest. vigil itself is not installed: the guest imports the checkout from /src.
set -euo pipefail
dir=$1; requirements=$2; mirror=$3
rm -rf "$dir.tmp"
# HTTPS may go through a TLS-inspecting proxy that the host's CA bundle trusts
# and a fresh rootfs's does not: pip in the chroot reads the host's bundle.
# (every variable naming a bundle: the host environment may carry REQUESTS_CA_BUNDLE)
mmdebstrap --quiet --variant=minbase \
    --include=python3,python3-bpfcc,python3-venv,bpftool,kmod,procps,iproute2,util-linux,mount,gcc,libc6-dev,linux-headers-amd64,ca-certificates \
    --customize-hook='cp /etc/ssl/certs/ca-certificates.crt "$1/tmp/host-ca.crt"' \
    --customize-hook="cp '$requirements' \"\$1/tmp/requirements.txt\"" \
    --customize-hook='chroot "$1" python3 -m venv --system-site-packages /opt/vigil' \
    --customize-hook='chroot "$1" env -u PIP_FIND_LINKS PIP_CERT=/tmp/host-ca.crt REQUESTS_CA_BUNDLE=/tmp/host-ca.crt SSL_CERT_FILE=/tmp/host-ca.crt /opt/vigil/bin/pip install -q --disable-pip-version-check --no-cache-dir -r /tmp/requirements.txt' \
    --customize-hook='rm -f "$1/tmp/host-ca.crt" "$1/tmp/requirements.txt"' \
    bookworm "$dir.tmp" "$mirror/debian" >&2
arch=$(cd "$dir.tmp" && ls -d usr/src/linux-headers-*-amd64 | sort -V | tail -1)
common=${arch%-amd64}-common
mkdir -p "$dir.tmp/var/lib/vigil/kernel-headers"
cp -a "$dir.tmp/$common/." "$dir.tmp/var/lib/vigil/kernel-headers/"
cp -a "$dir.tmp/$arch/." "$dir.tmp/var/lib/vigil/kernel-headers/"
basename "$arch" > "$dir.tmp/var/lib/vigil/kernel-headers/.vigil-headers"
mkdir -p "$dir.tmp/src" "$dir.tmp/share" "$dir.tmp/var/cache/vigil"
install -m 755 "$(dirname "$0")/guest-init" "$dir.tmp/usr/local/sbin/guest-init"
rm -rf "$dir.tmp/var/lib/apt/lists"/* "$dir.tmp/var/cache/apt"/*.bin
touch "$dir.tmp/.vigil-rootfs"
mv "$dir.tmp" "$dir"

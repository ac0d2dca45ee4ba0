#!/usr/bin/env bash
# mkinitrd.sh KDIR BUSYBOX OUT: a busybox initramfs that loads the 9p/virtio
# modules of the kernel extracted in KDIR and switch_roots into the 9p root.
# Debian builds 9p as a module, so `rootfstype=9p` alone cannot mount the root;
# this is the same for every kernel and simpler than mkinitramfs.
set -euo pipefail
kdir=$(readlink -f "$1"); busybox=$2; out=$3
mods=$( (ls -d "$kdir"/lib/modules/* "$kdir"/usr/lib/modules/* 2>/dev/null || true) | head -1)
rel=$(basename "$mods")
# 7.x keeps modules under usr/lib; depmod/modprobe -b want lib/
if [ -d "$kdir/usr/lib/modules/$rel" ] && [ ! -e "$kdir/lib" ]; then ln -s usr/lib "$kdir/lib"; fi
depmod -b "$kdir" "$rel"
wd=$(mktemp -d); trap 'rm -rf "$wd"' EXIT
mkdir -p "$wd"/{bin,proc,sys,dev,newroot,mods}
cp "$busybox" "$wd/bin/busybox"
: > "$wd/mods/order"
for m in virtio_pci 9pnet_virtio 9p; do
    modprobe -d "$kdir" -S "$rel" --show-depends "$m" 2>/dev/null | awk '$1=="insmod"{print $2}' \
        || true  # built in (virtio_pci from 6.12 on): nothing to load
done | awk '!seen[$0]++' | while read -r f; do
    n=$(basename "$f"); n=${n%.xz}; n=${n%.zst}
    case $f in
        *.xz) xz -dc "$f" > "$wd/mods/$n" ;;
        *.zst) zstd -qdc "$f" > "$wd/mods/$n" ;;
        *) cp "$f" "$wd/mods/$n" ;;
    esac
    echo "$n" >> "$wd/mods/order"
done
cat > "$wd/init" <<'EOI'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /mods/order); do insmod /mods/$m || echo "initrd: insmod $m failed"; done
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose root /newroot \
    || { echo "initrd: 9p root mount failed"; echo o > /proc/sysrq-trigger; }
umount /proc /sys; mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot /usr/local/sbin/guest-init
EOI
chmod +x "$wd/init"
(cd "$wd" && find . | cpio -o -H newc --quiet | gzip -1) > "$out.tmp"
mv "$out.tmp" "$out"
echo "$rel: $(tr '\n' ' ' < "$wd/mods/order")-> $(du -h "$out" | cut -f1)" >&2

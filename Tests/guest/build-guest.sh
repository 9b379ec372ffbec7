#!/bin/bash
# Build the guest kernel + initramfs used by the real-guest test suite.
#
# Output (git-ignored): Tests/guest/artifacts/{vmlinuz,initramfs.cpio.gz,BUILD-INFO}
#
# Idempotent: the result is reused when a stamp computed from this script, the
# guest /init, the kernel package version and the host fio/util-linux/busybox
# versions is unchanged.  Use --force to rebuild anyway.
#
# Needs (host, Debian 12): apt-get, dpkg, kmod (depmod), cpio, gzip,
# busybox-static, fio, util-linux (blkdiscard).  Run as root (device nodes).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ART="${GUEST_ARTIFACTS:-$HERE/artifacts}"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

# Modules needed for virtio-pci + virtio-blk, plus qemu_fw_cfg (the test
# script is delivered through fw_cfg, see init).  Dependencies are resolved
# from modules.dep; built-ins are skipped.
WANT_MODULES=(virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev
              virtio_pci virtio_blk qemu_fw_cfg)
# Programs copied into the initramfs together with every library ldd reports.
DYN_PROGS=(/usr/bin/fio /usr/sbin/blkdiscard)

log() { echo "build-guest: $*" >&2; }

mkdir -p "$ART"
exec 9>"$ART/.lock"
flock 9                      # concurrent test runs build only once

# ---- resolve the kernel package -----------------------------------------
resolve_kpkg() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}
KPKG="$(resolve_kpkg || true)"
if [[ -z "$KPKG" ]]; then
    log "linux-image-amd64 unknown to apt-cache; running apt-get update"
    apt-get update -qq
    KPKG="$(resolve_kpkg)"
fi
[[ -n "$KPKG" ]] || { log "cannot resolve the kernel package"; exit 1; }
KVERSION_PKG="$(apt-cache policy "$KPKG" | awk '/Candidate:/ {print $2}')"

tool_versions() {
    dpkg-query -W -f='${Package}=${Version}\n' busybox-static fio util-linux 2>/dev/null || true
}
STAMP="$( { cat "${BASH_SOURCE[0]}" "$HERE/init"; echo "$KPKG=$KVERSION_PKG"; tool_versions; } | sha256sum | cut -d' ' -f1)"

if [[ $FORCE == 0 && -f "$ART/STAMP" && "$(cat "$ART/STAMP")" == "$STAMP" &&
      -s "$ART/vmlinuz" && -s "$ART/initramfs.cpio.gz" ]]; then
    log "up to date ($ART)"
    exit 0
fi

# ---- kernel ----------------------------------------------------------------
DL="$ART/dl"
mkdir -p "$DL"
DEB="$DL/${KPKG}_${KVERSION_PKG//:/%3a}_amd64.deb"     # apt-get download's file name
if [[ ! -s "$DEB" ]]; then
    log "downloading $KPKG $KVERSION_PKG"
    # apt-get download writes into the cwd; _apt cannot write there, so this
    # runs unsandboxed (harmless warning, filtered).
    (cd "$DL" && apt-get download -q "$KPKG=$KVERSION_PKG" 2>&1 |
        grep -v '^W: Download is performed unsandboxed' >&2 || true)
    [[ -s "$DEB" ]] || { log "download of $KPKG $KVERSION_PKG failed"; exit 1; }
fi
KROOT="$ART/kernel-root"
rm -rf "$KROOT"
dpkg -x "$DEB" "$KROOT"
KVER="$(ls "$KROOT/lib/modules" | head -1)"
MODDIR="$KROOT/lib/modules/$KVER"
[[ -f "$MODDIR/modules.dep" ]] || depmod -b "$KROOT" "$KVER"   # the .deb ships no modules.dep
cp "$KROOT/boot/vmlinuz-$KVER" "$ART/vmlinuz.tmp"

# ---- initramfs staging ------------------------------------------------------
ST="$ART/initramfs-root"
rm -rf "$ST"
mkdir -p "$ST"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,mnt,root,lib/modules}
chmod 1777 "$ST/tmp"

# busybox + applet symlinks, except applets named like the real programs
# copied below (busybox has its own, feature-poor blkdiscard)
cp /bin/busybox "$ST/bin/busybox"
declare -A REAL=()
for prog in "${DYN_PROGS[@]}"; do REAL[$(basename "$prog")]=1; done
for applet in $(/bin/busybox --list); do
    [[ -n "${REAL[$applet]:-}" || -e "$ST/bin/$applet" ]] || ln -s busybox "$ST/bin/$applet"
done

# dynamically linked programs + their libraries (kept at their ldd paths)
copy_file() {   # copy_file SRC -> same path in staging, resolving symlinks
    local src="$1" dst="$ST$1"
    mkdir -p "$(dirname "$dst")"
    [[ -e "$dst" ]] || cp -L "$src" "$dst"
}
LIBDIRS=()
for prog in "${DYN_PROGS[@]}"; do
    real="$(readlink -f "$prog")"
    copy_file "$real"
    [[ "$prog" == "$real" ]] || { mkdir -p "$ST$(dirname "$prog")"; ln -sf "$real" "$ST$prog"; }
    while read -r lib; do
        [[ -n "$lib" ]] || continue
        copy_file "$lib"
        LIBDIRS+=("$(dirname "$lib")")
    done < <(ldd "$real" | awk '/=> \// {print $3} /^[ \t]*\/.*ld-linux/ {print $1}')
done
# library search path for the guest (no ld.so.cache in the initramfs)
printf '%s\n' "${LIBDIRS[@]}" | sort -u > "$ST/etc/ld.so.conf"
ldconfig -r "$ST" 2>/dev/null || true

# kernel modules in load order
declare -A SEEN=()
MODLIST=()
add_module() {   # add_module RELPATH   (dependencies first)
    local rel="$1" dep
    [[ -n "${SEEN[$rel]:-}" ]] && return
    SEEN[$rel]=1
    for dep in $(awk -v m="$rel:" '$1 == m { $1 = ""; print }' "$MODDIR/modules.dep"); do
        add_module "$dep"
    done
    MODLIST+=("$rel")
}
for m in "${WANT_MODULES[@]}"; do
    rel="$(awk -F: -v n="/$m.ko" 'index($1, n) && substr($1, length($1) - length(n) + 1) == n {print $1; exit}' "$MODDIR/modules.dep")"
    if [[ -z "$rel" ]]; then
        if grep -q "/$m.ko\$" "$MODDIR/modules.builtin"; then
            log "module $m is built in; skipped"
        else
            log "module $m neither a module nor built in"; exit 1
        fi
        continue
    fi
    add_module "$rel"
done
: > "$ST/etc/modules.load"
for rel in "${MODLIST[@]}"; do
    mkdir -p "$ST/lib/modules/$(dirname "$rel")"
    cp "$MODDIR/$rel" "$ST/lib/modules/$rel"
    echo "$rel" >> "$ST/etc/modules.load"
done

cp "$HERE/init" "$ST/init"
chmod 755 "$ST/init"
mknod -m 600 "$ST/dev/console" c 5 1
mknod -m 666 "$ST/dev/null" c 1 3

{
    echo "kernel-package: $KPKG $KVERSION_PKG"
    echo "kernel-release: $KVER"
    echo "modules: $(tr '\n' ' ' < "$ST/etc/modules.load")"
    tool_versions
} > "$ST/etc/guest-build-info"

# ---- pack --------------------------------------------------------------------
(cd "$ST" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -6 > "$ART/initramfs.cpio.gz.tmp"
mv "$ART/vmlinuz.tmp" "$ART/vmlinuz"
mv "$ART/initramfs.cpio.gz.tmp" "$ART/initramfs.cpio.gz"
cp "$ST/etc/guest-build-info" "$ART/BUILD-INFO"
echo "$STAMP" > "$ART/STAMP"
rm -rf "$KROOT"       # keep the .deb and staging tree, drop the 400 MB module tree
log "built: $(du -h "$ART/vmlinuz" | cut -f1) vmlinuz, $(du -h "$ART/initramfs.cpio.gz" | cut -f1) initramfs ($KPKG $KVERSION_PKG)"

#!/bin/bash
# attach-guest.sh SOCK|none [extra QEMU args...]
#
# Start a QEMU guest whose first virtio-blk disk is served by a vhost-user-blk
# backend (Spindle or qemu-storage-daemon) listening on the unix socket SOCK.
# Everything after SOCK (kernel, initrd, boot disk, -append, ...) is passed to
# QEMU unchanged.  The Spindle guest tests start every guest through this script.
#
# Environment:
#   QEMU_BIN       QEMU binary              (default qemu-system-x86_64)
#   QEMU_ACCEL     accelerator              (default tcg; use kvm if available)
#   VU_NUM_QUEUES  virtqueues for the disk  (default 1; "default" leaves QEMU's: one per vCPU)
#   GUEST_RAM      guest RAM size, e.g. 256M (default: the cfg file's 512M); still shared memfd
#
# Fixed pieces: q35 machine, 512 MiB of shared memfd RAM (vhost-user-guest.cfg),
# -chardev socket,id=vu0,path=SOCK  -device vhost-user-blk-pci,chardev=vu0,...
# -nographic (serial console on stdio) and -no-reboot (guest reboot = exit).
set -eu
if [ $# -lt 1 ]; then
    echo "usage: $0 SOCK [extra qemu args...]" >&2
    exit 2
fi
sock=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
# SOCK "none": no vhost-user disk at boot (one is hotplugged later through QMP).
disk=()
queues=",num-queues=${VU_NUM_QUEUES:-1}"
[ "${VU_NUM_QUEUES:-}" = default ] && queues=""   # QEMU's own default: one per vCPU
if [ "$sock" != none ]; then
    disk=(-chardev "socket,id=vu0,path=$sock"
          -device "vhost-user-blk-pci,id=vublk0,chardev=vu0$queues")
fi
machine=(-readconfig "$here/vhost-user-guest.cfg")
if [ -n "${GUEST_RAM:-}" ]; then   # the cfg file's settings with another size
    machine=(-machine q35,memory-backend=mem -m "$GUEST_RAM"
             -object "memory-backend-memfd,id=mem,size=$GUEST_RAM,share=on")
fi
exec "${QEMU_BIN:-qemu-system-x86_64}" \
    "${machine[@]}" \
    -accel "${QEMU_ACCEL:-tcg}" \
    "${disk[@]}" \
    -nographic -no-reboot \
    "$@"

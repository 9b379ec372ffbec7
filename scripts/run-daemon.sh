#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds spindle and serves a default disk:
# a 1 GiB sparse image var/disk.img, exported over vhost-user at var/spindle.sock.
# Prints the QEMU command line that attaches a guest. Extra arguments go to spindle.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
swift build -c release -Xswiftc -warnings-as-errors >&2
mkdir -p var
[ -e var/disk.img ] || truncate -s 1G var/disk.img
sock="$PWD/var/spindle.sock"
cat >&2 <<MSG

spindle serves var/disk.img on $sock. Attach a guest (its RAM must be shared memfd):

  qemu-configs/attach-guest.sh $sock -kernel YOUR-VMLINUZ -initrd YOUR-INITRD -append "console=ttyS0"

which runs:
  qemu-system-x86_64 -readconfig qemu-configs/vhost-user-guest.cfg -accel tcg \\
      -chardev socket,id=vu0,path=$sock \\
      -device vhost-user-blk-pci,id=vublk0,chardev=vu0,num-queues=1 -nographic ...

Stop spindle with Ctrl-C.
MSG
exec .build/release/spindle \
    --blockdev driver=file,node-name=disk0,filename=var/disk.img,discard=unmap \
    --export type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path="$sock",writable=on \
    --pidfile var/spindle.pid "$@"

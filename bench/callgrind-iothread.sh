#!/usr/bin/env bash
# Counts the instructions Spindle's IOThread executes per request, with valgrind's callgrind
# (repeatable on noisy machines, unlike timings). Builds Spindle (release), strips its debug
# info (valgrind 3.19 cannot read Swift 6's DWARF 5), runs it under callgrind with one
# export on a 1 GiB null-co node (or IMAGE=file: a 256 MiB file on ext4; IMAGE=qcow2: a
# 256 MiB allocated qcow2 image), drives it with
# spindle-bench for RUNTIME seconds, and prints instructions per request and the top
# functions by self cost (bench/callgrind/instructions-per-request.py).
#
#   bench/callgrind-iothread.sh                    # 4 KiB randread, QD 32, eventfd
#   RW=randwrite QD=1 MODE=poll bench/callgrind-iothread.sh
#   BENCH_ARGS=--dirty-log bench/callgrind-iothread.sh   # more spindle-bench options
#   BENCH_ARGS=--packed bench/callgrind-iothread.sh      # packed rings (export gets packed-ring=on)
#   EXPORT_KEYS=,packed-ring=on bench/callgrind-iothread.sh  # more export keys
#
# The export's IOThread has x-sleep=poll: it sleeps in poll(2) instead of io_uring_enter;
# valgrind 3.19 holds its global lock across io_uring_enter, which would freeze the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RW=${RW:-randread}; QD=${QD:-32}; MODE=${MODE:-eventfd}; RUNTIME=${RUNTIME:-5}; IMAGE=${IMAGE:-null}
EXPORT_KEYS=${EXPORT_KEYS:-}
# A packed-ring client needs an export that offers packed rings.
[[ " ${BENCH_ARGS:-} " == *" --packed"* ]] && [[ "$EXPORT_KEYS" != *packed-ring=* ]] && EXPORT_KEYS="$EXPORT_KEYS,packed-ring=on"
bench_workdir WORK spindle-callgrind
bench_build always spindle spindle-bench >/dev/null
cp "$BENCH_RELEASE/spindle" "$WORK/spindle" && strip --strip-debug "$WORK/spindle"
if [ "$IMAGE" = file ]; then
    IMG=${IMAGE_DIR:-/var/tmp}/spindle-callgrind.img
    bench_at_exit 'rm -f "$IMG"'
    dd if=/dev/urandom of="$IMG" bs=1M count=256 status=none; cat "$IMG" >/dev/null
    NODE="driver=file,node-name=n0,filename=$IMG"
elif [ "$IMAGE" = qcow2 ]; then
    # Every cluster allocated (preallocation=falloc): reads and writes take the fast path.
    IMG=${IMAGE_DIR:-/var/tmp}/spindle-callgrind.qcow2
    bench_at_exit 'rm -f "$IMG"'
    qemu-img create -q -f qcow2 -o preallocation=falloc "$IMG" 256M; cat "$IMG" >/dev/null
    NODE="driver=qcow2,node-name=n0,file.driver=file,file.filename=$IMG"
else
    NODE="driver=null-co,node-name=n0,size=1G"
fi
SOCK=$WORK/export.sock
bench_start_backend "$WORK/valgrind.log" valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$WORK/cg" \
    "$WORK/spindle" --object iothread,id=iot0,x-sleep=poll --blockdev "$NODE" \
    --export type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=$SOCK,writable=on,num-queues=1,iothread=iot0$EXPORT_KEYS
bench_wait_socket "$SOCK" "$backend_pid" "$WORK/valgrind.log" 30
"$BENCH_RELEASE/spindle-bench" --socket "$SOCK" --iodepth "$QD" --bs 4k --rw "$RW" --runtime "$RUNTIME" --ramp 1 \
    --cpus 0 --completion "$MODE" ${BENCH_ARGS:-} --json-only > "$WORK/bench.json"
bench_stop_backend   # callgrind writes its profiles as the daemon exits
# The IOThread is the thread with the most instructions.
PROFILE=$(for f in "$WORK"/cg-*; do echo "$(awk '/^totals:/{print $2}' "$f") $f"; done | sort -n | tail -1 | cut -d' ' -f2)
echo "callgrind: 4 KiB $RW QD $QD $MODE on $IMAGE${BENCH_ARGS:+ ($BENCH_ARGS)}, commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
python3 bench/callgrind/instructions-per-request.py "$PROFILE" "${TOP:-12}"

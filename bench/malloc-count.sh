#!/usr/bin/env bash
# Issue 4's allocation proof: runs Spindle (release) under an LD_PRELOAD allocation counter
# (bench/malloc-count/malloc-count.c, counts per thread in a shared table) and drives it
# with spindle-bench; snapshots the IOThread's count after warm-up and at the end of the
# measured window, and reports allocations per request over that window (at least
# MIN_REQUESTS, default 1,000,000, or the run is repeated longer).
#
#   bench/malloc-count.sh                      # null-co, randread+randwrite, eventfd, QD 32
#   IMAGE=file bench/malloc-count.sh           # a 256 MiB raw file on ext4 (page cache)
#   THROTTLE=100000 bench/malloc-count.sh      # through a throttle node capped at that many
#                                              # IOPS (requests wait in the group's queue)
#   METRICS=1 bench/malloc-count.sh            # with --metrics, scraped by curl every 0.5 s
#   BENCH_ARGS=--packed bench/malloc-count.sh  # packed rings (the export gets packed-ring=on)
#   IMAGE=qcow2 bench/malloc-count.sh          # a 256 MiB qcow2 image, every cluster allocated
#                                              # (preallocation=falloc: writes take the fast path)
# Writes bench/results/malloc-count.md (OUT=... to change).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNTIME=${RUNTIME:-8}
IMAGE=${IMAGE:-null}
OUT=${OUT:-bench/results/malloc-count.md}
MIN_REQUESTS=${MIN_REQUESTS:-1000000}
THROTTLE=${THROTTLE:-}
BENCH_ARGS=${BENCH_ARGS:-}; EXPORT_KEYS=""
[[ " $BENCH_ARGS " == *" --packed"* ]] && EXPORT_KEYS=",packed-ring=on"
bench_workdir WORK spindle-malloc-count

bench_build always spindle spindle-bench >/dev/null
gcc -O2 -shared -fPIC -o "$WORK/malloc-count.so" bench/malloc-count/malloc-count.c -ldl

if [ "$IMAGE" = file ]; then
    IMG=${IMAGE_DIR:-/var/tmp}/spindle-malloc-count.img
    bench_at_exit 'rm -f "$IMG"'
    truncate -s 256M "$IMG"; dd if=/dev/urandom of="$IMG" bs=1M count=256 conv=notrunc status=none
    NODE="driver=file,node-name=n0,filename=$IMG"
elif [ "$IMAGE" = qcow2 ]; then
    IMG=${IMAGE_DIR:-/var/tmp}/spindle-malloc-count.qcow2
    bench_at_exit 'rm -f "$IMG"'
    qemu-img create -q -f qcow2 -o preallocation=falloc "$IMG" 256M
    NODE="driver=qcow2,node-name=n0,file.driver=file,file.filename=$IMG"
else
    NODE="driver=null-co,node-name=n0,size=1G"
fi
EXPORTED=n0
EXTRA=()
if [ -n "$THROTTLE" ]; then
    EXTRA=(--object "throttle-group,id=tg0,x-iops-total=$THROTTLE" --blockdev "driver=throttle,node-name=t0,throttle-group=tg0,file=n0")
    EXPORTED=t0
fi
SOCK=$WORK/export.sock
TABLE=$WORK/counts
METRICS_ARGS=()
if [ "${METRICS:-0}" = 1 ]; then
    METRICS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    METRICS_ARGS=(--metrics "addr.type=inet,addr.host=127.0.0.1,addr.port=$METRICS_PORT")
fi
bench_start_backend "$WORK/spindle.log" \
    env MALLOC_COUNT_FILE="$TABLE" LD_PRELOAD="$WORK/malloc-count.so" taskset -c 1 "$BENCH_RELEASE/spindle" \
    --blockdev "$NODE" ${EXTRA[@]+"${EXTRA[@]}"} \
    --export type=vhost-user-blk,id=e0,node-name=$EXPORTED,addr.type=unix,addr.path=$SOCK,writable=on,num-queues=1$EXPORT_KEYS \
    ${METRICS_ARGS[@]+"${METRICS_ARGS[@]}"}
bench_wait_socket "$SOCK" "$backend_pid" "$WORK/spindle.log" 5
if [ -n "${METRICS_PORT:-}" ]; then
    # The scrapes run on the endpoint's threads; the IOThread's count must not move with them.
    ( while :; do curl -sf -o /dev/null "http://127.0.0.1:$METRICS_PORT/metrics"; sleep 0.5; done ) &
    SCRAPER=$!
    bench_at_exit 'kill "$SCRAPER" 2>/dev/null || true'
fi

iothread_count() {
    python3 bench/malloc-count/read-counts.py "$TABLE" |
        python3 -c 'import json,sys; print(sum(t["count"] for t in json.load(sys.stdin) if t["name"].startswith("iot-")))'
}

{
echo "# Heap allocations per request on the I/O path"
echo
echo "\`$0\` (IMAGE=$IMAGE, RUNTIME=$RUNTIME, METRICS=${METRICS:-0}${BENCH_ARGS:+, BENCH_ARGS=$BENCH_ARGS}), $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)."
echo "Node: \`$NODE\`."
echo
echo "Spindle runs under \`bench/malloc-count/malloc-count.c\` (LD_PRELOAD; counts malloc, calloc,"
echo "realloc, posix_memalign, aligned_alloc, memalign per thread). The IOThread's count is read"
echo "after the warm-up (queue set up, requests flowing) and again at the end of the window."
echo
echo "| workload | requests in window | IOThread allocations in window | per request | IOThread allocations, whole run (setup + teardown) |"
echo "|---|---:|---:|---:|---:|"
} > "$OUT.tmp"

for RW in randread randwrite; do
    .build/release/spindle-bench --socket "$SOCK" --iodepth 32 --bs 4k --rw $RW --runtime "$RUNTIME" --ramp 2 \
        --cpus 0 --completion eventfd $BENCH_ARGS --json-only > "$WORK/bench.json" &
    BENCH=$!
    sleep 3
    before=$(iothread_count); t0=$(date +%s.%N)
    sleep $((RUNTIME - 2))
    after=$(iothread_count); t1=$(date +%s.%N)
    wait $BENCH
    iops=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["iops"])' "$WORK/bench.json")
    reqs=$(python3 -c "print(int($iops * ($t1 - $t0)))")
    sleep 0.5
    total=$(iothread_count)
    per=$(python3 -c "print(f'{($after - $before) / max($reqs, 1):.6f}')")
    echo "$RW: ~$reqs requests, IOThread allocations $before -> $after ($per per request)"
    if [ "$reqs" -lt "$MIN_REQUESTS" ]; then echo "warning: fewer than $MIN_REQUESTS requests in the window; raise RUNTIME" >&2; fi
    echo "| 4 KiB $RW, QD 32, eventfd${BENCH_ARGS:+ ($BENCH_ARGS)} | ~$reqs | $((after - before)) | $per | $total (cumulative) |" >> "$OUT.tmp"
done
echo >> "$OUT.tmp"
echo "Per-thread table at the end: \`$(python3 bench/malloc-count/read-counts.py "$TABLE")\`" >> "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "wrote $OUT"

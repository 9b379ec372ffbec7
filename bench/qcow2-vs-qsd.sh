#!/usr/bin/env bash
# qcow2-vs-qsd.sh: qcow2 writes, qemu-storage-daemon (qsd) against Spindle, same client
# (spindle-bench, 1 queue, eventfd), same images, one run per point, backends taking turns:
#   allocated   4 KiB randwrite at QD 1 and QD 32 into a 1 GiB image whose clusters are all
#               allocated (qemu-img create -o preallocation=falloc): the fast path
#   first-write 4 KiB randwrite at QD 32 into an empty 1 GiB image (64 KiB clusters: nearly
#               every write allocates a cluster): the allocation path
#   raw         4 KiB randwrite at QD 32 into a 1 GiB raw file (the ceiling, Spindle only)
# Images on IMAGE_DIR (default /var/tmp, ext4, page cache); backend pinned to BACKEND_CPU,
# client to CLIENT_CPU. RUNTIME (default 5) and RAMP (default 1) seconds per point.
# Output: bench/results/<DATE>-qcow2-write.md (OUT to change). NOTE="text" adds a line.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNTIME=${RUNTIME:-5}
RAMP=${RAMP:-1}
IMAGE_DIR=${IMAGE_DIR:-/var/tmp}
CLIENT_CPU=${CLIENT_CPU:-0}
BACKEND_CPU=${BACKEND_CPU:-1}
DATE=${DATE:-$(date -u +%Y-%m-%d)}
OUT=${OUT:-bench/results/$DATE-qcow2-write.md}
bench_build missing spindle spindle-bench >&2
BENCH=$BENCH_RELEASE/spindle-bench
QSD=$(command -v qemu-storage-daemon)
bench_workdir work qcow2-vs-qsd
IMG=$IMAGE_DIR/spindle-qcow2-vs-qsd.$$
bench_at_exit 'rm -f "$IMG".*'

# make_image KIND: a fresh image for the point (so first writes really are first).
make_image() {
    rm -f "$IMG".*
    case $1 in
    allocated) qemu-img create -q -f qcow2 -o preallocation=falloc "$IMG.qcow2" 1G; cat "$IMG.qcow2" >/dev/null ;;
    first-write) qemu-img create -q -f qcow2 "$IMG.qcow2" 1G ;;
    raw) truncate -s 1G "$IMG.raw"; fallocate -l 1G "$IMG.raw"; cat "$IMG.raw" >/dev/null ;;
    esac
}

# point BACKEND KIND DEPTH: one run; prints IOPS.
point() {
    local backend=$1 kind=$2 depth=$3 sock=$work/$1.sock bin nodes
    rm -f "$sock"
    make_image "$kind"
    if [ "$kind" = raw ]; then
        nodes=(--blockdev "driver=file,node-name=d0,filename=$IMG.raw,aio=io_uring")
    else
        nodes=(--blockdev "driver=file,node-name=f0,filename=$IMG.qcow2,aio=io_uring" --blockdev "driver=qcow2,node-name=d0,file=f0")
    fi
    case $backend in qsd) bin=$QSD ;; spindle) bin=$BENCH_RELEASE/spindle ;; esac
    bench_start_backend "$work/$backend.log" taskset -c "$BACKEND_CPU" "$bin" "${nodes[@]}" \
        --export "type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path=$sock,writable=on,num-queues=1"
    bench_wait_socket "$sock" "$backend_pid" "$work/$backend.log" 10
    "$BENCH" --socket "$sock" --cpus "$CLIENT_CPU" --iodepth "$depth" --bs 4k --rw randwrite \
        --runtime "$RUNTIME" --ramp "$RAMP" --json-only > "$work/point.json"
    bench_stop_backend
    if [ "$kind" != raw ]; then
        qemu-img check -q "$IMG.qcow2" || { echo "qcow2-vs-qsd: qemu-img check failed after $backend $kind" >&2; exit 1; }
    fi
    python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["iops"]))' "$work/point.json"
}

# Reads (appended; READ_OUT, default bench/results/<DATE>-qcow2-read.md), after the writes,
# or alone with ONLY=read (ONLY=write: the writes alone). Both backends open the images
# read-only (file and qcow2 nodes), data in the page cache:
#   allocated 4 KiB randread at QD 1 and QD 32 on a 1 GiB image written whole
#             (preallocation=full, 64 KiB clusters: 2 L2 tables, always cached): the fast path
#   cold      the same on a 1 GiB image of 4 KiB clusters (512 L2 tables of 4 KiB) opened
#             with l2-cache-size=64K (16 tables) by both: most reads miss the L2 cache
#   seqread   64 KiB sequential reads at QD 32 on the allocated image
READ_OUT=${READ_OUT:-bench/results/$DATE-qcow2-read.md}
READ_IMG=$IMAGE_DIR/spindle-qcow2-read.$$
bench_at_exit 'rm -f "$READ_IMG".*'

# read_point BACKEND IMAGE RW BS DEPTH: one run on the IMAGE (allocated|cold); prints IOPS.
read_point() {
    local backend=$1 kind=$2 rw=$3 bs=$4 depth=$5 sock=$work/$1-read.sock bin cache=
    rm -f "$sock"
    [ "$kind" = cold ] && cache=,l2-cache-size=65536
    case $backend in qsd) bin=$QSD ;; spindle) bin=$BENCH_RELEASE/spindle ;; esac
    bench_start_backend "$work/$backend-read.log" taskset -c "$BACKEND_CPU" "$bin" \
        --blockdev "driver=file,node-name=f0,filename=$READ_IMG.$kind.qcow2,aio=io_uring,read-only=on" \
        --blockdev "driver=qcow2,node-name=d0,file=f0,read-only=on$cache" \
        --export "type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path=$sock,num-queues=1"
    bench_wait_socket "$sock" "$backend_pid" "$work/$backend-read.log" 10
    "$BENCH" --socket "$sock" --cpus "$CLIENT_CPU" --iodepth "$depth" --bs "$bs" --rw "$rw" \
        --runtime "$RUNTIME" --ramp "$RAMP" --json-only > "$work/point.json"
    bench_stop_backend
    python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["iops"]))' "$work/point.json"
}

run_reads() {
    qemu-img create -q -f qcow2 -o preallocation=full "$READ_IMG.allocated.qcow2" 1G
    qemu-img create -q -f qcow2 -o preallocation=full,cluster_size=4096 "$READ_IMG.cold.qcow2" 1G
    cat "$READ_IMG".*.qcow2 >/dev/null
    {
    echo "# qcow2 reads: qemu-storage-daemon vs Spindle ($DATE)"
    echo
    echo "One run per point (not a benchmark of record), 1 queue, spindle-bench --completion eventfd,"
    echo "backend on CPU $BACKEND_CPU, client on CPU $CLIENT_CPU, ${RUNTIME}s + ${RAMP}s ramp; 1 GiB images on"
    echo "$IMAGE_DIR written whole (preallocation=full) and in the page cache, opened read-only;"
    echo "cold: 4 KiB clusters and l2-cache-size=65536 on both. Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)."
    [ -z "${NOTE:-}" ] || { echo; echo "$NOTE"; }
    echo
    echo "| image | workload | QD | qsd IOPS | Spindle IOPS | Spindle / qsd |"
    echo "|---|---|---:|---:|---:|---:|"
    local spec q s
    for spec in "allocated randread 4k 1" "allocated randread 4k 32" "cold randread 4k 1" "cold randread 4k 32" "allocated read 64k 32"; do
        set -- $spec
        q=$(read_point qsd "$1" "$2" "$3" "$4"); s=$(read_point spindle "$1" "$2" "$3" "$4")
        echo "| qcow2 $1 | $3 $2 | $4 | $q | $s | $(python3 -c 'import sys; print(f"{int(sys.argv[2]) / max(1, int(sys.argv[1])):.2f}")' "$q" "$s") |"
    done
    } > "$READ_OUT.tmp"
    mv "$READ_OUT.tmp" "$READ_OUT"
    cat "$READ_OUT"
}
if [ "${ONLY:-}" = read ]; then run_reads; exit 0; fi

{
echo "# qcow2 writes: qemu-storage-daemon vs Spindle ($DATE)"
echo
echo "One run per point (not a benchmark of record), 4 KiB randwrite, 1 queue, spindle-bench"
echo "--completion eventfd, backend on CPU $BACKEND_CPU, client on CPU $CLIENT_CPU, ${RUNTIME}s + ${RAMP}s ramp;"
echo "images on $IMAGE_DIR, made fresh for each point. Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)."
[ -z "${NOTE:-}" ] || { echo; echo "$NOTE"; }
echo
echo "| image | QD | qsd IOPS | Spindle IOPS |"
echo "|---|---:|---:|---:|"
for spec in "allocated 1" "allocated 32" "first-write 32"; do
    set -- $spec
    q=$(point qsd "$1" "$2"); s=$(point spindle "$1" "$2")
    echo "| qcow2 $1 | $2 | $q | $s |"
done
echo "| raw file | 32 | - | $(point spindle raw 32) |"
} > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
cat "$OUT"
[ "${ONLY:-}" = write ] || run_reads

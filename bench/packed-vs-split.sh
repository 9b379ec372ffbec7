#!/usr/bin/env bash
# packed-vs-split.sh: Spindle with packed rings vs Spindle with split rings vs
# qemu-storage-daemon (split only) on a null-co export (IMAGES=file: a 256 MiB file on ext4
# in the page cache, both: IMAGES="null file"), same client (spindle-bench from this
# checkout, --packed for the first), the three taking turns in a rotating order, one fresh
# daemon per run. Records the machine's load average and spindle-bench's other_cpu_pct with
# every run: on a shared machine timings are noisy; see callgrind-iothread.sh for counts.
#
#   bench/packed-vs-split.sh
#   ROUNDS=3 RWS="randread randwrite" QDS="1 32 128" MODES="eventfd poll" RUNTIME=3 bench/packed-vs-split.sh
#   IMAGES="null file" IMAGE_DIR=/var/tmp bench/packed-vs-split.sh
#
# Prints one line per run and the medians per (rw, qd, mode, variant).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${ROUNDS:-3}; RWS=${RWS:-randread randwrite}; QDS=${QDS:-1 32 128}; MODES=${MODES:-eventfd}
RUNTIME=${RUNTIME:-3}; RAMP=${RAMP:-1}; IMAGES=${IMAGES:-null}
SPINDLE=${SPINDLE:-$PWD/.build/release/spindle}; QSD=${QSD:-$(command -v qemu-storage-daemon || true)}
bench_build missing spindle spindle-bench >&2
bench_workdir work packed-vs-split
results=$work/results.tsv
if [[ " $IMAGES " == *" file "* ]]; then
    IMG=${IMAGE_DIR:-/var/tmp}/packed-vs-split.img
    bench_at_exit 'rm -f "$IMG"'
    dd if=/dev/urandom of="$IMG" bs=1M count=256 status=none
fi
VARIANTS="spindle-packed spindle-split"
[ -n "$QSD" ] && VARIANTS="$VARIANTS qsd-split"

run() {  # run VARIANT RW QD MODE IMAGE
    local sock=$work/s.sock bin=$SPINDLE keys="" client="" node="driver=null-co,node-name=n0,size=1073741824"
    rm -f "$sock"
    if [ "$5" = file ]; then
        node="driver=file,node-name=n0,filename=$IMG"
        cat "$IMG" >/dev/null  # in the page cache before every run
    fi
    case $1 in
    spindle-packed) keys=",packed-ring=on"; client=--packed ;;
    qsd-split) bin=$QSD ;;
    esac
    bench_start_backend "$work/$1.log" taskset -c 1 "$bin" --blockdev "$node" \
        --export "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=$sock,writable=on,num-queues=1$keys"
    bench_wait_socket "$sock" "$backend_pid" "$work/$1.log" 10
    local json load
    load=$(cut -d' ' -f1 /proc/loadavg)
    json=$("$BENCH_RELEASE/spindle-bench" --socket "$sock" --iodepth "$3" --bs 4k --rw "$2" --runtime "$RUNTIME" \
        --ramp "$RAMP" --cpus 0 --completion "$4" --backend-pid "$backend_pid" $client --json-only)
    bench_stop_backend
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(*sys.argv[2:7], round(r["iops"]), round(r.get("backend_cpu_us_per_req") or 0, 3), r.get("other_cpu_pct"), r["ring"], sys.argv[7], sep="\t")' \
        "$json" "$1" "$2" "$3" "$4" "$load" "$5" | tee -a "$results"
}

printf 'variant\trw\tqd\tmode\tload1\tiops\tbackend_us_per_req\tother_cpu_pct\tring\timage\n'
set -- $VARIANTS
count=$#
for round in $(seq "$ROUNDS"); do
    for image in $IMAGES; do for rw in $RWS; do for qd in $QDS; do for mode in $MODES; do
        # Rotate the order each round so no variant always runs first (or last).
        order=()
        for i in $(seq 0 $((count - 1))); do
            j=$(( (i + round - 1) % count + 1 )); order+=("${!j}")
        done
        for v in "${order[@]}"; do run "$v" "$rw" "$qd" "$mode" "$image"; done
    done; done; done; done
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
keys = sorted({(r[9], r[1], int(r[2]), r[3]) for r in rows})
for image, rw, qd, mode in keys:
    cells = []
    for v in ("spindle-packed", "spindle-split", "qsd-split"):
        iops = [int(r[5]) for r in rows if (r[9], r[0], r[1], int(r[2]), r[3]) == (image, v, rw, qd, mode)]
        if iops: cells.append(f"{v} {statistics.median(iops):.0f}")
    print(f"median {image} {rw} QD{qd} {mode}: " + ", ".join(cells))
PY

#!/usr/bin/env bash
# packed-vs-split.sh: Spindle with packed rings vs Spindle with split rings vs
# qemu-storage-daemon (split only), same client (spindle-bench from this checkout), 4 KiB, one
# queue: on a null-co export and on a 256 MiB file on ext4 in the page cache (IMAGES),
# randread and randwrite (RWS), QD 1/32/128 (QDS), the client waiting on the call eventfd or
# spinning on the ring (MODES).
#
# Paired (the default): one Spindle daemon per run with two exports on one IOThread (on CPU 1),
# one with packed-ring=on and one split, on two null-co nodes or two image files; one
# spindle-bench thread (on CPU 0) alternates between them in SLICE_MS slices (--pair-socket,
# --pair-packed), so both layouts are measured under the same placement of the VM's vCPUs,
# which otherwise changes a whole run's speed by up to 2x. Each pair of adjacent slices gives
# one packed/split ratio. qemu-storage-daemon runs separately (same client, unpaired), taking
# turns with the paired run. PAIRED=0: the old way, three separate runs, one fresh daemon each.
#
# The variants take turns at every point, in an order that rotates each round, so that load
# coming and going hits all alike; ROUNDS repetitions. Records the load average with every
# run and `uptime` before and after: on a shared machine timings are noisy; see
# callgrind-iothread.sh for counts that are not.
#
#   bench/packed-vs-split.sh                       # everything, 3 rounds, paired: ~10 minutes
#   ROUNDS=5 RUNTIME=3 bench/packed-vs-split.sh    # a quiet machine, more time
#   IMAGES=null MODES=eventfd QDS=32 bench/packed-vs-split.sh
#   SPINDLE=/path/to/spindle NOBUILD=1 bench/packed-vs-split.sh
#   ONLY="file:randwrite:1:eventfd null:randwrite:128:poll" ROUNDS=5 bench/packed-vs-split.sh
#   PAIRED=0 bench/packed-vs-split.sh              # separate runs: ~15 minutes
#
# ONLY (image:rw:qd:mode words) runs just those points of the IMAGES x RWS x QDS x MODES grid.
#
# Prints one line per run, then per point: paired, the medians over rounds of packed's and
# split's IOPS, the median and quartiles of packed/split over all pairs of slices of all
# rounds with a 95 % confidence interval of that median (order statistics), qsd's median, and a
# verdict: "below" where the whole interval is under 1.0 (packed measurably slower), "above"
# where it is over 1.0, else "equal" (no difference the pairs can show).
# PAIRED=0: min/median/max IOPS of each variant, packed/split (medians), and "packed below
# split" where packed's best run is below split's worst.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${ROUNDS:-3}; RWS=${RWS:-randread randwrite}; QDS=${QDS:-1 32 128}; MODES=${MODES:-eventfd poll}
RUNTIME=${RUNTIME:-1.5}; RAMP=${RAMP:-0.5}; IMAGES=${IMAGES:-null file}; ONLY=${ONLY:-}
PAIRED=${PAIRED:-1}; SLICE_MS=${SLICE_MS:-50}
SPINDLE=${SPINDLE:-$PWD/.build/release/spindle}; QSD=${QSD:-$(command -v qemu-storage-daemon || true)}
bench_build missing spindle spindle-bench >&2
bench_workdir work packed-vs-split
results=$work/results.tsv
: >"$results"
if [[ " $IMAGES " == *" file "* ]]; then
    IMG=${IMAGE_DIR:-/var/tmp}/packed-vs-split.img
    bench_at_exit 'rm -f "$IMG"'
    if [ "$PAIRED" != 0 ]; then
        # The paired daemon's second export needs a file of its own (two nodes on one file
        # would conflict on its image locks). Both are copies of one source: a file written
        # by dd and a copy of it differ in speed by up to 4x under this workload (random
        # writes slower, reads faster on the dd-written one; measured, cause not known), and
        # that difference would be measured as the ring layouts'.
        IMG2=${IMAGE_DIR:-/var/tmp}/packed-vs-split-2.img
        bench_at_exit 'rm -f "$IMG2"'
        dd if=/dev/urandom of="$IMG.src" bs=1M count=256 status=none
        cp "$IMG.src" "$IMG"; cp "$IMG.src" "$IMG2"; rm -f "$IMG.src"
    else
        dd if=/dev/urandom of="$IMG" bs=1M count=256 status=none
    fi
fi
VARIANTS="spindle-packed spindle-split"
[ "$PAIRED" != 0 ] && VARIANTS="spindle-pair"
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
    # A failed run (e.g. spindle-bench's 10 s watchdog on a starved machine) is recorded and
    # left out of the statistics; the other runs go on.
    if ! json=$("$BENCH_RELEASE/spindle-bench" --socket "$sock" --iodepth "$3" --bs 4k --rw "$2" --runtime "$RUNTIME" \
        --ramp "$RAMP" --cpus 0 --completion "$4" --backend-pid "$backend_pid" $client --json-only); then
        bench_stop_backend
        printf '%s\t%s\t%s\t%s\t%s\tfailed\n' "$1" "$2" "$3" "$4" "$load" | tee -a "$work/failed.tsv"
        return 0
    fi
    bench_stop_backend
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(*sys.argv[2:7], round(r["iops"]), round(r.get("backend_cpu_us_per_req") or 0, 3), r.get("other_cpu_pct"), r["ring"], sys.argv[7], sep="\t")' \
        "$json" "$1" "$2" "$3" "$4" "$load" "$5" | tee -a "$results"
}

run_pair() {  # run_pair RW QD MODE IMAGE: packed and split on one daemon and IOThread, paired
    local split=$work/split.sock packed=$work/packed.sock n0 n1 json load
    local export="type=vhost-user-blk,writable=on,num-queues=1,iothread=iot0,addr.type=unix"
    rm -f "$split" "$packed"
    n0="driver=null-co,node-name=n0,size=1073741824"; n1="driver=null-co,node-name=n1,size=1073741824"
    if [ "$4" = file ]; then
        n0="driver=file,node-name=n0,filename=$IMG"; n1="driver=file,node-name=n1,filename=$IMG2"
        cat "$IMG" "$IMG2" >/dev/null  # in the page cache before every run
    fi
    bench_start_backend "$work/spindle-pair.log" taskset -c 1 "$SPINDLE" --object iothread,id=iot0 \
        --blockdev "$n0" --blockdev "$n1" \
        --export "$export,id=e0,node-name=n0,addr.path=$split" \
        --export "$export,id=e1,node-name=n1,addr.path=$packed,packed-ring=on"
    bench_wait_socket "$packed" "$backend_pid" "$work/spindle-pair.log" 10
    bench_wait_socket "$split" "$backend_pid" "$work/spindle-pair.log" 10
    load=$(cut -d' ' -f1 /proc/loadavg)
    # Device A is the split export, B the packed one driven with --pair-packed: B/A is packed/split.
    if ! json=$("$BENCH_RELEASE/spindle-bench" --socket "$split" --pair-socket "$packed" --pair-packed \
        --slice-ms "$SLICE_MS" --iodepth "$2" --bs 4k --rw "$1" --runtime "$RUNTIME" --ramp "$RAMP" --cpus 0 \
        --completion "$3" --backend-pid "$backend_pid" --json-only); then
        bench_stop_backend
        printf '%s\t%s\t%s\t%s\t%s\tfailed\n' spindle-pair "$1" "$2" "$3" "$load" | tee -a "$work/failed.tsv"
        return 0
    fi
    bench_stop_backend
    # Two result lines (the backend's CPU per request is over both devices' requests) and
    # one line of ratios per pair of slices.
    python3 -c '
import json, sys
r = json.loads(sys.argv[1]); p = r["pair"]; rw, qd, mode, load, image = sys.argv[2:7]
for variant, d in (("spindle-packed", p), ("spindle-split", r)):
    print(variant, rw, qd, mode, load, round(d["iops"]), round(r.get("backend_cpu_us_per_req") or 0, 3), r.get("other_cpu_pct"), d["ring"], image, sep="\t")
with open(sys.argv[7], "a") as out:
    for ratio in p["ratios"]:
        print(image, rw, qd, mode, ratio, sep="\t", file=out)
' "$json" "$1" "$2" "$3" "$load" "$4" "$work/ratios.tsv" | tee -a "$results"
}

selected() {  # selected IMAGE RW QD MODE: in ONLY, or ONLY unset
    [ -z "$ONLY" ] || [[ " $ONLY " == *" $1:$2:$3:$4 "* ]]
}
points=0
for image in $IMAGES; do for rw in $RWS; do for qd in $QDS; do for mode in $MODES; do
    selected "$image" "$rw" "$qd" "$mode" && points=$((points + 1))
done; done; done; done
runs=$(( ROUNDS * points * $(wc -w <<<"$VARIANTS") ))
[ "$PAIRED" != 0 ] && echo "packed-vs-split: paired, $SLICE_MS ms slices: $(awk -v t="$RUNTIME" -v s="$SLICE_MS" 'BEGIN { printf "%d", t * 500 / s }') pairs per run" >&2
echo "packed-vs-split: $runs runs of ${RUNTIME}s + ${RAMP}s ramp (about $(awk -v n="$runs" -v t="$RUNTIME" -v r="$RAMP" 'BEGIN { printf "%.0f", n * (t + r + 2) / 60 }') minutes: ~2 s per run to start and stop the daemons); spindle $("$SPINDLE" --version 2>/dev/null | head -1 || echo "$SPINDLE")" >&2
echo "uptime before: $(uptime)"
printf 'variant\trw\tqd\tmode\tload1\tiops\tbackend_us_per_req\tother_cpu_pct\tring\timage\n'
set -- $VARIANTS
count=$#
for round in $(seq "$ROUNDS"); do
    for image in $IMAGES; do for rw in $RWS; do for qd in $QDS; do for mode in $MODES; do
        selected "$image" "$rw" "$qd" "$mode" || continue
        # Rotate the order each round so no variant always runs first (or last).
        order=()
        for i in $(seq 0 $((count - 1))); do
            j=$(( (i + round - 1) % count + 1 )); order+=("${!j}")
        done
        for v in "${order[@]}"; do
            if [ "$v" = spindle-pair ]; then run_pair "$rw" "$qd" "$mode" "$image"; else run "$v" "$rw" "$qd" "$mode" "$image"; fi
        done
    done; done; done; done
done
echo "uptime after: $(uptime)"
[ -s "$work/failed.tsv" ] && echo "failed runs (left out): $(wc -l <"$work/failed.tsv")"
if [ "$PAIRED" != 0 ]; then
    touch "$work/ratios.tsv"
    python3 - "$results" "$work/ratios.tsv" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
ratios = [l.rstrip("\n").split("\t") for l in open(sys.argv[2])]
keys = sorted({(r[9], r[1], int(r[2]), r[3]) for r in rows}, key=lambda k: (k[0] != "null", k[1], k[2], k[3]))
def kiops(x): return f"{x / 1000:.0f}" if x >= 10000 else f"{x / 1000:.1f}"
def median_iops(variant, key):
    iops = [int(r[5]) for r in rows if (r[9], r[1], int(r[2]), r[3]) == key and r[0] == variant]
    return kiops(statistics.median(iops)) if iops else "-"
print()
print("| image | rw | QD | client | packed kIOPS | split kIOPS | packed/split paired median [95 % CI] (q1-q3) | pairs | qsd-split kIOPS | verdict |")
print("|---|---|---:|---|---:|---:|---:|---:|---:|---|")
def median_interval(values):
    # Distribution-free 95 % confidence interval of the median: the order statistics
    # n/2 -+ 1.96 sqrt(n)/2 (normal approximation to the binomial; needs ~10+ values).
    v = sorted(values); n = len(v)
    half = 0.98 * n ** 0.5
    return v[max(0, int(n / 2 - half))], v[min(n - 1, int(-(-(n / 2 + half) // 1)))]
below = []
for key in keys:
    image, rw, qd, mode = key
    pairs = [float(r[4]) for r in ratios if (r[0], r[1], int(r[2]), r[3]) == key]
    cell, verdict = "-", "-"
    if pairs:
        # Linear interpolation between ranks, as spindle-bench's own quartiles.
        q1, median, q3 = statistics.quantiles(pairs, n=4, method="inclusive") if len(pairs) > 1 else pairs * 3
        low, high = median_interval(pairs)
        cell = f"{median:.3f} [{low:.3f}-{high:.3f}] ({q1:.3f}-{q3:.3f})"
        # Below or above only where the median's whole confidence interval is: a difference
        # the pairs show, not one the noise of single slices could make.
        verdict = "below" if high < 1.0 else "above" if low > 1.0 else "equal"
        if verdict == "below":
            below.append(f"{image} {rw} QD{qd} {mode}")
    print(f"| {image} | {rw} | {qd} | {mode} | {median_iops('spindle-packed', key)} | {median_iops('spindle-split', key)} | "
          f"{cell} | {len(pairs)} | {median_iops('qsd-split', key)} | {verdict} |")
print()
print("packed below split (the paired packed/split median's 95 % confidence interval under 1.0): " + (", ".join(below) if below else "nowhere"))
PY
    exit 0
fi
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
keys = sorted({(r[9], r[1], int(r[2]), r[3]) for r in rows}, key=lambda k: (k[0] != "null", k[1], k[2], k[3]))
variants = ("spindle-packed", "spindle-split", "qsd-split")
print()
print("| image | rw | QD | client | " + " | ".join(f"{v} kIOPS min/med/max" for v in variants) + " | packed/split |")
print("|---|---|---:|---|" + "---:|" * (len(variants) + 1))
below = []
for image, rw, qd, mode in keys:
    stats = {}
    for v in variants:
        iops = [int(r[5]) for r in rows if (r[9], r[0], r[1], int(r[2]), r[3]) == (image, v, rw, qd, mode)]
        if iops: stats[v] = (min(iops), statistics.median(iops), max(iops))
    cells = ["/".join(f"{x / 1000:.0f}" if x >= 10000 else f"{x / 1000:.1f}" for x in stats[v]) if v in stats else "-"
             for v in variants]
    ratio = "-"
    if "spindle-packed" in stats and "spindle-split" in stats:
        p, s = stats["spindle-packed"], stats["spindle-split"]
        ratio = f"{p[1] / s[1]:.2f}"
        if p[2] < s[0]:
            ratio += " (below)"
            below.append(f"{image} {rw} QD{qd} {mode}")
    print(f"| {image} | {rw} | {qd} | {mode} | " + " | ".join(cells) + f" | {ratio} |")
print()
print("packed below split (packed's best run under split's worst): " + (", ".join(below) if below else "nowhere"))
PY

#!/usr/bin/env bash
# rbd-vs-qsd.sh: the rbd driver of Spindle against qemu-storage-daemon's (QEMU's block/rbd.c),
# same one-node Ceph cluster, same image, same client (spindle-bench over vhost-user-blk),
# with `rbd bench` (librbd alone, no vhost-user) as the ceiling.
#
#   workloads 4 KiB randread and randwrite; shapes 1x1 1x32 1x128 (1 queue at QD 1/32/128)
#             and 2x32 (2 queues at QD 32 each)
#   spindle   two IOThreads, queue 0 on io0 and queue 1 on io1 (one image handle, one
#             completion watcher, completions routed to each queue's thread)
#   qsd       one IOThread (iothread=io0) for the export: qsd runs all its queues there
#   measured  IOPS, p50 latency, the daemon's CPU per request (/proc/PID/stat utime+stime over
#             the measured window, spindle-bench --backend-pid), the load average; with
#             THREADS=1 (default) also CPU and context switches per request for each of the
#             daemon's threads by name (IOThread vs librbd/librados: bench/thread-cpu.py)
#   ceiling   rbd bench --io-type read|write --io-pattern rand --io-size 4K --io-threads QD
# Backends take turns for every point (qsd, spindle), each started afresh. Nothing is
# pinned: the machine is shared, the load average goes into the report, and the numbers are
# indicative only. The image (IMAGE_MB, default 256) is filled first so reads hit objects.
#
#   CEPH_DIR=/tmp/c bench/rbd-vs-qsd.sh      # a cluster from `scripts/ceph-cluster.sh start`
#   bench/rbd-vs-qsd.sh                      # starts a cluster of its own, stopped at exit
# Also: RWS, SHAPES, RUNTIME (5), RAMP (1), BACKENDS ("qsd spindle"), CEILING (1|0),
# DATE, OUTDIR, NOTE. Binaries from .build/release (built if missing; NOBUILD=1 forbids it).
# ROUNDS (1): every point that many times, the backends' order reversed each round (the
# report adds medians); SPINDLE_BASE=PATH adds backend `spindle-base` (another build, e.g.
# main's, for before/after); SPINDLE_IOTHREAD_OPTS (e.g. ",poll-max-ns=0") goes to Spindle's
# IOThreads; THREADS (1|0); SUFFIX names the report ($DATE-rbd$SUFFIX.md).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RWS=${RWS:-randread randwrite}
SHAPES=${SHAPES:-1x1 1x32 1x128 2x32}
RUNTIME=${RUNTIME:-5}
RAMP=${RAMP:-1}
BACKENDS=${BACKENDS:-qsd spindle}
CEILING=${CEILING:-1}
ROUNDS=${ROUNDS:-1}
THREADS=${THREADS:-1}
SPINDLE_IOTHREAD_OPTS=${SPINDLE_IOTHREAD_OPTS:-}
IMAGE_MB=${IMAGE_MB:-256}
DATE=${DATE:-$(date -u +%Y-%m-%d)}
OUTDIR=${OUTDIR:-bench/results}
QSD=$(command -v qemu-storage-daemon) || { echo "$BENCH_NAME: qemu-storage-daemon is missing" >&2; exit 1; }
bench_build missing spindle spindle-bench >&2
bench_workdir work rbd-vs-qsd

if [ -z "${CEPH_DIR:-}" ]; then
    CEPH_DIR=$work/ceph
    bench_at_exit "scripts/ceph-cluster.sh stop '$CEPH_DIR' >/dev/null 2>&1"
    scripts/ceph-cluster.sh start "$CEPH_DIR" >/dev/null
fi
# shellcheck disable=SC1091
. "$CEPH_DIR/env"
export CEPH_CONF
image=bench-$$
rbd create --size "${IMAGE_MB}M" "rbd/$image"
bench_at_exit "rbd rm 'rbd/$image' >/dev/null 2>&1"
rbd bench --io-type write --io-pattern seq --io-size 4M --io-threads 4 --io-total "${IMAGE_MB}M" "rbd/$image" >/dev/null
size=$((IMAGE_MB << 20))
node="driver=rbd,node-name=r0,pool=rbd,image=$image,user=admin,key-secret=sec0,conf=/dev/null,server.0.host=127.0.0.1,server.0.port=$CEPH_MON_PORT"
secret="secret,id=sec0,file=$CEPH_ADMIN_KEY_FILE,format=base64"
results=$work/results.tsv
: >"$results"

loadavg() { cut -d' ' -f1 /proc/loadavg; }

run_point() {  # backend rw queues qd
    local backend=$1 rw=$2 nq=$3 qd=$4 sock=$work/e0.sock load0 line threads='{}' bin
    rm -f "$sock"
    if [ "$backend" = qsd ]; then
        bench_start_backend "$work/qsd.log" "$QSD" --object "$secret" --object iothread,id=io0 --blockdev "$node" \
            --export "vhost-user-blk,id=e0,node-name=r0,addr.type=unix,addr.path=$sock,writable=on,num-queues=$nq,iothread=io0"
    else
        bin=$BENCH_RELEASE/spindle
        [ "$backend" = spindle-base ] && bin=${SPINDLE_BASE:?SPINDLE_BASE=PATH names the spindle-base binary}
        bench_start_backend "$work/$backend.log" "$bin" --object "$secret" \
            --object "iothread,id=io0$SPINDLE_IOTHREAD_OPTS" --object "iothread,id=io1$SPINDLE_IOTHREAD_OPTS" --blockdev "$node" \
            --export "vhost-user-blk,id=e0,node-name=r0,addr.type=unix,addr.path=$sock,writable=on,num-queues=$nq,iothread.0=io0,iothread.1=io1"
    fi
    bench_wait_socket "$sock" "$backend_pid" "$work/$backend.log" 60
    load0=$(loadavg)
    [ "$THREADS" = 1 ] && python3 bench/thread-cpu.py snap "$backend_pid" "$work/threads0.json"
    line=$("$BENCH_RELEASE/spindle-bench" --socket "$sock" --rw "$rw" --bs 4k --queues "$nq" --iodepth "$qd" \
        --size "$size" --runtime "$RUNTIME" --ramp "$RAMP" --cpus none --backend-pid "$backend_pid" --json-only) \
        || line='{"error":"spindle-bench failed"}'
    if [ "$THREADS" = 1 ]; then
        # Over the whole run (handshake and ramp too: on a loaded machine a window timed from
        # here misses the measured one), shared out in proportion to the measured CPU/request;
        # switches per request over the ramp and the run.
        python3 bench/thread-cpu.py snap "$backend_pid" "$work/threads1.json"
        threads=$(python3 bench/thread-cpu.py diff "$work/threads0.json" "$work/threads1.json" \
            $(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r.get("iops", 0) * (float(sys.argv[2]) + float(sys.argv[3])), r.get("backend_cpu_us_per_req") or 0)' "$line" "$RAMP" "$RUNTIME"))
    fi
    bench_stop_backend
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$backend" "$rw" "$nq" "$qd" "$load0" "$(loadavg)" "$line" "$threads" >>"$results"
    echo "$BENCH_NAME: $backend $rw ${nq}x$qd: $(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%.0f IOPS, %s errors" % (r.get("iops",0), r.get("errors")))' "$line")" >&2
}

run_ceiling() {  # rw qd
    local rw=$1 qd=$2 total load0 out
    total=$(( qd == 1 ? 2000 : 20000 ))
    load0=$(loadavg)
    out=$(rbd bench --io-type "${rw#rand}" --io-pattern rand --io-size 4K --io-threads "$qd" \
        --io-total $((total * 4096)) "rbd/$image" 2>&1 | tail -1) || out="failed"
    printf 'rbd-bench\t%s\t1\t%s\t%s\t%s\t%s\t{}\n' "$rw" "$qd" "$load0" "$(loadavg)" "$out" >>"$results"
    echo "$BENCH_NAME: rbd bench $rw threads $qd: $out" >&2
}

reversed_backends=$(printf '%s\n' $BACKENDS | tac | tr '\n' ' ')
for rw in $RWS; do
    for shape in $SHAPES; do
        nq=${shape%x*} qd=${shape#*x}
        for ((round = 1; round <= ROUNDS; round++)); do
            order=$BACKENDS
            [ $((round % 2)) = 0 ] && order=$reversed_backends
            for backend in $order; do run_point "$backend" "$rw" "$nq" "$qd"; done
        done
        if [ "$CEILING" = 1 ] && [ "$nq" = 1 ]; then run_ceiling "$rw" "$qd"; fi
    done
done

mkdir -p "$OUTDIR"
python3 - "$results" "$OUTDIR/$DATE-rbd${SUFFIX:-}.md" "$RUNTIME" "$RAMP" "${NOTE:-}" "$SPINDLE_IOTHREAD_OPTS" <<'PY'
import json, sys, platform, subprocess, re, statistics, collections
path, out, runtime, ramp, note, iot_opts = sys.argv[1:7]
rows = [line.rstrip("\n").split("\t") for line in open(path) if line.strip()]
sh = lambda c: subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
L = ["# Spindle's rbd driver vs qemu-storage-daemon's, one-node Ceph cluster", "",
     f"Kernel {platform.release()}, {sh('nproc')} CPUs, {sh('qemu-storage-daemon --version | head -1')}, "
     f"Ceph {sh('ceph --version')}. One monitor, one OSD (BlueStore in a file on ext4), pool size 1, "
     f"all on this machine. spindle-bench as the client for both daemons, 4 KiB, {runtime} s measured after "
     f"{ramp} s ramp, unpinned. **The machine was shared with other builds and tests (load average in the "
     "table): the numbers are indicative, not a verdict.**", ""]
if note: L += [note, ""]
if iot_opts: L += [f"Spindle's IOThreads with `{iot_opts}`.", ""]
L += ["| rw | queues x QD | backend | kIOPS | p50 µs | p99 µs | daemon µs CPU/req | daemon CPU % | errors | load avg (start → end) |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
for backend, rw, nq, qd, l0, l1, raw, _ in rows:
    if backend == "rbd-bench":
        m = re.search(r"ops/sec:\s*([0-9.]+)", raw)
        iops = float(m.group(1)) if m else 0
        L.append(f"| {rw} | (threads {qd}) | rbd bench | {iops/1000:.2f} | | | | | | {l0} → {l1} |")
        continue
    r = json.loads(raw)
    if "error" in r:
        L.append(f"| {rw} | {nq}x{qd} | {backend} | failed | | | | | | {l0} → {l1} |"); continue
    lat = r.get("lat_us", {})
    f = lambda v, d=1: "" if v is None else f"{v:.{d}f}"
    L.append(f"| {rw} | {nq}x{qd} | {backend} | {r['iops']/1000:.2f} | {f(lat.get('p50'))} | {f(lat.get('p99'))} | "
             f"{f(r.get('backend_cpu_us_per_req'))} | {f(r.get('backend_cpu_pct'))} | {r['errors']} | {l0} → {l1} |")
points = collections.OrderedDict()
for backend, rw, nq, qd, l0, l1, raw, threads in rows:
    if backend == "rbd-bench": continue
    r = json.loads(raw)
    if "error" in r: continue
    points.setdefault((rw, f"{nq}x{qd}", backend), []).append((r, json.loads(threads or "{}")))
med = lambda xs: statistics.median(xs) if xs else 0.0
if any(len(v) > 1 for v in points.values()):
    L += ["", "Medians over the rounds:", "",
          "| rw | queues x QD | backend | rounds | kIOPS | p50 µs | daemon µs CPU/req |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for (rw, shape, backend), runs in points.items():
        L.append(f"| {rw} | {shape} | {backend} | {len(runs)} | {med([r['iops'] for r, _ in runs])/1000:.2f} | "
                 f"{med([r['lat_us']['p50'] for r, _ in runs]):.1f} | {med([r.get('backend_cpu_us_per_req') or 0 for r, _ in runs]):.1f} |")
if any(t for runs in points.values() for _, t in runs):
    L += ["", "The daemon's threads by name (median over the rounds): CPU µs per request (the measured "
          "CPU per request shared out as the threads used the CPU over the whole run) / voluntary / involuntary "
          "context switches per request (over ramp and run):", "",
          "| rw | queues x QD | backend | threads |", "| --- | --- | --- | --- |"]
    for (rw, shape, backend), runs in points.items():
        names = sorted({n for _, t in runs for n in t}, key=lambda n: -med([t.get(n, {}).get("cpu_us_per_req", 0) for _, t in runs]))
        cells = []
        for n in names:
            v = lambda k: med([t.get(n, {}).get(k, 0) for _, t in runs])
            if v("cpu_us_per_req") < 0.5: continue
            cells.append(f"{n} {v('cpu_us_per_req'):.1f} / {v('vcs_per_req'):.2f} / {v('nvcs_per_req'):.2f}")
        L.append(f"| {rw} | {shape} | {backend} | {'; '.join(cells)} |")
L += ["", "Raw spindle-bench lines and rbd bench summaries:", "", "```"]
L += ["\t".join(row[:7]) for row in rows]
L += ["```", ""]
open(out, "w").write("\n".join(L))
print(f"rbd-vs-qsd: wrote {out}", file=sys.stderr)
PY

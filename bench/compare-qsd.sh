#!/usr/bin/env bash
# compare-qsd.sh: issue 4's comparison matrix, qemu-storage-daemon (qsd) against Spindle,
# in one go on the same machine and the same images, plus the host fio ceiling.
#
#   backends  qsd (Debian's qemu-storage-daemon) and spindle (.build/release/spindle),
#             same node types: null-co (size 1 GiB), file with aio=io_uring
#   images    null   null-co
#             file   256 MiB raw file on ext4 (IMAGE_DIR, default /var/tmp; NOT tmpfs, whose
#                    reads io_uring punts to worker threads), warmed into the page cache
#             direct the same file with cache.direct=on (O_DIRECT)
#   workloads 4 KiB randread and randwrite; shapes 1x1 1x32 1x128 (1 queue at QD 1/32/128)
#             and 2x32 (2 queues at QD 32 each)
#   modes     spindle-bench --completion eventfd and poll
#   ceiling   fio --ioengine=io_uring on the same file from the host, same bs/depth/jobs
#             (file and direct images only), pinned to the backend's CPU
# Each point runs REPEAT times, the backends taking turns (qsd, spindle, qsd, ...; each run
# starts its backend afresh, so a drift of the disk or the page cache during the matrix
# does not land on one backend only); the report gives the median and min-max of IOPS. A run
# during which other processes used more than NOISY_PCT % of a CPU (spindle-bench's
# other_cpu_pct, from /proc/stat; for fio: machine busy minus fio's own CPU) is flagged,
# retried up to ATTEMPTS times, and left out of the median when a quiet run of the point exists.
# Backend pinned to BACKEND_CPU (taskset), client queue threads all on CLIENT_CPU (as
# first-look.sh). Both backends export num-queues=2 when a 2-queue shape is selected
# (one thread serves both queues: the process is pinned to one CPU).
#
# Output: bench/results/<DATE>.json (metadata, every JSON line, per-point summary) and
# bench/results/<DATE>.md (table, commands). DATE defaults to today (UTC).
#
# Full matrix (the defaults): 2 backends x 3 images x 2 rw x 4 shapes x 2 modes = 96
# points, x REPEAT=3 = 288 runs of RUNTIME=5 + RAMP=1 s (+ ~1.5 s quiet check and
# connect) and 36 fio runs: about 45 minutes on a quiet 2-CPU machine, more if runs are
# repeated for noise (BUDGET, default 3600 s, stops waiting for quiet after that).
#
#   bench/compare-qsd.sh                                  # full matrix, ~45 min
#   REPEAT=1 RUNTIME=2 RAMP=1 SHAPES="1x1 1x32" RWS=randread IMAGES="null file" \
#     bench/compare-qsd.sh                                # quick look, ~2 min
# Restrict with BACKENDS="qsd spindle", IMAGES="null file direct", RWS="randread randwrite",
# SHAPES="1x1 1x32 1x128 2x32", MODES="eventfd poll", FIO=1|0 (ceiling), and set
# RUNTIME, RAMP, REPEAT, DATE, OUTDIR, IMAGE_DIR, CLIENT_CPU, BACKEND_CPU, FIO_CPUS,
# NOISY_PCT, ATTEMPTS, QUIET_PCT, QUIET_WAIT, BUDGET. NOTE="text" adds a line to the report.
# Binaries come from .build/release (built with
# `swift build -c release --product spindle`, then `--product spindle-bench`, if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
BACKENDS=${BACKENDS:-qsd spindle}
IMAGES=${IMAGES:-null file direct}
RWS=${RWS:-randread randwrite}
SHAPES=${SHAPES:-1x1 1x32 1x128 2x32}
MODES=${MODES:-eventfd poll}
FIO=${FIO:-1}
RUNTIME=${RUNTIME:-5}
RAMP=${RAMP:-1}
REPEAT=${REPEAT:-3}
DATE=${DATE:-$(date -u +%Y-%m-%d)}
OUTDIR=${OUTDIR:-bench/results}
IMAGE_DIR=${IMAGE_DIR:-/var/tmp}
CLIENT_CPU=${CLIENT_CPU:-0}
BACKEND_CPU=${BACKEND_CPU:-1}
FIO_CPUS=${FIO_CPUS:-$BACKEND_CPU}
NOISY_PCT=${NOISY_PCT:-10}
ATTEMPTS=${ATTEMPTS:-2}
QUIET_PCT=${QUIET_PCT:-10}
QUIET_WAIT=${QUIET_WAIT:-20}
BUDGET=${BUDGET:-3600}
NOTE=${NOTE:-}

BENCH=$BENCH_RELEASE/spindle-bench
SPINDLE=$BENCH_RELEASE/spindle
QSD=$(command -v qemu-storage-daemon)
bench_build missing spindle spindle-bench >&2
case $(stat -f -c %T "$IMAGE_DIR") in
    tmpfs|ramfs) echo "compare-qsd: IMAGE_DIR=$IMAGE_DIR is $(stat -f -c %T "$IMAGE_DIR"); use a disk filesystem (ext4)" >&2; exit 2 ;;
esac

bench_workdir work compare-qsd
IMAGE=$IMAGE_DIR/spindle-compare-qsd.$$.raw
bench_at_exit 'rm -f "$IMAGE"'

maxq=1
for s in $SHAPES; do [ "${s%x*}" -gt "$maxq" ] && maxq=${s%x*}; done

warm() { cat "$IMAGE" >/dev/null; }

# start_backend BACKEND IMAGE: starts it pinned to BACKEND_CPU, waits for its socket.
start_backend() {
    local backend=$1 image=$2 node bin
    sock=$work/$backend.sock
    rm -f "$sock"
    case $image in
    null)   node="driver=null-co,node-name=n0,size=1073741824" ;;
    file)   node="driver=file,node-name=n0,filename=$IMAGE,aio=io_uring" ;;
    direct) node="driver=file,node-name=n0,filename=$IMAGE,aio=io_uring,cache.direct=on" ;;
    esac
    case $backend in qsd) bin=$QSD ;; spindle) bin=$SPINDLE ;; *) echo "compare-qsd: unknown backend $backend" >&2; exit 2 ;; esac
    cmd=("$bin" --blockdev "$node"
         --export "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=$sock,writable=on,num-queues=$maxq")
    backend_cmd="taskset -c $BACKEND_CPU $backend ${cmd[*]:1}"
    bench_start_backend "$work/$backend.log" taskset -c "$BACKEND_CPU" "${cmd[@]}"
    bench_wait_socket "$sock" "$backend_pid" "$work/$backend.log" 10
}

# Busy jiffies of the CPUs outside FIO_CPUS (a comma list of CPU numbers): for fio runs,
# "other" is what ran there (fio's own CPU, its io-wq workers included, is hard to separate).
outside_jiffies() {
    awk -v cpus=",$FIO_CPUS," '/^cpu[0-9]/ { n = substr($1, 4); if (index(cpus, "," n ",") == 0) s += $2+$3+$4+$7+$8+$9 } END { print s+0 }' /proc/stat
}

# run_point LABEL CMD...: runs CMD (prints one JSON line) with quiet wait and noise retries.
run_point() {
    local label=$1 line other attempt; shift
    for attempt in $(seq "$ATTEMPTS"); do
        bench_wait_quiet "$BUDGET"
        line=$("$@") || { echo "compare-qsd: $label failed: $*" >&2; line='{"error":"run failed"}'; }
        other=$(bench_other_cpu "$line")
        echo "$label: $(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%.1f kIOPS other %s%%" % (r.get("iops",0)/1000, r.get("other_cpu_pct")))' "$line")" >&2
        if [ "$other" -le "$NOISY_PCT" ] || [ "$attempt" -eq "$ATTEMPTS" ] || [ "$SECONDS" -ge "$BUDGET" ]; then
            printf '%s\t%s\n' "$label" "$line" >>"$results"
            return
        fi
        printf '%s\t%s\n' "$label" "$line" >>"$noisy"
    done
}

# fio_run IMAGE RW QUEUES QD: the host ceiling; prints one JSON line in spindle-bench's
# field names (iops, lat_us, other_cpu_pct, client_cpu_pct) plus the raw fio job.
fio_run() {
    local image=$1 rw=$2 nq=$3 qd=$4 a b t0 t1
    [ "$image" = file ] && warm
    fio_args "$@"
    a=$(outside_jiffies); t0=$(date +%s.%N)
    fio "${fargs[@]}" >"$work/fio.json" 2>"$work/fio.err" || { echo '{"error":"fio failed"}'; return; }
    b=$(outside_jiffies); t1=$(date +%s.%N)
    python3 - "$work/fio.json" "$a" "$b" "$t0" "$t1" "$(getconf CLK_TCK)" "$RUNTIME" "$RAMP" "$image" "$rw" "$nq" "$qd" <<'PY'
import json, sys
path, a, b, t0, t1, hz, runtime, ramp, image, rw, nq, qd = sys.argv[1:]
j = json.load(open(path))["jobs"][0]
side = j["read"] if "read" in rw else j["write"]
pct = side["lat_ns"].get("percentile") or side["clat_ns"].get("percentile", {})   # total latency (lat_percentiles=1)
g = lambda k: pct.get(k, 0) / 1000
elapsed = float(t1) - float(t0)
outside = (int(b) - int(a)) * 100 / int(hz) / elapsed       # % of one CPU, CPUs outside FIO_CPUS, whole fio run
fio_cpu = (j["usr_cpu"] + j["sys_cpu"]) * int(nq)           # fio: % per job over the measured window
print(json.dumps({"tool": "fio", "rw": rw, "bs": 4096, "queues": int(nq), "iodepth": int(qd),
    "direct": image == "direct", "runtime_s": float(runtime), "ramp_s": float(ramp),
    "iops": side["iops"], "mb_s": side["bw_bytes"] / 1e6, "ios": side["total_ios"],
    "lat_us": {"mean": side["lat_ns"]["mean"] / 1000, "p50": g("50.000000"), "p90": g("90.000000"),
               "p99": g("99.000000"), "p99_9": g("99.900000"), "max": side["lat_ns"]["max"] / 1000},
    "client_cpu_pct": round(fio_cpu, 1), "other_cpu_pct": round(outside, 1),
    "other_cpu_note": "busy CPU outside FIO_CPUS", "fio_usr_cpu": j["usr_cpu"], "fio_sys_cpu": j["sys_cpu"]}))
PY
}

# fio_args IMAGE RW QUEUES QD: sets fargs, fio's arguments for the point.
fio_args() {
    local direct=0
    [ "$1" = direct ] && direct=1
    fargs=(--name=ceiling --filename="$IMAGE" --ioengine=io_uring --rw="$2" --bs=4k
           --iodepth="$4" --numjobs="$3" --direct=$direct --time_based --runtime="$RUNTIME"
           --ramp_time="$RAMP" --invalidate=0 --lat_percentiles=1 --group_reporting --cpus_allowed="$FIO_CPUS" --output-format=json)
}

# rounds_order ROUND: BACKENDS in order on odd rounds, reversed on even ones.
rounds_order() {
    local b out=
    if [ $(($1 % 2)) = 1 ]; then echo "$BACKENDS"; return; fi
    for b in $BACKENDS; do out="$b $out"; done
    echo "$out"
}

results=$work/results.tsv     # label \t json
commands=$work/commands.txt
noisy=$work/noisy.tsv
: >"$results"; : >"$commands"; : >"$noisy"
needs_file=0
for i in $IMAGES; do [ "$i" != null ] && needs_file=1; done
if [ $needs_file = 1 ]; then
    dd if=/dev/urandom of="$IMAGE" bs=1M count=256 status=none conv=fsync   # allocated, not sparse
    warm
    echo "# image: dd if=/dev/urandom of=$IMAGE bs=1M count=256 conv=fsync; cat $IMAGE >/dev/null (before each file point)" >>"$commands"
fi

for image in $IMAGES; do
    for rw in $RWS; do
        for shape in $SHAPES; do
            nq=${shape%x*}; qd=${shape#*x}
            cpus=$(printf "$CLIENT_CPU%.0s," $(seq "$nq")); cpus=${cpus%,}
            for mode in $MODES; do
                for repeat in $(seq "$REPEAT"); do
                    # The backends take turns within each point, each from a fresh start, so a
                    # drift of the machine, the disk or the page cache during the run does not
                    # land on one backend only; and who goes first alternates from round to
                    # round, so whatever the previous run leaves behind (a virtual disk's
                    # queues, a host's rate limiter) does not always fall on the same backend.
                    turn=0
                    for backend in $(rounds_order "$repeat"); do
                        turn=$((turn + 1))
                        [ "$image" = file ] && warm
                        start_backend "$backend" "$image"
                        args=(--socket "$sock" --queues "$nq" --cpus "$cpus" --iodepth "$qd" --bs 4k --rw "$rw"
                              --runtime "$RUNTIME" --ramp "$RAMP" --completion "$mode" --backend-pid "$backend_pid" --json-only)
                        if [ "$repeat" = 1 ]; then
                            grep -qxF "# $backend, $image: $backend_cmd" "$commands" || echo "# $backend, $image: $backend_cmd" >>"$commands"
                            echo "spindle-bench ${args[*]}" >>"$commands"
                        fi
                        run_point "$backend $image $rw $nq $qd $mode $turn" "$BENCH" "${args[@]}"
                        bench_stop_backend
                    done
                done
            done
        done
    done
    if [ "$FIO" = 1 ] && [ "$image" != null ]; then
        for rw in $RWS; do
            for shape in $SHAPES; do
                nq=${shape%x*}; qd=${shape#*x}
                for _ in $(seq "$REPEAT"); do
                    run_point "fio $image $rw $nq $qd -" fio_run "$image" "$rw" "$nq" "$qd"
                done
                fio_args "$image" "$rw" "$nq" "$qd"
                echo "fio ${fargs[*]}" >>"$commands"
            done
        done
    fi
done

mkdir -p "$OUTDIR"
export BACKENDS IMAGES RWS SHAPES MODES FIO RUNTIME RAMP REPEAT CLIENT_CPU BACKEND_CPU FIO_CPUS IMAGE_DIR NOISY_PCT ATTEMPTS DATE
python3 - "$results" "$commands" "$noisy" "$OUTDIR/$DATE" "$NOISY_PCT" "$NOTE" <<'PY'
import json, sys, subprocess, platform, os, datetime, statistics
results_path, commands_path, noisy_path, base, noisy_pct, note = sys.argv[1:7]
noisy_pct = float(noisy_pct)
E = os.environ
env = {k: E[k] for k in "BACKENDS IMAGES RWS SHAPES MODES FIO RUNTIME RAMP REPEAT CLIENT_CPU BACKEND_CPU FIO_CPUS IMAGE_DIR NOISY_PCT ATTEMPTS".split()}
full = dict(BACKENDS="qsd spindle", IMAGES="null file direct", RWS="randread randwrite",
            SHAPES="1x1 1x32 1x128 2x32", MODES="eventfd poll", FIO="1", REPEAT="3", RUNTIME="5", RAMP="1")
reduced = {k: env[k] for k in full if env[k] != full[k]}
def sh(cmd):
    try: return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception: return "?"
def load(path):
    out = []
    for l in open(path):
        if not l.strip(): continue
        label, raw = l.rstrip("\n").split("\t", 1)
        b, image, rw, nq, qd, mode, *turn = label.split()
        r = json.loads(raw)
        out.append({"backend": b, "image": image, "rw": rw, "queues": int(nq), "iodepth": int(qd),
                    "completion": mode, "turn": int(turn[0]) if turn else None,
                    "noisy": (r.get("other_cpu_pct") or 0) > noisy_pct, "result": r})
    return out
runs, discarded = load(results_path), load(noisy_path)
meta = {"date": E["DATE"], "run_at": datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        "script": "bench/compare-qsd.sh", "commit": sh("git rev-parse --short HEAD"),
        "spindle_built": sh("date -u -r .build/release/spindle '+%Y-%m-%d %H:%M UTC'"),
        "cpus": os.cpu_count(), "cpu_model": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        "kernel": platform.release(), "qsd": sh("qemu-storage-daemon --version | head -1"), "fio": sh("fio --version"),
        "image_fs": sh("df --output=fstype " + E["IMAGE_DIR"] + " | tail -1"), "settings": env,
        "reduced": bool(reduced), "reduced_from_full": reduced, "note": note,
        "full_run": "bench/compare-qsd.sh   (defaults: the whole matrix, REPEAT=3 RUNTIME=5 RAMP=1, about 45 minutes)"}
order = {"qsd": 0, "spindle": 1, "fio": 2}
imgorder = {"null": 0, "file": 1, "direct": 2}
points = {}
for r in runs:
    points.setdefault((r["image"], r["rw"], r["queues"], r["iodepth"], r["completion"], r["backend"]), []).append(r)
def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None
summary = []
for key in sorted(points, key=lambda k: (imgorder[k[0]], k[1], k[2], k[3], k[4] != "eventfd", order[k[5]])):
    rs = points[key]
    ok = [r for r in rs if "error" not in r["result"]]
    quiet = [r for r in ok if not r["noisy"]] or ok
    iops = [r["result"]["iops"] for r in ok]
    g = lambda f: med([f(r["result"]) for r in quiet])
    summary.append({"image": key[0], "rw": key[1], "queues": key[2], "iodepth": key[3], "completion": key[4],
        "backend": key[5], "runs": len(rs), "quiet_runs": sum(not r["noisy"] for r in ok), "errors": len(rs) - len(ok),
        "iops_median": g(lambda x: x["iops"]), "iops_min": min(iops) if iops else None, "iops_max": max(iops) if iops else None,
        "p50_us": g(lambda x: x["lat_us"]["p50"]), "p99_us": g(lambda x: x["lat_us"]["p99"]),
        "backend_us_per_req": g(lambda x: x.get("backend_cpu_us_per_req")),
        "backend_cpu_pct": g(lambda x: x.get("backend_cpu_pct")),
        "client_cpu_pct": g(lambda x: x.get("client_cpu_pct")),
        "other_cpu_pct_max": max((r["result"].get("other_cpu_pct") or 0) for r in ok) if ok else None})
json.dump({"metadata": meta, "summary": summary, "runs": runs, "discarded_noisy_runs": discarded},
          open(base + ".json", "w"), indent=1)

f = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"
L = [f"# qemu-storage-daemon vs Spindle, with the host fio ceiling ({meta['date']})", ""]
if reduced:
    L += ["**Reduced matrix** (" + ", ".join(f"{k}={v!r}" for k, v in reduced.items()) + "). "
          "The full run is `bench/compare-qsd.sh` with no settings (2 backends x null/file/direct x randread/randwrite x "
          "QD 1/32/128 on 1 queue and 2x32 x eventfd/poll, REPEAT=3, RUNTIME=5, RAMP=1; about 45 minutes).", ""]
if note: L += [note, ""]
L += [f"Run {meta['run_at']} by `bench/compare-qsd.sh`, checkout at {meta['commit']} (`.build/release/spindle` built "
      f"{meta['spindle_built']}), {meta['cpus']} CPUs ({meta['cpu_model']}), kernel {meta['kernel']}, {meta['qsd']}, {meta['fio']}. "
      f"Image: 256 MiB raw file on {meta['image_fs']} ({E['IMAGE_DIR']}), warmed with cat before every file run; `direct` = cache.direct=on.",
      "",
      f"4 KiB, EVENT_IDX on, no indirect descriptors. Backend pinned to CPU {E['BACKEND_CPU']}, client queue threads on CPU {E['CLIENT_CPU']}; "
      f"fio (the ceiling, io_uring from the host on the same file, numjobs = queues) pinned to CPU(s) {E['FIO_CPUS']}. "
      f"kIOPS: median over quiet runs (min-max over all runs); latency in µs (spindle-bench: batch to batch; fio: submission to completion, lat_percentiles=1); "
      f"`backend µs/req`: backend process CPU per request (/proc, 10 ms ticks); `client CPU %` (for fio: fio's own CPU). "
      f"`runs` = quiet/all: a run is noisy when other processes used more than {noisy_pct:.0f} % of a CPU "
      f"(`other %`, max over the point's runs: spindle-bench's other_cpu_pct; for fio, busy CPU outside its CPUs); noisy runs are left out of the medians when a quiet one exists. "
      f"`vs qsd`: Spindle's median IOPS / qsd's; `vs fio`: IOPS / fio's at the same image, rw and shape.", "",
      "| image | rw | queues x QD | completion | backend | runs | kIOPS | range | vs qsd | vs fio | p50 | p99 | backend µs/req | backend CPU % | client CPU % | other % |",
      "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
idx = {(s["image"], s["rw"], s["queues"], s["iodepth"], s["completion"], s["backend"]): s for s in summary}
for s in summary:
    k = (s["image"], s["rw"], s["queues"], s["iodepth"])
    q = idx.get(k + (s["completion"], "qsd")); fi = idx.get(k + ("-", "fio"))
    ratio = lambda o: f"{s['iops_median'] / o['iops_median']:.2f}" if o and o is not s and o["iops_median"] and s["iops_median"] else ""
    rng = f"{f(s['iops_min'] and s['iops_min']/1000)}-{f(s['iops_max'] and s['iops_max']/1000)}"
    L.append(f"| {s['image']} | {s['rw']} | {s['queues']}x{s['iodepth']} | {s['completion']} | {s['backend']} | "
             f"{s['quiet_runs']}/{s['runs']} | {f(s['iops_median'] and s['iops_median']/1000)} | {rng} | "
             f"{ratio(q) if s['backend'] == 'spindle' else ''} | {ratio(fi) if s['backend'] != 'fio' else ''} | "
             f"{f(s['p50_us'])} | {f(s['p99_us'])} | {f(s['backend_us_per_req'], 3)} | {f(s['backend_cpu_pct'])} | "
             f"{f(s['client_cpu_pct'])} | {f(s['other_cpu_pct_max'])} |")
L += ["", f"Every run's JSON line, the settings and this summary: `{os.path.basename(base)}.json`. "
      f"{len(discarded)} noisy run(s) were repeated (kept in the JSON under discarded_noisy_runs).", "",
      "## Commands", "", "```",
      "# " + " ".join(f"{k}={v!r}" for k, v in reduced.items()) + " bench/compare-qsd.sh" if reduced else "bench/compare-qsd.sh"]
L += [l.rstrip("\n") for l in open(commands_path)]
L += ["```", ""]
open(base + ".md", "w").write("\n".join(L))
print(f"compare-qsd: wrote {base}.md and {base}.json", file=sys.stderr)
PY

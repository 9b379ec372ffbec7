#!/usr/bin/env bash
# First look: spindle-bench against qemu-storage-daemon and Spindle, both serving a 1 GiB
# null-co node; 4 KiB randread on 1 queue at QD 1 and 32, eventfd and poll completion.
# Each backend is started fresh, pinned to one CPU, with the client pinned to another.
# Writes bench/results/first-look.md (commands, JSON lines, a table) unless OUT is set.
#
#   bench/first-look.sh              # build release binaries, run, write the report
#   RUNTIME=5 RAMP=1 REPEAT=1 NOBUILD=1 OUT=/tmp/x.md bench/first-look.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNTIME=${RUNTIME:-5}
RAMP=${RAMP:-1}
REPEAT=${REPEAT:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
BACKEND_CPU=${BACKEND_CPU:-1}
OUT=${OUT:-bench/results/first-look.md}
# A run during which other processes used more than NOISY_PCT % of a CPU is repeated (up
# to ATTEMPTS times); before each run the script waits for the machine to be quiet.
NOISY_PCT=${NOISY_PCT:-10}
ATTEMPTS=${ATTEMPTS:-4}
QUIET_PCT=${QUIET_PCT:-10}
QUIET_WAIT=${QUIET_WAIT:-120}

bench_build always -Xswiftc -warnings-as-errors -- spindle-bench spindle >&2
BENCH=$BENCH_RELEASE/spindle-bench
SPINDLE=$BENCH_RELEASE/spindle
QSD=$(command -v qemu-storage-daemon)

bench_workdir work first-look

# start_backend NAME: starts it pinned to BACKEND_CPU, waits for its socket.
start_backend() {
    sock=$work/$1.sock
    rm -f "$sock"
    case $1 in
    qsd) cmd=("$QSD" --blockdev driver=null-co,node-name=n0,size=1073741824
              --export type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=$sock,writable=on) ;;
    spindle) cmd=("$SPINDLE" --blockdev driver=null-co,node-name=n0,size=1G
                  --export type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=$sock,writable=on) ;;
    esac
    backend_cmd="taskset -c $BACKEND_CPU ${cmd[*]}"
    bench_start_backend "$work/$1.log" taskset -c "$BACKEND_CPU" "${cmd[@]}"
    bench_wait_socket "$sock" "$backend_pid" "$work/$1.log" 5
}

results=$work/results.jsonl
commands=$work/commands.txt
noisy=$work/noisy.jsonl
: >"$results"; : >"$commands"; : >"$noisy"
for backend in qsd spindle; do
    start_backend $backend
    echo "# $backend: $backend_cmd" >>"$commands"
    for completion in eventfd poll; do
        for qd in 1 32; do
            for _ in $(seq "$REPEAT"); do
                args=(--socket "$sock" --queues 1 --cpus "$CLIENT_CPU" --iodepth $qd --bs 4k --rw randread
                      --runtime "$RUNTIME" --ramp "$RAMP" --completion $completion --backend-pid "$backend_pid" --json-only)
                echo "spindle-bench ${args[*]}" >>"$commands"
                for attempt in $(seq "$ATTEMPTS"); do
                    bench_wait_quiet
                    line=$("$BENCH" "${args[@]}")
                    echo "$line"
                    other=$(bench_other_cpu "$line")
                    if [ "$other" -le "$NOISY_PCT" ] || [ "$attempt" -eq "$ATTEMPTS" ]; then
                        printf '%s\t%s\n' "$backend" "$line" >>"$results"
                        break
                    fi
                    printf '%s\t%s\n' "$backend" "$line" >>"$noisy"
                done
            done
        done
    done
    bench_stop_backend
done

python3 - "$results" "$commands" "$OUT" "$noisy" <<'PY'
import json, sys, subprocess, platform, os, datetime
results_path, commands_path, out_path, noisy_path = sys.argv[1:5]
rows = []
for l in open(results_path):
    backend, raw = l.rstrip("\n").split("\t", 1)
    rows.append({"backend": backend, "raw": raw, "result": json.loads(raw)})
def sh(cmd):
    try: return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception: return "?"
lines = []
lines.append("# spindle-bench first look: qemu-storage-daemon vs Spindle (null-co)")
lines.append("")
when = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
commit = sh('git rev-parse --short HEAD')
model = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")
qsd = sh('qemu-storage-daemon --version | head -1')
lines.append(f"Run {when} by `bench/first-look.sh`, commit {commit}, {os.cpu_count()} CPUs ({model}), "
             f"kernel {platform.release()}, {qsd}.")
lines.append("4 KiB randread, 1 queue, EVENT_IDX on, no indirect descriptors; backend pinned to one CPU, client to the other. "
             "Latency in µs; CPU in µs per request (client: its queue thread; backend: the whole process, /proc tick resolution). "
             "`other %` is machine CPU (of one CPU) used by neither side during the window: anything above a few % means a noisy neighbour.")
lines.append("")
lines.append("| backend | completion | QD | kIOPS | p50 | p99 | p99.9 | client µs/req | backend µs/req | backend CPU % | kicks/req | wakeups/req | calls/req | other % |")
lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for row in rows:
    r = row["result"]; lat = r["lat_us"]
    f = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"
    lines.append(f"| {row['backend']} | {r['completion']} | {r['iodepth']} | {r['iops']/1000:.1f} | {f(lat['p50'],1)} | {f(lat['p99'],1)} | {f(lat['p99_9'],1)} | "
                 f"{f(r['client_cpu_us_per_req'],3)} | {f(r['backend_cpu_us_per_req'],3)} | {f(r['backend_cpu_pct'],1)} | "
                 f"{f(r['kicks_per_req'],3)} | {f(r['wakeups_per_req'],3)} | {f(r['calls_per_req'],3)} | {f(r.get('other_cpu_pct'),1)} |")
points = {}
for row in rows:
    r = row["result"]
    points.setdefault((row["backend"], r["completion"], r["iodepth"]), []).append(r)
if any(len(v) > 1 for v in points.values()):
    import statistics
    lines.append("")
    lines.append("Per point over the repeats (median, and min-max of kIOPS); runs with `other %` above 10 are left out of the median when at least one quiet run exists:")
    lines.append("")
    lines.append("| backend | completion | QD | runs | median kIOPS | kIOPS range | median p50 | median backend µs/req |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for (backend, completion, qd), runs in points.items():
        quiet = [r for r in runs if (r.get("other_cpu_pct") or 0) <= 10] or runs
        med = lambda key: statistics.median(key(r) for r in quiet)
        iops = [r["iops"] / 1000 for r in runs]
        backend_us = [r["backend_cpu_us_per_req"] for r in quiet if r["backend_cpu_us_per_req"] is not None]
        lines.append(f"| {backend} | {completion} | {qd} | {len(quiet)}/{len(runs)} | {med(lambda r: r['iops'] / 1000):.1f} | "
                     f"{min(iops):.1f}-{max(iops):.1f} | {med(lambda r: r['lat_us']['p50']):.1f} | "
                     f"{statistics.median(backend_us) if backend_us else float('nan'):.3f} |")
lines.append("")
lines.append("## Commands")
lines.append("")
lines.append("```")
lines.extend(l.rstrip("\n") for l in open(commands_path))
lines.append("```")
lines.append("")
lines.append("## JSON lines")
lines.append("")
lines.append("```")
for row in rows:
    lines.append(f"# {row['backend']}")
    lines.append(row["raw"])
lines.append("```")
noisy = [l.rstrip("\n").split("\t", 1) for l in open(noisy_path) if l.strip()]
lines.append("")
lines.append(f"## Discarded runs ({len(noisy)}): other processes used more than the noise threshold of a CPU; each was repeated")
lines.append("")
lines.append("```")
for backend, raw in noisy:
    lines.append(f"# {backend}")
    lines.append(raw)
lines.append("```")
open(out_path, "w").write("\n".join(lines) + "\n")
print(f"first-look: wrote {out_path}", file=sys.stderr)
PY

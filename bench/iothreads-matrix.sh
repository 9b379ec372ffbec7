#!/usr/bin/env bash
# IOThreads matrix (issue 5, part 4): IOPS and daemon CPU of one Spindle export with
#   (a) 1 queue on 1 IOThread, (b) 2 queues on 1 IOThread, (c) 2 queues on 2 IOThreads
#       (automatic placement: one pinned IOThread per CPU),
# polling on (default poll-max-ns) and off (poll-max-ns=0), on a 1 GiB null-co node and a
# 256 MiB raw file on tmpfs (/dev/shm); 4 KiB randread at QD 32 per queue.
# The figure that matters is requests per daemon CPU-second (iops / backend CPU fraction):
# it should not fall when queues and threads are added.
#
# CPU placement on this 2-CPU machine: client and daemon share the CPUs. The daemon is not
# pinned with taskset (automatic placement pins its own IOThreads, named IOThreads float);
# the client's queue threads run with --cpus none (unpinned) by default, so the scheduler
# spreads client and daemon threads; CLIENT_CPUS=0,1 pins client queue i on CPU i instead.
#
# (c) with polling off: automatic IOThreads take the default poll-max-ns and there is no
# option to change it. The script pre-creates IOThreads under the names automatic placement
# looks up (`auto-cpu0`, `auto-cpu1`, pinned to CPUs 0 and 1, poll-max-ns=0); placement
# then reuses them. That relies on an implementation detail (Daemon.automaticThreadID), so
# the report marks those rows; AUTO_OFF_HACK=0 skips the cells instead.
#
# Writes bench/results/iothreads-matrix.md (commands, table, JSON lines, placement lines).
#   bench/iothreads-matrix.sh
#   RUNTIME=3 RAMP=1 REPEAT=1 COMPLETIONS="eventfd poll" BUDGET=480 OUT=/tmp/x.md bench/iothreads-matrix.sh
# Binaries are taken from .build/release (built with
# `swift build -c release --product spindle-bench`, then `--product spindle`, if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNTIME=${RUNTIME:-3}
RAMP=${RAMP:-1}
REPEAT=${REPEAT:-1}
QD=${QD:-32}
COMPLETIONS=${COMPLETIONS:-eventfd poll}
BACKENDS=${BACKENDS:-null file}
CONFIGS=${CONFIGS:-a b c}
CLIENT_CPUS=${CLIENT_CPUS:-none}
AUTO_OFF_HACK=${AUTO_OFF_HACK:-1}
OUT=${OUT:-bench/results/iothreads-matrix.md}
SHM_FILE=${SHM_FILE:-/dev/shm/spindle-iothreads-matrix.raw}
# Noise handling as in first-look.sh: wait for a quiet machine, repeat a run during which
# other processes used more than NOISY_PCT % of a CPU (up to ATTEMPTS times).
NOISY_PCT=${NOISY_PCT:-10}
ATTEMPTS=${ATTEMPTS:-3}
QUIET_PCT=${QUIET_PCT:-10}
QUIET_WAIT=${QUIET_WAIT:-30}
# After BUDGET seconds the script stops waiting for quiet and stops repeating noisy runs,
# so a busy machine cannot stretch it much past that (runs themselves take ~4.5 s each).
BUDGET=${BUDGET:-480}

BENCH=$BENCH_RELEASE/spindle-bench
SPINDLE=$BENCH_RELEASE/spindle
bench_build missing spindle-bench spindle >&2

bench_workdir work iothreads-matrix
bench_at_exit 'rm -f "$SHM_FILE"'

# start_backend BACKEND CONFIG POLLING: starts Spindle unpinned, waits for its socket.
# Sets sock, backend_pid, backend_cmd, nq, note.
start_backend() {
    local backend=$1 config=$2 polling=$3 poll="" objs=() exp_extra=""
    sock=$work/spindle.sock
    rm -f "$sock"
    [ "$polling" = off ] && poll=",poll-max-ns=0"
    note=""
    case $config in
    a) nq=1; objs=(--object "iothread,id=i0$poll"); exp_extra=",iothread=i0" ;;
    b) nq=2; objs=(--object "iothread,id=i0$poll"); exp_extra=",iothread=i0" ;;
    c) nq=2
       if [ "$polling" = off ]; then
           objs=(--object "iothread,id=auto-cpu0,cpu=0$poll" --object "iothread,id=auto-cpu1,cpu=1$poll")
           note="auto-cpuN pre-created with poll-max-ns=0"
       fi ;;
    esac
    case $backend in
    null) blockdev="driver=null-co,node-name=n0,size=1G,read-zeroes=on" ;;
    file) blockdev="driver=file,node-name=n0,filename=$SHM_FILE" ;;
    esac
    cmd=("$SPINDLE" "${objs[@]}" --blockdev "$blockdev"
         --export "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=$sock,writable=on,num-queues=$nq$exp_extra")
    backend_cmd="spindle ${cmd[*]:1}"
    bench_start_backend "$work/spindle.log" "${cmd[@]}"
    bench_wait_socket "$sock" "$backend_pid" "$work/spindle.log" 5
}

if [[ " $BACKENDS " == *" file "* ]]; then
    dd if=/dev/zero of="$SHM_FILE" bs=1M count=256 status=none   # allocated, not sparse
fi

results=$work/results.jsonl      # label \t json
commands=$work/commands.txt
noisy=$work/noisy.jsonl
placements=$work/placements.txt
: >"$results"; : >"$commands"; : >"$noisy"; : >"$placements"
for backend in $BACKENDS; do
  for config in $CONFIGS; do
    for polling in on off; do
        if [ "$config" = c ] && [ "$polling" = off ] && [ "$AUTO_OFF_HACK" != 1 ]; then
            printf '%s\t%s\n' "$backend c off" '{"skipped":"poll-max-ns is not configurable on automatic IOThreads"}' >>"$results"
            continue
        fi
        start_backend "$backend" "$config" "$polling"
        echo "# $backend, config $config, polling $polling${note:+ ($note)}: $backend_cmd" >>"$commands"
        label="$backend $config $polling"
        for completion in $COMPLETIONS; do
            for _ in $(seq "$REPEAT"); do
                args=(--socket "$sock" --queues "$nq" --cpus "$CLIENT_CPUS" --iodepth "$QD" --bs 4k --rw randread
                      --runtime "$RUNTIME" --ramp "$RAMP" --completion "$completion" --backend-pid "$backend_pid" --json-only)
                echo "spindle-bench ${args[*]}" >>"$commands"
                for attempt in $(seq "$ATTEMPTS"); do
                    bench_wait_quiet "$BUDGET"
                    line=$("$BENCH" "${args[@]}")
                    echo "$label: $line" >&2
                    other=$(bench_other_cpu "$line")
                    if [ "$other" -le "$NOISY_PCT" ] || [ "$attempt" -eq "$ATTEMPTS" ] || [ "$SECONDS" -ge "$BUDGET" ]; then
                        printf '%s\t%s\n' "$label" "$line" >>"$results"
                        break
                    fi
                    printf '%s\t%s\n' "$label" "$line" >>"$noisy"
                done
            done
        done
        bench_stop_backend
        # One placement line per queue start (each spindle-bench run reconnects).
        grep 'queue placement' "$work/spindle.log" | sed "s/^/[$label] /" >>"$placements" || true
    done
  done
done

python3 - "$results" "$commands" "$OUT" "$noisy" "$placements" "$CLIENT_CPUS" <<'PY'
import json, sys, subprocess, platform, os, datetime, re, statistics
results_path, commands_path, out_path, noisy_path, placements_path, client_cpus = sys.argv[1:7]
CONFIG = {"a": ("1", "1 (named i0)"), "b": ("2", "1 (named i0)"), "c": ("2", "2 (automatic)")}
BACKEND = {"null": "null-co", "file": "file on tmpfs"}
rows = []
for l in open(results_path):
    label, raw = l.rstrip("\n").split("\t", 1)
    backend, config, polling = label.split()
    rows.append({"backend": backend, "config": config, "polling": polling, "raw": raw, "result": json.loads(raw)})
def sh(cmd):
    try: return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception: return "?"
def per_cpu_s(r):
    frac = (r.get("backend_cpu_pct") or 0) / 100
    return r["iops"] / frac if frac > 0 else None
placement_lines = [l.rstrip("\n") for l in open(placements_path)]
# Distinct (iothread, cpu) per cell, from the daemon's "queue placement" lines.
placed = {}
for l in placement_lines:
    m = re.match(r"\[(\S+ \S+ \S+)\] .*?cpu=(\S+) .*?iothread=(\S+) .*?queue=(\d+)", l)
    if m: placed.setdefault(m.group(1), set()).add((m.group(3), m.group(2)))

L = []
L.append("# Spindle IOThreads matrix: queues × IOThreads × polling, null-co and tmpfs file")
L.append("")
when = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
commit = sh('git rev-parse --short HEAD')
model = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")
built = sh("date -u -r .build/release/spindle '+%Y-%m-%d %H:%M UTC'")
L.append(f"Run {when} by `bench/iothreads-matrix.sh`, checkout at commit {commit} (`.build/release/spindle` built {built}), "
         f"{os.cpu_count()} CPUs ({model.strip()}), kernel {platform.release()}.")
L.append(f"4 KiB randread, QD 32 per queue, EVENT_IDX on, no indirect descriptors. Daemon not pinned with taskset "
         f"(named IOThreads float; automatic ones pin themselves, one per CPU); client queue threads `--cpus {client_cpus}`, "
         "so client and daemon share both CPUs. "
         "`daemon CPU %` is the whole spindle process (utime+stime from /proc, 10 ms ticks) in % of one CPU; "
         "`req per daemon CPU-s` = IOPS / (daemon CPU % / 100), the figure that should not fall as queues and threads are added. "
         "`client µs/req` is the queue threads' own CPU (in `poll` completion mode it spins, 100 % per queue by construction). "
         "`other %` is machine CPU used by neither side (above a few % the run was disturbed).")
L.append("")
L.append("| backend | completion | queues | IOThreads | polling | kIOPS | daemon CPU % | daemon µs/req | req per daemon CPU-s (k) | client µs/req | p50 µs | p99 µs | kicks/req | calls/req | other % | placement |")
L.append("|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
f = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"
for completion in ("eventfd", "poll"):
    for row in rows:
        r = row["result"]; key = f"{row['backend']} {row['config']} {row['polling']}"
        q, t = CONFIG[row["config"]]
        if "skipped" in r:
            if completion == "eventfd":
                L.append(f"| {BACKEND[row['backend']]} | - | {q} | {t} | {row['polling']} | skipped: {r['skipped']} |||||||||||")
            continue
        if r["completion"] != completion: continue
        pol = row["polling"]
        if row["config"] == "c" and pol == "off": pol = "off ¹"
        where = ", ".join(f"{th}@cpu{c}" for th, c in sorted(placed.get(key, ())))
        L.append(f"| {BACKEND[row['backend']]} | {r['completion']} | {q} | {t} | {pol} | {r['iops']/1000:.1f} | "
                 f"{f(r.get('backend_cpu_pct'),1)} | {f(r.get('backend_cpu_us_per_req'),3)} | {f(per_cpu_s(r) and per_cpu_s(r)/1000,0)} | "
                 f"{f(r.get('client_cpu_us_per_req'),3)} | {f(r['lat_us']['p50'],1)} | {f(r['lat_us']['p99'],1)} | "
                 f"{f(r.get('kicks_per_req'),3)} | {f(r.get('calls_per_req'),3)} | {f(r.get('other_cpu_pct'),1)} | {where} |")
L.append("")
L.append("¹ Automatic IOThreads have no poll-max-ns option yet; for this cell the script pre-creates "
         "`--object iothread,id=auto-cpu0,cpu=0,poll-max-ns=0` and `auto-cpu1` (cpu=1), the names automatic placement "
         "looks up, so placement reuses them (an implementation detail, not a supported interface).")
L.append("")
L.append("NOTES_PLACEHOLDER")
L.append("")
L.append("## Commands")
L.append("")
L.append("```")
L.append("bench/iothreads-matrix.sh   # RUNTIME=3 RAMP=1 REPEAT=1 COMPLETIONS='eventfd poll' CLIENT_CPUS=none")
L.extend(l.rstrip("\n") for l in open(commands_path))
L.append("```")
L.append("")
L.append("## Queue placement (daemon log, one line per queue start)")
L.append("")
L.append("```")
# One line per distinct (cell, queue, iothread, cpu): every run reconnects and logs again.
seen = set()
for l in placement_lines:
    k = re.sub(r"\d{4}-\d\d-\d\dT\S+ ", "", l)
    if k in seen: continue
    seen.add(k); L.append(l)
L.append("```")
L.append("")
L.append("## JSON lines")
L.append("")
L.append("```")
for row in rows:
    L.append(f"# {row['backend']} config {row['config']} polling {row['polling']}")
    L.append(row["raw"])
L.append("```")
noisy = [l.rstrip("\n").split("\t", 1) for l in open(noisy_path) if l.strip()]
L.append("")
L.append(f"## Discarded runs ({len(noisy)}): other processes used more than the noise threshold of a CPU; each was repeated")
L.append("")
L.append("```")
for label, raw in noisy:
    L.append(f"# {label}")
    L.append(raw)
L.append("```")
text = "\n".join(L) + "\n"
# Keep hand-written notes across re-runs if the output already has them.
notes = "## What the numbers show\n\n(to be written after a run)"
if os.path.exists(out_path):
    old = open(out_path).read()
    m = re.search(r"(## What the numbers show\n.*?)\n## Commands", old, re.S)
    if m: notes = m.group(1).rstrip()
open(out_path, "w").write(text.replace("NOTES_PLACEHOLDER", notes))
print(f"iothreads-matrix: wrote {out_path}", file=sys.stderr)
PY

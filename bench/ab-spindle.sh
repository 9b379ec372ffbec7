#!/usr/bin/env bash
# ab-spindle.sh: two Spindle binaries against each other on a null-co export (a refactor's
# "no slower" check), the binaries taking turns, one fresh daemon per run, spindle-bench from
# this checkout as the client for both.
#
#   A=/path/to/old/spindle B=.build/release/spindle bench/ab-spindle.sh
#   ROUNDS=3 QD=32 RW=randread MODES="poll eventfd" RUNTIME=5 bench/ab-spindle.sh
#
# Prints one line per run (binary, mode, IOPS, backend CPU per request) and the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
A=${A:?A=path of the first spindle binary}; B=${B:-$PWD/.build/release/spindle}
ROUNDS=${ROUNDS:-3}; QD=${QD:-32}; RW=${RW:-randread}; MODES=${MODES:-poll eventfd}
RUNTIME=${RUNTIME:-5}; RAMP=${RAMP:-1}
bench_build missing spindle-bench >&2
bench_workdir work ab-spindle
results=$work/results.tsv
run() {  # run LABEL BINARY MODE
    local sock=$work/s.sock
    bench_start_backend "$work/$1.log" taskset -c 1 "$2" --blockdev driver=null-co,node-name=n0,size=1G \
        --export type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=$sock,writable=on,num-queues=1
    bench_wait_socket "$sock" "$backend_pid" "$work/$1.log" 10
    local json
    json=$(.build/release/spindle-bench --socket "$sock" --iodepth "$QD" --bs 4k --rw "$RW" --runtime "$RUNTIME" \
        --ramp "$RAMP" --cpus 0 --completion "$3" --backend-pid "$backend_pid" --json-only)
    bench_stop_backend
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(sys.argv[2], sys.argv[3], round(r["iops"]), round(r.get("backend_cpu_us_per_req", 0), 3), r.get("other_cpu_pct", 0), sep="\t")' \
        "$json" "$1" "$3" | tee -a "$results"
}
printf 'binary\tmode\tiops\tbackend_us_per_req\tother_cpu_pct\n'
for round in $(seq "$ROUNDS"); do
    for mode in $MODES; do
        if [ $((round % 2)) = 1 ]; then run A "$A" "$mode"; run B "$B" "$mode"; else run B "$B" "$mode"; run A "$A" "$mode"; fi
    done
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
for mode in sorted({r[1] for r in rows}):
    med = {b: statistics.median(int(r[2]) for r in rows if r[0] == b and r[1] == mode) for b in ("A", "B")}
    print(f"median {mode}: A {med['A']:.0f} IOPS, B {med['B']:.0f} IOPS, B/A {med['B'] / med['A']:.3f}")
PY

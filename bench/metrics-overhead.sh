#!/usr/bin/env bash
# metrics-overhead.sh: Spindle's IOPS with the Prometheus endpoint on (--metrics, scraped
# every second by a curl loop, as a Prometheus server would) and off, same binary, same
# client, one fresh daemon per run, the two taking turns (alternating who goes first).
# Records the load average and spindle-bench's other_cpu_pct with every run: the machine is
# shared, so compare medians over several rounds.
#
#   bench/metrics-overhead.sh
#   ROUNDS=7 RW=randread QD=32 MODE=eventfd RUNTIME=5 SCRAPE_EVERY=1 bench/metrics-overhead.sh
#
# Prints one line per run and the medians per variant with on/off.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${ROUNDS:-5}; RW=${RW:-randread}; QD=${QD:-32}; MODE=${MODE:-eventfd}
RUNTIME=${RUNTIME:-5}; RAMP=${RAMP:-1}; SCRAPE_EVERY=${SCRAPE_EVERY:-1}
command -v curl >/dev/null || { echo "$BENCH_NAME: needs curl (apt-get install curl)" >&2; exit 1; }
bench_build missing spindle spindle-bench >&2
bench_workdir work metrics-overhead
results=$work/results.tsv
scraper_pid=
bench_at_exit '[ -z "$scraper_pid" ] || kill "$scraper_pid" 2>/dev/null || true'

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

run() {  # run VARIANT (on|off)
    local sock=$work/s.sock port metrics=() scrapes=0
    rm -f "$sock"
    if [ "$1" = on ]; then
        port=$(free_port)
        metrics=(--metrics "addr.type=inet,addr.host=127.0.0.1,addr.port=$port")
    fi
    bench_start_backend "$work/$1.log" taskset -c 1 "$BENCH_RELEASE/spindle" \
        --blockdev driver=null-co,node-name=n0,size=1073741824 \
        --export "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=$sock,writable=on,num-queues=1" \
        ${metrics[@]+"${metrics[@]}"}
    bench_wait_socket "$sock" "$backend_pid" "$work/$1.log" 10
    if [ "$1" = on ]; then
        # The scraper: one full GET /metrics every SCRAPE_EVERY seconds, each counted if it got 200.
        ( n=0; while :; do
              curl -sf -o /dev/null "http://127.0.0.1:$port/metrics" && n=$((n + 1)) && echo "$n" >"$work/scrapes"
              sleep "$SCRAPE_EVERY"
          done ) &
        scraper_pid=$!
    fi
    local json load
    load=$(cut -d' ' -f1 /proc/loadavg)
    json=$("$BENCH_RELEASE/spindle-bench" --socket "$sock" --iodepth "$QD" --bs 4k --rw "$RW" --runtime "$RUNTIME" \
        --ramp "$RAMP" --cpus 0 --completion "$MODE" --backend-pid "$backend_pid" --json-only)
    if [ -n "$scraper_pid" ]; then
        kill "$scraper_pid"; wait "$scraper_pid" 2>/dev/null || true; scraper_pid=
        scrapes=$(cat "$work/scrapes" 2>/dev/null || echo 0); rm -f "$work/scrapes"
        [ "$scrapes" -gt 0 ] || { echo "$BENCH_NAME: no scrape succeeded; log:" >&2; cat "$work/$1.log" >&2; exit 1; }
    fi
    bench_stop_backend
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(sys.argv[2], sys.argv[3], sys.argv[4], round(r["iops"]), round(r.get("backend_cpu_us_per_req") or 0, 3), r.get("other_cpu_pct"), sep="\t")' \
        "$json" "$1" "$load" "$scrapes" | tee -a "$results"
}

echo "# $RW 4k QD$QD 1 queue, $MODE completion, null-co; ${RUNTIME}s runs, ${ROUNDS} rounds; backend on CPU 1, client on CPU 0"
printf 'metrics\tload1\tscrapes\tiops\tbackend_us_per_req\tother_cpu_pct\n'
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then run off; run on; else run on; run off; fi
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
med = {v: statistics.median(int(r[3]) for r in rows if r[0] == v) for v in ("off", "on")}
cpu = {v: statistics.median(float(r[4]) for r in rows if r[0] == v) for v in ("off", "on")}
print(f"median IOPS: off {med['off']:.0f}, on {med['on']:.0f} (on/off {med['on'] / med['off']:.3f}); "
      f"backend us/req: off {cpu['off']:.3f}, on {cpu['on']:.3f}")
PY

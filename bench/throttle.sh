#!/usr/bin/env bash
# I/O limits (throttle groups) measured with spindle-bench on null-co, one spindle:
#   1. a 4 KiB randread client capped at 5000 IOPS (x-iops-total) over 10 s
#   2. the same capped at 20 MB/s (x-bps-total) over 10 s
#   3. a burst: iops-total=1000, iops-total-max=4000 for 2 s: ten 1-s runs back to back
#      (spindle-bench prints no intervals; the group's buckets are reset before the first)
#   4. two exports in one group (5000 IOPS), on two IOThreads, at the same time, with an
#      export without limits running beside them (and, for comparison, that export alone)
#   5. a limit changed at run time with qom-set: 1-s runs at 5000, qom-set to 2000, 1-s runs;
#      then a 2-s run with qom-set back to 5000 one second into it
# Writes bench/results/<date>-throttle.md unless OUT is set.
#
#   bench/throttle.sh                          # build release binaries, run, write the report
#   NOBUILD=1 OUT=/tmp/t.md bench/throttle.sh
#   NICE=-10 bench/throttle.sh                # on a busy machine (needs CAP_SYS_NICE): a client
#                                             # that does not get the CPU measures its own stalls
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
OUT=${OUT:-bench/results/$(date -u +%Y-%m-%d)-throttle.md}
IODEPTH=${IODEPTH:-32}
NICE=${NICE:-0}

bench_build missing -Xswiftc -warnings-as-errors -- spindle-bench spindle >&2
BENCH=$BENCH_RELEASE/spindle-bench
SPINDLE=$BENCH_RELEASE/spindle
bench_workdir work throttle
qmp_sock=$work/qmp.sock

# qmp COMMAND JSON-ARGUMENTS: one command on the daemon's monitor; fails on an error reply.
qmp() {
    python3 - "$qmp_sock" "$1" "$2" <<'PY'
import json, sys
from qemu.qmp.legacy import QEMUMonitorProtocol
client = QEMUMonitorProtocol(sys.argv[1])
client.connect()
reply = client.cmd_raw(sys.argv[2], json.loads(sys.argv[3]))
client.close()
if "error" in reply:
    sys.exit(f"{sys.argv[2]}: {reply['error']}")
PY
}

node() { echo "driver=null-co,node-name=$1,size=1G"; }
throttle() { echo "driver=throttle,node-name=$1,throttle-group=$2,file=$3"; }
export_opt() { echo "type=vhost-user-blk,id=$1,node-name=$2,addr.type=unix,addr.path=$work/$1.sock,iothread=$3"; }

args=(--object iothread,id=iot0 --object iothread,id=iot1 --object iothread,id=iot2
      --object throttle-group,id=tg-iops,x-iops-total=5000
      --object throttle-group,id=tg-bps,x-bps-total=20000000
      --object throttle-group,id=tg-burst,x-iops-total=1000,x-iops-total-max=4000,x-iops-total-max-length=2
      --object throttle-group,id=tg-shared,x-iops-total=5000
      --object throttle-group,id=tg-live,x-iops-total=5000)
for i in 0 1 2 3 4 5 6; do args+=(--blockdev "$(node n$i)"); done
args+=(--blockdev "$(throttle t-iops tg-iops n0)" --blockdev "$(throttle t-bps tg-bps n1)"
       --blockdev "$(throttle t-burst tg-burst n2)" --blockdev "$(throttle t-sh1 tg-shared n3)"
       --blockdev "$(throttle t-sh2 tg-shared n4)" --blockdev "$(throttle t-live tg-live n6)"
       --export "$(export_opt iops t-iops iot0)" --export "$(export_opt bps t-bps iot0)"
       --export "$(export_opt burst t-burst iot0)" --export "$(export_opt sh1 t-sh1 iot0)"
       --export "$(export_opt sh2 t-sh2 iot1)" --export "$(export_opt free n5 iot2)"
       --export "$(export_opt live t-live iot0)" --qmp "$qmp_sock")
bench_start_backend "$work/spindle.log" nice -n "$NICE" "$SPINDLE" "${args[@]}"
bench_wait_socket "$work/live.sock" "$backend_pid" "$work/spindle.log" 10

results=$work/results.jsonl
: >"$results"
# run LABEL EXPORT RUNTIME RAMP [extra spindle-bench args]: one run, its JSON line labelled.
run() {
    local label=$1 export=$2 runtime=$3 ramp=$4 line
    shift 4
    line=$(nice -n "$NICE" "$BENCH" --socket "$work/$export.sock" --rw randread --bs 4k --iodepth "$IODEPTH" --runtime "$runtime" \
           --ramp "$ramp" --cpus none --json-only "$@")
    echo "{\"label\":\"$label\",\"export\":\"$export\",${line#\{}" | tee -a "$results" >&2
}

run cap-iops iops 10 1
run cap-bps bps 10 1
qmp qom-set '{"path":"tg-burst","property":"limits","value":{"iops-total":1000}}'  # empty buckets
for s in 1 2 3 4 5 6 7 8 9 10; do run "burst-s$s" burst 1 0; done
run free-alone free 10 1 &
wait $!
run shared-sh1 sh1 10 1 & p1=$!
run shared-sh2 sh2 10 1 & p2=$!
run shared-free free 10 1 & p3=$!
wait $p1 $p2 $p3
for s in 1 2 3; do run "live-5000-s$s" live 1 0; done
qmp qom-set '{"path":"tg-live","property":"limits","value":{"iops-total":2000}}'
for s in 1 2 3; do run "live-2000-s$s" live 1 0; done
( sleep 1; qmp qom-set '{"path":"tg-live","property":"limits","value":{"iops-total":5000}}' ) & setter=$!
run live-2000-then-5000-2s live 2 0
wait $setter
bench_stop_backend

python3 - "$results" "$OUT" "$IODEPTH" "${args[*]}" "$NICE" "$(uptime)" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {r["label"]: r for r in rows}
out = open(sys.argv[2], "w")
w = lambda s="": out.write(s + "\n")
w("# I/O limits (throttle groups) with spindle-bench on null-co")
w()
w("`bench/throttle.sh`; 4 KiB randread, one queue, iodepth %s, client threads unpinned (`--cpus none`)," % sys.argv[3])
w("one spindle serving every export; 2-vCPU VM shared with other work (daemon and clients at")
w("nice %s; at the end: `%s`)." % (sys.argv[5], sys.argv[6].strip()))
w()
w("```")
w("spindle " + sys.argv[4])
w("```")
w()
def dev(value, target): return 100.0 * (value - target) / target
w("| run | limit | measured | deviation |")
w("|---|---|---:|---:|")
r = by["cap-iops"]; w("| 5000 IOPS cap, 10 s (1 s ramp excluded) | x-iops-total=5000 | %.1f IOPS | %+.2f %% |" % (r["iops"], dev(r["iops"], 5000)))
r = by["cap-bps"]; w("| 20 MB/s cap, 10 s (1 s ramp excluded) | x-bps-total=20000000 | %.2f MB/s | %+.2f %% |" % (r["mb_s"], dev(r["mb_s"], 20)))
sh = by["shared-sh1"]["iops"] + by["shared-sh2"]["iops"]
w("| two exports, one group, 10 s | x-iops-total=5000 (shared) | %.1f + %.1f = %.1f IOPS | %+.2f %% |" % (by["shared-sh1"]["iops"], by["shared-sh2"]["iops"], sh, dev(sh, 5000)))
w("| export without limits, same run | none | %.0f IOPS (alone: %.0f) | %+.1f %% vs alone |" % (by["shared-free"]["iops"], by["free-alone"]["iops"], dev(by["shared-free"]["iops"], by["free-alone"]["iops"])))
w()
w("Burst: `x-iops-total=1000,x-iops-total-max=4000,x-iops-total-max-length=2`, ten 1-s runs back to back")
w("(buckets emptied first with a qom-set). QEMU's model: up to 4000/s until the bucket holds")
w("max × max-length = 8000 operations beyond what leaked (1000/s), i.e. for ~2.7 s, then 1000/s.")
w()
w("| second | " + " | ".join(str(s) for s in range(1, 11)) + " |")
w("|---|" + "---:|" * 10)
w("| IOPS | " + " | ".join("%.0f" % by["burst-s%d" % s]["iops"] for s in range(1, 11)) + " |")
w()
w("Run-time change with `qom-set tg-live limits {iops-total: 2000}` between 1-s runs, then back to")
w("5000 one second into a 2-s run:")
w()
w("| run | IOPS |")
w("|---|---:|")
for label in ["live-5000-s1", "live-5000-s2", "live-5000-s3", "live-2000-s1", "live-2000-s2", "live-2000-s3", "live-2000-then-5000-2s"]:
    w("| %s | %.1f |" % (label, by[label]["iops"]))
w()
w("Every run: errors 0 (%s)." % ("yes" if all(r["errors"] == 0 for r in rows) else "NO: see the JSON lines"))
w()
w("<details><summary>JSON lines</summary>")
w()
w("```")
for r in rows: w(json.dumps(r))
w("```")
w("</details>")
PY
echo "$BENCH_NAME: wrote $OUT" >&2

#!/usr/bin/env bash
# density.sh: what each disk costs when many share one daemon (issue 20). Two parts:
#
# 1. N exports (null-co, 1 GiB each) on one daemon, N spindle-bench frontends of one queue
#    each connected at once, 4 KiB randread at each QD in QDS for RUNTIME s (+1 s ramp).
#    Reports whether every frontend's I/O completed, total IOPS, and the daemon's VmRSS
#    (/proc/PID/status) idle, while connected (sampled mid-run) and after all disconnected;
#    then ROUNDS more connect/disconnect rounds at the first QD (RSS after each: no growth).
#    The same for each backend in BACKENDS (spindle, qsd: qemu-storage-daemon, same options).
# 2. (spindle only, MANY > 0) MANY exports on sparse 1 GiB files on the command line: time
#    from exec to all sockets listening, idle RSS, and the time query-block-exports takes
#    over QMP; then CONNECTED (256) of them get a frontend each (QD 4) and QMP is asked again.
#
#   bench/density.sh                                  # 64 exports, QD 4 and 32, both backends
#   SPINDLE=/tmp/old/spindle BENCH=/tmp/old/spindle-bench bench/density.sh   # another build
#   N=16 QDS=4 ROUNDS=1 MANY=0 BACKENDS=spindle bench/density.sh
#   BENCH_ARGS=--packed MANY=0 BACKENDS=spindle bench/density.sh   # packed rings (spindle exports
#                                                 # get packed-ring=on; more keys: EXPORT_KEYS=,k=v)
#
# Clients are not pinned (--cpus none): with N processes on a 2-CPU machine the IOPS figure
# says more about scheduling than speed; it is there to show every frontend was served.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${N:-64}; QDS=${QDS:-4 32}; RUNTIME=${RUNTIME:-3}; ROUNDS=${ROUNDS:-3}; MANY=${MANY:-1000}
BACKENDS=${BACKENDS:-spindle qsd}; IMAGE_DIR=${IMAGE_DIR:-/var/tmp}
SPINDLE=${SPINDLE:-$BENCH_RELEASE/spindle}; BENCH=${BENCH:-$BENCH_RELEASE/spindle-bench}
CONNECTED=${CONNECTED:-256}
BENCH_ARGS=${BENCH_ARGS:-}; EXPORT_KEYS=${EXPORT_KEYS:-}
[[ " $BENCH_ARGS " == *" --packed"* ]] && [[ "$EXPORT_KEYS" != *packed-ring=* ]] && EXPORT_KEYS="$EXPORT_KEYS,packed-ring=on"
QSD=$(command -v qemu-storage-daemon || true)
bench_build missing spindle spindle-bench >&2
bench_workdir work density
# Sockets on tmpfs, as in /run/spindle: on ext4 (/tmp) creating 1000 socket inodes right after
# deleting others costs the kernel ~2 s (ext4's recently_deleted inode scan, seen with perf).
sockdir=$(mktemp -d "${SOCK_DIR:-/dev/shm}/density.XXXXXX")
bench_at_exit 'rm -rf "$sockdir"'

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

start_daemon() {  # BACKEND COUNT NODE-KIND
    local backend=$1 count=$2 kind=$3 i args=() bin keys=""
    if [ "$backend" = spindle ]; then keys=$EXPORT_KEYS; fi
    for ((i = 0; i < count; i++)); do
        if [ "$kind" = null ]; then
            args+=(--blockdev "driver=null-co,node-name=n$i,size=1073741824")
        else
            args+=(--blockdev "driver=file,node-name=n$i,filename=$work/img$i")
        fi
        args+=(--export "type=vhost-user-blk,id=e$i,node-name=n$i,addr.type=unix,addr.path=$sockdir/e$i.sock,writable=on,num-queues=1$keys")
    done
    case $backend in
    spindle) bin=$SPINDLE; args+=(--qmp "$sockdir/qmp.sock") ;;
    qsd) bin=$QSD ;;
    esac
    bench_start_backend "$work/$backend.log" "$bin" "${args[@]}"
}

wait_sockets() {  # COUNT TIMEOUT-S: waits for e0..e(COUNT-1).sock
    local count=$1 timeout=$2 i
    for ((i = 0; i < count; i++)); do
        bench_wait_socket "$sockdir/e$i.sock" "$backend_pid" "$work/$backend.log" "$timeout"
    done
}

# One round: N clients at QD $1; prints "completed iops rss_connected_kib rss_after_kib".
round() {
    local qd=$1 i pids=() ok=0 iops rss_mid rss_after
    rm -f "$work"/out.*
    for ((i = 0; i < N; i++)); do
        "$BENCH" --socket "$sockdir/e$i.sock" --iodepth "$qd" --bs 4k --rw randread --runtime "$RUNTIME" --ramp 1 \
            --cpus none $BENCH_ARGS --json-only >"$work/out.$i" 2>"$work/err.$i" &
        pids+=($!)
    done
    sleep $(( RUNTIME / 2 + 1 ))
    rss_mid=$(rss_kib "$backend_pid")
    ls "/proc/$backend_pid/fd" | wc -l >"$work/fds"
    for p in "${pids[@]}"; do wait "$p" && ok=$((ok + 1)) || true; done
    sleep 1
    rss_after=$(rss_kib "$backend_pid")
    iops=$(cat "$work"/out.* | python3 -c 'import json,sys; print(round(sum(json.loads(l).get("iops",0) for l in sys.stdin if l.strip())))')
    local failed=$(cat "$work"/out.* | python3 -c 'import json,sys; print(sum(1 for l in sys.stdin if l.strip() and (json.loads(l).get("errors",0) or json.loads(l).get("ios",1)==0)))')
    echo "$ok $iops $rss_mid $rss_after $failed"
}

echo "# density.sh: N=$N QDS='$QDS' RUNTIME=$RUNTIME ROUNDS=$ROUNDS, $(date -u +%FT%TZ), spindle $SPINDLE"
for backend in $BACKENDS; do
    [ "$backend" = qsd ] && [ -z "$QSD" ] && { echo "qsd not installed: skipped"; continue; }
    start_daemon "$backend" "$N" null
    wait_sockets "$N" 20
    sleep 1
    idle=$(rss_kib "$backend_pid")
    idle_fds=$(ls "/proc/$backend_pid/fd" | wc -l)
    echo "$backend: idle RSS ${idle} KiB with $N exports"
    first=
    for qd in $QDS; do
        read -r ok iops mid after failed < <(round "$qd")
        echo "$backend QD$qd: fds while connected: $(cat "$work/fds") (idle: $idle_fds)"
        echo "$backend QD$qd: $ok/$N clients completed ($failed with errors or no I/O), $iops IOPS total, RSS connected $mid KiB ($(( (mid - idle) / N )) KiB per queue), after disconnect $after KiB"
        first=${first:-$qd}
    done
    for ((r = 1; r <= ROUNDS; r++)); do
        read -r ok iops mid after failed < <(round "$first")
        echo "$backend round $r (QD$first): $ok/$N completed, $iops IOPS, RSS connected $mid KiB, after disconnect $after KiB"
    done
    bench_stop_backend
done

if [ "$MANY" -gt 0 ] && [[ " $BACKENDS " == *" spindle "* ]]; then
    for ((i = 0; i < MANY; i++)); do truncate -s 1G "$work/img$i"; done
    backend=spindle
    t0=$(date +%s%N)
    start_daemon spindle "$MANY" file
    # Exports are set up in command-line order: the last socket first (cheap to poll), then all.
    bench_wait_socket "$sockdir/e$((MANY - 1)).sock" "$backend_pid" "$work/$backend.log" 60
    t1=$(date +%s%N)
    wait_sockets "$MANY" 1
    echo "spindle: $MANY exports (sparse files): all sockets listening after $(( (t1 - t0) / 1000000 )) ms"
    sleep 2
    idle=$(rss_kib "$backend_pid")
    echo "spindle: idle RSS $idle KiB with $MANY exports ($(( idle * 1024 / MANY )) bytes per export, daemon included); fds: $(ls /proc/$backend_pid/fd | wc -l)"
    for k in 1 2 3; do
        read -r ms count mem < <(python3 bench/density/qmp-time.py "$sockdir/qmp.sock" query-block-exports)
        echo "spindle: query-block-exports ($count exports) answered in $ms ms"
    done
    if [ "$CONNECTED" -gt 0 ]; then
        # CONNECTED of them with a frontend each (QD 4), QMP asked while they run.
        pids=()
        rm -f "$work"/out.*
        for ((i = 0; i < CONNECTED; i++)); do
            "$BENCH" --socket "$sockdir/e$i.sock" --iodepth 4 --bs 4k --rw randread --runtime "$RUNTIME" --ramp 1 \
                --cpus none $BENCH_ARGS --json-only >"$work/out.$i" 2>"$work/err.$i" &
            pids+=($!)
        done
        sleep $(( RUNTIME / 2 + 1 ))
        read -r ms count mem < <(python3 bench/density/qmp-time.py "$sockdir/qmp.sock" query-block-exports)
        rss=$(rss_kib "$backend_pid")
        ok=0
        for p in "${pids[@]}"; do wait "$p" && ok=$((ok + 1)) || true; done
        iops=$(cat "$work"/out.* | python3 -c 'import json,sys; print(round(sum(json.loads(l).get("iops",0) for l in sys.stdin if l.strip())))')
        echo "spindle: $CONNECTED of $MANY connected (QD 4): $ok completed, $iops IOPS; query-block-exports in $ms ms (x-memory-bytes total $mem); RSS $rss KiB"
    fi
    bench_stop_backend
fi

#!/usr/bin/env bash
# run-in-guest.sh: boot the test guest on Spindle and run the fio job files of this
# directory inside it, on the guest's vhost-user-blk disk (/dev/vda); prints fio's
# summary lines per job (IOPS/bandwidth, latency, run status) and keeps the full serial log.
#
# UNDER TCG (no /dev/kvm, QEMU_ACCEL=tcg, the default of qemu-configs/attach-guest.sh)
# THIS ONLY PROVES THE JOBS RUN. The guest's CPU is emulated, so the figures measure the
# emulator, not Spindle: draw no speed conclusions from them. With KVM (QEMU_ACCEL=kvm)
# they are the numbers users quote; use bench/compare-qsd.sh for host-side comparisons.
#
#   bench/guest-fio/run-in-guest.sh                         # all jobs, 5 s each, 1 queue
#   JOBS="randread-4k-qd1 seqread-1m" RUNTIME=3 bench/guest-fio/run-in-guest.sh
#   QUEUES=2 QEMU_ACCEL=kvm SMP=2 bench/guest-fio/run-in-guest.sh
#
# Environment:
#   JOBS      job names (file names without .fio; default: every *.fio here)
#   RUNTIME   seconds per job (default 5; each job also ramps 1 s)
#   QUEUES    virtqueues of the disk = export num-queues = VU_NUM_QUEUES = fio numjobs (default 1)
#   SMP       guest vCPUs (default: QUEUES)
#   IMAGE     raw file to export (driver=file,aio=io_uring; cache.direct=on if DIRECT=1);
#             default: a 1 GiB null-co node (read-zeroes=on). Write jobs write to IMAGE!
#   SPINDLE   daemon binary (default .build/release/spindle)
#   QEMU_ACCEL, QEMU_BIN: as for qemu-configs/attach-guest.sh
#   GUEST_ARTIFACTS  directory with vmlinuz and initramfs.cpio.gz (default Tests/guest/artifacts,
#             built by Tests/guest/build-guest.sh; its initramfs carries fio)
#   TIMEOUT   seconds to wait for the guest to power off (default: 120 + 60 per job)
#   LOG       where to keep the serial log (default: a temporary file, printed on failure)
# The guest is driven like the guest tests (Tests/guest/guestlib.py): the script goes in
# through `-fw_cfg name=opt/spindle/script,file=...`, the guest's /init runs it and
# prints GUEST-DONE rc=N on the serial console before powering off.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
. "$repo/bench/lib.sh"
RUNTIME=${RUNTIME:-5}
QUEUES=${QUEUES:-1}
SMP=${SMP:-$QUEUES}
SPINDLE=${SPINDLE:-$repo/.build/release/spindle}
ARTIFACTS=${GUEST_ARTIFACTS:-$repo/Tests/guest/artifacts}
if [ -z "${JOBS:-}" ]; then
    JOBS=$(cd "$here" && ls *.fio | sed 's/\.fio$//' | tr '\n' ' ')
fi
njobs=$(echo $JOBS | wc -w)
TIMEOUT=${TIMEOUT:-$((120 + 60 * njobs))}

for f in "$ARTIFACTS/vmlinuz" "$ARTIFACTS/initramfs.cpio.gz"; do
    [ -e "$f" ] || { echo "run-in-guest: $f missing; run Tests/guest/build-guest.sh" >&2; exit 2; }
done
[ -x "$SPINDLE" ] || { echo "run-in-guest: $SPINDLE missing; swift build -c release --product spindle" >&2; exit 2; }
if [ "${QEMU_ACCEL:-tcg}" = tcg ]; then
    echo "run-in-guest: QEMU_ACCEL=tcg: the guest CPU is emulated; these figures only show that the jobs run." >&2
fi

bench_workdir work run-in-guest
qemu_pid=
# The guest goes first, then (bench_cleanup) the daemon it is attached to.
bench_at_exit '[ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null || true'
serial=${LOG:-$work/serial.log}

# Daemon.
sock=$work/vu.sock
if [ -n "${IMAGE:-}" ]; then
    node="driver=file,node-name=n0,filename=$IMAGE,aio=io_uring"
    [ "${DIRECT:-0}" = 1 ] && node="$node,cache.direct=on"
else
    node="driver=null-co,node-name=n0,size=1073741824,read-zeroes=on"
fi
spindle_cmd=("$SPINDLE" --blockdev "$node"
             --export "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=$sock,writable=on,num-queues=$QUEUES")
echo "+ ${spindle_cmd[*]}" >&2
bench_start_backend "$work/spindle.log" "${spindle_cmd[@]}"
bench_wait_socket "$sock" "$backend_pid" "$work/spindle.log" 10

# Guest script: the job files travel inside it (one fw_cfg entry), fio runs each in turn.
script=$work/guest-script.sh
{
    echo 'DEV=/dev/vda'
    echo '[ -b $DEV ] || { echo "GUEST-ERROR no $DEV"; exit 1; }'
    echo "NUMJOBS=$QUEUES RUNTIME=$RUNTIME"
    # size per job: the whole disk split between the jobs (sequential jobs start at
    # offset_increment=SIZE apart), in whole MiB.
    echo 'SIZE=$(( $(cat /sys/block/vda/size) / 2048 / NUMJOBS ))M'
    echo 'export DEV NUMJOBS RUNTIME SIZE'
    echo 'echo "GUEST-INFO disk $(cat /sys/block/vda/size) sectors, $(ls /sys/block/vda/mq | wc -l) hw queues, $(nproc) cpus, jobs $NUMJOBS x $SIZE"'
    echo 'rc=0'
    for job in $JOBS; do
        [ -f "$here/$job.fio" ] || { echo "run-in-guest: no job file $here/$job.fio" >&2; exit 2; }
        echo "cat > /tmp/$job.fio <<'FIO_JOB_EOF'"
        cat "$here/$job.fio"
        echo "FIO_JOB_EOF"
        echo "echo GUEST-FIO-BEGIN $job"
        echo "fio /tmp/$job.fio || { echo GUEST-ERROR fio $job rc=\$?; rc=1; }"
        echo "echo GUEST-FIO-END $job"
    done
    echo 'exit $rc'
} >"$script"

qemu_args=("$repo/qemu-configs/attach-guest.sh" "$sock"
           -smp "$SMP"
           -kernel "$ARTIFACTS/vmlinuz" -initrd "$ARTIFACTS/initramfs.cpio.gz"
           -append "console=ttyS0 panic=-1 loglevel=4"
           -fw_cfg "name=opt/spindle/script,file=$script")
echo "+ VU_NUM_QUEUES=$QUEUES QEMU_ACCEL=${QEMU_ACCEL:-tcg} ${qemu_args[*]}" >&2
VU_NUM_QUEUES=$QUEUES "${qemu_args[@]}" </dev/null >"$serial" 2>&1 &
qemu_pid=$!
start=$SECONDS
while kill -0 "$qemu_pid" 2>/dev/null; do
    if grep -q "GUEST-DONE" "$serial" 2>/dev/null; then sleep 2; break; fi
    if [ $((SECONDS - start)) -ge "$TIMEOUT" ]; then echo "run-in-guest: guest did not finish in ${TIMEOUT}s" >&2; break; fi
    sleep 1
done
kill "$qemu_pid" 2>/dev/null || true; wait "$qemu_pid" 2>/dev/null || true; qemu_pid=

# Summary: per job, fio's IOPS/BW line, completion latency line, and run status line.
tr -d '\r' <"$serial" | awk '
    /^GUEST-FIO-BEGIN/ { job = $2; print "== " job; next }
    /^GUEST-FIO-END/   { job = ""; next }
    /^GUEST-(INFO|ERROR|DONE)/ { print; next }
    job != "" && (/^ +(read|write): IOPS=/ || /^ +(clat|lat) \((u|n|m)sec\): min=/ || /^ +(READ|WRITE): bw=/ || /error|Error/) { print }
'
rc=$(tr -d '\r' <"$serial" | sed -n 's/^GUEST-DONE rc=\([0-9]*\).*/\1/p' | tail -1)
echo "guest run: $((SECONDS - start)) s, accel ${QEMU_ACCEL:-tcg}, GUEST-DONE rc=${rc:-none}" >&2
if [ "${rc:-1}" != 0 ]; then
    echo "run-in-guest: guest script failed; last serial lines:" >&2
    tail -40 "$serial" >&2
    exit 1
fi

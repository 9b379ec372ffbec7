"""Part 12 with a real guest: a 2-vCPU guest on an rbd-backed export with two queues on two
IOThreads (queue 0 on io0, queue 1 on io1), on the session's throwaway Ceph cluster
(conftest.py's `ceph`; markers `slow` and `rbd`). Two boots:

- Data and resize (one boot): fio randwrite with crc32c verify at 4 KiB and at 64 KiB on both
  queues; a pattern the guest wrote with dd is read by QEMU's own rbd driver (qemu-io, Debian's
  qemu-block-extra) while Spindle serves the image, and a pattern qemu-io wrote (the node made
  inactive meanwhile, which releases the exclusive lock, and active again) is read by the
  guest; discard and write-zeroes read back zeroes in the guest and through qemu-io. Then,
  while fio verify runs, `rbd resize` from outside and `block_resize` over Spindle's QMP each
  grow the image: the guest sees the new size (how long it took is printed, not asserted)
  and fio verify passes.
- Faults (one boot): Spindle SIGKILLed twice under fio verify load (QD 16 on each of two
  queues) and started again with the same command line on the same socket: QEMU reconnects
  (chardev reconnect=1), the inflight region's requests are resubmitted, and they wait until
  the dead process's exclusive lock frees (~30 s, its watch timeout); fio finishes with zero
  errors and verify passes. The gaps are printed.

The test talks to the guest over a second serial port (rbdguest.ControlLine): while Spindle
holds the image's lock nothing else may write it, so part 7's mailbox block cannot be used."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

import guestlib
from guestlib import Backend, kill_process
from interactive import GuestSession, ok, spindle_qmp
from rbdguest import (CONTROL_SH, SECTOR, ControlLine, MiB, image_size, log_text, make_image, needs_qemu_rbd,
                      qemu_io, rbd, spindle_args, wait_log)

SPINDLE = os.environ.get("SPINDLE_BIN", "")
pytestmark = [pytest.mark.slow, pytest.mark.rbd,
              pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle"),
              pytest.mark.skipif(os.cpu_count() < 2, reason="needs two CPUs")]

IMAGE_SIZE = 128 * MiB
RBD_RESIZED = 192 * MiB      # by `rbd resize` from outside
QMP_RESIZED = 256 * MiB      # by block_resize over Spindle's QMP
# Guest-visible offsets (MiB) of the data checks; fio uses 0-64 MiB.
GUEST_PATTERN_MIB, QEMU_PATTERN_MIB, DISCARD_MIB, ZEROES_MIB = 80, 84, 88, 92
KILLS = 2
TOOK = "took the rbd image's exclusive lock"
WAITING = "holds its exclusive lock"
# Long enough for a restarted daemon's wait for the dead one's lock (~30 s) on a loaded machine.
RESTART_TIMEOUT = 240


@pytest.fixture
def image(ceph, request):
    yield from make_image(ceph, "g-" + request.node.name.removeprefix("test_guest_")[:40], IMAGE_SIZE)


# fio on both queues: one job per vCPU, each vCPU's requests on its own hardware queue.
FIO_MQ = ("--numjobs=2 --cpus_allowed=0-1 --cpus_allowed_policy=split --ioengine=libaio --direct=1 "
          "--verify=crc32c --do_verify=1 --group_reporting")

DATA_SCRIPT = CONTROL_SH + f"""
MiB=1048576
step booted
wait_for_disk 120 || exit 1
check two-hw-queues test "$(ls /sys/block/$DISK/mq | wc -l)" -eq 2
run_fio verify-4k --rw=randwrite --bs=4k --size=16M --offset_increment=16M --iodepth=16 {FIO_MQ}
run_fio verify-64k --rw=randwrite --bs=64k --offset=32M --size=16M --offset_increment=16M --iodepth=16 {FIO_MQ}

# 1 MiB of 'Z' (0x5a) for qemu-io to read; then qemu-io's 1 MiB of '3' (0x33) read here.
head -c $MiB /dev/zero | tr '\\0' Z > /tmp/pZ
head -c $MiB /dev/zero | tr '\\0' 3 > /tmp/p3
check guest-pattern-written dd if=/tmp/pZ of=$DEV bs=1M seek={GUEST_PATTERN_MIB} count=1 oflag=direct conv=fsync
step pattern-written
wait_host qemu-io-wrote || exit 1
check qemu-io-pattern-read sh -c "dd if=$DEV bs=1M skip={QEMU_PATTERN_MIB} count=1 iflag=direct 2>/dev/null | cmp - /tmp/p3"

# Discard and write-zeroes over 4 MiB (one RBD object each) of data.
cat /tmp/pZ /tmp/pZ /tmp/pZ /tmp/pZ /tmp/pZ /tmp/pZ /tmp/pZ /tmp/pZ > /tmp/pZ8
check zero-regions-filled dd if=/tmp/pZ8 of=$DEV bs=1M seek={DISCARD_MIB} oflag=direct conv=fsync
if region_is_zero $(({DISCARD_MIB} * MiB)) $((8 * MiB)); then result data-before-zeroing FAIL; else result data-before-zeroing PASS; fi
check discard blkdiscard -o $(({DISCARD_MIB} * MiB)) -l $((4 * MiB)) $DEV
check write-zeroes blkdiscard -z -o $(({ZEROES_MIB} * MiB)) -l $((4 * MiB)) $DEV
check_zero discard-reads-zeroes $(({DISCARD_MIB} * MiB)) $((4 * MiB))
check_zero write-zeroes-reads-zeroes $(({ZEROES_MIB} * MiB)) $((4 * MiB))
step data-done

# size_load NAME SECTORS (guest-lib's helpers use $n, hence $phase): fio verify jobs back to back on both queues (each with its own
# seed) until one that started after the disk reached SECTORS has finished; a watcher prints
# the moment the new size shows (the test times it against the resize on its own clock).
size_load() {{
    phase=$1; want=$2; runs=0; failed=0; during=0
    ( while [ "$(cat /sys/block/$DISK/size)" != "$want" ]; do sleep 0.05; done
      echo "GUEST-INFO $phase-size-seen $want" ) &
    watcher=$!
    step "$phase-load"
    while [ $runs -lt 30 ]; do
        before=$(cat /sys/block/$DISK/size)
        runs=$((runs + 1))
        echo "GUEST-INFO $phase-fio-start $runs"
        fio --filename=$DEV --name=$phase --rw=randwrite --bs=4k --size=16M --offset_increment=16M --iodepth=16 \\
            --randseed=$runs {FIO_MQ} > /tmp/fio.log 2>&1
        rc=$?
        if [ $rc -ne 0 ] || grep -q 'err= *[1-9]' /tmp/fio.log; then
            failed=$((failed + 1)); sed "s/^/$phase fio run $runs: /" /tmp/fio.log
        fi
        after=$(cat /sys/block/$DISK/size)
        [ "$before" != "$after" ] && during=$((during + 1))
        [ "$before" = "$want" ] && break
    done
    kill $watcher 2>/dev/null
    info $phase-fio-runs "$runs"
    check_eq $phase-resized-during-fio "$during" 1
    check_eq $phase-fio-verify "$failed" 0
    check_size $phase-size "$want"
}}
size_load rbd-resize {RBD_RESIZED // SECTOR}
size_load block-resize {QMP_RESIZED // SECTOR}
check no-io-errors sh -c '! dmesg | grep -qiE "I/O error|blk_update_request|is not a head"'
step done
"""


def resize_under_load(guest: GuestSession, name: str, resize) -> float:
    """Waits until the guest's fio runs in `name`'s phase, calls `resize()`, and returns how
    long after it returned the guest saw the new size."""
    guest.wait_step(f"{name}-load", 300)
    guest.wait_for(rf"GUEST-INFO {name}-fio-start 1\b", 120)
    time.sleep(1)   # fio's requests in flight on both queues
    start = time.monotonic()
    resize()
    returned = time.monotonic()
    guest.wait_for(rf"GUEST-INFO {name}-size-seen \d+", 120)
    seen = time.monotonic()
    print(f"{name}: the guest saw the new size {seen - returned:.2f} s after the resize returned "
          f"({seen - start:.2f} s after it was started)")
    return seen - returned


def test_guest_data_discard_and_resize_under_load_on_rbd(tmp_path, monkeypatch, ceph, image):
    needs_qemu_rbd()
    monkeypatch.setenv("SPINDLE_LOG_LEVEL", "debug")
    monkeypatch.setenv("VU_NUM_QUEUES", "2")
    sock, qmp_path = tmp_path / "rbd.sock", tmp_path / "spindle-qmp.sock"
    backend = Backend(SPINDLE, tmp_path, "spindle")
    backend.start(spindle_args(ceph, image, sock, qmp_path, allow_inactive=True), sock, timeout=60)
    control = ControlLine(tmp_path)
    guest = qmp = None
    try:
        qmp = spindle_qmp(qmp_path)
        guest = GuestSession(tmp_path, DATA_SCRIPT, sock=sock, extra_qemu=["-smp", "2", *control.qemu_args()])
        guest.wait_step("pattern-written", 600)
        # QEMU's rbd driver reads what the guest wrote while Spindle serves (and locks) the image.
        qemu_io(ceph, image, f"read -P 0x5a {GUEST_PATTERN_MIB * MiB} {MiB}", read_only=True)
        # Writing needs the exclusive lock: the node gives it up while inactive.
        ok(qmp, "blockdev-set-active", **{"node-name": "disk0", "active": False})
        qemu_io(ceph, image, f"write -P 0x33 {QEMU_PATTERN_MIB * MiB} {MiB}", read_only=False)
        ok(qmp, "blockdev-set-active", **{"node-name": "disk0", "active": True})
        control.send("qemu-io-wrote")
        guest.wait_step("data-done", 300)
        qemu_io(ceph, image, f"read -P 0 {DISCARD_MIB * MiB} {8 * MiB}", read_only=True)

        resize_under_load(guest, "rbd-resize", lambda: rbd(ceph, "resize", "--size", f"{RBD_RESIZED // MiB}M",
                                                           f"rbd/{image}"))
        resize_under_load(guest, "block-resize",
                          lambda: ok(qmp, "block_resize", **{"node-name": "disk0", "size": QMP_RESIZED}))
        run = guest.finish(timeout=900)
        run.assert_passed("disk-present", "two-hw-queues", "verify-4k", "verify-64k", "guest-pattern-written",
                          "qemu-io-pattern-read", "data-before-zeroing", "discard", "write-zeroes",
                          "discard-reads-zeroes", "write-zeroes-reads-zeroes",
                          "rbd-resize-resized-during-fio", "rbd-resize-fio-verify", "rbd-resize-size",
                          "block-resize-resized-during-fio", "block-resize-fio-verify", "block-resize-size",
                          "no-io-errors")
        assert image_size(ceph, image) == QMP_RESIZED
        print(f"fio runs under resize: {run.infos.get('rbd-resize-fio-runs')} + {run.infos.get('block-resize-fio-runs')}")
    finally:
        control.close()
        if qmp is not None:
            qmp.close()
        if guest:
            guest.close()
        backend.stop()
    log = log_text(backend.log_path)
    assert "image resized elsewhere: node takes the new size" in log
    placements = {}
    for line in log.splitlines():
        if "queue placement" in line and "export=exp0" in line:
            fields = dict(re.findall(r"(\w+)=(\S+)", line))
            placements[fields["queue"]] = fields["iothread"]
    assert placements == {"0": "io0", "1": "io1"}, placements
    assert backend.exit_code == 0, guestlib.tail(backend.log_path)


FAULT_SCRIPT = CONTROL_SH + f"""
echo 5 > /proc/sys/kernel/printk
step booted
wait_for_disk 120 || exit 1
check two-hw-queues test "$(ls /sys/block/$DISK/mq | wc -l)" -eq 2
( read -r word <&3; touch /tmp/stop ) &
runs=0; failed=0
step fio-started
# fio jobs back to back (each with its own seed, so a lost write cannot hide behind the same
# data from an earlier job) until the test says stop.
while [ ! -e /tmp/stop ]; do
    runs=$((runs + 1))
    echo "GUEST-INFO fio-start $runs"
    fio --filename=$DEV --name=kill-verify --rw=randwrite --bs=4k --size=16M --offset_increment=16M \\
        --iodepth=16 --randseed=$runs {FIO_MQ} > /tmp/fio.log 2>&1
    rc=$?
    if [ $rc -ne 0 ] || grep -q 'err= *[1-9]' /tmp/fio.log; then
        failed=$((failed + 1)); sed "s/^/fio run $runs: /" /tmp/fio.log
    fi
    echo "GUEST-INFO fio-run $runs"
done
info fio-runs "$runs"
check_eq fio-verify "$failed" 0
check no-io-errors sh -c '! dmesg | grep -qiE "I/O error|blk_update_request|is not a head"'
step done
"""


def fio_runs(guest: GuestSession) -> int:
    runs = re.findall(r"GUEST-INFO fio-run (\d+)", guest.text())
    return int(runs[-1]) if runs else 0


def wait_fio_run(guest: GuestSession, what: str, timeout: float = 300) -> None:
    """Another fio job finishes in the guest (its disk works again)."""
    start = fio_runs(guest)
    deadline = time.monotonic() + timeout
    while fio_runs(guest) <= start:
        assert guest.proc.poll() is None, f"the guest exited {what}\n{guest.describe()}"
        assert time.monotonic() < deadline, f"no fio job finished within {timeout}s {what}\n{guest.describe()}"
        time.sleep(0.2)


def wait_writes(qmp_path: Path, count: int, timeout: float = 120) -> None:
    """Waits until the daemon has served `count` more writes (query-blockstats)."""
    client = spindle_qmp(qmp_path)
    try:
        def writes() -> int:
            return sum(entry["stats"]["wr_operations"] for entry in ok(client, "query-blockstats"))
        first, deadline = writes(), time.monotonic() + timeout
        while writes() < first + count:
            assert time.monotonic() < deadline, f"fewer than {count} writes served within {timeout}s"
            time.sleep(0.2)
    finally:
        client.close()


def test_guest_fio_verify_survives_sigkills_of_an_rbd_daemon(tmp_path, monkeypatch, ceph, image):
    monkeypatch.setenv("SPINDLE_LOG_LEVEL", "debug")
    sock, qmp_path = tmp_path / "rbd.sock", tmp_path / "spindle-qmp.sock"
    args = spindle_args(ceph, image, sock, qmp_path, allow_inactive=False)
    backends: list[Backend] = []

    def start_daemon() -> Backend:
        for stale in (sock, qmp_path):   # what a killed daemon left behind
            stale.unlink(missing_ok=True)
        backend = Backend(SPINDLE, tmp_path, f"spindle{len(backends)}")
        backends.append(backend)
        backend.start(args, sock, timeout=60)
        return backend

    control = ControlLine(tmp_path)
    guest = None
    try:
        daemon = start_daemon()
        guest = GuestSession(tmp_path, FAULT_SCRIPT, sock=None, extra_qemu=[
            "-smp", "2", "-chardev", f"socket,id=vr0,path={sock},reconnect=1",
            "-device", "vhost-user-blk-pci,id=vublk0,chardev=vr0,num-queues=2", *control.qemu_args()])
        guest.wait_step("fio-started", 600)
        wait_fio_run(guest, "before the first kill", 600)
        gaps = []
        for kill in range(KILLS):
            guest.wait_for(rf"GUEST-INFO fio-start {fio_runs(guest) + 1}\b", 120)
            wait_writes(qmp_path, 256)   # a fio job in full flight: 32 requests on two queues
            kill_process(daemon.proc, grace=0, sig=signal.SIGKILL)
            assert daemon.proc.returncode == -signal.SIGKILL
            killed = time.monotonic()
            daemon = start_daemon()
            listening = time.monotonic() - killed
            # The dead client's lock frees when Ceph expires its watch; the daemon logs taking it.
            # (Should a daemon take it at once, it has no wait to log.)
            if WAITING in log_text(daemon.log_path):
                took = wait_log(daemon.log_path, TOOK, RESTART_TIMEOUT)
            else:
                took = time.monotonic()
            wait_fio_run(guest, f"after kill {kill + 1}", RESTART_TIMEOUT)
            resumed = time.monotonic()
            gaps.append((listening, took - killed, resumed - killed))
        control.send("stop")
        run = guest.finish(timeout=600)
        run.assert_passed("disk-present", "two-hw-queues", "fio-verify", "no-io-errors")
    finally:
        control.close()
        if guest:
            guest.close()
        for backend in backends:
            backend.stop()
    assert len(backends) == KILLS + 1
    assert backends[-1].exit_code == 0, guestlib.tail(backends[-1].log_path)
    # Requests the killed daemon had taken come back from the inflight region; ones the guest
    # had made available but the daemon not yet taken are simply taken from the ring again.
    resubmitted = [sum(int(m) for m in re.findall(r"resubmitting (\d+) requests left in flight", log_text(b.log_path)))
                   for b in backends[1:]]
    assert sum(resubmitted) > 0, "no request was in flight at any kill"
    for i, ((listening, took, resumed), again) in enumerate(zip(gaps, resubmitted), 1):
        print(f"kill {i}: {again} requests resubmitted; listening {listening:.1f} s, lock taken {took:.1f} s, "
              f"a guest fio job finished {resumed:.1f} s after the SIGKILL")
    print(f"fio jobs: {run.infos.get('fio-runs')}")

"""Part 9 with a real guest: QEMU's `vhost-user-blk-pci,...,packed=on` against an export with
`packed-ring=on`. The guest's virtio driver must report the packed ring in use (bit 34 of its
sysfs features), pass fio randwrite with crc32c verify at 4 KiB and 64 KiB on two queues,
discard and write-zeroes, and survive five SIGKILLs of the daemon under fio verify at QD32
with completions reordered (the x-delay test filter), through the packed inflight region.

Two guest boots in all; every QEMU and daemon is killed on failure (GuestSession.close,
Backend.stop in finally)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import guestlib
from guestlib import Backend, kill_process
from interactive import GuestSession, ok
from test_guest_restart import GUEST_SCRIPT as RESTART_SCRIPT, KILLS, assert_survived, resubmitted, wait_for_log

MiB = 1024 * 1024
SPINDLE = os.environ.get("SPINDLE_BIN", "")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle")]

# Bit 34 (VIRTIO_F_RING_PACKED) of the features the guest driver accepted: sysfs prints bit
# 0 first, so it is the 35th character.
PACKED_CHECK = """
info features "$(cat /sys/block/vda/device/features)"
check_eq packed-ring "$(cut -c35 /sys/block/vda/device/features)" 1
"""

FIO_VERIFY = ("--ioengine=libaio --direct=1 --iodepth=16 --rw=randwrite --numjobs=2 --cpus_allowed=0-1 "
              "--cpus_allowed_policy=split --verify=crc32c --do_verify=1 --verify_fatal=1 --group_reporting")

DISCARD_OFF = 100 * MiB
WZ_OFF = 102 * MiB
RANGE_LEN = MiB


def packed_device(sock: Path, queues: int, reconnect: bool = False) -> list[str]:
    return ["-chardev", f"socket,id=vp0,path={sock}{',reconnect=1' if reconnect else ''}",
            "-device", f"vhost-user-blk-pci,id=vublk0,chardev=vp0,num-queues={queues},packed=on"]


@pytest.mark.skipif(os.cpu_count() < 2, reason="needs two CPUs")
def test_packed_ring_fio_verify_two_queues_discard_write_zeroes(tmp_path, monkeypatch):
    monkeypatch.setenv("SPINDLE_LOG_LEVEL", "debug")
    image = tmp_path / "packed.img"
    with open(image, "wb") as f:
        f.truncate(128 * MiB)
        # Non-zero data where discard and write-zeroes will go.
        f.seek(DISCARD_OFF)
        f.write(b"\xa5" * (WZ_OFF + RANGE_LEN - DISCARD_OFF))
    sock = tmp_path / "packed.sock"
    backend = Backend(SPINDLE, tmp_path, "spindle")
    guest = None
    try:
        backend.start(["--blockdev", f"driver=file,node-name=n0,filename={image},discard=unmap",
                       "--export", f"type=vhost-user-blk,id=pk,node-name=n0,addr.type=unix,addr.path={sock},"
                                   "writable=on,num-queues=2,packed-ring=on"], sock)
        script = "wait_for_disk 120 || exit 1\n" + PACKED_CHECK + f"""
check two-hw-queues test "$(ls /sys/block/vda/mq | wc -l)" -eq 2
run_fio fio-4k  {FIO_VERIFY} --bs=4k  --size=16M --offset_increment=16M
run_fio fio-64k {FIO_VERIFY} --bs=64k --offset=32M --size=32M --offset_increment=32M
check discard blkdiscard -v -o {DISCARD_OFF} -l {RANGE_LEN} $DEV
check_zero discard-reads-zero {DISCARD_OFF} {RANGE_LEN}
check write-zeroes blkdiscard -v -z -o {WZ_OFF} -l {RANGE_LEN} $DEV
check_zero write-zeroes-reads-zero {WZ_OFF} {RANGE_LEN}
"""
        guest = GuestSession(tmp_path, script, sock=None, extra_qemu=["-smp", "2", *packed_device(sock, 2)])
        run = guest.finish()
        run.assert_passed("disk-present", "packed-ring", "two-hw-queues", "fio-4k", "fio-64k", "discard",
                          "discard-reads-zero", "write-zeroes", "write-zeroes-reads-zero")
        print(run.describe())
        log = backend.log_path.read_text(errors="replace")
        for q in (0, 1):
            assert f"queue={q}" in log or f"queue {q}" in log, guestlib.tail(backend.log_path, 60)
        with open(image, "rb") as f:
            assert f.read(MiB) != bytes(MiB), "fio's data did not reach the image"
            f.seek(DISCARD_OFF)
            assert f.read(RANGE_LEN) == bytes(RANGE_LEN)
            f.seek(WZ_OFF)
            assert f.read(RANGE_LEN) == bytes(RANGE_LEN)
        assert backend.alive()
    finally:
        if guest:
            guest.close()
        backend.stop()


def test_packed_ring_survives_five_kills_with_reordered_completions(tmp_path, monkeypatch):
    """As test_guest_restart's reordered run, on a packed ring: every 7th completion held
    100 ms, the daemon SIGKILLed five times under fio verify at QD32; then the VM stopped and
    continued (GET_VRING_BASE answers the packed base, the ring restarts on the same
    connection from it and the region)."""
    monkeypatch.setenv("SPINDLE_LOG_LEVEL", "debug")
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(64 * MiB)
    sock = tmp_path / "vu.sock"
    args = ["--blockdev", f"driver=file,node-name=disk0,filename={image}",
            "--blockdev", "driver=x-delay,node-name=held0,file=disk0,hold-every=7,hold-ms=100",
            "--export", f"type=vhost-user-blk,id=exp0,node-name=held0,addr.type=unix,addr.path={sock},"
                        "writable=on,num-queues=1,packed-ring=on"]
    script = RESTART_SCRIPT.replace("wait_for_disk 120 || exit 1\n", "wait_for_disk 120 || exit 1\n" + PACKED_CHECK, 1)
    backends: list[Backend] = []

    def start_daemon() -> Backend:
        backend = Backend(SPINDLE, tmp_path, f"packed-spindle{len(backends)}")
        backends.append(backend)
        backend.start(args, sock)
        wait_for_log(backend.log_path, "export ready", timeout=30)
        return backend

    guest = None
    try:
        daemon = start_daemon()
        guest = GuestSession(tmp_path, script, sock=None, name="packed-restart",
                             extra_qemu=packed_device(sock, 1, reconnect=True))
        guest.wait_step("fio-started")
        for _ in range(KILLS):
            wait_for_log(daemon.log_path, "queue started", timeout=120)
            time.sleep(3)
            assert "GUEST-INFO step fio-done" not in guest.text(), f"fio finished before all {KILLS} kills"
            kill_process(daemon.proc, grace=0, sig=signal.SIGKILL)
            assert daemon.proc.returncode == -signal.SIGKILL
            daemon = start_daemon()
        wait_for_log(daemon.log_path, "queue started", timeout=120)
        time.sleep(2)
        qemu = guest.qemu()
        before = len(daemon.log_path.read_text(errors="replace"))
        ok(qemu, "stop")
        time.sleep(1)
        ok(qemu, "cont")
        wait_for_log(daemon.log_path, "queue started", timeout=60, start=before)
        assert "GET_VRING_BASE answered" in daemon.log_path.read_text(errors="replace")[before:]
        assert daemon.alive()
        run = guest.finish()
    finally:
        if guest:
            guest.close()
        for backend in backends:
            backend.stop()
    assert_survived(run, backends)
    run.assert_passed("packed-ring")
    # Held completions were in flight at the kills: the packed region brought them back.
    assert resubmitted(backends) > 0, "no request was in flight at any kill"
    print(f"requests resubmitted after kills: {resubmitted(backends)}")

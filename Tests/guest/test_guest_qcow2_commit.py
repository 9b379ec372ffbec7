"""Part 8 with a real guest: its disk is a qcow2 overlay over a qcow2 base, served by two
queues on two IOThreads; fio randwrite with crc32c verify runs while block-commit of the
active layer copies the overlay into the base, reaches READY and job-complete pivots the
export onto the base. Then one more verify pass on the base alone, and qemu-img check."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from guestlib import Backend
from interactive import GuestSession, ok, spindle_qmp, wait_event

MiB = 1024 * 1024
SPINDLE = os.environ.get("SPINDLE_BIN", "")


def _has_commit() -> bool:
    if "spindle" not in Path(SPINDLE).name:
        return False
    return "block-commit" in subprocess.run([SPINDLE, "--help"], capture_output=True, text=True).stdout


pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not _has_commit(), reason="needs SPINDLE_BIN pointing at a spindle with block-commit"),
              pytest.mark.skipif(os.cpu_count() < 2, reason="needs two CPUs")]

FIO = ("fio --filename=/dev/vda --name=commit-verify --rw=randwrite --bs=4k --size=8M --offset_increment=8M "
       "--numjobs=2 --iodepth=8 --ioengine=libaio --direct=1 --verify=crc32c --do_verify=1 --group_reporting")

SIGNAL_OFFSET = 63 * MiB

# Verify passes run back to back from before the commit starts until the guest sees the
# host's signal (a marker the host writes at 63 MiB through a second export once the pivot
# is done; qcow2 cannot be resized yet), so writes overlap the copy, READY and the pivot
# whatever the speed of the machine; one more pass runs on the base alone.
GUEST_SCRIPT = f"""
wait_for_disk 120 || exit 1
check two-hw-queues test "$(ls /sys/block/vda/mq | wc -l)" -eq 2
signalled() {{
    blockdev --flushbufs /dev/vda
    dd if=/dev/vda bs=4096 skip={SIGNAL_OFFSET // 4096} count=1 2>/dev/null | od -An -tx1 | head -1 | grep -q '5e 5e 5e'
}}
passes=0; failed=0
step fio-started
while ! signalled && [ $passes -lt 200 ]; do
    if ! {FIO} > /tmp/fio.log 2>&1 || grep -q 'err= *[1-9]' /tmp/fio.log; then
        sed 's/^/fio: /' /tmp/fio.log; failed=1; break
    fi
    passes=$((passes + 1))
done
info fio-passes-during-commit $passes
check_eq fio-during-commit "$failed" 0
if {FIO} --offset=24M > /tmp/fio2.log 2>&1 && ! grep -q 'err= *[1-9]' /tmp/fio2.log; then result fio-after-pivot PASS
else sed 's/^/fio: /' /tmp/fio2.log; result fio-after-pivot FAIL; fi
"""


def test_active_commit_and_pivot_under_fio_verify(tmp_path, monkeypatch):
    base, top = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), str(64 * MiB)], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 40M", str(base)], check=True, capture_output=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(top)], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0xa5 8M 16M", str(top)], check=True, capture_output=True)
    sock = tmp_path / "vhost.sock"
    qmp = tmp_path / "spindle-qmp.sock"
    backend = Backend(SPINDLE, tmp_path, "spindle")
    backend.start(["--qmp", str(qmp)], qmp)
    monkeypatch.setenv("VU_NUM_QUEUES", "2")
    guest = None
    spindle = None
    try:
        spindle = spindle_qmp(qmp)
        for iot in ("iot0", "iot1"):
            ok(spindle, "object-add", **{"qom-type": "iothread", "id": iot})
        ok(spindle, "blockdev-add", driver="qcow2", **{"node-name": "base"},
           file={"driver": "file", "filename": str(base)}, backing=None)
        ok(spindle, "blockdev-add", driver="qcow2", **{"node-name": "top"},
           file={"driver": "file", "filename": str(top)}, backing="base")
        ok(spindle, "block-export-add", type="vhost-user-blk", id="exp0", **{"node-name": "top", "num-queues": 2},
           **{"iothread-vq-mapping": [{"iothread": "iot0", "vqs": [0]}, {"iothread": "iot1", "vqs": [1]}]},
           addr={"type": "unix", "path": str(sock)}, writable=True)
        # The host's way to signal the guest: a second export of the same node (it moves
        # with the guest's at the pivot).
        signal_sock = tmp_path / "signal.sock"
        ok(spindle, "block-export-add", type="vhost-user-blk", id="signal", **{"node-name": "top"},
           addr={"type": "unix", "path": str(signal_sock)}, writable=True)
        guest = GuestSession(tmp_path, GUEST_SCRIPT, sock=sock, extra_qemu=["-smp", "2"])
        guest.wait_step("fio-started", timeout=300)
        # A speed limit stretches the first pass over seconds of guest writes.
        ok(spindle, "block-commit", **{"job-id": "c0"}, device="exp0", **{"base-node": "base"}, speed=4 * MiB)
        ready = wait_event(spindle, "BLOCK_JOB_READY", timeout=600)
        assert ready["data"]["type"] == "commit", ready
        ok(spindle, "job-complete", id="c0")
        completed = wait_event(spindle, "BLOCK_JOB_COMPLETED", timeout=300)
        assert "error" not in completed["data"], completed
        assert {e["node-name"] for e in ok(spindle, "query-block-exports")} == {"base"}
        assert [n["node-name"] for n in ok(spindle, "query-named-block-nodes")] == ["base"]
        script = tmp_path / "signal.script"
        script.write_text(f"write {SIGNAL_OFFSET} 4096 0x5e\nflush\n")
        bench = Path(SPINDLE).with_name("spindle-bench")
        signal = subprocess.run([str(bench), "--socket", str(signal_sock), "--script", str(script)],
                                capture_output=True, text=True, timeout=120)
        assert signal.returncode == 0, signal.stderr
        run = guest.finish()
        run.assert_passed("disk-present", "two-hw-queues", "fio-during-commit", "fio-after-pivot")
        assert int(run.infos["fio-passes-during-commit"]) >= 1, run.describe()
        assert backend.alive()
    finally:
        if guest:
            guest.close()
        if spindle:
            spindle.close()
        backend.stop()
    result = subprocess.run(["qemu-img", "check", str(base)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    info = subprocess.run(["qemu-img", "info", str(base)], capture_output=True, text=True, check=True).stdout
    assert "backing file" not in info, info

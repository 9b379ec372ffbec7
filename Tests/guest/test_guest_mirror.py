"""Part 6 with a real guest: its disk is mirrored to a new image on another path and
pivoted while fio verifies it, then the old image is deleted and the guest keeps working."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from guestlib import Backend, file_sha256
from interactive import GuestSession, ok, spindle_qmp, wait_event

MiB = 1024 * 1024
SPINDLE = os.environ.get("SPINDLE_BIN", "")


def _has_mirror() -> bool:
    if "spindle" not in Path(SPINDLE).name:
        return False
    return "blockdev-mirror" in subprocess.run([SPINDLE, "--help"], capture_output=True, text=True).stdout


pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not _has_mirror(), reason="needs SPINDLE_BIN pointing at a spindle with blockdev-mirror")]

FIO = ("fio --filename=/dev/vda --name=mirror-verify --rw=randwrite --bs=4k --size=24M --iodepth=8 "
       "--ioengine=libaio --direct=1 --verify=crc32c --do_verify=1")

# fio verify passes run back to back from before the mirror starts until the guest sees the
# host's signal (a resize, done after the pivot), so writes and verifies overlap the copy,
# READY, the pivot and the source's deletion, whatever the speed of the machine; one more
# pass runs on the target alone. Then the guest reports the checksum of what it sees.
GUEST_SCRIPT = f"""
wait_for_disk 60 || exit 1
before=$(cat /sys/block/vda/size)
passes=0; failed=0
step fio-started
while [ "$(cat /sys/block/vda/size)" = "$before" ] && [ $passes -lt 200 ]; do
    if ! {FIO} > /tmp/fio.log 2>&1 || grep -q 'err= *[1-9]' /tmp/fio.log; then
        sed 's/^/fio: /' /tmp/fio.log; failed=1; break
    fi
    passes=$((passes + 1))
done
info fio-passes-during-mirror $passes
check_eq fio-during-mirror "$failed" 0
if {FIO} --offset=32M > /tmp/fio2.log 2>&1 && ! grep -q 'err= *[1-9]' /tmp/fio2.log; then result fio-after-pivot PASS
else sed 's/^/fio: /' /tmp/fio2.log; result fio-after-pivot FAIL; fi
sync; blockdev --flushbufs /dev/vda
info disk-sha256 "$(dd if=/dev/vda bs=1M 2>/dev/null | sha256sum | cut -d' ' -f1)"
"""


def test_live_mirror_and_pivot_under_fio_verify(tmp_path):
    source = tmp_path / "source" / "disk.img"
    target = tmp_path / "elsewhere" / "disk-new.img"
    for image in (source, target):
        image.parent.mkdir()
        with open(image, "wb") as f:
            f.truncate(64 * MiB)
    sock = tmp_path / "vhost.sock"
    qmp = tmp_path / "spindle-qmp.sock"
    backend = Backend(SPINDLE, tmp_path, "spindle")
    backend.start(["--qmp", str(qmp), "--blockdev", f"driver=file,node-name=src,filename={source},cache.direct=on",
                   "--export", f"type=vhost-user-blk,id=exp0,node-name=src,addr.type=unix,addr.path={sock},writable=on"], qmp)
    guest = None
    try:
        spindle = spindle_qmp(qmp)
        guest = GuestSession(tmp_path, GUEST_SCRIPT, sock=sock)
        guest.wait_step("fio-started")
        ok(spindle, "blockdev-add", driver="file", **{"node-name": "tgt"}, filename=str(target),
           cache={"direct": True})
        # A speed limit stretches the bulk copy over seconds of guest writes, so regions are
        # dirtied behind the copy and copied again.
        ok(spindle, "blockdev-mirror", **{"job-id": "move"}, device="src", target="tgt", sync="full", speed=16 * MiB)
        ready = wait_event(spindle, "BLOCK_JOB_READY", timeout=300)
        assert ready["data"]["len"] == ready["data"]["offset"] >= 64 * MiB, ready
        ok(spindle, "job-complete", id="move")
        completed = wait_event(spindle, "BLOCK_JOB_COMPLETED", timeout=300)
        assert "error" not in completed["data"], completed
        assert ok(spindle, "query-block-exports")[0]["node-name"] == "tgt"
        # The old image is no longer needed: close its node (releasing its lock), delete it.
        ok(spindle, "blockdev-del", **{"node-name": "src"})
        source.unlink()
        # Tell the guest the pivot is done by growing its (new) disk.
        ok(spindle, "block_resize", **{"node-name": "tgt", "size": 80 * MiB})
        run = guest.finish()
        run.assert_passed("disk-present", "fio-during-mirror", "fio-after-pivot")
        assert int(run.infos["fio-passes-during-mirror"]) >= 1, run.describe()
        assert backend.alive()
        # What the guest sees is exactly what the new image holds.
        assert run.infos["disk-sha256"] == file_sha256(target), run.describe()
    finally:
        if guest:
            guest.close()
        backend.stop()

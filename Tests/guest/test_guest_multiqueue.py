"""Part 4 with a real guest: a 2-vCPU guest with QEMU's default queue count (one per vCPU) on
an export with Spindle's default queue count sees two hardware queues and
passes fio verify with two jobs, while spindle serves the queues from two IOThreads pinned
to different CPUs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from guestlib import Backend
from interactive import GuestSession

MiB = 1024 * 1024
SPINDLE = os.environ.get("SPINDLE_BIN", "")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle")]


def thread_cpus(pid: int) -> dict[str, str]:
    """Thread name -> Cpus_allowed_list, for every thread of pid."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            status = (task / "status").read_text()
        except FileNotFoundError:
            continue
        m = re.search(r"Cpus_allowed_list:\s*(\S+)", status)
        out[name] = m.group(1) if m else "?"
    return out


@pytest.mark.skipif(os.cpu_count() < 2, reason="needs two CPUs")
def test_two_queues_on_two_pinned_iothreads(tmp_path, monkeypatch):
    image = tmp_path / "mq.img"
    with open(image, "wb") as f:
        f.truncate(128 * MiB)
    sock = tmp_path / "mq.sock"
    backend = Backend(SPINDLE, tmp_path, "spindle")
    backend.start(["--blockdev", f"driver=file,node-name=n0,filename={image}",
                   "--export", f"type=vhost-user-blk,id=mq,node-name=n0,addr.type=unix,addr.path={sock},"
                               "writable=on"], sock)
    # Both sides at their defaults: QEMU asks for one queue per vCPU (2), Spindle offers 16.
    monkeypatch.setenv("VU_NUM_QUEUES", "default")
    guest = None
    try:
        guest = GuestSession(tmp_path, """
wait_for_disk 60 || exit 1
check two-hw-queues test "$(ls /sys/block/vda/mq | wc -l)" -eq 2
step queues-seen
run_fio mq-verify --rw=randwrite --bs=4k --size=16M --offset_increment=16M --numjobs=2 \
    --cpus_allowed=0-1 --cpus_allowed_policy=split --iodepth=8 --ioengine=libaio --direct=1 \
    --verify=crc32c --do_verify=1 --group_reporting
""", sock=sock, extra_qemu=["-smp", "2"])
        guest.wait_step("queues-seen")
        run = guest.finish()
        run.assert_passed("disk-present", "two-hw-queues", "mq-verify")
        log = backend.log_path.read_text()
        # The last placement of each queue (QEMU may start and stop the rings more than once).
        by_queue = {}
        for line in log.splitlines():
            if "queue placement" in line and "export=mq " in line:
                fields = dict(re.findall(r"(\w+)=(\S+)", line))
                by_queue[fields["queue"]] = (fields["cpu"], fields["iothread"])
        assert set(by_queue) == {"0", "1"}, log
        assert by_queue["0"][0] != by_queue["1"][0], f"both queues on one CPU: {by_queue}"
        threads = thread_cpus(backend.proc.pid)
        for cpu, thread in by_queue.values():
            assert threads.get(f"iot-{thread}"[:15]) == cpu, threads
        assert backend.alive()
    finally:
        if guest:
            guest.close()
        backend.stop()

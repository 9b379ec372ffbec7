"""An IOThread whose queue holds requests for an inactive node sleeps until the node is
activated (no guest): the requests wait in the ring (a migration destination, or a restarted
Spindle waiting for its rbd lock, waits like this for seconds to minutes), and the thread
must not busy-poll the ring meanwhile. A resource assertion: the IOThreads' CPU time over a
few seconds of waiting, read from /proc/PID/task/*/stat."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from interactive import ok
from test_inactive import BENCH, MiB, bench, bench_ok, set_active, spindle  # noqa: F401

pytestmark = [
    pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench next to spindle"),
]

TICKS = os.sysconf("SC_CLK_TCK")
WAIT_S = 4.0
# A thread that sleeps in io_uring uses next to nothing; one that spins on the ring gets
# whatever the scheduler gives it (a whole CPU on a quiet machine, still a good share of
# one on a loaded one): far above this.
MOST_CPU_S = 0.25


def iothread_cpu_seconds(pid: int) -> float:
    """User + system time of the process's IOThreads (threads named iot-*)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if not (task / "comm").read_text().startswith("iot-"):
                continue
            stat = (task / "stat").read_text()
        except FileNotFoundError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / TICKS


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.truncate(16 * MiB)
    return path


def test_an_iothread_sleeps_while_its_queue_waits_for_an_inactive_node(tmp_path, image):
    backend, client = spindle(tmp_path, "b", image, active=False)
    writes = None
    try:
        writes = bench(tmp_path / "b.sock", "randwrite", runtime=1)
        time.sleep(1.5)  # the frontend has connected and its requests wait in the ring
        assert writes.poll() is None, f"writes completed on an inactive node: {writes.communicate()}"
        before = iothread_cpu_seconds(backend.proc.pid)
        time.sleep(WAIT_S)
        used = iothread_cpu_seconds(backend.proc.pid) - before
        assert writes.poll() is None, "writes completed on an inactive node"
        assert used < MOST_CPU_S, f"the IOThreads used {used:.2f} s of CPU in {WAIT_S} s while the node was inactive"
        reply = set_active(client, True)
        assert "error" not in reply, reply
        bench_ok(writes)  # the waiting requests go on once the node is active
        writes = None
    finally:
        if writes is not None and writes.poll() is None:
            writes.kill()
            writes.communicate()
        client.close()
        backend.stop()
    assert backend.exit_code == 0
    print(f"\nIOThread CPU while waiting {WAIT_S} s for activation: {used:.2f} s")

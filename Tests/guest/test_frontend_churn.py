"""Frontends that come and go must not leave guest memory behind in spindle: after each
round of connects and disconnects (clean exits, kills in the middle of I/O, queues spread
over two IOThreads, requests waiting in a throttle group, x-queue-move under way, with and
without an inflight region), /proc/PID/maps holds no mapping of a gone frontend's memfd and
/proc/PID/fd is back to what it was before any frontend came. spindle-bench is the
frontend (its guest memory is a memfd named "spindle-bench")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from guestlib import Backend
from interactive import ok, spindle_qmp

SPINDLE = os.environ.get("SPINDLE_BIN", "")
pytestmark = pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle")
BENCH = Path(SPINDLE).with_name("spindle-bench") if SPINDLE else Path("/nonexistent")
needs_bench = pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench next to spindle")

# How long the daemon may take to let go of a gone frontend (its in-flight requests,
# throttled ones included, complete first): generous for a loaded machine.
RELEASE_WAIT_S = 60


def memfd_mappings(pid: int) -> list[str]:
    with open(f"/proc/{pid}/maps") as maps:
        return [line.strip() for line in maps if "memfd:" in line]


def open_descriptors(pid: int) -> dict[str, str]:
    fds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            pass  # closed while we looked
    return fds


def kinds(fds: dict[str, str]) -> dict[str, int]:
    """Descriptors by what they are (socket:[123] -> socket; anon_inode:[eventfd] stays),
    for a readable comparison."""
    counts: dict[str, int] = {}
    for target in fds.values():
        kind = target.split(":[")[0] if target.startswith(("socket:", "pipe:")) else target
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def start_bench(sock: Path, *args: str, runtime: int = 30) -> subprocess.Popen:
    return subprocess.Popen([str(BENCH), "--socket", str(sock), "--cpus", "none", "--bs", "4k", "--ramp", "0",
                             "--runtime", str(runtime), "--json-only", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_running(bench: subprocess.Popen, pid: int, timeout: float = 30) -> None:
    """Until the daemon has mapped this frontend's memory (its rings run), or the bench ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and bench.poll() is None:
        if any("memfd:spindle-bench" in line for line in memfd_mappings(pid)):
            return
        time.sleep(0.05)


def kill(bench: subprocess.Popen) -> None:
    if bench.poll() is None:
        bench.send_signal(signal.SIGKILL)
    bench.communicate(timeout=30)


def finish(bench: subprocess.Popen) -> dict:
    out, err = bench.communicate(timeout=120)
    assert bench.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def wait_released(pid: int, baseline_fds: dict[str, str] | None, what: str) -> None:
    """Until no memfd is mapped and (unless `baseline_fds` is None) the descriptors are
    those of the baseline again, by kind."""
    deadline = time.monotonic() + RELEASE_WAIT_S
    while True:
        mapped = memfd_mappings(pid)
        fds = open_descriptors(pid)
        if not mapped and (baseline_fds is None or kinds(fds) == kinds(baseline_fds)):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {RELEASE_WAIT_S} s after the last frontend left, spindle still maps "
                                 f"{mapped} and holds descriptors {kinds(fds)} (after the first frontend: "
                                 f"{kinds(baseline_fds or {})})")
        time.sleep(0.1)


@needs_bench
def test_gone_frontends_leave_no_guest_memory_or_descriptors(tmp_path):
    backend = Backend(SPINDLE, tmp_path, "spindle")
    qmp = tmp_path / "qmp.sock"
    backend.start(["--object", "iothread,id=iot0", "--object", "iothread,id=iot1",
                   "--object", "throttle-group,id=tg0,x-iops-total=40",
                   "--blockdev", "null-co,node-name=n0,size=64M,read-zeroes=on",
                   "--blockdev", "null-co,node-name=n1,size=64M,read-zeroes=on",
                   "--qmp", str(qmp)], qmp)
    client = spindle_qmp(qmp)
    client.settimeout(60)
    benches: list[subprocess.Popen] = []
    try:
        pid = backend.proc.pid
        ok(client, "blockdev-add", driver="throttle", **{"node-name": "t1", "throttle-group": "tg0", "file": "n1"})
        # One frontend per export at a time (vhost-user): one export for each kind of frontend.
        spread, throttled, moved = tmp_path / "spread.sock", tmp_path / "throttled.sock", tmp_path / "moved.sock"
        quiet = tmp_path / "quiet.sock"
        ok(client, "block-export-add", **{"type": "vhost-user-blk", "id": "quiet", "node-name": "n0", "num-queues": 2,
                                           "addr": {"type": "unix", "path": str(quiet)},
                                           "iothread-vq-mapping": [{"iothread": "iot0", "vqs": [0]},
                                                                   {"iothread": "iot1", "vqs": [1]}]})
        ok(client, "block-export-add", **{"type": "vhost-user-blk", "id": "spread", "node-name": "n0", "num-queues": 4,
                                           "writable": True, "addr": {"type": "unix", "path": str(spread)},
                                           "iothread-vq-mapping": [{"iothread": "iot0", "vqs": [0, 2]},
                                                                   {"iothread": "iot1", "vqs": [1, 3]}]})
        ok(client, "block-export-add", **{"type": "vhost-user-blk", "id": "throttled", "node-name": "t1",
                                           "iothread": "iot1", "addr": {"type": "unix", "path": str(throttled)}})
        ok(client, "block-export-add", **{"type": "vhost-user-blk", "id": "moved", "node-name": "n0", "iothread": "iot0",
                                           "writable": True, "addr": {"type": "unix", "path": str(moved)}})
        # One frontend first: the first connection starts Swift's global concurrent executor
        # (an epoll, an eventfd and a timerfd, once per process), which is not per frontend.
        warm_up = finish(start_bench(quiet, "--queues", "2", "--iodepth", "4", "--rw", "randread", runtime=1))
        assert warm_up["errors"] == 0, warm_up
        wait_released(pid, None, "the first frontend")
        baseline = open_descriptors(pid)

        for round_ in range(4):
            inflight = "on" if round_ % 2 else "off"
            # One that finishes on its own, on two queues over both IOThreads.
            clean = start_bench(quiet, "--queues", "2", "--iodepth", "8", "--rw", "randread", "--inflight", inflight,
                                runtime=1)
            # One killed in the middle of I/O on four queues.
            killed = start_bench(spread, "--queues", "4", "--iodepth", "32", "--rw", "randwrite",
                                 "--inflight", inflight)
            # One killed while most of its requests wait in the throttle group (40 IOPS).
            waiting = start_bench(throttled, "--iodepth", "32", "--rw", "randread", "--inflight", inflight)
            # One killed while its queue moves between IOThreads.
            moving = start_bench(moved, "--iodepth", "16", "--rw", "randrw", "--inflight", inflight)
            benches += [clean, killed, waiting, moving]
            for bench in (killed, waiting, moving):
                wait_running(bench, pid)
            stop_moving = threading.Event()
            refusals: list[dict] = []

            def move_back_and_forth() -> None:
                target = 0
                while not stop_moving.is_set():
                    target ^= 1
                    reply = client.cmd_raw("x-queue-move", {"id": "moved", "queue": 0, "iothread": f"iot{target}"})
                    if "error" in reply:
                        refusals.append(reply["error"])

            mover = threading.Thread(target=move_back_and_forth)
            mover.start()
            try:
                time.sleep(0.5)
                kill(killed)
                kill(waiting)
                kill(moving)  # very likely between a move's stop and its restart
                time.sleep(0.3)
            finally:
                stop_moving.set()
                mover.join(timeout=60)
            assert not mover.is_alive(), "x-queue-move hung"
            # A move after the frontend left is refused cleanly, nothing else.
            assert all("not running" in e["desc"] for e in refusals), refusals
            result = finish(clean)
            assert result["errors"] == 0 and result["ios"] > 0, result
            wait_released(pid, baseline, f"round {round_ + 1}")
            exports = {e["id"]: e for e in ok(client, "query-block-exports")}
            assert all(e.get("x-memory-bytes", 0) == 0 for e in exports.values()), exports
        assert backend.alive()
    finally:
        for bench in benches:
            if bench.poll() is None:
                bench.kill()
                bench.communicate()
        client.close()
        backend.stop()

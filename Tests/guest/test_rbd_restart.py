"""A Spindle restarted in place with the same command line, on a real one-node Ceph cluster
(the `ceph` session fixture): the dead process's exclusive lock outlives it until Ceph
expires its watch (~30 s), and the new process must serve meanwhile, not fail its start.
It listens at once, logs that it waits for the holder, and a frontend's writes complete
once the lock is taken. A second live daemon started the same way waits as well, and
deleting its export ends the wait cleanly. No guest boots here (marker `rbd`, not `slow`)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from guestlib import Backend
from interactive import ok, spindle_qmp
from test_rbd import BENCH, SPINDLE, MiB, image, node_arg, secret_arg  # noqa: F401 (fixtures)
from test_rbd_ownership import bench_ok, holds_pattern, set_active, write_bench


def long_write_bench(sock: Path, fill: int) -> subprocess.Popen:
    """Writes for 60 s: long enough to outlast the dead holder's watch (~30 s), since
    spindle-bench gives up on requests still in flight 10 s after its run."""
    return subprocess.Popen([str(BENCH), "--socket", str(sock), "--rw", "write", "--bs", "1M", "--iodepth", "2",
                             "--runtime", "60", "--ramp", "0", "--size", str(4 * MiB), "--json-only", "--cpus", "none",
                             "--queues", "2", "--fill", hex(fill)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

pytestmark = [
    pytest.mark.rbd,
    pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle"),
    pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench next to spindle"),
]

WAITING = "holds its exclusive lock"
RETRYING = "retrying every second until the lock is taken"
TOOK = "took the rbd image's exclusive lock"
STOPPED = "stopped waiting for the rbd image's exclusive lock"


def start(tmp: Path, log_name: str, ceph, image: str) -> Backend:
    """Spindle serving `image` as r0 / e0 on disk.sock, with QMP on qmp.sock: the same
    command line every time, as a service manager restarts it."""
    for stale in ("disk.sock", "qmp.sock"):
        (tmp / stale).unlink(missing_ok=True)  # what the dead process left behind
    backend = Backend(SPINDLE, tmp, log_name)
    export = f"vhost-user-blk,id=e0,node-name=r0,addr.type=unix,addr.path={tmp / 'disk.sock'},writable=on,num-queues=2"
    backend.start(["--object", secret_arg(ceph), "--blockdev", node_arg(ceph, image), "--export", export,
                   "--qmp", str(tmp / "qmp.sock")], tmp / "qmp.sock", timeout=20)
    return backend


def log_of(backend: Backend) -> str:
    return backend.log_path.read_text(errors="replace")


def wait_for_log(backend: Backend, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while text not in log_of(backend):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_restarted_after_sigkill_serves_once_the_dead_holders_lock_is_free(tmp_path, ceph, image):
    first = start(tmp_path, "first", ceph, image)
    second = None
    try:
        bench_ok(write_bench(tmp_path / "disk.sock", 0xAA))  # takes the lock
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=30)
        killed = time.monotonic()
        second = start(tmp_path, "second", ceph, image)  # listens within 20 s, or raises
        listening = time.monotonic() - killed
        log = log_of(second)
        assert WAITING in log and RETRYING in log, log
        assert TOOK not in log, "the dead holder's watch should still stand"
        writes = long_write_bench(tmp_path / "disk.sock", 0xBB)
        time.sleep(2)
        if TOOK not in log_of(second):
            assert writes.poll() is None, f"writes completed while the lock was held elsewhere: {writes.communicate()}"
        bench_ok(writes, timeout=180)
        done = time.monotonic() - killed
        assert wait_for_log(second, TOOK, 5), log_of(second)
        assert holds_pattern(ceph, image, 0xBB)
        print(f"\nrestart after SIGKILL: listening {listening:.1f} s after the kill, writes done after {done:.1f} s")
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert second.exit_code == 0, log_of(second)


def test_a_second_live_daemon_waits_until_the_first_lets_go(tmp_path, ceph, image):
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    first = start(first_dir, "a", ceph, image)
    second = None
    try:
        bench_ok(write_bench(first_dir / "disk.sock", 0xAA))
        second = start(second_dir, "b", ceph, image)
        assert WAITING in log_of(second), log_of(second)
        qa = spindle_qmp(first_dir / "qmp.sock")
        qb = spindle_qmp(second_dir / "qmp.sock")
        # At the keyboard the answer stays immediate: refused while the first holds it.
        reply = set_active(qb, True)
        assert WAITING in reply["error"]["desc"], reply
        # The first lets go (export added without allow-inactive: deleting it releases the lock).
        ok(qa, "block-export-del", id="e0")
        assert wait_for_log(second, TOOK, 30), log_of(second)
        bench_ok(write_bench(second_dir / "disk.sock", 0xCC))
        assert holds_pattern(ceph, image, 0xCC)
        # Its export now keeps the node active, as one given without allow-inactive does.
        reply = set_active(qb, False)
        assert "allow-inactive" in reply["error"]["desc"], reply
        qa.close()
        qb.close()
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert first.exit_code == 0 and second.exit_code == 0


def test_deleting_the_waiting_export_ends_the_wait(tmp_path, ceph, image):
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    first = start(first_dir, "a", ceph, image)
    second = None
    try:
        bench_ok(write_bench(first_dir / "disk.sock", 0xAA))
        second = start(second_dir, "b", ceph, image)
        assert WAITING in log_of(second), log_of(second)
        qb = spindle_qmp(second_dir / "qmp.sock")
        ok(qb, "block-export-del", id="e0")
        assert wait_for_log(second, STOPPED, 10), log_of(second)
        ok(qb, "blockdev-del", **{"node-name": "r0"})
        assert [n for n in ok(qb, "query-named-block-nodes")] == []
        bench_ok(write_bench(first_dir / "disk.sock", 0xDD))  # the first still owns the image
        assert holds_pattern(ceph, image, 0xDD)
        qb.close()
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert TOOK not in log_of(second)
    assert first.exit_code == 0 and second.exit_code == 0

"""A Spindle restarted in place with the same command line, on a real one-node Ceph cluster
(the `ceph` session fixture): the dead process's exclusive lock outlives it until Ceph
expires its watch (~30 s). The image's takeover record (metadata `spindle.lock-holder`)
proves the holder is the killed predecessor, so the new process breaks the lock and
blocklists the dead client at once. A holder it cannot prove dead (a live daemon, another
client) is waited for instead: the export listens, logs that it waits, and serves once the
lock is taken; deleting the waiting export ends the wait cleanly. No guest boots here
(marker `rbd`, not `slow`)."""

from __future__ import annotations

import json
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


pytestmark = [
    pytest.mark.rbd,
    pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle"),
    pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench next to spindle"),
]

WAITING = "holds its exclusive lock"
RETRYING = "retrying every second until the lock is taken"
TOOK = "took the rbd image's exclusive lock"
STOPPED = "stopped waiting for the rbd image's exclusive lock"
BROKE = "broke the stale exclusive lock of this daemon's dead predecessor and blocklisted its client"

# A client that is not Spindle: takes the image's exclusive lock explicitly and keeps it.
HOLD_LOCK = """
import sys, time, rados, rbd
cluster = rados.Rados(conffile=sys.argv[1])
cluster.connect()
image = rbd.Image(cluster.open_ioctx("rbd"), sys.argv[2])
image.lock_acquire(rbd.RBD_LOCK_MODE_EXCLUSIVE)
print("holding", flush=True)
time.sleep(600)
"""


def takeover_record(ceph, image: str) -> str:
    """The image's metadata naming the Spindle that took its lock last."""
    return subprocess.run(["rbd", "-c", ceph["CEPH_CONF"], "image-meta", "get", f"rbd/{image}", "spindle.lock-holder"],
                          check=True, capture_output=True, text=True, timeout=60).stdout.strip()


def blocklist(ceph) -> str:
    out = subprocess.run(["ceph", "-c", ceph["CEPH_CONF"], "osd", "blocklist", "ls"], capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


def start(tmp: Path, log_name: str, ceph, image: str, allow_inactive: bool = False) -> Backend:
    """Spindle serving `image` as r0 / e0 on disk.sock, with QMP on qmp.sock: the same
    command line every time, as a service manager restarts it."""
    for stale in ("disk.sock", "qmp.sock"):
        (tmp / stale).unlink(missing_ok=True)  # what the dead process left behind
    backend = Backend(SPINDLE, tmp, log_name)
    export = f"vhost-user-blk,id=e0,node-name=r0,addr.type=unix,addr.path={tmp / 'disk.sock'},writable=on,num-queues=2"
    if allow_inactive:
        export += ",allow-inactive=on"
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


def test_restarted_after_sigkill_breaks_its_dead_predecessors_lock_at_once(tmp_path, ceph, image):
    """The image's takeover record names the killed process (this host, this boot, its pid
    gone) as the lock's holder: the new process breaks the lock and blocklists the dead
    client instead of waiting ~30 s for Ceph to expire its watch."""
    first = start(tmp_path, "first", ceph, image)
    second = None
    try:
        bench_ok(write_bench(tmp_path / "disk.sock", 0xAA))  # takes the lock
        record = takeover_record(ceph, image)
        assert f"pid={first.proc.pid} " in record, record
        dead_client = record.split(" address=")[1].split(" ")[0]
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=30)
        killed = time.monotonic()
        second = start(tmp_path, "second", ceph, image)
        log = log_of(second)
        assert BROKE in log and f"client={dead_client}" in log, log
        assert WAITING not in log and RETRYING not in log, log
        bench_ok(write_bench(tmp_path / "disk.sock", 0xBB))
        done = time.monotonic() - killed
        assert holds_pattern(ceph, image, 0xBB)
        assert dead_client in blocklist(ceph), blocklist(ceph)
        assert f"pid={second.proc.pid} " in takeover_record(ceph, image)
        print(f"\nrestart after SIGKILL: the dead predecessor's lock broken, writes done {done:.1f} s after the kill")
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert second.exit_code == 0, log_of(second)


def test_another_clients_lock_is_never_broken(tmp_path, ceph, image):
    """A record left by an earlier Spindle (its pid gone) does not name the client that holds
    the lock now (a python-rbd client, killed): nothing is broken, the new daemon waits for
    Ceph to expire that client's watch, as before."""
    earlier = start(tmp_path, "earlier", ceph, image)
    try:
        bench_ok(write_bench(tmp_path / "disk.sock", 0xAA))
    finally:
        earlier.stop()
    assert earlier.exit_code == 0
    assert f"pid={earlier.proc.pid} " in takeover_record(ceph, image)
    holder = subprocess.Popen(["/usr/bin/python3", "-c", HOLD_LOCK, ceph["CEPH_CONF"], image],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    daemon = None
    try:
        assert holder.stdout.readline().strip() == "holding", holder.communicate(timeout=30)
        holder.kill()  # dead, but not this daemon's predecessor
        holder.wait(timeout=30)
        daemon = start(tmp_path, "daemon", ceph, image)
        assert WAITING in log_of(daemon), log_of(daemon)
        time.sleep(3)  # a few retries
        log = log_of(daemon)
        assert BROKE not in log and TOOK not in log, log
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if daemon is not None:
            daemon.stop()
    assert daemon.exit_code == 0, log_of(daemon)


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
        assert BROKE not in log_of(second), "a live holder's lock was broken"
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


def test_an_allow_inactive_export_waits_too(tmp_path, ceph, image):
    """The fleet's command line (allow-inactive=on, for migration) waits for a live holder's
    lock at start-up as well, instead of failing the start; once active it may be set
    inactive again, as its options allow."""
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    first = start(first_dir, "a", ceph, image)
    second = None
    try:
        bench_ok(write_bench(first_dir / "disk.sock", 0xAA))
        second = start(second_dir, "b", ceph, image, allow_inactive=True)
        assert WAITING in log_of(second), log_of(second)
        qa = spindle_qmp(first_dir / "qmp.sock")
        qb = spindle_qmp(second_dir / "qmp.sock")
        ok(qa, "block-export-del", id="e0")
        assert wait_for_log(second, TOOK, 30), log_of(second)
        bench_ok(write_bench(second_dir / "disk.sock", 0xCC))
        assert holds_pattern(ceph, image, 0xCC)
        assert "error" not in set_active(qb, False)
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


def test_an_advisory_lock_is_waited_for_and_never_broken(tmp_path, ceph, image):
    """`rbd lock add` (an advisory lock, no exclusive-lock owner librbd can ask): the daemon
    neither breaks it nor hangs in rbd_lock_acquire; it listens, waits, and serves once the
    operator removes the lock."""
    conf = ["-c", ceph["CEPH_CONF"]]
    subprocess.run(["rbd", *conf, "lock", "add", f"rbd/{image}", "operator-lock"], check=True, timeout=60)
    daemon = None
    try:
        daemon = start(tmp_path, "daemon", ceph, image)  # listens within 20 s, or raises
        assert WAITING in log_of(daemon) and "advisory lock" in log_of(daemon), log_of(daemon)
        # Writes for 20 s: spindle-bench gives up on requests still in flight 10 s after its run.
        writes = subprocess.Popen([str(BENCH), "--socket", str(tmp_path / "disk.sock"), "--rw", "write", "--bs", "1M",
                                   "--iodepth", "2", "--runtime", "20", "--ramp", "0", "--size", str(4 * MiB), "--json-only",
                                   "--cpus", "none", "--queues", "2", "--fill", "0xee"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        lockers = json.loads(subprocess.run(["rbd", *conf, "lock", "ls", "--format", "json", f"rbd/{image}"],
                                            check=True, capture_output=True, text=True, timeout=60).stdout)
        assert [entry["id"] for entry in lockers] == ["operator-lock"], lockers
        assert TOOK not in log_of(daemon) and writes.poll() is None, log_of(daemon)
        subprocess.run(["rbd", *conf, "lock", "rm", f"rbd/{image}", "operator-lock", lockers[0]["locker"]],
                       check=True, timeout=60)
        assert wait_for_log(daemon, TOOK, 30), log_of(daemon)
        bench_ok(writes, timeout=120)
        assert holds_pattern(ceph, image, 0xEE)
    finally:
        if daemon is not None:
            daemon.stop()
    assert daemon.exit_code == 0, log_of(daemon)


def test_a_state_file_export_that_waited_for_the_lock_keeps_its_options(tmp_path, ceph, image):
    """The wait makes the export's node inactive without allow-inactive in its options: after
    the lock is taken the state file still records the export as given, and the export
    keeps its node active (blockdev-set-active false refused), as one without allow-inactive."""
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    state = second_dir / "state.json"

    def start_from_state(name: str) -> Backend:
        (second_dir / "qmp.sock").unlink(missing_ok=True)
        backend = Backend(SPINDLE, second_dir, name)
        backend.start(["--object", secret_arg(ceph), "--state-file", str(state), "--qmp", str(second_dir / "qmp.sock")],
                      second_dir / "qmp.sock", timeout=30)
        return backend

    second = start_from_state("b-first")
    try:
        qb = spindle_qmp(second_dir / "qmp.sock")
        ok(qb, "blockdev-add", driver="rbd", pool="rbd", image=image, user="admin", conf="/dev/null",
           server=[{"host": "127.0.0.1", "port": ceph["CEPH_MON_PORT"]}], **{"node-name": "r0", "key-secret": "sec0"})
        ok(qb, "block-export-add", type="vhost-user-blk", id="e0", writable=True,
           addr={"type": "unix", "path": str(second_dir / "disk.sock")}, **{"node-name": "r0"})
        qb.close()
    finally:
        second.stop()
    assert second.exit_code == 0, log_of(second)
    first = start(first_dir, "a", ceph, image)
    second = None
    try:
        bench_ok(write_bench(first_dir / "disk.sock", 0xAA))  # the first holds the lock
        (second_dir / "disk.sock").unlink(missing_ok=True)
        second = start_from_state("b-again")
        assert WAITING in log_of(second), log_of(second)
        qa = spindle_qmp(first_dir / "qmp.sock")
        ok(qa, "block-export-del", id="e0")
        assert wait_for_log(second, TOOK, 30), log_of(second)
        qb = spindle_qmp(second_dir / "qmp.sock")
        ok(qb, "object-add", **{"qom-type": "iothread", "id": "io9"})  # the state file is written again
        recorded = [line for line in state.read_text().splitlines() if '"block-export-add"' in line]
        assert len(recorded) == 1 and '"allow-inactive": true' not in recorded[0].replace('":true', '": true'), recorded
        reply = set_active(qb, False)
        assert "allow-inactive" in reply["error"]["desc"], reply
        bench_ok(write_bench(second_dir / "disk.sock", 0xCC))
        assert holds_pattern(ceph, image, 0xCC)
        qa.close()
        qb.close()
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert first.exit_code == 0 and second.exit_code == 0, log_of(second)

"""Handing an image from one daemon to another (QEMU 10's inactive nodes), without a guest:
two real spindles on the same image file, as the source and destination of a migration,
driven through QMP; spindle-bench as the frontend; qemu-io and qemu-storage-daemon 7.2 as
the other QEMU-family processes that must see the same image locks."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from guestlib import Backend
from interactive import ok, spindle_qmp

SPINDLE = os.environ.get("SPINDLE_BIN", "")
pytestmark = pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle")
BENCH = Path(SPINDLE).with_name("spindle-bench") if SPINDLE else Path("/nonexistent")
needs_bench = pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench next to spindle")

MiB = 1 << 20
LOCKED = "is locked by another process"


def spindle(tmp: Path, name: str, image: Path, *, active: bool = True, allow_inactive: bool = True):
    """A spindle exporting `image` as node disk0 / export exp0, with a QMP socket."""
    node = f"driver=file,node-name=disk0,filename={image}" + ("" if active else ",active=off")
    export = (f"type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path={tmp / (name + '.sock')},"
              f"writable=on,num-queues=1" + (",allow-inactive=on" if allow_inactive else ""))
    backend = Backend(SPINDLE, tmp, name)
    backend.start(["--blockdev", node, "--export", export, "--qmp", str(tmp / f"{name}-qmp.sock")], tmp / f"{name}.sock")
    return backend, spindle_qmp(tmp / f"{name}-qmp.sock")


def active(client) -> bool:
    [node] = ok(client, "query-named-block-nodes")
    return node["active"]


def set_active(client, value: bool, **node) -> dict:
    return client.cmd_raw("blockdev-set-active", {"active": value, **node})


def bench(sock: Path, rw: str = "randwrite", runtime: int = 1) -> subprocess.Popen:
    return subprocess.Popen([str(BENCH), "--socket", str(sock), "--rw", rw, "--bs", "4k", "--iodepth", "4",
                             "--runtime", str(runtime), "--ramp", "0", "--size", str(16 * MiB), "--json-only",
                             "--cpus", "none"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def bench_ok(proc: subprocess.Popen, timeout: float = 60) -> None:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    assert '"errors":0' in out.replace(" ", ""), out


def qemu_io_write(image: Path) -> subprocess.CompletedProcess:
    """qemu-io opens the image read-write, taking QEMU's locks, and writes one block."""
    return subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x33 0 4k", str(image)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.truncate(16 * MiB)
    return path


@needs_bench
def test_two_daemons_hand_the_image_over(tmp_path, image):
    a, qa = spindle(tmp_path, "a", image)
    # B opens the image A writes: inactive, it takes no lock.
    b, qb = spindle(tmp_path, "b", image, active=False)
    try:
        assert active(qa) and not active(qb)
        bench_ok(bench(tmp_path / "a.sock"))
        # B cannot take the image while A holds it; it stays inactive.
        reply = set_active(qb, True, **{"node-name": "disk0"})
        assert LOCKED in reply["error"]["desc"] and reply["error"]["desc"].startswith("Failed to activate node 'disk0'")
        assert not active(qb)
        # A lets go: flushed, unlocked (qemu-io may write now), still serving its socket.
        assert set_active(qa, False) == {"return": {}}
        assert set_active(qa, False) == {"return": {}}  # idempotent
        assert not active(qa)
        written = qemu_io_write(image)
        assert written.returncode == 0 and "wrote 4096/4096" in written.stdout, written.stderr
        # B takes it (all nodes: no node-name) and serves writes.
        assert set_active(qb, True) == {"return": {}}
        assert active(qb)
        bench_ok(bench(tmp_path / "b.sock"))
        # Now A cannot take it back, nor can qemu-io write.
        reply = set_active(qa, True, **{"node-name": "disk0"})
        assert LOCKED in reply["error"]["desc"]
        assert not active(qa)
        assert qemu_io_write(image).returncode != 0
    finally:
        qa.close()
        qb.close()
        a.stop()
        b.stop()
    assert a.exit_code == 0 and b.exit_code == 0


@needs_bench
def test_requests_on_an_inactive_node_wait_for_activation(tmp_path, image):
    a, qa = spindle(tmp_path, "a", image)
    b, qb = spindle(tmp_path, "b", image, active=False)
    try:
        # A frontend on B while B is inactive: it connects, its writes wait.
        waiting = bench(tmp_path / "b.sock")
        time.sleep(3)
        assert waiting.poll() is None, f"the writes did not wait: {waiting.communicate()}"
        assert set_active(qa, False, **{"node-name": "disk0"}) == {"return": {}}
        assert set_active(qb, True, **{"node-name": "disk0"}) == {"return": {}}
        bench_ok(waiting)
    finally:
        qa.close()
        qb.close()
        a.stop()
        b.stop()


def test_exports_without_allow_inactive(tmp_path, image):
    a, qa = spindle(tmp_path, "a", image, allow_inactive=False)
    try:
        reply = set_active(qa, False, **{"node-name": "disk0"})
        assert reply["error"] == {"class": "GenericError", "desc":
            "Failed to inactivate node: Operation not permitted (export 'exp0' uses node 'disk0' and was added without "
            "allow-inactive; delete it, or add it with allow-inactive true)"}
        assert set_active(qa, False)["error"]["desc"].startswith("Failed to inactivate all nodes: Operation not permitted")
        assert active(qa)
        # A second node on the same image, inactive, in the same daemon: an export without
        # allow-inactive would activate it and needs the write lock A's export holds.
        ok(qa, "blockdev-add", driver="file", **{"node-name": "other", "filename": str(image), "active": False})
        reply = qa.cmd_raw("block-export-add", {"type": "vhost-user-blk", "id": "exp1", "node-name": "other", "writable": True,
                                               "addr": {"type": "unix", "path": str(tmp_path / "exp1.sock")}})
        assert LOCKED in reply["error"]["desc"], reply
        assert [e["id"] for e in ok(qa, "query-block-exports")] == ["exp0"]
        # As in QEMU, the failed export activated the node (unused, it needed no lock).
        assert {n["node-name"]: n["active"] for n in ok(qa, "query-named-block-nodes")} == {"disk0": True, "other": True}
        assert set_active(qa, False, **{"node-name": "other"}) == {"return": {}}
        # With allow-inactive it is added, and stays inactive.
        ok(qa, "block-export-add", type="vhost-user-blk", id="exp1", **{"node-name": "other", "allow-inactive": True},
           writable=True, addr={"type": "unix", "path": str(tmp_path / "exp1.sock")})
        nodes = {n["node-name"]: n["active"] for n in ok(qa, "query-named-block-nodes")}
        assert nodes == {"disk0": True, "other": False}
    finally:
        qa.close()
        a.stop()


@pytest.mark.skipif(shutil.which("qemu-storage-daemon") is None, reason="needs qemu-storage-daemon")
def test_qemu_storage_daemon_holds_the_image_spindle_waits(tmp_path, image):
    qsd_sock = tmp_path / "qsd.sock"
    qsd = Backend("qemu-storage-daemon", tmp_path, "qsd")
    qsd.start(["--blockdev", f"driver=file,node-name=disk0,filename={image}",
               "--export", f"type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path={qsd_sock},writable=on"],
              qsd_sock)
    try:
        # Active, spindle refuses the image qsd writes; inactive, it opens it.
        refused = subprocess.run([SPINDLE, "--blockdev", f"driver=file,node-name=disk0,filename={image}"],
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and LOCKED in refused.stderr, refused.stderr
        b, qb = spindle(tmp_path, "b", image, active=False)
        try:
            assert not active(qb)
            reply = set_active(qb, True)
            assert LOCKED in reply["error"]["desc"], reply
            assert not active(qb)
            qsd.stop()
            assert set_active(qb, True) == {"return": {}}
            assert active(qb)
            # Now qsd (or any QEMU) cannot open it for writing.
            again = subprocess.run(["qemu-storage-daemon", "--blockdev", f"driver=file,node-name=disk0,filename={image}",
                                    "--export", f"type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,"
                                    f"addr.path={tmp_path / 'qsd2.sock'},writable=on"],
                                   capture_output=True, text=True, timeout=60)
            assert again.returncode != 0 and "lock" in again.stderr, again.stderr
        finally:
            qb.close()
            b.stop()
    finally:
        qsd.stop()

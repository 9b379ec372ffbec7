"""The rbd driver against a real one-node Ceph cluster (scripts/ceph-cluster.sh, started once
per session and always stopped): spindle-bench writes and checks patterns through Spindle;
QEMU's own rbd driver (qemu-io, Debian's qemu-block-extra) is the oracle for what is on the
image. No guest boots here (marker `rbd`, not `slow`)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from guestlib import Backend
from interactive import ok, spindle_qmp

REPO = Path(__file__).resolve().parents[2]
SPINDLE = os.environ.get("SPINDLE_BIN", "")
BENCH = Path(SPINDLE).with_name("spindle-bench") if SPINDLE else Path("/nonexistent")
pytestmark = [
    pytest.mark.rbd,
    pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle"),
    pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench next to spindle"),
]

MiB = 1 << 20
# Each failure must come well within this (the driver's bounds are 5 s for monitors).
FAIL_FAST_S = 15


def rbd(ceph, *args: str) -> str:
    out = subprocess.run(["rbd", "-c", ceph["CEPH_CONF"], *args], check=True, capture_output=True, text=True, timeout=60)
    return out.stdout


@pytest.fixture
def image(ceph, request):
    """A fresh 64 MiB image for this test, removed afterwards."""
    name = "t-" + request.node.name.replace("test_", "")[:40].replace("[", "-").replace("]", "")
    rbd(ceph, "create", "--size", "64M", f"rbd/{name}")
    yield name
    subprocess.run(["rbd", "-c", ceph["CEPH_CONF"], "snap", "purge", f"rbd/{name}"], capture_output=True, timeout=60)
    subprocess.run(["rbd", "-c", ceph["CEPH_CONF"], "rm", f"rbd/{name}"], capture_output=True, timeout=60)


def secret_arg(ceph) -> str:
    return f"secret,id=sec0,file={ceph['CEPH_ADMIN_KEY_FILE']},format=base64"


def node_arg(ceph, image: str, extra: str = "", port: str | None = None) -> str:
    return (f"driver=rbd,node-name=r0,pool=rbd,image={image},user=admin,key-secret=sec0,conf=/dev/null,"
            f"server.0.host=127.0.0.1,server.0.port={port or ceph['CEPH_MON_PORT']}" + extra)


def serve(tmp: Path, ceph, image: str, extra: str = "", writable: bool = True) -> tuple[Backend, Path]:
    sock = tmp / "r0.sock"
    backend = Backend(SPINDLE, tmp, "spindle")
    backend.start(["--object", secret_arg(ceph), "--blockdev", node_arg(ceph, image, extra),
                   "--export", f"vhost-user-blk,id=e0,node-name=r0,addr.type=unix,addr.path={sock},"
                               f"writable={'on' if writable else 'off'},num-queues=2",
                   "--qmp", str(tmp / "qmp.sock")], sock, timeout=60)
    return backend, sock


def bench(sock: Path, rw: str, *, fill: int | None = None, expect: int | None = None,
          size: int = 4 * MiB, bs: str = "1M", errors_expected: bool = False) -> dict:
    args = [str(BENCH), "--socket", str(sock), "--rw", rw, "--bs", bs, "--iodepth", "2", "--runtime", "1",
            "--ramp", "0", "--size", str(size), "--json-only", "--cpus", "none", "--queues", "2"]
    if fill is not None:
        args += ["--fill", hex(fill)]
    if expect is not None:
        args += ["--expect", hex(expect)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == (1 if errors_expected else 0), out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ios"] > 0, result
    return result


def qemu_io(ceph, image: str, command: str, snapshot: str | None = None) -> subprocess.CompletedProcess:
    name = f"rbd:rbd/{image}" + (f"@{snapshot}" if snapshot else "") + f":conf={ceph['CEPH_CONF']}:id=admin"
    return subprocess.run(["qemu-io", "-f", "raw", "-c", command, name], capture_output=True, text=True, timeout=120)


def assert_pattern(ceph, image: str, byte: int, length: int = 4 * MiB) -> None:
    out = qemu_io(ceph, image, f"read -P {hex(byte)} 0 {length}")
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout + out.stderr, out.stdout + out.stderr


def needs_qemu_rbd():
    probe = subprocess.run(["qemu-io", "-f", "raw", "-c", "quit", "rbd:x/y:conf=/dev/null"], capture_output=True, text=True)
    if "Unknown protocol 'rbd'" in probe.stderr:
        pytest.skip("QEMU's rbd driver is missing (apt-get install qemu-block-extra)")


def test_spindle_writes_a_pattern_that_qemu_reads_back(tmp_path, ceph, image):
    needs_qemu_rbd()
    backend, sock = serve(tmp_path, ceph, image)
    try:
        assert bench(sock, "write", fill=0x5A)["errors"] == 0
        assert bench(sock, "read", expect=0x5A)["errors"] == 0
        assert bench(sock, "read", expect=0x11, errors_expected=True)["errors"] > 0  # the check itself works
        assert_pattern(ceph, image, 0x5A)
    finally:
        backend.stop()
    log = backend.log_path.read_text()
    assert "rbd node 'r0' served by iothread" in log
    # Shutdown stopped the completion watcher first, then closed the image (nothing leaked).
    assert "closed rbd image" in log and "leaked" not in log, log[-2000:]


def test_spindle_reads_what_qemu_wrote(tmp_path, ceph, image):
    needs_qemu_rbd()
    out = qemu_io(ceph, image, f"write -P 0x33 0 {4 * MiB}")
    assert out.returncode == 0, out.stderr
    backend, sock = serve(tmp_path, ceph, image)
    try:
        assert bench(sock, "read", expect=0x33)["errors"] == 0
    finally:
        backend.stop()


@pytest.mark.parametrize("operation", ["discard", "write-zeroes"])
def test_discard_and_write_zeroes_read_back_zeroes(tmp_path, ceph, image, operation):
    needs_qemu_rbd()
    # discard=unmap: discards reach the image (QEMU's default, ignore, would keep the data).
    backend, sock = serve(tmp_path, ceph, image, extra=",discard=unmap")
    try:
        assert bench(sock, "write", fill=0x5A)["errors"] == 0
        assert bench(sock, operation)["errors"] == 0
        assert bench(sock, "read", expect=0)["errors"] == 0
    finally:
        backend.stop()
    assert_pattern(ceph, image, 0)


def test_snapshot_serves_the_data_as_of_the_snapshot_read_only(tmp_path, ceph, image):
    needs_qemu_rbd()
    assert qemu_io(ceph, image, f"write -P 0x11 0 {4 * MiB}").returncode == 0
    rbd(ceph, "snap", "create", f"rbd/{image}@s1")
    assert qemu_io(ceph, image, f"write -P 0x22 0 {4 * MiB}").returncode == 0
    backend, sock = serve(tmp_path, ceph, image, extra=",snapshot=s1", writable=False)
    try:
        assert bench(sock, "read", expect=0x11)["errors"] == 0
        client = spindle_qmp(tmp_path / "qmp.sock")
        [node] = ok(client, "query-named-block-nodes")
        assert node["ro"] is True and node["file"] == f"rbd:rbd/{image}@s1"
        client.close()
    finally:
        backend.stop()


def wrong_key(ceph) -> str:
    # A cephx key: 12 header bytes, then the 16 secret bytes; change the secret only.
    raw = bytearray(base64.b64decode(Path(ceph["CEPH_ADMIN_KEY_FILE"]).read_text().strip()))
    for i in range(12, len(raw)):
        raw[i] ^= 0xFF
    return base64.b64encode(bytes(raw)).decode()


def fails_fast(args: list[str], env: dict | None = None) -> str:
    start = time.monotonic()
    out = subprocess.run([SPINDLE, *args], capture_output=True, text=True, timeout=FAIL_FAST_S * 2,
                         env={**os.environ, **(env or {})})
    took = time.monotonic() - start
    assert out.returncode != 0, out.stderr
    assert took < FAIL_FAST_S, f"took {took:.1f} s"
    return out.stderr


def test_wrong_key_fails_fast_and_says_so(ceph, image):
    err = fails_fast(["--object", f"secret,id=sec0,data={wrong_key(ceph)},format=base64",
                      "--blockdev", node_arg(ceph, image)])
    assert "node 'r0': cannot connect to the Ceph cluster" in err and "wrong key" in err, err
    assert wrong_key(ceph) not in err


def test_missing_image_fails_fast_and_says_so(ceph):
    err = fails_fast(["--object", secret_arg(ceph), "--blockdev", node_arg(ceph, "no-such-image")])
    assert "node 'r0': image 'rbd:rbd/no-such-image' does not exist" in err, err


def test_missing_pool_fails_fast_and_says_so(ceph):
    err = fails_fast(["--object", secret_arg(ceph), "--blockdev", node_arg(ceph, "test").replace("pool=rbd", "pool=nopool")])
    assert "node 'r0': pool 'nopool' does not exist" in err, err


def test_unreachable_monitor_fails_fast_and_says_so(ceph, image):
    err = fails_fast(["--object", secret_arg(ceph), "--blockdev", node_arg(ceph, image, port="9")])
    assert "node 'r0': cannot connect to the Ceph cluster: no monitor answered" in err, err


def test_without_librbd_rbd_nodes_fail_clearly_and_files_are_served(tmp_path, ceph, image):
    hook = {"SPINDLE_LIBRBD": "/nonexistent/librbd.so.1"}
    err = fails_fast(["--object", secret_arg(ceph), "--blockdev", node_arg(ceph, image)], env=hook)
    assert "install the librbd1 package" in err and "node 'r0'" in err, err
    # The same daemon serves files, and says the same over QMP for a blockdev-add.
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * MiB)
    sock = tmp_path / "f.sock"
    backend = Backend(SPINDLE, tmp_path, "nolib")
    os.environ.update(hook)
    try:
        backend.start(["--blockdev", f"driver=file,node-name=f0,filename={disk}",
                       "--export", f"vhost-user-blk,id=e0,node-name=f0,addr.type=unix,addr.path={sock},writable=on,num-queues=1",
                       "--qmp", str(tmp_path / "qmp.sock")], sock)
    finally:
        os.environ.pop("SPINDLE_LIBRBD")
    try:
        client = spindle_qmp(tmp_path / "qmp.sock")
        ok(client, "object-add", **{"qom-type": "secret", "id": "sec0", "file": ceph["CEPH_ADMIN_KEY_FILE"], "format": "base64"})
        reply = client.cmd_raw("blockdev-add", {"driver": "rbd", "node-name": "r0", "pool": "rbd", "image": image,
                                                "key-secret": "sec0", "conf": "/dev/null",
                                                "server": [{"host": "127.0.0.1", "port": ceph["CEPH_MON_PORT"]}]})
        assert "install the librbd1 package" in reply["error"]["desc"], reply
        client.close()
        result = subprocess.run([str(BENCH), "--socket", str(sock), "--rw", "write", "--bs", "64k", "--size", str(MiB),
                                 "--runtime", "1", "--ramp", "0", "--cpus", "none", "--json-only", "--fill", "0x44"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and '"errors":0' in result.stdout, result.stderr
    finally:
        backend.stop()
    assert disk.read_bytes()[:4096] == b"\x44" * 4096


def test_qmp_adds_resizes_and_deletes_an_rbd_node(tmp_path, ceph, image):
    backend = Backend(SPINDLE, tmp_path, "qmp")
    qmp = tmp_path / "qmp.sock"
    backend.start(["--qmp", str(qmp)], qmp)
    try:
        client = spindle_qmp(qmp)
        key = Path(ceph["CEPH_ADMIN_KEY_FILE"]).read_text().strip()
        ok(client, "object-add", **{"qom-type": "secret", "id": "sec0", "data": key, "format": "base64"})
        ok(client, "blockdev-add", **{"driver": "rbd", "node-name": "r0", "pool": "rbd", "image": image, "user": "admin",
                                      "key-secret": "sec0", "conf": "/dev/null", "auth-client-required": ["cephx"],
                                      "server": [{"host": "127.0.0.1", "port": ceph["CEPH_MON_PORT"]}]})
        [node] = ok(client, "query-named-block-nodes")
        assert node["drv"] == "rbd" and node["image"]["virtual-size"] == 64 * MiB, node
        reply = client.cmd_raw("object-del", {"id": "sec0"})
        assert "in use by node 'r0'" in reply["error"]["desc"], reply
        ok(client, "block_resize", **{"node-name": "r0", "size": 128 * MiB})
        assert '"size": 134217728' in rbd(ceph, "info", "--format", "json", "--pretty-format", f"rbd/{image}")
        ok(client, "blockdev-add", **{"driver": "null-co", "node-name": "n0", "size": 128 * MiB})
        reply = client.cmd_raw("blockdev-mirror", {"job-id": "m", "device": "r0", "target": "n0", "sync": "full"})
        assert "rbd source (node 'r0') is not supported yet" in reply["error"]["desc"], reply
        # Inactivation flushes librbd's cache (rbd_flush) and releases the exclusive lock.
        ok(client, "blockdev-set-active", **{"node-name": "r0", "active": False})
        ok(client, "blockdev-set-active", **{"node-name": "r0", "active": True})
        ok(client, "blockdev-del", **{"node-name": "r0"})
        ok(client, "object-del", id="sec0")
        client.close()
    finally:
        backend.stop()
    assert key not in backend.log_path.read_text()

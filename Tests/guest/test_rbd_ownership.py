"""An rbd image shared by several Spindles and changed from outside, on a real one-node Ceph
cluster (test_rbd.py's session fixture): a resize made with the `rbd` CLI reaches the
connected frontend (a config-change message on the backend channel, the new capacity in
GET_CONFIG and in query-named-block-nodes); the exclusive lock follows blockdev-set-active,
so two daemons never write one image at once; a SIGKILLed holder's lock is taken over once
Ceph has expired its watch (measured). No guest boots here (marker `rbd`, not `slow`)."""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from guestlib import Backend
from interactive import ok, spindle_qmp
from test_rbd import BENCH, MiB, SPINDLE, image, node_arg, qemu_io, rbd, secret_arg  # noqa: F401 (fixtures)

pytestmark = [
    pytest.mark.rbd,
    pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle"),
    pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench next to spindle"),
]

IN_USE = "holds its exclusive lock (another Spindle serving it?)"
# vhost-user (docs/interop/vhost-user.rst): the few messages a config watcher needs.
GET_FEATURES, SET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES = 1, 2, 15, 16
SET_BACKEND_REQ_FD, GET_CONFIG, BACKEND_CONFIG_CHANGE_MSG = 21, 24, 2
PROTOCOL_FEATURES_BIT, F_BACKEND_REQ, F_CONFIG = 1 << 30, 1 << 5, 1 << 9
VERSION, REPLY = 0x1, 0x4


class ConfigWatcher:
    """A minimal vhost-user frontend: negotiates CONFIG and BACKEND_REQ, hands the backend a
    channel, and reads the capacity (512-byte sectors) with GET_CONFIG, as QEMU does."""

    def __init__(self, path: Path):
        self.main = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.main.settimeout(10)
        self.main.connect(str(path))
        features = self._get_u64(GET_FEATURES)
        self._send(SET_FEATURES, struct.pack("<Q", features & (PROTOCOL_FEATURES_BIT | (1 << 32))))
        protocol = self._get_u64(GET_PROTOCOL_FEATURES)
        assert protocol & F_CONFIG and protocol & F_BACKEND_REQ, hex(protocol)
        self._send(SET_PROTOCOL_FEATURES, struct.pack("<Q", F_CONFIG | F_BACKEND_REQ))
        self.channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        header = struct.pack("<III", SET_BACKEND_REQ_FD, VERSION, 0)
        self.main.sendmsg([header], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", theirs.fileno()))])
        theirs.close()

    def _send(self, request: int, payload: bytes = b"") -> None:
        self.main.sendall(struct.pack("<III", request, VERSION, len(payload)) + payload)

    def _reply(self, request: int) -> bytes:
        header = self._recv_exactly(12)
        code, flags, size = struct.unpack("<III", header)
        assert code == request and flags & REPLY, (code, flags)
        return self._recv_exactly(size)

    def _recv_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.main.recv(n - len(data))
            assert chunk, "the backend closed the connection"
            data += chunk
        return data

    def _get_u64(self, request: int) -> int:
        self._send(request)
        return struct.unpack("<Q", self._reply(request))[0]

    def capacity_bytes(self) -> int:
        self._send(GET_CONFIG, struct.pack("<III", 0, 8, 0) + bytes(8))
        payload = self._reply(GET_CONFIG)
        return struct.unpack("<Q", payload[12:20])[0] * 512

    def wait_config_change(self, timeout: float) -> bool:
        """Whether a BACKEND_CONFIG_CHANGE_MSG arrived within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self.channel], [], [], left)[0]:
                return False
            header = self.channel.recv(12, socket.MSG_WAITALL)
            assert len(header) == 12, "the backend closed its channel"
            code, flags, size = struct.unpack("<III", header)
            if size:
                self.channel.recv(size, socket.MSG_WAITALL)
            if code == BACKEND_CONFIG_CHANGE_MSG:
                return True
        return False

    def close(self) -> None:
        self.main.close()
        self.channel.close()


def spindle(tmp: Path, name: str, ceph, image: str, *, active: bool = True, allow_inactive: bool = False):
    """A spindle serving `image` as node r0 / export e0 (two queues, writable), with QMP."""
    node = node_arg(ceph, image, "" if active else ",active=off")
    export = (f"vhost-user-blk,id=e0,node-name=r0,addr.type=unix,addr.path={tmp / (name + '.sock')},writable=on,num-queues=2"
              + (",allow-inactive=on" if allow_inactive else ""))
    backend = Backend(SPINDLE, tmp, name)
    backend.start(["--object", secret_arg(ceph), "--blockdev", node, "--export", export,
                   "--qmp", str(tmp / f"{name}-qmp.sock")], tmp / f"{name}.sock", timeout=60)
    return backend, spindle_qmp(tmp / f"{name}-qmp.sock")


def node_size(client) -> int:
    [node] = [n for n in ok(client, "query-named-block-nodes") if n["node-name"] == "r0"]
    return node["image"]["virtual-size"]


def set_active(client, value: bool) -> dict:
    return client.cmd_raw("blockdev-set-active", {"node-name": "r0", "active": value})


def write_bench(sock: Path, fill: int) -> subprocess.Popen:
    return subprocess.Popen([str(BENCH), "--socket", str(sock), "--rw", "write", "--bs", "1M", "--iodepth", "2",
                             "--runtime", "1", "--ramp", "0", "--size", str(4 * MiB), "--json-only", "--cpus", "none",
                             "--queues", "2", "--fill", hex(fill)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def bench_ok(proc: subprocess.Popen, timeout: float = 120) -> None:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    assert '"errors":0' in out.replace(" ", ""), out


def holds_pattern(ceph, image: str, byte: int) -> bool:
    out = qemu_io(ceph, image, f"read -P {hex(byte)} 0 {4 * MiB}")
    return out.returncode == 0 and "Pattern verification failed" not in out.stdout + out.stderr


def eventfds(pid: int) -> int:
    return sum(os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[eventfd]" for fd in os.listdir(f"/proc/{pid}/fd"))


def test_resize_elsewhere_reaches_the_frontend_both_ways(tmp_path, ceph, image):
    backend, client = spindle(tmp_path, "a", ceph, image)
    watcher = ConfigWatcher(tmp_path / "a.sock")
    try:
        assert watcher.capacity_bytes() == 64 * MiB
        # Spindle holds the exclusive lock: librbd has it carry out the CLI's resize.
        rbd(ceph, "resize", "--size", "96M", f"rbd/{image}")
        assert watcher.wait_config_change(10), "no config-change message after rbd resize"
        assert watcher.capacity_bytes() == 96 * MiB
        assert node_size(client) == 96 * MiB
        rbd(ceph, "resize", "--allow-shrink", "--size", "32M", f"rbd/{image}")
        assert watcher.wait_config_change(10), "no config-change message after a shrink"
        assert watcher.capacity_bytes() == 32 * MiB
        assert node_size(client) == 32 * MiB
        # Our own block_resize fires the watch too: told once by block_resize, no second change.
        ok(client, "block_resize", **{"node-name": "r0", "size": 48 * MiB})
        assert watcher.wait_config_change(10)
        assert watcher.capacity_bytes() == 48 * MiB and node_size(client) == 48 * MiB
        client.close()
    finally:
        watcher.close()
        backend.stop()
    log = backend.log_path.read_text()
    assert "image resized elsewhere" in log and "to=33554432" in log.replace('"', ""), log[-3000:]


def test_blockdev_del_after_a_watch_leaves_nothing_registered(tmp_path, ceph, image):
    backend = Backend(SPINDLE, tmp_path, "q")
    qmp = tmp_path / "qmp.sock"
    backend.start(["--object", secret_arg(ceph), "--qmp", str(qmp)], qmp)
    try:
        client = spindle_qmp(qmp)
        pid = backend.proc.pid
        before = eventfds(pid)
        arguments = {"driver": "rbd", "node-name": "r0", "pool": "rbd", "image": image, "user": "admin", "key-secret": "sec0",
                     "conf": "/dev/null", "server": [{"host": "127.0.0.1", "port": ceph["CEPH_MON_PORT"]}]}
        opening = time.monotonic()
        ok(client, "blockdev-add", **arguments)
        print(f"\nblockdev-add of an rbd node took {time.monotonic() - opening:.2f} s")
        assert eventfds(pid) == before + 2  # completions, and the update watch's wakeups
        rbd(ceph, "resize", "--size", "80M", f"rbd/{image}")
        deadline = time.monotonic() + 10
        while node_size(client) != 80 * MiB and time.monotonic() < deadline:
            time.sleep(0.2)
        assert node_size(client) == 80 * MiB
        ok(client, "blockdev-del", **{"node-name": "r0"})
        assert eventfds(pid) == before
        assert "watcher=" not in rbd(ceph, "status", f"rbd/{image}")
        # A later change finds nothing to call: the daemon carries on.
        rbd(ceph, "resize", "--size", "96M", f"rbd/{image}")
        time.sleep(1)
        assert ok(client, "query-named-block-nodes") == []
        client.close()
    finally:
        backend.stop()
    assert backend.exit_code == 0


def test_two_daemons_hand_the_image_over_through_the_lock(tmp_path, ceph, image):
    a, qa = spindle(tmp_path, "a", ceph, image, allow_inactive=True)
    b, qb = spindle(tmp_path, "b", ceph, image, active=False, allow_inactive=True)
    try:
        bench_ok(write_bench(tmp_path / "a.sock", 0xAA))
        # B's frontend connects while B is inactive: its writes wait in the rings.
        waiting = write_bench(tmp_path / "b.sock", 0xBB)
        time.sleep(3)
        assert waiting.poll() is None, f"B's writes did not wait: {waiting.communicate()}"
        # B cannot take the image while A holds the lock; it stays inactive.
        asked = time.monotonic()
        reply = set_active(qb, True)
        print(f"\nrefused in {time.monotonic() - asked:.2f} s")
        assert IN_USE in reply["error"]["desc"] and reply["error"]["desc"].startswith("Failed to activate node 'r0'"), reply
        assert holds_pattern(ceph, image, 0xAA)
        # A lets go (drained, flushed, lock released); B takes it and its writes land.
        handover = time.monotonic()
        assert set_active(qa, False) == {"return": {}}
        assert set_active(qb, True) == {"return": {}}
        print(f"handover (A inactive, B active) took {time.monotonic() - handover:.2f} s")
        bench_ok(waiting)
        assert holds_pattern(ceph, image, 0xBB)
        # A cannot take it back, and another client's write fails instead of taking the lock.
        reply = set_active(qa, True)
        assert IN_USE in reply["error"]["desc"], reply
        written = qemu_io(ceph, image, "write -P 0x33 0 4k")
        assert written.returncode != 0 or "Read-only file system" in written.stdout + written.stderr, written.stdout
        assert holds_pattern(ceph, image, 0xBB)
    finally:
        qa.close()
        qb.close()
        a.stop()
        b.stop()
    assert a.exit_code == 0 and b.exit_code == 0


def test_a_second_daemon_cannot_write_while_the_first_holds_the_lock(tmp_path, ceph, image):
    a, qa = spindle(tmp_path, "a", ceph, image)
    b = Backend(SPINDLE, tmp_path, "b")
    qmp = tmp_path / "b-qmp.sock"
    b.start(["--object", secret_arg(ceph), "--blockdev", node_arg(ceph, image), "--qmp", str(qmp)], qmp, timeout=60)
    try:
        qb = spindle_qmp(qmp)
        # Opening (and reading) is fine; exporting it writable needs the lock A holds.
        reply = qb.cmd_raw("block-export-add", {"type": "vhost-user-blk", "id": "e1", "node-name": "r0", "writable": True,
                                                 "addr": {"type": "unix", "path": str(tmp_path / "b.sock")}})
        assert IN_USE in reply["error"]["desc"] and "node 'r0'" in reply["error"]["desc"], reply
        ok(qb, "block-export-add", **{"type": "vhost-user-blk", "id": "e1", "node-name": "r0", "writable": False,
                                       "addr": {"type": "unix", "path": str(tmp_path / "b.sock")}})
        bench_ok(write_bench(tmp_path / "a.sock", 0x5C))
        assert holds_pattern(ceph, image, 0x5C)
        qb.close()
        qa.close()
    finally:
        a.stop()
        b.stop()


def test_a_killed_holders_lock_is_taken_over_after_its_watch_expires(tmp_path, ceph, image):
    """Measures how long a host that died holding the lock blocks the disk (printed)."""
    a, qa = spindle(tmp_path, "a", ceph, image)
    b, qb = spindle(tmp_path, "b", ceph, image, active=False, allow_inactive=True)
    try:
        bench_ok(write_bench(tmp_path / "a.sock", 0xAA))
        qa.close()
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait(timeout=30)
        killed = time.monotonic()
        attempts, errors = 0, set()
        while True:
            attempts += 1
            reply = set_active(qb, True)
            if reply == {"return": {}}:
                break
            errors.add(reply["error"]["desc"])
            assert time.monotonic() - killed < 180, f"B never took the lock: {errors}"
            time.sleep(1)
        took_over = time.monotonic() - killed
        bench_ok(write_bench(tmp_path / "b.sock", 0xBB))
        written = time.monotonic() - killed
        assert holds_pattern(ceph, image, 0xBB)
        assert all(IN_USE in e for e in errors), errors
        blocklist = subprocess.run(["ceph", "-c", ceph["CEPH_CONF"], "osd", "blocklist", "ls"], capture_output=True, text=True, timeout=60)
        print(f"\nlock takeover after SIGKILL: activated after {took_over:.1f} s ({attempts} attempts), "
              f"writes done {written:.1f} s after the kill; blocklist: {blocklist.stdout.strip()} {blocklist.stderr.strip()}")
        qb.close()
    finally:
        a.stop()
        b.stop()

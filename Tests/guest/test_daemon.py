"""The daemon itself, without a guest: command-line errors, the vhost-user socket's
handling of bad frontends, signals. Runs against SPINDLE_BIN (spindle only: these check
Spindle's own error messages and policies)."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

SPINDLE = os.environ.get("SPINDLE_BIN", "")
pytestmark = pytest.mark.skipif(not SPINDLE or "spindle" not in Path(SPINDLE).name,
                                reason="needs SPINDLE_BIN pointing at spindle")

GET_FEATURES = 1
SET_VRING_NUM = 8
VERSION = 0x1


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([SPINDLE, *args], capture_output=True, text=True, timeout=timeout)


class Daemon:
    """A spindle process with one null-co or file export; always killed at the end."""

    def __init__(self, tmp: Path, *extra: str, image: Path | None = None, name: str = "d"):
        self.sock = tmp / f"{name}.sock"
        self.pidfile = tmp / f"{name}.pid"
        node = (f"driver=file,node-name=n0,filename={image}" if image
                else "driver=null-co,node-name=n0,size=64M")
        self.log = open(tmp / f"{name}.log", "w+")
        self.proc = subprocess.Popen(
            [SPINDLE, "--blockdev", node,
             "--export", f"type=vhost-user-blk,id=exp0,node-name=n0,addr.type=unix,addr.path={self.sock},writable=on",
             "--pidfile", str(self.pidfile), *extra],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while not (self.sock.exists() and self.pidfile.exists()):
            assert self.proc.poll() is None, f"spindle exited early:\n{self.output()}"
            assert time.monotonic() < deadline, "spindle did not create its socket"
            time.sleep(0.05)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(str(self.sock))
        return s

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def daemons(tmp_path):
    started: list[Daemon] = []

    def start(*extra: str, **kw) -> Daemon:
        d = Daemon(tmp_path, *extra, **kw)
        started.append(d)
        return d
    yield start
    for d in started:
        d.stop()


def message(request: int, payload: bytes = b"", flags: int = VERSION) -> bytes:
    return struct.pack("<III", request, flags, len(payload)) + payload


def get_features(s: socket.socket) -> int:
    s.sendall(message(GET_FEATURES))
    reply = recv_exact(s, 20)
    request, flags, size, value = struct.unpack("<IIIQ", reply)
    assert (request, flags & 0x4, size) == (GET_FEATURES, 0x4, 8)
    return value


def recv_exact(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def assert_closed_by_peer(s: socket.socket) -> None:
    try:
        assert s.recv(1) == b""
    except ConnectionResetError:
        pass


# --- command line ---------------------------------------------------------------------

def test_help_lists_the_options():
    r = run("--help")
    assert r.returncode == 0
    for option in ("--blockdev", "--export", "--object", "--pidfile", "cache.direct", "read-only", "num-queues"):
        assert option in r.stdout


@pytest.mark.parametrize("args, words", [
    (["--blockdev", "driver=file,node-name=d0,filenme=x.img"], ["filenme"]),
    (["--blockdev", "driver=null-co,node-name=d0,size=12Q"], ["size"]),
    (["--export", "type=vhost-user-blk,id=e0,node-name=nope,addr.type=unix,addr.path=/tmp/x.sock"], ["nope"]),
    (["--frobnicate"], ["--frobnicate"]),
])
def test_bad_options_fail_with_one_line(args, words):
    r = run(*args)
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0]


def test_missing_image_fails_cleanly(tmp_path):
    sock = tmp_path / "e.sock"
    r = run("--blockdev", f"driver=file,node-name=d0,filename={tmp_path}/absent.img",
            "--export", f"type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path={sock}")
    assert r.returncode != 0
    assert "absent.img" in r.stderr and "d0" in r.stderr
    assert not sock.exists()


def test_second_export_failing_leaves_no_socket_behind(tmp_path):
    """The first export's socket is created, the second's path is bad: nothing stays."""
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 1024 * 1024)
    good = tmp_path / "good.sock"
    r = run("--blockdev", f"driver=file,node-name=d0,filename={image}",
            "--blockdev", "driver=null-co,node-name=n1",
            "--export", f"type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path={good},writable=on",
            "--export", f"type=vhost-user-blk,id=e1,node-name=n1,addr.type=unix,addr.path={tmp_path}/no/such/dir/e1.sock")
    assert r.returncode != 0
    assert "e1" in r.stderr
    assert not good.exists()


def test_locked_image_is_refused_while_another_daemon_writes(tmp_path, daemons):
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 4 * 1024 * 1024)
    daemons(image=image, name="first")
    sock = tmp_path / "second.sock"
    r = run("--blockdev", f"driver=file,node-name=d0,filename={image}",
            "--export", f"type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path={sock},writable=on")
    assert r.returncode != 0
    assert "locked" in r.stderr
    assert not sock.exists()


def test_qemu_img_sees_spindle_lock(tmp_path, daemons):
    """Locks are QEMU's: qemu-img refuses to write an image spindle exports writable."""
    image = tmp_path / "disk.img"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(image), "4M"], check=True)
    daemons(image=image)
    r = subprocess.run(["qemu-io", "-f", "raw", "-c", "write 0 512", str(image)],
                       capture_output=True, text=True)
    assert r.returncode != 0 or "lock" in (r.stdout + r.stderr).lower()
    assert "lock" in (r.stdout + r.stderr).lower()


# --- the vhost-user socket ------------------------------------------------------------

def test_malformed_message_closes_only_that_connection(daemons):
    d = daemons()
    s = d.connect()
    s.sendall(message(SET_VRING_NUM, b"\1\0\0\0"))   # 4 bytes where 8 are due
    assert_closed_by_peer(s)
    assert d.proc.poll() is None
    again = d.connect()
    assert get_features(again) & (1 << 32)              # VERSION_1
    assert "SET_VRING_NUM" in d.output()


def test_unknown_request_closes_the_connection(daemons):
    d = daemons()
    s = d.connect()
    s.sendall(message(999))
    assert_closed_by_peer(s)
    assert get_features(d.connect())
    assert "999" in d.output()


def test_oversized_payload_closes_the_connection(daemons):
    d = daemons()
    s = d.connect()
    s.sendall(struct.pack("<III", 25, VERSION, 1 << 20))  # GET_CONFIG claiming 1 MiB
    assert_closed_by_peer(s)
    assert get_features(d.connect())


def test_second_frontend_is_refused_while_first_is_connected(daemons):
    d = daemons()
    first = d.connect()
    assert get_features(first)
    second = d.connect()
    assert_closed_by_peer(second)
    assert get_features(first)                           # the first is unaffected
    assert "second frontend" in d.output()
    first.close()
    time.sleep(0.5)
    assert get_features(d.connect())                     # and the next one is welcome


def test_sigterm_removes_socket_and_pidfile(daemons):
    d = daemons()
    assert d.stop() == 0
    assert not d.sock.exists()
    assert not d.pidfile.exists()

"""Helpers for the real-guest tests on RBD (test_guest_rbd.py): a fresh image on the session's
Ceph cluster (conftest.py's `ceph`), a Spindle serving it on two queues on two IOThreads,
QEMU's own rbd driver (qemu-io) as the oracle, and a control line from the test to the guest
(a second serial port: the guest cannot be told anything through an image Spindle holds the
exclusive lock of)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

import guestlib

MiB = 1 << 20
SECTOR = 512


def rbd(ceph, *args: str, timeout: float = 120) -> str:
    """The `rbd` CLI with the cluster's configuration (admin's key)."""
    out = subprocess.run(["rbd", "-c", ceph["CEPH_CONF"], *args], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"rbd {' '.join(args)} failed: {out.stderr}"
    return out.stdout


def image_size(ceph, image: str) -> int:
    import json
    return json.loads(rbd(ceph, "info", "--format", "json", f"rbd/{image}"))["size"]


def make_image(ceph, name: str, size: int):
    """A fresh image `name` of `size` bytes; a generator for a fixture (removed afterwards)."""
    subprocess.run(["rbd", "-c", ceph["CEPH_CONF"], "rm", f"rbd/{name}"], capture_output=True, timeout=120)
    rbd(ceph, "create", "--size", f"{size // MiB}M", f"rbd/{name}")
    yield name
    subprocess.run(["rbd", "-c", ceph["CEPH_CONF"], "rm", f"rbd/{name}"], capture_output=True, timeout=120)


def spindle_args(ceph, image: str, sock: Path, qmp: Path, *, allow_inactive: bool) -> list[str]:
    """Spindle serving `image` as node disk0 / export exp0 on two queues, queue 0 on IOThread
    io0 and queue 1 on io1; discards reach the image. `allow_inactive`: the node may be made
    inactive (which releases the exclusive lock); a daemon restarted after a SIGKILL waits
    for its dead predecessor's lock only without it (Daemon+RbdLockRetry.swift), otherwise
    its start fails."""
    return ["--object", f"secret,id=sec0,file={ceph['CEPH_ADMIN_KEY_FILE']},format=base64",
            "--object", "iothread,id=io0", "--object", "iothread,id=io1",
            "--blockdev", f"driver=rbd,node-name=disk0,pool=rbd,image={image},user=admin,key-secret=sec0,"
                          f"conf=/dev/null,server.0.host=127.0.0.1,server.0.port={ceph['CEPH_MON_PORT']},discard=unmap",
            "--export", f"type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path={sock},writable=on,"
                        f"num-queues=2,iothread.0=io0,iothread.1=io1"
                        + (",allow-inactive=on" if allow_inactive else ""),
            "--qmp", str(qmp)]


def needs_qemu_rbd() -> None:
    probe = subprocess.run(["qemu-io", "-f", "raw", "-c", "quit", "rbd:x/y:conf=/dev/null"],
                           capture_output=True, text=True, timeout=60)
    if "Unknown protocol 'rbd'" in probe.stderr:
        pytest.skip("QEMU's rbd driver is missing (apt-get install qemu-block-extra)")


def qemu_io(ceph, image: str, command: str, *, read_only: bool) -> str:
    """One qemu-io command through QEMU's own rbd driver; fails the test on any error
    (a pattern mismatch included)."""
    name = f"rbd:rbd/{image}:conf={ceph['CEPH_CONF']}:id=admin"
    argv = ["qemu-io", *(["-r"] if read_only else []), "-f", "raw", "-c", command, name]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "Pattern verification failed" not in text and "failed" not in text.lower(), \
        f"qemu-io {command!r} on rbd/{image}: rc {out.returncode}\n{text}"
    return text


def log_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def wait_log(path: Path, text: str, timeout: float, start: int = 0) -> float:
    """Waits until `text` appears in the log at `path` after character `start`; returns the
    monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    while text not in log_text(path)[start:]:
        assert time.monotonic() < deadline, f"{path.name}: no '{text}' within {timeout}s\n{guestlib.tail(path, 40)}"
        time.sleep(0.05)
    return time.monotonic()


# Guest side of the control line: fd 3 is the second serial port, raw, no echo.
CONTROL_SH = r"""
exec 3</dev/ttyS1
stty raw -echo <&3
wait_host() {  # wait_host WORD: the next line the test sends must be WORD
    read -r line <&3
    [ "$line" = "$1" ] || { echo "GUEST-ERROR expected '$1' from the host, got '$line'"; return 1; }
}
"""


class ControlLine:
    """The test's end of the guest's second serial port (QEMU listens on a unix socket)."""

    def __init__(self, workdir: Path, name: str = "ctl"):
        self.path = workdir / f"{name}.sock"
        self.sock: socket.socket | None = None

    def qemu_args(self) -> list[str]:
        # A -serial of its own ends -nographic's implicit console: name both ports (ttyS0, ttyS1).
        return ["-serial", "mon:stdio", "-chardev", f"socket,id=ctl0,path={self.path},server=on,wait=off",
                "-serial", "chardev:ctl0"]

    def send(self, word: str) -> None:
        if self.sock is None:
            deadline = time.monotonic() + 60
            while True:
                try:
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.connect(str(self.path))
                    self.sock = s
                    break
                except OSError:
                    s.close()
                    assert time.monotonic() < deadline, f"QEMU's control socket {self.path} did not accept"
                    time.sleep(0.1)
        self.sock.sendall(word.encode() + b"\n")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

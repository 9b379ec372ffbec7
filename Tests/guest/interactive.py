"""Guests that a test talks to while they run: the guest script reports steps on the serial
console (`step NAME` -> "GUEST-INFO step NAME"), the test waits for them and acts through
QMP on spindle and on QEMU (qemu.qmp, unchanged)."""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from pathlib import Path

from qemu.qmp.legacy import QEMUMonitorProtocol

import guestlib
from guestlib import ATTACH_GUEST, GUEST_LIB_SH, GuestRun, guest_artifacts, guest_qemu_args, kill_process, spawn

STEP_HELPER = 'step() { echo "GUEST-INFO step $*"; }\n'


class GuestSession:
    """A running guest. `sock` None means no vhost-user disk at boot (hotplug later)."""

    def __init__(self, workdir: Path, script_body: str, *, sock: Path | None,
                 extra_qemu: list[str] = (), name: str = "guest"):
        kernel, initrd = guest_artifacts()
        self.workdir = workdir
        self.qmp_path = workdir / f"{name}-qemu-qmp.sock"
        script = workdir / f"{name}-script.sh"
        script.write_text(GUEST_LIB_SH.read_text() + "\n" + STEP_HELPER + script_body)
        self.run = GuestRun(serial_log=workdir / f"{name}-serial.log")
        argv = [str(ATTACH_GUEST), str(sock) if sock else "none",
                *guest_qemu_args(script, kernel, initrd),
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off", *extra_qemu]
        self.start = time.monotonic()
        with open(self.run.serial_log, "wb") as log:
            log.write(("$ " + shlex.join(argv) + "\n").encode())
            log.flush()
            self.proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        self._qmp: QEMUMonitorProtocol | None = None

    def text(self) -> str:
        return self.run.serial_log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = guestlib.GUEST_TIMEOUT) -> re.Match:
        """Waits until the serial log matches `pattern` (a regex)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = regex.search(self.text())
            if m:
                return m
            if self.proc.poll() is not None:
                raise AssertionError(f"guest exited before /{pattern}/\n{self.describe()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"guest did not reach /{pattern}/ in {timeout}s\n{self.describe()}")
            time.sleep(0.2)

    def wait_step(self, name: str, timeout: float = guestlib.GUEST_TIMEOUT) -> None:
        self.wait_for(rf"GUEST-INFO step {re.escape(name)}\b", timeout)

    def qemu(self) -> QEMUMonitorProtocol:
        """QEMU's own monitor (chardev-add, device_add, device_del)."""
        if self._qmp is None:
            deadline = time.monotonic() + 30
            while not self.qmp_path.exists():
                assert time.monotonic() < deadline, "QEMU did not create its QMP socket"
                time.sleep(0.1)
            self._qmp = QEMUMonitorProtocol(str(self.qmp_path))
            self._qmp.connect()
        return self._qmp

    def finish(self, timeout: float = guestlib.GUEST_TIMEOUT) -> GuestRun:
        """Waits for the guest to power off (GUEST-DONE), then parses its results."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.run.timed_out = True
                break
            time.sleep(0.2)
        self.close()
        self.run.parse()
        return self.run

    def close(self) -> None:
        if self._qmp is not None:
            try:
                self._qmp.close()
            except Exception:
                pass
            self._qmp = None
        self.run.qemu_rc = kill_process(self.proc, grace=5.0)
        self.run.duration = time.monotonic() - self.start

    def describe(self) -> str:
        self.run.parse()
        return self.run.describe()


def spindle_qmp(path: Path, timeout: float = 30) -> QEMUMonitorProtocol:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"spindle did not create its QMP socket {path}"
        time.sleep(0.05)
    client = QEMUMonitorProtocol(str(path))
    client.connect()
    return client


def ok(client: QEMUMonitorProtocol, command: str, **args) -> object:
    """Runs a QMP command and returns its 'return' value; fails the test on an error reply."""
    reply = client.cmd_raw(command, args or None)
    assert "return" in reply, f"{command} {args} failed: {reply}"
    return reply["return"]


def wait_event(client: QEMUMonitorProtocol, name: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = client.pull_event(wait=max(0.1, deadline - time.monotonic()))
        if event and event.get("event") == name:
            return event
    raise AssertionError(f"no {name} event within {timeout}s")

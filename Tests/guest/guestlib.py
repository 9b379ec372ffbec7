"""Fixture library for the Spindle real-guest tests.

Starts a vhost-user-blk backend (Spindle, or qemu-storage-daemon as the
reference), boots a small Linux guest under QEMU attached to the backend's
socket through qemu-configs/attach-guest.sh, runs a shell script in the guest
and collects the GUEST-* markers it prints on the serial console.

Every process started here runs in its own process group, is registered in a
module-level table and is killed (SIGTERM, then SIGKILL) by the test
finalizers, by an atexit handler, and - should the Python process die without
running either - by the kernel through PR_SET_PDEATHSIG.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import os
import re
import shlex
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

GUEST_DIR = Path(__file__).resolve().parent
REPO = GUEST_DIR.parents[1]
ARTIFACTS = Path(os.environ.get("GUEST_ARTIFACTS", GUEST_DIR / "artifacts"))
QEMU_CONFIGS = REPO / "qemu-configs"
ATTACH_GUEST = QEMU_CONFIGS / "attach-guest.sh"
GUEST_LIB_SH = GUEST_DIR / "guest-lib.sh"

DEFAULT_BACKEND = "qemu-storage-daemon"
# Kernel command line of the test guest.  panic=-1 + QEMU -no-reboot turns a
# guest panic into a QEMU exit instead of a hang.
KERNEL_APPEND = "console=ttyS0 panic=-1 loglevel=4"
GUEST_TIMEOUT = float(os.environ.get("GUEST_TIMEOUT", "300"))
BACKEND_START_TIMEOUT = float(os.environ.get("BACKEND_START_TIMEOUT", "30"))

MARKER_RE = re.compile(r"GUEST-RESULT (\S+) (PASS|FAIL)(?: ([^\r\n]*))?")
INFO_RE = re.compile(r"GUEST-INFO (\S+) ?([^\r\n]*)")
DONE_RE = re.compile(r"GUEST-DONE rc=(\d+)")
ERROR_RE = re.compile(r"GUEST-ERROR ([^\r\n]*)")


# --------------------------------------------------------------------------
# process bookkeeping
# --------------------------------------------------------------------------

_live: dict[int, subprocess.Popen] = {}
_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:
    # Runs in the child between fork and exec: die with the parent.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


def spawn(argv: list[str], **kwargs) -> subprocess.Popen:
    """Start argv in a new session/process group and register it."""
    proc = subprocess.Popen(argv, start_new_session=True,
                            preexec_fn=_child_setup, **kwargs)
    _live[proc.pid] = proc
    return proc


def kill_process(proc: subprocess.Popen, grace: float = 5.0,
                 sig: int = signal.SIGTERM) -> int | None:
    """Signal proc's process group, escalate to SIGKILL after grace seconds."""
    try:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # the group may hold stragglers even when the leader is gone
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        return proc.returncode
    finally:
        _live.pop(proc.pid, None)


def kill_all() -> None:
    for proc in list(_live.values()):
        kill_process(proc, grace=2.0)


atexit.register(kill_all)


def install_signal_handlers() -> None:
    """Make SIGTERM/SIGHUP stop the session like Ctrl-C (KeyboardInterrupt:
    pytest runs the finalizers and stops), after killing our children."""
    def handler(signum, frame):
        kill_all()
        raise KeyboardInterrupt(f"signal {signum}")
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, handler)


def tail(path: Path, lines: int = 200) -> str:
    try:
        data = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"<{path} missing>"
    return "\n".join(data[-lines:])


def file_sha256(path: Path) -> str:
    """SHA-256 of a whole file (an image), read 4 MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------
# backend
# --------------------------------------------------------------------------

def backend_binary() -> str:
    return os.environ.get("SPINDLE_BIN") or DEFAULT_BACKEND


def file_export_args(image: Path, sock: Path, *, writable: bool = True,
                     direct: bool = False, node_read_only: bool = False,
                     extra_node_opts: str = "") -> list[str]:
    """qsd-compatible command line exporting a raw file."""
    node = f"driver=file,node-name=disk0,filename={image}"
    if direct:
        node += ",cache.direct=on"
    if node_read_only:
        node += ",read-only=on"
    if extra_node_opts:
        node += "," + extra_node_opts
    export = ("type=vhost-user-blk,id=exp0,node-name=disk0,"
              f"addr.type=unix,addr.path={sock}")
    if writable:
        export += ",writable=on"
    return ["--blockdev", node, "--export", export]


def null_export_args(sock: Path, *, size: int = 64 * 1024 * 1024,
                     read_zeroes: bool = True,
                     writable: bool = True) -> list[str]:
    # qsd 7.2 rejects suffixed sizes ("64M") here: 'size' expects integer
    node = f"driver=null-co,node-name=n0,size={size}"
    if read_zeroes:
        node += ",read-zeroes=on"
    export = ("type=vhost-user-blk,id=exp0,node-name=n0,"
              f"addr.type=unix,addr.path={sock}")
    if writable:
        export += ",writable=on"
    return ["--blockdev", node, "--export", export]


class Backend:
    def __init__(self, binary: str, workdir: Path, name: str = "backend"):
        self.binary = binary
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.pidfile = workdir / f"{name}.pid"
        self.proc: subprocess.Popen | None = None
        self.argv: list[str] = []
        self.exit_code: int | None = None

    def start(self, args: list[str], sock: Path,
              timeout: float = BACKEND_START_TIMEOUT) -> None:
        self.argv = [self.binary, *args, "--pidfile", str(self.pidfile)]
        with open(self.log_path, "wb") as log:
            log.write(("$ " + shlex.join(self.argv) + "\n").encode())
            log.flush()
            self.proc = spawn(self.argv, stdin=subprocess.DEVNULL,
                              stdout=log, stderr=subprocess.STDOUT,
                              cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"backend exited with {self.proc.returncode} before "
                    f"creating {sock}:\n{tail(self.log_path)}")
            try:
                if stat.S_ISSOCK(os.stat(sock).st_mode):
                    return
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline:
                self.stop(grace=2.0)
                raise RuntimeError(f"backend did not create {sock} within "
                                   f"{timeout}s:\n{tail(self.log_path)}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> int | None:
        if self.proc is not None:
            self.exit_code = kill_process(self.proc, grace=grace)
        return self.exit_code


# --------------------------------------------------------------------------
# guest
# --------------------------------------------------------------------------

@dataclass
class GuestRun:
    serial_log: Path
    qemu_rc: int | None = None
    timed_out: bool = False
    done_rc: int | None = None
    results: dict[str, tuple[str, str]] = field(default_factory=dict)
    infos: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    duration: float = 0.0

    @property
    def text(self) -> str:
        return self.serial_log.read_text(errors="replace")

    def parse(self) -> None:
        text = self.text
        for m in MARKER_RE.finditer(text):
            # a name reported twice keeps its first FAIL
            if self.results.get(m.group(1), ("PASS",))[0] != "FAIL":
                self.results[m.group(1)] = (m.group(2), m.group(3) or "")
        for m in INFO_RE.finditer(text):
            self.infos[m.group(1)] = m.group(2).strip()
        self.errors = [m.group(1) for m in ERROR_RE.finditer(text)]
        m = DONE_RE.search(text)
        self.done_rc = int(m.group(1)) if m else None

    def describe(self) -> str:
        res = "\n".join(f"  {k}: {v[0]} {v[1]}" for k, v in self.results.items())
        return (f"qemu rc={self.qemu_rc} timed_out={self.timed_out} "
                f"guest rc={self.done_rc} ({self.duration:.1f}s)\n"
                f"results:\n{res or '  <none>'}\n"
                f"--- serial log tail ({self.serial_log}) ---\n"
                f"{tail(self.serial_log, 80)}")

    def assert_passed(self, *names: str) -> None:
        """The guest completed and every named check (and every other
        reported check) passed."""
        problems = []
        if self.timed_out:
            problems.append("guest timed out")
        if self.done_rc is None:
            problems.append("guest did not reach GUEST-DONE")
        problems += [f"guest error: {e}" for e in self.errors]
        for n in names:
            if n not in self.results:
                problems.append(f"missing result {n}")
        for n, (status, detail) in self.results.items():
            if status != "PASS":
                problems.append(f"{n} FAILED {detail}")
        assert not problems, "; ".join(problems) + "\n" + self.describe()


def guest_artifacts() -> tuple[Path, Path]:
    kernel = ARTIFACTS / "vmlinuz"
    initrd = ARTIFACTS / "initramfs.cpio.gz"
    missing = [str(p) for p in (kernel, initrd) if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"guest artifacts missing ({', '.join(missing)}); "
            f"run {GUEST_DIR / 'build-guest.sh'}")
    return kernel, initrd


def guest_qemu_args(script: Path, kernel: Path, initrd: Path,
                    append: str = KERNEL_APPEND) -> list[str]:
    """Extra QEMU args (after SOCK) that boot the test guest with script."""
    return ["-kernel", str(kernel), "-initrd", str(initrd),
            "-append", append,
            "-fw_cfg", f"name=opt/spindle/script,file={script}"]


def run_guest(sock: Path, script_body: str, workdir: Path, name: str = "guest",
              timeout: float = GUEST_TIMEOUT) -> GuestRun:
    """Boot the test guest on sock, run script_body, wait for power-off."""
    kernel, initrd = guest_artifacts()
    script = workdir / f"{name}-script.sh"
    script.write_text(GUEST_LIB_SH.read_text() + "\n" + script_body)
    run = GuestRun(serial_log=workdir / f"{name}-serial.log")
    argv = [str(ATTACH_GUEST), str(sock),
            *guest_qemu_args(script, kernel, initrd)]
    start = time.monotonic()
    with open(run.serial_log, "wb") as log:
        log.write(("$ " + shlex.join(argv) + "\n").encode())
        log.flush()
        proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=log,
                     stderr=subprocess.STDOUT, cwd=workdir)
    try:
        deadline = start + timeout
        done_seen_at = None
        while proc.poll() is None:
            now = time.monotonic()
            if now > deadline:
                run.timed_out = True
                break
            if done_seen_at is None and b"GUEST-DONE" in run.serial_log.read_bytes():
                done_seen_at = now
            # poweroff -f follows GUEST-DONE immediately; do not wait forever
            if done_seen_at is not None and now - done_seen_at > 60:
                run.timed_out = True
                break
            time.sleep(0.2)
    finally:
        run.qemu_rc = kill_process(proc, grace=5.0)
        run.duration = time.monotonic() - start
    run.parse()
    return run

"""Live migration rigs: two Spindle daemons sharing one image, QEMUs that hand one guest back
and forth through qemu-configs/migrate.sh, a mailbox block through which the test tells the
guest when to act, and the daemons' vring-base log lines.

Every process is started through guestlib.spawn (own process group, killed by the test
finalizers, atexit and PR_SET_PDEATHSIG), so nothing survives a failed test.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import guestlib
from guestlib import ATTACH_GUEST, GUEST_LIB_SH, QEMU_CONFIGS, Backend, GuestRun, kill_process, spawn

sys.path.insert(0, str(QEMU_CONFIGS))
import qmp as qmp_helper  # noqa: E402  (qemu-configs/qmp.py, the script's own helper)

MIGRATE_SH = QEMU_CONFIGS / "migrate.sh"
MAILBOX_OFFSET = 60 * 1024 * 1024   # guest-lib.sh's MAILBOX_BLOCK (15360) x 4 KiB
STEP_HELPER = 'step() { echo "GUEST-INFO step $*"; }\n'
GUEST_RAM = "384M"

SET_BASE_RE = re.compile(r"queue (\d+): SET_VRING_BASE (\d+)")
GET_BASE_RE = re.compile(r"queue (\d+): GET_VRING_BASE answered (\d+)")


def qmp(path: Path, command: str, **args) -> object:
    """One QMP command on its own connection (a QEMU monitor serves one client at a time)."""
    return qmp_helper.execute(str(path), command, args or None)


def crawl_after_first_pass(qemu: "Qemu", bandwidth: int) -> None:
    """Lowers QEMU's max-bandwidth as the first pass ends (less than 16 MiB of it left, polled
    every 50 ms: the zero pages at its end go by fast), so that the following passes take
    long enough for some guest write to land in each and the migration keeps iterating
    (with a small downtime limit) until the test raises the bandwidth again."""
    def near_end() -> bool:
        ram = qemu.migration().get("ram", {})
        return ram.get("dirty-sync-count", 0) >= 2 or 0 < ram.get("remaining", 1 << 40) < 16 * 1024 * 1024
    wait_until("the end of the first pass", near_end, 120, 0.05)
    qemu.cmd("migrate-set-parameters", **{"max-bandwidth": bandwidth})


def write_mailbox(image: Path, word: str) -> None:
    with open(image, "r+b") as f:
        f.seek(MAILBOX_OFFSET)
        f.write(word.encode().ljust(4096, b"\0"))
        f.flush()
        os.fsync(f.fileno())


def wait_until(what: str, predicate, timeout: float = 120, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(interval)


class Daemon:
    """One Spindle with a QMP monitor, exporting `image` (node disk0, export exp0)."""

    def __init__(self, binary: str, workdir: Path, name: str, image: Path, *,
                 active: bool = True, export_opts: str = ""):
        self.name = name
        self.sock = workdir / f"{name}.sock"
        self.qmp_path = workdir / f"{name}-qmp.sock"
        node = f"driver=file,node-name=disk0,filename={image}" + ("" if active else ",active=off")
        export = (f"type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path={self.sock},"
                  f"writable=on,num-queues=1,serial=mig-disk,allow-inactive=on{export_opts}")
        self.backend = Backend(binary, workdir, name)
        self.backend.start(["--blockdev", node, "--export", export, "--qmp", str(self.qmp_path)], self.sock)
        wait_until(f"{name}'s QMP socket", self.qmp_path.exists, 30)

    @property
    def log_path(self) -> Path:
        return self.backend.log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def attach_args(self) -> list[str]:
        """attach-guest.sh's arguments for this disk (SOCK, then any extra QEMU args)."""
        return [str(self.sock)]

    def node_active(self) -> bool:
        nodes = qmp(self.qmp_path, "query-named-block-nodes")
        return next(n for n in nodes if n.get("node-name") == "disk0").get("active")

    def stop(self) -> None:
        self.backend.stop(grace=10)


class Qemu:
    """One QEMU of the migrating guest: same machine, kernel, script and disk line every time,
    attached to `daemon`'s socket (its attach_args(); any object with attach_args() and a
    name ending in the side's letter will do); `incoming` (a unix: URI) makes it a
    migration destination. Two monitors: `qmp_path` for migrate.sh, `test_qmp` for the test."""

    def __init__(self, workdir: Path, name: str, daemon: Daemon, script: Path, append: str,
                 incoming: str | None = None):
        kernel, initrd = guestlib.guest_artifacts()
        self.name = name
        self.qmp_path = workdir / f"{name}-qmp.sock"
        self.test_qmp = workdir / f"{name}-test-qmp.sock"
        self.serial_log = workdir / f"{name}-serial.log"
        argv = [str(ATTACH_GUEST), *daemon.attach_args(), *guestlib.guest_qemu_args(script, kernel, initrd, append),
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
                "-qmp", f"unix:{self.test_qmp},server=on,wait=off",
                # Which side the guest runs on (guest-lib.sh host_side): read from the QEMU
                # that runs it, without disk I/O. Same size on every QEMU.
                "-fw_cfg", f"name=opt/spindle/host,string={daemon.name[-1]}"]
        if incoming:
            argv += ["-incoming", incoming]
        env = dict(os.environ, GUEST_RAM=GUEST_RAM)
        with open(self.serial_log, "wb") as log:
            log.write(("$ " + shlex.join(argv) + "\n").encode())
            log.flush()
            self.proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                              cwd=workdir, env=env)
        wait_until(f"{name}'s monitor", lambda: self.test_qmp.exists() or self.proc.poll() is not None, 30)
        assert self.proc.poll() is None, f"{name} exited at once:\n{guestlib.tail(self.serial_log, 30)}"
        if incoming:   # listening once its main loop answers the monitor
            self.status()

    def cmd(self, command: str, **args) -> object:
        return qmp(self.test_qmp, command, **args)

    def status(self) -> str:
        return self.cmd("query-status")["status"]

    def migration(self) -> dict:
        return self.cmd("query-migrate")

    def text(self) -> str:
        return self.serial_log.read_text(errors="replace")

    def exited(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self) -> None:
        kill_process(self.proc, grace=5)


class MigrationRig:
    """A guest that runs on a sequence of QEMUs; its serial output is their logs in order."""

    def __init__(self, workdir: Path, script_body: str, append: str = guestlib.KERNEL_APPEND):
        self.workdir = workdir
        self.script = workdir / "guest-script.sh"
        self.script.write_text(GUEST_LIB_SH.read_text() + "\n" + STEP_HELPER + script_body)
        self.append = append
        self.qemus: list[Qemu] = []
        self.daemons: list[Daemon] = []
        self.migrations = 0

    def daemon(self, name: str, image: Path, **kwargs) -> Daemon:
        d = Daemon(os.environ["SPINDLE_BIN"], self.workdir, name, image, **kwargs)
        self.daemons.append(d)
        return d

    def qemu(self, daemon: Daemon, incoming: bool = False) -> Qemu:
        uri = None
        if incoming:
            self.migrations += 1
            uri = f"unix:{self.workdir / f'migration{self.migrations}.sock'}"
        q = Qemu(self.workdir, f"qemu{len(self.qemus)}", daemon, self.script, self.append, uri)
        q.incoming = uri
        self.qemus.append(q)
        return q

    def text(self) -> str:
        return "".join(q.text() for q in self.qemus)

    def wait_step(self, name: str, timeout: float = guestlib.GUEST_TIMEOUT) -> None:
        pattern = re.compile(rf"GUEST-INFO step {re.escape(name)}\b")
        wait_until(f"guest step {name}\n{guestlib.tail(self.qemus[-1].serial_log, 40)}",
                   lambda: pattern.search(self.text()), timeout)

    def migrate_sh(self, *args: str, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
        """Runs qemu-configs/migrate.sh; its output goes to migrate-N.log."""
        log_path = self.workdir / f"migrate-sh-{len(list(self.workdir.glob('migrate-sh-*.log')))}.log"
        log = open(log_path, "wb")
        log.write(("$ " + shlex.join([str(MIGRATE_SH), *args]) + "\n").encode())
        log.flush()
        proc = spawn([str(MIGRATE_SH), *args], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        proc.log_path, proc.log_file = log_path, log
        if not wait:
            return proc
        self.wait_background(proc)
        return subprocess.CompletedProcess(proc.args, proc.returncode, log_path.read_text(errors="replace"))

    @staticmethod
    def wait_background(proc: subprocess.Popen, timeout: float = 600) -> int | None:
        """Waits for a migrate.sh started with wait=False; returns its exit status."""
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            kill_process(proc, grace=5)
            proc.log_file.close()
        return proc.returncode

    def migrate_args(self, src: Qemu, dst: Qemu, src_d: Daemon, dst_d: Daemon) -> list[str]:
        return [str(src.qmp_path), str(dst.qmp_path), str(src_d.qmp_path), str(dst_d.qmp_path), dst.incoming]

    def finish(self, timeout: float = guestlib.GUEST_TIMEOUT) -> GuestRun:
        """Waits for the guest to power off on the last QEMU; parses every QEMU's serial log."""
        last = self.qemus[-1]
        run = GuestRun(serial_log=last.serial_log, timed_out=not last.exited(timeout))
        self.stop()
        combined = self.workdir / "guest-serial-all.log"
        combined.write_text(self.text())
        run.serial_log = combined
        run.parse()
        return run

    def stop(self) -> None:
        for q in self.qemus:
            q.stop()
        for d in self.daemons:
            d.stop()


def vring_bases(log: str, regex: re.Pattern) -> list[tuple[int, int]]:
    return [(int(q), int(b)) for q, b in regex.findall(log)]


def last_per_queue(pairs: list[tuple[int, int]]) -> dict[int, int]:
    return {q: b for q, b in pairs}


def first_per_queue(pairs: list[tuple[int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for q, b in pairs:
        out.setdefault(q, b)
    return out

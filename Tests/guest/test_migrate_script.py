"""qemu-configs/migrate.sh without a guest: two real QEMUs (firmware only, disks served by
qemu-storage-daemon null-co exports, which offer dirty logging) migrate while two stand-in
daemon monitors record when and in which order the script hands the image over. Checks the
script's sequencing and its ways back, not the daemons (test_guest_migration.py does that)."""

from __future__ import annotations

import json
import re
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

import guestlib
from migrationlib import MIGRATE_SH, qmp, wait_until

QSD = "qemu-storage-daemon"
pytestmark = pytest.mark.skipif(shutil.which(QSD) is None or shutil.which("qemu-system-x86_64") is None,
                                reason="needs qemu-storage-daemon and qemu-system-x86_64")


class FakeDaemonMonitor:
    """A QMP monitor answering query-named-block-nodes and blockdev-set-active for node disk0,
    recording each change with QEMU A's migration status at that moment."""

    def __init__(self, path: Path, name: str, active: bool, source_qemu_qmp: Path, journal: list,
                 refuse_inactivation: bool = False):
        self.name, self.active, self.journal = name, active, journal
        self.source_qemu_qmp, self.refuse = source_qemu_qmp, refuse_inactivation
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn, conn.makefile("rwb") as f:
                f.write(b'{"QMP": {"version": {}, "capabilities": []}}\n')
                f.flush()
                for line in f:
                    f.write(json.dumps(self._answer(json.loads(line))).encode() + b"\n")
                    f.flush()

    def _answer(self, request: dict) -> dict:
        cmd, args = request["execute"], request.get("arguments", {})
        if cmd == "query-named-block-nodes":
            return {"return": [{"node-name": "disk0", "active": self.active}]}
        if cmd == "blockdev-set-active":
            status = qmp(self.source_qemu_qmp, "query-migrate").get("status")
            if self.refuse and not args["active"]:
                self.journal.append((self.name, "refused", status))
                return {"error": {"class": "GenericError", "desc": "export exp0 does not allow inactive nodes"}}
            self.active = args["active"]
            self.journal.append((self.name, args["active"], status))
        return {"return": {}}

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def rig(tmp_path):
    """QEMU A running, QEMU B waiting with -incoming, each on its own qsd null-co export."""
    procs, env = {}, dict(os.environ, GUEST_RAM="128M")
    sockdir = tmp_path
    for side in ("a", "b"):
        backend = guestlib.Backend(QSD, tmp_path, f"qsd-{side}")
        sock = sockdir / f"vu-{side}.sock"
        backend.start(["--blockdev", "driver=null-co,node-name=n0,size=67108864",
                       "--export", f"type=vhost-user-blk,id=exp0,node-name=n0,addr.type=unix,addr.path={sock},"
                                   "writable=on"], sock)
        procs[f"qsd-{side}"] = backend
        argv = [str(guestlib.ATTACH_GUEST), str(sock), "-nic", "none", "-qmp", f"unix:{tmp_path}/qemu-{side}.qmp,server=on,wait=off",
                "-qmp", f"unix:{tmp_path}/qemu-{side}-test.qmp,server=on,wait=off"]
        if side == "b":
            argv += ["-incoming", f"unix:{tmp_path}/migration.sock"]
        log = open(tmp_path / f"qemu-{side}.log", "wb")
        procs[f"qemu-{side}"] = guestlib.spawn(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                               env=env)
        wait_until(f"QEMU {side}'s monitor", (tmp_path / f"qemu-{side}-test.qmp").exists, 30)
    yield tmp_path
    for p in procs.values():
        p.stop() if isinstance(p, guestlib.Backend) else guestlib.kill_process(p)


def run_script(d: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(MIGRATE_SH), *args], capture_output=True, text=True, timeout=120)


def migrate(d: Path, *options: str) -> subprocess.CompletedProcess:
    return run_script(d, *options, "migrate", f"{d}/qemu-a.qmp", f"{d}/qemu-b.qmp", f"{d}/spindle-a.qmp",
                      f"{d}/spindle-b.qmp", f"unix:{d}/migration.sock")


def daemons(d: Path, journal: list, a_active=True, b_active=False, a_refuses=False):
    src = d / "qemu-a-test.qmp"
    return (FakeDaemonMonitor(d / "spindle-a.qmp", "A", a_active, src, journal, a_refuses),
            FakeDaemonMonitor(d / "spindle-b.qmp", "B", b_active, src, journal))


def test_hands_the_image_over_at_pre_switchover(rig):
    journal: list = []
    a, b = daemons(rig, journal)
    r = migrate(rig)
    assert r.returncode == 0, r.stderr
    assert journal == [("A", False, "pre-switchover"), ("B", True, "pre-switchover")]
    assert qmp(rig / "qemu-a-test.qmp", "query-migrate")["status"] == "completed"
    assert qmp(rig / "qemu-b-test.qmp", "query-status")["status"] == "running"
    assert re.match(r"completed total \d+ ms, downtime \d+ ms, \d+ dirty-sync passes, \d+ MiB sent", r.stdout), r.stdout


def test_cancel_at_switchover_gives_the_image_back(rig):
    journal: list = []
    a, b = daemons(rig, journal)
    r = migrate(rig, "--cancel-at-switchover")
    assert r.returncode == 3, r.stderr
    assert [j[:2] for j in journal] == [("A", False), ("B", True), ("B", False), ("A", True)]
    assert all(j[2] == "pre-switchover" for j in journal), journal
    assert a.active and not b.active
    assert qmp(rig / "qemu-a-test.qmp", "query-migrate")["status"] == "cancelled"
    assert qmp(rig / "qemu-a-test.qmp", "query-status")["status"] == "running"


def test_source_refusing_inactivation_cancels_and_keeps_the_guest_on_a(rig):
    journal: list = []
    a, b = daemons(rig, journal, a_refuses=True)
    r = migrate(rig)
    assert r.returncode == 1
    assert "allow-inactive" in r.stderr
    assert journal == [("A", "refused", "pre-switchover")]
    assert a.active and not b.active
    assert qmp(rig / "qemu-a-test.qmp", "query-status")["status"] == "running"


def test_refuses_an_active_destination_before_starting(rig):
    journal: list = []
    daemons(rig, journal, b_active=True)
    r = migrate(rig)
    assert r.returncode == 1 and "active=off" in r.stderr
    assert journal == [] and "status" not in qmp(rig / "qemu-a-test.qmp", "query-migrate")


def test_no_handover_migrates_without_touching_the_daemons(rig):
    """--no-handover (qsd 7.2 without blockdev-set-active, disks QEMU serves itself): no node
    check (B's node is active here, which would stop the script otherwise) and no
    blockdev-set-active (test_guest_migration_oracle.py passes "-" for the monitors)."""
    journal: list = []
    daemons(rig, journal, b_active=True)
    r = migrate(rig, "--no-handover")
    assert r.returncode == 0, r.stderr
    assert "no handover" in r.stderr
    assert journal == []
    assert qmp(rig / "qemu-a-test.qmp", "query-migrate")["status"] == "completed"
    assert qmp(rig / "qemu-b-test.qmp", "query-status")["status"] == "running"


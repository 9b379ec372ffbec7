"""Issue 16, part 10: a real guest whose disk was hot-plugged over QMP keeps running across
daemon crashes because --state-file brings the export back. The guest runs fio randwrite
with verify (test_guest_restart's script) on a vhost-user-blk chardev with reconnect=1; the
daemon, started with only --qmp and --state-file, is SIGKILLed and started again with the
same command line: the replayed state re-creates the IOThread, the node and the export, the
guest reconnects, fio ends with zero errors."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from guestlib import Backend, kill_process
from interactive import GuestSession, ok, spindle_qmp
from test_guest_restart import GUEST_SCRIPT, wait_for_log

MiB = 1024 * 1024
SPINDLE = os.environ.get("SPINDLE_BIN", "")
KILLS = 2

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle")]


def test_guest_on_a_hot_plugged_export_survives_sigkill_and_restart(tmp_path, monkeypatch):
    monkeypatch.setenv("SPINDLE_LOG_LEVEL", "debug")
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(64 * MiB)
    sock = tmp_path / "vu.sock"
    qmp = tmp_path / "qmp.sock"
    args = ["--qmp", str(qmp), "--state-file", str(tmp_path / "state.json")]
    backends: list[Backend] = []

    def start_daemon() -> Backend:
        backend = Backend(SPINDLE, tmp_path, f"spindle{len(backends)}")
        backends.append(backend)
        backend.start(args, qmp)
        return backend

    guest = None
    try:
        daemon = start_daemon()
        client = spindle_qmp(qmp)
        ok(client, "object-add", **{"qom-type": "iothread", "id": "io1"})
        ok(client, "blockdev-add", **{"driver": "file", "node-name": "disk0", "filename": str(image)})
        ok(client, "block-export-add", **{"type": "vhost-user-blk", "id": "exp0", "node-name": "disk0", "iothread": "io1",
                                           "num-queues": 1, "writable": True, "addr": {"type": "unix", "path": str(sock)}})
        ok(client, "blockdev-add", **{"driver": "null-co", "node-name": "spare"})
        ok(client, "block-export-add", **{"type": "vhost-user-blk", "id": "exp1", "node-name": "spare",
                                           "addr": {"type": "unix", "path": str(tmp_path / "spare.sock")}})
        client.close()
        guest = GuestSession(tmp_path, GUEST_SCRIPT, sock=None, name="statefile", extra_qemu=[
            "-chardev", f"socket,id=vr0,path={sock},reconnect=1",
            "-device", "vhost-user-blk-pci,id=vublk0,chardev=vr0,num-queues=1"])
        guest.wait_step("fio-started")
        for _ in range(KILLS):
            wait_for_log(daemon.log_path, "queue started", timeout=120)
            time.sleep(3)
            assert "GUEST-INFO step fio-done" not in guest.text(), "fio finished before the kills"
            kill_process(daemon.proc, grace=0, sig=signal.SIGKILL)
            daemon = start_daemon()
            wait_for_log(daemon.log_path, "entries replayed", timeout=30)
        wait_for_log(daemon.log_path, "queue started", timeout=120)
        run = guest.finish()
        client = spindle_qmp(qmp)
        assert {e["id"] for e in ok(client, "query-block-exports")} == {"exp0", "exp1"}
        client.close()
    finally:
        if guest:
            guest.close()
        for backend in backends:
            backend.stop()
    run.assert_passed("disk-present", "fio-verify", "no-io-errors")
    assert backends[-1].exit_code == 0

"""--state-file and systemd's sd_notify, end to end without a guest: a real spindle killed
with SIGKILL and started again with the same command line, QMP through qemu.qmp, a
NOTIFY_SOCKET datagram listener in place of systemd. (The guest that keeps writing across
the restart is test_guest_state_file.py.)"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from guestlib import Backend, kill_process
from interactive import ok, spindle_qmp, wait_event

SPINDLE = os.environ.get("SPINDLE_BIN", "")
BENCH = Path(SPINDLE).with_name("spindle-bench") if SPINDLE else Path("/nonexistent")
pytestmark = pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle")

MiB = 1 << 20


def command_line(tmp: Path) -> list[str]:
    """The fixed part: one command-line node with an export, one spare node, QMP, the state."""
    return ["--blockdev", "driver=null-co,node-name=n0,size=64M",
            "--blockdev", "driver=null-co,node-name=spare,size=64M",
            "--export", f"type=vhost-user-blk,id=exp0,node-name=n0,addr.type=unix,addr.path={tmp / 'exp0.sock'}",
            "--qmp", str(tmp / "qmp.sock"), "--state-file", str(tmp / "state.json")]


def start(tmp: Path, name: str = "spindle") -> Backend:
    backend = Backend(SPINDLE, tmp, name)
    backend.start(command_line(tmp), tmp / "qmp.sock")
    # After a SIGKILL the old socket file is still there: wait for the new listener.
    deadline = time.monotonic() + 30
    while not accepts(tmp / "qmp.sock"):
        assert backend.alive() and time.monotonic() < deadline, f"spindle did not start: {backend.log_path.read_text()}"
        time.sleep(0.05)
    return backend


def sigkill(backend: Backend) -> None:
    kill_process(backend.proc, grace=0, sig=signal.SIGKILL)


def accepts(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def bench(sock: Path, rw: str, seconds: int = 1) -> dict:
    run = subprocess.run([str(BENCH), "--socket", str(sock), "--queues", "1", "--cpus", "none", "--iodepth", "8",
                          "--bs", "4k", "--rw", rw, "--size", str(16 * MiB), "--runtime", str(seconds), "--ramp", "0",
                          "--json-only"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench beside spindle")
def test_hot_plugged_exports_and_iothread_are_back_after_sigkill(tmp_path):
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(16 * MiB))
    first = start(tmp_path, "first")
    second = third = None
    try:
        client = spindle_qmp(tmp_path / "qmp.sock")
        ok(client, "object-add", **{"qom-type": "iothread", "id": "io1"})
        ok(client, "blockdev-add", **{"driver": "file", "node-name": "disk", "filename": str(image)})
        ok(client, "block-export-add", **{"type": "vhost-user-blk", "id": "e1", "node-name": "disk", "iothread": "io1",
                                           "writable": True, "addr": {"type": "unix", "path": str(tmp_path / "e1.sock")}})
        ok(client, "block-export-add", **{"type": "vhost-user-blk", "id": "e2", "node-name": "spare",
                                           "addr": {"type": "unix", "path": str(tmp_path / "e2.sock")}})
        assert bench(tmp_path / "e1.sock", "randwrite")["errors"] == 0
        written = sha256(image)  # what the guest-side writes left before the kill
        client.close()
        sigkill(first)

        second = start(tmp_path, "second")
        client = spindle_qmp(tmp_path / "qmp.sock")
        exports = {e["id"]: e["node-name"] for e in ok(client, "query-block-exports")}
        assert exports == {"exp0": "n0", "e1": "disk", "e2": "spare"}
        assert [t["id"] for t in ok(client, "query-iothreads")] == ["io1"]
        assert all(accepts(tmp_path / f"{e}.sock") for e in ("exp0", "e1", "e2"))
        assert bench(tmp_path / "e1.sock", "randread")["errors"] == 0
        assert sha256(image) == written

        # Deletions are recorded too: a deleted export, and a command-line one, stay gone.
        ok(client, "block-export-del", id="e2")
        ok(client, "block-export-del", id="exp0")
        client.close()
        sigkill(second)
        third = start(tmp_path, "third")
        client = spindle_qmp(tmp_path / "qmp.sock")
        assert [e["id"] for e in ok(client, "query-block-exports")] == ["e1"]
        assert not (tmp_path / "e2.sock").exists() and not (tmp_path / "exp0.sock").exists()
        client.close()
    finally:
        for backend in (first, second, third):
            if backend:
                backend.stop()


@pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench beside spindle")
def test_io_limits_are_still_in_force_after_sigkill(tmp_path):
    """Part 10: a throttle group and a throttle node added over QMP, the group's limit changed
    with qom-set, and block_set_io_throttle on a command-line export all come back after
    SIGKILL + restart with the same command line, and a client through the export is held to
    the changed limit."""
    first = start(tmp_path, "first")
    second = None
    try:
        client = spindle_qmp(tmp_path / "qmp.sock")
        ok(client, "object-add", **{"qom-type": "throttle-group", "id": "tg1", "limits": {"iops-total": 1000}})
        ok(client, "blockdev-add", **{"driver": "throttle", "node-name": "t1", "throttle-group": "tg1", "file": "spare"})
        ok(client, "block-export-add", **{"type": "vhost-user-blk", "id": "e3", "node-name": "t1",
                                           "addr": {"type": "unix", "path": str(tmp_path / "e3.sock")}})
        ok(client, "qom-set", path="tg1", property="limits", value={"iops-total": 300})
        ok(client, "block_set_io_throttle", id="exp0", bps=0, bps_rd=0, bps_wr=0, iops=200, iops_rd=0, iops_wr=0)
        client.close()
        sigkill(first)

        second = start(tmp_path, "second")
        client = spindle_qmp(tmp_path / "qmp.sock")
        assert ok(client, "qom-get", path="tg1", property="limits")["iops-total"] == 300
        assert ok(client, "qom-get", path="exp0", property="limits")["iops-total"] == 200
        nodes = {n["node-name"]: n["drv"] for n in ok(client, "query-named-block-nodes")}
        assert nodes.get("t1") == "throttle" and nodes.get("#throttle-exp0") == "throttle", nodes
        exports = {e["id"]: e["node-name"] for e in ok(client, "query-block-exports")}
        assert exports == {"exp0": "n0", "e3": "t1"}, exports
        result = bench(tmp_path / "e3.sock", "randread", seconds=2)
        assert result["errors"] == 0
        # The bucket lets a burst of about one second's worth through at the start.
        assert result["ios"] <= 300 * result["duration_s"] * 1.05 + 300, result
        client.close()
    finally:
        for backend in (first, second):
            if backend:
                backend.stop()


def failed_start(tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run([SPINDLE, *command_line(tmp)], capture_output=True, text=True, timeout=60)


def test_a_truncated_or_corrupt_state_file_is_refused_and_kept(tmp_path):
    backend = start(tmp_path)
    try:
        client = spindle_qmp(tmp_path / "qmp.sock")
        ok(client, "blockdev-add", **{"driver": "null-co", "node-name": "n1"})
        ok(client, "blockdev-add", **{"driver": "null-co", "node-name": "n2"})
        client.close()
    finally:
        backend.stop()
    state = tmp_path / "state.json"
    good = state.read_bytes()
    assert json.loads(good)["entries"][1] == {"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n2"}}
    previous = json.loads((tmp_path / "state.json.bak").read_bytes())  # the generation before
    assert len(previous["entries"]) == 1 and previous["generation"] == json.loads(good)["generation"] - 1

    state.write_bytes(good[:len(good) // 2])
    refused = failed_start(tmp_path)
    assert refused.returncode == 78  # EX_CONFIG: the unit's RestartPreventExitStatus
    assert f"spindle: state file '{state}': it is truncated" in refused.stderr, refused.stderr
    assert state.read_bytes() == good[:len(good) // 2]  # nothing rewrote it

    state.write_bytes(good.replace(b'"n2"', b'"n3"'))
    refused = failed_start(tmp_path)
    assert refused.returncode == 78
    assert f"spindle: state file '{state}': its checksum does not match" in refused.stderr, refused.stderr
    assert not (tmp_path / "exp0.sock").exists()  # the command line's export was taken down again


def test_an_entry_that_cannot_be_applied_names_itself(tmp_path):
    image = tmp_path / "gone.img"
    image.write_bytes(bytes(MiB))
    backend = start(tmp_path)
    try:
        client = spindle_qmp(tmp_path / "qmp.sock")
        ok(client, "blockdev-add", **{"driver": "file", "node-name": "img", "filename": str(image)})
        client.close()
    finally:
        backend.stop()
    image.unlink()
    refused = failed_start(tmp_path)
    assert refused.returncode != 0
    lines = [line for line in refused.stderr.splitlines() if line.startswith("spindle: ")]
    assert len(lines) == 1 and lines[0].startswith(f"spindle: state file '{tmp_path / 'state.json'}' entry 0 (blockdev-add node 'img'): "), refused.stderr


def notify_listener(name: str) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(name if not name.startswith("@") else "\0" + name[1:])
    listener.settimeout(60)
    return listener


def status_until(listener: socket.socket, expected: str) -> None:
    """Reads sd_notify datagrams until `expected` arrives (the listener's timeout bounds it)."""
    seen = []
    while True:
        message = listener.recv(4096).decode()
        if message == expected:
            return
        assert message.startswith("STATUS=") and len(seen) < 20, f"waiting for {expected!r}, got {seen + [message]}"
        seen.append(message)


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_sd_notify_ready_once_the_export_accepts_and_stopping_on_sigterm(tmp_path, abstract):
    name = f"@spindle-notify-{os.getpid()}-{time.monotonic_ns()}" if abstract else str(tmp_path / "notify.sock")
    listener = notify_listener(name)
    log = open(tmp_path / "spindle.log", "w+")
    proc = subprocess.Popen([SPINDLE, *command_line(tmp_path)], env={**os.environ, "NOTIFY_SOCKET": name},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        first = listener.recv(4096).decode()
        # READY=1 comes first, and by then the export and the monitor accept.
        assert first.splitlines()[0] == "READY=1", first
        assert accepts(tmp_path / "exp0.sock") and accepts(tmp_path / "qmp.sock")
        assert "STATUS=serving: 1 export(s), 2 node(s), 0 frontend(s) connected" in first.splitlines()
        client = spindle_qmp(tmp_path / "qmp.sock")
        ok(client, "blockdev-add", **{"driver": "null-co", "node-name": "n1"})
        # (The accepts() probes above were frontends too: their STATUS lines may come first.)
        status_until(listener, "STATUS=serving: 1 export(s), 3 node(s), 0 frontend(s) connected")
        if BENCH.exists():
            # A frontend connecting, and leaving, updates the count.
            bench(tmp_path / "exp0.sock", "randread")
            status_until(listener, "STATUS=serving: 1 export(s), 3 node(s), 1 frontend(s) connected")
            status_until(listener, "STATUS=serving: 1 export(s), 3 node(s), 0 frontend(s) connected")
        client.close()
        proc.send_signal(signal.SIGTERM)
        status_until(listener, "STOPPING=1\nSTATUS=stopping")
        assert proc.wait(timeout=30) == 0
    finally:
        kill_process(proc)
        listener.close()
        log.close()


def test_log_lines_carry_syslog_priorities_when_stderr_is_the_journal(tmp_path):
    with open(tmp_path / "journal.log", "w+") as log:
        status = os.fstat(log.fileno())
        proc = subprocess.Popen([SPINDLE, *command_line(tmp_path)], stdout=log, stderr=log, start_new_session=True,
                                env={**os.environ, "JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"})
        try:
            client = spindle_qmp(tmp_path / "qmp.sock")
            client.close()
        finally:
            kill_process(proc)
        lines = Path(tmp_path / "journal.log").read_text().splitlines()
    assert lines and all(line[:3] in ("<5>", "<6>", "<4>") for line in lines), lines
    assert any(line.startswith("<6>spindle: spindle ") and " ready: " in line for line in lines), lines
    assert not any("\x1b" in line for line in lines)


def mirror_and_pivot(client, job: str, device: str, target: str) -> None:
    ok(client, "blockdev-mirror", **{"job-id": job}, device=device, target=target, sync="full")
    wait_event(client, "BLOCK_JOB_READY")
    ok(client, "job-complete", id=job)
    wait_event(client, "BLOCK_JOB_COMPLETED")


def test_a_mirror_pivot_is_recorded_with_its_target_node(tmp_path):
    for name in ("src", "tgt", "t0"):
        with open(tmp_path / f"{name}.img", "wb") as f:
            f.truncate(64 * MiB)
    first = start(tmp_path, "first")
    second = None
    try:
        client = spindle_qmp(tmp_path / "qmp.sock")
        for name in ("src", "tgt", "t0"):
            ok(client, "blockdev-add", driver="file", **{"node-name": name}, filename=str(tmp_path / f"{name}.img"))
        ok(client, "block-export-add", **{"type": "vhost-user-blk", "id": "e1", "node-name": "src",
                                           "addr": {"type": "unix", "path": str(tmp_path / "e1.sock")}})
        mirror_and_pivot(client, "m1", "src", "tgt")   # a hot-plugged export
        mirror_and_pivot(client, "m0", "n0", "t0")     # the command line's export
        ok(client, "blockdev-del", **{"node-name": "src"})
        client.close()
        sigkill(first)

        second = start(tmp_path, "second")
        client = spindle_qmp(tmp_path / "qmp.sock")
        assert {e["id"]: e["node-name"] for e in ok(client, "query-block-exports")} == {"exp0": "t0", "e1": "tgt"}
        assert sorted(n["node-name"] for n in ok(client, "query-named-block-nodes")) == ["n0", "spare", "t0", "tgt"]
        client.close()
    finally:
        for backend in (first, second):
            if backend:
                backend.stop()

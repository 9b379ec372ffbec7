"""blockdev-mirror and the job commands end to end, without a guest: a real spindle, real
image files, QMP through the qemu.qmp library. (The guest writing during the mirror is in
test_guest_mirror.py.)"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from guestlib import Backend, file_export_args
from interactive import ok, spindle_qmp, wait_event

SPINDLE = os.environ.get("SPINDLE_BIN", "")
pytestmark = pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle")

MiB = 1 << 20


def pattern_image(path: Path, size: int, seed: int) -> None:
    block = hashlib.sha256(str(seed).encode()).digest() * (MiB // 32)
    with open(path, "wb") as f:
        for i in range(size // MiB):
            f.write(block[i % 32:] + block[:i % 32])


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * MiB), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture
def daemon(tmp_path):
    src = tmp_path / "src.img"
    pattern_image(src, 64 * MiB, 1)
    qmp = tmp_path / "qmp.sock"
    backend = Backend(SPINDLE, tmp_path, "spindle")
    backend.start([*file_export_args(src, tmp_path / "vhost.sock"), "--qmp", str(qmp)], qmp)
    client = spindle_qmp(qmp)
    yield backend, client, tmp_path
    client.close()
    backend.stop()


def add_target(client, path: Path, size: int, name: str = "tgt") -> None:
    with open(path, "wb") as f:
        f.truncate(size)
    ok(client, "blockdev-add", driver="file", **{"node-name": name}, filename=str(path))


def status_events(client, job: str, until: str, timeout: float = 60) -> list[str]:
    """JOB_STATUS_CHANGE statuses of `job` up to and including `until`."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = client.pull_event(wait=max(0.1, deadline - time.monotonic()))
        if event and event["event"] == "JOB_STATUS_CHANGE" and event["data"]["id"] == job:
            seen.append(event["data"]["status"])
            if seen[-1] == until:
                return seen
    raise AssertionError(f"job {job} did not reach {until}: {seen}")


def test_mirror_ready_complete_pivots_and_frees_the_source(daemon):
    backend, client, tmp = daemon
    add_target(client, tmp / "tgt.img", 64 * MiB)
    ok(client, "blockdev-mirror", **{"job-id": "m0"}, device="disk0", target="tgt", sync="full")
    assert status_events(client, "m0", "ready") == ["created", "running", "ready"]
    ready = [e for e in client.get_events() if e["event"] == "BLOCK_JOB_READY"] or [wait_event(client, "BLOCK_JOB_READY")]
    assert ready[0]["data"] == {"device": "m0", "len": 64 * MiB, "offset": 64 * MiB, "speed": 0, "type": "mirror"}
    [job] = ok(client, "query-jobs")
    assert job == {"id": "m0", "type": "mirror", "status": "ready", "current-progress": 64 * MiB, "total-progress": 64 * MiB}
    # The source is in use by the job; the job cannot be dismissed while running.
    reply = client.cmd_raw("blockdev-del", {"node-name": "disk0"})
    assert reply["error"]["desc"] == "Node 'disk0' is busy: block device is in use by block job: mirror"
    reply = client.cmd_raw("job-dismiss", {"id": "m0"})
    assert reply["error"]["desc"] == "Job 'm0' in state 'ready' cannot accept command verb 'dismiss'"
    ok(client, "job-complete", id="m0")
    assert status_events(client, "m0", "null") == ["waiting", "pending", "concluded", "null"]
    assert ok(client, "query-jobs") == []
    assert ok(client, "query-block-exports")[0]["node-name"] == "tgt"
    assert digest(tmp / "tgt.img") == digest(tmp / "src.img")
    # The source is free: it can be deleted, and its image removed, the export unaffected.
    ok(client, "blockdev-del", **{"node-name": "disk0"})
    os.unlink(tmp / "src.img")
    assert [n["node-name"] for n in ok(client, "query-named-block-nodes")] == ["tgt"]


def test_cancel_before_ready_leaves_the_source(daemon):
    backend, client, tmp = daemon
    add_target(client, tmp / "tgt.img", 64 * MiB)
    ok(client, "blockdev-mirror", **{"job-id": "m1"}, device="disk0", target="tgt", sync="full", speed=4 * MiB)
    status_events(client, "m1", "running")
    ok(client, "job-cancel", id="m1")
    assert status_events(client, "m1", "null") == ["aborting", "concluded", "null"]
    assert ok(client, "query-block-exports")[0]["node-name"] == "disk0"
    # Both nodes are free again: the target can go, the source keeps its export.
    ok(client, "blockdev-del", **{"node-name": "tgt"})
    reply = client.cmd_raw("blockdev-del", {"node-name": "disk0"})
    assert "in use" in reply["error"]["desc"]


def test_cancel_after_ready_ends_without_pivot_and_keeps_the_job_for_dismiss(daemon):
    backend, client, tmp = daemon
    add_target(client, tmp / "tgt.img", 64 * MiB)
    ok(client, "blockdev-mirror", **{"job-id": "m2"}, device="disk0", target="tgt", sync="full",
       granularity=1 * MiB, **{"buf-size": 4 * MiB, "auto-dismiss": False})
    status_events(client, "m2", "ready")
    ok(client, "job-cancel", id="m2")
    status_events(client, "m2", "concluded")
    [job] = ok(client, "query-jobs")
    assert job["status"] == "concluded" and job["error"] == "Operation canceled"
    assert ok(client, "query-block-exports")[0]["node-name"] == "disk0"
    ok(client, "job-dismiss", id="m2")
    assert ok(client, "query-jobs") == []


def test_argument_errors_have_qsds_text(daemon):
    backend, client, tmp = daemon
    add_target(client, tmp / "tgt.img", 64 * MiB)
    add_target(client, tmp / "small.img", 1 * MiB, name="small")

    def error(**args):
        reply = client.cmd_raw("blockdev-mirror", args)
        assert "error" in reply, reply
        return reply["error"]["desc"]

    j = {"job-id": "e"}
    assert error(**j, device="nope", target="tgt", sync="full") == "Cannot find device='nope' nor node-name='nope'"
    assert error(**j, device="disk0", target="disk0", sync="full") == "Can't mirror node into itself"
    assert error(**j, device="disk0", target="tgt") == "Parameter 'sync' is missing"
    assert error(**j, device="disk0", target="tgt", sync="bogus") == "Parameter 'sync' does not accept value 'bogus'"
    assert error(**j, device="disk0", target="tgt", sync="full", granularity=256) == "Parameter 'granularity' expects a value in range [512B, 64MB]"
    assert error(**j, device="disk0", target="tgt", sync="full", granularity=3 * 4096) == "Parameter 'granularity' expects a power of 2"
    assert error(**j, device="disk0", target="tgt", sync="full", speed=-1) == "Parameter 'speed' expects a non-negative value"
    assert error(device="disk0", target="tgt", sync="full") == "Invalid job ID ''"
    assert client.cmd_raw("job-complete", {"id": "nope"})["error"]["desc"] == "Job not found"
    # A target of another size: the job starts, then fails as QEMU's does.
    ok(client, "blockdev-mirror", **{"job-id": "s"}, device="disk0", target="small", sync="full")
    completed = wait_event(client, "BLOCK_JOB_COMPLETED")
    assert completed["data"]["error"] == "Source and target image have different sizes"
    assert ok(client, "query-block-exports")[0]["node-name"] == "disk0"

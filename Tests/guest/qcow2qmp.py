"""What test_qcow2_create.py and test_qcow2_snapshot.py share: a spindle with only a QMP
socket (stopped even on failure), blockdev-create jobs run to their end, exports read whole
with spindle-bench --dump, and the real qemu-img's check and info."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from guestlib import Backend
from interactive import ok, spindle_qmp

SPINDLE = os.environ.get("SPINDLE_BIN", "")
BENCH = Path(SPINDLE).with_name("spindle-bench") if SPINDLE else Path("/nonexistent")
SKIPS = [
    pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle"),
    pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench next to spindle"),
]
KiB = 1024
MiB = 1024 * KiB


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def img_info(path: Path, chain: bool = False) -> dict | list:
    args = ["qemu-img", "info", "-U", "--output=json"] + (["--backing-chain"] if chain else []) + [str(path)]
    return json.loads(run(*args).stdout)


def img_check(path: Path) -> None:
    result = run("qemu-img", "check", "-U", str(path), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def daemon(tmp_path):
    qmp = tmp_path / "qmp.sock"
    backend = Backend(SPINDLE, tmp_path, "spindle")
    backend.start(["--qmp", str(qmp)], qmp)
    client = spindle_qmp(qmp)
    yield client, tmp_path
    client.close()
    backend.stop()


def job_statuses(client, job: str, until: str = "concluded", timeout: float = 60) -> list[str]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = client.pull_event(wait=max(0.1, deadline - time.monotonic()))
        if event and event["event"] == "JOB_STATUS_CHANGE" and event["data"]["id"] == job:
            seen.append(event["data"]["status"])
            if seen[-1] == until:
                return seen
    raise AssertionError(f"job {job} did not reach {until}: {seen}")


def create(client, job: str, **options) -> dict:
    """Runs a blockdev-create job to its end; returns its query-jobs entry (then dismisses it)."""
    ok(client, "blockdev-create", **{"job-id": job}, options=options)
    job_statuses(client, job)
    [info] = [j for j in ok(client, "query-jobs") if j["id"] == job]
    ok(client, "job-dismiss", id=job)
    return info


def export(client, tmp: Path, node: str, writable: bool = False) -> Path:
    sock = tmp / f"{node}.sock"
    ok(client, "block-export-add", type="vhost-user-blk", id=f"e-{node}", **{"node-name": node},
       addr={"type": "unix", "path": str(sock)}, writable=writable)
    return sock


def dump(sock: Path, tmp: Path, name: str) -> bytes:
    out = tmp / f"{name}.dump"
    result = subprocess.run([str(BENCH), "--socket", str(sock), "--dump", str(out), "--bs", str(192 * KiB)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return out.read_bytes()


def qcow2_node(client, name: str, path: Path, **extra) -> None:
    ok(client, "blockdev-add", driver="qcow2", **{"node-name": name, "read-only": True},
       file={"driver": "file", "filename": str(path)}, **extra)


def base_image(tmp: Path) -> Path:
    base = tmp / "base.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(base), str(8 * MiB))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 192k", "-c", "write -P 0x22 3M 64k", str(base))
    return base

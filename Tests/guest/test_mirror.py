"""blockdev-mirror and the job commands end to end, without a guest: a real spindle, real
image files, QMP through the qemu.qmp library. (The guest writing during the mirror is in
test_guest_mirror.py.)"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from guestlib import Backend, file_export_args, file_sha256
from interactive import ok, spindle_qmp, wait_event

SPINDLE = os.environ.get("SPINDLE_BIN", "")
pytestmark = pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle")

MiB = 1 << 20


def pattern_image(path: Path, size: int, seed: int) -> None:
    block = hashlib.sha256(str(seed).encode()).digest() * (MiB // 32)
    with open(path, "wb") as f:
        for i in range(size // MiB):
            f.write(block[i % 32:] + block[:i % 32])


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
    assert file_sha256(tmp / "tgt.img") == file_sha256(tmp / "src.img")
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
    assert error(**j, device="tgt", target="disk0", sync="full") == \
        "Node 'disk0' is in use by exp0; a mirror target must not be used by anything else"
    assert client.cmd_raw("job-complete", {"id": "nope"})["error"]["desc"] == "Job not found"
    # A target of another size: the job starts, then fails as QEMU's does.
    ok(client, "blockdev-mirror", **{"job-id": "s"}, device="disk0", target="small", sync="full")
    completed = wait_event(client, "BLOCK_JOB_COMPLETED")
    assert completed["data"]["error"] == "Source and target image have different sizes"
    assert ok(client, "query-block-exports")[0]["node-name"] == "disk0"


@pytest.fixture
def small_fs(tmp_path):
    """A tmpfs of a given size (needs root to mount), unmounted afterwards."""
    mounts = []

    def make(size: int) -> Path:
        mount = tmp_path / f"small-fs-{len(mounts)}"
        mount.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs: {result.stderr.strip()}")
        mounts.append(mount)
        return mount

    yield make
    for mount in mounts:
        subprocess.run(["umount", "-l", str(mount)])


def test_target_out_of_space_fails_the_job_and_keeps_the_source(daemon, small_fs):
    backend, client, tmp = daemon
    before = file_sha256(tmp / "src.img")
    mount = small_fs(8 * MiB)
    add_target(client, mount / "tgt.img", 64 * MiB)  # sparse: the copy runs out of space at 8 MiB
    ok(client, "blockdev-mirror", **{"job-id": "full"}, device="disk0", target="tgt", sync="full")
    completed = wait_event(client, "BLOCK_JOB_COMPLETED")
    assert completed["data"]["error"] == "No space left on device"
    assert completed["data"]["device"] == "full"
    assert ok(client, "query-jobs") == []
    assert ok(client, "query-block-exports")[0]["node-name"] == "disk0"
    assert file_sha256(tmp / "src.img") == before
    # The target is released: it can be deleted.
    ok(client, "blockdev-del", **{"node-name": "tgt"})
    assert "No space left on device" in (tmp / "spindle.log").read_text()


BENCH = Path(SPINDLE).with_name("spindle-bench") if SPINDLE else Path("/nonexistent")


@pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench next to spindle")
def test_target_failing_after_ready_fails_the_job_not_the_guests_writes(daemon, small_fs):
    backend, client, tmp = daemon
    mount = small_fs(64 * MiB + 256 * 1024)
    add_target(client, mount / "tgt.img", 64 * MiB)
    ok(client, "blockdev-mirror", **{"job-id": "late", "auto-dismiss": False}, device="disk0", target="tgt", sync="full")
    wait_event(client, "BLOCK_JOB_READY")
    # The target's filesystem fills up behind the job's back: a hole, and no space to fill it.
    subprocess.run(["fallocate", "--punch-hole", "--offset", "0", "--length", str(16 * MiB), str(mount / "tgt.img")], check=True)
    subprocess.run(["dd", "if=/dev/zero", f"of={mount / 'filler'}", "bs=1M"], capture_output=True)
    bench = subprocess.run([str(BENCH), "--socket", str(tmp / "vhost.sock"), "--rw", "randwrite", "--bs", "4k",
                            "--iodepth", "4", "--runtime", "1", "--ramp", "0", "--size", str(16 * MiB), "--json-only",
                            "--cpus", "none"], capture_output=True, text=True, timeout=120)
    assert bench.returncode == 0, bench.stderr
    assert '"errors":0' in bench.stdout.replace(" ", ""), bench.stdout  # the guest's writes all succeeded
    completed = wait_event(client, "BLOCK_JOB_COMPLETED")
    assert completed["data"]["error"] == "No space left on device"
    [job] = ok(client, "query-jobs")
    assert job["status"] == "concluded" and job["error"] == "No space left on device"
    assert ok(client, "query-block-exports")[0]["node-name"] == "disk0"


def test_query_jobs_shows_progress_of_a_1GiB_mirror(tmp_path):
    """An operator polling query-jobs sees current-progress climb towards total-progress, so
    the time left can be estimated. The speed limit makes the copy last several polls."""
    GiB = 1 << 30
    src, tgt = tmp_path / "big.img", tmp_path / "big-new.img"
    for image in (src, tgt):
        with open(image, "wb") as f:
            f.truncate(GiB)
    qmp = tmp_path / "qmp.sock"
    backend = Backend(SPINDLE, tmp_path, "spindle")
    backend.start(["--blockdev", f"driver=file,node-name=big,filename={src}",
                   "--blockdev", f"driver=file,node-name=new,filename={tgt}", "--qmp", str(qmp)], qmp)
    try:
        client = spindle_qmp(qmp)
        ok(client, "blockdev-mirror", **{"job-id": "big"}, device="big", target="new", sync="full", speed=128 * MiB)
        samples = []
        while True:
            [job] = ok(client, "query-jobs")
            samples.append((time.monotonic(), job["current-progress"], job["total-progress"]))
            if job["status"] == "ready":
                break
            assert job["status"] == "running", job
            time.sleep(0.5)
        currents = [c for _, c, _ in samples]
        assert currents == sorted(currents), currents  # never goes backwards
        assert all(total == GiB for _, _, total in samples), samples
        assert len({c for c in currents if 0 < c < GiB}) >= 3, samples  # seen moving, several times
        assert currents[-1] == GiB
        # What an operator computes from two polls: the rate, and from it the time left.
        (t0, c0, _), (t1, c1, total) = samples[1], samples[len(samples) // 2]
        rate = (c1 - c0) / (t1 - t0)
        print(f"mirror of 1 GiB: {rate / MiB:.0f} MiB/s measured between polls, "
              f"{(total - c1) / rate:.1f} s left at mid-copy, {len(samples)} polls")
        ok(client, "job-cancel", id="big")
        wait_event(client, "BLOCK_JOB_CANCELLED")
    finally:
        backend.stop()


def test_sigterm_during_a_mirror_cancels_it_and_exits_cleanly(daemon):
    backend, client, tmp = daemon
    add_target(client, tmp / "tgt.img", 64 * MiB)
    ok(client, "blockdev-mirror", **{"job-id": "bye"}, device="disk0", target="tgt", sync="full", speed=1 * MiB)
    status_events(client, "bye", "running")
    assert backend.stop() == 0
    log = (tmp / "spindle.log").read_text()
    assert "cancelling block jobs before shutdown" in log
    assert "still running at shutdown" not in log


def test_pause_resume_and_manual_finalize(daemon):
    backend, client, tmp = daemon
    add_target(client, tmp / "tgt.img", 64 * MiB)
    ok(client, "blockdev-mirror", **{"job-id": "p"}, device="disk0", target="tgt", sync="full", speed=8 * MiB,
       **{"auto-finalize": False, "auto-dismiss": False})
    status_events(client, "p", "running")
    ok(client, "job-pause", id="p")
    assert client.cmd_raw("job-pause", {"id": "p"})["error"]["desc"] == "Job is already paused"
    status_events(client, "p", "paused")
    [job] = ok(client, "query-jobs")
    assert job["status"] == "paused"
    ok(client, "job-resume", id="p")
    assert client.cmd_raw("job-resume", {"id": "p"})["error"]["desc"] == "Can't resume a job that was not paused"
    status_events(client, "p", "ready")
    ok(client, "job-pause", id="p")
    status_events(client, "p", "standby")
    ok(client, "job-resume", id="p")
    status_events(client, "p", "ready")
    ok(client, "job-complete", id="p")
    assert status_events(client, "p", "pending") == ["waiting", "pending"]
    assert wait_event(client, "BLOCK_JOB_PENDING")["data"] == {"type": "mirror", "id": "p"}
    # Until job-finalize the export stays on its source (drained for the final sync).
    assert ok(client, "query-block-exports")[0]["node-name"] == "disk0"
    ok(client, "job-finalize", id="p")
    assert status_events(client, "p", "concluded") == ["concluded"]
    assert ok(client, "query-block-exports")[0]["node-name"] == "tgt"
    [job] = ok(client, "query-jobs")
    assert job["status"] == "concluded" and "error" not in job
    ok(client, "job-dismiss", id="p")
    assert ok(client, "query-jobs") == []
    assert file_sha256(tmp / "tgt.img") == file_sha256(tmp / "src.img")


def test_several_monitor_clients_act_on_a_running_mirror_at_once(daemon):
    """Clients on their own connections query, pause, resume, complete and cancel the same
    job while it copies: every reply is a success or one of QEMU's refusals, and the job
    ends in one consistent way."""
    import random
    import threading

    backend, client, tmp = daemon
    add_target(client, tmp / "tgt.img", 64 * MiB)
    ok(client, "blockdev-mirror", **{"job-id": "busy", "auto-dismiss": False}, device="disk0", target="tgt",
       sync="full", speed=32 * MiB)
    allowed = ("Job 'busy' in state '", "Job is already paused", "Can't resume a job that was not paused",
               "The active block job 'busy' cannot be completed")
    problems = []

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        other = spindle_qmp(tmp / "qmp.sock")
        try:
            for _ in range(150):
                command = rng.choice(["query-jobs", "query-jobs", "job-pause", "job-resume", "job-resume",
                                      "job-complete", "job-cancel" if rng.random() < 0.05 else "query-jobs"])
                reply = other.cmd_raw(command, None if command == "query-jobs" else {"id": "busy"})
                if "error" in reply and not reply["error"]["desc"].startswith(allowed):
                    problems.append((command, reply))
                time.sleep(rng.random() * 0.01)
        finally:
            other.close()

    threads = [threading.Thread(target=hammer, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert problems == []
    # Let whatever state it was left in run to an end.
    [job] = ok(client, "query-jobs")
    if job["status"] in ("paused", "standby"):
        ok(client, "job-resume", id="busy")
    if job["status"] != "concluded":
        ok(client, "job-cancel", id="busy")
    status_events(client, "busy", "concluded", timeout=120)
    [job] = ok(client, "query-jobs")
    assert job["status"] == "concluded"
    node = ok(client, "query-block-exports")[0]["node-name"]
    if "error" in job:  # cancelled: still on the source
        assert job["error"] == "Operation canceled" and node == "disk0"
    else:  # completed by one of the clients: pivoted, images equal
        assert node == "tgt" and file_sha256(tmp / "tgt.img") == file_sha256(tmp / "src.img")
    assert backend.alive()

"""block-commit over a real QMP socket, no guest: a chain base <- mid <- top made and
filled by qemu-img/qemu-io, each layer a node (backing=<node>), the export on top.
Writes through the export while the job runs (spindle-bench --script) must survive; after
each job qemu-img check is clean, qemu-img info shows the chain and the served data and the
images equal a raw reference (qemu-img compare). Every daemon started is stopped."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from guestlib import Backend
from interactive import ok, spindle_qmp
from qcow2qmp import BENCH, KiB, MiB, SKIPS, SPINDLE as SPINDLE_BIN, daemon, dump, img_check, img_info, run  # noqa: F401

pytestmark = SKIPS

SIZE = 8 * MiB


def make_chain(tmp: Path) -> tuple[Path, Path, Path, Path]:
    """base <- mid <- top with patterns in each (a zero cluster in top over base data),
    and the raw reference of what top shows."""
    base, mid, top = tmp / "base.qcow2", tmp / "mid.qcow2", tmp / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(base), str(SIZE))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 192k", "-c", "write -P 0x22 3M 64k", str(base))
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(mid))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x33 64k 128k", "-c", "write -P 0x44 5M 1M", str(mid))
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(mid), "-F", "qcow2", str(top))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x55 128k 64k", "-c", "write -z 3M 64k",
        "-c", "write -P 0x66 6M 1M", str(top))
    reference = tmp / "reference.raw"
    run("qemu-img", "convert", "-O", "raw", str(top), str(reference))
    return base, mid, top, reference


def open_chain(client, base: Path, mid: Path, top: Path, base_read_only: bool = False) -> None:
    def add(name: str, path: Path, backing, read_only: bool = False) -> None:
        ok(client, "blockdev-add", driver="qcow2", **{"node-name": name, "read-only": read_only},
           file={"driver": "file", "filename": str(path), "read-only": read_only}, backing=backing)
    add("base", base, None, base_read_only)
    add("mid", mid, "base")
    add("top", top, "mid")


def export_top(client, tmp: Path) -> Path:
    sock = tmp / "top.sock"
    ok(client, "block-export-add", type="vhost-user-blk", id="e-top", **{"node-name": "top"},
       addr={"type": "unix", "path": str(sock)}, writable=True)
    return sock


def write_through(sock: Path, reference: Path, writes: list[tuple[int, int, int]]) -> None:
    """Writes (offset, length, byte) through the export and into the reference."""
    script = sock.with_suffix(".script")
    script.write_text("".join(f"write {o} {n} {b}\n" for o, n, b in writes) + "flush\n")
    result = subprocess.run([str(BENCH), "--socket", str(sock), "--script", str(script)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    with open(reference, "r+b") as f:
        for offset, length, byte in writes:
            f.seek(offset)
            f.write(bytes([byte]) * length)


class Events:
    """Every event of one client, kept in order (tests look for several kinds)."""

    def __init__(self, client):
        self.client = client
        self.seen: list[dict] = []

    def statuses(self, job: str) -> list[str]:
        return [e["data"]["status"] for e in self.seen if e["event"] == "JOB_STATUS_CHANGE" and e["data"]["id"] == job]

    def wait_status(self, job: str, status: str, timeout: float = 90) -> list[str]:
        deadline = time.monotonic() + timeout
        while status not in self.statuses(job):
            assert time.monotonic() < deadline, f"job {job} did not reach {status}: {self.statuses(job)}"
            event = self.client.pull_event(wait=max(0.1, deadline - time.monotonic()))
            if event:
                self.seen.append(event)
        return self.statuses(job)

    def named(self, name: str, timeout: float = 30) -> list[dict]:
        """The events called `name` so far, waiting for the first if there is none yet."""
        deadline = time.monotonic() + timeout
        while not any(e["event"] == name for e in self.seen) and time.monotonic() < deadline:
            event = self.client.pull_event(wait=max(0.1, deadline - time.monotonic()))
            if event:
                self.seen.append(event)
        return [e for e in self.seen if e["event"] == name]

    def absent(self, name: str) -> bool:
        """No `name` event came (after what is already queued)."""
        while (event := self.client.pull_event(wait=False)) is not None:
            self.seen.append(event)
        return not any(e["event"] == name for e in self.seen)


def compare(image: Path, reference: Path) -> None:
    result = run("qemu-img", "compare", "-U", "-f", "qcow2", "-F", "raw", str(image), str(reference), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def nodes(client) -> list[str]:
    return sorted(n["node-name"] for n in ok(client, "query-named-block-nodes"))


def test_active_commit_with_writes_during_the_job_pivots_onto_base(daemon):
    client, tmp = daemon
    base, mid, top, reference = make_chain(tmp)
    open_chain(client, base, mid, top)
    sock = export_top(client, tmp)
    events = Events(client)
    # 1 MiB/s keeps the first pass (about 3 MiB) running while the guest-side writes land.
    ok(client, "block-commit", **{"job-id": "c0"}, device="e-top", **{"base-node": "base"}, speed=1 * MiB)
    events.wait_status("c0", "running")
    write_through(sock, reference, [(0, 64 * KiB, 0x77), (4 * MiB, 128 * KiB, 0x78), (6 * MiB + 512, 4 * KiB, 0x79)])
    assert events.wait_status("c0", "ready") == ["created", "running", "ready"]
    [ready] = events.named("BLOCK_JOB_READY")
    assert ready["data"]["type"] == "commit" and ready["data"]["device"] == "c0"
    # Writes after READY reach both images.
    write_through(sock, reference, [(2 * MiB, 64 * KiB, 0x7a), (7 * MiB, 512, 0x7b)])
    reply = client.cmd_raw("blockdev-del", {"node-name": "base"})
    assert reply["error"]["desc"] == "Node 'base' is busy: block device is in use by block job: commit"
    ok(client, "block-job-complete", device="c0")
    assert events.wait_status("c0", "null")[-4:] == ["waiting", "pending", "concluded", "null"]
    [completed] = events.named("BLOCK_JOB_COMPLETED")
    assert completed["data"]["type"] == "commit" and "error" not in completed["data"]
    assert ok(client, "query-block-exports")[0]["node-name"] == "base"
    assert nodes(client) == ["base"]  # top and mid were dropped
    assert dump(sock, tmp, "after") == reference.read_bytes()
    img_check(base)
    assert "backing-filename" not in img_info(base)
    compare(base, reference)
    # The guest keeps writing, now into base.
    write_through(sock, reference, [(1 * MiB, 64 * KiB, 0x7c)])
    assert dump(sock, tmp, "later") == reference.read_bytes()
    img_check(base)


def test_cancel_before_ready_leaves_the_guest_on_top(daemon):
    client, tmp = daemon
    base, mid, top, reference = make_chain(tmp)
    open_chain(client, base, mid, top)
    sock = export_top(client, tmp)
    events = Events(client)
    ok(client, "block-commit", **{"job-id": "c1"}, device="top", speed=256 * KiB)
    events.wait_status("c1", "running")
    write_through(sock, reference, [(64 * KiB, 64 * KiB, 0x81)])
    ok(client, "job-cancel", id="c1")
    assert events.wait_status("c1", "null")[-3:] == ["aborting", "concluded", "null"]
    assert events.named("BLOCK_JOB_CANCELLED")[0]["data"]["type"] == "commit"
    assert events.absent("BLOCK_JOB_READY")
    assert ok(client, "query-block-exports")[0]["node-name"] == "top"
    assert nodes(client) == ["base", "mid", "top"]
    assert dump(sock, tmp, "after") == reference.read_bytes()
    for image in (base, mid, top):
        img_check(image)
    assert [c["filename"] for c in img_info(top, chain=True)] == [str(top), str(mid), str(base)]
    compare(top, reference)
    # Everything is free again: a second commit can run to the end.
    ok(client, "block-commit", **{"job-id": "c2"}, device="top")
    events.wait_status("c2", "ready")
    ok(client, "job-complete", id="c2")
    events.wait_status("c2", "null")
    assert dump(sock, tmp, "final") == reference.read_bytes()
    compare(base, reference)


def test_cancel_after_ready_keeps_top_and_consistent_images(daemon):
    client, tmp = daemon
    base, mid, top, reference = make_chain(tmp)
    open_chain(client, base, mid, top)
    sock = export_top(client, tmp)
    events = Events(client)
    ok(client, "block-commit", **{"job-id": "c3"}, device="e-top", **{"auto-dismiss": False})
    events.wait_status("c3", "ready")
    write_through(sock, reference, [(5 * MiB, 64 * KiB, 0x91)])
    ok(client, "job-cancel", id="c3")
    events.wait_status("c3", "concluded")
    [job] = ok(client, "query-jobs")
    assert job["type"] == "commit" and job["error"] == "Operation canceled"
    ok(client, "job-dismiss", id="c3")
    assert ok(client, "query-block-exports")[0]["node-name"] == "top"
    assert dump(sock, tmp, "after") == reference.read_bytes()
    for image in (base, mid, top):
        img_check(image)
    compare(top, reference)


def test_refusals_have_qemus_texts(daemon):
    client, tmp = daemon
    base, mid, top, reference = make_chain(tmp)
    open_chain(client, base, mid, top)
    export_top(client, tmp)
    other = tmp / "other.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(other), str(SIZE))
    ok(client, "blockdev-add", driver="qcow2", **{"node-name": "other"}, file={"driver": "file", "filename": str(other)})

    def refused(**arguments) -> str:
        reply = client.cmd_raw("block-commit", {"job-id": "r", **arguments})
        assert "error" in reply, reply
        return reply["error"]["desc"]

    assert refused(device="nope") == "Device 'nope' not found"
    assert refused(device="top", top="x", **{"top-node": "top"}) == "'top-node' and 'top' are mutually exclusive"
    assert refused(device="top", base="x", **{"base-node": "base"}) == "'base-node' and 'base' are mutually exclusive"
    assert refused(device="top", **{"base-node": "other"}) == "'other' is not in this backing file chain"
    assert refused(device="top", **{"top-node": "other"}) == "'other' is not in this backing file chain"
    assert refused(device="top", **{"base-node": "top"}) == "cannot commit an image into itself"
    assert refused(device="top", top=str(tmp / "nope.qcow2")) == f"Top image file {tmp / 'nope.qcow2'} not found"
    assert refused(device="top", base=str(tmp / "nope.qcow2")) == f"Can't find '{tmp / 'nope.qcow2'}' in the backing chain"
    assert refused(device="base") == "There is no backimg image"
    assert refused(device="top", **{"backing-file": "x"}) == "'backing-file' specified, but 'top' is the active layer"
    assert "filter-node-name" in refused(device="top", **{"filter-node-name": "f"})
    assert "on-error=stop" in refused(device="top", **{"on-error": "stop"})
    assert refused(device="top", **{"job-id": ""}) == "Invalid job ID ''"
    assert ok(client, "query-jobs") == []
    assert nodes(client) == ["base", "mid", "other", "top"]


# A chain opened from the header: test_qcow2_implicit.py; a read-only base reopened
# read-write for the job: test_qcow2_reopen.py.


def test_intermediate_commit_backs_top_onto_base_without_ready(daemon):
    client, tmp = daemon
    base, mid, top, reference = make_chain(tmp)
    open_chain(client, base, mid, top)
    sock = export_top(client, tmp)
    events = Events(client)
    ok(client, "block-commit", **{"job-id": "i0"}, device="e-top", **{"top-node": "mid", "base-node": "base"},
       speed=512 * KiB, **{"backing-file": "base.qcow2"})
    events.wait_status("i0", "running")
    # The overlay (top) is busy too: another job reading through it would not be drained.
    reply = client.cmd_raw("blockdev-del", {"node-name": "top"})
    assert reply["error"]["desc"] == "Node 'top' is busy: block device is in use by block job: commit"
    write_through(sock, reference, [(64 * KiB, 64 * KiB, 0xa1), (5 * MiB, 4 * KiB, 0xa2)])
    assert events.wait_status("i0", "null") == ["created", "running", "waiting", "pending", "concluded", "null"]
    assert events.absent("BLOCK_JOB_READY")
    [completed] = events.named("BLOCK_JOB_COMPLETED")
    assert completed["data"]["type"] == "commit" and "error" not in completed["data"]
    assert nodes(client) == ["base", "top"]  # mid was dropped
    [shown] = [n for n in ok(client, "query-named-block-nodes") if n["node-name"] == "top"]
    assert shown["backing_file"] == str(base) and shown["backing_file_depth"] == 1
    assert ok(client, "query-block-exports")[0]["node-name"] == "top"
    assert dump(sock, tmp, "after") == reference.read_bytes()
    info = img_info(top)
    assert info["backing-filename"] == "base.qcow2" and info["backing-filename-format"] == "qcow2"
    assert [c["filename"] for c in img_info(top, chain=True)] == [str(top), str(base)]
    for image in (base, top):
        img_check(image)
    compare(top, reference)
    # The guest keeps writing to top; then the active layer goes into base too.
    write_through(sock, reference, [(3 * MiB, 64 * KiB, 0xa3)])
    ok(client, "block-commit", **{"job-id": "a0"}, device="e-top")
    events.wait_status("a0", "ready")
    ok(client, "job-complete", id="a0")
    events.wait_status("a0", "null")
    assert nodes(client) == ["base"]
    assert dump(sock, tmp, "final") == reference.read_bytes()
    img_check(base)
    compare(base, reference)


def test_intermediate_commit_cancelled_leaves_the_chain(daemon):
    client, tmp = daemon
    base, mid, top, reference = make_chain(tmp)
    open_chain(client, base, mid, top)
    sock = export_top(client, tmp)
    events = Events(client)
    ok(client, "block-commit", **{"job-id": "i1"}, device="top", **{"top-node": "mid"}, speed=128 * KiB)
    events.wait_status("i1", "running")
    ok(client, "job-cancel", id="i1")
    assert events.wait_status("i1", "null")[-3:] == ["aborting", "concluded", "null"]
    assert nodes(client) == ["base", "mid", "top"]
    assert dump(sock, tmp, "after") == reference.read_bytes()
    assert [c["filename"] for c in img_info(top, chain=True)] == [str(top), str(mid), str(base)]
    for image in (base, mid, top):
        img_check(image)
    compare(top, reference)


def test_an_active_commit_survives_a_restart_with_the_state_file(tmp_path):
    """Recorded in the state file: after a restart with the same command line the export
    serves base, the committed layers are not opened again; an intermediate commit is
    refused while a state file is kept (its backing switch is not recorded yet)."""
    tmp = tmp_path
    base, mid, top, reference = make_chain(tmp)
    qmp = tmp / "qmp.sock"
    argv = ["--qmp", str(qmp), "--state-file", str(tmp / "state.json")]
    backend = Backend(SPINDLE_BIN, tmp, "first")
    try:
        backend.start(argv, qmp)
        client = spindle_qmp(qmp)
        open_chain(client, base, mid, top)
        sock = export_top(client, tmp)
        reply = client.cmd_raw("block-commit", {"job-id": "i", "device": "top", "top-node": "mid"})
        assert "not recorded in the state file yet" in reply["error"]["desc"]
        events = Events(client)
        ok(client, "block-commit", **{"job-id": "c"}, device="e-top")
        events.wait_status("c", "ready")
        ok(client, "job-complete", id="c")
        events.wait_status("c", "null")
        write_through(sock, reference, [(2 * MiB, 64 * KiB, 0xb1)])
        client.close()
    finally:
        backend.stop()
    qmp.unlink(missing_ok=True)
    backend = Backend(SPINDLE_BIN, tmp, "second")
    try:
        backend.start(argv, qmp)
        client = spindle_qmp(qmp)
        assert ok(client, "query-block-exports")[0]["node-name"] == "base"
        assert nodes(client) == ["base"]
        assert dump(tmp / "top.sock", tmp, "after") == reference.read_bytes()
        client.close()
    finally:
        backend.stop()
    img_check(base)
    compare(base, reference)

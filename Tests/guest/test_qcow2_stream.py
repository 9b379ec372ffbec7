"""block-stream over a real QMP socket, no guest: a chain base <- mid <- top made and filled
by qemu-img / qemu-io, streamed whole or down to a base while the export serves it (and is
written); afterwards qemu-img info shows the new chain, qemu-img check is clean and the
served data equals the original chain's (qemu-img compare against a raw copy). Cancel keeps
the old chain; refusals carry QEMU's texts. Every daemon started is stopped."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from guestlib import Backend
from interactive import ok, spindle_qmp
from qcow2qmp import (BENCH, KiB, MiB, SKIPS, SPINDLE, daemon, dump, export, img_check, img_info, run)  # noqa: F401

pytestmark = SKIPS

SIZE = 8 * MiB


def make_chain(tmp: Path, prefix: str = "") -> tuple[Path, Path, Path, Path]:
    """base <- mid <- top, each with its own patterns (mid hides some of base, with data and
    with a zero cluster; top hides some of mid); returns the images and a raw copy of what
    the chain reads."""
    base, mid, top = (tmp / f"{prefix}{name}.qcow2" for name in ("base", "mid", "top"))
    run("qemu-img", "create", "-q", "-f", "qcow2", str(base), str(SIZE))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 1M", "-c", "write -P 0x12 4M 1M", "-c", "write -P 0x13 7M 64k", str(base))
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(mid), str(SIZE))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x22 512k 1M", "-c", "write -z 4352k 64k", "-c", "write -P 0x23 6M 256k", str(mid))
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(mid), "-F", "qcow2", str(top), str(SIZE))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x33 1M 64k", "-c", "write -P 0x34 6144k 64k", str(top))
    reference = tmp / f"{prefix}reference.raw"
    run("qemu-img", "convert", "-O", "raw", str(top), str(reference))
    return base, mid, top, reference


def add_node(client, name: str, path: Path, writable: bool = False, **extra) -> None:
    ok(client, "blockdev-add", driver="qcow2", **{"node-name": name, "read-only": not writable},
       file={"driver": "file", "filename": str(path)}, **extra)


def add_chain_nodes(client, base: Path, mid: Path, top: Path, prefix: str = "") -> None:
    """The chain as graph nodes: base, mid over base, top (writable) over mid."""
    add_node(client, f"{prefix}base", base, backing=None)
    add_node(client, f"{prefix}mid", mid, backing=f"{prefix}base")
    add_node(client, f"{prefix}top", top, writable=True, backing=f"{prefix}mid")


def events_until_concluded(client, job: str, timeout: float = 120) -> list[dict]:
    """Every event until the job's JOB_STATUS_CHANGE to concluded."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = client.pull_event(wait=max(0.1, deadline - time.monotonic()))
        if event is None:
            continue
        seen.append(event)
        if event["event"] == "JOB_STATUS_CHANGE" and event["data"] == {"id": job, "status": "concluded"}:
            return seen
    raise AssertionError(f"job {job} did not conclude: {[e['event'] for e in seen]}")


def statuses(events: list[dict], job: str) -> list[str]:
    return [e["data"]["status"] for e in events if e["event"] == "JOB_STATUS_CHANGE" and e["data"]["id"] == job]


def wait_status(client, job: str, status: str, timeout: float = 60) -> list[dict]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = client.pull_event(wait=max(0.1, deadline - time.monotonic()))
        if event is None:
            continue
        seen.append(event)
        if event["event"] == "JOB_STATUS_CHANGE" and event["data"] == {"id": job, "status": status}:
            return seen
    raise AssertionError(f"job {job} did not reach {status}")


def node_info(client, name: str) -> dict:
    [node] = [n for n in ok(client, "query-named-block-nodes") if n["node-name"] == name]
    return node


def compare(image: Path, reference: Path) -> None:
    result = run("qemu-img", "compare", "-U", "-f", "qcow2", "-F", "raw", str(image), str(reference), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_stream_of_the_whole_chain_leaves_a_standalone_image(daemon):
    client, tmp = daemon
    _, _, top, reference = make_chain(tmp)
    add_node(client, "top", top, writable=True)  # the chain from the header, opened by the node
    sock = export(client, tmp, "top", writable=True)
    assert node_info(client, "top")["backing_file_depth"] == 2
    ok(client, "block-stream", **{"job-id": "s0", "device": "top"})
    events = events_until_concluded(client, "s0")
    assert statuses(events, "s0") == ["created", "running", "waiting", "pending", "concluded"]
    [completed] = [e["data"] for e in events if e["event"] == "BLOCK_JOB_COMPLETED"]
    assert completed["type"] == "stream" and completed["device"] == "s0" and "error" not in completed
    assert completed["len"] == SIZE and completed["offset"] == SIZE
    node = node_info(client, "top")
    assert node["backing_file_depth"] == 0 and "backing_file" not in node
    info = img_info(top)
    assert "backing-filename" not in info
    img_check(top)
    compare(top, reference)
    assert dump(sock, tmp, "served") == reference.read_bytes()


def test_stream_down_to_a_base_node_backs_onto_it(daemon):
    client, tmp = daemon
    base, mid, top, reference = make_chain(tmp)
    add_chain_nodes(client, base, mid, top)
    sock = export(client, tmp, "top", writable=True)
    ok(client, "block-stream", **{"job-id": "s1", "device": "top", "base-node": "base"})
    events = events_until_concluded(client, "s1")
    assert [e for e in events if e["event"] == "BLOCK_JOB_COMPLETED" and "error" not in e["data"]]
    node = node_info(client, "top")
    assert node["backing_file"] == str(base) and node["backing_file_depth"] == 1
    info = img_info(top)
    assert info["backing-filename"] == str(base) and info["backing-filename-format"] == "qcow2"
    assert [c["filename"] for c in img_info(top, chain=True)] == [str(top), str(base)]
    img_check(top)
    compare(top, reference)
    assert dump(sock, tmp, "served") == reference.read_bytes()
    # mid is no longer used: it can go; base is still the top's backing: it cannot.
    ok(client, "blockdev-del", **{"node-name": "mid"})
    assert "error" in client.cmd_raw("blockdev-del", {"node-name": "base"})
    # Only what mid held was copied: base's own clusters stay in base.
    mapped = run("qemu-img", "map", "-U", "--output=json", str(top)).stdout
    assert '"depth": 1' in mapped


def test_stream_down_to_a_base_file_from_the_header(daemon):
    client, tmp = daemon
    base, _, top, reference = make_chain(tmp)
    add_node(client, "top", top, writable=True)
    sock = export(client, tmp, "top", writable=True)
    ok(client, "block-stream", **{"job-id": "s2", "device": "e-top", "base": str(base)})
    events_until_concluded(client, "s2")
    assert node_info(client, "top")["backing_file_depth"] == 1
    assert [c["filename"] for c in img_info(top, chain=True)] == [str(top), str(base)]
    img_check(top)
    compare(top, reference)
    assert dump(sock, tmp, "served") == reference.read_bytes()


def write_script(tmp: Path, lines: list[str]) -> Path:
    script = tmp / "writes.script"
    script.write_text("\n".join(lines) + "\n")
    return script


def apply_writes(reference: Path, writes: list[tuple[int, int, int]]) -> None:
    data = bytearray(reference.read_bytes())
    for offset, length, byte in writes:
        data[offset:offset + length] = bytes([byte]) * length
    reference.write_bytes(bytes(data))


def test_writes_made_during_the_stream_survive(daemon):
    """A frontend writes (through the export) into ranges the stream has not reached yet,
    has passed, and that only the backing layers hold, while a speed limit keeps the job
    running: afterwards every write is there and the rest is the chain's data."""
    client, tmp = daemon
    _, _, top, reference = make_chain(tmp)
    add_node(client, "top", top, writable=True)
    sock = export(client, tmp, "top", writable=True)
    ok(client, "block-stream", **{"job-id": "s3", "device": "top", "speed": 512 * KiB})
    wait_status(client, "s3", "running")
    writes = [(0, 64 * KiB, 0x41), (600 * KiB, 8 * KiB, 0x42), (4 * MiB + 4 * KiB, 4 * KiB, 0x43),
              (6 * MiB + 64 * KiB, 128 * KiB, 0x44), (7 * MiB + 60 * KiB, 8 * KiB, 0x45)]
    script = write_script(tmp, [f"write {o} {n} {b}" for o, n, b in writes] + ["flush"])
    result = subprocess.run([str(BENCH), "--socket", str(sock), "--script", str(script)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    [job] = ok(client, "query-jobs")
    assert job["id"] == "s3" and job["status"] == "running"  # the writes went in while it ran
    events = events_until_concluded(client, "s3", timeout=180)
    assert [e for e in events if e["event"] == "BLOCK_JOB_COMPLETED" and "error" not in e["data"]]
    apply_writes(reference, writes)
    img_check(top)
    compare(top, reference)
    assert "backing-filename" not in img_info(top)
    assert dump(sock, tmp, "served") == reference.read_bytes()


def test_pause_resume_and_cancel_keep_the_old_chain(daemon):
    client, tmp = daemon
    base, mid, top, reference = make_chain(tmp)
    add_chain_nodes(client, base, mid, top)
    sock = export(client, tmp, "top", writable=True)
    ok(client, "block-stream", **{"job-id": "s4", "device": "top", "speed": 256 * KiB})
    wait_status(client, "s4", "running")
    ok(client, "job-pause", id="s4")
    wait_status(client, "s4", "paused")
    ok(client, "job-resume", id="s4")
    wait_status(client, "s4", "running")
    ok(client, "job-cancel", id="s4")
    events = events_until_concluded(client, "s4")
    assert statuses(events, "s4")[-2:] == ["aborting", "concluded"]
    assert [e for e in events if e["event"] == "BLOCK_JOB_CANCELLED" and e["data"]["type"] == "stream"]
    assert node_info(client, "top")["backing_file_depth"] == 2
    assert img_info(top)["backing-filename"] == str(mid)
    img_check(top)
    compare(top, reference)
    assert dump(sock, tmp, "served") == reference.read_bytes()
    # Nothing blocks the chain any more: a new stream runs to its end.
    ok(client, "block-stream", **{"job-id": "s5", "device": "top"})
    events_until_concluded(client, "s5")
    assert node_info(client, "top")["backing_file_depth"] == 0
    compare(top, reference)


def test_auto_finalize_off_waits_for_job_finalize(daemon):
    client, tmp = daemon
    _, mid, top, reference = make_chain(tmp)
    add_node(client, "top", top, writable=True)
    ok(client, "block-stream", **{"job-id": "s6", "device": "top", "auto-finalize": False, "auto-dismiss": False})
    wait_status(client, "s6", "pending")
    assert img_info(top)["backing-filename"] == str(mid)  # nothing switched before job-finalize
    ok(client, "job-finalize", id="s6")
    events_until_concluded(client, "s6")
    [job] = ok(client, "query-jobs")
    assert job["status"] == "concluded" and "error" not in job
    ok(client, "job-dismiss", id="s6")
    assert "backing-filename" not in img_info(top)
    img_check(top)
    compare(top, reference)


def error_of(client, **arguments) -> str:
    reply = client.cmd_raw("block-stream", arguments)
    assert "error" in reply, reply
    return reply["error"]["desc"]


def test_refusals_carry_qemus_texts(daemon):
    client, tmp = daemon
    base, mid, top, _ = make_chain(tmp)
    add_chain_nodes(client, base, mid, top)
    other_base, other_mid, other_top, _ = make_chain(tmp, prefix="other-")
    add_chain_nodes(client, other_base, other_mid, other_top, prefix="other-")
    assert error_of(client, **{"job-id": "x", "device": "nope"}) == "Cannot find device='nope' nor node-name='nope'"
    assert error_of(client, **{"job-id": "x", "device": "top", "base-node": "other-base"}) == \
        "Node 'other-base' is not a backing image of 'top'"
    assert error_of(client, **{"job-id": "x", "device": "top", "base-node": "top"}) == "Node 'top' is not a backing image of 'top'"
    assert error_of(client, **{"job-id": "x", "device": "top", "base-node": "missing"}) == "Cannot find device= nor node-name=missing"
    assert error_of(client, **{"job-id": "x", "device": "top", "base": str(other_base)}) == \
        f"Can't find '{other_base}' in the backing chain"
    assert error_of(client, **{"job-id": "x", "device": "top", "base": str(base), "base-node": "base"}) == \
        "'base' and 'base-node' cannot be specified at the same time"
    assert error_of(client, **{"job-id": "x", "device": "top", "backing-file": "b.qcow2"}) == \
        "backing file specified, but streaming the entire chain"
    assert "not supported" in error_of(client, **{"job-id": "x", "device": "top", "filter-node-name": "f"})
    assert "not supported" in error_of(client, **{"job-id": "x", "device": "top", "on-error": "stop"})
    assert error_of(client, **{"device": "top"}) == "Invalid job ID ''"
    assert "has node 'top' built on it" in error_of(client, **{"job-id": "x", "device": "mid"})
    (tmp / "raw.img").write_bytes(bytes(MiB))
    ok(client, "blockdev-add", driver="file", filename=str(tmp / "raw.img"), **{"node-name": "raw"})
    assert "block-stream needs a qcow2 node" in error_of(client, **{"job-id": "x", "device": "raw"})
    # A running job: its id is taken and its nodes are busy.
    ok(client, "block-stream", **{"job-id": "busy", "device": "top", "speed": 64 * KiB})
    wait_status(client, "busy", "running")
    assert error_of(client, **{"job-id": "busy", "device": "other-top"}) == "Job ID 'busy' already in use"
    assert error_of(client, **{"job-id": "y", "device": "top"}) == "Node 'top' is busy: block device is in use by block job: stream"
    assert "error" in client.cmd_raw("blockdev-del", {"node-name": "mid"})
    assert not any(j["id"] in ("x", "y") for j in ok(client, "query-jobs"))
    ok(client, "job-cancel", id="busy")
    events_until_concluded(client, "busy")
    img_check(top)


@pytest.mark.parametrize("how", ["snapshot-sync", "base-node"])
def test_the_new_chain_survives_a_restart_with_the_state_file(tmp_path, how):
    """Recorded in the state file: after a stream, a restart opens the node over its new
    backing (none after a whole-chain stream of a blockdev-snapshot-sync overlay; the base
    node after a stream down to it), serving the same data."""
    tmp = tmp_path
    base, mid, top, reference = make_chain(tmp)
    qmp = tmp / "qmp.sock"
    argv = ["--qmp", str(qmp), "--state-file", str(tmp / "state.json")]
    expected_depth = 0 if how == "snapshot-sync" else 1
    backend = Backend(SPINDLE, tmp, "first")
    try:
        backend.start(argv, qmp)
        client = spindle_qmp(qmp)
        if how == "snapshot-sync":
            add_node(client, "top", top, writable=True)
            ok(client, "blockdev-snapshot-sync", **{"node-name": "top", "snapshot-file": str(tmp / "snap.qcow2"),
                                                    "snapshot-node-name": "snap"})
            node = "snap"
        else:
            add_chain_nodes(client, base, mid, top)
            node = "top"
        sock = export(client, tmp, node, writable=True)
        ok(client, "block-stream", **{"job-id": "s", "device": node,
                                      **({} if how == "snapshot-sync" else {"base-node": "base"})})
        events_until_concluded(client, "s")
        assert node_info(client, node)["backing_file_depth"] == expected_depth
        client.close()
    finally:
        backend.stop()
    qmp.unlink(missing_ok=True)
    backend = Backend(SPINDLE, tmp, "second")
    try:
        backend.start(argv, qmp)
        client = spindle_qmp(qmp)
        assert node_info(client, node)["backing_file_depth"] == expected_depth
        assert dump(sock, tmp, "after-restart") == reference.read_bytes()
        if how == "snapshot-sync":  # the overlay is recorded as the blockdev-add of a standalone image now
            assert "blockdev-snapshot-sync" not in (tmp / "state.json").read_text()
        client.close()
    finally:
        backend.stop()
    image = tmp / "snap.qcow2" if how == "snapshot-sync" else top
    img_check(image)
    compare(image, reference)

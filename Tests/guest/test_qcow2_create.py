"""blockdev-create (file and qcow2), blockdev-snapshot and blockdev-snapshot-sync over a real
QMP socket; images checked with the real qemu-img, data read back through the vhost-user-blk
socket with spindle-bench --dump. No guest. Every daemon started is stopped, even on failure."""

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
pytestmark = [
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


def test_qemus_documented_sequence_makes_an_image_that_serves_zeroes(daemon):
    client, tmp = daemon
    image = tmp / "test.qcow2"
    ok(client, "blockdev-create", **{"job-id": "job0"}, options={"driver": "file", "filename": str(image), "size": 0})
    assert job_statuses(client, "job0") == ["created", "running", "waiting", "pending", "concluded"]
    assert ok(client, "query-jobs") == [{"id": "job0", "type": "create", "status": "concluded",
                                          "current-progress": 0, "total-progress": 0}]
    ok(client, "job-dismiss", id="job0")
    assert job_statuses(client, "job0", "null") == ["null"]
    assert ok(client, "query-jobs") == []
    assert image.stat().st_size == 0
    ok(client, "blockdev-add", driver="file", filename=str(image), **{"node-name": "my_file"})
    info = create(client, "job1", driver="qcow2", file="my_file", size=64 * MiB)
    assert "error" not in info
    ok(client, "blockdev-add", driver="qcow2", **{"node-name": "my_qcow2", "read-only": True}, file="my_file")
    [node] = [n for n in ok(client, "query-named-block-nodes") if n["node-name"] == "my_qcow2"]
    assert node["drv"] == "qcow2" and node["image"]["virtual-size"] == 64 * MiB
    assert dump(export(client, tmp, "my_qcow2"), tmp, "zeroes") == bytes(64 * MiB)
    img_check(image)
    shown = img_info(image)
    assert shown["virtual-size"] == 64 * MiB and shown["cluster-size"] == 64 * KiB
    assert shown["format-specific"]["data"]["compat"] == "1.1"
    assert shown["format-specific"]["data"]["refcount-bits"] == 16


@pytest.mark.parametrize("options,expected", [
    ({"version": "v2"}, {"compat": "0.10", "cluster-size": 64 * KiB, "refcount-bits": 16}),
    ({"cluster-size": 512, "refcount-bits": 1}, {"compat": "1.1", "cluster-size": 512, "refcount-bits": 1}),
    ({"cluster-size": 2 * MiB, "refcount-bits": 64, "lazy-refcounts": True},
     {"compat": "1.1", "cluster-size": 2 * MiB, "refcount-bits": 64, "lazy-refcounts": True}),
])
def test_qcow2_options_are_what_qemu_img_shows(daemon, options, expected):
    client, tmp = daemon
    image = tmp / "opts.qcow2"
    create(client, "f", driver="file", filename=str(image), size=0)
    # The nested BlockdevRef form of `file`, opened for the creation only.
    info = create(client, "q", driver="qcow2", file={"driver": "file", "filename": str(image)}, size=3 * 1024 * MiB, **options)
    assert "error" not in info, info
    img_check(image)
    shown = img_info(image)
    assert shown["virtual-size"] == 3 * 1024 * MiB and shown["cluster-size"] == expected["cluster-size"]
    data = shown["format-specific"]["data"]
    assert data["compat"] == expected["compat"] and data["refcount-bits"] == expected["refcount-bits"]
    if "lazy-refcounts" in expected:
        assert data["lazy-refcounts"] is True


def test_backing_file_and_format_reach_the_header(daemon):
    client, tmp = daemon
    base = tmp / "base.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(base), str(8 * MiB))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 64k", str(base))
    overlay = tmp / "overlay.qcow2"
    create(client, "f", driver="file", filename=str(overlay), size=0)
    ok(client, "blockdev-add", driver="file", filename=str(overlay), **{"node-name": "ovf"})
    info = create(client, "q", driver="qcow2", file="ovf", size=8 * MiB, **{"backing-file": str(base), "backing-fmt": "qcow2"})
    assert "error" not in info, info
    chain = img_info(overlay, chain=True)
    assert [c["filename"] for c in chain] == [str(overlay), str(base)]
    assert chain[0]["backing-filename"] == str(base) and chain[0]["backing-filename-format"] == "qcow2"
    img_check(overlay)
    # Opened with its header's chain, it serves the base's data.
    ok(client, "blockdev-add", driver="qcow2", **{"node-name": "ov", "read-only": True}, file="ovf")
    data = dump(export(client, tmp, "ov"), tmp, "ov")
    assert data[MiB:MiB + 64 * KiB] == b"\x5a" * (64 * KiB) and data[:MiB] == bytes(MiB)


@pytest.mark.parametrize("options,error", [
    ({"cluster-size": 1000}, "Cluster size must be a power of two between 512 and 2048k"),
    ({"cluster-size": 4 * MiB}, "Cluster size must be a power of two between 512 and 2048k"),
    ({"refcount-bits": 3}, "Refcount width must be a power of two and may not exceed 64 bits"),
    ({"version": "v2", "refcount-bits": 8}, "Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)"),
    ({"version": "v2", "lazy-refcounts": True}, "Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)"),
    ({"backing-fmt": "raw"}, "Backing format cannot be used without backing file"),
    ({"size": 1000}, "Image size must be a multiple of 512 bytes"),
    ({"file": "nope"}, "Cannot find device=nope nor node_name=nope"),
    ({"preallocation": "metadata"}, "Unsupported preallocation mode 'metadata'"),
])
def test_bad_qcow2_options_end_the_job_with_qemus_error(daemon, options, error):
    client, tmp = daemon
    image = tmp / "bad.qcow2"
    image.write_bytes(b"keep")
    ok(client, "blockdev-add", driver="file", filename=str(image), **{"node-name": "f"})
    info = create(client, "c0", **{"driver": "qcow2", "file": "f", "size": 64 * MiB, **options})
    assert info["status"] == "concluded"
    assert info.get("error", "").startswith(error), info
    if options.get("file") != "nope":
        # The node is free again for another try.
        assert "error" not in create(client, "c1", driver="qcow2", file="f", size=MiB)


def test_bad_commands_are_refused_with_qemu_like_messages(daemon):
    client, tmp = daemon
    image = tmp / "x.qcow2"
    def refused(arguments: dict) -> str:
        reply = client.cmd_raw("blockdev-create", arguments)
        assert "error" in reply, reply
        return reply["error"]["desc"]
    assert refused({"options": {"driver": "file"}}) == "Parameter 'job-id' is missing"
    assert refused({"job-id": "j"}) == "Parameter 'options' is missing"
    assert refused({"job-id": "j", "options": {"driver": "file", "filename": str(image)}}) == "Parameter 'options.size' is missing"
    assert refused({"job-id": "j", "options": {"driver": "file", "filename": str(image), "size": 1, "x": 1}}) == "Parameter 'options.x' is unexpected"
    assert refused({"job-id": "j", "options": {"driver": "nbd"}}) == "Parameter 'options.driver' does not accept value 'nbd'"
    assert refused({"job-id": "j", "options": {"driver": "vmdk"}}).startswith("Driver 'vmdk' does not support blockdev-create")
    assert refused({"job-id": "9", "options": {"driver": "file", "filename": str(image), "size": 0}}) == "Invalid job ID '9'"
    assert refused({"job-id": "j", "options": {"driver": "qcow2", "file": "f", "size": MiB, "encrypt": {}}}).startswith("Parameter 'options.encrypt' is not supported")


def test_file_preallocation_off_and_falloc(daemon):
    client, tmp = daemon
    sparse, allocated = tmp / "sparse.raw", tmp / "falloc.raw"
    allocated.write_bytes(b"\x77" * 4096)  # an existing file is emptied first
    assert "error" not in create(client, "s", driver="file", filename=str(sparse), size=8 * MiB)
    assert "error" not in create(client, "f", driver="file", filename=str(allocated), size=8 * MiB, preallocation="falloc")
    assert sparse.stat().st_size == allocated.stat().st_size == 8 * MiB
    assert sparse.stat().st_blocks == 0 and allocated.stat().st_blocks * 512 >= 8 * MiB
    assert allocated.read_bytes() == bytes(8 * MiB)
    info = create(client, "x", driver="file", filename=str(tmp / "full.raw"), size=MiB, preallocation="full")
    assert info["error"].startswith("Unsupported preallocation mode 'full'")
    info = create(client, "y", driver="file", filename=str(tmp / "no" / "such" / "dir.raw"), size=MiB)
    assert info["error"].startswith("Could not create '")


def test_a_file_in_use_is_not_overwritten(daemon):
    client, tmp = daemon
    image = tmp / "used.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(image), str(MiB))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4k", str(image))
    ok(client, "blockdev-add", driver="file", filename=str(image), **{"node-name": "f"})
    ok(client, "blockdev-add", driver="qcow2", **{"node-name": "q", "read-only": True}, file="f")
    info = create(client, "c0", driver="qcow2", file="f", size=MiB)
    assert "is in use" in info["error"]
    info = create(client, "c1", driver="file", filename=str(image), size=0)
    assert "is open as node 'f'" in info["error"]
    run("qemu-io", "-r", "-U", "-f", "qcow2", "-c", "read -P 0x11 0 4k", str(image))


# ---- external snapshots


def base_image(tmp: Path) -> Path:
    base = tmp / "base.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(base), str(8 * MiB))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 192k", "-c", "write -P 0x22 3M 64k", str(base))
    return base


def test_blockdev_snapshot_keeps_serving_the_same_data(daemon):
    client, tmp = daemon
    base = base_image(tmp)
    qcow2_node(client, "base", base)
    sock = export(client, tmp, "base")
    before = dump(sock, tmp, "before")
    overlay = tmp / "overlay.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(overlay), str(8 * MiB))
    qcow2_node(client, "ov", overlay, backing=None)
    ok(client, "blockdev-snapshot", node="base", overlay="ov")
    assert ok(client, "query-block-exports")[0]["node-name"] == "ov"
    [node] = [n for n in ok(client, "query-named-block-nodes") if n["node-name"] == "ov"]
    assert node["backing_file_depth"] == 1
    assert dump(sock, tmp, "after") == before
    chain = img_info(overlay, chain=True)
    assert [c["filename"] for c in chain] == [str(overlay), str(base)]
    # The old top is a backing child now: not deletable, not snapshotted again.
    reply = client.cmd_raw("blockdev-del", {"node-name": "base"})
    assert "error" in reply
    qcow2_node(client, "ov2", overlay, backing=None)
    reply = client.cmd_raw("blockdev-snapshot", {"node": "base", "overlay": "ov2"})
    assert "is not the top of its chain" in reply["error"]["desc"]


def test_blockdev_snapshot_refusals(daemon):
    client, tmp = daemon
    base = base_image(tmp)
    qcow2_node(client, "base", base)
    overlay = tmp / "overlay.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(overlay), str(8 * MiB))
    qcow2_node(client, "with-backing", overlay)  # its header's chain is opened
    reply = client.cmd_raw("blockdev-snapshot", {"node": "base", "overlay": "with-backing"})
    assert reply["error"]["desc"].startswith("The overlay already has a backing image")
    ok(client, "blockdev-add", driver="file", filename=str(base), **{"node-name": "raw", "read-only": True})
    reply = client.cmd_raw("blockdev-snapshot", {"node": "base", "overlay": "raw"})
    assert reply["error"]["desc"].startswith("The overlay does not support backing images")
    reply = client.cmd_raw("blockdev-snapshot", {"node": "base", "overlay": "base"})
    assert reply["error"]["desc"] == "Making 'base' a backing child of 'base' would create a cycle"
    reply = client.cmd_raw("blockdev-snapshot-sync", {"node-name": "base", "snapshot-file": str(tmp / "s.qcow2")})
    assert reply["error"]["desc"].startswith("New overlay node name missing")
    reply = client.cmd_raw("blockdev-snapshot-sync", {"node-name": "base", "snapshot-file": str(tmp / "s.qcow2"),
                                                      "snapshot-node-name": "raw"})
    assert reply["error"]["desc"] == "New overlay node name already in use"
    assert not (tmp / "s.qcow2").exists()
    # The node's own image as snapshot-file would be overwritten: refused, the image intact.
    image = base.read_bytes()
    reply = client.cmd_raw("blockdev-snapshot-sync", {"node-name": "base", "snapshot-file": str(base),
                                                      "snapshot-node-name": "s"})
    assert "is the image of qcow2 node 'base'" in reply["error"]["desc"]
    assert base.read_bytes() == image
    qcow2_node(client, "busy", overlay, backing=None)
    export(client, tmp, "busy")
    reply = client.cmd_raw("blockdev-snapshot", {"node": "base", "overlay": "busy"})
    assert reply["error"]["desc"].startswith("The overlay is already in use")
    reply = client.cmd_raw("blockdev-snapshot", {"node": "nope", "overlay": "raw"})
    assert reply["error"]["desc"] == "Cannot find device='nope' nor node-name='nope'"
    reply = client.cmd_raw("blockdev-snapshot-sync", {"node-name": "base", "snapshot-file": str(tmp / "s.vmdk"),
                                                      "snapshot-node-name": "s", "format": "vmdk"})
    assert "format 'vmdk' is not supported" in reply["error"]["desc"]
    assert not (tmp / "s.vmdk").exists()


@pytest.mark.parametrize("mode", ["absolute-paths", "existing"])
def test_blockdev_snapshot_sync_creates_the_overlay_and_switches(daemon, mode):
    client, tmp = daemon
    base = base_image(tmp)
    qcow2_node(client, "base", base)
    sock = export(client, tmp, "base")
    before = dump(sock, tmp, "before")
    overlay = tmp / "snap.qcow2"
    if mode == "existing":
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(overlay), str(8 * MiB))
    ok(client, "blockdev-snapshot-sync", **{"node-name": "base", "snapshot-file": str(overlay),
                                            "snapshot-node-name": "snap", "mode": mode})
    assert ok(client, "query-block-exports")[0]["node-name"] == "snap"
    assert dump(sock, tmp, "after") == before
    chain = img_info(overlay, chain=True)
    assert [c["filename"] for c in chain] == [str(overlay), str(base)]
    assert chain[0]["backing-filename-format"] == "qcow2"
    img_check(overlay)


def test_after_a_snapshot_writes_land_in_the_overlay(daemon):
    client, tmp = daemon
    base = tmp / "base.raw"
    base.write_bytes(b"\x11" * (4 * MiB))
    ok(client, "blockdev-add", driver="file", filename=str(base), **{"node-name": "base"})
    sock = export(client, tmp, "base", writable=True)
    overlay = tmp / "snap.qcow2"
    reply = client.cmd_raw("blockdev-snapshot-sync", {"node-name": "base", "snapshot-file": str(overlay),
                                                      "snapshot-node-name": "snap"})
    if "error" in reply and "not implemented" in reply["error"]["desc"]:
        pytest.skip(f"qcow2 writes are not in this build: {reply['error']['desc']}")
    assert "return" in reply, reply
    result = subprocess.run([str(BENCH), "--socket", str(sock), "--rw", "write", "--fill", "0x5a", "--bs", "65536",
                             "--size", str(MiB), "--runtime", "1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert base.read_bytes() == b"\x11" * (4 * MiB)
    run("qemu-io", "-r", "-U", "-f", "qcow2", "-c", f"read -P 0x5a 0 {MiB}", "-c", f"read -P 0x11 {MiB} {3 * MiB}", str(overlay))
    img_check(overlay)


@pytest.mark.parametrize("how", ["blockdev-snapshot", "blockdev-snapshot-sync"])
def test_a_snapshot_survives_a_restart_with_the_state_file(tmp_path, how):
    """Recorded in the state file: after SIGKILL and a start with the same command line the
    export serves the overlay again (a -sync overlay is opened, not created again)."""
    tmp = tmp_path
    base = base_image(tmp)
    overlay = tmp / "snap.qcow2"
    qmp = tmp / "qmp.sock"
    argv = ["--blockdev", json.dumps({"driver": "qcow2", "node-name": "base", "read-only": True,
                                      "file": {"driver": "file", "filename": str(base)}}),
            "--export", f"type=vhost-user-blk,id=e0,node-name=base,addr.type=unix,addr.path={tmp / 'e0.sock'}",
            "--qmp", str(qmp), "--state-file", str(tmp / "state.json")]
    backend = Backend(SPINDLE, tmp, "first")
    try:
        backend.start(argv, qmp)
        client = spindle_qmp(qmp)
        before = dump(tmp / "e0.sock", tmp, "before")
        if how == "blockdev-snapshot":
            run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(overlay), str(8 * MiB))
            qcow2_node(client, "snap", overlay, backing=None)
            ok(client, "blockdev-snapshot", node="base", overlay="snap")
        else:
            ok(client, "blockdev-snapshot-sync", **{"node-name": "base", "snapshot-file": str(overlay),
                                                    "snapshot-node-name": "snap"})
        client.close()
        marker = overlay.stat().st_mtime_ns
    finally:
        backend.stop()
    qmp.unlink(missing_ok=True)
    backend = Backend(SPINDLE, tmp, "second")
    try:
        backend.start(argv, qmp)
        client = spindle_qmp(qmp)
        assert ok(client, "query-block-exports")[0]["node-name"] == "snap"
        [node] = [n for n in ok(client, "query-named-block-nodes") if n["node-name"] == "snap"]
        assert node["backing_file_depth"] == 1
        assert dump(tmp / "e0.sock", tmp, "after") == before
        assert overlay.stat().st_mtime_ns == marker
        client.close()
    finally:
        backend.stop()

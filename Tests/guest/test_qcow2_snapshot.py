"""blockdev-snapshot and blockdev-snapshot-sync over a real QMP socket: the export's data
before and after (also with reads in flight), the chain qemu-img sees, the refusals, the
state file, writes landing in the overlay. No guest. Every daemon started is stopped."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from guestlib import Backend
from interactive import ok, spindle_qmp
from qcow2qmp import (BENCH, KiB, MiB, SKIPS, SPINDLE, base_image, create, daemon, dump, export, img_check,  # noqa: F401
                      img_info, job_statuses, qcow2_node, run)

pytestmark = SKIPS


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
    # Under an export's I/O limits (an implicit throttle node): refused, saying so.
    export(client, tmp, "base")
    ok(client, "block_set_io_throttle", id="e-base", bps=0, bps_rd=0, bps_wr=0, iops=1000, iops_rd=0, iops_wr=0)
    qcow2_node(client, "free", overlay, backing=None)
    reply = client.cmd_raw("blockdev-snapshot", {"node": "base", "overlay": "free"})
    assert "has filter node '#throttle-e-base' over it" in reply["error"]["desc"]
    ok(client, "block_set_io_throttle", id="e-base", bps=0, bps_rd=0, bps_wr=0, iops=0, iops_rd=0, iops_wr=0)
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


def test_reads_in_flight_across_the_snapshot_all_return_the_data(daemon):
    """A frontend reads without pause on two queues while the snapshot drains and switches:
    every read succeeds and returns the image's byte (the overlay's backing is the old top)."""
    client, tmp = daemon
    base = tmp / "full.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(base), str(8 * MiB))
    run("qemu-io", "-f", "qcow2", "-c", f"write -P 0x11 0 {8 * MiB}", str(base))
    qcow2_node(client, "base", base)
    sock = tmp / "busy.sock"
    ok(client, "block-export-add", type="vhost-user-blk", id="e0", **{"node-name": "base", "num-queues": 2},
       addr={"type": "unix", "path": str(sock)})
    reader = subprocess.Popen([str(BENCH), "--socket", str(sock), "--rw", "randread", "--bs", "64k", "--iodepth", "4",
                               "--runtime", "4", "--ramp", "0", "--json-only", "--cpus", "none", "--queues", "2",
                               "--expect", "0x11"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        ok(client, "blockdev-snapshot-sync", **{"node-name": "base", "snapshot-file": str(tmp / "snap.qcow2"),
                                                "snapshot-node-name": "snap"})
        out, err = reader.communicate(timeout=120)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert reader.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["ios"] > 0, result
    assert ok(client, "query-block-exports")[0]["node-name"] == "snap"

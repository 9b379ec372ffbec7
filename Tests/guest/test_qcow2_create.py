"""blockdev-create (file and qcow2) over a real QMP socket: QEMU's documented sequence, the
options and their refusals; images checked with the real qemu-img, data read back through the
vhost-user-blk socket. No guest. Every daemon started is stopped, even on failure."""

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

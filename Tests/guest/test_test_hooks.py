"""The test hooks as configuration, through QMP without a guest: an x-delay filter node
(blockdev-add, query-named-block-nodes, its child kept in use) and an export's x-inflight key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from interactive import ok, spindle_qmp, wait_event
from test_qmp import daemon  # noqa: F401 (the fixture: a spindle with a QMP socket)

SPINDLE = os.environ.get("SPINDLE_BIN", "")
pytestmark = pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle")
MiB = 1024 * 1024



def test_delay_filter_node_over_qmp(daemon, tmp_path):
    _, path = daemon
    client = spindle_qmp(path)
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(16 * MiB)
    ok(client, "blockdev-add", **{"driver": "file", "node-name": "disk0", "filename": str(image)})
    ok(client, "blockdev-add", **{"driver": "x-delay", "node-name": "held0", "file": "disk0",
                                  "hold-every": 3, "hold-ms": 20, "fail-every": 100, "fail-errno": "ENOSPC"})
    nodes = {n["node-name"]: n for n in ok(client, "query-named-block-nodes")}
    assert nodes["held0"]["drv"] == "x-delay"
    assert nodes["held0"]["file"] == str(image)  # a filter shows its child's file, as QEMU
    assert nodes["held0"]["image"]["virtual-size"] == 16 * MiB
    # A filter needs an existing child, and not another x-delay node.
    reply = client.cmd_raw("blockdev-add", {"driver": "x-delay", "node-name": "x", "file": "nothere"})
    assert reply["error"]["class"] == "GenericError" and "nothere" in reply["error"]["desc"]
    reply = client.cmd_raw("blockdev-add", {"driver": "x-delay", "node-name": "x", "file": "held0"})
    assert "error" in reply
    # The child is in use while the filter exists; resizing goes through the filter.
    reply = client.cmd_raw("blockdev-del", {"node-name": "disk0"})
    assert reply["error"]["class"] == "GenericError" and "held0" in reply["error"]["desc"]
    reply = client.cmd_raw("block_resize", {"node-name": "disk0", "size": 32 * MiB})
    assert "held0" in reply["error"]["desc"]
    ok(client, "block_resize", **{"node-name": "held0", "size": 32 * MiB})
    assert os.path.getsize(image) == 32 * MiB
    # An export of the filter, without the inflight region.
    sock = tmp_path / "e0.sock"
    ok(client, "block-export-add", **{"type": "vhost-user-blk", "id": "e0", "node-name": "held0", "writable": True,
                                       "x-inflight": False, "addr": {"type": "unix", "path": str(sock)}})
    assert sock.exists()
    ok(client, "block-export-del", id="e0")
    wait_event(client, "BLOCK_EXPORT_DELETED")
    ok(client, "blockdev-del", **{"node-name": "held0"})
    ok(client, "blockdev-del", **{"node-name": "disk0"})
    assert ok(client, "query-named-block-nodes") == []

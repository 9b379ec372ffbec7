"""I/O limits through a real spindle, without a guest: throttle groups on the command line
and over QMP (object-add, qom-get/qom-set of their limits, object-del), throttle nodes
(blockdev-add driver=throttle), block_set_io_throttle on an export, and their errors;
spindle-bench as the frontend. Throughput is only bounded from above (a limit can never be
exceeded, whatever the machine's speed); bench/throttle.sh measures it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from guestlib import Backend
from interactive import ok, spindle_qmp

SPINDLE = os.environ.get("SPINDLE_BIN", "")
pytestmark = pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle")
BENCH = Path(SPINDLE).with_name("spindle-bench") if SPINDLE else Path("/nonexistent")
needs_bench = pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench next to spindle")


def start(tmp: Path, extra: list[str]):
    backend = Backend(SPINDLE, tmp, "spindle")
    qmp = tmp / "qmp.sock"
    backend.start(["--blockdev", "null-co,node-name=n0,size=64M", *extra, "--qmp", str(qmp)], qmp)
    return backend, spindle_qmp(qmp)


def error(client, command: str, **args) -> dict:
    reply = client.cmd_raw(command, args or None)
    assert "error" in reply, f"{command} {args} succeeded: {reply}"
    return reply["error"]


def bench(sock: Path, runtime: int = 1) -> dict:
    out = subprocess.run([str(BENCH), "--socket", str(sock), "--rw", "randread", "--bs", "4k", "--iodepth", "8",
                          "--runtime", str(runtime), "--ramp", "0", "--json-only", "--cpus", "none"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def export(client, tmp: Path, node: str, id: str = "exp0") -> Path:
    sock = tmp / f"{id}.sock"
    ok(client, "block-export-add", type="vhost-user-blk", id=id, **{"node-name": node},
       addr={"type": "unix", "path": str(sock)})
    return sock


def limits_of(client, group: str) -> dict:
    return ok(client, "qom-get", path=group, property="limits")


def test_group_limits_over_qmp(tmp_path):
    backend, client = start(tmp_path, ["--object", "throttle-group,id=tg0,x-iops-total=5000"])
    try:
        assert limits_of(client, "tg0")["iops-total"] == 5000
        assert limits_of(client, "/objects/tg0")["iops-total-max-length"] == 1
        ok(client, "object-add", **{"qom-type": "throttle-group", "id": "tg1", "limits": {"bps-total": 20000000}})
        assert limits_of(client, "tg1")["bps-total"] == 20000000
        # qom-set replaces the members it names and keeps the others (QEMU's rule).
        ok(client, "qom-set", path="tg1", property="limits", value={"iops-total": 100, "iops-total-max": 200})
        after = limits_of(client, "tg1")
        assert (after["bps-total"], after["iops-total"], after["iops-total-max"]) == (20000000, 100, 200)
        ok(client, "qom-set", path="tg1", property="x-iops-total", value=150)
        assert ok(client, "qom-get", path="tg1", property="x-iops-total") == 150
        # Invalid limits are refused and change nothing.
        assert "cannot be used at the same time" in error(client, "qom-set", path="tg1", property="limits",
                                                          value={"iops-read": 5})["desc"]
        assert "bps_max/iops_max cannot be lower than bps/iops" in error(client, "qom-set", path="tg1", property="limits",
                                                                         value={"iops-total-max": 10})["desc"]
        assert limits_of(client, "tg1")["iops-total"] == 150
        assert error(client, "qom-get", path="nope", property="limits")["class"] == "DeviceNotFound"
        assert error(client, "qom-set", path="tg1", property="colour", value=1)["class"] == "DeviceNotFound"
        assert "unexpected" in error(client, "qom-set", path="tg1", property="limits", value={}, extra=1)["desc"]
        assert "iops size requires an iops value" in error(client, "object-add", **{
            "qom-type": "throttle-group", "id": "tg2", "limits": {"iops-size": 4096}})["desc"]
        assert "duplicate" in error(client, "object-add", **{"qom-type": "throttle-group", "id": "tg0"})["desc"]
        ok(client, "object-del", id="tg1")
        assert error(client, "qom-get", path="tg1", property="limits")["class"] == "DeviceNotFound"
    finally:
        client.close()
        backend.stop()


@needs_bench
def test_throttle_node_caps_its_export_and_holds_its_group(tmp_path):
    backend, client = start(tmp_path, ["--object", "throttle-group,id=tg0,x-iops-total=100"])
    try:
        ok(client, "blockdev-add", driver="throttle", **{"node-name": "t0", "throttle-group": "tg0", "file": "n0"})
        sock = export(client, tmp_path, "t0")
        nodes = {n["node-name"]: n for n in ok(client, "query-named-block-nodes")}
        assert nodes["t0"]["drv"] == "throttle" and nodes["t0"]["image"]["virtual-size"] == 64 << 20
        result = bench(sock)
        assert result["errors"] == 0 and result["ios"] > 0
        # 100 per second plus the bucket's first tenth of a second: never more.
        assert result["ios"] <= 100 * result["duration_s"] * 1.05 + 12, result
        desc = error(client, "object-del", id="tg0")["desc"]
        assert "throttle group 'tg0' is used by throttle node 't0'" in desc
        assert "Throttle group 'nope' does not exist" in error(client, "blockdev-add", driver="throttle", **{
            "node-name": "t1", "throttle-group": "nope", "file": "n0"})["desc"]
        assert "in use by 1 export" in error(client, "blockdev-del", **{"node-name": "t0"})["desc"]
        ok(client, "block-export-del", id="exp0")
        ok(client, "blockdev-del", **{"node-name": "t0"})
        ok(client, "object-del", id="tg0")
    finally:
        client.close()
        backend.stop()


def throttle_args(**overrides) -> dict:
    args = {"id": "exp0", "bps": 0, "bps_rd": 0, "bps_wr": 0, "iops": 0, "iops_rd": 0, "iops_wr": 0}
    args.update(overrides)
    return args


@needs_bench
def test_block_set_io_throttle_adds_and_removes_an_implicit_node(tmp_path):
    backend, client = start(tmp_path, [])
    try:
        sock = export(client, tmp_path, "n0")
        ok(client, "block_set_io_throttle", **throttle_args(iops=100, iops_max=200, iops_max_length=2))
        nodes = {n["node-name"]: n["drv"] for n in ok(client, "query-named-block-nodes")}
        assert nodes == {"n0": "null-co", "#throttle-exp0": "throttle"}
        assert ok(client, "query-block-exports")[0]["node-name"] == "n0"
        # query-blockstats names the node the export serves, as QEMU (legacy limits are no node).
        [stats] = ok(client, "query-blockstats")
        assert stats["node-name"] == "n0", stats
        assert limits_of(client, "exp0")["iops-total-max"] == 200
        result = bench(sock)
        assert result["errors"] == 0
        assert result["ios"] <= 200 * result["duration_s"] * 1.05 + 25, result
        # Zero limits: the node and its implicit group go.
        ok(client, "block_set_io_throttle", **throttle_args())
        assert [n["node-name"] for n in ok(client, "query-named-block-nodes")] == ["n0"]
        assert error(client, "qom-get", path="exp0", property="limits")["class"] == "DeviceNotFound"
        # Into a named group: the group takes these limits.
        ok(client, "object-add", **{"qom-type": "throttle-group", "id": "shared", "limits": {"iops-total": 1000}})
        ok(client, "block_set_io_throttle", **throttle_args(bps=20000000, group="shared"))
        assert limits_of(client, "shared")["bps-total"] == 20000000 and limits_of(client, "shared")["iops-total"] == 0
        assert bench(sock)["errors"] == 0
        ok(client, "block_set_io_throttle", **throttle_args())
        ok(client, "object-del", id="shared")  # a named group stays until deleted
        # Errors, in QEMU's words where QEMU has them.
        assert error(client, "block_set_io_throttle", **throttle_args(id="nope", iops=1))["class"] == "DeviceNotFound"
        assert "Parameter 'iops_wr' is missing" in error(client, "block_set_io_throttle", id="exp0", bps=0, bps_rd=0,
                                                            bps_wr=0, iops=0, iops_rd=0)["desc"]
        assert "must be within [0, 1000000000000000]" in error(client, "block_set_io_throttle", **throttle_args(bps=-1))["desc"]
        assert "cannot be used at the same time" in error(client, "block_set_io_throttle", **throttle_args(iops=1, iops_rd=1))["desc"]
        assert "Need exactly one of 'device' and 'id'" in error(client, "block_set_io_throttle",
                                                                **throttle_args(device="exp0", iops=1))["desc"]
        # Revoked under a limit: both nodes close, the image (here null-co) is free.
        ok(client, "block_set_io_throttle", **throttle_args(iops=100))
        # A mirror of the node under the limit would miss the writes through it: refused.
        ok(client, "blockdev-add", driver="null-co", **{"node-name": "n9", "size": 64 << 20})
        assert "is the file of throttle node '#throttle-exp0'" in error(client, "blockdev-mirror", **{
            "job-id": "m0", "device": "n0", "target": "n9", "sync": "full"})["desc"]
        ok(client, "blockdev-del", **{"node-name": "n9"})
        ok(client, "block-export-revoke", id="exp0")
        assert ok(client, "query-named-block-nodes") == []
    finally:
        client.close()
        backend.stop()


def test_command_line_throttle_node_and_errors(tmp_path):
    sock = tmp_path / "e.sock"
    backend, client = start(tmp_path, ["--object", "throttle-group,id=tg0,limits.iops-total=5000",
                                       "--blockdev", "driver=throttle,node-name=t0,throttle-group=tg0,file=n0",
                                       "--export", f"type=vhost-user-blk,id=e,node-name=t0,addr.type=unix,addr.path={sock}"])
    try:
        assert ok(client, "query-block-exports")[0]["node-name"] == "t0"
    finally:
        client.close()
        backend.stop()
    bad = subprocess.run([SPINDLE, "--object", "throttle-group,id=tg0,x-iops-total=10,x-iops-total-max=5"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0
    assert "--object id=tg0: bps_max/iops_max cannot be lower than bps/iops" in bad.stderr

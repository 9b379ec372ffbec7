"""query-blockstats end to end, without a guest: the daemon binary, its QMP socket and a
spindle-bench client on the export's socket; qemu-storage-daemon for the shape it shares.
(Exact per-request counts are checked in Tests/DaemonTests/BlockStatsDaemonTests.swift,
where a frontend sends known requests one at a time.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from guestlib import Backend
from interactive import ok, spindle_qmp

SPINDLE = os.environ.get("SPINDLE_BIN", "")
BENCH = Path(SPINDLE).with_name("spindle-bench") if SPINDLE else Path("spindle-bench")
QSD = shutil.which("qemu-storage-daemon")
pytestmark = pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle")

# BlockDeviceStats as QEMU 7.2 sends it (without the optional members).
QEMU_STATS_KEYS = {
    "rd_bytes", "wr_bytes", "unmap_bytes", "rd_operations", "wr_operations", "flush_operations", "unmap_operations",
    "rd_total_time_ns", "wr_total_time_ns", "flush_total_time_ns", "unmap_total_time_ns", "wr_highest_offset",
    "rd_merged", "wr_merged", "unmap_merged", "failed_rd_operations", "failed_wr_operations",
    "failed_flush_operations", "failed_unmap_operations", "invalid_rd_operations", "invalid_wr_operations",
    "invalid_flush_operations", "invalid_unmap_operations", "account_invalid", "account_failed", "timed_stats",
}
COUNTERS = [k for k in QEMU_STATS_KEYS if k not in ("account_invalid", "account_failed", "timed_stats")]


@pytest.fixture
def daemon(tmp_path):
    qmp = tmp_path / "qmp.sock"
    backend = Backend(SPINDLE, tmp_path, "spindle")
    backend.start(["--qmp", str(qmp)], qmp)
    try:
        client = spindle_qmp(qmp)
        for iot in ("iot0", "iot1"):
            ok(client, "object-add", **{"qom-type": "iothread", "id": iot})
        ok(client, "blockdev-add", **{"driver": "null-co", "node-name": "n0", "size": 64 << 20, "read-zeroes": True})
        ok(client, "block-export-add", **{"type": "vhost-user-blk", "id": "e0", "node-name": "n0", "num-queues": 2,
                                           "iothread-vq-mapping": [{"iothread": "iot0", "vqs": [0]}, {"iothread": "iot1", "vqs": [1]}],
                                           "addr": {"type": "unix", "path": str(tmp_path / "e0.sock")}, "writable": True})
        yield client, tmp_path / "e0.sock"
        client.close()
    finally:
        backend.stop()  # even when a set-up command failed


def test_an_idle_export_has_qemus_shape_with_zeros(daemon):
    client, _ = daemon
    [entry] = ok(client, "query-blockstats")
    assert entry["device"] == "" and entry["node-name"] == "n0" and "qdev" not in entry
    assert entry["x-export-id"] == "e0" and entry["x-in-flight"] == 0
    assert set(entry["stats"]) == QEMU_STATS_KEYS, "no idle_time_ns before the first request (as QEMU)"
    assert all(entry["stats"][k] == 0 for k in COUNTERS)
    assert entry["stats"]["account_invalid"] is True and entry["stats"]["timed_stats"] == []
    assert [q["queue"] for q in entry["x-queues"]] == [0, 1]
    [node] = ok(client, "query-blockstats", **{"query-nodes": True})
    assert node["node-name"] == "n0" and "device" not in node and node["x-exports"] == ["e0"]
    assert set(node["stats"]) == QEMU_STATS_KEYS


def test_bad_arguments_get_qemus_errors(daemon):
    client, _ = daemon
    reply = client.cmd_raw("query-blockstats", {"query-nodes": "yes"})
    assert reply["error"]["class"] == "GenericError", reply
    reply = client.cmd_raw("query-blockstats", {"nodes": True})
    assert reply["error"] == {"class": "GenericError", "desc": "Parameter 'nodes' is unexpected"}, reply


@pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench beside spindle")
@pytest.mark.parametrize("ring", ["split", "packed"])
def test_a_benchmark_run_adds_up_per_queue_and_per_node(daemon, ring):
    """Two queues on two IOThreads under randrw, on either ring layout: every figure is the
    sum of the queues', every request was 4 KiB, none failed, nothing is left in flight once
    the client is gone."""
    client, sock = daemon
    bench = subprocess.run([str(BENCH), "--socket", str(sock), "--queues", "2", "--cpus", "none", "--iodepth", "8",
                            "--bs", "4k", "--rw", "randrw", "--runtime", "1", "--ramp", "0", "--json-only",
                            *(["--packed"] if ring == "packed" else [])],
                           capture_output=True, text=True, timeout=120)
    assert bench.returncode == 0, bench.stderr
    result = json.loads(bench.stdout)
    assert result["errors"] == 0 and result["ios"] > 100 and result["ring"] == ring, result
    [entry] = ok(client, "query-blockstats", **{"x-latency-histograms": True})
    stats = entry["stats"]
    # The client counts completions in its measured window; the daemon also those after it.
    assert stats["rd_operations"] + stats["wr_operations"] >= result["ios"]
    assert stats["rd_bytes"] == 4096 * stats["rd_operations"] and stats["wr_bytes"] == 4096 * stats["wr_operations"]
    assert stats["rd_operations"] > 0 and stats["wr_operations"] > 0
    assert all(stats[k] == 0 for k in COUNTERS if k.startswith(("failed_", "invalid_")) or k.endswith("_merged"))
    # Times come from the IOThread's batch clock (one read per batch): null-co completes each
    # request inside its submit, in the batch it was taken in, so each counts 0 ns and sits
    # in the first bin (test_latencies_on_the_batch_clock_cover_a_held_request: real waits).
    assert stats["rd_total_time_ns"] == 0 and stats["wr_total_time_ns"] == 0
    assert stats["rd_latency_histogram"]["bins"][0] == stats["rd_operations"]
    assert stats["wr_highest_offset"] <= 64 << 20
    assert stats["idle_time_ns"] >= 0 and entry["x-in-flight"] == 0
    assert sum(stats["rd_latency_histogram"]["bins"]) == stats["rd_operations"]
    assert sum(stats["wr_latency_histogram"]["bins"]) == stats["wr_operations"]
    queues = entry["x-queues"]
    assert {q["queue"]: q.get("iothread") for q in queues} == {0: None, 1: None}, "the client has gone: no queue runs"
    for key in ("rd_operations", "wr_operations", "rd_bytes", "wr_bytes", "rd_total_time_ns"):
        assert stats[key] == sum(q["stats"][key] for q in queues), key
    assert all(q["stats"]["rd_operations"] > 0 for q in queues), "both queues served requests"
    [node] = ok(client, "query-blockstats", **{"query-nodes": True})
    assert node["stats"]["rd_operations"] == stats["rd_operations"]
    # The figures only grow, and an idle export's idle time does too.
    time.sleep(0.05)
    [later] = ok(client, "query-blockstats")
    assert later["stats"]["rd_operations"] == stats["rd_operations"]
    assert later["stats"]["idle_time_ns"] > stats["idle_time_ns"]


@pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench beside spindle")
def test_latencies_on_the_batch_clock_cover_a_held_request(daemon, tmp_path):
    """x-delay holds every completion 5 ms: on the batch clock (a request is stamped when the
    batch it starts in begins, and its completion when the batch that reaps the held CQE
    begins, after the timer fired) every read counts at least 5 ms, never less."""
    client, _ = daemon
    ok(client, "blockdev-add", **{"driver": "x-delay", "node-name": "held", "file": "n0", "hold-every": 1, "hold-ms": 5})
    sock = tmp_path / "held.sock"
    ok(client, "block-export-add", **{"type": "vhost-user-blk", "id": "held", "node-name": "held", "iothread": "iot0",
                                       "addr": {"type": "unix", "path": str(sock)}})
    bench = subprocess.run([str(BENCH), "--socket", str(sock), "--cpus", "none", "--iodepth", "4", "--bs", "4k",
                            "--rw", "randread", "--runtime", "1", "--ramp", "0", "--json-only"],
                           capture_output=True, text=True, timeout=120)
    assert bench.returncode == 0, bench.stderr
    entry = next(e for e in ok(client, "query-blockstats", **{"x-latency-histograms": True})
                 if e["x-export-id"] == "held")
    stats = entry["stats"]
    reads = stats["rd_operations"]
    assert reads > 0 and stats["rd_total_time_ns"] >= reads * 5_000_000, stats
    histogram = stats["rd_latency_histogram"]
    below = sum(n for bound, n in zip(histogram["boundaries"], histogram["bins"]) if bound <= 5_000_000)
    assert below == 0 and sum(histogram["bins"]) == reads, histogram


@pytest.mark.skipif(QSD is None, reason="needs qemu-storage-daemon")
def test_qemu_storage_daemon_answers_the_same_shape(daemon, tmp_path):
    """qsd 7.2 lists no export in the default mode and zeros per node with query-nodes: the
    members of its stats are the ones Spindle sends."""
    client, _ = daemon
    qmp = tmp_path / "qsd-qmp.sock"
    qsd = Backend(QSD, tmp_path, "qsd")
    try:
        qsd.start(["--blockdev", "null-co,node-name=n0,size=1048576",
                   "--export", f"vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path={tmp_path / 'qsd.sock'}",
                   "--chardev", f"socket,id=m0,path={qmp},server=on,wait=off", "--monitor", "chardev=m0"], qmp)
        qsd_client = spindle_qmp(qmp)
        [qsd_node] = ok(qsd_client, "query-blockstats", **{"query-nodes": True})
        qsd_client.close()
    finally:
        qsd.stop()
    [node] = ok(client, "query-blockstats", **{"query-nodes": True})
    assert set(qsd_node) <= set(node) and set(qsd_node["stats"]) == set(node["stats"])

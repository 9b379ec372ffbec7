"""spindle-bench's paired run (--pair-socket) against a real daemon, no guest: two null-co
exports on one IOThread, one split and one packed, driven from one client thread in
alternating slices. What is checked is the shape and the arithmetic of the report (every
pair counted, both devices served, the ratio statistics those of the listed ratios), not
speed."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from guestlib import Backend

SPINDLE = os.environ.get("SPINDLE_BIN", "")
BENCH = Path(SPINDLE).with_name("spindle-bench") if SPINDLE else Path("/nonexistent")
pytestmark = [pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle"),
              pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench next to spindle")]


@pytest.fixture
def exports(tmp_path):
    """Sockets of a split export and a packed one (packed-ring=on), both on IOThread iot0."""
    split, packed = tmp_path / "split.sock", tmp_path / "packed.sock"
    args = ["--object", "iothread,id=iot0"]
    for node, sock, keys in (("n0", split, ""), ("n1", packed, ",packed-ring=on")):
        args += ["--blockdev", f"driver=null-co,node-name={node},size={64 << 20}",
                 "--export", f"type=vhost-user-blk,id=e-{node},node-name={node},addr.type=unix,addr.path={sock},"
                             f"writable=on,num-queues=1,iothread=iot0{keys}"]
    backend = Backend(SPINDLE, tmp_path, "spindle")
    backend.start(args, packed)
    try:
        deadline = time.monotonic() + 10
        while not split.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield split, packed
    finally:
        backend.stop()


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BENCH), *args], capture_output=True, text=True, timeout=120)


def inclusive_quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


@pytest.mark.parametrize("completion,iodepth,pair_packed", [("eventfd", 1, False), ("poll", 8, True)])
def test_a_paired_run_reports_both_devices_and_the_statistics_of_its_pairs(exports, completion, iodepth, pair_packed):
    """B is the packed export either way; without --pair-packed it is driven with a split
    ring, as A is (the packed export offers both layouts)."""
    split, packed = exports
    args = ["--socket", str(split), "--pair-socket", str(packed), "--cpus", "none", "--iodepth", str(iodepth),
            "--rw", "randrw", "--runtime", "0.4", "--ramp", "0.1", "--slice-ms", "20", "--completion", completion]
    if pair_packed:
        args.append("--pair-packed")
    run = bench(*args)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    pair = result["pair"]
    assert result["ring"] == "split" and pair["ring"] == ("packed" if pair_packed else "split"), result
    assert result["socket"] == str(split) and pair["socket"] == str(packed)
    assert result["errors"] == 0 and pair["errors"] == 0
    assert result["ios"] > 0 and pair["ios"] > 0, "both devices were served"
    assert result["queues"] == 1 and pair["slice_ms"] == 20
    for device in (result, pair):
        assert device["iops"] == pytest.approx(device["ios"] / device["duration_s"], rel=1e-3)
    ratios = pair["ratios"]
    assert pair["pairs"] == len(ratios) >= 1 and all(r > 0 for r in ratios)
    q1, median, q3 = inclusive_quartiles(ratios)
    # The JSON's ratios are rounded to 4 decimals, the statistics were taken before.
    assert pair["ratio_q1"] == pytest.approx(q1, abs=2e-4)
    assert pair["ratio_median"] == pytest.approx(median, abs=2e-4)
    assert pair["ratio_q3"] == pytest.approx(q3, abs=2e-4)
    assert pair["ratio_min"] == pytest.approx(min(ratios), abs=2e-4)
    assert pair["ratio_max"] == pytest.approx(max(ratios), abs=2e-4)
    assert "pair: B ring=" in run.stderr and f"over {len(ratios)} pairs of 20 ms slices" in run.stderr


@pytest.mark.parametrize("extra,message", [
    (["--queues", "2"], "give --queues 1 (not 2)"),
    (["--dirty-log"], "--dirty-log is not supported in a paired run"),
    (["--pair-socket", "/tmp/a.sock"], "must name a second device's socket"),
])
def test_what_a_paired_run_cannot_do_is_refused_before_connecting(extra, message):
    run = bench("--socket", "/tmp/a.sock", "--pair-socket", "/tmp/b.sock", *extra)
    assert run.returncode == 2 and message in run.stderr, run.stderr


def test_pair_options_without_a_pair_are_refused():
    run = bench("--socket", "/tmp/a.sock", "--slice-ms", "20")
    assert run.returncode == 2 and "give --pair-socket PATH too" in run.stderr, run.stderr


def test_a_missing_second_device_is_named(exports):
    split, _ = exports
    run = bench("--socket", str(split), "--pair-socket", str(split.with_name("none.sock")), "--runtime", "0.2")
    assert run.returncode == 1 and "device B (" in run.stderr and "cannot connect" in run.stderr, run.stderr

"""The Prometheus endpoint (--metrics), without a guest: a real spindle serving /metrics on
TCP and on a UNIX socket, scraped while spindle-bench drives an export, parsed with
prometheus_client's text-format parser and compared with QMP's query-iothreads and
query-blockstats."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from guestlib import Backend
from interactive import ok, spindle_qmp

SPINDLE = os.environ.get("SPINDLE_BIN", "")
pytestmark = pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle")
BENCH = Path(SPINDLE).with_name("spindle-bench") if SPINDLE else Path("/nonexistent")
needs_bench = pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench next to spindle")
MiB = 1 << 20
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path):
        super().__init__("localhost", timeout=10)
        self.path = str(path)

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


def get(conn: http.client.HTTPConnection, path: str = "/metrics", method: str = "GET"):
    conn.request(method, path)
    response = conn.getresponse()
    return response.status, response.getheader("Content-Type"), response.read().decode()


def families(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(fams: dict, family: str, suffix: str = "", **labels) -> float:
    """The value of the one sample of `family` (name + suffix) whose labels include `labels`."""
    found = [s.value for s in fams[family].samples
             if s.name == family + suffix and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, f"{family}{suffix} {labels}: {found}"
    return found[0]


def start(tmp: Path, metrics: str, name: str = "m") -> tuple[Backend, object]:
    """spindle with a null-co export on IOThread iot0 (polling off, so it sleeps between
    batches and its counters move), a QMP socket and --metrics."""
    backend = Backend(SPINDLE, tmp, name)
    backend.start(["--object", "iothread,id=iot0,poll-max-ns=0",
                   "--blockdev", "driver=null-co,node-name=null0,size=64M",
                   "--export", f"type=vhost-user-blk,id=exp0,node-name=null0,addr.type=unix,"
                               f"addr.path={tmp / (name + '.sock')},writable=on,num-queues=1,iothread=iot0",
                   "--qmp", str(tmp / f"{name}-qmp.sock"), "--metrics", metrics], tmp / f"{name}.sock")
    deadline = time.monotonic() + 30
    while not backend.pidfile.exists():  # written once --metrics listens
        assert backend.alive() and time.monotonic() < deadline, backend.log_path.read_text()
        time.sleep(0.05)
    return backend, spindle_qmp(tmp / f"{name}-qmp.sock")


def bench(sock: Path, runtime: int = 3) -> subprocess.Popen:
    return subprocess.Popen([str(BENCH), "--socket", str(sock), "--rw", "randread", "--bs", "4k", "--iodepth", "8",
                             "--runtime", str(runtime), "--ramp", "0", "--size", str(16 * MiB), "--json-only",
                             "--cpus", "none"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@needs_bench
def test_scrape_during_a_benchmark_parses_and_agrees_with_qmp(tmp_path):
    port = free_port()
    backend, qmp = start(tmp_path, f"addr.type=inet,addr.host=127.0.0.1,addr.port={port}")
    client = None
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        client = bench(tmp_path / "m.sock")
        # Wait for the frontend, so the scrapes below see a connected, busy export.
        deadline = time.monotonic() + 30
        while True:
            status, content_type, text = get(conn)
            assert status == 200 and content_type == CONTENT_TYPE
            fams = families(text)
            if "spindle_queue_info" in fams:
                break
            assert client.poll() is None and time.monotonic() < deadline, "the benchmark never started a queue"
            time.sleep(0.05)

        # Families, types and labels.
        assert fams["spindle_build_info"].type == "gauge"
        assert sample(fams, "spindle_exports") == 1 and sample(fams, "spindle_nodes") == 1
        for counter in ("poll_hits", "poll_misses", "sleeps", "poll_yields"):
            assert fams[f"spindle_iothread_{counter}"].type == "counter", counter
            assert fams[f"spindle_iothread_{counter}"].documentation
        assert sample(fams, "spindle_export_frontends", export="exp0", node="null0") == 1
        assert sample(fams, "spindle_export_queues", export="exp0", node="null0") == 1
        assert sample(fams, "spindle_export_requests_in_flight", export="exp0", node="null0") >= 0
        assert sample(fams, "spindle_queue_info", export="exp0", queue="0", iothread="iot0") == 1
        assert sample(fams, "spindle_node_size_bytes", node="null0", driver="null-co") == 64 * MiB
        assert sample(fams, "spindle_node_active", node="null0") == 1
        assert sample(fams, "spindle_iothread_queues", iothread="iot0") == 1

        # Counters agree with query-iothreads: scrape, QMP, scrape again, each figure in order.
        for _ in range(5):
            before = families(get(conn)[2])
            [qmp_iot0] = [t for t in ok(qmp, "query-iothreads") if t["id"] == "iot0"]
            after = families(get(conn)[2])
            for counter, field in (("poll_hits", "poll-hits"), ("poll_misses", "poll-misses"),
                                   ("sleeps", "sleeps"), ("poll_yields", "poll-yields")):
                name = f"spindle_iothread_{counter}"
                low = sample(before, name, "_total", iothread="iot0")
                high = sample(after, name, "_total", iothread="iot0")
                assert low <= qmp_iot0[field] <= high, (counter, low, qmp_iot0[field], high)
        assert sample(after, "spindle_iothread_sleeps", "_total", iothread="iot0") > 0

        # Elsewhere: 404; other methods: 405; HEAD: headers only.
        assert get(conn, "/")[0] == 404
        assert get(conn, "/metrics/x")[0] == 404
        assert get(conn, "/metrics", "POST")[0] == 405
        assert get(conn, "/metrics", "HEAD")[0:2] == (200, CONTENT_TYPE)
        assert get(conn, "/metrics?name[]=x")[0] == 200

        out, err = client.communicate(timeout=60)
        assert client.returncode == 0, err

        # After the run, with nothing in flight: the block statistics summed over queues equal
        # query-blockstats' (bytes and operations of the reads, nothing failed or in flight).
        fams = families(get(conn)[2])
        [entry] = [e for e in ok(qmp, "query-blockstats") if e.get("x-export-id") == "exp0"]

        def total(family: str, **labels) -> float:
            return sum(s.value for s in fams[family].samples if s.name == family + "_total"
                       and s.labels["export"] == "exp0" and all(s.labels.get(k) == v for k, v in labels.items()))
        assert fams["spindle_block_operations"].type == "counter"
        assert total("spindle_block_operations", op="read") == entry["stats"]["rd_operations"] > 0
        assert total("spindle_block_bytes", op="read") == entry["stats"]["rd_bytes"] == 4096 * entry["stats"]["rd_operations"]
        assert total("spindle_block_failed") == 0 and total("spindle_block_invalid") == 0
        # null-co completes each read in the IOThread batch it started in: 0 s on the batch
        # clock (test_blockstats.py's held-request test shows real waits counted).
        assert total("spindle_block_time_seconds", op="read") == 0
        assert sample(fams, "spindle_block_requests_in_flight", export="exp0", queue="0") == 0
        assert sample(fams, "spindle_block_idle_seconds", export="exp0", node="null0") >= 0
    finally:
        if client and client.poll() is None:
            client.kill()
            client.wait()
        qmp.close()
        assert backend.stop() == 0
    # SIGTERM closed the listener.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


@needs_bench
def test_throttle_groups_show_their_limits_and_waits(tmp_path):
    """block_set_io_throttle's group on the page: its limit, and every request of a client
    through it counted once, as waited or passed; the export still names the node it serves."""
    port = free_port()
    started = time.monotonic()
    backend, qmp = start(tmp_path, f"addr.type=inet,addr.host=127.0.0.1,addr.port={port}")
    try:
        ok(qmp, "block_set_io_throttle", id="exp0", bps=0, bps_rd=0, bps_wr=0, iops=200, iops_rd=0, iops_wr=0)
        client = bench(tmp_path / "m.sock", runtime=2)
        out, err = client.communicate(timeout=60)
        assert client.returncode == 0, err
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        # The client is gone, but its last requests may still be waiting for the group while
        # the session winds down: look until none is left.
        deadline = time.monotonic() + 30
        while True:
            status, _, text = get(conn)
            assert status == 200
            fams = families(text)
            if sample(fams, "spindle_throttle_waiting_requests", group="exp0") == 0 and \
                    sample(fams, "spindle_export_frontends", export="exp0", node="null0") == 0:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.1)
        assert sample(fams, "spindle_throttle_limit", group="exp0", bucket="iops-total") == 200
        waited = sample(fams, "spindle_throttle_waited_requests", "_total", group="exp0")
        passed = sample(fams, "spindle_throttle_passed_requests", "_total", group="exp0")
        assert waited > 0, text
        assert sample(fams, "spindle_throttle_waiting_requests", group="exp0") == 0
        [stats] = ok(qmp, "query-blockstats")
        assert waited + passed == stats["stats"]["rd_operations"] + stats["stats"]["failed_rd_operations"]
        # The read latency histogram: cumulative buckets ending in +Inf, counting every read.
        reads = stats["stats"]["rd_operations"] + stats["stats"]["failed_rd_operations"]
        assert fams["spindle_block_latency_seconds"].type == "histogram"
        assert sample(fams, "spindle_block_latency_seconds", "_count", export="exp0", op="read") == reads
        buckets = [(float(s.labels["le"]), s.value) for s in fams["spindle_block_latency_seconds"].samples
                   if s.name.endswith("_bucket") and s.labels["op"] == "read"]
        assert buckets[-1] == (float("inf"), reads)
        assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))
        # Reads that waited for the group waited for a timer: none of them is below ~0.1 ms.
        assert reads - next(count for bound, count in buckets if bound >= 1e-4) >= waited
        assert sample(fams, "spindle_export_frontends", export="exp0", node="null0") == 0
        # iot0 never polls (poll-max-ns=0): it slept between the throttled requests and worked
        # on them; the times cover no more than its life.
        slept = sample(fams, "spindle_iothread_sleep_seconds", "_total", iothread="iot0")
        polled = sample(fams, "spindle_iothread_poll_seconds", "_total", iothread="iot0")
        busy = sample(fams, "spindle_iothread_busy_seconds", "_total", iothread="iot0")
        assert slept > 0 and polled == 0 and busy > 0, (slept, polled, busy)
        assert slept + busy < time.monotonic() - started + 1
    finally:
        backend.stop()


def test_unix_socket_endpoint_is_removed_at_exit(tmp_path):
    path = tmp_path / "metrics.sock"
    backend, qmp = start(tmp_path, f"addr.type=unix,addr.path={path}")
    try:
        assert oct(path.stat().st_mode & 0o777) == oct(0o600)
        status, content_type, text = get(UnixHTTPConnection(path))
        assert status == 200 and content_type == CONTENT_TYPE
        fams = families(text)
        assert sample(fams, "spindle_export_frontends", export="exp0", node="null0") == 0
        assert sample(fams, "spindle_iothread_sleeps", "_total", iothread="iot0") >= 0
        # An export hot-plugged over QMP shows at the next scrape, and is gone after its deletion.
        ok(qmp, "blockdev-add", driver="null-co", **{"node-name": "null1"})
        ok(qmp, "block-export-add", type="vhost-user-blk", id="exp1", **{"node-name": "null1"},
           addr={"type": "unix", "path": str(tmp_path / "exp1.sock")})
        assert sample(families(get(UnixHTTPConnection(path))[2]), "spindle_exports") == 2
        ok(qmp, "block-export-del", id="exp1")
        fams = families(get(UnixHTTPConnection(path))[2])
        assert sample(fams, "spindle_exports") == 1
        assert not [s for s in fams["spindle_export_frontends"].samples if s.labels["export"] == "exp1"]
    finally:
        qmp.close()
        assert backend.stop() == 0
    assert not path.exists()


def test_scrapes_do_not_hold_up_shutdown(tmp_path):
    port = free_port()
    backend, qmp = start(tmp_path, f"addr.type=inet,addr.host=127.0.0.1,addr.port={port}")
    qmp.close()
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)  # a client that never asks
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        assert get(conn)[0] == 200
        assert backend.stop() == 0
    finally:
        idle.close()
        if backend.alive():
            os.kill(backend.proc.pid, signal.SIGKILL)


@pytest.mark.parametrize("metrics, words", [
    ("addr.type=inet,addr.host=127.0.0.1,addr.port={busy}", ["--metrics addr.type=inet", "127.0.0.1:{busy}", "Address already in use"]),
    ("addr.type=inet,addr.host=192.0.2.1,addr.port=9109", ["--metrics addr.type=inet", "192.0.2.1:9109", "cannot listen"]),
    ("addr.type=unix,addr.path={tmp}/no/such/dir/m.sock", ["--metrics addr.type=unix", "no/such/dir/m.sock", "No such file"]),
    ("addr.type=inet,addr.host=127.0.0.1,addr.port=99999", ["--metrics", "invalid port '99999'"]),
])
def test_bad_address_is_refused_with_one_line(tmp_path, metrics, words):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        fill = {"busy": port, "tmp": tmp_path}
        sock = tmp_path / "exp0.sock"
        result = subprocess.run([SPINDLE, "--blockdev", "driver=null-co,node-name=null0",
                                 "--export", f"type=vhost-user-blk,id=exp0,node-name=null0,addr.type=unix,addr.path={sock}",
                                 "--metrics", metrics.format(**fill)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("spindle:")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word.format(**fill) in errors[0], errors[0]
    assert not sock.exists()  # the daemon that had started is shut down, its socket removed

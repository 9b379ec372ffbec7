"""An rbd node's queues on several IOThreads, and faults under load, against a real one-node
Ceph cluster (marker `rbd`, no guest). One image handle and one completion eventfd serve
queues on two IOThreads; spindle-bench drives both queues at once, x-queue-move shuffles
them under load, the OSD goes away for 10 s under load; QEMU's own rbd driver (qemu-io)
reads the result. SPINDLE_CEPH_DIR=DIR reuses a cluster made by `scripts/ceph-cluster.sh
start DIR` (it is left running); otherwise the module starts one and always stops it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from guestlib import Backend
from interactive import ok, spindle_qmp

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "ceph-cluster.sh"
SPINDLE = os.environ.get("SPINDLE_BIN", "")
BENCH = Path(SPINDLE).with_name("spindle-bench") if SPINDLE else Path("/nonexistent")
pytestmark = [
    pytest.mark.rbd,
    pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle"),
    pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench next to spindle"),
]

MiB = 1 << 20
SIZE = 16 * MiB


@pytest.fixture
def image(ceph, request):
    name = "q-" + request.node.name.replace("test_", "")[:40]
    subprocess.run(["rbd", "-c", ceph["CEPH_CONF"], "create", "--size", "64M", f"rbd/{name}"], check=True, timeout=60)
    yield name
    subprocess.run(["rbd", "-c", ceph["CEPH_CONF"], "rm", f"rbd/{name}"], capture_output=True, timeout=60)


def serve(tmp: Path, ceph, image: str) -> tuple[Backend, Path]:
    """Spindle with two IOThreads; the export's queue 0 on io0, queue 1 on io1."""
    sock = tmp / "r0.sock"
    backend = Backend(SPINDLE, tmp, "spindle")
    backend.start(["--object", f"secret,id=sec0,file={ceph['CEPH_ADMIN_KEY_FILE']},format=base64",
                   "--object", "iothread,id=io0", "--object", "iothread,id=io1",
                   "--blockdev", f"driver=rbd,node-name=r0,pool=rbd,image={image},user=admin,key-secret=sec0,"
                                 f"conf=/dev/null,server.0.host=127.0.0.1,server.0.port={ceph['CEPH_MON_PORT']}",
                   "--export", f"vhost-user-blk,id=e0,node-name=r0,addr.type=unix,addr.path={sock},writable=on,"
                               f"num-queues=2,iothread.0=io0,iothread.1=io1",
                   "--qmp", str(tmp / "qmp.sock")], sock, timeout=60)
    return backend, sock


def bench_args(sock: Path, rw: str, *, runtime: float, iodepth: int, bs: str = "4k", fill: int | None = None,
               expect: int | None = None) -> list[str]:
    args = [str(BENCH), "--socket", str(sock), "--rw", rw, "--bs", bs, "--iodepth", str(iodepth),
            "--runtime", str(runtime), "--ramp", "0", "--size", str(SIZE), "--json-only", "--cpus", "none",
            "--queues", "2"]
    if fill is not None:
        args += ["--fill", hex(fill)]
    if expect is not None:
        args += ["--expect", hex(expect)]
    return args


def bench(sock: Path, rw: str, *, runtime: float = 1, iodepth: int = 16, timeout: float = 120, **kw) -> dict:
    out = subprocess.run(bench_args(sock, rw, runtime=runtime, iodepth=iodepth, **kw),
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ios"] > 0 and result["errors"] == 0, result
    return result


def assert_pattern(ceph, image: str, byte: int) -> None:
    name = f"rbd:rbd/{image}:conf={ceph['CEPH_CONF']}:id=admin"
    out = subprocess.run(["qemu-io", "-f", "raw", "-c", f"read -P {hex(byte)} 0 {SIZE}", name],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout + out.stderr, out.stdout + out.stderr
    assert "Unknown protocol 'rbd'" not in out.stderr, "QEMU's rbd driver is missing (apt-get install qemu-block-extra)"


def queues_by_thread(client) -> dict:
    return {t["id"]: t["queues"] for t in ok(client, "query-iothreads")}


def test_two_queues_on_two_iothreads_share_one_image(tmp_path, ceph, image):
    backend, sock = serve(tmp_path, ceph, image)
    try:
        bench(sock, "write", bs="64k", iodepth=4, fill=0x5A, runtime=2)
        client = spindle_qmp(tmp_path / "qmp.sock")
        seen: dict = {}
        reader = threading.Thread(target=lambda: seen.update(bench(sock, "randread", runtime=3, iodepth=32, expect=0x5A)))
        reader.start()
        time.sleep(1.5)
        placed = queues_by_thread(client)
        reader.join(timeout=120)
        client.close()
        assert placed["io0"] == ["e0/0"] and placed["io1"] == ["e0/1"], placed
        assert seen and seen["errors"] == 0, seen
    finally:
        backend.stop()
    assert_pattern(ceph, image, 0x5A)
    log = backend.log_path.read_text()
    assert "rbd node 'r0' served by iothread io0" in log, log[-2000:]
    assert "closed rbd image" in log and "leaked" not in log, log[-2000:]


def test_queues_move_between_iothreads_under_write_load(tmp_path, ceph, image):
    """Each x-queue-move drains the queue on its old thread and restarts it on the new one;
    the completion watcher follows the queues (it always runs where one of them is)."""
    backend, sock = serve(tmp_path, ceph, image)
    try:
        bench(sock, "write", bs="64k", iodepth=4, fill=0x6B, runtime=2)
        client = spindle_qmp(tmp_path / "qmp.sock")
        client.settimeout(60)
        load = subprocess.Popen(bench_args(sock, "randwrite", runtime=8, iodepth=32, fill=0x6B),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # Both queues to io1 (the watcher leaves io0), both to io0, then apart again.
            plan = [(0, "io1"), (1, "io0"), (0, "io0"), (1, "io1"), (1, "io0"), (0, "io1"), (1, "io1"), (0, "io0")]
            moves = 0
            time.sleep(1)
            for _ in range(2):
                for queue, thread in plan:
                    ok(client, "x-queue-move", id="e0", queue=queue, iothread=thread)
                    moves += 1
                    time.sleep(0.2)
            placed = queues_by_thread(client)
            out, err = load.communicate(timeout=120)
        finally:
            if load.poll() is None:
                load.kill()
                load.communicate()
        assert load.returncode == 0, err
        result = json.loads(out.strip().splitlines()[-1])
        assert result["errors"] == 0 and result["ios"] > 100, result
        assert moves == 16
        assert placed["io0"] == ["e0/0"] and placed["io1"] == ["e0/1"], placed
        bench(sock, "randread", runtime=1, iodepth=32, expect=0x6B)
        client.close()
    finally:
        backend.stop()
    assert_pattern(ceph, image, 0x6B)
    log = backend.log_path.read_text()
    assert "its completions are now harvested on iothread" in log, log[-3000:]
    assert "closed rbd image" in log and "leaked" not in log, log[-2000:]


# What stays below rados_osd_op_timeout (RbdConnection.swift: 30 s), after which librbd fails
# a request that the OSD has not answered.
OSD_OP_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def own_ceph():
    """A throwaway cluster of the OSD-away test's own (started here, always stopped), never
    the session's: once, in a CI rehearsal on the shared cluster after the other rbd tests,
    the thawed OSD's requests never completed and `rbd rm`/`rbd create` hung for minutes,
    which took every rbd test after it down too (alone, and on a fresh cluster, it passes;
    the cause was not found: the OSD's log is shown when it fails)."""
    if not shutil.which("ceph-mon") or not shutil.which("rbd"):
        pytest.skip("Ceph is not installed (scripts/ceph-cluster.sh install)")
    folder = Path(tempfile.mkdtemp(prefix="spindle-ceph-osd-"))
    try:
        subprocess.run([str(SCRIPT), "start", str(folder / "c")], check=True, timeout=180,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        env = {"DIR": str(folder / "c")}
        for line in (folder / "c" / "env").read_text().splitlines():
            key, _, value = line.partition("=")
            env[key] = value
        yield env
    finally:
        subprocess.run([str(SCRIPT), "stop", str(folder / "c")], timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def own_image(own_ceph):
    subprocess.run(["rbd", "-c", own_ceph["CEPH_CONF"], "create", "--size", "64M", "rbd/osd-away"], check=True, timeout=120)
    yield "osd-away"
    subprocess.run(["rbd", "-c", own_ceph["CEPH_CONF"], "rm", "rbd/osd-away"], capture_output=True, timeout=120)


def osd_log_tail(ceph, lines: int = 40) -> str:
    """The OSD's own account of the outage (slow operations, heartbeat timeouts, map changes)."""
    pidfile = Path(ceph["DIR"]) / "osd.pid"
    pid = pidfile.read_text().strip() if pidfile.exists() else ""
    alive = bool(pid) and Path(f"/proc/{pid}").exists()
    state = f"OSD process {pid or '?'}: {'running' if alive else 'GONE (crashed, or killed by the OOM killer?)'}"
    path = Path(ceph["DIR"]) / "log" / "osd.0.log"
    if not path.exists():
        return f"{state}; no OSD log"
    wanted = ("slow", "timed out", "heartbeat", "marked", "down", "boot", "error", "abort", "suicide", "full")
    kept = [line for line in path.read_text(errors="replace").splitlines() if any(w in line.lower() for w in wanted)]
    return f"{state}; OSD log:\n" + "\n".join(kept[-lines:])


@pytest.mark.parametrize("outage", ["freeze", "restart"])
def test_osd_away_for_ten_seconds_under_load_loses_nothing(tmp_path, own_ceph, own_image, outage):
    """Requests wait while the only OSD is away and complete when it is back; none fails.
    `freeze`: the OSD hangs (SIGSTOP) for exactly 10 s. `restart`: it is stopped, and started
    again after 10 s; on a loaded machine its start can take longer than the op timeout,
    which is then reported instead of a verdict."""
    backend, sock = serve(tmp_path, own_ceph, own_image)
    away = False
    started = time.monotonic()
    try:
        bench(sock, "write", bs="64k", iodepth=4, fill=0x3C, runtime=2)
        load = subprocess.Popen(bench_args(sock, "randwrite", runtime=20 if outage == "freeze" else 40, iodepth=32, fill=0x3C),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(3)
            started = time.monotonic()
            subprocess.run([str(SCRIPT), "osd-freeze" if outage == "freeze" else "osd-stop", own_ceph["DIR"]], check=True, timeout=60)
            away = True
            time.sleep(10)
            subprocess.run([str(SCRIPT), "osd-thaw" if outage == "freeze" else "osd-start", own_ceph["DIR"]], check=True, timeout=180)
            away = False
            took = time.monotonic() - started
            out, err = load.communicate(timeout=180)
        finally:
            if load.poll() is None:
                load.kill()
                load.communicate()
        if outage == "restart" and took > OSD_OP_TIMEOUT_S - 2:
            outcome = json.loads(out.strip().splitlines()[-1])["errors"] if out.strip() else err.strip()
            pytest.xfail(f"the OSD took {took:.0f} s to come back (machine load {os.getloadavg()[0]:.0f}), "
                         f"beyond the op timeout of {OSD_OP_TIMEOUT_S} s; requests failed: {outcome}")
        assert out.strip(), f"spindle-bench gave no result (exit {load.returncode}): {err}\n{osd_log_tail(own_ceph)}"
        result = json.loads(out.strip().splitlines()[-1])
        assert load.returncode == 0 and result["errors"] == 0 and result["ios"] > 100, (result, err, osd_log_tail(own_ceph))
        bench(sock, "randread", runtime=1, iodepth=32, expect=0x3C)
    finally:
        if away:
            subprocess.run([str(SCRIPT), "osd-thaw" if outage == "freeze" else "osd-start", own_ceph["DIR"]], timeout=180)
        backend.stop()
    assert_pattern(own_ceph, own_image, 0x3C)

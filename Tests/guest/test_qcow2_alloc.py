"""qcow2 allocation off the IOThread and discards that free clusters, through Spindle's
vhost-user-blk socket (spindle-bench), checked with qemu-img: an allocating write on one
export does not stop reads of another export on the same IOThread; discard and
write-zeroes with unmap free whole clusters on version 3 images (qemu-img map shows them
unallocated or zero, qemu-img check finds no leak) and stay advisory on version 2;
SIGKILL during discards leaves no corruption and loses nothing flushed. No guest. Every
daemon started is stopped."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from guestlib import Backend
from test_qcow2 import BENCH, SPINDLE, KiB, MiB, SIZE, create, run, write
from test_qcow2_write import blockdev, serve

pytestmark = [
    pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle"),
    pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench next to spindle"),
]

CLUSTER = 64 * KiB


def script(tmp: Path, steps: list[tuple]) -> Path:
    path = tmp / "steps.txt"
    lines = []
    for step in steps:
        if step[0] == "write":
            lines.append(f"write {step[1]} {step[2]} {step[3]}")
        elif step[0] == "flush":
            lines.append("flush")
        else:  # discard, unmap, zero
            lines.append(f"{step[0]} {step[1]} {step[2]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def run_script(image: Path, tmp: Path, steps: list[tuple]) -> None:
    backend, socks = serve(image, tmp)
    try:
        result = subprocess.run([str(BENCH), "--socket", str(socks[0]), "--script", str(script(tmp, steps))],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr + (tmp / "spindle-w.log").read_text()
    finally:
        assert backend.stop() == 0, (tmp / "spindle-w.log").read_text()


def check(image: Path) -> dict:
    result = subprocess.run(["qemu-img", "check", "--output=json", str(image)], capture_output=True, text=True)
    assert result.returncode == 0, f"qemu-img check exit {result.returncode}:\n{result.stdout}{result.stderr}"
    return json.loads(result.stdout)


def extents(image: Path) -> list[dict]:
    return json.loads(run("qemu-img", "map", "--output=json", str(image)))


def data_at(image: Path, offset: int) -> bool:
    return next(e for e in extents(image) if e["start"] <= offset < e["start"] + e["length"])["data"]


def test_discard_frees_whole_clusters_and_leaks_nothing(tmp_path):
    image = create(tmp_path / "d.qcow2")
    write(image, f"write -P 0x11 0 {4 * MiB}")
    allocated = check(image)["allocated-clusters"]
    steps = [("discard", MiB, MiB), ("discard", 3 * MiB + 4 * KiB, 64 * KiB), ("unmap", 2 * MiB, 256 * KiB), ("flush",)]
    run_script(image, tmp_path, steps)
    after = check(image)
    # 16 clusters discarded, 4 unmapped; the partial discard (no whole cluster) frees none.
    assert after["allocated-clusters"] == allocated - 20, after
    assert after.get("leaks", 0) == 0 and after.get("corruptions", 0) == 0, after
    assert not data_at(image, MiB) and not data_at(image, 2 * MiB - 512) and not data_at(image, 2 * MiB)
    assert data_at(image, 3 * MiB + 4 * KiB) and data_at(image, 0)
    out = run("qemu-io", "-r", "-f", "qcow2", "-c", f"read -P 0 {MiB} {MiB}", "-c", f"read -P 0 {2 * MiB} {256 * KiB}",
              "-c", f"read -P 0x11 0 {MiB}", "-c", f"read -P 0x11 {3 * MiB} {MiB}", str(image))
    assert "Pattern verification failed" not in out, out


def test_discarded_clusters_over_a_backing_file_read_zeroes_and_rewrites_allocate_again(tmp_path):
    base = create(tmp_path / "base.qcow2")
    write(base, f"write -P 0xb0 0 {SIZE}")
    overlay = create(tmp_path / "overlay.qcow2", backing=base)
    steps = [("write", 0, 2 * MiB, 0x22), ("flush",), ("discard", 0, MiB), ("write", 64 * KiB, 4 * KiB, 0x33), ("flush",)]
    run_script(overlay, tmp_path, steps)
    result = check(overlay)
    assert result.get("leaks", 0) == 0, result
    # The backing file's data does not show through the discarded clusters (zero clusters).
    out = run("qemu-io", "-r", "-f", "qcow2", "-c", f"read -P 0 0 {64 * KiB}", "-c", f"read -P 0x33 {64 * KiB} {4 * KiB}",
              "-c", f"read -P 0 {68 * KiB} {60 * KiB}", "-c", f"read -P 0 {128 * KiB} {MiB - 128 * KiB}",
              "-c", f"read -P 0x22 {MiB} {MiB}", "-c", f"read -P 0xb0 {2 * MiB} {SIZE - 2 * MiB}", str(overlay))
    assert "Pattern verification failed" not in out, out


def test_discard_on_a_version_2_image_stays_advisory(tmp_path):
    image = create(tmp_path / "v2.qcow2", compat="0.10")
    write(image, f"write -P 0x44 0 {MiB}")
    allocated = check(image)["allocated-clusters"]
    run_script(image, tmp_path, [("discard", 0, MiB), ("flush",)])
    assert check(image)["allocated-clusters"] == allocated
    out = run("qemu-io", "-r", "-f", "qcow2", "-c", f"read -P 0x44 0 {MiB}", str(image))
    assert "Pattern verification failed" not in out, out


def test_allocating_writes_on_one_export_leave_reads_of_another_on_the_same_iothread_going(tmp_path):
    """One IOThread serves two exports: an empty qcow2 image taking 4 KiB random writes at
    QD 32 (each allocates a cluster, handed to the image's allocation worker) and a fully
    allocated one read at QD 32. Both clients run to their end with requests completed
    (the IOThread is never blocked for the allocations) and the images are clean."""
    empty = create(tmp_path / "empty.qcow2", size=256 * MiB)
    full = create(tmp_path / "full.qcow2", size=64 * MiB, preallocation="falloc")
    sock_w, sock_r = tmp_path / "w.sock", tmp_path / "r.sock"
    args = ["--object", "iothread,id=iot0",
            "--blockdev", blockdev(empty).replace('"d0"', '"dw"'), "--blockdev", blockdev(full).replace('"d0"', '"dr"'),
            "--export", f"vhost-user-blk,id=ew,node-name=dw,iothread=iot0,writable=on,addr.type=unix,addr.path={sock_w}",
            "--export", f"vhost-user-blk,id=er,node-name=dr,iothread=iot0,addr.type=unix,addr.path={sock_r}"]
    backend = Backend(SPINDLE, tmp_path, "spindle-two")
    backend.start(args, sock_r)
    try:
        clients = [subprocess.Popen([str(BENCH), "--socket", str(sock), "--rw", rw, "--bs", "4k", "--iodepth", "32",
                                     "--runtime", "3", "--ramp", "0", "--json-only"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for sock, rw in ((sock_w, "randwrite"), (sock_r, "randread"))]
        results = []
        for client in clients:
            out, err = client.communicate(timeout=180)
            assert client.returncode == 0, err + out
            results.append(json.loads(out))
        assert backend.alive()
    finally:
        assert backend.stop() == 0, (tmp_path / "spindle-two.log").read_text()
    assert all(result["iops"] > 0 for result in results), results
    assert check(empty)["allocated-clusters"] > 0
    check(full)


def test_sigkill_during_discards_leaves_no_corruption_and_keeps_flushed_writes(tmp_path):
    size = 64 * MiB
    image = create(tmp_path / "kill.qcow2", size=size)
    write(image, f"write -P 0x5a 0 {size}")
    steps: list[tuple] = []
    for i in range(120):
        # Discard a cluster pair, write into the first again (a new cluster), flush now and then.
        at = i * 4 * CLUSTER + 2 * CLUSTER
        steps.append(("discard", at, 2 * CLUSTER))
        steps.append(("write", at + 4096, 8192, 1 + i % 250))
        if i % 3 == 2:
            steps.append(("flush",))
    backend, socks = serve(image, tmp_path, name="spindle-kill")
    acked = 0
    try:
        client = subprocess.Popen([str(BENCH), "--socket", str(socks[0]), "--script", str(script(tmp_path, steps))],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            for line in client.stdout:
                acked = int(line.split()[1])
                if acked >= len(steps) // 2:
                    break
            backend.proc.kill()
            backend.proc.wait()
            client.kill()
            rest, _ = client.communicate(timeout=60)
            for line in rest.splitlines():
                acked = max(acked, int(line.split()[1]))
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
    finally:
        backend.stop()
    assert 0 < acked < len(steps), "the daemon was not killed while discarding"
    result = subprocess.run(["qemu-img", "check", str(image)], capture_output=True, text=True)
    assert result.returncode in (0, 3), f"qemu-img check exit {result.returncode}:\n{result.stdout}{result.stderr}"
    last_flush = max(i for i in range(acked) if steps[i][0] == "flush")
    reads = [f"read -P {step[3]} {step[1]} {step[2]}" for step in steps[:last_flush] if step[0] == "write"]
    # Clusters never discarded keep the data qemu-io wrote.
    reads.append(f"read -P 0x5a 0 {2 * CLUSTER}")
    out = run("qemu-io", "-r", "-f", "qcow2", *[arg for r in reads for arg in ("-c", r)], str(image))
    assert "Pattern verification failed" not in out, out

"""Writes to qcow2 images through Spindle's vhost-user-blk socket (spindle-bench --script),
checked with qemu-img: `qemu-img check` finds no corruption and no leak, and
`qemu-img compare` with a raw reference built from the same writes agrees. Across cluster
sizes, image variants, backing files, two IOThreads allocating in one image at once, and
SIGKILL of the daemon during allocating writes (every write acknowledged before the last
completed flush must be there; leaks allowed). No guest. Every daemon started is stopped."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from guestlib import Backend
from test_qcow2 import BENCH, SPINDLE, KiB, MiB, SIZE, create, refusal, run, write

pytestmark = [
    pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle"),
    pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench next to spindle"),
]


def blockdev(image: Path, **extra) -> str:
    return json.dumps({"driver": "qcow2", "node-name": "d0", "file": {"driver": "file", "filename": str(image)}, **extra})


def serve(image: Path, tmp: Path, name: str = "spindle-w", iothreads: int = 0, exports: int = 1) -> tuple[Backend, list[Path]]:
    args: list[str] = []
    for i in range(iothreads):
        args += ["--object", f"iothread,id=iot{i}"]
    args += ["--blockdev", blockdev(image)]
    socks = []
    for i in range(exports):
        sock = tmp / f"{name}-{i}.sock"
        thread = f",iothread=iot{i % iothreads}" if iothreads else ""
        args += ["--export", f"vhost-user-blk,id=e{i},node-name=d0{thread},writable=on,addr.type=unix,addr.path={sock}"]
        socks.append(sock)
    backend = Backend(SPINDLE, tmp, name)
    backend.start(args, socks[-1])
    return backend, socks


def script_file(tmp: Path, steps: list[tuple]) -> Path:
    path = tmp / "steps.txt"
    lines = []
    for step in steps:
        if step[0] == "write":
            lines.append(f"write {step[1]} {step[2]} {step[3]}")
        elif step[0] == "zero":
            lines.append(f"zero {step[1]} {step[2]}")
        else:
            lines.append("flush")
    path.write_text("\n".join(lines) + "\n")
    return path


def apply_through_spindle(image: Path, tmp: Path, steps: list[tuple]) -> None:
    backend, socks = serve(image, tmp)
    try:
        result = subprocess.run([str(BENCH), "--socket", str(socks[0]), "--script", str(script_file(tmp, steps))],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr + (tmp / "spindle-w.log").read_text()
    finally:
        assert backend.stop() == 0, (tmp / "spindle-w.log").read_text()


def reference(tmp: Path, steps: list[tuple], size: int, base: bytes | None = None) -> Path:
    data = bytearray(base if base is not None else bytes(size))
    for step in steps:
        if step[0] == "write":
            data[step[1]:step[1] + step[2]] = bytes([step[3]]) * step[2]
        elif step[0] == "zero":
            data[step[1]:step[1] + step[2]] = bytes(step[2])
    path = tmp / "reference.raw"
    path.write_bytes(bytes(data))
    return path


def assert_clean_and_equal(image: Path, ref: Path) -> None:
    check = subprocess.run(["qemu-img", "check", str(image)], capture_output=True, text=True)
    assert check.returncode == 0, f"qemu-img check exit {check.returncode}:\n{check.stdout}{check.stderr}"
    compare = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(image), str(ref)],
                             capture_output=True, text=True)
    assert compare.returncode == 0, compare.stdout + compare.stderr


def pattern_steps(cluster: int, size: int) -> list[tuple]:
    """Partial clusters, runs across cluster and L2-table boundaries, a rewrite of allocated
    clusters (the fast path), the last bytes of the disk, write-zeroes, flushes."""
    table_span = cluster * (cluster // 8)  # guest bytes one L2 table maps
    return [
        ("write", 0, max(cluster // 2, 512), 0x11),
        ("write", cluster * 3 - 512, cluster * 2 + 1024, 0x22),
        ("flush",),
        ("write", min(table_span - 1024, size // 2), 4096, 0x33),
        ("write", 3 * MiB + 4096, 200 * KiB, 0x44),
        ("write", 3 * MiB + 8192, 8 * KiB, 0x45),  # into clusters allocated just before
        ("write", size - 64 * KiB, 64 * KiB, 0x55),
        ("zero", 3 * MiB + 16 * KiB, 4 * KiB),
        ("write", 512, 1024, 0x66),
        ("flush",),
    ]


@pytest.mark.parametrize("cluster", [512, 4 * KiB, 64 * KiB, 2 * MiB])
def test_writes_at_every_cluster_size(tmp_path, cluster):
    size = max(SIZE, 8 * cluster)
    image = create(tmp_path / f"c{cluster}.qcow2", size=size, cluster_size=cluster)
    steps = pattern_steps(cluster, size)
    apply_through_spindle(image, tmp_path, steps)
    assert_clean_and_equal(image, reference(tmp_path, steps, size))


@pytest.mark.parametrize("opts", [dict(compat="0.10"), dict(compat="1.1", lazy_refcounts="on"),
                                  dict(refcount_bits=1), dict(refcount_bits=16), dict(refcount_bits=64),
                                  dict(preallocation="metadata"), dict(cluster_size=512, refcount_bits=64)],
                         ids=["compat-0.10", "lazy-refcounts", "refcount-1", "refcount-16", "refcount-64",
                              "prealloc-metadata", "c512-refcount-64"])
def test_image_variants(tmp_path, opts):
    image = create(tmp_path / "v.qcow2", **opts)
    steps = pattern_steps(opts.get("cluster_size", 64 * KiB), SIZE)
    apply_through_spindle(image, tmp_path, steps)
    assert_clean_and_equal(image, reference(tmp_path, steps, SIZE))


def test_refcount_table_grows(tmp_path):
    """512-byte clusters with 64-bit refcounts: one refcount block covers 32 KiB, the
    one-cluster table 2 MiB; filling 6 MiB moves the table (twice) and adds blocks."""
    image = create(tmp_path / "grow.qcow2", cluster_size=512, refcount_bits=64)
    steps = [("write", offset, 256 * KiB, 0x30 + offset // (256 * KiB)) for offset in range(0, 6 * MiB, 256 * KiB)]
    steps.append(("flush",))
    apply_through_spindle(image, tmp_path, steps)
    assert_clean_and_equal(image, reference(tmp_path, steps, SIZE))


def test_partial_clusters_over_a_backing_file_keep_its_data(tmp_path):
    base = create(tmp_path / "base.qcow2")
    write(base, f"write -P 0xb0 0 {SIZE}")
    overlay = create(tmp_path / "overlay.qcow2", backing=base)
    steps = [("write", 4096, 4096, 0x01), ("write", 64 * KiB - 512, 1024, 0x02), ("write", MiB + 7 * 512, 512, 0x03),
             ("zero", 2 * MiB + 4096, 8192), ("flush",)]
    apply_through_spindle(overlay, tmp_path, steps)
    ref = reference(tmp_path, steps, SIZE, base=bytes([0xb0]) * SIZE)
    assert_clean_and_equal(overlay, ref)
    # The backing file itself is untouched.
    out = run("qemu-io", "-r", "-f", "qcow2", "-c", f"read -P 0xb0 0 {SIZE}", str(base))
    assert "failed" not in out.lower()


def test_compressed_clusters_are_rewritten_and_released(tmp_path):
    source = create(tmp_path / "src.qcow2")
    write(source, f"write -P 0x7c 0 {2 * MiB}")
    image = tmp_path / "compressed.qcow2"
    run("qemu-img", "convert", "-c", "-O", "qcow2", str(source), str(image))
    steps = [("write", 4096, 4096, 0x01), ("write", MiB, 64 * KiB, 0x02), ("flush",)]
    apply_through_spindle(image, tmp_path, steps)
    base = bytearray(SIZE)
    base[:2 * MiB] = bytes([0x7c]) * (2 * MiB)
    assert_clean_and_equal(image, reference(tmp_path, steps, SIZE, base=bytes(base)))


def test_two_iothreads_allocating_in_one_small_image(tmp_path):
    """Two exports of one node on two IOThreads write the same empty 4 MiB image at once,
    sequentially and wrapping, with different block sizes: they race for the same clusters
    and L2 tables all the time. Afterwards every byte is the fill byte and the image is clean."""
    size = 4 * MiB
    image = create(tmp_path / "race.qcow2", size=size, cluster_size=4 * KiB)
    backend, socks = serve(image, tmp_path, name="spindle-race", iothreads=2, exports=2)
    try:
        writers = [subprocess.Popen([str(BENCH), "--socket", str(sock), "--rw", "write", "--bs", bs, "--iodepth", "16",
                                     "--fill", "0x5a", "--runtime", "3", "--ramp", "0", "--json-only"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for sock, bs in zip(socks, ("4k", "12k"))]
        for writer in writers:
            out, err = writer.communicate(timeout=120)
            assert writer.returncode == 0, err + out
        assert backend.alive()
    finally:
        assert backend.stop() == 0, (tmp_path / "spindle-race.log").read_text()
    ref = tmp_path / "race.raw"
    ref.write_bytes(bytes([0x5a]) * size)
    assert_clean_and_equal(image, ref)


@pytest.mark.parametrize("cluster", [64 * KiB, 2 * MiB])
def test_sigkill_during_allocating_writes_loses_nothing_flushed(tmp_path, cluster):
    size = 256 * MiB
    image = create(tmp_path / "kill.qcow2", size=size, cluster_size=cluster)
    stride = cluster + cluster // 2  # every write allocates, some straddle two clusters
    count = min(size // stride - 1, 160)
    steps: list[tuple] = []
    for i in range(count):
        steps.append(("write", i * stride + 4096, 8192, 1 + i % 250))
        if i % 4 == 3:
            steps.append(("flush",))
    backend, socks = serve(image, tmp_path, name="spindle-kill")
    acked = 0
    try:
        client = subprocess.Popen([str(BENCH), "--socket", str(socks[0]), "--script", str(script_file(tmp_path, steps))],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            for line in client.stdout:
                acked = int(line.split()[1])
                if acked >= len(steps) // 2:
                    break
            backend.proc.kill()
            backend.proc.wait()
            # The client would wait for its request's completion forever: stop it, then
            # count what it printed before.
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
    assert 0 < acked < len(steps), "the daemon was not killed while writing"
    check = subprocess.run(["qemu-img", "check", str(image)], capture_output=True, text=True)
    assert check.returncode in (0, 3), f"qemu-img check exit {check.returncode}:\n{check.stdout}{check.stderr}"
    last_flush = max(i for i in range(acked) if steps[i][0] == "flush")
    reads = []
    for step in steps[:last_flush]:
        if step[0] == "write":
            reads += ["-c", f"read -P {step[3]} {step[1]} {step[2]}"]
    out = run("qemu-io", "-r", "-f", "qcow2", *reads, str(image))
    assert "Pattern verification failed" not in out, out


def test_refused_read_write_opens(tmp_path):
    snap = create(tmp_path / "snap.qcow2", size=MiB)
    run("qemu-img", "snapshot", "-c", "s1", str(snap))
    assert "internal snapshot" in refusal(snap, tmp_path, read_only=False)
    dirty = create(tmp_path / "dirty.qcow2", size=MiB)
    with open(dirty, "r+b") as f:
        f.seek(72)
        f.write((1).to_bytes(8, "big"))
    assert "qemu-img check -r all" in refusal(dirty, tmp_path, read_only=False)


def test_write_zeroes_sets_zero_clusters_on_v3_and_writes_zeroes_on_v2(tmp_path):
    base = create(tmp_path / "base.qcow2")
    write(base, f"write -P 0xb0 0 {SIZE}")
    steps = [("write", 0, 64 * KiB, 0x01), ("zero", 64 * KiB, 128 * KiB), ("zero", 0, 64 * KiB),
             ("write", 4096, 512, 0x02), ("zero", 200 * KiB, 8 * KiB), ("flush",)]
    ref_base = bytes([0xb0]) * SIZE
    for compat in ("1.1", "0.10"):
        overlay = create(tmp_path / f"zero-{compat}.qcow2", backing=base, compat=compat)
        apply_through_spindle(overlay, tmp_path, steps)
        assert_clean_and_equal(overlay, reference(tmp_path, steps, SIZE, base=ref_base))
        extents = json.loads(run("qemu-img", "map", "--output=json", str(overlay)))
        covering = next(e for e in extents if e["start"] <= 64 * KiB < e["start"] + e["length"])
        # v3: the clusters zeroed whole carry the zero flag; v2 has none (zeroes are data).
        assert covering["zero"] is (compat == "1.1"), extents

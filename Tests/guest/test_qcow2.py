"""qcow2 images made by qemu-img/qemu-io, read back through Spindle's vhost-user-blk socket
(spindle-bench --dump) and compared with `qemu-img convert -O raw` of the same image; images
with features Spindle does not implement are refused with a message naming the feature.
No guest: the frontend is spindle-bench's. Every daemon started is killed, even on failure."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import pytest

from guestlib import Backend

SPINDLE = os.environ.get("SPINDLE_BIN", "")
BENCH = Path(SPINDLE).with_name("spindle-bench") if SPINDLE else Path("/nonexistent")
pytestmark = [
    pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle"),
    pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench next to spindle"),
]
KiB = 1024
MiB = 1024 * KiB
SIZE = 8 * MiB


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def create(path: Path, size: int = SIZE, backing: Path | None = None, backing_fmt: str = "qcow2", **opts) -> Path:
    args = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing is not None:
        args += ["-b", str(backing), "-F", backing_fmt]
    options = ",".join(f"{k}={v}" for k, v in opts.items())
    if options:
        args += ["-o", options]
    run(*args, str(path), str(size))
    return path


def write(path: Path, *commands: str) -> None:
    """qemu-io writes, e.g. 'write -P 0x5a 0 64k' or 'write -z 1M 128k'."""
    args = ["qemu-io", "-f", "qcow2"]
    for command in commands:
        args += ["-c", command]
    run(*args, str(path))


def patterns(path: Path, cluster: int, size: int = SIZE) -> None:
    """Data in odd places: a partial first cluster, runs across cluster and L2 boundaries,
    the last bytes of the disk."""
    write(path, f"write -P 0x11 0 {max(cluster // 2, 512)}",
          f"write -P 0x22 {cluster * 3 - 512} {cluster * 2 + 1024}",
          f"write -P 0x33 {3 * MiB + 4096} 200k",
          f"write -P 0x44 {size - 64 * KiB} 64k")


def reference(image: Path, tmp: Path) -> bytes:
    raw = tmp / f"{image.name}.ref.raw"
    run("qemu-img", "convert", "-U", "-O", "raw", str(image), str(raw))
    return raw.read_bytes()


def serve_and_dump(image: Path, tmp: Path, blockdev: str | None = None, bs: int = 192 * KiB) -> bytes:
    """Exports `image` read-only and reads it whole through the socket."""
    sock = tmp / "qcow2.sock"
    out = tmp / f"{image.name}.dump"
    backend = Backend(SPINDLE, tmp, f"spindle-{image.stem}")
    if blockdev is None:
        blockdev = json.dumps({"driver": "qcow2", "node-name": "d0", "read-only": True,
                               "file": {"driver": "file", "filename": str(image)}})
    try:
        backend.start(["--blockdev", blockdev,
                       "--export", f"vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path={sock}"], sock)
        result = subprocess.run([str(BENCH), "--socket", str(sock), "--dump", str(out), "--bs", str(bs)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr + (tmp / f"spindle-{image.stem}.log").read_text()
    finally:
        backend.stop()
    return out.read_bytes()


def refusal(image: Path, tmp: Path, read_only: bool = True) -> str:
    """Starts spindle on `image` and returns its error output (it must exit non-zero)."""
    blockdev = json.dumps({"driver": "qcow2", "node-name": "d0", "read-only": read_only,
                           "file": {"driver": "file", "filename": str(image)}})
    result = subprocess.run([SPINDLE, "--blockdev", blockdev], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0, "spindle accepted the image"
    return result.stderr + result.stdout


def assert_same(dump: bytes, ref: bytes) -> None:
    assert len(dump) == len(ref)
    if dump != ref:
        first = next(i for i in range(len(ref)) if dump[i] != ref[i])
        pytest.fail(f"first difference at byte {first}: spindle {dump[first]:#x}, qemu-img {ref[first]:#x}")


@pytest.mark.parametrize("cluster", [512, 4 * KiB, 64 * KiB, 2 * MiB])
def test_patterns_read_back_at_every_cluster_size(tmp_path, cluster):
    size = max(SIZE, 8 * cluster)
    image = create(tmp_path / f"c{cluster}.qcow2", size=size, cluster_size=cluster)
    patterns(image, cluster, size)
    assert_same(serve_and_dump(image, tmp_path), reference(image, tmp_path))


@pytest.mark.parametrize("opts", [dict(compat="0.10"), dict(compat="1.1", lazy_refcounts="on"),
                                  dict(refcount_bits=1), dict(refcount_bits=64),
                                  dict(preallocation="metadata")],
                         ids=["compat-0.10", "lazy-refcounts", "refcount-1", "refcount-64", "prealloc-metadata"])
def test_image_variants(tmp_path, opts):
    image = create(tmp_path / "v.qcow2", **opts)
    patterns(image, 64 * KiB)
    assert_same(serve_and_dump(image, tmp_path), reference(image, tmp_path))


def test_compressed_clusters(tmp_path):
    plain = create(tmp_path / "plain.qcow2")
    patterns(plain, 64 * KiB)
    compressed = tmp_path / "compressed.qcow2"
    run("qemu-img", "convert", "-c", "-O", "qcow2", str(plain), str(compressed))
    mapping = json.loads(run("qemu-img", "map", "--output=json", str(compressed)))
    assert any(m["data"] and "offset" not in m for m in mapping), "no compressed cluster in the image"
    assert_same(serve_and_dump(compressed, tmp_path), reference(compressed, tmp_path))


def test_zero_clusters_over_backing_data_and_a_chain_three_deep(tmp_path):
    base = create(tmp_path / "base.qcow2")
    write(base, f"write -P 0x61 0 {SIZE}")
    mid = create(tmp_path / "mid.qcow2", backing=base)
    write(mid, "write -P 0x62 1M 1M", "write -z 2M 128k")
    top = create(tmp_path / "top.qcow2", backing=Path("mid.qcow2"))  # relative, as qemu-img keeps it
    write(top, "write -P 0x63 1536k 64k", "write -z 5M 64k", "write -P 0x64 7M 4k")
    dump = serve_and_dump(top, tmp_path)
    assert_same(dump, reference(top, tmp_path))
    assert dump[2 * MiB:2 * MiB + 128 * KiB] == bytes(128 * KiB)  # zero clusters hide the base


def test_raw_backing_smaller_than_the_overlay(tmp_path):
    base = tmp_path / "base.raw"
    base.write_bytes(bytes([0x71]) * (3 * MiB))
    top = create(tmp_path / "top.qcow2", backing=base, backing_fmt="raw")
    write(top, "write -P 0x72 2M 2M")
    assert_same(serve_and_dump(top, tmp_path), reference(top, tmp_path))


def test_backing_node_given_on_the_command_line_and_backing_null(tmp_path):
    base = create(tmp_path / "base.qcow2")
    write(base, f"write -P 0x61 0 {SIZE}")
    top = create(tmp_path / "top.qcow2", backing=base)
    write(top, "write -P 0x63 1M 64k")
    sock = tmp_path / "s.sock"
    out = tmp_path / "null.dump"
    backend = Backend(SPINDLE, tmp_path, "spindle-null-backing")
    try:
        backend.start(["--blockdev", f"driver=file,node-name=f0,filename={top},read-only=on",
                       "--blockdev", "driver=qcow2,node-name=d0,file=f0,backing=null,read-only=on,l2-cache-size=64k",
                       "--export", f"vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path={sock}"], sock)
        subprocess.run([str(BENCH), "--socket", str(sock), "--dump", str(out)], check=True, timeout=120)
    finally:
        backend.stop()
    dump = out.read_bytes()
    assert dump[1 * MiB:1 * MiB + 64 * KiB] == bytes([0x63]) * (64 * KiB)
    assert dump[:1 * MiB] == bytes(1 * MiB)  # no backing: unallocated reads zeroes


def test_active_layer_after_an_internal_snapshot(tmp_path):
    image = create(tmp_path / "snap.qcow2")
    write(image, "write -P 0x41 0 1M")
    run("qemu-img", "snapshot", "-c", "s1", str(image))
    write(image, "write -P 0x42 512k 1M")
    assert_same(serve_and_dump(image, tmp_path), reference(image, tmp_path))


def patch(image: Path, offset: int, fmt: str, value: int) -> None:
    with open(image, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, value))


def test_unsupported_features_are_refused_by_name(tmp_path):
    zstd = tmp_path / "zstd.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compression_type=zstd", str(zstd), "1M")
    assert "zstd" in refusal(zstd, tmp_path)
    ext = create(tmp_path / "extl2.qcow2", size=MiB, extended_l2="on")
    assert "extended L2" in refusal(ext, tmp_path)
    enc = tmp_path / "enc.qcow2"
    made = subprocess.run(["qemu-img", "create", "-q", "--object", "secret,id=s0,data=pw",
                           "-f", "qcow2", "-o", "encrypt.format=luks,encrypt.key-secret=s0,"
                           "encrypt.iter-time=10", str(enc), "1M"], capture_output=True)
    if made.returncode != 0:
        # qemu-img times LUKS's PBKDF on the thread's CPU clock and gives up ("Unable to get
        # accurate CPU usage") when a loaded machine's coarse clock reads 0 ms; the header's
        # crypt_method field (offset 32; 2 = LUKS) is what Spindle refuses on, so set it.
        enc = create(enc, size=MiB)
        patch(enc, 32, ">I", 2)
    assert "encrypted" in refusal(enc, tmp_path)
    datafile = create(tmp_path / "df.qcow2", size=MiB, data_file=str(tmp_path / "df.raw"))
    assert "external data file" in refusal(datafile, tmp_path)
    unknown = create(tmp_path / "unknown.qcow2", size=MiB)
    patch(unknown, 72, ">Q", 1 << 9)
    assert "unknown incompatible feature bit 9" in refusal(unknown, tmp_path)


def test_writable_corrupt_and_dirty_opens(tmp_path):
    image = create(tmp_path / "w.qcow2", size=MiB)
    patch(image, 72, ">Q", 2)  # corrupt bit
    assert "marked corrupt" in refusal(image, tmp_path, read_only=False)
    write_bytes = serve_and_dump(image, tmp_path)  # read-only opens are allowed
    assert write_bytes == bytes(MiB)
    patch(image, 72, ">Q", 1)  # dirty bit
    assert serve_and_dump(image, tmp_path) == bytes(MiB)


def test_backing_loop_is_refused(tmp_path):
    a = create(tmp_path / "a.qcow2", size=MiB)
    b = create(tmp_path / "b.qcow2", size=MiB, backing=a)
    run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", str(b), "-F", "qcow2", str(a))
    assert "loops" in refusal(b, tmp_path)


def test_hostile_l2_entry_gives_an_io_error_not_a_crash(tmp_path):
    image = create(tmp_path / "h.qcow2", size=MiB, cluster_size=64 * KiB)
    write(image, "write -P 0x55 0 64k")
    header = image.read_bytes()[:112]
    l1_offset = struct.unpack(">Q", header[40:48])[0]
    l2_offset = struct.unpack(">Q", image.read_bytes()[l1_offset:l1_offset + 8])[0] & 0x00ffffffffffff00
    patch(image, l2_offset, ">Q", (1 << 63) | l1_offset)  # cluster 0's data "is" the L1 table
    sock = tmp_path / "h.sock"
    backend = Backend(SPINDLE, tmp_path, "spindle-hostile")
    try:
        backend.start(["--blockdev", json.dumps({"driver": "qcow2", "node-name": "d0", "read-only": True,
                                                 "file": {"driver": "file", "filename": str(image)}}),
                       "--export", f"vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path={sock}"], sock)
        result = subprocess.run([str(BENCH), "--socket", str(sock), "--dump", str(tmp_path / "h.dump")],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode != 0 and "status 1" in result.stderr  # VIRTIO_BLK_S_IOERR
        assert backend.alive()
        log = (tmp_path / "spindle-hostile.log").read_text()
        assert "qcow2 node 'd0'" in log and "corrupt metadata at guest offset 0" in log and "L1 or refcount table" in log, log
    finally:
        backend.stop()


def test_blockdev_add_over_qmp_shows_the_chain_and_releases_it(tmp_path):
    from interactive import ok, spindle_qmp, wait_event

    base = create(tmp_path / "base.qcow2", size=4 * MiB)
    mid = create(tmp_path / "mid.qcow2", size=4 * MiB, backing=base)
    top = create(tmp_path / "top.qcow2", size=4 * MiB, backing=mid, cluster_size=4096)
    qmp = tmp_path / "qmp.sock"
    backend = Backend(SPINDLE, tmp_path, "spindle-qmp")
    try:
        backend.start(["--qmp", str(qmp)], qmp)
        client = spindle_qmp(qmp)
        ok(client, "blockdev-add", **{"driver": "qcow2", "node-name": "d0",
                                      "file": {"driver": "file", "filename": str(top)}})
        assert {n["node-name"]: n for n in ok(client, "query-named-block-nodes")}["d0"]["ro"] is False
        ok(client, "blockdev-del", **{"node-name": "d0"})
        ok(client, "blockdev-add", **{"driver": "qcow2", "node-name": "d0", "read-only": True,
                                      "file": {"driver": "file", "filename": str(top)}})
        node = {n["node-name"]: n for n in ok(client, "query-named-block-nodes")}["d0"]
        assert node["drv"] == "qcow2" and node["ro"] is True and node["file"] == str(top)
        assert node["image"]["virtual-size"] == 4 * MiB and node["image"]["cluster-size"] == 4096
        assert node["backing_file"] == str(mid) and node["backing_file_depth"] == 2
        assert node["image"]["backing-filename-format"] == "qcow2"
        # While exported, every image of the chain is locked against writers (as QEMU's).
        sock = tmp_path / "e0.sock"
        ok(client, "block-export-add", **{"type": "vhost-user-blk", "id": "e0", "node-name": "d0",
                                           "addr": {"type": "unix", "path": str(sock)}})
        for image in (top, mid, base):
            denied = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write 0 4k", str(image)], capture_output=True, text=True)
            assert denied.returncode != 0 and "lock" in denied.stderr, f"{image.name}: {denied.stdout}{denied.stderr}"
        ok(client, "block-export-del", id="e0")
        wait_event(client, "BLOCK_EXPORT_DELETED")
        ok(client, "blockdev-del", **{"node-name": "d0"})
        assert ok(client, "query-named-block-nodes") == []
        write(base, "write -P 0x1 0 4k")  # the chain's locks went with the node
        client.close()
    finally:
        backend.stop()


def test_two_iothreads_share_a_tiny_l2_cache(tmp_path):
    """Two exports of one node on two IOThreads, read at once: every request misses the
    four-table cache and both threads fill and read the same slots; both reads must still
    equal qemu-img's."""
    image = create(tmp_path / "shared.qcow2", cluster_size=512)  # 256 L2 tables for 8 MiB
    patterns(image, 512)
    write(image, f"write -P 0x77 {5 * MiB} 1M")
    ref = reference(image, tmp_path)
    socks = [tmp_path / "a.sock", tmp_path / "b.sock"]
    backend = Backend(SPINDLE, tmp_path, "spindle-shared")
    blockdev = json.dumps({"driver": "qcow2", "node-name": "d0", "read-only": True, "l2-cache-size": 2048,
                           "file": {"driver": "file", "filename": str(image)}})
    try:
        backend.start(["--object", "iothread,id=iot0", "--object", "iothread,id=iot1", "--blockdev", blockdev,
                       "--export", f"vhost-user-blk,id=a,node-name=d0,iothread=iot0,addr.type=unix,addr.path={socks[0]}",
                       "--export", f"vhost-user-blk,id=b,node-name=d0,iothread=iot1,addr.type=unix,addr.path={socks[1]}"],
                      socks[1])
        dumps = [tmp_path / "a.dump", tmp_path / "b.dump"]
        readers = [subprocess.Popen([str(BENCH), "--socket", str(sock), "--dump", str(out), "--bs", str(bs)],
                                    stderr=subprocess.PIPE, text=True)
                   for sock, out, bs in zip(socks, dumps, (64 * KiB, 36 * KiB))]
        for reader in readers:
            _, err = reader.communicate(timeout=300)
            assert reader.returncode == 0, err
        assert backend.alive()
    finally:
        backend.stop()
    for dump in dumps:
        assert_same(dump.read_bytes(), ref)

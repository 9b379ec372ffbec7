"""qcow2 operations beyond reads and writes, without a guest: BLOCK_IMAGE_CORRUPTED when an
image's metadata is found inconsistent, block_resize of a qcow2 node (and its L1 table's
growth), and blockdev-mirror with qcow2 sources and targets. Real images made and checked by
qemu-img/qemu-io, spindle-bench as the frontend (ConfigWatcher for config-change messages).
Every daemon started is stopped, even on failure."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import pytest

from guestlib import Backend
from interactive import ok, spindle_qmp, wait_event
from test_qcow2 import BENCH, KiB, MiB, SPINDLE, create, patch, reference, run, write
from test_rbd_ownership import ConfigWatcher

pytestmark = [
    pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle"),
    pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench next to spindle"),
]
OFFSET_MASK = 0x00FFFFFFFFFFFE00


def qcow2_node(image: Path, node: str = "d0", **extra) -> str:
    return json.dumps({"driver": "qcow2", "node-name": node, "file": {"driver": "file", "filename": str(image)}, **extra})


def export(name: str, node: str, sock: Path) -> str:
    return f"vhost-user-blk,id={name},node-name={node},writable=on,addr.type=unix,addr.path={sock}"


def bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BENCH), *args], capture_output=True, text=True, timeout=timeout)


def script(sock: Path, tmp: Path, *lines: str) -> subprocess.CompletedProcess:
    path = tmp / "steps.txt"
    path.write_text("\n".join(lines) + "\n")
    return bench("--socket", str(sock), "--script", str(path))


def dump(sock: Path, out: Path, bs: int = 64 * KiB) -> subprocess.CompletedProcess:
    return bench("--socket", str(sock), "--dump", str(out), "--bs", str(bs))


def read_expecting(sock: Path, size: int, byte: int) -> subprocess.CompletedProcess:
    return bench("--socket", str(sock), "--rw", "read", "--bs", "4k", "--iodepth", "4", "--runtime", "1", "--ramp", "0",
                 "--size", str(size), "--json-only", "--cpus", "none", "--expect", hex(byte))


def info(image: Path) -> dict:
    return json.loads(run("qemu-img", "info", "-U", "--output=json", str(image)))


def check_clean(image: Path) -> None:
    result = subprocess.run(["qemu-img", "check", str(image)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def l1_table(image: Path) -> tuple[int, int]:
    header = image.read_bytes()[:112]
    return struct.unpack(">Q", header[40:48])[0], struct.unpack(">I", header[36:40])[0]


def test_corrupt_l2_entry_raises_block_image_corrupted_once_and_marks_the_image(tmp_path):
    image = create(tmp_path / "c.qcow2", size=8 * MiB, cluster_size=64 * KiB)
    write(image, "write -P 0x55 0 1M", f"write -P 0x66 {4 * MiB} 64k")
    l1_offset, _ = l1_table(image)
    l2_offset = struct.unpack(">Q", image.read_bytes()[l1_offset:l1_offset + 8])[0] & OFFSET_MASK
    patch(image, l2_offset + 64 * 8, ">Q", (1 << 63) | l1_offset)  # guest cluster 4M's data "is" the L1 table
    other = tmp_path / "other.img"
    other.write_bytes(bytes(4 * MiB))
    sock, other_sock, qmp = tmp_path / "c.sock", tmp_path / "o.sock", tmp_path / "qmp.sock"
    backend = Backend(SPINDLE, tmp_path, "spindle-corrupt")
    try:
        backend.start(["--blockdev", qcow2_node(image), "--blockdev", f"driver=file,node-name=o0,filename={other}",
                       "--export", export("e0", "d0", sock), "--export", export("e1", "o0", other_sock),
                       "--qmp", str(qmp)], other_sock)
        client = spindle_qmp(qmp)
        first = dump(sock, tmp_path / "c1.dump")
        assert first.returncode != 0 and "status 1" in first.stderr, first.stderr  # VIRTIO_BLK_S_IOERR
        event = wait_event(client, "BLOCK_IMAGE_CORRUPTED")["data"]
        assert event["device"] == "e0" and event["node-name"] == "d0" and event["fatal"] is True, event
        assert event["offset"] == l1_offset and event["size"] == 64 * KiB, event
        assert "L1 or refcount table" in event["msg"] and "0x400000" in event["msg"], event
        # The same bad read again: an error, no second event (checked after the next commands).
        second = dump(sock, tmp_path / "c2.dump")
        assert second.returncode != 0 and "status 1" in second.stderr, second.stderr
        # Reads that do not touch the bad entry go on; writes fail; the node shows read-only.
        reads = read_expecting(sock, MiB, 0x55)
        assert reads.returncode == 0 and '"errors":0' in reads.stdout.replace(" ", ""), reads.stdout + reads.stderr
        refused = script(sock, tmp_path, "write 0 4096 0x77")
        assert refused.returncode != 0 and "status 1" in refused.stderr, refused.stderr
        assert {n["node-name"]: n for n in ok(client, "query-named-block-nodes")}["d0"]["ro"] is True
        # The daemon and the other export keep serving.
        assert script(other_sock, tmp_path, "write 0 65536 0x42", "flush").returncode == 0
        assert dump(other_sock, tmp_path / "o.dump").returncode == 0
        assert (tmp_path / "o.dump").read_bytes()[:65536] == b"\x42" * 65536
        assert backend.alive()
        assert [e for e in client.get_events(wait=False) if e["event"] == "BLOCK_IMAGE_CORRUPTED"] == []
        client.close()
    finally:
        backend.stop()
    log = backend.log_path.read_text()
    assert "qcow2 node 'd0'" in log and "qemu-img check -r all" in log and hex(l1_offset) in log, log[-3000:]
    assert log.count("corrupt metadata at guest offset 4194304") == 1 and log.count("has corrupt metadata:") == 1, log[-3000:]
    assert info(image)["format-specific"]["data"]["corrupt"] is True
    # QEMU now opens it read-only only, as Spindle does.
    denied = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write 0 4k", str(image)], capture_output=True, text=True)
    assert denied.returncode != 0 and "corrupt" in (denied.stdout + denied.stderr).lower()


def test_corrupt_entry_of_a_read_only_node_is_reported_not_fatal(tmp_path):
    image = create(tmp_path / "r.qcow2", size=MiB, cluster_size=64 * KiB)
    write(image, "write -P 0x55 0 64k")
    l1_offset, _ = l1_table(image)
    l2_offset = struct.unpack(">Q", image.read_bytes()[l1_offset:l1_offset + 8])[0] & OFFSET_MASK
    patch(image, l2_offset, ">Q", (1 << 63) | (l2_offset + 512))  # misaligned
    sock, qmp = tmp_path / "r.sock", tmp_path / "qmp.sock"
    backend = Backend(SPINDLE, tmp_path, "spindle-ro")
    try:
        backend.start(["--blockdev", qcow2_node(image, **{"read-only": True}),
                       "--export", f"vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path={sock}", "--qmp", str(qmp)], sock)
        client = spindle_qmp(qmp)
        assert dump(sock, tmp_path / "r.dump").returncode != 0
        event = wait_event(client, "BLOCK_IMAGE_CORRUPTED")["data"]
        assert event["fatal"] is False and event["node-name"] == "d0" and "not cluster-aligned" in event["msg"], event
        client.close()
    finally:
        backend.stop()
    assert info(image)["format-specific"]["data"]["corrupt"] is False  # a read-only image is not written


def resize_daemon(tmp: Path, image: Path, name: str) -> tuple[Backend, object, Path]:
    sock, qmp = tmp / f"{name}.sock", tmp / f"{name}-qmp.sock"
    backend = Backend(SPINDLE, tmp, name)
    backend.start(["--blockdev", qcow2_node(image), "--export", export("e0", "d0", sock), "--qmp", str(qmp)], sock)
    return backend, spindle_qmp(qmp), sock


@pytest.mark.parametrize("cluster,old,new", [(64 * KiB, 8 * MiB, 24 * MiB), (512, 8 * MiB, 40 * MiB)],
                         ids=["64k-same-l1", "512-l1-grows"])
def test_block_resize_grows_a_qcow2_node_and_tells_the_frontend(tmp_path, cluster, old, new):
    image = create(tmp_path / "g.qcow2", size=old, cluster_size=cluster)
    write(image, "write -P 0x11 0 64k", f"write -P 0x22 {old - 64 * KiB} 64k")
    l1_before = l1_table(image)
    backend, client, sock = resize_daemon(tmp_path, image, "spindle-grow")
    watcher = ConfigWatcher(sock)
    try:
        assert watcher.capacity_bytes() == old
        reply = client.cmd_raw("block_resize", {"node-name": "d0", "size": old - MiB})
        assert reply["error"]["desc"] == "qcow2 doesn't support shrinking images yet", reply
        ok(client, "block_resize", **{"node-name": "d0", "size": new})
        assert watcher.wait_config_change(10), "no config-change message after block_resize"
        assert watcher.capacity_bytes() == new
        node = {n["node-name"]: n for n in ok(client, "query-named-block-nodes")}["d0"]
        assert node["image"]["virtual-size"] == new
        watcher.close()
        # Writes past the old end, across it, and at the new end.
        done = script(sock, tmp_path, f"write {old - 4096} 8192 0x33", f"write {new - 128 * KiB} {128 * KiB} 0x44",
                      f"write {(old + new) // 2} 4096 0x55", "flush")
        assert done.returncode == 0, done.stderr
        assert dump(sock, tmp_path / "g.dump", bs=256 * KiB).returncode == 0
        client.close()
    finally:
        backend.stop()
    assert info(image)["virtual-size"] == new
    check_clean(image)
    l1_after = l1_table(image)
    if cluster == 512:
        assert l1_after[1] > l1_before[1] and l1_after[0] != l1_before[0], (l1_before, l1_after)
    else:
        assert l1_after == l1_before
    ref = reference(image, tmp_path)
    assert (tmp_path / "g.dump").read_bytes() == ref
    assert ref[:64 * KiB] == b"\x11" * (64 * KiB) and ref[old - 64 * KiB:old - 4096] == b"\x22" * (60 * KiB)
    assert ref[old - 4096:old + 4096] == b"\x33" * 8192 and ref[new - 128 * KiB:] == b"\x44" * (128 * KiB)
    assert ref[(old + new) // 2:(old + new) // 2 + 4096] == b"\x55" * 4096
    assert ref[old + 4096:(old + new) // 2] == bytes((old + new) // 2 - old - 4096)


def writer(sock: Path, size: int, fill: int, seconds: int = 4) -> subprocess.Popen:
    """spindle-bench writing `fill` at random 4 KiB places of the first `size` bytes."""
    return subprocess.Popen([str(BENCH), "--socket", str(sock), "--rw", "write", "--bs", "4k", "--iodepth", "4",
                             "--runtime", str(seconds), "--ramp", "0", "--size", str(size), "--json-only", "--cpus", "none",
                             "--fill", hex(fill)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def mirror_source(tmp: Path, kind: str) -> tuple[Path, str, Path | None]:
    """The source image, its --blockdev, and its backing file (if any)."""
    if kind == "raw":
        src = tmp / "src.img"
        run("qemu-img", "create", "-q", "-f", "raw", str(src), str(16 * MiB))
        run("qemu-io", "-f", "raw", "-c", "write -P 0x21 0 3M", "-c", f"write -P 0x22 {12 * MiB} 1M", str(src))
        return src, f"driver=file,node-name=d0,filename={src}", None
    base = create(tmp / "base.qcow2", size=16 * MiB)
    write(base, "write -P 0x31 0 6M", f"write -P 0x32 {12 * MiB} 2M")
    src = create(tmp / "top.qcow2", size=16 * MiB, backing=base)
    write(src, f"write -P 0x33 {MiB} 1M", f"write -z {4 * MiB} 512k", f"write -P 0x34 {15 * MiB} 64k")
    return src, qcow2_node(src), base


@pytest.mark.parametrize("source,target,sync", [("raw", "qcow2", "full"), ("chain", "qcow2", "full"),
                                                ("chain", "raw", "full"), ("chain", "qcow2-over-base", "top")])
def test_mirror_with_qcow2_source_or_target_pivots_under_writes(tmp_path, source, target, sync):
    src, blockdev, base = mirror_source(tmp_path, source)
    if target == "raw":
        tgt = tmp_path / "tgt.img"
        run("qemu-img", "create", "-q", "-f", "raw", str(tgt), str(16 * MiB))
        target_node = {"driver": "file", "node-name": "tgt", "filename": str(tgt)}
    else:
        tgt = create(tmp_path / "tgt.qcow2", size=16 * MiB, backing=base if target == "qcow2-over-base" else None)
        target_node = {"driver": "qcow2", "node-name": "tgt", "file": {"driver": "file", "filename": str(tgt)}}
    sock, qmp = tmp_path / "m.sock", tmp_path / "qmp.sock"
    backend = Backend(SPINDLE, tmp_path, "spindle-mirror")
    try:
        backend.start(["--blockdev", blockdev, "--export", export("e0", "d0", sock), "--qmp", str(qmp)], sock)
        client = spindle_qmp(qmp)
        ok(client, "blockdev-add", **target_node)
        load = writer(sock, 8 * MiB, 0x5C)
        ok(client, "blockdev-mirror", **{"job-id": "m0", "device": "d0", "target": "tgt", "sync": sync})
        wait_event(client, "BLOCK_JOB_READY", timeout=120)
        out, err = load.communicate(timeout=120)
        assert load.returncode == 0 and '"errors":0' in out.replace(" ", ""), err
        # Before the pivot both images hold the same guest data (the chain's, for qcow2).
        same = subprocess.run(["qemu-img", "compare", "-U", str(src), str(tgt)], capture_output=True, text=True)
        assert same.returncode == 0, same.stdout + same.stderr
        ok(client, "job-complete", id="m0")
        done = wait_event(client, "BLOCK_JOB_COMPLETED", timeout=120)["data"]
        assert "error" not in done, done
        [exported] = ok(client, "query-block-exports")
        assert exported["node-name"] == "tgt", exported
        # After the pivot the guest writes the target only.
        assert script(sock, tmp_path, f"write {2 * MiB} 65536 0x77", "flush").returncode == 0
        client.close()
    finally:
        backend.stop()
    if target != "raw":
        check_clean(tgt)
    ref = reference(tgt, tmp_path)
    assert ref[2 * MiB:2 * MiB + 65536] == b"\x77" * 65536
    old = reference(src, tmp_path)
    assert ref[:2 * MiB] == old[:2 * MiB] and ref[2 * MiB + 65536:] == old[2 * MiB + 65536:]
    if sync == "top":
        # The base's own data stayed in the base: the target maps it from its backing file.
        mapped = json.loads(run("qemu-img", "map", "--output=json", str(tgt)))
        at = [m for m in mapped if m["start"] <= 12 * MiB < m["start"] + m["length"]][0]
        assert at["depth"] == 1, mapped


def test_mirror_sync_top_needs_a_target_over_the_same_backing(tmp_path):
    src, blockdev, _ = mirror_source(tmp_path, "chain")
    tgt = create(tmp_path / "flat.qcow2", size=16 * MiB)
    qmp = tmp_path / "qmp.sock"
    backend = Backend(SPINDLE, tmp_path, "spindle-top")
    try:
        backend.start(["--blockdev", blockdev, "--qmp", str(qmp)], qmp)
        client = spindle_qmp(qmp)
        ok(client, "blockdev-add", **{"driver": "qcow2", "node-name": "tgt", "file": {"driver": "file", "filename": str(tgt)}})
        reply = client.cmd_raw("blockdev-mirror", {"job-id": "m0", "device": "d0", "target": "tgt", "sync": "top"})
        assert "needs a target that backs onto its backing file" in reply["error"]["desc"], reply
        assert ok(client, "query-jobs") == []
        client.close()
    finally:
        backend.stop()

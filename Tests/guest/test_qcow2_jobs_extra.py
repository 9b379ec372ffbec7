"""Part 8's job extras over a real QMP socket, no guest: block-job-set-speed on running
speed-limited stream and mirror jobs (and query-block-jobs), block-stream's `bottom`,
block-commit into a base smaller than its top (qcow2 and raw bases grow first, as QEMU's),
and a write whose L2 entry names metadata marking the image corrupt. Real images made and
checked by qemu-img/qemu-io, spindle-bench as the frontend. Every daemon is stopped."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

from interactive import ok, wait_event
from qcow2qmp import BENCH, KiB, MiB, SKIPS, daemon, dump, export, img_check, img_info, run  # noqa: F401
from test_qcow2_stream import add_chain_nodes, compare, events_until_concluded, make_chain, node_info, wait_status

pytestmark = SKIPS

OFFSET_MASK = 0x00FFFFFFFFFFFE00
COPIED = 1 << 63


def error_of(client, command: str, **arguments) -> dict:
    reply = client.cmd_raw(command, arguments)
    assert "error" in reply, reply
    return reply["error"]


def block_job(client, job: str) -> dict:
    [info] = [j for j in ok(client, "query-block-jobs") if j["device"] == job]
    return info


def test_set_speed_lets_a_throttled_stream_finish_and_query_block_jobs_shows_it(daemon):
    client, tmp = daemon
    base, mid, top, reference = make_chain(tmp)
    add_chain_nodes(client, base, mid, top)
    # 8 MiB at 64 KiB/s would take two minutes.
    ok(client, "block-stream", **{"job-id": "s0", "device": "top", "speed": 64 * KiB})
    wait_status(client, "s0", "running")
    info = block_job(client, "s0")
    assert info["type"] == "stream" and info["speed"] == 64 * KiB and info["status"] == "running", info
    assert info["ready"] is False and info["paused"] is False and info["len"] == 8 * MiB, info
    assert info["auto-finalize"] is True and info["auto-dismiss"] is True and info["io-status"] == "ok", info
    negative = error_of(client, "block-job-set-speed", device="s0", speed=-1)
    assert negative == {"class": "GenericError", "desc": "Parameter 'speed' expects a non-negative value"}
    missing = error_of(client, "block-job-set-speed", device="nope", speed=1)
    assert missing == {"class": "DeviceNotActive", "desc": "Block job 'nope' not found"}
    assert "speed" in error_of(client, "block-job-set-speed", device="s0")["desc"]  # required
    assert block_job(client, "s0")["speed"] == 64 * KiB
    ok(client, "block-job-set-speed", device="s0", speed=1 << 40)
    assert block_job(client, "s0")["speed"] == 1 << 40
    ok(client, "block-job-set-speed", device="s0", speed=0)
    assert block_job(client, "s0")["speed"] == 0
    events = events_until_concluded(client, "s0", timeout=90)
    [completed] = [e["data"] for e in events if e["event"] == "BLOCK_JOB_COMPLETED"]
    assert "error" not in completed and completed["speed"] == 0 and completed["offset"] == 8 * MiB, completed
    assert ok(client, "query-block-jobs") == []
    assert "backing-filename" not in img_info(top)
    img_check(top)
    compare(top, reference)


def test_set_speed_lets_a_throttled_mirror_reach_ready(daemon):
    client, tmp = daemon
    src, tgt = tmp / "src.img", tmp / "tgt.img"
    run("qemu-img", "create", "-q", "-f", "raw", str(src), str(8 * MiB))
    run("qemu-io", "-f", "raw", "-c", "write -P 0x41 0 3M", "-c", f"write -P 0x42 {6 * MiB} 2M", str(src))
    run("qemu-img", "create", "-q", "-f", "raw", str(tgt), str(8 * MiB))
    ok(client, "blockdev-add", driver="file", filename=str(src), **{"node-name": "src"})
    ok(client, "blockdev-add", driver="file", filename=str(tgt), **{"node-name": "tgt"})
    ok(client, "blockdev-mirror", **{"job-id": "m0", "device": "src", "target": "tgt", "sync": "full", "speed": 32 * KiB})
    wait_status(client, "m0", "running")
    assert block_job(client, "m0")["speed"] == 32 * KiB
    ok(client, "block-job-set-speed", device="m0", speed=1 << 30)
    ready = wait_event(client, "BLOCK_JOB_READY", timeout=90)["data"]
    assert ready["device"] == "m0" and ready["speed"] == 1 << 30, ready
    info = block_job(client, "m0")
    assert info["ready"] is True and info["status"] == "ready" and info["speed"] == 1 << 30, info
    # The verb is accepted while ready too; a concluded job's is not.
    ok(client, "block-job-set-speed", device="m0", speed=0)
    ok(client, "job-cancel", id="m0")
    events_until_concluded(client, "m0")
    assert error_of(client, "block-job-set-speed", device="m0", speed=0)["class"] == "DeviceNotActive"
    same = run("qemu-img", "compare", "-U", "-f", "raw", "-F", "raw", str(src), str(tgt), check=False)
    assert same.returncode == 0, same.stdout + same.stderr


def test_create_jobs_are_not_block_jobs(daemon):
    client, tmp = daemon
    ok(client, "blockdev-create", **{"job-id": "cr0"}, options={"driver": "file", "filename": str(tmp / "new.img"), "size": MiB})
    wait_status(client, "cr0", "concluded")
    assert error_of(client, "block-job-set-speed", device="cr0", speed=1)["desc"] == "Block job 'cr0' not found"
    assert ok(client, "query-block-jobs") == []
    ok(client, "job-dismiss", id="cr0")


def test_stream_with_bottom_pulls_down_to_it_and_backs_onto_the_layer_below(daemon):
    client, tmp = daemon
    base, mid, top, reference = make_chain(tmp)
    add_chain_nodes(client, base, mid, top)
    sock = export(client, tmp, "top", writable=True)
    ok(client, "block-stream", **{"job-id": "b0", "device": "top", "bottom": "mid"})
    events = events_until_concluded(client, "b0")
    [completed] = [e["data"] for e in events if e["event"] == "BLOCK_JOB_COMPLETED"]
    assert "error" not in completed, completed
    node = node_info(client, "top")
    assert node["backing_file_depth"] == 1 and node["backing_file"] == str(base), node
    assert img_info(top)["backing-filename"] == str(base)
    img_check(top)
    compare(top, reference)
    assert dump(sock, tmp, "served") == reference.read_bytes()
    # What base alone holds stayed in base: top maps it from its backing file.
    mapped = [m for m in __import__("json").loads(run("qemu-img", "map", "-U", "--output=json", str(top)).stdout)
              if m["start"] <= 7 * MiB < m["start"] + m["length"]]
    assert mapped[0]["depth"] == 1, mapped
    # mid's own data (0x22 at 512k..1.5M, 0x23 at 6M) now lives in top.
    mapped = [m for m in __import__("json").loads(run("qemu-img", "map", "-U", "--output=json", str(top)).stdout)
              if m["start"] <= 6 * MiB + 128 * KiB < m["start"] + m["length"]]
    assert mapped[0]["depth"] == 0, mapped


def test_stream_with_the_lowest_layer_as_bottom_streams_the_whole_chain(daemon):
    client, tmp = daemon
    base, mid, top, reference = make_chain(tmp)
    add_chain_nodes(client, base, mid, top)
    ok(client, "block-stream", **{"job-id": "b1", "device": "top", "bottom": "base"})
    events_until_concluded(client, "b1")
    node = node_info(client, "top")
    assert node["backing_file_depth"] == 0 and "backing_file" not in node, node
    assert "backing-filename" not in img_info(top)
    img_check(top)
    compare(top, reference)


def test_bottom_refusals_carry_qemus_texts(daemon):
    client, tmp = daemon
    base, mid, top, _ = make_chain(tmp)
    add_chain_nodes(client, base, mid, top)
    other_base, other_mid, other_top, _ = make_chain(tmp, prefix="other-")
    add_chain_nodes(client, other_base, other_mid, other_top, prefix="other-")

    def refused(**arguments) -> str:
        return error_of(client, "block-stream", **{"job-id": "x", "device": "top", **arguments})["desc"]

    assert refused(bottom="mid", base=str(base)) == "'base' and 'bottom' cannot be specified at the same time"
    assert refused(bottom="mid", **{"base-node": "base"}) == "'bottom' and 'base-node' cannot be specified at the same time"
    assert refused(bottom="other-mid") == "Node 'other-mid' is not in a chain starting from 'top'"
    assert refused(bottom="missing") == "Cannot find device='' nor node-name='missing'"
    assert refused(bottom="mid", **{"backing-file": "b.qcow2"}) == "backing file specified, but streaming the entire chain"
    assert ok(client, "query-block-jobs") == []
    img_check(top)


def commit_active(client, job: str) -> list[dict]:
    ok(client, "block-commit", **{"job-id": job, "device": "top"})
    wait_status(client, job, "ready")
    ok(client, "job-complete", id=job)
    return events_until_concluded(client, job)


def test_commit_into_a_smaller_qcow2_base_grows_it_first(daemon):
    client, tmp = daemon
    base, top = tmp / "base.qcow2", tmp / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(base), str(4 * MiB))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 1M", "-c", f"write -P 0x12 {3 * MiB} 1M", str(base))
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(top), str(8 * MiB))
    run("qemu-io", "-f", "qcow2", "-c", f"write -P 0x21 {3 * MiB + 512 * KiB} 1M", "-c", f"write -P 0x22 {7 * MiB} 64k", str(top))
    reference = tmp / "reference.raw"
    run("qemu-img", "convert", "-O", "raw", str(top), str(reference))
    ok(client, "blockdev-add", driver="qcow2", **{"node-name": "base"}, file={"driver": "file", "filename": str(base)}, backing=None)
    ok(client, "blockdev-add", driver="qcow2", **{"node-name": "top"}, file={"driver": "file", "filename": str(top)}, backing="base")
    sock = export(client, tmp, "top", writable=True)
    events = commit_active(client, "c0")
    [completed] = [e["data"] for e in events if e["event"] == "BLOCK_JOB_COMPLETED"]
    assert "error" not in completed, completed
    assert node_info(client, "base")["image"]["virtual-size"] == 8 * MiB
    assert ok(client, "query-block-exports")[0]["node-name"] == "base"
    assert dump(sock, tmp, "served") == reference.read_bytes()
    assert img_info(base)["virtual-size"] == 8 * MiB
    img_check(base)
    compare(base, reference)


def test_commit_into_a_smaller_raw_base_grows_the_file_first(daemon):
    client, tmp = daemon
    base, top = tmp / "base.raw", tmp / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "raw", str(base), str(4 * MiB))
    run("qemu-io", "-f", "raw", "-c", "write -P 0x31 0 2M", str(base))
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(top), str(8 * MiB))
    run("qemu-io", "-f", "qcow2", "-c", f"write -P 0x41 {MiB} 64k", "-c", f"write -P 0x42 {6 * MiB} 1M", str(top))
    reference = tmp / "reference.raw"
    run("qemu-img", "convert", "-O", "raw", str(top), str(reference))
    ok(client, "blockdev-add", driver="file", filename=str(base), **{"node-name": "base"})
    ok(client, "blockdev-add", driver="qcow2", **{"node-name": "top"}, file={"driver": "file", "filename": str(top)}, backing="base")
    sock = export(client, tmp, "top", writable=True)
    events = commit_active(client, "c1")
    [completed] = [e["data"] for e in events if e["event"] == "BLOCK_JOB_COMPLETED"]
    assert "error" not in completed, completed
    assert dump(sock, tmp, "served") == reference.read_bytes()
    assert base.stat().st_size == 8 * MiB
    assert base.read_bytes() == reference.read_bytes()


def test_a_write_whose_entry_names_metadata_marks_the_image_corrupt(daemon):
    client, tmp = daemon
    image = tmp / "c.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(image), str(8 * MiB))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x55 0 1M", str(image))
    header = image.read_bytes()[:112]
    l1_offset = struct.unpack(">Q", header[40:48])[0]
    l2_offset = struct.unpack(">Q", image.read_bytes()[l1_offset:l1_offset + 8])[0] & OFFSET_MASK
    # Guest cluster 5 MiB: a preallocated zero cluster whose host cluster "is" the L1 table.
    # Reads see zeroes; a write would land on the L1 table.
    with open(image, "r+b") as f:
        f.seek(l2_offset + 80 * 8)
        f.write(struct.pack(">Q", COPIED | l1_offset | 1))
    ok(client, "blockdev-add", driver="qcow2", **{"node-name": "d0"}, file={"driver": "file", "filename": str(image)})
    sock = export(client, tmp, "d0", writable=True)
    steps = tmp / "steps.txt"

    def bench_script(*lines: str) -> subprocess.CompletedProcess:
        steps.write_text("\n".join(lines) + "\n")
        return subprocess.run([str(BENCH), "--socket", str(sock), "--script", str(steps)], capture_output=True, text=True, timeout=120)

    first = bench_script(f"write {5 * MiB} 4096 0x77")
    assert first.returncode != 0 and "status 1" in first.stderr, first.stderr  # VIRTIO_BLK_S_IOERR
    event = wait_event(client, "BLOCK_IMAGE_CORRUPTED")["data"]
    assert event["node-name"] == "d0" and event["device"] == "e-d0" and event["fatal"] is True, event
    assert event["offset"] == l1_offset and event["size"] == 64 * KiB, event
    assert "0x500000" in event["msg"] and "L1 or refcount table" in event["msg"], event
    # Writes fail from now on, elsewhere too; reads go on; one event only.
    again = bench_script(f"write {5 * MiB} 4096 0x78", "write 0 4096 0x79")
    assert again.returncode != 0 and "status 1" in again.stderr, again.stderr
    served = dump(sock, tmp, "after")
    assert served[:MiB] == b"\x55" * MiB and served[MiB:] == bytes(7 * MiB)
    assert {n["node-name"]: n for n in ok(client, "query-named-block-nodes")}["d0"]["ro"] is True
    assert [e for e in client.get_events(wait=False) if e["event"] == "BLOCK_IMAGE_CORRUPTED"] == []
    # The L1 table was not overwritten, and the header carries the corrupt bit.
    assert struct.unpack(">Q", image.read_bytes()[l1_offset:l1_offset + 8])[0] & OFFSET_MASK == l2_offset
    assert img_info(image)["format-specific"]["data"]["corrupt"] is True
    checked = run("qemu-img", "check", "-U", str(image), check=False)
    assert "corrupt" in (checked.stdout + checked.stderr).lower(), checked.stdout + checked.stderr


def test_intermediate_commit_into_a_smaller_base_grows_it_and_backs_top_onto_it(daemon):
    client, tmp = daemon
    base, mid, top = tmp / "base.qcow2", tmp / "mid.qcow2", tmp / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(base), str(4 * MiB))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x51 0 2M", str(base))
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(mid), str(8 * MiB))
    run("qemu-io", "-f", "qcow2", "-c", f"write -P 0x52 {MiB} 64k", "-c", f"write -P 0x53 {5 * MiB} 1M", str(mid))
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(mid), "-F", "qcow2", str(top), str(8 * MiB))
    run("qemu-io", "-f", "qcow2", "-c", f"write -P 0x54 {5 * MiB} 64k", str(top))
    reference = tmp / "reference.raw"
    run("qemu-img", "convert", "-O", "raw", str(top), str(reference))
    for name, path, backing in (("base", base, None), ("mid", mid, "base"), ("top", top, "mid")):
        ok(client, "blockdev-add", driver="qcow2", **{"node-name": name}, file={"driver": "file", "filename": str(path)},
           backing=backing)
    sock = export(client, tmp, "top", writable=True)
    ok(client, "block-commit", **{"job-id": "i0", "device": "top", "top-node": "mid", "base-node": "base"})
    events = events_until_concluded(client, "i0")
    [completed] = [e["data"] for e in events if e["event"] == "BLOCK_JOB_COMPLETED"]
    assert "error" not in completed, completed
    assert node_info(client, "top")["backing_file"] == str(base)
    assert img_info(base)["virtual-size"] == 8 * MiB
    assert dump(sock, tmp, "served") == reference.read_bytes()
    img_check(base)
    img_check(top)
    compare(top, reference)


def test_a_base_that_cannot_grow_is_refused_saying_why(daemon):
    client, tmp = daemon
    base, top = tmp / "base.qcow2", tmp / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(base), str(4 * MiB))
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(top), str(8 * MiB))
    ok(client, "blockdev-add", driver="qcow2", **{"node-name": "base"}, file={"driver": "file", "filename": str(base)}, backing=None)
    ok(client, "blockdev-add", driver="qcow2", **{"node-name": "top"}, file={"driver": "file", "filename": str(top)}, backing="base")
    # A throttle node over the base would keep reading its old data path.
    ok(client, "object-add", **{"qom-type": "throttle-group", "id": "tg0", "limits": {"iops-total": 1000}})
    ok(client, "blockdev-add", driver="throttle", **{"node-name": "t0", "throttle-group": "tg0", "file": "base"})
    desc = error_of(client, "block-commit", **{"job-id": "c2", "device": "top"})["desc"]
    assert desc.startswith("Base node 'base' is 4194304 bytes, smaller than the top (8388608 bytes), and cannot grow"), desc
    assert "'t0'" in desc, desc
    assert ok(client, "query-jobs") == []
    assert img_info(base)["virtual-size"] == 4 * MiB
    img_check(base)

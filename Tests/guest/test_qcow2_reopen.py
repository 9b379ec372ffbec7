"""Reopening nodes read-only and read-write while the daemon runs, over a real QMP socket, no
guest: blockdev-reopen of a file and of a qcow2 node (writes through a real vhost-user-blk
export accepted or refused, the image lock seen by qemu-img), block-commit into a base added
read-only (reopened read-write for the job, read-only again after it unless the guest moved
onto it), the old active layer made read-only by a snapshot (qemu-img check finds no leak
while the daemon runs), and a reopen kept across a restart by the state file. Every daemon
started is stopped."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from guestlib import Backend
from interactive import ok, spindle_qmp
from qcow2qmp import BENCH, KiB, MiB, SKIPS, SPINDLE, daemon, img_check, run  # noqa: F401
from test_qcow2_commit import Events, compare, export_top, make_chain, open_chain, write_through

pytestmark = SKIPS

SIZE = 8 * MiB


def node(client, name: str) -> dict:
    [found] = [n for n in ok(client, "query-named-block-nodes") if n["node-name"] == name]
    return found


def error(client, command: str, **args) -> str:
    reply = client.cmd_raw(command, args)
    assert "error" in reply, f"{command} {args} succeeded: {reply}"
    return reply["error"]["desc"]


def export(client, tmp: Path, name: str, writable: bool) -> Path:
    sock = tmp / f"{name}.sock"
    ok(client, "block-export-add", type="vhost-user-blk", id=f"e-{name}", **{"node-name": name},
       addr={"type": "unix", "path": str(sock)}, writable=writable)
    return sock


def bench_write(sock: Path, offset: int, length: int, byte: int) -> subprocess.CompletedProcess:
    script = sock.with_suffix(".script")
    script.write_text(f"write {offset} {length} {byte}\nflush\n")
    return subprocess.run([str(BENCH), "--socket", str(sock), "--script", str(script)],
                          capture_output=True, text=True, timeout=120)


def shared_open_works(path: Path) -> bool:
    """Whether another process may open the image without -U: refused while Spindle holds
    the write lock. qemu-img info of a qcow2 image does not share write; for a raw file
    (whose driver shares it) a read-write qemu-io open asks for the lock."""
    if path.suffix == ".qcow2":
        return run("qemu-img", "info", str(path), check=False).returncode == 0
    return run("qemu-io", "-f", "raw", "-c", "read 0 512", str(path), check=False).returncode == 0


def file_opts(name: str, path: Path, read_only: bool) -> dict:
    return {"driver": "file", "node-name": name, "filename": str(path), "read-only": read_only}


def qcow2_opts(name: str, path: Path, read_only: bool, **extra) -> dict:
    return {"driver": "qcow2", "node-name": name, "read-only": read_only,
            "file": {"driver": "file", "filename": str(path)}, **extra}


def test_a_file_node_is_reopened_read_write_and_read_only(daemon):
    client, tmp = daemon
    image = tmp / "disk.raw"
    run("qemu-img", "create", "-q", "-f", "raw", str(image), str(SIZE))
    ok(client, "blockdev-add", **file_opts("f", image, True))
    assert "is read-only" in error(client, "block-export-add", type="vhost-user-blk", id="e-f", **{"node-name": "f"},
                                   addr={"type": "unix", "path": str(tmp / "f.sock")}, writable=True)
    ok(client, "blockdev-reopen", options=[file_opts("f", image, False)])
    assert node(client, "f")["ro"] is False
    sock = export(client, tmp, "f", writable=True)
    result = bench_write(sock, 64 * KiB, 64 * KiB, 0x5c)
    assert result.returncode == 0, result.stderr
    assert not shared_open_works(image)  # the writer's lock
    desc = error(client, "blockdev-reopen", options=[file_opts("f", image, True)])
    assert desc == "Read-only block node 'f' cannot support read-write users"
    assert node(client, "f")["ro"] is False
    ok(client, "block-export-del", id="e-f")
    ok(client, "blockdev-reopen", options=[file_opts("f", image, True)])
    assert node(client, "f")["ro"] is True
    assert shared_open_works(image)
    with open(image, "rb") as f:
        f.seek(64 * KiB)
        assert f.read(64 * KiB) == b"\x5c" * (64 * KiB)
    # A read-only export now; its writes fail.
    sock = export(client, tmp, "f", writable=False)
    assert bench_write(sock, 0, 4 * KiB, 0x11).returncode != 0


def test_a_qcow2_node_is_reopened_and_gives_back_its_reserved_clusters(daemon):
    client, tmp = daemon
    image = tmp / "disk.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(image), str(SIZE))
    ok(client, "blockdev-add", **qcow2_opts("q", image, True))
    assert node(client, "q")["ro"] is True
    ok(client, "blockdev-reopen", options=[qcow2_opts("q", image, False)])
    sock = export(client, tmp, "q", writable=True)
    result = bench_write(sock, 1 * MiB, 192 * KiB, 0x77)
    assert result.returncode == 0, result.stderr
    assert not shared_open_works(image)
    assert "cannot support read-write users" in error(client, "blockdev-reopen", options=[qcow2_opts("q", image, True)])
    ok(client, "block-export-del", id="e-q")
    ok(client, "blockdev-reopen", options=[qcow2_opts("q", image, True)])
    assert node(client, "q")["ro"] is True
    # Read-only: no write lock, and no clusters left reserved (no leak) while it is open.
    assert shared_open_works(image)
    img_check(image)
    run("qemu-io", "-r", "-U", "-f", "qcow2", "-c", f"read -P 0x77 {MiB} {192 * KiB}", "-c", f"read -P 0 0 {MiB}", str(image))
    sock = export(client, tmp, "q", writable=False)
    assert bench_write(sock, 0, 4 * KiB, 0x11).returncode != 0


def test_reopen_refuses_other_changes_naming_the_option(daemon):
    client, tmp = daemon
    image = tmp / "disk.qcow2"
    other = tmp / "other.qcow2"
    for path in (image, other):
        run("qemu-img", "create", "-q", "-f", "qcow2", str(path), str(SIZE))
    ok(client, "blockdev-add", **qcow2_opts("q", image, True))
    assert error(client, "blockdev-reopen", options=[qcow2_opts("q", other, False)]) == "Cannot change the option 'filename'"
    assert error(client, "blockdev-reopen", options=[qcow2_opts("q", image, False, **{"l2-cache-size": 65536})]) \
        == "Cannot change the option 'l2-cache-size'"
    locked = qcow2_opts("q", image, False)
    locked["file"]["locking"] = "off"
    assert error(client, "blockdev-reopen", options=[locked]) == "Cannot change the option 'locking'"
    assert error(client, "blockdev-reopen", options=[qcow2_opts("nope", image, False)]) \
        == "Failed to find node with node-name='nope'"
    assert error(client, "blockdev-reopen", options=[{"driver": "qcow2", "file": {"driver": "file", "filename": str(image)}}]) \
        == "node-name not specified"
    assert node(client, "q")["ro"] is True  # nothing changed
    ok(client, "blockdev-reopen", options=[qcow2_opts("q", image, True)])  # the same options: nothing to do


def test_intermediate_commit_into_a_read_only_base_leaves_it_read_only(daemon):
    client, tmp = daemon
    base, mid, top, reference = make_chain(tmp)
    open_chain(client, base, mid, top, base_read_only=True)
    sock = export_top(client, tmp)
    events = Events(client)
    ok(client, "block-commit", **{"job-id": "i0"}, device="e-top", **{"top-node": "mid", "base-node": "base"},
       **{"backing-file": str(base)})
    assert events.wait_status("i0", "null")[-2:] == ["concluded", "null"]
    [completed] = events.named("BLOCK_JOB_COMPLETED")
    assert "error" not in completed["data"], completed
    assert node(client, "base")["ro"] is True
    assert shared_open_works(base)
    write_through(sock, reference, [(5 * MiB, 4 * KiB, 0xa2)])
    for image in (base, top):
        img_check(image)
    compare(top, reference)


def test_active_commit_into_a_read_only_base_keeps_it_writable_after_the_pivot(daemon):
    client, tmp = daemon
    base, mid, top, reference = make_chain(tmp)
    open_chain(client, base, mid, top, base_read_only=True)
    sock = export_top(client, tmp)
    events = Events(client)
    ok(client, "block-commit", **{"job-id": "c0"}, device="e-top", **{"base-node": "base"})
    events.named("BLOCK_JOB_READY", timeout=90)
    assert node(client, "base")["ro"] is False  # reopened for the job
    ok(client, "job-complete", id="c0")
    assert events.wait_status("c0", "null")[-2:] == ["concluded", "null"]
    assert ok(client, "query-block-exports")[0]["node-name"] == "base"
    assert node(client, "base")["ro"] is False  # the guest writes it now, as in QEMU
    write_through(sock, reference, [(2 * MiB, 64 * KiB, 0xb7)])
    ok(client, "block-export-del", id="e-top")
    img_check(base)
    compare(base, reference)


def test_a_cancelled_commit_gives_the_base_its_read_only_mode_back(daemon):
    client, tmp = daemon
    base, mid, top, reference = make_chain(tmp)
    open_chain(client, base, mid, top, base_read_only=True)
    export_top(client, tmp)
    events = Events(client)
    ok(client, "block-commit", **{"job-id": "c1"}, device="e-top", **{"base-node": "base"})
    events.named("BLOCK_JOB_READY", timeout=90)
    ok(client, "job-cancel", id="c1")
    events.wait_status("c1", "null")
    assert node(client, "base")["ro"] is True
    assert ok(client, "query-block-exports")[0]["node-name"] == "top"
    img_check(base)


def test_a_snapshot_makes_the_old_active_layer_read_only_with_no_leak(daemon):
    client, tmp = daemon
    image = tmp / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(image), str(SIZE))
    ok(client, "blockdev-add", **qcow2_opts("t", image, False))
    sock = export(client, tmp, "t", writable=True)
    assert bench_write(sock, 0, 256 * KiB, 0x3d).returncode == 0
    assert not shared_open_works(image)
    ok(client, "blockdev-snapshot-sync", **{"node-name": "t", "snapshot-file": str(tmp / "snap.qcow2"),
                                            "snapshot-node-name": "snap"})
    assert node(client, "t")["ro"] is True
    assert node(client, "snap")["ro"] is False
    # While the daemon runs: readable by others, and nothing reserved is left over.
    assert shared_open_works(image)
    img_check(image)
    assert bench_write(sock, 4 * MiB, 64 * KiB, 0x4e).returncode == 0
    run("qemu-io", "-r", "-U", "-f", "qcow2", "-c", f"read -P 0x3d 0 {256 * KiB}", "-c", f"read -P 0 {4 * MiB} {64 * KiB}", str(image))


def test_a_reopen_survives_a_restart_with_the_state_file(tmp_path):
    tmp = tmp_path
    image = tmp / "disk.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(image), str(SIZE))
    qmp = tmp / "qmp.sock"
    argv = ["--qmp", str(qmp), "--state-file", str(tmp / "state.json")]
    backend = Backend(SPINDLE, tmp, "first")
    try:
        backend.start(argv, qmp)
        client = spindle_qmp(qmp)
        ok(client, "blockdev-add", **qcow2_opts("q", image, True))
        ok(client, "blockdev-reopen", options=[qcow2_opts("q", image, False)])
        client.close()
    finally:
        backend.stop()
    entries = json.loads((tmp / "state.json").read_text())
    assert "blockdev-reopen" in json.dumps(entries)
    qmp.unlink(missing_ok=True)
    backend = Backend(SPINDLE, tmp, "second")
    try:
        backend.start(argv, qmp)
        client = spindle_qmp(qmp)
        assert node(client, "q")["ro"] is False
        sock = export(client, tmp, "q", writable=True)
        assert bench_write(sock, 0, 64 * KiB, 0x21).returncode == 0
        client.close()
    finally:
        backend.stop()
    img_check(image)


def test_a_qcow2_node_over_a_file_node_takes_its_file_along(daemon):
    client, tmp = daemon
    image = tmp / "disk.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(image), str(SIZE))
    ok(client, "blockdev-add", **file_opts("qf", image, True))
    ok(client, "blockdev-add", driver="qcow2", **{"node-name": "q", "read-only": True, "file": "qf"})
    ok(client, "blockdev-reopen", options=[{"driver": "qcow2", "node-name": "q", "read-only": False, "file": "qf"}])
    assert node(client, "q")["ro"] is False and node(client, "qf")["ro"] is False
    # A read-write image needs its file writable, users or not.
    assert error(client, "blockdev-reopen", options=[file_opts("qf", image, True)]) \
        == "Read-only block node 'qf' cannot support read-write users"
    sock = export(client, tmp, "q", writable=True)
    assert bench_write(sock, 0, 64 * KiB, 0x6b).returncode == 0
    assert not shared_open_works(image)
    # The file node cannot go read-only under a writing qcow2 node.
    assert error(client, "blockdev-reopen", options=[file_opts("qf", image, True)]) \
        == "Read-only block node 'qf' cannot support read-write users"
    ok(client, "block-export-del", id="e-q")
    ok(client, "blockdev-reopen", options=[{"driver": "qcow2", "node-name": "q", "read-only": True, "file": "qf"}])
    assert node(client, "q")["ro"] is True and node(client, "qf")["ro"] is True
    img_check(image)
    run("qemu-io", "-r", "-U", "-f", "qcow2", "-c", f"read -P 0x6b 0 {64 * KiB}", str(image))


def test_an_active_commit_into_a_read_only_base_survives_a_restart(tmp_path):
    """The pivot leaves base read-write; the state file says so before the export's entry, so
    the restarted daemon serves base writable."""
    tmp = tmp_path
    base, mid, top, reference = make_chain(tmp)
    qmp = tmp / "qmp.sock"
    argv = ["--qmp", str(qmp), "--state-file", str(tmp / "state.json")]
    backend = Backend(SPINDLE, tmp, "first")
    try:
        backend.start(argv, qmp)
        client = spindle_qmp(qmp)
        open_chain(client, base, mid, top, base_read_only=True)
        export_top(client, tmp)
        events = Events(client)
        ok(client, "block-commit", **{"job-id": "c0"}, device="e-top", **{"base-node": "base"})
        events.named("BLOCK_JOB_READY", timeout=90)
        ok(client, "job-complete", id="c0")
        events.wait_status("c0", "null")
        client.close()
    finally:
        backend.stop()
    qmp.unlink(missing_ok=True)
    backend = Backend(SPINDLE, tmp, "second")
    try:
        backend.start(argv, qmp)
        client = spindle_qmp(qmp)
        assert ok(client, "query-block-exports")[0]["node-name"] == "base"
        assert node(client, "base")["ro"] is False
        write_through(tmp / "top.sock", reference, [(7 * MiB, 64 * KiB, 0xc3)])
        client.close()
    finally:
        backend.stop()
    img_check(base)
    compare(base, reference)


def test_going_read_write_runs_the_checks_of_a_read_write_open(daemon):
    """An image with an internal snapshot stays read-only (the text of a read-write open),
    and the node serves as before."""
    client, tmp = daemon
    image = tmp / "snapped.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(image), str(SIZE))
    run("qemu-io", "-f", "qcow2", "-c", f"write -P 0x19 0 {64 * KiB}", str(image))
    run("qemu-img", "snapshot", "-c", "s1", str(image))
    ok(client, "blockdev-add", **qcow2_opts("q", image, True))
    desc = error(client, "blockdev-reopen", options=[qcow2_opts("q", image, False)])
    assert "internal snapshot" in desc and "read-only=on" in desc, desc
    assert node(client, "q")["ro"] is True
    assert shared_open_works(image)  # no write lock was left behind
    sock = export(client, tmp, "q", writable=False)
    result = subprocess.run([str(BENCH), "--socket", str(sock), "--dump", str(tmp / "q.dump"), "--bs", str(192 * KiB)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp / "q.dump").read_bytes()[:64 * KiB] == b"\x19" * (64 * KiB)

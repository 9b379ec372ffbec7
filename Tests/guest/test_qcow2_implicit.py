"""Backing layers opened from a qcow2 image's header are implicit graph nodes (QEMU's
'#block...' nodes), no guest: a chain base <- mid <- top made by qemu-img, opened with one
--blockdev (or blockdev-add) of top. query-named-block-nodes lists the layers, blockdev-del
refuses them and takes them with their top, the state file never records them, and
block-stream / block-commit name them by file or node name. Data checked with qemu-img
compare against a raw copy, qemu-img check clean. Every daemon started is stopped."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from guestlib import Backend
from interactive import ok, spindle_qmp
from qcow2qmp import KiB, MiB, SKIPS, SPINDLE, daemon, dump, export, img_check, img_info, run  # noqa: F401
from test_qcow2_stream import events_until_concluded, wait_status

pytestmark = SKIPS

SIZE = 8 * MiB
IMPLICIT = re.compile(r"^#block[0-9]+$")


def make_chain(tmp: Path) -> tuple[Path, Path, Path, Path]:
    """base <- mid <- top (relative backing names, as qemu-img writes them with -b of a
    name in the same folder), each with its own data; and a raw copy of what top reads."""
    base, mid, top = tmp / "base.qcow2", tmp / "mid.qcow2", tmp / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(base), str(SIZE))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 1M", "-c", "write -P 0x12 4M 1M", str(base))
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", str(mid))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x22 512k 1M", "-c", "write -z 4352k 64k", str(mid))
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", str(top))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x33 1M 64k", "-c", "write -P 0x34 6M 64k", str(top))
    reference = tmp / "reference.raw"
    run("qemu-img", "convert", "-O", "raw", str(top), str(reference))
    return base, mid, top, reference


def top_options(top: Path, writable: bool = True) -> dict:
    return {"driver": "qcow2", "node-name": "d0", "read-only": not writable,
            "file": {"driver": "file", "filename": str(top), "read-only": not writable}}


def named_nodes(client) -> dict[str, dict]:
    return {n["node-name"]: n for n in ok(client, "query-named-block-nodes")}


def implicit_by_file(client) -> dict[str, str]:
    """Implicit node names by image file name."""
    return {Path(n["file"]).name: name for name, n in named_nodes(client).items() if name.startswith("#")}


def compare(image: Path, reference: Path) -> None:
    result = run("qemu-img", "compare", "-U", "-f", "qcow2", "-F", "raw", str(image), str(reference), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_header_layers_are_listed_as_read_only_implicit_nodes(tmp_path):
    base, mid, top, reference = make_chain(tmp_path)
    qmp, sock = tmp_path / "qmp.sock", tmp_path / "d0.sock"
    backend = Backend(SPINDLE, tmp_path, "spindle")
    try:
        backend.start(["--qmp", str(qmp), "--blockdev", json.dumps(top_options(top, writable=False)),
                       "--export", f"vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path={sock}"], qmp)
        client = spindle_qmp(qmp)
        shown = named_nodes(client)
        assert len(shown) == 3
        d0 = shown.pop("d0")
        assert d0["backing_file_depth"] == 2 and d0["backing_file"] == str(mid)
        by_file = {Path(n["file"]).name: n for n in shown.values()}
        assert set(by_file) == {"mid.qcow2", "base.qcow2"}
        for name, node in shown.items():
            assert IMPLICIT.match(name), name
            assert node["ro"] is True and node["drv"] == "qcow2" and node["image"]["virtual-size"] == SIZE
        assert by_file["mid.qcow2"]["backing_file"] == str(base) and by_file["mid.qcow2"]["backing_file_depth"] == 1
        assert by_file["base.qcow2"]["backing_file_depth"] == 0 and "backing_file" not in by_file["base.qcow2"]
        assert dump(sock, tmp_path, "served") == reference.read_bytes()
        client.close()
    finally:
        backend.stop()


def test_blockdev_del_refuses_an_implicit_node_and_takes_them_with_their_top(daemon):
    client, tmp = daemon
    base, mid, top, reference = make_chain(tmp)
    ok(client, "blockdev-add", **top_options(top))
    implicit = implicit_by_file(client)
    assert set(implicit) == {"mid.qcow2", "base.qcow2"}
    reply = client.cmd_raw("blockdev-del", {"node-name": implicit["mid.qcow2"]})
    assert reply["error"]["desc"] == f"Node {implicit['mid.qcow2']} is not owned by the monitor"
    # A user's name can never be one of those.
    reply = client.cmd_raw("blockdev-add", {**top_options(top), "node-name": "#block1"})
    assert "'#block1'" in reply["error"]["desc"], reply
    ok(client, "blockdev-del", **{"node-name": "d0"})
    assert named_nodes(client) == {}
    # The images are closed: qemu-img may write them (it takes the write lock).
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x44 0 64k", str(mid))
    img_check(mid)


def test_a_failure_deep_in_the_chain_leaves_no_implicit_node(daemon):
    client, tmp = daemon
    base, mid, top, reference = make_chain(tmp)
    base.rename(tmp / "gone.qcow2")
    reply = client.cmd_raw("blockdev-add", top_options(top))
    assert "base.qcow2" in reply["error"]["desc"], reply
    assert named_nodes(client) == {}
    (tmp / "gone.qcow2").rename(base)
    ok(client, "blockdev-add", **top_options(top))
    assert len(named_nodes(client)) == 3


def test_the_state_file_records_no_implicit_node_and_a_restart_opens_the_chain_again(tmp_path):
    base, mid, top, reference = make_chain(tmp_path)
    qmp, state = tmp_path / "qmp.sock", tmp_path / "state.json"
    argv = ["--qmp", str(qmp), "--state-file", str(state)]
    for run_name in ("first", "second"):
        backend = Backend(SPINDLE, tmp_path, run_name)
        try:
            backend.start(argv, qmp)
            client = spindle_qmp(qmp)
            if run_name == "first":
                ok(client, "blockdev-add", **top_options(top, writable=False))
            shown = named_nodes(client)
            assert "d0" in shown and shown["d0"]["backing_file_depth"] == 2
            assert set(implicit_by_file(client)) == {"mid.qcow2", "base.qcow2"}
            client.close()
        finally:
            backend.stop()
        qmp.unlink(missing_ok=True)
        assert "#block" not in state.read_text()


def test_with_the_state_file_an_active_commit_onto_a_header_layer_is_refused(tmp_path):
    """The export would move to a node whose name is generated: nothing a restart could find."""
    base, mid, top, reference = make_chain(tmp_path)
    qmp = tmp_path / "qmp.sock"
    backend = Backend(SPINDLE, tmp_path, "spindle")
    try:
        backend.start(["--qmp", str(qmp), "--state-file", str(tmp_path / "state.json")], qmp)
        client = spindle_qmp(qmp)
        ok(client, "blockdev-add", **top_options(top))
        reply = client.cmd_raw("block-commit", {"job-id": "c", "device": "d0"})
        assert "moves the export onto a node the state file cannot name" in reply["error"]["desc"], reply
        assert ok(client, "query-jobs") == []
        client.close()
    finally:
        backend.stop()


@pytest.mark.parametrize("how", ["base", "base-node"])
def test_stream_down_to_a_layer_of_the_header_chain(daemon, how):
    client, tmp = daemon
    base, mid, top, reference = make_chain(tmp)
    ok(client, "blockdev-add", **top_options(top))
    sock = export(client, tmp, "d0", writable=True)
    implicit = implicit_by_file(client)
    chosen = {"base": str(base)} if how == "base" else {"base-node": implicit["base.qcow2"]}
    ok(client, "block-stream", **{"job-id": "s", "device": "d0", **chosen})
    events_until_concluded(client, "s")
    # mid was pulled into top and dropped; base backs top, still the same node (as in QEMU).
    assert implicit_by_file(client) == {"base.qcow2": implicit["base.qcow2"]}
    assert named_nodes(client)["d0"]["backing_file_depth"] == 1
    assert img_info(top)["backing-filename"] == str(base)
    assert dump(sock, tmp, "after") == reference.read_bytes()
    img_check(top)
    compare(top, reference)


def test_intermediate_commit_by_file_names_drops_the_committed_layer(daemon):
    client, tmp = daemon
    base, mid, top, reference = make_chain(tmp)
    ok(client, "blockdev-add", **top_options(top))
    sock = export(client, tmp, "d0", writable=True)
    ok(client, "block-commit", **{"job-id": "c", "device": "d0", "top": str(mid), "base": str(base)})
    events_until_concluded(client, "c")
    assert set(implicit_by_file(client)) == {"base.qcow2"}
    assert named_nodes(client)["d0"]["backing_file_depth"] == 1
    assert img_info(top)["backing-filename"] == str(base)
    assert dump(sock, tmp, "after") == reference.read_bytes()
    for image in (top, base):
        img_check(image)
    compare(top, reference)


def test_active_commit_into_the_bottom_by_node_name_pivots_onto_it(daemon):
    client, tmp = daemon
    base, mid, top, reference = make_chain(tmp)
    ok(client, "blockdev-add", **top_options(top))
    sock = export(client, tmp, "d0", writable=True)
    bottom = implicit_by_file(client)["base.qcow2"]
    ok(client, "block-commit", **{"job-id": "c", "device": "e-d0", "base-node": bottom})
    wait_status(client, "c", "ready")
    ok(client, "block-job-complete", device="c")
    events_until_concluded(client, "c")
    assert ok(client, "query-block-exports")[0]["node-name"] == bottom
    assert list(named_nodes(client)) == [bottom]  # d0 and mid were dropped
    assert dump(sock, tmp, "after") == reference.read_bytes()
    img_check(base)
    compare(base, reference)

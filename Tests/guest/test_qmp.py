"""The QMP monitor end to end, without a guest: the qemu.qmp library (unchanged) for the
commands, raw socket JSON for the malformed cases."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from qemu.qmp.legacy import QEMUMonitorProtocol

from guestlib import Backend
from interactive import ok, spindle_qmp, wait_event

SPINDLE = os.environ.get("SPINDLE_BIN", "")
pytestmark = pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle")


@pytest.fixture
def daemon(tmp_path):
    qmp = tmp_path / "qmp.sock"
    backend = Backend(SPINDLE, tmp_path, "spindle")
    backend.start(["--qmp", str(qmp)], qmp)
    yield backend, qmp
    backend.stop()


class Raw:
    """A QMP client on a plain socket, for what qemu.qmp would refuse to send."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.buffer = b""
        self.greeting = self.read()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self) -> dict:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "monitor closed the connection"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def errors_then_sync(self, data: bytes) -> list[dict]:
        """Sends bad input then a marked query; returns every reply before the marked one
        (garbage may produce more than one error, as QEMU's lexer does)."""
        self.send(data)
        self.send(b'{"execute": "query-version", "id": "sync"}\n')
        replies = []
        while True:
            reply = self.read()
            if reply.get("id") == "sync":
                return replies
            if "event" not in reply:
                replies.append(reply)

    def call(self, message: dict | bytes) -> dict:
        self.send(message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n")
        while True:
            reply = self.read()
            if "event" not in reply:
                return reply


def test_qemu_qmp_library_drives_the_daemon(daemon, tmp_path):
    backend, path = daemon
    client = spindle_qmp(path)
    assert "package" in ok(client, "query-version")
    names = {c["name"] for c in ok(client, "query-commands")}
    assert {"blockdev-add", "block-export-add", "block-export-del", "block_resize", "block-export-revoke",
            "human-monitor-command", "query-block-exports", "query-named-block-nodes", "query-iothreads", "quit"} <= names
    ok(client, "blockdev-add", **{"driver": "null-co", "node-name": "n0", "size": 64 * 1024 * 1024})
    nodes = ok(client, "query-named-block-nodes")
    assert [(n["node-name"], n["drv"]) for n in nodes] == [("n0", "null-co")]
    sock = tmp_path / "e0.sock"
    ok(client, "block-export-add", **{"type": "vhost-user-blk", "id": "e0", "node-name": "n0",
                                       "addr": {"type": "unix", "path": str(sock)}, "writable": True})
    assert sock.exists()
    assert ok(client, "query-block-exports") == [{"type": "vhost-user-blk", "id": "e0", "node-name": "n0", "shutting-down": False, "x-memory-bytes": 0}]
    # A node in use cannot be deleted; the error says why.
    reply = client.cmd_raw("blockdev-del", {"node-name": "n0"})
    assert reply["error"]["class"] == "GenericError" and "n0" in reply["error"]["desc"]
    ok(client, "block_resize", **{"node-name": "n0", "size": 128 * 1024 * 1024})
    assert ok(client, "query-named-block-nodes")[0]["image"]["virtual-size"] == 128 * 1024 * 1024
    ok(client, "block-export-del", id="e0")
    assert wait_event(client, "BLOCK_EXPORT_DELETED")["data"] == {"id": "e0"}
    assert not sock.exists()
    ok(client, "blockdev-del", **{"node-name": "n0"})
    assert ok(client, "query-named-block-nodes") == []
    reply = client.cmd_raw("block-export-del", {"id": "e0"})
    assert "error" in reply


def test_events_reach_every_client_with_timestamps(daemon, tmp_path):
    _, path = daemon
    first, second = spindle_qmp(path), spindle_qmp(path)
    ok(first, "blockdev-add", **{"driver": "null-co", "node-name": "n0"})
    ok(first, "block-export-add", **{"type": "vhost-user-blk", "id": "e0", "node-name": "n0",
                                      "addr": {"type": "unix", "path": str(tmp_path / "e0.sock")}})
    ok(second, "block-export-revoke", id="e0")
    for client in (first, second):
        event = wait_event(client, "BLOCK_EXPORT_REVOKED")
        assert event["data"] == {"id": "e0"}
        assert event["timestamp"]["seconds"] > 1_600_000_000
    # drive_del as libvirt sends it, on an export that is already revoked: an HMP error text.
    text = ok(first, "human-monitor-command", **{"command-line": "drive_del e0"})
    assert text and "e0" in text


def test_malformed_input_gets_qemu_errors_and_hurts_no_one(daemon):
    backend, path = daemon
    bystander = spindle_qmp(path)
    raw = Raw(path)
    assert "QMP" in raw.greeting
    # Before negotiation.
    reply = raw.call({"execute": "query-version"})
    assert reply["error"]["class"] == "CommandNotFound" and "qmp_capabilities" in reply["error"]["desc"]
    assert "return" in raw.call({"execute": "qmp_capabilities"})
    # A message split across writes is one message.
    raw.send(b'{"execute": "query-')
    time.sleep(0.2)
    assert "return" in raw.call(b'version"}\n')
    cases = [
        (b"not json at all\n", "GenericError"),
        (b"[1, 2]\n", "GenericError"),
        (b'{"arguments": {}}\n', "GenericError"),
        (b'{"execute": "no-such-command"}\n', "CommandNotFound"),
        (b'{"execute": "block_resize", "arguments": {"node-name": "x"}}\n', "GenericError"),
        (b'{"execute": "block_resize", "arguments": {"node-name": "x", "size": "big"}}\n', "GenericError"),
        (b'{"execute": "blockdev-del", "arguments": {"node-name": 7}}\n', "GenericError"),
        (b'{"execute": "blockdev-add", "arguments": {"driver": "file", "node-name": "f"}}\n', "GenericError"),
    ]
    for data, error_class in cases:
        replies = raw.errors_then_sync(data)
        assert replies and all("error" in r for r in replies), (data, replies)
        assert replies[0]["error"]["class"] == error_class, (data, replies)
    # An oversized message: an error, and the client goes on working.
    replies = raw.errors_then_sync(b'{"execute": "query-version", "id": "' + b"x" * (2 << 20) + b'"}\n')
    assert replies and "error" in replies[0]
    assert "return" in raw.call({"execute": "query-version", "id": 5})
    # The other client and the daemon are unaffected.
    assert ok(bystander, "query-version")
    assert backend.alive()


def test_quit_stops_the_daemon_cleanly(daemon):
    backend, path = daemon
    client = spindle_qmp(path)
    client.cmd_raw("quit", None)
    deadline = time.monotonic() + 20
    while backend.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not backend.alive()
    assert backend.proc.returncode == 0
    assert not path.exists()


def test_iothread_objects_and_query_iothreads(daemon, tmp_path):
    _, path = daemon
    client = spindle_qmp(path)
    ok(client, "object-add", **{"qom-type": "iothread", "id": "iot9", "poll-max-ns": 0})
    ok(client, "blockdev-add", **{"driver": "null-co", "node-name": "n0"})
    ok(client, "block-export-add", **{"type": "vhost-user-blk", "id": "e0", "node-name": "n0", "iothread": "iot9",
                                       "addr": {"type": "unix", "path": str(tmp_path / "e0.sock")}})
    threads = {t["id"]: t for t in ok(client, "query-iothreads")}
    assert threads["iot9"]["thread-id"] > 0 and threads["iot9"]["poll-max-ns"] == 0
    # In use by an export: refused, with the reason.
    reply = client.cmd_raw("object-del", {"id": "iot9"})
    assert "e0" in reply["error"]["desc"]
    ok(client, "block-export-del", id="e0")
    ok(client, "object-del", id="iot9")
    assert "iot9" not in {t["id"] for t in ok(client, "query-iothreads")}


BENCH = Path(SPINDLE).with_name("spindle-bench") if SPINDLE else Path("spindle-bench")


@pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench beside spindle")
def test_queue_moves_between_iothreads_under_load(daemon, tmp_path):
    """x-queue-move while a frontend drives the queue: each move drains the queue on its old
    thread and restarts it on the new one; nothing is lost, nothing hangs."""
    _, path = daemon
    client = spindle_qmp(path)
    client.settimeout(30)
    for iot in ("iot0", "iot1"):
        ok(client, "object-add", **{"qom-type": "iothread", "id": iot})
    ok(client, "blockdev-add", **{"driver": "null-co", "node-name": "n0", "read-zeroes": True})
    sock = tmp_path / "e0.sock"
    ok(client, "block-export-add", **{"type": "vhost-user-blk", "id": "e0", "node-name": "n0", "iothread": "iot0",
                                       "addr": {"type": "unix", "path": str(sock)}, "writable": True})
    bench = subprocess.Popen([str(BENCH), "--socket", str(sock), "--queues", "1", "--cpus", "none", "--iodepth", "16",
                              "--bs", "4k", "--rw", "randrw", "--rwmixread", "50", "--runtime", "6", "--ramp", "0",
                              "--json-only"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        moves = 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            reply = client.cmd_raw("x-queue-move", {"id": "e0", "queue": 0, "iothread": ("iot1", "iot0")[moves % 2]})
            if "error" in reply:
                assert "not running" in reply["error"]["desc"], reply  # before the frontend started the ring
            else:
                moves += 1
            time.sleep(0.2)
        out, err = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
    assert bench.returncode == 0, err
    result = json.loads(out)
    assert result["errors"] == 0 and result["ios"] > 1000, result
    assert moves >= 10
    threads = {t["id"]: t["queues"] for t in ok(client, "query-iothreads")}
    assert sum(len(q) for q in threads.values()) <= 1


@pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench beside spindle")
def test_iothread_vq_mapping_places_each_queue(daemon, tmp_path):
    _, path = daemon
    client = spindle_qmp(path)
    for iot in ("iot0", "iot1"):
        ok(client, "object-add", **{"qom-type": "iothread", "id": iot})
    ok(client, "blockdev-add", **{"driver": "null-co", "node-name": "n0", "read-zeroes": True})
    sock = tmp_path / "e0.sock"
    ok(client, "block-export-add", **{"type": "vhost-user-blk", "id": "e0", "node-name": "n0", "num-queues": 3,
                                       "iothread-vq-mapping": [{"iothread": "iot0", "vqs": [0, 2]}, {"iothread": "iot1", "vqs": [1]}],
                                       "addr": {"type": "unix", "path": str(sock)}})
    bench = subprocess.Popen([str(BENCH), "--socket", str(sock), "--queues", "3", "--cpus", "none", "--iodepth", "4",
                              "--bs", "4k", "--rw", "randread", "--runtime", "3", "--ramp", "0", "--json-only"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        threads = {t["id"]: t["queues"] for t in ok(client, "query-iothreads")}
        out, err = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
    assert threads["iot0"] == ["e0/0", "e0/2"] and threads["iot1"] == ["e0/1"], threads
    assert bench.returncode == 0 and json.loads(out)["errors"] == 0, err


@pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench beside spindle")
def test_export_memory_follows_the_frontend(daemon, tmp_path):
    """x-memory-bytes: 0 with no frontend, the queues' request bookkeeping while one is
    connected (one slot per ring entry, about 1 KiB each: well under the 4 MB a queue cost
    when every slot held room for the longest chain), 0 again once it has gone."""
    _, path = daemon
    client = spindle_qmp(path)
    ok(client, "blockdev-add", **{"driver": "null-co", "node-name": "n0", "read-zeroes": True})
    sock = tmp_path / "e0.sock"
    ok(client, "block-export-add", **{"type": "vhost-user-blk", "id": "e0", "node-name": "n0", "num-queues": 2,
                                       "addr": {"type": "unix", "path": str(sock)}})
    memory = lambda: ok(client, "query-block-exports")[0]["x-memory-bytes"]
    assert memory() == 0
    bench = subprocess.Popen([str(BENCH), "--socket", str(sock), "--queues", "2", "--cpus", "none", "--iodepth", "4",
                              "--queue-size", "128", "--bs", "4k", "--rw", "randread", "--runtime", "3", "--ramp", "0",
                              "--json-only"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        connected = 0
        deadline = time.monotonic() + 2.5
        while connected == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
            connected = memory()
        time.sleep(0.3)  # both queues started
        connected = memory()
        out, err = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
    assert bench.returncode == 0 and json.loads(out)["errors"] == 0, err
    assert 2 * 128 * 512 <= connected <= 2 * 128 * 2048, connected
    deadline = time.monotonic() + 5
    while memory() != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert memory() == 0

"""Part 8 with a real guest: a qcow2 overlay over a qcow2 base (made by qemu-img, the base
holding a pattern), exported with two queues on two IOThreads to a 2-vCPU guest. In the
guest: fio randwrite with crc32c verify at 4 KiB and 64 KiB; then fio while
blockdev-snapshot-sync makes a new overlay; then fio while block-stream pulls the chain into
that overlay. Each step is followed by a verify pass over everything written so far and a
`qemu-img check`: between steps with -U on the quiesced image (the guest idle, waiting on its
mailbox; leaks allowed there, as the open image keeps clusters reserved for allocation),
and a strict one (no -U, no leak) after the guest and the daemon stopped.

The host tells the guest a step is done through the mailbox block (guest-lib.sh), written
through a second export of the same node with spindle-bench --script.

block-commit of the active layer with pivot, under fio verify in a guest with two queues on
two IOThreads, followed by a verify pass on the base alone and `qemu-img check`, is the
issue's last step: test_guest_qcow2_commit.py (its own guest, so each test stays within
TCG's patience on a loaded machine)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from guestlib import Backend
from interactive import GuestSession, ok, spindle_qmp, wait_event

MiB = 1024 * 1024
SIZE = 64 * MiB
MAILBOX_OFFSET = 60 * MiB  # guest-lib.sh's MAILBOX_BLOCK (15360) x 4 KiB
SPINDLE = os.environ.get("SPINDLE_BIN", "")
BENCH = Path(SPINDLE).with_name("spindle-bench") if SPINDLE else Path("/nonexistent")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle"),
              pytest.mark.skipif(not BENCH.exists(), reason="needs spindle-bench next to spindle"),
              pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs")]

PATTERN = 0x5A
COMMON = "--ioengine=libaio --direct=1 --iodepth=8 --numjobs=2 --group_reporting --verify=crc32c"
# Regions (per job: 2 jobs, offset_increment = size): what each step writes, kept apart so
# that every region can be verified again after every later step.
REGIONS = {
    "write-4k": f"--rw=randwrite --bs=4k --offset=0 --size=8M --offset_increment=8M --randseed=41 {COMMON}",
    "write-64k": f"--rw=randwrite --bs=64k --offset=16M --size=8M --offset_increment=8M --randseed=42 {COMMON}",
    "during-snapshot": f"--rw=randwrite --bs=64k --offset=32M --size=6M --offset_increment=6M --randseed=43 {COMMON}",
    "during-stream": f"--rw=randwrite --bs=4k --offset=44M --size=6M --offset_increment=6M --randseed=44 {COMMON}",
}
UNTOUCHED = (56 * MiB, 4 * MiB)  # only the base's pattern, to the end of the test
MAILBOX_WORDS = {"snapshot": "a" * 32, "stream": "b" * 32, "checked": "c" * 32}
MAILBOX_BYTES = {"snapshot": 0x61, "stream": 0x62, "checked": 0x63}


def fio_write(name: str) -> str:
    return f"run_fio {name} {REGIONS[name]} --do_verify=1"


def fio_verify(names: list[str], label: str) -> str:
    return "\n".join(f"run_fio verify-{name}-{label} {REGIONS[name]} --verify_only=1" for name in names)


def guest_script() -> str:
    pattern_sha = hashlib.sha256(bytes([PATTERN]) * UNTOUCHED[1]).hexdigest()
    return f"""
wait_for_disk 120 || exit 1
check two-hw-queues test "$(ls /sys/block/vda/mq | wc -l)" -eq 2
check_sha256 base-pattern {UNTOUCHED[0]} {UNTOUCHED[1]} {pattern_sha}
{fio_write("write-4k")}
{fio_write("write-64k")}
step first-writes-done
wait_mailbox {MAILBOX_WORDS["checked"]} 600 || exit 1
step fio-during-snapshot
{fio_write("during-snapshot")}
wait_mailbox {MAILBOX_WORDS["snapshot"]} 600 || exit 1
{fio_verify(["write-4k", "write-64k", "during-snapshot"], "after-snapshot")}
step verified-after-snapshot
wait_mailbox {MAILBOX_WORDS["checked"]} 600 || exit 1
step fio-during-stream
{fio_write("during-stream")}
wait_mailbox {MAILBOX_WORDS["stream"]} 900 || exit 1
{fio_verify(["write-4k", "write-64k", "during-snapshot", "during-stream"], "after-stream")}
check_sha256 base-pattern-after-stream {UNTOUCHED[0]} {UNTOUCHED[1]} {pattern_sha}
step verified-after-stream
"""


def tell_guest(mailbox_sock: Path, word: str) -> None:
    """Writes the mailbox block through the second export (the guest reads it O_DIRECT)."""
    script = mailbox_sock.with_suffix(f".{word}.script")
    script.write_text(f"write {MAILBOX_OFFSET} 4096 {MAILBOX_BYTES[word]}\nflush\n")
    result = subprocess.run([str(BENCH), "--socket", str(mailbox_sock), "--script", str(script)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def check_image(path: Path, *, live: bool) -> None:
    """qemu-img check: live (-U, on the quiesced image) no corruption, leaks allowed (exit 3:
    the open image's clusters reserved for allocation); else clean."""
    argv = ["qemu-img", "check"] + (["-U"] if live else []) + [str(path)]
    result = subprocess.run(argv, capture_output=True, text=True)
    allowed = (0, 3) if live else (0,)
    assert result.returncode in allowed, f"{argv}: exit {result.returncode}\n{result.stdout}{result.stderr}"


def test_qcow2_overlay_snapshot_and_stream_under_fio_verify(tmp_path, monkeypatch):
    base = tmp_path / "base.qcow2"
    top = tmp_path / "top.qcow2"
    snap = tmp_path / "snap.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), str(SIZE)], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P {PATTERN} 0 {SIZE}", str(base)], check=True,
                   capture_output=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(top), str(SIZE)],
                   check=True)
    qmp = tmp_path / "spindle-qmp.sock"
    sock = tmp_path / "disk.sock"
    mailbox = tmp_path / "mailbox.sock"
    backend = Backend(SPINDLE, tmp_path, "spindle")
    backend.start(["--qmp", str(qmp)], qmp)
    monkeypatch.setenv("VU_NUM_QUEUES", "2")
    guest = None
    try:
        spindle = spindle_qmp(qmp)
        for iothread in ("iot0", "iot1"):
            ok(spindle, "object-add", **{"qom-type": "iothread", "id": iothread})
        ok(spindle, "blockdev-add", driver="qcow2", **{"node-name": "top"}, file={"driver": "file", "filename": str(top)})
        ok(spindle, "block-export-add", type="vhost-user-blk", id="disk", **{"node-name": "top", "num-queues": 2},
           **{"iothread-vq-mapping": [{"iothread": "iot0", "vqs": [0]}, {"iothread": "iot1", "vqs": [1]}]},
           addr={"type": "unix", "path": str(sock)}, writable=True)
        ok(spindle, "block-export-add", type="vhost-user-blk", id="mailbox", **{"node-name": "top"},
           addr={"type": "unix", "path": str(mailbox)}, writable=True)
        guest = GuestSession(tmp_path, guest_script(), sock=sock, extra_qemu=["-smp", "2"])
        guest.wait_step("first-writes-done", timeout=1200)
        check_image(top, live=True)
        tell_guest(mailbox, "checked")

        # fio runs while the snapshot drains the export and switches it to the new overlay.
        guest.wait_step("fio-during-snapshot", timeout=300)
        ok(spindle, "blockdev-snapshot-sync", **{"node-name": "top", "snapshot-file": str(snap),
                                                 "snapshot-node-name": "snap"})
        assert {e["node-name"] for e in ok(spindle, "query-block-exports")} == {"snap"}
        tell_guest(mailbox, "snapshot")
        guest.wait_step("verified-after-snapshot", timeout=1200)
        check_image(snap, live=True)
        check_image(top, live=True)
        tell_guest(mailbox, "checked")

        # fio runs while block-stream pulls base and top into the new overlay (a speed limit
        # keeps the job going for seconds of guest writes).
        guest.wait_step("fio-during-stream", timeout=300)
        ok(spindle, "block-stream", **{"job-id": "pull", "device": "snap", "speed": 8 * MiB})
        completed = wait_event(spindle, "BLOCK_JOB_COMPLETED", timeout=900)
        assert completed["data"]["type"] == "stream" and "error" not in completed["data"], completed
        [node] = [n for n in ok(spindle, "query-named-block-nodes") if n["node-name"] == "snap"]
        assert node["backing_file_depth"] == 0, node
        tell_guest(mailbox, "stream")
        guest.wait_step("verified-after-stream", timeout=1200)
        check_image(snap, live=True)

        run = guest.finish(timeout=600)
        run.assert_passed("disk-present", "two-hw-queues", "base-pattern", "write-4k", "write-64k", "during-snapshot",
                          "during-stream", "base-pattern-after-stream",
                          *[f"verify-{name}-after-snapshot" for name in ("write-4k", "write-64k", "during-snapshot")],
                          *[f"verify-{name}-after-stream" for name in REGIONS])
        assert backend.alive()
        spindle.close()
    finally:
        if guest:
            guest.close()
        backend.stop()
    # After the guest and the daemon stopped: strict checks, and the chain qemu-img sees.
    for image in (snap, top, base):
        check_image(image, live=False)
    info = subprocess.run(["qemu-img", "info", "--output=json", str(snap)], capture_output=True, text=True, check=True)
    assert "backing-filename" not in info.stdout

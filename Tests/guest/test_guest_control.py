"""Part 2 with a real guest: hotplug, guest-visible resize and drive_del revocation, driven
through spindle's QMP monitor and QEMU's with the qemu.qmp library."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

import guestlib
from guestlib import Backend
from interactive import GuestSession, ok, spindle_qmp, wait_event

MiB = 1024 * 1024
SPINDLE = os.environ.get("SPINDLE_BIN", "")


def _has_monitor() -> bool:
    if "spindle" not in Path(SPINDLE).name:
        return False
    help_text = subprocess.run([SPINDLE, "--help"], capture_output=True, text=True).stdout
    return "--qmp <socket-path>" in help_text


pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not _has_monitor(), reason="needs SPINDLE_BIN pointing at a spindle with the QMP monitor")]


def sparse_image(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def start_spindle(tmp: Path, *args: str) -> tuple[Backend, Path]:
    qmp = tmp / "spindle-qmp.sock"
    backend = Backend(SPINDLE, tmp, "spindle")
    backend.start(["--qmp", str(qmp), *args], qmp)
    return backend, qmp


def export_arg(export_id: str, node: str, sock: Path, extra: str = "") -> list[str]:
    return ["--export", f"type=vhost-user-blk,id={export_id},node-name={node},addr.type=unix,"
                        f"addr.path={sock},writable=on{extra}"]


def test_hotplug_add_use_unplug_delete(tmp_path):
    image = sparse_image(tmp_path / "hot.img", 64 * MiB)
    sock = tmp_path / "hot.sock"
    backend, qmp_path = start_spindle(tmp_path)
    guest = None
    try:
        spindle = spindle_qmp(qmp_path)
        guest = GuestSession(tmp_path, """
step booted
wait_for_disk 180 || exit 1
run_fio hotplug-verify --rw=randwrite --bs=4k --size=16M --iodepth=8 --ioengine=libaio --direct=1 \
    --verify=crc32c --do_verify=1
step fio-done
i=0; while [ -b /dev/vda ] && [ $i -lt 1800 ]; do sleep 0.1; i=$((i + 1)); done
check disk-removed test ! -b /dev/vda
step removed
sleep 30   # the host deletes the export meanwhile; the guest must stay up
""", sock=None, extra_qemu=["-device", "pcie-root-port,id=rp1,chassis=1,slot=1"])
        guest.wait_step("booted")
        ok(spindle, "blockdev-add", **{"driver": "file", "node-name": "hot0", "filename": str(image)})
        ok(spindle, "block-export-add", **{"type": "vhost-user-blk", "id": "hotexp", "node-name": "hot0",
                                            "addr": {"type": "unix", "path": str(sock)}, "writable": True})
        assert [e["id"] for e in ok(spindle, "query-block-exports")] == ["hotexp"]
        qemu = guest.qemu()
        ok(qemu, "chardev-add", id="hotchr",
           backend={"type": "socket", "data": {"addr": {"type": "unix", "data": {"path": str(sock)}}, "server": False}})
        ok(qemu, "device_add", driver="vhost-user-blk-pci", id="hotdisk", chardev="hotchr", bus="rp1")
        guest.wait_step("fio-done")
        ok(qemu, "device_del", id="hotdisk")
        guest.wait_step("removed")
        # QEMU keeps the chardev (and so the connection) until it is removed too.
        deadline = time.monotonic() + 30
        while "return" not in qemu.cmd_raw("chardev-remove", {"id": "hotchr"}):
            assert time.monotonic() < deadline, "QEMU did not release the chardev"
            time.sleep(0.5)
        # The export outlived the device; once the frontend is gone, a safe delete works.
        deadline = time.monotonic() + 30
        while True:
            reply = spindle.cmd_raw("block-export-del", {"id": "hotexp"})
            if "return" in reply:
                break
            assert "in use" in reply["error"]["desc"], reply
            assert time.monotonic() < deadline, f"export still in use: {reply}"
            time.sleep(0.5)
        wait_event(spindle, "BLOCK_EXPORT_DELETED")
        ok(spindle, "blockdev-del", **{"node-name": "hot0"})
        assert not sock.exists()
        run = guest.finish()
        run.assert_passed("disk-present", "hotplug-verify", "disk-removed")
        assert backend.alive()
    finally:
        if guest:
            guest.close()
        backend.stop()


def test_resize_is_seen_by_the_guest_during_fio_verify(tmp_path):
    image = sparse_image(tmp_path / "grow.img", 64 * MiB)
    sock = tmp_path / "grow.sock"
    backend, qmp_path = start_spindle(tmp_path, "--blockdev", f"driver=file,node-name=n0,filename={image}",
                                      *export_arg("exp0", "n0", sock))
    guest = None
    try:
        spindle = spindle_qmp(qmp_path)
        guest = GuestSession(tmp_path, """
wait_for_disk 60 || exit 1
info size-before "$(cat /sys/block/vda/size)"
fio --filename=/dev/vda --name=resize-verify --rw=randwrite --bs=4k --size=32M --iodepth=8 \
    --ioengine=libaio --direct=1 --verify=crc32c --do_verify=1 --loops=4 > /tmp/fio-resize.log 2>&1 &
FIO=$!
step fio-started
before=$(cat /sys/block/vda/size); i=0
while [ "$(cat /sys/block/vda/size)" = "$before" ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
info size-after "$(cat /sys/block/vda/size)"
wait $FIO; rc=$?
if [ $rc -eq 0 ] && ! grep -q 'err= *[1-9]' /tmp/fio-resize.log; then result resize-verify PASS
else sed 's/^/fio: /' /tmp/fio-resize.log; result resize-verify FAIL "rc=$rc"; fi
# The new space (past the old 64 MiB end) is writable and reads back.
printf 'grown-space-marker' | dd of=/dev/vda bs=4096 seek=$((100 * 256)) conv=sync,fsync 2>/dev/null
blockdev --flushbufs /dev/vda
check new-space-rw sh -c 'dd if=/dev/vda bs=4096 skip=$((100 * 256)) count=1 2>/dev/null | grep -q grown-space-marker'
""", sock=sock)
        guest.wait_step("fio-started")
        reply = ok(spindle, "block_resize", **{"node-name": "n0", "size": 128 * MiB})
        run = guest.finish()
        run.assert_passed("disk-present", "resize-verify", "new-space-rw")
        assert run.infos["size-before"] == str(64 * MiB // 512)
        assert run.infos["size-after"] == str(128 * MiB // 512), run.describe()
        assert image.stat().st_size == 128 * MiB
        with open(image, "rb") as f:
            f.seek(100 * MiB)
            assert f.read(18) == b"grown-space-marker"
        assert isinstance(reply, dict)
    finally:
        if guest:
            guest.close()
        backend.stop()


def test_drive_del_revokes_while_the_guest_writes(tmp_path):
    disk_a = sparse_image(tmp_path / "a.img", 64 * MiB)
    disk_b = sparse_image(tmp_path / "b.img", 64 * MiB)
    sock_a, sock_b = tmp_path / "a.sock", tmp_path / "b.sock"
    backend, qmp_path = start_spindle(
        tmp_path,
        "--blockdev", f"driver=file,node-name=na,filename={disk_a}",
        "--blockdev", f"driver=file,node-name=nb,filename={disk_b}",
        *export_arg("expa", "na", sock_a, ",serial=disk-a"),
        *export_arg("expb", "nb", sock_b, ",serial=disk-b"))
    guest = None
    try:
        spindle = spindle_qmp(qmp_path)
        guest = GuestSession(tmp_path, """
wait_for_disk 60 || exit 1
i=0; while [ ! -b /dev/vdb ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
for d in vda vdb; do [ "$(cat /sys/block/$d/serial)" = disk-a ] && A=/dev/$d; [ "$(cat /sys/block/$d/serial)" = disk-b ] && B=/dev/$d; done
info disk-a "$A"; info disk-b "$B"
n=0
while [ $n -lt 3000 ]; do
    printf 'block-%d-' $n | dd of="$A" bs=4096 seek=$n conv=sync,fsync 2>/dev/null || break
    echo "GUEST-INFO wrote $n"
    [ $n -eq 20 ] && step writing
    n=$((n + 1))
done
step write-failed
info last-written $((n - 1))
check_fails read-after-revoke dd if="$A" of=/dev/null bs=4096 count=1 skip=7 iflag=direct
printf 'other-disk-ok' | dd of="$B" bs=4096 seek=3 conv=sync,fsync 2>/dev/null
blockdev --flushbufs "$B"
check other-disk-works sh -c "dd if=$B bs=4096 skip=3 count=1 2>/dev/null | grep -q other-disk-ok"
""", sock=sock_a, extra_qemu=["-chardev", f"socket,id=vu1,path={sock_b}",
                              "-device", "vhost-user-blk-pci,id=vublk1,chardev=vu1"])
        guest.wait_step("writing")
        assert ok(spindle, "human-monitor-command", **{"command-line": "drive_del expa"}) == ""
        event = wait_event(spindle, "BLOCK_EXPORT_REVOKED")
        assert event["data"]["id"] == "expa"
        # The image is closed and unlocked at once: another process may write it.
        io = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 60M 4k", str(disk_a)],
                            capture_output=True, text=True, timeout=60)
        assert io.returncode == 0 and "lock" not in (io.stdout + io.stderr).lower(), io.stdout + io.stderr
        # And the node name is free again.
        ok(spindle, "blockdev-add", **{"driver": "null-co", "node-name": "na"})
        run = guest.finish()
        run.assert_passed("disk-present", "read-after-revoke", "other-disk-works")
        last = int(run.infos["last-written"])
        assert last >= 20
        with open(disk_a, "rb") as f:
            for n in range(last + 1):
                f.seek(n * 4096)
                assert f.read(16).startswith(f"block-{n}-".encode()), f"write {n} the guest saw complete is missing"
        assert [e["id"] for e in ok(spindle, "query-block-exports")] == ["expa", "expb"]
        assert backend.alive()
    finally:
        if guest:
            guest.close()
        backend.stop()

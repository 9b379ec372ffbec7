"""Real-guest tests: a Linux guest under QEMU (TCG) drives a vhost-user-blk
export of the backend under test.  Each test boots one guest (the read-only
test boots two: one per way of making the export read-only) and combines
several checks in its guest script.  The guest-side helpers (check, run_fio,
region_is_zero, ...) live in guest-lib.sh.

Tests assert behaviour (data, error codes), never timing.
"""

from __future__ import annotations

import hashlib

import pytest

from conftest import pattern_bytes
from guestlib import file_export_args, null_export_args

MiB = 1024 * 1024
IMAGE_SIZE = 128 * MiB
IMAGE_SECTORS = IMAGE_SIZE // 512

pytestmark = pytest.mark.slow

FIO_VERIFY = ("--ioengine=libaio --direct=1 --iodepth=16 --rw=randwrite "
              "--verify=crc32c --do_verify=1 --verify_fatal=1")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_sha(guest_env, img, offset: int, length: int) -> str:
    return sha(guest_env.read_image(img, offset, length))


# ---------------------------------------------------------------------------

def test_fio_randwrite_verify(guest_env):
    """fio randwrite + crc32c verify, bs=4k and bs=64k, O_DIRECT file export."""
    img = guest_env.make_image(IMAGE_SIZE)
    backend = guest_env.start_backend(
        file_export_args(img, guest_env.sock, direct=True))
    run = guest_env.run_guest(f"""
wait_for_disk || exit 1
check_size size {IMAGE_SECTORS}
run_fio fio-4k  {FIO_VERIFY} --bs=4k  --offset=0   --size=32M
run_fio fio-64k {FIO_VERIFY} --bs=64k --offset=64M --size=48M
""")
    run.assert_passed("disk-present", "size", "fio-4k", "fio-64k")
    assert backend.alive(), "backend exited after the guest disconnected"
    # what fio wrote really landed in the image
    assert guest_env.read_image(img, 0, MiB) != bytes(MiB)
    assert guest_env.read_image(img, 64 * MiB, MiB) != bytes(MiB)


# ---------------------------------------------------------------------------

MARKER_OFF = 7 * MiB          # written by the guest, buffered + fsync
DIRECT_OFF = 9 * MiB          # written by the guest, O_DIRECT, 64 KiB of 'D'
HOSTDATA_OFF = 20 * MiB       # written by the host before the guest starts
HOSTDATA_LEN = 1 * MiB


def test_data_roundtrip_host_guest(guest_env):
    """Guest writes show up in the image file; host-written data reads back in the guest."""
    hostdata = pattern_bytes(1, HOSTDATA_LEN)
    img = guest_env.make_image(IMAGE_SIZE, fill={HOSTDATA_OFF: hostdata})
    marker = "SPINDLE-GUEST-MARKER-6b1d0c5e"
    backend = guest_env.start_backend(file_export_args(img, guest_env.sock))
    run = guest_env.run_guest(f"""
wait_for_disk || exit 1
check_sha256 host-data {HOSTDATA_OFF} {HOSTDATA_LEN} {sha(hostdata)}
printf '%s' '{marker}' > /tmp/marker
check marker-write dd if=/tmp/marker of=$DEV bs=1 seek={MARKER_OFF} conv=notrunc,fsync
drop_cache
dd if=$DEV bs=1 skip={MARKER_OFF} count={len(marker)} 2>/dev/null > /tmp/marker.back
check marker-readback cmp /tmp/marker /tmp/marker.back
dd if=/dev/zero bs=65536 count=1 2>/dev/null | tr '\\000' 'D' > /tmp/d64k
check direct-write dd if=/tmp/d64k of=$DEV bs=65536 seek={DIRECT_OFF // 65536} oflag=direct conv=notrunc
check_sha256 direct-readback {DIRECT_OFF} 65536 {sha(b"D" * 65536)}
""")
    run.assert_passed("host-data", "marker-write", "marker-readback",
                      "direct-write", "direct-readback")
    assert backend.alive(), "backend exited after the guest disconnected"
    guest_env.stop_all()
    around = guest_env.read_image(img, MARKER_OFF - 4096, 8192)
    assert around[4096:4096 + len(marker)] == marker.encode()
    assert around[:4096] == bytes(4096), "bytes before the marker changed"
    assert around[4096 + len(marker):] == bytes(4096 - len(marker)), \
        "bytes after the marker changed"
    assert guest_env.read_image(img, DIRECT_OFF, 65536) == b"D" * 65536
    assert guest_env.read_image(img, HOSTDATA_OFF, HOSTDATA_LEN) == hostdata


# ---------------------------------------------------------------------------

DISCARD_OFF = 32 * MiB        # blkdiscard
WZ_OFF = 34 * MiB             # blkdiscard -z (WRITE_ZEROES)
RANGE_LEN = 2 * MiB
GUARD_OFF = 36 * MiB          # must stay untouched
GUARD_LEN = 1 * MiB


def test_discard_and_write_zeroes(guest_env):
    """blkdiscard and blkdiscard -z on non-zero data read back as zeroes, in the guest and on the host."""
    fill = pattern_bytes(2, 2 * RANGE_LEN + GUARD_LEN)
    img = guest_env.make_image(IMAGE_SIZE, fill={DISCARD_OFF: fill})
    guard = fill[2 * RANGE_LEN:]
    # qsd's file driver ignores discard requests unless discard=unmap is
    # given (its default is discard=ignore); Spindle accepts the same option.
    backend = guest_env.start_backend(
        file_export_args(img, guest_env.sock, extra_node_opts="discard=unmap"))
    run = guest_env.run_guest(f"""
wait_for_disk || exit 1
check_sha256 prefilled {DISCARD_OFF} {len(fill)} {sha(fill)}
check discard blkdiscard -v -o {DISCARD_OFF} -l {RANGE_LEN} $DEV
check_zero discard-reads-zero {DISCARD_OFF} {RANGE_LEN}
check write-zeroes blkdiscard -v -z -o {WZ_OFF} -l {RANGE_LEN} $DEV
check_zero write-zeroes-reads-zero {WZ_OFF} {RANGE_LEN}
check_sha256 guard-intact {GUARD_OFF} {GUARD_LEN} {sha(guard)}
""")
    run.assert_passed("prefilled", "discard", "discard-reads-zero",
                      "write-zeroes", "write-zeroes-reads-zero", "guard-intact")
    assert backend.alive(), "backend exited after the guest disconnected"
    guest_env.stop_all()
    assert guest_env.read_image(img, DISCARD_OFF, RANGE_LEN) == bytes(RANGE_LEN)
    assert guest_env.read_image(img, WZ_OFF, RANGE_LEN) == bytes(RANGE_LEN)
    assert guest_env.read_image(img, GUARD_OFF, GUARD_LEN) == guard


# ---------------------------------------------------------------------------

RO_DATA_OFF = 4 * MiB
RO_DATA_LEN = 1 * MiB


@pytest.mark.parametrize("how", ["export-readonly", "node-readonly"])
def test_readonly_export(guest_env, how):
    """Read-only export: known data reads back; writes, write-zeroes and discards fail and change nothing."""
    data = pattern_bytes(3, RO_DATA_LEN)
    img = guest_env.make_image(IMAGE_SIZE, fill={RO_DATA_OFF: data})
    before = image_sha(guest_env, img, 0, IMAGE_SIZE)
    # export-readonly: writable omitted on the export, node opened rw
    # node-readonly:   node read-only=on as well (writable=on would be refused)
    backend = guest_env.start_backend(file_export_args(
        img, guest_env.sock, writable=False,
        node_read_only=(how == "node-readonly")))
    run = guest_env.run_guest(f"""
wait_for_disk || exit 1
check_eq disk-ro "$(cat /sys/block/$DISK/ro)" 1
check_sha256 read-data {RO_DATA_OFF} {RO_DATA_LEN} {sha(data)}
run_fio fio-read --ioengine=libaio --direct=1 --iodepth=16 --rw=randread --bs=4k --size=16M --readonly
dd if=/dev/zero bs=4096 count=1 2>/dev/null | tr '\\000' 'W' > /tmp/w4k
check_fails dd-direct-write-fails dd if=/tmp/w4k of=$DEV bs=4096 seek={RO_DATA_OFF // 4096} oflag=direct conv=notrunc
check_fails dd-buffered-write-fails dd if=/tmp/w4k of=$DEV bs=4096 seek={RO_DATA_OFF // 4096} conv=notrunc,fsync
run_fio_expect_fail fio-write-fails --ioengine=libaio --direct=1 --iodepth=16 --rw=randwrite --bs=4k --size=4M
check_fails discard-fails blkdiscard -o {RO_DATA_OFF} -l {RO_DATA_LEN} $DEV
check_fails write-zeroes-fails blkdiscard -z -o {RO_DATA_OFF} -l {RO_DATA_LEN} $DEV
check_sha256 data-unchanged {RO_DATA_OFF} {RO_DATA_LEN} {sha(data)}
""")
    run.assert_passed("disk-ro", "read-data", "fio-read", "dd-direct-write-fails",
                      "dd-buffered-write-fails", "fio-write-fails",
                      "discard-fails", "write-zeroes-fails", "data-unchanged")
    assert backend.alive(), "backend exited after the guest disconnected"
    guest_env.stop_all()
    assert image_sha(guest_env, img, 0, IMAGE_SIZE) == before, \
        "the image changed through a read-only export"


# ---------------------------------------------------------------------------

NULL_SIZE = 64 * MiB


def test_null_co_export(guest_env):
    """null-co,read-zeroes=on: reads return zeroes, writes complete, data is not kept."""
    backend = guest_env.start_backend(null_export_args(guest_env.sock, size=NULL_SIZE))
    run = guest_env.run_guest(f"""
wait_for_disk || exit 1
check_size size {NULL_SIZE // 512}
run_fio fio-randread --ioengine=libaio --direct=1 --iodepth=16 --rw=randread --bs=4k --size=32M
check_zero reads-zero 0 {NULL_SIZE}
run_fio fio-randwrite --ioengine=libaio --direct=1 --iodepth=16 --rw=randwrite --bs=64k --size=32M
dd if=/dev/zero bs=4096 count=16 2>/dev/null | tr '\\000' 'N' > /tmp/n64k
check dd-write dd if=/tmp/n64k of=$DEV bs=4096 seek=256 oflag=direct conv=notrunc
check_zero still-zero-after-writes 0 {NULL_SIZE}
""")
    run.assert_passed("size", "fio-randread", "reads-zero", "fio-randwrite",
                      "dd-write", "still-zero-after-writes")
    assert backend.alive(), "backend exited after the guest disconnected"

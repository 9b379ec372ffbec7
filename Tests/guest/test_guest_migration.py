"""Issue 13, part 7: live migration of a guest whose disk Spindle serves, with the image handed
from one daemon to the other (qemu-configs/migrate.sh: pause-before-switchover, inactivate on
A, activate on B, migrate-continue).

Two guests' lives (three boots in all):
- fio randwrite with crc32c verify (direct, iodepth 16) runs while the guest is migrated:
  a migration cancelled halfway, one cancelled after the image was handed over, one that
  completes (A -> B), and one back (B -> A). fio never fails, the guest logs no I/O error,
  the config space the guest sees never changes, and each destination's first
  SET_VRING_BASE is the source's last GET_VRING_BASE answer.
- the dirty-log proof: the guest fills its page cache from the disk (the device writes guest
  pages, which only the vhost dirty log reports) after QEMU has sent every page once, and
  re-reads it on B from the cache. With A's export x-dirty-log=unmarked (features offered,
  nothing marked) the cached data on B is stale: that run must fail.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

import guestlib
from conftest import pattern_bytes
from migrationdiag import HEARTBEAT_SH, classify, guest_crash, nothing_pending_at_device, stall_report
from migrationlib import (GET_BASE_RE, SET_BASE_RE, MigrationRig, crawl_after_first_pass, first_per_queue,
                          last_per_queue, vring_bases, wait_until, write_mailbox)

MiB = 1024 * 1024
SPINDLE = os.environ.get("SPINDLE_BIN", "")
# bytes/s. The first pass over ~200 MiB of guest RAM takes ~6 s; with a 1 ms downtime limit
# QEMU then converges as soon as one pass ends with nothing dirty.
FIRST_PASS = ["--max-bandwidth", str(32 * MiB), "--downtime-limit", "1"]
# From the end of the first pass on, where the migration must keep iterating: each pass then
# takes long enough (>= 16 ms a page) that some guest write always lands in it.
CRAWL_BANDWIDTH = 256 * 1024
# Converge after three passes: every further pass is another chance for the TCG flaw above.
FINISH = ["--finish-after-passes", "3"]
# The way back needs no second multi-pass run (step 3 is that test): copy fast, converge at
# once. In one CI run on a loaded machine the guest made no request at all after a ten-pass
# return to A (unexplained; see the part 7 note), as a guest once panicked after 46 passes.
RETURN = ["--max-bandwidth", str(1024 * MiB), "--downtime-limit", "1000"]
# SPINDLE_MIGRATION_SLOW_RETURN=1: the way back iterates like step 3 (first pass at 32 MiB/s,
# converge after three passes), as it did when the hang on A was seen; for reproducing it.
if os.environ.get("SPINDLE_MIGRATION_SLOW_RETURN") == "1":
    RETURN = FIRST_PASS + FINISH
# QEMU 7.2's TCG loses guest CPU writes during a migration, probably so: after a dirty-bitmap sync clears a
# page's bit, a vCPU keeps writing it through the TLB entry it already had (no trap, no new
# bit) until its TLB is flushed. Seen here with no vhost-user device at all: a guest writing
# 1 MiB per write() into tmpfs crashes on the destination. pti=on makes every syscall and
# context switch reload CR3, which flushes QEMU's TLB, so only a write in progress at the
# sync can be lost; the guest scripts write in small pieces.
MIGRATION_APPEND = guestlib.KERNEL_APPEND + " pti=on"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle")]

FIO_SCRIPT = HEARTBEAT_SH + """
# Kernel errors and warnings on the console too (init shows only emerg/alert/crit): a guest
# kernel damaged by a migration often says only "BUG: scheduling while atomic" (KERN_ERR)
# and then hangs; at the default level its serial log stays empty.
echo 5 > /proc/sys/kernel/printk
step booted
wait_for_disk 120 || exit 1
heartbeat &
cfg_before=$(disk_config); info config-before "$cfg_before"
runs=0; failed=0
step fio-started
# Back-to-back fio jobs, each with its own seed, until the host says stop (the mailbox is
# read between jobs); each job verifies what it wrote.
while [ "$(mailbox)" != stop ]; do
    runs=$((runs + 1))
    fio --filename=/dev/vda --name=migrate-verify --rw=randwrite --bs=4k --size=16M --iodepth=16 \\
        --ioengine=libaio --direct=1 --verify=crc32c --do_verify=1 --randseed=$runs > /tmp/fio.log 2>&1
    rc=$?
    if [ $rc -ne 0 ] || grep -q 'err= *[1-9]' /tmp/fio.log; then
        failed=$((failed + 1)); sed "s/^/fio run $runs: /" /tmp/fio.log
        [ $rc -gt 128 ] && echo "GUEST-INFO fio-killed $runs signal $((rc - 128))"
    fi
    echo "GUEST-INFO fio-run $runs"
done
info fio-runs "$runs"
check_eq fio-verify "$failed" 0
check no-io-errors sh -c '! dmesg | grep -qiE "I/O error|blk_update_request|is not a head"'
check_eq config-same "$(disk_config)" "$cfg_before"
step done
"""


def fio_runs(rig: MigrationRig) -> int:
    runs = re.findall(r"GUEST-INFO fio-run (\d+)", rig.text())
    return int(runs[-1]) if runs else 0


def wait_fio_progress(rig: MigrationRig, what: str, qemu, daemons) -> None:
    """The guest finishes another fio job: it runs, and its disk works, where it is now
    (`qemu`). A job normally takes 10-40 s under TCG. After 180 s the guest's heartbeats
    decide: still finishing requests (a loaded machine) earns up to 300 s more. A guest that
    crashed (an oops, BUG or WARNING on its console) or stopped running (no heartbeat: its
    kernel no longer schedules even a shell loop that never touches the disk) is QEMU 7.2
    TCG's (see the comment above the test) and skips the test with its signature; a guest
    that waits for its disk fails it, with stall-report.txt (migrationdiag) attached."""
    start = fio_runs(rig)

    def progressed() -> bool:   # (a panic ends the wait; a BUG or warning may be survived)
        return fio_runs(rig) > start or qemu.proc.poll() is not None or "Kernel panic" in qemu.text()
    try:
        wait_until(f"a fio job to finish {what}", progressed, 180)
    except AssertionError:
        if classify(qemu.text()) == "slow":
            try:
                wait_until(f"a fio job to finish {what} (slow)", progressed, 300)
            except AssertionError:
                pass
    if fio_runs(rig) > start:
        return
    crash = guest_crash(rig.text())
    if crash:
        (rig.workdir / "guest-crash.txt").write_text(crash)
        pytest.skip(f"guest kernel crashed {what} (QEMU 7.2 TCG migration, also seen without Spindle): {crash}")
    assert qemu.proc.poll() is None, f"{qemu.name} exited (rc {qemu.proc.poll()}) {what}, no kernel crash on its console:\n" \
        + guestlib.tail(qemu.serial_log, 30)
    report = stall_report(qemu, daemons, rig.workdir)
    outcome = classify(qemu.text())
    if outcome == "no-heartbeat":
        pytest.skip(f"guest kernel stopped running {what} (no heartbeat; QEMU 7.2 TCG): {report[:3000]}")
    if outcome == "disk-idle" and nothing_pending_at_device(qemu, daemons):
        # The guest runs, its block layer has nothing in flight, the ring holds nothing
        # unanswered and the daemons hold nothing: the device owes the guest nothing, fio
        # is stuck above the disk (a guest-memory loss of QEMU 7.2 TCG, see the comment above).
        pytest.skip(f"guest stuck above its disk {what} (nothing in flight, nothing in the ring): {report[:3000]}")
    raise AssertionError(f"no fio job finished {what}; {report}")


def skip_if_fio_only_killed(serial: str) -> None:
    """A fio job that died of a signal (a segfault after a migration: fio's own memory, which
    only the guest CPU writes, came over damaged) while no job reported an I/O or verify
    error: QEMU 7.2 TCG's damage in user space, not the disk's. A stale page the device
    wrote would fail fio's verify ("bad magic", "crc"), not crash it."""
    killed = dict(re.findall(r"GUEST-INFO fio-killed (\d+) signal (\d+)", serial))
    failed = set(re.findall(r"^fio run (\d+): ", serial, re.MULTILINE))
    complaints = [line for line in serial.splitlines() if line.startswith("fio run ")
                  and re.search(r"verify|crc|bad |err=|error", line, re.IGNORECASE)]
    if killed and failed <= set(killed) and not complaints:
        pytest.skip(f"fio died of a signal after a TCG migration (jobs and signals {killed}), no I/O or "
                    f"verify error: guest user memory damaged (QEMU 7.2 TCG, see the comment above the test)")


def migrate_args(rig, src, dst, src_d, dst_d) -> list[str]:
    return ["migrate", *rig.migrate_args(src, dst, src_d, dst_d)]


def check_handover(src_log: str, dst_log: str) -> None:
    """The destination's rings start where the source's stopped, queue by queue."""
    answered = last_per_queue(vring_bases(src_log, GET_BASE_RE))
    started = first_per_queue(vring_bases(dst_log, SET_BASE_RE))
    assert answered, "the source daemon logged no 'GET_VRING_BASE answered'"
    assert started == answered, f"destination SET_VRING_BASE {started} != source GET_VRING_BASE {answered}"


# Strict, with QEMU 7.2 TCG's guest-kernel damage reported as a skip. In some runs on this
# machine the guest kernel is damaged by a completed migration (CPU-written guest memory
# arriving stale; the same happens with qemu-storage-daemon and with QEMU's own virtio-blk
# disk: test_guest_migration_oracle.py). It then oopses on B, or only logs "BUG: scheduling
# while atomic" (KERN_ERR, invisible at the init's console level: hence the "empty serial
# log" of the hang seen once in CI) and hangs later, on B or after the way back to A. The
# oracle shows that hang without vhost-user too (QEMU's own virtio-blk: 2 of 8 runs hung
# back on A, silent, the vCPU spinning). The
# guest script raises the console level, the guest prints a heartbeat, and:
# - a kernel crash, BUG or WARNING on the console (none naming the disk) -> skip, with it;
# - fio killed by a signal (a segfault) with no I/O or verify error from any job -> skip;
# - a guest whose heartbeat stopped -> skip;
# - a guest that runs with nothing in flight at its disk, nothing unanswered in the ring and
#   nothing held by a daemon (the device owes it nothing) -> skip;
# - anything else, a stall with requests in flight included -> fail, with stall-report.txt.
# (2026-12-06, /work/p7notes/hang.md: the runs and what each showed.)
def test_fio_verify_across_cancelled_completed_and_return_migrations(tmp_path, monkeypatch):
    # trace: every vhost-user message a daemon gets (a few hundred lines), for a hang's story
    monkeypatch.setenv("SPINDLE_LOG_LEVEL", "trace")
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(64 * MiB)
    rig = MigrationRig(tmp_path, FIO_SCRIPT, append=MIGRATION_APPEND)
    try:
        a = rig.daemon("spindleA", image)
        b = rig.daemon("spindleB", image, active=False)
        qa = rig.qemu(a)
        rig.wait_step("fio-started", 180)
        wait_fio_progress(rig, "on A", qa, [a, b])

        # 1. Cancelled halfway through the first pass (nothing handed over yet).
        qb = rig.qemu(b, incoming=True)
        mig = rig.migrate_sh(*FIRST_PASS, *migrate_args(rig, qa, qb, a, b), wait=False)
        wait_until("half of the first pass", lambda: qa.migration().get("ram", {}).get("transferred", 0) > 96 * MiB,
                   interval=0.05)
        cancel = rig.migrate_sh("cancel", str(qa.qmp_path), str(a.qmp_path), str(b.qmp_path))
        assert cancel.returncode == 0, cancel.stdout
        assert rig.wait_background(mig) == 1, mig.log_path.read_text()
        assert qa.migration()["status"] == "cancelled"
        assert qb.exited(30), "the cancelled destination QEMU did not exit"
        assert qa.status() == "running" and a.node_active() and not b.node_active()
        wait_fio_progress(rig, "on A after the cancel", qa, [a, b])

        # 2. Cancelled after the handover: B gives the image back, A takes it again.
        qb = rig.qemu(b, incoming=True)
        r = rig.migrate_sh(*FIRST_PASS, "--cancel-at-switchover",
                           *migrate_args(rig, qa, qb, a, b))
        assert r.returncode == 3, r.stdout
        assert "Spindle A: node (all) active=false" in r.stdout and "Spindle B: node (all) active=true" in r.stdout
        assert qb.exited(30), "the cancelled destination QEMU did not exit"
        assert qa.status() == "running" and a.node_active() and not b.node_active()
        wait_fio_progress(rig, "on A after the cancel at switchover", qa, [a, b])

        # 3. A -> B, while fio runs: a first pass of ~6 s, a second, then converge.
        a_from, b_from = len(a.log()), len(b.log())
        qb = rig.qemu(b, incoming=True)
        r = rig.migrate_sh(*FIRST_PASS, *FINISH, *migrate_args(rig, qa, qb, a, b))
        assert r.returncode == 0, r.stdout
        assert qa.migration()["ram"]["dirty-sync-count"] >= 3
        assert qb.status() == "running" and b.node_active() and not a.node_active()
        check_handover(a.log()[a_from:], b.log()[b_from:])
        qa.stop()
        wait_fio_progress(rig, "on B", qb, [a, b])

        # 4. B -> A: A's daemon, inactive since the handover, is now the destination.
        a_from, b_from = len(a.log()), len(b.log())
        qa2 = rig.qemu(a, incoming=True)
        r = rig.migrate_sh(*RETURN, *migrate_args(rig, qb, qa2, b, a))
        assert r.returncode == 0, r.stdout
        assert qa2.status() == "running" and a.node_active() and not b.node_active()
        check_handover(b.log()[b_from:], a.log()[a_from:])
        qb.stop()
        wait_fio_progress(rig, "back on A", qa2, [a, b])

        write_mailbox(image, "stop")
        run = rig.finish()
        skip_if_fio_only_killed(rig.text())
        run.assert_passed("disk-present", "fio-verify", "no-io-errors", "config-same")
        print(f"fio jobs: {run.infos.get('fio-runs')}, config: {run.infos.get('config-before')}")
    except (AssertionError, OSError) as error:
        # A guest kernel that crashed or warned (console level 5: errors and warnings) makes
        # any later step fail (QEMU gone, a migration refused, fio stuck): QEMU 7.2 TCG's.
        crash = guest_crash(rig.text())
        if crash:
            (tmp_path / "guest-crash.txt").write_text(f"{crash}\n\nthen: {error}")
            pytest.skip(f"guest kernel crashed after a TCG migration (also seen without Spindle): {crash}")
        raise
    finally:
        rig.stop()


# ---- the dirty-log proof ---------------------------------------------------------------------

PATTERN_START_MIB, PATTERN_MIB = 8, 32

PAGE_CACHE_SCRIPT = f"""
step booted
wait_for_disk 120 || exit 1
cfg_before=$(disk_config); info config-before "$cfg_before"
# Hold the disk open for the guest's whole life: the last close of a block device drops its
# page cache (each dd below opens and closes it).
exec 3<"$DEV"
sync; echo 3 > /proc/sys/vm/drop_caches
churn_start   # the migration keeps iterating (downtime limit 1 ms) until churn_stop
step ready
wait_mailbox read 300 || exit 1
# Buffered reads: the device fills page-cache pages (guest RAM) while RAM is being copied.
s0=$(sectors_read); i=0
while [ $i -lt {PATTERN_MIB} ]; do
    info hash-a-$i "$(dd if=$DEV bs=1M skip=$(({PATTERN_START_MIB} + i)) count=1 2>/dev/null | sha256sum | cut -c1-16)"
    i=$((i + 1))
done
info first-read-sectors $(( $(sectors_read) - s0 ))
churn_stop
step read-done
# No disk I/O until the re-read on B: without dirty logging B's used ring is stale too.
wait_host_side B 300 || exit 1
# On B: the same reads, served from the page cache that came over with the RAM.
s1=$(sectors_read); i=0
while [ $i -lt {PATTERN_MIB} ]; do
    info hash-b-$i "$(dd if=$DEV bs=1M skip=$(({PATTERN_START_MIB} + i)) count=1 2>/dev/null | sha256sum | cut -c1-16)"
    i=$((i + 1))
done
check_eq reread-from-cache $(( $(sectors_read) - s1 )) 0
step reread-done
check_eq config-same "$(disk_config)" "$cfg_before"
step done
"""


class PageCacheLost(AssertionError):
    """Cached disk data on the destination differs from the disk: pages the device wrote
    during the migration were not sent again."""


@pytest.mark.parametrize("dirty_log", [
    "marked",
    pytest.param("unmarked", marks=pytest.mark.xfail(
        strict=True, raises=PageCacheLost,
        reason="x-dirty-log=unmarked: the pages the device fills are never marked, QEMU never resends them")),
])
def test_page_cache_filled_during_migration_arrives_intact(tmp_path, monkeypatch, dirty_log):
    monkeypatch.setenv("SPINDLE_LOG_LEVEL", "debug")
    image = tmp_path / "disk.img"
    pattern = pattern_bytes(13, PATTERN_MIB * MiB)
    with open(image, "wb") as f:
        f.truncate(64 * MiB)
        f.seek(PATTERN_START_MIB * MiB)
        f.write(pattern)
    expected = [hashlib.sha256(pattern[i * MiB:(i + 1) * MiB]).hexdigest()[:16] for i in range(PATTERN_MIB)]
    # init_on_alloc=0: Debian's kernel zeroes every page it allocates, page-cache pages too;
    # that CPU write would dirty the page in QEMU's own bitmap and hide a missing device mark.
    rig = MigrationRig(tmp_path, PAGE_CACHE_SCRIPT, append=MIGRATION_APPEND + " init_on_alloc=0")
    try:
        a = rig.daemon("spindleA", image, export_opts=",x-dirty-log=unmarked" if dirty_log == "unmarked" else "")
        b = rig.daemon("spindleB", image, active=False)
        qa = rig.qemu(a)
        rig.wait_step("ready", 180)
        qb = rig.qemu(b, incoming=True)
        mig = rig.migrate_sh(*FIRST_PASS, *migrate_args(rig, qa, qb, a, b), wait=False)
        crawl_after_first_pass(qa, CRAWL_BANDWIDTH)
        # Every page has been sent once when the second sync starts the second pass.
        wait_until("the first dirty-sync pass", lambda: qa.migration().get("ram", {}).get("dirty-sync-count", 0) >= 2)
        write_mailbox(image, "read")
        rig.wait_step("read-done", 180)
        during = qa.migration()
        assert during["status"] == "active", f"the reads did not happen during the RAM copy: {during}"
        qa.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 30, "downtime-limit": 1000})
        assert rig.wait_background(mig) == 0, mig.log_path.read_text()
        passes = qa.migration()["ram"]["dirty-sync-count"]
        assert passes > during["ram"]["dirty-sync-count"] >= 2
        rig.wait_step("reread-done", 120)
        infos = dict(re.findall(r"GUEST-INFO (hash-[ab]-\d+) (\S+)", rig.text()))
        on_a = [i for i in range(PATTERN_MIB) if infos.get(f"hash-a-{i}") != expected[i]]
        assert not on_a, f"the guest read wrong data on A already (MiB {on_a})"
        assert "GUEST-RESULT reread-from-cache PASS" in rig.text(), "B read the region from the disk again"
        on_b = [i for i in range(PATTERN_MIB) if infos.get(f"hash-b-{i}") != expected[i]]
        print(f"dirty-sync passes: {passes}; MiB stale on B: {len(on_b)} of {PATTERN_MIB}")
        if on_b:
            raise PageCacheLost(f"{len(on_b)} of {PATTERN_MIB} MiB of the guest's page cache are stale on B "
                                f"(MiB {on_b[:8]}...) after {passes} dirty-sync passes")
        run = rig.finish(180)
        run.assert_passed("disk-present", "reread-from-cache", "config-same")
    finally:
        rig.stop()

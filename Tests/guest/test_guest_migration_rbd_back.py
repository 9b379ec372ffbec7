"""Part 12: part 7's cancelled, completed and return migrations with the guest's disk on RBD
(markers `slow` and `rbd`; the session's Ceph cluster). Two Spindles open one image (B with
active=off); a guest runs fio randwrite with crc32c verify while qemu-configs/migrate.sh,
unchanged: 1. cancels a migration halfway through its first pass (nothing handed over: A
keeps the lock), 2. cancels one at switchover (B took the image's exclusive lock and gives
it back, A takes it again), 3. migrates A -> B, 4. migrates back B -> A. fio never fails and
the guest logs no I/O error; after each step the guest's disk works where it runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from migrationdiag import HEARTBEAT_SH, guest_crash
from migrationlib import MigrationRig, wait_until
from test_guest_migration import FIRST_PASS, MIGRATION_APPEND, check_handover, migrate_args, wait_fio_progress
from test_guest_migration_rbd import CONVERGE, RbdDaemon
from test_rbd import image, node_arg, secret_arg  # noqa: F401 (fixtures)

SPINDLE = os.environ.get("SPINDLE_BIN", "")
MiB = 1024 * 1024
RELEASED = "released the image's exclusive lock"
TOOK = "took the image's exclusive lock"

pytestmark = [pytest.mark.slow, pytest.mark.rbd,
              pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle")]

# fio jobs back to back until two have run back on A after the guest was on B (the QEMU the
# guest runs on says which side: guest-lib.sh host_side).
FIO_SCRIPT = HEARTBEAT_SH + """
echo 5 > /proc/sys/kernel/printk
step booted
wait_for_disk 120 || exit 1
heartbeat &
cfg_before=$(disk_config); info config-before "$cfg_before"
runs=0; failed=0; been_b=0; back_on_a=0
step fio-started
while [ $back_on_a -lt 2 ]; do
    runs=$((runs + 1))
    fio --filename=/dev/vda --name=migrate-verify --rw=randwrite --bs=4k --size=16M --iodepth=16 \\
        --ioengine=libaio --direct=1 --verify=crc32c --do_verify=1 --randseed=$runs > /tmp/fio.log 2>&1
    rc=$?
    if [ $rc -ne 0 ] || grep -q 'err= *[1-9]' /tmp/fio.log; then
        failed=$((failed + 1)); sed "s/^/fio run $runs: /" /tmp/fio.log
    fi
    echo "GUEST-INFO fio-run $runs"
    side=$(host_side)
    [ "$side" = B ] && been_b=1
    [ "$side" = A ] && [ $been_b = 1 ] && back_on_a=$((back_on_a + 1))
done
info fio-runs "$runs"
check_eq fio-verify "$failed" 0
check no-io-errors sh -c '! dmesg | grep -qiE "I/O error|blk_update_request|is not a head"'
check_eq config-same "$(disk_config)" "$cfg_before"
step done
"""


def test_cancelled_completed_and_return_migrations_with_the_disk_on_rbd(tmp_path, monkeypatch, ceph, image):  # noqa: F811
    monkeypatch.setenv("SPINDLE_LOG_LEVEL", "debug")
    rig = MigrationRig(tmp_path, FIO_SCRIPT, append=MIGRATION_APPEND)
    try:
        a = RbdDaemon(tmp_path, "spindleA", ceph, image)
        rig.daemons.append(a)
        b = RbdDaemon(tmp_path, "spindleB", ceph, image, active=False)
        rig.daemons.append(b)
        qa = rig.qemu(a)
        rig.wait_step("fio-started", 300)
        wait_fio_progress(rig, "on A", qa, [a, b])

        # 1. Cancelled halfway through the first pass: nothing handed over, A keeps the lock.
        qb = rig.qemu(b, incoming=True)
        mig = rig.migrate_sh(*FIRST_PASS, *migrate_args(rig, qa, qb, a, b), wait=False)
        wait_until("half of the first pass", lambda: qa.migration().get("ram", {}).get("transferred", 0) > 96 * MiB,
                   timeout=300, interval=0.05)
        cancel = rig.migrate_sh("cancel", str(qa.qmp_path), str(a.qmp_path), str(b.qmp_path))
        assert cancel.returncode == 0, cancel.stdout
        assert rig.wait_background(mig) == 1, mig.log_path.read_text()
        assert qa.migration()["status"] == "cancelled"
        assert qb.exited(30), "the cancelled destination QEMU did not exit"
        assert qa.status() == "running" and a.node_active() and not b.node_active()
        assert TOOK not in b.log()
        wait_fio_progress(rig, "on A after the cancel", qa, [a, b])

        # 2. Cancelled at switchover: B took the lock and gives it back, A takes it again.
        a_from, b_from = len(a.log()), len(b.log())
        qb = rig.qemu(b, incoming=True)
        r = rig.migrate_sh(*CONVERGE, "--cancel-at-switchover", *migrate_args(rig, qa, qb, a, b))
        assert r.returncode == 3, r.stdout
        assert qb.exited(30), "the cancelled destination QEMU did not exit"
        assert qa.status() == "running" and a.node_active() and not b.node_active()
        a_log, b_log = a.log()[a_from:], b.log()[b_from:]
        assert RELEASED in a_log and TOOK in a_log.split(RELEASED, 1)[1], a_log
        assert TOOK in b_log and RELEASED in b_log.split(TOOK, 1)[1], b_log
        wait_fio_progress(rig, "on A after the cancel at switchover", qa, [a, b])

        # 3. A -> B.
        a_from, b_from = len(a.log()), len(b.log())
        qb = rig.qemu(b, incoming=True)
        r = rig.migrate_sh(*CONVERGE, *migrate_args(rig, qa, qb, a, b))
        assert r.returncode == 0, r.stdout
        assert qb.status() == "running" and b.node_active() and not a.node_active()
        check_handover(a.log()[a_from:], b.log()[b_from:])
        assert RELEASED in a.log()[a_from:] and TOOK in b.log()[b_from:]
        qa.stop()
        wait_fio_progress(rig, "on B", qb, [a, b])

        # 4. B -> A: A's daemon, inactive since the handover, is the destination.
        a_from, b_from = len(a.log()), len(b.log())
        qa2 = rig.qemu(a, incoming=True)
        r = rig.migrate_sh(*CONVERGE, *migrate_args(rig, qb, qa2, b, a))
        assert r.returncode == 0, r.stdout
        assert qa2.status() == "running" and a.node_active() and not b.node_active()
        check_handover(b.log()[b_from:], a.log()[a_from:])
        assert RELEASED in b.log()[b_from:] and TOOK in a.log()[a_from:]
        qb.stop()
        run = rig.finish(timeout=900)
        run.assert_passed("disk-present", "fio-verify", "no-io-errors", "config-same")
        print(f"fio jobs: {run.infos.get('fio-runs')}, config: {run.infos.get('config-before')}")
    except (AssertionError, OSError) as error:
        # As in test_guest_migration.py: a guest kernel that crashed after a migration is
        # QEMU 7.2 TCG's (also seen without Spindle), reported as a skip with its signature.
        crash = guest_crash(rig.text())
        if crash:
            (tmp_path / "guest-crash.txt").write_text(f"{crash}\n\nthen: {error}")
            pytest.skip(f"guest kernel crashed after a TCG migration (also seen without Spindle): {crash}")
        raise
    finally:
        rig.stop()

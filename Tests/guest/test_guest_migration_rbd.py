"""Part 12: the part 7 live migration with the guest's disk on RBD. Two Spindles open one rbd
image (B with active=off), a guest runs fio randwrite with crc32c verify on A, and
qemu-configs/migrate.sh, unchanged, migrates it to B: at switchover `blockdev-set-active
false` on A releases the image's exclusive lock and `true` on B takes it. fio never fails,
the guest logs no I/O error and sees the same config space; the lock moved (both logs).
Uses the session's Ceph cluster (conftest.py) (markers `slow` and `rbd`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from guestlib import Backend
from migrationdiag import HEARTBEAT_SH
from migrationlib import Daemon, MigrationRig, wait_until
from test_guest_migration import MIGRATION_APPEND, check_handover, migrate_args, wait_fio_progress
from test_rbd import image, node_arg, secret_arg  # noqa: F401 (fixtures)

SPINDLE = os.environ.get("SPINDLE_BIN", "")
MiB = 1024 * 1024
# One migration that converges quickly: the lock handover is what is tested here.
CONVERGE = ["--max-bandwidth", str(1024 * MiB), "--downtime-limit", "1000"]

pytestmark = [pytest.mark.slow, pytest.mark.rbd,
              pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle")]

# fio jobs back to back until two have run on B (the QEMU the guest runs on says which side).
FIO_SCRIPT = HEARTBEAT_SH + """
echo 5 > /proc/sys/kernel/printk
step booted
wait_for_disk 120 || exit 1
heartbeat &
cfg_before=$(disk_config); info config-before "$cfg_before"
runs=0; failed=0; on_b=0
step fio-started
while [ $on_b -lt 2 ]; do
    runs=$((runs + 1))
    fio --filename=/dev/vda --name=migrate-verify --rw=randwrite --bs=4k --size=16M --iodepth=16 \\
        --ioengine=libaio --direct=1 --verify=crc32c --do_verify=1 --randseed=$runs > /tmp/fio.log 2>&1
    rc=$?
    if [ $rc -ne 0 ] || grep -q 'err= *[1-9]' /tmp/fio.log; then
        failed=$((failed + 1)); sed "s/^/fio run $runs: /" /tmp/fio.log
    fi
    echo "GUEST-INFO fio-run $runs"
    [ "$(host_side)" = B ] && on_b=$((on_b + 1))
done
info fio-runs "$runs"
check_eq fio-verify "$failed" 0
check no-io-errors sh -c '! dmesg | grep -qiE "I/O error|blk_update_request|is not a head"'
check_eq config-same "$(disk_config)" "$cfg_before"
step done
"""


class RbdDaemon(Daemon):
    """migrationlib's Daemon (node disk0, export exp0, serial mig-disk) on an rbd image."""

    def __init__(self, workdir: Path, name: str, ceph, image: str, *, active: bool = True):  # noqa: F811
        self.name = name
        self.sock = workdir / f"{name}.sock"
        self.qmp_path = workdir / f"{name}-qmp.sock"
        node = node_arg(ceph, image, "" if active else ",active=off").replace("node-name=r0", "node-name=disk0")
        export = (f"type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path={self.sock},"
                  f"writable=on,num-queues=1,serial=mig-disk,allow-inactive=on")
        self.backend = Backend(SPINDLE, workdir, name)
        self.backend.start(["--object", secret_arg(ceph), "--blockdev", node, "--export", export,
                            "--qmp", str(self.qmp_path)], self.sock, timeout=60)
        wait_until(f"{name}'s QMP socket", self.qmp_path.exists, 30)


def test_fio_verify_across_a_migration_with_the_disk_on_rbd(tmp_path, monkeypatch, ceph, image):  # noqa: F811
    monkeypatch.setenv("SPINDLE_LOG_LEVEL", "debug")
    rig = MigrationRig(tmp_path, FIO_SCRIPT, append=MIGRATION_APPEND)
    try:
        a = RbdDaemon(tmp_path, "spindleA", ceph, image)
        rig.daemons.append(a)
        b = RbdDaemon(tmp_path, "spindleB", ceph, image, active=False)
        rig.daemons.append(b)
        qa = rig.qemu(a)
        rig.wait_step("fio-started", 180)
        wait_fio_progress(rig, "on A", qa, [a, b])
        a_from, b_from = len(a.log()), len(b.log())
        qb = rig.qemu(b, incoming=True)
        r = rig.migrate_sh(*CONVERGE, *migrate_args(rig, qa, qb, a, b))
        assert r.returncode == 0, r.stdout
        assert qb.status() == "running" and b.node_active() and not a.node_active()
        check_handover(a.log()[a_from:], b.log()[b_from:])
        assert "released the image's exclusive lock" in a.log()[a_from:]
        assert "took the image's exclusive lock" in b.log()[b_from:]
        qa.stop()
        run = rig.finish()
        run.assert_passed("disk-present", "fio-verify", "no-io-errors", "config-same")
        print(f"fio jobs: {run.infos.get('fio-runs')}, config: {run.infos.get('config-before')}")
    finally:
        rig.stop()

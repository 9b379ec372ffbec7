"""Issue 16, part 10: a real guest with fio under an I/O limit sees it (loosely, under TCG).

The daemon exports a throttle node (`--object throttle-group,id=tg0,x-iops-total=600` +
`--blockdev driver=throttle,...,throttle-group=tg0,file=disk0`); the guest runs fio 4 KiB
randread, direct, iodepth 16, for 10 s: its IOPS must be above zero and at most the cap + 25 %,
with no error. Then the test raises the group's limit with `qom-set` and tells the guest
through the mailbox block (migrationlib); a second, 5 s fio run must go clearly above the old
cap (1.5x), so it was the limit, not TCG's slowness, that held the first run. Unlimited, this
guest reached ~3700 IOPS on the 2-CPU test VM (under a concurrent CI run), about six times
the cap.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from interactive import GuestSession, ok, spindle_qmp
from migrationlib import write_mailbox

MiB = 1024 * 1024
SPINDLE = os.environ.get("SPINDLE_BIN", "")
CAP = 600               # IOPS; well below TCG's unlimited figure, well above noise
LIFTED = 100_000        # far above anything TCG reaches

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif("spindle" not in Path(SPINDLE).name, reason="needs SPINDLE_BIN pointing at spindle")]

GUEST_SCRIPT = """
step booted
wait_for_disk 120 || exit 1
fio_iops() {  # fio_iops NAME SECONDS: 4 KiB randread, direct; GUEST-INFO NAME-iops / NAME-errors
    fio --filename=$DEV --name=$1 --ioengine=libaio --direct=1 --rw=randread --bs=4k --iodepth=16 \\
        --size=32M --readonly --time_based --runtime=$2 --minimal > /tmp/fio-$1.log 2>&1
    rc=$?
    # terse format v3: field 5 is the job's error, field 8 its read IOPS
    info $1-iops "$(tail -n 1 /tmp/fio-$1.log | cut -d';' -f8)"
    info $1-errors "$(tail -n 1 /tmp/fio-$1.log | cut -d';' -f5)"
    [ $rc -eq 0 ] || sed "s/^/fio-$1: /" /tmp/fio-$1.log
    check_eq fio-$1 "$rc" 0
}
fio_iops capped 10
step capped-done
wait_mailbox lifted 300 || exit 1
fio_iops lifted 5
check no-io-errors sh -c '! dmesg | grep -qi "I/O error"'
"""


def test_guest_fio_under_an_iops_limit_then_lifted(guest_env):
    image = guest_env.make_image(64 * MiB)
    qmp = guest_env.workdir / "qmp.sock"
    guest_env.start_backend([
        "--object", f"throttle-group,id=tg0,x-iops-total={CAP}",
        "--blockdev", f"driver=file,node-name=disk0,filename={image}",
        "--blockdev", "driver=throttle,node-name=t0,throttle-group=tg0,file=disk0",
        "--export", f"type=vhost-user-blk,id=exp0,node-name=t0,addr.type=unix,addr.path={guest_env.sock}",
        "--qmp", str(qmp)])
    client = spindle_qmp(qmp)
    guest_env._log("guest serial log (throttle)", guest_env.workdir / "throttle-serial.log")
    guest = GuestSession(guest_env.workdir, GUEST_SCRIPT, sock=guest_env.sock, name="throttle")
    try:
        guest.wait_step("capped-done")
        assert ok(client, "qom-get", path="tg0", property="limits")["iops-total"] == CAP
        ok(client, "qom-set", path="tg0", property="limits", value={"iops-total": LIFTED})
        assert ok(client, "qom-get", path="tg0", property="limits")["iops-total"] == LIFTED
        write_mailbox(image, "lifted")
        run = guest.finish()
    finally:
        guest.close()
        client.close()
    print(f"capped (limit {CAP}): {run.infos.get('capped-iops')} IOPS, "
          f"lifted: {run.infos.get('lifted-iops')} IOPS")
    run.assert_passed("disk-present", "fio-capped", "fio-lifted", "no-io-errors")
    capped, lifted = int(run.infos["capped-iops"]), int(run.infos["lifted-iops"])
    assert run.infos["capped-errors"] == "0" and run.infos["lifted-errors"] == "0", run.infos
    assert 0 < capped <= CAP * 1.25, f"capped run: {capped} IOPS under a {CAP} IOPS limit"
    assert lifted > CAP * 1.5, f"lifted run: {lifted} IOPS, not clearly above the old {CAP} IOPS cap"

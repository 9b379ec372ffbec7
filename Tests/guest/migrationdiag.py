"""What a migration test records when the guest stops making progress, so that one failure
tells a guest that waits for its disk from one that stopped running at all.

- the guest's own heartbeat (HEARTBEAT_SH, run in the background by the guest script; it
  never touches the disk): every 10 s its uptime, the disk's in-flight counts, requests
  done and the virtio interrupts taken; after three beats with no request finished, each
  fio thread's state, system call and kernel stack, and the tail of its kernel log
  (hung-task reports: the script lowers hung_task_timeout_secs);
- QEMU's side (x-query-virtio-queue-status) and the split ring's indices in guest memory
  (HMP xp at the ring addresses QEMU reports): avail.idx, used.idx, used_event,
  avail_event;
- whether the vCPUs run (RIP and HLT sampled twice);
- each daemon's per-queue counters (query-blockstats x-queues) and the tail of its log.

`classify` names the outcome from the heartbeats: "no-heartbeat" (the guest kernel stopped:
nothing printed, not even the heartbeat), "io-stalled" (the guest runs, requests in flight
at its disk never finish: the device's side), "disk-idle" (the guest runs, nothing is in
flight at its disk and nothing new comes: the guest is stuck above its block layer),
"slow" (requests finish, slowly: a loaded machine, not a hang).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import guestlib
from guestlib import QEMU_CONFIGS

sys.path.insert(0, str(QEMU_CONFIGS))
import qmp as qmp_helper  # noqa: E402  (qemu-configs/qmp.py)

VIRTIO_PATH = "/machine/peripheral/vublk0/virtio-backend"

HEARTBEAT_SH = r"""
tasks_report() {   # where every fio process and thread is: state, syscall, kernel stack
    for t in /proc/[0-9]*/task/[0-9]*; do
        [ "$(cat $t/comm 2>/dev/null)" = fio ] || continue
        echo "GUEST-TASK $t $(awk '{print $3}' $t/stat) wchan=$(cat $t/wchan) syscall=$(cut -d' ' -f1-4 $t/syscall)"
        sed "s|^|GUEST-TASK $t |" $t/stack
    done
}
heartbeat() {   # background: proves the guest runs and shows what its disk waits for
    { echo 20 > /proc/sys/kernel/hung_task_timeout_secs; } 2>/dev/null
    stuck=0; last=""; dumped=0
    while :; do
        sleep 10
        inflight=$(cat /sys/block/$DISK/inflight | tr -s ' ' | sed 's/^ //')
        done_ios=$(awk '{print $1 + $5}' /sys/block/$DISK/stat)
        irqs=$(awk '/virtio/ {s = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i; printf "%s=%d,", $NF, s}' /proc/interrupts)
        echo "GUEST-HEARTBEAT up=$(cut -d' ' -f1 /proc/uptime) inflight=$inflight done=$done_ios irqs=$irqs"
        if [ "$done_ios" = "$last" ]; then stuck=$((stuck + 1)); else stuck=0; fi
        last=$done_ios
        if [ $stuck -ge 3 ] && [ $dumped -eq 0 ]; then
            dumped=1
            tasks_report
            dmesg | tail -60 | sed 's/^/GUEST-DMESG /'
        fi
    done
}
"""

HEARTBEAT_RE = re.compile(r"GUEST-HEARTBEAT up=(\S+) inflight=(\d+) (\d+) done=(\d+) irqs=(\S*)")


def heartbeats(serial: str) -> list[dict]:
    return [{"up": float(up), "inflight": int(r) + int(w), "done": int(d), "irqs": irqs}
            for up, r, w, d, irqs in HEARTBEAT_RE.findall(serial)]


def classify(serial: str) -> str:
    """From the heartbeats the guest printed on its current QEMU (that QEMU's serial log)."""
    beats = heartbeats(serial)
    if len(beats) < 2:
        return "no-heartbeat"
    last = beats[-3:]
    if last[0]["done"] != last[-1]["done"]:
        return "slow"
    return "io-stalled" if all(b["inflight"] > 0 for b in last) else "disk-idle"


# Kernel crash reports and warnings on the serial console (the migration script raises the
# console level to show errors and warnings).
CRASH_RE = re.compile(r"Oops|Kernel panic|BUG: |WARNING: CPU|general protection fault|invalid opcode|"
                      r"double fault|unable to handle|RIP: [0-9a-f]{4}:")
# What would make the device a suspect: never counted as the guest kernel's own crash.
# (The driver's own messages, not stack frames or "Modules linked in", which name it always.)
DEVICE_BLAME_RE = re.compile(r"I/O error|blk_update_request|is not a head|virtio_blk virtio\d|virtio_pci \d|vda:")


def guest_crash(serial: str) -> str | None:
    """The guest kernel's crash or warning signature (its first matching lines), or None.
    None as well when any kernel line names the disk or its driver (the device may be at
    fault then: the caller must not explain that away). The heartbeat's dumps (GUEST-TASK,
    GUEST-DMESG: stacks of a stuck fio, which show user RIPs) are not crashes."""
    lines = [line.strip() for line in serial.splitlines() if not line.startswith("GUEST-")]
    if any(DEVICE_BLAME_RE.search(line) for line in lines if line.startswith("[")):
        return None
    hits = [line for line in lines if CRASH_RE.search(line)]
    return " | ".join(hits[:4]) if hits else None


def _hmp(qemu, command: str) -> str:
    try:
        return str(qemu.cmd("human-monitor-command", **{"command-line": command}))
    except Exception as error:  # noqa: BLE001  (a diagnostic never hides the failure)
        return f"<{command}: {error}>"


def _xp_u16(qemu, address: int) -> str:
    text = _hmp(qemu, f"xp /1hx {address:#x}")
    m = re.search(r":\s*(0x[0-9a-fA-F]+)", text)
    return str(int(m.group(1), 16)) if m else text.strip()


def ring_state(qemu, queue: int = 0) -> dict:
    """QEMU's view of a queue (x-query-virtio-queue-status) and, under "guest", the split
    ring's indices read from guest memory at the ring addresses QEMU reports."""
    status = qmp_helper.execute(str(qemu.test_qmp), "x-query-virtio-queue-status",
                                {"path": VIRTIO_PATH, "queue": queue})
    avail, used, num = status.get("vring-avail", 0), status.get("vring-used", 0), status.get("vring-num", 0)
    if avail and used and num:
        status["guest"] = {"avail.flags": _xp_u16(qemu, avail), "avail.idx": _xp_u16(qemu, avail + 2),
                           "used_event": _xp_u16(qemu, avail + 4 + 2 * num), "used.flags": _xp_u16(qemu, used),
                           "used.idx": _xp_u16(qemu, used + 2), "avail_event": _xp_u16(qemu, used + 4 + 8 * num)}
    return status


def ring_report(qemu, queues: int = 1) -> list[str]:
    lines = []
    try:   # the device's status byte, started or not, and the vhost device's view
        status = qmp_helper.execute(str(qemu.test_qmp), "x-query-virtio-status", {"path": VIRTIO_PATH})
        lines.append(f"{qemu.name} device: status {status.get('status')}, started {status.get('started')}, "
                     f"vm-running {status.get('vm-running')}, broken {status.get('broken')}, "
                     f"vhost-dev {status.get('vhost-dev')}")
    except Exception as error:  # noqa: BLE001
        lines.append(f"{qemu.name}: x-query-virtio-status failed: {error}")
    for q in range(queues):
        try:
            lines.append(f"{qemu.name} queue {q}: {ring_state(qemu, q)}")
        except Exception as error:  # noqa: BLE001
            lines.append(f"{qemu.name} queue {q}: x-query-virtio-queue-status failed: {error}")
    return lines


def nothing_pending_at_device(qemu, daemons) -> bool:
    """No daemon holds a request and the ring holds none the device has not answered
    (avail.idx == used.idx in guest memory): the device owes the guest nothing."""
    from migrationlib import qmp
    try:
        for daemon in daemons:
            if any(export.get("x-in-flight") for export in qmp(daemon.qmp_path, "query-blockstats")):
                return False
        guest = ring_state(qemu).get("guest", {})
        return bool(guest) and guest["avail.idx"] == guest["used.idx"]
    except Exception:  # noqa: BLE001  (unknown: not exonerated)
        return False


def cpu_report(qemu) -> list[str]:
    """RIP and HLT of each vCPU, twice, a second apart: a guest that runs moves."""
    lines = []
    for sample in range(2):
        text = _hmp(qemu, "info registers -a")
        rips = re.findall(r"RIP=([0-9a-f]+)", text)
        halts = re.findall(r"HLT=(\d)", text)
        lines.append(f"{qemu.name} vCPUs sample {sample}: RIP={rips} HLT={halts}")
        time.sleep(1)
    return lines


def daemon_report(daemon) -> list[str]:
    from migrationlib import qmp   # (migrationlib imports this module)
    lines = []
    try:
        for export in qmp(daemon.qmp_path, "query-blockstats"):
            queues = [(q.get("queue"), q.get("in-flight"), q["stats"].get("rd_operations"),
                       q["stats"].get("wr_operations")) for q in export.get("x-queues", [])]
            lines.append(f"{daemon.name} {export.get('x-export-id')}: in flight {export.get('x-in-flight')}, "
                         f"per queue (queue, in flight, reads, writes) {queues}")
    except Exception as error:  # noqa: BLE001
        lines.append(f"{daemon.name}: query-blockstats failed: {error}")
    lines.append(f"{daemon.name} log tail:\n{guestlib.tail(daemon.log_path, 25)}")
    return lines


def stall_report(qemu, daemons, workdir: Path) -> str:
    """Everything above for the QEMU the guest runs on now; written to stall-report.txt."""
    serial = qemu.text()
    lines = [f"outcome: {classify(serial)} (from the guest's heartbeats on {qemu.name})"]
    lines += [f"last heartbeats: {heartbeats(serial)[-4:]}"]
    lines += [line for line in serial.splitlines() if line.startswith(("GUEST-TASK", "GUEST-DMESG"))][-120:]
    lines += ring_report(qemu) + cpu_report(qemu)
    for daemon in daemons:
        lines += daemon_report(daemon)
    lines.append(f"{qemu.name} serial tail:\n{guestlib.tail(qemu.serial_log, 20)}")
    report = "\n".join(lines)
    (workdir / "stall-report.txt").write_text(report)
    return report

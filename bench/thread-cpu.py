#!/usr/bin/env python3
"""thread-cpu.py: a process's CPU time and context switches per thread name, over a window.

    thread-cpu.py snap PID OUT.json        # every thread of PID now (/proc/PID/task/*)
    thread-cpu.py diff A.json B.json REQS [TOTAL]
                                           # per thread name, over the window A..B: CPU µs,
                                           # voluntary and involuntary switches per request
                                           # (REQS requests served in the window); JSON on stdout.
                                           # TOTAL (µs per request, measured elsewhere over a
                                           # sharper window): CPU is shared out in proportion

Threads are grouped by name (/proc/PID/task/TID/comm: librados' msgr-worker-N, librbd's
io_context_pool, Spindle's iot-ID, qsd's qemu-storage-da, ...); a thread that started or ended
inside the window counts what it used there. CPU is utime + stime in clock ticks (USER_HZ).
"""
import json
import os
import sys


def snap(pid, out):
    threads = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        tids = []  # the process has gone: nothing to count
    for tid in tids:
        base = f"/proc/{pid}/task/{tid}"
        try:
            name = open(f"{base}/comm").read().strip()
            stat = open(f"{base}/stat").read()
            status = open(f"{base}/status").read().splitlines()
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
        fields = stat[stat.rfind(")") + 2:].split()  # after the name, which may hold spaces
        fields_of = dict(line.split(":", 1) for line in status if ":" in line)
        threads[tid] = {
            "name": name,
            "ticks": int(fields[11]) + int(fields[12]),
            "vcs": int(fields_of["voluntary_ctxt_switches"]),
            "nvcs": int(fields_of["nonvoluntary_ctxt_switches"]),
        }
    json.dump(threads, open(out, "w"))


def diff(a_path, b_path, requests, total=None):
    a, b = json.load(open(a_path)), json.load(open(b_path))
    hz = os.sysconf("SC_CLK_TCK")
    requests = max(float(requests), 1.0)
    names = {}
    for tid, t in b.items():
        t0 = a.get(tid, {"ticks": 0, "vcs": 0, "nvcs": 0})
        n = names.setdefault(t["name"], {"threads": 0, "ticks": 0, "vcs": 0, "nvcs": 0})
        n["threads"] += 1
        for k in ("ticks", "vcs", "nvcs"):
            n[k] += t[k] - t0[k]
    all_ticks = sum(n["ticks"] for n in names.values())
    out = {}
    for name, n in names.items():
        if n["ticks"] == 0 and n["vcs"] + n["nvcs"] == 0:
            continue  # idle all along
        out[name] = {
            "threads": n["threads"],
            "cpu_us_per_req": round(n["ticks"] * 1e6 / hz / requests if total is None
                                    else total * n["ticks"] / max(all_ticks, 1), 2),
            "vcs_per_req": round(n["vcs"] / requests, 3),
            "nvcs_per_req": round(n["nvcs"] / requests, 3),
        }
    json.dump(out, sys.stdout, sort_keys=True)
    print()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "snap":
        snap(sys.argv[2], sys.argv[3])
    elif len(sys.argv) in (5, 6) and sys.argv[1] == "diff":
        diff(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]) if len(sys.argv) == 6 else None)
    else:
        sys.exit(__doc__)

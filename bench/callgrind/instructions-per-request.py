#!/usr/bin/env python3
"""Instructions per request of one thread's callgrind profile.

usage: instructions-per-request.py CALLGRIND_FILE [TOP]

Requests are counted as calls of VirtioBlkQueue.finish (one per completed request), or,
where that is inlined (the generic virtqueue server's finish is), as calls of
BlockBackend.submit (one per request a device submits: the same count for reads and writes
that are not rejected, up to the few in flight at the end). Prints
the thread's total instructions (Ir), the request count, Ir per request, and the TOP
(default 12) functions by self cost, each per request.
"""
import re
import sys

path = sys.argv[1]
top = int(sys.argv[2]) if len(sys.argv) > 2 else 12
names, self_cost = {}, {}
requests = submits = total = 0
current_fn = current_cfn = None
in_call = False
for line in open(path):
    m = re.match(r'(c?fn)=\((\d+)\)(?: (.*))?', line)
    if m:
        kind, ident, name = m.groups()
        if name:
            names[ident] = name
        if kind == 'fn':
            current_fn = names.get(ident, ident)
        else:
            current_cfn = names.get(ident, ident)
        continue
    if line.startswith('calls='):
        if current_cfn and 'QueueC6finish' in current_cfn:
            requests += int(line.split()[0][6:])
        if current_cfn and current_cfn.startswith('$s7BlockIO0A7BackendC6submit_2on'):
            submits += int(line.split()[0][6:])
        in_call = True  # the next cost line is the call's inclusive cost
        continue
    if line.startswith('totals:'):
        total = int(line.split()[1])
        continue
    if line[:1].isdigit() or line[:1] in '+-*':
        parts = line.split()
        if len(parts) >= 2:
            if in_call:
                in_call = False
            else:
                self_cost[current_fn] = self_cost.get(current_fn, 0) + int(parts[1])
counter = "finish" if requests else "BlockBackend.submit"
requests = requests or submits
n = max(requests, 1)
print(f"Ir={total} requests={requests} ({counter} calls) Ir/request={total / n:.0f}")
for fn, cost in sorted(self_cost.items(), key=lambda kv: -kv[1])[:top]:
    print(f"  {cost / n:7.0f}  {fn[:150]}")

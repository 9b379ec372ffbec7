#!/usr/bin/env python3
"""Times one QMP command on a monitor socket: prints milliseconds and the reply's size.

    qmp-time.py SOCKET COMMAND          # e.g. query-block-exports
"""
import json
import socket
import sys
import time


def main():
    path, command = sys.argv[1], sys.argv[2]
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    f = s.makefile("rwb")
    f.readline()  # greeting
    f.write(b'{"execute": "qmp_capabilities"}\n')
    f.flush()
    f.readline()
    start = time.monotonic()
    f.write(json.dumps({"execute": command}).encode() + b"\n")
    f.flush()
    line = f.readline()
    elapsed = (time.monotonic() - start) * 1000
    reply = json.loads(line)
    result = reply.get("return")
    count = len(result) if isinstance(result, list) else 0
    memory = sum(e.get("x-memory-bytes", 0) for e in result) if isinstance(result, list) else 0
    print(f"{elapsed:.1f} {count} {memory}")


main()

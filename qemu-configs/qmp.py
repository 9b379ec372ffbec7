#!/usr/bin/env python3
"""qmp.py: one QMP command on a Unix socket (QEMU's or Spindle's), Python standard library only.

    qmp.py [--get PATH] [--timeout S] SOCKET COMMAND [ARGUMENTS-JSON]

Connects, negotiates (qmp_capabilities), runs COMMAND, prints its "return" value as JSON on
stdout and disconnects. One connection per command on purpose: a QEMU monitor socket serves
one client at a time, so a helper that stayed connected would lock out every other client.

--get PATH prints one value of the result instead: dot-separated keys, list indices, and
[key=value] to pick the first list element whose key has that value; several paths
separated by commas print their values on one line, space-separated. E.g.
    --get ram.dirty-sync-count          (query-migrate)
    --get '[node-name=disk0].active'    (query-named-block-nodes)
A string is printed bare, anything else as JSON; a missing value prints nothing, exit 4.

Exit status: 0 success; 1 the command failed (QMP error class and text on stderr);
2 usage; 3 cannot connect or the peer closed the connection; 4 --get found nothing.
"""

from __future__ import annotations

import json
import socket
import sys


class QMPError(Exception):
    pass


def _lines(sock: socket.socket):
    buf = b""
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the monitor closed the connection")
        buf += data


def execute(path: str, command: str, arguments: dict | None = None, timeout: float = 30) -> object:
    """Runs one command; returns its "return" value or raises QMPError / OSError."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        messages = _lines(sock)
        # An event may come first: QEMU can deliver one queued for an earlier client.
        greeting = next(m for m in messages if "event" not in m)
        if "QMP" not in greeting:
            raise ConnectionError(f"not a QMP monitor (greeting {greeting})")
        for cmd, args in (("qmp_capabilities", None), (command, arguments)):
            request = {"execute": cmd, "id": cmd}
            if args:
                request["arguments"] = args
            sock.sendall(json.dumps(request).encode() + b"\n")
            for reply in messages:
                if "event" in reply:
                    continue  # events of other activity: not ours
                if "error" in reply:
                    err = reply["error"]
                    raise QMPError(f"{err.get('class', 'Error')}: {err.get('desc', err)}")
                if "return" in reply:
                    result = reply["return"]
                    break
        return result


def select(value: object, path: str) -> object:
    """Follows a --get path through a result; None when something is missing."""
    for part in filter(None, path.replace("[", ".[").split(".")):
        if part.startswith("[") and part.endswith("]") and "=" in part:
            key, want = part[1:-1].split("=", 1)
            value = next((e for e in value if isinstance(e, dict) and str(e.get(key)) == want), None) \
                if isinstance(value, list) else None
        elif isinstance(value, list) and part.lstrip("-").isdigit():
            index = int(part)
            value = value[index] if -len(value) <= index < len(value) else None
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            value = None
        if value is None:
            return None
    return value


def main(argv: list[str]) -> int:
    get, timeout = None, 30.0
    while argv and argv[0].startswith("--"):
        if argv[0] in ("--get", "--timeout") and len(argv) > 1:
            if argv[0] == "--get":
                get = argv[1]
            else:
                timeout = float(argv[1])
            argv = argv[2:]
        else:
            break
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    path, command = argv[0], argv[1]
    try:
        arguments = json.loads(argv[2]) if len(argv) == 3 else None
    except json.JSONDecodeError as e:
        print(f"qmp.py: {command}: arguments are not JSON ({e}): {argv[2]}", file=sys.stderr)
        return 2
    try:
        result = execute(path, command, arguments, timeout)
    except QMPError as e:
        print(f"qmp.py: {path}: {command}: {e}", file=sys.stderr)
        return 1
    except (OSError, ConnectionError, StopIteration, json.JSONDecodeError) as e:
        print(f"qmp.py: {path}: cannot run {command}: {e or 'connection closed'}", file=sys.stderr)
        return 3
    if get is not None:   # several comma-separated paths: their values on one line
        values = [select(result, path) for path in get.split(",")]
        if any(v is None for v in values):
            return 4
        print(" ".join(v if isinstance(v, str) else json.dumps(v) for v in values))
        return 0
    print(result if isinstance(result, str) else json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

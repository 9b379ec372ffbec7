#!/usr/bin/env python3
"""Prints the per-thread allocation counts from a malloc-count.so table (JSON)."""
import json, struct, sys

def read(path):
    data = open(path, "rb").read()
    used = min(struct.unpack_from("<I", data, 0)[0], 1024)
    threads = []
    for i in range(used):
        count, tid, name = struct.unpack_from("<Qi20s", data, 8 + 32 * i)
        threads.append({"tid": tid, "name": name.split(b"\0")[0].decode(errors="replace"), "count": count})
    return threads

if __name__ == "__main__":
    json.dump(read(sys.argv[1]), sys.stdout)
    print()

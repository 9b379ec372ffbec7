#!/usr/bin/env python3
"""Writes the small, valid seed corpus under Fuzz/corpus/<target>/ (input layouts are
described at each entry point in Sources/FuzzEntryPoints). Re-run after changing a layout."""
import os
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "corpus"


def write(target, name, data):
    d = ROOT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(bytes(data))


def vu(request, payload=b"", flags=1):
    return struct.pack("<III", request, flags, len(payload)) + payload


# vhost-user messages: byte 0 = fds sent along, then the stream.
region = struct.pack("<QQQQ", 0, 0x100000, 0x7F0000000000, 0)
write("vhost-user-message", "get-features", b"\0" + vu(1))
write("vhost-user-message", "handshake", b"\0" + vu(1) + vu(15) + vu(2, struct.pack("<Q", 1 << 32 | 1 << 28))
      + vu(16, struct.pack("<Q", 0x1)) + vu(3) + vu(17))
write("vhost-user-message", "mem-table", b"\x01" + vu(5, struct.pack("<II", 1, 0) + region))
write("vhost-user-message", "vring-setup", b"\x02" + vu(8, struct.pack("<II", 0, 256))
      + vu(9, struct.pack("<IIQQQQ", 0, 0, 0x7F0000000000, 0x7F0000002000, 0x7F0000001000, 0))
      + vu(10, struct.pack("<II", 0, 0)) + vu(12, struct.pack("<Q", 0)) + vu(13, struct.pack("<Q", 0))
      + vu(18, struct.pack("<II", 0, 1)))
write("vhost-user-message", "config", b"\0" + vu(24, struct.pack("<III", 0, 60, 0) + bytes(60)))
write("vhost-user-message", "add-mem-reg", b"\x01" + vu(37, struct.pack("<Q", 0) + region))

# guest memory: fds, payload regions, SET_MEM_TABLE payload, then (selector, addr, len) queries.
def table(regions):
    return struct.pack("<II", len(regions), 0) + b"".join(struct.pack("<QQQQ", *r) for r in regions)


def queries(qs):
    return b"".join(struct.pack("<BQQ", *q) for q in qs)


two = [(0, 0xA0000, 0x7F0000000000, 0), (0x100000, 0x100000, 0x7F0000100000, 0xA0000)]
write("guest-memory", "one-region", b"\x01\x01" + table([two[0]]) + queries([(0, 0x10, 0x100), (0x80, 0x9FFF0, 0x20)]))
write("guest-memory", "two-regions", b"\x02\x02" + table(two) + queries([(0, 0x9FF00, 0x100), (1, 0, 0x100000),
                                                                        (0x40, 0, 0x10), (0x80, 0xA0000, 1)]))
adjacent = [(0, 0x1000, 0x1000, 0), (0x1000, 0x1000, 0x2000, 0)]
write("guest-memory", "adjacent", b"\x02\x02" + table(adjacent) + queries([(0x80, 0x800, 0x1000), (0x80, 0, 0x2000)]))

# rings: 64 KiB guest, descriptor table 0x0, avail 0x1000, used 0x2000.
MEM = 0x10000
NEXT, WRITE, INDIRECT = 1, 2, 4


def desc(addr, length, flags, nxt=0):
    return struct.pack("<QIHH", addr, length, flags, nxt)


def guest(descs, heads, extra=()):
    m = bytearray(MEM)
    for i, d in enumerate(descs):
        m[16 * i:16 * i + 16] = d
    m[0x1000:0x1004] = struct.pack("<HH", 0, len(heads))
    for i, h in enumerate(heads):
        m[0x1004 + 2 * i:0x1006 + 2 * i] = struct.pack("<H", h)
    for addr, data in extra:
        m[addr:addr + len(data)] = data
    # Trailing zeros add nothing to a fuzzer: trim them.
    return bytes(m).rstrip(b"\0")


blk_read = struct.pack("<IIQ", 0, 0, 8)
blk_write = struct.pack("<IIQ", 1, 0, 8)
simple = guest([desc(0x3000, 16, NEXT, 1), desc(0x3100, 512, WRITE | NEXT, 2), desc(0x3400, 1, WRITE)], [0],
               [(0x3000, blk_read)])
indirect_table = desc(0x3000, 16, NEXT, 1) + desc(0x3100, 1024, NEXT, 2) + desc(0x3600, 1, WRITE)
indirect = guest([desc(0x4000, 48, INDIRECT)], [0], [(0x4000, indirect_table), (0x3000, blk_write)])
crossing = guest([desc(0x3000, 16, NEXT, 1), desc(0x7F00, 0x200, WRITE | NEXT, 2), desc(0x3400, 1, WRITE)], [0],
                 [(0x3000, blk_read)])
several = guest([desc(0x3000, 16, NEXT, 1), desc(0x3100, 512, WRITE | NEXT, 2), desc(0x3400, 1, WRITE),
                 desc(0x3800, 16, NEXT, 4), desc(0x3A00, 1, WRITE)], [0, 3],
                [(0x3000, blk_read), (0x3800, struct.pack("<IIQ", 4, 0, 0))])

for name, mem in [("simple", simple), ("indirect", indirect), ("crossing-regions", crossing), ("two-chains", several)]:
    # size code 3 (8 entries), features: indirect, last avail 0, span capacity 16
    write("descriptor-chain", name, bytes([3, 1, 0, 0, 15]) + mem)



# packed rings: same 64 KiB guest, descriptor ring 0x0, driver area 0x1000, device area 0x2000.
AVAIL, USED = 1 << 7, 1 << 15


def pdesc(addr, length, buffer_id, flags):
    return struct.pack("<QIHH", addr, length, buffer_id, flags)


def packed_guest(descs, extra=()):
    m = bytearray(MEM)
    for i, d in enumerate(descs):
        m[16 * i:16 * i + 16] = d
    for addr, data in extra:
        m[addr:addr + len(data)] = data
    return bytes(m).rstrip(b"\0")


packed_simple = packed_guest([pdesc(0x3000, 16, 0xEEEE, AVAIL | NEXT), pdesc(0x3100, 512, 0xEEEE, AVAIL | WRITE | NEXT),
                              pdesc(0x3400, 1, 2, AVAIL | WRITE), pdesc(0x3800, 16, 0, AVAIL)])
packed_indirect = packed_guest([pdesc(0x4000, 48, 1, AVAIL | INDIRECT)], [(0x4000, indirect_table)])
# size 7, base avail 5 / used 5 (wrap 1): a chain of three crossing the ring's end.
packed_wrapping = packed_guest([pdesc(0x3400, 1, 4, USED | WRITE)] + [b"\0" * 16] * 4
                               + [pdesc(0x3000, 16, 0xEEEE, AVAIL | NEXT), pdesc(0x3100, 512, 0xEEEE, AVAIL | WRITE | NEXT)])
for name, header, mem in [("simple", bytes([7, 1]) + struct.pack("<HH", 0x8000, 0x8000), packed_simple),
                          ("indirect", bytes([2, 1]) + struct.pack("<HH", 0x8000, 0x8000), packed_indirect),
                          ("wrapping", bytes([6, 3]) + struct.pack("<HH", 0x8005, 0x8005), packed_wrapping)]:
    # then span capacity 16, completion order: reversed and batched
    write("packed-descriptor-chain", name, header + bytes([15, 3]) + mem)


def blk(flags, memory, capacity=2048, max_sectors=4096, segments=2):
    return bytes([3, flags, segments - 1]) + struct.pack("<QI", capacity, max_sectors) + memory


write("virtio-blk-request", "read", blk(1, simple))
write("virtio-blk-request", "write-indirect", blk(1, indirect))
write("virtio-blk-request", "read-crossing", blk(1, crossing))
write("virtio-blk-request", "read-and-flush", blk(1, several))
discard = guest([desc(0x3000, 32, NEXT, 1), desc(0x3400, 1, WRITE)], [0],
                [(0x3000, struct.pack("<IIQ", 11, 0, 0) + struct.pack("<QII", 16, 8, 0))])
zeroes = guest([desc(0x3000, 32, NEXT, 1), desc(0x3400, 1, WRITE)], [0],
               [(0x3000, struct.pack("<IIQ", 13, 0, 0) + struct.pack("<QII", 16, 8, 1))])
get_id = guest([desc(0x3000, 16, NEXT, 1), desc(0x3100, 20, WRITE | NEXT, 2), desc(0x3400, 1, WRITE)], [0],
               [(0x3000, struct.pack("<IIQ", 8, 0, 0))])
write("virtio-blk-request", "discard", blk(1 | 4, discard))
write("virtio-blk-request", "write-zeroes", blk(1 | 8, zeroes))
write("virtio-blk-request", "get-id", blk(1, get_id))
write("virtio-blk-request", "read-only-write", blk(1 | 2, indirect))

# QMP: what a client sends.
qmp = {
    "capabilities": b'{"execute": "qmp_capabilities"}\n',
    "query-block-exports": b'{"execute":"qmp_capabilities"}{"execute":"query-block-exports","id":1}\n',
    "blockdev-add": b'{"execute": "blockdev-add", "arguments": {"driver": "file", "node-name": "disk0", '
                    b'"filename": "/tmp/x.img", "cache": {"direct": true}, "aio": "io_uring"}}\n',
    "export-add": b'{"execute": "block-export-add", "arguments": {"type": "vhost-user-blk", "id": "e0", '
                  b'"node-name": "disk0", "writable": true, "num-queues": 2, '
                  b'"addr": {"type": "unix", "path": "/tmp/e0.sock"}, "iothread": ["io0", "io1"]}}\n',
    "object-add": b"{'execute': 'object-add', 'arguments': {'qom-type': 'iothread', 'id': 'io0', 'poll-max-ns': 0}}\n",
    "escapes": b'{"execute": "x", "id": ["\\u00e9\\ud83d\\ude00", 1.5e3, -0, null, false]}\n',
    "split-lines": b'{"execute":\n "block-export-del",\n "arguments": {"id": "e0", "mode": "hard"}}\n[1, 2]\n}\n',
}
for name, data in qmp.items():
    write("qmp", name, bytes([len(data) // 2]) + data)

# Command lines: NUL-separated arguments.
cmd = {
    "blockdev-export": ["--blockdev", "driver=file,node-name=disk0,filename=/tmp/x.img,cache.direct=on",
                        "--object", "iothread,id=io0",
                        "--export", "type=vhost-user-blk,id=e0,node-name=disk0,addr.type=unix,addr.path=/tmp/e0.sock,"
                                    "writable=on,iothread=io0,num-queues=2"],
    "json-blockdev": ['--blockdev', '{"driver": "null-co", "node-name": "n0", "size": 1048576}',
                      '--chardev', 'socket,id=qmp0,path=/tmp/qmp.sock,server=on,wait=off',
                      '--monitor', 'chardev=qmp0', '--pidfile', '/tmp/spindle.pid'],
    "iothread-vector": ['--blockdev', 'null-co,node-name=n0', '--object', 'iothread,id=a', '--object', 'iothread,id=b',
                        '--export', '{"type": "vhost-user-blk", "id": "e", "node-name": "n0", '
                                    '"addr": {"type": "unix", "path": "/tmp/s"}, "iothread": ["a", "b"]}'],
    "help": ["--help"],
    "daemonize": ["--daemonize", "--pidfile=/run/x.pid", "--", "extra"],
}
for name, args in cmd.items():
    write("command-line", name, b"\0".join(a.encode() for a in args))

# qcow2 header: a whole small image (512-byte clusters: header, refcount table, L1, spare),
# v3 with extensions and a backing file name, and v2.
def qcow2(version=3, extensions=b"", backing=b"", incompat=0):
    cluster = 512
    header_len = 112 if version == 3 else 72
    ext_end = header_len + len(extensions) + 8
    head = struct.pack(">IIQIIQIIQQIIQ", 0x514649FB, version, ext_end if backing else 0, len(backing), 9,
                       32 * 1024, 0, 1, 1024, 512, 1, 0, 0)
    if version == 3:
        head += struct.pack(">QQQII", incompat, 1, 0, 4, header_len) + bytes(8)
    image = bytearray(head + extensions + bytes(8) + backing)
    image += bytes(4 * cluster - len(image))
    struct.pack_into(">Q", image, 512, 1536)           # refcount block in cluster 3
    return bytes(image)


def ext(kind, data):
    return struct.pack(">II", kind, len(data)) + data + bytes(-len(data) % 8)


write("qcow2-header", "v3-plain", qcow2())
write("qcow2-header", "v2-plain", qcow2(version=2))
write("qcow2-header", "v3-backing", qcow2(extensions=ext(0xE2792ACA, b"qcow2") + ext(0x6803F857, bytes([0, 0]) + b"dirty".ljust(46, b"\0")),
                                          backing=b"base.qcow2"))
write("qcow2-header", "v3-unknown-bit", qcow2(incompat=1 << 9))

# qcow2 L2 entries: cluster_bits selector (value % 13 + 9), then little-endian entries.
entries = [0, 1, 0x8000000000050000, 0x50000, 0x4000000000000000 | (3 << 54) | 0x40123, 0x50200, 1 << 57 | 0x50000]
write("qcow2-l2-entry", "64k", bytes([7]) + b"".join(struct.pack("<Q", e) for e in entries))
write("qcow2-l2-entry", "512", bytes([0]) + b"".join(struct.pack("<Q", e) for e in entries))
write("qcow2-l2-entry", "2m", bytes([12]) + b"".join(struct.pack("<Q", e) for e in entries))

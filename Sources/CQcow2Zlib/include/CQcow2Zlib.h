#ifndef CQCOW2ZLIB_H
#define CQCOW2ZLIB_H
#include <stddef.h>

/* Bytes of scratch spindle_qcow2_inflate needs for zlib's state and window. */
#define SPINDLE_QCOW2_INFLATE_ARENA (64 * 1024)

/* Inflates one compressed qcow2 cluster (raw deflate, 4 KiB window as QEMU writes it) from
 * `src` (`src_len` bytes, which may run past the stream's end) into `dst` (`dst_len`
 * bytes, the cluster size). zlib's allocations come from `arena` (at least
 * SPINDLE_QCOW2_INFLATE_ARENA bytes), so nothing is malloc'd. Returns 0 when the cluster
 * is full, -1 on corrupt or short data. */
int spindle_qcow2_inflate(void *dst, size_t dst_len, const void *src, size_t src_len, void *arena, size_t arena_len);

#endif

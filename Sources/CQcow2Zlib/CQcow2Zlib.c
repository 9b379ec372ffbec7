#include "CQcow2Zlib.h"
#include <stdint.h>
#include <string.h>
#include <zlib.h>

/* A bump allocator over the caller's arena: one inflate at a time per arena. */
struct arena {
    unsigned char *base;
    size_t size;
    size_t used;
};

static voidpf arena_alloc(voidpf opaque, uInt items, uInt size) {
    struct arena *a = opaque;
    size_t bytes = (size_t)items * size;
    size_t start = (a->used + 15) & ~(size_t)15;
    if (bytes > a->size || start > a->size - bytes) return Z_NULL;
    a->used = start + bytes;
    return a->base + start;
}

static void arena_free(voidpf opaque, voidpf address) {
    (void)opaque;
    (void)address;
}

int spindle_qcow2_inflate(void *dst, size_t dst_len, const void *src, size_t src_len, void *arena_base, size_t arena_len) {
    struct arena a = { arena_base, arena_len, 0 };
    z_stream strm;
    memset(&strm, 0, sizeof strm);
    strm.zalloc = arena_alloc;
    strm.zfree = arena_free;
    strm.opaque = &a;
    if (src_len > UINT32_MAX || dst_len > UINT32_MAX) return -1;
    strm.next_in = (Bytef *)src;
    strm.avail_in = (uInt)src_len;
    strm.next_out = dst;
    strm.avail_out = (uInt)dst_len;
    /* QEMU writes raw deflate with a 4 KiB window; -15 reads any window up to 32 KiB. */
    if (inflateInit2(&strm, -15) != Z_OK) return -1;
    int ret = inflate(&strm, Z_FINISH);
    int full = strm.avail_out == 0;
    inflateEnd(&strm);
    /* Z_BUF_ERROR with a full cluster: the compressed bytes run on (sector padding). */
    if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR || ret == Z_OK) && full) return 0;
    return -1;
}

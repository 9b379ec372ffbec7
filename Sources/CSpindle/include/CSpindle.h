// C glue for Spindle: liburing and libnuma, plus small wrappers for what Swift cannot
// import (macros, CMSG_*, gettid, CPU_SET) and acquire/release accesses to shared memory.
#ifndef CSPINDLE_H
#define CSPINDLE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
// The kernel header first: liburing ships its own copy under the same include guard.
#include <linux/io_uring.h>
#include <liburing.h>
#include <numa.h>
#include <numaif.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/eventfd.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include <fcntl.h>
#include <unistd.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include "SpindleRbd.h"

// --- shared-memory ring accesses (virtqueues live in guest memory) ---
static inline uint16_t spindle_load_acquire_u16(const void *p) {
    return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE);
}
static inline void spindle_store_release_u16(void *p, uint16_t v) {
    __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE);
}
static inline uint16_t spindle_load_relaxed_u16(const void *p) {
    return __atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED);
}
static inline void spindle_store_relaxed_u16(void *p, uint16_t v) {
    __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELAXED);
}
/// 32-bit forms: a packed ring's event suppression area (off_wrap and flags) in one access.
static inline uint32_t spindle_load_relaxed_u32(const void *p) {
    return __atomic_load_n((const uint32_t *)p, __ATOMIC_RELAXED);
}
static inline void spindle_store_relaxed_u32(void *p, uint32_t v) {
    __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELAXED);
}
/// Full barrier: orders a store to the ring (e.g. avail_event) before a later load.
// --- 64-bit words shared between threads (e.g. a mirror job's dirty bitmap) ---
static inline void spindle_atomic_or_u64(uint64_t *p, uint64_t v) { __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
static inline void spindle_atomic_and_u64(uint64_t *p, uint64_t v) { __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }
static inline uint64_t spindle_atomic_exchange_u64(uint64_t *p, uint64_t v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
static inline uint64_t spindle_atomic_load_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }

static inline void spindle_fence_seq_cst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void spindle_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
static inline void spindle_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }

// --- threads ---
static inline pid_t spindle_gettid(void) { return (pid_t)gettid(); }
/// Pins the calling thread to one CPU. Returns 0 or an errno value.
int spindle_pin_current_thread(int cpu);
/// The CPU the calling thread is allowed on, if exactly one; else -1.
int spindle_current_thread_single_cpu(void);
int spindle_set_thread_name(const char *name);

// --- fd passing over Unix sockets ---
/// recvmsg with room for up to max_fds descriptors (MSG_CMSG_CLOEXEC). Returns bytes read
/// or -errno. *nfds receives the count; *truncated is set if control data was cut (MSG_CTRUNC).
ssize_t spindle_recv_with_fds(int sock, void *buf, size_t len, int *fds, int max_fds,
                              int *nfds, int *truncated);
/// sendmsg with optional fds. Returns bytes sent or -errno.
ssize_t spindle_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds);

// --- io_uring helpers for things liburing exposes only as macros ---
static inline void spindle_sqe_set_data64(struct io_uring_sqe *sqe, uint64_t data) { sqe->user_data = data; }
static inline uint64_t spindle_cqe_get_data64(const struct io_uring_cqe *cqe) { return cqe->user_data; }

/// Block device size in bytes (BLKGETSIZE64), or -errno.
int64_t spindle_blkdev_size(int fd);
/// Logical sector size of a block device (BLKSSZGET), or -errno.
int spindle_blkdev_logical_block_size(int fd);
/// Direct-I/O memory and offset alignment of an open file (statx STATX_DIOALIGN). 0 on success.
int spindle_dio_alignment(int fd, uint32_t *mem_align, uint32_t *offset_align);

// --- OFD (open file description) locks, as QEMU uses them for image locking ---
/// Tries to take (type F_RDLCK/F_WRLCK) or release (F_UNLCK) an OFD lock on one byte.
/// Returns 0 or -errno (-EAGAIN/-EACCES when held by someone else).
int spindle_ofd_setlk(int fd, int64_t start, int type);
/// Tests whether an OFD lock of `type` could be taken on one byte: 0 free, 1 conflicting, -errno.
int spindle_ofd_test(int fd, int64_t start, int type);

#endif

// --- Unix sockets (sockaddr arguments are transparent unions under _GNU_SOURCE) ---
/// Creates a non-blocking, close-on-exec Unix stream socket bound to `path`. Returns the fd or -errno.
int spindle_unix_bind(const char *path);
/// Connects a non-blocking=0 Unix stream socket to `path`. Returns the fd or -errno.
int spindle_unix_connect(const char *path);
/// accept4 with SOCK_NONBLOCK|SOCK_CLOEXEC. Returns the fd or -errno.
int spindle_accept(int listener);
/// malloc_trim(0): hands the free memory at the top of every malloc arena back to the kernel
/// (glibc keeps freed memory for reuse otherwise; IOThreads allocate in arenas of their own).
/// Returns 1 if memory was released.
int spindle_malloc_trim(void);

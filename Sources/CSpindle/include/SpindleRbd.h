// librbd and librados, loaded at run time (dlopen) so that spindle runs on hosts without
// Ceph. Only the functions the rbd driver uses, with librbd 16.2's prototypes written out
// here (no build-time dependency on librbd-dev). `spindle_rbd_load` fills the table once;
// the inline wrappers below call through it and must not be used before it succeeded.
#ifndef SPINDLE_RBD_H
#define SPINDLE_RBD_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef void *spindle_rados_t;
typedef void *spindle_rados_ioctx_t;
typedef void *spindle_rbd_image_t;
typedef void *spindle_rbd_completion_t;

/// librbd's EVENT_TYPE_EVENTFD (rbd_set_image_notification).
#define SPINDLE_RBD_EVENT_TYPE_EVENTFD 2

struct spindle_rbd_api {
    int (*rados_create)(spindle_rados_t *cluster, const char *id);
    int (*rados_conf_read_file)(spindle_rados_t cluster, const char *path);
    int (*rados_conf_set)(spindle_rados_t cluster, const char *option, const char *value);
    int (*rados_connect)(spindle_rados_t cluster);
    void (*rados_shutdown)(spindle_rados_t cluster);
    int (*rados_ioctx_create)(spindle_rados_t cluster, const char *pool, spindle_rados_ioctx_t *ioctx);
    void (*rados_ioctx_destroy)(spindle_rados_ioctx_t ioctx);
    void (*rados_ioctx_set_namespace)(spindle_rados_ioctx_t ioctx, const char *nspace);
    int (*rbd_open)(spindle_rados_ioctx_t io, const char *name, spindle_rbd_image_t *image, const char *snap);
    int (*rbd_open_read_only)(spindle_rados_ioctx_t io, const char *name, spindle_rbd_image_t *image, const char *snap);
    int (*rbd_close)(spindle_rbd_image_t image);
    int (*rbd_get_size)(spindle_rbd_image_t image, uint64_t *size);
    int (*rbd_resize)(spindle_rbd_image_t image, uint64_t size);
    int (*rbd_flush)(spindle_rbd_image_t image);
    int (*rbd_set_image_notification)(spindle_rbd_image_t image, int fd, int type);
    int (*rbd_poll_io_events)(spindle_rbd_image_t image, spindle_rbd_completion_t *comps, int numcomp);
    int (*rbd_aio_create_completion)(void *arg, void (*cb)(spindle_rbd_completion_t, void *), spindle_rbd_completion_t *c);
    int (*rbd_aio_readv)(spindle_rbd_image_t image, const struct iovec *iov, int iovcnt, uint64_t off, spindle_rbd_completion_t c);
    int (*rbd_aio_writev)(spindle_rbd_image_t image, const struct iovec *iov, int iovcnt, uint64_t off, spindle_rbd_completion_t c);
    int (*rbd_aio_flush)(spindle_rbd_image_t image, spindle_rbd_completion_t c);
    int (*rbd_aio_discard)(spindle_rbd_image_t image, uint64_t off, uint64_t len, spindle_rbd_completion_t c);
    int (*rbd_aio_write_zeroes)(spindle_rbd_image_t image, uint64_t off, size_t len, spindle_rbd_completion_t c, int zero_flags, int op_flags);
    ssize_t (*rbd_aio_get_return_value)(spindle_rbd_completion_t c);
    void *(*rbd_aio_get_arg)(spindle_rbd_completion_t c);
    void (*rbd_aio_release)(spindle_rbd_completion_t c);
    // Watching for changes made elsewhere, and the exclusive lock (RbdUpdateWatch, RbdDriver).
    int (*rbd_update_watch)(spindle_rbd_image_t image, uint64_t *handle, void (*cb)(void *arg), void *arg);
    int (*rbd_update_unwatch)(spindle_rbd_image_t image, uint64_t handle);
    int (*rbd_lock_acquire)(spindle_rbd_image_t image, int lock_mode);
    int (*rbd_lock_release)(spindle_rbd_image_t image);
    int (*rbd_is_exclusive_lock_owner)(spindle_rbd_image_t image, int *is_owner);
    int (*rbd_lock_get_owners)(spindle_rbd_image_t image, int *lock_mode, char **owners, size_t *max_owners);
    void (*rbd_lock_get_owners_cleanup)(char **owners, size_t count);
    int (*rbd_watchers_list)(spindle_rbd_image_t image, void *watchers, size_t *max_watchers);
    void (*rbd_watchers_list_cleanup)(void *watchers, size_t count);
    // Taking over a dead predecessor's lock (RbdStaleLockTakeover).
    int (*rbd_metadata_get)(spindle_rbd_image_t image, const char *key, char *value, size_t *val_len);
    int (*rbd_metadata_set)(spindle_rbd_image_t image, const char *key, const char *value);
    int (*rbd_lock_break)(spindle_rbd_image_t image, int lock_mode, const char *lock_owner);
};

/// Filled by spindle_rbd_load; read-only afterwards.
extern struct spindle_rbd_api spindle_rbd_table;

/// dlopens `librbd` and `librados` (file names or paths) and resolves every function.
/// 0 on success (also when already loaded); -1 with a message in `error` otherwise.
/// Not thread-safe: call from one thread (the control thread).
int spindle_rbd_load(const char *librbd, const char *librados, char *error, size_t error_size);

static inline int spindle_rados_create(spindle_rados_t *c, const char *id) { return spindle_rbd_table.rados_create(c, id); }
static inline int spindle_rados_conf_read_file(spindle_rados_t c, const char *p) { return spindle_rbd_table.rados_conf_read_file(c, p); }
static inline int spindle_rados_conf_set(spindle_rados_t c, const char *o, const char *v) { return spindle_rbd_table.rados_conf_set(c, o, v); }
static inline int spindle_rados_connect(spindle_rados_t c) { return spindle_rbd_table.rados_connect(c); }
static inline void spindle_rados_shutdown(spindle_rados_t c) { spindle_rbd_table.rados_shutdown(c); }
static inline int spindle_rados_ioctx_create(spindle_rados_t c, const char *pool, spindle_rados_ioctx_t *io) { return spindle_rbd_table.rados_ioctx_create(c, pool, io); }
static inline void spindle_rados_ioctx_destroy(spindle_rados_ioctx_t io) { spindle_rbd_table.rados_ioctx_destroy(io); }
static inline void spindle_rados_ioctx_set_namespace(spindle_rados_ioctx_t io, const char *ns) { spindle_rbd_table.rados_ioctx_set_namespace(io, ns); }
static inline int spindle_rbd_open(spindle_rados_ioctx_t io, const char *name, spindle_rbd_image_t *image, const char *snap, int read_only) {
    return read_only ? spindle_rbd_table.rbd_open_read_only(io, name, image, snap) : spindle_rbd_table.rbd_open(io, name, image, snap);
}
static inline int spindle_rbd_close(spindle_rbd_image_t image) { return spindle_rbd_table.rbd_close(image); }
static inline int spindle_rbd_get_size(spindle_rbd_image_t image, uint64_t *size) { return spindle_rbd_table.rbd_get_size(image, size); }
static inline int spindle_rbd_flush(spindle_rbd_image_t image) { return spindle_rbd_table.rbd_flush(image); }
static inline int spindle_rbd_resize(spindle_rbd_image_t image, uint64_t size) { return spindle_rbd_table.rbd_resize(image, size); }
static inline int spindle_rbd_set_image_notification(spindle_rbd_image_t image, int fd) {
    return spindle_rbd_table.rbd_set_image_notification(image, fd, SPINDLE_RBD_EVENT_TYPE_EVENTFD);
}
static inline int spindle_rbd_poll_io_events(spindle_rbd_image_t image, spindle_rbd_completion_t *comps, int n) { return spindle_rbd_table.rbd_poll_io_events(image, comps, n); }
/// A completion without a callback: librbd queues it for rbd_poll_io_events and writes the
/// image's notification eventfd.
static inline int spindle_rbd_aio_create_completion(void *arg, spindle_rbd_completion_t *c) { return spindle_rbd_table.rbd_aio_create_completion(arg, NULL, c); }
static inline int spindle_rbd_aio_readv(spindle_rbd_image_t image, const struct iovec *iov, int iovcnt, uint64_t off, spindle_rbd_completion_t c) {
    return spindle_rbd_table.rbd_aio_readv(image, iov, iovcnt, off, c);
}
static inline int spindle_rbd_aio_writev(spindle_rbd_image_t image, const struct iovec *iov, int iovcnt, uint64_t off, spindle_rbd_completion_t c) {
    return spindle_rbd_table.rbd_aio_writev(image, iov, iovcnt, off, c);
}
static inline int spindle_rbd_aio_flush(spindle_rbd_image_t image, spindle_rbd_completion_t c) { return spindle_rbd_table.rbd_aio_flush(image, c); }
static inline int spindle_rbd_aio_discard(spindle_rbd_image_t image, uint64_t off, uint64_t len, spindle_rbd_completion_t c) { return spindle_rbd_table.rbd_aio_discard(image, off, len, c); }
static inline int spindle_rbd_aio_write_zeroes(spindle_rbd_image_t image, uint64_t off, size_t len, spindle_rbd_completion_t c) {
    return spindle_rbd_table.rbd_aio_write_zeroes(image, off, len, c, 0, 0);
}
static inline ssize_t spindle_rbd_aio_get_return_value(spindle_rbd_completion_t c) { return spindle_rbd_table.rbd_aio_get_return_value(c); }
static inline void *spindle_rbd_aio_get_arg(spindle_rbd_completion_t c) { return spindle_rbd_table.rbd_aio_get_arg(c); }
static inline void spindle_rbd_aio_release(spindle_rbd_completion_t c) { spindle_rbd_table.rbd_aio_release(c); }

/// librbd's RBD_LOCK_MODE_EXCLUSIVE (rbd_lock_acquire).
#define SPINDLE_RBD_LOCK_MODE_EXCLUSIVE 0

/// Watches the image's header for changes made by any client (a resize from another host):
/// librbd then calls, on one of its own threads, a function that only adds 1 to the eventfd
/// `fd` (nothing else happens on librbd's thread). `fd` must stay open until
/// spindle_rbd_update_unwatch has returned.
int spindle_rbd_update_watch(spindle_rbd_image_t image, uint64_t *handle, int fd);
static inline int spindle_rbd_update_unwatch(spindle_rbd_image_t image, uint64_t handle) { return spindle_rbd_table.rbd_update_unwatch(image, handle); }
/// Takes the exclusive lock explicitly: librbd then refuses to hand it to another client
/// that asks (its writes fail with EROFS) until spindle_rbd_lock_release.
static inline int spindle_rbd_lock_acquire_exclusive(spindle_rbd_image_t image) { return spindle_rbd_table.rbd_lock_acquire(image, SPINDLE_RBD_LOCK_MODE_EXCLUSIVE); }
static inline int spindle_rbd_lock_release(spindle_rbd_image_t image) { return spindle_rbd_table.rbd_lock_release(image); }
static inline int spindle_rbd_is_exclusive_lock_owner(spindle_rbd_image_t image, int *is_owner) { return spindle_rbd_table.rbd_is_exclusive_lock_owner(image, is_owner); }

/// Who holds the exclusive lock, without waiting for it (rbd_lock_acquire waits until a dead
/// holder's watch expires). 0: nobody; 1: a client that still watches the image (alive, or
/// dead less than the OSDs' watch timeout ago); 2: a client that no longer watches it (dead:
/// taking the lock breaks it and blocklists that client); negative errno: cannot tell.
/// The holder's address goes into `owner`.
int spindle_rbd_lock_owner_state(spindle_rbd_image_t image, char *owner, size_t owner_size);

/// One metadata value of the image (`rbd image-meta get`): 0 and a NUL-terminated `value`,
/// -ENOENT without that key, -ERANGE if it does not fit in `value_size` bytes.
static inline int spindle_rbd_metadata_get(spindle_rbd_image_t image, const char *key, char *value, size_t value_size) {
    size_t length = value_size;
    int rc = spindle_rbd_table.rbd_metadata_get(image, key, value, &length);
    if (rc == 0 && (value_size == 0 || memchr(value, 0, value_size) == NULL)) return -ERANGE;
    return rc;
}
static inline int spindle_rbd_metadata_set(spindle_rbd_image_t image, const char *key, const char *value) { return spindle_rbd_table.rbd_metadata_set(image, key, value); }
/// Breaks the exclusive lock `owner` holds (an address from rbd_lock_get_owners; -EBUSY if
/// the lock has changed hands since) and, with rbd_blocklist_on_break_lock, blocklists it.
/// Breaks a live holder's lock too: the caller must know the holder is dead.
static inline int spindle_rbd_lock_break_exclusive(spindle_rbd_image_t image, const char *owner) {
    return spindle_rbd_table.rbd_lock_break(image, SPINDLE_RBD_LOCK_MODE_EXCLUSIVE, owner);
}

#endif

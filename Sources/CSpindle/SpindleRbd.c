#include "SpindleRbd.h"
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct spindle_rbd_api spindle_rbd_table;
static int loaded;

// Resolves `name` from either library into `*slot`; writes the error and fails if absent.
static int resolve(void *rbd, void *rados, const char *name, void **slot, char *error, size_t size) {
    void *symbol = dlsym(rbd, name);
    if (!symbol) symbol = dlsym(rados, name);
    if (!symbol) {
        snprintf(error, size, "symbol %s not found (librbd too old?)", name);
        return -1;
    }
    *slot = symbol;
    return 0;
}

int spindle_rbd_load(const char *librbd, const char *librados, char *error, size_t error_size) {
    if (loaded) return 0;
    // librados first: librbd needs it, and a missing librados gets its own message.
    void *rados = dlopen(librados, RTLD_NOW | RTLD_LOCAL);
    if (!rados) {
        snprintf(error, error_size, "%s", dlerror());
        return -1;
    }
    void *rbd = dlopen(librbd, RTLD_NOW | RTLD_LOCAL);
    if (!rbd) {
        snprintf(error, error_size, "%s", dlerror());
        dlclose(rados);
        return -1;
    }
    struct spindle_rbd_api table;
#define RESOLVE(name) if (resolve(rbd, rados, #name, (void **)&table.name, error, error_size)) goto fail
    RESOLVE(rados_create); RESOLVE(rados_conf_read_file); RESOLVE(rados_conf_set); RESOLVE(rados_connect);
    RESOLVE(rados_shutdown); RESOLVE(rados_ioctx_create); RESOLVE(rados_ioctx_destroy);
    RESOLVE(rados_ioctx_set_namespace); RESOLVE(rbd_open); RESOLVE(rbd_open_read_only); RESOLVE(rbd_close);
    RESOLVE(rbd_get_size); RESOLVE(rbd_resize); RESOLVE(rbd_flush); RESOLVE(rbd_set_image_notification); RESOLVE(rbd_poll_io_events);
    RESOLVE(rbd_aio_create_completion); RESOLVE(rbd_aio_readv); RESOLVE(rbd_aio_writev); RESOLVE(rbd_aio_flush);
    RESOLVE(rbd_aio_discard); RESOLVE(rbd_aio_write_zeroes); RESOLVE(rbd_aio_get_return_value);
    RESOLVE(rbd_aio_get_arg); RESOLVE(rbd_aio_release);
    RESOLVE(rbd_update_watch); RESOLVE(rbd_update_unwatch); RESOLVE(rbd_lock_acquire); RESOLVE(rbd_lock_release);
    RESOLVE(rbd_is_exclusive_lock_owner); RESOLVE(rbd_lock_get_owners); RESOLVE(rbd_lock_get_owners_cleanup);
    RESOLVE(rbd_watchers_list); RESOLVE(rbd_watchers_list_cleanup);
    RESOLVE(rbd_metadata_get); RESOLVE(rbd_metadata_set); RESOLVE(rbd_lock_break);
#undef RESOLVE
    // The libraries stay loaded for the life of the process (librados' threads run their code).
    spindle_rbd_table = table;
    loaded = 1;
    return 0;
fail:
    dlclose(rbd);
    dlclose(rados);
    return -1;
}

// Runs on a librbd thread: only wakes the control thread (an eventfd it watches).
static void spindle_rbd_update_wake(void *arg) {
    uint64_t one = 1;
    ssize_t written = write((int)(intptr_t)arg, &one, sizeof one);
    (void)written;  // EAGAIN: the counter is already non-zero, the wakeup is pending anyway
}

int spindle_rbd_update_watch(spindle_rbd_image_t image, uint64_t *handle, int fd) {
    return spindle_rbd_table.rbd_update_watch(image, handle, spindle_rbd_update_wake, (void *)(intptr_t)fd);
}

// librbd 16.2's rbd_image_watcher_t.
struct spindle_rbd_watcher {
    char *addr;
    int64_t id;
    uint64_t cookie;
};

// The part of an entity address that names one client instance: its nonce, after the last '/'
// (the same whether an address is written with a "v1:"/"v2:" prefix or not).
static const char *nonce_of(const char *address) {
    const char *slash = strrchr(address, '/');
    return slash ? slash + 1 : address;
}

int spindle_rbd_lock_owner_state(spindle_rbd_image_t image, char *owner, size_t owner_size) {
    int mode = 0;
    char *owners[8];
    size_t count = 8;
    int rc = spindle_rbd_table.rbd_lock_get_owners(image, &mode, owners, &count);
    if (rc == -ENOENT || (rc == 0 && count == 0)) return 0;
    if (rc < 0) return rc;
    snprintf(owner, owner_size, "%s", owners[0]);
    spindle_rbd_table.rbd_lock_get_owners_cleanup(owners, count);
    struct spindle_rbd_watcher watchers[64];
    size_t watcher_count = 64;
    rc = spindle_rbd_table.rbd_watchers_list(image, watchers, &watcher_count);
    if (rc < 0) return rc;
    int watching = 0;
    for (size_t i = 0; i < watcher_count; i++) {
        if (watchers[i].addr && strcmp(nonce_of(watchers[i].addr), nonce_of(owner)) == 0) watching = 1;
    }
    spindle_rbd_table.rbd_watchers_list_cleanup(watchers, watcher_count);
    return watching ? 1 : 2;
}

#include "CSpindle.h"
#include <string.h>
#include <sys/syscall.h>
#include <linux/stat.h>

int spindle_pin_current_thread(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

int spindle_current_thread_single_cpu(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (pthread_getaffinity_np(pthread_self(), sizeof(set), &set) != 0) return -1;
    if (CPU_COUNT(&set) != 1) return -1;
    for (int i = 0; i < CPU_SETSIZE; i++) if (CPU_ISSET(i, &set)) return i;
    return -1;
}

int spindle_set_thread_name(const char *name) {
    char buf[16];
    strncpy(buf, name, sizeof(buf) - 1);
    buf[15] = 0;
    return pthread_setname_np(pthread_self(), buf);
}

#define SPINDLE_MAX_FDS 32

ssize_t spindle_recv_with_fds(int sock, void *buf, size_t len, int *fds, int max_fds,
                              int *nfds, int *truncated) {
    char control[CMSG_SPACE(sizeof(int) * SPINDLE_MAX_FDS)];
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    *nfds = 0;
    *truncated = 0;
    ssize_t n;
    do { n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    if (msg.msg_flags & MSG_CTRUNC) *truncated = 1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *data = (int *)CMSG_DATA(c);
        for (int i = 0; i < count; i++) {
            if (*nfds < max_fds) fds[(*nfds)++] = data[i];
            else { close(data[i]); *truncated = 1; }
        }
    }
    return n;
}

ssize_t spindle_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
    char control[CMSG_SPACE(sizeof(int) * SPINDLE_MAX_FDS)];
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds > SPINDLE_MAX_FDS) return -EINVAL;
    if (nfds > 0) {
        memset(control, 0, sizeof(control));
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    ssize_t n;
    do { n = sendmsg(sock, &msg, MSG_NOSIGNAL); } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

int64_t spindle_blkdev_size(int fd) {
    uint64_t size = 0;
    if (ioctl(fd, BLKGETSIZE64, &size) < 0) return -errno;
    return (int64_t)size;
}

int spindle_blkdev_logical_block_size(int fd) {
    int size = 0;
    if (ioctl(fd, BLKSSZGET, &size) < 0) return -errno;
    return size;
}

int spindle_dio_alignment(int fd, uint32_t *mem_align, uint32_t *offset_align) {
#ifdef STATX_DIOALIGN
    struct statx stx;
    memset(&stx, 0, sizeof(stx));
    if (syscall(SYS_statx, fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) < 0) return -errno;
    if (!(stx.stx_mask & STATX_DIOALIGN)) return -EOPNOTSUPP;
    *mem_align = stx.stx_dio_mem_align;
    *offset_align = stx.stx_dio_offset_align;
    return 0;
#else
    (void)fd; *mem_align = 0; *offset_align = 0;
    return -EOPNOTSUPP;
#endif
}

int spindle_ofd_setlk(int fd, int64_t start, int type) {
    struct flock fl = { .l_whence = SEEK_SET, .l_start = start, .l_len = 1, .l_type = (short)type };
    if (fcntl(fd, F_OFD_SETLK, &fl) < 0) return -errno;
    return 0;
}

int spindle_ofd_test(int fd, int64_t start, int type) {
    struct flock fl = { .l_whence = SEEK_SET, .l_start = start, .l_len = 1, .l_type = (short)type };
    if (fcntl(fd, F_OFD_GETLK, &fl) < 0) return -errno;
    return fl.l_type == F_UNLCK ? 0 : 1;
}

static int fill_unix_address(struct sockaddr_un *address, const char *path) {
    memset(address, 0, sizeof(*address));
    address->sun_family = AF_UNIX;
    size_t length = strlen(path);
    if (length == 0 || length >= sizeof(address->sun_path)) return -ENAMETOOLONG;
    memcpy(address->sun_path, path, length + 1);
    return 0;
}

int spindle_unix_bind(const char *path) {
    struct sockaddr_un address;
    int rc = fill_unix_address(&address, path);
    if (rc < 0) return rc;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    // Linux creates the socket file with the socket inode's mode (minus the umask): owner-only
    // from the first instant, whatever the umask, so there is no window before a chmod.
    if (fchmod(fd, 0600) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (bind(fd, (struct sockaddr *)&address, sizeof(address)) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int spindle_unix_connect(const char *path) {
    struct sockaddr_un address;
    int rc = fill_unix_address(&address, path);
    if (rc < 0) return rc;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if (connect(fd, (struct sockaddr *)&address, sizeof(address)) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int spindle_accept(int listener) {
    int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

#include <malloc.h>
int spindle_malloc_trim(void) {
    return malloc_trim(0);
}

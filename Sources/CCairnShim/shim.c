#define _GNU_SOURCE
#include "cairn_shim.h"
#include <unistd.h>
#include <string.h>
#include <errno.h>
#include <stdio.h>
#include <sys/vfs.h>
#include <sched.h>

int cairn_enable_verity(int fd) {
    struct fsverity_enable_arg arg;
    memset(&arg, 0, sizeof arg);
    arg.version = 1;
    arg.hash_algorithm = FS_VERITY_HASH_ALG_SHA256;
    arg.block_size = 4096;
    return ioctl(fd, FS_IOC_ENABLE_VERITY, &arg);
}

int cairn_measure_verity(int fd, uint8_t digest[32]) {
    uint64_t storage[(sizeof(struct fsverity_digest) + 64) / 8 + 1];
    struct fsverity_digest *d = (struct fsverity_digest *)storage;
    memset(storage, 0, sizeof storage);
    d->digest_size = 64;
    if (ioctl(fd, FS_IOC_MEASURE_VERITY, d) != 0)
        return -1;
    if (d->digest_algorithm != FS_VERITY_HASH_ALG_SHA256 || d->digest_size != 32) {
        errno = EINVAL;
        return -1;
    }
    memcpy(digest, d->digest, 32);
    return 0;
}

int cairn_ioctl_int(int fd, unsigned long request, long arg) { return ioctl(fd, request, arg); }
int cairn_ioctl_ptr(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }

int cairn_syncfs(int fd) { return syncfs(fd); }

#define CAIRN_FICLONE _IOW(0x94, 9, int)

int cairn_copy_file(int in, int out) {
    if (ioctl(out, CAIRN_FICLONE, in) == 0) return 0;
    int kernel_copy = 1;
    char buf[1 << 16];
    for (;;) {
        ssize_t n;
        if (kernel_copy) {
            n = copy_file_range(in, NULL, out, NULL, (size_t)1 << 30, 0);
            if (n < 0 && (errno == ENOSYS || errno == EXDEV || errno == EINVAL || errno == EOPNOTSUPP)) {
                kernel_copy = 0;  /* nothing was copied by this call: go on by hand */
                continue;
            }
        } else {
            n = read(in, buf, sizeof buf);
            if (n > 0) {
                for (ssize_t done = 0; done < n;) {
                    ssize_t w = write(out, buf + done, (size_t)(n - done));
                    if (w < 0) { if (errno == EINTR) continue; return -1; }
                    done += w;
                }
            }
        }
        if (n == 0) return 0;
        if (n < 0) { if (errno == EINTR) continue; return -1; }
    }
}

/* linux/fs.h clashes with sys/mount.h: its three values, as the kernel defines them. */
#define CAIRN_FS_IOC_GETFLAGS _IOR('f', 1, long)
#define CAIRN_FS_IOC_SETFLAGS _IOW('f', 2, long)
#define CAIRN_FS_IMMUTABLE_FL 0x00000010

int cairn_clear_immutable(int fd) {
    int flags;
    if (ioctl(fd, CAIRN_FS_IOC_GETFLAGS, &flags) != 0)
        return (errno == ENOTTY || errno == EOPNOTSUPP || errno == EINVAL) ? 0 : -1;
    if (!(flags & CAIRN_FS_IMMUTABLE_FL)) return 0;
    flags &= ~CAIRN_FS_IMMUTABLE_FL;
    return ioctl(fd, CAIRN_FS_IOC_SETFLAGS, &flags);
}

int cairn_rename_exchange(int olddirfd, const char *oldpath, int newdirfd, const char *newpath) {
    return renameat2(olddirfd, oldpath, newdirfd, newpath, RENAME_EXCHANGE);
}

long cairn_filesystem_type(const char *path) {
    struct statfs st;
    if (statfs(path, &st) != 0)
        return -1;
    return (long)st.f_type;
}

int cairn_unshare_mount_namespace(void) { return unshare(CLONE_NEWNS); }

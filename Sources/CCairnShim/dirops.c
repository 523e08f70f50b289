#define _GNU_SOURCE
#include "cairn_dirops.h"
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

const int cairn_O_PATH = O_PATH;
const int cairn_AT_EMPTY_PATH = AT_EMPTY_PATH;

int cairn_mount_id(int fd, uint64_t *id) {
    struct statx sx;
    if (statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_MNT_ID, &sx) != 0) return -1;
    if (!(sx.stx_mask & STATX_MNT_ID)) {
        errno = ENOSYS;
        return -1;
    }
    *id = sx.stx_mnt_id;
    return 0;
}

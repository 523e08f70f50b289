#ifndef CAIRN_DIROPS_H
#define CAIRN_DIROPS_H
/* Descriptor-relative interfaces that glibc declares only under _GNU_SOURCE,
   for walking trees without following symlinks (CairnSystem's
   DirectoryOperations). */
#include <stdint.h>

extern const int cairn_O_PATH;
extern const int cairn_AT_EMPTY_PATH;
/* The id of the mount holding fd's file (statx STATX_MNT_ID): 0, or -1 with
   errno (ENOSYS or EINVAL on kernels before 5.8). */
int cairn_mount_id(int fd, uint64_t *id);
#endif

#ifndef CAIRN_SHIM_H
#define CAIRN_SHIM_H
/* Kernel interfaces that Swift's Glibc module does not export, with
   non-variadic wrappers for the variadic ones (ioctl). */
#include <sys/types.h>
#include <sys/xattr.h>
#include <sys/mount.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <linux/fsverity.h>
#include <linux/loop.h>
#include <stdint.h>

/* FS_IOC_ENABLE_VERITY with SHA-256 and 4096-byte blocks. */
int cairn_enable_verity(int fd);
/* FS_IOC_MEASURE_VERITY for SHA-256: writes 32 bytes to digest.
   Returns 0, or -1 with errno (ENODATA: no verity on this file). */
int cairn_measure_verity(int fd, uint8_t digest[32]);
int cairn_ioctl_int(int fd, unsigned long request, long arg);
int cairn_ioctl_ptr(int fd, unsigned long request, void *arg);
/* syncfs(2), which glibc declares only under _GNU_SOURCE. */
int cairn_syncfs(int fd);
/* renameat2(2) with RENAME_EXCHANGE: swaps two names in one step. */
int cairn_rename_exchange(int olddirfd, const char *oldpath, int newdirfd, const char *newpath);
/* unshare(CLONE_NEWNS): this thread (and the threads it starts) get a
   private copy of the mount table. */
int cairn_unshare_mount_namespace(void);
/* Makes out's content in's: a reflink (FICLONE) where the filesystem
   shares blocks, else copy_file_range(2) to the end, else read/write.
   0, or -1 with errno. */
int cairn_copy_file(int in, int out);
/* Clears FS_IMMUTABLE_FL (chattr -i) of the file open at fd, as ostree
   sets it on its deployment directories. 0 also where the filesystem has
   no such flags; -1 with errno otherwise. */
int cairn_clear_immutable(int fd);
/* statfs(2) f_type of the filesystem holding path, or -1 with errno. */
long cairn_filesystem_type(const char *path);
#endif

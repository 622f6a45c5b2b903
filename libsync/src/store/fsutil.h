/*
 * File-system helpers shared by the persistence adapters: directories, complete writes, crash-safe
 * replacement and never-overwriting renames. Functions return 0, or -1 with errno set, so each
 * caller can say which path and which step failed.
 */
#ifndef LIBSYNC_SRC_FSUTIL_H
#define LIBSYNC_SRC_FSUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* mkdir -p with mode 0777 (before umask); an existing directory is success. */
int fs_mkdirs(const char *path);

/* The directory part of `path` ("." when it has none); caller frees. NULL on ENOMEM. */
char *fs_dirname(const char *path);

/* fs_mkdirs() of the directory that holds `path`. */
int fs_mkdirs_parent(const char *path);

/* "<base>.tmp-<pid>-<n>", n unique in the process; caller frees. NULL on ENOMEM. */
char *fs_temp_name(const char *base);

/* Creates `tmp_path` (it must not exist) with permissions `mode` (0: 0666 less the umask),
 * writes every byte of `iov`, fsyncs it when asked and closes it. On failure the file is removed
 * and errno tells the cause. */
int fs_write_new_file(const char *tmp_path, mode_t mode, const struct iovec *iov, int iovcnt,
                      int do_fsync);

/* fsync of a directory, so that a rename inside it survives a power loss. */
int fs_fsync_dir(const char *dir);

/* Renames `from` to "<prefix><ms><suffix>" without ever replacing an existing file: when that
 * name is taken, ms grows by one until a free name is found (bounded). *inout_ms gives the first
 * ms to try and receives the one used; *out_path (may be NULL) receives the new name (caller
 * frees). */
int fs_rename_stamped(const char *from, const char *prefix, const char *suffix, int64_t *inout_ms,
                      char **out_path);

/* Reads a whole regular file into a NUL-terminated buffer (caller frees). EISDIR for a
 * directory, EINVAL for anything else that is not a regular file (a FIFO, a device). */
int fs_read_file(const char *path, char **out, size_t *out_len);

#endif

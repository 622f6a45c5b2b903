/*
 * File-system helpers for the adapter tests: reading and writing whole files, finding the files
 * an adapter left in a directory, and the two ways tests provoke I/O failures as root (a
 * read-only bind mount in a private mount namespace, and RLIMIT_FSIZE for "disk full").
 */
#ifndef LIBSYNC_TEST_ADAPTER_FS_H
#define LIBSYNC_TEST_ADAPTER_FS_H

#include <stddef.h>

/* "<dir>/<name>"; aborts on ENOMEM; caller frees. */
char *afs_join(const char *dir, const char *name);
int afs_exists(const char *path);
/* The whole file as a NUL-terminated string, or NULL; caller frees. */
char *afs_read(const char *path);
/* Creates or replaces `path` with `text`; 0 on success. */
int afs_write(const char *path, const char *text);
/* Number of entries of `dir` whose name starts with `prefix`. */
size_t afs_count(const char *dir, const char *prefix);
/* Full path of the first entry of `dir` whose name starts with `prefix`, or NULL; caller frees. */
char *afs_find(const char *dir, const char *prefix);

/* Makes `dir` read-only for this process only (a private mount namespace, a read-only bind
 * mount). 0 on success; -1 (with the reason printed) where the machine does not allow it. */
int afs_make_readonly(const char *dir);
/* Undoes afs_make_readonly(). */
void afs_make_writable(const char *dir);

/* Limits the size of files this process writes (SIGXFSZ ignored, so writes fail with EFBIG,
 * which is how a full disk looks to the code under test); 0 lifts the limit. */
void afs_limit_file_size(size_t bytes);

/* A JSON object whose text is exactly `bytes` long: {"pad":"xxx..."}; caller frees. */
char *afs_big_state(size_t bytes);

#endif

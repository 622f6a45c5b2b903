#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A name taken for this many consecutive milliseconds means something else is wrong. */
#define FS_STAMP_TRIES 1000

int fs_mkdirs(const char *path)
{
    if (!path || !*path) {
        errno = ENOENT;
        return -1;
    }
    struct stat st;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode))
            return 0;
        errno = ENOTDIR;
        return -1;
    }
    char *copy = strdup(path);
    if (!copy)
        return -1;
    /* Create each missing ancestor in turn; EEXIST covers a racing creator. */
    for (char *p = copy + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(copy, 0777) != 0 && errno != EEXIST) {
            int err = errno;
            free(copy);
            errno = err;
            return -1;
        }
        *p = saved;
        if (saved == '\0')
            break;
    }
    free(copy);
    if (stat(path, &st) != 0)
        return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

char *fs_dirname(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

int fs_mkdirs_parent(const char *path)
{
    char *dir = fs_dirname(path);
    if (!dir)
        return -1;
    int rc = fs_mkdirs(dir);
    int err = errno;
    free(dir);
    errno = err;
    return rc;
}

char *fs_temp_name(const char *base)
{
    static atomic_ulong counter;
    unsigned long n = atomic_fetch_add(&counter, 1);
    char *name = NULL;
    if (asprintf(&name, "%s.tmp-%ld-%lu", base, (long)getpid(), n) < 0)
        return NULL;
    return name;
}

/* writev until every byte is written: a regular file may take less than asked (a signal, a
 * quota), and each short write resumes where the last one stopped. */
static int write_all(int fd, const struct iovec *iov_in, int iovcnt)
{
    struct iovec iov[8];
    if (iovcnt < 0 || (size_t)iovcnt > sizeof iov / sizeof iov[0]) {
        errno = EINVAL;
        return -1;
    }
    memcpy(iov, iov_in, (size_t)iovcnt * sizeof iov[0]);
    struct iovec *cur = iov;
    while (iovcnt > 0) {
        if (cur->iov_len == 0) {
            cur++;
            iovcnt--;
            continue;
        }
        ssize_t n = writev(fd, cur, iovcnt);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0) {
            errno = EIO;
            return -1;
        }
        size_t done = (size_t)n;
        while (iovcnt > 0 && done >= cur->iov_len) {
            done -= cur->iov_len;
            cur++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            cur->iov_base = (char *)cur->iov_base + done;
            cur->iov_len -= done;
        }
    }
    return 0;
}

int fs_write_new_file(const char *tmp_path, mode_t mode, const struct iovec *iov, int iovcnt,
                      int do_fsync)
{
    int fd;
    do {
        fd = open(tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -1;
    int rc = mode ? fchmod(fd, mode) : 0;
    if (rc == 0)
        rc = write_all(fd, iov, iovcnt);
    if (rc == 0 && do_fsync) {
        while ((rc = fsync(fd)) != 0 && errno == EINTR) {
        }
    }
    int err = errno;
    /* close() may report a deferred write error (NFS); it counts as a failed write. */
    if (close(fd) != 0 && rc == 0 && errno != EINTR) {
        rc = -1;
        err = errno;
    }
    if (rc != 0) {
        unlink(tmp_path);
        errno = err;
    }
    return rc;
}

int fs_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc;
    while ((rc = fsync(fd)) != 0 && errno == EINTR) {
    }
    int err = errno;
    close(fd);
    errno = err;
    return rc;
}

/* rename() that fails with EEXIST instead of replacing: renameat2(RENAME_NOREPLACE) where the
 * file system has it, else link()+unlink(), which never replaces either. */
static int rename_noreplace(const char *from, const char *to)
{
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -1;
    if (link(from, to) != 0)
        return -1;
    return unlink(from);
}

int fs_rename_stamped(const char *from, const char *prefix, const char *suffix, int64_t *inout_ms,
                      char **out_path)
{
    int64_t ms = *inout_ms;
    for (int i = 0; i < FS_STAMP_TRIES; i++, ms++) {
        char *to = NULL;
        if (asprintf(&to, "%s%" PRId64 "%s", prefix, ms, suffix) < 0)
            return -1;
        if (rename_noreplace(from, to) == 0) {
            *inout_ms = ms;
            if (out_path)
                *out_path = to;
            else
                free(to);
            return 0;
        }
        int err = errno;
        free(to);
        if (err != EEXIST) {
            errno = err;
            return -1;
        }
    }
    errno = EEXIST;
    return -1;
}

int fs_read_file(const char *path, char **out, size_t *out_len)
{
    int fd;
    do {
        /* O_NONBLOCK: opening a FIFO must not wait for a writer. */
        fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
        return -1;
    }
    /* st_size is a hint (the file may grow while read); the buffer grows as needed. */
    size_t cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 4096;
    size_t len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        errno = ENOMEM;
        return -1;
    }
    for (;;) {
        if (len + 1 >= cap) {
            char *bigger = realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                close(fd);
                errno = ENOMEM;
                return -1;
            }
            buf = bigger;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int err = errno;
            free(buf);
            close(fd);
            errno = err;
            return -1;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return 0;
}

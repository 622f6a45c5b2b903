#include "adapter_fs.h"

#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <unistd.h>

char *afs_join(const char *dir, const char *name)
{
    char *path = NULL;
    if (asprintf(&path, "%s/%s", dir, name) < 0)
        abort();
    return path;
}

int afs_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

char *afs_read(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (len + 1 == cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger)
                free(buf);
            buf = bigger;
        }
    }
    fclose(f);
    if (buf)
        buf[len] = '\0';
    return buf;
}

int afs_write(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t len = strlen(text);
    int ok = fwrite(text, 1, len, f) == len;
    return fclose(f) == 0 && ok ? 0 : -1;
}

size_t afs_count(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    size_t count = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
            count++;
    closedir(d);
    return count;
}

char *afs_find(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (!d)
        return NULL;
    char *found = NULL;
    struct dirent *e;
    while (!found && (e = readdir(d)))
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
            found = afs_join(dir, e->d_name);
    closedir(d);
    return found;
}

int afs_make_readonly(const char *dir)
{
    /* Root ignores permission bits, so only a read-only mount makes writes fail. The namespace
     * is this process's own: nothing outside the test sees the mount. */
    static int unshared;
    if (!unshared) {
        if (unshare(CLONE_NEWNS) != 0) {
            fprintf(stderr, "  (no private mount namespace here: %s)\n", strerror(errno));
            return -1;
        }
        if (mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) != 0) {
            fprintf(stderr, "  (cannot make mounts private: %s)\n", strerror(errno));
            return -1;
        }
        unshared = 1;
    }
    if (mount(dir, dir, "none", MS_BIND, NULL) != 0) {
        fprintf(stderr, "  (cannot bind-mount %s: %s)\n", dir, strerror(errno));
        return -1;
    }
    if (mount("none", dir, "none", MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) != 0) {
        fprintf(stderr, "  (cannot remount %s read-only: %s)\n", dir, strerror(errno));
        umount2(dir, MNT_DETACH);
        return -1;
    }
    return 0;
}

void afs_make_writable(const char *dir)
{
    umount2(dir, MNT_DETACH);
}

void afs_limit_file_size(size_t bytes)
{
    signal(SIGXFSZ, bytes ? SIG_IGN : SIG_DFL);
    struct rlimit rl;
    getrlimit(RLIMIT_FSIZE, &rl);
    rl.rlim_cur = bytes ? (rlim_t)bytes : rl.rlim_max;
    setrlimit(RLIMIT_FSIZE, &rl);
}

char *afs_big_state(size_t bytes)
{
    static const char head[] = "{\"pad\":\"", tail[] = "\"}";
    size_t fixed = sizeof head - 1 + sizeof tail - 1;
    if (bytes < fixed)
        bytes = fixed;
    char *text = malloc(bytes + 1);
    if (!text)
        abort();
    memcpy(text, head, sizeof head - 1);
    memset(text + sizeof head - 1, 'x', bytes - fixed);
    memcpy(text + bytes - (sizeof tail - 1), tail, sizeof tail - 1);
    text[bytes] = '\0';
    return text;
}

/* One JSON record {"state":...,"version":...} in a file of its own, replaced atomically: the file
 * adapter's single store and each room of the file room store. */
#include "file_record.h"

#include "error.h"
#include "fsutil.h"
#include "store_json.h"
#include "engine/completion.h"
#include "engine/delta.h"
#include "engine/json_check.h"
#include "libsync/common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Versions beyond 2^53 would not survive cJSON's double; no engine gets near it. */
#define FILE_MAX_EXACT_VERSION 9007199254740992.0

/* The pid in "<digits>-<digits>" (the tail of fs_temp_name()'s "<base>.tmp-<pid>-<n>"), or -1
 * when the text has any other shape. */
static long temp_name_pid(const char *tail)
{
    const char *p = tail;
    long pid = 0;
    while (*p >= '0' && *p <= '9' && pid < 1000000000L)
        pid = pid * 10 + (*p++ - '0');
    if (p == tail || *p != '-')
        return -1;
    const char *n = ++p;
    while (*p >= '0' && *p <= '9')
        p++;
    return p == n || *p ? -1 : pid;
}

void file_record_remove_stale_temps(const char *dir, const char *base)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t base_len = strlen(base);
        if (strncmp(e->d_name, base, base_len) != 0 || strncmp(e->d_name + base_len, ".tmp-", 5))
            continue;
        long pid = temp_name_pid(e->d_name + base_len + 5);
        if (pid <= 0 || pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
            unlinkat(dirfd(d), e->d_name, 0);
    }
    closedir(d);
}

/* Moves an unparseable store out of the way so that the next save starts a new file and the old
 * bytes stay available to whoever investigates. */
static int keep_aside(const file_record *fa, const char *why)
{
    char *prefix = NULL;
    if (fa->aside_prefix ? !(prefix = strdup(fa->aside_prefix))
                         : asprintf(&prefix, "%s.corrupt-", fa->path) < 0)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    int64_t ms = sync_wall_ms();
    char *aside = NULL;
    int rc = fs_rename_stamped(fa->path, prefix, "", &ms, &aside);
    int err = errno;
    free(prefix);
    if (rc != 0)
        return sync__fail(SYNC_EIO, "state file %s is corrupt (%s) and cannot be moved aside: %s",
                          fa->path, why, strerror(err));
    if (fa->fsync)
        fs_fsync_dir(fa->dir);
    rc = sync__fail(SYNC_ECORRUPT, "state file %s is corrupt (%s); kept aside as %s", fa->path, why,
                    aside);
    free(aside);
    return rc;
}

int file_record_fail_read(const file_record *fa)
{
    if (errno == EINVAL)
        return sync__fail(SYNC_EIO, "cannot read state file %s: not a regular file", fa->path);
    return sync__fail(SYNC_EIO, "cannot read state file %s: %s", fa->path, strerror(errno));
}

static int version_of(const cJSON *item, int64_t *out)
{
    if (!cJSON_IsNumber(item))
        return -1;
    double v = item->valuedouble;
    if (!isfinite(v) || v != floor(v) || fabs(v) > FILE_MAX_EXACT_VERSION)
        return -1;
    *out = (int64_t)v;
    return 0;
}

int file_record_load(const file_record *fa, char **out_state_json, int64_t *out_version)
{
    return file_record_load_epoch(fa, out_state_json, out_version, NULL);
}

int file_record_load_epoch(const file_record *fa, char **out_state_json, int64_t *out_version,
                           char *epoch)
{
    if (epoch)
        epoch[0] = '\0';
    *out_state_json = NULL;
    *out_version = 0;
    char *text = NULL;
    size_t len = 0;
    if (fs_read_file(fa->path, &text, &len) != 0) {
        if (errno == ENOENT)
            return SYNC_OK;
        return file_record_fail_read(fa);
    }
    /* The engine refuses text that is not UTF-8 (or holds a NUL); such a store must be kept
     * aside here, or the engine would start afresh and overwrite it. */
    if (sync__json_check_utf8(text, len) != SYNC_OK) {
        char why[160];
        snprintf(why, sizeof why, "%s", sync_error_last());
        free(text);
        return keep_aside(fa, why);
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        char why[96];
        size_t at = end && end >= text ? (size_t)(end - text) : 0;
        snprintf(why, sizeof why, "not valid JSON at byte %zu", at);
        free(text);
        return keep_aside(fa, why);
    }
    /* Trailing bytes after the record mean it was not written by us in one piece. */
    while (end < text + len && (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t'))
        end++;
    int trailing = end != text + len;
    /* What the engine's parser refuses (\u0000, a duplicate name, a non-finite number) is kept
     * aside like any corrupt record. */
    char refused[300] = "";
    if (sync__json_check_depth(text, len, 0) != SYNC_OK || sync__json_check_tree(root) != SYNC_OK)
        snprintf(refused, sizeof refused, "%s", sync_error_last());
    free(text);
    const cJSON *state = cJSON_GetObjectItemCaseSensitive(root, "state");
    int64_t version = 0;
    const char *why = NULL;
    if (trailing)
        why = "unexpected bytes after the JSON record";
    else if (refused[0])
        why = refused;
    else if (!cJSON_IsObject(root))
        why = "the record is not a JSON object";
    else if (!state)
        why = "no \"state\" member";
    else if (version_of(cJSON_GetObjectItemCaseSensitive(root, "version"), &version) != 0)
        why = "\"version\" is missing or not an integer";
    if (why) {
        cJSON_Delete(root);
        return keep_aside(fa, why);
    }
    *out_state_json = store_print(state); /* released with sync_free() */
    const char *kept = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "epoch"));
    if (epoch && sync__epoch_valid(kept))
        strcpy(epoch, kept);
    cJSON_Delete(root);
    if (!*out_state_json)
        return sync__fail(SYNC_ENOMEM, "out of memory printing the loaded state");
    *out_version = version;
    return SYNC_OK;
}

/* Writes `iov` to a fresh temp file beside `target`, then renames it over `target`: a crash at
 * any instant leaves the old or the new content, never a mix. */
static int replace_file(const file_record *fa, const char *target, const struct iovec *iov,
                        int iovcnt)
{
    char *tmp = fs_temp_name(fa->temp_base ? fa->temp_base : target);
    if (!tmp)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    /* A store someone restricted (chmod 600: the state may hold secrets) stays restricted. */
    struct stat st;
    mode_t mode = stat(target, &st) == 0 && S_ISREG(st.st_mode) ? (st.st_mode & 07777) : 0;
    int rc = fs_write_new_file(tmp, mode, iov, iovcnt, fa->fsync);
    if (rc != 0 && errno == ENOENT && fs_mkdirs(fa->dir) == 0)
        rc = fs_write_new_file(tmp, mode, iov, iovcnt, fa->fsync); /* the directory was removed */
    if (rc != 0) {
        rc = sync__fail(SYNC_EIO, "cannot write %s: %s", tmp, strerror(errno));
        free(tmp);
        return rc;
    }
    if (rename(tmp, target) != 0) {
        rc = sync__fail(SYNC_EIO, "cannot rename %s to %s: %s", tmp, target, strerror(errno));
        unlink(tmp);
        free(tmp);
        return rc;
    }
    free(tmp);
    if (fa->fsync && fs_fsync_dir(fa->dir) != 0)
        return sync__fail(SYNC_EIO, "cannot fsync directory %s: %s", fa->dir, strerror(errno));
    return SYNC_OK;
}

int file_record_save(const file_record *fa, const cJSON *state, const char *state_json,
                     size_t state_len, int64_t version)
{
    return file_record_save_epoch(fa, state, state_json, state_len, version, NULL);
}

int file_record_save_epoch(const file_record *fa, const cJSON *state, const char *state_json,
                           size_t state_len, int64_t version, const char *epoch)
{
    char *printed = NULL;
    int rc = store_state_text(state, &state_json, &state_len, &printed);
    if (rc != SYNC_OK)
        return rc;
    /* The state arrives serialised: the record is built around its bytes, never re-printed. */
    static const char head[] = "{\"state\":";
    char tail[48 + SYNC__EPOCH_MAX];
    int tail_len = epoch && *epoch
                       ? snprintf(tail, sizeof tail, ",\"version\":%" PRId64 ",\"epoch\":\"%s\"}\n",
                                  version, epoch)
                       : snprintf(tail, sizeof tail, ",\"version\":%" PRId64 "}\n", version);
    struct iovec iov[3] = {
        {(void *)head, sizeof head - 1},
        {(void *)state_json, state_len},
        {tail, (size_t)tail_len},
    };
    rc = replace_file(fa, fa->path, iov, 3);
    cJSON_free(printed);
    return rc;
}

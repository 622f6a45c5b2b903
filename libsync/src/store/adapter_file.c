/* The file store: one JSON record {"state":...,"version":...} replaced atomically on every save. */
#include "backup_slot.h"
#include "file_record.h"
#include "error.h"
#include "options.h"
#include "fsutil.h"
#include "engine/completion.h"
#include "engine/delta.h"
#include "engine/json_check.h"
#include "libsync/adapter.h"

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

typedef struct file_adapter {
    file_record rec; /* path, its directory (fsynced after each rename), fsync */
    char *backups_dir;
    char loaded_epoch[SYNC__EPOCH_MAX + 1]; /* what the last load read, "" none */
    char epoch[SYNC__EPOCH_MAX + 1];        /* what saves write, "" none */
} file_adapter;

static const char *file_epoch_loaded(void *userdata)
{
    return ((file_adapter *)userdata)->loaded_epoch;
}

static void file_epoch_set(void *userdata, const char *epoch)
{
    file_adapter *fa = userdata;
    snprintf(fa->epoch, sizeof fa->epoch, "%s", sync__epoch_valid(epoch) ? epoch : "");
}

static const sync__adapter_epoch file_epoch = {file_epoch_loaded, file_epoch_set};

static int file_init(void *userdata, sync_pending *pending)
{
    (void)pending;
    file_adapter *fa = userdata;
    /* Nothing is written here: a store that was never saved must load as "never saved" so the
     * engine keeps its initial state (the original wrote an empty record and wiped it). */
    if (fs_mkdirs(fa->rec.dir) != 0)
        return sync__fail(SYNC_EIO, "cannot create directory %s: %s", fa->rec.dir, strerror(errno));
    const char *slash = strrchr(fa->rec.path, '/');
    file_record_remove_stale_temps(fa->rec.dir, slash ? slash + 1 : fa->rec.path);
    return SYNC_OK;
}

static int file_load(void *userdata, sync_pending *pending, char **out_state_json,
                     int64_t *out_version)
{
    (void)pending;
    file_adapter *fa = userdata;
    return file_record_load_epoch(&fa->rec, out_state_json, out_version, fa->loaded_epoch);
}

static int file_save(void *userdata, sync_pending *pending, const cJSON *state,
                     const char *state_json, size_t state_len, int64_t version)
{
    (void)pending;
    file_adapter *fa = userdata;
    return file_record_save_epoch(&fa->rec, state, state_json, state_len, version, fa->epoch);
}

static int file_backup(void *userdata, sync_pending *pending, int64_t *out_timestamp_ms)
{
    (void)pending;
    file_adapter *fa = userdata;
    char *text = NULL;
    size_t len = 0;
    if (fs_read_file(fa->rec.path, &text, &len) != 0) {
        if (errno == ENOENT)
            return sync__fail(SYNC_ESTATE, "nothing to back up: %s has never been saved",
                              fa->rec.path);
        return file_record_fail_read(&fa->rec);
    }
    /* The copy gets an epoch of its own: restoring it breaks the history its versions had here,
     * and clients that resume with the old epoch must get the whole state, not a patch. */
    cJSON *root = cJSON_ParseWithLength(text, len);
    char fresh[SYNC__EPOCH_MAX + 1];
    sync__delta_new_epoch(fresh);
    char *copy = NULL;
    if (cJSON_IsObject(root)) {
        cJSON_DeleteItemFromObjectCaseSensitive(root, "epoch");
        if (cJSON_AddStringToObject(root, "epoch", fresh))
            copy = cJSON_PrintUnformatted(root);
    }
    cJSON_Delete(root);
    if (copy) {
        free(text);
        len = strlen(copy);
        text = malloc(len + 2);
        if (text) {
            memcpy(text, copy, len);
            text[len++] = '\n'; /* the record's format: one object and a newline */
            text[len] = '\0';
        }
        cJSON_free(copy);
        if (!text)
            return sync__fail(SYNC_ENOMEM, "out of memory");
    }
    backup_slot slot;
    int rc = backup_slot_open(&slot, fa->backups_dir);
    if (rc == SYNC_OK) {
        struct iovec iov = {text, len};
        if (fs_write_new_file(slot.tmp, 0, &iov, 1, fa->rec.fsync) != 0)
            rc = sync__fail(SYNC_EIO, "cannot write %s: %s", slot.tmp, strerror(errno));
        else
            rc = backup_slot_publish(&slot, ".json", fa->rec.fsync, out_timestamp_ms);
    }
    backup_slot_release(&slot);
    free(text);
    return rc;
}

static void file_destroy(void *userdata)
{
    file_adapter *fa = userdata;
    if (!fa)
        return;
    free(fa->rec.path);
    free(fa->rec.dir);
    free(fa->backups_dir);
    free(fa);
}

int sync_file_options_init(sync_file_options *opts, unsigned int version)
{
    static const sync_file_options defaults = SYNC_FILE_OPTIONS_INIT;
    return sync__options_init(opts, &defaults, sizeof defaults, version, SYNC_FILE_OPTIONS_VERSION,
                              "file");
}

int sync_adapter_file_new(sync_adapter **out, const sync_file_options *opts)
{
    if (!out)
        return sync__fail(SYNC_EINVAL, "out pointer is NULL");
    *out = NULL;
    int version_rc = sync__check_options(opts, SYNC_FILE_OPTIONS_VERSION, "file");
    if (version_rc != SYNC_OK)
        return version_rc;
    if (!opts->file_path || !*opts->file_path)
        return sync__fail(SYNC_EINVAL, "file_path is required");
    if (opts->backups_dir && !*opts->backups_dir)
        return sync__fail(SYNC_EINVAL, "backups_dir is empty (use NULL for no backups)");
    size_t len = strlen(opts->file_path);
    if (opts->file_path[len - 1] == '/')
        return sync__fail(SYNC_EINVAL, "file_path %s names a directory", opts->file_path);

    file_adapter *fa = calloc(1, sizeof *fa);
    if (!fa)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    fa->rec.fsync = opts->fsync != 0;
    fa->rec.path = strdup(opts->file_path);
    fa->rec.dir = fa->rec.path ? fs_dirname(fa->rec.path) : NULL;
    fa->backups_dir = opts->backups_dir ? strdup(opts->backups_dir) : NULL;
    if (!fa->rec.path || !fa->rec.dir || (opts->backups_dir && !fa->backups_dir)) {
        file_destroy(fa);
        return sync__fail(SYNC_ENOMEM, "out of memory");
    }
    sync_adapter_vtable vt = {
        .version = SYNC_ADAPTER_VTABLE_VERSION,
        .init = file_init,
        .load = file_load,
        .save = file_save,
        .backup = fa->backups_dir ? file_backup : NULL,
        .destroy = file_destroy,
    };
    int rc = sync_adapter_new(out, &vt, fa);
    if (rc == SYNC_OK) {
        sync__adapter_set_epoch_ops(*out, &file_epoch);
        sync__error_clear();
    }
    return rc;
}

/* The file room store: room NAME is the record file "<dir>/<encoded NAME>.json", written like the
 * file adapter's store. The encoding (room_name.c) keeps every name inside the directory, away
 * from '.' files, and distinct from every other name on a case-insensitive filesystem. */
#include "error.h"
#include "file_record.h"
#include "fsutil.h"
#include "options.h"
#include "room_name.h"
#include "room_epoch.h"
#include "engine/delta.h"
#include "store_json.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct file_rooms {
    char *dir;
    int fsync;
} file_rooms;

/* File names stay within NAME_MAX (255) for the longest encoding (240 + ".json"): temp files are
 * "<dir>/.tmp-<pid>-<n>" (never a room: no encoding starts with '.'), and the kept copy of a
 * corrupt record is "<encoding>.json.corrupt-<ms>", its encoding cut to ASIDE_KEEP bytes and
 * marked with '~' (never in an encoding) when the whole would not fit. */
#define TEMP_BASE ""
#define ASIDE_KEEP 200

static void record_free(file_record *rec)
{
    free(rec->path);
    free((char *)rec->temp_base);
    free((char *)rec->aside_prefix);
}

/* The record of `room` (checked here too: a custom caller of the vtable gets no shortcut). */
static int room_record(const file_rooms *fr, const char *room, file_record *out)
{
    memset(out, 0, sizeof *out);
    int rc = sync_room_name_check(room);
    if (rc != SYNC_OK)
        return rc;
    char encoded[SYNC__ROOM_ENCODED_MAX + 1];
    size_t len = sync__room_name_encode(room, encoded);
    out->dir = fr->dir;
    out->fsync = fr->fsync;
    char *temp_base = NULL, *aside = NULL;
    int cut = len > ASIDE_KEEP;
    if (asprintf(&out->path, "%s/%s.json", fr->dir, encoded) < 0)
        out->path = NULL;
    if (asprintf(&temp_base, "%s/%s", fr->dir, TEMP_BASE) < 0)
        temp_base = NULL;
    if (asprintf(&aside, "%s/%.*s%s.json.corrupt-", fr->dir, cut ? ASIDE_KEEP : (int)len, encoded,
                 cut ? "~" : "") < 0)
        aside = NULL;
    out->temp_base = temp_base;
    out->aside_prefix = aside;
    if (!out->path || !temp_base || !aside) {
        record_free(out);
        return sync__fail(SYNC_ENOMEM, "out of memory");
    }
    return SYNC_OK;
}

static int rooms_init(void *userdata, sync_pending *pending)
{
    (void)pending;
    file_rooms *fr = userdata;
    if (fs_mkdirs(fr->dir) != 0)
        return sync__fail(SYNC_EIO, "cannot create directory %s: %s", fr->dir, strerror(errno));
    file_record_remove_stale_temps(fr->dir, TEMP_BASE);
    return SYNC_OK;
}

static int rooms_load_epoch(void *userdata, sync_pending *pending, const char *room,
                            char **out_state_json, int64_t *out_version, char *epoch)
{
    (void)pending;
    *out_state_json = NULL;
    *out_version = 0;
    epoch[0] = '\0';
    file_record rec;
    int rc = room_record(userdata, room, &rec);
    if (rc != SYNC_OK)
        return rc;
    rc = file_record_load_epoch(&rec, out_state_json, out_version, epoch);
    record_free(&rec);
    return rc;
}

static int rooms_save_epoch(void *userdata, sync_pending *pending, const char *room,
                            const cJSON *state, const char *state_json, size_t state_len,
                            int64_t version, const char *epoch, int fresh, char *stored);

static const sync__room_store_epoch file_rooms_epoch = {rooms_load_epoch, rooms_save_epoch};

static int rooms_load(void *userdata, sync_pending *pending, const char *room,
                      char **out_state_json, int64_t *out_version)
{
    (void)pending;
    *out_state_json = NULL;
    *out_version = 0;
    file_record rec;
    int rc = room_record(userdata, room, &rec);
    if (rc != SYNC_OK)
        return rc;
    rc = file_record_load(&rec, out_state_json, out_version);
    record_free(&rec);
    return rc;
}

static int rooms_save(void *userdata, sync_pending *pending, const char *room, const cJSON *state,
                      const char *state_json, size_t state_len, int64_t version)
{
    (void)pending;
    file_record rec;
    int rc = room_record(userdata, room, &rec);
    if (rc != SYNC_OK)
        return rc;
    rc = file_record_save(&rec, state, state_json, state_len, version);
    record_free(&rec);
    return rc;
}

/* The record is written whole: its "epoch" member goes with every save. */
static int rooms_save_epoch(void *userdata, sync_pending *pending, const char *room,
                            const cJSON *state, const char *state_json, size_t state_len,
                            int64_t version, const char *epoch, int fresh, char *stored)
{
    (void)pending;
    (void)fresh;
    (void)stored;
    file_record rec;
    int rc = room_record(userdata, room, &rec);
    if (rc != SYNC_OK)
        return rc;
    rc = file_record_save_epoch(&rec, state, state_json, state_len, version, epoch);
    record_free(&rec);
    return rc;
}

static int rooms_remove(void *userdata, sync_pending *pending, const char *room)
{
    (void)pending;
    file_rooms *fr = userdata;
    file_record rec;
    int rc = room_record(fr, room, &rec);
    if (rc != SYNC_OK)
        return rc;
    if (unlink(rec.path) != 0 && errno != ENOENT)
        rc = sync__fail(SYNC_EIO, "cannot remove %s: %s", rec.path, strerror(errno));
    else if (fr->fsync && fs_fsync_dir(fr->dir) != 0 && errno != ENOENT)
        rc = sync__fail(SYNC_EIO, "cannot fsync directory %s: %s", fr->dir, strerror(errno));
    record_free(&rec);
    return rc;
}

/* Every "<encoding of a valid name>.json"; temp files, corrupt copies, other spellings of a name
 * and anything else in the directory are not rooms. */
static int rooms_list(void *userdata, sync_pending *pending, char **out_names_json)
{
    (void)pending;
    file_rooms *fr = userdata;
    *out_names_json = NULL;
    cJSON *names = cJSON_CreateArray();
    if (!names)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    DIR *d = opendir(fr->dir);
    if (!d && errno != ENOENT) {
        cJSON_Delete(names);
        return sync__fail(SYNC_EIO, "cannot list directory %s: %s", fr->dir, strerror(errno));
    }
    struct dirent *e;
    int oom = 0;
    while (d && !oom && (e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len <= 5 || len - 5 > SYNC__ROOM_ENCODED_MAX || strcmp(e->d_name + len - 5, ".json"))
            continue;
        char name[SYNC_ROOM_NAME_MAX + 1];
        if (sync__room_name_decode(e->d_name, len - 5, name) != 0)
            continue;
        cJSON *item = cJSON_CreateString(name);
        if (!item)
            oom = 1;
        else
            cJSON_AddItemToArray(names, item);
    }
    if (d)
        closedir(d);
    *out_names_json = oom ? NULL : store_print(names);
    cJSON_Delete(names);
    if (!*out_names_json)
        return sync__fail(SYNC_ENOMEM, "out of memory listing %s", fr->dir);
    return SYNC_OK;
}

static void rooms_destroy(void *userdata)
{
    file_rooms *fr = userdata;
    if (!fr)
        return;
    free(fr->dir);
    free(fr);
}

int sync_file_rooms_options_init(sync_file_rooms_options *opts, unsigned int version)
{
    static const sync_file_rooms_options defaults = SYNC_FILE_ROOMS_OPTIONS_INIT;
    return sync__options_init(opts, &defaults, sizeof defaults, version,
                              SYNC_FILE_ROOMS_OPTIONS_VERSION, "file rooms");
}

int sync_room_store_file_new(sync_room_store **out, const sync_file_rooms_options *opts)
{
    if (!out)
        return sync__fail(SYNC_EINVAL, "out pointer is NULL");
    *out = NULL;
    int rc = sync__check_options(opts, SYNC_FILE_ROOMS_OPTIONS_VERSION, "file rooms");
    if (rc != SYNC_OK)
        return rc;
    if (!opts->dir || !*opts->dir)
        return sync__fail(SYNC_EINVAL, "dir is required");
    file_rooms *fr = calloc(1, sizeof *fr);
    if (!fr || !(fr->dir = strdup(opts->dir))) {
        free(fr);
        return sync__fail(SYNC_ENOMEM, "out of memory");
    }
    /* "<dir>/" and "<dir>" are one directory; the record paths read better without "//". */
    size_t len = strlen(fr->dir);
    while (len > 1 && fr->dir[len - 1] == '/')
        fr->dir[--len] = '\0';
    fr->fsync = opts->fsync != 0;
    sync_room_store_vtable vt = {
        .version = SYNC_ROOM_STORE_VTABLE_VERSION,
        .init = rooms_init,
        .load = rooms_load,
        .save = rooms_save,
        .remove = rooms_remove,
        .list = rooms_list,
        .destroy = rooms_destroy,
    };
    rc = sync_room_store_new(out, &vt, fr);
    if (rc == SYNC_OK)
        sync__room_store_set_epoch_ops(*out, &file_rooms_epoch);
    return rc;
}

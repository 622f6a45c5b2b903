/* The SQLite room store: a row per room, keyed by its name, in one WAL database; one connection
 * that a mutex hands to one call at a time (calls for different rooms come from many threads). */
#include "error.h"
#include "options.h"
#include "sqlite_db.h"
#include "store_json.h"
#include "room_epoch.h"
#include "engine/completion.h"
#include "engine/delta.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "libsync/rooms.h"

#define ROOMS_DEFAULT_TABLE "websocket_rooms"

/* The name is the primary key (BINARY collation: "Room" and "room" are two rows, and ORDER BY is
 * byte order). No NOT NULL or type checks on the rest: load() must read a bad row back to keep
 * it aside. */
static const sqlite_schema room_rows = {
    .create = {"CREATE TABLE IF NOT EXISTS \"",
               "\" (name TEXT NOT NULL PRIMARY KEY, state TEXT, version INTEGER, "
               "updated_at INTEGER)"},
    /* Each room's epoch, apart so that the rooms' table keeps the columns tools know. */
    .extra = {"CREATE TABLE IF NOT EXISTS \"",
              "_epoch\" (name TEXT NOT NULL PRIMARY KEY, epoch TEXT)"},
    .prepared =
        {
            {"SELECT state, version FROM \"", "\" WHERE name = ?1"},
            {"SELECT name FROM \"", "\" ORDER BY name"},
            {"INSERT INTO \"", "\" (name, state, version, updated_at) VALUES (?1, ?2, ?3, ?4) "
                               "ON CONFLICT (name) DO UPDATE SET state = excluded.state, "
                               "version = excluded.version, updated_at = excluded.updated_at"},
            {"DELETE FROM \"", "\" WHERE name = ?1"},
        },
    .prepared_count = 4,
    .read_count = 2,
};
enum { LOAD_STMT, LIST_STMT, SAVE_STMT, REMOVE_STMT };

typedef struct sqlite_rooms {
    pthread_mutex_t lock;
    sqlite_db db;
} sqlite_rooms;

static int rooms_init(void *userdata, sync_pending *pending)
{
    (void)pending;
    sqlite_rooms *sr = userdata;
    pthread_mutex_lock(&sr->lock);
    int rc = sqlite_db_open(&sr->db);
    pthread_mutex_unlock(&sr->lock);
    return rc;
}

/* Moves room `room`'s row into <table>_corrupt (with the time it was kept), in one transaction:
 * the bad record survives every later save of that room. */
static int keep_row_aside(sqlite_rooms *sr, const char *room, const char *why)
{
    const char *t = sr->db.table;
    char *sql = sqlite3_mprintf("BEGIN IMMEDIATE;"
                                "CREATE TABLE IF NOT EXISTS \"%s_corrupt\" (kept_at INTEGER NOT "
                                "NULL, name, state, version, updated_at);"
                                "INSERT INTO \"%s_corrupt\" (kept_at, name, state, version, "
                                "updated_at) SELECT %lld, name, state, version, updated_at "
                                "FROM \"%s\" WHERE name = %Q;"
                                "DELETE FROM \"%s\" WHERE name = %Q;"
                                "COMMIT",
                                t, t, (long long)sync_wall_ms(), t, room, t, room);
    if (!sql)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    int rc = sqlite_db_exec(sr->db.db, sql);
    sqlite3_free(sql);
    if (rc != SQLITE_OK) {
        /* Not SYNC_ECORRUPT: the engine then refuses to save over the row it could not read. */
        int status = sync__fail(SYNC_EIO,
                                "the row of room %s in %s of %s is corrupt (%s) and cannot be "
                                "kept aside: %s",
                                room, t, sr->db.path, why, sqlite3_errmsg(sr->db.db));
        if (!sqlite3_get_autocommit(sr->db.db))
            sqlite_db_exec(sr->db.db, "ROLLBACK");
        return status;
    }
    return sync__fail(SYNC_ECORRUPT,
                      "the row of room %s in %s of %s is corrupt (%s); kept aside in %s_corrupt",
                      room, t, sr->db.path, why, t);
}

static int load_locked(sqlite_rooms *sr, const char *room, char **out_state_json,
                       int64_t *out_version)
{
    int rc = sqlite_db_open(&sr->db);
    if (rc != SYNC_OK)
        return rc;
    sqlite3_stmt *st = sr->db.stmt[LOAD_STMT];
    int step = sqlite3_bind_text(st, 1, room, -1, SQLITE_STATIC);
    if (step == SQLITE_OK)
        step = sqlite3_step(st);
    if (step == SQLITE_DONE) {
        sqlite3_reset(st);
        return SYNC_OK;
    }
    if (step != SQLITE_ROW) {
        rc = sqlite_db_fail(sr->db.db, "cannot load a room from", sr->db.path);
        sqlite3_reset(st);
        return rc;
    }
    const char *why = NULL;
    const char *text = (const char *)sqlite3_column_text(st, 0);
    size_t len = (size_t)sqlite3_column_bytes(st, 0);
    if (sqlite3_column_type(st, 0) == SQLITE_NULL || !text)
        why = "state is NULL";
    else if (!sqlite_db_is_json(text, len))
        why = "state is not valid JSON";
    else if (sqlite3_column_type(st, 1) != SQLITE_INTEGER)
        why = "version is not an integer";
    if (why) {
        sqlite3_reset(st);
        return keep_row_aside(sr, room, why);
    }
    char *copy = sync_malloc(len + 1);
    if (copy) {
        memcpy(copy, text, len);
        copy[len] = '\0';
        *out_version = sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    if (!copy)
        return sync__fail(SYNC_ENOMEM, "out of memory loading %zu bytes", len);
    *out_state_json = copy;
    return SYNC_OK;
}

static int rooms_load(void *userdata, sync_pending *pending, const char *room,
                      char **out_state_json, int64_t *out_version)
{
    (void)pending;
    sqlite_rooms *sr = userdata;
    *out_state_json = NULL;
    *out_version = 0;
    int rc = sync_room_name_check(room);
    if (rc != SYNC_OK)
        return rc;
    pthread_mutex_lock(&sr->lock);
    rc = load_locked(sr, room, out_state_json, out_version);
    pthread_mutex_unlock(&sr->lock);
    return rc;
}

/* Runs a prepared write bound to `room` (and the record for a save); one statement is one
 * transaction. */
static int write_locked(sqlite_rooms *sr, int which, const char *room, const char *json, size_t len,
                        int64_t version)
{
    int rc = sqlite_db_open_for_write(&sr->db);
    if (rc != SYNC_OK)
        return rc;
    sqlite3_stmt *st = sr->db.stmt[which];
    int bound = sqlite3_bind_text(st, 1, room, -1, SQLITE_STATIC);
    if (which == SAVE_STMT) {
        if (bound == SQLITE_OK)
            bound = sqlite3_bind_text64(st, 2, json, len, SQLITE_STATIC, SQLITE_UTF8);
        if (bound == SQLITE_OK)
            bound = sqlite3_bind_int64(st, 3, version);
        if (bound == SQLITE_OK)
            bound = sqlite3_bind_int64(st, 4, sync_wall_ms());
    }
    return sqlite_db_write(&sr->db, st, bound,
                           which == SAVE_STMT ? "cannot save a room to"
                                              : "cannot remove a room from");
}

static int rooms_save(void *userdata, sync_pending *pending, const char *room, const cJSON *state,
                      const char *state_json, size_t state_len, int64_t version)
{
    (void)pending;
    sqlite_rooms *sr = userdata;
    int rc = sync_room_name_check(room);
    if (rc != SYNC_OK)
        return rc;
    char *printed = NULL;
    rc = store_state_text(state, &state_json, &state_len, &printed);
    if (rc != SYNC_OK)
        return rc;
    pthread_mutex_lock(&sr->lock);
    rc = write_locked(sr, SAVE_STMT, room, state_json, state_len, version);
    pthread_mutex_unlock(&sr->lock);
    cJSON_free(printed);
    return rc;
}

/* The room's epoch, read apart from its row (a table of an older libsync opened read-only may
 * have none); "" when there is none. */
static void read_epoch_locked(sqlite_rooms *sr, const char *room, char *epoch)
{
    epoch[0] = '\0';
    char *sql =
        sqlite3_mprintf("SELECT epoch FROM \"%s_epoch\" WHERE name = %Q", sr->db.table, room);
    sqlite3_stmt *st = NULL;
    if (sql && sqlite3_prepare_v2(sr->db.db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        const char *e = (const char *)sqlite3_column_text(st, 0);
        if (sync__epoch_valid(e))
            strcpy(epoch, e);
    }
    sqlite3_finalize(st);
    sqlite3_free(sql);
}

static int rooms_load_epoch(void *userdata, sync_pending *pending, const char *room,
                            char **out_state_json, int64_t *out_version, char *epoch)
{
    (void)pending;
    sqlite_rooms *sr = userdata;
    *out_state_json = NULL;
    *out_version = 0;
    epoch[0] = '\0';
    int rc = sync_room_name_check(room);
    if (rc != SYNC_OK)
        return rc;
    pthread_mutex_lock(&sr->lock);
    rc = load_locked(sr, room, out_state_json, out_version);
    if (rc == SYNC_OK && *out_state_json)
        read_epoch_locked(sr, room, epoch);
    pthread_mutex_unlock(&sr->lock);
    return rc;
}

/* A fresh epoch goes in the transaction of the save: the row and its history never part. */
static int rooms_save_epoch(void *userdata, sync_pending *pending, const char *room,
                            const cJSON *state, const char *state_json, size_t state_len,
                            int64_t version, const char *epoch, int fresh)
{
    if (!epoch || !fresh)
        return rooms_save(userdata, pending, room, state, state_json, state_len, version);
    sqlite_rooms *sr = userdata;
    int rc = sync_room_name_check(room);
    if (rc != SYNC_OK)
        return rc;
    char *printed = NULL;
    rc = store_state_text(state, &state_json, &state_len, &printed);
    if (rc != SYNC_OK)
        return rc;
    char *sql = sqlite3_mprintf("INSERT OR REPLACE INTO \"%s_epoch\" (name, epoch) VALUES (%Q, %Q)",
                                sr->db.table, room, epoch);
    pthread_mutex_lock(&sr->lock);
    rc = sql ? sqlite_db_open_for_write(&sr->db) : sync__fail(SYNC_ENOMEM, "out of memory");
    if (rc == SYNC_OK && sqlite_db_exec(sr->db.db, "BEGIN IMMEDIATE") != SQLITE_OK)
        rc = sqlite_db_fail(sr->db.db, "cannot save a room to", sr->db.path);
    else if (rc == SYNC_OK) {
        rc = write_locked(sr, SAVE_STMT, room, state_json, state_len, version);
        if (rc == SYNC_OK && (sqlite_db_exec(sr->db.db, sql) != SQLITE_OK ||
                              sqlite_db_exec(sr->db.db, "COMMIT") != SQLITE_OK)) {
            rc = sqlite_db_fail(sr->db.db, "cannot save a room to", sr->db.path);
            if (!sqlite3_get_autocommit(sr->db.db))
                sqlite_db_exec(sr->db.db, "ROLLBACK");
        }
    }
    pthread_mutex_unlock(&sr->lock);
    sqlite3_free(sql);
    cJSON_free(printed);
    return rc;
}

static const sync__room_store_epoch sqlite_rooms_epoch = {rooms_load_epoch, rooms_save_epoch};

static int rooms_remove(void *userdata, sync_pending *pending, const char *room)
{
    (void)pending;
    sqlite_rooms *sr = userdata;
    int rc = sync_room_name_check(room);
    if (rc != SYNC_OK)
        return rc;
    pthread_mutex_lock(&sr->lock);
    rc = write_locked(sr, REMOVE_STMT, room, NULL, 0, 0);
    pthread_mutex_unlock(&sr->lock);
    return rc;
}

static int list_locked(sqlite_rooms *sr, cJSON *names)
{
    int rc = sqlite_db_open(&sr->db);
    if (rc != SYNC_OK)
        return rc;
    sqlite3_stmt *st = sr->db.stmt[LIST_STMT];
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        /* A row someone else wrote under a name no room can have is not a room. */
        if (!name || sync_room_name_check(name) != SYNC_OK)
            continue;
        cJSON *item = cJSON_CreateString(name);
        if (!item) {
            sqlite3_reset(st);
            return sync__fail(SYNC_ENOMEM, "out of memory listing rooms");
        }
        cJSON_AddItemToArray(names, item);
    }
    rc = step == SQLITE_DONE ? SYNC_OK
                             : sqlite_db_fail(sr->db.db, "cannot list the rooms of", sr->db.path);
    sqlite3_reset(st);
    return rc;
}

static int rooms_list(void *userdata, sync_pending *pending, char **out_names_json)
{
    (void)pending;
    sqlite_rooms *sr = userdata;
    *out_names_json = NULL;
    cJSON *names = cJSON_CreateArray();
    if (!names)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    pthread_mutex_lock(&sr->lock);
    int rc = list_locked(sr, names);
    pthread_mutex_unlock(&sr->lock);
    *out_names_json = rc == SYNC_OK ? store_print(names) : NULL;
    cJSON_Delete(names);
    if (rc != SYNC_OK)
        return rc;
    return *out_names_json ? SYNC_OK : sync__fail(SYNC_ENOMEM, "out of memory listing rooms");
}

static void rooms_destroy(void *userdata)
{
    sqlite_rooms *sr = userdata;
    if (!sr)
        return;
    sqlite_db_release(&sr->db);
    pthread_mutex_destroy(&sr->lock);
    free(sr);
}

int sync_room_store_sqlite_new(sync_room_store **out, const sync_sqlite_options *opts)
{
    if (!out)
        return sync__fail(SYNC_EINVAL, "out pointer is NULL");
    *out = NULL;
    int rc = sync__check_options(opts, SYNC_SQLITE_OPTIONS_VERSION, "SQLite");
    if (rc != SYNC_OK)
        return rc;
    sqlite_rooms *sr = calloc(1, sizeof *sr);
    if (!sr)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    rc = sqlite_db_setup(&sr->db, opts, ROOMS_DEFAULT_TABLE, &room_rows);
    if (rc != SYNC_OK) {
        free(sr);
        return rc;
    }
    pthread_mutex_init(&sr->lock, NULL);
    sync_room_store_vtable vt = {
        .version = SYNC_ROOM_STORE_VTABLE_VERSION,
        .init = rooms_init,
        .load = rooms_load,
        .save = rooms_save,
        .remove = rooms_remove,
        .list = rooms_list,
        .destroy = rooms_destroy,
    };
    rc = sync_room_store_new(out, &vt, sr);
    if (rc == SYNC_OK)
        sync__room_store_set_epoch_ops(*out, &sqlite_rooms_epoch);
    return rc;
}

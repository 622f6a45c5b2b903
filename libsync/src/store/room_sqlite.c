/* The SQLite room store: a row per room, keyed by its name, in one WAL database; one connection
 * that a mutex hands to one call at a time (calls for different rooms come from many threads).
 * A save is one transaction, except in a batch (room_batch.h): the saves of a server's loop turn
 * are kept (copied) and written together at its end, one transaction for them all, which is also
 * one lock of the file and one WAL sync instead of one per room. The transaction is open only
 * inside the end, under the mutex: no other call ever runs inside it. */
#include "error.h"
#include "options.h"
#include "sqlite_db.h"
#include "store_json.h"
#include "room_batch.h"
#include "room_epoch.h"
#include "engine/completion.h"
#include "engine/delta.h"

#include <inttypes.h>
#include <stdio.h>
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

/* A save kept by the open batch (room_batch.h): what it writes, copied, and its token. */
typedef struct kept_save {
    sync_pending *pending;
    char *room;
    char *json;
    size_t len;
    int64_t version;
    char *epoch;  /* a fresh epoch written beside the row, or NULL */
    char *stored; /* where that epoch is noted once committed (the room's adapter) */
    int status;
    char *error;
} kept_save;

typedef struct sqlite_rooms {
    pthread_mutex_t lock;
    sqlite_db db;
    /* The batch (under lock): open for one thread at a time; its saves are written at the end. */
    int batch_open;
    pthread_t batch_thread;
    kept_save *kept;
    size_t kept_count, kept_cap;
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

/* Runs a prepared write bound to `room` (and the record for a save); outside a transaction, one
 * statement is one transaction. */
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

/* The row of a save and, when fresh, its epoch, on the open connection, inside the caller's
 * transaction if it has one (a failed statement rolls that back: sqlite_db_write). */
static int put_locked(sqlite_rooms *sr, const char *room, const char *json, size_t len,
                      int64_t version, const char *epoch)
{
    int rc = write_locked(sr, SAVE_STMT, room, json, len, version);
    if (rc != SYNC_OK || !epoch)
        return rc;
    char *sql = sqlite3_mprintf("INSERT OR REPLACE INTO \"%s_epoch\" (name, epoch) VALUES (%Q, %Q)",
                                sr->db.table, room, epoch);
    if (!sql)
        rc = sync__fail(SYNC_ENOMEM, "out of memory");
    else if (sqlite_db_exec(sr->db.db, sql) != SQLITE_OK)
        rc = sqlite_db_fail(sr->db.db, "cannot save a room to", sr->db.path);
    sqlite3_free(sql);
    return rc;
}

static int end_transaction_locked(sqlite_rooms *sr, int rc)
{
    if (rc == SYNC_OK && sqlite_db_exec(sr->db.db, "COMMIT") != SQLITE_OK)
        rc = sqlite_db_fail(sr->db.db, "cannot save a room to", sr->db.path);
    if (rc != SYNC_OK && !sqlite3_get_autocommit(sr->db.db))
        sqlite_db_exec(sr->db.db, "ROLLBACK");
    return rc;
}

/* One save, a transaction of its own: one statement, or the row and a fresh epoch together (the
 * row and its history never part). */
static int save_locked(sqlite_rooms *sr, const char *room, const char *json, size_t len,
                       int64_t version, const char *epoch)
{
    if (!epoch)
        return write_locked(sr, SAVE_STMT, room, json, len, version);
    int rc = sqlite_db_open_for_write(&sr->db);
    if (rc != SYNC_OK)
        return rc;
    if (sqlite_db_exec(sr->db.db, "BEGIN IMMEDIATE") != SQLITE_OK)
        return sqlite_db_fail(sr->db.db, "cannot save a room to", sr->db.path);
    return end_transaction_locked(sr, put_locked(sr, room, json, len, version, epoch));
}

/* Keeps an engine's save for the end of the batch the calling thread has open: 1 when kept (the
 * save then returns SYNC_PENDING), 0 when it is to be written now (no batch of this thread, a
 * direct call, which waits for its result, or no memory to keep it). */
static int keep_locked(sqlite_rooms *sr, sync_pending *pending, const char *room, const char *json,
                       size_t len, int64_t version, const char *epoch, char *stored)
{
    if (!sr->batch_open || !pending || !pending->engine ||
        !pthread_equal(sr->batch_thread, pthread_self()))
        return 0;
    if (sr->kept_count == sr->kept_cap) {
        size_t cap = sr->kept_cap ? sr->kept_cap * 2 : 64;
        kept_save *grown = realloc(sr->kept, cap * sizeof *grown);
        if (!grown)
            return 0;
        sr->kept = grown;
        sr->kept_cap = cap;
    }
    kept_save k = {.pending = pending, .len = len, .version = version, .stored = stored};
    k.room = strdup(room);
    k.json = malloc(len + 1);
    k.epoch = epoch ? strdup(epoch) : NULL;
    if (!k.room || !k.json || (epoch && !k.epoch)) {
        free(k.room);
        free(k.json);
        free(k.epoch);
        return 0;
    }
    memcpy(k.json, json, len);
    k.json[len] = '\0';
    sr->kept[sr->kept_count++] = k;
    return 1;
}

static int save_or_keep(sqlite_rooms *sr, sync_pending *pending, const char *room,
                        const cJSON *state, const char *state_json, size_t state_len,
                        int64_t version, const char *epoch, char *stored)
{
    int rc = sync_room_name_check(room);
    if (rc != SYNC_OK)
        return rc;
    char *printed = NULL;
    rc = store_state_text(state, &state_json, &state_len, &printed);
    if (rc != SYNC_OK)
        return rc;
    pthread_mutex_lock(&sr->lock);
    if (keep_locked(sr, pending, room, state_json, state_len, version, epoch, stored))
        rc = SYNC_PENDING;
    else
        rc = save_locked(sr, room, state_json, state_len, version, epoch);
    pthread_mutex_unlock(&sr->lock);
    cJSON_free(printed);
    return rc;
}

static int rooms_save(void *userdata, sync_pending *pending, const char *room, const cJSON *state,
                      const char *state_json, size_t state_len, int64_t version)
{
    return save_or_keep(userdata, pending, room, state, state_json, state_len, version, NULL, NULL);
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
                            int64_t version, const char *epoch, int fresh, char *stored)
{
    return save_or_keep(userdata, pending, room, state, state_json, state_len, version,
                        epoch && fresh ? epoch : NULL, stored);
}

/* ---- the batch (room_batch.h) --------------------------------------------------------------- */

static int rooms_batch_begin(void *userdata)
{
    sqlite_rooms *sr = userdata;
    pthread_mutex_lock(&sr->lock);
    int opened = !sr->batch_open;
    if (opened) {
        sr->batch_open = 1;
        sr->batch_thread = pthread_self();
    }
    pthread_mutex_unlock(&sr->lock);
    return opened;
}

/* Every kept save in one transaction. SYNC_OK; else its failure, *started saying whether the
 * transaction began (then a save of its own may still succeed for each row). */
static int commit_kept_locked(sqlite_rooms *sr, const kept_save *kept, size_t count, int *started)
{
    *started = 0;
    int rc = sqlite_db_open_for_write(&sr->db);
    if (rc != SYNC_OK)
        return rc;
    if (sqlite_db_exec(sr->db.db, "BEGIN IMMEDIATE") != SQLITE_OK)
        return sqlite_db_fail(sr->db.db, "cannot save a room to", sr->db.path);
    *started = 1;
    for (size_t i = 0; i < count && rc == SYNC_OK; i++)
        rc =
            put_locked(sr, kept[i].room, kept[i].json, kept[i].len, kept[i].version, kept[i].epoch);
    return end_transaction_locked(sr, rc);
}

static void kept_result(kept_save *k, int rc)
{
    k->status = rc;
    if (rc != SYNC_OK)
        k->error = strdup(sync_error_last()[0] ? sync_error_last() : sync_strerror(rc));
    else if (k->epoch && k->stored)
        snprintf(k->stored, SYNC__EPOCH_MAX + 1, "%s", k->epoch);
}

static void rooms_batch_end(void *userdata)
{
    sqlite_rooms *sr = userdata;
    pthread_mutex_lock(&sr->lock);
    kept_save *kept = sr->kept;
    size_t count = sr->kept_count;
    sr->batch_open = 0;
    sr->kept = NULL;
    sr->kept_count = sr->kept_cap = 0;
    int started = 0;
    int rc = count ? commit_kept_locked(sr, kept, count, &started) : SYNC_OK;
    for (size_t i = 0; i < count; i++) {
        /* One row SQLite refuses (or a COMMIT that failed) must not fail the others: each is
         * tried again alone, as it would have been saved without the batch. */
        if (rc != SYNC_OK && started && count > 1)
            kept_result(&kept[i], save_locked(sr, kept[i].room, kept[i].json, kept[i].len,
                                              kept[i].version, kept[i].epoch));
        else
            kept_result(&kept[i], rc);
    }
    pthread_mutex_unlock(&sr->lock);
    /* Outside the lock: a completion takes its engine's lock and continues its work (lock order:
     * an engine's, then the store's). */
    for (size_t i = 0; i < count; i++) {
        sync_pending_complete(kept[i].pending, kept[i].status, kept[i].error);
        free(kept[i].room);
        free(kept[i].json);
        free(kept[i].epoch);
        free(kept[i].error);
    }
    free(kept);
}

static const sync__room_store_batch sqlite_rooms_batch = {rooms_batch_begin, rooms_batch_end};

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
    free(sr->kept); /* a batch is always ended before the store can go */
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
    if (rc == SYNC_OK) {
        sync__room_store_set_epoch_ops(*out, &sqlite_rooms_epoch);
        sync__room_store_set_batch_ops(*out, &sqlite_rooms_batch);
    }
    return rc;
}

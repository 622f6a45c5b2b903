/* The SQLite store: one row (state JSON, version, updated_at) in a WAL-mode database. */
#include "backup_slot.h"
#include "engine/completion.h"
#include "engine/delta.h"
#include "error.h"
#include "options.h"
#include "engine/json_check.h"
#include "fsutil.h"
#include "libsync/adapter.h"
#include "sqlite_db.h"
#include "store_json.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <stdbool.h>
#include <unistd.h>

#define SQLITE_DEFAULT_TABLE "websocket_state"

/* The single row: id = 1 makes it explicit. No NOT NULL or type checks: load() must be able to
 * read any row back, bad ones too, to keep them aside. */
static const sqlite_schema single_row = {
    .create = {"CREATE TABLE IF NOT EXISTS \"",
               "\" (id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT, version INTEGER, "
               "updated_at INTEGER)"},
    /* The epoch of the row's history, in a table of its own so that the row's table keeps the
     * columns tools know; a database of an older libsync gets it at its next writable open. */
    .extra = {"CREATE TABLE IF NOT EXISTS \"",
              "_epoch\" (id INTEGER PRIMARY KEY CHECK (id = 1), epoch TEXT)"},
    .prepared =
        {
            {"SELECT state, version FROM \"", "\" WHERE id = 1"},
            {"INSERT INTO \"", "\" (id, state, version, updated_at) VALUES (1, ?1, ?2, ?3) "
                               "ON CONFLICT (id) DO UPDATE SET state = excluded.state, "
                               "version = excluded.version, updated_at = excluded.updated_at"},
        },
    .prepared_count = 2,
    .read_count = 1,
};
enum { LOAD_STMT, SAVE_STMT };

typedef struct sqlite_adapter {
    sqlite_db db; /* first: the adapter is its database plus what backups and corrupt rows need */
    char *backups_dir;
    /* A corrupt row found by load() that could not be moved to <table>_corrupt yet: the next save
     * must move it first instead of overwriting it. */
    const char *row_to_keep;
    char loaded_epoch[SYNC__EPOCH_MAX + 1]; /* what the last load read, "" none */
    char epoch[SYNC__EPOCH_MAX + 1];        /* what saves write, "" none */
    char stored_epoch[SYNC__EPOCH_MAX + 1]; /* what the database holds, as far as we know */
} sqlite_adapter;

static const char *sqlite_epoch_loaded(void *userdata)
{
    return ((sqlite_adapter *)userdata)->loaded_epoch;
}

static void sqlite_epoch_set(void *userdata, const char *epoch)
{
    sqlite_adapter *sa = userdata;
    snprintf(sa->epoch, sizeof sa->epoch, "%s", sync__epoch_valid(epoch) ? epoch : "");
}

static const sync__adapter_epoch sqlite_epoch = {sqlite_epoch_loaded, sqlite_epoch_set};

/* The epoch of the row, read apart from it: a database opened read-only may have a table of an
 * older libsync, without the column; then there is none. */
static void read_epoch(sqlite_adapter *sa)
{
    sa->loaded_epoch[0] = '\0';
    char *sql = NULL;
    if (asprintf(&sql, "SELECT epoch FROM \"%s_epoch\" WHERE id = 1", sa->db.table) < 0)
        return;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(sa->db.db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        const char *e = (const char *)sqlite3_column_text(st, 0);
        if (sync__epoch_valid(e))
            strcpy(sa->loaded_epoch, e);
    }
    strcpy(sa->stored_epoch, sa->loaded_epoch);
    sqlite3_finalize(st);
    free(sql);
}

/* Moves the single row into <table>_corrupt (with the time it was kept) and empties the table,
 * in one transaction: the bad record survives every later save. */
static int keep_row_aside(sqlite_adapter *sa, const char *why)
{
    char *sql = NULL;
    if (asprintf(&sql,
                 "BEGIN IMMEDIATE;"
                 "CREATE TABLE IF NOT EXISTS \"%s_corrupt\" (kept_at INTEGER NOT NULL, state, "
                 "version, updated_at);"
                 "INSERT INTO \"%s_corrupt\" (kept_at, state, version, updated_at) "
                 "SELECT %" PRId64 ", state, version, updated_at FROM \"%s\" WHERE id = 1;"
                 "DELETE FROM \"%s\" WHERE id = 1;"
                 "COMMIT",
                 sa->db.table, sa->db.table, sync_wall_ms(), sa->db.table, sa->db.table) < 0)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    int rc = sqlite_db_exec(sa->db.db, sql);
    free(sql);
    if (rc != SQLITE_OK) {
        sa->row_to_keep = why;
        int status = sync__fail(SYNC_EIO,
                                "the row of %s in %s is corrupt (%s) and cannot be kept "
                                "aside: %s",
                                sa->db.table, sa->db.path, why, sqlite3_errmsg(sa->db.db));
        if (!sqlite3_get_autocommit(sa->db.db))
            sqlite_db_exec(sa->db.db, "ROLLBACK");
        return status;
    }
    sa->row_to_keep = NULL;
    return sync__fail(SYNC_ECORRUPT,
                      "the row of %s in %s is corrupt (%s); kept aside in %s_corrupt", sa->db.table,
                      sa->db.path, why, sa->db.table);
}

static int sqlite_init(void *userdata, sync_pending *pending)
{
    (void)pending;
    return sqlite_db_open(&((sqlite_adapter *)userdata)->db);
}

static int sqlite_load(void *userdata, sync_pending *pending, char **out_state_json,
                       int64_t *out_version)
{
    (void)pending;
    sqlite_adapter *sa = userdata;
    *out_state_json = NULL;
    *out_version = 0;
    int rc = sqlite_db_open(&sa->db);
    if (rc != SYNC_OK)
        return rc;
    int step = sqlite3_step(sa->db.stmt[LOAD_STMT]);
    sa->loaded_epoch[0] = '\0';
    if (step == SQLITE_DONE) {
        sqlite3_reset(sa->db.stmt[LOAD_STMT]);
        return SYNC_OK;
    }
    if (step != SQLITE_ROW) {
        sqlite3_reset(sa->db.stmt[LOAD_STMT]);
        return sqlite_db_fail(sa->db.db, "cannot load from", sa->db.path);
    }
    const char *why = NULL;
    int state_type = sqlite3_column_type(sa->db.stmt[LOAD_STMT], 0);
    const char *text = (const char *)sqlite3_column_text(sa->db.stmt[LOAD_STMT], 0);
    size_t len = (size_t)sqlite3_column_bytes(sa->db.stmt[LOAD_STMT], 0);
    if (state_type == SQLITE_NULL || !text)
        why = "state is NULL";
    else if (!sqlite_db_is_json(text, len))
        why = "state is not valid JSON";
    else if (sqlite3_column_type(sa->db.stmt[LOAD_STMT], 1) != SQLITE_INTEGER)
        why = "version is not an integer";
    if (why) {
        sqlite3_reset(sa->db.stmt[LOAD_STMT]);
        return keep_row_aside(sa, why);
    }
    char *copy = sync_malloc(len + 1); /* released with sync_free() */
    if (copy) {
        memcpy(copy, text, len);
        copy[len] = '\0';
        *out_version = sqlite3_column_int64(sa->db.stmt[LOAD_STMT], 1);
    }
    sqlite3_reset(sa->db.stmt[LOAD_STMT]);
    if (!copy)
        return sync__fail(SYNC_ENOMEM, "out of memory loading %zu bytes", len);
    *out_state_json = copy;
    read_epoch(sa);
    return SYNC_OK;
}

static int sqlite_save(void *userdata, sync_pending *pending, const cJSON *state,
                       const char *state_json, size_t state_len, int64_t version)
{
    (void)pending;
    sqlite_adapter *sa = userdata;
    int rc = sqlite_db_open_for_write(&sa->db);
    if (rc != SYNC_OK)
        return rc;
    if (sa->row_to_keep && (rc = keep_row_aside(sa, sa->row_to_keep)) != SYNC_ECORRUPT)
        return rc;
    char *printed = NULL;
    rc = store_state_text(state, &state_json, &state_len, &printed);
    if (rc != SYNC_OK)
        return rc;
    /* One UPSERT is one implicit transaction; the text is bound in place, without a copy. */
    sqlite3_stmt *st = sa->db.stmt[SAVE_STMT];
    int bound = sqlite3_bind_text64(st, 1, state_json, state_len, SQLITE_STATIC, SQLITE_UTF8);
    if (bound == SQLITE_OK)
        bound = sqlite3_bind_int64(st, 2, version);
    if (bound == SQLITE_OK)
        bound = sqlite3_bind_int64(st, 3, sync_wall_ms());
    /* The first save of an engine whose epoch the database does not hold yet writes it in the
     * same transaction: the row and the history it belongs to never part. */
    bool new_epoch = sa->epoch[0] && strcmp(sa->epoch, sa->stored_epoch) != 0;
    char *epoch_sql = NULL;
    if (new_epoch &&
        asprintf(&epoch_sql, "INSERT OR REPLACE INTO \"%s_epoch\" (id, epoch) VALUES (1, '%s')",
                 sa->db.table, sa->epoch) < 0) {
        cJSON_free(printed);
        return sync__fail(SYNC_ENOMEM, "out of memory");
    }
    if (new_epoch && sqlite_db_exec(sa->db.db, "BEGIN IMMEDIATE") != SQLITE_OK) {
        sqlite3_clear_bindings(st);
        free(epoch_sql);
        cJSON_free(printed);
        return sqlite_db_fail(sa->db.db, "cannot save to", sa->db.path);
    }
    rc = sqlite_db_write(&sa->db, st, bound, "cannot save to");
    if (new_epoch && rc == SYNC_OK) {
        if (sqlite_db_exec(sa->db.db, epoch_sql) != SQLITE_OK ||
            sqlite_db_exec(sa->db.db, "COMMIT") != SQLITE_OK) {
            rc = sqlite_db_fail(sa->db.db, "cannot save to", sa->db.path);
            if (!sqlite3_get_autocommit(sa->db.db))
                sqlite_db_exec(sa->db.db, "ROLLBACK");
        } else {
            strcpy(sa->stored_epoch, sa->epoch);
        }
    }
    free(epoch_sql);
    cJSON_free(printed);
    return rc;
}

/* SQLite's online backup of the whole database into a new file at `path`. */
static int backup_into(sqlite_adapter *sa, const char *path)
{
    int rc = SYNC_OK;
    sqlite3 *dst = NULL;
    int copied = 0;
    if (sqlite3_open_v2(path, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) ==
        SQLITE_OK) {
        /* Errors of init, step and finish all land in dst's error state. */
        sqlite3_backup *bk = sqlite3_backup_init(dst, "main", sa->db.db, "main");
        if (bk) {
            int step = sqlite3_backup_step(bk, -1);
            copied = sqlite3_backup_finish(bk) == SQLITE_OK && step == SQLITE_DONE;
        }
    }
    if (copied) {
        /* The copy gets an epoch of its own: restoring it breaks the history its versions had
         * here, and clients that resume with the old epoch must get the whole state. */
        char fresh[SYNC__EPOCH_MAX + 1];
        sync__delta_new_epoch(fresh);
        char *sql = NULL;
        if (asprintf(&sql,
                     "CREATE TABLE IF NOT EXISTS \"%s_epoch\" (id INTEGER PRIMARY KEY CHECK (id "
                     "= 1), epoch TEXT); INSERT OR REPLACE INTO \"%s_epoch\" (id, epoch) VALUES "
                     "(1, '%s')",
                     sa->db.table, sa->db.table, fresh) < 0)
            sql = NULL;
        copied = sql && sqlite_db_exec(dst, sql) == SQLITE_OK;
        free(sql);
    }
    if (!copied)
        rc = dst ? sqlite_db_fail(dst, "cannot back up into", path)
                 : sync__fail(SYNC_ENOMEM, "out of memory opening %s", path);
    if (sqlite3_close(dst) != SQLITE_OK && rc == SYNC_OK)
        rc = sync__fail(SYNC_EIO, "cannot close backup %s", path);
    return rc;
}

/* Online backup into a temp file, then a rename that never replaces an existing backup. */
static int sqlite_backup(void *userdata, sync_pending *pending, int64_t *out_timestamp_ms)
{
    (void)pending;
    sqlite_adapter *sa = userdata;
    int rc = sqlite_db_open(&sa->db);
    if (rc != SYNC_OK)
        return rc;
    backup_slot slot;
    rc = backup_slot_open(&slot, sa->backups_dir);
    if (rc == SYNC_OK)
        rc = backup_into(sa, slot.tmp);
    if (rc == SYNC_OK)
        rc = backup_slot_publish(&slot, ".sqlite", 1, out_timestamp_ms);
    backup_slot_release(&slot);
    return rc;
}

static void sqlite_destroy(void *userdata)
{
    sqlite_adapter *sa = userdata;
    if (!sa)
        return;
    sqlite_db_release(&sa->db);
    free(sa->backups_dir);
    free(sa);
}

int sync_sqlite_options_init(sync_sqlite_options *opts, unsigned int version)
{
    static const sync_sqlite_options defaults = SYNC_SQLITE_OPTIONS_INIT;
    return sync__options_init(opts, &defaults, sizeof defaults, version,
                              SYNC_SQLITE_OPTIONS_VERSION, "SQLite");
}

int sync_adapter_sqlite_new(sync_adapter **out, const sync_sqlite_options *opts)
{
    if (!out)
        return sync__fail(SYNC_EINVAL, "out pointer is NULL");
    *out = NULL;
    int rc = sync__check_options(opts, SYNC_SQLITE_OPTIONS_VERSION, "SQLite");
    if (rc != SYNC_OK)
        return rc;
    if (opts->backups_dir && !*opts->backups_dir)
        return sync__fail(SYNC_EINVAL, "backups_dir is empty (use NULL for <path>.backups)");
    sqlite_adapter *sa = calloc(1, sizeof *sa);
    if (!sa)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    rc = sqlite_db_setup(&sa->db, opts, SQLITE_DEFAULT_TABLE, &single_row);
    if (rc != SYNC_OK) {
        free(sa);
        return rc;
    }
    if (opts->backups_dir)
        sa->backups_dir = strdup(opts->backups_dir);
    else if (asprintf(&sa->backups_dir, "%s.backups", opts->path) < 0)
        sa->backups_dir = NULL;
    if (!sa->backups_dir) {
        sqlite_destroy(sa);
        return sync__fail(SYNC_ENOMEM, "out of memory");
    }
    sync_adapter_vtable vt = {
        .version = SYNC_ADAPTER_VTABLE_VERSION,
        .init = sqlite_init,
        .load = sqlite_load,
        .save = sqlite_save,
        .backup = sqlite_backup,
        .destroy = sqlite_destroy,
    };
    rc = sync_adapter_new(out, &vt, sa);
    if (rc == SYNC_OK) {
        sync__adapter_set_epoch_ops(*out, &sqlite_epoch);
        sync__error_clear();
    }
    return rc;
}

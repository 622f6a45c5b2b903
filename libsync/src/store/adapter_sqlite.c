/* The SQLite store: one row (state JSON, version, updated_at) in a WAL-mode database. */
#include "backup_slot.h"
#include "error.h"
#include "options.h"
#include "engine/json_check.h"
#include "fsutil.h"
#include "libsync/adapter.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define SQLITE_DEFAULT_TABLE "websocket_state"
#define SQLITE_TABLE_MAX 64
#define SQLITE_DEFAULT_BUSY_MS 5000

typedef struct sqlite_adapter {
    char *path;
    char *table;
    char *backups_dir;
    sync_sqlite_durability durability;
    int busy_timeout_ms;
    sqlite3 *db;
    sqlite3_stmt *load_stmt;
    sqlite3_stmt *save_stmt;
    /* A corrupt row found by load() that could not be moved to <table>_corrupt yet: the next save
     * must move it first instead of overwriting it. */
    const char *row_to_keep;
    /* Opened read-only because the database could not be written: load works, saves fail and
     * each one first tries a writable open again. */
    int read_only;
} sqlite_adapter;

static int is_memory(const sqlite_adapter *sa)
{
    return strcmp(sa->path, ":memory:") == 0;
}

/* SQLite's text plus the OS error behind an I/O failure ("disk I/O error" alone says little). */
static int fail_sqlite(sqlite3 *db, const char *what, const char *path)
{
    int code = sqlite3_extended_errcode(db);
    int sys = sqlite3_system_errno(db);
    if ((code & 0xff) == SQLITE_IOERR && sys != 0)
        return sync__fail(SYNC_EIO, "%s %s: %s (%s)", what, path, sqlite3_errmsg(db),
                          strerror(sys));
    return sync__fail(SYNC_EIO, "%s %s: %s", what, path, sqlite3_errmsg(db));
}

static void close_db(sqlite_adapter *sa)
{
    sqlite3_finalize(sa->load_stmt);
    sqlite3_finalize(sa->save_stmt);
    sa->load_stmt = NULL;
    sa->save_stmt = NULL;
    sqlite3_close(sa->db);
    sa->db = NULL;
    sa->read_only = 0;
}

static int exec_sql(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* Runs (out NULL) or prepares for the adapter's life (out set) the statement
 * "<before><table><after>"; the table name was validated, so it can be pasted in. */
static int table_sql(sqlite_adapter *sa, const char *before, const char *after, sqlite3_stmt **out)
{
    char *sql = NULL;
    if (asprintf(&sql, "%s%s%s", before, sa->table, after) < 0)
        return SQLITE_NOMEM;
    int rc = out ? sqlite3_prepare_v3(sa->db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL)
                 : exec_sql(sa->db, sql);
    free(sql);
    return rc;
}

/* Opens the database and prepares everything a save needs. On failure the database is closed,
 * the detail is recorded and *sqlite_rc tells whether the file is not a database at all. */
static int open_and_prepare(sqlite_adapter *sa, int *sqlite_rc)
{
    const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(sa->path, &sa->db, flags, NULL);
    const char *step = "cannot open SQLite database";
    if (rc == SQLITE_OK) {
        sqlite3_extended_result_codes(sa->db, 1);
        sqlite3_busy_timeout(sa->db, sa->busy_timeout_ms);
        step = "cannot enable WAL on";
        sqlite3_stmt *stmt = NULL;
        rc = sqlite3_prepare_v2(sa->db, "PRAGMA journal_mode=WAL", -1, &stmt, NULL);
        if (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
            const char *mode = (const char *)sqlite3_column_text(stmt, 0);
            rc = SQLITE_OK;
            if (!mode || (strcmp(mode, "wal") != 0 && !is_memory(sa))) {
                sqlite3_finalize(stmt);
                int status = sync__fail(SYNC_EIO, "cannot enable WAL on %s: journal_mode stays %s",
                                        sa->path, mode ? mode : "unknown");
                close_db(sa);
                *sqlite_rc = SQLITE_ERROR;
                return status;
            }
        }
        sqlite3_finalize(stmt);
    }
    if (rc == SQLITE_OK) {
        step = "cannot set synchronous on";
        rc = exec_sql(sa->db, sa->durability == SYNC_SQLITE_POWER_SAFE
                                  ? "PRAGMA synchronous=FULL"
                                  : "PRAGMA synchronous=NORMAL");
    }
    if (rc == SQLITE_OK) {
        step = "cannot create the table in";
        /* No NOT NULL or type checks: load() must be able to read any row back, bad ones too,
         * to keep them aside. id = 1 makes the single row explicit. */
        rc = table_sql(sa, "CREATE TABLE IF NOT EXISTS \"",
                       "\" (id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT, version INTEGER, "
                       "updated_at INTEGER)",
                       NULL);
    }
    if (rc == SQLITE_OK) {
        step = "unexpected table schema in";
        rc = table_sql(sa, "SELECT state, version FROM \"", "\" WHERE id = 1", &sa->load_stmt);
    }
    if (rc == SQLITE_OK)
        rc = table_sql(sa, "INSERT INTO \"",
                       "\" (id, state, version, updated_at) VALUES (1, ?1, ?2, ?3) "
                       "ON CONFLICT (id) DO UPDATE SET state = excluded.state, "
                       "version = excluded.version, updated_at = excluded.updated_at",
                       &sa->save_stmt);
    *sqlite_rc = rc;
    if (rc == SQLITE_OK)
        return SYNC_OK;
    int status = rc == SQLITE_NOMEM ? sync__fail(SYNC_ENOMEM, "out of memory")
                 : sa->db           ? fail_sqlite(sa->db, step, sa->path)
                                    : sync__fail(SYNC_ENOMEM, "out of memory opening %s", sa->path);
    close_db(sa);
    return status;
}

/* A database that cannot be written (read-only file, directory or mount) is still opened for
 * load, so its record is read rather than replaced by a fresh state later. */
static int try_open_read_only(sqlite_adapter *sa, const char *name, int flags)
{
    int rc =
        sqlite3_open_v2(name, &sa->db, flags | SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_extended_result_codes(sa->db, 1);
        sqlite3_busy_timeout(sa->db, sa->busy_timeout_ms);
        rc = table_sql(sa, "SELECT state, version FROM \"", "\" WHERE id = 1", &sa->load_stmt);
    }
    if (rc != SQLITE_OK) {
        close_db(sa);
        return -1;
    }
    sa->read_only = 1;
    return 0;
}

/* "file:" URI of the path with immutable=1; only '%', '?' and '#' need escaping in its path. */
static char *immutable_uri(const char *path)
{
    size_t len = strlen(path);
    char *uri = malloc(len * 3 + 32);
    if (!uri)
        return NULL;
    char *p = uri + sprintf(uri, "file:%s", path[0] == '/' ? "//" : "");
    for (const char *c = path; *c; c++)
        p += (*c == '%' || *c == '?' || *c == '#') ? sprintf(p, "%%%02X", (unsigned char)*c)
                                                   : sprintf(p, "%c", *c);
    strcpy(p, "?immutable=1");
    return uri;
}

static int open_read_only(sqlite_adapter *sa)
{
    if (try_open_read_only(sa, sa->path, 0) == 0)
        return 0;
    /* A WAL database whose -shm cannot be created (read-only directory or mount) opens only as
     * immutable; that is exact only while no -wal holds commits it would ignore. */
    char *wal = NULL;
    if (asprintf(&wal, "%s-wal", sa->path) < 0)
        return -1;
    struct stat st;
    int wal_has_data = stat(wal, &st) == 0 && st.st_size > 0;
    free(wal);
    if (wal_has_data)
        return -1;
    char *uri = immutable_uri(sa->path);
    int rc = uri ? try_open_read_only(sa, uri, SQLITE_OPEN_URI) : -1;
    free(uri);
    return rc;
}

static int is_write_refusal(int sqlite_rc)
{
    int primary = sqlite_rc & 0xff;
    return primary == SQLITE_READONLY || primary == SQLITE_CANTOPEN || primary == SQLITE_PERM ||
           primary == SQLITE_AUTH;
}

/* Renames a file that is not a database (and its -wal/-shm) out of the way, never over another
 * file, so the bytes stay for inspection and a new database can take the name. */
static int keep_file_aside(sqlite_adapter *sa, char **out_aside)
{
    char *prefix = NULL;
    if (asprintf(&prefix, "%s.corrupt-", sa->path) < 0)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    int64_t ms = sync_wall_ms();
    int rc = fs_rename_stamped(sa->path, prefix, "", &ms, out_aside);
    int err = errno;
    free(prefix);
    if (rc != 0)
        return sync__fail(SYNC_EIO, "%s is not a SQLite database and cannot be moved aside: %s",
                          sa->path, strerror(err));
    static const char *const companions[] = {"-wal", "-shm"};
    for (size_t i = 0; i < sizeof companions / sizeof companions[0]; i++) {
        char *from = NULL, *to = NULL;
        if (asprintf(&from, "%s%s", sa->path, companions[i]) >= 0 &&
            asprintf(&to, "%s%s", *out_aside, companions[i]) >= 0) {
            /* Absent companions are the normal case; a stale one must not join the new file. */
            if (rename(from, to) != 0 && errno != ENOENT)
                unlink(from);
        }
        free(from);
        free(to);
    }
    return SYNC_OK;
}

/* A non-empty file without SQLite's magic header. Checked before SQLite opens it: SQLite would
 * treat a -wal beside it as its own and delete it on close, and it must be kept with the file. */
static int lacks_sqlite_header(const char *path)
{
    static const char magic[16] = "SQLite format 3";
    char head[sizeof magic];
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n;
    do {
        n = read(fd, head, sizeof head);
    } while (n < 0 && errno == EINTR);
    close(fd);
    return n > 0 && ((size_t)n < sizeof head || memcmp(head, magic, sizeof magic) != 0);
}

/* Opens the database on first use (init, or any call after a failed init), so one failure such
 * as a locked or missing directory does not make the adapter unusable. */
static int ensure_open(sqlite_adapter *sa)
{
    if (sa->db)
        return SYNC_OK;
    if (!is_memory(sa) && fs_mkdirs_parent(sa->path) != 0)
        return sync__fail(SYNC_EIO, "cannot create the directory of %s: %s", sa->path,
                          strerror(errno));
    /* SQLite would block forever reading a FIFO, and says little about a directory. */
    struct stat st;
    if (!is_memory(sa) && stat(sa->path, &st) == 0 && !S_ISREG(st.st_mode))
        return sync__fail(SYNC_EIO, "cannot open SQLite database %s: not a regular file", sa->path);
    int sqlite_rc = SQLITE_NOTADB;
    int rc = SYNC_OK;
    if (is_memory(sa) || !lacks_sqlite_header(sa->path)) {
        rc = open_and_prepare(sa, &sqlite_rc);
        int primary = sqlite_rc & 0xff;
        if (rc != SYNC_OK && !is_memory(sa) && is_write_refusal(sqlite_rc) &&
            open_read_only(sa) == 0)
            return SYNC_OK;
        if (rc == SYNC_OK || (primary != SQLITE_NOTADB && primary != SQLITE_CORRUPT) ||
            is_memory(sa))
            return rc;
    }
    char *aside = NULL;
    rc = keep_file_aside(sa, &aside);
    if (rc != SYNC_OK)
        return rc;
    rc = open_and_prepare(sa, &sqlite_rc);
    if (rc == SYNC_OK)
        rc = sync__fail(SYNC_ECORRUPT,
                        "%s is not a usable SQLite database; kept aside as %s, starting a new one",
                        sa->path, aside);
    free(aside);
    return rc;
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
                 sa->table, sa->table, sync_wall_ms(), sa->table, sa->table) < 0)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    int rc = exec_sql(sa->db, sql);
    free(sql);
    if (rc != SQLITE_OK) {
        sa->row_to_keep = why;
        int status = sync__fail(SYNC_EIO,
                                "the row of %s in %s is corrupt (%s) and cannot be kept "
                                "aside: %s",
                                sa->table, sa->path, why, sqlite3_errmsg(sa->db));
        if (!sqlite3_get_autocommit(sa->db))
            exec_sql(sa->db, "ROLLBACK");
        return status;
    }
    sa->row_to_keep = NULL;
    return sync__fail(SYNC_ECORRUPT,
                      "the row of %s in %s is corrupt (%s); kept aside in %s_corrupt", sa->table,
                      sa->path, why, sa->table);
}

static int sqlite_init(void *userdata, sync_pending *pending)
{
    (void)pending;
    return ensure_open(userdata);
}

/* JSON text with nothing but whitespace after the value. */
/* The engine's own parser decides: a row it would refuse (a NUL byte, bad UTF-8, a non-finite
 * number) must be kept aside here, or the engine would start afresh and overwrite it. */
static int is_json(const char *text, size_t len)
{
    cJSON *value = NULL;
    if (sync__json_parse(text, len, 0, &value) != SYNC_OK)
        return 0;
    cJSON_Delete(value);
    return 1;
}

static int sqlite_load(void *userdata, sync_pending *pending, char **out_state_json,
                       int64_t *out_version)
{
    (void)pending;
    sqlite_adapter *sa = userdata;
    *out_state_json = NULL;
    *out_version = 0;
    int rc = ensure_open(sa);
    if (rc != SYNC_OK)
        return rc;
    int step = sqlite3_step(sa->load_stmt);
    if (step == SQLITE_DONE) {
        sqlite3_reset(sa->load_stmt);
        return SYNC_OK;
    }
    if (step != SQLITE_ROW) {
        sqlite3_reset(sa->load_stmt);
        return fail_sqlite(sa->db, "cannot load from", sa->path);
    }
    const char *why = NULL;
    int state_type = sqlite3_column_type(sa->load_stmt, 0);
    const char *text = (const char *)sqlite3_column_text(sa->load_stmt, 0);
    size_t len = (size_t)sqlite3_column_bytes(sa->load_stmt, 0);
    if (state_type == SQLITE_NULL || !text)
        why = "state is NULL";
    else if (!is_json(text, len))
        why = "state is not valid JSON";
    else if (sqlite3_column_type(sa->load_stmt, 1) != SQLITE_INTEGER)
        why = "version is not an integer";
    if (why) {
        sqlite3_reset(sa->load_stmt);
        return keep_row_aside(sa, why);
    }
    char *copy = sync_malloc(len + 1); /* released with sync_free() */
    if (copy) {
        memcpy(copy, text, len);
        copy[len] = '\0';
        *out_version = sqlite3_column_int64(sa->load_stmt, 1);
    }
    sqlite3_reset(sa->load_stmt);
    if (!copy)
        return sync__fail(SYNC_ENOMEM, "out of memory loading %zu bytes", len);
    *out_state_json = copy;
    return SYNC_OK;
}

static int sqlite_save(void *userdata, sync_pending *pending, const cJSON *state,
                       const char *state_json, size_t state_len, int64_t version)
{
    (void)pending;
    sqlite_adapter *sa = userdata;
    if (sa->read_only)
        close_db(sa);
    int rc = ensure_open(sa);
    if (rc != SYNC_OK)
        return rc;
    if (sa->read_only) {
        /* ensure_open() left why the writable open failed; copied before sync__fail() reuses it. */
        char why[256];
        snprintf(why, sizeof why, "%s", sync_error_last());
        return sync__fail(SYNC_EIO, "cannot save to %s: opened read-only for load (%s)", sa->path,
                          why);
    }
    if (sa->row_to_keep && (rc = keep_row_aside(sa, sa->row_to_keep)) != SYNC_ECORRUPT)
        return rc;
    char *printed = NULL;
    if (!state_json) {
        if (!state)
            return sync__fail(SYNC_EINVAL, "save without a state");
        printed = cJSON_PrintUnformatted(state);
        if (!printed)
            return sync__fail(SYNC_ENOMEM, "out of memory serialising the state");
        state_json = printed;
        state_len = strlen(printed);
    }
    /* One UPSERT is one implicit transaction; the text is bound in place, without a copy. */
    sqlite3_stmt *st = sa->save_stmt;
    int step = sqlite3_bind_text64(st, 1, state_json, state_len, SQLITE_STATIC, SQLITE_UTF8);
    if (step == SQLITE_OK)
        step = sqlite3_bind_int64(st, 2, version);
    if (step == SQLITE_OK)
        step = sqlite3_bind_int64(st, 3, sync_wall_ms());
    if (step == SQLITE_OK)
        step = sqlite3_step(st);
    rc = step == SQLITE_DONE ? SYNC_OK : fail_sqlite(sa->db, "cannot save to", sa->path);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    /* After SQLITE_FULL and some I/O errors SQLite may leave a transaction open; end it so the
     * next save starts clean. */
    if (rc != SYNC_OK && !sqlite3_get_autocommit(sa->db))
        exec_sql(sa->db, "ROLLBACK");
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
        sqlite3_backup *bk = sqlite3_backup_init(dst, "main", sa->db, "main");
        if (bk) {
            int step = sqlite3_backup_step(bk, -1);
            copied = sqlite3_backup_finish(bk) == SQLITE_OK && step == SQLITE_DONE;
        }
    }
    if (!copied)
        rc = dst ? fail_sqlite(dst, "cannot back up into", path)
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
    int rc = ensure_open(sa);
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
    close_db(sa);
    free(sa->path);
    free(sa->table);
    free(sa->backups_dir);
    free(sa);
}

/* The name is pasted into SQL (quoted), so only [A-Za-z_][A-Za-z0-9_]{0,63} gets through. */
static int check_table_name(const char *name)
{
    size_t len = strlen(name);
    if (len == 0)
        return sync__fail(SYNC_EINVAL, "table name is empty");
    if (len > SQLITE_TABLE_MAX)
        return sync__fail(SYNC_EINVAL, "table name is %zu characters long, over the limit of %d",
                          len, SQLITE_TABLE_MAX);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        int letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        int digit = c >= '0' && c <= '9';
        if (letter || (digit && i > 0))
            continue;
        if (c == '"' || c == '\'' || c == '`')
            return sync__fail(SYNC_EINVAL, "table name contains a quote (%c) at position %zu",
                              (char)c, i);
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
            return sync__fail(SYNC_EINVAL, "table name contains white space at position %zu", i);
        if (digit)
            return sync__fail(SYNC_EINVAL, "table name starts with a digit");
        return sync__fail(SYNC_EINVAL,
                          "table name contains byte 0x%02x at position %zu; only letters, digits "
                          "and _ are allowed",
                          c, i);
    }
    if (strncasecmp(name, "sqlite_", 7) == 0)
        return sync__fail(SYNC_EINVAL,
                          "table name %s is reserved: SQLite keeps sqlite_* for itself", name);
    return SYNC_OK;
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
    int version_rc = sync__check_options(opts, SYNC_SQLITE_OPTIONS_VERSION, "SQLite");
    if (version_rc != SYNC_OK)
        return version_rc;
    if (!opts->path || !*opts->path)
        return sync__fail(SYNC_EINVAL, "path is required");
    const char *table = opts->table_name ? opts->table_name : SQLITE_DEFAULT_TABLE;
    int rc = check_table_name(table);
    if (rc != SYNC_OK)
        return rc;
    if (opts->backups_dir && !*opts->backups_dir)
        return sync__fail(SYNC_EINVAL, "backups_dir is empty (use NULL for <path>.backups)");
    if (opts->durability != SYNC_SQLITE_PROCESS_SAFE && opts->durability != SYNC_SQLITE_POWER_SAFE)
        return sync__fail(SYNC_EINVAL, "unknown durability %d", (int)opts->durability);
    if (opts->busy_timeout_ms < 0)
        return sync__fail(SYNC_EINVAL, "busy_timeout_ms is negative (%d)", opts->busy_timeout_ms);

    sqlite_adapter *sa = calloc(1, sizeof *sa);
    if (!sa)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    sa->durability = opts->durability;
    sa->busy_timeout_ms = opts->busy_timeout_ms ? opts->busy_timeout_ms : SQLITE_DEFAULT_BUSY_MS;
    sa->path = strdup(opts->path);
    sa->table = strdup(table);
    if (opts->backups_dir)
        sa->backups_dir = strdup(opts->backups_dir);
    else if (asprintf(&sa->backups_dir, "%s.backups", opts->path) < 0)
        sa->backups_dir = NULL;
    if (!sa->path || !sa->table || !sa->backups_dir) {
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
    if (rc == SYNC_OK)
        sync__error_clear();
    return rc;
}

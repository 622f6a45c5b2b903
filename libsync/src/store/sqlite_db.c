/* The SQLite database shared by the SQLite adapter and the SQLite room store (sqlite_db.h). */
#include "sqlite_db.h"

#include "error.h"
#include "engine/json_check.h"
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define SQLITE_TABLE_MAX 64
#define SQLITE_DEFAULT_BUSY_MS 5000

static int is_memory(const sqlite_db *sa)
{
    return strcmp(sa->path, ":memory:") == 0;
}

/* SQLite's text plus the OS error behind an I/O failure ("disk I/O error" alone says little). */
int sqlite_db_fail(sqlite3 *db, const char *what, const char *path)
{
    int code = sqlite3_extended_errcode(db);
    int sys = sqlite3_system_errno(db);
    if ((code & 0xff) == SQLITE_IOERR && sys != 0)
        return sync__fail(SYNC_EIO, "%s %s: %s (%s)", what, path, sqlite3_errmsg(db),
                          strerror(sys));
    return sync__fail(SYNC_EIO, "%s %s: %s", what, path, sqlite3_errmsg(db));
}

void sqlite_db_close(sqlite_db *sa)
{
    /* No checkpoint of this database may run on after its path is freed. */
    sqlite_ckpt_detach(&sa->ckpt);
    for (size_t i = 0; i < SQLITE_DB_MAX_STMTS; i++) {
        sqlite3_finalize(sa->stmt[i]);
        sa->stmt[i] = NULL;
    }
    sqlite3_close(sa->db);
    sa->db = NULL;
    sa->read_only = 0;
}

int sqlite_db_exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* Runs (out NULL) or prepares for the adapter's life (out set) the statement
 * "<before><table><after>"; the table name was validated, so it can be pasted in. */
static int table_sql(sqlite_db *sa, const char *before, const char *after, sqlite3_stmt **out)
{
    char *sql = NULL;
    if (asprintf(&sql, "%s%s%s", before, sa->table, after) < 0)
        return SQLITE_NOMEM;
    int rc = out ? sqlite3_prepare_v3(sa->db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL)
                 : sqlite_db_exec(sa->db, sql);
    free(sql);
    return rc;
}

/* Opens the database and prepares everything a save needs. On failure the database is closed,
 * the detail is recorded and *sqlite_rc tells whether the file is not a database at all. */
static int open_and_prepare(sqlite_db *sa, int *sqlite_rc)
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
                sqlite_db_close(sa);
                *sqlite_rc = SQLITE_ERROR;
                return status;
            }
        }
        sqlite3_finalize(stmt);
    }
    if (rc == SQLITE_OK) {
        step = "cannot set synchronous on";
        rc = sqlite_db_exec(sa->db, sa->durability == SYNC_SQLITE_POWER_SAFE
                                        ? "PRAGMA synchronous=FULL"
                                        : "PRAGMA synchronous=NORMAL");
    }
    const sqlite_schema *schema = sa->schema;
    if (rc == SQLITE_OK) {
        step = "cannot create the table in";
        rc = table_sql(sa, schema->create.before, schema->create.after, NULL);
    }
    if (rc == SQLITE_OK && schema->extra.before)
        table_sql(sa, schema->extra.before, schema->extra.after, NULL);
    step = "unexpected table schema in";
    for (size_t i = 0; rc == SQLITE_OK && i < schema->prepared_count; i++)
        rc = table_sql(sa, schema->prepared[i].before, schema->prepared[i].after, &sa->stmt[i]);
    *sqlite_rc = rc;
    if (rc == SQLITE_OK) {
        if (!is_memory(sa))
            sqlite_ckpt_attach(&sa->ckpt, sa->db, sa->path,
                               sa->durability == SYNC_SQLITE_POWER_SAFE);
        return SYNC_OK;
    }
    int status = rc == SQLITE_NOMEM ? sync__fail(SYNC_ENOMEM, "out of memory")
                 : sa->db           ? sqlite_db_fail(sa->db, step, sa->path)
                                    : sync__fail(SYNC_ENOMEM, "out of memory opening %s", sa->path);
    sqlite_db_close(sa);
    return status;
}

/* A database that cannot be written (read-only file, directory or mount) is still opened for
 * load, so its record is read rather than replaced by a fresh state later. */
static int try_open_read_only(sqlite_db *sa, const char *name, int flags)
{
    int rc =
        sqlite3_open_v2(name, &sa->db, flags | SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_extended_result_codes(sa->db, 1);
        sqlite3_busy_timeout(sa->db, sa->busy_timeout_ms);
        for (size_t i = 0; rc == SQLITE_OK && i < sa->schema->read_count; i++)
            rc = table_sql(sa, sa->schema->prepared[i].before, sa->schema->prepared[i].after,
                           &sa->stmt[i]);
    }
    if (rc != SQLITE_OK) {
        sqlite_db_close(sa);
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

static int open_read_only(sqlite_db *sa)
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
static int keep_file_aside(sqlite_db *sa, char **out_aside)
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
int sqlite_db_open(sqlite_db *sa)
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

/* JSON text with nothing but whitespace after the value. */
/* The engine's own parser decides: a row it would refuse (a NUL byte, bad UTF-8, a non-finite
 * number) must be kept aside here, or the engine would start afresh and overwrite it. */
int sqlite_db_is_json(const char *text, size_t len)
{
    cJSON *value = NULL;
    if (sync__json_parse(text, len, 0, &value) != SYNC_OK)
        return 0;
    cJSON_Delete(value);
    return 1;
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

int sqlite_db_write(sqlite_db *d, sqlite3_stmt *st, int bound, const char *what)
{
    int step = bound == SQLITE_OK ? sqlite3_step(st) : bound;
    int rc = step == SQLITE_DONE ? SYNC_OK : sqlite_db_fail(d->db, what, d->path);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SYNC_OK && !sqlite3_get_autocommit(d->db))
        sqlite_db_exec(d->db, "ROLLBACK");
    return rc;
}

int sqlite_db_open_for_write(sqlite_db *sa)
{
    if (sa->read_only)
        sqlite_db_close(sa);
    int rc = sqlite_db_open(sa);
    if (rc != SYNC_OK)
        return rc;
    if (sa->read_only) {
        /* sqlite_db_open() left why the writable open failed; copied before sync__fail() reuses
         * it. */
        char why[256];
        snprintf(why, sizeof why, "%s", sync_error_last());
        return sync__fail(SYNC_EIO, "cannot save to %s: opened read-only for load (%s)", sa->path,
                          why);
    }
    return SYNC_OK;
}

int sqlite_db_setup(sqlite_db *d, const sync_sqlite_options *opts, const char *default_table,
                    const sqlite_schema *schema)
{
    memset(d, 0, sizeof *d);
    if (!opts->path || !*opts->path)
        return sync__fail(SYNC_EINVAL, "path is required");
    const char *table = opts->table_name ? opts->table_name : default_table;
    int rc = check_table_name(table);
    if (rc != SYNC_OK)
        return rc;
    if (opts->durability != SYNC_SQLITE_PROCESS_SAFE && opts->durability != SYNC_SQLITE_POWER_SAFE)
        return sync__fail(SYNC_EINVAL, "unknown durability %d", (int)opts->durability);
    if (opts->busy_timeout_ms < 0)
        return sync__fail(SYNC_EINVAL, "busy_timeout_ms is negative (%d)", opts->busy_timeout_ms);
    d->schema = schema;
    d->durability = opts->durability;
    d->busy_timeout_ms = opts->busy_timeout_ms ? opts->busy_timeout_ms : SQLITE_DEFAULT_BUSY_MS;
    d->path = strdup(opts->path);
    d->table = strdup(table);
    if (!d->path || !d->table) {
        sqlite_db_release(d);
        return sync__fail(SYNC_ENOMEM, "out of memory");
    }
    return SYNC_OK;
}

void sqlite_db_release(sqlite_db *d)
{
    sqlite_db_close(d);
    free(d->path);
    free(d->table);
    d->path = d->table = NULL;
}

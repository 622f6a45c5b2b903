/* The SQLite database behind the SQLite adapter and the SQLite room store: option checks, opening
 * in WAL mode with the chosen durability, a file that is not a database kept aside, a database
 * that cannot be written opened read-only, and statements prepared for the connection's life.
 * Not thread-safe: one user at a time (the room store holds a mutex around it). */
#ifndef LIBSYNC_SRC_STORE_SQLITE_DB_H
#define LIBSYNC_SRC_STORE_SQLITE_DB_H

#include <sqlite3.h>
#include <stddef.h>

#include "libsync/adapter.h"
#include "sqlite_checkpoint.h"

#define SQLITE_DB_MAX_STMTS 4

/* SQL "<before><table><after>": the table name was checked, so it is pasted in (quoted). */
typedef struct sqlite_sql {
    const char *before, *after;
} sqlite_sql;

typedef struct sqlite_schema {
    sqlite_sql create; /* CREATE TABLE IF NOT EXISTS, run at every open */
    /* Run after it at every writable open, its failure ignored: a table beside it that a
     * database of an older libsync lacks. before NULL: none. */
    sqlite_sql extra;
    /* Kept prepared in sqlite_db.stmt[]; the first read_count are the reads, which are all a
     * read-only open prepares. */
    sqlite_sql prepared[SQLITE_DB_MAX_STMTS];
    size_t prepared_count, read_count;
} sqlite_schema;

typedef struct sqlite_db {
    char *path;
    char *table;
    sync_sqlite_durability durability;
    int busy_timeout_ms;
    const sqlite_schema *schema;
    sqlite3 *db;
    sqlite3_stmt *stmt[SQLITE_DB_MAX_STMTS];
    /* Opened read-only because the database could not be written: reads work, writes fail and
     * each one first tries a writable open again. */
    int read_only;
    /* Its WAL checkpoints, run off the writer's thread (writable file databases only). */
    sqlite_ckpt ckpt;
} sqlite_db;

/* Checks `opts` (path, table name or `default_table`, durability, busy timeout) and copies them
 * into `d`; opens nothing. On failure `d` holds nothing to release. */
int sqlite_db_setup(sqlite_db *d, const sync_sqlite_options *opts, const char *default_table,
                    const sqlite_schema *schema);

/* Closes and frees everything sqlite_db_setup() copied. */
void sqlite_db_release(sqlite_db *d);

/* Opens the database on first use (or again after a failure): SYNC_OK; SYNC_ECORRUPT when the
 * file was not a database and was kept aside ("<path>.corrupt-<ms>") for a new one. */
int sqlite_db_open(sqlite_db *d);

void sqlite_db_close(sqlite_db *d);

/* For a write: closes a read-only connection and opens again; SYNC_EIO when it stays read-only. */
int sqlite_db_open_for_write(sqlite_db *d);

/* SQLite's message (and the OS error behind an I/O failure) as SYNC_EIO. */
int sqlite_db_fail(sqlite3 *db, const char *what, const char *path);

/* Steps a prepared write whose binding returned `bound`, then resets it and clears its bindings;
 * a failure ("<what> <path>: ...") rolls back a transaction SQLite left open (after SQLITE_FULL and
 * some I/O errors), so the next write starts clean. */
int sqlite_db_write(sqlite_db *d, sqlite3_stmt *st, int bound, const char *what);

/* sqlite3_exec() without callbacks. */
int sqlite_db_exec(sqlite3 *db, const char *sql);

/* Text the engine's parser accepts (a row it would refuse must be kept aside). */
int sqlite_db_is_json(const char *text, size_t len);

#endif

/* The SQLite adapter against real database files: round trips, restarts, table names, WAL,
 * backups, corrupt rows and files kept aside, and I/O failures that leave it usable. */
#include "adapter_engine.h"
#include "adapter_fs.h"
#include "check.h"
#include "store_contract.h"

#include <libsync/libsync.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static sync_adapter *open_adapter(const char *path, const char *table, const char *backups_dir)
{
    sync_sqlite_options opts = SYNC_SQLITE_OPTIONS_INIT;
    opts.path = path;
    opts.table_name = table;
    opts.backups_dir = backups_dir;
    sync_adapter *adapter = NULL;
    if (sync_adapter_sqlite_new(&adapter, &opts) != SYNC_OK)
        return NULL;
    return adapter;
}

static sync_adapter *open_default_table(const char *path, const char *backups_dir)
{
    return open_adapter(path, NULL, backups_dir);
}

/* The first column of the first row of `sql`, as text (caller frees), or NULL. */
static char *query_text(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    char *result = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
            result = strdup((const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return result;
}

static int exec_on(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open(path, &db);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

/* One row in the default table, stamped with updated_at, in a database SQLite finds sound. */
static void check_on_disk(const char *path, const char *state, int64_t version)
{
    char *want = NULL;
    if (asprintf(&want, "%s@%" PRId64, state, version) < 0)
        abort();
    char *row = query_text(path, "SELECT state || '@' || version FROM websocket_state");
    CHECK_EQ_STR(row, want);
    free(row);
    free(want);
    char *rows = query_text(path, "SELECT count(*) FROM websocket_state");
    CHECK_EQ_STR(rows, "1");
    free(rows);
    char *updated = query_text(path, "SELECT updated_at > 1600000000000 FROM websocket_state");
    CHECK_EQ_STR(updated, "1");
    free(updated);
    char *check = query_text(path, "PRAGMA integrity_check");
    CHECK_EQ_STR(check, "ok");
    free(check);
}

/* init() creates the database, backups go beside it in "<path>.backups" by default, and a full
 * disk is whatever SQLite reports. */
static const store_kind sqlite_store = {
    "sqlite", "state.sqlite", ".sqlite", open_default_table, check_on_disk, 1, ".backups", NULL};

static void test_many_saves_and_speed(void)
{
    char *dir = check_tmpdir("sqlite-many");
    char *fast = afs_join(dir, "process-safe.sqlite");
    char *safe = afs_join(dir, "power-safe.sqlite");
    double us_normal = store_time_saves(store_sqlite_new(fast, SYNC_SQLITE_PROCESS_SAFE), 2000);
    double us_full = store_time_saves(store_sqlite_new(safe, SYNC_SQLITE_POWER_SAFE), 200);
    CHECK(us_normal > 0);
    CHECK(us_full > 0);
    printf("sqlite save, small state: %.1f us (PROCESS_SAFE), %.1f us (POWER_SAFE)\n", us_normal,
           us_full);
    free(fast);
    free(safe);
    free(dir);
}

static void test_in_memory_database(void)
{
    char *dir = check_tmpdir("sqlite-memory");
    char *backups = afs_join(dir, "backups");
    sync_adapter *a = open_adapter(":memory:", NULL, backups);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
    CHECK_EQ_INT(sync_adapter_save(a, "{\"m\":1}", 5), SYNC_OK);
    store_expect_record(a, "{\"m\":1}", 5);
    int64_t ts = 0;
    CHECK_EQ_INT(sync_adapter_backup(a, &ts), SYNC_OK);
    char *copy = afs_find(backups, "backup-");
    REQUIRE(copy);
    char *state = query_text(copy, "SELECT state FROM websocket_state");
    CHECK_EQ_STR(state, "{\"m\":1}");
    free(state);
    free(copy);
    sync_adapter_free(a);
    CHECK(!afs_exists(":memory:"));
    free(backups);
    free(dir);
}

static void test_wal_mode_is_on(void)
{
    char *dir = check_tmpdir("sqlite-wal");
    char *path = afs_join(dir, "state.sqlite");
    sync_adapter *a = open_adapter(path, NULL, NULL);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
    char *mode = query_text(path, "PRAGMA journal_mode");
    CHECK_EQ_STR(mode, "wal");
    free(mode);
    sync_adapter_free(a);
    free(path);
    free(dir);
}

static void test_custom_table_name(void)
{
    char *dir = check_tmpdir("sqlite-table");
    char *path = afs_join(dir, "state.sqlite");
    sync_adapter *a = open_adapter(path, "my_custom_websocket_table", NULL);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
    CHECK_EQ_INT(sync_adapter_save(a, "{\"x\":1}", 7), SYNC_OK);
    sync_adapter_free(a);
    char *state = query_text(path, "SELECT state FROM my_custom_websocket_table WHERE id = 1");
    CHECK_EQ_STR(state, "{\"x\":1}");
    char *other = query_text(path, "SELECT count(*) FROM sqlite_master WHERE name = "
                                   "'websocket_state'");
    CHECK_EQ_STR(other, "0");
    free(state);
    free(other);

    /* Two tables in one file are two independent stores; a keyword is a valid name too. */
    sync_adapter *b = open_adapter(path, "select", NULL);
    REQUIRE(b);
    CHECK_EQ_INT(sync_adapter_init(b), SYNC_OK);
    store_expect_never_saved(b);
    CHECK_EQ_INT(sync_adapter_save(b, "2", 2), SYNC_OK);
    sync_adapter_free(b);
    a = open_adapter(path, "my_custom_websocket_table", NULL);
    REQUIRE(a);
    store_expect_record(a, "{\"x\":1}", 7);
    sync_adapter_free(a);
    free(path);
    free(dir);
}

static void expect_bad_table(const char *name, const char *detail)
{
    sync_sqlite_options opts = SYNC_SQLITE_OPTIONS_INIT;
    opts.path = "/nonexistent/never-opened.sqlite";
    opts.table_name = name;
    sync_adapter *a = (sync_adapter *)&opts; /* must be reset to NULL */
    CHECK_EQ_INT(sync_adapter_sqlite_new(&a, &opts), SYNC_EINVAL);
    CHECK(a == NULL);
    if (!strstr(sync_error_last(), detail)) {
        fprintf(stderr, "  table name \"%s\": error \"%s\" lacks \"%s\"\n", name, sync_error_last(),
                detail);
        CHECK(strstr(sync_error_last(), detail));
    }
}

static void test_bad_table_names(void)
{
    expect_bad_table("state\"; DROP TABLE x; --", "quote");
    expect_bad_table("it's", "quote");
    expect_bad_table("my table", "white space");
    expect_bad_table("", "empty");
    expect_bad_table("1table", "digit");
    expect_bad_table("a-b", "0x2d");
    expect_bad_table("caf\xc3\xa9", "0xc3");
    expect_bad_table("SQLite_master", "reserved");
    char long_name[66];
    memset(long_name, 'a', 65);
    long_name[65] = '\0';
    expect_bad_table(long_name, "65 characters");

    /* 64 characters is the longest allowed. */
    long_name[64] = '\0';
    char *dir = check_tmpdir("sqlite-longname");
    char *path = afs_join(dir, "state.sqlite");
    sync_adapter *a = open_adapter(path, long_name, NULL);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
    CHECK_EQ_INT(sync_adapter_save(a, "{}", 1), SYNC_OK);
    sync_adapter_free(a);
    free(path);
    free(dir);
}

static void test_bad_options(void)
{
    sync_sqlite_options opts = SYNC_SQLITE_OPTIONS_INIT;
    sync_adapter *a = NULL;
    CHECK_EQ_INT(sync_adapter_sqlite_new(NULL, &opts), SYNC_EINVAL);
    CHECK_EQ_INT(sync_adapter_sqlite_new(&a, NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_adapter_sqlite_new(&a, &opts), SYNC_EINVAL); /* no path */
    CHECK(strstr(sync_error_last(), "path"));
    opts.path = "x.sqlite";
    opts.version = 99;
    CHECK_EQ_INT(sync_adapter_sqlite_new(&a, &opts), SYNC_EINVAL);
    CHECK(strstr(sync_error_last(), "version"));
    opts.version = SYNC_SQLITE_OPTIONS_VERSION;
    opts.durability = (sync_sqlite_durability)7;
    CHECK_EQ_INT(sync_adapter_sqlite_new(&a, &opts), SYNC_EINVAL);
    opts.durability = SYNC_SQLITE_POWER_SAFE;
    opts.busy_timeout_ms = -1;
    CHECK_EQ_INT(sync_adapter_sqlite_new(&a, &opts), SYNC_EINVAL);
    CHECK(a == NULL);

    sync_sqlite_options filled;
    memset(&filled, 0xff, sizeof filled);
    CHECK_EQ_INT(sync_sqlite_options_init(&filled, SYNC_SQLITE_OPTIONS_VERSION), SYNC_OK);
    CHECK_EQ_INT(filled.version, SYNC_SQLITE_OPTIONS_VERSION);
    CHECK(filled.path == NULL && filled.table_name == NULL && filled.backups_dir == NULL);
    CHECK_EQ_INT(filled.durability, SYNC_SQLITE_PROCESS_SAFE);
    CHECK_EQ_INT(filled.busy_timeout_ms, 0);
    CHECK_EQ_INT(sync_sqlite_options_init(&filled, 2), SYNC_EINVAL);
    CHECK_EQ_INT(sync_sqlite_options_init(NULL, SYNC_SQLITE_OPTIONS_VERSION), SYNC_EINVAL);
}

static void expect_corrupt_row(const char *insert, const char *kept_state)
{
    char *dir = check_tmpdir("sqlite-corrupt-row");
    char *path = afs_join(dir, "state.sqlite");
    sync_adapter *a = open_adapter(path, NULL, NULL);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
    CHECK_EQ_INT(exec_on(path, insert), SQLITE_OK);

    store_expect_load_fails(a, SYNC_ECORRUPT);
    CHECK(strstr(sync_error_last(), "websocket_state_corrupt"));
    char *kept = query_text(path, "SELECT coalesce(state, 'NULL') FROM websocket_state_corrupt");
    CHECK_EQ_STR(kept, kept_state);
    free(kept);
    char *stamped = query_text(path, "SELECT kept_at > 1600000000000 FROM websocket_state_corrupt");
    CHECK_EQ_STR(stamped, "1");
    free(stamped);

    /* Kept aside once: the store now reads as never saved, and saving leaves the copy alone. */
    store_expect_never_saved(a);
    CHECK_EQ_INT(sync_adapter_save(a, "{\"fresh\":true}", 1), SYNC_OK);
    store_expect_record(a, "{\"fresh\":true}", 1);
    kept = query_text(path, "SELECT coalesce(state, 'NULL') FROM websocket_state_corrupt");
    CHECK_EQ_STR(kept, kept_state);
    free(kept);
    char *count = query_text(path, "SELECT count(*) FROM websocket_state_corrupt");
    CHECK_EQ_STR(count, "1");
    free(count);
    sync_adapter_free(a);
    free(path);
    free(dir);
}

static void test_corrupt_rows_kept_aside(void)
{
    expect_corrupt_row("INSERT INTO websocket_state VALUES (1, '{\"counter\": 5', 3, 0)",
                       "{\"counter\": 5");
    expect_corrupt_row("INSERT INTO websocket_state VALUES (1, '{} trailing', 3, 0)",
                       "{} trailing");
    expect_corrupt_row("INSERT INTO websocket_state VALUES (1, '{\"ok\":1}', 'three', 0)",
                       "{\"ok\":1}");
    expect_corrupt_row("INSERT INTO websocket_state VALUES (1, '{\"ok\":1}', 1.5, 0)",
                       "{\"ok\":1}");
    expect_corrupt_row("INSERT INTO websocket_state VALUES (1, NULL, 1, 0)", "NULL");
}

static void test_corrupt_row_kept_even_when_locked(void)
{
    /* load() finds a bad row while another process holds the write lock: the row cannot be moved
     * yet, and the next save moves it before writing instead of overwriting it. */
    char *dir = check_tmpdir("sqlite-corrupt-locked");
    char *path = afs_join(dir, "state.sqlite");
    sync_sqlite_options opts = SYNC_SQLITE_OPTIONS_INIT;
    opts.path = path;
    opts.busy_timeout_ms = 20;
    sync_adapter *a = NULL;
    REQUIRE(sync_adapter_sqlite_new(&a, &opts) == SYNC_OK);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
    CHECK_EQ_INT(exec_on(path, "INSERT INTO websocket_state VALUES (1, 'oops', 1, 0)"), SQLITE_OK);

    sqlite3 *other = NULL;
    REQUIRE(sqlite3_open(path, &other) == SQLITE_OK);
    CHECK_EQ_INT(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    char *loaded = NULL;
    int64_t v = 0;
    CHECK_EQ_INT(sync_adapter_load(a, &loaded, &v), SYNC_EIO);
    CHECK(strstr(sync_error_last(), "cannot be kept aside"));
    CHECK_EQ_INT(sync_adapter_save(a, "{\"n\":2}", 2), SYNC_EIO); /* still locked */
    CHECK_EQ_INT(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);

    CHECK_EQ_INT(sync_adapter_save(a, "{\"n\":3}", 3), SYNC_OK);
    store_expect_record(a, "{\"n\":3}", 3);
    char *kept = query_text(path, "SELECT state FROM websocket_state_corrupt");
    CHECK_EQ_STR(kept, "oops");
    free(kept);
    sync_adapter_free(a);
    free(path);
    free(dir);
}

static void test_not_a_database_kept_aside(void)
{
    char *dir = check_tmpdir("sqlite-notadb");
    char *path = afs_join(dir, "state.sqlite");
    char *wal = afs_join(dir, "state.sqlite-wal");
    char junk[2048];
    memset(junk, 'j', sizeof junk - 1);
    junk[sizeof junk - 1] = '\0';
    memcpy(junk, "precious bytes, not SQLite", 26);
    REQUIRE(afs_write(path, junk) == 0);
    REQUIRE(afs_write(wal, "stale wal") == 0);

    sync_adapter *a = open_adapter(path, NULL, NULL);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_ECORRUPT);
    CHECK(strstr(sync_error_last(), "kept aside"));
    /* The bytes were moved, not lost, and the -wal went with them. */
    char *aside = afs_find(dir, "state.sqlite.corrupt-");
    REQUIRE(aside);
    size_t aside_len = strlen(aside);
    if (aside_len > 4 && strcmp(aside + aside_len - 4, "-wal") == 0)
        aside[aside_len - 4] = '\0'; /* found the companion first */
    char *content = afs_read(aside);
    CHECK(content && strcmp(content, junk) == 0);
    free(content);
    char *aside_wal = NULL;
    if (asprintf(&aside_wal, "%s-wal", aside) > 0) {
        content = afs_read(aside_wal);
        CHECK_EQ_STR(content, "stale wal");
        free(content);
    }
    free(aside_wal);
    CHECK_EQ_INT(afs_count(dir, "state.sqlite.corrupt-"), 2);

    /* A fresh database took the name: never saved, then usable. */
    store_expect_never_saved(a);
    CHECK_EQ_INT(sync_adapter_save(a, "{\"n\":1}", 1), SYNC_OK);
    store_expect_record(a, "{\"n\":1}", 1);
    sync_adapter_free(a);
    content = afs_read(aside);
    CHECK(content && strcmp(content, junk) == 0);
    free(content);
    free(aside);
    free(wal);
    free(path);
    free(dir);
}

static void test_broken_database_kept_aside(void)
{
    /* Right magic, garbage after it: SQLite itself refuses the file. */
    char *dir = check_tmpdir("sqlite-broken");
    char *path = afs_join(dir, "state.sqlite");
    char junk[4096];
    memset(junk, '#', sizeof junk - 1);
    junk[sizeof junk - 1] = '\0';
    REQUIRE(afs_write(path, junk) == 0);
    FILE *f = fopen(path, "r+b");
    REQUIRE(f);
    fwrite("SQLite format 3", 1, 16, f);
    fclose(f);

    sync_adapter *a = open_adapter(path, NULL, NULL);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_ECORRUPT);
    CHECK(strstr(sync_error_last(), "kept aside"));
    CHECK_EQ_INT(afs_count(dir, "state.sqlite.corrupt-"), 1);
    CHECK_EQ_INT(sync_adapter_save(a, "{\"n\":2}", 2), SYNC_OK);
    store_expect_record(a, "{\"n\":2}", 2);
    sync_adapter_free(a);
    free(path);
    free(dir);
}

static void test_unwritable_paths(void)
{
    /* A database that cannot be opened cannot be read either. */
    sync_adapter *a = open_adapter("/proc/self/libsync-test/state.sqlite", NULL, NULL);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_EIO);
    store_expect_load_fails(a, SYNC_EIO);
    sync_adapter_free(a);

    /* The path is a directory. */
    char *dir = check_tmpdir("sqlite-isdir");
    a = open_adapter(dir, NULL, NULL);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_EIO);
    CHECK(sync_error_last()[0] != '\0');
    sync_adapter_free(a);

    /* A FIFO: SQLite would wait forever for data. */
    char *fifo = afs_join(dir, "fifo.sqlite");
    REQUIRE(mkfifo(fifo, 0600) == 0);
    a = open_adapter(fifo, NULL, NULL);
    REQUIRE(a);
    alarm(20); /* a hang fails the test instead of stalling the suite */
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_EIO);
    CHECK(strstr(sync_error_last(), "not a regular file"));
    alarm(0);
    sync_adapter_free(a);
    free(fifo);

    free(dir);
}

static void test_read_only_database(void)
{
    char *dir = check_tmpdir("sqlite-readonly");
    char *sub = afs_join(dir, "ro");
    char *path = afs_join(sub, "state.sqlite");
    sync_adapter *a = open_adapter(path, NULL, NULL);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
    CHECK_EQ_INT(sync_adapter_save(a, "{\"kept\":1}", 1), SYNC_OK);
    sync_adapter_free(a); /* closing checkpoints the WAL into the file */

    if (afs_make_readonly(sub) != 0) {
        fprintf(stderr, "  SKIP read-only database: no read-only bind mount here\n");
    } else {
        a = open_adapter(path, NULL, NULL);
        REQUIRE(a);
        int rc = sync_adapter_init(a);
        if (rc == SYNC_OK) {
            rc = sync_adapter_save(a, "{\"lost\":1}", 2);
        }
        CHECK_EQ_INT(rc, SYNC_EIO);
        CHECK(sync_error_last()[0] != '\0');
        fprintf(stderr, "  read-only: %s\n", sync_error_last());
        CHECK_EQ_INT(sync_adapter_save(a, "{\"lost\":2}", 3), SYNC_EIO);
        sync_adapter_free(a);
        afs_make_writable(sub);
        a = open_adapter(path, NULL, NULL);
        REQUIRE(a);
        CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
        store_expect_record(a, "{\"kept\":1}", 1);
        sync_adapter_free(a);
    }
    free(path);
    free(sub);
    free(dir);
}

static void test_locked_database(void)
{
    char *dir = check_tmpdir("sqlite-locked");
    char *path = afs_join(dir, "state.sqlite");
    sync_sqlite_options opts = SYNC_SQLITE_OPTIONS_INIT;
    opts.path = path;
    opts.busy_timeout_ms = 50;
    sync_adapter *a = NULL;
    REQUIRE(sync_adapter_sqlite_new(&a, &opts) == SYNC_OK);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
    CHECK_EQ_INT(sync_adapter_save(a, "{\"v\":1}", 1), SYNC_OK);

    sqlite3 *other = NULL;
    REQUIRE(sqlite3_open(path, &other) == SQLITE_OK);
    CHECK_EQ_INT(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    CHECK_EQ_INT(sync_adapter_save(a, "{\"v\":2}", 2), SYNC_EIO);
    CHECK(strstr(sync_error_last(), "locked"));
    CHECK_EQ_INT(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    CHECK_EQ_INT(sync_adapter_save(a, "{\"v\":3}", 3), SYNC_OK);
    store_expect_record(a, "{\"v\":3}", 3);
    sync_adapter_free(a);
    free(path);
    free(dir);
}

static void test_engine_corrupt_store(void)
{
    char junk[1024];
    memset(junk, 'j', sizeof junk - 1);
    junk[sizeof junk - 1] = '\0';
    store_check_engine_on_corrupt_store(&sqlite_store, junk);
}

int main(void)
{
    store_run_contract(&sqlite_store);
    RUN(test_many_saves_and_speed);
    RUN(test_wal_mode_is_on);
    RUN(test_in_memory_database);
    RUN(test_custom_table_name);
    RUN(test_bad_table_names);
    RUN(test_bad_options);
    RUN(test_corrupt_rows_kept_aside);
    RUN(test_corrupt_row_kept_even_when_locked);
    RUN(test_not_a_database_kept_aside);
    RUN(test_broken_database_kept_aside);
    RUN(test_unwritable_paths);
    RUN(test_locked_database);
    RUN(test_read_only_database);
    RUN(test_engine_corrupt_store);
    return check_summary();
}

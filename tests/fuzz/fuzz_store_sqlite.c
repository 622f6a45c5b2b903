/*
 * libFuzzer target: loading a SQLite row. The input chooses how the row is stored: byte 0 the
 * SQLite type of `state` (text, blob, integer, real, null), byte 1 the type of `version`, then 8
 * bytes of version and the rest as the state's bytes. The row is written with sqlite3 into the
 * adapter's table, then loaded by the adapter and by a new engine. Invariants: a load succeeds with
 * a JSON state or reports the row as corrupt having moved it aside (the table is then empty), and
 * an engine always starts, serving JSON.
 */
#include "fuzz_support.h"

#include <libsync/libsync.h>

#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_dir[] = "/tmp/libsync-fuzz-sqlite-XXXXXX";
static char g_path[sizeof g_dir + 16];
static sqlite3 *g_db;

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_store_sqlite invariant broken: %s (%s)\n", what,
            g_db ? sqlite3_errmsg(g_db) : "");
    abort();
}

static sync_adapter *adapter(void)
{
    sync_sqlite_options so = SYNC_SQLITE_OPTIONS_INIT;
    so.path = g_path;
    sync_adapter *a = NULL;
    if (sync_adapter_sqlite_new(&a, &so) != SYNC_OK)
        fail("cannot create the adapter");
    return a;
}

static void remove_dir(void)
{
    sqlite3_close(g_db);
    g_db = NULL;
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char path[sizeof g_path + 16];
        snprintf(path, sizeof path, "%s%s", g_path, suffixes[i]);
        unlink(path);
    }
    rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_scratch_dir(g_dir, "store.sqlite", g_path, sizeof g_path, fail);
    atexit(remove_dir);
    /* The adapter creates its table; this connection then writes the rows. */
    sync_adapter *a = adapter();
    if (sync_adapter_init(a) != SYNC_OK)
        fail("init");
    sync_adapter_free(a);
    if (sqlite3_open(g_path, &g_db) != SQLITE_OK)
        fail("open");
    sqlite3_busy_timeout(g_db, 5000);
    return 0;
}

static void bind_as(sqlite3_stmt *st, int col, uint8_t type, const uint8_t *bytes, size_t len,
                    int64_t number)
{
    switch (type % 5) {
    case 0:
        sqlite3_bind_text(st, col, (const char *)bytes, (int)len, SQLITE_TRANSIENT);
        break;
    case 1:
        sqlite3_bind_blob(st, col, bytes, (int)len, SQLITE_TRANSIENT);
        break;
    case 2:
        sqlite3_bind_int64(st, col, number);
        break;
    case 3: {
        double d;
        memcpy(&d, &number, sizeof d);
        sqlite3_bind_double(st, col, d);
        break;
    }
    default:
        sqlite3_bind_null(st, col);
    }
}

static void write_row(const uint8_t *data, size_t size)
{
    uint8_t state_type = size > 0 ? data[0] : 0, version_type = size > 1 ? data[1] : 2;
    int64_t number = 0;
    if (size >= 10)
        memcpy(&number, data + 2, sizeof number);
    const uint8_t *bytes = size > 10 ? data + 10 : data;
    size_t len = size > 10 ? size - 10 : 0;
    sqlite3_stmt *st = NULL;
    if (sqlite3_exec(g_db,
                     "DELETE FROM websocket_state; DROP TABLE IF EXISTS websocket_state_corrupt",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(g_db,
                           "INSERT INTO websocket_state (id, state, version, updated_at) "
                           "VALUES (1, ?1, ?2, 0)",
                           -1, &st, NULL) != SQLITE_OK)
        fail("prepare");
    bind_as(st, 1, state_type, bytes, len, number);
    bind_as(st, 2, version_type, bytes, len, number);
    if (sqlite3_step(st) != SQLITE_DONE)
        fail("insert");
    sqlite3_finalize(st);
}

static int rows(void)
{
    sqlite3_stmt *st = NULL;
    int n = -1;
    if (sqlite3_prepare_v2(g_db, "SELECT count(*) FROM websocket_state", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    write_row(data, size);
    sync_adapter *a = adapter();
    char *json = NULL;
    int64_t version = -7;
    int rc = fuzz_init_and_load(a, &json, &version);
    sync_adapter_free(a);
    if (rc == SYNC_OK && json) {
        cJSON *state = cJSON_Parse(json);
        if (!state)
            fail("a loaded state is not JSON");
        cJSON_Delete(state);
        if (rows() != 1)
            fail("a good row was moved away");
    } else if (rc == SYNC_OK) {
        fail("a stored row loaded as never saved");
    } else if (rc == SYNC_ECORRUPT) {
        if (rows() != 0)
            fail("a corrupt row was left where the next save overwrites it");
    } else {
        fail("a row failed to load for another reason than corruption");
    }

    write_row(data, size);
    fuzz_check_engine_start(adapter(), rc == SYNC_OK ? json : NULL, version, fail);
    sync_free(json);
    return 0;
}

/* Both adapters driven from several threads at once through an engine: the engine's timer thread
 * saving every few milliseconds, the main thread changing the state (a save per change) and a
 * second thread asking for syncs and backups. The adapters keep no locks of their own (the SQLite
 * connection is opened without a mutex), so this proves the engine's serialisation is enough;
 * run it under TSan too. */
#include "adapter_fs.h"
#include "check.h"

#include <libsync/libsync.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define CHANGES 300

static atomic_int stop;
static atomic_int errors_seen;

static void count_error(sync_engine *engine, int status, const char *message, const char *context,
                        sync_conn *conn, void *userdata)
{
    (void)engine;
    (void)conn;
    (void)userdata;
    fprintf(stderr, "  on_error %d in %s: %s\n", status, context, message);
    atomic_fetch_add(&errors_seen, 1);
}

static void *sync_and_backup(void *arg)
{
    sync_engine *engine = arg;
    /* The first round (a backup) runs even when the main thread has already finished: on a busy
     * machine this thread may not be scheduled before it does. */
    for (int i = 0; i < 100000 && (i == 0 || !atomic_load(&stop)); i++) {
        int rc = i % 10 == 0 ? sync_engine_create_backup(engine) : sync_engine_sync(engine);
        if (rc < 0)
            atomic_fetch_add(&errors_seen, 1);
    }
    return NULL;
}

static void hammer(sync_adapter *adapter, sync_adapter *(*reopen)(const char *), const char *path)
{
    atomic_store(&stop, 0);
    atomic_store(&errors_seen, 0);
    sync_hooks hooks = SYNC_HOOKS_INIT;
    hooks.on_error = count_error;
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.adapter = adapter;
    opts.initial_state_json = "{\"counter\":0}";
    opts.sync_interval_ms = 2;
    opts.timer_mode = SYNC_TIMERS_THREAD;
    opts.hooks = &hooks;
    sync_engine *engine = NULL;
    REQUIRE(sync_engine_new(&engine, &opts) == SYNC_OK);
    /* One save first: a file store has nothing to back up before it. */
    CHECK_EQ_INT(sync_engine_set_state_json(engine, "{\"counter\":1}", 0), SYNC_OK);
    pthread_t other;
    REQUIRE(pthread_create(&other, NULL, sync_and_backup, engine) == 0);
    char state[64];
    for (int i = 2; i <= CHANGES; i++) {
        snprintf(state, sizeof state, "{\"counter\":%d}", i);
        CHECK(sync_engine_set_state_json(engine, state, 0) >= 0);
    }
    atomic_store(&stop, 1);
    pthread_join(other, NULL);
    sync_engine_free(engine);
    CHECK_EQ_INT(atomic_load(&errors_seen), 0);

    sync_adapter *again = reopen(path);
    REQUIRE(again);
    char *loaded = NULL;
    int64_t version = 0;
    CHECK_EQ_INT(sync_adapter_init(again), SYNC_OK);
    CHECK_EQ_INT(sync_adapter_load(again, &loaded, &version), SYNC_OK);
    snprintf(state, sizeof state, "{\"counter\":%d}", CHANGES);
    CHECK_EQ_STR(loaded, state);
    CHECK_EQ_INT(version, CHANGES);
    sync_free(loaded);
    sync_adapter_free(again);
}

static char *backups_dir;

static sync_adapter *sqlite_adapter(const char *path)
{
    sync_sqlite_options opts = SYNC_SQLITE_OPTIONS_INIT;
    opts.path = path;
    opts.backups_dir = backups_dir;
    sync_adapter *adapter = NULL;
    return sync_adapter_sqlite_new(&adapter, &opts) == SYNC_OK ? adapter : NULL;
}

static sync_adapter *file_adapter(const char *path)
{
    sync_file_options opts = SYNC_FILE_OPTIONS_INIT;
    opts.file_path = path;
    opts.backups_dir = backups_dir;
    opts.fsync = 0;
    sync_adapter *adapter = NULL;
    return sync_adapter_file_new(&adapter, &opts) == SYNC_OK ? adapter : NULL;
}

/* Hammers the store `file` in a fresh directory `name`, opened with `open_store`: it keeps working,
 * and makes backups; `tmp_prefix` (when not NULL) names temporary files none of which may be left.
 */
static void from_threads(const char *name, const char *file,
                         sync_adapter *(*open_store)(const char *), const char *tmp_prefix)
{
    char *dir = check_tmpdir(name);
    char *path = afs_join(dir, file);
    backups_dir = afs_join(dir, "backups");
    sync_adapter *adapter = open_store(path);
    CHECK(adapter);
    if (adapter) {
        hammer(adapter, open_store, path);
        CHECK(afs_count(backups_dir, "backup-") > 0);
        if (tmp_prefix)
            CHECK_EQ_INT(afs_count(dir, tmp_prefix), 0);
    }
    free(backups_dir);
    free(path);
    free(dir);
}

static void test_sqlite_from_threads(void)
{
    from_threads("thread-sqlite", "state.sqlite", sqlite_adapter, NULL);
}

static void test_file_from_threads(void)
{
    from_threads("thread-file", "state.json", file_adapter, "state.json.tmp-");
}

int main(void)
{
    RUN(test_sqlite_from_threads);
    RUN(test_file_from_threads);
    return check_summary();
}

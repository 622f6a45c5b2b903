/* WAL checkpoints of the SQLite adapter and room store run on libsync's checkpointer thread, not on
 * the thread that saves: the database file catches up with the saves, the saving thread never
 * fsyncs it, the WAL stays bounded under sustained saves, and freeing a store while its checkpoint
 * is queued or running is clean (ASan, TSan). SQLite's syncs are counted by a VFS that wraps the
 * real one, registered as the default, so libsync's connections go through it. */
#include "adapter_fs.h"
#include "check.h"
#include "store_contract.h"

#include <libsync/libsync.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif

/* SQLite's default auto-checkpoint, and the bound past which the writer checkpoints itself. */
#define CKPT_PAGES 1000
#define HARD_PAGES (8 * CKPT_PAGES)
/* The oldest version the database file may hold after `last` saves of one page each: the last
 * request came within the last CKPT_PAGES pages (and a few pages of setup). */
#define RECENT(last) ((last)-CKPT_PAGES - 10)

/* ---- a VFS that counts xSync per file kind and per thread ---------------------------------- */

typedef struct count_file {
    sqlite3_file base;
    sqlite3_file *real; /* right after this struct */
    int kind;           /* KIND_DB, KIND_WAL, or 0 */
} count_file;

enum { KIND_DB = 1, KIND_WAL = 2 };

static sqlite3_vfs *real_vfs;
static sqlite3_vfs count_vfs;
static _Thread_local long my_syncs[3];
static atomic_long all_syncs[3];
/* While set, opening a database fails on every thread but the one that set it (a checkpointer
 * out of file descriptors, say). */
static atomic_int fail_opens_elsewhere;
static _Thread_local int opens_allowed_here;
/* While set, a sync on any other thread takes 30 ms more (a slow disk under the checkpointer). */
static atomic_int slow_syncs_elsewhere;
static _Thread_local int syncs_fast_here;
/* While set, each write to a database file on another thread (a checkpoint's page copy) takes
 * 20 ms more; the writes counted from there. */
static atomic_int slow_db_writes_elsewhere;
static _Thread_local int writes_fast_here;
static atomic_long db_writes_elsewhere;

#define REAL(f) (((count_file *)(f))->real)

static int c_close(sqlite3_file *f)
{
    return REAL(f)->pMethods->xClose(REAL(f));
}
static int c_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
}
static int c_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    if (((count_file *)f)->kind == KIND_DB && !writes_fast_here) {
        atomic_fetch_add(&db_writes_elsewhere, 1);
        if (atomic_load(&slow_db_writes_elsewhere))
            check_sleep_ms(20);
    }
    return REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
}
static int c_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int c_sync(sqlite3_file *f, int flags)
{
    int kind = ((count_file *)f)->kind;
    my_syncs[kind]++;
    atomic_fetch_add(&all_syncs[kind], 1);
    if (atomic_load(&slow_syncs_elsewhere) && !syncs_fast_here)
        check_sleep_ms(30);
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int c_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int c_lock(sqlite3_file *f, int level)
{
    return REAL(f)->pMethods->xLock(REAL(f), level);
}
static int c_unlock(sqlite3_file *f, int level)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), level);
}
static int c_check_reserved(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int c_file_control(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int c_sector_size(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int c_device(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int c_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **out)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, pgsz, extend, out);
}
static int c_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}
static void c_shm_barrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int c_shm_unmap(sqlite3_file *f, int delete_flag)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), delete_flag);
}
static int c_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **out)
{
    return REAL(f)->pMethods->xFetch(REAL(f), off, n, out);
}
static int c_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

static const sqlite3_io_methods count_io = {
    3,           c_close,   c_read,     c_write,          c_truncate,     c_sync,
    c_file_size, c_lock,    c_unlock,   c_check_reserved, c_file_control, c_sector_size,
    c_device,    c_shm_map, c_shm_lock, c_shm_barrier,    c_shm_unmap,    c_fetch,
    c_unfetch,
};

static int c_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out_flags)
{
    (void)vfs;
    count_file *cf = (count_file *)file;
    if ((flags & SQLITE_OPEN_MAIN_DB) && atomic_load(&fail_opens_elsewhere) &&
        !opens_allowed_here) {
        file->pMethods = NULL;
        return SQLITE_CANTOPEN;
    }
    cf->real = (sqlite3_file *)(cf + 1);
    cf->kind = (flags & SQLITE_OPEN_MAIN_DB) ? KIND_DB : (flags & SQLITE_OPEN_WAL) ? KIND_WAL : 0;
    int rc = real_vfs->xOpen(real_vfs, name, cf->real, flags, out_flags);
    file->pMethods = rc == SQLITE_OK && cf->real->pMethods ? &count_io : NULL;
    return rc;
}

static void install_counting_vfs(void)
{
    real_vfs = sqlite3_vfs_find(NULL);
    if (!real_vfs || real_vfs->iVersion < 1)
        abort();
    count_vfs = *real_vfs;
    count_vfs.zName = "libsync-test-count-syncs";
    count_vfs.szOsFile = (int)sizeof(count_file) + real_vfs->szOsFile;
    count_vfs.xOpen = c_open;
    count_vfs.pNext = NULL;
    if (sqlite3_vfs_register(&count_vfs, 1) != SQLITE_OK)
        abort();
}

/* ---- helpers ------------------------------------------------------------------------------- */

static sync_adapter *open_adapter(const char *path, sync_sqlite_durability durability)
{
    sync_adapter *adapter = store_sqlite_new(path, durability);
    if (adapter && sync_adapter_init(adapter) != SYNC_OK) {
        sync_adapter_free(adapter);
        return NULL;
    }
    return adapter;
}

static sync_room_store *open_room_store(const char *path)
{
    sync_sqlite_options opts = SYNC_SQLITE_OPTIONS_INIT;
    opts.path = path;
    sync_room_store *store = NULL;
    if (sync_room_store_sqlite_new(&store, &opts) != SYNC_OK)
        return NULL;
    return store;
}

/* A small state a few hundred bytes long, so a save is one changed page. */
static const char *state_of(int64_t version)
{
    static _Thread_local char buf[256];
    snprintf(buf, sizeof buf, "{\"n\":%lld,\"pad\":\"%0180d\"}", (long long)version, 7);
    return buf;
}

static int save_many(sync_adapter *a, int64_t from, int count)
{
    for (int64_t v = from; v < from + count; v++)
        if (sync_adapter_save(a, state_of(v), v) != SYNC_OK)
            return 0;
    return 1;
}

/* The largest version `sql` finds in the database FILE alone: an immutable open ignores the WAL,
 * so it sees only what checkpoints copied. -1 when the file alone cannot be read: no table yet,
 * or a checkpoint that a commit overtook skipped the pages written since. */
static long long file_version(const char *path, const char *sql)
{
    char *uri = NULL;
    if (asprintf(&uri, "file:%s?immutable=1", path) < 0)
        abort();
    sqlite3 *db = NULL;
    long long version = -1;
    if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL) == SQLITE_OK) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_INTEGER)
            version = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    free(uri);
    return version;
}

static long long adapter_file_version(const char *path)
{
    return file_version(path, "SELECT version FROM websocket_state WHERE id = 1");
}

/* Waits (bounded: the machine is shared) until the file holds at least `want`. */
static long long wait_file_version(const char *path, const char *sql, long long want)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long long got = file_version(path, sql);
    while (got < want && check_elapsed_ms(&start) < 10000) {
        check_sleep_ms(20);
        got = file_version(path, sql);
    }
    return got;
}

static long long adapter_wait_version(const char *path, long long want)
{
    return wait_file_version(path, "SELECT version FROM websocket_state WHERE id = 1", want);
}

static long long wal_size(const char *path)
{
    char *wal = NULL;
    if (asprintf(&wal, "%s-wal", path) < 0)
        abort();
    struct stat st;
    long long size = stat(wal, &st) == 0 ? (long long)st.st_size : 0;
    free(wal);
    return size;
}

/* The WAL's size for `pages` frames of a 4 KiB page (header 32 bytes, 24 per frame). */
static long long wal_bytes(long long pages)
{
    return 32 + pages * (4096 + 24);
}

/* The WAL header's checkpoint sequence number: the writer bumps it each time it restarts the WAL
 * (and writes it with the first commit after). -1 when there is no header. */
static long long wal_restarts(const char *path)
{
    char *wal = NULL;
    if (asprintf(&wal, "%s-wal", path) < 0)
        abort();
    FILE *f = fopen(wal, "rb");
    free(wal);
    unsigned char b[4];
    long long seq = -1;
    if (f && fseek(f, 12, SEEK_SET) == 0 && fread(b, 1, 4, f) == 4)
        seq = (long long)b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3];
    if (f)
        fclose(f);
    return seq;
}

static long long integrity(const char *path)
{
    sqlite3 *db = NULL;
    long long ok = 0;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            ok = strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return ok;
}

/* ---- tests --------------------------------------------------------------------------------- */

/* Thousands of saves cross the threshold several times; once they stop, the database file (not
 * only the WAL) holds a version at least as recent as the last request (within the last 1000
 * pages), though no save ever waited for a checkpoint. A checkpoint that the next save overtook
 * leaves the file unreadable alone or older: the retry after the saves stop must finish it. */
static void test_database_file_catches_up(void)
{
    char *dir = check_tmpdir("ckpt-catches-up");
    char *path = afs_join(dir, "state.sqlite");
    sync_adapter *a = open_adapter(path, SYNC_SQLITE_PROCESS_SAFE);
    REQUIRE(a);
    const int n = 4 * CKPT_PAGES;
    CHECK(save_many(a, 1, n));
    long long got = adapter_wait_version(path, RECENT(n));
    printf("database file holds version %lld of %d; WAL %lld bytes\n", got, n, wal_size(path));
    CHECK(got >= RECENT(n));
    CHECK(wal_size(path) <= wal_bytes(HARD_PAGES + CKPT_PAGES));
    sync_adapter_free(a);
    CHECK(integrity(path));
    free(path);
    free(dir);
}

/* The same through the room store's connection. */
static void test_room_store_file_catches_up(void)
{
    char *dir = check_tmpdir("ckpt-rooms");
    char *path = afs_join(dir, "rooms.sqlite");
    sync_room_store *store = open_room_store(path);
    REQUIRE(store);
    const int n = 3 * CKPT_PAGES;
    for (int v = 1; v <= n; v++)
        if (sync_room_store_save(store, v % 2 ? "odd" : "even", state_of(v), v) != SYNC_OK) {
            CHECK(!"room save failed");
            break;
        }
    long long got = wait_file_version(path, "SELECT max(version) FROM websocket_rooms", RECENT(n));
    printf("room database file holds version %lld of %d\n", got, n);
    CHECK(got >= RECENT(n));
    sync_room_store_free(store);
    CHECK(integrity(path));
    free(path);
    free(dir);
}

/* What SQLite's auto-checkpoint did on the saving thread (fsync the WAL, copy it into the
 * database, fsync the database when it reached the WAL's end) happens on another thread: the
 * saving thread never syncs the database file, nor the WAL with synchronous=NORMAL (only a
 * checkpoint syncs it then), while another thread syncs the WAL before each copy. */
static void expect_no_sync_on_saver(sync_sqlite_durability durability, int n)
{
    char *dir = check_tmpdir("ckpt-no-sync");
    char *path = afs_join(dir, "state.sqlite");
    sync_adapter *a = open_adapter(path, durability);
    REQUIRE(a);
    CHECK(save_many(a, 1, 1)); /* creating the database and switching to WAL syncs here */
    long mine_db = my_syncs[KIND_DB], mine_wal = my_syncs[KIND_WAL];
    long others_wal = atomic_load(&all_syncs[KIND_WAL]) - mine_wal;
    CHECK(save_many(a, 2, n));
    long saver_db = my_syncs[KIND_DB] - mine_db, saver_wal = my_syncs[KIND_WAL] - mine_wal;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long checkpointer_wal = 0;
    while (check_elapsed_ms(&start) < 10000) {
        checkpointer_wal = atomic_load(&all_syncs[KIND_WAL]) - my_syncs[KIND_WAL] - others_wal;
        if (checkpointer_wal > 0)
            break;
        check_sleep_ms(20);
    }
    printf("%s, %d saves: fsyncs on the saving thread: database %ld, WAL %ld; WAL fsyncs "
           "elsewhere %ld\n",
           durability == SYNC_SQLITE_POWER_SAFE ? "POWER_SAFE" : "PROCESS_SAFE", n, saver_db,
           saver_wal, checkpointer_wal);
    CHECK_EQ_INT(saver_db, 0);
    if (durability == SYNC_SQLITE_PROCESS_SAFE)
        CHECK_EQ_INT(saver_wal, 0);
    else
        CHECK(saver_wal >= n); /* synchronous=FULL: every commit syncs the WAL, as before */
    CHECK(checkpointer_wal > 0);
    CHECK(adapter_wait_version(path, RECENT(n + 1)) >= RECENT(n + 1));
    sync_adapter_free(a);
    free(path);
    free(dir);
}

static void test_saving_thread_never_syncs_the_database(void)
{
    expect_no_sync_on_saver(SYNC_SQLITE_PROCESS_SAFE, 3 * CKPT_PAGES);
    expect_no_sync_on_saver(SYNC_SQLITE_POWER_SAFE, CKPT_PAGES + CKPT_PAGES / 2);
}

/* A checkpoint that cannot reach the WAL's end (here a reader holds an old snapshot; in a server,
 * the next save overtakes it) is tried again: once the reader is gone and the saves stopped, the
 * database file gets the last version without another request. */
static void test_unfinished_checkpoint_is_retried(void)
{
    char *dir = check_tmpdir("ckpt-retry");
    char *path = afs_join(dir, "state.sqlite");
    sync_adapter *a = open_adapter(path, SYNC_SQLITE_PROCESS_SAFE);
    REQUIRE(a);
    CHECK(save_many(a, 1, 10));
    sqlite3 *reader = NULL;
    REQUIRE(sqlite3_open_v2(path, &reader, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    CHECK(sqlite3_exec(reader, "BEGIN; SELECT count(*) FROM websocket_state", NULL, NULL, NULL) ==
          SQLITE_OK);
    const int n = CKPT_PAGES + 100;
    CHECK(save_many(a, 11, n - 10)); /* one request, near save 1000 */
    check_sleep_ms(100);
    long long held = adapter_file_version(path);
    CHECK(sqlite3_exec(reader, "COMMIT", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(reader);
    long long got = adapter_wait_version(path, n);
    printf("reader held: database file at version %lld; after it left: %lld of %d\n", held, got, n);
    CHECK(held <= 10);
    CHECK_EQ_INT(got, n);
    sync_adapter_free(a);
    free(path);
    free(dir);
}

/* A background checkpoint that fails (not busy) is not lost: the writer runs the next one
 * itself, as SQLite would have, and later ones go back to the thread. Without that, the database
 * file would get nothing below the hard bound. */
static void test_failed_checkpoint_falls_back_to_the_writer(void)
{
    char *dir = check_tmpdir("ckpt-fails");
    char *path = afs_join(dir, "state.sqlite");
    sync_adapter *a = open_adapter(path, SYNC_SQLITE_PROCESS_SAFE);
    REQUIRE(a);
    opens_allowed_here = 1;
    atomic_store(&fail_opens_elsewhere, 1);
    long mine_db = my_syncs[KIND_DB];
    int64_t v = 1;
    long long got = -1;
    /* At most 6,000 pages: below the hard bound. A round gives the thread time to fail. */
    for (int round = 0; round < 6 && got < 0; round++, v += CKPT_PAGES) {
        CHECK(save_many(a, v, CKPT_PAGES));
        check_sleep_ms(50);
        got = adapter_file_version(path);
    }
    long saver_db = my_syncs[KIND_DB] - mine_db;
    atomic_store(&fail_opens_elsewhere, 0);
    printf("checkpointer failing: database file at version %lld after %lld saves; %ld database "
           "fsyncs on the saving thread\n",
           got, (long long)v - 1, saver_db);
    CHECK(got > 0);
    CHECK(saver_db > 0);
    /* The thread works again: the next checkpoints are its own. */
    long others_wal = atomic_load(&all_syncs[KIND_WAL]) - my_syncs[KIND_WAL];
    CHECK(save_many(a, v, 2 * CKPT_PAGES + 10));
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (atomic_load(&all_syncs[KIND_WAL]) - my_syncs[KIND_WAL] == others_wal &&
           check_elapsed_ms(&start) < 10000)
        check_sleep_ms(20);
    CHECK(atomic_load(&all_syncs[KIND_WAL]) - my_syncs[KIND_WAL] > others_wal);
    opens_allowed_here = 0;
    sync_adapter_free(a);
    CHECK(integrity(path));
    free(path);
    free(dir);
}

/* Back-to-back saves leave a passive checkpoint no end to reach: the writer's own checkpoint at
 * the hard bound keeps the WAL from growing without limit. */
static void test_wal_bounded_under_sustained_saves(void)
{
    char *dir = check_tmpdir("ckpt-sustained");
    char *path = afs_join(dir, "state.sqlite");
    sync_adapter *a = open_adapter(path, SYNC_SQLITE_PROCESS_SAFE);
    REQUIRE(a);
    const int n = 20000;
    long long max_wal = 0;
    for (int v = 1; v <= n; v += 250) {
        if (!save_many(a, v, 250)) {
            CHECK(!"save failed");
            break;
        }
        long long size = wal_size(path);
        if (size > max_wal)
            max_wal = size;
    }
    printf("%d saves: WAL at most %lld bytes (bound %lld)\n", n, max_wal,
           wal_bytes(HARD_PAGES + CKPT_PAGES));
    CHECK(max_wal <= wal_bytes(HARD_PAGES + CKPT_PAGES));
    CHECK(adapter_file_version(path) > 0);
    sync_adapter_free(a);
    CHECK(integrity(path));
    free(path);
    free(dir);
}

/* A checkpoint copies the WAL as it was when it began, and the saves that came meanwhile keep the
 * WAL from restarting: it must be tried again, though it copied all it saw, or the WAL would grow
 * on to the next request (1,000 pages later) whatever the pause. Here saves go on while the
 * checkpointer syncs the WAL (slowly: a sync elsewhere takes 30 ms more), so they overtake it for
 * sure; then saves a calm 20 ms apart must see the WAL restart. */
static void test_overtaken_checkpoint_is_retried(void)
{
    char *dir = check_tmpdir("ckpt-overtaken");
    char *path = afs_join(dir, "state.sqlite");
    syncs_fast_here = 1;
    sync_adapter *a = open_adapter(path, SYNC_SQLITE_PROCESS_SAFE);
    REQUIRE(a);
    CHECK(save_many(a, 1, CKPT_PAGES - 10));
    long others_wal = atomic_load(&all_syncs[KIND_WAL]) - my_syncs[KIND_WAL];
    atomic_store(&slow_syncs_elsewhere, 1);
    /* Past the request, on until the checkpointer syncs the WAL (it counts before its 30 ms), and
     * a few saves more: they come after it read the WAL's size. */
    int64_t v = CKPT_PAGES - 9;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int after_sync = -1;
    while (after_sync < 20 && check_elapsed_ms(&start) < 10000) {
        CHECK(sync_adapter_save(a, state_of(v), v) == SYNC_OK);
        v++;
        if (after_sync >= 0)
            after_sync++;
        else if (v > CKPT_PAGES + 10 &&
                 atomic_load(&all_syncs[KIND_WAL]) - my_syncs[KIND_WAL] > others_wal)
            after_sync = 0;
    }
    CHECK(after_sync == 20);
    atomic_store(&slow_syncs_elsewhere, 0);
    long long peak = wal_size(path), seq = wal_restarts(path);
    CHECK(peak > wal_bytes(CKPT_PAGES));
    clock_gettime(CLOCK_MONOTONIC, &start);
    int calm = 0;
    while (wal_restarts(path) == seq && check_elapsed_ms(&start) < 5000) {
        check_sleep_ms(20);
        CHECK(sync_adapter_save(a, state_of(v), v) == SYNC_OK);
        v++;
        calm++;
    }
    printf("overtaken checkpoint: WAL %lld bytes; restarted after %d calm saves (%lld ms): %lld "
           "bytes\n",
           peak, calm, (long long)check_elapsed_ms(&start), wal_size(path));
    CHECK(wal_restarts(path) != seq);
    syncs_fast_here = 0;
    sync_adapter_free(a);
    CHECK(integrity(path));
    free(path);
    free(dir);
}

/* Adapters freed right after the save that requested their checkpoint, so the request is queued
 * or running when the free comes; several at once, freed out of order, so the request list loses
 * entries from its middle. Each database stays whole. */
static void test_free_while_checkpointing(void)
{
    char *dir = check_tmpdir("ckpt-free");
    enum { ROUNDS = 12, AT_ONCE = 3 };
    for (int round = 0; round < ROUNDS; round++) {
        char *paths[AT_ONCE];
        sync_adapter *adapters[AT_ONCE];
        for (int i = 0; i < AT_ONCE; i++) {
            char name[64];
            snprintf(name, sizeof name, "r%d-%d.sqlite", round, i);
            paths[i] = afs_join(dir, name);
            adapters[i] = open_adapter(paths[i], SYNC_SQLITE_PROCESS_SAFE);
            REQUIRE(adapters[i]);
        }
        /* Past the threshold by a few saves that vary per round. */
        int n = CKPT_PAGES + (round % 4) * 3;
        for (int v = 1; v <= n; v++)
            for (int i = 0; i < AT_ONCE; i++)
                CHECK(sync_adapter_save(adapters[i], state_of(v), v) == SYNC_OK);
        static const int order[AT_ONCE] = {1, 0, 2};
        for (int i = 0; i < AT_ONCE; i++)
            sync_adapter_free(adapters[order[i]]);
        for (int i = 0; i < AT_ONCE; i++) {
            CHECK(integrity(paths[i]));
            free(paths[i]);
        }
    }
    /* The same for room stores. */
    for (int round = 0; round < ROUNDS / 2; round++) {
        char name[64];
        snprintf(name, sizeof name, "rooms%d.sqlite", round);
        char *path = afs_join(dir, name);
        sync_room_store *store = open_room_store(path);
        REQUIRE(store);
        for (int v = 1; v <= CKPT_PAGES + round; v++)
            CHECK(sync_room_store_save(store, "r", state_of(v), v) == SYNC_OK);
        sync_room_store_free(store);
        CHECK(integrity(path));
        free(path);
    }
    free(dir);
}

/* Saves from many threads at once, each on adapters of its own: one checkpointer serves them all
 * (TSan checks the request list). */
static void *saver_main(void *arg)
{
    const char *dir = arg;
    char name[64];
    snprintf(name, sizeof name, "t%lu.sqlite", (unsigned long)pthread_self());
    char *path = afs_join(dir, name);
    sync_adapter *a = open_adapter(path, SYNC_SQLITE_PROCESS_SAFE);
    int ok = a && save_many(a, 1, 2 * CKPT_PAGES + 50);
    sync_adapter_free(a);
    ok = ok && integrity(path);
    free(path);
    return ok ? arg : NULL;
}

static void test_many_threads_share_the_checkpointer(void)
{
    char *dir = check_tmpdir("ckpt-threads");
    enum { THREADS = 4 };
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++)
        REQUIRE(pthread_create(&threads[i], NULL, saver_main, dir) == 0);
    for (int i = 0; i < THREADS; i++) {
        void *ret = NULL;
        pthread_join(threads[i], &ret);
        CHECK(ret == dir);
    }
    free(dir);
}

/* A child of fork() has no checkpointer thread, whatever the parent's was doing: its first request
 * starts one of its own, and its database file catches up too. */
static void test_child_after_fork_checkpoints(void)
{
#if UNDER_TSAN
    /* TSan kills a child of a threaded process that starts threads (die_after_fork). */
    printf("skipped under ThreadSanitizer\n");
#else
    char *dir = check_tmpdir("ckpt-fork");
    char *parent_path = afs_join(dir, "parent.sqlite");
    char *child_path = afs_join(dir, "child.sqlite");
    sync_adapter *a = open_adapter(parent_path, SYNC_SQLITE_PROCESS_SAFE);
    REQUIRE(a);
    CHECK(save_many(a, 1, CKPT_PAGES + 5)); /* the parent's thread exists, maybe busy */
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        /* The parent's adapter is the parent's: the child leaves it alone. */
        sync_adapter *c = open_adapter(child_path, SYNC_SQLITE_PROCESS_SAFE);
        int ok = c && save_many(c, 1, 2 * CKPT_PAGES + 20);
        ok = ok && adapter_wait_version(child_path, RECENT(2 * CKPT_PAGES + 20)) >=
                       RECENT(2 * CKPT_PAGES + 20);
        sync_adapter_free(c);
        _exit(ok ? 0 : 1);
    }
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int status = 0;
    pid_t done = 0;
    while ((done = waitpid(pid, &status, WNOHANG)) == 0 && check_elapsed_ms(&start) < 120000)
        check_sleep_ms(20);
    if (done == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        CHECK(!"the child hung");
    } else {
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    sync_adapter_free(a);
    free(parent_path);
    free(child_path);
    free(dir);
#endif
}

/* Checkpoints run on other threads: each that finds frames to copy syncs the WAL first (the
 * database only when it copied the whole WAL, which saves that overtook it prevent). */
static long checkpoints_elsewhere(void)
{
    return atomic_load(&all_syncs[KIND_WAL]) - my_syncs[KIND_WAL];
}

/* A checkpoint among a writer's commits is overtaken (and tried again and again), and its fsyncs
 * land in the middle of the writer's work: while the WAL is below 4,000 pages a requested
 * checkpoint waits until the writer has been quiet for 20 ms. Saves 1 ms apart for 300 ms past the
 * first request: the build before this ran a checkpoint at the request and at each retry (10, 30,
 * 70 and 150 ms after); now none runs, or one if this thread was held up for 20 ms. Once the saves
 * stop the file catches up. */
static void test_checkpoint_waits_for_a_quiet_writer(void)
{
    char *dir = check_tmpdir("ckpt-quiet");
    char *path = afs_join(dir, "state.sqlite");
    sync_adapter *a = open_adapter(path, SYNC_SQLITE_PROCESS_SAFE);
    REQUIRE(a);
    long before = checkpoints_elsewhere();
    CHECK(save_many(a, 1, CKPT_PAGES + 10));
    int64_t v = CKPT_PAGES + 11;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (check_elapsed_ms(&start) < 300) {
        CHECK(sync_adapter_save(a, state_of(v), v) == SYNC_OK);
        v++;
        check_sleep_ms(1);
    }
    long during = checkpoints_elsewhere() - before;
    long long caught_up = adapter_wait_version(path, v - 1);
    printf("saves 1 ms apart past the request: %ld checkpoints among them; then the file reached "
           "%lld of %lld\n",
           during, caught_up, (long long)(v - 1));
    CHECK(during <= 1);
    CHECK_EQ_INT((int)caught_up, (int)(v - 1));
    sync_adapter_free(a);
    free(path);
    free(dir);
}

/* A writer that never pauses still gets its checkpoints once the WAL reaches 4,000 pages. */
static void test_busy_writer_is_checkpointed_at_4000_pages(void)
{
    char *dir = check_tmpdir("ckpt-busy");
    char *path = afs_join(dir, "state.sqlite");
    sync_adapter *a = open_adapter(path, SYNC_SQLITE_PROCESS_SAFE);
    REQUIRE(a);
    long before = checkpoints_elsewhere();
    CHECK(save_many(a, 1, 4 * CKPT_PAGES + 10));
    int64_t v = 4 * CKPT_PAGES + 11;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (checkpoints_elsewhere() == before && check_elapsed_ms(&start) < 10000 &&
           v < HARD_PAGES - 100) {
        CHECK(sync_adapter_save(a, state_of(v), v) == SYNC_OK);
        v++;
    }
    printf("back-to-back saves: a checkpoint ran after %lld saves (%lld ms)\n", (long long)(v - 1),
           (long long)check_elapsed_ms(&start));
    CHECK(checkpoints_elsewhere() > before);
    sync_adapter_free(a);
    CHECK(integrity(path));
    free(path);
    free(dir);
}

/* A state of about 200 KB: each save rewrites some fifty overflow pages, so a checkpoint copies
 * that many pages into the database file. */
static const char *large_state_of(int64_t version)
{
    enum { PAD = 200 * 1024 };
    static _Thread_local char buf[PAD + 64];
    int head = snprintf(buf, sizeof buf, "{\"n\":%lld,\"pad\":\"", (long long)version);
    memset(buf + head, 'a' + (int)(version % 26), PAD);
    memcpy(buf + head + PAD, "\"}", 3);
    return buf;
}

/* Closing a database waits for a checkpoint of it that is running. At idle priority on a busy
 * machine that could take long, so the close stops it between two page copies instead: here each
 * copy takes 20 ms and the checkpoint has about fifty to make (a second), yet the close returns
 * at once. The WAL stays whole: the next open reads the last save. */
static void test_close_stops_a_slow_checkpoint(void)
{
    char *dir = check_tmpdir("ckpt-stop");
    char *path = afs_join(dir, "state.sqlite");
    writes_fast_here = 1;
    sync_adapter *a = open_adapter(path, SYNC_SQLITE_PROCESS_SAFE);
    REQUIRE(a);
    long before = atomic_load(&db_writes_elsewhere);
    atomic_store(&slow_db_writes_elsewhere, 1);
    int64_t v = 1;
    /* saves until the checkpointer has copied its first page */
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (atomic_load(&db_writes_elsewhere) == before && check_elapsed_ms(&start) < 10000) {
        if (v < 200) {
            CHECK(sync_adapter_save(a, large_state_of(v), v) == SYNC_OK);
            v++;
        } else {
            check_sleep_ms(5);
        }
    }
    CHECK(atomic_load(&db_writes_elsewhere) > before);
    clock_gettime(CLOCK_MONOTONIC, &start);
    sync_adapter_free(a);
    long long took = check_elapsed_ms(&start);
    long copied = atomic_load(&db_writes_elsewhere) - before;
    atomic_store(&slow_db_writes_elsewhere, 0);
    printf("close during a slow checkpoint: %lld ms, %ld pages copied of %lld saves\n", took,
           copied, (long long)(v - 1));
    CHECK(took < 400);
    CHECK(copied < 20);
    a = open_adapter(path, SYNC_SQLITE_PROCESS_SAFE);
    REQUIRE(a);
    char *json = NULL;
    int64_t version = -1;
    CHECK(sync_adapter_load(a, &json, &version) == SYNC_OK);
    CHECK_EQ_INT((int)version, (int)(v - 1));
    sync_free(json);
    sync_adapter_free(a);
    CHECK(integrity(path));
    writes_fast_here = 0;
    free(path);
    free(dir);
}

int main(void)
{
    install_counting_vfs();
    RUN(test_database_file_catches_up);
    RUN(test_room_store_file_catches_up);
    RUN(test_saving_thread_never_syncs_the_database);
    RUN(test_unfinished_checkpoint_is_retried);
    RUN(test_failed_checkpoint_falls_back_to_the_writer);
    RUN(test_wal_bounded_under_sustained_saves);
    RUN(test_overtaken_checkpoint_is_retried);
    RUN(test_free_while_checkpointing);
    RUN(test_many_threads_share_the_checkpointer);
    RUN(test_child_after_fork_checkpoints);
    RUN(test_checkpoint_waits_for_a_quiet_writer);
    RUN(test_busy_writer_is_checkpointed_at_4000_pages);
    RUN(test_close_stops_a_slow_checkpoint);
    return check_summary();
}

/* See store_contract.h. */
#include "store_contract.h"

#include "adapter_engine.h"
#include "adapter_fs.h"
#include "check.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

void store_expect_record(sync_adapter *adapter, const char *state, int64_t version)
{
    char *loaded = NULL;
    int64_t v = -99;
    CHECK_EQ_INT(sync_adapter_load(adapter, &loaded, &v), SYNC_OK);
    CHECK_EQ_STR(loaded, state);
    CHECK_EQ_INT(v, version);
    sync_free(loaded);
}

void store_expect_never_saved(sync_adapter *adapter)
{
    char *loaded = (char *)"sentinel";
    int64_t v = -99;
    CHECK_EQ_INT(sync_adapter_load(adapter, &loaded, &v), SYNC_OK);
    CHECK(loaded == NULL);
}

void store_expect_load_fails(sync_adapter *adapter, int status)
{
    char *loaded = NULL;
    int64_t v = 0;
    CHECK_EQ_INT(sync_adapter_load(adapter, &loaded, &v), status);
    CHECK(loaded == NULL);
}

void store_expect_state(sync_engine *engine, const char *state, int64_t version)
{
    char *json = aeng_state(engine);
    CHECK_EQ_STR(json, state);
    sync_free(json);
    CHECK_EQ_INT(sync_engine_get_version(engine), version);
}

static double elapsed_us(const struct timespec *t0, const struct timespec *t1)
{
    return (double)(t1->tv_sec - t0->tv_sec) * 1e6 + (double)(t1->tv_nsec - t0->tv_nsec) / 1e3;
}

sync_adapter *store_sqlite_new(const char *path, sync_sqlite_durability durability)
{
    sync_sqlite_options opts = SYNC_SQLITE_OPTIONS_INIT;
    opts.path = path;
    opts.durability = durability;
    sync_adapter *adapter = NULL;
    return sync_adapter_sqlite_new(&adapter, &opts) == SYNC_OK ? adapter : NULL;
}

double store_time_saves(sync_adapter *adapter, int n)
{
    if (!adapter || sync_adapter_init(adapter) != SYNC_OK) {
        sync_adapter_free(adapter);
        return -1;
    }
    char state[64];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int failures = 0;
    for (int i = 1; i <= n; i++) {
        snprintf(state, sizeof state, "{\"counter\":%d,\"name\":\"demo\"}", i);
        failures += sync_adapter_save(adapter, state, i) != SYNC_OK;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK_EQ_INT(failures, 0);
    snprintf(state, sizeof state, "{\"counter\":%d,\"name\":\"demo\"}", n);
    store_expect_record(adapter, state, n);
    sync_adapter_free(adapter);
    return elapsed_us(&t0, &t1) / n;
}

/* A fresh directory for one check of `store`: "<store>-<what>". */
static char *store_dir(const store_kind *store, const char *what)
{
    char name[128];
    snprintf(name, sizeof name, "%s-%s", store->name, what);
    return check_tmpdir(name);
}

/* A fresh directory for one check and the store's path in it. */
typedef struct store_place {
    char *dir;
    char *path;
} store_place;

static store_place place_new(const store_kind *store, const char *what)
{
    store_place place = {store_dir(store, what), NULL};
    place.path = afs_join(place.dir, store->file_name);
    return place;
}

static void place_free(store_place *place)
{
    free(place->path);
    free(place->dir);
}

void store_check_engine_on_corrupt_store(const store_kind *store, const char *junk)
{
    store_place p = place_new(store, "engine-corrupt");
    char aside[128];
    snprintf(aside, sizeof aside, "%s.corrupt-", store->file_name);
    REQUIRE(afs_write(p.path, junk) == 0);
    aeng_errors errors;
    sync_engine *e = aeng_new(store->open(p.path, NULL), "{\"n\":1}", &errors);
    REQUIRE(e);
    store_expect_state(e, "{\"n\":1}", 0);
    CHECK_EQ_INT(errors.count, 1);
    CHECK_EQ_INT(errors.last_status, SYNC_ECORRUPT);
    CHECK_EQ_STR(errors.last_context, "load");
    CHECK(strstr(errors.last_message, "kept aside"));
    CHECK_EQ_INT(afs_count(p.dir, aside), 1);
    CHECK_EQ_INT(sync_engine_set_state_json(e, "{\"n\":2}", 0), SYNC_OK);
    sync_engine_free(e);
    e = aeng_new(store->open(p.path, NULL), "{\"n\":0}", &errors);
    REQUIRE(e);
    store_expect_state(e, "{\"n\":2}", 1);
    CHECK_EQ_INT(errors.count, 0);
    sync_engine_free(e);
    CHECK_EQ_INT(afs_count(p.dir, aside), 1);
    place_free(&p);
}

void store_expect_save_fails_change_kept(sync_engine *engine, const aeng_errors *errors)
{
    int before = errors->count;
    sync_engine_set_state_json(engine, "{\"n\":2}", 0);
    /* The change stays in memory and is served; the failed save is reported. */
    store_expect_state(engine, "{\"n\":2}", 1);
    CHECK_EQ_INT(errors->count, before + 1);
    CHECK_EQ_INT(errors->last_status, SYNC_EIO);
    CHECK_EQ_STR(errors->last_context, "sync");
}

void store_check_engine_failed_save_reported(const store_kind *store)
{
    char path[128];
    snprintf(path, sizeof path, "/proc/self/libsync-test/%s", store->file_name);
    aeng_errors errors;
    sync_engine *e = aeng_new(store->open(path, NULL), "{\"n\":1}", &errors);
    REQUIRE(e);
    store_expect_state(e, "{\"n\":1}", 0);
    CHECK(errors.count >= 1);
    store_expect_save_fails_change_kept(e, &errors);
    sync_engine_free(e);
}

static void check_backups_dir_blocked(const store_kind *store)
{
    store_place p = place_new(store, "backup-blocked");
    char *blocker = afs_join(p.dir, "blocker");
    char *backups = afs_join(blocker, "backups");
    REQUIRE(afs_write(blocker, "not a directory") == 0);
    sync_adapter *a = store->open(p.path, backups);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
    CHECK_EQ_INT(sync_adapter_save(a, "{\"n\":1}", 1), SYNC_OK);
    int64_t ts = -7;
    CHECK_EQ_INT(sync_adapter_backup(a, &ts), SYNC_EIO);
    CHECK(strstr(sync_error_last(), "cannot create backups directory"));
    CHECK(strstr(sync_error_last(), backups));
    CHECK_EQ_INT(ts, -7);
    CHECK_EQ_INT(sync_adapter_save(a, "{\"n\":2}", 2), SYNC_OK);
    store_expect_record(a, "{\"n\":2}", 2);
    sync_adapter_free(a);
    free(backups);
    free(blocker);
    place_free(&p);
}

static void check_backup_disk_full(const store_kind *store)
{
    store_place p = place_new(store, "backup-full");
    char *backups = afs_join(p.dir, "backups");
    sync_adapter *a = store->open(p.path, backups);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
    char *big = afs_big_state(256 * 1024);
    CHECK_EQ_INT(sync_adapter_save(a, big, 1), SYNC_OK);

    int64_t ts = -7;
    afs_limit_file_size(64 * 1024);
    int rc = sync_adapter_backup(a, &ts);
    afs_limit_file_size(0);
    CHECK_EQ_INT(rc, SYNC_EIO);
    CHECK(sync_error_last()[0] != '\0');
    CHECK_EQ_INT(ts, -7);
    CHECK_EQ_INT(afs_count(backups, ".backup"), 0); /* the half-written copy is gone */
    CHECK_EQ_INT(afs_count(backups, "backup-"), 0);

    CHECK_EQ_INT(sync_adapter_save(a, "{\"n\":2}", 2), SYNC_OK);
    store_expect_record(a, "{\"n\":2}", 2);
    CHECK_EQ_INT(sync_adapter_backup(a, &ts), SYNC_OK);
    CHECK(ts > 0);
    char name[64];
    snprintf(name, sizeof name, "backup-%" PRId64 "%s", ts, store->backup_ext);
    char *copy = afs_join(backups, name);
    CHECK(afs_exists(copy));
    CHECK_EQ_INT(afs_count(backups, "backup-"), 1);
    free(copy);
    sync_adapter_free(a);
    free(big);
    free(backups);
    place_free(&p);
}

void store_check_failed_backups(const store_kind *store)
{
    check_backups_dir_blocked(store);
    check_backup_disk_full(store);
}

void store_check_fresh_store(const store_kind *store)
{
    char *dir = store_dir(store, "fresh");
    char *parent = afs_join(dir, "a/b");
    char *path = afs_join(parent, store->file_name);
    sync_adapter *a = store->open(path, NULL);
    REQUIRE(a);
    CHECK(!afs_exists(path)); /* _new opens nothing */
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
    struct stat st;
    CHECK(stat(parent, &st) == 0 && S_ISDIR(st.st_mode)); /* parent directories created */
    CHECK_EQ_INT(afs_exists(path), store->init_creates_file);
    store_expect_never_saved(a);
    CHECK_EQ_INT(afs_exists(path), store->init_creates_file); /* a load writes nothing */
    sync_adapter_free(a);
    free(path);
    free(parent);
    free(dir);
}

void store_check_round_trip_and_restart(const store_kind *store)
{
    static const char *const records[] = {
        "{\"counter\":5,\"s\":\"\xc3\xa9\",\"tags\":[\"a\",\"b\"]}", "[1,2,3]", "\"just a string\"",
        "12.5"};
    store_place p = place_new(store, "roundtrip");
    sync_adapter *a = store->open(p.path, NULL);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
    int n = (int)(sizeof records / sizeof records[0]);
    for (int i = 0; i < n; i++) {
        CHECK_EQ_INT(sync_adapter_save(a, records[i], 10 + i), SYNC_OK);
        store_expect_record(a, records[i], 10 + i);
    }
    CHECK_EQ_INT(sync_adapter_save(a, records[0], 20), SYNC_OK);
    sync_adapter_free(a);
    store->check_on_disk(p.path, records[0], 20);

    a = store->open(p.path, NULL);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
    store_expect_record(a, records[0], 20);
    sync_adapter_free(a);
    place_free(&p);
}

void store_check_large_state(const store_kind *store)
{
    store_place p = place_new(store, "large");
    sync_adapter *a = store->open(p.path, NULL);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
    char *big = afs_big_state(64 * 1024);
    CHECK_EQ_INT(sync_adapter_save(a, big, 64), SYNC_OK);
    sync_adapter_free(a);
    a = store->open(p.path, NULL);
    REQUIRE(a);
    store_expect_record(a, big, 64);
    sync_adapter_free(a);
    free(big);
    place_free(&p);
}

void store_check_disk_full_keeps_old_record(const store_kind *store)
{
    store_place p = place_new(store, "full");
    char temp[128];
    snprintf(temp, sizeof temp, "%s.tmp-", store->file_name);
    sync_adapter *a = store->open(p.path, NULL);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
    CHECK_EQ_INT(sync_adapter_save(a, "{\"small\":1}", 1), SYNC_OK);

    char *big = afs_big_state(512 * 1024);
    afs_limit_file_size(128 * 1024);
    int rc = sync_adapter_save(a, big, 2);
    afs_limit_file_size(0);
    free(big);
    CHECK_EQ_INT(rc, SYNC_EIO);
    fprintf(stderr, "  disk full: %s\n", sync_error_last());
    CHECK(sync_error_last()[0] != '\0');
    if (store->disk_full_reason)
        CHECK(strstr(sync_error_last(), store->disk_full_reason));
    CHECK_EQ_INT(afs_count(p.dir, temp), 0);
    store->check_on_disk(p.path, "{\"small\":1}", 1);
    store_expect_record(a, "{\"small\":1}", 1);

    CHECK_EQ_INT(sync_adapter_save(a, "{\"small\":3}", 3), SYNC_OK);
    store_expect_record(a, "{\"small\":3}", 3);
    sync_adapter_free(a);
    a = store->open(p.path, NULL);
    REQUIRE(a);
    store_expect_record(a, "{\"small\":3}", 3);
    sync_adapter_free(a);
    place_free(&p);
}

void store_check_unwritable_paths(const store_kind *store)
{
    /* /proc takes no new files, even from root. */
    char proc[128];
    snprintf(proc, sizeof proc, "/proc/self/libsync-test/%s", store->file_name);
    sync_adapter *a = store->open(proc, NULL);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_EIO);
    CHECK(strstr(sync_error_last(), "/proc/self/libsync-test"));
    CHECK_EQ_INT(sync_adapter_save(a, "{}", 1), SYNC_EIO);
    CHECK_EQ_INT(sync_adapter_save(a, "{}", 2), SYNC_EIO); /* still answering, still failing */
    sync_adapter_free(a);

    /* A parent that is a regular file. */
    char *dir = store_dir(store, "notdir");
    char *file = afs_join(dir, "plain");
    REQUIRE(afs_write(file, "x") == 0);
    char *below = afs_join(file, store->file_name);
    a = store->open(below, NULL);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_EIO);
    CHECK(strstr(sync_error_last(), "Not a directory"));
    store_expect_load_fails(a, SYNC_EIO);
    sync_adapter_free(a);
    free(below);
    free(file);
    free(dir);
}

/* "<dir>/backup-<ts><ext>"; caller frees. */
static char *backup_path(const store_kind *store, const char *dir, int64_t ts)
{
    char name[64];
    snprintf(name, sizeof name, "backup-%" PRId64 "%s", ts, store->backup_ext);
    return afs_join(dir, name);
}

void store_check_backups(const store_kind *store)
{
    store_place p = place_new(store, "backup");
    char *backups = afs_join(p.dir, "not/yet/there");
    sync_adapter *a = store->open(p.path, backups);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
    CHECK(!afs_exists(backups)); /* created on the first backup, not before */
    int64_t t1 = 0, t2 = 0;
    CHECK_EQ_INT(sync_adapter_save(a, "{\"n\":1}", 1), SYNC_OK);
    int64_t before = sync_wall_ms();
    CHECK_EQ_INT(sync_adapter_backup(a, &t1), SYNC_OK);
    CHECK(t1 >= before && t1 <= sync_wall_ms() + 1000);
    CHECK_EQ_INT(sync_adapter_save(a, "{\"n\":2}", 2), SYNC_OK);
    CHECK_EQ_INT(sync_adapter_backup(a, &t2), SYNC_OK); /* same millisecond, likely */
    CHECK(t2 != t1);
    CHECK_EQ_INT(afs_count(backups, "backup-"), 2);
    CHECK_EQ_INT(afs_count(backups, ".backup"), 0); /* no temporary copy left */
    char *first = backup_path(store, backups, t1);
    char *second = backup_path(store, backups, t2);
    store->check_on_disk(first, "{\"n\":1}", 1);
    store->check_on_disk(second, "{\"n\":2}", 2);
    free(first);
    free(second);
    sync_adapter_free(a);

    /* Without backups_dir: beside the store where it has a default, else no backup at all. */
    a = store->open(p.path, NULL);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
    if (store->default_backups) {
        char *def = NULL;
        REQUIRE(asprintf(&def, "%s%s", p.path, store->default_backups) > 0);
        CHECK_EQ_INT(sync_adapter_backup(a, &t1), SYNC_OK);
        CHECK_EQ_INT(afs_count(def, "backup-"), 1);
        char *copy = backup_path(store, def, t1);
        store->check_on_disk(copy, "{\"n\":2}", 2);
        free(copy);
        free(def);
    } else {
        CHECK_EQ_INT(sync_adapter_backup(a, &t1), SYNC_EUNSUPPORTED);
    }
    sync_adapter_free(a);
    free(backups);
    place_free(&p);
}

void store_check_engine_restart(const store_kind *store)
{
    store_place p = place_new(store, "engine");
    aeng_errors errors;
    /* A fresh store yields initial_state. */
    sync_engine *e = aeng_new(store->open(p.path, NULL), "{\"counter\":7}", &errors);
    REQUIRE(e);
    store_expect_state(e, "{\"counter\":7}", 0);
    CHECK_EQ_INT(errors.count, 0);
    CHECK_EQ_INT(sync_engine_set_state_json(e, "{\"counter\":8}", 0), SYNC_OK);
    store_expect_state(e, "{\"counter\":8}", 1);
    /* The engine reports what the store says about backups without a backups_dir. */
    CHECK_EQ_INT(sync_engine_create_backup(e),
                 store->default_backups ? SYNC_OK : SYNC_EUNSUPPORTED);
    sync_engine_free(e);
    store->check_on_disk(p.path, "{\"counter\":8}", 1);

    /* The restarted engine continues from the store, not from its initial state. */
    e = aeng_new(store->open(p.path, NULL), "{\"counter\":0}", &errors);
    REQUIRE(e);
    store_expect_state(e, "{\"counter\":8}", 1);
    CHECK_EQ_INT(errors.count, 0);
    sync_engine_free(e);
    place_free(&p);
}

static const store_kind *contract_store;

#define CONTRACT_CASE(check)                                                                       \
    static void run_##check(void)                                                                  \
    {                                                                                              \
        store_check_##check(contract_store);                                                       \
    }
CONTRACT_CASE(fresh_store)
CONTRACT_CASE(round_trip_and_restart)
CONTRACT_CASE(large_state)
CONTRACT_CASE(disk_full_keeps_old_record)
CONTRACT_CASE(unwritable_paths)
CONTRACT_CASE(backups)
CONTRACT_CASE(failed_backups)
CONTRACT_CASE(engine_restart)
CONTRACT_CASE(engine_failed_save_reported)

void store_run_contract(const store_kind *store)
{
    contract_store = store;
    check_run("store: fresh store", run_fresh_store);
    check_run("store: round trip and restart", run_round_trip_and_restart);
    check_run("store: large state", run_large_state);
    check_run("store: disk full keeps the old record", run_disk_full_keeps_old_record);
    check_run("store: unwritable paths", run_unwritable_paths);
    check_run("store: backups", run_backups);
    check_run("store: failed backups", run_failed_backups);
    check_run("store: engine restart", run_engine_restart);
    check_run("store: engine reports failed saves", run_engine_failed_save_reported);
}

/* See store_contract.h. */
#include "store_contract.h"

#include "adapter_engine.h"
#include "adapter_fs.h"
#include "check.h"

#include <stdlib.h>
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

void store_check_engine_on_corrupt_store(const store_kind *store, const char *junk)
{
    char *dir = store_dir(store, "engine-corrupt");
    char *path = afs_join(dir, store->file_name);
    char aside[128];
    snprintf(aside, sizeof aside, "%s.corrupt-", store->file_name);
    REQUIRE(afs_write(path, junk) == 0);
    aeng_errors errors;
    sync_engine *e = aeng_new(store->open(path, NULL), "{\"n\":1}", &errors);
    REQUIRE(e);
    store_expect_state(e, "{\"n\":1}", 0);
    CHECK_EQ_INT(errors.count, 1);
    CHECK_EQ_INT(errors.last_status, SYNC_ECORRUPT);
    CHECK_EQ_STR(errors.last_context, "load");
    CHECK(strstr(errors.last_message, "kept aside"));
    CHECK_EQ_INT(afs_count(dir, aside), 1);
    CHECK_EQ_INT(sync_engine_set_state_json(e, "{\"n\":2}", 0), SYNC_OK);
    sync_engine_free(e);
    e = aeng_new(store->open(path, NULL), "{\"n\":0}", &errors);
    REQUIRE(e);
    store_expect_state(e, "{\"n\":2}", 1);
    CHECK_EQ_INT(errors.count, 0);
    sync_engine_free(e);
    CHECK_EQ_INT(afs_count(dir, aside), 1);
    free(path);
    free(dir);
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
    char *dir = store_dir(store, "backup-blocked");
    char *path = afs_join(dir, store->file_name);
    char *blocker = afs_join(dir, "blocker");
    char *backups = afs_join(blocker, "backups");
    REQUIRE(afs_write(blocker, "not a directory") == 0);
    sync_adapter *a = store->open(path, backups);
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
    free(path);
    free(dir);
}

static void check_backup_disk_full(const store_kind *store)
{
    char *dir = store_dir(store, "backup-full");
    char *path = afs_join(dir, store->file_name);
    char *backups = afs_join(dir, "backups");
    sync_adapter *a = store->open(path, backups);
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
    free(path);
    free(dir);
}

void store_check_failed_backups(const store_kind *store)
{
    check_backups_dir_blocked(store);
    check_backup_disk_full(store);
}

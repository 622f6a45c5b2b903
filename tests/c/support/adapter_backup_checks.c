/* See adapter_backup_checks.h. */
#include "adapter_backup_checks.h"

#include "adapter_fs.h"
#include "check.h"

#include <stdlib.h>

static void expect_version(sync_adapter *adapter, int64_t version)
{
    char *loaded = NULL;
    int64_t v = -1;
    CHECK_EQ_INT(sync_adapter_load(adapter, &loaded, &v), SYNC_OK);
    CHECK_EQ_INT(v, version);
    sync_free(loaded);
}

static void check_blocked_directory(const char *dir, abk_open_fn open_store, const char *store_file)
{
    char *path = afs_join(dir, store_file);
    char *blocker = afs_join(dir, "blocker");
    char *backups = afs_join(blocker, "backups");
    REQUIRE(afs_write(blocker, "not a directory") == 0);
    sync_adapter *a = open_store(path, backups);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
    CHECK_EQ_INT(sync_adapter_save(a, "{\"n\":1}", 1), SYNC_OK);
    int64_t ts = -7;
    CHECK_EQ_INT(sync_adapter_backup(a, &ts), SYNC_EIO);
    CHECK(strstr(sync_error_last(), "cannot create backups directory"));
    CHECK(strstr(sync_error_last(), backups));
    CHECK_EQ_INT(ts, -7);
    CHECK_EQ_INT(sync_adapter_save(a, "{\"n\":2}", 2), SYNC_OK);
    expect_version(a, 2);
    sync_adapter_free(a);
    free(backups);
    free(blocker);
    free(path);
}

static void check_disk_full(const char *dir, abk_open_fn open_store, const char *store_file,
                            const char *backup_ext)
{
    char *path = afs_join(dir, store_file);
    char *backups = afs_join(dir, "backups");
    sync_adapter *a = open_store(path, backups);
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
    expect_version(a, 2);
    CHECK_EQ_INT(sync_adapter_backup(a, &ts), SYNC_OK);
    CHECK(ts > 0);
    char name[64];
    snprintf(name, sizeof name, "backup-%" PRId64 "%s", ts, backup_ext);
    char *copy = afs_join(backups, name);
    CHECK(afs_exists(copy));
    CHECK_EQ_INT(afs_count(backups, "backup-"), 1);
    free(copy);
    sync_adapter_free(a);
    free(big);
    free(backups);
    free(path);
}

void abk_check_failed_backups(const char *name, abk_open_fn open_store, const char *store_file,
                              const char *backup_ext)
{
    char sub[128];
    snprintf(sub, sizeof sub, "%s-blocked", name);
    char *dir = check_tmpdir(sub);
    check_blocked_directory(dir, open_store, store_file);
    free(dir);
    snprintf(sub, sizeof sub, "%s-full", name);
    dir = check_tmpdir(sub);
    check_disk_full(dir, open_store, store_file, backup_ext);
    free(dir);
}

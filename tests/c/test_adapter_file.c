/* The file adapter against real files: the record format, atomic replacement (no temp file left,
 * the old record intact after a failure), corrupt files kept aside, backups, I/O failures. */
#include "adapter_engine.h"
#include "adapter_fs.h"
#include "check.h"
#include "store_contract.h"

#include <libsync/libsync.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static sync_adapter *open_adapter(const char *path, const char *backups_dir, int do_fsync)
{
    sync_file_options opts = SYNC_FILE_OPTIONS_INIT;
    opts.file_path = path;
    opts.backups_dir = backups_dir;
    opts.fsync = do_fsync;
    sync_adapter *adapter = NULL;
    if (sync_adapter_file_new(&adapter, &opts) != SYNC_OK)
        return NULL;
    return adapter;
}

static sync_adapter *open_fsynced(const char *path, const char *backups_dir)
{
    return open_adapter(path, backups_dir, 1);
}

/* The record format: one JSON object and a newline, written whole (pretty-printing is not kept).
 * An engine's saves add the epoch of its history last ({...,"epoch":"E"}), left out here. */
static void check_on_disk(const char *path, const char *state, int64_t version)
{
    char *want = NULL;
    if (asprintf(&want, "{\"state\":%s,\"version\":%" PRId64 "}\n", state, version) < 0)
        abort();
    char *text = afs_read(path);
    char *epoch = text ? strstr(text, ",\"epoch\":\"") : NULL;
    char *end = epoch ? strstr(epoch, "\"}\n") : NULL;
    if (end)
        memmove(epoch, end + 1, strlen(end + 1) + 1);
    CHECK_EQ_STR(text, want);
    free(text);
    free(want);
}

/* init() writes nothing (the store appears with the first save), no backups without a
 * backups_dir, and a full disk shows as EFBIG. */
static const store_kind file_store = {
    "file", "state.json", ".json", open_fsynced, check_on_disk, 0, NULL, "File too large"};

/* A record written by hand (pretty-printed, keys in another order) loads too. */
static void test_hand_written_record_loads(void)
{
    char *dir = check_tmpdir("file-by-hand");
    char *path = afs_join(dir, "state.json");
    REQUIRE(afs_write(path, "{\n  \"version\": 4,\n  \"state\": { \"n\": 1 }\n}\n") == 0);
    sync_adapter *a = open_adapter(path, NULL, 1);
    REQUIRE(a);
    store_expect_record(a, "{\"n\":1}", 4);
    sync_adapter_free(a);
    free(path);
    free(dir);
}

static void test_many_saves_leave_no_temp_files(void)
{
    char *dir = check_tmpdir("file-many");
    char *synced = afs_join(dir, "synced.json");
    char *unsynced = afs_join(dir, "unsynced.json");
    double us_sync = store_time_saves(open_adapter(synced, NULL, 1), 100);
    double us_nosync = store_time_saves(open_adapter(unsynced, NULL, 0), 1000);
    CHECK(us_sync > 0 && us_nosync > 0);
    printf("file save, small state: %.1f us (fsync), %.1f us (no fsync)\n", us_sync, us_nosync);
    CHECK_EQ_INT(afs_count(dir, "synced.json.tmp-"), 0);
    CHECK_EQ_INT(afs_count(dir, "unsynced.json.tmp-"), 0);
    CHECK_EQ_INT(afs_count(dir, ""), 4); /* ".", "..", and the two stores */
    free(synced);
    free(unsynced);
    free(dir);
}

/* A pid no process has: a child that exited and was reaped. 0 if fork failed. */
static pid_t dead_pid(void)
{
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    if (pid < 0 || waitpid(pid, NULL, 0) != pid)
        return 0;
    return pid;
}

static void write_named(const char *dir, const char *name)
{
    char *path = afs_join(dir, name);
    REQUIRE(afs_write(path, "partial") == 0);
    free(path);
}

static int exists_named(const char *dir, const char *name)
{
    char *path = afs_join(dir, name);
    int found = afs_exists(path);
    free(path);
    return found;
}

/* A save killed half-way leaves its temp file; the next init removes exactly those. */
static void test_init_removes_stale_temp_files(void)
{
    char *dir = check_tmpdir("file-stale-tmp");
    char *path = afs_join(dir, "state.json");
    REQUIRE(afs_write(path, "{\"state\":{\"n\":5},\"version\":5}") == 0);
    long dead = (long)dead_pid();
    REQUIRE(dead > 0);
    char stale[2][64], kept[7][64];
    snprintf(stale[0], sizeof stale[0], "state.json.tmp-%ld-0", dead);
    snprintf(stale[1], sizeof stale[1], "state.json.tmp-%ld-123", dead);
    snprintf(kept[0], sizeof kept[0], "state.json.tmp-%ld-7", (long)getpid()); /* a live save */
    snprintf(kept[1], sizeof kept[1], "state.json.tmp-%ld-7", (long)getppid());
    snprintf(kept[2], sizeof kept[2], "state.json.tmp-%ld-7x", dead);
    snprintf(kept[3], sizeof kept[3], "state.json.tmp-%ld-", dead);
    snprintf(kept[4], sizeof kept[4], "other.json.tmp-%ld-1", dead);
    snprintf(kept[5], sizeof kept[5], "xstate.json.tmp-%ld-1", dead);
    snprintf(kept[6], sizeof kept[6], "state.jsonx.tmp-%ld-1", dead);
    for (int i = 0; i < 2; i++)
        write_named(dir, stale[i]);
    for (int i = 0; i < 7; i++)
        write_named(dir, kept[i]);
    char *sub = afs_join(dir, "state.json.tmp-1-1"); /* pid 1 is alive, a directory anyway */
    REQUIRE(mkdir(sub, 0700) == 0);

    sync_adapter *a = open_adapter(path, NULL, 0);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
    for (int i = 0; i < 2; i++)
        CHECK(!exists_named(dir, stale[i]));
    for (int i = 0; i < 7; i++)
        CHECK(exists_named(dir, kept[i]));
    CHECK(afs_exists(sub));
    store_expect_record(a, "{\"n\":5}", 5);
    sync_adapter_free(a);
    free(sub);
    free(path);
    free(dir);
}

static void test_save_keeps_file_permissions(void)
{
    char *dir = check_tmpdir("file-mode");
    char *path = afs_join(dir, "state.json");
    sync_adapter *a = open_adapter(path, NULL, 0);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_save(a, "{\"secret\":1}", 1), SYNC_OK);
    REQUIRE(chmod(path, 0600) == 0);
    CHECK_EQ_INT(sync_adapter_save(a, "{\"secret\":2}", 2), SYNC_OK);
    struct stat st;
    CHECK(stat(path, &st) == 0);
    CHECK_EQ_INT(st.st_mode & 07777, 0600);
    sync_adapter_free(a);
    free(path);
    free(dir);
}

static void test_failed_rename_removes_temp_file(void)
{
    /* The store's name is taken by a non-empty directory: writing works, the rename cannot. */
    char *dir = check_tmpdir("file-rename");
    char *path = afs_join(dir, "state.json");
    REQUIRE(mkdir(path, 0755) == 0);
    char *inside = afs_join(path, "keep");
    REQUIRE(afs_write(inside, "x") == 0);
    sync_adapter *a = open_adapter(path, NULL, 1);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_save(a, "{}", 1), SYNC_EIO);
    CHECK(strstr(sync_error_last(), "rename"));
    CHECK_EQ_INT(afs_count(dir, "state.json.tmp-"), 0);
    CHECK(afs_exists(inside));

    /* Loading a directory is an I/O error, not corruption: nothing is moved. */
    char *loaded = NULL;
    int64_t v = 0;
    CHECK_EQ_INT(sync_adapter_load(a, &loaded, &v), SYNC_EIO);
    CHECK(strstr(sync_error_last(), "Is a directory"));
    CHECK(loaded == NULL);
    CHECK_EQ_INT(afs_count(dir, "state.json.corrupt-"), 0);
    sync_adapter_free(a);
    free(inside);
    free(path);
    free(dir);
}

static void expect_corrupt(const char *content, const char *reason)
{
    char *dir = check_tmpdir("file-corrupt");
    char *path = afs_join(dir, "state.json");
    REQUIRE(afs_write(path, content) == 0);
    sync_adapter *a = open_adapter(path, NULL, 1);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
    store_expect_load_fails(a, SYNC_ECORRUPT);
    if (!strstr(sync_error_last(), reason)) {
        fprintf(stderr, "  \"%s\" lacks \"%s\"\n", sync_error_last(), reason);
        CHECK(strstr(sync_error_last(), reason));
    }
    CHECK(strstr(sync_error_last(), "kept aside"));
    CHECK(!afs_exists(path));
    char *aside = afs_find(dir, "state.json.corrupt-");
    REQUIRE(aside);
    char *kept = afs_read(aside);
    CHECK_EQ_STR(kept, content);
    free(kept);

    /* The next save starts a new file; the corrupt one is never touched. */
    store_expect_never_saved(a);
    CHECK_EQ_INT(sync_adapter_save(a, "{\"fresh\":1}", 1), SYNC_OK);
    store_expect_record(a, "{\"fresh\":1}", 1);
    kept = afs_read(aside);
    CHECK_EQ_STR(kept, content);
    free(kept);
    free(aside);
    sync_adapter_free(a);
    free(path);
    free(dir);
}

static void test_corrupt_files_kept_aside(void)
{
    expect_corrupt("{\"state\":{\"counter\":5},\"vers", "not valid JSON");
    expect_corrupt("", "not valid JSON");
    expect_corrupt("{\"version\":3}", "no \"state\"");
    expect_corrupt("{\"state\":{},\"version\":1.5}", "version");
    expect_corrupt("{\"state\":{},\"version\":\"3\"}", "version");
    expect_corrupt("{\"state\":{}}", "version");
    expect_corrupt("[1,2]", "not a JSON object");
    expect_corrupt("{\"state\":{},\"version\":1} {\"state\":{},\"version\":2}", "after");
}

static void test_two_corrupt_files_both_kept(void)
{
    char *dir = check_tmpdir("file-corrupt-twice");
    char *path = afs_join(dir, "state.json");
    sync_adapter *a = open_adapter(path, NULL, 0);
    REQUIRE(a);
    char *loaded = NULL;
    int64_t v = 0;
    for (int i = 0; i < 3; i++) {
        char junk[32];
        snprintf(junk, sizeof junk, "junk %d", i);
        REQUIRE(afs_write(path, junk) == 0);
        CHECK_EQ_INT(sync_adapter_load(a, &loaded, &v), SYNC_ECORRUPT);
    }
    CHECK_EQ_INT(afs_count(dir, "state.json.corrupt-"), 3);
    sync_adapter_free(a);
    free(path);
    free(dir);
}

static void test_backup_before_any_save_refused(void)
{
    char *dir = check_tmpdir("file-backup-early");
    char *path = afs_join(dir, "state.json");
    char *backups = afs_join(dir, "backups");
    sync_adapter *a = open_adapter(path, backups, 1);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
    int64_t ts = -7;
    CHECK_EQ_INT(sync_adapter_backup(a, &ts), SYNC_ESTATE);
    CHECK(strstr(sync_error_last(), "never been saved"));
    CHECK_EQ_INT(ts, -7);
    CHECK(!afs_exists(backups));
    sync_adapter_free(a);
    free(backups);
    free(path);
    free(dir);
}

/* A store the kernel will not let it create reads as never saved: there is nothing to lose. */
static void test_unwritable_path_loads_as_never_saved(void)
{
    sync_adapter *a = open_adapter("/proc/self/libsync-test/state.json", NULL, 1);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_EIO);
    store_expect_never_saved(a);
    sync_adapter_free(a);
}

static void test_fifo_does_not_hang(void)
{
    char *dir = check_tmpdir("file-fifo");
    char *path = afs_join(dir, "state.json");
    REQUIRE(mkfifo(path, 0600) == 0);
    sync_adapter *a = open_adapter(path, NULL, 1);
    REQUIRE(a);
    alarm(20); /* a hang fails the test instead of stalling the suite */
    char *loaded = NULL;
    int64_t v = 0;
    CHECK_EQ_INT(sync_adapter_load(a, &loaded, &v), SYNC_EIO);
    CHECK(strstr(sync_error_last(), "not a regular file"));
    alarm(0);
    sync_adapter_free(a);
    free(path);
    free(dir);
}

static void test_permission_denied(void)
{
    /* Root reads everything, so the reader is a child that gave up root. */
    if (geteuid() != 0) {
        fprintf(stderr, "  SKIP permission denied: needs root to drop to another user\n");
        return;
    }
    char *dir = check_tmpdir("file-eacces");
    char *path = afs_join(dir, "state.json");
    REQUIRE(afs_write(path, "{\"state\":{},\"version\":1}") == 0);
    REQUIRE(chmod(path, 0600) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0)
            _exit(2);
        sync_adapter *a = open_adapter(path, NULL, 1);
        char *loaded = NULL;
        int64_t v = 0;
        int rc = a ? sync_adapter_load(a, &loaded, &v) : SYNC_EINVAL;
        _exit(rc == SYNC_EIO && strstr(sync_error_last(), "Permission denied") ? 0 : 1);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK_EQ_INT(WEXITSTATUS(status), 0);
    CHECK(afs_exists(path)); /* unreadable is not corrupt: nothing moved */
    CHECK_EQ_INT(afs_count(dir, "state.json.corrupt-"), 0);
    free(path);
    free(dir);
}

static void test_read_only_directory(void)
{
    char *dir = check_tmpdir("file-readonly");
    char *sub = afs_join(dir, "ro");
    char *path = afs_join(sub, "state.json");
    sync_adapter *a = open_adapter(path, NULL, 1);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
    CHECK_EQ_INT(sync_adapter_save(a, "{\"kept\":1}", 1), SYNC_OK);
    if (afs_make_readonly(sub) != 0) {
        fprintf(stderr, "  SKIP read-only directory: no read-only bind mount here\n");
    } else {
        CHECK_EQ_INT(sync_adapter_save(a, "{\"lost\":1}", 2), SYNC_EIO);
        CHECK(strstr(sync_error_last(), "Read-only file system"));
        store_expect_record(a, "{\"kept\":1}", 1); /* reading still works */
        afs_make_writable(sub);
        CHECK_EQ_INT(sync_adapter_save(a, "{\"back\":1}", 3), SYNC_OK);
        store_expect_record(a, "{\"back\":1}", 3);
        CHECK_EQ_INT(afs_count(sub, "state.json.tmp-"), 0);
    }
    sync_adapter_free(a);
    free(path);
    free(sub);
    free(dir);
}

static void test_directory_removed_after_init(void)
{
    char *dir = check_tmpdir("file-rmdir");
    char *sub = afs_join(dir, "sub");
    char *path = afs_join(sub, "state.json");
    sync_adapter *a = open_adapter(path, NULL, 1);
    REQUIRE(a);
    CHECK_EQ_INT(sync_adapter_init(a), SYNC_OK);
    REQUIRE(rmdir(sub) == 0);
    CHECK_EQ_INT(sync_adapter_save(a, "{\"n\":1}", 1), SYNC_OK);
    store_expect_record(a, "{\"n\":1}", 1);
    sync_adapter_free(a);
    free(path);
    free(sub);
    free(dir);
}

static void test_bad_options(void)
{
    sync_file_options opts = SYNC_FILE_OPTIONS_INIT;
    sync_adapter *a = NULL;
    CHECK_EQ_INT(sync_adapter_file_new(NULL, &opts), SYNC_EINVAL);
    CHECK_EQ_INT(sync_adapter_file_new(&a, NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_adapter_file_new(&a, &opts), SYNC_EINVAL);
    CHECK(strstr(sync_error_last(), "file_path"));
    opts.file_path = "";
    CHECK_EQ_INT(sync_adapter_file_new(&a, &opts), SYNC_EINVAL);
    opts.file_path = "dir/";
    CHECK_EQ_INT(sync_adapter_file_new(&a, &opts), SYNC_EINVAL);
    opts.file_path = "state.json";
    opts.backups_dir = "";
    CHECK_EQ_INT(sync_adapter_file_new(&a, &opts), SYNC_EINVAL);
    opts.backups_dir = NULL;
    opts.version = 0;
    CHECK_EQ_INT(sync_adapter_file_new(&a, &opts), SYNC_EINVAL);
    CHECK(a == NULL);

    sync_file_options filled;
    memset(&filled, 0xff, sizeof filled);
    CHECK_EQ_INT(sync_file_options_init(&filled, SYNC_FILE_OPTIONS_VERSION), SYNC_OK);
    CHECK_EQ_INT(filled.version, SYNC_FILE_OPTIONS_VERSION);
    CHECK(filled.file_path == NULL && filled.backups_dir == NULL);
    CHECK_EQ_INT(filled.fsync, 1);
    CHECK_EQ_INT(sync_file_options_init(&filled, 2), SYNC_EINVAL);
    CHECK_EQ_INT(sync_file_options_init(NULL, SYNC_FILE_OPTIONS_VERSION), SYNC_EINVAL);
}

/* A store that cannot be read at start (here a FIFO: "not a regular file") may hold a record the
 * engine never saw: every save is refused, and the store is left as it was. */
static void test_engine_unread_store_never_overwritten(void)
{
    char *dir = check_tmpdir("file-unread");
    char *path = afs_join(dir, "state.json");
    REQUIRE(mkfifo(path, 0600) == 0);
    aeng_errors errors;
    sync_engine *e = aeng_new(open_adapter(path, NULL, 1), "{\"n\":1}", &errors);
    REQUIRE(e);
    CHECK_EQ_STR(errors.last_context, "load");
    store_expect_save_fails_change_kept(e, &errors);
    CHECK(strstr(errors.last_message, "saves are refused"));
    CHECK_EQ_INT(sync_engine_sync(e), SYNC_EIO);
    struct stat st;
    CHECK(lstat(path, &st) == 0 && S_ISFIFO(st.st_mode));
    CHECK_EQ_INT(afs_count(dir, "state.json.tmp-"), 0);
    sync_engine_free(e);
    free(path);
    free(dir);
}

static void test_engine_corrupt_store(void)
{
    store_check_engine_on_corrupt_store(&file_store, "{\"state\":{\"n\":");
}

int main(void)
{
    store_run_contract(&file_store);
    RUN(test_hand_written_record_loads);
    RUN(test_many_saves_leave_no_temp_files);
    RUN(test_init_removes_stale_temp_files);
    RUN(test_save_keeps_file_permissions);
    RUN(test_failed_rename_removes_temp_file);
    RUN(test_corrupt_files_kept_aside);
    RUN(test_two_corrupt_files_both_kept);
    RUN(test_backup_before_any_save_refused);
    RUN(test_unwritable_path_loads_as_never_saved);
    RUN(test_directory_removed_after_init);
    RUN(test_bad_options);
    RUN(test_fifo_does_not_hang);
    RUN(test_permission_denied);
    RUN(test_read_only_directory);
    RUN(test_engine_corrupt_store);
    RUN(test_engine_unread_store_never_overwritten);
    return check_summary();
}

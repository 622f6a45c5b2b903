/*
 * crash_faults: a store that cannot be written, while the built-in server serves. For each adapter
 * and persist mode: a full disk (a 1 MiB tmpfs filled up), a file-size limit (RLIMIT_FSIZE, how a
 * quota looks), and a read-only store (a read-only bind mount, at start and, for the file adapter,
 * while serving; a SQLite store read-only at start runs alone with "sqlite-ro").
 * Each time: the store starts with a record at version 1; while the fault lasts,
 * every change is reported through on_error with context "sync", the clients and a newcomer are
 * still served the latest in-memory state, and the record on disk stays exactly version 1, intact;
 * once the fault is lifted the next change is saved again.
 *
 * Needs a private mount namespace (root): it is made first, before any thread starts.
 */
#include <libsync/libsync.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <time.h>
#include <unistd.h>

#include "adapter_fs.h"
#include "check.h"
#include "server_fixture.h"
#include "ws_client.h"

enum { SEED_PAD = 100, BIG_PAD = 200000, TMPFS_BYTES = 1024 * 1024 };

typedef enum fault { FAULT_DISK_FULL, FAULT_FILE_SIZE, FAULT_RO_AT_START, FAULT_RO_LIVE } fault;

static const char *const fault_names[] = {"disk-full", "file-size", "ro-start", "ro-live"};

typedef struct errors {
    atomic_int sync;
    atomic_int other;
    char last[512];
} errors;

static int on_grow(sync_msg *msg, void *userdata)
{
    (void)userdata;
    const cJSON *bytes = cJSON_GetObjectItemCaseSensitive(sync_msg_message(msg), "bytes");
    cJSON *state = sync_msg_state_mut(msg);
    cJSON *counter = state ? cJSON_GetObjectItemCaseSensitive(state, "counter") : NULL;
    if (!cJSON_IsNumber(counter) || !cJSON_IsNumber(bytes) || bytes->valuedouble < 0 ||
        bytes->valuedouble > 1e7)
        return SYNC_EINVAL;
    cJSON_SetNumberValue(counter, counter->valuedouble + 1);
    if (bytes->valuedouble > 0) {
        size_t n = (size_t)bytes->valuedouble;
        char *pad = malloc(n + 1);
        if (!pad)
            return SYNC_ENOMEM;
        memset(pad, 'y', n);
        pad[n] = '\0';
        cJSON *item = cJSON_CreateString(pad);
        free(pad);
        if (!item || !cJSON_ReplaceItemInObjectCaseSensitive(state, "pad", item)) {
            cJSON_Delete(item);
            return SYNC_ENOMEM;
        }
    }
    return SYNC_OK;
}

static void on_error(sync_engine *engine, int status, const char *message, const char *context,
                     sync_conn *conn, void *userdata)
{
    (void)engine;
    (void)conn;
    (void)status;
    errors *e = userdata;
    if (strcmp(context, "sync") == 0)
        atomic_fetch_add(&e->sync, 1);
    else
        atomic_fetch_add(&e->other, 1);
    snprintf(e->last, sizeof e->last, "%s: %s", context, message);
}

static sync_adapter *make_adapter(const char *kind, const char *path)
{
    sync_adapter *adapter = NULL;
    if (strcmp(kind, "sqlite") == 0) {
        sync_sqlite_options so = SYNC_SQLITE_OPTIONS_INIT;
        so.path = path;
        sync_adapter_sqlite_new(&adapter, &so);
    } else {
        sync_file_options fo = SYNC_FILE_OPTIONS_INIT;
        fo.file_path = path;
        sync_adapter_file_new(&adapter, &fo);
    }
    return adapter;
}

/* The record through a fresh adapter: version and counter and pad length, or -1s. */
static void load_record(const char *kind, const char *path, long long *version, long long *counter,
                        long long *pad_len)
{
    *version = *counter = *pad_len = -1;
    sync_adapter *a = make_adapter(kind, path);
    char *json = NULL;
    int64_t v = 0;
    if (a && sync_adapter_init(a) == SYNC_OK && sync_adapter_load(a, &json, &v) == SYNC_OK &&
        json) {
        cJSON *state = cJSON_Parse(json);
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(state, "counter");
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(state, "pad");
        *version = v;
        *counter = cJSON_IsNumber(c) ? (long long)c->valuedouble : -1;
        *pad_len = cJSON_IsString(p) ? (long long)strlen(p->valuestring) : -1;
        cJSON_Delete(state);
    } else {
        fprintf(stderr, "  load %s: %s\n", path, sync_error_last());
    }
    sync_free(json);
    sync_adapter_free(a);
}

/* PRAGMA integrity_check of the database file, as sqlite3 would run it. */
static int sqlite_intact(const char *path)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int ok = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
             sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK &&
             sqlite3_step(st) == SQLITE_ROW &&
             strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return ok;
}

/* Reads frames until a state frame with version >= min; returns its text (caller frees). */
static char *wait_state(ws_client *c, long long min, int timeout_ms)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long spent = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (spent >= timeout_ms)
            return NULL;
        char *text = ws_read_text(c, (int)(timeout_ms - spent));
        if (!text)
            return NULL;
        if (ws_json_int(text, "version") >= min && strstr(text, "\"data\""))
            return text;
        free(text);
    }
}

static int wait_errors(errors *e, int at_least)
{
    for (int i = 0; i < 200 && atomic_load(&e->sync) < at_least; i++)
        usleep(10000);
    return atomic_load(&e->sync) >= at_least;
}

/* Fills the file system of `dir` with one file until it refuses more. */
static void fill_disk(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    static char block[4096];
    memset(block, 'f', sizeof block);
    size_t chunk = sizeof block;
    while (chunk > 0) {
        if (write(fd, block, chunk) < 0)
            chunk /= 2; /* down to the last free bytes */
    }
    close(fd);
}

static int remount(const char *dir, int read_only)
{
    unsigned long flags = MS_REMOUNT | MS_BIND | (read_only ? MS_RDONLY : 0);
    if (read_only && mount(dir, dir, "none", MS_BIND, NULL) != 0)
        return -1;
    if (mount("none", dir, "none", flags, NULL) != 0)
        return -1;
    if (!read_only)
        umount2(dir, MNT_DETACH);
    return 0;
}

static const char *g_kind;
static fault g_fault;
static sync_persist_mode g_mode;

static void inject(const char *dir, const char *filler)
{
    switch (g_fault) {
    case FAULT_DISK_FULL:
        fill_disk(filler);
        break;
    case FAULT_FILE_SIZE:
        afs_limit_file_size(64 * 1024);
        break;
    case FAULT_RO_AT_START:
    case FAULT_RO_LIVE:
        if (remount(dir, 1) != 0)
            fprintf(stderr, "  cannot make %s read-only: %s\n", dir, strerror(errno));
        break;
    }
}

static void lift(const char *dir, const char *filler)
{
    switch (g_fault) {
    case FAULT_DISK_FULL:
        unlink(filler);
        break;
    case FAULT_FILE_SIZE:
        afs_limit_file_size(0);
        break;
    case FAULT_RO_AT_START:
    case FAULT_RO_LIVE:
        umount2(dir, MNT_DETACH);
        break;
    }
}

static void run_case(void)
{
    char name[64];
    snprintf(name, sizeof name, "faults-%s-%s-%d", g_kind, fault_names[g_fault], (int)g_mode);
    char *dir = check_tmpdir(name);
    char *store = afs_join(dir, strcmp(g_kind, "sqlite") == 0 ? "store.sqlite" : "store.json");
    char *filler = afs_join(dir, "filler");
    int tmpfs = g_fault == FAULT_DISK_FULL;
    char opts[32];
    snprintf(opts, sizeof opts, "size=%d", TMPFS_BYTES);
    REQUIRE(!tmpfs || mount("tmpfs", dir, "tmpfs", 0, opts) == 0);

    /* The record that must survive: version 1, counter 1, a 100-byte pad. */
    sync_adapter *seed = make_adapter(g_kind, store);
    REQUIRE(seed && sync_adapter_init(seed) == SYNC_OK);
    char pad[SEED_PAD + 1];
    memset(pad, 'y', SEED_PAD);
    pad[SEED_PAD] = '\0';
    char seed_json[SEED_PAD + 64];
    snprintf(seed_json, sizeof seed_json, "{\"counter\":1,\"pad\":\"%s\"}", pad);
    CHECK_EQ_INT(sync_adapter_save(seed, seed_json, 1), SYNC_OK);
    sync_adapter_free(seed);

    if (g_fault == FAULT_RO_AT_START)
        inject(dir, filler);
    errors errs = {0};
    sync_hooks hooks = SYNC_HOOKS_INIT;
    hooks.on_error = on_error;
    hooks.userdata = &errs;
    sync_engine_options eo = SYNC_ENGINE_OPTIONS_INIT;
    eo.initial_state_json = "{\"counter\":0}";
    eo.adapter = make_adapter(g_kind, store);
    eo.persist_mode = g_mode;
    eo.hooks = &hooks;
    sync_engine *engine = NULL;
    CHECK_EQ_INT(sync_engine_new(&engine, &eo), SYNC_OK);
    if (!engine) {
        lift(dir, filler);
        goto out;
    }
    sync_engine_on(engine, "grow", on_grow, NULL, NULL);
    sync_server *server = fixture_server(NULL, "/", engine);
    ws_client *a = server ? ws_connect(sync_server_port(server), "/", NULL, NULL) : NULL;
    char *text = a ? ws_read_text(a, 5000) : NULL;
    /* The store is read at start even when it cannot be written. */
    CHECK_EQ_INT(ws_json_int(text, "version"), 1);
    CHECK_EQ_INT(ws_json_int(text, "counter"), 1);
    free(text);
    if (g_fault != FAULT_RO_AT_START)
        inject(dir, filler);

    /* Two changes while the store refuses them: reported, still served. */
    char grow[64];
    snprintf(grow, sizeof grow, "{\"type\":\"grow\",\"bytes\":%d}", BIG_PAD);
    CHECK(a && ws_send_text(a, grow) == 0);
    text = a ? wait_state(a, 2, 2000) : NULL;
    CHECK_EQ_INT(ws_json_int(text, "counter"), 2);
    free(text);
    CHECK(wait_errors(&errs, 1));
    CHECK(a && ws_send_text(a, "{\"type\":\"grow\",\"bytes\":0}") == 0);
    text = a ? wait_state(a, 3, 2000) : NULL;
    CHECK_EQ_INT(ws_json_int(text, "counter"), 3);
    free(text);
    CHECK(wait_errors(&errs, 2));
    fprintf(stderr, "  %s: %d sync errors, last: %.200s\n", name, atomic_load(&errs.sync),
            errs.last);
    ws_client *b = server ? ws_connect(sync_server_port(server), "/", NULL, NULL) : NULL;
    text = b ? ws_read_text(b, 2000) : NULL;
    CHECK(text && strstr(text, "\"type\":\"initial_state\""));
    CHECK_EQ_INT(ws_json_int(text, "version"), 3);
    CHECK_EQ_INT(ws_json_int(text, "counter"), 3);
    free(text);

    /* The fault goes away: the old record is there untouched, and the next change is saved. */
    lift(dir, filler);
    long long version, counter, pad_len;
    load_record(g_kind, store, &version, &counter, &pad_len);
    CHECK_EQ_INT(version, 1);
    CHECK_EQ_INT(counter, 1);
    CHECK_EQ_INT(pad_len, SEED_PAD);
    if (strcmp(g_kind, "sqlite") == 0)
        CHECK(sqlite_intact(store));
    else
        CHECK_EQ_INT(afs_count(dir, "store.json.tmp-"), 0);
    int before = atomic_load(&errs.sync);
    CHECK(a && ws_send_text(a, "{\"type\":\"grow\",\"bytes\":0}") == 0);
    text = a ? wait_state(a, 4, 2000) : NULL;
    CHECK_EQ_INT(ws_json_int(text, "counter"), 4);
    free(text);
    CHECK_EQ_INT(atomic_load(&errs.sync), before);
    load_record(g_kind, store, &version, &counter, &pad_len);
    CHECK_EQ_INT(version, 4);
    CHECK_EQ_INT(counter, 4);
    CHECK_EQ_INT(pad_len, BIG_PAD);
    CHECK_EQ_INT(atomic_load(&errs.other), 0);

    ws_client_free(a);
    ws_client_free(b);
    sync_server_free(server);
    sync_engine_free(engine);
out:
    if (tmpfs)
        umount2(dir, MNT_DETACH);
    free(filler);
    free(store);
    free(dir);
}

/* Usage: crash_faults            every case but the one below
 *        crash_faults sqlite-ro   only a SQLite store that is read-only at start (its own ctest,
 *                                 crash.faults_sqlite_readonly: it was a bug, the store was not
 *                                 loaded and later overwritten). */
int main(int argc, char **argv)
{
    int only_sqlite_ro = argc > 1 && strcmp(argv[1], "sqlite-ro") == 0;
    /* A private mount namespace must be made while this process has one thread. */
    if (unshare(CLONE_NEWNS) != 0 || mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        fprintf(stderr, "crash_faults: needs a private mount namespace (root): %s\n",
                strerror(errno));
        return 1;
    }
    static const char *const kinds[] = {"sqlite", "file"};
    static const sync_persist_mode modes[] = {SYNC_PERSIST_BEFORE_SEND, SYNC_PERSIST_ON_CHANGE};
    for (size_t k = 0; k < 2; k++)
        for (int f = FAULT_DISK_FULL; f <= FAULT_RO_LIVE; f++)
            for (size_t m = 0; m < 2; m++) {
                /* An open SQLite database keeps writing through its open descriptors after a
                 * read-only bind mount appears: only a store read-only from the start is. */
                if (k == 0 && f == FAULT_RO_LIVE)
                    continue;
                if (only_sqlite_ro != (k == 0 && f == FAULT_RO_AT_START))
                    continue;
                g_kind = kinds[k];
                g_fault = (fault)f;
                g_mode = modes[m];
                char label[96];
                snprintf(label, sizeof label, "%s %s %s", g_kind, fault_names[f],
                         m ? "on_change" : "before_send");
                check_run(label, run_case);
            }
    return check_summary();
}

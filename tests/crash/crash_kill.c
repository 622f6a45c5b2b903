/*
 * crash_kill: the durability contract under SIGKILL. Starts crash_child on one store again and
 * again; each time three clients connect and two of them send increments as fast as the server
 * takes them while all three read, and at a random moment the child is killed with SIGKILL. Then
 * the store is opened the way an operator would (sqlite3 with PRAGMA integrity_check, or the JSON
 * file parsed directly) and with the adapter itself, and must hold a whole record whose version
 * is at least the highest version any client received. The next child must then announce exactly
 * that stored version in its initial_state. One violation fails the run.
 *
 *   crash_kill CHILD sqlite|file DIR [KILLS]     (KILLS: default 100, or $LIBSYNC_CRASH_KILLS)
 *
 * Persist modes alternate (before_send, on_change), and so does the file adapter's fsync.
 */
#include <libsync/libsync.h>

#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "adapter_fs.h"
#include "ws_client.h"

enum { CLIENTS = 3, SENDERS = 2, MAX_KILL_DELAY_MS = 60 };

typedef struct record {
    int found; /* 0: never saved */
    long long version;
    long long counter;
} record;

typedef struct totals {
    int kills;
    int kills_mid_update; /* the child had sent state updates in that round */
    int violations;
    long long max_received;
} totals;

static const char *g_kind;
static char *g_store;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static unsigned random_below(unsigned n)
{
    unsigned r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
        r = (unsigned)rand();
    return n ? r % n : 0;
}

static void violation(totals *t, int kill, const char *fmt, long long a, long long b)
{
    t->violations++;
    fprintf(stderr, "VIOLATION (%s, kill %d): ", g_kind, kill);
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
}

/* Starts the child; returns its pid and the port it listens on, or -1. */
static pid_t spawn_child(const char *child, int round, int *port)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    const char *mode = round % 2 ? "on_change" : "before_send";
    const char *nofsync = (round / 2) % 2 ? "nofsync" : NULL;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execl(child, child, g_kind, g_store, mode, nofsync, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        return -1;
    }
    char line[64];
    size_t len = 0;
    long long deadline = now_ms() + 10000;
    *port = -1;
    while (len < sizeof line - 1 && now_ms() < deadline) {
        struct pollfd pfd = {fds[0], POLLIN, 0};
        if (poll(&pfd, 1, (int)(deadline - now_ms())) <= 0)
            break;
        ssize_t n = read(fds[0], line + len, 1);
        if (n <= 0)
            break;
        if (line[len++] == '\n') {
            line[len] = '\0';
            if (sscanf(line, "port %d", port) != 1)
                *port = -1;
            break;
        }
    }
    close(fds[0]);
    if (*port <= 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

/* The record as SQLite itself sees it, after an integrity check. 0, or -1 when corrupt. */
static int read_sqlite_raw(record *out)
{
    sqlite3 *db = NULL;
    int ok = -1;
    memset(out, 0, sizeof *out);
    if (sqlite3_open_v2(g_store, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        fprintf(stderr, "  sqlite3_open: %s\n", db ? sqlite3_errmsg(db) : "no memory");
        sqlite3_close(db);
        return -1;
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW &&
        strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0)
        ok = 0;
    else
        fprintf(stderr, "  integrity_check: %s\n", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    st = NULL;
    if (ok == 0) {
        int rc = sqlite3_prepare_v2(db, "SELECT state, version FROM websocket_state WHERE id = 1",
                                    -1, &st, NULL);
        if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            out->found = 1;
            out->version = sqlite3_column_int64(st, 1);
            cJSON *state = cJSON_Parse((const char *)sqlite3_column_text(st, 0));
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(state, "counter");
            out->counter = cJSON_IsNumber(c) ? (long long)c->valuedouble : -1;
            cJSON_Delete(state);
        } else if (rc != SQLITE_DONE && !(rc == SQLITE_ERROR && !st)) {
            fprintf(stderr, "  select: %s\n", sqlite3_errmsg(db));
            ok = -1;
        }
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return ok;
}

/* The record as the JSON file holds it. 0, or -1 when it is not one whole record. */
static int read_file_raw(record *out)
{
    memset(out, 0, sizeof *out);
    char *text = afs_read(g_store);
    if (!text)
        return afs_exists(g_store) ? -1 : 0;
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(root, "version");
    const cJSON *counter = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(root, "state"), "counter");
    int ok = cJSON_IsNumber(version) && cJSON_IsNumber(counter) ? 0 : -1;
    if (ok == 0) {
        out->found = 1;
        out->version = (long long)version->valuedouble;
        out->counter = (long long)counter->valuedouble;
    }
    cJSON_Delete(root);
    return ok;
}

/* The record as the adapter loads it (what the next start will see). 0 or -1. */
static int read_adapter(record *out)
{
    memset(out, 0, sizeof *out);
    sync_adapter *adapter = NULL;
    int rc;
    if (strcmp(g_kind, "sqlite") == 0) {
        sync_sqlite_options so = SYNC_SQLITE_OPTIONS_INIT;
        so.path = g_store;
        rc = sync_adapter_sqlite_new(&adapter, &so);
    } else {
        sync_file_options fo = SYNC_FILE_OPTIONS_INIT;
        fo.file_path = g_store;
        rc = sync_adapter_file_new(&adapter, &fo);
    }
    char *json = NULL;
    int64_t version = 0;
    if (rc == SYNC_OK && (rc = sync_adapter_init(adapter)) == SYNC_OK)
        rc = sync_adapter_load(adapter, &json, &version);
    if (rc != SYNC_OK)
        fprintf(stderr, "  adapter load: %s (%s)\n", sync_strerror(rc), sync_error_last());
    if (rc == SYNC_OK && json) {
        cJSON *state = cJSON_Parse(json);
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(state, "counter");
        out->found = 1;
        out->version = version;
        out->counter = cJSON_IsNumber(c) ? (long long)c->valuedouble : -1;
        cJSON_Delete(state);
    }
    sync_free(json);
    sync_adapter_free(adapter);
    return rc == SYNC_OK ? 0 : -1;
}

/* Reads every frame already there; keeps the highest version of a state frame. */
static void drain(ws_client *c, long long *max_version, int *updates, int timeout_ms)
{
    char *text = NULL;
    int op;
    while ((op = ws_read_frame(c, timeout_ms, &text, NULL)) >= 0) {
        if (op == WS_OP_TEXT && strstr(text, "\"type\":\"state_update\"") && updates)
            (*updates)++;
        long long v = op == WS_OP_TEXT ? ws_json_int(text, "version") : -1;
        if (v > *max_version)
            *max_version = v;
        free(text);
        text = NULL;
        if (op == WS_OP_CLOSE)
            break;
    }
}

/* One round: serve, kill, check. `expected` is the version the store held before this round
 * (-1 on the first, when the store may not exist yet); on return it holds the new one. */
static int one_round(const char *child, int round, long long *expected, totals *t)
{
    int port = 0;
    pid_t pid = spawn_child(child, round, &port);
    if (pid < 0) {
        fprintf(stderr, "crash_kill: cannot start %s (round %d)\n", child, round);
        return -1;
    }
    ws_client *clients[CLIENTS] = {0};
    long long received = -1; /* highest version any client read */
    int updates = 0;
    long long kill_at = now_ms() + 1 + random_below(MAX_KILL_DELAY_MS);
    for (int i = 0; i < CLIENTS; i++) {
        clients[i] = ws_connect(port, "/", NULL, NULL);
        char *initial = clients[i] ? ws_read_text(clients[i], 5000) : NULL;
        long long v = initial ? ws_json_int(initial, "version") : -1;
        if (!initial || !strstr(initial, "\"type\":\"initial_state\"")) {
            fprintf(stderr, "crash_kill: client %d got no initial_state (round %d)\n", i, round);
            t->violations++;
        } else if (*expected >= 0 && v != *expected) {
            violation(t, round, "initial_state version %lld, but the store held %lld", v,
                      *expected);
        }
        if (v > received)
            received = v;
        free(initial);
    }
    static const char inc[] = "{\"type\":\"increment\"}";
    while (now_ms() < kill_at) {
        for (int i = 0; i < SENDERS; i++)
            if (clients[i])
                ws_send_text(clients[i], inc);
        for (int i = 0; i < CLIENTS; i++)
            if (clients[i])
                drain(clients[i], &received, &updates, 0);
    }
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
        fprintf(stderr, "crash_kill: child ended on its own (status %d, round %d)\n", status,
                round);
        t->violations++;
    }
    /* Frames the child wrote before it died are still in our sockets: they count as received. */
    for (int i = 0; i < CLIENTS; i++) {
        if (clients[i])
            drain(clients[i], &received, &updates, 20);
        ws_client_free(clients[i]);
    }
    t->kills++;
    if (updates > 0)
        t->kills_mid_update++;
    if (received > t->max_received)
        t->max_received = received;

    record raw, loaded;
    int raw_ok = strcmp(g_kind, "sqlite") == 0 ? read_sqlite_raw(&raw) : read_file_raw(&raw);
    if (raw_ok != 0) {
        violation(t, round, "store is corrupt (%lld/%lld)", raw.version, raw.counter);
        return 0;
    }
    if (read_adapter(&loaded) != 0 || loaded.found != raw.found || loaded.version != raw.version ||
        loaded.counter != raw.counter)
        violation(t, round, "adapter loads version %lld, the store holds %lld", loaded.version,
                  raw.version);
    long long stored = raw.found ? raw.version : 0;
    if (stored < received)
        violation(t, round, "store holds version %lld, a client had received %lld", stored,
                  received);
    if (raw.found && raw.counter != raw.version)
        violation(t, round, "record is torn: counter %lld with version %lld", raw.counter,
                  raw.version);
    if (stored < *expected)
        violation(t, round, "store went back from version %lld to %lld", *expected, stored);
    *expected = stored;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 5 || (strcmp(argv[2], "sqlite") != 0 && strcmp(argv[2], "file") != 0)) {
        fprintf(stderr, "usage: crash_kill CHILD sqlite|file DIR [KILLS]\n");
        return 2;
    }
    const char *env = getenv("LIBSYNC_CRASH_KILLS");
    int kills = argc == 5 ? atoi(argv[4]) : env && *env ? atoi(env) : 100;
    if (kills <= 0) {
        fprintf(stderr, "crash_kill: KILLS must be > 0\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    g_kind = argv[2];
    const char *dir = argv[3];
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    if (system(cmd) != 0)
        return 1;
    g_store = afs_join(dir, strcmp(g_kind, "sqlite") == 0 ? "store.sqlite" : "store.json");

    totals t = {0};
    long long expected = -1;
    long long start = now_ms();
    for (int round = 0; round < kills; round++)
        if (one_round(argv[1], round, &expected, &t) != 0) {
            t.violations++;
            break;
        }
    size_t corrupt = afs_count(dir, strcmp(g_kind, "sqlite") == 0 ? "store.sqlite.corrupt"
                                                                  : "store.json.corrupt");
    size_t temps = afs_count(dir, "store.json.tmp-");
    if (corrupt) {
        fprintf(stderr, "VIOLATION (%s): %zu store(s) were kept aside as corrupt\n", g_kind,
                corrupt);
        t.violations++;
    }
    printf("crash.%s: %d SIGKILLs (%d while updates were in flight), %d violations; highest "
           "version a client received %lld, final stored version %lld, %zu temp files left by "
           "kills, %.1f s\n",
           g_kind, t.kills, t.kills_mid_update, t.violations, t.max_received, expected, temps,
           (double)(now_ms() - start) / 1000.0);
    free(g_store);
    return t.violations ? 1 : 0;
}

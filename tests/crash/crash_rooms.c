/*
 * crash_rooms: the room stores under SIGKILL. A child process saves many rooms of one store in a
 * loop from two threads and reports every save that returned SYNC_OK on a pipe; at a random
 * moment it is killed with SIGKILL. Then the store is opened again and every room must be either
 * absent (never acknowledged) or a whole record that was saved: its state names its room, its
 * counter equals its version, its padding has the length and bytes that counter implies, and it
 * is at least the last acknowledged save of that room. SQLite must also pass integrity_check. The
 * next round continues on the same store. One violation fails the run.
 *
 *   crash_rooms sqlite|file DIR [KILLS]     (KILLS: default 30, or $LIBSYNC_CRASH_KILLS)
 */
#include <libsync/libsync.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { ROOMS = 24, MAX_KILL_DELAY_MS = 80, PAD_MAX = 3000 };

static const char *g_kind;
static const char *g_dir;
static char g_names[ROOMS][SYNC_ROOM_NAME_MAX + 1];

/* Names of every shape: plain, upper case, Unicode, the longest. */
static void make_names(void)
{
    for (int i = 0; i < ROOMS; i++) {
        switch (i % 4) {
        case 0:
            snprintf(g_names[i], sizeof g_names[i], "room-%d", i);
            break;
        case 1:
            snprintf(g_names[i], sizeof g_names[i], "Room %d", i);
            break;
        case 2:
            snprintf(g_names[i], sizeof g_names[i], "日本-%d", i);
            break;
        default: /* SYNC_ROOM_NAME_MAX bytes: "NN-long" then 'L' up to the limit */
            memset(g_names[i], 'L', SYNC_ROOM_NAME_MAX);
            g_names[i][SYNC_ROOM_NAME_MAX] = '\0';
            memcpy(g_names[i], "00-long", 7);
            g_names[i][0] = (char)('0' + i / 10);
            g_names[i][1] = (char)('0' + i % 10);
        }
    }
}

static sync_room_store *open_store(int fsync)
{
    sync_room_store *store = NULL;
    char path[4096];
    if (strcmp(g_kind, "sqlite") == 0) {
        snprintf(path, sizeof path, "%s/rooms.sqlite", g_dir);
        sync_sqlite_options so = SYNC_SQLITE_OPTIONS_INIT;
        so.path = path;
        if (sync_room_store_sqlite_new(&store, &so) != SYNC_OK)
            return NULL;
    } else {
        snprintf(path, sizeof path, "%s/rooms", g_dir);
        sync_file_rooms_options fo = SYNC_FILE_ROOMS_OPTIONS_INIT;
        fo.dir = path;
        fo.fsync = fsync;
        if (sync_room_store_file_new(&store, &fo) != SYNC_OK)
            return NULL;
    }
    return store;
}

static size_t pad_len(long long n)
{
    return (size_t)((n * 7919) % PAD_MAX);
}

static char pad_char(long long n)
{
    return (char)('a' + n % 26);
}

/* ---- the child ------------------------------------------------------------------------------- */

typedef struct child_thread {
    sync_room_store *store;
    int parity;
    long long base;
    int report_fd;
} child_thread;

static void *child_saver(void *arg)
{
    child_thread *ct = arg;
    char *json = malloc(PAD_MAX + 256);
    for (long long k = 1;; k++) {
        int room = (int)((k * 2 + ct->parity) % ROOMS);
        long long n = ct->base + k;
        size_t len = pad_len(n);
        int head = snprintf(json, 256, "{\"room\":%d,\"n\":%lld,\"pad\":\"", room, n);
        memset(json + head, pad_char(n), len);
        strcpy(json + head + len, "\"}");
        if (sync_room_store_save(ct->store, g_names[room], json, n) != SYNC_OK) {
            fprintf(stderr, "crash_rooms child: save: %s\n", sync_error_last());
            _exit(3);
        }
        long long ack[2] = {room, n};
        if (write(ct->report_fd, ack, sizeof ack) != (ssize_t)sizeof ack)
            _exit(4);
    }
    return NULL;
}

static void child_main(int report_fd, int round)
{
    sync_room_store *store = open_store(round % 2);
    if (!store)
        _exit(2);
    child_thread ct[2];
    pthread_t threads[2];
    for (int i = 0; i < 2; i++) {
        /* every counter of this round is above every counter of the rounds before */
        ct[i] =
            (child_thread){store, i, (long long)round * 100000000LL + i * 10000000LL, report_fd};
        pthread_create(&threads[i], NULL, child_saver, &ct[i]);
    }
    pthread_join(threads[0], NULL);
    _exit(0);
}

/* ---- the parent ------------------------------------------------------------------------------ */

static unsigned random_below(unsigned n)
{
    unsigned r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
        r = (unsigned)rand();
    return n ? r % n : 0;
}

static int violations;

__attribute__((format(printf, 1, 2))) static void violation(const char *fmt, ...)
{
    violations++;
    fprintf(stderr, "crash_rooms %s: VIOLATION: ", g_kind);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* A record of room `i` must be whole and one this program saved. */
static void check_record(int i, const char *json, int64_t version, long long acked)
{
    cJSON *root = json ? cJSON_Parse(json) : NULL;
    if (!json) {
        if (acked > 0)
            violation("room %s: absent, but save %lld was acknowledged", g_names[i], acked);
        return;
    }
    const cJSON *room = cJSON_GetObjectItemCaseSensitive(root, "room");
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(root, "n");
    const cJSON *pad = cJSON_GetObjectItemCaseSensitive(root, "pad");
    if (!cJSON_IsNumber(room) || room->valueint != i || !cJSON_IsNumber(n) || !cJSON_IsString(pad))
        violation("room %s: a record that is not one this program wrote (version %lld)", g_names[i],
                  (long long)version);
    else if ((long long)n->valuedouble != version)
        violation("room %s: counter %lld with version %lld", g_names[i], (long long)n->valuedouble,
                  (long long)version);
    else if (strlen(pad->valuestring) != pad_len(version) ||
             strspn(pad->valuestring, (char[]){pad_char(version), 0}) != pad_len(version))
        violation("room %s: padding of version %lld is not whole", g_names[i], (long long)version);
    else if (version < acked)
        violation("room %s: version %lld is older than the acknowledged %lld", g_names[i],
                  (long long)version, acked);
    cJSON_Delete(root);
}

static void check_sqlite_integrity(void)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/rooms.sqlite", g_dir);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW ||
        strcmp((const char *)sqlite3_column_text(st, 0), "ok") != 0)
        violation("%s: integrity_check failed", path);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[1], "sqlite") != 0 && strcmp(argv[1], "file") != 0)) {
        fprintf(stderr, "usage: crash_rooms sqlite|file DIR [KILLS]\n");
        return 2;
    }
    g_kind = argv[1];
    g_dir = argv[2];
    int kills = argc > 3 ? atoi(argv[3]) : 0;
    if (kills <= 0 && getenv("LIBSYNC_CRASH_KILLS"))
        kills = atoi(getenv("LIBSYNC_CRASH_KILLS"));
    if (kills <= 0)
        kills = 30;
    make_names();
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0 || mkdir(g_dir, 0755) != 0) {
        fprintf(stderr, "crash_rooms: cannot make %s: %s\n", g_dir, strerror(errno));
        return 2;
    }
    long long acked[ROOMS] = {0};
    long long saves = 0;
    for (int round = 1; round <= kills; round++) {
        int fds[2];
        if (pipe(fds) != 0)
            return 2;
        pid_t pid = fork();
        if (pid < 0)
            return 2;
        if (pid == 0) {
            close(fds[0]);
            child_main(fds[1], round);
        }
        close(fds[1]);
        struct timespec delay = {0, (long)(5 + random_below(MAX_KILL_DELAY_MS)) * 1000000L};
        nanosleep(&delay, NULL);
        kill(pid, SIGKILL);
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFSIGNALED(status)) {
            fprintf(stderr, "crash_rooms: the child ended by itself (status %d) in round %d\n",
                    WEXITSTATUS(status), round);
            return 1;
        }
        /* Every acknowledgement the child wrote before it died. */
        long long ack[2];
        ssize_t got;
        while ((got = read(fds[0], ack, sizeof ack)) == (ssize_t)sizeof ack) {
            if (ack[0] >= 0 && ack[0] < ROOMS && ack[1] > acked[ack[0]])
                acked[ack[0]] = ack[1];
            saves++;
        }
        close(fds[0]);

        if (strcmp(g_kind, "sqlite") == 0)
            check_sqlite_integrity();
        sync_room_store *store = open_store(1);
        if (!store) {
            fprintf(stderr, "crash_rooms: cannot open the store: %s\n", sync_error_last());
            return 1;
        }
        for (int i = 0; i < ROOMS; i++) {
            char *json = NULL;
            int64_t version = 0;
            int rc = sync_room_store_load(store, g_names[i], &json, &version);
            if (rc != SYNC_OK)
                violation("room %s: load failed (%d): %s", g_names[i], rc, sync_error_last());
            else
                check_record(i, json, version, acked[i]);
            sync_free(json);
        }
        /* The list holds only rooms of this program (never a temp file or a kept copy). */
        char *list = NULL;
        if (sync_room_store_list(store, &list) != SYNC_OK) {
            violation("list failed: %s", sync_error_last());
        } else {
            cJSON *array = cJSON_Parse(list);
            for (cJSON *it = array ? array->child : NULL; it; it = it->next) {
                int known = 0;
                for (int i = 0; i < ROOMS; i++)
                    known |= strcmp(it->valuestring, g_names[i]) == 0;
                if (!known)
                    violation("list holds %s, which no save named", it->valuestring);
            }
            cJSON_Delete(array);
        }
        sync_free(list);
        sync_room_store_free(store);
        if (violations)
            break;
    }
    int with_record = 0;
    for (int i = 0; i < ROOMS; i++)
        with_record += acked[i] > 0;
    printf("crash_rooms %s: %d kills, %lld acknowledged saves over %d rooms, %d violations\n",
           g_kind, kills, saves, with_record, violations);
    /* A run where the child never got a save through checks nothing. */
    if (saves == 0) {
        fprintf(stderr, "crash_rooms: no save was acknowledged in any round\n");
        return 1;
    }
    return violations ? 1 : 0;
}

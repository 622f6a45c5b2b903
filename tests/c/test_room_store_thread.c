/* Room stores across threads: saves of different rooms from many threads at once (both built-in
 * stores, direct and through engines), and a custom store that finishes its calls later on a
 * worker thread (SYNC_PENDING + sync_pending_* completions) used by engines and by the direct-use
 * functions, with its init run exactly once however many rooms start together. Run under TSan. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "adapter_engine.h"
#include "adapter_fs.h"
#include "check.h"
#include "room_stores.h"

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- waiting for an engine ------------------------------------------------------------------- */

typedef struct idle_wait {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
} idle_wait;

static void on_idle(sync_engine *engine, int status, void *userdata)
{
    (void)engine;
    (void)status;
    idle_wait *w = userdata;
    pthread_mutex_lock(&w->lock);
    w->done = 1;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

/* 1 once every queued operation of `engine` finished, 0 after 20 s. */
static int wait_idle(sync_engine *engine)
{
    idle_wait w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    sync_engine_when_idle(engine, on_idle, &w);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 20;
    pthread_mutex_lock(&w.lock);
    int rc = 0;
    while (!w.done && rc == 0)
        rc = pthread_cond_timedwait(&w.cond, &w.lock, &deadline);
    int done = w.done;
    pthread_mutex_unlock(&w.lock);
    return done;
}

/* ---- built-in stores, many threads ------------------------------------------------------------
 */

enum { THREADS = 8, ROOMS_PER_THREAD = 60, ROUNDS = 3 };

typedef struct saver {
    sync_room_store *store;
    int index;
    int use_engine;
    int failures;
} saver;

static void *save_rooms(void *arg)
{
    saver *s = arg;
    char name[32], json[96];
    for (int round = 1; round <= ROUNDS; round++)
        for (int r = 0; r < ROOMS_PER_THREAD; r++) {
            snprintf(name, sizeof name, "t%d-room%d", s->index, r);
            snprintf(json, sizeof json, "{\"thread\":%d,\"room\":%d,\"round\":%d}", s->index, r,
                     round);
            if (sync_room_store_save(s->store, name, json, round) != SYNC_OK) {
                printf("  save %s: %s\n", name, sync_error_last());
                s->failures++;
            }
        }
    if (s->use_engine) {
        /* and an engine per thread on a room of its own, saving on every change */
        snprintf(name, sizeof name, "engine-%d", s->index);
        sync_adapter *adapter = NULL;
        aeng_errors errors;
        sync_engine *engine = sync_room_store_adapter(&adapter, s->store, name) == SYNC_OK
                                  ? aeng_new(adapter, "{}", &errors)
                                  : NULL;
        if (!engine) {
            s->failures++;
            return NULL;
        }
        for (int i = 1; i <= 40; i++) {
            snprintf(json, sizeof json, "{\"engine\":%d,\"i\":%d}", s->index, i);
            if (sync_engine_set_state_json(engine, json, 0) != SYNC_OK)
                s->failures++;
        }
        s->failures += errors.count;
        sync_engine_free(engine);
    }
    return NULL;
}

static void concurrent_saves(sync_room_store *(*open)(const char *), const char *kind)
{
    char *dir = check_tmpdir(kind);
    sync_room_store *store = open(dir);
    REQUIRE(store);
    pthread_t threads[THREADS];
    saver savers[THREADS];
    for (int t = 0; t < THREADS; t++) {
        savers[t] = (saver){store, t, 1, 0};
        REQUIRE(pthread_create(&threads[t], NULL, save_rooms, &savers[t]) == 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        CHECK_EQ_INT(savers[t].failures, 0);
    }
    sync_room_store_free(store);

    store = open(dir);
    REQUIRE(store);
    char name[32], want[96];
    for (int t = 0; t < THREADS; t++) {
        for (int r = 0; r < ROOMS_PER_THREAD; r++) {
            snprintf(name, sizeof name, "t%d-room%d", t, r);
            snprintf(want, sizeof want, "{\"thread\":%d,\"room\":%d,\"round\":%d}", t, r, ROUNDS);
            char *json = NULL;
            int64_t v = 0;
            CHECK_EQ_INT(sync_room_store_load(store, name, &json, &v), SYNC_OK);
            CHECK_EQ_STR(json, want);
            CHECK_EQ_INT(v, ROUNDS);
            sync_free(json);
        }
        snprintf(name, sizeof name, "engine-%d", t);
        snprintf(want, sizeof want, "{\"engine\":%d,\"i\":40}", t);
        char *json = NULL;
        int64_t v = 0;
        CHECK_EQ_INT(sync_room_store_load(store, name, &json, &v), SYNC_OK);
        CHECK_EQ_STR(json, want);
        CHECK_EQ_INT(v, 40);
        sync_free(json);
    }
    char *list = NULL;
    CHECK_EQ_INT(sync_room_store_list(store, &list), SYNC_OK);
    cJSON *array = cJSON_Parse(list);
    CHECK_EQ_INT(cJSON_GetArraySize(array), THREADS * (ROOMS_PER_THREAD + 1));
    cJSON_Delete(array);
    sync_free(list);
    sync_room_store_free(store);
    free(dir);
}

static void sqlite_concurrent_saves(void)
{
    concurrent_saves(rs_open_sqlite, "sqlite-threads");
}

static void file_concurrent_saves(void)
{
    concurrent_saves(rs_open_file, "file-threads");
}

/* ---- a store that finishes later --------------------------------------------------------------
 */

enum { J_INIT, J_LOAD, J_SAVE, J_REMOVE, J_LIST };

typedef struct job {
    int kind;
    sync_pending *pending;
    char *room;
    char *json;
    int64_t version;
    struct job *next;
} job;

typedef struct record {
    char room[SYNC_ROOM_NAME_MAX + 1];
    char *json;
    int64_t version;
} record;

/* The store's memory and the worker thread that answers its calls. Owned by the test, so that
 * the store's destroy (which may run on the worker) never has to stop the worker. */
typedef struct late_store {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    job *head, *tail;
    int stop;
    pthread_t worker;
    int init_delay_ms;
    int init_status;
    atomic_int inits;
    atomic_int calls_before_init; /* a call that arrived while no init had finished */
    atomic_int init_done;
    atomic_int destroys;
    atomic_int concurrent, max_concurrent;
    record records[64];
    int count;
} late_store;

static record *find(late_store *ls, const char *room)
{
    for (int i = 0; i < ls->count; i++)
        if (strcmp(ls->records[i].room, room) == 0)
            return &ls->records[i];
    return NULL;
}

static void run_job(late_store *ls, job *j)
{
    if (j->kind == J_INIT) {
        sleep_ms(ls->init_delay_ms);
        atomic_store(&ls->init_done, 1);
        sync_pending_complete(j->pending, ls->init_status,
                              ls->init_status ? "the late store could not start" : NULL);
        return;
    }
    if (!atomic_load(&ls->init_done))
        atomic_fetch_add(&ls->calls_before_init, 1);
    sleep_ms(1);
    pthread_mutex_lock(&ls->lock);
    record *r = j->room ? find(ls, j->room) : NULL;
    char *json = r && r->json ? strdup(r->json) : NULL;
    int64_t version = r ? r->version : 0;
    if (j->kind == J_SAVE) {
        if (!r && ls->count < 64) {
            r = &ls->records[ls->count++];
            snprintf(r->room, sizeof r->room, "%s", j->room);
        }
        if (r) {
            free(r->json);
            r->json = j->json;
            j->json = NULL;
            r->version = j->version;
        }
    } else if (j->kind == J_REMOVE && r) {
        free(r->json);
        *r = ls->records[--ls->count];
        ls->records[ls->count].json = NULL;
    }
    cJSON *names = NULL;
    if (j->kind == J_LIST) {
        names = cJSON_CreateArray();
        for (int i = ls->count - 1; i >= 0; i--) /* unsorted on purpose */
            cJSON_AddItemToArray(names, cJSON_CreateString(ls->records[i].room));
    }
    pthread_mutex_unlock(&ls->lock);
    switch (j->kind) {
    case J_LOAD:
        sync_pending_complete_load(j->pending, SYNC_OK, json, version, NULL);
        break;
    case J_LIST: {
        char *text = cJSON_PrintUnformatted(names);
        sync_pending_complete_list(j->pending, SYNC_OK, text, NULL);
        free(text);
        break;
    }
    default:
        sync_pending_complete(j->pending, SYNC_OK, NULL);
    }
    cJSON_Delete(names);
    free(json);
}

static void *worker_main(void *arg)
{
    late_store *ls = arg;
    pthread_mutex_lock(&ls->lock);
    for (;;) {
        while (!ls->head && !ls->stop)
            pthread_cond_wait(&ls->cond, &ls->lock);
        if (!ls->head)
            break;
        job *j = ls->head;
        ls->head = j->next;
        if (!ls->head)
            ls->tail = NULL;
        pthread_mutex_unlock(&ls->lock);
        run_job(ls, j);
        free(j->room);
        free(j->json);
        free(j);
        pthread_mutex_lock(&ls->lock);
    }
    pthread_mutex_unlock(&ls->lock);
    return NULL;
}

static int enqueue(late_store *ls, int kind, sync_pending *pending, const char *room,
                   const char *json, size_t len, int64_t version)
{
    job *j = calloc(1, sizeof *j);
    j->kind = kind;
    j->pending = pending;
    j->room = room ? strdup(room) : NULL;
    j->json = json ? strndup(json, len) : NULL;
    j->version = version;
    pthread_mutex_lock(&ls->lock);
    if (ls->tail)
        ls->tail->next = j;
    else
        ls->head = j;
    ls->tail = j;
    pthread_cond_signal(&ls->cond);
    pthread_mutex_unlock(&ls->lock);
    return SYNC_PENDING;
}

static int late_init(void *userdata, sync_pending *pending)
{
    late_store *ls = userdata;
    atomic_fetch_add(&ls->inits, 1);
    return enqueue(ls, J_INIT, pending, NULL, NULL, 0, 0);
}

static int late_load(void *userdata, sync_pending *pending, const char *room, char **out_json,
                     int64_t *out_version)
{
    (void)out_json;
    (void)out_version;
    return enqueue(userdata, J_LOAD, pending, room, NULL, 0, 0);
}

static int late_save(void *userdata, sync_pending *pending, const char *room, const cJSON *state,
                     const char *state_json, size_t state_len, int64_t version)
{
    (void)state;
    return enqueue(userdata, J_SAVE, pending, room, state_json, state_len, version);
}

static int late_remove(void *userdata, sync_pending *pending, const char *room)
{
    return enqueue(userdata, J_REMOVE, pending, room, NULL, 0, 0);
}

static int late_list(void *userdata, sync_pending *pending, char **out_names_json)
{
    (void)out_names_json;
    return enqueue(userdata, J_LIST, pending, NULL, NULL, 0, 0);
}

static void late_destroy(void *userdata)
{
    late_store *ls = userdata;
    atomic_fetch_add(&ls->destroys, 1);
}

static sync_room_store *late_open(late_store *ls, int init_delay_ms, int init_status)
{
    memset(ls, 0, sizeof *ls);
    pthread_mutex_init(&ls->lock, NULL);
    pthread_cond_init(&ls->cond, NULL);
    ls->init_delay_ms = init_delay_ms;
    ls->init_status = init_status;
    if (pthread_create(&ls->worker, NULL, worker_main, ls) != 0)
        return NULL;
    sync_room_store_vtable vt = {
        .version = SYNC_ROOM_STORE_VTABLE_VERSION,
        .init = late_init,
        .load = late_load,
        .save = late_save,
        .remove = late_remove,
        .list = late_list,
        .destroy = late_destroy,
    };
    sync_room_store *store = NULL;
    return sync_room_store_new(&store, &vt, ls) == SYNC_OK ? store : NULL;
}

static void late_close(late_store *ls)
{
    pthread_mutex_lock(&ls->lock);
    ls->stop = 1;
    pthread_cond_signal(&ls->cond);
    pthread_mutex_unlock(&ls->lock);
    pthread_join(ls->worker, NULL);
    for (int i = 0; i < ls->count; i++)
        free(ls->records[i].json);
    pthread_cond_destroy(&ls->cond);
    pthread_mutex_destroy(&ls->lock);
}

static void seed(late_store *ls, const char *room, const char *json, int64_t version)
{
    record *r = &ls->records[ls->count++];
    snprintf(r->room, sizeof r->room, "%s", room);
    r->json = strdup(json);
    r->version = version;
}

/* Many engines of one store start at once from many threads while the init is still running: one
 * init, no call before it finished, every engine loads its own room. */
enum { STARTERS = 16 };

typedef struct starter {
    sync_room_store *store;
    int index;
    sync_engine *engine;
    aeng_errors errors;
} starter;

static void *start_engine(void *arg)
{
    starter *s = arg;
    char room[32];
    snprintf(room, sizeof room, "room-%d", s->index);
    sync_adapter *adapter = NULL;
    if (sync_room_store_adapter(&adapter, s->store, room) == SYNC_OK)
        s->engine = aeng_new(adapter, "{\"fresh\":true}", &s->errors);
    return NULL;
}

static void late_store_engines_share_one_init(void)
{
    late_store ls;
    sync_room_store *store = late_open(&ls, 150, SYNC_OK);
    REQUIRE(store);
    for (int i = 0; i < STARTERS; i += 2) {
        char room[32], json[32];
        snprintf(room, sizeof room, "room-%d", i);
        snprintf(json, sizeof json, "{\"seeded\":%d}", i);
        seed(&ls, room, json, 10 + i);
    }
    pthread_t threads[STARTERS];
    starter starters[STARTERS];
    for (int i = 0; i < STARTERS; i++) {
        starters[i] = (starter){.store = store, .index = i};
        REQUIRE(pthread_create(&threads[i], NULL, start_engine, &starters[i]) == 0);
    }
    for (int i = 0; i < STARTERS; i++)
        pthread_join(threads[i], NULL);
    /* The caller's reference may go while the init is still in flight. */
    sync_room_store_free(store);
    for (int i = 0; i < STARTERS; i++) {
        REQUIRE(starters[i].engine);
        CHECK(wait_idle(starters[i].engine));
        char want[32];
        if (i % 2 == 0)
            snprintf(want, sizeof want, "{\"seeded\":%d}", i);
        else
            snprintf(want, sizeof want, "{\"fresh\":true}");
        char *state = aeng_state(starters[i].engine);
        CHECK_EQ_STR(state, want);
        sync_free(state);
        CHECK_EQ_INT(sync_engine_get_version(starters[i].engine), i % 2 == 0 ? 10 + i : 0);
        CHECK_EQ_INT(starters[i].errors.count, 0);
    }
    CHECK_EQ_INT(atomic_load(&ls.inits), 1);
    CHECK_EQ_INT(atomic_load(&ls.calls_before_init), 0);

    /* A save that finishes later: the engine waits for it and the store holds it. */
    sync_engine *e = starters[1].engine;
    int rc = sync_engine_set_state_json(e, "{\"later\":1}", 0);
    CHECK(rc == SYNC_OK || rc == SYNC_PENDING);
    CHECK(wait_idle(e));
    pthread_mutex_lock(&ls.lock);
    record *r = find(&ls, "room-1");
    CHECK(r && r->json && strcmp(r->json, "{\"later\":1}") == 0);
    CHECK(r && r->version == 1);
    pthread_mutex_unlock(&ls.lock);

    CHECK_EQ_INT(atomic_load(&ls.destroys), 0); /* the engines hold the store */
    for (int i = 0; i < STARTERS; i++)
        sync_engine_free(starters[i].engine);
    /* The worker's last completion call may still be returning, holding its token's reference. */
    for (int i = 0; i < 200 && atomic_load(&ls.destroys) == 0; i++)
        sleep_ms(10);
    CHECK_EQ_INT(atomic_load(&ls.destroys), 1);
    late_close(&ls);
}

/* The direct-use functions wait for a store that finishes later, init included. */
static void late_store_direct_use(void)
{
    late_store ls;
    sync_room_store *store = late_open(&ls, 100, SYNC_OK);
    REQUIRE(store);
    CHECK_EQ_INT(sync_room_store_save(store, "b", "{\"b\":1}", 3), SYNC_OK);
    CHECK_EQ_INT(atomic_load(&ls.calls_before_init), 0);
    CHECK_EQ_INT(sync_room_store_save(store, "a", "{\"a\":1}", 4), SYNC_OK);
    CHECK_EQ_INT(sync_room_store_save(store, "c", "{\"c\":1}", 5), SYNC_OK);
    char *json = NULL;
    int64_t v = 0;
    CHECK_EQ_INT(sync_room_store_load(store, "a", &json, &v), SYNC_OK);
    CHECK_EQ_STR(json, "{\"a\":1}");
    CHECK_EQ_INT(v, 4);
    sync_free(json);
    char *list = NULL;
    CHECK_EQ_INT(sync_room_store_list(store, &list), SYNC_OK);
    CHECK_EQ_STR(list, "[\"a\",\"b\",\"c\"]"); /* sorted, though the store lists c, b, a */
    sync_free(list);
    CHECK_EQ_INT(sync_room_store_remove(store, "b"), SYNC_OK);
    CHECK_EQ_INT(sync_room_store_load(store, "b", &json, &v), SYNC_OK);
    CHECK(json == NULL);
    CHECK_EQ_INT(atomic_load(&ls.inits), 1);
    sync_room_store_free(store);
    for (int i = 0; i < 200 && atomic_load(&ls.destroys) == 0; i++)
        sleep_ms(10);
    CHECK_EQ_INT(atomic_load(&ls.destroys), 1);
    late_close(&ls);
}

/* Direct calls from many threads while the (late) init runs: still one init. */
typedef struct direct_caller {
    sync_room_store *store;
    int index;
    int rc;
} direct_caller;

static void *direct_save(void *arg)
{
    direct_caller *c = arg;
    char room[32];
    snprintf(room, sizeof room, "direct-%d", c->index);
    c->rc = sync_room_store_save(c->store, room, "{\"x\":1}", 1);
    return NULL;
}

static void late_store_direct_init_once(void)
{
    late_store ls;
    sync_room_store *store = late_open(&ls, 150, SYNC_OK);
    REQUIRE(store);
    pthread_t threads[STARTERS];
    direct_caller callers[STARTERS];
    for (int i = 0; i < STARTERS; i++) {
        callers[i] = (direct_caller){store, i, -999};
        REQUIRE(pthread_create(&threads[i], NULL, direct_save, &callers[i]) == 0);
    }
    for (int i = 0; i < STARTERS; i++) {
        pthread_join(threads[i], NULL);
        CHECK_EQ_INT(callers[i].rc, SYNC_OK);
    }
    CHECK_EQ_INT(atomic_load(&ls.inits), 1);
    CHECK_EQ_INT(atomic_load(&ls.calls_before_init), 0);
    CHECK_EQ_INT(ls.count, STARTERS);
    sync_room_store_free(store);
    late_close(&ls);
}

/* An init that fails (later) fails every waiting call and every later one, and runs once. */
static void late_store_init_failure(void)
{
    late_store ls;
    sync_room_store *store = late_open(&ls, 50, SYNC_EIO);
    REQUIRE(store);
    sync_adapter *adapter = NULL;
    REQUIRE(sync_room_store_adapter(&adapter, store, "r") == SYNC_OK);
    aeng_errors errors;
    sync_engine *engine = aeng_new(adapter, "{\"fresh\":1}", &errors);
    REQUIRE(engine);
    CHECK_EQ_INT(sync_room_store_save(store, "r", "{}", 1), SYNC_EIO);
    CHECK(strstr(sync_error_last(), "could not start") != NULL);
    CHECK(wait_idle(engine));
    CHECK(errors.count >= 1);
    CHECK(strstr(errors.last_message, "could not start") != NULL);
    char *list = NULL;
    CHECK_EQ_INT(sync_room_store_list(store, &list), SYNC_EIO);
    CHECK(list == NULL);
    CHECK_EQ_INT(atomic_load(&ls.inits), 1);
    CHECK_EQ_INT(ls.count, 0);
    sync_engine_free(engine);
    sync_room_store_free(store);
    late_close(&ls);
}

/* A store freed by its last holder while its init is still running is destroyed once, after the
 * init finished. */
static void store_freed_during_init(void)
{
    late_store ls;
    sync_room_store *store = late_open(&ls, 100, SYNC_OK);
    REQUIRE(store);
    sync_adapter *adapter = NULL;
    REQUIRE(sync_room_store_adapter(&adapter, store, "r") == SYNC_OK);
    sync_room_store_free(store);
    aeng_errors errors;
    sync_engine *engine = aeng_new(adapter, "{}", &errors);
    REQUIRE(engine);
    sync_engine_free(engine); /* while the init is in flight */
    CHECK_EQ_INT(atomic_load(&ls.destroys), 0);
    for (int i = 0; i < 200 && atomic_load(&ls.destroys) == 0; i++)
        sleep_ms(10);
    CHECK_EQ_INT(atomic_load(&ls.destroys), 1);
    late_close(&ls);
    CHECK_EQ_INT(atomic_load(&ls.destroys), 1);
}

/* A custom store must be complete. */
static int no_load(void *u, sync_pending *p, const char *r, char **j, int64_t *v)
{
    (void)u, (void)p, (void)r, (void)j, (void)v;
    return SYNC_OK;
}

static int destroyed;
static void count_destroy(void *u)
{
    (void)u;
    destroyed++;
}

static void vtable_checks(void)
{
    sync_room_store_vtable vt = {
        .version = SYNC_ROOM_STORE_VTABLE_VERSION, .load = no_load, .destroy = count_destroy};
    sync_room_store *store = (sync_room_store *)1;
    destroyed = 0;
    CHECK_EQ_INT(sync_room_store_new(&store, &vt, NULL), SYNC_EINVAL); /* no save/remove/list */
    CHECK(store == NULL);
    CHECK_EQ_INT(destroyed, 1);
    vt.version = 2;
    CHECK_EQ_INT(sync_room_store_new(&store, &vt, NULL), SYNC_EINVAL);
    CHECK_EQ_INT(destroyed, 2);
    CHECK_EQ_INT(sync_room_store_new(NULL, &vt, NULL), SYNC_EINVAL);
    CHECK_EQ_INT(destroyed, 3);
    CHECK_EQ_INT(sync_room_store_new(&store, NULL, NULL), SYNC_EINVAL);
    CHECK(sync_room_store_ref(NULL) == NULL);
    CHECK_EQ_INT(sync_pending_complete_list(NULL, SYNC_OK, "[]", NULL), SYNC_EINVAL);
}

int main(void)
{
    RUN(sqlite_concurrent_saves);
    RUN(file_concurrent_saves);
    RUN(late_store_engines_share_one_init);
    RUN(late_store_direct_use);
    RUN(late_store_direct_init_once);
    RUN(late_store_init_failure);
    RUN(store_freed_during_init);
    RUN(vtable_checks);
    return check_summary();
}

/* Many threads on one engine: messages fed from two threads while others set the state,
 * broadcast and read it. Run under TSan (-DLIBSYNC_SANITIZE=thread): it must stay race-free, and
 * the result must be exact (no lost increment, no lost version, frames in version order). */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine_counter.h"
#include "fake_conn.h"

#define INCREMENTS 2000
#define SETS 300

typedef struct ctx {
    sync_engine *engine;
    fake_conn *conn;
    atomic_int stop;
    atomic_int reads;
    atomic_int bad_reads;
} ctx;

static void *feeder(void *arg)
{
    ctx *c = arg;
    for (int i = 0; i < INCREMENTS; i++)
        if (counter_send(c->engine, c->conn->conn, "increment", 1) != SYNC_OK)
            abort();
    return NULL;
}

static void *broadcaster(void *arg)
{
    ctx *c = arg;
    while (!atomic_load(&c->stop)) {
        sync_engine_broadcast_state(c->engine);
        sync_engine_stats stats = {.version = SYNC_ENGINE_STATS_VERSION};
        sync_engine_get_stats(c->engine, &stats);
        sync_engine_connection_count(c->engine);
    }
    return NULL;
}

static void *reader(void *arg)
{
    ctx *c = arg;
    do {
        cJSON *state = sync_engine_get_state(c->engine);
        char *json = sync_engine_get_state_json(c->engine);
        if (!state || !json || !cJSON_IsObject(state))
            atomic_fetch_add(&c->bad_reads, 1);
        sync_engine_get_version(c->engine);
        cJSON_Delete(state);
        sync_free(json);
        atomic_fetch_add(&c->reads, 1);
    } while (!atomic_load(&c->stop));
    return NULL;
}

static void *ticker(void *arg)
{
    ctx *c = arg;
    while (!atomic_load(&c->stop))
        sync_engine_tick(c->engine, -1);
    return NULL;
}

/* Frames a connection got must never go back in version. */
static int versions_ordered(fake_conn *f)
{
    long long last = -1;
    int ok = 1;
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < f->count; i++) {
        cJSON *frame = cJSON_Parse(f->frames[i]);
        const cJSON *v = cJSON_GetObjectItem(frame, "version");
        if (cJSON_IsNumber(v)) {
            if ((long long)v->valuedouble < last)
                ok = 0;
            last = (long long)v->valuedouble;
        }
        cJSON_Delete(frame);
    }
    pthread_mutex_unlock(&f->lock);
    return ok;
}

static void increments_are_exact(void)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = "{\"counter\":0}";
    opts.heartbeat_interval_ms = 1;
    sync_engine *e = counter_engine(&opts, NULL, 0);
    REQUIRE(e);
    fake_conn *a = fake_conn_open(e);
    fake_conn *b = fake_conn_open(e);
    ctx ca = {.engine = e, .conn = a};
    ctx cb = {.engine = e, .conn = b};
    pthread_t t[5];
    pthread_create(&t[0], NULL, feeder, &ca);
    pthread_create(&t[1], NULL, feeder, &cb);
    pthread_create(&t[2], NULL, broadcaster, &ca);
    pthread_create(&t[3], NULL, reader, &ca);
    pthread_create(&t[4], NULL, ticker, &ca);
    pthread_join(t[0], NULL);
    pthread_join(t[1], NULL);
    atomic_store(&ca.stop, 1);
    for (int i = 2; i < 5; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ_INT(counter_value(e), 2 * INCREMENTS);
    CHECK_EQ_INT(sync_engine_get_version(e), 2 * INCREMENTS);
    CHECK_EQ_INT(ca.bad_reads, 0);
    CHECK(ca.reads > 0);
    CHECK(versions_ordered(a));
    CHECK(versions_ordered(b));
    sync_engine_free(e);
    fake_conn_release(a);
    fake_conn_release(b);
}

typedef struct setter_ctx {
    sync_engine *engine;
    int id;
} setter_ctx;

static void *setter(void *arg)
{
    setter_ctx *s = arg;
    for (int i = 0; i < SETS; i++) {
        cJSON *state = cJSON_CreateObject();
        cJSON_AddNumberToObject(state, "counter", 0);
        cJSON_AddNumberToObject(state, "setter", s->id);
        if (sync_engine_set_state(s->engine, state, i % 2) != SYNC_OK)
            abort();
    }
    return NULL;
}

static void no_version_is_lost(void)
{
    fake_store store;
    fake_store_init(&store, NULL, 0);
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = "{\"counter\":0}";
    opts.adapter = fake_adapter_new(&store);
    opts.auto_broadcast = 1;
    opts.timer_mode = SYNC_TIMERS_THREAD;
    opts.sync_interval_ms = 1;
    sync_engine *e = counter_engine(&opts, NULL, 0);
    REQUIRE(e);
    fake_conn *a = fake_conn_open(e);
    fake_conn *b = fake_conn_open(e);
    ctx ca = {.engine = e, .conn = a};
    setter_ctx s1 = {e, 1}, s2 = {e, 2};
    pthread_t t[5];
    pthread_create(&t[0], NULL, feeder, &ca);
    pthread_create(&t[1], NULL, setter, &s1);
    pthread_create(&t[2], NULL, setter, &s2);
    pthread_create(&t[3], NULL, reader, &ca);
    pthread_create(&t[4], NULL, broadcaster, &ca);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    atomic_store(&ca.stop, 1);
    pthread_join(t[3], NULL);
    pthread_join(t[4], NULL);
    CHECK_EQ_INT(sync_engine_get_version(e), INCREMENTS + 2 * SETS);
    CHECK(versions_ordered(a));
    CHECK(versions_ordered(b));
    /* The last frame each connection got is the final state. */
    char *final = sync_engine_get_state_json(e);
    sync_engine_broadcast_state(e);
    cJSON *last = fake_conn_frame_json(b, fake_conn_frames(b) - 1);
    char *last_data = cJSON_PrintUnformatted(cJSON_GetObjectItem(last, "data"));
    CHECK_EQ_STR(last_data, final);
    cJSON_free(last_data);
    cJSON_Delete(last);
    sync_free(final);
    sync_engine_free(e);
    /* The saves kept pace with the changes (ON_CHANGE): the store holds the final version. */
    CHECK_EQ_INT(store.version, INCREMENTS + 2 * SETS);
    fake_store_cleanup(&store);
    fake_conn_release(a);
    fake_conn_release(b);
}

static sync_msg *parked;

static int park_handler(sync_msg *msg, void *userdata)
{
    (void)userdata;
    __atomic_store_n(&parked, msg, __ATOMIC_RELEASE);
    return SYNC_PENDING;
}

typedef struct completer_ctx {
    sync_engine *engine;
    atomic_int done;
} completer_ctx;

/* Completes every parked message from a thread of its own while the main thread feeds more. */
static void *completer(void *arg)
{
    completer_ctx *c = arg;
    while (!atomic_load(&c->done)) {
        sync_msg *msg = __atomic_exchange_n(&parked, NULL, __ATOMIC_ACQ_REL);
        if (msg) {
            cJSON *state = sync_msg_state_mut(msg);
            cJSON *counter = cJSON_GetObjectItem(state, "counter");
            cJSON_SetNumberValue(counter, counter->valuedouble + 1);
            sync_msg_complete(msg, SYNC_OK);
        }
    }
    return NULL;
}

static void async_completions_across_threads(void)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = "{\"counter\":0}";
    sync_engine *e = NULL;
    REQUIRE(sync_engine_new(&e, &opts) == SYNC_OK);
    sync_engine_on(e, "slow", park_handler, NULL, NULL);
    completer_ctx c = {.engine = e};
    pthread_t t;
    pthread_create(&t, NULL, completer, &c);
    for (int i = 0; i < 500; i++) {
        int rc = sync_engine_inject(e, "{\"type\":\"slow\"}", 15);
        CHECK(rc == SYNC_PENDING || rc == SYNC_OK);
    }
    /* Everything queued runs in turn as the completer finishes each one. */
    int64_t start = sync_now_ms();
    while (counter_value(e) < 500 && sync_now_ms() - start < 10000)
        ;
    atomic_store(&c.done, 1);
    pthread_join(t, NULL);
    CHECK_EQ_INT(counter_value(e), 500);
    CHECK_EQ_INT(sync_engine_get_version(e), 500);
    sync_engine_free(e);
}

static void dispose_from_ping(sync_engine *e, sync_conn *conn, void *userdata)
{
    (void)conn;
    (void)userdata;
    sync_engine_dispose(e);
}

/* Disposed from a hook of the engine's own timer thread: the thread is detached, not joined
 * (it cannot join itself), and ends by itself; free still releases everything. */
static void dispose_from_timer_thread_hook(void)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.heartbeat_interval_ms = 5;
    opts.timer_mode = SYNC_TIMERS_THREAD;
    sync_hooks hooks = SYNC_HOOKS_INIT;
    hooks.on_ping = dispose_from_ping;
    opts.hooks = &hooks;
    sync_engine *e = NULL;
    REQUIRE(sync_engine_new(&e, &opts) == SYNC_OK);
    fake_conn *c = fake_conn_open(e);
    int64_t start = sync_now_ms();
    while (fake_conn_closes(c) == 0 && sync_now_ms() - start < 2000)
        ;
    CHECK_EQ_INT(fake_conn_closes(c), 1);
    CHECK_EQ_INT(sync_engine_tick(e, -1), SYNC_ECLOSED);
    sync_engine_free(e);
    fake_conn_release(c);
}

/* Freed while its timer thread sleeps: the thread wakes, ends, and is joined. */
static void free_wakes_timer_thread(void)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.sync_interval_ms = 60000;
    opts.timer_mode = SYNC_TIMERS_THREAD;
    sync_engine *e = NULL;
    REQUIRE(sync_engine_new(&e, &opts) == SYNC_OK);
    int64_t start = sync_now_ms();
    sync_engine_free(e);
    CHECK(sync_now_ms() - start < 1000);
}

int main(void)
{
    RUN(increments_are_exact);
    RUN(no_version_is_lost);
    RUN(async_completions_across_threads);
    RUN(dispose_from_timer_thread_hook);
    RUN(free_wakes_timer_thread);
    return check_summary();
}

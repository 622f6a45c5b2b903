/* Steps and adapters that finish later: completion on the same or another thread, ordering of the
 * queue behind pending work, rollback on asynchronous failure, when_idle, and disposal while work
 * is still pending (run under ASan for leaks). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "engine_counter.h"
#include "fake_conn.h"

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A handler that parks its message; the test completes it. */
static sync_msg *parked;
static int parked_calls;

static int park_handler(sync_msg *msg, void *userdata)
{
    (void)userdata;
    parked = msg;
    parked_calls++;
    return SYNC_PENDING;
}

/* Appends the message's amount to state.log (an array): order of application is visible. */
static int append_handler(sync_msg *msg, void *userdata)
{
    (void)userdata;
    const cJSON *amount = cJSON_GetObjectItemCaseSensitive(sync_msg_message(msg), "amount");
    cJSON *state = sync_msg_state_mut(msg);
    cJSON *log = cJSON_GetObjectItemCaseSensitive(state, "log");
    if (!log)
        log = cJSON_AddArrayToObject(state, "log");
    cJSON_AddItemToArray(log, cJSON_CreateNumber(amount ? amount->valuedouble : -1));
    return SYNC_OK;
}

static sync_engine *new_engine(const char *initial, hook_log *log)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = initial;
    sync_engine *e = hooked_engine(&opts, log);
    if (!e)
        abort();
    return e;
}

static char *state_of(sync_engine *e)
{
    static char buf[200];
    char *json = sync_engine_get_state_json(e);
    snprintf(buf, sizeof buf, "%s", json ? json : "(null)");
    sync_free(json);
    return buf;
}

static void handler_completes_later_same_thread(void)
{
    hook_log log = {0};
    sync_engine *e = new_engine("{\"counter\":0}", &log);
    sync_engine_on(e, "slow", park_handler, NULL, NULL);
    parked = NULL;
    CHECK_EQ_INT(sync_engine_inject(e, "{\"type\":\"slow\"}", 15), SYNC_PENDING);
    REQUIRE(parked != NULL);
    cJSON *state = sync_msg_state_mut(parked);
    cJSON_SetNumberValue(cJSON_GetObjectItem(state, "counter"), 9);
    CHECK_EQ_STR(state_of(e), "{\"counter\":0}");
    CHECK_EQ_INT(sync_engine_get_version(e), 0);
    CHECK_EQ_INT(sync_msg_complete(parked, SYNC_OK), SYNC_OK);
    CHECK_EQ_STR(state_of(e), "{\"counter\":9}");
    CHECK_EQ_INT(sync_engine_get_version(e), 1);
    CHECK_EQ_INT(log.state_changes, 1);
    sync_engine_free(e);
}

typedef struct completer {
    sync_msg *msg;
    int delay_ms;
    int status;
    double value;
} completer;

static void *complete_thread(void *arg)
{
    completer *c = arg;
    sleep_ms(c->delay_ms);
    if (c->status == SYNC_OK || c->value != 0) {
        cJSON *state = sync_msg_state_mut(c->msg);
        cJSON_SetNumberValue(cJSON_GetObjectItem(state, "counter"), c->value);
    }
    sync_msg_complete(c->msg, c->status);
    return NULL;
}

static completer thread_job;
static pthread_t thread_id;

/* Starts a thread that completes the message; with stall_ms the handler itself keeps running
 * (holding the engine) while the completion is already waiting. */
static int threaded_handler(sync_msg *msg, void *userdata)
{
    int stall_ms = (int)(intptr_t)userdata;
    thread_job.msg = msg;
    pthread_create(&thread_id, NULL, complete_thread, &thread_job);
    if (stall_ms)
        sleep_ms(stall_ms);
    return SYNC_PENDING;
}

static volatile int idle_calls;
static volatile int idle_status;

static void on_idle(sync_engine *e, int status, void *userdata)
{
    (void)e;
    (void)userdata;
    idle_status = status;
    idle_calls++;
}

static void handler_completes_on_other_thread(void)
{
    for (int stall = 0; stall <= 30; stall += 30) {
        hook_log log = {0};
        sync_engine *e = new_engine("{\"counter\":0}", &log);
        sync_engine_on(e, "threaded", threaded_handler, (void *)(intptr_t)stall, NULL);
        thread_job = (completer){NULL, stall ? 0 : 20, SYNC_OK, 77};
        CHECK_EQ_INT(sync_engine_inject(e, "{\"type\":\"threaded\"}", 19), SYNC_PENDING);
        idle_calls = 0;
        int rc = sync_engine_when_idle(e, on_idle, NULL);
        CHECK(rc == SYNC_PENDING || rc == SYNC_OK);
        pthread_join(thread_id, NULL);
        CHECK_EQ_INT(idle_calls, 1);
        CHECK_EQ_INT(idle_status, SYNC_OK);
        CHECK_EQ_STR(state_of(e), "{\"counter\":77}");
        CHECK_EQ_INT(sync_engine_get_version(e), 1);
        sync_engine_free(e);
    }
}

static int sync_complete_handler(sync_msg *msg, void *userdata)
{
    (void)userdata;
    sync_msg_set_state_json(msg, "{\"counter\":5}");
    sync_msg_complete(msg, SYNC_OK);
    return SYNC_PENDING;
}

static void handler_completes_before_returning(void)
{
    hook_log log = {0};
    sync_engine *e = new_engine("{\"counter\":0}", &log);
    sync_engine_on(e, "quick", sync_complete_handler, NULL, NULL);
    CHECK_EQ_INT(sync_engine_inject(e, "{\"type\":\"quick\"}", 16), SYNC_OK);
    CHECK_EQ_STR(state_of(e), "{\"counter\":5}");
    sync_engine_free(e);
}

static void queue_keeps_arrival_order(void)
{
    hook_log log = {0};
    sync_engine *e = new_engine("{}", &log);
    sync_engine_on(e, "slow", park_handler, NULL, NULL);
    sync_engine_on(e, "append", append_handler, NULL, NULL);
    parked = NULL;
    parked_calls = 0;
    const char *m1 = "{\"type\":\"append\",\"amount\":1}";
    const char *m2 = "{\"type\":\"append\",\"amount\":2}";
    const char *m3 = "{\"type\":\"append\",\"amount\":3}";
    CHECK_EQ_INT(sync_engine_inject(e, m1, strlen(m1)), SYNC_OK);
    CHECK_EQ_INT(sync_engine_inject(e, "{\"type\":\"slow\"}", 15), SYNC_PENDING);
    CHECK_EQ_INT(sync_engine_inject(e, m2, strlen(m2)), SYNC_PENDING);
    /* set_state waits behind the pending handler, then m3 applies on top of it. */
    CHECK_EQ_INT(sync_engine_set_state_json(e, "{\"log\":[100]}", 0), SYNC_PENDING);
    CHECK_EQ_INT(sync_engine_inject(e, m3, strlen(m3)), SYNC_PENDING);
    CHECK_EQ_INT(sync_engine_sync(e), SYNC_PENDING);
    idle_calls = 0;
    CHECK_EQ_INT(sync_engine_when_idle(e, on_idle, NULL), SYNC_PENDING);
    /* Bad input is refused at once, even behind pending work. */
    CHECK_EQ_INT(sync_engine_inject(e, "{bad", 4), SYNC_EPARSE);
    CHECK_EQ_STR(state_of(e), "{\"log\":[1]}");
    CHECK_EQ_INT(idle_calls, 0);
    REQUIRE(parked != NULL);
    cJSON *state = sync_msg_state_mut(parked);
    cJSON_AddItemToArray(cJSON_GetObjectItem(state, "log"), cJSON_CreateNumber(50));
    CHECK_EQ_INT(sync_msg_complete(parked, SYNC_OK), SYNC_OK);
    CHECK_EQ_STR(state_of(e), "{\"log\":[100,3]}");
    CHECK_EQ_INT(sync_engine_get_version(e), 5);
    CHECK_EQ_INT(idle_calls, 1);
    CHECK_EQ_INT(idle_status, SYNC_OK);
    CHECK_EQ_INT(parked_calls, 1);
    /* Nothing pending: when_idle runs at once. */
    CHECK_EQ_INT(sync_engine_when_idle(e, on_idle, NULL), SYNC_OK);
    CHECK_EQ_INT(idle_calls, 2);
    sync_engine_free(e);
}

static void async_failure_rolls_back(void)
{
    hook_log log = {0};
    sync_engine *e = new_engine("{\"counter\":1}", &log);
    sync_engine_on(e, "threaded", threaded_handler, NULL, NULL);
    thread_job = (completer){NULL, 10, SYNC_EHANDLER, 555};
    CHECK_EQ_INT(sync_engine_inject(e, "{\"type\":\"threaded\"}", 19), SYNC_PENDING);
    pthread_join(thread_id, NULL);
    CHECK_EQ_STR(state_of(e), "{\"counter\":1}");
    CHECK_EQ_INT(sync_engine_get_version(e), 0);
    CHECK_EQ_INT(log.state_changes, 0);
    CHECK_EQ_INT(log.errors, 1);
    CHECK_EQ_INT(log.last_error_status, SYNC_EHANDLER);
    CHECK_EQ_STR(log.last_error_context, "handler:threaded");
    sync_engine_free(e);
}

static sync_msg *parked_step;

static void async_validator_and_middleware(void)
{
    hook_log log = {0};
    sync_engine *e = new_engine("{\"counter\":0}", &log);
    counter_register(e, 0);
    sync_engine_set_validator(e, fake_park, &parked_step, NULL);
    parked_step = NULL;
    CHECK_EQ_INT(counter_send(e, NULL, "increment", 1), SYNC_PENDING);
    REQUIRE(parked_step != NULL);
    sync_msg_set_error(parked_step, "no thanks");
    CHECK_EQ_INT(sync_msg_complete(parked_step, SYNC_EREJECTED), SYNC_OK);
    CHECK_EQ_INT(log.last_error_status, SYNC_EREJECTED);
    CHECK_EQ_STR(log.last_error_context, "validator");
    CHECK(strstr(log.last_error_message, "no thanks") != NULL);
    CHECK_EQ_INT(counter_value(e), 0);

    /* The validator lets it through later; a pending middleware replaces the message. */
    parked_step = NULL;
    CHECK_EQ_INT(counter_send(e, NULL, "increment", 1), SYNC_PENDING);
    sync_engine_set_validator(e, NULL, NULL, NULL);
    sync_engine_use(e, fake_park, &parked_step, NULL);
    sync_msg *validating = parked_step;
    parked_step = NULL;
    CHECK_EQ_INT(sync_msg_complete(validating, SYNC_OK), SYNC_OK);
    REQUIRE(parked_step != NULL);
    CHECK_EQ_INT(sync_msg_replace_json(parked_step, "{\"type\":\"increment\",\"amount\":40}"),
                 SYNC_OK);
    CHECK_EQ_STR(sync_msg_type(parked_step), "increment");
    CHECK_EQ_INT(sync_msg_complete(parked_step, SYNC_OK), SYNC_OK);
    CHECK_EQ_INT(counter_value(e), 40);
    sync_engine_free(e);
}

/* A counter engine starting at `initial` on `store`, which holds {"counter":10} at version 4 and
 * finishes every call only when told (fake_store_finish); its hooks count into `log`. */
static sync_engine *async_store_engine(fake_store *store, const char *initial, hook_log *log)
{
    fake_store_init(store, "{\"counter\":10}", 4);
    store->async = 1;
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = initial;
    opts.adapter = fake_adapter_new(store);
    return counter_engine(&opts, log, 0);
}

static void async_adapter_load_and_save(void)
{
    hook_log log = {0};
    fake_store store;
    sync_engine *e = async_store_engine(&store, "{\"counter\":0}", &log);
    REQUIRE(e);
    fake_conn *c = fake_conn_new();
    /* Usable at once: work waits for the load. */
    CHECK_EQ_INT(sync_engine_handle_open(e, c->conn), SYNC_PENDING);
    CHECK_EQ_INT(counter_send(e, c->conn, "increment", 1), SYNC_PENDING);
    CHECK_EQ_INT(fake_conn_frames(c), 0);
    CHECK_EQ_INT(store.inits, 1);
    CHECK_EQ_INT(fake_store_finish(&store, SYNC_OK), 1); /* init */
    CHECK_EQ_INT(store.loads, 1);
    CHECK_EQ_INT(fake_store_finish(&store, SYNC_OK), 1); /* load */
    CHECK_EQ_INT(fake_conn_frames(c), 1);
    CHECK_EQ_INT(fake_conn_frame_counter(c, 0), 10);
    /* The increment committed on top of the loaded state; its save is pending. */
    CHECK_EQ_INT(counter_value(e), 11);
    CHECK_EQ_INT(sync_engine_get_version(e), 5);
    CHECK_EQ_INT(store.saves, 1);
    CHECK_EQ_INT(log.syncs, 0);
    CHECK_EQ_INT(sync_engine_set_state_json(e, "{\"counter\":20}", 1), SYNC_PENDING);
    CHECK_EQ_INT(fake_store_finish(&store, SYNC_OK), 1); /* save of v5 */
    CHECK_EQ_INT(log.syncs, 1);
    CHECK_EQ_INT(log.last_sync_version, 5);
    /* set_state ran: its save is pending, so its broadcast has not gone out yet. */
    CHECK_EQ_INT(sync_engine_get_version(e), 6);
    CHECK_EQ_INT(fake_conn_frames(c), 1);
    CHECK_EQ_INT(fake_store_finish(&store, SYNC_EIO), 1); /* save of v6 fails */
    CHECK_EQ_INT(log.last_error_status, SYNC_EIO);
    CHECK_EQ_STR(log.last_error_context, "sync");
    CHECK_EQ_INT(fake_conn_frames(c), 2); /* still served after a failed save */
    CHECK_EQ_INT(fake_conn_frame_counter(c, 1), 20);
    CHECK_EQ_STR(store.json, "{\"counter\":11}");
    /* Backup finishing later. */
    CHECK_EQ_INT(sync_engine_create_backup(e), SYNC_PENDING);
    CHECK_EQ_INT(log.backups, 0);
    CHECK_EQ_INT(fake_store_finish(&store, SYNC_OK), 1);
    CHECK_EQ_INT(log.backups, 1);
    CHECK_EQ_INT(fake_store_has_pending(&store), 0);
    sync_engine_free(e);
    fake_conn_release(c);
    CHECK_EQ_INT(store.destroyed, 1);
    fake_store_cleanup(&store);
}

static void async_load_failure_reported(void)
{
    hook_log log = {0};
    fake_store store;
    sync_engine *e = async_store_engine(&store, "{\"counter\":3}", &log);
    REQUIRE(e);
    fake_store_finish(&store, SYNC_OK);
    fake_store_finish(&store, SYNC_ECORRUPT);
    CHECK_EQ_INT(log.last_error_status, SYNC_ECORRUPT);
    CHECK_EQ_STR(log.last_error_context, "load");
    CHECK_EQ_INT(counter_value(e), 3);
    CHECK_EQ_INT(sync_engine_get_version(e), 0);
    sync_engine_free(e);
    fake_store_cleanup(&store);
}

static void dispose_with_pending_work(void)
{
    hook_log log = {0};
    sync_engine *e = new_engine("{\"counter\":0}", &log);
    sync_engine_on(e, "slow", park_handler, NULL, NULL);
    counter_register(e, 0);
    parked = NULL;
    CHECK_EQ_INT(sync_engine_inject(e, "{\"type\":\"slow\"}", 15), SYNC_PENDING);
    CHECK_EQ_INT(counter_send(e, NULL, "increment", 1), SYNC_PENDING);
    idle_calls = 0;
    CHECK_EQ_INT(sync_engine_when_idle(e, on_idle, NULL), SYNC_PENDING);
    CHECK_EQ_INT(sync_engine_dispose(e), SYNC_OK);
    CHECK_EQ_INT(idle_calls, 1);
    CHECK_EQ_INT(idle_status, SYNC_ECLOSED);
    /* Freed before the completion arrives: the completion is accepted and ignored. */
    sync_engine_free(e);
    REQUIRE(parked != NULL);
    sync_msg_state_mut(parked);
    CHECK_EQ_INT(sync_msg_complete(parked, SYNC_OK), SYNC_OK);

    /* Same with an adapter call pending. */
    fake_store store;
    fake_store_init(&store, NULL, 0);
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.adapter = fake_adapter_new(&store);
    store.async = 1;
    REQUIRE(sync_engine_new(&e, &opts) == SYNC_OK);
    CHECK_EQ_INT(sync_engine_sync(e), SYNC_PENDING);
    sync_engine_free(e);
    CHECK_EQ_INT(store.destroyed, 0); /* the adapter outlives its pending call */
    CHECK_EQ_INT(fake_store_finish(&store, SYNC_OK), 1);
    CHECK_EQ_INT(store.destroyed, 1);
    fake_store_cleanup(&store);
}

/* A handler and a hook that call their own engine: the calls wait for the running operation. */
static int reentrant_handler(sync_msg *msg, void *userdata)
{
    (void)userdata;
    sync_engine *e = sync_msg_engine(msg);
    int rc = sync_engine_set_state_json(e, "{\"counter\":100}", 0);
    sync_msg_set_state_json(msg, "{\"counter\":1}");
    return rc == SYNC_PENDING ? SYNC_OK : SYNC_EHANDLER;
}

static int hook_broadcasts;

static void broadcast_on_change(sync_engine *e, const cJSON *o, const cJSON *n, void *u)
{
    (void)o;
    (void)n;
    (void)u;
    if (sync_engine_broadcast_state(e) == SYNC_PENDING)
        hook_broadcasts++;
}

static void reentrant_calls_are_queued(void)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    sync_hooks hooks = SYNC_HOOKS_INIT;
    hooks.on_state_change = broadcast_on_change;
    opts.hooks = &hooks;
    sync_engine *e = NULL;
    REQUIRE(sync_engine_new(&e, &opts) == SYNC_OK);
    fake_conn *c = fake_conn_open(e);
    sync_engine_on(e, "re", reentrant_handler, NULL, NULL);
    hook_broadcasts = 0;
    CHECK_EQ_INT(sync_engine_inject(e, "{\"type\":\"re\"}", 13), SYNC_OK);
    CHECK_EQ_STR(state_of(e), "{\"counter\":100}");
    CHECK_EQ_INT(sync_engine_get_version(e), 2);
    CHECK_EQ_INT(hook_broadcasts, 2);
    CHECK_EQ_INT(fake_conn_frames(c), 3);
    CHECK_EQ_INT(fake_conn_frame_counter(c, 1), 100); /* sent after both commits */
    sync_engine_free(e);
    fake_conn_release(c);
}

static void completion_misuse(void)
{
    CHECK_EQ_INT(sync_msg_complete(NULL, SYNC_OK), SYNC_EINVAL);
    CHECK_EQ_INT(sync_pending_complete(NULL, SYNC_OK, NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_pending_complete_load(NULL, SYNC_OK, NULL, 0, NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_pending_complete_backup(NULL, SYNC_OK, 0, NULL), SYNC_EINVAL);
}

/* An adapter whose calls say "later" but complete before returning, from another thread. */
static void *complete_soon(void *arg)
{
    sync_pending_complete_load(arg, SYNC_OK, "{\"n\":1}", 3, NULL);
    return NULL;
}

static int early_init(void *userdata, sync_pending *pending)
{
    (void)userdata;
    sync_pending_complete(pending, SYNC_OK, NULL);
    return SYNC_PENDING;
}

static pthread_t load_thread;

/* Completes from another thread while the callback has not returned yet: with an engine that
 * thread waits for the engine's lock, without one it finishes during the callback. */
static int early_load(void *userdata, sync_pending *pending, char **json, int64_t *version)
{
    (void)userdata;
    (void)json;
    (void)version;
    pthread_create(&load_thread, NULL, complete_soon, pending);
    sleep_ms(30);
    return SYNC_PENDING;
}

static sync_pending *late_token;

static int late_save(void *userdata, sync_pending *pending, const cJSON *state, const char *json,
                     size_t len, int64_t version)
{
    (void)userdata;
    (void)state;
    (void)json;
    (void)len;
    (void)version;
    late_token = pending;
    return SYNC_PENDING;
}

static int failing_backup(void *userdata, sync_pending *pending, int64_t *ts)
{
    (void)userdata;
    (void)ts;
    sync_pending_complete_backup(pending, SYNC_EIO, 0, "disk on fire");
    return SYNC_PENDING;
}

static void direct_adapter_calls(void)
{
    sync_adapter_vtable vt = {
        SYNC_ADAPTER_VTABLE_VERSION, early_init, early_load, late_save, failing_backup, NULL};
    sync_adapter *adapter = NULL;
    REQUIRE(sync_adapter_new(&adapter, &vt, NULL) == SYNC_OK);
    CHECK_EQ_INT(sync_adapter_init(adapter), SYNC_OK);
    char *json = NULL;
    int64_t version = 0;
    CHECK_EQ_INT(sync_adapter_load(adapter, &json, &version), SYNC_OK);
    pthread_join(load_thread, NULL);
    CHECK_EQ_STR(json, "{\"n\":1}");
    CHECK_EQ_INT(version, 3);
    sync_free(json);
    /* Truly later: a direct call cannot wait; the late completion is still accepted. */
    CHECK_EQ_INT(sync_adapter_save(adapter, "{}", 1), SYNC_EUNSUPPORTED);
    REQUIRE(late_token != NULL);
    CHECK_EQ_INT(sync_pending_complete(late_token, SYNC_OK, NULL), SYNC_OK);
    int64_t ts = 0;
    CHECK_EQ_INT(sync_adapter_backup(adapter, &ts), SYNC_EIO);
    CHECK(strstr(sync_error_last(), "disk on fire") != NULL);
    CHECK_EQ_INT(sync_adapter_save(adapter, "{oops", 1), SYNC_EPARSE);
    sync_adapter_free(adapter);

    /* The same adapter in an engine: early completions count, the late save waits. */
    REQUIRE(sync_adapter_new(&adapter, &vt, NULL) == SYNC_OK);
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.adapter = adapter;
    sync_engine *e = NULL;
    REQUIRE(sync_engine_new(&e, &opts) == SYNC_OK);
    pthread_join(load_thread, NULL);
    CHECK_EQ_STR(state_of(e), "{\"n\":1}");
    CHECK_EQ_INT(sync_engine_get_version(e), 3);
    late_token = NULL;
    CHECK_EQ_INT(sync_engine_sync(e), SYNC_PENDING);
    idle_calls = 0;
    CHECK_EQ_INT(sync_engine_when_idle(e, on_idle, NULL), SYNC_PENDING);
    REQUIRE(late_token != NULL);
    CHECK_EQ_INT(sync_pending_complete(late_token, SYNC_OK, NULL), SYNC_OK);
    CHECK_EQ_INT(idle_calls, 1);
    sync_engine_stats stats = {.version = SYNC_ENGINE_STATS_VERSION};
    sync_engine_get_stats(e, &stats);
    CHECK_EQ_INT(stats.saves, 1);
    CHECK_EQ_INT(sync_engine_create_backup(e), SYNC_EIO);
    sync_engine_free(e);
}

int main(void)
{
    RUN(handler_completes_later_same_thread);
    RUN(handler_completes_on_other_thread);
    RUN(handler_completes_before_returning);
    RUN(queue_keeps_arrival_order);
    RUN(async_failure_rolls_back);
    RUN(async_validator_and_middleware);
    RUN(async_adapter_load_and_save);
    RUN(async_load_failure_reported);
    RUN(dispose_with_pending_work);
    RUN(reentrant_calls_are_queued);
    RUN(completion_misuse);
    RUN(direct_adapter_calls);
    return check_summary();
}

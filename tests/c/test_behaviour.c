/* The engine's observable behaviour, case by case, through the public API with fake connections
 * and an in-memory adapter: a counter app end to end, then each step (load, open, message,
 * broadcast, sync, timers, dispose) on its own. */
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

/* A counter app: versioning on, in-memory adapter holding {counter:0} v0. */
typedef struct fixture {
    sync_engine *engine;
    fake_store store;
    hook_log log;
} fixture;

static void fixture_open(fixture *f, int validate, int64_t heartbeat_ms, int64_t sync_ms)
{
    memset(f, 0, sizeof *f);
    fake_store_init(&f->store, "{\"counter\":0}", 0);
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.adapter = fake_adapter_new(&f->store);
    opts.heartbeat_interval_ms = heartbeat_ms;
    opts.sync_interval_ms = sync_ms;
    opts.timer_mode = heartbeat_ms || sync_ms ? SYNC_TIMERS_THREAD : SYNC_TIMERS_MANUAL;
    f->engine = counter_engine(&opts, &f->log, validate);
    if (!f->engine)
        abort();
}

static void fixture_close(fixture *f)
{
    sync_engine_free(f->engine);
    CHECK_EQ_INT(f->store.destroyed, 1);
    fake_store_cleanup(&f->store);
}

/* ---- a counter app end to end: load, messages, timers, backup, dispose ------------------------
 */

static void counter_app_loads_store_once(void)
{
    fixture f;
    fixture_open(&f, 1, 0, 0);
    CHECK_EQ_INT(f.store.inits, 1);
    CHECK_EQ_INT(f.store.loads, 1);
    CHECK_EQ_INT(counter_value(f.engine), 0);
    CHECK_EQ_INT(sync_engine_get_version(f.engine), 0);
    fixture_close(&f);
}

static void counter_app_open_sends_initial_state(void)
{
    fixture f;
    fixture_open(&f, 1, 0, 0);
    fake_conn *c = fake_conn_new();
    CHECK_EQ_INT(sync_engine_handle_open(f.engine, c->conn), SYNC_OK);
    CHECK_EQ_INT(fake_conn_frames(c), 1);
    char type[32];
    CHECK_EQ_STR(fake_conn_frame_type(c, 0, type, sizeof type), "initial_state");
    CHECK_EQ_INT(fake_conn_frame_counter(c, 0), 0);
    CHECK_EQ_INT(f.log.connects, 1);
    fixture_close(&f);
    fake_conn_release(c);
}

static void counter_app_increment_commits_and_saves(void)
{
    fixture f;
    fixture_open(&f, 1, 0, 0);
    CHECK_EQ_INT(counter_send(f.engine, NULL, "increment", 5), SYNC_OK);
    CHECK_EQ_INT(counter_value(f.engine), 5);
    CHECK_EQ_INT(sync_engine_get_version(f.engine), 1);
    CHECK_EQ_INT(f.log.state_changes, 1);
    CHECK_EQ_INT(f.log.syncs, 1);
    CHECK_EQ_INT(f.store.saves, 1);
    CHECK_EQ_STR(f.store.json, "{\"counter\":5}");
    CHECK_EQ_INT(f.store.version, 1);
    fixture_close(&f);
}

static void counter_app_decrement_from_a_connection_commits(void)
{
    fixture f;
    fixture_open(&f, 1, 0, 0);
    fake_conn *c = fake_conn_open(f.engine);
    CHECK_EQ_INT(counter_send(f.engine, c->conn, "decrement", 3), SYNC_OK);
    CHECK_EQ_INT(counter_value(f.engine), -3);
    CHECK_EQ_INT(sync_engine_get_version(f.engine), 1);
    CHECK_EQ_INT(f.log.state_changes, 1);
    fixture_close(&f);
    fake_conn_release(c);
}

static void counter_app_validator_rejects_bad_amount(void)
{
    fixture f;
    fixture_open(&f, 1, 0, 0);
    const char *bad = "{\"type\":\"increment\",\"amount\":\"not a number\"}";
    CHECK_EQ_INT(sync_engine_inject(f.engine, bad, strlen(bad)), SYNC_EREJECTED);
    CHECK_EQ_INT(counter_value(f.engine), 0);
    CHECK_EQ_INT(sync_engine_get_version(f.engine), 0);
    CHECK_EQ_INT(f.log.state_changes, 0);
    CHECK_EQ_INT(f.log.errors, 1);
    CHECK_EQ_STR(f.log.last_error_context, "validator");
    CHECK(strstr(f.log.last_error_message, "amount must be a number") != NULL);
    fixture_close(&f);
}

static void counter_app_middleware_rewrites_message(void)
{
    fixture f;
    fixture_open(&f, 1, 0, 0);
    sync_engine_use(f.engine, counter_double_increments, NULL, NULL);
    CHECK_EQ_INT(counter_send(f.engine, NULL, "increment", 5), SYNC_OK);
    CHECK_EQ_INT(counter_value(f.engine), 10);
    fixture_close(&f);
}

static void counter_app_pong_is_recorded(void)
{
    fixture f;
    fixture_open(&f, 1, 0, 0);
    fake_conn *c = fake_conn_open(f.engine);
    CHECK_EQ_INT(sync_engine_handle_message(f.engine, c->conn, "pong", 4), SYNC_OK);
    CHECK_EQ_INT(f.log.pongs, 1);
    CHECK_EQ_INT(f.log.errors, 0);
    CHECK_EQ_INT(sync_engine_get_version(f.engine), 0);
    CHECK_EQ_INT(fake_conn_frames(c), 1);
    fixture_close(&f);
    fake_conn_release(c);
}

static void counter_app_heartbeat_pings(void)
{
    fixture f;
    int64_t start = sync_now_ms();
    fixture_open(&f, 1, 50, 0);
    fake_conn *c = fake_conn_open(f.engine);
    /* Two pings take 100 ms; a loaded machine gets up to 1 s. */
    while (f.log.pings < 2 && sync_now_ms() - start < 1000)
        sleep_ms(5);
    CHECK(f.log.pings >= 2);
    /* The interval is respected: ping n never comes before n intervals have passed. */
    CHECK(f.log.first_ping_ms - start >= 50);
    CHECK(f.log.last_ping_ms - start >= 100);
    char type[32];
    CHECK_EQ_STR(fake_conn_frame_type(c, 1, type, sizeof type), "ping");
    fixture_close(&f);
    fake_conn_release(c);
}

static void counter_app_broadcast_reaches_every_connection(void)
{
    fixture f;
    fixture_open(&f, 1, 0, 0);
    fake_conn *a = fake_conn_open(f.engine);
    fake_conn *b = fake_conn_open(f.engine);
    CHECK_EQ_INT(counter_send(f.engine, a->conn, "increment", 5), SYNC_OK);
    CHECK_EQ_INT(sync_engine_broadcast_state(f.engine), SYNC_OK);
    char type[32];
    fake_conn *both[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_INT(fake_conn_frames(both[i]), 2);
        CHECK_EQ_STR(fake_conn_frame_type(both[i], 0, type, sizeof type), "initial_state");
        CHECK_EQ_STR(fake_conn_frame_type(both[i], 1, type, sizeof type), "state_update");
        CHECK_EQ_INT(fake_conn_frame_counter(both[i], 1), 5);
    }
    fixture_close(&f);
    fake_conn_release(a);
    fake_conn_release(b);
}

static void counter_app_backup_reaches_store(void)
{
    fixture f;
    fixture_open(&f, 1, 0, 0);
    CHECK_EQ_INT(sync_engine_create_backup(f.engine), SYNC_OK);
    CHECK_EQ_INT(f.store.backups, 1);
    CHECK_EQ_INT(f.log.backups, 1);
    fixture_close(&f);
}

static void counter_app_sync_interval_saves(void)
{
    fixture f;
    int64_t start = sync_now_ms();
    fixture_open(&f, 1, 0, 50);
    for (;;) {
        pthread_mutex_lock(&f.store.lock);
        int saves = f.store.saves;
        pthread_mutex_unlock(&f.store.lock);
        if (saves >= 2 || sync_now_ms() - start > 1000)
            break;
        sleep_ms(5);
    }
    pthread_mutex_lock(&f.store.lock);
    CHECK(f.store.saves >= 2);
    pthread_mutex_unlock(&f.store.lock);
    CHECK(sync_now_ms() - start >= 100);
    CHECK(f.log.syncs >= 2);
    fixture_close(&f);
}

static void counter_app_dispose_closes_each_connection_once(void)
{
    fixture f;
    fixture_open(&f, 1, 0, 0);
    fake_conn *a = fake_conn_new();
    fake_conn *b = fake_conn_new();
    b->close_engine = f.engine; /* this transport reports the close at once */
    sync_engine_handle_open(f.engine, a->conn);
    sync_engine_handle_open(f.engine, b->conn);
    CHECK_EQ_INT(sync_engine_dispose(f.engine), SYNC_OK);
    CHECK_EQ_INT(sync_engine_dispose(f.engine), SYNC_OK);
    CHECK_EQ_INT(fake_conn_closes(a), 1);
    CHECK_EQ_INT(fake_conn_closes(b), 1);
    CHECK_EQ_INT(a->last_code, 1001);
    CHECK_EQ_INT(sync_engine_connection_count(f.engine), 0);
    fixture_close(&f);
    CHECK_EQ_INT(fake_conn_closes(a), 1);
    fake_conn_release(a);
    fake_conn_release(b);
}

/* ---- each step on its own: state, version, load, connections, messages, sync, timers -------- */

/* An engine on `store` (none when NULL), its hooks counting into `log` (none when NULL). */
static sync_engine *store_engine(fake_store *store, const char *initial, int versioning,
                                 hook_log *log)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = initial;
    opts.enable_versioning = versioning;
    opts.adapter = store ? fake_adapter_new(store) : NULL;
    sync_engine *engine = hooked_engine(&opts, log);
    if (!engine)
        abort();
    return engine;
}

static sync_engine *plain_engine(const char *initial, int versioning, hook_log *log)
{
    return store_engine(NULL, initial, versioning, log);
}

static void initial_state_given_or_empty_object(void)
{
    sync_engine *e = plain_engine("{\"counter\":7,\"name\":\"x\"}", 1, NULL);
    char *json = sync_engine_get_state_json(e);
    CHECK_EQ_STR(json, "{\"counter\":7,\"name\":\"x\"}");
    sync_free(json);
    sync_engine_free(e);
    e = plain_engine(NULL, 1, NULL);
    json = sync_engine_get_state_json(e);
    CHECK_EQ_STR(json, "{}");
    sync_free(json);
    sync_engine_free(e);
}

static void version_starts_at_0_or_stays_minus_1_without_versioning(void)
{
    sync_engine *on = plain_engine(NULL, 1, NULL);
    sync_engine *off = plain_engine(NULL, 0, NULL);
    CHECK_EQ_INT(sync_engine_get_version(on), 0);
    CHECK_EQ_INT(sync_engine_get_version(off), -1);
    CHECK_EQ_INT(sync_engine_set_state_json(off, "{\"a\":1}", 0), SYNC_OK);
    CHECK_EQ_INT(sync_engine_get_version(off), -1);
    sync_engine_free(on);
    sync_engine_free(off);
}

static void load_takes_stored_state_and_reports_store_errors(void)
{
    fake_store store;
    fake_store_init(&store, "{\"counter\":42}", 9);
    sync_engine *e = store_engine(&store, "{\"counter\":1}", 1, NULL);
    CHECK_EQ_INT(counter_value(e), 42);
    CHECK_EQ_INT(sync_engine_get_version(e), 9);
    sync_engine_free(e);
    fake_store_cleanup(&store);

    /* Versioning off: the state loads, the version stays -1. */
    fake_store_init(&store, "{\"counter\":42}", 9);
    e = store_engine(&store, NULL, 0, NULL);
    CHECK_EQ_INT(counter_value(e), 42);
    CHECK_EQ_INT(sync_engine_get_version(e), -1);
    sync_engine_free(e);
    fake_store_cleanup(&store);

    /* A store that was never saved yields initial_state. */
    fake_store_init(&store, NULL, 0);
    e = store_engine(&store, "{\"counter\":3}", 1, NULL);
    CHECK_EQ_INT(counter_value(e), 3);
    CHECK_EQ_INT(sync_engine_get_version(e), 0);
    CHECK_EQ_INT(store.saves, 0);
    sync_engine_free(e);
    fake_store_cleanup(&store);

    /* An adapter error: reported (context "load"), initial state and version 0. */
    hook_log log = {0};
    fake_store_init(&store, "{\"counter\":42}", 9);
    store.fail_load = SYNC_ECORRUPT;
    e = store_engine(&store, "{\"counter\":3}", 1, &log);
    CHECK_EQ_INT(counter_value(e), 3);
    CHECK_EQ_INT(sync_engine_get_version(e), 0);
    CHECK_EQ_INT(log.errors, 1);
    CHECK_EQ_INT(log.last_error_status, SYNC_ECORRUPT);
    CHECK_EQ_STR(log.last_error_context, "load");
    CHECK_EQ_INT(store.saves, 0); /* the bad store is not overwritten by loading */
    sync_engine_free(e);
    fake_store_cleanup(&store);

    /* Without hooks the failure reaches sync_error_last(). */
    fake_store_init(&store, "{not json", 4);
    e = store_engine(&store, "{\"counter\":3}", 1, NULL);
    CHECK(strstr(sync_error_last(), "not valid JSON") != NULL);
    CHECK_EQ_INT(counter_value(e), 3);
    CHECK_EQ_INT(sync_engine_get_version(e), 0);
    sync_engine_free(e);
    fake_store_cleanup(&store);

    /* init failing is reported too. */
    memset(&log, 0, sizeof log);
    fake_store_init(&store, "{\"counter\":42}", 9);
    store.fail_init = SYNC_EIO;
    e = store_engine(&store, "{\"counter\":3}", 1, &log);
    CHECK_EQ_INT(counter_value(e), 3);
    CHECK_EQ_INT(log.last_error_status, SYNC_EIO);
    CHECK_EQ_STR(log.last_error_context, "load");
    sync_engine_free(e);
    fake_store_cleanup(&store);
}

static void timers_armed_only_when_configured(void)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    sync_engine *e = NULL;
    REQUIRE(sync_engine_new(&e, &opts) == SYNC_OK);
    CHECK_EQ_INT(sync_engine_next_deadline_ms(e), -1);
    sync_engine_free(e);
    opts.heartbeat_interval_ms = 1000;
    opts.sync_interval_ms = 300;
    int64_t before = sync_now_ms();
    REQUIRE(sync_engine_new(&e, &opts) == SYNC_OK);
    int64_t deadline = sync_engine_next_deadline_ms(e);
    CHECK(deadline >= before + 300 && deadline <= sync_now_ms() + 300);
    sync_engine_free(e);
}

static void open_sends_initial_state_once_and_closes_on_send_failure(void)
{
    hook_log log = {0};
    sync_engine *e = plain_engine("{\"counter\":1}", 1, &log);
    fake_conn *c = fake_conn_new();
    CHECK_EQ_INT(sync_engine_handle_open(e, c->conn), SYNC_OK);
    CHECK_EQ_INT(sync_engine_connection_count(e), 1);
    CHECK_EQ_INT(log.connects, 1);
    CHECK_EQ_INT(fake_conn_frames(c), 1);
    cJSON *frame = fake_conn_frame_json(c, 0);
    CHECK_EQ_INT(cJSON_GetObjectItem(frame, "version")->valuedouble, 0);
    cJSON_Delete(frame);
    CHECK_EQ_INT(sync_engine_handle_open(e, c->conn), SYNC_ESTATE);

    /* A failing initial send is reported and the connection closed. */
    fake_conn *bad = fake_conn_new();
    bad->fail_send = 1;
    CHECK(sync_engine_handle_open(e, bad->conn) < 0);
    CHECK_EQ_STR(log.last_error_context, "open");
    CHECK_EQ_INT(fake_conn_closes(bad), 1);
    sync_engine_free(e);
    fake_conn_release(c);
    fake_conn_release(bad);
}

static void close_is_idempotent(void)
{
    hook_log log = {0};
    sync_engine *e = plain_engine(NULL, 1, &log);
    fake_conn *c = fake_conn_open(e);
    CHECK_EQ_INT(sync_engine_handle_close(e, c->conn), SYNC_OK);
    CHECK_EQ_INT(sync_engine_connection_count(e), 0);
    CHECK_EQ_INT(log.disconnects, 1);
    CHECK_EQ_INT(sync_engine_handle_close(e, c->conn), SYNC_OK);
    CHECK_EQ_INT(log.disconnects, 1);
    sync_engine_broadcast_state(e);
    CHECK_EQ_INT(fake_conn_frames(c), 1);
    sync_engine_free(e);
    fake_conn_release(c);
}

static void only_exact_pong_text_is_a_pong(void)
{
    hook_log log = {0};
    sync_engine *e = plain_engine(NULL, 1, &log);
    counter_register(e, 0);
    fake_conn *c = fake_conn_open(e);
    CHECK_EQ_INT(sync_engine_handle_message(e, c->conn, "pong", 4), SYNC_OK);
    CHECK_EQ_INT(log.pongs, 1);
    CHECK_EQ_INT(log.errors, 0);
    CHECK_EQ_INT(log.state_changes, 0);
    /* "pong " or "PONG" are not pongs: they are (bad) JSON. */
    CHECK_EQ_INT(sync_engine_handle_message(e, c->conn, "pong ", 5), SYNC_EPARSE);
    CHECK_EQ_INT(log.pongs, 1);
    sync_engine_free(e);
    fake_conn_release(c);
}

static void bad_json_and_invalid_messages_rejected_without_change(void)
{
    hook_log log = {0};
    sync_engine *e = plain_engine("{\"counter\":0}", 1, &log);
    counter_register(e, 1);
    CHECK_EQ_INT(sync_engine_inject(e, "{nope", 5), SYNC_EPARSE);
    CHECK_EQ_STR(log.last_error_context, "message");
    CHECK_EQ_INT(counter_send(e, NULL, "increment", 2), SYNC_OK);
    const char *missing = "{\"type\":\"increment\"}";
    CHECK_EQ_INT(sync_engine_inject(e, missing, strlen(missing)), SYNC_EREJECTED);
    CHECK_EQ_STR(log.last_error_context, "validator");
    CHECK_EQ_INT(counter_value(e), 2);
    CHECK_EQ_INT(sync_engine_get_version(e), 1);
    CHECK_EQ_INT(log.errors, 2);
    sync_engine_free(e);
}

static int order_log[8];
static int order_count;

static int mw_first(sync_msg *msg, void *userdata)
{
    (void)msg;
    (void)userdata;
    order_log[order_count++] = 1;
    return SYNC_OK;
}

static int mw_second(sync_msg *msg, void *userdata)
{
    (void)msg;
    order_log[order_count++] = 2;
    return userdata ? SYNC_EREJECTED : SYNC_OK;
}

static void middleware_runs_in_order_and_failure_stops_message(void)
{
    hook_log log = {0};
    sync_engine *e = plain_engine("{\"counter\":0}", 1, &log);
    counter_register(e, 0);
    order_count = 0;
    sync_engine_use(e, mw_first, NULL, NULL);
    sync_engine_use(e, mw_second, NULL, NULL);
    CHECK_EQ_INT(counter_send(e, NULL, "increment", 1), SYNC_OK);
    CHECK_EQ_INT(order_count, 2);
    CHECK_EQ_INT(order_log[0], 1);
    CHECK_EQ_INT(order_log[1], 2);
    sync_engine_free(e);

    e = plain_engine("{\"counter\":0}", 1, &log);
    counter_register(e, 0);
    sync_engine_use(e, mw_second, (void *)1, NULL);
    CHECK_EQ_INT(counter_send(e, NULL, "increment", 1), SYNC_EREJECTED);
    CHECK_EQ_STR(log.last_error_context, "middleware");
    CHECK_EQ_INT(counter_value(e), 0);
    CHECK_EQ_INT(sync_engine_get_version(e), 0);
    sync_engine_free(e);
}

static void unknown_message_type_reported(void)
{
    hook_log log = {0};
    sync_engine *e = plain_engine("{\"counter\":0}", 1, &log);
    counter_register(e, 0);
    CHECK_EQ_INT(counter_send(e, NULL, "multiply", 2), SYNC_ENOHANDLER);
    CHECK_EQ_INT(log.errors, 1);
    CHECK_EQ_INT(log.last_error_status, SYNC_ENOHANDLER);
    CHECK_EQ_STR(log.last_error_context, "message");
    CHECK(strstr(log.last_error_message, "multiply") != NULL);
    CHECK_EQ_INT(sync_engine_get_version(e), 0);
    sync_engine_free(e);
}

static int set_same(sync_msg *msg, void *userdata)
{
    (void)userdata;
    return sync_msg_set_state(msg, cJSON_Duplicate(sync_msg_state(msg), 1));
}

static int change_then_fail(sync_msg *msg, void *userdata)
{
    (void)userdata;
    cJSON_AddNumberToObject(sync_msg_state_mut(msg), "junk", 1);
    sync_msg_set_state_json(msg, "{\"counter\":1000}");
    sync_msg_set_error(msg, "boom");
    return SYNC_EHANDLER;
}

static void handler_commits_only_on_success(void)
{
    hook_log log = {0};
    sync_engine *e = plain_engine("{\"counter\":0}", 1, &log);
    counter_register(e, 0);
    sync_engine_on(e, "same", set_same, NULL, NULL);
    sync_engine_on(e, "fail", change_then_fail, NULL, NULL);
    CHECK_EQ_INT(sync_engine_inject(e, "{\"type\":\"same\"}", 15), SYNC_OK);
    CHECK_EQ_INT(sync_engine_get_version(e), 1);
    CHECK_EQ_INT(log.state_changes, 0);

    /* A failing handler leaves state and version exactly as they were. */
    CHECK_EQ_INT(sync_engine_inject(e, "{\"type\":\"fail\"}", 15), SYNC_EHANDLER);
    char *json = sync_engine_get_state_json(e);
    CHECK_EQ_STR(json, "{\"counter\":0}");
    sync_free(json);
    CHECK_EQ_INT(sync_engine_get_version(e), 1);
    CHECK_EQ_INT(log.state_changes, 0);
    CHECK_EQ_STR(log.last_error_context, "handler:fail");
    CHECK(strstr(log.last_error_message, "boom") != NULL);
    sync_engine_stats stats = {.version = SYNC_ENGINE_STATS_VERSION};
    CHECK_EQ_INT(sync_engine_get_stats(e, &stats), SYNC_OK);
    CHECK_EQ_INT(stats.handler_errors, 1);
    sync_engine_free(e);
}

static void no_broadcast_unless_handler_asks(void)
{
    sync_engine *e = plain_engine("{\"counter\":0}", 1, NULL);
    counter_register(e, 0);
    fake_conn *c = fake_conn_open(e);
    counter_send(e, c->conn, "increment", 1);
    CHECK_EQ_INT(fake_conn_frames(c), 1);
    sync_engine_free(e);
    fake_conn_release(c);

    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = "{\"counter\":0}";
    opts.auto_broadcast = 1;
    REQUIRE(sync_engine_new(&e, &opts) == SYNC_OK);
    counter_register(e, 0);
    c = fake_conn_new();
    sync_engine_handle_open(e, c->conn);
    counter_send(e, c->conn, "increment", 4);
    CHECK_EQ_INT(fake_conn_frames(c), 2);
    CHECK_EQ_INT(fake_conn_frame_counter(c, 1), 4);
    sync_engine_free(e);
    fake_conn_release(c);
}

static void broadcast_failure_on_one_connection_spares_others(void)
{
    hook_log log = {0};
    sync_engine *e = plain_engine("{\"counter\":0}", 1, &log);
    fake_conn *good1 = fake_conn_new();
    fake_conn *bad = fake_conn_new();
    fake_conn *good2 = fake_conn_new();
    sync_engine_handle_open(e, good1->conn);
    sync_engine_handle_open(e, bad->conn);
    sync_engine_handle_open(e, good2->conn);
    bad->fail_send = 1;
    CHECK(sync_engine_broadcast_state(e) < 0);
    CHECK_EQ_INT(log.errors, 1);
    CHECK_EQ_STR(log.last_error_context, "broadcast");
    CHECK_EQ_INT(fake_conn_frames(good1), 2);
    CHECK_EQ_INT(fake_conn_frames(good2), 2);
    sync_engine_free(e);
    fake_conn_release(good1);
    fake_conn_release(bad);
    fake_conn_release(good2);
}

static void set_state_from_outside_commits_and_broadcasts(void)
{
    hook_log log = {0};
    sync_engine *e = plain_engine("{\"counter\":0}", 1, &log);
    fake_conn *c = fake_conn_open(e);
    CHECK_EQ_INT(sync_engine_set_state_json(e, "{\"counter\":5}", 0), SYNC_OK);
    CHECK_EQ_INT(fake_conn_frames(c), 1);
    CHECK_EQ_INT(sync_engine_get_version(e), 1);
    CHECK_EQ_INT(log.state_changes, 1);
    CHECK_EQ_INT(sync_engine_set_state(e, cJSON_Parse("{\"counter\":6}"), 1), SYNC_OK);
    CHECK_EQ_INT(fake_conn_frames(c), 2);
    CHECK_EQ_INT(fake_conn_frame_counter(c, 1), 6);
    CHECK_EQ_INT(sync_engine_get_version(e), 2);
    CHECK_EQ_INT(log.state_changes, 2);
    sync_engine_free(e);
    fake_conn_release(c);
}

static void sync_saves_and_reports_store_errors(void)
{
    hook_log log = {0};
    fake_store store;
    fake_store_init(&store, NULL, 0);
    sync_engine *e = store_engine(&store, "{\"counter\":8}", 1, &log);
    CHECK_EQ_INT(sync_engine_sync(e), SYNC_OK);
    CHECK_EQ_INT(store.saves, 1);
    CHECK_EQ_STR(store.json, "{\"counter\":8}");
    CHECK_EQ_INT(log.syncs, 1);
    store.fail_save = SYNC_EIO;
    CHECK_EQ_INT(sync_engine_sync(e), SYNC_EIO);
    CHECK_EQ_INT(log.syncs, 1);
    CHECK_EQ_STR(log.last_error_context, "sync");
    sync_engine_stats stats = {.version = SYNC_ENGINE_STATS_VERSION};
    sync_engine_get_stats(e, &stats);
    CHECK_EQ_INT(stats.saves, 1);
    CHECK_EQ_INT(stats.save_errors, 1);
    sync_engine_free(e);
    fake_store_cleanup(&store);

    /* Without an adapter sync() does nothing and succeeds. */
    e = plain_engine(NULL, 1, &log);
    CHECK_EQ_INT(sync_engine_sync(e), SYNC_OK);
    sync_engine_free(e);
}

static void sync_interval_saves_on_manual_tick(void)
{
    fake_store store;
    fake_store_init(&store, NULL, 0);
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.adapter = fake_adapter_new(&store);
    opts.sync_interval_ms = 100;
    sync_engine *e = NULL;
    REQUIRE(sync_engine_new(&e, &opts) == SYNC_OK);
    int64_t deadline = sync_engine_next_deadline_ms(e);
    CHECK_EQ_INT(sync_engine_tick(e, deadline - 1), SYNC_OK);
    CHECK_EQ_INT(store.saves, 0);
    CHECK_EQ_INT(sync_engine_tick(e, deadline), SYNC_OK);
    CHECK_EQ_INT(store.saves, 1);
    CHECK_EQ_INT(sync_engine_next_deadline_ms(e), deadline + 100);
    sync_engine_free(e);
    fake_store_cleanup(&store);
}

static void backup_unsupported_failing_or_done(void)
{
    hook_log log = {0};
    fake_store store;
    fake_store_init(&store, NULL, 0);
    store.no_backup = 1;
    sync_engine *e = store_engine(&store, NULL, 1, &log);
    CHECK_EQ_INT(sync_engine_create_backup(e), SYNC_EUNSUPPORTED);
    CHECK_EQ_INT(log.backups, 0);
    sync_engine_free(e);
    fake_store_cleanup(&store);

    fake_store_init(&store, NULL, 0);
    store.fail_backup = SYNC_EIO;
    e = store_engine(&store, NULL, 1, &log);
    CHECK_EQ_INT(sync_engine_create_backup(e), SYNC_EIO);
    CHECK_EQ_STR(log.last_error_context, "backup");
    CHECK_EQ_INT(log.backups, 0);
    sync_engine_free(e);
    fake_store_cleanup(&store);

    e = plain_engine(NULL, 1, &log);
    CHECK_EQ_INT(sync_engine_create_backup(e), SYNC_OK);
    sync_engine_free(e);
}

static void heartbeat_pings_and_closes_silent_connections(void)
{
    hook_log log = {0};
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.heartbeat_interval_ms = 100;
    opts.ping_timeout_ms = 250;
    sync_engine *e = hooked_engine(&opts, &log);
    REQUIRE(e);
    fake_conn *alive = fake_conn_open(e);
    fake_conn *silent = fake_conn_open(e);
    int64_t t = sync_engine_next_deadline_ms(e);
    CHECK_EQ_INT(sync_engine_tick(e, t), SYNC_OK);
    CHECK_EQ_INT(log.pings, 2);
    CHECK_EQ_INT(fake_conn_frames(alive), 2);
    char type[32];
    CHECK_EQ_STR(fake_conn_frame_type(alive, 1, type, sizeof type), "ping");
    sleep_ms(150);
    sync_engine_handle_message(e, alive->conn, "pong", 4);
    /* 300 ms after the open, 150 ms after the pong: only the silent connection times out. */
    int64_t later = sync_now_ms() + 150;
    CHECK_EQ_INT(sync_engine_tick(e, later), SYNC_OK);
    CHECK_EQ_INT(log.timeouts, 1);
    CHECK_EQ_INT(fake_conn_closes(silent), 1);
    CHECK_EQ_INT(fake_conn_closes(alive), 0);
    CHECK_EQ_INT(fake_conn_frames(alive), 3);
    CHECK_EQ_INT(fake_conn_frames(silent), 2);
    sync_engine_free(e);
    fake_conn_release(alive);
    fake_conn_release(silent);
}

static void get_state_returns_any_json_and_version(void)
{
    sync_engine *e = plain_engine("[1,2,3]", 1, NULL);
    cJSON *state = sync_engine_get_state(e);
    CHECK(cJSON_IsArray(state) && cJSON_GetArraySize(state) == 3);
    cJSON_Delete(state);
    sync_engine_set_state_json(e, "\"text\"", 0);
    char *json = sync_engine_get_state_json(e);
    CHECK_EQ_STR(json, "\"text\"");
    sync_free(json);
    CHECK_EQ_INT(sync_engine_get_version(e), 1);
    sync_engine_free(e);
}

static void dispose_closes_connections_and_refuses_later_calls(void)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.heartbeat_interval_ms = 1000;
    opts.sync_interval_ms = 1000;
    sync_engine *e = NULL;
    REQUIRE(sync_engine_new(&e, &opts) == SYNC_OK);
    fake_conn *c = fake_conn_open(e);
    CHECK_EQ_INT(sync_engine_dispose(e), SYNC_OK);
    CHECK_EQ_INT(fake_conn_closes(c), 1);
    CHECK_EQ_INT(sync_engine_connection_count(e), 0);
    CHECK_EQ_INT(sync_engine_next_deadline_ms(e), -1);
    CHECK_EQ_INT(sync_engine_tick(e, -1), SYNC_ECLOSED);
    CHECK_EQ_INT(sync_engine_set_state_json(e, "{}", 1), SYNC_ECLOSED);
    sync_engine_free(e);
    fake_conn_release(c);
}

typedef struct log_capture {
    int errors;
    int debugs;
} log_capture;

static void capture_log(sync_log_level level, const char *message, void *userdata)
{
    (void)message;
    log_capture *cap = userdata;
    if (level == SYNC_LOG_ERROR)
        cap->errors++;
    if (level == SYNC_LOG_DEBUG)
        cap->debugs++;
}

static void errors_go_to_on_error_else_log_and_debug_logs_steps(void)
{
    log_capture cap = {0};
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.log = capture_log;
    opts.log_userdata = &cap;
    sync_engine *e = counter_engine(&opts, NULL, 0);
    REQUIRE(e);
    CHECK_EQ_INT(sync_engine_inject(e, "[]", 2), SYNC_EMESSAGE);
    CHECK_EQ_INT(cap.errors, 1);
    CHECK_EQ_INT(cap.debugs, 0);
    /* With on_error set, errors go there and not to the log. */
    hook_log log = {0};
    sync_hooks hooks = hook_log_hooks(&log);
    sync_engine_set_hooks(e, &hooks);
    CHECK_EQ_INT(sync_engine_inject(e, "[]", 2), SYNC_EMESSAGE);
    CHECK_EQ_INT(cap.errors, 1);
    CHECK_EQ_INT(log.errors, 1);
    sync_engine_free(e);

    opts.debug = 1;
    REQUIRE(sync_engine_new(&e, &opts) == SYNC_OK);
    counter_register(e, 0);
    counter_send(e, NULL, "increment", 1);
    CHECK(cap.debugs >= 3);
    sync_engine_free(e);
}

int main(void)
{
    RUN(counter_app_loads_store_once);
    RUN(counter_app_open_sends_initial_state);
    RUN(counter_app_increment_commits_and_saves);
    RUN(counter_app_decrement_from_a_connection_commits);
    RUN(counter_app_validator_rejects_bad_amount);
    RUN(counter_app_middleware_rewrites_message);
    RUN(counter_app_pong_is_recorded);
    RUN(counter_app_heartbeat_pings);
    RUN(counter_app_broadcast_reaches_every_connection);
    RUN(counter_app_backup_reaches_store);
    RUN(counter_app_sync_interval_saves);
    RUN(counter_app_dispose_closes_each_connection_once);
    RUN(initial_state_given_or_empty_object);
    RUN(version_starts_at_0_or_stays_minus_1_without_versioning);
    RUN(load_takes_stored_state_and_reports_store_errors);
    RUN(timers_armed_only_when_configured);
    RUN(open_sends_initial_state_once_and_closes_on_send_failure);
    RUN(close_is_idempotent);
    RUN(only_exact_pong_text_is_a_pong);
    RUN(bad_json_and_invalid_messages_rejected_without_change);
    RUN(middleware_runs_in_order_and_failure_stops_message);
    RUN(unknown_message_type_reported);
    RUN(handler_commits_only_on_success);
    RUN(no_broadcast_unless_handler_asks);
    RUN(broadcast_failure_on_one_connection_spares_others);
    RUN(set_state_from_outside_commits_and_broadcasts);
    RUN(sync_saves_and_reports_store_errors);
    RUN(sync_interval_saves_on_manual_tick);
    RUN(backup_unsupported_failing_or_done);
    RUN(heartbeat_pings_and_closes_silent_connections);
    RUN(get_state_returns_any_json_and_version);
    RUN(dispose_closes_connections_and_refuses_later_calls);
    RUN(errors_go_to_on_error_else_log_and_debug_logs_steps);
    return check_summary();
}

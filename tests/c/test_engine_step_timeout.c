/* step_timeout_ms: a validator, middleware or handler that returned SYNC_PENDING and never
 * completes is failed with SYNC_ETIMEDOUT (its changes rolled back, the messages behind it run),
 * by sync_engine_tick, by the engine's own thread, and by the server over a real socket; the late
 * completion is refused and frees the message, even after the engine was freed; completions
 * racing the deadline either apply or are refused, never both; options of version 1. */
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "engine_counter.h"
#include "fake_conn.h"
#include "server_fixture.h"
#include "ws_client.h"

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The step that parks its message for the test to complete (or not); under a lock because the
 * server and the timer thread call it on their own threads. */
static pthread_mutex_t parked_lock = PTHREAD_MUTEX_INITIALIZER;
static sync_msg *parked;

static sync_msg *take_parked(int wait_ms)
{
    for (int waited = 0;; waited += 5) {
        pthread_mutex_lock(&parked_lock);
        sync_msg *msg = parked;
        parked = NULL;
        pthread_mutex_unlock(&parked_lock);
        if (msg || waited >= wait_ms)
            return msg;
        sleep_ms(5);
    }
}

/* Writes counter 99 into its working copy, then waits: the write must never show. */
static int park_after_writing(sync_msg *msg, void *userdata)
{
    (void)userdata;
    cJSON *state = sync_msg_state_mut(msg);
    cJSON_SetNumberValue(cJSON_GetObjectItem(state, "counter"), 99);
    pthread_mutex_lock(&parked_lock);
    parked = msg;
    pthread_mutex_unlock(&parked_lock);
    return SYNC_PENDING;
}

/* A validator that parks messages of type "slow" and lets the rest through. */
static int park_slow_ones(sync_msg *msg, void *userdata)
{
    (void)userdata;
    if (strcmp(sync_msg_type(msg), "slow") != 0)
        return SYNC_OK;
    pthread_mutex_lock(&parked_lock);
    parked = msg;
    pthread_mutex_unlock(&parked_lock);
    return SYNC_PENDING;
}

static sync_engine *new_engine(int64_t step_timeout_ms, sync_timer_mode timers, hook_log *log)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = "{\"counter\":0}";
    opts.step_timeout_ms = step_timeout_ms;
    opts.timer_mode = timers;
    opts.reply_errors = 1;
    sync_engine *e = hooked_engine(&opts, log);
    if (!e)
        return NULL;
    counter_register(e, 0);
    sync_engine_on(e, "slow", park_after_writing, NULL, NULL);
    return e;
}

/* Sends a "slow" message without a connection; its parked step (NULL when it did not park). */
static sync_msg *inject_slow(sync_engine *e)
{
    if (sync_engine_inject(e, "{\"type\":\"slow\"}", 15) != SYNC_PENDING)
        return NULL;
    return take_parked(1000);
}

static void ticked_timeout_drops_the_step_and_runs_the_next(void)
{
    hook_log log = {0};
    sync_engine *e = new_engine(100, SYNC_TIMERS_MANUAL, &log);
    REQUIRE(e);
    fake_conn *fake = fake_conn_new();
    REQUIRE(sync_engine_handle_open(e, fake->conn) == SYNC_OK);
    CHECK_EQ_INT(sync_engine_next_deadline_ms(e), -1);

    int64_t before = sync_now_ms();
    CHECK_EQ_INT(sync_engine_handle_message(e, fake->conn, "{\"type\":\"slow\"}", 15),
                 SYNC_PENDING);
    int64_t deadline = sync_engine_next_deadline_ms(e);
    CHECK(deadline >= before + 100 && deadline <= sync_now_ms() + 100);
    sync_msg *msg = take_parked(0);
    REQUIRE(msg);
    CHECK_EQ_INT(counter_send(e, fake->conn, "increment", 5), SYNC_PENDING); /* queued behind */

    CHECK_EQ_INT(sync_engine_tick(e, deadline - 1), SYNC_OK);
    CHECK_EQ_INT(log.errors, 0);
    CHECK(counter_value(e) == 0);

    CHECK_EQ_INT(sync_engine_tick(e, deadline), SYNC_OK);
    CHECK_EQ_INT(log.errors, 1);
    CHECK_EQ_INT(log.last_error_status, SYNC_ETIMEDOUT);
    CHECK_EQ_STR(log.last_error_context, "handler:slow");
    CHECK(strstr(log.last_error_message, "the handler for \"slow\" did not finish within "
                                         "step_timeout_ms (100 ms)"));
    CHECK(counter_value(e) == 5); /* the 99 was rolled back, the queued increment applied */
    CHECK_EQ_INT(sync_engine_get_version(e), 1);
    CHECK_EQ_INT(sync_engine_next_deadline_ms(e), -1);
    char type[32];
    int error_frames = 0;
    for (size_t i = 0; i < fake_conn_frames(fake); i++)
        error_frames += strcmp(fake_conn_frame_type(fake, i, type, sizeof type), "error") == 0;
    CHECK_EQ_INT(error_frames, 1); /* reply_errors told the sender */

    /* the late step: it may still read, but changes nothing and answers nobody */
    CHECK_EQ_STR(sync_msg_type(msg), "slow");
    CHECK(sync_msg_state_mut(msg) == NULL);
    CHECK_EQ_INT(sync_msg_set_state_json(msg, "{\"counter\":7}"), SYNC_ETIMEDOUT);
    CHECK_EQ_INT(sync_msg_reply(msg, "late", 4), SYNC_ETIMEDOUT);
    CHECK(sync_msg_conn(msg) == NULL);
    CHECK_EQ_INT(sync_msg_complete(msg, SYNC_OK), SYNC_ETIMEDOUT);
    CHECK(strstr(sync_error_last(), "timed out"));
    CHECK(counter_value(e) == 5);
    CHECK_EQ_INT(sync_engine_get_version(e), 1);

    sync_engine_stats stats = {.version = SYNC_ENGINE_STATS_VERSION};
    REQUIRE(sync_engine_get_stats(e, &stats) == SYNC_OK);
    CHECK_EQ_INT((int)stats.steps_timed_out, 1);
    CHECK_EQ_INT((int)stats.messages_dropped, 1);
    CHECK_EQ_INT((int)stats.messages_applied, 1);
    /* a caller built against stats version 1: the bytes after its struct are not its own */
    sync_engine_stats old;
    memset(&old, 0xA5, sizeof old);
    old.version = 1;
    REQUIRE(sync_engine_get_stats(e, &old) == SYNC_OK);
    CHECK_EQ_INT((int)old.messages_dropped, 1);
    CHECK(((const unsigned char *)&old)[offsetof(sync_engine_stats, steps_timed_out)] == 0xA5);
    old.version = SYNC_ENGINE_STATS_VERSION + 1;
    CHECK_EQ_INT(sync_engine_get_stats(e, &old), SYNC_EINVAL);

    sync_engine_free(e);
    fake_conn_release(fake);
}

static void completion_in_time_disarms_the_deadline(void)
{
    hook_log log = {0};
    sync_engine *e = new_engine(100, SYNC_TIMERS_MANUAL, &log);
    REQUIRE(e);
    sync_msg *msg = inject_slow(e);
    REQUIRE(msg);
    CHECK(sync_engine_next_deadline_ms(e) > 0);
    CHECK_EQ_INT(sync_msg_complete(msg, SYNC_OK), SYNC_OK);
    CHECK_EQ_INT(sync_engine_next_deadline_ms(e), -1);
    CHECK_EQ_INT(sync_engine_tick(e, sync_now_ms() + 10000), SYNC_OK);
    CHECK_EQ_INT(log.errors, 0);
    CHECK(counter_value(e) == 99);
    sync_engine_free(e);
}

static void validator_times_out_as_rejected_in_time(void)
{
    hook_log log = {0};
    sync_engine *e = new_engine(50, SYNC_TIMERS_MANUAL, &log);
    REQUIRE(e);
    sync_engine_set_validator(e, park_slow_ones, NULL, NULL);
    sync_msg *msg = inject_slow(e);
    REQUIRE(msg);
    CHECK_EQ_INT(counter_send(e, NULL, "increment", 2), SYNC_PENDING);
    CHECK_EQ_INT(sync_engine_tick(e, sync_engine_next_deadline_ms(e)), SYNC_OK);
    CHECK_EQ_INT(log.last_error_status, SYNC_ETIMEDOUT);
    CHECK_EQ_STR(log.last_error_context, "validator");
    CHECK(strstr(log.last_error_message, "the validator did not finish"));
    CHECK(counter_value(e) == 2);
    CHECK_EQ_INT(sync_msg_complete(msg, SYNC_OK), SYNC_ETIMEDOUT);
    sync_engine_free(e);
}

/* The timed-out message keeps the engine's memory until its completion: no use after free. */
static void late_completion_after_the_engine_was_freed(void)
{
    hook_log log = {0};
    sync_engine *e = new_engine(10, SYNC_TIMERS_MANUAL, &log);
    REQUIRE(e);
    sync_msg *msg = inject_slow(e);
    REQUIRE(msg);
    CHECK_EQ_INT(sync_engine_tick(e, sync_now_ms() + 10), SYNC_OK);
    CHECK_EQ_INT(log.errors, 1);
    sync_engine_free(e);
    CHECK_EQ_INT(sync_msg_set_error(msg, "too late"), SYNC_OK); /* harmless, freed below */
    CHECK_EQ_INT(sync_msg_complete(msg, SYNC_EHANDLER), SYNC_ETIMEDOUT);
}

static void engine_thread_times_out_by_itself(void)
{
    hook_log log = {0};
    sync_engine *e = new_engine(50, SYNC_TIMERS_THREAD, &log);
    REQUIRE(e);
    sync_msg *msg = inject_slow(e);
    REQUIRE(msg);
    for (int i = 0; i < 300 && atomic_load(&log.errors) == 0; i++)
        sleep_ms(10);
    CHECK_EQ_INT(log.errors, 1);
    CHECK_EQ_INT(log.last_error_status, SYNC_ETIMEDOUT);
    CHECK_EQ_INT(counter_send(e, NULL, "increment", 1), SYNC_OK); /* the queue moves again */
    CHECK(counter_value(e) == 1);
    CHECK_EQ_INT(sync_msg_complete(msg, SYNC_OK), SYNC_ETIMEDOUT);
    sync_engine_free(e);
}

/* A step armed while the ticker already waits on an earlier deadline wakes nobody: the tick at the
 * earlier deadline finds the later one. It must still time out, on the engine's thread and on the
 * server's (through its listener). */
static void later_deadline_found_by_the_earlier_tick(void)
{
    for (int on_server = 0; on_server < 2; on_server++) {
        hook_log log = {0};
        sync_engine *e = new_engine(120, on_server ? SYNC_TIMERS_MANUAL : SYNC_TIMERS_THREAD, &log);
        REQUIRE(e);
        sync_server *server = on_server ? fixture_server(NULL, "/", e) : NULL;
        REQUIRE(!on_server || server);
        sync_msg *first = inject_slow(e);
        REQUIRE(first);
        sleep_ms(60); /* the ticker waits on the first deadline */
        CHECK_EQ_INT(sync_msg_complete(first, SYNC_OK), SYNC_OK);
        int64_t started = sync_now_ms();
        sync_msg *second = inject_slow(e); /* its deadline comes after the one waited on */
        REQUIRE(second);
        for (int i = 0; i < 300 && atomic_load(&log.errors) == 0; i++)
            sleep_ms(10);
        CHECK_EQ_INT(log.errors, 1);
        CHECK_EQ_INT(log.last_error_status, SYNC_ETIMEDOUT);
        CHECK(sync_now_ms() - started >= 120);
        CHECK_EQ_INT(sync_msg_complete(second, SYNC_OK), SYNC_ETIMEDOUT);
        CHECK(counter_value(e) == 99); /* the first one's change, applied in time */
        sync_server_free(server);
        sync_engine_free(e);
    }
}

typedef struct racer {
    sync_msg *msg;
    int delay_ms;
    int rc;
} racer;

static void *complete_after_delay(void *arg)
{
    racer *r = arg;
    sleep_ms(r->delay_ms);
    r->rc = sync_msg_complete(r->msg, SYNC_OK);
    return NULL;
}

/* Completions that land right around the deadline, on another thread than the engine's timer
 * thread: each is either applied (OK) or refused (ETIMEDOUT and reported once), never both. */
static void completions_racing_the_deadline(void)
{
    enum { ROUNDS = 24 };
    hook_log log = {0};
    sync_engine *e = new_engine(20, SYNC_TIMERS_THREAD, &log);
    REQUIRE(e);
    int applied = 0, refused = 0;
    for (int i = 0; i < ROUNDS; i++) {
        /* the handler sets counter 99 on its working copy; reset the state between rounds */
        CHECK_EQ_INT(sync_engine_set_state_json(e, "{\"counter\":0}", 0), SYNC_OK);
        racer r = {inject_slow(e), 16 + i % 8, 0};
        REQUIRE(r.msg);
        pthread_t thread;
        REQUIRE(pthread_create(&thread, NULL, complete_after_delay, &r) == 0);
        pthread_join(thread, NULL);
        if (r.rc == SYNC_OK) {
            applied++;
            CHECK(counter_value(e) == 99);
        } else {
            CHECK_EQ_INT(r.rc, SYNC_ETIMEDOUT);
            refused++;
            CHECK(counter_value(e) == 0);
        }
    }
    CHECK_EQ_INT(applied + refused, ROUNDS);
    CHECK_EQ_INT(log.errors, refused);
    sync_engine_free(e);
}

static void options_of_version_1_and_bad_values(void)
{
    /* a caller built against version 1: the bytes after its struct are not its own */
    sync_engine_options opts;
    memset(&opts, 0xA5, sizeof opts);
    CHECK_EQ_INT(sync_engine_options_init(&opts, 1), SYNC_OK);
    const unsigned char *tail =
        (const unsigned char *)&opts + offsetof(sync_engine_options, step_timeout_ms);
    CHECK(tail[0] == 0xA5 && tail[sizeof opts.step_timeout_ms - 1] == 0xA5);
    opts.initial_state_json = "{\"counter\":0}";
    sync_engine *e = NULL;
    REQUIRE(sync_engine_new(&e, &opts) == SYNC_OK);
    sync_engine_on(e, "slow", park_after_writing, NULL, NULL);
    sync_msg *msg = inject_slow(e);
    REQUIRE(msg);
    CHECK_EQ_INT(sync_engine_next_deadline_ms(e), -1); /* no timeout read from the tail */
    CHECK_EQ_INT(sync_msg_complete(msg, SYNC_OK), SYNC_OK);
    sync_engine_free(e);

    sync_engine_options bad = SYNC_ENGINE_OPTIONS_INIT;
    bad.step_timeout_ms = -1;
    e = NULL;
    CHECK_EQ_INT(sync_engine_new(&e, &bad), SYNC_EINVAL);
    CHECK(e == NULL);
    CHECK(strstr(sync_error_last(), "step_timeout_ms must not be negative"));
}

/* Mounted on the server, the service thread times the step out: the sender gets an error frame,
 * then everyone the increment that was waiting behind it. */
static void server_times_out_a_stuck_handler(void)
{
    hook_log log = {0};
    sync_engine *e = new_engine(150, SYNC_TIMERS_MANUAL, &log);
    REQUIRE(e);
    sync_server *server = fixture_server(NULL, "/", e);
    REQUIRE(server);
    ws_client *c = fixture_join(sync_server_port(server), "/");
    REQUIRE(c);
    CHECK_EQ_INT(ws_send_text(c, "{\"type\":\"slow\"}"), 0);
    CHECK_EQ_INT(ws_send_text(c, "{\"type\":\"increment\",\"amount\":3}"), 0);
    char *text = ws_read_text(c, 3000);
    CHECK(text && strstr(text, "\"type\":\"error\"") && strstr(text, "handler:slow"));
    free(text);
    text = ws_read_text(c, 3000);
    CHECK(text && strstr(text, "state_update") && strstr(text, "\"counter\":3"));
    free(text);
    sync_msg *msg = take_parked(1000);
    REQUIRE(msg);
    CHECK_EQ_INT(sync_msg_complete(msg, SYNC_OK), SYNC_ETIMEDOUT);
    CHECK_EQ_INT(
        fixture_metric(sync_server_port(server), "libsync_steps_timed_out_total{path=\"/\"}"), 1);
    ws_client_free(c);
    sync_server_free(server);
    sync_engine_free(e);
}

int main(void)
{
    RUN(ticked_timeout_drops_the_step_and_runs_the_next);
    RUN(completion_in_time_disarms_the_deadline);
    RUN(validator_times_out_as_rejected_in_time);
    RUN(late_completion_after_the_engine_was_freed);
    RUN(engine_thread_times_out_by_itself);
    RUN(later_deadline_found_by_the_earlier_tick);
    RUN(completions_racing_the_deadline);
    RUN(options_of_version_1_and_bad_values);
    RUN(server_times_out_a_stuck_handler);
    return check_summary();
}

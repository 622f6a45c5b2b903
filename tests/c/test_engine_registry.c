/* Registering the pipeline: handlers added, replaced and removed, the validator set, replaced and
 * cleared, middleware in order, hooks replaced; every userdata released exactly once (on replace,
 * removal, refusal and engine free), and released with the engine unlocked, so that a release
 * that waits for another thread using the engine cannot deadlock. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "engine_counter.h"

/* A userdata that counts its releases and the runs of the step it belongs to. */
typedef struct tracked {
    int released;
    int runs;
} tracked;

static void release_tracked(void *userdata)
{
    ((tracked *)userdata)->released++;
}

static int count_run(sync_msg *msg, void *userdata)
{
    (void)msg;
    ((tracked *)userdata)->runs++;
    return SYNC_OK;
}

static int refuse_run(sync_msg *msg, void *userdata)
{
    ((tracked *)userdata)->runs++;
    sync_msg_set_error(msg, "refused by the validator");
    return SYNC_EREJECTED;
}

static sync_engine *new_engine(void)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = "{\"counter\":0}";
    sync_engine *e = NULL;
    return sync_engine_new(&e, &opts) == SYNC_OK ? e : NULL;
}

static int inject(sync_engine *e, const char *text)
{
    return sync_engine_inject(e, text, strlen(text));
}

static void test_handlers_added_replaced_removed(void)
{
    sync_engine *e = new_engine();
    REQUIRE(e);
    tracked first = {0}, second = {0}, kept = {0};
    CHECK_EQ_INT(sync_engine_on(e, "ping_me", count_run, &first, release_tracked), SYNC_OK);
    CHECK_EQ_INT(sync_engine_on(e, "other", count_run, &kept, release_tracked), SYNC_OK);
    CHECK_EQ_INT(inject(e, "{\"type\":\"ping_me\"}"), SYNC_OK);
    CHECK_EQ_INT(first.runs, 1);

    /* the same type again: the new handler replaces the old, whose userdata goes at once */
    CHECK_EQ_INT(sync_engine_on(e, "ping_me", count_run, &second, release_tracked), SYNC_OK);
    CHECK_EQ_INT(first.released, 1);
    CHECK_EQ_INT(inject(e, "{\"type\":\"ping_me\"}"), SYNC_OK);
    CHECK_EQ_INT(first.runs, 1);
    CHECK_EQ_INT(second.runs, 1);

    /* removed: its userdata goes, and the type has no handler any more */
    CHECK_EQ_INT(sync_engine_off(e, "ping_me"), SYNC_OK);
    CHECK_EQ_INT(second.released, 1);
    CHECK_EQ_INT(inject(e, "{\"type\":\"ping_me\"}"), SYNC_ENOHANDLER);
    CHECK_EQ_INT(sync_engine_off(e, "ping_me"), SYNC_ENOHANDLER);
    CHECK(strstr(sync_error_last(), "ping_me"));
    CHECK_EQ_INT(inject(e, "{\"type\":\"other\"}"), SYNC_OK);
    CHECK_EQ_INT(kept.runs, 1);

    /* refused registrations release what they were given */
    tracked refused = {0};
    CHECK_EQ_INT(sync_engine_on(e, NULL, count_run, &refused, release_tracked), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_on(e, "x", NULL, &refused, release_tracked), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_on(NULL, "x", count_run, &refused, release_tracked), SYNC_EINVAL);
    CHECK_EQ_INT(refused.released, 3);
    CHECK_EQ_INT(sync_engine_off(e, NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_off(NULL, "other"), SYNC_EINVAL);

    CHECK_EQ_INT(sync_engine_dispose(e), SYNC_OK);
    tracked late = {0};
    CHECK_EQ_INT(sync_engine_on(e, "late", count_run, &late, release_tracked), SYNC_ECLOSED);
    CHECK_EQ_INT(late.released, 1);
    CHECK_EQ_INT(sync_engine_off(e, "other"), SYNC_ECLOSED);
    CHECK_EQ_INT(kept.released, 0);
    sync_engine_free(e);
    CHECK_EQ_INT(kept.released, 1);
    CHECK_EQ_INT(first.released + second.released, 2);
}

static void test_validator_set_replaced_cleared(void)
{
    sync_engine *e = new_engine();
    REQUIRE(e);
    counter_register(e, 0);
    tracked strict = {0}, lenient = {0}, unused = {0};
    CHECK_EQ_INT(sync_engine_set_validator(e, refuse_run, &strict, release_tracked), SYNC_OK);
    CHECK_EQ_INT(counter_send(e, NULL, "increment", 1), SYNC_EREJECTED);
    CHECK_EQ_INT(strict.runs, 1);
    CHECK(counter_value(e) == 0);

    CHECK_EQ_INT(sync_engine_set_validator(e, count_run, &lenient, release_tracked), SYNC_OK);
    CHECK_EQ_INT(strict.released, 1);
    CHECK_EQ_INT(counter_send(e, NULL, "increment", 1), SYNC_OK);
    CHECK_EQ_INT(lenient.runs, 1);
    CHECK(counter_value(e) == 1);

    /* cleared: the old one goes, and a userdata passed with no validator is released at once */
    CHECK_EQ_INT(sync_engine_set_validator(e, NULL, &unused, release_tracked), SYNC_OK);
    CHECK_EQ_INT(lenient.released, 1);
    CHECK_EQ_INT(unused.released, 1);
    CHECK_EQ_INT(counter_send(e, NULL, "increment", 1), SYNC_OK);
    CHECK(counter_value(e) == 2);
    sync_engine_free(e);
    CHECK_EQ_INT(strict.released + lenient.released + unused.released, 3);
}

typedef struct order_log {
    char seen[8];
    int n;
} order_log;

typedef struct order_step {
    order_log *log;
    char mark;
    int released;
} order_step;

static int mark_order(sync_msg *msg, void *userdata)
{
    (void)msg;
    order_step *step = userdata;
    if (step->log->n < (int)sizeof step->log->seen - 1)
        step->log->seen[step->log->n++] = step->mark;
    return SYNC_OK;
}

static void release_order_step(void *userdata)
{
    ((order_step *)userdata)->released++;
}

static void test_middleware_in_order(void)
{
    sync_engine *e = new_engine();
    REQUIRE(e);
    order_log log = {{0}, 0};
    order_step validator = {&log, 'v', 0}, a = {&log, 'a', 0}, b = {&log, 'b', 0},
               handler = {&log, 'h', 0};
    CHECK_EQ_INT(sync_engine_use(e, mark_order, &a, release_order_step), SYNC_OK);
    CHECK_EQ_INT(sync_engine_use(e, mark_order, &b, release_order_step), SYNC_OK);
    CHECK_EQ_INT(sync_engine_set_validator(e, mark_order, &validator, release_order_step), SYNC_OK);
    CHECK_EQ_INT(sync_engine_on(e, "go", mark_order, &handler, release_order_step), SYNC_OK);
    CHECK_EQ_INT(inject(e, "{\"type\":\"go\"}"), SYNC_OK);
    CHECK_EQ_STR(log.seen, "vabh");

    tracked refused = {0};
    CHECK_EQ_INT(sync_engine_use(e, NULL, &refused, release_tracked), SYNC_EINVAL);
    CHECK_EQ_INT(refused.released, 1);
    sync_engine_free(e);
    CHECK_EQ_INT(validator.released + a.released + b.released + handler.released, 4);
}

static void count_connect(sync_engine *engine, sync_conn *conn, void *userdata)
{
    (void)engine;
    (void)conn;
    ((tracked *)userdata)->runs++;
}

static void test_hooks_replaced(void)
{
    sync_engine *e = new_engine();
    REQUIRE(e);
    tracked first = {0}, second = {0}, wrong = {0};
    sync_hooks hooks = SYNC_HOOKS_INIT;
    hooks.on_connect = count_connect;
    hooks.userdata = &first;
    hooks.free_userdata = release_tracked;
    CHECK_EQ_INT(sync_engine_set_hooks(e, &hooks), SYNC_OK);
    hooks.userdata = &second;
    CHECK_EQ_INT(sync_engine_set_hooks(e, &hooks), SYNC_OK);
    CHECK_EQ_INT(first.released, 1);

    hooks.userdata = &wrong;
    hooks.version = SYNC_HOOKS_VERSION + 1;
    CHECK_EQ_INT(sync_engine_set_hooks(e, &hooks), SYNC_EINVAL);
    CHECK(strstr(sync_error_last(), "unknown hooks version"));
    CHECK_EQ_INT(wrong.released, 1);
    CHECK_EQ_INT(second.released, 0); /* a refused call leaves the hooks as they were */

    CHECK_EQ_INT(sync_engine_set_hooks(e, NULL), SYNC_OK);
    CHECK_EQ_INT(second.released, 1);
    sync_engine_free(e);
    CHECK_EQ_INT(first.released + second.released, 2);
}

/* A release that hands the engine to another thread and waits for it, as a binding's release
 * may (a garbage collector, a worker pool). Run with the engine locked it would deadlock; the
 * wait is bounded so that such a bug fails the test instead of hanging it. */
typedef struct waiting_release {
    sync_engine *engine;
    int released;
    int other_thread_read_state;
    int timed_out;
} waiting_release;

static void *read_state(void *arg)
{
    waiting_release *w = arg;
    char *json = sync_engine_get_state_json(w->engine);
    w->other_thread_read_state = json != NULL;
    sync_free(json);
    return NULL;
}

static void release_and_wait_for_another_thread(void *userdata)
{
    waiting_release *w = userdata;
    w->released++;
    pthread_t thread;
    if (pthread_create(&thread, NULL, read_state, w) != 0)
        return;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 3;
    if (pthread_timedjoin_np(thread, NULL, &deadline) == ETIMEDOUT) {
        w->timed_out = 1;
        pthread_detach(thread); /* it finishes once the caller unlocks */
    }
}

static void test_release_runs_with_the_engine_unlocked(void)
{
    sync_engine *e = new_engine();
    REQUIRE(e);
    waiting_release handler = {e, 0, 0, 0}, validator = {e, 0, 0, 0}, hooks_ud = {e, 0, 0, 0};
    tracked next = {0};

    CHECK_EQ_INT(sync_engine_on(e, "t", count_run, &handler, release_and_wait_for_another_thread),
                 SYNC_OK);
    CHECK_EQ_INT(sync_engine_on(e, "t", count_run, &next, release_tracked), SYNC_OK); /* replace */
    CHECK_EQ_INT(sync_engine_on(e, "u", count_run, &handler, release_and_wait_for_another_thread),
                 SYNC_OK);
    CHECK_EQ_INT(sync_engine_off(e, "u"), SYNC_OK); /* remove */
    CHECK_EQ_INT(handler.released, 2);
    CHECK_EQ_INT(handler.timed_out, 0);
    CHECK_EQ_INT(handler.other_thread_read_state, 1);

    CHECK_EQ_INT(
        sync_engine_set_validator(e, count_run, &validator, release_and_wait_for_another_thread),
        SYNC_OK);
    CHECK_EQ_INT(sync_engine_set_validator(e, NULL, NULL, NULL), SYNC_OK);
    CHECK_EQ_INT(validator.released, 1);
    CHECK_EQ_INT(validator.timed_out, 0);

    sync_hooks hooks = SYNC_HOOKS_INIT;
    hooks.userdata = &hooks_ud;
    hooks.free_userdata = release_and_wait_for_another_thread;
    CHECK_EQ_INT(sync_engine_set_hooks(e, &hooks), SYNC_OK);
    CHECK_EQ_INT(sync_engine_set_hooks(e, NULL), SYNC_OK);
    CHECK_EQ_INT(hooks_ud.released, 1);
    CHECK_EQ_INT(hooks_ud.timed_out, 0);
    sync_engine_free(e);
    CHECK_EQ_INT(next.released, 1);
}

int main(void)
{
    RUN(test_handlers_added_replaced_removed);
    RUN(test_validator_set_replaced_cleared);
    RUN(test_middleware_in_order);
    RUN(test_hooks_replaced);
    RUN(test_release_runs_with_the_engine_unlocked);
    return check_summary();
}

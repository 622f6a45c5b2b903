/* sync_msg_complete_next: a binding runs a queue of messages in one loop of its own. Completing
 * one message hands back the next step of the same callback, pending and not called; each
 * message's change is committed (or rolled back) before the next step is handed out; the hand-off
 * stops at a step of another callback, at an empty queue and at a pending adapter call; the step
 * timeout applies to a handed-out step; misuse is refused. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine_counter.h"
#include "fake_conn.h"

/* The "binding's trampoline": it never runs a step itself, it parks it. Its userdata names the
 * step, so the test sees which one was handed back. */
static sync_msg *parked;
static void *parked_userdata;
static int trampoline_calls;

static int trampoline(sync_msg *msg, void *userdata)
{
    trampoline_calls++;
    parked = msg;
    parked_userdata = userdata;
    return SYNC_PENDING;
}

/* A step of another callback that runs at once (the hand-off must call it, not hand it out). */
static int other_calls;
static int other_step(sync_msg *msg, void *userdata)
{
    (void)msg;
    (void)userdata;
    other_calls++;
    return SYNC_OK;
}

static char VALIDATOR[] = "validator", ADD[] = "add", FAIL[] = "fail";

/* What the binding's loop does for the step `userdata` names: "add" appends the message's n to
 * state.log, "fail" writes to the state and then fails (its write must be rolled back). */
static int run_step(sync_msg *msg, void *userdata)
{
    if (userdata == VALIDATOR)
        return SYNC_OK;
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(sync_msg_message(msg), "n");
    cJSON *state = sync_msg_state_mut(msg);
    cJSON *log = cJSON_GetObjectItemCaseSensitive(state, "log");
    cJSON_AddItemToArray(log, cJSON_CreateNumber(n ? n->valuedouble : -1));
    if (userdata == FAIL) {
        sync_msg_set_error(msg, "this one fails");
        return SYNC_EHANDLER;
    }
    return SYNC_OK;
}

static sync_engine *new_engine(hook_log *log, int64_t step_timeout_ms)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = "{\"log\":[]}";
    opts.step_timeout_ms = step_timeout_ms;
    opts.timer_mode = SYNC_TIMERS_MANUAL;
    sync_engine *e = hooked_engine(&opts, log);
    if (!e)
        abort();
    if (sync_engine_set_validator(e, trampoline, VALIDATOR, NULL) != SYNC_OK ||
        sync_engine_on(e, "add", trampoline, ADD, NULL) != SYNC_OK ||
        sync_engine_on(e, "fail", trampoline, FAIL, NULL) != SYNC_OK)
        abort();
    return e;
}

static char *state_of(sync_engine *e)
{
    static char buf[400];
    char *json = sync_engine_get_state_json(e);
    snprintf(buf, sizeof buf, "%s", json ? json : "(null)");
    sync_free(json);
    return buf;
}

static int send_msg(sync_engine *e, sync_conn *conn, const char *type, int n)
{
    char text[100];
    snprintf(text, sizeof text, "{\"type\":\"%s\",\"n\":%d}", type, n);
    return conn ? sync_engine_handle_message(e, conn, text, strlen(text))
                : sync_engine_inject(e, text, strlen(text));
}

/* The queue of 8 messages (every third one failing) runs in one loop: the trampoline is called
 * once, for the first step; every other step comes back through complete_next, in order. */
static void one_loop_runs_the_whole_queue_in_order(void)
{
    hook_log log = {0};
    sync_engine *e = new_engine(&log, 0);
    fake_conn *fake = fake_conn_new();
    REQUIRE(sync_engine_handle_open(e, fake->conn) == SYNC_OK);
    trampoline_calls = 0;
    parked = NULL;
    for (int i = 0; i < 8; i++)
        CHECK_EQ_INT(send_msg(e, fake->conn, i % 3 == 2 ? "fail" : "add", i), SYNC_PENDING);
    CHECK_EQ_INT(trampoline_calls, 1); /* the first message's validator; the rest are queued */
    REQUIRE(parked && parked_userdata == VALIDATOR);

    sync_msg *msg = parked;
    void *which = parked_userdata;
    int steps = 0;
    while (msg) {
        steps++;
        int status = run_step(msg, which);
        sync_msg *next = (sync_msg *)1;
        void *next_which = (void *)1;
        CHECK_EQ_INT(sync_msg_complete_next(msg, status, &next, &next_which), SYNC_OK);
        if (next)
            CHECK(next_which == VALIDATOR || next_which == ADD || next_which == FAIL);
        else
            CHECK(next_which == NULL);
        msg = next;
        which = next_which;
    }
    CHECK_EQ_INT(steps, 16);           /* validator + handler for each of the 8 */
    CHECK_EQ_INT(trampoline_calls, 1); /* never called again: one entry for the whole queue */
    /* 2 and 5 failed: their appends were rolled back; versions count the 6 others */
    CHECK_EQ_STR(state_of(e), "{\"log\":[0,1,3,4,6,7]}");
    CHECK_EQ_INT(sync_engine_get_version(e), 6);
    CHECK_EQ_INT(log.errors, 2);
    CHECK_EQ_STR(log.last_error_context, "handler:fail");

    /* Idle again: the next message calls the trampoline as usual. */
    CHECK_EQ_INT(send_msg(e, fake->conn, "add", 8), SYNC_PENDING);
    CHECK_EQ_INT(trampoline_calls, 2);
    sync_msg *next = NULL;
    void *ud = NULL;
    CHECK_EQ_INT(sync_msg_complete_next(parked, SYNC_OK, &next, &ud), SYNC_OK);
    REQUIRE(next == parked); /* the same message, now at its handler */
    CHECK(ud == ADD);
    CHECK_EQ_INT(sync_msg_complete_next(next, run_step(next, ud), &next, &ud), SYNC_OK);
    CHECK(next == NULL && ud == NULL);
    CHECK_EQ_STR(state_of(e), "{\"log\":[0,1,3,4,6,7,8]}");
    CHECK_EQ_INT(sync_engine_get_version(e), 7);
    sync_engine_free(e);
    fake_conn_release(fake);
}

/* A step of another callback in the way is called as usual, and the hand-off goes on behind it;
 * a queued set_state between messages runs in its place in the order. */
static void other_callbacks_run_and_the_order_holds(void)
{
    hook_log log = {0};
    sync_engine *e = new_engine(&log, 0);
    REQUIRE(sync_engine_use(e, other_step, NULL, NULL) == SYNC_OK); /* a C middleware */
    other_calls = 0;
    trampoline_calls = 0;
    CHECK_EQ_INT(send_msg(e, NULL, "add", 1), SYNC_PENDING);
    CHECK_EQ_INT(sync_engine_set_state_json(e, "{\"log\":[100]}", 0), SYNC_PENDING);
    CHECK_EQ_INT(send_msg(e, NULL, "add", 2), SYNC_PENDING);
    sync_msg *msg = parked;
    void *which = parked_userdata;
    while (msg)
        CHECK_EQ_INT(sync_msg_complete_next(msg, run_step(msg, which), &msg, &which), SYNC_OK);
    CHECK_EQ_INT(trampoline_calls, 1);
    CHECK_EQ_INT(other_calls, 2);
    CHECK_EQ_STR(state_of(e), "{\"log\":[100,2]}");
    CHECK_EQ_INT(sync_engine_get_version(e), 3);
    sync_engine_free(e);
}

/* The hand-off follows the callback the completed step was called with, also when its handler
 * was replaced by another callback meanwhile; the replaced message type's next handler is the
 * new callback, called as usual. */
static void the_callback_that_ran_decides_what_is_handed_out(void)
{
    hook_log log = {0};
    sync_engine *e = new_engine(&log, 0);
    trampoline_calls = 0;
    other_calls = 0;
    CHECK_EQ_INT(send_msg(e, NULL, "add", 1), SYNC_PENDING);
    CHECK_EQ_INT(send_msg(e, NULL, "add", 2), SYNC_PENDING);
    sync_msg *next = NULL;
    void *ud = NULL;
    CHECK_EQ_INT(sync_msg_complete_next(parked, SYNC_OK, &next, &ud), SYNC_OK);
    REQUIRE(next && ud == ADD); /* message 1 at its handler */
    REQUIRE(sync_engine_on(e, "add", other_step, NULL, NULL) == SYNC_OK);
    CHECK_EQ_INT(sync_msg_complete_next(next, run_step(next, ud), &next, &ud), SYNC_OK);
    REQUIRE(next && ud == VALIDATOR); /* message 2's validator: the trampoline's */
    CHECK_EQ_INT(trampoline_calls, 1);
    CHECK_EQ_INT(sync_msg_complete_next(next, SYNC_OK, &next, &ud), SYNC_OK);
    CHECK(next == NULL && ud == NULL); /* its handler is other_step now: called, not handed out */
    CHECK_EQ_INT(other_calls, 1);
    CHECK_EQ_STR(state_of(e), "{\"log\":[1]}");
    CHECK_EQ_INT(sync_engine_get_version(e), 1); /* other_step changed nothing */
    sync_engine_free(e);
}

/* complete_next(NULL out pointers) is sync_msg_complete: the next step is called, not handed out.
 */
static void without_next_it_is_a_plain_completion(void)
{
    hook_log log = {0};
    sync_engine *e = new_engine(&log, 0);
    trampoline_calls = 0;
    CHECK_EQ_INT(send_msg(e, NULL, "add", 1), SYNC_PENDING);
    sync_msg *first = parked;
    CHECK_EQ_INT(sync_msg_complete_next(first, SYNC_OK, NULL, NULL), SYNC_OK);
    CHECK_EQ_INT(trampoline_calls, 2);                /* the handler was called */
    CHECK(parked == first && parked_userdata == ADD); /* the same message, at its handler */
    CHECK_EQ_INT(sync_msg_complete(parked, run_step(parked, ADD)), SYNC_OK);
    CHECK_EQ_STR(state_of(e), "{\"log\":[1]}");

    /* misuse */
    sync_msg *next = (sync_msg *)1;
    void *ud = (void *)1;
    CHECK_EQ_INT(sync_msg_complete_next(NULL, SYNC_OK, &next, &ud), SYNC_EINVAL);
    CHECK(next == NULL && ud == NULL);
    CHECK_EQ_INT(send_msg(e, NULL, "add", 2), SYNC_PENDING);
    CHECK_EQ_INT(sync_msg_complete_next(parked, SYNC_OK, &next, NULL), SYNC_EINVAL);
    CHECK(next == NULL);
    CHECK(strstr(sync_error_last(), "go together"));
    sync_msg *pending = parked;
    CHECK_EQ_INT(sync_msg_complete_next(pending, SYNC_OK, &next, &ud), SYNC_OK);
    REQUIRE(next && ud == ADD);
    CHECK_EQ_INT(sync_msg_complete_next(next, run_step(next, ud), &next, &ud), SYNC_OK);
    CHECK(next == NULL);
    CHECK_EQ_STR(state_of(e), "{\"log\":[1,2]}");
    sync_engine_free(e);
}

/* A handed-out step is pending like any other: step_timeout_ms fails it, the queue moves on, and
 * its late completion is refused with SYNC_ETIMEDOUT and hands nothing out. */
static void a_handed_out_step_times_out(void)
{
    hook_log log = {0};
    sync_engine *e = new_engine(&log, 100);
    trampoline_calls = 0;
    CHECK_EQ_INT(send_msg(e, NULL, "add", 1), SYNC_PENDING);
    CHECK_EQ_INT(send_msg(e, NULL, "add", 2), SYNC_PENDING);
    sync_msg *next = NULL;
    void *ud = NULL;
    CHECK_EQ_INT(sync_msg_complete_next(parked, SYNC_OK, &next, &ud), SYNC_OK);
    REQUIRE(next && ud == ADD);
    int64_t deadline = sync_engine_next_deadline_ms(e);
    CHECK(deadline > 0);
    CHECK_EQ_INT(sync_engine_tick(e, deadline), SYNC_OK); /* message 1's handler times out */
    CHECK_EQ_INT(log.last_error_status, SYNC_ETIMEDOUT);
    CHECK_EQ_INT(trampoline_calls, 2); /* message 2's validator was called as usual */
    sync_msg *second = parked;
    sync_msg *late_next = (sync_msg *)1;
    void *late_ud = (void *)1;
    CHECK_EQ_INT(sync_msg_complete_next(next, SYNC_OK, &late_next, &late_ud), SYNC_ETIMEDOUT);
    CHECK(late_next == NULL && late_ud == NULL);
    CHECK_EQ_INT(sync_msg_complete_next(second, SYNC_OK, &next, &ud), SYNC_OK);
    REQUIRE(next && ud == ADD);
    CHECK_EQ_INT(sync_msg_complete_next(next, run_step(next, ud), &next, &ud), SYNC_OK);
    CHECK(next == NULL);
    CHECK_EQ_STR(state_of(e), "{\"log\":[2]}");
    CHECK_EQ_INT(sync_engine_get_version(e), 1);
    sync_engine_free(e);
}

/* Freeing the engine while a handed-out step is pending: the step keeps the engine; its
 * completion then finds it disposed (ASan checks that nothing leaks). */
static void free_with_a_handed_out_step(void)
{
    hook_log log = {0};
    sync_engine *e = new_engine(&log, 0);
    CHECK_EQ_INT(send_msg(e, NULL, "add", 1), SYNC_PENDING);
    CHECK_EQ_INT(send_msg(e, NULL, "add", 2), SYNC_PENDING);
    sync_msg *next = NULL;
    void *ud = NULL;
    CHECK_EQ_INT(sync_msg_complete_next(parked, SYNC_OK, &next, &ud), SYNC_OK);
    REQUIRE(next);
    sync_engine_free(e);
    CHECK_EQ_INT(sync_msg_complete_next(next, SYNC_OK, &next, &ud), SYNC_OK);
    CHECK(next == NULL);
}

int main(void)
{
    RUN(one_loop_runs_the_whole_queue_in_order);
    RUN(other_callbacks_run_and_the_order_holds);
    RUN(the_callback_that_ran_decides_what_is_handed_out);
    RUN(without_next_it_is_a_plain_completion);
    RUN(a_handed_out_step_times_out);
    RUN(free_with_a_handed_out_step);
    return check_summary();
}

/* The private transport contract (transport.h) the built-in server relies on: the change feed
 * (one notice per record to each reader, a read with no side effects, an explicit flush: group
 * commit before send), shared frames, and deadline notifications. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine_counter.h"
#include "fake_conn.h"
#include "engine/transport.h"

typedef struct pull_conn {
    sync_conn *conn;
    int notified;
    int forced;
    int closes;
    sync__frame *frames[16];
    int count;
    uint64_t sent_seq;
} pull_conn;

static int pc_send_frame(void *userdata, sync__frame *frame)
{
    pull_conn *pc = userdata;
    if (pc->count < 16)
        pc->frames[pc->count++] = sync__frame_ref(frame);
    if (frame->seq > pc->sent_seq)
        pc->sent_seq = frame->seq;
    return SYNC_OK;
}

/* The transport's reader of the feed: one per engine, like a server. */
static void pc_state_moved(void *userdata, int force)
{
    pull_conn *pc = userdata;
    pc->notified++;
    pc->forced += force;
}

static void pc_deadline_moved(void *userdata)
{
    (void)userdata;
}

static void pc_listen(sync_engine *e, pull_conn *pc)
{
    sync__engine_listener listener = {pc_state_moved, pc_deadline_moved, pc};
    if (sync__engine_add_listener(e, &listener) != SYNC_OK)
        abort();
}

static void pc_close(void *userdata, int code, const char *reason)
{
    (void)code;
    (void)reason;
    ((pull_conn *)userdata)->closes++;
}

static void pc_init(pull_conn *pc)
{
    memset(pc, 0, sizeof *pc);
    static const sync__transport_ops ops = {.send_frame = pc_send_frame, .close = pc_close};
    if (sync__conn_new_transport(&pc->conn, &ops, pc) != SYNC_OK)
        abort();
}

static void pc_cleanup(pull_conn *pc)
{
    for (int i = 0; i < pc->count; i++)
        sync__frame_unref(pc->frames[i]);
    sync_conn_free(pc->conn);
}

/* What the server does at the end of a loop turn: flush the head, then read it. */
static sync__frame *pc_pull(sync_engine *e, pull_conn *pc, int force)
{
    if (!sync__feed_flush(e))
        return NULL;
    sync__frame *frame = sync__feed_read(e, pc->sent_seq, force);
    if (frame)
        pc_send_frame(pc, frame), sync__frame_unref(frame);
    return frame;
}

static void pull_broadcast(void)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    sync_engine *e = counter_engine(&opts, NULL, 0);
    REQUIRE(e);
    sync__engine_set_auto_broadcast(e, 1);
    pull_conn pc;
    pc_init(&pc);
    pc_listen(e, &pc);
    CHECK_EQ_INT(sync_engine_handle_open(e, pc.conn), SYNC_OK);
    REQUIRE(pc.count == 1);
    CHECK_EQ_INT(pc.frames[0]->kind, SYNC__FRAME_INITIAL_STATE);
    CHECK(pc_pull(e, &pc, 0) == NULL); /* nothing newer than the initial state */
    for (int i = 0; i < 5; i++)
        counter_send(e, pc.conn, "increment", 1);
    CHECK_EQ_INT(pc.notified, 5);
    CHECK_EQ_INT(pc.count, 1); /* nothing pushed: the transport pulls */
    sync__frame *frame = pc_pull(e, &pc, 0);
    REQUIRE(frame != NULL);
    CHECK_EQ_INT(pc.count, 2);
    CHECK_EQ_STR(sync__frame_text(pc.frames[1]),
                 "{\"type\":\"state_update\",\"data\":{\"counter\":5},\"version\":5}");
    CHECK(pc_pull(e, &pc, 0) == NULL);
    /* An explicit broadcast forces a resend of the same frame, shared, not rebuilt. */
    sync_engine_broadcast_state(e);
    CHECK_EQ_INT(pc.forced, 1);
    CHECK(pc_pull(e, &pc, 1) != NULL);
    CHECK(pc.frames[2] == pc.frames[1]);
    sync_engine_stats stats = {.version = SYNC_ENGINE_STATS_VERSION};
    sync_engine_get_stats(e, &stats);
    CHECK_EQ_INT(stats.serialisations, 2);
    sync_engine_dispose(e);
    CHECK_EQ_INT(pc.closes, 1);
    CHECK(sync__feed_read(e, 0, 1) == NULL);
    CHECK_EQ_INT(sync__feed_flush(e), 0);
    sync_engine_free(e);
    pc_cleanup(&pc);
}

/* A counter engine that saves to `store` (starting at {"counter":0}, version 0) before it sends,
 * and broadcasts every change; NULL on failure. */
static sync_engine *before_send_engine(fake_store *store)
{
    fake_store_init(store, "{\"counter\":0}", 0);
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.adapter = fake_adapter_new(store);
    opts.persist_mode = SYNC_PERSIST_BEFORE_SEND;
    opts.auto_broadcast = 1;
    return counter_engine(&opts, NULL, 0);
}

static void group_commit_before_send(void)
{
    fake_store store;
    sync_engine *e = before_send_engine(&store);
    REQUIRE(e);
    pull_conn pc;
    pc_init(&pc);
    pc_listen(e, &pc);
    sync_engine_handle_open(e, pc.conn);
    CHECK_EQ_INT(store.saves, 0); /* the loaded state is already in the store */
    for (int i = 0; i < 4; i++)
        counter_send(e, pc.conn, "increment", 1);
    CHECK_EQ_INT(store.saves, 0);
    /* reading never saves: the unsaved head is not handed out, and nothing is written */
    CHECK(sync__feed_read(e, pc.sent_seq, 1) == NULL);
    CHECK_EQ_INT(store.saves, 0);
    CHECK(pc_pull(e, &pc, 0) != NULL);
    CHECK_EQ_INT(store.saves, 1); /* four changes, one save, before the frame left */
    CHECK_EQ_STR(store.json, "{\"counter\":4}");
    CHECK(pc_pull(e, &pc, 1) != NULL);
    CHECK_EQ_INT(store.saves, 1);

    /* An adapter that finishes later: no frame until the save is done, then a new notice. */
    store.async = 1;
    counter_send(e, pc.conn, "increment", 1);
    int notified = pc.notified;
    CHECK(pc_pull(e, &pc, 0) == NULL);
    CHECK_EQ_INT(store.saves, 2);
    CHECK(pc_pull(e, &pc, 0) == NULL);
    CHECK_EQ_INT(store.saves, 2);
    CHECK_EQ_INT(fake_store_finish(&store, SYNC_OK), 1);
    CHECK(pc.notified > notified);
    CHECK(pc_pull(e, &pc, 0) != NULL);
    CHECK_EQ_STR(store.json, "{\"counter\":5}");

    /* A push connection opened now gets its initial_state after a save of the same version. */
    store.async = 0;
    counter_send(e, pc.conn, "increment", 1);
    fake_conn *push = fake_conn_new();
    CHECK_EQ_INT(sync_engine_handle_open(e, push->conn), SYNC_OK);
    CHECK_EQ_INT(store.saves, 3);
    CHECK_EQ_STR(store.json, "{\"counter\":6}");
    CHECK(pc_pull(e, &pc, 0) != NULL);
    CHECK_EQ_INT(store.saves, 3);
    sync_engine_free(e);
    pc_cleanup(&pc);
    fake_conn_release(push);
    fake_store_cleanup(&store);
}

/* A binding's batch: a step that the engine hands out (a validator here) and the binding finishes
 * with sync_msg_complete_next(), message after message, while the rest wait in the queue. */
static sync_msg *held;

static int hold_step(sync_msg *msg, void *userdata)
{
    (void)userdata;
    held = msg;
    return SYNC_PENDING;
}

/* Runs the held batch to its end; returns the messages completed. `quiet` counts those whose
 * completion told the reader nothing although more of the batch was still to come. */
static int run_batch(sync_engine *e, pull_conn *pc, int *quiet)
{
    sync_msg *msg = held;
    held = NULL;
    int done = 0;
    *quiet = 0;
    while (msg) {
        int notified = pc->notified;
        sync_msg *next = NULL;
        void *next_userdata = NULL;
        if (sync_msg_complete_next(msg, SYNC_OK, &next, &next_userdata) != SYNC_OK)
            break;
        done++;
        if (next && pc->notified == notified)
            (*quiet)++;
        msg = next;
    }
    (void)e;
    return done;
}

/* With SYNC_PERSIST_BEFORE_SEND nobody can flush while a batch runs (the save needs the engine
 * idle), so a reader hears once, when the batch is through, not once per message: each notice is
 * a wake of the server's service thread from the binding's thread, for a flush that would fail.
 * The flush on that notice succeeds: one save, the batch's last state. Order and results stay the
 * engine's. Without a save before send, every change is told at once as before: the head may be
 * sent while the batch runs. */
static void batch_tells_readers_when_a_flush_can_succeed(void)
{
    fake_store store;
    sync_engine *e = before_send_engine(&store);
    REQUIRE(e);
    REQUIRE(sync_engine_set_validator(e, hold_step, NULL, NULL) == SYNC_OK);
    pull_conn pc;
    pc_init(&pc);
    pc_listen(e, &pc);
    CHECK_EQ_INT(sync_engine_handle_open(e, pc.conn), SYNC_OK);
    held = NULL;
    for (int i = 0; i < 8; i++)
        CHECK_EQ_INT(counter_send(e, pc.conn, "increment", 1), SYNC_PENDING);
    REQUIRE(held != NULL);
    /* the server's turn while the batch waits: no flush yet */
    CHECK(pc_pull(e, &pc, 0) == NULL);
    int notified = pc.notified;
    int quiet = 0;
    CHECK_EQ_INT(run_batch(e, &pc, &quiet), 8);
    CHECK_EQ_INT(quiet, 7);
    CHECK_EQ_INT(pc.notified, notified + 1);
    CHECK_EQ_INT(store.saves, 0);
    REQUIRE(pc_pull(e, &pc, 0) != NULL);
    CHECK_EQ_INT(store.saves, 1);
    CHECK_EQ_STR(store.json, "{\"counter\":8}");
    CHECK_EQ_STR(sync__frame_text(pc.frames[pc.count - 1]),
                 "{\"type\":\"state_update\",\"data\":{\"counter\":8},\"version\":8}");

    /* the same batch with no server turn in between: still one notice, at its end */
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(counter_send(e, pc.conn, "increment", 2), SYNC_PENDING);
    notified = pc.notified;
    CHECK_EQ_INT(run_batch(e, &pc, &quiet), 5);
    CHECK_EQ_INT(quiet, 4);
    CHECK_EQ_INT(pc.notified, notified + 1);
    REQUIRE(pc_pull(e, &pc, 0) != NULL);
    CHECK_EQ_INT(store.saves, 2);
    CHECK_EQ_STR(store.json, "{\"counter\":18}");

    /* a single message is told at its commit, as a synchronous one is */
    CHECK_EQ_INT(counter_send(e, pc.conn, "increment", 1), SYNC_PENDING);
    notified = pc.notified;
    CHECK_EQ_INT(run_batch(e, &pc, &quiet), 1);
    CHECK_EQ_INT(pc.notified, notified + 1);
    REQUIRE(pc_pull(e, &pc, 0) != NULL);
    CHECK_EQ_STR(store.json, "{\"counter\":19}");
    sync_engine_free(e);
    pc_cleanup(&pc);
    fake_store_cleanup(&store);

    /* no save before send: a reader may send the head mid-batch, so it hears every change */
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    e = counter_engine(&opts, NULL, 0);
    REQUIRE(e);
    sync__engine_set_auto_broadcast(e, 1);
    REQUIRE(sync_engine_set_validator(e, hold_step, NULL, NULL) == SYNC_OK);
    pc_init(&pc);
    pc_listen(e, &pc);
    CHECK_EQ_INT(sync_engine_handle_open(e, pc.conn), SYNC_OK);
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(counter_send(e, pc.conn, "increment", 1), SYNC_PENDING);
    notified = pc.notified;
    CHECK_EQ_INT(run_batch(e, &pc, &quiet), 4);
    CHECK_EQ_INT(quiet, 0);
    CHECK_EQ_INT(pc.notified, notified + 4);
    REQUIRE(pc_pull(e, &pc, 0) != NULL);
    CHECK_EQ_STR(sync__frame_text(pc.frames[pc.count - 1]),
                 "{\"type\":\"state_update\",\"data\":{\"counter\":4},\"version\":4}");
    sync_engine_free(e);
    pc_cleanup(&pc);
}

/* The engine counts its push connections: while one is open a broadcast saves first and pushes
 * to it; once the last one is gone the broadcast is a notice to the pull connections only. */
static void push_count_follows_open_and_close(void)
{
    fake_store store;
    sync_engine *e = before_send_engine(&store);
    REQUIRE(e);
    pull_conn pc;
    pc_init(&pc);
    pc_listen(e, &pc);
    fake_conn *push[2] = {fake_conn_new(), fake_conn_new()};
    sync_engine_handle_open(e, pc.conn);
    for (int i = 0; i < 2; i++)
        CHECK_EQ_INT(sync_engine_handle_open(e, push[i]->conn), SYNC_OK);
    counter_send(e, pc.conn, "increment", 1);
    CHECK_EQ_INT(store.saves, 1);
    CHECK_EQ_INT(pc.notified, 1);
    for (int i = 0; i < 2; i++) {
        REQUIRE(fake_conn_frames(push[i]) == 2);
        CHECK(fake_conn_frame_counter(push[i], 1) == 1);
    }
    CHECK_EQ_INT(sync_engine_handle_close(e, push[0]->conn), SYNC_OK);
    counter_send(e, pc.conn, "increment", 1);
    CHECK_EQ_INT(store.saves, 2); /* one push connection left: still saved before it is sent */
    CHECK_EQ_INT(fake_conn_frames(push[1]), 3);
    CHECK_EQ_INT(sync_engine_handle_close(e, push[1]->conn), SYNC_OK);
    counter_send(e, pc.conn, "increment", 1);
    CHECK_EQ_INT(store.saves, 2); /* pull only: the save waits for the pull */
    CHECK_EQ_INT(pc.notified, 3);
    CHECK(pc_pull(e, &pc, 0) != NULL);
    CHECK_EQ_INT(store.saves, 3);
    CHECK_EQ_STR(store.json, "{\"counter\":3}");
    CHECK_EQ_INT(fake_conn_frames(push[0]), 2);
    CHECK_EQ_INT(fake_conn_frames(push[1]), 3);
    sync_engine_free(e);
    pc_cleanup(&pc);
    for (int i = 0; i < 2; i++)
        fake_conn_release(push[i]);
    fake_store_cleanup(&store);
}

typedef struct listener_log {
    int moved, forced, deadlines;
} listener_log;

static void log_state_moved(void *userdata, int force)
{
    listener_log *log = userdata;
    log->moved++;
    log->forced += force;
}

static void log_deadline_moved(void *userdata)
{
    ((listener_log *)userdata)->deadlines++;
}

static int add_log_listener(sync_engine *e, listener_log *log)
{
    sync__engine_listener listener = {log_state_moved, log_deadline_moved, log};
    return sync__engine_add_listener(e, &listener);
}

static void deadline_listener(void)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.heartbeat_interval_ms = 100;
    sync_engine *e = NULL;
    REQUIRE(sync_engine_new(&e, &opts) == SYNC_OK);
    listener_log log = {0};
    REQUIRE(add_log_listener(e, &log) == SYNC_OK);
    int64_t d = sync_engine_next_deadline_ms(e);
    sync_engine_tick(e, d - 10);
    CHECK_EQ_INT(log.deadlines, 0);
    sync_engine_tick(e, d);
    CHECK_EQ_INT(log.deadlines, 1);
    CHECK_EQ_INT(sync_engine_next_deadline_ms(e), d + 100);
    sync_engine_dispose(e);
    CHECK_EQ_INT(log.deadlines, 2);
    sync_engine_free(e);
}

/* The engine says "moved" once per change to each reader (server), whatever the number of its
 * connections; a connection of a transport hears nothing itself. */
static void one_notice_per_change_and_reader(void)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    sync_engine *e = counter_engine(&opts, NULL, 0);
    REQUIRE(e);
    sync__engine_set_auto_broadcast(e, 1);
    listener_log a = {0}, b = {0};
    REQUIRE(add_log_listener(e, &a) == SYNC_OK);
    REQUIRE(add_log_listener(e, &b) == SYNC_OK);
    pull_conn pcs[3];
    for (int i = 0; i < 3; i++) {
        pc_init(&pcs[i]);
        CHECK_EQ_INT(sync_engine_handle_open(e, pcs[i].conn), SYNC_OK);
    }
    for (int i = 0; i < 4; i++)
        counter_send(e, pcs[0].conn, "increment", 1);
    CHECK_EQ_INT(a.moved, 4);
    CHECK_EQ_INT(b.moved, 4);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(pcs[i].notified, 0);
    sync_engine_broadcast_state(e);
    CHECK_EQ_INT(a.forced, 1);
    CHECK_EQ_INT(b.forced, 1);

    /* one gone: only the other hears; both gone: nobody */
    sync__engine_remove_listener(e, &a);
    counter_send(e, pcs[0].conn, "increment", 1);
    CHECK_EQ_INT(a.moved, 5);
    CHECK_EQ_INT(b.moved, 6);
    sync__engine_remove_listener(e, &b);
    sync__engine_remove_listener(e, &b); /* unknown: nothing */
    counter_send(e, pcs[0].conn, "increment", 1);
    CHECK_EQ_INT(b.moved, 6);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(pcs[i].notified, 0);

    /* bounded: the ninth server is refused with a reason */
    listener_log many[SYNC__ENGINE_MAX_LISTENERS + 1];
    memset(many, 0, sizeof many);
    for (int i = 0; i < SYNC__ENGINE_MAX_LISTENERS; i++)
        CHECK_EQ_INT(add_log_listener(e, &many[i]), SYNC_OK);
    CHECK_EQ_INT(add_log_listener(e, &many[SYNC__ENGINE_MAX_LISTENERS]), SYNC_ELIMIT);
    CHECK(strstr(sync_error_last(), "already served") != NULL);
    sync__engine_listener incomplete = {log_state_moved, NULL, &a};
    CHECK_EQ_INT(sync__engine_add_listener(e, &incomplete), SYNC_EINVAL);
    for (int i = 0; i < SYNC__ENGINE_MAX_LISTENERS; i++)
        sync__engine_remove_listener(e, &many[i]);
    sync_engine_free(e);
    for (int i = 0; i < 3; i++)
        pc_cleanup(&pcs[i]);
}

int main(void)
{
    RUN(pull_broadcast);
    RUN(group_commit_before_send);
    RUN(batch_tells_readers_when_a_flush_can_succeed);
    RUN(push_count_follows_open_and_close);
    RUN(deadline_listener);
    RUN(one_notice_per_change_and_reader);
    return check_summary();
}

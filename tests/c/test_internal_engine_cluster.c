/* The seam through which an engine serves one room of a cluster (engine_cluster.h): a linked
 * engine forwards its clients' messages in order and runs none of them, saves nothing and changes
 * its state only by adoption; the owner's run of a forwarded message goes through the real
 * validator, middleware and handler against the committed state but commits and broadcasts
 * nothing, capturing what it sends to the stand-in connection; frames reach one connection by id;
 * the room's epoch becomes the engine's (seen by a v2 client over a real socket). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libsync/libsync.h>

#include "check.h"
#include "engine/engine_cluster.h"
#include "engine/transport.h"
#include "engine/engine_internal.h"
#include "engine_counter.h"
#include "error.h"
#include "fake_conn.h"
#include "server_fixture.h"

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- what the pipeline saw ------------------------------------------------------------------ */

static atomic_int handler_runs;
static _Atomic uint64_t seen_conn_id;
static char seen_identity[128];
static int seen_conn_null;
static int seen_userdata;

/* "probe": records the connection it runs for, replies twice and sets state.probed. */
static int probe_handler(sync_msg *msg, void *userdata)
{
    (void)userdata;
    handler_runs++;
    sync_conn *conn = sync_msg_conn(msg);
    seen_conn_null = conn == NULL;
    seen_conn_id = sync_conn_id(conn);
    seen_userdata = sync_conn_userdata(conn) != NULL;
    const char *identity = sync_conn_identity(conn);
    snprintf(seen_identity, sizeof seen_identity, "%s", identity ? identity : "(null)");
    char reply[200];
    snprintf(reply, sizeof reply, "{\"type\":\"probe\",\"conn\":%llu}",
             (unsigned long long)seen_conn_id);
    sync_msg_reply(msg, reply, strlen(reply));
    sync_msg_reply(msg, "second", 6);
    cJSON *state = sync_msg_state_mut(msg);
    cJSON_AddTrueToObject(state, "probed");
    return SYNC_OK;
}

/* "noop": succeeds without writing. */
static int noop_handler(sync_msg *msg, void *userdata)
{
    (void)msg, (void)userdata;
    handler_runs++;
    return SYNC_OK;
}

/* "fail": writes, then fails: nothing of it may come out. */
static int fail_handler(sync_msg *msg, void *userdata)
{
    (void)userdata;
    handler_runs++;
    cJSON_AddTrueToObject(sync_msg_state_mut(msg), "half");
    sync_msg_set_error(msg, "cannot do that");
    return SYNC_EHANDLER;
}

static int counting_increment(sync_msg *msg, void *userdata)
{
    handler_runs++;
    return counter_increment(msg, userdata);
}

static atomic_int errors;
static atomic_int last_error_status;
static _Atomic uint64_t last_error_conn;

static void on_error(sync_engine *e, int status, const char *message, const char *context,
                     sync_conn *conn, void *userdata)
{
    (void)e, (void)message, (void)context, (void)userdata;
    errors++;
    last_error_status = status;
    last_error_conn = sync_conn_id(conn);
}

static sync_msg *parked;

/* A counter engine: validator (amount must be a number), middleware doubling increments,
 * handlers increment, probe, noop, fail, park. */
static sync_engine *new_engine(const char *initial, int reply_errors, sync_adapter *adapter,
                               int64_t step_timeout_ms)
{
    handler_runs = 0;
    errors = 0;
    last_error_status = 0;
    last_error_conn = 0;
    parked = NULL;
    sync_hooks hooks = SYNC_HOOKS_INIT;
    hooks.on_error = on_error;
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = initial;
    opts.reply_errors = reply_errors;
    opts.adapter = adapter;
    opts.hooks = &hooks;
    opts.log = fixture_quiet_log;
    if (step_timeout_ms > 0) {
        opts.step_timeout_ms = step_timeout_ms;
        opts.timer_mode = SYNC_TIMERS_THREAD;
    }
    sync_engine *engine = NULL;
    if (sync_engine_new(&engine, &opts) != SYNC_OK)
        abort();
    sync_engine_on(engine, "increment", counting_increment, NULL, NULL);
    sync_engine_on(engine, "probe", probe_handler, NULL, NULL);
    sync_engine_on(engine, "noop", noop_handler, NULL, NULL);
    sync_engine_on(engine, "fail", fail_handler, NULL, NULL);
    sync_engine_on(engine, "park", fake_park, &parked, NULL);
    sync_engine_set_validator(engine, counter_require_amount, NULL, NULL);
    sync_engine_use(engine, counter_double_increments, NULL, NULL);
    return engine;
}

static char *state_json(sync_engine *engine)
{
    static char buf[256];
    char *json = sync_engine_get_state_json(engine);
    snprintf(buf, sizeof buf, "%s", json ? json : "(null)");
    sync_free(json);
    return buf;
}

/* ---- the forwarding side -------------------------------------------------------------------- */

typedef struct forwarded {
    pthread_mutex_t lock;
    char texts[16][128];
    uint64_t conn_ids[16];
    int count;
    int refuse;            /* status to return instead of taking it */
    sync_engine *engine;   /* when set: checks the engine lock is free during the call */
    int lock_was_free;     /* 1 when another thread could take the engine lock */
    atomic_int block;      /* 1: the call waits until it is 0 */
    atomic_int in_forward; /* a call is running */
} forwarded;

static void *read_version(void *arg)
{
    sync_engine_get_version(arg);
    return NULL;
}

static int forward(void *userdata, sync_conn *conn, const char *text, size_t len)
{
    forwarded *f = userdata;
    f->in_forward = 1;
    if (f->engine) {
        /* with the lock held by this thread, another thread could not read the version */
        pthread_t t;
        pthread_create(&t, NULL, read_version, f->engine);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 10;
        f->lock_was_free = pthread_timedjoin_np(t, NULL, &until) == 0;
        if (!f->lock_was_free)
            pthread_detach(t);
    }
    for (int i = 0; f->block && i < 10000; i++)
        sleep_ms(1);
    pthread_mutex_lock(&f->lock);
    int rc = f->refuse;
    if (rc == SYNC_OK && f->count < 16) {
        snprintf(f->texts[f->count], sizeof f->texts[f->count], "%.*s", (int)len, text);
        f->conn_ids[f->count] = sync_conn_id(conn);
        f->count++;
    }
    pthread_mutex_unlock(&f->lock);
    f->in_forward = 0;
    if (rc != SYNC_OK)
        return sync__fail(rc, "the room's stream is full");
    return SYNC_OK;
}

static void link_to(sync_engine *engine, forwarded *f)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->lock, NULL);
    sync__cluster_link link = {forward, f};
    CHECK_EQ_INT(sync__engine_set_cluster_link(engine, &link), SYNC_OK);
}

static int send_text(sync_engine *engine, sync_conn *conn, const char *text)
{
    return conn ? sync_engine_handle_message(engine, conn, text, strlen(text))
                : sync_engine_inject(engine, text, strlen(text));
}

static void test_linked_engine_forwards_in_order_and_runs_nothing(void)
{
    sync_engine *engine = new_engine("{\"counter\":1}", 1, NULL, 0);
    fake_conn *a = fake_conn_open(engine);
    fake_conn *b = fake_conn_open(engine);
    forwarded f;
    link_to(engine, &f);
    f.engine = engine;
    CHECK_EQ_INT(send_text(engine, a->conn, "{\"type\":\"increment\",\"amount\":1}"), SYNC_OK);
    f.engine = NULL;
    CHECK(f.lock_was_free);
    CHECK_EQ_INT(send_text(engine, b->conn, "{\"type\":\"increment\",\"amount\":2}"), SYNC_OK);
    CHECK_EQ_INT(send_text(engine, NULL, "{\"type\":\"probe\",\"amount\":0}"), SYNC_OK);
    /* user code decides nothing here: not the validator (no amount), nor a missing handler */
    CHECK_EQ_INT(send_text(engine, a->conn, "{\"type\":\"increment\"}"), SYNC_OK);
    CHECK_EQ_INT(send_text(engine, a->conn, "{\"type\":\"nobody\"}"), SYNC_OK);
    /* the edge checks still refuse at once, and "pong" is no message */
    CHECK_EQ_INT(send_text(engine, b->conn, "{\"type\":"), SYNC_EPARSE);
    CHECK_EQ_INT(send_text(engine, b->conn, "pong"), SYNC_OK);
    CHECK_EQ_INT(sync_engine_handle_message(engine, b->conn, "[[[[1]]]]", 9), SYNC_OK);

    REQUIRE(f.count == 6);
    CHECK_EQ_STR(f.texts[0], "{\"type\":\"increment\",\"amount\":1}");
    CHECK_EQ_INT(f.conn_ids[0], sync_conn_id(a->conn));
    CHECK_EQ_STR(f.texts[1], "{\"type\":\"increment\",\"amount\":2}");
    CHECK_EQ_INT(f.conn_ids[1], sync_conn_id(b->conn));
    CHECK_EQ_STR(f.texts[2], "{\"type\":\"probe\",\"amount\":0}");
    CHECK_EQ_INT(f.conn_ids[2], 0);
    CHECK_EQ_STR(f.texts[3], "{\"type\":\"increment\"}");
    CHECK_EQ_STR(f.texts[4], "{\"type\":\"nobody\"}");
    CHECK_EQ_STR(f.texts[5], "[[[[1]]]]");
    CHECK_EQ_INT(handler_runs, 0);
    CHECK_EQ_INT(sync_engine_get_version(engine), 0);
    CHECK_EQ_STR(state_json(engine), "{\"counter\":1}");
    /* each client got its initial state, and b the error frame of its bad JSON; nothing else */
    CHECK_EQ_INT(fake_conn_frames(a), 1);
    CHECK_EQ_INT(fake_conn_frames(b), 2);
    CHECK_EQ_INT(errors, 1);

    /* unlinked, the engine runs its messages again */
    CHECK_EQ_INT(sync__engine_set_cluster_link(engine, NULL), SYNC_OK);
    CHECK_EQ_INT(send_text(engine, a->conn, "{\"type\":\"increment\",\"amount\":1}"), SYNC_OK);
    CHECK_EQ_INT(f.count, 6);
    CHECK_EQ_INT(handler_runs, 1);
    CHECK_EQ_INT(sync_engine_get_version(engine), 1);
    CHECK_EQ_STR(state_json(engine), "{\"counter\":3}");

    sync__cluster_link no_forward = {NULL, NULL};
    CHECK_EQ_INT(sync__engine_set_cluster_link(engine, &no_forward), SYNC_EINVAL);
    CHECK_EQ_INT(sync__engine_set_cluster_link(NULL, NULL), SYNC_EINVAL);
    fake_conn_release(a);
    fake_conn_release(b);
    sync_engine_free(engine);
    pthread_mutex_destroy(&f.lock);
}

static void test_forward_refusal_is_a_dropped_message(void)
{
    sync_engine *engine = new_engine("{\"counter\":1}", 1, NULL, 0);
    fake_conn *a = fake_conn_open(engine);
    forwarded f;
    link_to(engine, &f);
    f.refuse = SYNC_ELIMIT;
    CHECK_EQ_INT(send_text(engine, a->conn, "{\"type\":\"increment\",\"amount\":1}"), SYNC_ELIMIT);
    CHECK_EQ_INT(errors, 1);
    CHECK_EQ_INT(last_error_status, SYNC_ELIMIT);
    CHECK_EQ_INT(last_error_conn, sync_conn_id(a->conn));
    REQUIRE(fake_conn_frames(a) == 2);
    cJSON *frame = fake_conn_frame_json(a, 1);
    CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(frame, "type")), "error");
    CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(frame, "context")), "message");
    const char *why = cJSON_GetStringValue(cJSON_GetObjectItem(frame, "error"));
    CHECK(why && strstr(why, "the room's stream is full"));
    cJSON_Delete(frame);
    sync_engine_stats stats = {.version = SYNC_ENGINE_STATS_VERSION};
    CHECK_EQ_INT(sync_engine_get_stats(engine, &stats), SYNC_OK);
    CHECK_EQ_INT(stats.messages_dropped, 1);
    /* an injected message has nobody to tell, but is refused all the same */
    CHECK_EQ_INT(send_text(engine, NULL, "{\"type\":\"increment\",\"amount\":1}"), SYNC_ELIMIT);
    CHECK_EQ_INT(errors, 2);
    CHECK_EQ_INT(fake_conn_frames(a), 2);
    CHECK_EQ_INT(handler_runs, 0);
    fake_conn_release(a);
    sync_engine_free(engine);
    pthread_mutex_destroy(&f.lock);
}

typedef struct unlink_call {
    sync_engine *engine;
    atomic_int returned;
} unlink_call;

static void *unlink_thread(void *arg)
{
    unlink_call *call = arg;
    sync__engine_set_cluster_link(call->engine, NULL);
    call->returned = 1;
    return NULL;
}

typedef struct send_call {
    sync_engine *engine;
    sync_conn *conn;
    int rc;
} send_call;

static void *send_thread(void *arg)
{
    send_call *call = arg;
    call->rc = send_text(call->engine, call->conn, "{\"type\":\"increment\",\"amount\":1}");
    return NULL;
}

/* Once the unlink returns, the link's userdata may go: it waits for a forward call running. */
static void test_unlink_waits_for_a_running_forward(void)
{
    sync_engine *engine = new_engine("{\"counter\":1}", 1, NULL, 0);
    fake_conn *a = fake_conn_open(engine);
    forwarded f;
    link_to(engine, &f);
    f.block = 1;
    send_call s = {engine, a->conn, 99};
    pthread_t sender;
    pthread_create(&sender, NULL, send_thread, &s);
    for (int i = 0; !f.in_forward && i < 5000; i++)
        sleep_ms(1);
    REQUIRE(f.in_forward);
    unlink_call u = {engine, 0};
    pthread_t unlinker;
    pthread_create(&unlinker, NULL, unlink_thread, &u);
    sleep_ms(200);
    CHECK_EQ_INT(u.returned, 0);
    f.block = 0;
    pthread_join(unlinker, NULL);
    CHECK_EQ_INT(f.in_forward, 0);
    pthread_join(sender, NULL);
    CHECK_EQ_INT(s.rc, SYNC_OK);
    CHECK_EQ_INT(f.count, 1);
    CHECK_EQ_INT(handler_runs, 0);
    fake_conn_release(a);
    sync_engine_free(engine);
    pthread_mutex_destroy(&f.lock);
}

static void test_linked_state_changes_only_by_adoption(void)
{
    fake_store store;
    fake_store_init(&store, NULL, 0);
    sync_engine *engine = new_engine("{\"counter\":1}", 1, fake_adapter_new(&store), 0);
    /* as a server's mount: every commit, an adopted one too, is broadcast */
    sync__engine_set_auto_broadcast(engine, 1);
    fake_conn *a = fake_conn_open(engine);
    int saves_before = store.saves;
    forwarded f;
    link_to(engine, &f);
    CHECK_EQ_INT(sync_engine_set_state(engine, cJSON_Parse("{\"counter\":9}"), 1),
                 SYNC_EUNSUPPORTED);
    CHECK_EQ_INT(sync_engine_set_state_json(engine, "{\"counter\":9}", 1), SYNC_EUNSUPPORTED);
    CHECK(strstr(sync_error_last(), "cluster") != NULL);
    CHECK_EQ_INT(sync_engine_get_version(engine), 0);
    CHECK_EQ_INT(sync__engine_adopt_state(engine, cJSON_Parse("{\"counter\":7}"), 1), SYNC_OK);
    CHECK_EQ_INT(sync_engine_get_version(engine), 1);
    CHECK_EQ_STR(state_json(engine), "{\"counter\":7}");
    REQUIRE(fake_conn_frames(a) == 2);
    char type[32];
    CHECK_EQ_STR(fake_conn_frame_type(a, 1, type, sizeof type), "state_update");
    CHECK(fake_conn_frame_counter(a, 1) == 7);
    /* the same version again (a republish after a takeover) is dropped: not sent twice */
    CHECK_EQ_INT(sync__engine_adopt_state(engine, cJSON_Parse("{\"counter\":7}"), 1), SYNC_OK);
    CHECK_EQ_INT(fake_conn_frames(a), 2);
    /* the owner's fenced save is the store: nothing through the adapter, not even on sync */
    CHECK_EQ_INT(sync_engine_sync(engine), SYNC_OK);
    CHECK_EQ_INT(store.saves, saves_before);
    /* unlinked it is a plain engine again */
    CHECK_EQ_INT(sync__engine_set_cluster_link(engine, NULL), SYNC_OK);
    CHECK_EQ_INT(sync_engine_set_state_json(engine, "{\"counter\":9}", 1), SYNC_OK);
    CHECK_EQ_INT(store.saves, saves_before + 1);
    CHECK_EQ_STR(state_json(engine), "{\"counter\":9}");
    fake_conn_release(a);
    sync_engine_free(engine);
    fake_store_cleanup(&store);
    pthread_mutex_destroy(&f.lock);
}

/* ---- the owner's side ----------------------------------------------------------------------- */

typedef struct outcome {
    atomic_int calls;
    int status;
    char state[256];
    int state_null;
    int reply_count;
    char replies[4][200];
    pthread_t thread;
} outcome;

static void done(void *userdata, sync__remote_result *result)
{
    outcome *o = userdata;
    o->status = result->status;
    o->state_null = result->state_json == NULL;
    snprintf(o->state, sizeof o->state, "%s", result->state_json ? result->state_json : "");
    o->reply_count = (int)result->reply_count;
    for (size_t i = 0; i < result->reply_count && i < 4; i++) {
        CHECK_EQ_INT(strlen(result->replies[i]), result->reply_lens[i]);
        snprintf(o->replies[i], sizeof o->replies[i], "%s", result->replies[i]);
    }
    o->thread = pthread_self();
    sync__remote_result_clear(result);
    CHECK(result->replies == NULL && result->state_json == NULL && result->reply_count == 0);
    o->calls++;
}

static int apply(sync_engine *engine, const char *text, uint64_t conn_id, const char *identity,
                 outcome *o)
{
    memset(o, 0, sizeof *o);
    sync__remote_msg msg = {text, strlen(text), identity, conn_id, NULL};
    return sync__engine_apply_remote(engine, &msg, done, o);
}

static void test_apply_remote_runs_the_pipeline_without_committing(void)
{
    sync_engine *engine = new_engine("{\"counter\":1}", 1, NULL, 0);
    fake_conn *a = fake_conn_open(engine);
    outcome o;
    /* validator and middleware ran: the amount is doubled */
    CHECK_EQ_INT(apply(engine, "{\"type\":\"increment\",\"amount\":2}", 4242, NULL, &o), SYNC_OK);
    CHECK_EQ_INT(o.calls, 1); /* nothing pended: done ran inside the call */
    CHECK_EQ_INT(o.status, SYNC_OK);
    CHECK_EQ_STR(o.state, "{\"counter\":5}");
    CHECK_EQ_INT(o.reply_count, 0);
    CHECK_EQ_INT(handler_runs, 1);
    /* committed, broadcast: nothing */
    CHECK_EQ_INT(sync_engine_get_version(engine), 0);
    CHECK_EQ_STR(state_json(engine), "{\"counter\":1}");
    CHECK_EQ_INT(fake_conn_frames(a), 1);

    /* the handler sees the sender's identity and id; its replies are captured */
    CHECK_EQ_INT(apply(engine, "{\"type\":\"probe\",\"amount\":0}", 4242, "{\"user\":\"ann\"}", &o),
                 SYNC_OK);
    CHECK_EQ_INT(o.calls, 1);
    CHECK_EQ_INT(o.status, SYNC_OK);
    CHECK_EQ_STR(o.state, "{\"counter\":1,\"probed\":true}");
    CHECK_EQ_INT(seen_conn_id, 4242);
    CHECK_EQ_STR(seen_identity, "{\"user\":\"ann\"}");
    CHECK(!seen_userdata); /* as for the server's connections: nothing of the stand-in's own */
    REQUIRE(o.reply_count == 2);
    CHECK_EQ_STR(o.replies[0], "{\"type\":\"probe\",\"conn\":4242}");
    CHECK_EQ_STR(o.replies[1], "second");
    CHECK_EQ_INT(fake_conn_frames(a), 1);
    CHECK_EQ_INT(sync_engine_get_version(engine), 0);

    /* an injected message runs without a connection, as on its node */
    CHECK_EQ_INT(apply(engine, "{\"type\":\"probe\",\"amount\":0}", 0, NULL, &o), SYNC_OK);
    CHECK_EQ_INT(o.status, SYNC_OK);
    CHECK(seen_conn_null);
    CHECK_EQ_INT(o.reply_count, 0);

    /* a handler that writes nothing changes nothing */
    CHECK_EQ_INT(apply(engine, "{\"type\":\"noop\",\"amount\":0}", 7, NULL, &o), SYNC_OK);
    CHECK_EQ_INT(o.calls, 1);
    CHECK_EQ_INT(o.status, SYNC_OK);
    CHECK(o.state_null);

    /* bad calls: done never runs */
    sync__remote_msg msg = {"{}", 2, NULL, 1, NULL};
    CHECK_EQ_INT(sync__engine_apply_remote(NULL, &msg, done, &o), SYNC_EINVAL);
    CHECK_EQ_INT(sync__engine_apply_remote(engine, NULL, done, &o), SYNC_EINVAL);
    CHECK_EQ_INT(sync__engine_apply_remote(engine, &msg, NULL, &o), SYNC_EINVAL);
    msg.text = NULL;
    CHECK_EQ_INT(sync__engine_apply_remote(engine, &msg, done, &o), SYNC_EINVAL);
    CHECK_EQ_INT(o.calls, 1);
    fake_conn_release(a);
    sync_engine_free(engine);
}

/* The refusal's error frame, as the sender would have got it. */
static void check_error_frame(const char *text, const char *context, const char *says)
{
    cJSON *frame = cJSON_Parse(text);
    CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(frame, "type")), "error");
    CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(frame, "context")), context);
    const char *why = cJSON_GetStringValue(cJSON_GetObjectItem(frame, "error"));
    CHECK(why && strstr(why, says));
    cJSON_Delete(frame);
}

static void test_apply_remote_refusals(void)
{
    sync_engine *engine = new_engine("{\"counter\":1}", 1, NULL, 0);
    outcome o;
    CHECK_EQ_INT(apply(engine, "{\"type\":\"increment\"}", 31, NULL, &o), SYNC_OK);
    CHECK_EQ_INT(o.calls, 1);
    CHECK_EQ_INT(o.status, SYNC_EREJECTED);
    CHECK(o.state_null);
    REQUIRE(o.reply_count == 1);
    check_error_frame(o.replies[0], "validator", "amount must be a number");
    CHECK_EQ_INT(errors, 1);
    CHECK_EQ_INT(last_error_status, SYNC_EREJECTED);
    CHECK_EQ_INT(last_error_conn, 31);

    CHECK_EQ_INT(apply(engine, "{\"type\":\"fail\",\"amount\":1}", 32, NULL, &o), SYNC_OK);
    CHECK_EQ_INT(o.status, SYNC_EHANDLER);
    CHECK(o.state_null);
    REQUIRE(o.reply_count == 1);
    check_error_frame(o.replies[0], "handler:fail", "cannot do that");
    CHECK_EQ_INT(last_error_conn, 32);

    CHECK_EQ_INT(apply(engine, "{\"type\":", 33, NULL, &o), SYNC_OK);
    CHECK_EQ_INT(o.status, SYNC_EPARSE);
    CHECK_EQ_INT(o.reply_count, 1);
    CHECK_EQ_INT(apply(engine, "[1]", 33, NULL, &o), SYNC_OK);
    CHECK_EQ_INT(o.status, SYNC_EREJECTED); /* the validator reads no amount in an array */
    CHECK_EQ_INT(apply(engine, "{\"type\":\"nobody\",\"amount\":1}", 33, NULL, &o), SYNC_OK);
    CHECK_EQ_INT(o.status, SYNC_ENOHANDLER);
    CHECK_EQ_INT(o.reply_count, 1);
    CHECK_EQ_INT(errors, 5);
    /* refused without running (a failed owner's claimed entry): no step runs, a dropped message */
    int runs = handler_runs;
    memset(&o, 0, sizeof o);
    sync__remote_msg refused = {"{\"type\":\"increment\",\"amount\":1}", 31, NULL, 34,
                                "the owner failed"};
    CHECK_EQ_INT(sync__engine_apply_remote(engine, &refused, done, &o), SYNC_OK);
    CHECK_EQ_INT(o.calls, 1);
    CHECK_EQ_INT(o.status, SYNC_ESTATE);
    CHECK(o.state_null);
    CHECK_EQ_INT(handler_runs, runs);
    REQUIRE(o.reply_count == 1);
    check_error_frame(o.replies[0], "message", "the owner failed");
    CHECK_EQ_INT(errors, 6);
    CHECK_EQ_INT(last_error_conn, 34);
    CHECK_EQ_INT(sync_engine_get_version(engine), 0);
    CHECK_EQ_STR(state_json(engine), "{\"counter\":1}");
    sync_engine_free(engine);

    /* without reply_errors the status is all there is */
    engine = new_engine("{\"counter\":1}", 0, NULL, 0);
    CHECK_EQ_INT(apply(engine, "{\"type\":\"increment\"}", 31, NULL, &o), SYNC_OK);
    CHECK_EQ_INT(o.status, SYNC_EREJECTED);
    CHECK_EQ_INT(o.reply_count, 0);
    CHECK_EQ_INT(errors, 1);
    memset(&o, 0, sizeof o);
    CHECK_EQ_INT(sync__engine_apply_remote(engine, &refused, done, &o), SYNC_OK);
    CHECK_EQ_INT(o.status, SYNC_ESTATE);
    CHECK_EQ_INT(o.reply_count, 0);
    CHECK_EQ_INT(errors, 2);
    sync_engine_free(engine);
}

typedef struct completion {
    sync_msg *msg;
    int write;
    int status;
    int rc;
} completion;

static void *complete_thread(void *arg)
{
    completion *c = arg;
    if (c->write) {
        cJSON *state = sync_msg_state_mut(c->msg);
        cJSON_AddStringToObject(state, "late", "yes");
        sync_msg_reply(c->msg, "from the thread", 15);
    }
    c->rc = sync_msg_complete(c->msg, c->status);
    return NULL;
}

static void test_apply_remote_async_and_timeout(void)
{
    sync_engine *engine = new_engine("{\"counter\":1}", 1, NULL, 0);
    outcome o;
    CHECK_EQ_INT(apply(engine, "{\"type\":\"park\",\"amount\":1}", 5, NULL, &o), SYNC_OK);
    CHECK_EQ_INT(o.calls, 0);
    REQUIRE(parked != NULL);
    CHECK_EQ_INT(sync_conn_id(sync_msg_conn(parked)), 5);
    completion c = {parked, 1, SYNC_OK, 99};
    pthread_t t;
    pthread_create(&t, NULL, complete_thread, &c);
    pthread_join(t, NULL);
    CHECK_EQ_INT(c.rc, SYNC_OK);
    CHECK_EQ_INT(o.calls, 1);
    CHECK(pthread_equal(o.thread, t));
    CHECK_EQ_INT(o.status, SYNC_OK);
    CHECK_EQ_STR(o.state, "{\"counter\":1,\"late\":\"yes\"}");
    REQUIRE(o.reply_count == 1);
    CHECK_EQ_STR(o.replies[0], "from the thread");
    CHECK_EQ_INT(sync_engine_get_version(engine), 0);

    /* a failed completion is a refusal */
    CHECK_EQ_INT(apply(engine, "{\"type\":\"park\",\"amount\":1}", 5, NULL, &o), SYNC_OK);
    c = (completion){parked, 1, SYNC_EREJECTED, 99};
    pthread_create(&t, NULL, complete_thread, &c);
    pthread_join(t, NULL);
    CHECK_EQ_INT(o.calls, 1);
    CHECK_EQ_INT(o.status, SYNC_EREJECTED);
    CHECK(o.state_null);
    /* the reply made before the refusal, then the error frame */
    REQUIRE(o.reply_count == 2);
    CHECK_EQ_STR(o.replies[0], "from the thread");
    check_error_frame(o.replies[1], "handler:park", "");
    sync_engine_free(engine);

    /* step_timeout_ms: the engine's timer thread refuses it, a late completion is told */
    engine = new_engine("{\"counter\":1}", 1, NULL, 150);
    CHECK_EQ_INT(apply(engine, "{\"type\":\"park\",\"amount\":1}", 6, NULL, &o), SYNC_OK);
    sync_msg *late = parked;
    REQUIRE(late != NULL);
    for (int i = 0; o.calls == 0 && i < 10000; i++)
        sleep_ms(1);
    CHECK_EQ_INT(o.calls, 1);
    CHECK_EQ_INT(o.status, SYNC_ETIMEDOUT);
    CHECK(o.state_null);
    REQUIRE(o.reply_count == 1);
    check_error_frame(o.replies[0], "handler:park", "step_timeout_ms");
    CHECK_EQ_INT(sync_msg_complete(late, SYNC_OK), SYNC_ETIMEDOUT);
    CHECK_EQ_INT(o.calls, 1);
    sync_engine_free(engine);
}

/* Queued behind an adoption, a run sees the adopted state; done calls come in the queue's order. */
static void test_apply_remote_queued_behind_adoption(void)
{
    sync_engine *engine = new_engine("{\"counter\":1}", 1, NULL, 0);
    outcome first, second;
    CHECK_EQ_INT(apply(engine, "{\"type\":\"park\",\"amount\":1}", 5, NULL, &first), SYNC_OK);
    sync_msg *held = parked;
    REQUIRE(held != NULL);
    /* queued behind the held run */
    CHECK_EQ_INT(sync__engine_adopt_state(engine, cJSON_Parse("{\"counter\":10}"), 1),
                 SYNC_PENDING);
    CHECK_EQ_INT(apply(engine, "{\"type\":\"increment\",\"amount\":3}", 5, NULL, &second), SYNC_OK);
    CHECK_EQ_INT(first.calls + second.calls, 0);
    CHECK_EQ_INT(sync_engine_get_version(engine), 0);
    CHECK_EQ_INT(sync_msg_complete(held, SYNC_OK), SYNC_OK);
    CHECK_EQ_INT(first.calls, 1);
    CHECK(first.state_null); /* the parking handler wrote nothing */
    CHECK_EQ_INT(second.calls, 1);
    CHECK_EQ_STR(second.state, "{\"counter\":16}");
    CHECK_EQ_INT(sync_engine_get_version(engine), 1);
    CHECK_EQ_STR(state_json(engine), "{\"counter\":10}");
    sync_engine_free(engine);
}

/* A run dropped by dispose still gets its done (SYNC_ECLOSED); after it, the call is refused. */
static void test_apply_remote_and_dispose(void)
{
    sync_engine *engine = new_engine("{\"counter\":1}", 1, NULL, 0);
    outcome running, queued, refused;
    CHECK_EQ_INT(apply(engine, "{\"type\":\"park\",\"amount\":1}", 5, NULL, &running), SYNC_OK);
    sync_msg *held = parked;
    REQUIRE(held != NULL);
    CHECK_EQ_INT(apply(engine, "{\"type\":\"increment\",\"amount\":3}", 5, NULL, &queued), SYNC_OK);
    CHECK_EQ_INT(sync_engine_dispose(engine), SYNC_OK);
    CHECK_EQ_INT(queued.calls, 1);
    CHECK_EQ_INT(queued.status, SYNC_ECLOSED);
    CHECK_EQ_INT(running.calls, 0);
    CHECK_EQ_INT(apply(engine, "{\"type\":\"increment\",\"amount\":3}", 5, NULL, &refused),
                 SYNC_ECLOSED);
    sync_msg_complete(held, SYNC_OK);
    CHECK_EQ_INT(running.calls, 1);
    CHECK_EQ_INT(running.status, SYNC_ECLOSED);
    CHECK_EQ_INT(refused.calls, 0);
    sync_engine_free(engine);
}

/* ---- frames for one connection -------------------------------------------------------------- */

typedef struct conn_send {
    sync_engine *engine;
    uint64_t id;
    int rc;
} conn_send;

static void *conn_send_thread(void *arg)
{
    conn_send *s = arg;
    s->rc = sync__engine_send_to_conn(s->engine, s->id, "{\"type\":\"reply\"}", 16);
    return NULL;
}

static void test_send_to_conn(void)
{
    sync_engine *engine = new_engine("{\"counter\":1}", 1, NULL, 0);
    fake_conn *a = fake_conn_open(engine);
    fake_conn *b = fake_conn_open(engine);
    conn_send s = {engine, sync_conn_id(b->conn), 99};
    pthread_t t;
    pthread_create(&t, NULL, conn_send_thread, &s);
    pthread_join(t, NULL);
    CHECK_EQ_INT(s.rc, SYNC_OK);
    CHECK_EQ_INT(fake_conn_frames(a), 1);
    REQUIRE(fake_conn_frames(b) == 2);
    char type[32];
    CHECK_EQ_STR(fake_conn_frame_type(b, 1, type, sizeof type), "reply");
    CHECK_EQ_INT(sync__engine_send_to_conn(engine, 987654321, "x", 1), SYNC_ECLOSED);
    CHECK_EQ_INT(sync__engine_send_to_conn(engine, sync_conn_id(a->conn), NULL, 1), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_handle_close(engine, b->conn), SYNC_OK);
    CHECK_EQ_INT(sync__engine_send_to_conn(engine, sync_conn_id(b->conn), "x", 1), SYNC_ECLOSED);
    CHECK_EQ_INT(fake_conn_frames(b), 2);
    CHECK_EQ_INT(sync__engine_send_to_conn(engine, sync_conn_id(a->conn), "x", 1), SYNC_OK);
    CHECK_EQ_INT(fake_conn_frames(a), 2);
    fake_conn_release(a);
    fake_conn_release(b);
    sync_engine_free(engine);
}

/* ---- the epoch ------------------------------------------------------------------------------ */

static void test_epoch_reaches_v2_clients(void)
{
    sync_engine *engine = fixture_counter_engine(0);
    REQUIRE(engine);
    char before[SYNC__EPOCH_MAX + 1];
    sync__engine_get_epoch(engine, before);
    CHECK(strlen(before) >= 16);
    CHECK_EQ_INT(sync__engine_set_epoch(engine, before), SYNC_OK);
    sync_server *server = fixture_server(NULL, "/", engine);
    REQUIRE(server);
    int port = sync_server_port(server);
    /* a v2 client joined: from now on the engine keeps its history */
    char *text = fixture_v2_first_frame(port, "");
    CHECK(text && strstr(text, before));
    free(text);
    fixture_set_padded_counter(engine, 1);
    fixture_set_padded_counter(engine, 2);
    char query[200];
    snprintf(query, sizeof query, "?since=1&epoch=%s", before);
    text = fixture_v2_first_frame(port, query);
    CHECK(text && strstr(text, "{\"type\":\"patch\",\"base\":1,\"version\":2,") == text);
    free(text);
    /* the same epoch again keeps the history */
    CHECK_EQ_INT(sync__engine_set_epoch(engine, before), SYNC_OK);
    text = fixture_v2_first_frame(port, query);
    CHECK(text && strstr(text, "{\"type\":\"patch\",\"base\":1,\"version\":2,") == text);
    free(text);

    CHECK_EQ_INT(sync__engine_set_epoch(engine, "room-epoch_7"), SYNC_OK);
    char now[SYNC__EPOCH_MAX + 1];
    sync__engine_get_epoch(engine, now);
    CHECK_EQ_STR(now, "room-epoch_7");
    text = fixture_v2_first_frame(port, "");
    CHECK(text && strstr(text, "\"version\":2,\"epoch\":\"room-epoch_7\"}"));
    free(text);
    /* a different epoch dropped the history: even in the new epoch, 1 is no base any more */
    text = fixture_v2_first_frame(port, "?since=1&epoch=room-epoch_7");
    CHECK(text && strstr(text, "{\"type\":\"initial_state\",") == text);
    free(text);
    text = fixture_v2_first_frame(port, query);
    CHECK(text && strstr(text, "{\"type\":\"initial_state\",") == text);
    free(text);
    /* and it goes on from there */
    fixture_set_padded_counter(engine, 3);
    text = fixture_v2_first_frame(port, "?since=2&epoch=room-epoch_7");
    CHECK(text && strstr(text, "{\"type\":\"patch\",\"base\":2,\"version\":3,") == text);
    free(text);

    char too_long[SYNC__EPOCH_MAX + 2];
    memset(too_long, 'a', sizeof too_long - 1);
    too_long[sizeof too_long - 1] = '\0';
    const char *bad[] = {NULL, "", "has space", "dot.", too_long};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_EQ_INT(sync__engine_set_epoch(engine, bad[i]), SYNC_EINVAL);
    CHECK_EQ_INT(sync__engine_set_epoch(NULL, "x"), SYNC_EINVAL);
    too_long[SYNC__EPOCH_MAX] = '\0';
    CHECK_EQ_INT(sync__engine_set_epoch(engine, too_long), SYNC_OK);
    sync__engine_get_epoch(engine, now);
    CHECK_EQ_STR(now, too_long);
    sync__engine_get_epoch(NULL, now);
    CHECK_EQ_STR(now, "");

    sync_server_stop(server);
    sync_server_free(server);
    sync_engine_free(engine);
}

int main(void)
{
    RUN(test_linked_engine_forwards_in_order_and_runs_nothing);
    RUN(test_forward_refusal_is_a_dropped_message);
    RUN(test_unlink_waits_for_a_running_forward);
    RUN(test_linked_state_changes_only_by_adoption);
    RUN(test_apply_remote_runs_the_pipeline_without_committing);
    RUN(test_apply_remote_refusals);
    RUN(test_apply_remote_async_and_timeout);
    RUN(test_apply_remote_queued_behind_adoption);
    RUN(test_apply_remote_and_dispose);
    RUN(test_send_to_conn);
    RUN(test_epoch_reaches_v2_clients);
    return check_summary();
}

/* Auth decided later (sync_request_defer / sync_request_complete), over real sockets: accepted
 * from another thread with the messages sent meanwhile applied in order, refused with 4000 +
 * status, decided inside the callback or elsewhere before it returned, a client that leaves first,
 * the timeout, too much sent while waiting, a stop while waiting, many decisions from another
 * thread while clients reset, and bad arguments. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "server_fixture.h"
#include "ws_client.h"

/* What the auth callback does with each request. */
enum auth_mode {
    DEFER,                /* keep it for the test thread */
    DEFER_ACCEPT_AT_ONCE, /* defer, then complete(0) before returning */
    DEFER_REFUSE_AT_ONCE, /* defer, then complete(403) before returning */
    PENDING_WITHOUT_DEFER,
    DEFER_QUEUE,                     /* append to `queue` for a decider thread */
    DEFER_DECIDED_ELSEWHERE_AT_ONCE, /* another thread completes with `elsewhere_status`, joined
                                        before the callback returns */
};

typedef struct auth_box {
    pthread_mutex_t lock;
    enum auth_mode mode;
    sync_request *waiting; /* the deferred request, for the test thread */
    int calls;
    sync_request *queue[256]; /* DEFER_QUEUE */
    int queued;
    int elsewhere_status; /* DEFER_DECIDED_ELSEWHERE_AT_ONCE */
} auth_box;

typedef struct elsewhere {
    sync_request *req;
    int status;
} elsewhere;

static void *complete_elsewhere(void *arg)
{
    elsewhere *e = arg;
    if (e->status == 0)
        sync_request_set_identity(e->req, "{\"user\":\"elsewhere\"}");
    sync_request_complete(e->req, e->status);
    return NULL;
}

static int deferring_auth(sync_request *req, void *userdata)
{
    auth_box *box = userdata;
    pthread_mutex_lock(&box->lock);
    box->calls++;
    enum auth_mode mode = box->mode;
    pthread_mutex_unlock(&box->lock);
    if (mode == PENDING_WITHOUT_DEFER)
        return SYNC_PENDING;
    sync_request *kept = sync_request_defer(req);
    if (!kept)
        return 500;
    if (mode == DEFER_ACCEPT_AT_ONCE) {
        sync_request_set_identity(kept, "{\"user\":\"early\"}");
        sync_request_complete(kept, 0);
    } else if (mode == DEFER_REFUSE_AT_ONCE) {
        sync_request_complete(kept, 403);
    } else if (mode == DEFER_DECIDED_ELSEWHERE_AT_ONCE) {
        pthread_mutex_lock(&box->lock);
        elsewhere e = {kept, box->elsewhere_status};
        pthread_mutex_unlock(&box->lock);
        pthread_t thread;
        if (pthread_create(&thread, NULL, complete_elsewhere, &e) != 0)
            return sync_request_complete(kept, 503), SYNC_PENDING;
        pthread_join(thread, NULL);
    } else if (mode == DEFER_QUEUE) {
        pthread_mutex_lock(&box->lock);
        if (box->queued < 256)
            box->queue[box->queued++] = kept;
        else
            sync_request_complete(kept, 503);
        pthread_mutex_unlock(&box->lock);
    } else {
        pthread_mutex_lock(&box->lock);
        box->waiting = kept;
        pthread_mutex_unlock(&box->lock);
    }
    return SYNC_PENDING;
}

/* The request the callback deferred, once it did (NULL after 3 s). */
static sync_request *take_waiting(auth_box *box)
{
    for (int i = 0; i < 300; i++) {
        pthread_mutex_lock(&box->lock);
        sync_request *req = box->waiting;
        box->waiting = NULL;
        pthread_mutex_unlock(&box->lock);
        if (req)
            return req;
        usleep(10000);
    }
    return NULL;
}

typedef struct fixture {
    auth_box box;
    sync_engine *engine;
    sync_server *server;
    int port;
} fixture;

static int setup(fixture *f, enum auth_mode mode, int auth_timeout_ms, size_t max_message_bytes)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->box.lock, NULL);
    f->box.mode = mode;
    f->engine = fixture_counter_engine(0);
    if (!f->engine)
        return -1;
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.auth = deferring_auth;
    opts.auth_userdata = &f->box;
    opts.auth_timeout_ms = auth_timeout_ms;
    opts.max_message_bytes = max_message_bytes;
    opts.log = fixture_quiet_log;
    f->server = fixture_server(&opts, "/", f->engine);
    if (!f->server)
        return -1;
    f->port = sync_server_port(f->server);
    return 0;
}

static void teardown(fixture *f)
{
    sync_server_free(f->server);
    sync_engine_free(f->engine);
    pthread_mutex_destroy(&f->box.lock);
}

/* A client upgraded and waiting for its decision, and the request the callback deferred. */
static ws_client *connect_waiting(fixture *f, sync_request **req)
{
    ws_client *c = ws_connect(f->port, "/", NULL, NULL);
    *req = c ? take_waiting(&f->box) : NULL;
    if (c && !*req) {
        ws_client_free(c);
        c = NULL;
    }
    return c;
}

/* Once the client is gone the decision finds nobody: SYNC_ECLOSED, the request is freed, and
 * nothing the client sent was applied. */
static void expect_late_decision_dropped(fixture *f, sync_request *req)
{
    fixture_open_connections(f->port, 0);
    CHECK_EQ_INT(sync_request_complete(req, 0), SYNC_ECLOSED);
    CHECK(strstr(sync_error_last(), "left before the auth decision"));
    CHECK_EQ_INT(sync_engine_connection_count(f->engine), 0);
    CHECK_EQ_INT(fixture_counter_value(f->engine), 0);
}

static void test_accepted_later_applies_what_was_sent_meanwhile(void)
{
    fixture f;
    REQUIRE(setup(&f, DEFER, 0, 0) == 0);
    int status = 0;
    ws_client *c = ws_connect(f.port, "/", NULL, &status);
    REQUIRE(c);
    CHECK_EQ_INT(status, 101); /* upgraded at once; the decision comes later */
    sync_request *req = take_waiting(&f.box);
    REQUIRE(req);
    CHECK_EQ_STR(sync_request_path(req), "/");
    CHECK_EQ_STR(sync_request_peer(req), "127.0.0.1");
    CHECK(sync_request_header(req, "host") == NULL); /* headers are gone after the callback */

    CHECK_EQ_INT(ws_send_text(c, "{\"type\":\"increment\",\"amount\":2}"), 0);
    CHECK_EQ_INT(ws_send_text(c, "{\"type\":\"increment\",\"amount\":3}"), 0);
    CHECK_EQ_INT(ws_send_text(c, "{\"type\":\"whoami\"}"), 0);
    char *text = ws_read_text(c, 300);
    CHECK(text == NULL); /* nothing before the decision: not even the initial state */
    free(text);
    CHECK_EQ_INT(sync_engine_connection_count(f.engine), 0);
    CHECK_EQ_INT(fixture_counter_value(f.engine), 0);

    CHECK_EQ_INT(sync_request_set_identity(req, "{\"user\":\"ann\"}"), SYNC_OK);
    CHECK_EQ_INT(sync_request_complete(req, 0), SYNC_OK);
    text = ws_read_text(c, 3000);
    CHECK(text && strstr(text, "initial_state") && ws_json_int(text, "counter") == 0);
    free(text);
    /* then the held messages, in order: 2, 5, and whoami with the identity given */
    int saw_identity = 0;
    long long last = 0;
    for (int i = 0; i < 6 && !(saw_identity && last == 5); i++) {
        text = ws_read_text(c, 3000);
        if (!text)
            break;
        if (strcmp(text, "{\"user\":\"ann\"}") == 0)
            saw_identity = 1;
        else if (ws_json_int(text, "counter") >= 0)
            last = ws_json_int(text, "counter");
        free(text);
    }
    CHECK(saw_identity);
    CHECK_EQ_INT(last, 5);
    CHECK_EQ_INT(fixture_counter_value(f.engine), 5);
    CHECK_EQ_INT(sync_engine_connection_count(f.engine), 1);
    ws_client_free(c);
    teardown(&f);
}

static void test_refused_later_closes_with_4000_plus_status(void)
{
    fixture f;
    REQUIRE(setup(&f, DEFER, 0, 0) == 0);
    sync_request *req = NULL;
    ws_client *c = connect_waiting(&f, &req);
    REQUIRE(c);
    CHECK_EQ_INT(ws_send_text(c, "{\"type\":\"increment\",\"amount\":9}"), 0);
    CHECK_EQ_INT(sync_request_complete(req, 401), SYNC_OK);
    CHECK_EQ_INT(ws_wait_close(c, 3000), 4401);
    ws_client_free(c);

    /* a status that is no HTTP error refuses as 403 */
    c = connect_waiting(&f, &req);
    REQUIRE(c);
    CHECK_EQ_INT(sync_request_complete(req, 200), SYNC_OK);
    CHECK_EQ_INT(ws_wait_close(c, 3000), 4403);
    ws_client_free(c);
    CHECK_EQ_INT(fixture_counter_value(f.engine),
                 0); /* what the refused client sent was never applied */
    CHECK_EQ_INT(sync_engine_connection_count(f.engine), 0);
    teardown(&f);
}

static void test_decided_inside_the_callback(void)
{
    fixture f;
    REQUIRE(setup(&f, DEFER_ACCEPT_AT_ONCE, 0, 0) == 0);
    ws_client *c = ws_connect(f.port, "/", NULL, NULL);
    REQUIRE(c);
    fixture_expect_joined(c, "{\"user\":\"early\"}");
    ws_client_free(c);

    /* a refusal that came before the upgrade finished is still an HTTP refusal */
    pthread_mutex_lock(&f.box.lock);
    f.box.mode = DEFER_REFUSE_AT_ONCE;
    pthread_mutex_unlock(&f.box.lock);
    int status = 0;
    CHECK(ws_connect(f.port, "/", NULL, &status) == NULL);
    CHECK_EQ_INT(status, 403);

    /* SYNC_PENDING without sync_request_defer(): nothing could decide, so it is refused */
    pthread_mutex_lock(&f.box.lock);
    f.box.mode = PENDING_WITHOUT_DEFER;
    pthread_mutex_unlock(&f.box.lock);
    CHECK(ws_connect(f.port, "/", NULL, &status) == NULL);
    CHECK_EQ_INT(status, 500);
    teardown(&f);
}

/* A decision from another thread is a close code (or a join) even when it beats the callback's
 * return: whether it does is a race, and the client must not see it. */
static void test_decided_elsewhere_before_the_callback_returned(void)
{
    fixture f;
    REQUIRE(setup(&f, DEFER_DECIDED_ELSEWHERE_AT_ONCE, 0, 0) == 0);
    f.box.elsewhere_status = 0;
    ws_client *c = ws_connect(f.port, "/", NULL, NULL);
    REQUIRE(c);
    fixture_expect_joined(c, "{\"user\":\"elsewhere\"}");
    ws_client_free(c);

    pthread_mutex_lock(&f.box.lock);
    f.box.elsewhere_status = 429;
    pthread_mutex_unlock(&f.box.lock);
    int status = 0;
    c = ws_connect(f.port, "/", NULL, &status);
    CHECK_EQ_INT(status, 101);
    if (c) {
        CHECK_EQ_INT(ws_send_text(c, "{\"type\":\"increment\",\"amount\":3}"), 0);
        CHECK_EQ_INT(ws_wait_close(c, 3000), 4429);
        ws_client_free(c);
    }
    CHECK_EQ_INT(fixture_counter_value(f.engine), 0);
    CHECK_EQ_INT(sync_engine_connection_count(f.engine), 0);
    teardown(&f);
}

static void test_client_leaves_before_the_decision(void)
{
    fixture f;
    REQUIRE(setup(&f, DEFER, 0, 0) == 0);
    sync_request *req = NULL;
    ws_client *c = connect_waiting(&f, &req);
    REQUIRE(c);
    CHECK_EQ_INT(ws_send_text(c, "{\"type\":\"increment\",\"amount\":1}"), 0); /* held */
    struct linger hard = {1, 0};
    setsockopt(ws_client_fd(c), SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
    ws_client_free(c);
    expect_late_decision_dropped(&f, req);
    teardown(&f);
}

static void test_undecided_connection_times_out(void)
{
    fixture f;
    REQUIRE(setup(&f, DEFER, 300, 0) == 0);
    sync_request *req = NULL;
    ws_client *c = connect_waiting(&f, &req);
    REQUIRE(c);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_EQ_INT(ws_wait_close(c, 5000), 4408);
    long long ms = check_elapsed_ms(&t0);
    CHECK(ms >= 200 && ms < 3000);
    ws_client_free(c);
    expect_late_decision_dropped(&f, req);
    teardown(&f);
}

static void test_too_much_sent_while_waiting(void)
{
    fixture f;
    REQUIRE(setup(&f, DEFER, 0, 1024) == 0);
    sync_request *req = NULL;
    ws_client *c = connect_waiting(&f, &req);
    REQUIRE(c);
    char msg[600];
    snprintf(msg, sizeof msg, "{\"type\":\"increment\",\"pad\":\"%0500d\"}", 0);
    CHECK_EQ_INT(ws_send_text(c, msg), 0);
    CHECK_EQ_INT(ws_send_text(c, msg), 0); /* over 1024 bytes held: closed */
    CHECK_EQ_INT(ws_wait_close(c, 3000), 1008);
    ws_client_free(c);
    expect_late_decision_dropped(&f, req);
    teardown(&f);
}

static void test_stop_while_waiting(void)
{
    fixture f;
    REQUIRE(setup(&f, DEFER, 0, 0) == 0);
    sync_request *req = NULL;
    ws_client *c = connect_waiting(&f, &req);
    REQUIRE(c);
    CHECK_EQ_INT(sync_server_stop(f.server), SYNC_OK);
    CHECK_EQ_INT(ws_wait_close(c, 3000), 1001);
    ws_client_free(c);
    sync_server_free(f.server);
    f.server = NULL;
    /* decided after the server is gone: dropped, never touching it */
    CHECK_EQ_INT(sync_request_complete(req, 0), SYNC_ECLOSED);
    teardown(&f);
}

/* Decides every queued request from its own thread as it comes: client i ("?i=N") is refused
 * when i % 3 == 0, accepted otherwise; counts what sync_request_complete said. */
typedef struct decider {
    auth_box *box;
    int expected;
    int decided, closed, failed;
} decider;

static void *decide_all(void *arg)
{
    decider *d = arg;
    for (int spins = 0; d->decided < d->expected && spins < 3000; spins++) {
        pthread_mutex_lock(&d->box->lock);
        sync_request *req = d->decided < d->box->queued ? d->box->queue[d->decided] : NULL;
        pthread_mutex_unlock(&d->box->lock);
        if (!req) {
            usleep(2000);
            continue;
        }
        int i = atoi(sync_request_query(req) + 2);
        int rc = sync_request_complete(req, i % 3 == 0 ? 403 : 0);
        d->closed += rc == SYNC_ECLOSED;
        d->failed += rc != SYNC_OK && rc != SYNC_ECLOSED;
        d->decided++;
        if (i % 4 == 0)
            usleep(500);
    }
    return NULL;
}

/* Many clients waiting at once, decided from another thread while some of them reset: each
 * decision reaches its own client (accepted ones get the state, refused ones 4403), the ones that
 * left are dropped, nothing leaks (ASan) and nothing races (TSan). */
static void test_many_decisions_from_another_thread(void)
{
    enum { N = 90 };
    fixture f;
    REQUIRE(setup(&f, DEFER_QUEUE, 0, 0) == 0);
    decider d = {&f.box, N, 0, 0, 0};
    pthread_t thread;
    REQUIRE(pthread_create(&thread, NULL, decide_all, &d) == 0);
    ws_client *clients[N] = {0};
    for (int i = 0; i < N; i++) {
        char route[32];
        snprintf(route, sizeof route, "/?i=%d", i);
        clients[i] = ws_connect(f.port, route, NULL, NULL);
        CHECK(clients[i] != NULL);
        if (clients[i] && i % 5 == 0) { /* leaves at once, decided or not */
            struct linger hard = {1, 0};
            setsockopt(ws_client_fd(clients[i]), SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
            ws_client_free(clients[i]);
            clients[i] = NULL;
        }
    }
    pthread_join(thread, NULL);
    CHECK_EQ_INT(d.decided, N);
    CHECK_EQ_INT(d.failed, 0);
    int accepted = 0;
    for (int i = 0; i < N; i++) {
        if (!clients[i])
            continue;
        if (i % 3 == 0) {
            CHECK_EQ_INT(ws_wait_close(clients[i], 3000), 4403);
        } else {
            char *text = ws_read_text(clients[i], 3000);
            CHECK(text && strstr(text, "initial_state"));
            free(text);
            accepted++;
        }
    }
    CHECK(d.closed <= N / 5 + 1);
    CHECK_EQ_INT(sync_engine_connection_count(f.engine), accepted);
    for (int i = 0; i < N; i++)
        ws_client_free(clients[i]);
    teardown(&f);
}

static void test_misuse(void)
{
    CHECK(sync_request_defer(NULL) == NULL);
    CHECK_EQ_INT(sync_request_complete(NULL, 0), SYNC_EINVAL);
    sync_server_options bad = SYNC_SERVER_OPTIONS_INIT;
    bad.auth_timeout_ms = -1;
    sync_server *none = NULL;
    CHECK_EQ_INT(sync_server_new(&none, &bad), SYNC_EINVAL);
    CHECK(strstr(sync_error_last(), "auth_timeout_ms is negative"));
}

int main(void)
{
    RUN(test_accepted_later_applies_what_was_sent_meanwhile);
    RUN(test_refused_later_closes_with_4000_plus_status);
    RUN(test_decided_inside_the_callback);
    RUN(test_decided_elsewhere_before_the_callback_returned);
    RUN(test_client_leaves_before_the_decision);
    RUN(test_undecided_connection_times_out);
    RUN(test_too_much_sent_while_waiting);
    RUN(test_stop_while_waiting);
    RUN(test_many_decisions_from_another_thread);
    RUN(test_misuse);
    return check_summary();
}

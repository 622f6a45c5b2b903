/* Engines used from other threads while the server runs: clients send increments from their
 * own threads while foreign threads inject messages, set the state and broadcast text. Every
 * client must end on the final state. Run under TSan too (label "threads"). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "server_fixture.h"
#include "ws_client.h"

enum { CLIENTS = 4, PER_CLIENT = 150, INJECTS = 150, BROADCASTS = 50 };

static sync_engine *engine;
static int port;
static atomic_int sender_failures;

static void *sender(void *arg)
{
    (void)arg;
    ws_client *c = ws_connect(port, "/", NULL, NULL);
    if (!c) {
        atomic_fetch_add(&sender_failures, 1);
        return NULL;
    }
    for (int i = 0; i < PER_CLIENT; i++)
        if (ws_send_text(c, "{\"type\":\"increment\"}") != 0)
            atomic_fetch_add(&sender_failures, 1);
    /* read everything (so the server never blocks on us) until the final count shows */
    long long want = CLIENTS * PER_CLIENT + INJECTS;
    int ok = 0;
    for (int i = 0; i < 100000 && !ok; i++) {
        char *text = ws_read_text(c, 5000);
        if (!text)
            break;
        ok = ws_json_int(text, "counter") == want;
        free(text);
    }
    if (!ok)
        atomic_fetch_add(&sender_failures, 1);
    ws_client_free(c);
    return NULL;
}

static void *injector(void *arg)
{
    (void)arg;
    for (int i = 0; i < INJECTS; i++) {
        const char *msg = "{\"type\":\"increment\"}";
        sync_engine_inject(engine, msg, strlen(msg));
        if (i % 3 == 0) {
            const char *note = "{\"type\":\"note\"}";
            sync_engine_broadcast_text(engine, note, strlen(note));
        }
    }
    return NULL;
}

static void test_foreign_threads_while_clients_send(void)
{
    sync_server *server = fixture_counter_server(0, NULL, "/", &engine);
    REQUIRE(server);
    port = sync_server_port(server);

    pthread_t senders[CLIENTS], inject;
    for (int i = 0; i < CLIENTS; i++)
        REQUIRE(pthread_create(&senders[i], NULL, sender, NULL) == 0);
    REQUIRE(pthread_create(&inject, NULL, injector, NULL) == 0);
    pthread_join(inject, NULL);
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(senders[i], NULL);
    CHECK_EQ_INT(atomic_load(&sender_failures), 0);
    CHECK_EQ_INT(sync_engine_get_version(engine), CLIENTS * PER_CLIENT + INJECTS);
    sync_server_free(server);
    sync_engine_free(engine);
}

static void *state_setter(void *arg)
{
    (void)arg;
    char json[64];
    for (int i = 1; i <= 300; i++) {
        snprintf(json, sizeof json, "{\"counter\":%d}", i);
        sync_engine_set_state_json(engine, json, i % 2);
    }
    return NULL;
}

static void test_set_state_from_a_foreign_thread(void)
{
    sync_server *server = fixture_counter_server(0, NULL, "/", &engine);
    REQUIRE(server);
    port = sync_server_port(server);
    ws_client *clients[3];
    for (int i = 0; i < 3; i++) {
        clients[i] = ws_connect(port, "/", NULL, NULL);
        REQUIRE(clients[i]);
    }
    pthread_t setter;
    REQUIRE(pthread_create(&setter, NULL, state_setter, NULL) == 0);
    pthread_join(setter, NULL);
    for (int i = 0; i < 3; i++) {
        long long last = -1, prev = -1;
        int backwards = 0;
        for (int n = 0; n < 2000 && last != 300; n++) {
            char *text = ws_read_text(clients[i], 5000);
            if (!text)
                break;
            last = ws_json_int(text, "counter");
            backwards += last < prev;
            prev = last;
            free(text);
        }
        CHECK_EQ_INT(last, 300);
        CHECK_EQ_INT(backwards, 0);
        ws_client_free(clients[i]);
    }
    /* stop from a foreign thread while nothing is connected */
    CHECK_EQ_INT(sync_server_stop(server), SYNC_OK);
    sync_server_free(server);
    sync_engine_free(engine);
}

/* ---- a binding's batch: steps handed to another thread, finished with complete_next ---- */

enum { BATCH_MESSAGES = 40 };

/* The "host thread" of a binding: the validator hands each message's first step here, and the
 * worker finishes it and every next one it is handed back, as Python's runner and Node's main
 * thread do, taking a millisecond per message so that the service thread is idle meanwhile. */
static pthread_mutex_t batch_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t batch_cond = PTHREAD_COND_INITIALIZER;
static sync_msg *batch_posted;
static int batch_done;
static int batch_runs;

static int hand_off(sync_msg *msg, void *userdata)
{
    (void)userdata;
    pthread_mutex_lock(&batch_lock);
    batch_posted = msg;
    pthread_cond_signal(&batch_cond);
    pthread_mutex_unlock(&batch_lock);
    return SYNC_PENDING;
}

static void *batch_worker(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&batch_lock);
        while (!batch_posted && !batch_done)
            pthread_cond_wait(&batch_cond, &batch_lock);
        sync_msg *msg = batch_posted;
        batch_posted = NULL;
        if (msg)
            batch_runs++;
        pthread_mutex_unlock(&batch_lock);
        if (!msg)
            return NULL;
        while (msg) {
            struct timespec ms = {0, 1000000};
            nanosleep(&ms, NULL);
            sync_msg *next = NULL;
            void *next_userdata = NULL;
            if (sync_msg_complete_next(msg, SYNC_OK, &next, &next_userdata) != SYNC_OK)
                break;
            msg = next;
        }
    }
}

/* With a save before send (the demos' persist mode), the commits of a batch wake the service
 * thread once, when the batch is through and its flush can succeed: not once per message, each
 * for a flush that would fail while the rest of the batch waits. Every client still gets the
 * final state, saved. */
static void test_batch_on_another_thread_wakes_once_per_batch(void)
{
    char dir[] = "/tmp/libsync-batch-XXXXXX";
    REQUIRE(mkdtemp(dir) != NULL);
    char path[64];
    snprintf(path, sizeof path, "%s/state.sqlite", dir);
    sync_sqlite_options so = SYNC_SQLITE_OPTIONS_INIT;
    so.path = path;
    sync_adapter *adapter = NULL;
    REQUIRE(sync_adapter_sqlite_new(&adapter, &so) == SYNC_OK);
    sync_engine_options eo = SYNC_ENGINE_OPTIONS_INIT;
    eo.initial_state_json = "{\"counter\":0}";
    eo.adapter = adapter;
    eo.persist_mode = SYNC_PERSIST_BEFORE_SEND;
    engine = fixture_engine(&eo);
    REQUIRE(engine);
    REQUIRE(sync_engine_set_validator(engine, hand_off, NULL, NULL) == SYNC_OK);
    batch_done = 0;
    batch_runs = 0;
    pthread_t worker;
    REQUIRE(pthread_create(&worker, NULL, batch_worker, NULL) == 0);
    sync_server *server = fixture_server(NULL, "/", engine);
    REQUIRE(server);
    port = sync_server_port(server);
    ws_client *c = fixture_join(port, "/");
    REQUIRE(c);
    long long before = fixture_metric(port, "libsync_server_wakes_total");
    CHECK(before >= 0);
    for (int i = 0; i < BATCH_MESSAGES; i++)
        CHECK_EQ_INT(ws_send_text(c, "{\"type\":\"increment\"}"), 0);
    long long last = -1;
    for (int n = 0; n < 1000 && last != BATCH_MESSAGES; n++) {
        char *text = ws_read_text(c, 10000);
        if (!text)
            break;
        last = ws_json_int(text, "counter");
        free(text);
    }
    CHECK_EQ_INT(last, BATCH_MESSAGES);
    long long wakes = fixture_metric(port, "libsync_server_wakes_total") - before;
    pthread_mutex_lock(&batch_lock);
    int runs = batch_runs;
    pthread_mutex_unlock(&batch_lock);
    /* one wake per batch, and the batches are few (the first message's, then what queued
     * behind it): far fewer than the messages; told per message, it was one wake or more each */
    CHECK(runs >= 1 && runs < BATCH_MESSAGES / 4);
    CHECK(wakes >= 1);
    CHECK(wakes <= runs + 2);
    CHECK(wakes < BATCH_MESSAGES / 4);
    ws_client_free(c);
    sync_server_free(server);
    pthread_mutex_lock(&batch_lock);
    batch_done = 1;
    pthread_cond_signal(&batch_cond);
    pthread_mutex_unlock(&batch_lock);
    pthread_join(worker, NULL);
    sync_engine_free(engine);
    /* the state every client saw was saved first */
    REQUIRE(sync_adapter_sqlite_new(&adapter, &so) == SYNC_OK);
    eo.adapter = adapter;
    sync_engine *reread = fixture_engine(&eo);
    REQUIRE(reread);
    CHECK_EQ_INT(fixture_counter_value(reread), BATCH_MESSAGES);
    sync_engine_free(reread);
    unlink(path);
    char side[96];
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);
    rmdir(dir);
}

int main(void)
{
    RUN(test_foreign_threads_while_clients_send);
    RUN(test_set_state_from_a_foreign_thread);
    RUN(test_batch_on_another_thread_wakes_once_per_batch);
    return check_summary();
}

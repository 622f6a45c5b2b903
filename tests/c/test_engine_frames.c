/* Serialise once, send to many: one serialisation per version whatever the number of
 * connections; the version member in frames; versioning off. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine_counter.h"
#include "fake_conn.h"

#define CONNS 50

static uint64_t serialisations(sync_engine *e)
{
    sync_engine_stats stats = {.version = SYNC_ENGINE_STATS_VERSION};
    sync_engine_get_stats(e, &stats);
    return stats.serialisations;
}

static void once_per_version(void)
{
    fake_store store;
    fake_store_init(&store, NULL, 0);
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = "{\"counter\":0}";
    opts.adapter = fake_adapter_new(&store); /* the save shares the same text */
    sync_engine *e = counter_engine(&opts, NULL, 0);
    REQUIRE(e);
    fake_conn *conns[CONNS];
    for (int i = 0; i < CONNS; i++) {
        conns[i] = fake_conn_new();
        sync_engine_handle_open(e, conns[i]->conn);
    }
    CHECK_EQ_INT(serialisations(e), 1); /* every initial_state shares one text */
    for (int v = 1; v <= 10; v++) {
        counter_send(e, NULL, "increment", 1);
        sync_engine_broadcast_state(e);
        sync_engine_broadcast_state(e); /* the same version again: no new serialisation */
        CHECK_EQ_INT(serialisations(e), 1 + v);
    }
    CHECK_EQ_INT(store.saves, 10);
    sync_engine_stats stats = {.version = SYNC_ENGINE_STATS_VERSION};
    sync_engine_get_stats(e, &stats);
    CHECK_EQ_INT(stats.frames_out, CONNS * 21);
    CHECK_EQ_INT(stats.state_version, 10);
    CHECK_EQ_INT(stats.connections, CONNS);
    CHECK_EQ_INT(stats.state_bytes, strlen("{\"counter\":10}"));
    CHECK(stats.bytes_out > stats.frames_out * stats.state_bytes);
    for (int i = 0; i < CONNS; i++) {
        CHECK_EQ_INT(fake_conn_frames(conns[i]), 21);
        cJSON *last = fake_conn_frame_json(conns[i], 20);
        CHECK_EQ_INT(cJSON_GetObjectItem(last, "version")->valueint, 10);
        CHECK_EQ_INT(cJSON_GetObjectItem(cJSON_GetObjectItem(last, "data"), "counter")->valueint,
                     10);
        cJSON_Delete(last);
    }
    sync_engine_free(e);
    for (int i = 0; i < CONNS; i++)
        fake_conn_release(conns[i]);
    fake_store_cleanup(&store);
}

static void frame_shapes(void)
{
    /* Versioning is on by default, in C as in Python and Node: every state frame has "version". */
    sync_engine_options filled;
    REQUIRE(sync_engine_options_init(&filled, SYNC_ENGINE_OPTIONS_VERSION) == SYNC_OK);
    CHECK_EQ_INT(filled.enable_versioning, 1);
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = "{\"a\":[1,\"x\"]}";
    sync_engine *e = NULL;
    REQUIRE(sync_engine_new(&e, &opts) == SYNC_OK);
    fake_conn *c = fake_conn_open(e);
    sync_engine_set_state_json(e, "{\"b\":true}", 1);
    sync_engine_broadcast_text(e, "hello", 5);
    REQUIRE(fake_conn_frames(c) == 3);
    pthread_mutex_lock(&c->lock);
    CHECK_EQ_STR(c->frames[0],
                 "{\"type\":\"initial_state\",\"data\":{\"a\":[1,\"x\"]},\"version\":0}");
    CHECK_EQ_STR(c->frames[1], "{\"type\":\"state_update\",\"data\":{\"b\":true},\"version\":1}");
    CHECK_EQ_STR(c->frames[2], "hello");
    pthread_mutex_unlock(&c->lock);
    sync_engine_free(e);
    fake_conn_release(c);
}

static void versioning_off(void)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.enable_versioning = 0;
    opts.auto_broadcast = 1;
    sync_engine *e = counter_engine(&opts, NULL, 0);
    REQUIRE(e);
    fake_conn *c = fake_conn_open(e);
    counter_send(e, c->conn, "increment", 3);
    CHECK_EQ_INT(sync_engine_get_version(e), -1);
    REQUIRE(fake_conn_frames(c) == 2);
    pthread_mutex_lock(&c->lock);
    CHECK_EQ_STR(c->frames[0], "{\"type\":\"initial_state\",\"data\":{}}");
    CHECK_EQ_STR(c->frames[1], "{\"type\":\"state_update\",\"data\":{\"counter\":3}}");
    pthread_mutex_unlock(&c->lock);
    /* The state text still changes once per change (seq grows with versioning off). */
    sync_engine_stats stats = {.version = SYNC_ENGINE_STATS_VERSION};
    sync_engine_get_stats(e, &stats);
    CHECK_EQ_INT(stats.serialisations, 2);
    CHECK_EQ_INT(stats.state_version, -1);
    sync_engine_free(e);
    fake_conn_release(c);
}

static int reply_handler(sync_msg *msg, void *userdata)
{
    (void)userdata;
    const char *text = sync_msg_message_json(msg);
    return sync_msg_reply(msg, text, strlen(text));
}

static void replies_go_to_sender_only(void)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    sync_engine *e = NULL;
    REQUIRE(sync_engine_new(&e, &opts) == SYNC_OK);
    sync_engine_on(e, "echo", reply_handler, NULL, NULL);
    fake_conn *a = fake_conn_open(e);
    fake_conn *b = fake_conn_open(e);
    const char *text = "{ \"type\" : \"echo\", \"n\" : 1 }";
    CHECK_EQ_INT(sync_engine_handle_message(e, a->conn, text, strlen(text)), SYNC_OK);
    CHECK_EQ_INT(fake_conn_frames(a), 2);
    CHECK_EQ_INT(fake_conn_frames(b), 1);
    pthread_mutex_lock(&a->lock);
    CHECK_EQ_STR(a->frames[1], "{\"type\":\"echo\",\"n\":1}");
    pthread_mutex_unlock(&a->lock);
    CHECK_EQ_INT(sync_engine_get_version(e), 0); /* no state change, no version step */
    sync_engine_free(e);
    fake_conn_release(a);
    fake_conn_release(b);
}

int main(void)
{
    RUN(once_per_version);
    RUN(frame_shapes);
    RUN(versioning_off);
    RUN(replies_go_to_sender_only);
    return check_summary();
}

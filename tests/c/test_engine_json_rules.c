/* The JSON rules that keep libsync reading a text the way every other parser does, and keep the
 * state something JSON can carry: a change whose state holds NaN or an infinity (from a handler,
 * sync_msg_set_state, or sync_engine_set_state) fails like a failed handler and never reaches the
 * clients or the store as null; \u0000 in a string and duplicate member names are refused in
 * messages, states and stores alike. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "engine_counter.h"
#include "fake_conn.h"

static sync_engine *engine_with(hook_log *log, fake_store *store, const char *initial)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = initial;
    opts.enable_versioning = 1;
    opts.reply_errors = 1;
    opts.auto_broadcast = 1;
    opts.adapter = store ? fake_adapter_new(store) : NULL;
    opts.persist_mode = SYNC_PERSIST_ON_CHANGE;
    sync_engine *e = counter_engine(&opts, log, 0);
    if (!e)
        abort();
    return e;
}

static int frame_has(fake_conn *c, size_t i, const char *needle)
{
    cJSON *frame = fake_conn_frame_json(c, i);
    char *text = frame ? cJSON_PrintUnformatted(frame) : NULL;
    int found = text && strstr(text, needle) != NULL;
    cJSON_free(text);
    cJSON_Delete(frame);
    return found;
}

/* The reproduction: two increments of 1.7e308 would make the counter Infinity, which
 * clients and the store would only ever see as null. */
static void handler_overflow_rolls_back(void)
{
    hook_log log = {0};
    fake_store store;
    fake_store_init(&store, NULL, 0);
    sync_engine *e = engine_with(&log, &store, "{\"counter\":0}");
    fake_conn *c = fake_conn_new();
    REQUIRE(sync_engine_handle_open(e, c->conn) == SYNC_OK);
    const char *msg = "{\"type\":\"increment\",\"amount\":1.7e308}";
    CHECK_EQ_INT(sync_engine_handle_message(e, c->conn, msg, strlen(msg)), SYNC_OK);
    CHECK_EQ_INT(sync_engine_get_version(e), 1);
    CHECK_EQ_INT(store.saves, 1);
    size_t frames = fake_conn_frames(c);

    int rc = sync_engine_handle_message(e, c->conn, msg, strlen(msg));
    CHECK_EQ_INT(rc, SYNC_EINVAL);
    /* rolled back: state and version as after the first increment, nothing saved or sent */
    CHECK_EQ_INT(sync_engine_get_version(e), 1);
    CHECK(counter_value(e) == 1.7e308);
    CHECK_EQ_INT(store.saves, 1);
    CHECK(store.json && strstr(store.json, "null") == NULL);
    CHECK(store.json && strstr(store.json, "1.7") != NULL);
    char *json = sync_engine_get_state_json(e);
    CHECK(json && strstr(json, "null") == NULL);
    sync_free(json);
    /* reported like a failed handler, with the place and the value named */
    CHECK_EQ_INT(log.errors, 1);
    CHECK_EQ_INT(log.last_error_status, SYNC_EINVAL);
    CHECK_EQ_STR(log.last_error_context, "handler:increment");
    CHECK(strstr(log.last_error_message, "Infinity") != NULL);
    CHECK(strstr(log.last_error_message, "$.counter") != NULL);
    /* the sender gets an error frame and no state frame holds null */
    CHECK_EQ_INT(fake_conn_frames(c), frames + 1);
    CHECK(frame_has(c, frames, "\"type\":\"error\""));
    CHECK(frame_has(c, frames, "handler:increment"));
    for (size_t i = 0; i < fake_conn_frames(c); i++)
        CHECK(!frame_has(c, i, "null"));
    sync_engine_stats stats = {.version = SYNC_ENGINE_STATS_VERSION};
    sync_engine_get_stats(e, &stats);
    CHECK_EQ_INT(stats.messages_applied, 1);
    CHECK_EQ_INT(stats.messages_dropped, 1);
    CHECK_EQ_INT(stats.handler_errors, 1);
    /* the engine goes on: a finite change applies */
    CHECK_EQ_INT(counter_send(e, c->conn, "decrement", 1e308), SYNC_OK);
    CHECK_EQ_INT(sync_engine_get_version(e), 2);
    sync_engine_free(e);
    fake_conn_release(c);
    fake_store_cleanup(&store);
}

static double g_value;

static int set_value(sync_msg *msg, void *userdata)
{
    (void)userdata;
    cJSON *state = cJSON_CreateObject();
    cJSON *items = cJSON_AddArrayToObject(state, "items");
    cJSON_AddItemToArray(items, cJSON_CreateNumber(1));
    cJSON *item = cJSON_CreateObject();
    cJSON_AddNumberToObject(item, "price", g_value);
    cJSON_AddItemToArray(items, item);
    return sync_msg_set_state(msg, state);
}

static int add_twice(sync_msg *msg, void *userdata)
{
    (void)userdata;
    cJSON *state = sync_msg_state_mut(msg);
    /* the classic mistake: "adding" a member that is already there makes a second one */
    cJSON_AddNumberToObject(state, "counter", 5);
    return SYNC_OK;
}

static int g_pending_wanted;
static sync_msg *g_pending;

static int later_nan(sync_msg *msg, void *userdata)
{
    (void)userdata;
    cJSON_SetNumberValue(cJSON_GetObjectItem(sync_msg_state_mut(msg), "counter"), NAN);
    if (!g_pending_wanted)
        return SYNC_OK;
    g_pending = msg;
    return SYNC_PENDING;
}

static void every_handler_path_is_checked(void)
{
    const struct {
        const char *type;
        double value;
        int pending;
        const char *says;
    } cases[] = {
        {"set", INFINITY, 0, "$.items[1].price"},
        {"set", -INFINITY, 0, "-Infinity"},
        {"set", NAN, 0, "NaN"},
        {"dup", 0, 0, "duplicate name \"counter\" in the object at $"},
        {"nan", 0, 0, "NaN) at $.counter"},
        {"nan", 0, 1, "NaN) at $.counter"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        hook_log log = {0};
        fake_store store;
        fake_store_init(&store, NULL, 0);
        sync_engine *e = engine_with(&log, &store, "{\"counter\":1}");
        sync_engine_on(e, "set", set_value, NULL, NULL);
        sync_engine_on(e, "dup", add_twice, NULL, NULL);
        sync_engine_on(e, "nan", later_nan, NULL, NULL);
        fake_conn *c = fake_conn_open(e);
        g_value = cases[i].value;
        g_pending_wanted = cases[i].pending;
        g_pending = NULL;
        char text[64];
        snprintf(text, sizeof text, "{\"type\":\"%s\"}", cases[i].type);
        int rc = sync_engine_handle_message(e, c->conn, text, strlen(text));
        if (cases[i].pending) {
            CHECK_EQ_INT(rc, SYNC_PENDING);
            REQUIRE(g_pending);
            CHECK_EQ_INT(sync_msg_complete(g_pending, SYNC_OK), SYNC_OK);
        } else {
            CHECK_EQ_INT(rc, SYNC_EINVAL);
        }
        char *json = sync_engine_get_state_json(e);
        CHECK_EQ_STR(json, "{\"counter\":1}");
        sync_free(json);
        CHECK_EQ_INT(sync_engine_get_version(e), 0);
        CHECK_EQ_INT(store.saves, 0);
        CHECK_EQ_INT(log.errors, 1);
        CHECK_EQ_INT(log.last_error_status, SYNC_EINVAL);
        if (!strstr(log.last_error_message, cases[i].says))
            fprintf(stderr, "  case %zu: %s\n", i, log.last_error_message);
        CHECK(strstr(log.last_error_message, cases[i].says) != NULL);
        CHECK_EQ_INT(fake_conn_frames(c), 2); /* initial state, then the error frame */
        CHECK(frame_has(c, 1, "\"type\":\"error\""));
        sync_engine_free(e);
        fake_conn_release(c);
        fake_store_cleanup(&store);
    }
}

static void set_state_from_outside(void)
{
    hook_log log = {0};
    fake_store store;
    fake_store_init(&store, NULL, 0);
    sync_engine *e = engine_with(&log, &store, "{\"counter\":1}");
    fake_conn *c = fake_conn_open(e);
    cJSON *state = cJSON_CreateObject();
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(state, "deep"), "x", -INFINITY);
    CHECK_EQ_INT(sync_engine_set_state(e, state, 1), SYNC_EINVAL);
    CHECK(strstr(sync_error_last(), "-Infinity) at $.deep.x") != NULL);
    CHECK_EQ_INT(log.errors, 1);
    CHECK_EQ_STR(log.last_error_context, "set_state");
    CHECK_EQ_INT(sync_engine_get_version(e), 0);
    CHECK_EQ_INT(store.saves, 0);
    CHECK_EQ_INT(fake_conn_frames(c), 1);

    /* duplicate names built in C, or read from text, are refused alike */
    state = cJSON_CreateObject();
    cJSON_AddNumberToObject(state, "a", 1);
    cJSON_AddNumberToObject(state, "a", 2);
    CHECK_EQ_INT(sync_engine_set_state(e, state, 1), SYNC_EINVAL);
    CHECK(strstr(sync_error_last(), "duplicate name \"a\"") != NULL);
    CHECK_EQ_INT(sync_engine_set_state_json(e, "{\"a\":1,\"a\":2}", 1), SYNC_EPARSE);
    CHECK(strstr(sync_error_last(), "duplicate name \"a\"") != NULL);
    CHECK_EQ_INT(sync_engine_set_state_json(e, "{\"a\":\"x\\u0000y\"}", 1), SYNC_EPARSE);
    CHECK(strstr(sync_error_last(), "\\u0000") != NULL);
    CHECK_EQ_INT(sync_engine_set_state_json(e, "{\"a\":1e400}", 1), SYNC_EPARSE);
    CHECK_EQ_INT(sync_engine_get_version(e), 0);
    CHECK_EQ_INT(store.saves, 0);

    /* a good state still goes through, and is saved and sent */
    CHECK_EQ_INT(sync_engine_set_state_json(e, "{\"counter\":2,\"big\":1e308}", 1), SYNC_OK);
    CHECK_EQ_INT(sync_engine_get_version(e), 1);
    CHECK_EQ_INT(store.saves, 1);
    sync_engine_free(e);
    fake_conn_release(c);
    fake_store_cleanup(&store);
}

static int replace_bad(sync_msg *msg, void *userdata)
{
    (void)userdata;
    cJSON *copy = cJSON_Duplicate(sync_msg_message(msg), 1);
    cJSON_AddNumberToObject(copy, "amount", 2); /* a second "amount" */
    int rc = sync_msg_replace(msg, copy);
    if (rc != SYNC_EINVAL)
        return SYNC_OK; /* goes on, so the test sees the replacement was taken */
    sync_msg_set_error(msg, sync_error_last());
    return rc;
}

static void replaced_message_is_checked(void)
{
    hook_log log = {0};
    sync_engine *e = engine_with(&log, NULL, "{\"counter\":1}");
    sync_engine_use(e, replace_bad, NULL, NULL);
    CHECK_EQ_INT(counter_send(e, NULL, "increment", 1), SYNC_EREJECTED);
    CHECK(strstr(log.last_error_message, "duplicate name \"amount\"") != NULL);
    CHECK_EQ_INT(sync_engine_get_version(e), 0);
    sync_engine_free(e);
}

static void messages_name_the_refusal(void)
{
    hook_log log = {0};
    sync_engine *e = engine_with(&log, NULL, "{\"counter\":1}");
    const char *nul = "{\"type\":\"increment\\u0000evil\",\"amount\":1}";
    CHECK_EQ_INT(sync_engine_inject(e, nul, strlen(nul)), SYNC_EPARSE);
    CHECK(strstr(log.last_error_message, "\\u0000") != NULL);
    const char *dup = "{\"type\":\"increment\",\"amount\":1,\"x\":{\"amount\":1,\"amount\":9}}";
    CHECK_EQ_INT(sync_engine_inject(e, dup, strlen(dup)), SYNC_EPARSE);
    CHECK(strstr(log.last_error_message, "duplicate name \"amount\" in the object at $.x") != NULL);
    CHECK_EQ_INT(counter_value(e), 1);
    sync_engine_free(e);
}

static void initial_and_stored_states_follow_the_rules(void)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    sync_engine *e = NULL;
    opts.initial_state_json = "{\"a\":1,\"a\":2}";
    CHECK_EQ_INT(sync_engine_new(&e, &opts), SYNC_EINVAL);
    CHECK(strstr(sync_error_last(), "duplicate name") != NULL);
    opts.initial_state_json = "[\"\\u0000\"]";
    CHECK_EQ_INT(sync_engine_new(&e, &opts), SYNC_EINVAL);

    /* a store the engine refuses is reported and the engine starts from its initial state */
    hook_log log = {0};
    fake_store store;
    fake_store_init(&store, "{\"counter\":5,\"counter\":6}", 3);
    e = engine_with(&log, &store, "{\"counter\":0}");
    CHECK_EQ_INT(log.last_error_status, SYNC_ECORRUPT);
    CHECK(strstr(log.last_error_message, "duplicate name") != NULL);
    CHECK_EQ_INT(counter_value(e), 0);
    sync_engine_free(e);
    fake_store_cleanup(&store);

    /* the file adapter keeps such a file aside instead of overwriting it later */
    char dir[] = "/tmp/libsync-json-rules-XXXXXX";
    REQUIRE(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/state.json", dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fputs("{\"state\":{\"counter\":5,\"counter\":6},\"version\":3}", f);
    fclose(f);
    sync_file_options fo = SYNC_FILE_OPTIONS_INIT;
    fo.file_path = path;
    sync_adapter *a = NULL;
    REQUIRE(sync_adapter_file_new(&a, &fo) == SYNC_OK);
    char *json = NULL;
    int64_t version = 0;
    CHECK_EQ_INT(sync_adapter_load(a, &json, &version), SYNC_ECORRUPT);
    CHECK(strstr(sync_error_last(), "kept aside") != NULL);
    CHECK(access(path, F_OK) != 0);
    sync_free(json);
    sync_adapter_free(a);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK_EQ_INT(system(cmd), 0);
}

int main(void)
{
    RUN(handler_overflow_rolls_back);
    RUN(every_handler_path_is_checked);
    RUN(set_state_from_outside);
    RUN(replaced_message_is_checked);
    RUN(messages_name_the_refusal);
    RUN(initial_and_stored_states_follow_the_rules);
    return check_summary();
}

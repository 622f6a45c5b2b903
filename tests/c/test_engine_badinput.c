/* Bad input everywhere: every malformed message is refused with its own status and context,
 * never a crash, leak or change of state; NULL arguments and calls after dispose fail cleanly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine_counter.h"
#include "fake_conn.h"

typedef struct bad_case {
    const char *name;
    const char *text;
    size_t len; /* 0: strlen(text) */
    int status;
} bad_case;

static sync_engine *engine_with(hook_log *log, int reply_errors, size_t max_bytes)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = "{\"counter\":1}";
    opts.reply_errors = reply_errors;
    opts.max_message_bytes = max_bytes;
    sync_engine *e = counter_engine(&opts, log, 0);
    if (!e)
        abort();
    return e;
}

static int state_is_untouched(sync_engine *e)
{
    char *json = sync_engine_get_state_json(e);
    int same = json && strcmp(json, "{\"counter\":1}") == 0 && sync_engine_get_version(e) == 0;
    sync_free(json);
    return same;
}

static char *nested(size_t depth)
{
    char *text = malloc(2 * depth + 1);
    if (!text)
        abort();
    memset(text, '[', depth);
    memset(text + depth, ']', depth);
    text[2 * depth] = '\0';
    return text;
}

static void each_bad_message(void)
{
    char *deep = nested(10000);
    char *deep_strings = malloc(20000 + 64);
    /* Brackets inside a string do not count as nesting. */
    strcpy(deep_strings, "{\"type\":\"increment\",\"amount\":1,\"s\":\"");
    memset(deep_strings + strlen(deep_strings), '[', 10000);
    strcpy(deep_strings + strlen("{\"type\":\"increment\",\"amount\":1,\"s\":\"") + 10000, "\"}");
    /* 40 members (a hash set finds the name, not the pairwise compare), the last repeats one */
    char big_dup[1024] = "{\"type\":\"increment\",\"amount\":1";
    for (int i = 0; i < 40; i++)
        snprintf(big_dup + strlen(big_dup), sizeof big_dup - strlen(big_dup), ",\"k%d\":%d", i, i);
    strcat(big_dup, ",\"k17\":0}");
    char *huge = malloc(40000);
    memset(huge, ' ', 40000);
    memcpy(huge, "{\"type\":\"increment\",\"amount\":1}", 31);
    const bad_case cases[] = {
        {"non-utf8", "{\"type\":\"incr\xff\"}", 0, SYNC_EPARSE},
        {"overlong utf8", "{\"type\":\"\xc0\xaf\"}", 0, SYNC_EPARSE},
        {"surrogate utf8", "{\"type\":\"\xed\xa0\x80\"}", 0, SYNC_EPARSE},
        {"truncated utf8", "{\"type\":\"\xe2\x82", 0, SYNC_EPARSE},
        {"not json", "hello", 0, SYNC_EPARSE},
        {"empty", "", 0, SYNC_EPARSE},
        {"trailing garbage", "{\"type\":\"increment\",\"amount\":1} x", 0, SYNC_EPARSE},
        {"embedded nul", "{\"type\":\"increment\",\"amount\":1}\0junk", 36, SYNC_EPARSE},
        {"array", "[1,2]", 0, SYNC_EMESSAGE},
        {"number", "3", 0, SYNC_EMESSAGE},
        {"string", "\"increment\"", 0, SYNC_EMESSAGE},
        {"null", "null", 0, SYNC_EMESSAGE},
        {"missing type", "{\"amount\":1}", 0, SYNC_EMESSAGE},
        {"numeric type", "{\"type\":5,\"amount\":1}", 0, SYNC_EMESSAGE},
        {"unknown type", "{\"type\":\"explode\"}", 0, SYNC_ENOHANDLER},
        {"deep nesting", deep, 0, SYNC_ETOODEEP},
        {"1e999", "{\"type\":\"increment\",\"amount\":1e999}", 0, SYNC_EPARSE},
        {"-1e999", "{\"type\":\"increment\",\"amount\":-1e999}", 0, SYNC_EPARSE},
        {"over the size limit", huge, 40000, SYNC_ETOOBIG},
        /* cJSON ends a string at \u0000: the handler "increment" must not run for this type */
        {"nul in the type", "{\"type\":\"increment\\u0000evil\",\"amount\":1}", 0, SYNC_EPARSE},
        {"nul in a key", "{\"type\":\"increment\",\"amount\":1,\"a\\u0000b\":1}", 0, SYNC_EPARSE},
        {"nul in a value", "{\"type\":\"increment\",\"amount\":1,\"s\":[\"\\u0000\"]}", 0,
         SYNC_EPARSE},
        /* cJSON reads the first of two names, JavaScript the last: a gateway would differ */
        {"duplicate type", "{\"type\":\"increment\",\"type\":\"decrement\",\"amount\":1}", 0,
         SYNC_EPARSE},
        {"duplicate amount", "{\"type\":\"increment\",\"amount\":1,\"amount\":100}", 0,
         SYNC_EPARSE},
        {"duplicate deep",
         "{\"type\":\"increment\",\"amount\":1,\"x\":[{\"a\":{\"b\":1,\"b\":2}}]}", 0, SYNC_EPARSE},
        {"duplicate in a big object", big_dup, 0, SYNC_EPARSE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        hook_log log = {0};
        sync_engine *e = engine_with(&log, 1, 32768);
        fake_conn *c = fake_conn_open(e);
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].text);
        int rc = sync_engine_handle_message(e, c->conn, cases[i].text, len);
        if (rc != cases[i].status)
            fprintf(stderr, "  case %s: %d\n", cases[i].name, rc);
        CHECK_EQ_INT(rc, cases[i].status);
        CHECK_EQ_INT(log.errors, 1);
        CHECK_EQ_INT(log.last_error_status, cases[i].status);
        CHECK_EQ_STR(log.last_error_context, "message");
        CHECK(sync_error_last()[0] != '\0');
        CHECK(state_is_untouched(e));
        /* The sender got a valid JSON error frame. */
        CHECK_EQ_INT(fake_conn_frames(c), 2);
        cJSON *reply = fake_conn_frame_json(c, 1);
        CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(reply, "type")), "error");
        CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(reply, "context")), "message");
        CHECK(cJSON_GetStringValue(cJSON_GetObjectItem(reply, "error")) != NULL);
        cJSON_Delete(reply);
        sync_engine_stats stats = {.version = SYNC_ENGINE_STATS_VERSION};
        sync_engine_get_stats(e, &stats);
        CHECK_EQ_INT(stats.messages_in, 1);
        CHECK_EQ_INT(stats.messages_dropped, 1);
        CHECK_EQ_INT(stats.messages_applied, 0);
        sync_engine_free(e);
        fake_conn_release(c);
    }
    /* Good messages that look odd are fine: brackets in strings, text without a NUL. */
    hook_log log = {0};
    sync_engine *e = engine_with(&log, 0, 0);
    CHECK_EQ_INT(sync_engine_inject(e, deep_strings, strlen(deep_strings)), SYNC_OK);
    const char *buffer = "{\"type\":\"increment\",\"amount\":2}GARBAGE";
    CHECK_EQ_INT(sync_engine_inject(e, buffer, 31), SYNC_OK);
    /* an escaped backslash before "u0000" is no NUL; equal names in different objects are fine */
    const char *odd = "{\"type\":\"increment\",\"amount\":1,\"s\":\"\\\\u0000\","
                      "\"x\":{\"amount\":2,\"y\":{\"amount\":3}},\"z\":[{\"a\":1},{\"a\":1}]}";
    CHECK_EQ_INT(sync_engine_inject(e, odd, strlen(odd)), SYNC_OK);
    char big_ok[1024] = "{\"type\":\"increment\",\"amount\":1";
    for (int i = 0; i < 40; i++)
        snprintf(big_ok + strlen(big_ok), sizeof big_ok - strlen(big_ok), ",\"k%d\":%d", i, i);
    strcat(big_ok, "}");
    CHECK_EQ_INT(sync_engine_inject(e, big_ok, strlen(big_ok)), SYNC_OK);
    CHECK_EQ_INT(counter_value(e), 6);
    CHECK_EQ_INT(log.errors, 0);
    sync_engine_free(e);
    free(deep);
    free(deep_strings);
    free(huge);
}

static void depth_limit_is_configurable(void)
{
    hook_log log = {0};
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.max_json_depth = 3;
    sync_engine *e = counter_engine(&opts, &log, 0);
    REQUIRE(e);
    const char *ok = "{\"type\":\"increment\",\"amount\":1,\"x\":[[1]]}";
    const char *deep = "{\"type\":\"increment\",\"amount\":1,\"x\":[[[1]]]}";
    CHECK_EQ_INT(sync_engine_inject(e, ok, strlen(ok)), SYNC_OK);
    CHECK_EQ_INT(sync_engine_inject(e, deep, strlen(deep)), SYNC_ETOODEEP);
    sync_engine_free(e);
}

/* The error names the first fault the way it always has: a NUL anywhere before bad UTF-8,
 * bad UTF-8 before nesting that is too deep, and for text after the value the offset cJSON
 * stopped at; a tail of whitespace is no fault. Each message in a buffer of exactly its length. */
static void message_errors_name_the_fault(void)
{
    static const struct {
        const char *text;
        size_t len;
        int status;
        const char *error;
    } cases[] = {
#define TEXT(s) s, sizeof s - 1
        {TEXT("{\"type\":\"increment\",\"amount\":1} x"), SYNC_EPARSE, "invalid JSON at offset 32"},
        {TEXT("{\"type\":\"increment\",\"amount\":1}}"), SYNC_EPARSE, "invalid JSON at offset 31"},
        {TEXT("{\"type\":\"increment\","), SYNC_EPARSE, "invalid JSON at offset 20"},
        {TEXT("{\"type\":\"increment\",\"x\":[[[1]]],\"s\":\"\xff\"}"), SYNC_EPARSE,
         "invalid UTF-8 at offset 37"},
        {TEXT("{\"type\":\"increment\",\"x\":[[[1]]],\"s\":\"\xff\0\"}"), SYNC_EPARSE,
         "NUL byte at offset 38"},
        {TEXT("{\"type\":\"increment\",\"x\":[[[1]]],\"s\":\"\\u0000\"}"), SYNC_ETOODEEP,
         "JSON nests deeper than 3 levels (offset 26)"},
        {TEXT("{\"type\":\"increment\",\"x\":\"\\u0000\",\"y\":[[[1]]]}"), SYNC_EPARSE,
         "\\u0000 (NUL) in a JSON string at offset 25"},
        {TEXT("{\"type\":\"increment\",\"amount\":2} \t\r\n"), SYNC_OK, NULL},
#undef TEXT
    };
    hook_log log = {0};
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = "{\"counter\":1}";
    opts.max_json_depth = 3;
    sync_engine *e = counter_engine(&opts, &log, 0);
    REQUIRE(e);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *text = malloc(cases[i].len);
        REQUIRE(text);
        memcpy(text, cases[i].text, cases[i].len);
        CHECK_EQ_INT(sync_engine_inject(e, text, cases[i].len), cases[i].status);
        if (cases[i].error && !strstr(log.last_error_message, cases[i].error)) {
            fprintf(stderr, "  case %zu: %s\n", i, log.last_error_message);
            CHECK(0);
        }
        free(text);
    }
    CHECK_EQ_INT(counter_value(e), 3);
    sync_engine_free(e);
}

static int noop_step(sync_msg *msg, void *userdata)
{
    (void)msg;
    (void)userdata;
    return SYNC_OK;
}

static int freed_count;

static void count_free(void *userdata)
{
    (void)userdata;
    freed_count++;
}

static void null_arguments(void)
{
    sync_engine *e = NULL;
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    CHECK_EQ_INT(sync_engine_options_init(NULL, SYNC_ENGINE_OPTIONS_VERSION), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_options_init(&opts, 99), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_new(NULL, &opts), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_new(&e, NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_dispose(NULL), SYNC_EINVAL);
    sync_engine_free(NULL);
    freed_count = 0;
    CHECK_EQ_INT(sync_engine_on(NULL, "x", noop_step, NULL, count_free), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_off(NULL, "x"), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_set_validator(NULL, noop_step, NULL, count_free), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_use(NULL, noop_step, NULL, count_free), SYNC_EINVAL);
    CHECK_EQ_INT(freed_count, 3); /* userdata released when registration fails */
    CHECK_EQ_INT(sync_engine_handle_open(NULL, NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_handle_message(NULL, NULL, "x", 1), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_handle_close(NULL, NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_inject(NULL, "x", 1), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_connection_count(NULL), 0);
    CHECK(sync_engine_get_state(NULL) == NULL);
    CHECK(sync_engine_get_state_json(NULL) == NULL);
    CHECK_EQ_INT(sync_engine_get_version(NULL), -1);
    CHECK_EQ_INT(sync_engine_set_state(NULL, cJSON_CreateObject(), 0), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_set_state_json(NULL, "{}", 0), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_broadcast_state(NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_broadcast_text(NULL, "x", 1), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_sync(NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_create_backup(NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_when_idle(NULL, NULL, NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_tick(NULL, 0), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_next_deadline_ms(NULL), -1);
    CHECK_EQ_INT(sync_engine_set_hooks(NULL, NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_get_stats(NULL, NULL), SYNC_EINVAL);

    CHECK(sync_msg_conn(NULL) == NULL);
    CHECK(sync_msg_engine(NULL) == NULL);
    CHECK(sync_msg_message(NULL) == NULL);
    CHECK(sync_msg_type(NULL) == NULL);
    CHECK(sync_msg_message_json(NULL) == NULL);
    CHECK_EQ_INT(sync_msg_replace(NULL, cJSON_CreateObject()), SYNC_EINVAL);
    CHECK_EQ_INT(sync_msg_replace_json(NULL, "{}"), SYNC_EINVAL);
    CHECK(sync_msg_state(NULL) == NULL);
    CHECK(sync_msg_state_json(NULL) == NULL);
    CHECK(sync_msg_state_mut(NULL) == NULL);
    CHECK_EQ_INT(sync_msg_set_state(NULL, cJSON_CreateObject()), SYNC_EINVAL);
    CHECK_EQ_INT(sync_msg_set_state_json(NULL, "{}"), SYNC_EINVAL);
    CHECK_EQ_INT(sync_msg_reply(NULL, "x", 1), SYNC_EINVAL);
    CHECK_EQ_INT(sync_msg_set_error(NULL, "x"), SYNC_EINVAL);
    CHECK_EQ_INT(sync_msg_complete(NULL, SYNC_OK), SYNC_EINVAL);

    sync_conn *conn = NULL;
    sync_conn_callbacks cb = SYNC_CONN_CALLBACKS_INIT;
    CHECK_EQ_INT(sync_conn_new(NULL, &cb, NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_conn_new(&conn, NULL, NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_conn_new(&conn, &cb, NULL), SYNC_EINVAL); /* send is required */
    CHECK(conn == NULL);
    sync_conn_free(NULL);
    CHECK(sync_conn_ref(NULL) == NULL);
    CHECK(sync_conn_userdata(NULL) == NULL);
    CHECK_EQ_INT(sync_conn_id(NULL), 0);
    CHECK(sync_conn_identity(NULL) == NULL);
    CHECK_EQ_INT(sync_conn_set_identity(NULL, "{}"), SYNC_EINVAL);
    CHECK_EQ_INT(sync_conn_send(NULL, "x", 1), SYNC_EINVAL);
    CHECK_EQ_INT(sync_conn_close(NULL, 1000, NULL), SYNC_EINVAL);

    sync_adapter *adapter = NULL;
    CHECK_EQ_INT(sync_adapter_new(&adapter, NULL, NULL), SYNC_EINVAL);
    sync_adapter_vtable vt = {SYNC_ADAPTER_VTABLE_VERSION, NULL, NULL, NULL, NULL, count_free};
    freed_count = 0;
    CHECK_EQ_INT(sync_adapter_new(&adapter, &vt, NULL), SYNC_EINVAL); /* load/save missing */
    CHECK_EQ_INT(freed_count, 1);
    sync_adapter_free(NULL);
    char *json = NULL;
    int64_t version = 0;
    CHECK_EQ_INT(sync_adapter_init(NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_adapter_load(NULL, &json, &version), SYNC_EINVAL);
    CHECK_EQ_INT(sync_adapter_save(NULL, "{}", 0), SYNC_EINVAL);
    CHECK_EQ_INT(sync_adapter_backup(NULL, &version), SYNC_EINVAL);

    /* NULL pieces on a live engine. */
    REQUIRE(sync_engine_new(&e, &opts) == SYNC_OK);
    freed_count = 0;
    CHECK_EQ_INT(sync_engine_on(e, NULL, noop_step, NULL, count_free), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_on(e, "x", NULL, NULL, count_free), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_use(e, NULL, NULL, count_free), SYNC_EINVAL);
    CHECK_EQ_INT(freed_count, 3);
    CHECK_EQ_INT(sync_engine_off(e, "never"), SYNC_ENOHANDLER);
    CHECK_EQ_INT(sync_engine_handle_open(e, NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_handle_message(e, NULL, "{}", 2), SYNC_EINVAL);
    fake_conn *c = fake_conn_new();
    CHECK_EQ_INT(sync_engine_handle_message(e, c->conn, NULL, 3), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_inject(e, NULL, 3), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_set_state(e, NULL, 0), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_set_state_json(e, NULL, 0), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_set_state_json(e, "{oops", 0), SYNC_EPARSE);
    CHECK_EQ_INT(sync_engine_set_state_json(e, "[1e999]", 0), SYNC_EPARSE);
    CHECK_EQ_INT(sync_engine_get_version(e), 0);
    CHECK_EQ_INT(sync_engine_when_idle(e, NULL, NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_broadcast_text(e, NULL, 2), SYNC_EINVAL);
    sync_engine_stats stats = {0};
    CHECK_EQ_INT(sync_engine_get_stats(e, &stats), SYNC_EINVAL); /* version not set */
    sync_hooks hooks = SYNC_HOOKS_INIT;
    hooks.version = 42;
    hooks.free_userdata = count_free;
    freed_count = 0;
    CHECK_EQ_INT(sync_engine_set_hooks(e, &hooks), SYNC_EINVAL);
    CHECK_EQ_INT(freed_count, 1);
    sync_engine_free(e);
    fake_conn_release(c);
}

static void bad_options(void)
{
    sync_engine *e = NULL;
    fake_store store;
    fake_store_init(&store, NULL, 0);
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.version = 7;
    opts.adapter = fake_adapter_new(&store);
    CHECK_EQ_INT(sync_engine_new(&e, &opts), SYNC_EINVAL);
    CHECK_EQ_INT(store.destroyed, 1); /* the engine owned the adapter, also on failure */
    CHECK(e == NULL);
    opts = (sync_engine_options)SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = "{not json";
    CHECK_EQ_INT(sync_engine_new(&e, &opts), SYNC_EINVAL);
    CHECK(strstr(sync_error_last(), "initial_state_json") != NULL);
    opts.initial_state_json = NULL;
    opts.heartbeat_interval_ms = -5;
    CHECK_EQ_INT(sync_engine_new(&e, &opts), SYNC_EINVAL);
    opts.heartbeat_interval_ms = 0;
    opts.persist_mode = (sync_persist_mode)9;
    CHECK_EQ_INT(sync_engine_new(&e, &opts), SYNC_EINVAL);
    opts.persist_mode = SYNC_PERSIST_ON_CHANGE;
    sync_hooks hooks = SYNC_HOOKS_INIT;
    hooks.free_userdata = count_free;
    opts.hooks = &hooks;
    opts.sync_interval_ms = -1;
    freed_count = 0;
    CHECK_EQ_INT(sync_engine_new(&e, &opts), SYNC_EINVAL);
    CHECK_EQ_INT(freed_count, 1);
    fake_store_cleanup(&store);
}

static void after_dispose(void)
{
    hook_log log = {0};
    sync_engine *e = engine_with(&log, 0, 0);
    fake_conn *c = fake_conn_open(e);
    CHECK_EQ_INT(sync_engine_dispose(e), SYNC_OK);
    fake_conn *late = fake_conn_new();
    freed_count = 0;
    CHECK_EQ_INT(sync_engine_on(e, "x", noop_step, NULL, count_free), SYNC_ECLOSED);
    CHECK_EQ_INT(freed_count, 1);
    CHECK_EQ_INT(sync_engine_off(e, "increment"), SYNC_ECLOSED);
    CHECK_EQ_INT(sync_engine_use(e, noop_step, NULL, NULL), SYNC_ECLOSED);
    CHECK_EQ_INT(sync_engine_set_validator(e, noop_step, NULL, NULL), SYNC_ECLOSED);
    CHECK_EQ_INT(sync_engine_set_hooks(e, NULL), SYNC_ECLOSED);
    CHECK_EQ_INT(sync_engine_handle_open(e, late->conn), SYNC_ECLOSED);
    CHECK_EQ_INT(sync_engine_handle_message(e, c->conn, "pong", 4), SYNC_ECLOSED);
    CHECK_EQ_INT(counter_send(e, c->conn, "increment", 1), SYNC_ECLOSED);
    CHECK_EQ_INT(sync_engine_handle_close(e, c->conn), SYNC_ECLOSED);
    CHECK_EQ_INT(sync_engine_inject(e, "{}", 2), SYNC_ECLOSED);
    CHECK(sync_engine_get_state(e) == NULL);
    CHECK(sync_engine_get_state_json(e) == NULL);
    CHECK_EQ_INT(sync_engine_get_version(e), 0);
    CHECK_EQ_INT(sync_engine_set_state_json(e, "{}", 0), SYNC_ECLOSED);
    CHECK_EQ_INT(sync_engine_set_state(e, cJSON_CreateObject(), 0), SYNC_ECLOSED);
    CHECK_EQ_INT(sync_engine_broadcast_state(e), SYNC_ECLOSED);
    CHECK_EQ_INT(sync_engine_broadcast_text(e, "x", 1), SYNC_ECLOSED);
    CHECK_EQ_INT(sync_engine_sync(e), SYNC_ECLOSED);
    CHECK_EQ_INT(sync_engine_create_backup(e), SYNC_ECLOSED);
    CHECK_EQ_INT(sync_engine_when_idle(e, NULL, NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_tick(e, -1), SYNC_ECLOSED);
    CHECK_EQ_INT(sync_engine_next_deadline_ms(e), -1);
    CHECK_EQ_INT(sync_engine_connection_count(e), 0);
    sync_engine_stats stats = {.version = SYNC_ENGINE_STATS_VERSION};
    CHECK_EQ_INT(sync_engine_get_stats(e, &stats), SYNC_OK);
    CHECK_EQ_INT(fake_conn_closes(c), 1);
    CHECK_EQ_INT(log.errors, 0);
    CHECK_EQ_INT(log.disconnects, 0);
    sync_engine_free(e);
    fake_conn_release(c);
    fake_conn_release(late);
}

static void handler_writes_outside_handler_refused(void)
{
    hook_log log = {0};
    sync_engine *e = engine_with(&log, 0, 0);
    sync_engine_set_validator(e, counter_increment, NULL, NULL); /* writes from a validator */
    CHECK_EQ_INT(counter_send(e, NULL, "increment", 1), SYNC_EREJECTED);
    CHECK(state_is_untouched(e));
    sync_engine_free(e);
}

/* Random bytes and mutated messages: every call returns a status, nothing crashes or leaks, and
 * only a well-formed increment can change the state. */
static void random_input_never_crashes(void)
{
    hook_log log = {0};
    sync_engine *e = engine_with(&log, 1, 4096);
    fake_conn *c = fake_conn_open(e);
    unsigned seed = 12345;
    const char *base = "{\"type\":\"increment\",\"amount\":1,\"x\":[\"\\u00e9\",{\"y\":null}]}";
    size_t base_len = strlen(base);
    char buf[256];
    int applied = 0;
    for (int i = 0; i < 20000; i++) {
        size_t len;
        if (i % 2) {
            len = (size_t)(rand_r(&seed) % (int)sizeof buf);
            for (size_t k = 0; k < len; k++)
                buf[k] = (char)(rand_r(&seed) & 0xff);
        } else {
            len = base_len;
            memcpy(buf, base, len);
            for (int flips = 1 + rand_r(&seed) % 3; flips > 0; flips--)
                buf[rand_r(&seed) % (int)len] = (char)(rand_r(&seed) & 0xff);
        }
        int64_t before = sync_engine_get_version(e);
        int rc = sync_engine_handle_message(e, c->conn, buf, len);
        CHECK(rc == SYNC_OK || rc < 0);
        if (rc == SYNC_OK && sync_engine_get_version(e) == before + 1)
            applied++;
        else if (rc < 0)
            CHECK_EQ_INT(sync_engine_get_version(e), before);
    }
    CHECK_EQ_INT(sync_engine_get_version(e), applied);
    CHECK(applied < 20000);
    sync_engine_free(e);
    fake_conn_release(c);
}

int main(void)
{
    RUN(each_bad_message);
    RUN(depth_limit_is_configurable);
    RUN(message_errors_name_the_fault);
    RUN(null_arguments);
    RUN(bad_options);
    RUN(after_dispose);
    RUN(handler_writes_outside_handler_refused);
    RUN(random_input_never_crashes);
    return check_summary();
}

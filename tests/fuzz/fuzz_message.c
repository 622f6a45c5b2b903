/*
 * libFuzzer target: the message path. The input is split at '\n' into up to 32 raw frames, each
 * handed to sync_engine_handle_message() of a fresh engine (validator, two middlewares, handlers
 * of every kind: changes, replace, reply, failure, rollback, and a step that finishes later or is
 * given up at its step timeout), from two push connections. Invariants checked on every run: every
 * frame the engine sends is JSON, state versions only grow, a dropped message leaves state and
 * version untouched, and the engine ends consistent (the state it serves parses, its version equals
 * the applied changes).
 */
#include <libsync/libsync.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_MESSAGES = 32 };

typedef struct sink {
    int64_t last_version;
    size_t frames;
} sink;

static void fail(const char *what, const char *text, size_t len)
{
    fprintf(stderr, "fuzz_message invariant broken: %s: %.*s\n", what, (int)(len > 300 ? 300 : len),
            text ? text : "");
    abort();
}

static int on_send(void *userdata, const char *text, size_t len)
{
    sink *s = userdata;
    s->frames++;
    cJSON *frame = cJSON_ParseWithLength(text, len);
    if (!frame)
        fail("a sent frame is not JSON", text, len);
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(frame, "version");
    if (cJSON_IsNumber(version)) {
        int64_t v = (int64_t)version->valuedouble;
        if (v < s->last_version)
            fail("a state frame went back in version", text, len);
        s->last_version = v;
    }
    cJSON_Delete(frame);
    return SYNC_OK;
}

/* The step that finished later: completed after handle_message returned. */
static sync_msg *g_pending;

static int validator(sync_msg *msg, void *userdata)
{
    (void)userdata;
    const cJSON *m = sync_msg_message(msg);
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "reject"))) {
        sync_msg_set_error(msg, "rejected by the validator");
        return SYNC_EINVAL;
    }
    const cJSON *with = cJSON_GetObjectItemCaseSensitive(m, "replace_with");
    if (cJSON_IsString(with))
        return sync_msg_replace_json(msg, with->valuestring) == SYNC_OK ? SYNC_OK : SYNC_EINVAL;
    return SYNC_OK;
}

static int middleware_tag(sync_msg *msg, void *userdata)
{
    (void)userdata;
    const cJSON *m = sync_msg_message(msg);
    if (!cJSON_IsObject(m) || !cJSON_GetObjectItemCaseSensitive(m, "tag"))
        return SYNC_OK;
    cJSON *copy = cJSON_Duplicate(m, 1);
    if (!copy)
        return SYNC_ENOMEM;
    cJSON_DeleteItemFromObjectCaseSensitive(copy, "tag");
    cJSON_AddStringToObject(copy, "tagged", "yes");
    return sync_msg_replace(msg, copy);
}

static int middleware_later(sync_msg *msg, void *userdata)
{
    (void)userdata;
    if (!g_pending &&
        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(sync_msg_message(msg), "later"))) {
        g_pending = msg;
        return SYNC_PENDING;
    }
    /* the text form is built on demand: exercise it for every message */
    return sync_msg_message_json(msg) ? SYNC_OK : SYNC_ENOMEM;
}

static int on_increment(sync_msg *msg, void *userdata)
{
    (void)userdata;
    const cJSON *amount = cJSON_GetObjectItemCaseSensitive(sync_msg_message(msg), "amount");
    cJSON *state = sync_msg_state_mut(msg);
    if (!state || !cJSON_IsObject(state) || !cJSON_IsNumber(amount))
        return SYNC_EINVAL;
    cJSON *counter = cJSON_GetObjectItemCaseSensitive(state, "counter");
    if (cJSON_IsNumber(counter))
        cJSON_SetNumberValue(counter, counter->valuedouble + amount->valuedouble);
    else
        cJSON_AddNumberToObject(state, "counter", amount->valuedouble);
    return SYNC_OK;
}

static int on_set(sync_msg *msg, void *userdata)
{
    (void)userdata;
    const cJSON *value = cJSON_GetObjectItemCaseSensitive(sync_msg_message(msg), "value");
    if (!value)
        return SYNC_EINVAL;
    if (cJSON_IsString(value))
        return sync_msg_set_state_json(msg, value->valuestring);
    cJSON *copy = cJSON_Duplicate(value, 1);
    return copy ? sync_msg_set_state(msg, copy) : SYNC_ENOMEM;
}

static int on_put(sync_msg *msg, void *userdata)
{
    (void)userdata;
    const cJSON *m = sync_msg_message(msg);
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(m, "key");
    const cJSON *value = cJSON_GetObjectItemCaseSensitive(m, "value");
    cJSON *state = sync_msg_state_mut(msg);
    if (!cJSON_IsString(key) || !value || !cJSON_IsObject(state))
        return SYNC_EINVAL;
    cJSON *copy = cJSON_Duplicate(value, 1);
    if (!copy)
        return SYNC_ENOMEM;
    cJSON_DeleteItemFromObjectCaseSensitive(state, key->valuestring);
    cJSON_AddItemToObject(state, key->valuestring, copy);
    /* a failing put rolls everything back */
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "then_fail")) ? SYNC_EHANDLER : SYNC_OK;
}

static int on_echo(sync_msg *msg, void *userdata)
{
    (void)userdata;
    const char *text = sync_msg_message_json(msg);
    const char *state = sync_msg_state_json(msg);
    if (!text || !state)
        return SYNC_ENOMEM;
    return sync_msg_reply(msg, text, strlen(text));
}

static int on_fail(sync_msg *msg, void *userdata)
{
    (void)userdata;
    const cJSON *reason = cJSON_GetObjectItemCaseSensitive(sync_msg_message(msg), "reason");
    sync_msg_set_error(msg, cJSON_IsString(reason) ? reason->valuestring : "failed");
    return SYNC_EHANDLER;
}

/* Every report names what went wrong and where. */
static void on_error(sync_engine *engine, int status, const char *message, const char *context,
                     sync_conn *conn, void *userdata)
{
    (void)engine;
    (void)conn;
    (void)userdata;
    if (status >= 0 || !message || !*message || !context || !*context)
        fail("an error report without a status, message or context", message, 0);
}

/* Lets the pending step's deadline pass: the messages queued behind it run (counted in
 * `applied`), and the step's late calls and completion are refused without changing anything. */
static void give_up(sync_engine *engine, sync_msg *m, int64_t *applied)
{
    int64_t due = sync_engine_next_deadline_ms(engine);
    if (due < 0)
        fail("a pending step has no deadline", NULL, 0);
    int64_t v0 = sync_engine_get_version(engine);
    sync_engine_tick(engine, due);
    int64_t v1 = sync_engine_get_version(engine);
    *applied += v1 - v0;
    if (sync_msg_set_state_json(m, "{\"late\":1}") != SYNC_ETIMEDOUT ||
        sync_msg_reply(m, "late", 4) != SYNC_ETIMEDOUT ||
        sync_msg_complete(m, SYNC_OK) != SYNC_ETIMEDOUT)
        fail("a timed-out step was not refused", NULL, 0);
    if (sync_engine_get_version(engine) != v1)
        fail("a timed-out step changed the version", NULL, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sync_hooks hooks = SYNC_HOOKS_INIT;
    hooks.on_error = on_error;
    sync_engine_options eo = SYNC_ENGINE_OPTIONS_INIT;
    eo.initial_state_json = "{\"counter\":0}";
    eo.reply_errors = 1;
    eo.max_message_bytes = 4096;
    eo.max_json_depth = 16;
    eo.step_timeout_ms = 1000; /* never reached by the clock: the tick below jumps to it */
    eo.hooks = &hooks;
    sync_engine *engine = NULL;
    if (sync_engine_new(&engine, &eo) != SYNC_OK)
        abort();
    sync_engine_set_validator(engine, validator, NULL, NULL);
    sync_engine_use(engine, middleware_tag, NULL, NULL);
    sync_engine_use(engine, middleware_later, NULL, NULL);
    sync_engine_on(engine, "increment", on_increment, NULL, NULL);
    sync_engine_on(engine, "set", on_set, NULL, NULL);
    sync_engine_on(engine, "put", on_put, NULL, NULL);
    sync_engine_on(engine, "echo", on_echo, NULL, NULL);
    sync_engine_on(engine, "fail", on_fail, NULL, NULL);

    sink sinks[2] = {{-1, 0}, {-1, 0}};
    sync_conn *conns[2] = {NULL, NULL};
    sync_conn_callbacks cb = SYNC_CONN_CALLBACKS_INIT;
    cb.send = on_send;
    for (int i = 0; i < 2; i++) {
        if (sync_conn_new(&conns[i], &cb, &sinks[i]) != SYNC_OK ||
            sync_engine_handle_open(engine, conns[i]) != SYNC_OK)
            abort();
    }

    int64_t applied = 0;
    const char *p = (const char *)data;
    const char *end = p + size;
    for (int n = 0; n < MAX_MESSAGES && p <= end; n++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        int64_t before = sync_engine_get_version(engine);
        char *before_state = g_pending ? NULL : sync_engine_get_state_json(engine);
        int rc = sync_engine_handle_message(engine, conns[n % 2], p, len);
        if (rc == SYNC_OK && sync_engine_get_version(engine) > before)
            applied += sync_engine_get_version(engine) - before;
        if (rc < 0 && rc != SYNC_PENDING && before_state) {
            char *after = sync_engine_get_state_json(engine);
            if (sync_engine_get_version(engine) != before || !after ||
                strcmp(after, before_state) != 0)
                fail("a dropped message changed the state", p, len);
            sync_free(after);
        }
        sync_free(before_state);
        if (g_pending && n % 5 == 4) {
            sync_msg *m = g_pending;
            g_pending = NULL;
            give_up(engine, m, &applied);
        } else if (g_pending && (n % 3 == 2 || !nl)) {
            sync_msg *m = g_pending;
            g_pending = NULL;
            int64_t v0 = sync_engine_get_version(engine);
            sync_msg_complete(m, n % 2 ? SYNC_OK : SYNC_EHANDLER);
            applied += sync_engine_get_version(engine) - v0;
        }
        if (n % 4 == 3)
            sync_engine_broadcast_state(engine);
        if (!nl)
            break;
        p = nl + 1;
    }
    if (g_pending) {
        sync_msg *m = g_pending;
        g_pending = NULL;
        int64_t v0 = sync_engine_get_version(engine);
        sync_msg_complete(m, SYNC_OK);
        applied += sync_engine_get_version(engine) - v0;
    }
    sync_engine_broadcast_state(engine);
    if (sync_engine_get_version(engine) != applied)
        fail("the version does not count the applied changes", NULL, 0);
    char *state = sync_engine_get_state_json(engine);
    cJSON *parsed = state ? cJSON_Parse(state) : NULL;
    if (!parsed)
        fail("the engine serves a state that is not JSON", state, state ? strlen(state) : 0);
    cJSON_Delete(parsed);
    sync_free(state);

    for (int i = 0; i < 2; i++) {
        sync_engine_handle_close(engine, conns[i]);
        sync_conn_free(conns[i]);
    }
    sync_engine_free(engine);
    return 0;
}

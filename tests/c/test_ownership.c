/* The ownership rule of common.h, constructor by constructor: userdata handed over with a free
 * callback is released exactly once, on success when its owner lets go of it, and on every
 * failure (NULL out, unknown version, wrong option, missing callback) before the call returns.
 * Also the allocator pair libsync exports for memory that crosses the boundary. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "libsync/libsync.h"

static int freed;

static void count_free(void *userdata)
{
    (void)userdata;
    freed++;
}

/* ---- connections ---------------------------------------------------------------------------- */

static int send_nothing(void *userdata, const char *text, size_t len)
{
    (void)userdata;
    (void)text;
    (void)len;
    return SYNC_OK;
}

static void conn_new_failure_releases_userdata_once(void)
{
    sync_conn_callbacks cb = SYNC_CONN_CALLBACKS_INIT;
    cb.send = send_nothing;
    cb.free_userdata = count_free;

    freed = 0;
    CHECK_EQ_INT(sync_conn_new(NULL, &cb, &freed), SYNC_EINVAL);
    CHECK_EQ_INT(freed, 1);

    sync_conn *conn = NULL;
    freed = 0;
    cb.version = SYNC_CONN_CALLBACKS_VERSION + 1;
    CHECK_EQ_INT(sync_conn_new(&conn, &cb, &freed), SYNC_EINVAL);
    CHECK(strstr(sync_error_last(), "unknown callbacks version") != NULL);
    CHECK_EQ_INT(freed, 1);
    CHECK(conn == NULL);

    freed = 0;
    cb.version = SYNC_CONN_CALLBACKS_VERSION;
    cb.send = NULL;
    CHECK_EQ_INT(sync_conn_new(&conn, &cb, &freed), SYNC_EINVAL);
    CHECK(strstr(sync_error_last(), "send is required") != NULL);
    CHECK_EQ_INT(freed, 1);

    /* success: once, with the last reference */
    freed = 0;
    cb.send = send_nothing;
    REQUIRE(sync_conn_new(&conn, &cb, &freed) == SYNC_OK);
    sync_conn_ref(conn);
    sync_conn_free(conn);
    CHECK_EQ_INT(freed, 0);
    sync_conn_free(conn);
    CHECK_EQ_INT(freed, 1);

    /* no callbacks at all: nothing to call, a clear error */
    CHECK_EQ_INT(sync_conn_new(&conn, NULL, &freed), SYNC_EINVAL);
    CHECK_EQ_INT(freed, 1);
}

/* ---- adapters ------------------------------------------------------------------------------- */

static const char *stored_json = "{\"counter\":41}";

static int load_copy(void *userdata, sync_pending *pending, char **out_state_json,
                     int64_t *out_version)
{
    (void)userdata;
    (void)pending;
    *out_state_json = sync_strdup(stored_json); /* libsync releases it with sync_free */
    *out_version = 7;
    return *out_state_json ? SYNC_OK : SYNC_ENOMEM;
}

static int save_nothing(void *userdata, sync_pending *pending, const cJSON *state,
                        const char *state_json, size_t len, int64_t version)
{
    (void)userdata;
    (void)pending;
    (void)state;
    (void)state_json;
    (void)len;
    (void)version;
    return SYNC_OK;
}

static sync_adapter_vtable vtable(void)
{
    sync_adapter_vtable vt = {0};
    vt.version = SYNC_ADAPTER_VTABLE_VERSION;
    vt.load = load_copy;
    vt.save = save_nothing;
    vt.destroy = count_free;
    return vt;
}

static void adapter_new_failure_releases_userdata_once(void)
{
    sync_adapter_vtable vt = vtable();
    sync_adapter *adapter = NULL;
    freed = 0;
    CHECK_EQ_INT(sync_adapter_new(NULL, &vt, &freed), SYNC_EINVAL);
    CHECK_EQ_INT(freed, 1);
    freed = 0;
    vt.version = SYNC_ADAPTER_VTABLE_VERSION + 1;
    CHECK_EQ_INT(sync_adapter_new(&adapter, &vt, &freed), SYNC_EINVAL);
    CHECK_EQ_INT(freed, 1);
    freed = 0;
    vt = vtable();
    vt.load = NULL;
    CHECK_EQ_INT(sync_adapter_new(&adapter, &vt, &freed), SYNC_EINVAL);
    CHECK_EQ_INT(freed, 1);
    CHECK(adapter == NULL);
}

/* An adapter's loaded state, allocated with sync_strdup, is taken over and released by libsync
 * (ASan and the leak checker see it freed once). */
static void adapter_state_allocated_with_sync_strdup(void)
{
    sync_adapter_vtable vt = vtable();
    sync_adapter *adapter = NULL;
    freed = 0;
    REQUIRE(sync_adapter_new(&adapter, &vt, &freed) == SYNC_OK);
    char *json = NULL;
    int64_t version = 0;
    CHECK_EQ_INT(sync_adapter_load(adapter, &json, &version), SYNC_OK);
    CHECK_EQ_STR(json, stored_json);
    sync_free(json);

    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.adapter = adapter;
    sync_engine *engine = NULL;
    REQUIRE(sync_engine_new(&engine, &opts) == SYNC_OK);
    char *state = sync_engine_get_state_json(engine);
    CHECK_EQ_STR(state, stored_json);
    sync_free(state);
    CHECK_EQ_INT(sync_engine_get_version(engine), 7);
    sync_engine_free(engine);
    CHECK_EQ_INT(freed, 1);

    CHECK(sync_strdup(NULL) == NULL);
    void *p = sync_malloc(0);
    CHECK(p != NULL);
    sync_free(p);
}

/* ---- engines -------------------------------------------------------------------------------- */

/* Room for an options struct of the current version (plus slack), filled with 0xA5: a caller of
 * an older version owns only its first bytes, and libsync must neither write nor read the rest
 * (read as a function pointer, 0xA5... would crash). */
enum { SLACK = 16 };

static unsigned char *older_struct(size_t size)
{
    unsigned char *raw = malloc(size + SLACK);
    if (!raw)
        abort();
    memset(raw, 0xA5, size + SLACK);
    return raw;
}

static int untouched_from(const unsigned char *raw, size_t from, size_t size)
{
    for (size_t i = from; i < size + SLACK; i++)
        if (raw[i] != 0xA5)
            return 0;
    return 1;
}

static int log_freed, hooks_freed, logged_after_free;

static void log_free(void *userdata)
{
    (void)userdata;
    log_freed++;
}

static void hooks_free(void *userdata)
{
    (void)userdata;
    hooks_freed++;
}

static void log_sink(sync_log_level level, const char *message, void *userdata)
{
    (void)level;
    (void)message;
    (void)userdata;
    if (log_freed)
        logged_after_free++;
}

static sync_hooks hooks_with_free(void)
{
    sync_hooks hooks = SYNC_HOOKS_INIT;
    hooks.free_userdata = hooks_free;
    return hooks;
}

/* sync_engine_new(opts) fails; every userdata it was handed is released once. */
static void expect_engine_refused(sync_engine_options *opts, int status)
{
    sync_hooks hooks = hooks_with_free();
    sync_adapter_vtable vt = vtable();
    REQUIRE(sync_adapter_new(&opts->adapter, &vt, &freed) == SYNC_OK);
    opts->hooks = &hooks;
    opts->log = log_sink;
    opts->log_free_userdata = log_free;
    freed = log_freed = hooks_freed = 0;
    sync_engine *engine = (sync_engine *)&freed;
    CHECK_EQ_INT(sync_engine_new(&engine, opts), status);
    CHECK(engine == NULL);
    CHECK_EQ_INT(freed, 1);
    CHECK_EQ_INT(hooks_freed, 1);
    CHECK_EQ_INT(log_freed, 1);
}

static void engine_new_failure_releases_userdata_once(void)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.persist_mode = (sync_persist_mode)7;
    expect_engine_refused(&opts, SYNC_EINVAL);
    opts = (sync_engine_options)SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = "{not json";
    expect_engine_refused(&opts, SYNC_EINVAL);
    opts = (sync_engine_options)SYNC_ENGINE_OPTIONS_INIT;
    opts.version = SYNC_ENGINE_OPTIONS_VERSION + 1;
    expect_engine_refused(&opts, SYNC_EINVAL);

    /* NULL out */
    sync_hooks hooks = hooks_with_free();
    opts = (sync_engine_options)SYNC_ENGINE_OPTIONS_INIT;
    opts.hooks = &hooks;
    opts.log_free_userdata = log_free;
    log_freed = hooks_freed = 0;
    CHECK_EQ_INT(sync_engine_new(NULL, &opts), SYNC_EINVAL);
    CHECK_EQ_INT(hooks_freed, 1);
    CHECK_EQ_INT(log_freed, 1);
}

static void engine_releases_log_userdata_after_its_last_line(void)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.log = log_sink;
    opts.log_free_userdata = log_free;
    opts.debug = 1; /* it logs up to its dispose */
    sync_engine *engine = NULL;
    log_freed = logged_after_free = 0;
    REQUIRE(sync_engine_new(&engine, &opts) == SYNC_OK);
    CHECK_EQ_INT(log_freed, 0);
    sync_engine_free(engine);
    CHECK_EQ_INT(log_freed, 1);
    CHECK_EQ_INT(logged_after_free, 0);
}

/* Version 3 added log_free_userdata: a version-2 caller's shorter struct is neither written past
 * by init nor read past by sync_engine_new (the 0xA5 bytes would be a wild function pointer). */
static void engine_options_version_2_still_accepted(void)
{
    unsigned char *raw = older_struct(sizeof(sync_engine_options));
    sync_engine_options *v2 = (sync_engine_options *)(void *)raw;
    CHECK_EQ_INT(sync_engine_options_init(v2, 2), SYNC_OK);
    CHECK_EQ_INT(v2->version, 2);
    CHECK(untouched_from(raw, offsetof(sync_engine_options, log_free_userdata),
                         sizeof(sync_engine_options)));
    sync_engine *engine = NULL;
    CHECK_EQ_INT(sync_engine_new(&engine, v2), SYNC_OK);
    sync_engine_free(engine);
    v2->persist_mode = (sync_persist_mode)9; /* a failure must not read it either */
    CHECK_EQ_INT(sync_engine_new(&engine, v2), SYNC_EINVAL);
    free(raw);
}

/* Version 4 added the resume history's bounds: a version-3 caller's struct ends before them
 * (0xA5 bytes read there would be a negative count: refused). */
static void engine_options_version_3_still_accepted(void)
{
    unsigned char *raw = older_struct(sizeof(sync_engine_options));
    sync_engine_options *v3 = (sync_engine_options *)(void *)raw;
    CHECK_EQ_INT(sync_engine_options_init(v3, 3), SYNC_OK);
    CHECK_EQ_INT(v3->version, 3);
    CHECK(untouched_from(raw, offsetof(sync_engine_options, resume_history_versions),
                         sizeof(sync_engine_options)));
    sync_engine *engine = NULL;
    CHECK_EQ_INT(sync_engine_new(&engine, v3), SYNC_OK);
    sync_engine_free(engine);
    sync_engine_options v4 = SYNC_ENGINE_OPTIONS_INIT;
    v4.resume_history_versions = -2;
    CHECK_EQ_INT(sync_engine_new(&engine, &v4), SYNC_EINVAL);
    free(raw);
}

static int never(sync_msg *msg, void *userdata)
{
    (void)msg;
    (void)userdata;
    return SYNC_OK;
}

static void registration_failure_releases_userdata_once(void)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    sync_engine *engine = NULL;
    REQUIRE(sync_engine_new(&engine, &opts) == SYNC_OK);
    freed = 0;
    CHECK_EQ_INT(sync_engine_on(NULL, "t", never, &freed, count_free), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_on(engine, NULL, never, &freed, count_free), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_on(engine, "t", NULL, &freed, count_free), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_use(NULL, never, &freed, count_free), SYNC_EINVAL);
    CHECK_EQ_INT(freed, 4);
    sync_engine_dispose(engine);
    CHECK_EQ_INT(sync_engine_on(engine, "t", never, &freed, count_free), SYNC_ECLOSED);
    CHECK_EQ_INT(freed, 5);
    sync_engine_free(engine);
}

/* ---- servers -------------------------------------------------------------------------------- */

static int server_auth_freed, server_log_freed;

static void server_auth_free(void *userdata)
{
    (void)userdata;
    server_auth_freed++;
}

static void server_log_free(void *userdata)
{
    (void)userdata;
    server_log_freed++;
}

static void expect_server_refused(sync_server_options *opts, int with_out)
{
    opts->auth_free_userdata = server_auth_free;
    opts->log = log_sink;
    opts->log_free_userdata = server_log_free;
    server_auth_freed = server_log_freed = 0;
    sync_server *server = NULL;
    CHECK_EQ_INT(sync_server_new(with_out ? &server : NULL, opts), SYNC_EINVAL);
    CHECK(server == NULL);
    CHECK_EQ_INT(server_auth_freed, 1);
    CHECK_EQ_INT(server_log_freed, 1);
}

static void server_new_failure_releases_userdata_once(void)
{
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    expect_server_refused(&opts, 0);
    opts = (sync_server_options)SYNC_SERVER_OPTIONS_INIT;
    opts.port = -3;
    expect_server_refused(&opts, 1);
    opts = (sync_server_options)SYNC_SERVER_OPTIONS_INIT;
    opts.static_dir = "/nonexistent/libsync-ownership-test";
    expect_server_refused(&opts, 1);
    opts = (sync_server_options)SYNC_SERVER_OPTIONS_INIT;
    opts.version = SYNC_SERVER_OPTIONS_VERSION + 1;
    expect_server_refused(&opts, 1);

    /* success: once each, when the server is freed */
    opts = (sync_server_options)SYNC_SERVER_OPTIONS_INIT;
    opts.auth_free_userdata = server_auth_free;
    opts.log_free_userdata = server_log_free;
    server_auth_freed = server_log_freed = 0;
    sync_server *server = NULL;
    REQUIRE(sync_server_new(&server, &opts) == SYNC_OK);
    CHECK_EQ_INT(server_log_freed, 0);
    sync_server_free(server);
    CHECK_EQ_INT(server_auth_freed, 1);
    CHECK_EQ_INT(server_log_freed, 1);
}

/* Version 5 added log_free_userdata: a version-4 caller keeps working. */
static void server_options_version_4_still_accepted(void)
{
    unsigned char *raw = older_struct(sizeof(sync_server_options));
    sync_server_options *v4 = (sync_server_options *)(void *)raw;
    CHECK_EQ_INT(sync_server_options_init(v4, 4), SYNC_OK);
    CHECK_EQ_INT(v4->version, 4);
    CHECK(untouched_from(raw, offsetof(sync_server_options, log_free_userdata),
                         sizeof(sync_server_options)));
    sync_server *server = NULL;
    CHECK_EQ_INT(sync_server_new(&server, v4), SYNC_OK);
    sync_server_free(server);
    v4->port = -1;
    CHECK_EQ_INT(sync_server_new(&server, v4), SYNC_EINVAL);
    free(raw);
}

/* Version 7 added event_loop: a version-6 caller keeps working, and what lies past its struct
 * (0xA5 bytes here, no valid event loop) is never read as one. */
static void server_options_version_6_still_accepted(void)
{
    unsigned char *raw = older_struct(sizeof(sync_server_options));
    sync_server_options *v6 = (sync_server_options *)(void *)raw;
    CHECK_EQ_INT(sync_server_options_init(v6, 6), SYNC_OK);
    CHECK_EQ_INT(v6->version, 6);
    CHECK(untouched_from(raw, offsetof(sync_server_options, event_loop),
                         sizeof(sync_server_options)));
    sync_server *server = NULL;
    CHECK_EQ_INT(sync_server_new(&server, v6), SYNC_OK);
    sync_server_free(server);
    free(raw);
}

int main(void)
{
    RUN(conn_new_failure_releases_userdata_once);
    RUN(adapter_new_failure_releases_userdata_once);
    RUN(adapter_state_allocated_with_sync_strdup);
    RUN(engine_new_failure_releases_userdata_once);
    RUN(engine_releases_log_userdata_after_its_last_line);
    RUN(engine_options_version_2_still_accepted);
    RUN(engine_options_version_3_still_accepted);
    RUN(registration_failure_releases_userdata_once);
    RUN(server_new_failure_releases_userdata_once);
    RUN(server_options_version_4_still_accepted);
    RUN(server_options_version_6_still_accepted);
    return check_summary();
}

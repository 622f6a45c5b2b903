/* The engine's lifecycle, locking, reporting, registration of steps and hooks, and the
 * read-side of the state. The ordered work itself lives in engine_ops.c. */
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_internal.h"
#include "error.h"
#include "options.h"
#include "json_check.h"

#define DEFAULT_MAX_MESSAGE_BYTES ((size_t)1 << 20)
#define DEFAULT_MAX_JSON_DEPTH 64

/* ---- locking and lifetime ------------------------------------------------------------------- */

sync__engine_waits *sync__engine_waits_get(sync_engine *engine)
{
    if (engine->waits)
        return engine->waits;
    sync__engine_waits *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    pthread_condattr_t cattr;
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    int err = pthread_cond_init(&w->cond, &cattr);
    pthread_condattr_destroy(&cattr);
    if (err) {
        free(w);
        return NULL;
    }
    engine->waits = w;
    return w;
}

void sync__engine_lock(sync_engine *engine)
{
    pthread_mutex_lock(&engine->lock);
    engine->lock_depth++;
}

static void engine_destroy(sync_engine *engine)
{
    /* every outermost unlock hands them on; none is left unless a path forgot to unlock */
    sync__remote_deliver(sync__remote_take(engine));
    sync_adapter_free(engine->adapter);
    cJSON_Delete(engine->state);
    sync__feed_release(&engine->feed);
    free(engine->feed.readers);
    sync__delta_release(&engine->delta);
    free(engine->middleware);
    if (engine->waits) {
        pthread_cond_destroy(&engine->waits->cond);
        free(engine->waits);
    }
    pthread_mutex_destroy(&engine->lock);
    /* last: every log line of the engine is behind */
    if (engine->log_free_userdata)
        engine->log_free_userdata(engine->log_userdata);
    free(engine);
}

void sync__engine_unref(sync_engine *engine)
{
    if (atomic_fetch_sub_explicit(&engine->refs, 1, memory_order_acq_rel) == 1)
        engine_destroy(engine);
}

void sync__engine_unref_later(sync_engine *engine)
{
    engine->deferred_unrefs++;
}

void sync__engine_unlock(sync_engine *engine)
{
    unsigned unrefs = 0;
    struct sync__remote_delivery *deliveries = NULL;
    if (--engine->lock_depth == 0) {
        unrefs = engine->deferred_unrefs;
        engine->deferred_unrefs = 0;
        if (engine->remote_deliveries)
            deliveries = sync__remote_take(engine);
    }
    pthread_mutex_unlock(&engine->lock);
    /* before the unrefs: a done callback reads nothing of the engine, but may call into it */
    sync__remote_deliver(deliveries);
    while (unrefs--)
        sync__engine_unref(engine);
}

/* ---- logging and error reports -------------------------------------------------------------- */

static void engine_vlog(sync_engine *engine, sync_log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static void engine_vlog(sync_engine *engine, sync_log_level level, const char *fmt, va_list ap)
{
    char text[1024];
    vsnprintf(text, sizeof text, fmt, ap);
    if (engine->log) {
        engine->log(level, text, engine->log_userdata);
        return;
    }
    static const char *const names[] = {"error", "warn", "info", "debug"};
    fprintf(stderr, "libsync %s: %s\n", names[level], text);
}

void sync__engine_log(sync_engine *engine, sync_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    engine_vlog(engine, level, fmt, ap);
    va_end(ap);
}

int sync__engine_report(sync_engine *engine, int status, const char *context, sync_conn *conn,
                        const char *fmt, ...)
{
    char detail[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    char message[1024];
    snprintf(message, sizeof message, "%s: %s", sync_strerror(status), detail);
    sync__fail(status, "%s", message);
    if (engine->hooks.on_error)
        engine->hooks.on_error(engine, status, message, context, conn, engine->hooks.userdata);
    else
        sync__engine_log(engine, SYNC_LOG_ERROR, "%s: %s", context, message);
    /* A hook may have made libsync calls that overwrote this thread's detail. */
    sync__fail(status, "%s", message);
    return status;
}

/* ---- options and creation ------------------------------------------------------------------- */

/* The bytes a caller's struct of that (known) version has: the fields after it do not exist. */
static size_t options_size(unsigned int version)
{
    if (version >= 4)
        return sizeof(sync_engine_options);
    if (version == 3)
        return offsetof(sync_engine_options, resume_history_versions);
    return version == 2 ? offsetof(sync_engine_options, log_free_userdata)
                        : offsetof(sync_engine_options, step_timeout_ms);
}

int sync_engine_options_init(sync_engine_options *opts, unsigned int version)
{
    static const sync_engine_options defaults = SYNC_ENGINE_OPTIONS_INIT;
    return sync__options_init(opts, &defaults, options_size(version), version,
                              SYNC_ENGINE_OPTIONS_VERSION, "engine");
}

/* A field of version 2 or later, read only when the caller's struct has it. */
static int64_t option_step_timeout_ms(const sync_engine_options *opts)
{
    return opts->version >= 2 ? opts->step_timeout_ms : 0;
}

/* After the version check: the fields the caller's version has. */
static const char *check_options(const sync_engine_options *opts)
{
    if (opts->heartbeat_interval_ms < 0 || opts->ping_timeout_ms < 0 || opts->sync_interval_ms < 0)
        return "intervals must not be negative";
    if (opts->max_json_depth < 0)
        return "max_json_depth must not be negative";
    if (opts->persist_mode < SYNC_PERSIST_ON_CHANGE || opts->persist_mode > SYNC_PERSIST_MANUAL)
        return "unknown persist_mode";
    if (opts->timer_mode != SYNC_TIMERS_MANUAL && opts->timer_mode != SYNC_TIMERS_THREAD)
        return "unknown timer_mode";
    if (opts->hooks && opts->hooks->version != SYNC_HOOKS_VERSION)
        return "unknown hooks version";
    if (option_step_timeout_ms(opts) < 0)
        return "step_timeout_ms must not be negative";
    if (opts->version >= 4 && opts->resume_history_versions < -1)
        return "resume_history_versions must be -1 (off), 0 (default) or positive";
    return NULL;
}

static sync_free_cb option_log_free_userdata(const sync_engine_options *opts)
{
    return opts->version >= 3 ? opts->log_free_userdata : NULL;
}

/* Every failure releases what the options handed over, once (common.h). */
static int new_fail(const sync_engine_options *opts, int status, const char *what)
{
    if (opts) {
        sync_adapter_free(opts->adapter);
        if (opts->hooks && opts->hooks->free_userdata)
            opts->hooks->free_userdata(opts->hooks->userdata);
        sync_free_cb log_free = option_log_free_userdata(opts);
        if (log_free)
            log_free(opts->log_userdata);
    }
    return sync__fail(status, "sync_engine_new: %s", what);
}

int sync_engine_new(sync_engine **out, const sync_engine_options *opts)
{
    if (out)
        *out = NULL;
    if (!out || !opts)
        return new_fail(opts, SYNC_EINVAL, "out and opts are required");
    int version_rc = sync__check_options(opts, SYNC_ENGINE_OPTIONS_VERSION, "engine");
    if (version_rc != SYNC_OK) {
        char why[600];
        snprintf(why, sizeof why, "%s", sync_error_last());
        return new_fail(opts, version_rc, why);
    }
    const char *problem = check_options(opts);
    if (problem)
        return new_fail(opts, SYNC_EINVAL, problem);
    cJSON *state = NULL;
    if (opts->initial_state_json) {
        int rc =
            sync__json_parse(opts->initial_state_json, strlen(opts->initial_state_json), 0, &state);
        if (rc != SYNC_OK) {
            char why[600];
            snprintf(why, sizeof why, "initial_state_json: %s", sync_error_last());
            return new_fail(opts, rc == SYNC_ENOMEM ? rc : SYNC_EINVAL, why);
        }
    } else if (!(state = cJSON_CreateObject())) {
        return new_fail(opts, SYNC_ENOMEM, "out of memory");
    }
    /* the process's one ping frame, made once: the heartbeat never fails for want of it */
    sync_engine *engine = sync__frame_ping() ? calloc(1, sizeof *engine) : NULL;
    if (!engine) {
        cJSON_Delete(state);
        return new_fail(opts, SYNC_ENOMEM, "out of memory");
    }
    atomic_init(&engine->refs, 1);
    atomic_init(&engine->conn_count, 0);
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&engine->lock, &attr);
    pthread_mutexattr_destroy(&attr);

    engine->versioning = opts->enable_versioning ? 1 : 0;
    engine->persist_mode = (unsigned char)opts->persist_mode;
    engine->timer_mode = (unsigned char)opts->timer_mode;
    engine->auto_broadcast = opts->auto_broadcast ? 1 : 0;
    engine->reply_errors = opts->reply_errors ? 1 : 0;
    engine->debug = opts->debug ? 1 : 0;
    engine->max_message_bytes =
        opts->max_message_bytes ? opts->max_message_bytes : DEFAULT_MAX_MESSAGE_BYTES;
    engine->max_json_depth = opts->max_json_depth ? opts->max_json_depth : DEFAULT_MAX_JSON_DEPTH;
    engine->heartbeat_ms = opts->heartbeat_interval_ms;
    engine->ping_timeout_ms = opts->ping_timeout_ms;
    engine->sync_ms = opts->sync_interval_ms;
    engine->step_timeout_ms = option_step_timeout_ms(opts);
    engine->step_deadline_ms = -1;
    engine->ticker_deadline_ms = -1;
    sync__delta_init(&engine->delta, opts->version >= 4 ? opts->resume_history_versions : 0,
                     opts->version >= 4 ? opts->resume_history_bytes : 0);
    engine->log = opts->log;
    engine->log_userdata = opts->log_userdata;
    engine->log_free_userdata = option_log_free_userdata(opts);
    if (opts->hooks)
        engine->hooks = *opts->hooks;
    engine->hooks.version = SYNC_HOOKS_VERSION;
    engine->adapter = opts->adapter;
    engine->state = state;
    engine->feed.head.seq = 1;
    atomic_init(&engine->version, engine->versioning ? 0 : -1);
    engine->stats.version = SYNC_ENGINE_STATS_VERSION;

    int64_t now = sync_now_ms();
    engine->next_heartbeat_ms = engine->heartbeat_ms > 0 ? now + engine->heartbeat_ms : -1;
    engine->next_sync_ms = engine->sync_ms > 0 ? now + engine->sync_ms : -1;

    SYNC__DEBUG(engine, "engine created (versioning %d, persist mode %d)", engine->versioning,
                (int)engine->persist_mode);
    if (engine->adapter) {
        sync__op *load = sync__op_new(OP_LOAD);
        if (!load) {
            sync_engine_free(engine);
            return sync__fail(SYNC_ENOMEM, "sync_engine_new: out of memory");
        }
        char saved_error[512] = "";
        sync__engine_lock(engine);
        int rc = sync__op_submit(engine, load);
        if (rc < 0)
            snprintf(saved_error, sizeof saved_error, "%s", sync_error_last());
        sync__engine_unlock(engine);
        if (rc < 0)
            sync__fail(rc, "%s", saved_error); /* the engine still works, from initial state */
    }
    if (engine->timer_mode == SYNC_TIMERS_THREAD &&
        (engine->heartbeat_ms > 0 || engine->sync_ms > 0 || engine->step_timeout_ms > 0)) {
        int rc = sync__engine_timers_start(engine);
        if (rc != SYNC_OK) {
            sync_engine_free(engine);
            return rc;
        }
    }
    *out = engine;
    return SYNC_OK;
}

/* ---- dispose and free ----------------------------------------------------------------------- */

int sync_engine_dispose(sync_engine *engine)
{
    if (!engine)
        return sync__fail(SYNC_EINVAL, "sync_engine_dispose: engine is NULL");
    sync__engine_lock(engine);
    if (engine->disposed) {
        sync__engine_unlock(engine);
        return SYNC_OK;
    }
    SYNC__DEBUG(engine, "dispose: closing %zu connections", atomic_load(&engine->conn_count));
    engine->disposed = 1;
    engine->next_heartbeat_ms = -1;
    engine->next_sync_ms = -1;
    sync__op_drop_queue(engine);
    /* Forget the set first so a transport that reports the close at once finds nothing left. */
    sync_conn *conn = engine->conns;
    engine->conns = NULL;
    atomic_store(&engine->conn_count, 0);
    engine->feed.push_count = 0;
    while (conn) {
        sync_conn *next = conn->next;
        conn->prev = conn->next = NULL;
        conn->state = CONN_CLOSED;
        sync__conn_request_close(conn, 1001, "going away");
        sync_conn_free(conn);
        conn = next;
    }
    sync__engine_timers_stop(engine);
    sync__engine_notify_deadline(engine);
    sync__engine_unlock(engine);
    return SYNC_OK;
}

static void free_step(step_entry *step)
{
    if (step->free_userdata)
        step->free_userdata(step->userdata);
    memset(step, 0, sizeof *step);
}

void sync_engine_free(sync_engine *engine)
{
    if (!engine)
        return;
    sync_engine_dispose(engine);
    sync__engine_timers_join(engine);
    sync__engine_lock(engine);
    handler_entry *handlers = engine->handlers;
    engine->handlers = NULL;
    step_entry validator = engine->validator;
    memset(&engine->validator, 0, sizeof engine->validator);
    step_entry *middleware = engine->middleware;
    size_t middleware_count = engine->middleware_count;
    engine->middleware = NULL;
    engine->middleware_count = 0;
    sync_hooks hooks = engine->hooks;
    memset(&engine->hooks, 0, sizeof engine->hooks);
    sync__engine_unlock(engine);

    while (handlers) {
        handler_entry *next = handlers->next;
        free_step(&handlers->step);
        free(handlers);
        handlers = next;
    }
    free_step(&validator);
    for (size_t i = 0; i < middleware_count; i++)
        free_step(&middleware[i]);
    free(middleware);
    if (hooks.free_userdata)
        hooks.free_userdata(hooks.userdata);
    sync__engine_unref(engine);
}

/* ---- registration --------------------------------------------------------------------------- */

/* Common entry for registration calls: on failure the userdata is released as promised. */
static int enter_register(sync_engine *engine, void *userdata, sync_free_cb free_userdata,
                          const char *what)
{
    if (!engine) {
        if (free_userdata)
            free_userdata(userdata);
        return sync__fail(SYNC_EINVAL, "%s: engine is NULL", what);
    }
    sync__engine_lock(engine);
    if (engine->disposed) {
        sync__engine_unlock(engine);
        if (free_userdata)
            free_userdata(userdata);
        return sync__fail(SYNC_ECLOSED, "%s: the engine is disposed", what);
    }
    return SYNC_OK;
}

int sync_engine_on(sync_engine *engine, const char *type, sync_step_cb handler, void *userdata,
                   sync_free_cb free_userdata)
{
    if (engine && (!type || !handler)) {
        if (free_userdata)
            free_userdata(userdata);
        return sync__fail(SYNC_EINVAL, "sync_engine_on: type and handler are required");
    }
    int rc = enter_register(engine, userdata, free_userdata, "sync_engine_on");
    if (rc != SYNC_OK)
        return rc;
    step_entry step = {handler, userdata, free_userdata};
    for (handler_entry *h = engine->handlers; h; h = h->next) {
        if (strcmp(h->type, type) == 0) {
            step_entry old = h->step;
            h->step = step;
            sync__engine_unlock(engine);
            free_step(&old); /* unlocked: a binding's release may run arbitrary code */
            return SYNC_OK;
        }
    }
    size_t type_len = strlen(type);
    handler_entry *entry = malloc(sizeof *entry + type_len + 1);
    if (!entry) {
        sync__engine_unlock(engine);
        if (free_userdata)
            free_userdata(userdata);
        return sync__fail(SYNC_ENOMEM, "out of memory registering handler \"%s\"", type);
    }
    memcpy(entry->type, type, type_len + 1);
    entry->step = step;
    entry->next = engine->handlers;
    engine->handlers = entry;
    sync__engine_unlock(engine);
    return SYNC_OK;
}

int sync_engine_off(sync_engine *engine, const char *type)
{
    if (!engine || !type)
        return sync__fail(SYNC_EINVAL, "sync_engine_off: engine and type are required");
    sync__engine_lock(engine);
    if (engine->disposed) {
        sync__engine_unlock(engine);
        return sync__fail(SYNC_ECLOSED, "sync_engine_off: the engine is disposed");
    }
    for (handler_entry **link = &engine->handlers; *link; link = &(*link)->next) {
        handler_entry *h = *link;
        if (strcmp(h->type, type) == 0) {
            *link = h->next;
            sync__engine_unlock(engine);
            free_step(&h->step);
            free(h);
            return SYNC_OK;
        }
    }
    sync__engine_unlock(engine);
    return sync__fail(SYNC_ENOHANDLER, "no handler registered for \"%s\"", type);
}

int sync_engine_set_validator(sync_engine *engine, sync_step_cb validator, void *userdata,
                              sync_free_cb free_userdata)
{
    int rc = enter_register(engine, userdata, free_userdata, "sync_engine_set_validator");
    if (rc != SYNC_OK)
        return rc;
    step_entry old = engine->validator;
    engine->validator.cb = validator;
    engine->validator.userdata = validator ? userdata : NULL;
    engine->validator.free_userdata = validator ? free_userdata : NULL;
    sync__engine_unlock(engine);
    free_step(&old);
    if (!validator && free_userdata)
        free_userdata(userdata);
    return SYNC_OK;
}

int sync_engine_use(sync_engine *engine, sync_step_cb middleware, void *userdata,
                    sync_free_cb free_userdata)
{
    if (engine && !middleware) {
        if (free_userdata)
            free_userdata(userdata);
        return sync__fail(SYNC_EINVAL, "sync_engine_use: middleware is NULL");
    }
    int rc = enter_register(engine, userdata, free_userdata, "sync_engine_use");
    if (rc != SYNC_OK)
        return rc;
    step_entry *grown = realloc(engine->middleware, (engine->middleware_count + 1) * sizeof *grown);
    if (!grown) {
        sync__engine_unlock(engine);
        if (free_userdata)
            free_userdata(userdata);
        return sync__fail(SYNC_ENOMEM, "out of memory adding a middleware");
    }
    engine->middleware = grown;
    grown[engine->middleware_count++] = (step_entry){middleware, userdata, free_userdata};
    sync__engine_unlock(engine);
    return SYNC_OK;
}

int sync_engine_set_hooks(sync_engine *engine, const sync_hooks *hooks)
{
    void *userdata = hooks ? hooks->userdata : NULL;
    sync_free_cb free_userdata = hooks ? hooks->free_userdata : NULL;
    if (hooks && hooks->version != SYNC_HOOKS_VERSION) {
        if (free_userdata)
            free_userdata(userdata);
        return sync__fail(SYNC_EINVAL, "sync_engine_set_hooks: unknown hooks version %u",
                          hooks->version);
    }
    int rc = enter_register(engine, userdata, free_userdata, "sync_engine_set_hooks");
    if (rc != SYNC_OK)
        return rc;
    sync_hooks old = engine->hooks;
    if (hooks)
        engine->hooks = *hooks;
    else
        memset(&engine->hooks, 0, sizeof engine->hooks);
    engine->hooks.version = SYNC_HOOKS_VERSION;
    sync__engine_unlock(engine);
    if (old.free_userdata)
        old.free_userdata(old.userdata);
    return SYNC_OK;
}

/* ---- reading the state ---------------------------------------------------------------------- */

cJSON *sync_engine_get_state(sync_engine *engine)
{
    if (!engine) {
        sync__fail(SYNC_EINVAL, "sync_engine_get_state: engine is NULL");
        return NULL;
    }
    sync__engine_lock(engine);
    cJSON *copy = NULL;
    if (engine->disposed)
        sync__fail(SYNC_ECLOSED, "sync_engine_get_state: the engine is disposed");
    else if (!(copy = cJSON_Duplicate(engine->state, 1)))
        sync__fail(SYNC_ENOMEM, "out of memory copying the state");
    sync__engine_unlock(engine);
    return copy;
}

char *sync_engine_get_state_json(sync_engine *engine)
{
    if (!engine) {
        sync__fail(SYNC_EINVAL, "sync_engine_get_state_json: engine is NULL");
        return NULL;
    }
    sync__engine_lock(engine);
    char *copy = NULL;
    if (engine->disposed) {
        sync__fail(SYNC_ECLOSED, "sync_engine_get_state_json: the engine is disposed");
    } else {
        size_t len = 0;
        const char *text = sync__engine_state_text(engine, &len);
        if (text && (copy = malloc(len + 1)))
            memcpy(copy, text, len + 1);
        if (!copy)
            sync__fail(SYNC_ENOMEM, "out of memory serialising the state");
    }
    sync__engine_unlock(engine);
    return copy;
}

int64_t sync_engine_get_version(sync_engine *engine)
{
    if (!engine) {
        sync__fail(SYNC_EINVAL, "sync_engine_get_version: engine is NULL");
        return -1;
    }
    return atomic_load(&engine->version);
}

size_t sync_engine_connection_count(sync_engine *engine)
{
    return engine ? atomic_load(&engine->conn_count) : 0;
}

int sync_engine_get_stats(sync_engine *engine, sync_engine_stats *out)
{
    if (!engine || !out)
        return sync__fail(SYNC_EINVAL, "sync_engine_get_stats: engine and out are required");
    unsigned int version = out->version;
    if (version == 0 || version > SYNC_ENGINE_STATS_VERSION)
        return sync__fail(SYNC_EINVAL, "sync_engine_get_stats: unknown stats version %u", version);
    sync__engine_lock(engine);
    sync_engine_stats stats = engine->stats;
    sync__engine_unlock(engine);
    stats.version = version;
    stats.state_version = atomic_load(&engine->version);
    stats.connections = atomic_load(&engine->conn_count);
    /* a caller built against an older version has only that version's fields */
    memcpy(out, &stats, version >= 2 ? sizeof stats : offsetof(sync_engine_stats, steps_timed_out));
    return SYNC_OK;
}

/* ---- transport.h settings ------------------------------------------------------------------- */

void sync__engine_set_auto_broadcast(sync_engine *engine, int on)
{
    if (!engine)
        return;
    sync__engine_lock(engine);
    engine->auto_broadcast = on ? 1 : 0;
    sync__engine_unlock(engine);
}

#include "fake_conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fake_send(void *userdata, const char *text, size_t len)
{
    fake_conn *fake = userdata;
    pthread_mutex_lock(&fake->lock);
    if (fake->fail_send) {
        pthread_mutex_unlock(&fake->lock);
        return SYNC_ESEND;
    }
    if (fake->count == fake->cap) {
        size_t cap = fake->cap ? fake->cap * 2 : 8;
        char **grown = realloc(fake->frames, cap * sizeof *grown);
        if (!grown)
            abort();
        fake->frames = grown;
        fake->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        abort();
    memcpy(copy, text, len);
    copy[len] = '\0';
    fake->frames[fake->count++] = copy;
    pthread_mutex_unlock(&fake->lock);
    return SYNC_OK;
}

static void fake_close(void *userdata, int code, const char *reason)
{
    (void)reason;
    fake_conn *fake = userdata;
    pthread_mutex_lock(&fake->lock);
    fake->closes++;
    fake->last_code = code;
    sync_engine *engine = fake->close_engine;
    pthread_mutex_unlock(&fake->lock);
    if (engine)
        sync_engine_handle_close(engine, fake->conn);
}

static void fake_destroy(void *userdata)
{
    fake_conn *fake = userdata;
    for (size_t i = 0; i < fake->count; i++)
        free(fake->frames[i]);
    free(fake->frames);
    pthread_mutex_destroy(&fake->lock);
    free(fake);
}

fake_conn *fake_conn_new(void)
{
    fake_conn *fake = calloc(1, sizeof *fake);
    if (!fake)
        abort();
    pthread_mutex_init(&fake->lock, NULL);
    sync_conn_callbacks cb = SYNC_CONN_CALLBACKS_INIT;
    cb.send = fake_send;
    cb.close = fake_close;
    cb.free_userdata = fake_destroy;
    if (sync_conn_new(&fake->conn, &cb, fake) != SYNC_OK)
        abort();
    return fake;
}

void fake_conn_release(fake_conn *fake)
{
    if (fake)
        sync_conn_free(fake->conn);
}

size_t fake_conn_frames(fake_conn *fake)
{
    pthread_mutex_lock(&fake->lock);
    size_t n = fake->count;
    pthread_mutex_unlock(&fake->lock);
    return n;
}

int fake_conn_closes(fake_conn *fake)
{
    pthread_mutex_lock(&fake->lock);
    int n = fake->closes;
    pthread_mutex_unlock(&fake->lock);
    return n;
}

cJSON *fake_conn_frame_json(fake_conn *fake, size_t i)
{
    pthread_mutex_lock(&fake->lock);
    cJSON *json = i < fake->count ? cJSON_Parse(fake->frames[i]) : NULL;
    pthread_mutex_unlock(&fake->lock);
    return json;
}

const char *fake_conn_frame_type(fake_conn *fake, size_t i, char *buf, size_t size)
{
    cJSON *json = fake_conn_frame_json(fake, i);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(json, "type");
    snprintf(buf, size, "%s", cJSON_IsString(type) ? type->valuestring : "");
    cJSON_Delete(json);
    return buf;
}

double fake_conn_frame_counter(fake_conn *fake, size_t i)
{
    cJSON *json = fake_conn_frame_json(fake, i);
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(json, "data");
    const cJSON *counter = cJSON_GetObjectItemCaseSensitive(data, "counter");
    double value = cJSON_IsNumber(counter) ? counter->valuedouble : -999999;
    cJSON_Delete(json);
    return value;
}

/* ---- in-memory adapter ---------------------------------------------------------------------- */

void fake_store_init(fake_store *store, const char *json, int64_t version)
{
    memset(store, 0, sizeof *store);
    pthread_mutex_init(&store->lock, NULL);
    store->json = json ? strdup(json) : NULL;
    store->version = version;
}

void fake_store_cleanup(fake_store *store)
{
    free(store->json);
    free(store->pending_json);
    pthread_mutex_destroy(&store->lock);
}

static int park(fake_store *store, sync_pending *pending, int call)
{
    store->pending = pending;
    store->pending_call = call;
    return SYNC_PENDING;
}

static int store_init(void *userdata, sync_pending *pending)
{
    fake_store *store = userdata;
    pthread_mutex_lock(&store->lock);
    store->inits++;
    int rc = store->async ? park(store, pending, 0) : store->fail_init;
    pthread_mutex_unlock(&store->lock);
    return rc;
}

static int store_load(void *userdata, sync_pending *pending, char **out_json, int64_t *out_version)
{
    fake_store *store = userdata;
    pthread_mutex_lock(&store->lock);
    store->loads++;
    int rc;
    if (store->async) {
        rc = park(store, pending, 1);
    } else if (store->fail_load) {
        rc = store->fail_load;
    } else {
        *out_json = store->json ? strdup(store->json) : NULL;
        *out_version = store->version;
        rc = SYNC_OK;
    }
    pthread_mutex_unlock(&store->lock);
    return rc;
}

static int store_save(void *userdata, sync_pending *pending, const cJSON *state,
                      const char *state_json, size_t state_len, int64_t version)
{
    (void)state;
    fake_store *store = userdata;
    pthread_mutex_lock(&store->lock);
    store->saves++;
    int rc = SYNC_OK;
    if (store->async) {
        free(store->pending_json);
        store->pending_json = strndup(state_json, state_len);
        store->pending_version = version;
        rc = park(store, pending, 2);
    } else if (store->fail_save) {
        rc = store->fail_save;
    } else {
        free(store->json);
        store->json = strndup(state_json, state_len);
        store->version = version;
    }
    pthread_mutex_unlock(&store->lock);
    return rc;
}

static int store_backup(void *userdata, sync_pending *pending, int64_t *out_ts)
{
    fake_store *store = userdata;
    pthread_mutex_lock(&store->lock);
    store->backups++;
    int rc = SYNC_OK;
    if (store->async)
        rc = park(store, pending, 3);
    else if (store->fail_backup)
        rc = store->fail_backup;
    else
        *out_ts = sync_wall_ms();
    pthread_mutex_unlock(&store->lock);
    return rc;
}

static void store_destroy(void *userdata)
{
    fake_store *store = userdata;
    pthread_mutex_lock(&store->lock);
    store->destroyed++;
    pthread_mutex_unlock(&store->lock);
}

sync_adapter *fake_adapter_new(fake_store *store)
{
    sync_adapter_vtable vt = {SYNC_ADAPTER_VTABLE_VERSION,
                              store_init,
                              store_load,
                              store_save,
                              store->no_backup ? NULL : store_backup,
                              store_destroy};
    sync_adapter *adapter = NULL;
    if (sync_adapter_new(&adapter, &vt, store) != SYNC_OK)
        abort();
    return adapter;
}

int fake_store_has_pending(fake_store *store)
{
    pthread_mutex_lock(&store->lock);
    int has = store->pending != NULL;
    pthread_mutex_unlock(&store->lock);
    return has;
}

int fake_store_finish(fake_store *store, int status)
{
    pthread_mutex_lock(&store->lock);
    sync_pending *pending = store->pending;
    int call = store->pending_call;
    store->pending = NULL;
    if (pending && call == 2 && status == SYNC_OK) {
        free(store->json);
        store->json = store->pending_json;
        store->pending_json = NULL;
        store->version = store->pending_version;
    }
    char *json = store->json ? strdup(store->json) : NULL;
    int64_t version = store->version;
    pthread_mutex_unlock(&store->lock);
    if (!pending) {
        free(json);
        return 0;
    }
    /* Completions run engine work: never while holding the store's lock. */
    if (call == 1)
        sync_pending_complete_load(pending, status, json, version,
                                   status < 0 ? "fake load failure" : NULL);
    else if (call == 3)
        sync_pending_complete_backup(pending, status, sync_wall_ms(),
                                     status < 0 ? "fake backup failure" : NULL);
    else
        sync_pending_complete(pending, status, status < 0 ? "fake failure" : NULL);
    free(json);
    return 1;
}

/* ---- hooks ---------------------------------------------------------------------------------- */

static void h_connect(sync_engine *e, sync_conn *c, void *u)
{
    (void)e, (void)c;
    ((hook_log *)u)->connects++;
}
static void h_disconnect(sync_engine *e, sync_conn *c, void *u)
{
    (void)e, (void)c;
    ((hook_log *)u)->disconnects++;
}
static void h_change(sync_engine *e, const cJSON *o, const cJSON *n, void *u)
{
    (void)e, (void)o, (void)n;
    ((hook_log *)u)->state_changes++;
}
static void h_sync(sync_engine *e, const cJSON *s, int64_t v, void *u)
{
    (void)e, (void)s;
    ((hook_log *)u)->syncs++;
    ((hook_log *)u)->last_sync_version = v;
}
static void h_backup(sync_engine *e, int64_t ts, int64_t v, void *u)
{
    (void)e, (void)ts, (void)v;
    ((hook_log *)u)->backups++;
}
static void h_ping(sync_engine *e, sync_conn *c, void *u)
{
    (void)e, (void)c;
    hook_log *log = u;
    int64_t now = sync_now_ms();
    if (!log->pings)
        log->first_ping_ms = now;
    log->last_ping_ms = now;
    log->pings++;
}
static void h_pong(sync_engine *e, sync_conn *c, void *u)
{
    (void)e, (void)c;
    ((hook_log *)u)->pongs++;
}
static void h_timeout(sync_engine *e, sync_conn *c, void *u)
{
    (void)e, (void)c;
    ((hook_log *)u)->timeouts++;
}
static void h_error(sync_engine *e, int status, const char *message, const char *context,
                    sync_conn *c, void *u)
{
    (void)e, (void)c;
    hook_log *log = u;
    log->errors++;
    log->last_error_status = status;
    snprintf(log->last_error_context, sizeof log->last_error_context, "%s", context);
    snprintf(log->last_error_message, sizeof log->last_error_message, "%s", message);
}

sync_hooks hook_log_hooks(hook_log *log)
{
    sync_hooks hooks = SYNC_HOOKS_INIT;
    hooks.on_connect = h_connect;
    hooks.on_disconnect = h_disconnect;
    hooks.on_state_change = h_change;
    hooks.on_sync = h_sync;
    hooks.on_backup = h_backup;
    hooks.on_ping = h_ping;
    hooks.on_pong = h_pong;
    hooks.on_ping_timeout = h_timeout;
    hooks.on_error = h_error;
    hooks.userdata = log;
    return hooks;
}

sync_engine *hooked_engine(const sync_engine_options *opts, hook_log *log)
{
    sync_engine_options with_log = *opts;
    sync_hooks hooks;
    if (log) {
        hooks = hook_log_hooks(log);
        with_log.hooks = &hooks;
    }
    sync_engine *engine = NULL;
    return sync_engine_new(&engine, &with_log) == SYNC_OK ? engine : NULL;
}

fake_conn *fake_conn_open(sync_engine *engine)
{
    fake_conn *fake = fake_conn_new();
    sync_engine_handle_open(engine, fake->conn);
    return fake;
}

int fake_park(sync_msg *msg, void *userdata)
{
    *(sync_msg **)userdata = msg;
    return SYNC_PENDING;
}

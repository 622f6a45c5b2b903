/* The Redis store of one engine: the hash "<prefix>state" (redis_conn.h), its epoch in the same
 * HSET as the record. Built without hiredis, its constructor says so. */
#include "engine/completion.h"
#include "engine/delta.h"
#include "error.h"
#include "options.h"
#include "redis_conn.h"
#include "store_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libsync/adapter.h"

#ifdef LIBSYNC_HAVE_REDIS

typedef struct redis_adapter {
    redis_conn conn;
    char *key;
    char loaded_epoch[SYNC__EPOCH_MAX + 1]; /* what the last load read, "" none */
    char epoch[SYNC__EPOCH_MAX + 1];        /* what saves write, "" none */
} redis_adapter;

static const char *redis_epoch_loaded(void *userdata)
{
    return ((redis_adapter *)userdata)->loaded_epoch;
}

static void redis_epoch_set(void *userdata, const char *epoch)
{
    redis_adapter *ra = userdata;
    snprintf(ra->epoch, sizeof ra->epoch, "%s", sync__epoch_valid(epoch) ? epoch : "");
}

static const sync__adapter_epoch redis_epoch = {redis_epoch_loaded, redis_epoch_set};

static int redis_init(void *userdata, sync_pending *pending)
{
    (void)pending;
    return redis_conn_open(&((redis_adapter *)userdata)->conn);
}

static int redis_load(void *userdata, sync_pending *pending, char **out_state_json,
                      int64_t *out_version)
{
    (void)pending;
    redis_adapter *ra = userdata;
    return redis_record_load(&ra->conn, ra->key, NULL, NULL, "the record", out_state_json,
                             out_version, ra->loaded_epoch);
}

static int redis_save(void *userdata, sync_pending *pending, const cJSON *state,
                      const char *state_json, size_t state_len, int64_t version)
{
    (void)pending;
    redis_adapter *ra = userdata;
    char *printed = NULL;
    int rc = store_state_text(state, &state_json, &state_len, &printed);
    if (rc != SYNC_OK)
        return rc;
    rc = redis_record_save(&ra->conn, ra->key, NULL, NULL, "the record", state_json, state_len,
                           version, ra->epoch[0] ? ra->epoch : NULL);
    cJSON_free(printed);
    return rc;
}

static void redis_destroy(void *userdata)
{
    redis_adapter *ra = userdata;
    if (!ra)
        return;
    redis_conn_release(&ra->conn);
    free(ra->key);
    free(ra);
}

int sync_adapter_redis_new(sync_adapter **out, const sync_redis_options *opts)
{
    if (!out)
        return sync__fail(SYNC_EINVAL, "out pointer is NULL");
    *out = NULL;
    int rc = sync__check_options(opts, SYNC_REDIS_OPTIONS_VERSION, "Redis");
    if (rc != SYNC_OK)
        return rc;
    redis_adapter *ra = calloc(1, sizeof *ra);
    if (!ra)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    rc = redis_conn_setup(&ra->conn, opts);
    if (rc != SYNC_OK) {
        free(ra);
        return rc;
    }
    if (asprintf(&ra->key, "%sstate", ra->conn.prefix) < 0) {
        ra->key = NULL;
        redis_destroy(ra);
        return sync__fail(SYNC_ENOMEM, "out of memory");
    }
    sync_adapter_vtable vt = {
        .version = SYNC_ADAPTER_VTABLE_VERSION,
        .init = redis_init,
        .load = redis_load,
        .save = redis_save,
        .destroy = redis_destroy,
    };
    rc = sync_adapter_new(out, &vt, ra);
    if (rc == SYNC_OK) {
        sync__adapter_set_epoch_ops(*out, &redis_epoch);
        sync__error_clear();
    }
    return rc;
}

#else

int sync_adapter_redis_new(sync_adapter **out, const sync_redis_options *opts)
{
    (void)opts;
    if (out)
        *out = NULL;
    return sync__fail(SYNC_EUNSUPPORTED,
                      "libsync was built without Redis support (LIBSYNC_WITH_REDIS=OFF)");
}

#endif

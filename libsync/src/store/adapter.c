/* The generic adapter handle: wrapping a store's vtable, and calling it directly, without an
 * engine (a synchronous store only: nothing here can wait for a late completion). */
#include <stdlib.h>
#include <string.h>

#include "engine/completion.h"
#include "error.h"

int sync_adapter_new(sync_adapter **out, const sync_adapter_vtable *vtable, void *userdata)
{
    if (out)
        *out = NULL;
    if (!vtable)
        return sync__fail(SYNC_EINVAL, "sync_adapter_new: vtable is NULL");
    const char *problem = NULL;
    if (!out)
        problem = "out is NULL";
    else if (vtable->version != SYNC_ADAPTER_VTABLE_VERSION)
        problem = "unknown vtable version";
    else if (!vtable->load || !vtable->save)
        problem = "load and save are required";
    sync_adapter *adapter = problem ? NULL : malloc(sizeof *adapter);
    if (!adapter) {
        if (vtable->destroy)
            vtable->destroy(userdata);
        return problem ? sync__fail(SYNC_EINVAL, "sync_adapter_new: %s", problem)
                       : sync__fail(SYNC_ENOMEM, "out of memory creating an adapter");
    }
    adapter->vt = *vtable;
    adapter->userdata = userdata;
    adapter->epoch = NULL;
    *out = adapter;
    return SYNC_OK;
}

void sync_adapter_free(sync_adapter *adapter)
{
    if (!adapter)
        return;
    if (adapter->vt.destroy)
        adapter->vt.destroy(adapter->userdata);
    free(adapter);
}

/* ---- direct use ----------------------------------------------------------------------------- */

/* Runs one call; a callback that returns SYNC_PENDING counts only if it completed before
 * returning (possibly from another thread), since nothing here can wait for it. */
static int direct_call(sync_adapter *adapter, adapter_call call, const char *state_json,
                       int64_t version, char **out_json, int64_t *out_version, int64_t *out_ts)
{
    sync_pending *pending = calloc(1, sizeof *pending);
    if (!pending)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    pending->call = call;
    pending->in_call = 1;
    char *json = NULL;
    int64_t loaded_version = 0;
    int64_t ts = 0;
    int rc = SYNC_OK;
    cJSON *state = NULL;
    switch (call) {
    case CALL_INIT:
        rc = adapter->vt.init ? adapter->vt.init(adapter->userdata, pending) : SYNC_OK;
        break;
    case CALL_LOAD:
        rc = adapter->vt.load(adapter->userdata, pending, &json, &loaded_version);
        break;
    case CALL_SAVE:
        state = cJSON_Parse(state_json);
        if (!state) {
            sync__pending_free(pending);
            return sync__fail(SYNC_EPARSE, "sync_adapter_save: state_json is not JSON");
        }
        rc = adapter->vt.save(adapter->userdata, pending, state, state_json, strlen(state_json),
                              version);
        break;
    case CALL_BACKUP:
        rc = adapter->vt.backup(adapter->userdata, pending, &ts);
        break;
    }
    cJSON_Delete(state);
    if (rc != SYNC_PENDING) {
        sync__pending_free(pending);
        if (rc < 0) {
            free(json);
            return rc;
        }
    } else {
        if (!sync__pending_settle_direct(pending))
            return sync__fail(
                SYNC_EUNSUPPORTED,
                "the adapter finishes later; direct calls need a synchronous adapter");
        rc = pending->status;
        json = pending->state_json;
        pending->state_json = NULL;
        loaded_version = pending->version;
        ts = pending->timestamp_ms;
        if (rc < 0)
            sync__fail(rc, "%s", pending->error ? pending->error : sync_strerror(rc));
        sync__pending_free(pending);
        if (rc < 0) {
            free(json);
            return rc;
        }
    }
    if (out_json)
        *out_json = json;
    else
        free(json);
    if (out_version)
        *out_version = loaded_version;
    if (out_ts)
        *out_ts = ts;
    return SYNC_OK;
}

int sync_adapter_init(sync_adapter *adapter)
{
    if (!adapter)
        return sync__fail(SYNC_EINVAL, "sync_adapter_init: adapter is NULL");
    return direct_call(adapter, CALL_INIT, NULL, 0, NULL, NULL, NULL);
}

int sync_adapter_load(sync_adapter *adapter, char **out_state_json, int64_t *out_version)
{
    if (out_state_json)
        *out_state_json = NULL;
    if (!adapter || !out_state_json || !out_version)
        return sync__fail(SYNC_EINVAL, "sync_adapter_load: adapter and outputs are required");
    return direct_call(adapter, CALL_LOAD, NULL, 0, out_state_json, out_version, NULL);
}

int sync_adapter_save(sync_adapter *adapter, const char *state_json, int64_t version)
{
    if (!adapter || !state_json)
        return sync__fail(SYNC_EINVAL, "sync_adapter_save: adapter and state_json are required");
    return direct_call(adapter, CALL_SAVE, state_json, version, NULL, NULL, NULL);
}

int sync_adapter_backup(sync_adapter *adapter, int64_t *out_timestamp_ms)
{
    if (!adapter)
        return sync__fail(SYNC_EINVAL, "sync_adapter_backup: adapter is NULL");
    if (!adapter->vt.backup)
        return sync__fail(SYNC_EUNSUPPORTED, "this adapter cannot make backups");
    return direct_call(adapter, CALL_BACKUP, NULL, 0, NULL, NULL, out_timestamp_ms);
}

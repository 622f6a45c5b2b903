/* The completion tokens through which an adapter finishes a call later, from any thread: into the
 * engine's operation that waits for it, or back to a direct sync_adapter_* call. */
#include "completion.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "error.h"

/* Guards tokens of direct calls, which have no engine lock to lean on. */
static pthread_mutex_t direct_lock = PTHREAD_MUTEX_INITIALIZER;

void sync__pending_free(sync_pending *pending)
{
    if (!pending)
        return;
    free(pending->error);
    free(pending->state_json);
    free(pending);
}

int sync__pending_settle_direct(sync_pending *pending)
{
    pthread_mutex_lock(&direct_lock);
    pending->in_call = 0;
    int done = pending->done;
    if (!done)
        pending->orphaned = 1;
    pthread_mutex_unlock(&direct_lock);
    return done;
}

sync_pending *sync__pending_new_relay(void (*relay)(sync_pending *), void *ctx)
{
    sync_pending *pending = calloc(1, sizeof *pending);
    if (!pending)
        return NULL;
    pending->in_call = 1;
    pending->relay = relay;
    pending->relay_ctx = ctx;
    return pending;
}

int sync__pending_settle_relay(sync_pending *pending)
{
    pthread_mutex_lock(&direct_lock);
    pending->in_call = 0;
    int done = pending->done;
    if (!done)
        pending->awaiting = 1;
    pthread_mutex_unlock(&direct_lock);
    return done;
}

/* ---- completions ---------------------------------------------------------------------------- */

static int complete(sync_pending *pending, int status, const char *state_json, int64_t version,
                    int64_t timestamp_ms, const char *error_message)
{
    if (!pending)
        return sync__fail(SYNC_EINVAL, "completion: pending is NULL");
    if (status == SYNC_PENDING || status > 0)
        status = SYNC_EIO;
    char *json_copy = state_json ? strdup(state_json) : NULL;
    char *error_copy = error_message ? strdup(error_message) : NULL;
    if ((state_json && !json_copy) || (error_message && !error_copy)) {
        free(json_copy);
        free(error_copy);
        json_copy = NULL;
        error_copy = NULL;
        status = SYNC_ENOMEM;
    }
    sync_engine *engine = pending->engine;
    if (engine)
        sync__engine_lock(engine);
    else
        pthread_mutex_lock(&direct_lock);
    if (pending->done || (!pending->in_call && !pending->awaiting && !pending->orphaned)) {
        if (engine)
            sync__engine_unlock(engine);
        else
            pthread_mutex_unlock(&direct_lock);
        free(json_copy);
        free(error_copy);
        return sync__fail(SYNC_EINVAL, "completion: this call is not pending");
    }
    pending->status = status;
    pending->state_json = json_copy;
    pending->error = error_copy;
    pending->version = version;
    pending->timestamp_ms = timestamp_ms;
    int relay = 0;
    if (pending->in_call) {
        /* Finished before the callback returned: the caller picks the result up. */
        pending->done = 1;
    } else if (pending->orphaned) {
        sync__pending_free(pending);
    } else if (!engine && pending->relay) {
        pending->awaiting = 0;
        pending->done = 1;
        relay = 1;
    } else {
        pending->awaiting = 0;
        sync__engine_adapter_completed(engine, pending);
    }
    if (engine)
        sync__engine_unlock(engine);
    else
        pthread_mutex_unlock(&direct_lock);
    /* After the unlock: the relay may complete other tokens, which takes the lock again. */
    if (relay)
        pending->relay(pending);
    return SYNC_OK;
}

int sync_pending_complete(sync_pending *pending, int status, const char *error_message)
{
    return complete(pending, status, NULL, 0, 0, error_message);
}

int sync_pending_complete_load(sync_pending *pending, int status, const char *state_json,
                               int64_t version, const char *error_message)
{
    return complete(pending, status, state_json, version, 0, error_message);
}

int sync_pending_complete_backup(sync_pending *pending, int status, int64_t timestamp_ms,
                                 const char *error_message)
{
    return complete(pending, status, NULL, 0, timestamp_ms, error_message);
}

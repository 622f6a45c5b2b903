/* The adapter handle and the completion token of one adapter call: what a store's callbacks are
 * handed (sync_pending) and how its result reaches the engine, or a direct sync_adapter_* call,
 * from any thread. */
#ifndef LIBSYNC_SRC_ENGINE_COMPLETION_H
#define LIBSYNC_SRC_ENGINE_COMPLETION_H

#include <stdint.h>

#include "libsync/adapter.h"
#include "libsync/engine.h"

struct sync_adapter {
    sync_adapter_vtable vt;
    void *userdata;
};

typedef enum adapter_call { CALL_INIT, CALL_LOAD, CALL_SAVE, CALL_BACKUP } adapter_call;

struct sync__op;

/* One adapter call's completion token. With an engine its fields are guarded by the engine's
 * lock; without one (direct sync_adapter_* use) by a lock in completion.c. */
struct sync_pending {
    sync_engine *engine;
    struct sync__op *op;
    adapter_call call;
    int in_call;  /* the adapter callback has not returned yet */
    int done;     /* completed while in_call */
    int awaiting; /* the callback returned SYNC_PENDING; a completion continues the op */
    int orphaned; /* direct use gave up waiting; the completion frees the token */
    int status;
    char *error;
    char *state_json;
    int64_t version;
    int64_t timestamp_ms;
    /* Without an engine: where a late completion goes (room stores chain their calls through
     * it); NULL for a direct sync_adapter_* call. Runs outside every lock and owns the token. */
    void (*relay)(sync_pending *pending);
    void *relay_ctx;
};

void sync__pending_free(sync_pending *pending);

/* For a direct call whose callback returned SYNC_PENDING: 1 when the token was completed before
 * the callback returned (its result is in it); 0 when it was not, and then the token is orphaned:
 * the late completion frees it, the caller must not touch it again. */
int sync__pending_settle_direct(sync_pending *pending);

/* A token without an engine whose late completion runs relay(token) (any thread, no lock held);
 * in_call is set as for a callback about to run. NULL when out of memory. */
sync_pending *sync__pending_new_relay(void (*relay)(sync_pending *), void *ctx);

/* For a relay token whose callback returned SYNC_PENDING: 1 when it was completed before the
 * callback returned (the caller reads the result and frees it); 0 when it was not: the relay
 * runs on completion and owns the token from then on. */
int sync__pending_settle_relay(sync_pending *pending);

#endif

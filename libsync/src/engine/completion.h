/* The adapter handle and the completion token of one adapter call: what a store's callbacks are
 * handed (sync_pending) and how its result reaches the engine, or a direct sync_adapter_* call,
 * from any thread. */
#ifndef LIBSYNC_SRC_ENGINE_COMPLETION_H
#define LIBSYNC_SRC_ENGINE_COMPLETION_H

#include <stdint.h>

#include "libsync/adapter.h"
#include "libsync/engine.h"

/* What a built-in store does beyond the public vtable: keep the epoch of its history (delta.h)
 * in the same record as the state and the version, so it survives a restart and changes with the
 * store. Custom adapters have none: their engine gets a fresh epoch at each start. */
typedef struct sync__adapter_epoch {
    /* The epoch the last load read; NULL or "" when the record had none (old or never saved). */
    const char *(*loaded)(void *userdata);
    /* The epoch every later save writes with its record: the engine's own buffer, which lives as
     * long as the engine and so as its adapter, and changes only through another call of set()
     * (a store may keep the pointer instead of a copy). */
    void (*set)(void *userdata, const char *epoch);
} sync__adapter_epoch;

struct sync_adapter {
    sync_adapter_vtable vt;
    void *userdata;
    const sync__adapter_epoch *epoch; /* NULL: this store keeps no epoch */
};

/* A built-in store's epoch ops (static), set once after sync_adapter_new(). */
void sync__adapter_set_epoch_ops(sync_adapter *adapter, const sync__adapter_epoch *ops);
/* 1 when `epoch` is one the wire carries as is: 1 to SYNC__EPOCH_MAX of [A-Za-z0-9_-]. */
int sync__epoch_valid(const char *epoch);

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

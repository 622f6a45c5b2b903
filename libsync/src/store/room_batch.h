/* Group commit of a room store's saves (the SQLite room store's): the server opens a batch on its
 * service thread at the end of a loop turn, every room flushed in that turn starts its save, and
 * the close writes them all in one transaction and completes each save with the result. Internal:
 * custom room stores and the single-engine stores have none and save one record per call. */
#ifndef LIBSYNC_SRC_STORE_ROOM_BATCH_H
#define LIBSYNC_SRC_STORE_ROOM_BATCH_H

#include "libsync/rooms.h"

typedef struct sync__room_store_batch {
    /* 1 when a batch is now open for the calling thread; 0 when the store is batching for
     * another thread (two servers on one store): that thread's saves stay one per call. */
    int (*begin)(void *userdata);
    /* Writes the saves kept since begin() and completes each of their tokens (outside every lock
     * of the store); the batch is closed before the first completion runs. */
    void (*end)(void *userdata);
} sync__room_store_batch;

/* A built-in store's ops (static), set once after sync_room_store_new(). */
void sync__room_store_set_batch_ops(sync_room_store *store, const sync__room_store_batch *ops);

/* Opens a batch for the calling thread: while it is open, the saves this thread starts for
 * engines (engine tokens, not direct sync_room_store_* calls) are kept and return SYNC_PENDING.
 * 1 when it opened (sync__room_store_batch_end() must follow on this thread), 0 when the store
 * does not batch. The caller must not wait for a kept save before the end. */
int sync__room_store_batch_begin(sync_room_store *store);

/* Closes it: one transaction for every kept save, each completed with its result (a failed
 * transaction: each save is tried again in a transaction of its own, so each room gets the result
 * its own save would have had). Completions run here, on this thread. */
void sync__room_store_batch_end(sync_room_store *store);

#endif

/* The epoch of a room's history (delta.h) in a built-in room store: the store's loads and saves
 * with the epoch beside the record, which the room's adapter (room_store.c) uses instead of the
 * public vtable's. A custom room store has none: its rooms get a fresh epoch at each creation. */
#ifndef LIBSYNC_SRC_STORE_ROOM_EPOCH_H
#define LIBSYNC_SRC_STORE_ROOM_EPOCH_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "libsync/rooms.h"

typedef struct sync__room_store_epoch {
    /* As the vtable's load; `epoch` (SYNC__EPOCH_MAX + 1 bytes) gets the record's, "" none. */
    int (*load)(void *userdata, sync_pending *pending, const char *room, char **out_state_json,
                int64_t *out_version, char *epoch);
    /* As the vtable's save, with the record's epoch (NULL: none): written with the record,
     * atomically; `fresh` says the store may not hold it yet (a store that keeps the epoch apart
     * from the record writes it then only). A fresh epoch written by a save that returns
     * SYNC_PENDING (a batched one, room_batch.h) is copied into `stored` (SYNC__EPOCH_MAX + 1
     * bytes, the room's own, alive until the completion) once it is committed; a save that
     * finishes at once leaves that to the caller. */
    int (*save)(void *userdata, sync_pending *pending, const char *room, const cJSON *state,
                const char *state_json, size_t state_len, int64_t version, const char *epoch,
                int fresh, char *stored);
} sync__room_store_epoch;

/* A built-in store's ops (static), set once after sync_room_store_new(). */
void sync__room_store_set_epoch_ops(sync_room_store *store, const sync__room_store_epoch *ops);

#endif

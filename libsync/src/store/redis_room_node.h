/* One node's part in a room served by several nodes (docs/SCALING.md), on threads of its own:
 * the owner thread takes the room's lease when it is free, loads the room from Redis, applies the
 * forwarded messages one at a time through `apply` in stream order, saves each result fenced by
 * its token, publishes it, and renews the lease; when the lease is lost it stops applying and
 * tries again like any other node. The listener thread hands every newer published change to
 * `on_change` (each version once, in increasing order). Any thread may forward a message.
 * Internal, not yet used by the server (which would apply through the room's engine and adopt the
 * changes in a replica engine). */
#ifndef LIBSYNC_SRC_STORE_REDIS_ROOM_NODE_H
#define LIBSYNC_SRC_STORE_REDIS_ROOM_NODE_H

#include <stddef.h>
#include <stdint.h>

#include "libsync/adapter.h"

typedef struct redis_room_node redis_room_node;

/* Applies one message to the room's state (`state_json` NULL: the room has none yet) on the
 * owner thread. SYNC_OK with *out_state_json (sync_malloc) the new state, version + 1; SYNC_OK
 * with NULL, or an error: the message changes nothing (refused), and is not applied again. */
typedef int (*redis_room_apply_fn)(void *userdata, const char *state_json, const char *msg,
                                   size_t len, char **out_state_json);

/* A change newer than every earlier one, on the listener thread. */
typedef void (*redis_room_change_fn)(void *userdata, int64_t version, const char *state_json,
                                     size_t len);

typedef struct redis_room_node_options {
    const sync_redis_options *redis;
    const char *node; /* 1 to 64 printable ASCII bytes, no spaces, unique per node */
    const char *room;
    int lease_ms; /* > 0; renewed every lease_ms / 3, tried for every lease_ms / 10 */
    redis_room_apply_fn apply;
    redis_room_change_fn on_change;
    void *userdata;
} redis_room_node_options;

int redis_room_node_start(redis_room_node **out, const redis_room_node_options *opts);

/* Appends a message to the room's stream: SYNC_OK once Redis has it (it will be applied). */
int redis_room_node_forward(redis_room_node *node, const char *msg, size_t len);

/* 1 while this node holds the room's lease. */
int redis_room_node_is_owner(redis_room_node *node);

/* Stops the threads and gives the lease up, so another node takes over at once. */
void redis_room_node_stop(redis_room_node *node);

/* Stops the threads at once without a release or another write, as a node killed now would: the
 * lease then expires on its own (tests of failover). */
void redis_room_node_kill(redis_room_node *node);

void redis_room_node_free(redis_room_node *node);

#endif

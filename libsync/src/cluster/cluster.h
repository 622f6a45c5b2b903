/* A node of a cluster (docs/SCALING.md), as the server uses it: started when the server listens,
 * one attached room per clustered engine (a fixed mount's, a loaded room's), stopped when the
 * server is freed. A fixed number of threads and Redis connections per node, whatever the number
 * of rooms: the forwarder (client messages to the rooms' streams), the listener (every room's
 * changes and this node's replies, on one subscribed connection) and the owner (leases, loads,
 * stream reads and applies of the rooms this node owns). */
#ifndef LIBSYNC_SRC_CLUSTER_CLUSTER_H
#define LIBSYNC_SRC_CLUSTER_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "libsync/cluster.h"
#include "libsync/engine.h"

typedef struct sync__cluster sync__cluster;
typedef struct cluster_room cluster_room;

/* A room's first load finished: SYNC_OK (its engine is linked and holds the room's version from
 * Redis: clients may join) or why it failed. Any thread; never with a cluster lock held. */
typedef void (*sync__cluster_ready_fn)(void *userdata, int status);

/* The room attached with `room_userdata` was deleted cluster-wide by another node (or found
 * deleted when it was taken over): the server closes its clients with SYNC_CLOSE_ROOM_DELETED and
 * unloads it. Runs on a node thread with a use of the room held (the room is not detached until
 * it returns): it must only note the work, never detach or free the room itself. */
typedef void (*sync__cluster_deleted_fn)(void *userdata, void *room_userdata);

/* What GET /metrics shows of the node; every field read without a lock. */
typedef struct sync__cluster_stats {
    bool redis_up;
    uint64_t rooms_owned, rooms_attached, forward_queue;
    uint64_t forwarded, applied, takeovers, fenced_out, reconnects;
} sync__cluster_stats;

/* Checks and copies the options; starts nothing. SYNC_EUNSUPPORTED without Redis support. */
int sync__cluster_new(sync__cluster **out, const sync_cluster_options *opts);

/* Starts the node's threads (at listen). */
int sync__cluster_start(sync__cluster *cl);

/* Stops the threads, gives up the leases this node holds (another node takes over at once) and
 * frees the node. Every room must have been detached. NULL is a no-op. */
void sync__cluster_free(sync__cluster *cl);

/* Tests of failover: stops the threads at once, as a node killed now would: nothing more is
 * saved, published or released (its leases expire on their own). Detach the rooms, then free. */
void sync__cluster_kill(sync__cluster *cl);

/* 1 while the node's subscription to Redis is up: joins are refused (503) meanwhile. */
bool sync__cluster_available(sync__cluster *cl);

const char *sync__cluster_node_id(const sync__cluster *cl);

/* Who hears of rooms deleted by another node: set before start, NULL before the server frees
 * its rooms (a call already under way holds a use of its room). */
void sync__cluster_on_deleted(sync__cluster *cl, sync__cluster_deleted_fn fn, void *userdata);

void sync__cluster_get_stats(sync__cluster *cl, sync__cluster_stats *out);

/* Deletes room `key` in the cluster, in one script: its record, stream and lease go, its fence
 * grows (an owner's next save is refused), a tombstone stays for a while (a node that missed the
 * notice does not bring the room back from its engine), and "deleted <node>" is published on its
 * change channel (every other node closes its clients with 4410 and unloads it). The room
 * attached here, if any, is marked deleted; the caller unloads it. Any thread; blocks on Redis.
 * SYNC_EIO when Redis failed (nothing deleted, or all of it). */
int sync__cluster_delete(sync__cluster *cl, const char *key);

/* The keys of the rooms stored in Redis whose key starts with `key_prefix` and goes on with a
 * room name (sync_room_name_check): *out_names (malloc'd array of malloc'd names without the
 * prefix; free each and the array), *out_count. At most `max` names (SYNC_ELIMIT beyond). Any
 * thread; blocks on Redis (SCAN, so Redis is never blocked for long). */
int sync__cluster_list(sync__cluster *cl, const char *key_prefix, size_t max, char ***out_names,
                       size_t *out_count);

/* Serves `engine` as the room `key` (checked: redis_cluster_key_check): the owner thread loads the
 * room's record, links the engine (engine_cluster.h), gives it the record's epoch and version,
 * then calls ready (may be NULL) once. The engine must stay alive until
 * sync__cluster_detach(). Never blocks on Redis. */
int sync__cluster_attach(sync__cluster *cl, const char *key, sync_engine *engine,
                         sync__cluster_ready_fn ready, void *userdata, cluster_room **out);

/* 1 once the room's first load finished (a fixed mount refuses joins with 503 until then). */
bool sync__cluster_room_ready(cluster_room *room);

/* Stops serving the room on this node: the engine is unlinked and no cluster thread uses it any
 * more once this returns (waits for an apply in flight); the lease, when held, is given up. Not
 * from inside one of the engine's callbacks. NULL is a no-op. */
void sync__cluster_detach(cluster_room *room);

#endif

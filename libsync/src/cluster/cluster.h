/* A node of a cluster (docs/SCALING.md), as the server uses it: started when the server listens,
 * one attached room per clustered engine (a fixed mount's, a loaded room's), stopped when the
 * server is freed. A fixed number of threads and Redis connections per node, whatever the number
 * of rooms: the forwarder (client messages to the rooms' streams), the listener (every room's
 * changes and this node's replies, on one subscribed connection) and the owner (leases, loads,
 * stream reads and applies of the rooms this node owns). */
#ifndef LIBSYNC_SRC_CLUSTER_CLUSTER_H
#define LIBSYNC_SRC_CLUSTER_CLUSTER_H

#include <stdbool.h>

#include "libsync/cluster.h"
#include "libsync/engine.h"

typedef struct sync__cluster sync__cluster;
typedef struct cluster_room cluster_room;

/* A room's first load finished: SYNC_OK (its engine is linked and holds the room's version from
 * Redis: clients may join) or why it failed. Any thread; never with a cluster lock held. */
typedef void (*sync__cluster_ready_fn)(void *userdata, int status);

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

/*
 * Shared setup of the clustered-server tests: a node (engine at "/", rooms at "/rooms/") joined
 * to a cluster on a real redis-server, and a join that waits out the 503s of a node that has no
 * Redis yet or is loading the room.
 */
#ifndef LIBSYNC_TEST_CLUSTER_FIXTURE_H
#define LIBSYNC_TEST_CLUSTER_FIXTURE_H

#include <stddef.h>

#include <libsync/libsync.h>

#include "redis_server.h"
#include "ws_client.h"

typedef struct cluster_node {
    sync_engine *engine;
    sync_server *server;
    sync_rooms *rooms;
    int port;
    char id[16];
    int (*add_handlers)(sync_engine *engine); /* of "/" and of every room */
} cluster_node;

/* Handler of "increment": the state's "counter" + 1 and an ack ({"type":"ack"}) to the sender;
 * refused with "no counter" when the state has none. */
int cluster_on_increment(sync_msg *msg, void *userdata);

/* What differs between the tests' nodes. */
typedef struct cluster_node_config {
    const char *redis_url;
    void (*engine_options)(sync_engine_options *opts); /* of "/" and of every room */
    int (*add_handlers)(sync_engine *engine);          /* on "/" and on every room */
    int lease_ms;
    size_t max_forward_queue; /* 0 = the default */
} cluster_node_config;

/* A node "node-INDEX" serving "/" and "/rooms/NAME" (manual timers) in the cluster under
 * `prefix`. Returns SYNC_OK; sync_server_join_cluster()'s status when it refuses (e.g.
 * SYNC_EUNSUPPORTED without Redis support); SYNC_EINVAL, with a failed check, otherwise. */
int cluster_node_start(cluster_node *n, int index, const char *prefix,
                       const cluster_node_config *config);

/* Stops and frees the node's server and engine; a stopped node may be stopped again. */
void cluster_node_stop(cluster_node *n);

/* Joins `path` on `port`, retrying while the node answers 503 (no Redis yet, room loading). */
ws_client *cluster_join(int port, const char *path, const char *headers, int timeout_ms);

/* The node id holding the lease of room `key` in the cluster under `prefix`, into `out`: "" when
 * none. The lease names the process, "<token> <id>/<incarnation>": a lease without its
 * incarnation fails a check. */
void cluster_owner_of(const redis_server *redis, const char *prefix, const char *key, char *out,
                      size_t size);

/* What main() does first: ignores SIGPIPE and starts `redis` (named `name`). 0 to run the tests;
 * otherwise what main returns: 77 (having said SKIP) when libsync was built without Redis
 * support, 1 on failure. */
int cluster_tests_begin(redis_server *redis, const char *name);

#endif

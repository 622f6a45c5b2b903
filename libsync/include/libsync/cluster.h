/*
 * libsync — several nodes, one state (docs/SCALING.md): servers that join one cluster on Redis
 * serve the same rooms. A client may connect to any node; every client of a room, on every node,
 * sees the same versions with the same states.
 *
 * Every mount of a server that joined a cluster is clustered: a fixed mount (sync_server_mount)
 * is the room whose key is its path ("/" or "/counter"), a room mount's room NAME
 * (sync_server_mount_rooms) the room whose key is prefix + NAME ("/rooms/NAME"). The room's
 * state, version and epoch live in Redis: a room mount's room store is not used for its rooms,
 * and a fixed mount's engine must have no adapter. On a room mount, sync_rooms_delete() deletes
 * the room from Redis (record, stream, lease; its fence grows so no owner writes it again) and
 * every node closes its clients with SYNC_CLOSE_ROOM_DELETED and unloads it; sync_rooms_list()
 * lists the rooms stored in Redis for the mount (any node's) plus those loaded here.
 *
 * GET /metrics of a clustered server adds the node's figures: libsync_cluster_redis_up,
 * _rooms_owned, _rooms_attached, _forward_queue, _forwarded_total, _applied_total,
 * _takeovers_total, _fenced_out_total, _redis_reconnects_total (docs/SCALING.md).
 *
 * One node owns a room at a time through a lease in Redis with a fencing token; every node
 * forwards its clients' messages to the room's stream in Redis, the owner runs them one at a time
 * through its engine's validator, middleware and handler, saves the result (fenced by its token),
 * publishes it, and every node broadcasts it to its own clients. When the owner dies, another
 * node with clients in the room takes it over once the lease expired (at most lease_ms plus
 * lease_ms / 6).
 *
 * A node that cannot reach Redis refuses joins to its mounts with HTTP 503, and once its
 * subscription has been down for lease_ms closes its clients with SYNC_CLOSE_ROOM_UNAVAILABLE
 * (4503, reason "redis unavailable"); it reconnects by itself and accepts joins again.
 */
#ifndef LIBSYNC_CLUSTER_H
#define LIBSYNC_CLUSTER_H

#include "libsync/adapter.h"
#include "libsync/common.h"
#include "libsync/server.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SYNC_CLUSTER_OPTIONS_VERSION 1

typedef struct sync_cluster_options {
    unsigned int version; /**< SYNC_CLUSTER_OPTIONS_VERSION */
    /** Where the cluster's Redis is: the URL, the key prefix (NULL = "libsync:"; every node of a
     *  cluster must use the same) and the timeouts (copied). Either this or `url`. */
    const sync_redis_options *redis;
    /** Shorthand for a redis with only a URL: "redis://[[user]:password@]host[:port][/db]". */
    const char *url;
    /** This node's id (copied): 1 to 64 printable ASCII bytes without spaces, unique in the
     *  cluster. NULL = "<hostname>-<pid>-<random>". In Redis (leases, streams, reply channels)
     *  the node is "<id>/<incarnation>", random per process: a process restarted with the id of
     *  one that is only stalled does not inherit its leases. */
    const char *node_id;
    /** How long a room's owner keeps the room without renewing its lease; the owner renews it
     *  every lease_ms / 6 and a dead owner's rooms are taken over within about lease_ms plus
     *  lease_ms / 6. 0 = 1500 ms (takeover within 2 s). At least 100. */
    int lease_ms;
    /** Most client messages waiting to be forwarded to Redis on this node (every room); a
     *  message beyond it is refused (an error frame with reply_errors). 0 = 65536. */
    size_t max_forward_queue;
} sync_cluster_options;

#define SYNC_CLUSTER_OPTIONS_INIT                                                                  \
    {                                                                                              \
        SYNC_CLUSTER_OPTIONS_VERSION, NULL, NULL, NULL, 0, 0                                       \
    }

SYNC_EXTERN int sync_cluster_options_init(sync_cluster_options *opts, unsigned int version);

/**
 * Makes every mount of `server` (those made before and after this call) a room of the cluster
 * `opts` describes. Only before listen (SYNC_ESTATE after), once per server (SYNC_ESTATE). The
 * node connects to Redis when the server listens: sync_server_listen() (and start, run) waits up
 * to 3 s for it to subscribe and load the fixed mounts' rooms, then listens anyway (joins are
 * refused with 503 until the node is ready). SYNC_EINVAL for bad options or a fixed mount
 * whose engine has an adapter; SYNC_EUNSUPPORTED when libsync was built without Redis support.
 */
SYNC_EXTERN int sync_server_join_cluster(sync_server *server, const sync_cluster_options *opts);

#ifdef __cplusplus
}
#endif

#endif /* LIBSYNC_CLUSTER_H */

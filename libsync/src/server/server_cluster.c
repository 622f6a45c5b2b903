/* A server in a cluster (cluster.h): the public call, and what the server does for its cluster
 * node: started at listen with every fixed mount attached as the room of its path, stopped when
 * the server is freed. Room mounts attach each room as it loads (server_rooms.c). */
#include "server_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster/cluster.h"
#include "engine/engine_internal.h"
#include "error.h"

/* Longest wait at listen for the node to be ready (subscribed, fixed mounts loaded). */
#define SERVER_CLUSTER_READY_MS 3000

int server_cluster_check_engine(sync_server *server, const char *path, sync_engine *engine)
{
    if (!server->cluster)
        return SYNC_OK;
    sync__engine_lock(engine);
    bool has_adapter = engine->adapter != NULL;
    sync__engine_unlock(engine);
    if (has_adapter)
        return sync__fail(SYNC_EINVAL,
                          "the engine mounted at %s has an adapter: in a cluster the room's state "
                          "lives in Redis, so a clustered engine must have none",
                          path);
    return SYNC_OK;
}

int sync_server_join_cluster(sync_server *server, const sync_cluster_options *opts)
{
    if (!server)
        return sync__fail(SYNC_EINVAL, "server is NULL");
    if (server->context || atomic_load(&server->serving))
        return sync__fail(SYNC_ESTATE, "join the cluster before the server listens");
    if (server->cluster)
        return sync__fail(SYNC_ESTATE, "the server is in a cluster already");
    sync__cluster *cl = NULL;
    int rc = sync__cluster_new(&cl, opts);
    if (rc != SYNC_OK)
        return rc;
    server->cluster = cl;
    for (size_t i = 0; i < server->mount_count; i++) {
        rc = server_cluster_check_engine(server, server->mounts[i].path,
                                         server->mounts[i].eng->engine);
        if (rc != SYNC_OK) {
            server->cluster = NULL;
            sync__cluster_free(cl);
            return rc;
        }
    }
    return SYNC_OK;
}

int server_cluster_listen(sync_server *server)
{
    if (!server->cluster)
        return SYNC_OK;
    sync__cluster_on_deleted(server->cluster, server_rooms_cluster_deleted, server);
    int rc = sync__cluster_start(server->cluster);
    for (size_t i = 0; rc == SYNC_OK && i < server->mount_count; i++) {
        server_engine *eng = server->mounts[i].eng;
        if (eng->cluster_room)
            continue; /* an engine on several paths is one room: its first path's */
        rc = sync__cluster_attach(server->cluster, server->mounts[i].path, eng->engine, NULL, NULL,
                                  &eng->cluster_room);
    }
    /* Ready before the server accepts, in the common case: subscribed to Redis and every fixed
     * mount loaded, so a client that connects once listen returned is not answered 503. Bounded:
     * with Redis down the server listens anyway and refuses joins until it is back. */
    int64_t give_up = sync_now_ms() + SERVER_CLUSTER_READY_MS;
    while (rc == SYNC_OK && sync_now_ms() < give_up) {
        bool ready = sync__cluster_available(server->cluster);
        for (size_t i = 0; ready && i < server->engine_count; i++)
            ready = sync__cluster_room_ready(server->engines[i]->cluster_room);
        if (ready)
            break;
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return rc;
}

int server_cluster_gate(sync_server *server, const server_engine *eng)
{
    if (!server->cluster)
        return 0;
    if (!sync__cluster_available(server->cluster))
        return 503;
    if (eng && eng->cluster_room && !sync__cluster_room_ready(eng->cluster_room))
        return 503;
    return 0;
}

void server_cluster_release(sync_server *server)
{
    if (!server->cluster)
        return;
    for (size_t i = 0; i < server->engine_count; i++) {
        sync__cluster_detach(server->engines[i]->cluster_room);
        server->engines[i]->cluster_room = NULL;
    }
    sync__cluster_free(server->cluster);
    server->cluster = NULL;
}

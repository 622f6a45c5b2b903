/* The node's private structures, shared by its files: cluster_node.c (the handle, the rooms'
 * table, attach and detach), cluster_forward.c (the forward queue and its thread),
 * cluster_listen.c (the subscribed thread), cluster_owner.c (leases, loads, applies).
 *
 * Locks: cl->lock guards the rooms' table and list and every room field marked so; cl->qlock the
 * forward queue. Never held while calling into an engine (its callbacks take them) nor while
 * waiting on Redis; never nested. A thread that calls into a room's engine holds a use of the
 * room (room_use): detach waits for the uses to end. Rooms are unlinked from the list and freed
 * by the owner thread only (refs keep a room that forward items still name). */
#ifndef LIBSYNC_SRC_CLUSTER_CLUSTER_INTERNAL_H
#define LIBSYNC_SRC_CLUSTER_CLUSTER_INTERNAL_H

#include "cluster/cluster.h"

#ifdef LIBSYNC_HAVE_REDIS

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "engine/delta.h"
#include "engine/engine_cluster.h"
#include "engine/engine_internal.h"
#include "engine/engine_room.h"
#include "libsync/rooms.h"
#include "store/redis_cluster.h"
#include "store/redis_conn.h"

/* A node id as the user gives it (cluster.h); Redis sees it with "/" and the process's
 * incarnation after it (REDIS_NODE_ID_MAX). */
#define CLUSTER_NODE_ID_MAX 64
#define CLUSTER_INCARNATION_LEN 12
/* Defaults (cluster.h). */
#define CLUSTER_LEASE_MS 1500
#define CLUSTER_LEASE_MIN_MS 100
#define CLUSTER_MAX_FORWARD_QUEUE 65536
/* Bytes of queued messages at most, whatever their count. */
#define CLUSTER_MAX_FORWARD_BYTES ((size_t)64 * 1024 * 1024)
/* Stream entries read per room and XREAD. */
#define CLUSTER_READ_COUNT 32
/* Rooms per lease script / XREAD call. */
#define CLUSTER_BATCH 256

struct cluster_room {
    sync__cluster *cl;
    char *key;
    char *stream_key;
    atomic_int refs; /* the list's, and one per forward item naming the room */
    /* under cl->lock */
    cluster_room *hash_next;
    cluster_room *next, *prev; /* cl->rooms: every room not yet freed by the owner thread */
    sync_engine *engine;       /* NULL once detached */
    int uses;                  /* threads calling into engine now */
    bool detached;
    bool linked;    /* the engine has the cluster link */
    bool need_load; /* the owner thread (re)loads the record into the engine */
    bool ready;     /* the first load finished */
    /* deleted cluster-wide (sync__cluster_delete, or a notice of another node's): never loaded,
     * leased or saved again; the server unloads it and a later join attaches a new room */
    bool deleted;
    sync__cluster_ready_fn ready_fn;
    void *ready_userdata;
    char epoch[SYNC__EPOCH_MAX + 1]; /* the one the engine was given, "" none yet */
    bool inflight;                   /* an apply_remote not yet processed */
    bool has_result;
    sync__remote_result result;
    /* owner thread only */
    int64_t token; /* > 0 while this node owns the room */
    int64_t version;
    char *state; /* the last saved state (compact JSON, sync_malloc) */
    char applied[REDIS_STREAM_ID_MAX];
    char claimed[REDIS_STREAM_ID_MAX];     /* the record's claim: entries up to it may have run */
    char refuse_upto[REDIS_STREAM_ID_MAX]; /* a failed owner's claim: refused, never run again */
    int64_t renewed_ms;
    redis_entry *entries; /* read, not yet applied */
    size_t entry_count, entry_next;
    int64_t load_retry_ms;
};

/* One client message on its way to a room's stream. */
typedef struct cluster_item {
    struct cluster_item *next;
    cluster_room *room; /* a ref */
    uint64_t conn_id;
    char *identity; /* NULL: none */
    size_t len;
    char msg[];
} cluster_item;

struct sync__cluster {
    char node[REDIS_NODE_ID_MAX + 1];
    int lease_ms;
    size_t max_queue;
    char *prefix;
    char *reply_channel;
    redis_conn own_conn, fwd_conn, sub_conn;

    pthread_mutex_t lock;
    pthread_cond_t cond; /* the owner thread's wake-ups; detach waiting for uses */
    cluster_room **buckets;
    size_t bucket_count, room_count;
    cluster_room *rooms;
    bool owner_wake;
    bool reload_all; /* resubscribed: every ready room reloads */

    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    cluster_item *qhead, *qtail;
    size_t qcount, qbytes;

    atomic_bool stop;
    atomic_bool killed;       /* sync__cluster_kill: nothing more reaches Redis from this node */
    atomic_bool up;           /* the listener is subscribed */
    atomic_bool owner_up;     /* the owner thread's last Redis call succeeded */
    pthread_mutex_t sub_lock; /* sub_fd against stop */
    int sub_fd;

    pthread_t owner_thread, forward_thread, listen_thread;
    bool started;

    /* sync__cluster_on_deleted (under lock) */
    sync__cluster_deleted_fn on_deleted;
    void *on_deleted_userdata;

    /* deletes and lists from any thread (sync__cluster_delete, _list), one at a time */
    pthread_mutex_t admin_lock;
    redis_conn admin_conn;

    /* /metrics (sync__cluster_get_stats): written by the node's threads, read by anyone */
    atomic_size_t owned_count;    /* the owner thread's rooms with a token, at its last turn */
    atomic_size_t attached_count; /* room_count */
    atomic_size_t queued_count;   /* qcount */
    atomic_uint_fast64_t forwarded, applied, takeovers, fenced_out, reconnects;
};

/* cluster_node.c */
void cluster_room_unref(cluster_room *r);
/* The room's engine with a use held, or NULL when detached; room_unuse ends the use. */
sync_engine *cluster_room_use(cluster_room *r);
void cluster_room_unuse(cluster_room *r);
/* The room of `key` (under cl->lock), NULL when none is attached. */
cluster_room *cluster_find_locked(sync__cluster *cl, const char *key, size_t len);
void cluster_wake_owner(sync__cluster *cl);
/* Marks the room deleted (cl->lock not held) and tells the server, with a use of the room held
 * (its engine and the server's room stay alive meanwhile). Not from the owner thread's apply. */
void cluster_room_deleted(cluster_room *r);
/* Every attached room's clients closed with 4503 "redis unavailable". */
void cluster_close_all(sync__cluster *cl);
void cluster_sleep_ms(int ms);
/* Sends an error frame {"type":"error","error":why} to a connection of the room on this node. */
void cluster_send_error(cluster_room *r, uint64_t conn_id, const char *why);

/* cluster_forward.c */
int cluster_forward(void *userdata, sync_conn *conn, const char *text, size_t len);
void *cluster_forward_main(void *arg);
void cluster_forward_drain(sync__cluster *cl);

/* cluster_listen.c */
void *cluster_listen_main(void *arg);
/* Publishes a change on the room's channel: "<version> <epoch> <state>". */
int cluster_publish_change(sync__cluster *cl, redis_conn *c, const cluster_room *r, int64_t version,
                           const char *epoch, const char *state, size_t len);
/* Adopts a change into the room's engine (newer versions only, the engine drops the others). */
void cluster_adopt(cluster_room *r, int64_t version, const char *epoch, const char *state,
                   size_t len);

/* cluster_owner.c */
void *cluster_owner_main(void *arg);

#endif

#endif

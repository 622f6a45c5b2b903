/* A node's owner and listener threads for one room on several nodes (redis_room_node.h), over
 * the Redis steps of redis_cluster.c. */
#include "redis_room_node.h"

#include "error.h"
#include "libsync/common.h"
#include "libsync/rooms.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#ifdef LIBSYNC_HAVE_REDIS
#include "redis_cluster.h"

struct redis_room_node {
    char node[REDIS_NODE_ID_MAX + 1];
    char room[SYNC_ROOM_NAME_MAX + 1];
    int lease_ms;
    redis_room_apply_fn apply;
    redis_room_change_fn on_change;
    void *userdata;

    atomic_int stop;
    atomic_int killed;
    atomic_int owner;

    redis_conn own_conn; /* the owner thread's */
    redis_conn aux_conn; /* the listener's loads */
    redis_conn sub_conn; /* subscribed */
    pthread_mutex_t forward_lock;
    redis_conn forward_conn;

    pthread_mutex_t sub_lock; /* sub_fd against stop */
    int sub_fd;

    pthread_t owner_thread, listener_thread;
    int started;
};

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- the owner thread --------------------------------------------------------------------- */

typedef struct owned {
    int64_t token; /* 0: not the owner */
    int64_t version;
    char *state; /* sync_malloc, NULL: none yet */
    char applied[REDIS_STREAM_ID_MAX];
    int64_t renewed_ms;
} owned;

static void lose(redis_room_node *n, owned *o)
{
    o->token = 0;
    sync_free(o->state);
    o->state = NULL;
    atomic_store(&n->owner, 0);
}

/* Takes the room when its lease is free and loads what the last owner saved. */
static void try_take(redis_room_node *n, owned *o)
{
    int64_t token = 0;
    if (redis_lease_acquire(&n->own_conn, n->room, n->node, n->lease_ms, &token) != SYNC_OK ||
        !token)
        return;
    o->renewed_ms = sync_now_ms();
    char *state = NULL;
    int64_t version = 0;
    if (redis_fenced_load(&n->own_conn, n->room, &state, &version, NULL, o->applied) != SYNC_OK)
        return; /* tried again next turn; the lease lapses if this goes on */
    o->token = token;
    o->state = state;
    o->version = version;
    atomic_store(&n->owner, 1);
    /* The last owner may have died between its save and its publish: the nodes that missed that
     * change get it now; the others drop it as not newer. */
    if (state)
        redis_publish_change(&n->own_conn, n->room, version, state, strlen(state), NULL);
}

/* Applies one entry: SYNC_OK, or not SYNC_OK when ownership ended (`o` then dropped). */
static int apply_entry(redis_room_node *n, owned *o, const redis_entry *e)
{
    char *next = NULL;
    if (e->msg && n->apply(n->userdata, o->state, e->msg, e->len, &next) != SYNC_OK) {
        sync_free(next);
        next = NULL;
    }
    if (atomic_load(&n->killed)) {
        sync_free(next);
        return SYNC_ECLOSED;
    }
    const char *saved = next ? next : o->state;
    int64_t version = next ? o->version + 1 : o->version;
    if (saved) {
        /* A refused message is saved too (its applied id), so no later owner runs it again. */
        int rc = redis_fenced_save(&n->own_conn, n->room, o->token, saved, strlen(saved), version,
                                   NULL, e->id);
        if (rc != SYNC_OK) {
            /* Fenced out, or Redis failed and the result may or may not be saved: either way
             * this node no longer knows the room's state; it reloads when it owns it again. */
            sync_free(next);
            lose(n, o);
            return rc;
        }
    }
    snprintf(o->applied, sizeof o->applied, "%s", e->id);
    if (next) {
        sync_free(o->state);
        o->state = next;
        o->version = version;
        redis_publish_change(&n->own_conn, n->room, version, next, strlen(next), NULL);
    }
    return SYNC_OK;
}

/* Renews the lease when a third of it has passed: 1 while this node still owns the room. Lost
 * when fenced out, or when no renewal succeeded for a whole lease (another node may own it). */
static int keep_lease(redis_room_node *n, owned *o)
{
    if (!o->token)
        return 0;
    int64_t now = sync_now_ms();
    if (now - o->renewed_ms < n->lease_ms / 3)
        return 1;
    int rc = redis_lease_renew(&n->own_conn, n->room, o->token, n->lease_ms);
    if (rc == SYNC_OK) {
        o->renewed_ms = now;
        return 1;
    }
    if (rc == SYNC_ESTATE || now - o->renewed_ms >= n->lease_ms) {
        lose(n, o);
        return 0;
    }
    return 1;
}

static void *owner_main(void *arg)
{
    redis_room_node *n = arg;
    owned o = {0};
    int retry_ms = n->lease_ms / 10 > 0 ? n->lease_ms / 10 : 1;
    int block_ms = n->lease_ms / 4 < 100 ? (n->lease_ms / 4 > 0 ? n->lease_ms / 4 : 1) : 100;
    while (!atomic_load(&n->stop)) {
        if (!o.token) {
            try_take(n, &o);
            if (!o.token)
                sleep_ms(retry_ms);
            continue;
        }
        if (!keep_lease(n, &o))
            continue;
        redis_entry *entries = NULL;
        size_t count = 0;
        if (redis_stream_read(&n->own_conn, n->room, o.applied, 32, block_ms, &entries, &count) !=
            SYNC_OK) {
            sleep_ms(retry_ms);
            continue;
        }
        /* Renewed between entries too: a burst of slow handlers must not outlast the lease. */
        for (size_t i = 0; i < count && !atomic_load(&n->stop) && keep_lease(n, &o); i++)
            if (apply_entry(n, &o, &entries[i]) != SYNC_OK)
                break;
        redis_entries_free(entries, count);
    }
    if (o.token && !atomic_load(&n->killed))
        redis_lease_release(&n->own_conn, n->room, o.token);
    lose(n, &o);
    return NULL;
}

/* ---- the listener thread ------------------------------------------------------------------ */

/* "<version> <state>" newer than *last: handed on. */
static void deliver(redis_room_node *n, int64_t *last, int64_t version, const char *state,
                    size_t len)
{
    if (version <= *last || atomic_load(&n->killed))
        return;
    *last = version;
    n->on_change(n->userdata, version, state, len);
}

/* After (re)subscribing: what Redis holds, in case changes were published while we were not
 * listening. */
static void catch_up(redis_room_node *n, int64_t *last)
{
    char *state = NULL;
    int64_t version = 0;
    char applied[REDIS_STREAM_ID_MAX];
    if (redis_fenced_load(&n->aux_conn, n->room, &state, &version, NULL, applied) == SYNC_OK &&
        state)
        deliver(n, last, version, state, strlen(state));
    sync_free(state);
}

static int subscribe(redis_room_node *n)
{
    if (redis_conn_open(&n->sub_conn) != SYNC_OK)
        return SYNC_EIO;
    char *channel = NULL;
    if (asprintf(&channel, "%schanges:%s", n->sub_conn.prefix, n->room) < 0)
        return SYNC_ENOMEM;
    const char *argv[] = {"SUBSCRIBE", channel};
    redisReply *reply = NULL;
    int rc = redis_conn_command(&n->sub_conn, &reply, "cannot subscribe in", 2, argv, NULL);
    free(channel);
    if (rc != SYNC_OK)
        return rc;
    freeReplyObject(reply);
    /* No reply timeout from now on: a quiet room is not an error; stop shuts the socket down. */
    struct timeval none = {0, 0};
    redisSetTimeout(n->sub_conn.ctx, none);
    pthread_mutex_lock(&n->sub_lock);
    int stopping = atomic_load(&n->stop);
    if (!stopping)
        n->sub_fd = n->sub_conn.ctx->fd;
    pthread_mutex_unlock(&n->sub_lock);
    return stopping ? SYNC_ECLOSED : SYNC_OK;
}

static void unsubscribe(redis_room_node *n)
{
    pthread_mutex_lock(&n->sub_lock);
    n->sub_fd = -1;
    pthread_mutex_unlock(&n->sub_lock);
    if (n->sub_conn.ctx) {
        redisFree(n->sub_conn.ctx);
        n->sub_conn.ctx = NULL;
    }
}

static void *listener_main(void *arg)
{
    redis_room_node *n = arg;
    int64_t last = -1;
    int retry_ms = n->lease_ms / 10 > 0 ? n->lease_ms / 10 : 1;
    while (!atomic_load(&n->stop)) {
        if (subscribe(n) != SYNC_OK) {
            unsubscribe(n);
            sleep_ms(retry_ms);
            continue;
        }
        catch_up(n, &last);
        while (!atomic_load(&n->stop)) {
            void *got = NULL;
            if (redisGetReply(n->sub_conn.ctx, &got) != REDIS_OK || !got)
                break;
            redisReply *r = got;
            if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
                r->element[2]->type == REDIS_REPLY_STRING) {
                const char *text = r->element[2]->str;
                const char *space = memchr(text, ' ', r->element[2]->len);
                int64_t version = 0;
                if (space && redis_parse_int64(text, (size_t)(space - text), &version))
                    deliver(n, &last, version, space + 1,
                            r->element[2]->len - (size_t)(space + 1 - text));
            }
            freeReplyObject(r);
        }
        unsubscribe(n);
    }
    return NULL;
}

/* ---- the handle --------------------------------------------------------------------------- */

int redis_room_node_start(redis_room_node **out, const redis_room_node_options *opts)
{
    if (!out)
        return sync__fail(SYNC_EINVAL, "out is NULL");
    *out = NULL;
    if (!opts || !opts->redis || !opts->node || !opts->room || !opts->apply || !opts->on_change)
        return sync__fail(SYNC_EINVAL, "redis, node, room, apply and on_change are required");
    if (opts->lease_ms <= 0)
        return sync__fail(SYNC_EINVAL, "lease_ms must be > 0");
    size_t node_len = strlen(opts->node);
    if (node_len == 0 || node_len > REDIS_NODE_ID_MAX)
        return sync__fail(SYNC_EINVAL, "node id must be 1 to %d bytes", REDIS_NODE_ID_MAX);
    for (size_t i = 0; i < node_len; i++)
        if (opts->node[i] <= ' ' || opts->node[i] > '~')
            return sync__fail(SYNC_EINVAL, "node id must be printable ASCII without spaces");
    int rc = sync_room_name_check(opts->room);
    if (rc != SYNC_OK)
        return rc;
    redis_room_node *n = calloc(1, sizeof *n);
    if (!n)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    snprintf(n->node, sizeof n->node, "%s", opts->node);
    snprintf(n->room, sizeof n->room, "%s", opts->room);
    n->lease_ms = opts->lease_ms;
    n->apply = opts->apply;
    n->on_change = opts->on_change;
    n->userdata = opts->userdata;
    n->sub_fd = -1;
    int setup = 0;
    redis_conn *conns[] = {&n->own_conn, &n->aux_conn, &n->sub_conn, &n->forward_conn};
    for (; setup < 4; setup++) {
        rc = redis_conn_setup(conns[setup], opts->redis);
        if (rc != SYNC_OK)
            break;
    }
    if (rc != SYNC_OK) {
        for (int i = 0; i < setup; i++)
            redis_conn_release(conns[i]);
        free(n);
        return rc;
    }
    pthread_mutex_init(&n->forward_lock, NULL);
    pthread_mutex_init(&n->sub_lock, NULL);
    if (pthread_create(&n->owner_thread, NULL, owner_main, n) != 0) {
        redis_room_node_free(n);
        return sync__fail(SYNC_ENOMEM, "cannot start a thread");
    }
    if (pthread_create(&n->listener_thread, NULL, listener_main, n) != 0) {
        atomic_store(&n->stop, 1);
        pthread_join(n->owner_thread, NULL);
        redis_room_node_free(n);
        return sync__fail(SYNC_ENOMEM, "cannot start a thread");
    }
    n->started = 1;
    *out = n;
    return SYNC_OK;
}

int redis_room_node_forward(redis_room_node *n, const char *msg, size_t len)
{
    if (!n || !msg)
        return sync__fail(SYNC_EINVAL, "node and msg are required");
    pthread_mutex_lock(&n->forward_lock);
    int rc = redis_forward(&n->forward_conn, n->room, n->node, msg, len, NULL);
    pthread_mutex_unlock(&n->forward_lock);
    return rc;
}

int redis_room_node_is_owner(redis_room_node *n)
{
    return n && atomic_load(&n->owner);
}

static void join(redis_room_node *n)
{
    if (!n->started)
        return;
    atomic_store(&n->stop, 1);
    pthread_mutex_lock(&n->sub_lock);
    if (n->sub_fd >= 0)
        shutdown(n->sub_fd, SHUT_RDWR); /* wakes the listener's blocking read */
    pthread_mutex_unlock(&n->sub_lock);
    pthread_join(n->owner_thread, NULL);
    pthread_join(n->listener_thread, NULL);
    n->started = 0;
}

void redis_room_node_stop(redis_room_node *n)
{
    if (n)
        join(n);
}

void redis_room_node_kill(redis_room_node *n)
{
    if (!n)
        return;
    atomic_store(&n->killed, 1);
    join(n);
}

void redis_room_node_free(redis_room_node *n)
{
    if (!n)
        return;
    join(n);
    redis_conn_release(&n->own_conn);
    redis_conn_release(&n->aux_conn);
    redis_conn_release(&n->sub_conn);
    redis_conn_release(&n->forward_conn);
    pthread_mutex_destroy(&n->forward_lock);
    pthread_mutex_destroy(&n->sub_lock);
    free(n);
}

#else

int redis_room_node_start(redis_room_node **out, const redis_room_node_options *opts)
{
    (void)opts;
    if (out)
        *out = NULL;
    return sync__fail(SYNC_EUNSUPPORTED, "libsync was built without Redis support");
}

int redis_room_node_forward(redis_room_node *n, const char *msg, size_t len)
{
    (void)n;
    (void)msg;
    (void)len;
    return SYNC_EUNSUPPORTED;
}

int redis_room_node_is_owner(redis_room_node *n)
{
    (void)n;
    return 0;
}

void redis_room_node_stop(redis_room_node *n)
{
    (void)n;
}

void redis_room_node_kill(redis_room_node *n)
{
    (void)n;
}

void redis_room_node_free(redis_room_node *n)
{
    (void)n;
}

#endif

/* The node's handle (cluster.h): options, threads, the table of attached rooms, attach/detach. */
#include "cluster/cluster_internal.h"

#include "error.h"
#include "options.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int sync_cluster_options_init(sync_cluster_options *opts, unsigned int version)
{
    static const sync_cluster_options defaults = SYNC_CLUSTER_OPTIONS_INIT;
    return sync__options_init(opts, &defaults, sizeof defaults, version,
                              SYNC_CLUSTER_OPTIONS_VERSION, "cluster");
}

#ifdef LIBSYNC_HAVE_REDIS

void cluster_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static size_t key_hash(const char *key, size_t len)
{
    size_t h = 1469598103934665603u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 1099511628211u;
    return h;
}

cluster_room *cluster_find_locked(sync__cluster *cl, const char *key, size_t len)
{
    if (!cl->bucket_count)
        return NULL;
    for (cluster_room *r = cl->buckets[key_hash(key, len) % cl->bucket_count]; r; r = r->hash_next)
        if (strlen(r->key) == len && memcmp(r->key, key, len) == 0)
            return r;
    return NULL;
}

static bool table_grow_locked(sync__cluster *cl)
{
    if (cl->room_count < cl->bucket_count)
        return true;
    size_t n = cl->bucket_count ? cl->bucket_count * 2 : 64;
    cluster_room **b = calloc(n, sizeof *b);
    if (!b)
        return false;
    for (size_t i = 0; i < cl->bucket_count; i++)
        for (cluster_room *r = cl->buckets[i], *next; r; r = next) {
            next = r->hash_next;
            size_t at = key_hash(r->key, strlen(r->key)) % n;
            r->hash_next = b[at];
            b[at] = r;
        }
    free(cl->buckets);
    cl->buckets = b;
    cl->bucket_count = n;
    return true;
}

static void table_remove_locked(sync__cluster *cl, cluster_room *r)
{
    cluster_room **p = &cl->buckets[key_hash(r->key, strlen(r->key)) % cl->bucket_count];
    while (*p && *p != r)
        p = &(*p)->hash_next;
    if (*p) {
        *p = r->hash_next;
        cl->room_count--;
        atomic_store(&cl->attached_count, cl->room_count);
    }
    r->hash_next = NULL;
}

static void room_free(cluster_room *r)
{
    sync__remote_result_clear(&r->result);
    redis_entries_free(r->entries, r->entry_count);
    sync_free(r->state);
    free(r->key);
    free(r->stream_key);
    free(r);
}

void cluster_room_unref(cluster_room *r)
{
    if (r && atomic_fetch_sub(&r->refs, 1) == 1)
        room_free(r);
}

sync_engine *cluster_room_use(cluster_room *r)
{
    sync__cluster *cl = r->cl;
    pthread_mutex_lock(&cl->lock);
    sync_engine *e = r->detached ? NULL : r->engine;
    if (e)
        r->uses++;
    pthread_mutex_unlock(&cl->lock);
    return e;
}

void cluster_room_unuse(cluster_room *r)
{
    sync__cluster *cl = r->cl;
    pthread_mutex_lock(&cl->lock);
    if (--r->uses == 0)
        pthread_cond_broadcast(&cl->cond);
    pthread_mutex_unlock(&cl->lock);
}

void cluster_wake_owner(sync__cluster *cl)
{
    pthread_mutex_lock(&cl->lock);
    cl->owner_wake = true;
    pthread_cond_broadcast(&cl->cond);
    pthread_mutex_unlock(&cl->lock);
}

void cluster_send_error(cluster_room *r, uint64_t conn_id, const char *why)
{
    if (!conn_id)
        return;
    cJSON *frame = cJSON_CreateObject();
    char *text = NULL;
    if (frame && cJSON_AddStringToObject(frame, "type", "error") &&
        cJSON_AddStringToObject(frame, "error", why))
        text = cJSON_PrintUnformatted(frame);
    cJSON_Delete(frame);
    sync_engine *e = text ? cluster_room_use(r) : NULL;
    if (e) {
        sync__engine_send_to_conn(e, conn_id, text, strlen(text));
        cluster_room_unuse(r);
    }
    cJSON_free(text);
}

void cluster_room_deleted(cluster_room *r)
{
    sync__cluster *cl = r->cl;
    if (!r->ready_userdata)
        return; /* a fixed mount's room: never deleted, its engine goes on */
    pthread_mutex_lock(&cl->lock);
    bool first = !r->deleted && !r->detached && r->engine;
    r->deleted = true;
    if (first)
        r->uses++; /* the server's room and the engine stay while the server hears of it */
    sync__cluster_deleted_fn fn = cl->on_deleted;
    void *ud = cl->on_deleted_userdata, *room_ud = r->ready_userdata;
    cl->owner_wake = true;
    pthread_cond_broadcast(&cl->cond);
    pthread_mutex_unlock(&cl->lock);
    if (!first)
        return;
    if (fn)
        fn(ud, room_ud);
    cluster_room_unuse(r);
}

void cluster_close_all(sync__cluster *cl)
{
    pthread_mutex_lock(&cl->lock);
    size_t n = 0;
    for (cluster_room *r = cl->rooms; r; r = r->next)
        n++;
    cluster_room **list = n ? malloc(n * sizeof *list) : NULL;
    n = 0;
    for (cluster_room *r = list ? cl->rooms : NULL; r; r = r->next)
        if (!r->detached && r->engine) {
            r->uses++;
            list[n++] = r;
        }
    pthread_mutex_unlock(&cl->lock);
    for (size_t i = 0; i < n; i++) {
        sync__engine_close_all(list[i]->engine, SYNC_CLOSE_ROOM_UNAVAILABLE, "redis unavailable");
        cluster_room_unuse(list[i]);
    }
    free(list);
}

static int check_node_id(const char *node)
{
    size_t len = strlen(node);
    if (len == 0 || len > CLUSTER_NODE_ID_MAX)
        return sync__fail(SYNC_EINVAL, "cluster node id must be 1 to %d bytes",
                          CLUSTER_NODE_ID_MAX);
    for (size_t i = 0; i < len; i++)
        if (node[i] <= ' ' || node[i] > '~')
            return sync__fail(SYNC_EINVAL,
                              "cluster node id must be printable ASCII without spaces");
    return SYNC_OK;
}

/* "<hostname>-<pid>-<random>", cut to fit. */
static void default_node_id(char *out, size_t size)
{
    char host[64] = "node";
    if (gethostname(host, sizeof host - 1) != 0 || !host[0])
        snprintf(host, sizeof host, "node");
    host[sizeof host - 1] = '\0';
    for (char *p = host; *p; p++)
        if (*p <= ' ' || *p > '~')
            *p = '_';
    char nonce[SYNC__EPOCH_MAX + 1];
    sync__delta_new_epoch(nonce);
    snprintf(out, size, "%.40s-%ld-%.8s", host, (long)getpid(), nonce);
}

int sync__cluster_new(sync__cluster **out, const sync_cluster_options *opts)
{
    *out = NULL;
    int rc = sync__check_options(opts, SYNC_CLUSTER_OPTIONS_VERSION, "cluster");
    if (rc != SYNC_OK)
        return rc;
    if (!opts->redis == !opts->url)
        return sync__fail(SYNC_EINVAL, "cluster options need either redis or url (not both)");
    if (opts->redis) {
        rc = sync__check_options(opts->redis, SYNC_REDIS_OPTIONS_VERSION, "Redis");
        if (rc != SYNC_OK)
            return rc;
    }
    if (opts->lease_ms != 0 && opts->lease_ms < CLUSTER_LEASE_MIN_MS)
        return sync__fail(SYNC_EINVAL, "cluster lease_ms must be 0 (default) or at least %d",
                          CLUSTER_LEASE_MIN_MS);
    if (opts->node_id && (rc = check_node_id(opts->node_id)) != SYNC_OK)
        return rc;
    sync_redis_options ro = SYNC_REDIS_OPTIONS_INIT;
    if (opts->redis)
        ro = *opts->redis;
    else
        ro.url = opts->url;
    sync__cluster *cl = calloc(1, sizeof *cl);
    if (!cl)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    redis_conn *conns[] = {&cl->own_conn, &cl->fwd_conn, &cl->sub_conn, &cl->admin_conn};
    int setup = 0;
    for (; setup < 4; setup++)
        if ((rc = redis_conn_setup(conns[setup], &ro)) != SYNC_OK)
            break;
    if (rc != SYNC_OK) {
        for (int i = 0; i < setup; i++)
            redis_conn_release(conns[i]);
        free(cl);
        return rc;
    }
    if (opts->node_id)
        snprintf(cl->node, sizeof cl->node, "%s", opts->node_id);
    else
        default_node_id(cl->node, sizeof cl->node);
    /* Redis knows this process, not only its id: a process restarted with the id of one that is
     * only stalled (SIGSTOP, a paused VM) must neither inherit its leases and their tokens (both
     * would then write) nor get the replies meant for its connections (ids are per process). */
    char incarnation[SYNC__EPOCH_MAX + 1];
    sync__delta_new_epoch(incarnation);
    size_t used = strlen(cl->node);
    snprintf(cl->node + used, sizeof cl->node - used, "/%.*s", CLUSTER_INCARNATION_LEN,
             incarnation);
    cl->lease_ms = opts->lease_ms ? opts->lease_ms : CLUSTER_LEASE_MS;
    cl->max_queue = opts->max_forward_queue ? opts->max_forward_queue : CLUSTER_MAX_FORWARD_QUEUE;
    pthread_mutex_init(&cl->lock, NULL);
    pthread_cond_init(&cl->cond, NULL);
    pthread_mutex_init(&cl->qlock, NULL);
    pthread_cond_init(&cl->qcond, NULL);
    pthread_mutex_init(&cl->sub_lock, NULL);
    pthread_mutex_init(&cl->admin_lock, NULL);
    cl->sub_fd = -1;
    cl->prefix = strdup(cl->own_conn.prefix);
    if (!cl->prefix || asprintf(&cl->reply_channel, "%sreply:%s", cl->prefix, cl->node) < 0) {
        cl->reply_channel = NULL;
        sync__cluster_free(cl);
        return sync__fail(SYNC_ENOMEM, "out of memory");
    }
    *out = cl;
    return SYNC_OK;
}

const char *sync__cluster_node_id(const sync__cluster *cl)
{
    return cl->node;
}

void sync__cluster_on_deleted(sync__cluster *cl, sync__cluster_deleted_fn fn, void *userdata)
{
    pthread_mutex_lock(&cl->lock);
    cl->on_deleted = fn;
    cl->on_deleted_userdata = userdata;
    pthread_mutex_unlock(&cl->lock);
}

void sync__cluster_get_stats(sync__cluster *cl, sync__cluster_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!cl)
        return;
    out->redis_up = atomic_load(&cl->up);
    out->rooms_owned = atomic_load(&cl->owned_count);
    out->rooms_attached = atomic_load(&cl->attached_count);
    out->forward_queue = atomic_load(&cl->queued_count);
    out->forwarded = atomic_load(&cl->forwarded);
    out->applied = atomic_load(&cl->applied);
    out->takeovers = atomic_load(&cl->takeovers);
    out->fenced_out = atomic_load(&cl->fenced_out);
    out->reconnects = atomic_load(&cl->reconnects);
}

int sync__cluster_start(sync__cluster *cl)
{
    if (cl->started)
        return SYNC_OK;
    if (pthread_create(&cl->owner_thread, NULL, cluster_owner_main, cl) != 0)
        return sync__fail(SYNC_ENOMEM, "cannot start the cluster's owner thread");
    if (pthread_create(&cl->forward_thread, NULL, cluster_forward_main, cl) != 0) {
        atomic_store(&cl->stop, true);
        cluster_wake_owner(cl);
        pthread_join(cl->owner_thread, NULL);
        return sync__fail(SYNC_ENOMEM, "cannot start the cluster's forward thread");
    }
    if (pthread_create(&cl->listen_thread, NULL, cluster_listen_main, cl) != 0) {
        atomic_store(&cl->stop, true);
        cluster_wake_owner(cl);
        pthread_mutex_lock(&cl->qlock);
        pthread_cond_broadcast(&cl->qcond);
        pthread_mutex_unlock(&cl->qlock);
        pthread_join(cl->owner_thread, NULL);
        pthread_join(cl->forward_thread, NULL);
        return sync__fail(SYNC_ENOMEM, "cannot start the cluster's listener thread");
    }
    cl->started = true;
    return SYNC_OK;
}

bool sync__cluster_available(sync__cluster *cl)
{
    return cl && atomic_load(&cl->up);
}

int sync__cluster_attach(sync__cluster *cl, const char *key, sync_engine *engine,
                         sync__cluster_ready_fn ready, void *userdata, cluster_room **out)
{
    *out = NULL;
    if (!cl->started)
        return sync__fail(SYNC_ESTATE, "a clustered room loads once the server listens");
    int rc = redis_cluster_key_check(key);
    if (rc != SYNC_OK)
        return rc;
    cluster_room *r = calloc(1, sizeof *r);
    if (!r || !(r->key = strdup(key)) ||
        asprintf(&r->stream_key, "%sstream:%s", cl->prefix, key) < 0) {
        if (r)
            free(r->key);
        free(r);
        return sync__fail(SYNC_ENOMEM, "out of memory");
    }
    r->cl = cl;
    atomic_init(&r->refs, 1);
    r->engine = engine;
    r->need_load = true;
    r->ready_fn = ready;
    r->ready_userdata = userdata;
    snprintf(r->applied, sizeof r->applied, "0-0");
    pthread_mutex_lock(&cl->lock);
    if (cluster_find_locked(cl, key, strlen(key))) {
        pthread_mutex_unlock(&cl->lock);
        room_free(r);
        return sync__fail(SYNC_EINVAL, "room \"%s\" is already served on this node", key);
    }
    if (!table_grow_locked(cl)) {
        pthread_mutex_unlock(&cl->lock);
        room_free(r);
        return sync__fail(SYNC_ENOMEM, "out of memory");
    }
    size_t at = key_hash(key, strlen(key)) % cl->bucket_count;
    r->hash_next = cl->buckets[at];
    cl->buckets[at] = r;
    cl->room_count++;
    atomic_store(&cl->attached_count, cl->room_count);
    r->next = cl->rooms;
    if (cl->rooms)
        cl->rooms->prev = r;
    cl->rooms = r;
    cl->owner_wake = true;
    pthread_cond_broadcast(&cl->cond);
    pthread_mutex_unlock(&cl->lock);
    *out = r;
    return SYNC_OK;
}

bool sync__cluster_room_ready(cluster_room *r)
{
    if (!r)
        return true;
    pthread_mutex_lock(&r->cl->lock);
    bool ready = r->ready;
    pthread_mutex_unlock(&r->cl->lock);
    return ready;
}

void sync__cluster_detach(cluster_room *r)
{
    if (!r)
        return;
    sync__cluster *cl = r->cl;
    pthread_mutex_lock(&cl->lock);
    r->detached = true;
    r->ready_fn = NULL;
    table_remove_locked(cl, r);
    /* An apply in flight finishes against the engine: wait for its result, then for the uses. */
    while (r->uses > 0 || (r->inflight && !r->has_result))
        pthread_cond_wait(&cl->cond, &cl->lock);
    sync_engine *engine = r->engine;
    bool linked = r->linked;
    r->engine = NULL;
    r->linked = false;
    /* kept until the link is gone: a forward still running on another thread names the room */
    atomic_fetch_add(&r->refs, 1);
    cl->owner_wake = true; /* it gives the lease up and frees the room */
    pthread_cond_broadcast(&cl->cond);
    pthread_mutex_unlock(&cl->lock);
    if (linked)
        sync__engine_set_cluster_link(engine, NULL);
    cluster_room_unref(r);
}

static void stop_threads(sync__cluster *cl)
{
    if (cl->started) {
        atomic_store(&cl->stop, true);
        cluster_wake_owner(cl);
        pthread_mutex_lock(&cl->qlock);
        pthread_cond_broadcast(&cl->qcond);
        pthread_mutex_unlock(&cl->qlock);
        pthread_mutex_lock(&cl->sub_lock);
        if (cl->sub_fd >= 0)
            shutdown(cl->sub_fd, SHUT_RDWR); /* wakes the listener */
        pthread_mutex_unlock(&cl->sub_lock);
        pthread_join(cl->forward_thread, NULL);
        pthread_join(cl->listen_thread, NULL);
        pthread_join(cl->owner_thread, NULL); /* releases the leases it holds */
        cl->started = false;
    }
}

void sync__cluster_kill(sync__cluster *cl)
{
    if (!cl)
        return;
    atomic_store(&cl->killed, true);
    stop_threads(cl);
}

void sync__cluster_free(sync__cluster *cl)
{
    if (!cl)
        return;
    stop_threads(cl);
    cluster_forward_drain(cl);
    while (cl->rooms) {
        cluster_room *r = cl->rooms;
        cl->rooms = r->next;
        cluster_room_unref(r);
    }
    free(cl->buckets);
    redis_conn_release(&cl->own_conn);
    redis_conn_release(&cl->fwd_conn);
    redis_conn_release(&cl->sub_conn);
    redis_conn_release(&cl->admin_conn);
    free(cl->prefix);
    free(cl->reply_channel);
    pthread_mutex_destroy(&cl->lock);
    pthread_cond_destroy(&cl->cond);
    pthread_mutex_destroy(&cl->qlock);
    pthread_cond_destroy(&cl->qcond);
    pthread_mutex_destroy(&cl->sub_lock);
    pthread_mutex_destroy(&cl->admin_lock);
    free(cl);
}

#else

int sync__cluster_new(sync__cluster **out, const sync_cluster_options *opts)
{
    (void)opts;
    *out = NULL;
    return sync__fail(SYNC_EUNSUPPORTED,
                      "libsync was built without Redis support (LIBSYNC_WITH_REDIS=OFF): no "
                      "cluster");
}

int sync__cluster_start(sync__cluster *cl)
{
    (void)cl;
    return SYNC_EUNSUPPORTED;
}

void sync__cluster_free(sync__cluster *cl)
{
    (void)cl;
}

void sync__cluster_kill(sync__cluster *cl)
{
    (void)cl;
}

bool sync__cluster_available(sync__cluster *cl)
{
    (void)cl;
    return false;
}

const char *sync__cluster_node_id(const sync__cluster *cl)
{
    (void)cl;
    return "";
}

void sync__cluster_on_deleted(sync__cluster *cl, sync__cluster_deleted_fn fn, void *userdata)
{
    (void)cl;
    (void)fn;
    (void)userdata;
}

void sync__cluster_get_stats(sync__cluster *cl, sync__cluster_stats *out)
{
    (void)cl;
    memset(out, 0, sizeof *out);
}

int sync__cluster_delete(sync__cluster *cl, const char *key)
{
    (void)cl;
    (void)key;
    return SYNC_EUNSUPPORTED;
}

int sync__cluster_list(sync__cluster *cl, const char *key_prefix, size_t max, char ***out_names,
                       size_t *out_count)
{
    (void)cl;
    (void)key_prefix;
    (void)max;
    *out_names = NULL;
    *out_count = 0;
    return SYNC_EUNSUPPORTED;
}

int sync__cluster_attach(sync__cluster *cl, const char *key, sync_engine *engine,
                         sync__cluster_ready_fn ready, void *userdata, cluster_room **out)
{
    (void)cl;
    (void)key;
    (void)engine;
    (void)ready;
    (void)userdata;
    *out = NULL;
    return SYNC_EUNSUPPORTED;
}

bool sync__cluster_room_ready(cluster_room *room)
{
    (void)room;
    return true;
}

void sync__cluster_detach(cluster_room *room)
{
    (void)room;
}

#endif

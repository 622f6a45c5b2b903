/* The listener thread (cluster_internal.h): one connection subscribed to every room's change
 * channel (PSUBSCRIBE "<prefix>changes:*") and to this node's reply channel; each change goes to
 * the room's engine on this node, when it has the room (sync__engine_adopt_state drops what is
 * not newer), each reply to the connection it is for. It also watches Redis for the node: down
 * (the subscription lost, or a PING unanswered for a third of the lease) joins are refused;
 * down for a whole lease, the node's clients are closed with 4503. After every resubscription
 * the rooms reload their record, for the changes published while nobody listened. */
#include "cluster/cluster_internal.h"

#include "error.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef LIBSYNC_HAVE_REDIS

int cluster_publish_change(sync__cluster *cl, redis_conn *c, const cluster_room *r, int64_t version,
                           const char *epoch, const char *state, size_t len)
{
    char *channel = NULL;
    if (asprintf(&channel, "%schanges:%s", cl->prefix, r->key) < 0)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    char head[64];
    int head_len = snprintf(head, sizeof head, "%lld %s ", (long long)version, epoch ? epoch : "");
    char *payload = malloc((size_t)head_len + len);
    if (!payload) {
        free(channel);
        return sync__fail(SYNC_ENOMEM, "out of memory");
    }
    memcpy(payload, head, (size_t)head_len);
    memcpy(payload + head_len, state, len);
    const char *argv[] = {"PUBLISH", channel, payload};
    size_t lens[] = {7, strlen(channel), (size_t)head_len + len};
    redisReply *reply = NULL;
    int rc = redis_conn_command(c, &reply, "cannot publish a change to", 3, argv, lens);
    if (rc == SYNC_OK)
        freeReplyObject(reply);
    free(payload);
    free(channel);
    return rc;
}

void cluster_adopt(cluster_room *r, int64_t version, const char *epoch, const char *state,
                   size_t len)
{
    sync_engine *e = cluster_room_use(r);
    if (!e)
        return;
    sync__cluster *cl = r->cl;
    bool new_epoch = false;
    if (epoch && epoch[0]) {
        pthread_mutex_lock(&cl->lock);
        if (strcmp(r->epoch, epoch) != 0) {
            snprintf(r->epoch, sizeof r->epoch, "%s", epoch);
            new_epoch = true;
        }
        pthread_mutex_unlock(&cl->lock);
    }
    if (new_epoch)
        sync__engine_set_epoch(e, epoch);
    if (version >= 1) {
        cJSON *parsed = cJSON_ParseWithLength(state, len);
        if (parsed)
            sync__engine_adopt_state(e, parsed, version);
    }
    cluster_room_unuse(r);
}

/* "<version> <epoch> <state>" of the room on channel "<prefix>changes:<key>". */
static void on_change(sync__cluster *cl, const redisReply *channel, const redisReply *data)
{
    size_t plen = strlen(cl->prefix) + 8; /* "changes:" */
    if (channel->len <= plen)
        return;
    const char *key = channel->str + plen;
    size_t key_len = channel->len - plen;
    const char *text = data->str, *end = data->str + data->len;
    /* "deleted <node>": sync__cluster_delete; the deleting node unloaded its room itself (and
     * may have loaded it afresh since) */
    static const char deleted[] = "deleted ";
    if (data->len > sizeof deleted - 1 && memcmp(text, deleted, sizeof deleted - 1) == 0) {
        size_t node_len = data->len - (sizeof deleted - 1);
        if (node_len == strlen(cl->node) &&
            memcmp(text + sizeof deleted - 1, cl->node, node_len) == 0)
            return;
        pthread_mutex_lock(&cl->lock);
        cluster_room *r = cluster_find_locked(cl, key, key_len);
        /* a room whose first load has not started reads what the delete left: nothing */
        if (r && (r->ready || !r->need_load))
            atomic_fetch_add(&r->refs, 1);
        else
            r = NULL;
        pthread_mutex_unlock(&cl->lock);
        if (r) {
            cluster_room_deleted(r);
            cluster_room_unref(r);
        }
        return;
    }
    const char *sp1 = memchr(text, ' ', data->len);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1)) : NULL;
    int64_t version = 0;
    if (!sp2 || !redis_parse_int64(text, (size_t)(sp1 - text), &version) ||
        (size_t)(sp2 - sp1 - 1) > SYNC__EPOCH_MAX)
        return;
    char epoch[SYNC__EPOCH_MAX + 1];
    memcpy(epoch, sp1 + 1, (size_t)(sp2 - sp1 - 1));
    epoch[sp2 - sp1 - 1] = '\0';
    pthread_mutex_lock(&cl->lock);
    cluster_room *r = cluster_find_locked(cl, key, key_len);
    if (r)
        atomic_fetch_add(&r->refs, 1);
    pthread_mutex_unlock(&cl->lock);
    if (!r)
        return;
    cluster_adopt(r, version, epoch, sp2 + 1, (size_t)(end - sp2 - 1));
    cluster_room_unref(r);
}

/* "<conn id> <key length> <key><frame>" for a connection of this node. */
static void on_reply(sync__cluster *cl, const redisReply *data)
{
    const char *text = data->str, *end = data->str + data->len;
    const char *sp1 = memchr(text, ' ', data->len);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1)) : NULL;
    int64_t conn_id = 0, key_len = 0;
    if (!sp2 || !redis_parse_int64(text, (size_t)(sp1 - text), &conn_id) ||
        !redis_parse_int64(sp1 + 1, (size_t)(sp2 - sp1 - 1), &key_len) || key_len <= 0 ||
        key_len > end - sp2 - 1)
        return;
    const char *key = sp2 + 1;
    const char *frame = key + key_len;
    pthread_mutex_lock(&cl->lock);
    cluster_room *r = cluster_find_locked(cl, key, (size_t)key_len);
    if (r)
        atomic_fetch_add(&r->refs, 1);
    pthread_mutex_unlock(&cl->lock);
    if (!r)
        return;
    sync_engine *e = cluster_room_use(r);
    if (e) {
        sync__engine_send_to_conn(e, (uint64_t)conn_id, frame, (size_t)(end - frame));
        cluster_room_unuse(r);
    }
    cluster_room_unref(r);
}

static void on_message(sync__cluster *cl, const redisReply *m)
{
    if (m->type != REDIS_REPLY_ARRAY || m->elements < 3 ||
        m->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = m->element[0]->str;
    if (strcmp(kind, "pmessage") == 0 && m->elements == 4 &&
        m->element[2]->type == REDIS_REPLY_STRING && m->element[3]->type == REDIS_REPLY_STRING)
        on_change(cl, m->element[2], m->element[3]);
    else if (strcmp(kind, "message") == 0 && m->element[2]->type == REDIS_REPLY_STRING)
        on_reply(cl, m->element[2]);
}

/* The pattern of every room's change channel: the prefix with its glob characters escaped. */
static char *change_pattern(const char *prefix)
{
    size_t n = strlen(prefix);
    char *p = malloc(2 * n + 10);
    if (!p)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (strchr("*?[]\\", prefix[i]))
            p[o++] = '\\';
        p[o++] = prefix[i];
    }
    memcpy(p + o, "changes:*", 10);
    return p;
}

static int subscribe(sync__cluster *cl)
{
    redis_conn *c = &cl->sub_conn;
    int rc = redis_conn_open(c);
    if (rc != SYNC_OK)
        return rc;
    char *pattern = change_pattern(cl->prefix);
    if (!pattern)
        return SYNC_ENOMEM;
    const char *a1[] = {"PSUBSCRIBE", pattern};
    const char *a2[] = {"SUBSCRIBE", cl->reply_channel};
    const char *const *argv[] = {a1, a2};
    int argc[] = {2, 2};
    const size_t *lens[] = {NULL, NULL};
    redisReply *replies[2];
    rc = redis_conn_run(c, 2, argc, argv, lens, replies, "cannot subscribe in");
    free(pattern);
    if (rc != SYNC_OK)
        return rc;
    for (int i = 0; i < 2; i++) {
        if (replies[i]->type != REDIS_REPLY_ARRAY)
            rc = redis_conn_reply_fail(c, replies[i], "cannot subscribe in");
        freeReplyObject(replies[i]);
    }
    if (rc != SYNC_OK)
        return rc;
    pthread_mutex_lock(&cl->sub_lock);
    bool stopping = atomic_load(&cl->stop);
    if (!stopping)
        cl->sub_fd = c->ctx->fd;
    pthread_mutex_unlock(&cl->sub_lock);
    return stopping ? SYNC_ECLOSED : SYNC_OK;
}

static void unsubscribe(sync__cluster *cl)
{
    pthread_mutex_lock(&cl->sub_lock);
    cl->sub_fd = -1;
    pthread_mutex_unlock(&cl->sub_lock);
    if (cl->sub_conn.ctx) {
        redisFree(cl->sub_conn.ctx);
        cl->sub_conn.ctx = NULL;
    }
}

/* Reads messages until the connection fails or the node stops. A third of the lease without a
 * byte sends a PING; another third without its answer counts as lost (Redis stalled). */
static void listen_loop(sync__cluster *cl)
{
    redisContext *ctx = cl->sub_conn.ctx;
    int quiet_ms = cl->lease_ms / 3;
    bool ping_out = false;
    while (!atomic_load(&cl->stop)) {
        void *got = NULL;
        if (redisGetReplyFromReader(ctx, &got) != REDIS_OK)
            return;
        if (got) {
            ping_out = false;
            on_message(cl, got);
            freeReplyObject(got);
            continue;
        }
        struct pollfd pfd = {.fd = ctx->fd, .events = POLLIN};
        int ready = poll(&pfd, 1, quiet_ms);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready < 0)
            return;
        if (ready == 0) {
            if (ping_out)
                return; /* no answer for two thirds of a lease */
            int done = 0;
            if (redisAppendCommand(ctx, "PING") != REDIS_OK)
                return;
            while (!done)
                if (redisBufferWrite(ctx, &done) != REDIS_OK)
                    return;
            ping_out = true;
            continue;
        }
        if (redisBufferRead(ctx) != REDIS_OK)
            return;
        ping_out = false;
    }
}

void *cluster_listen_main(void *arg)
{
    sync__cluster *cl = arg;
    int64_t down_since = sync_now_ms();
    bool closed = false;
    int backoff_ms = 10;
    bool subscribed_once = false;
    while (!atomic_load(&cl->stop)) {
        if (subscribe(cl) == SYNC_OK) {
            if (subscribed_once)
                atomic_fetch_add(&cl->reconnects, 1);
            subscribed_once = true;
            atomic_store(&cl->up, true);
            backoff_ms = 10;
            closed = false;
            pthread_mutex_lock(&cl->lock);
            cl->reload_all = true; /* catch up with what was published meanwhile */
            cl->owner_wake = true;
            pthread_cond_broadcast(&cl->cond);
            pthread_mutex_unlock(&cl->lock);
            listen_loop(cl);
            atomic_store(&cl->up, false);
            down_since = sync_now_ms();
        }
        unsubscribe(cl);
        if (atomic_load(&cl->stop))
            break;
        if (!closed && sync_now_ms() - down_since >= cl->lease_ms) {
            closed = true;
            cluster_close_all(cl);
        }
        /* bounded backoff, and never past the moment the clients must be closed */
        int wait = backoff_ms;
        int64_t left = down_since + cl->lease_ms - sync_now_ms();
        if (!closed && left > 0 && left < wait)
            wait = (int)left;
        cluster_sleep_ms(wait > 0 ? wait : 1);
        backoff_ms = backoff_ms * 2 > 1000 ? 1000 : backoff_ms * 2;
    }
    atomic_store(&cl->up, false);
    return NULL;
}

#endif

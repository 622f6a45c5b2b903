/* The forward queue (cluster_internal.h): the engine's link hands every client message of a
 * clustered room to cluster_forward() on the server's thread, which only queues it (bounded, never
 * blocking); the forwarder thread appends the queued messages to their rooms' streams, many
 * XADDs in one pipelined write. A message the queue cannot take is refused at once (the engine
 * sends the error frame); one Redis did not take gets an error frame from here. */
#include "cluster/cluster_internal.h"

#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef LIBSYNC_HAVE_REDIS

enum { FORWARD_BATCH = 128 };

int cluster_forward(void *userdata, sync_conn *conn, const char *text, size_t len)
{
    cluster_room *r = userdata;
    sync__cluster *cl = r->cl;
    if (!atomic_load(&cl->up))
        return sync__fail(SYNC_EIO, "redis unavailable: message not forwarded");
    const char *identity = conn ? sync_conn_identity(conn) : NULL;
    cluster_item *item = malloc(sizeof *item + len + 1);
    char *ident = identity ? strdup(identity) : NULL;
    if (!item || (identity && !ident)) {
        free(item);
        free(ident);
        return sync__fail(SYNC_ENOMEM, "out of memory forwarding a message");
    }
    item->next = NULL;
    item->room = r;
    item->conn_id = conn ? sync_conn_id(conn) : 0;
    item->identity = ident;
    item->len = len;
    memcpy(item->msg, text, len);
    item->msg[len] = '\0';
    pthread_mutex_lock(&cl->qlock);
    if (cl->qcount >= cl->max_queue || cl->qbytes + len > CLUSTER_MAX_FORWARD_BYTES) {
        size_t count = cl->qcount;
        pthread_mutex_unlock(&cl->qlock);
        free(item->identity);
        free(item);
        return sync__fail(SYNC_ELIMIT, "cluster forward queue full (%zu messages): message refused",
                          count);
    }
    atomic_fetch_add(&r->refs, 1);
    if (cl->qtail)
        cl->qtail->next = item;
    else
        cl->qhead = item;
    cl->qtail = item;
    cl->qcount++;
    cl->qbytes += len;
    atomic_store(&cl->queued_count, cl->qcount);
    pthread_cond_signal(&cl->qcond);
    pthread_mutex_unlock(&cl->qlock);
    return SYNC_OK;
}

static void item_free(cluster_item *item)
{
    cluster_room_unref(item->room);
    free(item->identity);
    free(item);
}

void cluster_forward_drain(sync__cluster *cl)
{
    pthread_mutex_lock(&cl->qlock);
    cluster_item *items = cl->qhead;
    cl->qhead = cl->qtail = NULL;
    cl->qcount = cl->qbytes = 0;
    atomic_store(&cl->queued_count, 0);
    pthread_mutex_unlock(&cl->qlock);
    while (items) {
        cluster_item *next = items->next;
        item_free(items);
        items = next;
    }
}

/* Appends the batch to the streams: XADD <stream> * node N conn C [ident I] msg M. */
static void forward_batch(sync__cluster *cl, cluster_item **batch, size_t n)
{
    int argc[FORWARD_BATCH] = {0};
    const char *argv_store[FORWARD_BATCH][11];
    size_t len_store[FORWARD_BATCH][11];
    char conn_buf[FORWARD_BATCH][24];
    const char *const *argv[FORWARD_BATCH] = {0};
    const size_t *lens[FORWARD_BATCH] = {0};
    redisReply *replies[FORWARD_BATCH];
    size_t node_len = strlen(cl->node);
    for (size_t i = 0; i < n; i++) {
        cluster_item *it = batch[i];
        const char **a = argv_store[i];
        size_t *l = len_store[i];
        int c = 0;
        snprintf(conn_buf[i], sizeof conn_buf[i], "%llu", (unsigned long long)it->conn_id);
        a[c] = "XADD", l[c++] = 4;
        a[c] = it->room->stream_key, l[c++] = strlen(it->room->stream_key);
        a[c] = "*", l[c++] = 1;
        a[c] = "node", l[c++] = 4;
        a[c] = cl->node, l[c++] = node_len;
        a[c] = "conn", l[c++] = 4;
        a[c] = conn_buf[i], l[c++] = strlen(conn_buf[i]);
        if (it->identity) {
            a[c] = "ident", l[c++] = 5;
            a[c] = it->identity, l[c++] = strlen(it->identity);
        }
        a[c] = "msg", l[c++] = 3;
        a[c] = it->msg, l[c++] = it->len;
        argc[i] = c;
        argv[i] = a;
        lens[i] = l;
    }
    int rc = redis_conn_run(&cl->fwd_conn, n, argc, argv, lens, replies,
                            "cannot forward messages through");
    char why[300];
    /* The connection failed mid-pipeline: Redis may have stored the entry before its answer was
     * lost, so the sender is told the outcome is unknown (the state will show it), not that the
     * message was dropped. */
    if (rc != SYNC_OK)
        snprintf(why, sizeof why, "message may not have been forwarded: %s", sync_error_last());
    for (size_t i = 0; i < n; i++) {
        bool ok = rc == SYNC_OK && replies[i] && replies[i]->type == REDIS_REPLY_STRING;
        if (rc == SYNC_OK && !ok)
            snprintf(why, sizeof why, "message not forwarded: %s",
                     replies[i] && replies[i]->type == REDIS_REPLY_ERROR ? replies[i]->str
                                                                         : "unexpected reply");
        if (ok)
            atomic_fetch_add(&cl->forwarded, 1);
        else
            cluster_send_error(batch[i]->room, batch[i]->conn_id, why);
        if (rc == SYNC_OK && replies[i])
            freeReplyObject(replies[i]);
    }
}

void *cluster_forward_main(void *arg)
{
    sync__cluster *cl = arg;
    cluster_item *batch[FORWARD_BATCH];
    for (;;) {
        pthread_mutex_lock(&cl->qlock);
        while (!cl->qhead && !atomic_load(&cl->stop))
            pthread_cond_wait(&cl->qcond, &cl->qlock);
        if (!cl->qhead || atomic_load(&cl->killed)) {
            pthread_mutex_unlock(&cl->qlock);
            break;
        }
        size_t n = 0;
        while (cl->qhead && n < FORWARD_BATCH) {
            cluster_item *it = cl->qhead;
            cl->qhead = it->next;
            cl->qcount--;
            cl->qbytes -= it->len;
            batch[n++] = it;
        }
        if (!cl->qhead)
            cl->qtail = NULL;
        /* the batch counts as waiting until Redis took it */
        pthread_mutex_unlock(&cl->qlock);
        forward_batch(cl, batch, n);
        pthread_mutex_lock(&cl->qlock);
        atomic_store(&cl->queued_count, cl->qcount);
        pthread_mutex_unlock(&cl->qlock);
        for (size_t i = 0; i < n; i++)
            item_free(batch[i]);
    }
    return NULL;
}

#endif

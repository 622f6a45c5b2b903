/* The seam through which an engine serves one room of a cluster (engine_cluster.h): a linked
 * engine forwards its clients' messages instead of running them, the owner node runs forwarded
 * messages without committing them (OP_REMOTE), frames it produced reach their connection, and
 * the epoch of the room's record becomes the engine's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "error.h"
#include "json_check.h"

/* ---- a linked engine's client messages ------------------------------------------------------ */

/* The engine whose forward call this thread is inside: an unlink from there cannot wait for it. */
static _Thread_local const sync_engine *forwarding_in;

int sync__cluster_forward(sync_engine *engine, sync_conn *conn, const char *text, size_t len)
{
    sync__cluster_link link = engine->cluster;
    engine->forwarding++;
    sync__engine_unlock(engine);
    const sync_engine *outer = forwarding_in;
    forwarding_in = engine;
    sync__error_clear();
    int rc = link.forward(link.userdata, conn, text, len);
    char detail[700] = "";
    if (rc != SYNC_OK) {
        /* a positive status (SYNC_PENDING) promises nothing about the message: not taken */
        if (rc > 0)
            rc = SYNC_EIO;
        snprintf(detail, sizeof detail, "the room's cluster did not take the message: %s",
                 sync_error_last()[0] ? sync_error_last() : sync_strerror(rc));
    }
    forwarding_in = outer;
    sync__engine_lock(engine);
    if (--engine->forwarding == 0 && engine->forward_waiters)
        pthread_cond_broadcast(&engine->waits->cond); /* made by the link */
    if (rc != SYNC_OK)
        rc = sync__msg_drop(engine, conn, rc, "message", detail);
    sync__engine_unlock(engine);
    return rc;
}

int sync__engine_set_cluster_link(sync_engine *engine, const sync__cluster_link *link)
{
    if (!engine || (link && !link->forward))
        return sync__fail(SYNC_EINVAL, "sync__engine_set_cluster_link: engine and "
                                       "link->forward are required");
    sync__engine_lock(engine);
    if (link && engine->disposed) {
        sync__engine_unlock(engine);
        return sync__fail(SYNC_ECLOSED, "sync__engine_set_cluster_link: the engine is disposed");
    }
    if (link && !sync__engine_waits_get(engine)) {
        sync__engine_unlock(engine);
        return sync__fail(SYNC_ENOMEM, "sync__engine_set_cluster_link: out of memory");
    }
    if (link)
        engine->cluster = *link;
    else
        memset(&engine->cluster, 0, sizeof engine->cluster);
    /* Forward calls that read the old link run outside the lock: once this returns none is left,
     * so the cluster layer may free the old link's userdata. Not from inside one of them, nor
     * with the lock held further out (a hook), where waiting would never end. */
    while (engine->forwarding > 0 && forwarding_in != engine && engine->lock_depth == 1) {
        engine->forward_waiters++;
        engine->lock_depth = 0;
        pthread_cond_wait(&engine->waits->cond, &engine->lock);
        engine->lock_depth = 1;
        engine->forward_waiters--;
    }
    sync__engine_unlock(engine);
    return SYNC_OK;
}

/* ---- the owner's run of a forwarded message ------------------------------------------------- */

/* What is sent to a stand-in connection: kept for the result, then refused once it went out. */
typedef struct sync__remote_sink {
    pthread_mutex_t lock;
    int closed;
    char **replies;
    size_t *lens;
    size_t count;
    size_t cap;
} sync__remote_sink;

struct sync__remote_delivery {
    struct sync__remote_delivery *next;
    sync__remote_done_fn done;
    void *userdata;
    sync__remote_result result;
};

static int sink_send(void *userdata, const char *text, size_t len)
{
    sync__remote_sink *sink = userdata;
    int rc = SYNC_OK;
    pthread_mutex_lock(&sink->lock);
    if (sink->closed) {
        rc = sync__fail(SYNC_ECLOSED, "the forwarded message's run is over");
    } else if (sink->count == sink->cap) {
        size_t cap = sink->cap ? sink->cap * 2 : 4;
        char **replies = realloc(sink->replies, cap * sizeof *replies);
        if (replies)
            sink->replies = replies;
        size_t *lens = replies ? realloc(sink->lens, cap * sizeof *lens) : NULL;
        if (lens) {
            sink->lens = lens;
            sink->cap = cap;
        } else {
            rc = sync__fail(SYNC_ENOMEM, "out of memory keeping a reply");
        }
    }
    char *copy = NULL;
    if (rc == SYNC_OK && !(copy = sync_malloc(len + 1)))
        rc = sync__fail(SYNC_ENOMEM, "out of memory keeping a reply");
    if (rc == SYNC_OK) {
        memcpy(copy, text, len);
        copy[len] = '\0';
        sink->replies[sink->count] = copy;
        sink->lens[sink->count++] = len;
    }
    pthread_mutex_unlock(&sink->lock);
    return rc;
}

/* "Closing it does nothing": the connection lives on the forwarding node. */
static void sink_close(void *userdata, int code, const char *reason)
{
    (void)userdata;
    (void)code;
    (void)reason;
}

static void sink_free(void *userdata)
{
    sync__remote_sink *sink = userdata;
    for (size_t i = 0; i < sink->count; i++)
        sync_free(sink->replies[i]);
    free(sink->replies);
    free(sink->lens);
    pthread_mutex_destroy(&sink->lock);
    free(sink);
}

void sync__remote_result_clear(sync__remote_result *result)
{
    if (!result)
        return;
    sync_free(result->state_json);
    for (size_t i = 0; i < result->reply_count; i++)
        sync_free(result->replies[i]);
    free(result->replies);
    free(result->reply_lens);
    memset(result, 0, sizeof *result);
}

/* Fills the op's result and queues it for its done callback, which runs at the outermost unlock
 * (lock held here). */
static void remote_finish(sync_engine *engine, sync__op *op, int status)
{
    struct sync__remote_delivery *d = op->remote_delivery;
    if (!d)
        return;
    op->remote_delivery = NULL;
    sync__remote_result *r = &d->result;
    r->status = status < 0 ? status : SYNC_OK;
    if (status == SYNC_OK && op->msg && op->msg->working) {
        char *text = cJSON_PrintUnformatted(op->msg->working);
        size_t len = text ? strlen(text) : 0;
        if (text && (r->state_json = sync_malloc(len + 1)))
            memcpy(r->state_json, text, len + 1);
        cJSON_free(text);
        if (!r->state_json)
            r->status = sync__msg_drop(engine, op->conn, SYNC_ENOMEM, "message",
                                       "out of memory serialising the new state");
    }
    sync__remote_sink *sink = op->remote_sink;
    if (sink) {
        pthread_mutex_lock(&sink->lock);
        r->replies = sink->replies;
        r->reply_lens = sink->lens;
        r->reply_count = sink->count;
        sink->replies = NULL;
        sink->lens = NULL;
        sink->count = sink->cap = 0;
        sink->closed = 1; /* a step that kept the connection sends into the void from now on */
        pthread_mutex_unlock(&sink->lock);
    }
    if (engine->remote_deliveries_tail)
        engine->remote_deliveries_tail->next = d;
    else
        engine->remote_deliveries = d;
    engine->remote_deliveries_tail = d;
}

struct sync__remote_delivery *sync__remote_take(sync_engine *engine)
{
    struct sync__remote_delivery *list = engine->remote_deliveries;
    engine->remote_deliveries = engine->remote_deliveries_tail = NULL;
    return list;
}

void sync__remote_deliver(struct sync__remote_delivery *list)
{
    while (list) {
        struct sync__remote_delivery *next = list->next;
        /* the result's contents are the callee's now; only the holder is ours */
        list->done(list->userdata, &list->result);
        free(list);
        list = next;
    }
}

void sync__remote_op_release(sync_engine *engine, sync__op *op)
{
    remote_finish(engine, op, SYNC_ECLOSED); /* dropped at dispose before it finished */
    free(op->remote_text);
    op->remote_text = NULL;
    free(op->remote_refuse);
    op->remote_refuse = NULL;
}

/* The edge checks of a client's message (engine_entry.c), again: the owner's limits apply. */
static int remote_parse(sync_engine *engine, sync__op *op)
{
    size_t len = op->remote_len;
    if (len > engine->max_message_bytes) {
        char detail[128];
        snprintf(detail, sizeof detail, "message of %zu bytes is over the %zu-byte limit", len,
                 engine->max_message_bytes);
        return sync__msg_drop(engine, op->conn, SYNC_ETOOBIG, "message", detail);
    }
    int rc = sync__json_parse(op->remote_text, len, engine->max_json_depth, &op->message);
    free(op->remote_text);
    op->remote_text = NULL;
    if (rc != SYNC_OK) {
        char detail[600];
        snprintf(detail, sizeof detail, "%s", sync_error_last());
        return sync__msg_drop(engine, op->conn, rc, "message", detail);
    }
    return SYNC_OK;
}

enum { R_PARSE, R_PIPELINE };

int sync__remote_run(sync_engine *engine, sync__op *op)
{
    int rc = SYNC_OK;
    if (op->remote_refuse) {
        rc = sync__msg_drop(engine, op->conn, SYNC_ESTATE, "message", op->remote_refuse);
        remote_finish(engine, op, rc);
        return rc;
    }
    if (op->stage == R_PARSE) {
        op->stage = R_PIPELINE;
        rc = remote_parse(engine, op);
    }
    if (rc == SYNC_OK)
        rc = sync__msg_run(engine, op);
    if (rc == SYNC_PENDING)
        return rc;
    remote_finish(engine, op, rc);
    return rc;
}

static int sink_send_frame(void *userdata, sync__frame *frame)
{
    return sink_send(userdata, sync__frame_text(frame), frame->len);
}

/* A transport's connection, not a push one: sync_conn_userdata() gives NULL, as for the server's
 * own connections, and the step cannot take the sink for its own data. */
static const sync__transport_ops standin_ops = {
    .send_frame = sink_send_frame, .close = sink_close, .free_userdata = sink_free};

/* The connection that stands in for the sender on the owner node. */
static int standin_new(const sync__remote_msg *msg, sync_conn **out, sync__remote_sink **sink_out)
{
    sync__remote_sink *sink = calloc(1, sizeof *sink);
    if (!sink)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    pthread_mutex_init(&sink->lock, NULL);
    sync_conn *conn = NULL;
    int rc = sync__conn_new_transport(&conn, &standin_ops, sink);
    if (rc != SYNC_OK) {
        sink_free(sink);
        return rc;
    }
    sync__conn_set_id(conn, msg->conn_id);
    if (msg->identity_json && (rc = sync_conn_set_identity(conn, msg->identity_json)) != SYNC_OK) {
        sync_conn_free(conn);
        return rc;
    }
    *out = conn;
    *sink_out = sink;
    return SYNC_OK;
}

int sync__engine_apply_remote(sync_engine *engine, const sync__remote_msg *msg,
                              sync__remote_done_fn done, void *userdata)
{
    if (!engine || !msg || !done || (!msg->text && msg->len))
        return sync__fail(SYNC_EINVAL,
                          "sync__engine_apply_remote: engine, msg, its text and done are required");
    sync__op *op = sync__op_new(OP_REMOTE);
    struct sync__remote_delivery *d = calloc(1, sizeof *d);
    char *text = malloc(msg->len + 1);
    char *refuse = msg->refuse ? strdup(msg->refuse) : NULL;
    int rc = op && d && text && (refuse || !msg->refuse) ? SYNC_OK
                                                         : sync__fail(SYNC_ENOMEM, "out of memory");
    /* An injected message (conn_id 0) has no connection, as on the node that took it. */
    if (rc == SYNC_OK && msg->conn_id != 0)
        rc = standin_new(msg, &op->conn, &op->remote_sink);
    if (rc != SYNC_OK) {
        free(text);
        free(refuse);
        free(d);
        if (op)
            sync_conn_free(op->conn);
        free(op);
        return rc;
    }
    if (msg->len)
        memcpy(text, msg->text, msg->len);
    text[msg->len] = '\0';
    d->done = done;
    d->userdata = userdata;
    op->remote_text = text;
    op->remote_len = msg->len;
    op->remote_refuse = refuse;
    op->remote_delivery = d;
    sync__engine_lock(engine);
    if (engine->disposed) {
        op->remote_delivery = NULL; /* refused: done never runs */
        free(d);
        sync__op_free(engine, op);
        sync__engine_unlock(engine);
        return sync__fail(SYNC_ECLOSED, "sync__engine_apply_remote: the engine is disposed");
    }
    sync__op_submit(engine, op);
    sync__engine_unlock(engine); /* hands the result on when nothing pended */
    return SYNC_OK;
}

/* ---- frames for one connection, the epoch --------------------------------------------------- */

int sync__engine_send_to_conn(sync_engine *engine, uint64_t conn_id, const char *text, size_t len)
{
    if (!engine || (!text && len))
        return sync__fail(SYNC_EINVAL, "sync__engine_send_to_conn: engine and text are required");
    /* copied before the engine is locked: other threads wait on that lock */
    sync__frame *frame = sync__frame_new_text(SYNC__FRAME_TEXT, text ? text : "", len);
    if (!frame)
        return sync__fail(SYNC_ENOMEM, "out of memory copying a %zu-byte frame", len);
    sync__engine_lock(engine);
    sync_conn *conn = NULL;
    if (!engine->disposed)
        for (conn = engine->conns; conn && conn->id != conn_id; conn = conn->next)
            ;
    int rc;
    if (!conn || conn->state != CONN_OPEN)
        rc = sync__fail(SYNC_ECLOSED, "no open connection %llu here", (unsigned long long)conn_id);
    else if ((rc = sync__engine_send(engine, conn, frame, "reply")) == SYNC_ECLOSED)
        sync__fail(rc, "connection %llu is closing", (unsigned long long)conn_id);
    sync__engine_unlock(engine);
    sync__frame_unref(frame);
    return rc;
}

int sync__engine_set_epoch(sync_engine *engine, const char *epoch)
{
    if (!engine || !sync__epoch_valid(epoch))
        return sync__fail(SYNC_EINVAL,
                          "sync__engine_set_epoch: an epoch is 1 to %d characters "
                          "of [A-Za-z0-9_-]",
                          (int)SYNC__EPOCH_MAX);
    sync__engine_lock(engine);
    if (strcmp(engine->delta.epoch, epoch) != 0) {
        strcpy(engine->delta.epoch, epoch);
        /* the history's versions belong to the old epoch; its frames name it */
        sync__delta_reset(engine);
    }
    sync__engine_unlock(engine);
    return SYNC_OK;
}

void sync__engine_get_epoch(sync_engine *engine, char *out)
{
    if (!out)
        return;
    out[0] = '\0';
    if (!engine)
        return;
    sync__engine_lock(engine);
    memcpy(out, engine->delta.epoch, sizeof engine->delta.epoch);
    sync__engine_unlock(engine);
}

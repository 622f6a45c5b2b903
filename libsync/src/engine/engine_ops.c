/* The engine's ordered work: one operation at a time, each a resumable state machine (commit,
 * persistence, broadcast, open, sync, backup, load), queued behind any operation still waiting for
 * a completion. The public calls that change or send the state enter here.
 *
 * A commit appends a record to the feed (feed.h); every save of it goes through persist_run(),
 * which asks the feed's one persistence policy whether this point needs one; publish() hands the
 * record to the feed's consumers: the readers (servers) are told, push connections are sent it. */
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "clock.h"
#include "error.h"
#include "json_check.h"

sync__op *sync__op_new(op_kind kind)
{
    sync__op *op = calloc(1, sizeof *op);
    if (op)
        op->kind = kind;
    return op;
}

static void op_clear_adapter_result(sync__op *op)
{
    free(op->aerr);
    sync_free(op->ajson); /* an adapter's loaded state: sync_malloc'd (adapter.h) */
    op->aerr = NULL;
    op->ajson = NULL;
}

void sync__op_free(sync_engine *engine, sync__op *op)
{
    if (!op)
        return;
    if (op->kind == OP_REMOTE)
        sync__remote_op_release(engine, op);
    sync__msg_free(op->msg);
    cJSON_Delete(op->message);
    cJSON_Delete(op->state);
    sync_conn_free(op->conn);
    op_clear_adapter_result(op);
    if (op->kind == OP_LOAD && op->done) /* dropped at dispose before it finished */
        op->done(engine, SYNC_ECLOSED, op->done_userdata);
    if (op->ref_held)
        sync__engine_unref_later(engine);
    free(op);
}

/* ---- connections ---------------------------------------------------------------------------- */

sync_conn **sync__engine_conn_snapshot(sync_engine *engine, size_t *count)
{
    size_t n = atomic_load(&engine->conn_count);
    *count = 0;
    if (n == 0)
        return NULL;
    sync_conn **list = malloc(n * sizeof *list);
    if (!list)
        return NULL;
    for (sync_conn *c = engine->conns; c && *count < n; c = c->next)
        list[(*count)++] = sync_conn_ref(c);
    return list;
}

static void release_snapshot(sync_conn **list, size_t count)
{
    for (size_t i = 0; i < count; i++)
        sync_conn_free(list[i]);
    free(list);
}

int sync__engine_send(sync_engine *engine, sync_conn *conn, sync__frame *frame, const char *context)
{
    if (atomic_load(&conn->close_requested))
        return SYNC_ECLOSED;
    int rc = sync__conn_push_frame(conn, frame);
    if (rc == SYNC_OK) {
        engine->stats.frames_out++;
        engine->stats.bytes_out += frame->len;
        return SYNC_OK;
    }
    if (rc == SYNC_ECLOSED)
        return rc;
    return sync__engine_report(engine, SYNC_ESEND, context, conn, "%s", sync_error_last());
}

void sync__engine_close_conn(sync_engine *engine, sync_conn *conn)
{
    if (conn->prev)
        conn->prev->next = conn->next;
    else
        engine->conns = conn->next;
    if (conn->next)
        conn->next->prev = conn->prev;
    conn->prev = conn->next = NULL;
    conn->state = CONN_CLOSED;
    atomic_fetch_sub(&engine->conn_count, 1);
    if (!sync__conn_is_pull(conn))
        engine->feed.push_count--;
    SYNC__DEBUG(engine, "connection %llu closed", (unsigned long long)conn->id);
    if (engine->hooks.on_disconnect)
        engine->hooks.on_disconnect(engine, conn, engine->hooks.userdata);
    sync_conn_free(conn);
    if (!engine->conns)
        sync__feed_drop_caches(engine);
}

/* ---- adapter calls -------------------------------------------------------------------------- */

/* Calls the adapter for `op`. SYNC_PENDING: the op waits and resumes on completion. Otherwise the
 * result is in op->arc (and op->ajson/aversion/ats) and SYNC_OK is returned. */
static int adapter_invoke(sync_engine *engine, sync__op *op, adapter_call call)
{
    op_clear_adapter_result(op);
    op->arc = SYNC_OK;
    op->aversion = 0;
    op->ats = 0;
    sync_pending *pending = calloc(1, sizeof *pending);
    if (!pending) {
        op->arc = sync__fail(SYNC_ENOMEM, "out of memory");
        return SYNC_OK;
    }
    pending->engine = engine;
    pending->op = op;
    pending->call = call;
    pending->in_call = 1;
    sync_adapter *adapter = engine->adapter;
    char *json = NULL;
    int64_t version = 0;
    int64_t ts = 0;
    int rc = SYNC_OK;
    /* What the adapter reports through sync__fail() becomes the detail of a failure. */
    sync__error_clear();
    switch (call) {
    case CALL_INIT:
        rc = adapter->vt.init(adapter->userdata, pending);
        break;
    case CALL_LOAD:
        rc = adapter->vt.load(adapter->userdata, pending, &json, &version);
        break;
    case CALL_SAVE: {
        size_t len = 0;
        const char *text = sync__engine_state_text(engine, &len);
        op->save_seq = engine->feed.head.seq;
        op->t0_us = sync__now_us();
        rc = engine->store_unread
                 ? sync__fail(SYNC_EIO, "the store could not be read at start; saves are refused "
                                        "so its record is not overwritten (create the engine "
                                        "again once the store is readable)")
             : text ? adapter->vt.save(adapter->userdata, pending, engine->state, text, len,
                                       atomic_load(&engine->version))
                    : sync__fail(SYNC_ENOMEM, "out of memory serialising the state");
        break;
    }
    case CALL_BACKUP:
        rc = adapter->vt.backup(adapter->userdata, pending, &ts);
        break;
    }
    pending->in_call = 0;
    if (rc == SYNC_PENDING && !pending->done) {
        pending->awaiting = 1;
        if (call == CALL_SAVE)
            engine->feed.saving_seq = engine->feed.head.seq;
        return SYNC_PENDING;
    }
    if (rc == SYNC_PENDING) {
        rc = pending->status;
        free(json);
        json = pending->state_json;
        pending->state_json = NULL;
        version = pending->version;
        ts = pending->timestamp_ms;
        op->aerr = pending->error;
        pending->error = NULL;
    } else if (rc > 0) {
        rc = SYNC_EIO;
    }
    if (rc < 0 && !op->aerr)
        op->aerr = strdup(sync_error_last()[0] ? sync_error_last() : sync_strerror(rc));
    sync__pending_free(pending);
    op->arc = rc;
    op->ajson = json;
    op->aversion = version;
    op->ats = ts;
    return SYNC_OK;
}

void sync__engine_adapter_completed(sync_engine *engine, sync_pending *pending)
{
    sync__op *op = pending->op;
    if (engine->cur != op) {
        sync__pending_free(pending);
        return;
    }
    op_clear_adapter_result(op);
    op->arc = pending->status;
    op->ajson = pending->state_json;
    op->aerr = pending->error;
    if (op->arc < 0 && !op->aerr)
        op->aerr = strdup(sync_strerror(op->arc));
    op->aversion = pending->version;
    op->ats = pending->timestamp_ms;
    pending->state_json = NULL;
    pending->error = NULL;
    sync__pending_free(pending);
    sync__op_continue(engine);
}

/* ---- persistence ---------------------------------------------------------------------------- */

/* Accounts a finished save and runs on_sync; a failure is reported (context "sync"). */
static int save_finish(sync_engine *engine, sync__op *op)
{
    sync__feed *f = &engine->feed;
    f->saving_seq = 0;
    uint64_t took = (uint64_t)(sync__now_us() - op->t0_us);
    engine->stats.last_save_us = took;
    engine->stats.total_save_us += took;
    if (op->arc < 0) {
        engine->stats.save_errors++;
        return sync__engine_report(engine, op->arc, "sync", NULL, "save of version %lld failed: %s",
                                   (long long)atomic_load(&engine->version),
                                   op->aerr ? op->aerr : sync_strerror(op->arc));
    }
    engine->stats.saves++;
    if (op->save_seq > f->persisted_seq)
        f->persisted_seq = op->save_seq;
    SYNC__DEBUG(engine, "saved version %lld", (long long)atomic_load(&engine->version));
    if (engine->hooks.on_sync)
        engine->hooks.on_sync(engine, engine->state, atomic_load(&engine->version),
                              engine->hooks.userdata);
    return SYNC_OK;
}

enum { P_ASK, P_SAVED, P_DONE };

/* The one place the head is saved: when the feed's policy says `point` needs a save. SYNC_PENDING
 * while an adapter finishes later (the op resumes here); else SYNC_OK, or the reported status of a
 * failed save (the caller goes on: a state that could not be saved is still served). Each op
 * passes here once per point (op->psub is reset by the caller between two points). */
static int persist_run(sync_engine *engine, sync__op *op, sync__feed_point point)
{
    switch (op->psub) {
    case P_ASK:
        if (!sync__feed_save_due(engine, point)) {
            op->psub = P_DONE;
            return SYNC_OK;
        }
        engine->feed.persist_tried_seq = engine->feed.head.seq;
        op->psub = P_SAVED;
        if (adapter_invoke(engine, op, CALL_SAVE) == SYNC_PENDING)
            return SYNC_PENDING;
        /* fall through */
    case P_SAVED:
        op->psub = P_DONE;
        return save_finish(engine, op);
    default:
        return SYNC_OK;
    }
}

/* ---- broadcast ------------------------------------------------------------------------------ */

static int push_to_all(sync_engine *engine)
{
    size_t count = 0;
    sync_conn **conns = sync__engine_conn_snapshot(engine, &count);
    if (!conns && atomic_load(&engine->conn_count) > 0)
        return sync__engine_report(engine, SYNC_ENOMEM, "broadcast", NULL, "out of memory");
    sync__frame *frame = NULL;
    int result = SYNC_OK;
    for (size_t i = 0; i < count; i++) {
        if (sync__conn_is_pull(conns[i]))
            continue;
        if (!frame) {
            frame = sync__engine_state_frame(engine, SYNC__FRAME_STATE_UPDATE);
            if (!frame) {
                result = sync__engine_report(engine, SYNC_ENOMEM, "broadcast", NULL,
                                             "out of memory building the state frame");
                break;
            }
            /* a send may call back in and replace the head's frame: this walk keeps its own */
            sync__frame_ref(frame);
        }
        int rc = sync__engine_send(engine, conns[i], frame, "broadcast");
        if (rc < 0 && rc != SYNC_ECLOSED && result == SYNC_OK)
            result = rc;
    }
    sync__frame_unref(frame);
    release_snapshot(conns, count);
    return result;
}

enum { B_FLUSH, B_SEND };

/* Hands the head to the feed's consumers: readers hear that it moved (they flush and read it
 * themselves), push connections are sent it after the flush their send needs. */
static int broadcast_run(sync_engine *engine, sync__op *op, int force)
{
    if (op->bsub == B_FLUSH) {
        if (engine->feed.push_count > 0) {
            if (persist_run(engine, op, FEED_SENDING) == SYNC_PENDING)
                return SYNC_PENDING;
        }
        op->bsub = B_SEND;
    }
    SYNC__DEBUG(engine, "broadcast version %lld to %zu connections",
                (long long)atomic_load(&engine->version), atomic_load(&engine->conn_count));
    sync__feed_moved(engine, force);
    return engine->feed.push_count ? push_to_all(engine) : SYNC_OK;
}

/* ---- commit --------------------------------------------------------------------------------- */

enum { C_APPLY, C_PERSIST, C_BROADCAST };

static int commit_run(sync_engine *engine, sync__op *op)
{
    switch (op->csub) {
    case C_APPLY: {
        int jumped = 0;
        if (op->adopt_version > 0 && engine->versioning) {
            int64_t current = atomic_load(&engine->version);
            if (op->adopt_version <= current)
                return SYNC_OK; /* a replica got an older change late: already past it */
            if (op->adopt_version != current + 1) {
                atomic_store(&engine->version, op->adopt_version - 1);
                jumped = 1;
            }
        }
        cJSON *old = engine->state;
        engine->state = op->state;
        op->state = NULL;
        sync__feed_append(engine);
        sync__delta_commit(engine, old, engine->state);
        if (jumped)
            sync__delta_reset(engine); /* no patch spans the jump: clients behind get the state */
        SYNC__DEBUG(engine, "commit: version %lld", (long long)atomic_load(&engine->version));
        if (engine->hooks.on_state_change && !cJSON_Compare(old, engine->state, 1))
            engine->hooks.on_state_change(engine, old, engine->state, engine->hooks.userdata);
        cJSON_Delete(old);
        if (engine->disposed)
            return SYNC_OK;
        op->csub = C_PERSIST;
    }
        /* fall through */
    case C_PERSIST:
        if (persist_run(engine, op, FEED_APPENDED) == SYNC_PENDING)
            return SYNC_PENDING;
        op->csub = C_BROADCAST;
        op->psub = P_ASK;
        /* fall through */
    default:
        if (engine->disposed || !(op->broadcast || engine->auto_broadcast))
            return SYNC_OK;
        /* The change itself is done whatever a send did; failed sends were reported. */
        return broadcast_run(engine, op, op->broadcast) == SYNC_PENDING ? SYNC_PENDING : SYNC_OK;
    }
}

/* ---- the operations ------------------------------------------------------------------------- */

enum { O_JOIN, O_PERSIST, O_SEND };

static int open_run(sync_engine *engine, sync__op *op)
{
    sync_conn *conn = op->conn;
    switch (op->stage) {
    case O_JOIN:
        if (conn->state == CONN_CLOSED)
            return SYNC_OK; /* closed while its open waited in the queue */
        conn->state = CONN_OPEN;
        conn->last_pong_ms = sync_now_ms();
        conn->next = engine->conns;
        if (engine->conns)
            engine->conns->prev = conn;
        engine->conns = sync_conn_ref(conn);
        atomic_fetch_add(&engine->conn_count, 1);
        if (!sync__conn_is_pull(conn))
            engine->feed.push_count++;
        SYNC__DEBUG(engine, "connection %llu opened", (unsigned long long)conn->id);
        if (engine->hooks.on_connect)
            engine->hooks.on_connect(engine, conn, engine->hooks.userdata);
        if (engine->disposed || conn->state != CONN_OPEN)
            return SYNC_OK;
        op->stage = O_PERSIST;
        /* fall through */
    case O_PERSIST:
        /* the initial state is a frame of the head like any other */
        if (persist_run(engine, op, FEED_SENDING) == SYNC_PENDING)
            return SYNC_PENDING;
        op->stage = O_SEND;
        /* fall through */
    default: {
        if (engine->disposed || conn->state != CONN_OPEN)
            return SYNC_OK;
        sync__frame *frame = sync__engine_state_frame(engine, SYNC__FRAME_INITIAL_STATE);
        if (!frame)
            return sync__engine_report(engine, SYNC_ENOMEM, "open", conn,
                                       "out of memory building initial_state");
        sync__frame_ref(frame);
        int rc = sync__engine_send(engine, conn, frame, "open");
        sync__frame_unref(frame);
        if (rc < 0) {
            sync__conn_request_close(conn, 1011, "initial state could not be sent");
            return rc;
        }
        return SYNC_OK;
    }
    }
}

enum { S_START, S_DONE };

static int backup_run(sync_engine *engine, sync__op *op)
{
    if (op->stage == S_START) {
        op->stage = S_DONE;
        if (adapter_invoke(engine, op, CALL_BACKUP) == SYNC_PENDING)
            return SYNC_PENDING;
    }
    if (op->arc < 0)
        return sync__engine_report(engine, op->arc, "backup", NULL, "backup failed: %s",
                                   op->aerr ? op->aerr : sync_strerror(op->arc));
    SYNC__DEBUG(engine, "backup made at %lld", (long long)op->ats);
    if (engine->hooks.on_backup)
        engine->hooks.on_backup(engine, op->ats, atomic_load(&engine->version),
                                engine->hooks.userdata);
    return SYNC_OK;
}

static void load_apply(sync_engine *engine, sync__op *op)
{
    if (!op->ajson) {
        SYNC__DEBUG(engine, "load: the store was never saved; keeping the initial state");
        /* a room only visited writes no record (nor, saving before each send, a transaction
         * per room on its first join): a crash leaves no record, and the next load makes the
         * same initial state again (a fresh epoch: a client resuming from it gets it whole) */
        if (engine->initial_needs_no_save)
            engine->feed.persisted_seq = engine->feed.head.seq;
        return;
    }
    cJSON *state = NULL;
    if (sync__json_parse(op->ajson, strlen(op->ajson), 0, &state) != SYNC_OK) {
        sync__engine_report(engine, SYNC_ECORRUPT, "load", NULL,
                            "the stored state is not valid JSON (%s); starting from the initial "
                            "state",
                            sync_error_last());
        return;
    }
    cJSON_Delete(engine->state);
    engine->state = state;
    sync__feed_append_saved(engine);
    sync__delta_reset(engine);
    if (engine->versioning)
        atomic_store(&engine->version, op->aversion >= 0 ? op->aversion : 0);
    SYNC__DEBUG(engine, "load: version %lld", (long long)atomic_load(&engine->version));
}

enum { L_INIT, L_INITED, L_LOAD, L_LOADED };

static int load_run(sync_engine *engine, sync__op *op)
{
    for (;;) {
        switch (op->stage) {
        case L_INIT:
            op->stage = L_INITED;
            if (!engine->adapter->vt.init) {
                op->arc = SYNC_OK;
                break;
            }
            if (adapter_invoke(engine, op, CALL_INIT) == SYNC_PENDING)
                return SYNC_PENDING;
            break;
        case L_INITED:
            /* whatever happens to the load, the saves from now on write this engine's epoch */
            sync__delta_adopt_epoch(engine);
            if (op->arc < 0) {
                engine->store_unread = op->arc != SYNC_ECORRUPT;
                return sync__engine_report(
                    engine, op->arc, "load", NULL,
                    "adapter init failed: %s; starting from the initial state",
                    op->aerr ? op->aerr : sync_strerror(op->arc));
            }
            op->stage = L_LOADED;
            if (adapter_invoke(engine, op, CALL_LOAD) == SYNC_PENDING)
                return SYNC_PENDING;
            break;
        default:
            if (op->arc < 0) {
                engine->store_unread = op->arc != SYNC_ECORRUPT;
                return sync__engine_report(engine, op->arc, "load", NULL,
                                           "load failed: %s; starting from the initial state",
                                           op->aerr ? op->aerr : sync_strerror(op->arc));
            }
            load_apply(engine, op);
            sync__delta_adopt_epoch(engine);
            return SYNC_OK;
        }
    }
}

enum { M_PIPELINE, M_COMMIT };

static int op_run(sync_engine *engine, sync__op *op)
{
    if (engine->disposed)
        return SYNC_ECLOSED;
    switch (op->kind) {
    case OP_LOAD: {
        int rc = load_run(engine, op);
        if (rc != SYNC_PENDING && op->done) {
            /* a room's load (engine_room.h): refused only when the record could not be read */
            sync_done_cb done = op->done;
            op->done = NULL;
            done(engine, engine->store_unread ? (rc < 0 ? rc : SYNC_EIO) : SYNC_OK,
                 op->done_userdata);
        }
        return rc;
    }
    case OP_MESSAGE:
        if (op->stage == M_PIPELINE) {
            int rc = sync__msg_run(engine, op);
            if (rc != SYNC_OK || !op->msg->working)
                return rc;
            op->state = op->msg->working;
            op->msg->working = NULL;
            op->stage = M_COMMIT;
        }
        return commit_run(engine, op);
    case OP_SET_STATE:
        return commit_run(engine, op);
    case OP_BROADCAST:
        return broadcast_run(engine, op, 1);
    case OP_SYNC:
        return persist_run(engine, op, FEED_SYNC);
    case OP_FLUSH:
        return persist_run(engine, op, FEED_SENDING);
    case OP_BACKUP:
        return backup_run(engine, op);
    case OP_OPEN:
        return open_run(engine, op);
    case OP_WHEN_IDLE:
        op->done(engine, SYNC_OK, op->done_userdata);
        return SYNC_OK;
    case OP_REMOTE:
        return sync__remote_run(engine, op);
    }
    return SYNC_EINVAL;
}

/* ---- the queue ------------------------------------------------------------------------------ */

static void op_wait(sync__op *op)
{
    op->ref_held = 1;
}

static void op_finish(sync_engine *engine, sync__op *op)
{
    engine->cur = NULL;
    engine->busy = 0;
    sync__op_free(engine, op);
    sync__feed_op_finished(engine);
}

static void op_drain(sync_engine *engine)
{
    while (!engine->busy && engine->queue_head && !engine->disposed) {
        sync__op *op = engine->queue_head;
        engine->queue_head = op->next;
        if (!engine->queue_head)
            engine->queue_tail = NULL;
        op->next = NULL;
        engine->busy = 1;
        engine->cur = op;
        if (op_run(engine, op) == SYNC_PENDING) {
            if (!op->ref_held) {
                atomic_fetch_add(&engine->refs, 1);
                op_wait(op);
            }
            return;
        }
        op_finish(engine, op);
    }
}

int sync__op_submit(sync_engine *engine, sync__op *op)
{
    if (engine->busy) {
        if (engine->queue_tail)
            engine->queue_tail->next = op;
        else
            engine->queue_head = op;
        engine->queue_tail = op;
        SYNC__DEBUG(engine, "queued behind pending work");
        return SYNC_PENDING;
    }
    engine->busy = 1;
    engine->cur = op;
    int rc = op_run(engine, op);
    if (rc == SYNC_PENDING) {
        if (!op->ref_held) {
            atomic_fetch_add(&engine->refs, 1);
            op_wait(op);
        }
        return rc;
    }
    op_finish(engine, op);
    op_drain(engine);
    return rc;
}

void sync__op_continue(sync_engine *engine)
{
    sync__op *op = engine->cur;
    if (!op)
        return;
    int rc = engine->disposed ? SYNC_ECLOSED : op_run(engine, op);
    if (rc == SYNC_PENDING)
        return;
    op_finish(engine, op);
    op_drain(engine);
}

void sync__op_drop_queue(sync_engine *engine)
{
    sync__op *op = engine->queue_head;
    engine->queue_head = engine->queue_tail = NULL;
    while (op) {
        sync__op *next = op->next;
        if (op->kind == OP_WHEN_IDLE)
            op->done(engine, SYNC_ECLOSED, op->done_userdata);
        if (op->kind == OP_OPEN && op->conn->state == CONN_OPENING)
            op->conn->state = CONN_CLOSED;
        sync__op_free(engine, op);
        op = next;
    }
}

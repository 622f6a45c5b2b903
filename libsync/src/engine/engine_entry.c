/* The public calls that feed the engine's ordered work: connections opening, messages, state
 * changes from outside, broadcasts, sync, backup, when_idle. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "error.h"
#include "json_check.h"

/* Takes the lock of a live engine, or fails with the status every such call returns. */
static int enter(sync_engine *engine, const char *what)
{
    if (!engine)
        return sync__fail(SYNC_EINVAL, "%s: engine is NULL", what);
    sync__engine_lock(engine);
    if (engine->disposed) {
        sync__engine_unlock(engine);
        return sync__fail(SYNC_ECLOSED, "%s: the engine is disposed", what);
    }
    return SYNC_OK;
}

/* enter() for the calls about one connection, which must be given. */
static int enter_conn(sync_engine *engine, const sync_conn *conn, const char *what)
{
    if (!conn)
        return sync__fail(SYNC_EINVAL, "%s: conn is NULL", what);
    return enter(engine, what);
}

/* Unlocks and refuses a call about a connection in the wrong state. */
static int refuse_conn(sync_engine *engine, const sync_conn *conn, const char *what,
                       const char *why)
{
    sync__engine_unlock(engine);
    return sync__fail(SYNC_ESTATE, "%s: connection %llu %s", what, (unsigned long long)conn->id,
                      why);
}

static int submit_new(sync_engine *engine, sync__op *op, const char *what)
{
    if (!op) {
        sync__engine_unlock(engine);
        return sync__fail(SYNC_ENOMEM, "%s: out of memory", what);
    }
    int rc = sync__op_submit(engine, op);
    sync__engine_unlock(engine);
    return rc;
}

int sync_engine_handle_open(sync_engine *engine, sync_conn *conn)
{
    int rc = enter_conn(engine, conn, "sync_engine_handle_open");
    if (rc != SYNC_OK)
        return rc;
    if (conn->state != CONN_NEW)
        return refuse_conn(engine, conn, "sync_engine_handle_open", "was opened before");
    sync__op *op = sync__op_new(OP_OPEN);
    if (op) {
        conn->engine = engine;
        conn->state = CONN_OPENING;
        op->conn = sync_conn_ref(conn);
    }
    return submit_new(engine, op, "sync_engine_handle_open");
}

int sync_engine_handle_close(sync_engine *engine, sync_conn *conn)
{
    int rc = enter_conn(engine, conn, "sync_engine_handle_close");
    if (rc != SYNC_OK)
        return rc;
    if (conn->engine == engine) {
        if (conn->state == CONN_OPEN)
            sync__engine_close_conn(engine, conn);
        else if (conn->state == CONN_OPENING)
            conn->state = CONN_CLOSED; /* its queued open will skip it */
    }
    sync__engine_unlock(engine);
    return SYNC_OK;
}

/* The part of the pipeline that needs no user code: it runs at once, even behind pending work,
 * so bad input is refused immediately and only parsed messages wait in the queue. */
static int message_enter(sync_engine *engine, sync_conn *conn, const char *text, size_t len,
                         int utf8_valid, const char *what)
{
    if (!text && len)
        return sync__fail(SYNC_EINVAL, "%s: text is NULL", what);
    int rc = enter(engine, what);
    if (rc != SYNC_OK)
        return rc;
    engine->stats.messages_in++;
    /* Whatever the client sends shows it is alive, not only its answer to a ping: a busy client
     * that never answers one must not be closed as dead. */
    if (conn && engine->ping_timeout_ms > 0)
        conn->last_pong_ms = sync_now_ms();
    if (len == 4 && memcmp(text, "pong", 4) == 0) {
        if (conn) {
            SYNC__DEBUG(engine, "pong from connection %llu", (unsigned long long)conn->id);
            if (engine->hooks.on_pong)
                engine->hooks.on_pong(engine, conn, engine->hooks.userdata);
        }
        sync__engine_unlock(engine);
        return SYNC_OK;
    }
    if (len > engine->max_message_bytes) {
        char detail[128];
        snprintf(detail, sizeof detail, "message of %zu bytes is over the %zu-byte limit", len,
                 engine->max_message_bytes);
        rc = sync__msg_drop(engine, conn, SYNC_ETOOBIG, "message", detail);
        sync__engine_unlock(engine);
        return rc;
    }
    cJSON *message = NULL;
    rc = sync__json_parse_text(text ? text : "", len, engine->max_json_depth, utf8_valid, &message);
    if (rc != SYNC_OK) {
        char detail[600];
        snprintf(detail, sizeof detail, "%s", sync_error_last());
        rc = sync__msg_drop(engine, conn, rc, "message", detail);
        sync__engine_unlock(engine);
        return rc;
    }
    SYNC__DEBUG(engine, "message of %zu bytes parsed", len);
    if (engine->cluster.forward) {
        cJSON_Delete(message); /* the owner node parses it again where it runs */
        return sync__cluster_forward(engine, conn, text ? text : "", len);
    }
    sync__op *op = sync__op_new(OP_MESSAGE);
    if (!op) {
        cJSON_Delete(message);
    } else {
        op->message = message;
        op->conn = sync_conn_ref(conn);
    }
    return submit_new(engine, op, what);
}

int sync_engine_handle_message(sync_engine *engine, sync_conn *conn, const char *text, size_t len)
{
    if (!conn)
        return sync__fail(SYNC_EINVAL, "sync_engine_handle_message: conn is NULL");
    return message_enter(engine, conn, text, len, 0, "sync_engine_handle_message");
}

int sync__engine_handle_valid_text(sync_engine *engine, sync_conn *conn, const char *text,
                                   size_t len)
{
    if (!conn)
        return sync__fail(SYNC_EINVAL, "sync_engine_handle_message: conn is NULL");
    return message_enter(engine, conn, text, len, 1, "sync_engine_handle_message");
}

int sync_engine_handle_alive(sync_engine *engine, sync_conn *conn)
{
    int rc = enter_conn(engine, conn, "sync_engine_handle_alive");
    if (rc != SYNC_OK)
        return rc;
    if (conn->engine != engine || conn->state != CONN_OPEN)
        return refuse_conn(engine, conn, "sync_engine_handle_alive", "is not open here");
    conn->last_pong_ms = sync_now_ms();
    sync__engine_unlock(engine);
    return SYNC_OK;
}

int sync_engine_inject(sync_engine *engine, const char *text, size_t len)
{
    return message_enter(engine, NULL, text, len, 0, "sync_engine_inject");
}

/* `checked`: the state was just parsed from text, which runs the same check. */
static int set_state(sync_engine *engine, cJSON *state, int broadcast, int checked,
                     int64_t adopt_version)
{
    if (!state) {
        return sync__fail(SYNC_EINVAL, "sync_engine_set_state: state is NULL");
    }
    /* checked before the lock: the state is ours already, and a big one takes a moment */
    int bad = checked ? SYNC_OK : sync__json_check_tree(state);
    char why[600];
    if (bad != SYNC_OK) {
        snprintf(why, sizeof why, "%s", sync_error_last());
        cJSON_Delete(state);
    }
    int rc = enter(engine, "sync_engine_set_state");
    if (rc == SYNC_OK && adopt_version == 0 && engine->cluster.forward) {
        sync__engine_unlock(engine);
        rc = sync__fail(SYNC_EUNSUPPORTED, "sync_engine_set_state: the engine serves a room of a "
                                           "cluster, where the state changes through messages");
    }
    if (rc != SYNC_OK) {
        if (bad == SYNC_OK)
            cJSON_Delete(state);
        return rc;
    }
    if (bad != SYNC_OK) {
        /* like a failed handler: nothing changes, and on_error hears of it */
        rc = sync__engine_report(engine, bad, "set_state", NULL,
                                 "the new state cannot be sent as JSON: %s; state and version are "
                                 "unchanged",
                                 why);
        sync__engine_unlock(engine);
        return rc;
    }
    sync__op *op = sync__op_new(OP_SET_STATE);
    if (!op) {
        cJSON_Delete(state);
    } else {
        op->state = state;
        op->broadcast = broadcast ? 1 : 0;
        op->adopt_version = adopt_version;
    }
    return submit_new(engine, op, "sync_engine_set_state");
}

int sync_engine_set_state(sync_engine *engine, cJSON *state, int broadcast)
{
    return set_state(engine, state, broadcast, 0, 0);
}

int sync__engine_adopt_state(sync_engine *engine, cJSON *state, int64_t version)
{
    if (version < 1) {
        cJSON_Delete(state);
        return sync__fail(SYNC_EINVAL, "adopted version must be >= 1");
    }
    /* Not forced: a client that already has this version (it got it while this change was on
     * its way) must not get it twice. Sent when the engine broadcasts its commits (auto_broadcast),
     * as the owner's handler commit would be on a single node. */
    return set_state(engine, state, 0, 0, version);
}

int sync_engine_set_state_json(sync_engine *engine, const char *json, int broadcast)
{
    if (!engine || !json)
        return sync__fail(SYNC_EINVAL, "sync_engine_set_state_json: engine and json are required");
    cJSON *state = NULL;
    int rc = sync__json_parse(json, strlen(json), 0, &state);
    if (rc != SYNC_OK)
        return rc;
    return set_state(engine, state, broadcast, 1, 0);
}

int sync_engine_broadcast_state(sync_engine *engine)
{
    int rc = enter(engine, "sync_engine_broadcast_state");
    if (rc != SYNC_OK)
        return rc;
    return submit_new(engine, sync__op_new(OP_BROADCAST), "sync_engine_broadcast_state");
}

int sync_engine_broadcast_text(sync_engine *engine, const char *text, size_t len)
{
    if (!text && len)
        return sync__fail(SYNC_EINVAL, "sync_engine_broadcast_text: text is NULL");
    int rc = enter(engine, "sync_engine_broadcast_text");
    if (rc != SYNC_OK)
        return rc;
    sync__frame *frame = sync__frame_new_text(SYNC__FRAME_TEXT, text ? text : "", len);
    if (!frame) {
        sync__engine_unlock(engine);
        return sync__fail(SYNC_ENOMEM, "out of memory copying a %zu-byte frame", len);
    }
    size_t count = 0;
    sync_conn **conns = sync__engine_conn_snapshot(engine, &count);
    int result = SYNC_OK;
    for (size_t i = 0; i < count; i++) {
        rc = sync__engine_send(engine, conns[i], frame, "broadcast");
        if (rc < 0 && rc != SYNC_ECLOSED && result == SYNC_OK)
            result = rc;
        sync_conn_free(conns[i]);
    }
    free(conns);
    sync__frame_unref(frame);
    sync__engine_unlock(engine);
    return result;
}

int sync_engine_sync(sync_engine *engine)
{
    int rc = enter(engine, "sync_engine_sync");
    if (rc != SYNC_OK)
        return rc;
    return submit_new(engine, sync__op_new(OP_SYNC), "sync_engine_sync");
}

int sync_engine_create_backup(sync_engine *engine)
{
    int rc = enter(engine, "sync_engine_create_backup");
    if (rc != SYNC_OK)
        return rc;
    if (!engine->adapter) {
        sync__engine_unlock(engine);
        return SYNC_OK;
    }
    if (!engine->adapter->vt.backup) {
        sync__engine_unlock(engine);
        return sync__fail(SYNC_EUNSUPPORTED, "this engine's adapter cannot make backups");
    }
    return submit_new(engine, sync__op_new(OP_BACKUP), "sync_engine_create_backup");
}

int sync_engine_when_idle(sync_engine *engine, sync_done_cb done, void *userdata)
{
    if (!done)
        return sync__fail(SYNC_EINVAL, "sync_engine_when_idle: done is NULL");
    int rc = enter(engine, "sync_engine_when_idle");
    if (rc != SYNC_OK)
        return rc;
    sync__op *op = sync__op_new(OP_WHEN_IDLE);
    if (op) {
        op->done = done;
        op->done_userdata = userdata;
    }
    return submit_new(engine, op, "sync_engine_when_idle");
}

/* The message pipeline's user steps (validator, middleware, handler) and everything a step may
 * call on its sync_msg. Steps may finish later through sync_msg_complete(), from any thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "error.h"
#include "json_check.h"

int sync__msg_drop(sync_engine *engine, sync_conn *conn, int status, const char *context,
                   const char *detail)
{
    engine->stats.messages_dropped++;
    sync__engine_report(engine, status, context, conn, "%s", detail);
    if (engine->reply_errors && conn) {
        char message[1024];
        snprintf(message, sizeof message, "%s", sync_error_last());
        cJSON *reply = cJSON_CreateObject();
        char *text = NULL;
        if (reply && cJSON_AddStringToObject(reply, "type", "error") &&
            cJSON_AddStringToObject(reply, "error", message) &&
            cJSON_AddStringToObject(reply, "context", context))
            text = cJSON_PrintUnformatted(reply);
        cJSON_Delete(reply);
        sync__frame *frame =
            text ? sync__frame_new_text(SYNC__FRAME_TEXT, text, strlen(text)) : NULL;
        if (frame)
            sync__engine_send(engine, conn, frame, "message");
        sync__frame_unref(frame);
        cJSON_free(text);
        sync__fail(status, "%s", message);
    }
    return status;
}

static void msg_release(sync_msg *msg)
{
    cJSON_Delete(msg->message);
    cJSON_Delete(msg->working);
    cJSON_free(msg->message_json);
    cJSON_free(msg->state_json);
    free(msg->error);
    if (msg->handler_type != msg->handler_type_inline)
        free(msg->handler_type);
    free(msg);
}

void sync__msg_free(sync_msg *msg)
{
    if (!msg)
        return;
    if (!msg->timed_out) {
        msg_release(msg);
        return;
    }
    /* The step that timed out still holds `msg` and will complete it: keep it until then, with
     * the engine it locks. Its connection went with the op. */
    msg->orphaned = 1;
    msg->op = NULL;
    msg->conn = NULL;
    cJSON_Delete(msg->working);
    msg->working = NULL;
    atomic_fetch_add(&msg->engine->refs, 1);
}

static const char *message_type(const cJSON *message)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(message, "type");
    return cJSON_IsString(type) ? type->valuestring : NULL;
}

static handler_entry *find_handler(sync_engine *engine, const char *type)
{
    for (handler_entry *h = engine->handlers; h; h = h->next)
        if (strcmp(h->type, type) == 0)
            return h;
    return NULL;
}

/* Drops the message after a failed step, with the step's own reason when it gave one. */
static int step_failed(sync_engine *engine, sync_msg *msg, int status, int as_status,
                       const char *context)
{
    char detail[700];
    snprintf(detail, sizeof detail, "%s", msg->error ? msg->error : sync_strerror(status));
    return sync__msg_drop(engine, msg->conn, status == SYNC_ETIMEDOUT ? status : as_status, context,
                          detail);
}

/* Calls one user step, noticing a completion that arrives before the step returns. Inside
 * sync_msg_complete_next() the first step of the completing callback is not called but handed
 * out, pending, to the caller, which runs it in its own loop. */
static int call_step(sync_msg *msg, const step_entry *step)
{
    free(msg->error);
    msg->error = NULL;
    msg->phase = PHASE_IN_CALL;
    msg->early = 0;
    msg->called_cb = step->cb;
    sync_engine *engine = msg->engine;
    int rc;
    if (engine->handoff_cb && step->cb == engine->handoff_cb && !engine->handoff_msg) {
        engine->handoff_msg = msg;
        engine->handoff_userdata = step->userdata;
        rc = SYNC_PENDING;
    } else {
        rc = step->cb(msg, step->userdata);
    }
    if (rc == SYNC_PENDING) {
        if (!msg->early) {
            msg->phase = PHASE_AWAITING;
            if (engine->step_timeout_ms > 0) {
                int64_t deadline = sync_now_ms() + engine->step_timeout_ms;
                engine->step_deadline_ms = deadline;
                /* one wake-up per message would cost a busy server dearly; most need none */
                if (engine->ticker_deadline_ms < 0 || engine->ticker_deadline_ms > deadline)
                    sync__engine_timers_moved(engine);
            }
            return SYNC_PENDING;
        }
        rc = msg->early_status;
    }
    msg->phase = PHASE_IDLE;
    return rc;
}

/* The user step at the message's position, or NULL when there is none to call there. */
static const step_entry *current_step(sync_engine *engine, sync_msg *msg)
{
    if (msg->step == STEP_VALIDATOR)
        return engine->validator.cb ? &engine->validator : NULL;
    if (msg->step == STEP_MIDDLEWARE)
        return msg->mw_index < engine->middleware_count ? &engine->middleware[msg->mw_index] : NULL;
    handler_entry *handler = find_handler(engine, msg->handler_type);
    return handler ? &handler->step : NULL;
}

/* Checks the message is a typed object with a handler; remembers the type for the handler. */
static int check_type(sync_engine *engine, sync_msg *msg)
{
    const char *type = message_type(msg->message);
    if (!cJSON_IsObject(msg->message) || !type)
        return sync__msg_drop(engine, msg->conn, SYNC_EMESSAGE, "message",
                              "a message must be a JSON object with a string \"type\"");
    if (!find_handler(engine, type)) {
        char detail[300];
        snprintf(detail, sizeof detail, "no handler for message type \"%.200s\"", type);
        return sync__msg_drop(engine, msg->conn, SYNC_ENOHANDLER, "message", detail);
    }
    /* the usual short type costs no allocation of its own */
    size_t len = strlen(type);
    if (len < sizeof msg->handler_type_inline) {
        memcpy(msg->handler_type_inline, type, len + 1);
        msg->handler_type = msg->handler_type_inline;
    } else if (!(msg->handler_type = strdup(type))) {
        return sync__msg_drop(engine, msg->conn, SYNC_ENOMEM, "message", "out of memory");
    }
    return SYNC_OK;
}

/* A state that JSON cannot carry (clients would get null where the handler wrote Infinity; a
 * reload would differ from what ran) fails the handler like any error of its own. */
static int check_new_state(sync_msg *msg)
{
    int rc = sync__json_check_tree(msg->working);
    if (rc == SYNC_OK)
        return rc;
    char reason[600];
    snprintf(reason, sizeof reason, "the state the handler made cannot be sent as JSON: %s",
             sync_error_last());
    free(msg->error);
    msg->error = strdup(reason);
    return rc;
}

static int handler_failed(sync_engine *engine, sync_msg *msg, int rc)
{
    engine->stats.handler_errors++;
    char context[300];
    snprintf(context, sizeof context, "handler:%.200s", msg->handler_type);
    /* The working copy goes with the op: state and version stay as they were. */
    return step_failed(engine, msg, rc, rc < 0 ? rc : SYNC_EHANDLER, context);
}

int sync__msg_run(sync_engine *engine, sync__op *op)
{
    sync_msg *msg = op->msg;
    if (!msg) {
        if (!(msg = calloc(1, sizeof *msg)))
            return sync__msg_drop(engine, op->conn, SYNC_ENOMEM, "message", "out of memory");
        msg->engine = engine;
        msg->op = op;
        msg->conn = op->conn;
        msg->message = op->message;
        op->message = NULL;
        op->msg = msg;
    }
    while (msg->step != STEP_DONE) {
        if (msg->step == STEP_TYPE) {
            int rc = check_type(engine, msg);
            if (rc != SYNC_OK)
                return rc;
            msg->step = STEP_HANDLER;
            continue;
        }
        int rc;
        if (msg->resumed) {
            /* A completion belongs to the step that was running, even if it was unregistered. */
            msg->resumed = 0;
            rc = msg->resume_status;
        } else {
            const step_entry *step = current_step(engine, msg);
            if (!step && msg->step == STEP_HANDLER)
                return sync__msg_drop(engine, msg->conn, SYNC_ENOHANDLER, "message",
                                      "the handler was removed");
            if (!step) {
                msg->step = msg->step == STEP_VALIDATOR ? STEP_MIDDLEWARE : STEP_TYPE;
                continue;
            }
            if (msg->step == STEP_VALIDATOR)
                SYNC__DEBUG(engine, "validator");
            else if (msg->step == STEP_MIDDLEWARE)
                SYNC__DEBUG(engine, "middleware %zu", msg->mw_index);
            else
                SYNC__DEBUG(engine, "handler \"%s\"", msg->handler_type);
            rc = call_step(msg, step);
            if (rc == SYNC_PENDING)
                return rc;
        }
        if (engine->disposed)
            return SYNC_ECLOSED;
        switch (msg->step) {
        case STEP_VALIDATOR:
            if (rc != SYNC_OK)
                return step_failed(engine, msg, rc, SYNC_EREJECTED, "validator");
            msg->step = STEP_MIDDLEWARE;
            break;
        case STEP_MIDDLEWARE:
            if (rc != SYNC_OK)
                return step_failed(engine, msg, rc, SYNC_EREJECTED, "middleware");
            msg->mw_index++;
            break;
        default:
            if (rc == SYNC_OK && msg->working && !msg->working_checked)
                rc = check_new_state(msg);
            if (rc != SYNC_OK)
                return handler_failed(engine, msg, rc);
            engine->stats.messages_applied++;
            msg->step = STEP_DONE;
            break;
        }
    }
    return SYNC_OK;
}

/* ---- completion ----------------------------------------------------------------------------- */

int sync_msg_complete(sync_msg *msg, int status)
{
    return sync_msg_complete_next(msg, status, NULL, NULL);
}

int sync_msg_complete_next(sync_msg *msg, int status, sync_msg **next, void **next_userdata)
{
    if (next)
        *next = NULL;
    if (next_userdata)
        *next_userdata = NULL;
    if (!msg)
        return sync__fail(SYNC_EINVAL, "sync_msg_complete: msg is NULL");
    if (!next != !next_userdata)
        return sync__fail(SYNC_EINVAL,
                          "sync_msg_complete_next: next and next_userdata go together");
    sync_engine *engine = msg->engine;
    sync__engine_lock(engine);
    if (msg->orphaned) {
        msg_release(msg);
        sync__engine_unref_later(engine);
        sync__engine_unlock(engine);
        return sync__fail(SYNC_ETIMEDOUT,
                          "sync_msg_complete: the step had timed out (step_timeout_ms) and its "
                          "message was dropped");
    }
    if (status == SYNC_PENDING)
        status = SYNC_EHANDLER;
    if (msg->phase == PHASE_IN_CALL && !msg->early) {
        msg->early = 1;
        msg->early_status = status;
    } else if (msg->phase == PHASE_AWAITING) {
        /* The callback the completed step was called with (even if it was unregistered or
         * replaced meanwhile). Saved and restored: a hook run by this completion may complete
         * another message the same way. */
        sync_step_cb saved_cb = engine->handoff_cb;
        sync_msg *saved_msg = engine->handoff_msg;
        void *saved_userdata = engine->handoff_userdata;
        engine->handoff_cb = next ? msg->called_cb : NULL;
        engine->handoff_msg = NULL;
        engine->handoff_userdata = NULL;
        engine->step_deadline_ms = -1;
        msg->phase = PHASE_IDLE;
        msg->resumed = 1;
        msg->resume_status = status;
        sync__op_continue(engine);
        if (next && engine->handoff_msg) {
            *next = engine->handoff_msg;
            *next_userdata = engine->handoff_userdata;
        }
        engine->handoff_cb = saved_cb;
        engine->handoff_msg = saved_msg;
        engine->handoff_userdata = saved_userdata;
    } else {
        sync__engine_unlock(engine);
        return sync__fail(SYNC_EINVAL, "sync_msg_complete: the message is not pending");
    }
    sync__engine_unlock(engine);
    return SYNC_OK;
}

void sync__msg_time_out(sync_engine *engine)
{
    engine->step_deadline_ms = -1;
    sync_msg *msg = engine->cur ? engine->cur->msg : NULL;
    if (!msg || msg->phase != PHASE_AWAITING)
        return;
    char what[300];
    if (msg->step == STEP_VALIDATOR)
        snprintf(what, sizeof what, "the validator");
    else if (msg->step == STEP_MIDDLEWARE)
        snprintf(what, sizeof what, "middleware %zu", msg->mw_index);
    else
        snprintf(what, sizeof what, "the handler for \"%.200s\"", msg->handler_type);
    char reason[400];
    snprintf(reason, sizeof reason, "%s did not finish within step_timeout_ms (%lld ms)", what,
             (long long)engine->step_timeout_ms);
    free(msg->error);
    msg->error = strdup(reason);
    msg->timed_out = 1;
    engine->stats.steps_timed_out++;
    msg->phase = PHASE_IDLE;
    msg->resumed = 1;
    msg->resume_status = SYNC_ETIMEDOUT;
    sync__op_continue(engine);
}

/* Calls through a message whose step timed out change nothing and answer nobody. */
static int refuse_if_timed_out(const sync_msg *msg, const char *what)
{
    if (!msg->timed_out)
        return SYNC_OK;
    return sync__fail(SYNC_ETIMEDOUT, "%s: the step timed out and its message was dropped", what);
}

/* ---- what a step may call ------------------------------------------------------------------- */

sync_conn *sync_msg_conn(const sync_msg *msg)
{
    return msg ? msg->conn : NULL;
}

sync_engine *sync_msg_engine(const sync_msg *msg)
{
    return msg ? msg->engine : NULL;
}

const cJSON *sync_msg_message(const sync_msg *msg)
{
    return msg ? msg->message : NULL;
}

const char *sync_msg_type(const sync_msg *msg)
{
    return msg ? message_type(msg->message) : NULL;
}

const char *sync_msg_message_json(sync_msg *msg)
{
    if (!msg)
        return NULL;
    sync__engine_lock(msg->engine);
    if (!msg->message_json)
        msg->message_json = cJSON_PrintUnformatted(msg->message);
    const char *text = msg->message_json;
    sync__engine_unlock(msg->engine);
    return text;
}

static int msg_replace(sync_msg *msg, cJSON *message, int checked)
{
    if (!msg || !message) {
        cJSON_Delete(message);
        return sync__fail(SYNC_EINVAL, "sync_msg_replace: msg and message are required");
    }
    /* the steps after it must read what every other parser would read from its text */
    if (!checked && message != msg->message && sync__json_check_tree(message) != SYNC_OK) {
        char why[600];
        snprintf(why, sizeof why, "sync_msg_replace: %s", sync_error_last());
        cJSON_Delete(message);
        return sync__fail(SYNC_EINVAL, "%s", why);
    }
    sync__engine_lock(msg->engine);
    int rc = refuse_if_timed_out(msg, "sync_msg_replace");
    if (rc != SYNC_OK) {
        sync__engine_unlock(msg->engine);
        cJSON_Delete(message);
        return rc;
    }
    if (message != msg->message) {
        cJSON_Delete(msg->message);
        msg->message = message;
        cJSON_free(msg->message_json);
        msg->message_json = NULL;
    }
    sync__engine_unlock(msg->engine);
    return SYNC_OK;
}

int sync_msg_replace(sync_msg *msg, cJSON *message)
{
    return msg_replace(msg, message, 0);
}

int sync_msg_replace_json(sync_msg *msg, const char *json)
{
    if (!msg || !json)
        return sync__fail(SYNC_EINVAL, "sync_msg_replace_json: msg and json are required");
    cJSON *message = NULL;
    int rc = sync__json_parse(json, strlen(json), 0, &message);
    if (rc != SYNC_OK)
        return rc;
    return msg_replace(msg, message, 1);
}

const cJSON *sync_msg_state(sync_msg *msg)
{
    if (!msg)
        return NULL;
    sync__engine_lock(msg->engine);
    const cJSON *state = msg->working ? msg->working : msg->engine->state;
    sync__engine_unlock(msg->engine);
    return state;
}

const char *sync_msg_state_json(sync_msg *msg)
{
    if (!msg)
        return NULL;
    sync_engine *engine = msg->engine;
    sync__engine_lock(engine);
    const char *text;
    if (msg->working) {
        cJSON_free(msg->state_json);
        msg->state_json = cJSON_PrintUnformatted(msg->working);
        text = msg->state_json;
    } else {
        text = sync__engine_state_text(engine, NULL);
    }
    sync__engine_unlock(engine);
    return text;
}

cJSON *sync_msg_state_mut(sync_msg *msg)
{
    if (!msg)
        return NULL;
    sync__engine_lock(msg->engine);
    if (refuse_if_timed_out(msg, "sync_msg_state_mut") != SYNC_OK) {
        sync__engine_unlock(msg->engine);
        return NULL;
    }
    if (msg->step != STEP_HANDLER) {
        sync__engine_unlock(msg->engine);
        sync__fail(SYNC_ESTATE, "sync_msg_state_mut: only a handler may change the state");
        return NULL;
    }
    if (!msg->working && !(msg->working = cJSON_Duplicate(msg->engine->state, 1)))
        sync__fail(SYNC_ENOMEM, "out of memory copying the state");
    msg->working_checked = 0; /* the caller may change it from now on */
    cJSON *state = msg->working;
    sync__engine_unlock(msg->engine);
    return state;
}

static int msg_set_state(sync_msg *msg, cJSON *state, int checked)
{
    if (!msg || !state) {
        cJSON_Delete(state);
        return sync__fail(SYNC_EINVAL, "sync_msg_set_state: msg and state are required");
    }
    sync__engine_lock(msg->engine);
    int rc = refuse_if_timed_out(msg, "sync_msg_set_state");
    if (rc == SYNC_OK && msg->step != STEP_HANDLER)
        rc = sync__fail(SYNC_ESTATE, "sync_msg_set_state: only a handler may change the state");
    if (rc != SYNC_OK) {
        sync__engine_unlock(msg->engine);
        cJSON_Delete(state);
        return rc;
    }
    if (state != msg->working) {
        cJSON_Delete(msg->working);
        msg->working = state;
    }
    msg->working_checked = checked;
    sync__engine_unlock(msg->engine);
    return SYNC_OK;
}

int sync_msg_set_state(sync_msg *msg, cJSON *state)
{
    return msg_set_state(msg, state, 0);
}

int sync_msg_set_state_json(sync_msg *msg, const char *json)
{
    if (!msg || !json)
        return sync__fail(SYNC_EINVAL, "sync_msg_set_state_json: msg and json are required");
    cJSON *state = NULL;
    int rc = sync__json_parse(json, strlen(json), 0, &state);
    if (rc != SYNC_OK)
        return rc;
    return msg_set_state(msg, state, 1);
}

int sync_msg_reply(sync_msg *msg, const char *text, size_t len)
{
    if (!msg || (!text && len))
        return sync__fail(SYNC_EINVAL, "sync_msg_reply: msg and text are required");
    /* copied before the engine is locked: other threads wait on that lock */
    sync__frame *frame = sync__frame_new_text(SYNC__FRAME_TEXT, text ? text : "", len);
    if (!frame)
        return sync__fail(SYNC_ENOMEM, "out of memory copying a %zu-byte reply", len);
    sync__engine_lock(msg->engine);
    int rc = refuse_if_timed_out(msg, "sync_msg_reply");
    if (rc == SYNC_OK && msg->conn)
        rc = sync__engine_send(msg->engine, msg->conn, frame, "reply");
    sync__engine_unlock(msg->engine);
    sync__frame_unref(frame);
    return rc;
}

int sync_msg_set_error(sync_msg *msg, const char *reason)
{
    if (!msg)
        return sync__fail(SYNC_EINVAL, "sync_msg_set_error: msg is NULL");
    char *copy = reason ? strdup(reason) : NULL;
    if (reason && !copy)
        return sync__fail(SYNC_ENOMEM, "out of memory copying an error reason");
    sync__engine_lock(msg->engine);
    free(msg->error);
    msg->error = copy;
    sync__engine_unlock(msg->engine);
    return SYNC_OK;
}

/*
 * One WebSocket connection of the built-in server: the engine's pull transport (transport.h),
 * the bounded queue of explicit frames, message reassembly and limits on receive, and the write
 * path that drains the queue and then pulls the latest shared state frame.
 */
#include "server_internal.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "engine/json_check.h"
#include "libsync/rooms.h"

_Static_assert(_Alignof(server_conn) <= SYNC__CONN_OBJECT_ALIGN,
               "the connection lives in its handle's block");
_Static_assert(sizeof(server_conn) % _Alignof(server_rate) == 0,
               "the rate bucket follows the connection");

static const char rate_error[] =
    "{\"type\":\"error\",\"error\":\"rate limit exceeded: message dropped\",\"context\":"
    "\"rateLimit\"}";

/* ---- the frame queue (under server->lock) ------------------------------------------------ */

/* The out part with room for `cap` frames, what it held kept in order; false: out of memory. */
static bool out_resize(server_conn *c, uint32_t cap)
{
    server_out *old = c->out;
    server_out *out = server_conn_malloc(sizeof *out + (size_t)cap * sizeof out->ring[0]);
    if (!out)
        return false;
    memset(out, 0, sizeof *out);
    out->cap = cap;
    if (old) {
        out->close_reason = old->close_reason;
        out->queued_bytes = old->queued_bytes;
        out->count = old->count;
        for (uint32_t i = 0; i < old->count; i++)
            out->ring[i] = old->ring[(old->head + i) % old->cap];
        server_conn_free(old);
    }
    c->out = out;
    return true;
}

/* The out part goes back once nothing in it is needed, so idle connections stay small. */
static void out_trim(server_conn *c)
{
    if (c->out && !c->out->count && !c->out->close_reason) {
        server_conn_free(c->out);
        c->out = NULL;
    }
}

static size_t queued_count(const server_conn *c)
{
    return c->out ? c->out->count : 0;
}

static size_t queued_bytes(const server_conn *c)
{
    return c->out ? c->out->queued_bytes : 0;
}

static const char *close_reason_of(const server_conn *c)
{
    return c->out ? c->out->close_reason : NULL;
}

/* The ring is allocated while frames wait (an idle connection has none) */
static bool queue_push(server_conn *c, sync__frame *frame)
{
    if (queued_count(c) == (c->out ? c->out->cap : 0) &&
        !out_resize(c, c->out && c->out->cap ? c->out->cap * 2 : 2))
        return false;
    server_out *out = c->out;
    out->ring[(out->head + out->count) % out->cap] = frame;
    out->count++;
    out->queued_bytes += frame->len;
    return true;
}

static sync__frame *queue_pop(server_conn *c)
{
    server_out *out = c->out;
    if (!out || !out->count)
        return NULL;
    sync__frame *frame = out->ring[out->head];
    out->head = (out->head + 1) % out->cap;
    out->count--;
    out->queued_bytes -= frame->len;
    out_trim(c);
    return frame;
}

/* Keeps the reason of the close being requested (`reason` is the connection's now); out of
 * memory, the close goes without it. */
static void set_close_reason_locked(server_conn *c, char *reason)
{
    if (!reason)
        return;
    if (!c->out && !out_resize(c, 0)) {
        free(reason);
        return;
    }
    c->out->close_reason = reason;
}

/* ---- waking the service thread ----------------------------------------------------------- */

void server_conn_wake_locked(server_conn *c)
{
    if (!c->wsi)
        return;
    if (c->close_pending && !c->close_armed) {
        c->close_armed = true;
        /* a peer that never lets us write the close frame is dropped after this */
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, 2);
    }
    lws_callback_on_writable(c->wsi);
}

/* Called with server->lock held; returns whether the caller must wake the service thread. */
static bool request_write_locked(server_conn *c)
{
    sync_server *s = c->server;
    if (server_on_service_thread(s)) {
        server_conn_wake_locked(c);
        return false;
    }
    if (c->in_wake)
        return false;
    bool was_empty = s->wake_head == NULL;
    c->in_wake = true;
    c->wake_prev = NULL;
    c->wake_next = s->wake_head;
    if (s->wake_head)
        s->wake_head->wake_prev = c;
    s->wake_head = c;
    return was_empty;
}

static void unlink_wake_locked(server_conn *c)
{
    if (!c->in_wake)
        return;
    if (c->wake_prev)
        c->wake_prev->wake_next = c->wake_next;
    else
        c->server->wake_head = c->wake_next;
    if (c->wake_next)
        c->wake_next->wake_prev = c->wake_prev;
    c->in_wake = false;
    c->wake_next = c->wake_prev = NULL;
}

static bool close_locked(server_conn *c, int code)
{
    if (!c->wsi || c->close_pending)
        return false;
    c->close_pending = true;
    c->close_code = (uint16_t)code;
    return request_write_locked(c);
}

/* ---- transport ops (any thread, engine lock held) ---------------------------------------- */

/* Engine lock held: a v2 connection's first frame is the v2 initial_state, or the patch that
 * resumes it (a new reference, or NULL on ENOMEM). */
static sync__frame *v2_join_frame(server_conn *c)
{
    sync_server *s = c->server;
    int resumed = 0;
    sync__frame *frame = sync__feed_join_frame_locked(
        c->eng->engine, c->v2->since, c->v2->epoch[0] ? c->v2->epoch : NULL, &resumed);
    if (frame && c->v2->since != -1)
        atomic_fetch_add(resumed ? &s->resumes_patch : &s->resumes_state, 1);
    return frame;
}

static int op_send_frame(void *userdata, sync__frame *frame)
{
    server_conn *c = userdata;
    sync_server *s = c->server;
    int rc = SYNC_OK;
    bool wake = false;
    sync__frame *own = NULL;
    if (c->v2 && frame->kind == SYNC__FRAME_INITIAL_STATE) {
        own = v2_join_frame(c);
        if (!own)
            return sync__fail(SYNC_ENOMEM, "out of memory building the first v2 frame");
        frame = own;
    }
    pthread_mutex_lock(&s->lock);
    if (!c->wsi || c->close_pending) {
        rc = SYNC_ECLOSED;
    } else if (queued_bytes(c) + frame->len > s->max_queued_bytes && queued_count(c)) {
        s->closed_slow++;
        wake = close_locked(c, LWS_CLOSE_STATUS_POLICY_VIOLATION);
        rc = SYNC_ELIMIT;
    } else if (!queue_push(c, frame)) {
        rc = SYNC_ENOMEM;
    } else {
        sync__frame_ref(frame);
        wake = request_write_locked(c);
    }
    pthread_mutex_unlock(&s->lock);
    sync__frame_unref(own);
    if (wake)
        server_wake(s);
    if (rc == SYNC_ELIMIT)
        return sync__fail(rc, "connection closed: over %zu bytes of frames queued",
                          s->max_queued_bytes);
    if (rc == SYNC_ENOMEM)
        return sync__fail(rc, "out of memory queueing a frame");
    if (rc == SYNC_ECLOSED)
        return sync__fail(rc, "connection is closed");
    return SYNC_OK;
}

/* A copy of `reason` that fits a close frame (123 bytes, cut at a character boundary), or NULL
 * when there is none or it is not UTF-8 (a peer must fail a close frame whose reason is not). */
static char *close_reason_copy(const char *reason)
{
    if (!reason || !*reason)
        return NULL;
    size_t len = strnlen(reason, 124);
    if (len > 123) {
        len = 123;
        while (len > 0 && ((unsigned char)reason[len] & 0xC0u) == 0x80u)
            len--;
    }
    if (sync__json_check_utf8(reason, len) != SYNC_OK)
        return NULL;
    return strndup(reason, len);
}

static void op_close(void *userdata, int code, const char *reason)
{
    server_conn *c = userdata;
    sync_server *s = c->server;
    /* copied before the lock: the caller's reason may not outlive this call */
    char *copy = close_reason_copy(reason);
    pthread_mutex_lock(&s->lock);
    if (c->wsi && !c->close_pending) {
        set_close_reason_locked(c, copy); /* the first close decides, like its code */
        copy = NULL;
    }
    bool wake = close_locked(c, code > 0 ? code : LWS_CLOSE_STATUS_NORMAL);
    pthread_mutex_unlock(&s->lock);
    free(copy);
    if (wake)
        server_wake(s);
}

/* A message that arrived before a deferred auth decision. */
struct server_held_msg {
    struct server_held_msg *next;
    size_t len;
    char text[];
};

static void free_held(server_conn *c)
{
    server_auth_wait *w = c->auth;
    if (!w)
        return;
    /* held_bytes is 0 by the time op_free may run on another thread */
    if (w->held_bytes)
        c->server->buffered_bytes -= w->held_bytes;
    while (w->held_head) {
        struct server_held_msg *next = w->held_head->next;
        free(w->held_head);
        w->held_head = next;
    }
    w->held_tail = NULL;
    w->held_bytes = 0;
}

/* What the connection holds; the connection itself goes with its handle's block. */
static void op_free(void *userdata)
{
    server_conn *c = userdata;
    sync__frame *frame;
    while ((frame = queue_pop(c)))
        sync__frame_unref(frame);
    if (c->out) { /* what is left in it is a close reason */
        free(c->out->close_reason);
        server_conn_free(c->out);
        c->out = NULL;
    }
    server_conn_free(c->rx);
    server_conn_free(c->v2);
    if (c->auth) {
        free(c->auth->identity);
        free_held(c);
        free(c->auth);
    }
}

static const sync__transport_ops conn_ops = {
    .send_frame = op_send_frame,
    .close = op_close,
    .free_userdata = op_free,
    .calloc_conn = server_conn_calloc,
    .free_conn = server_conn_free,
};

/* ---- lifecycle (service thread) ---------------------------------------------------------- */

/* The reassembly buffer goes back (service thread), and its bytes to the server-wide budget. */
static void rx_release(server_conn *c)
{
    if (!c->rx)
        return;
    c->server->buffered_bytes -= c->rx->cap;
    server_conn_free(c->rx);
    c->rx = NULL;
}

server_conn *server_conn_new(sync_server *server, server_engine *eng, char *identity)
{
    /* The engine's handle is made now, with the connection in its block, so that it holds the
     * identity until the connection joins (at ESTABLISHED, or once a deferred auth accepted). */
    sync_conn *conn = NULL;
    bool rated = server->rate_per_sec > 0;
    size_t size = sizeof(server_conn) + (rated ? sizeof(server_rate) : 0);
    if (sync__conn_new_transport_object(&conn, &conn_ops, size) != SYNC_OK ||
        (identity && sync_conn_set_identity(conn, identity) != SYNC_OK)) {
        server_log(server, SYNC_LOG_ERROR, "cannot create a connection: %s", sync_error_last());
        sync_conn_free(conn); /* NULL, or frees the connection with it */
        return NULL;          /* the identity stays the caller's */
    }
    free(identity);
    server_conn *c = sync__conn_object(conn);
    c->kind = SERVER_WSI_WS;
    c->server = server;
    c->eng = eng;
    c->echo = eng == NULL;
    if (rated) {
        server_rate *r = (server_rate *)(c + 1);
        r->tokens = (float)server->rate_burst;
        r->tokens_ms = sync_now_ms();
    }
    server->ws_open++;
    return c;
}

/* A decimal version, 0 to INT64_MAX, nothing else. */
static int64_t parse_version(const char *text)
{
    if (!*text || strlen(text) > 18)
        return -1;
    int64_t v = 0;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    return v;
}

void server_conn_take_resume(server_conn *c, struct lws *wsi)
{
    char since[40], epoch[SYNC__EPOCH_MAX + 16];
    /* lws 4.1 copies "name=value" into the buffer and returns where the value starts */
    const char *s = lws_get_urlarg_by_name(wsi, "since=", since, (int)sizeof since);
    if (!s)
        return;
    server_v2 *v2 = server_conn_calloc(sizeof *v2);
    if (!v2)
        return;
    int64_t v = parse_version(s);
    v2->since = v < 0 ? -2 : v; /* malformed: still a resume asked for, served by the state */
    v2->last_version = -1;
    const char *e = lws_get_urlarg_by_name(wsi, "epoch=", epoch, (int)sizeof epoch);
    if (e && strlen(e) <= SYNC__EPOCH_MAX)
        strcpy(v2->epoch, e);
    c->v2 = v2;
}

/* The deferred request (if any) stops pointing at a connection that goes away. */
static void stop_waiting_for_auth(server_conn *c)
{
    server_auth_forget(c);
    if (c->auth)
        lws_sul_cancel(&c->auth->timer);
}

void server_conn_abandon(server_conn *c)
{
    stop_waiting_for_auth(c);
    server_rooms_conn_gone(c);
    c->server->ws_open--;
    sync_conn_free(server_conn_handle(c)); /* the last reference: frees c */
}

/* The connection joins its engine: handle_open (which queues the initial state). */
static void join_engine(server_conn *c)
{
    sync_server *s = c->server;
    s->accepted++;
    if (c->is_room)
        server_rooms_conn_joined(c);
    c->joined = true;
    int rc = sync_engine_handle_open(c->eng->engine, server_conn_handle(c));
    if (rc < 0)
        server_log(s, SYNC_LOG_WARN, "open on %s failed: %s", c->eng->path, sync_error_last());
}

static void close_soon(server_conn *c, int code);

static void auth_timed_out(lws_sorted_usec_list_t *sul)
{
    server_auth_wait *w = lws_container_of(sul, server_auth_wait, timer);
    close_soon(w->conn, SERVER_CLOSE_AUTH_BASE + 408);
}

int server_conn_established(server_conn *c, struct lws *wsi)
{
    sync_server *s = c->server;
    /* lws selected the subprotocol from the client's offer: v2 frames, or v1 byte for byte */
    const struct lws_protocols *protocol = lws_get_protocol(wsi);
    bool v2 = !c->echo && protocol && strcmp(protocol->name, SERVER_PROTOCOL_V2) == 0;
    if (v2 && !c->v2) {
        c->v2 = server_conn_calloc(sizeof *c->v2);
        if (!c->v2)
            return -1;
        c->v2->since = -1;
        c->v2->last_version = -1;
    } else if (!v2) {
        server_conn_free(c->v2);
        c->v2 = NULL;
    }
    pthread_mutex_lock(&s->lock);
    c->wsi = wsi;
    bool decided = c->auth && c->auth->decision != SERVER_AUTH_UNDECIDED;
    pthread_mutex_unlock(&s->lock);
    if (c->echo)
        return 0;
    if (!c->auth_waiting) {
        join_engine(c);
        return 0;
    }
    lws_sul_schedule(lws_get_context(wsi), 0, &c->auth->timer, auth_timed_out,
                     (lws_usec_t)s->auth_timeout_ms * LWS_US_PER_MS);
    /* a room may have become ready (or failed) before the connection existed */
    if (decided || c->room_wait != 1)
        lws_callback_on_writable(wsi);
    return 0;
}

void server_conn_auth_decided_locked(server_conn *c, int status, char *identity)
{
    sync_server *s = c->server;
    pthread_mutex_lock(&s->lock);
    c->auth->decision = status;
    free(c->auth->identity);
    c->auth->identity = identity;
    bool wake = request_write_locked(c);
    pthread_mutex_unlock(&s->lock);
    if (wake)
        server_wake(s);
}

void server_conn_closed(server_conn *c)
{
    sync_server *s = c->server;
    stop_waiting_for_auth(c);
    free_held(c);
    server_broadcast_leave(c);
    pthread_mutex_lock(&s->lock);
    unlink_wake_locked(c);
    c->wsi = NULL;
    pthread_mutex_unlock(&s->lock);
    s->ws_open--;
    rx_release(c);
    sync_conn *conn = server_conn_handle(c);
    if (c->joined)
        sync_engine_handle_close(c->eng->engine, conn);
    server_rooms_conn_gone(c); /* after: the room's engine lives while a client is in it */
    sync_conn_free(conn);      /* may free c with the last reference */
}

/* ---- receive ----------------------------------------------------------------------------- */

static int close_now(struct lws *wsi, enum lws_close_status code, const char *reason)
{
    lws_close_reason(wsi, code, (unsigned char *)(uintptr_t)reason, strlen(reason));
    return -1;
}

/* Token bucket: 0 to accept, 1 to drop with an error frame, -1 to close (a sustained flood:
 * the debt reached a whole burst). */
static int rate_check(server_conn *c)
{
    sync_server *s = c->server;
    if (s->rate_per_sec <= 0)
        return 0;
    server_rate *r = (server_rate *)(c + 1);
    int64_t now = sync_now_ms();
    double tokens = r->tokens + (double)(now - r->tokens_ms) * s->rate_per_sec / 1000.0;
    r->tokens_ms = now;
    if (tokens > s->rate_burst)
        tokens = s->rate_burst;
    tokens -= 1.0;
    r->tokens = (float)tokens;
    if (tokens >= 0)
        return 0;
    return tokens <= -s->rate_burst ? -1 : 1;
}

/* Closes after what is already queued has gone, and reads (and drops) whatever the peer still
 * sends meanwhile, so the close frame is not lost to a reset for unread input. */
static void close_soon_because(server_conn *c, int code, const char *reason)
{
    char *copy = close_reason_copy(reason);
    pthread_mutex_lock(&c->server->lock);
    if (!c->close_pending && c->wsi) {
        set_close_reason_locked(c, copy);
        copy = NULL;
    }
    close_locked(c, code);
    pthread_mutex_unlock(&c->server->lock);
    free(copy);
}

static void close_soon(server_conn *c, int code)
{
    close_soon_because(c, code, NULL);
}

/* max_buffered_bytes is spent: this connection, whose next piece would go over it, is closed
 * (1013: the server is busy, not the client wrong) and what it had buffered is given back. */
static void buffer_budget_spent(server_conn *c)
{
    c->server->closed_buffer_budget++;
    rx_release(c);
    free_held(c);
    close_soon_because(c, 1013, "server busy: message buffer budget spent");
}

/* Keeps a message for after the auth decision; over max_message_bytes in all the client is
 * closed (1008): an unauthenticated client must not make the server hold much. */
static void hold(server_conn *c, const char *text, size_t len)
{
    sync_server *s = c->server;
    server_auth_wait *w = c->auth;
    struct server_held_msg *m = NULL;
    if (s->buffered_bytes + len > s->max_buffered_bytes) {
        buffer_budget_spent(c);
        return;
    }
    if (w->held_bytes + len <= s->max_message_bytes)
        m = malloc(sizeof *m + len);
    if (!m) {
        free_held(c);
        close_soon(c, LWS_CLOSE_STATUS_POLICY_VIOLATION);
        return;
    }
    s->buffered_bytes += len;
    m->next = NULL;
    m->len = len;
    memcpy(m->text, text, len);
    if (w->held_tail)
        w->held_tail->next = m;
    else
        w->held_head = m;
    w->held_tail = m;
    w->held_bytes += len;
}

/* server_mount_echo(): the message goes back through the queue like an engine's reply. */
static void echo_back(server_conn *c, const char *data, size_t len, bool binary)
{
    sync__frame *frame =
        sync__frame_new_text(binary ? SYNC__FRAME_BINARY : SYNC__FRAME_TEXT, data, len);
    if (!frame) {
        close_soon(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION);
        return;
    }
    op_send_frame(c, frame); /* over max_queued_bytes it closes the connection itself */
    sync__frame_unref(frame);
}

static void deliver(server_conn *c, const char *text, size_t len, bool binary)
{
    sync_server *s = c->server;
    if (c->auth_waiting) {
        hold(c, text, len);
        return;
    }
    s->messages_in++;
    int verdict = rate_check(c);
    if (verdict) {
        s->rate_limited++;
        if (verdict < 0)
            close_soon(c, LWS_CLOSE_STATUS_POLICY_VIOLATION);
        else
            sync_conn_send(server_conn_handle(c), rate_error, sizeof rate_error - 1);
        return;
    }
    if (c->echo)
        echo_back(c, text, len, binary);
    else
        /* receive() checked its UTF-8 (binary frames never get here without echo) */
        sync__engine_handle_valid_text(c->eng->engine, server_conn_handle(c), text, len);
}

int server_conn_receive(server_conn *c, const void *in, size_t len)
{
    sync_server *s = c->server;
    struct lws *wsi = c->wsi;
    s->bytes_in += len;
    pthread_mutex_lock(&s->lock);
    bool closing = c->close_pending;
    pthread_mutex_unlock(&s->lock);
    if (closing)
        return 0;
    bool binary = lws_frame_is_binary(wsi);
    if (binary && !c->echo)
        return close_now(wsi, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE,
                         "binary frames are not supported");
    size_t remaining = lws_remaining_packet_payload(wsi);
    bool complete = lws_is_final_fragment(wsi) && remaining == 0;
    size_t rx_len = c->rx ? c->rx->len : 0;
    size_t rx_cap = c->rx ? c->rx->cap : 0;
    if (rx_len + len + (complete ? 0 : remaining) > s->max_message_bytes) {
        s->closed_too_big++;
        rx_release(c);
        close_soon(c, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE);
        return 0;
    }
    /* checked as it arrives, so a client cannot make the server buffer a message that is
     * already known to be invalid */
    uint32_t utf8 = c->rx ? c->rx->utf8_state : 0; /* a text in pieces is in c->rx */
    if (!binary && (sync__utf8_accept(&utf8, in, len) != len || (complete && utf8))) {
        if (c->rx)
            c->rx->utf8_state = 0;
        return close_now(wsi, LWS_CLOSE_STATUS_INVALID_PAYLOAD, "invalid UTF-8");
    }
    if (complete && rx_len == 0) {
        deliver(c, in, len, binary);
        return 0;
    }
    if (rx_len + len > rx_cap) {
        size_t cap = rx_cap ? rx_cap : 1024;
        while (cap < rx_len + len + remaining && cap < s->max_message_bytes)
            cap *= 2;
        if (cap < rx_len + len)
            cap = rx_len + len;
        if (s->buffered_bytes + (cap - rx_cap) > s->max_buffered_bytes) {
            buffer_budget_spent(c);
            return 0;
        }
        server_rx *rx = server_conn_realloc(c->rx, sizeof *rx + cap);
        if (!rx)
            return close_now(wsi, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "out of memory");
        s->buffered_bytes += cap - rx_cap;
        if (!rx_cap)
            rx->utf8_state = 0;
        rx->len = rx_len;
        rx->cap = cap;
        c->rx = rx;
    }
    if (len) { /* an empty fragment may come with no buffer at all (memcpy from NULL is UB) */
        memcpy(c->rx->data + rx_len, in, len);
        c->rx->len += len;
        c->rx->utf8_state = utf8;
    }
    if (!complete)
        return 0;
    /* rx_len + len > 0 here (a whole message in one piece went out above), so c->rx exists */
    deliver(c, c->rx->data, c->rx->len, binary);
    rx_release(c);
    return 0;
}

/* ---- write ------------------------------------------------------------------------------- */

static bool is_state_frame(const sync__frame *frame)
{
    return frame->kind == SYNC__FRAME_INITIAL_STATE || frame->kind == SYNC__FRAME_STATE_UPDATE ||
           frame->kind == SYNC__FRAME_PATCH;
}

/* The messages held during a deferred auth, in the order they came, once it accepted. */
static void deliver_held(server_conn *c)
{
    server_auth_wait *w = c->auth;
    struct server_held_msg *m = w->held_head;
    w->held_head = w->held_tail = NULL;
    c->server->buffered_bytes -= w->held_bytes;
    w->held_bytes = 0;
    while (m) {
        struct server_held_msg *next = m->next;
        deliver(c, m->text, m->len, false);
        free(m);
        m = next;
    }
}

/* A writable connection that waits for a deferred auth decision: applies it once it came.
 * Returns 1 when it was accepted just now (go on: its initial state is queued), 0 while it waits,
 * -1 to close (lws sends the close frame). */
static int serve_auth_wait(server_conn *c)
{
    sync_server *s = c->server;
    /* a room connection also waits for its room (server_rooms.c): 1 while it is created, then 0
     * or the close code of a room that failed or was deleted */
    bool room_pending = c->room_wait == 1;
    int room_refused = c->room_wait > 1 ? c->room_wait : 0;
    pthread_mutex_lock(&s->lock);
    int close_code = c->close_pending ? c->close_code : 0;
    const char *close_reason = close_reason_of(c);
    int status = c->auth->decision;
    char *identity = NULL;
    if (!close_code && status == 0 && !room_pending && !room_refused) {
        identity = c->auth->identity;
        c->auth->identity = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    if (close_code)
        return close_now(c->wsi, (enum lws_close_status)close_code,
                         close_reason ? close_reason : "");
    if (room_refused && status != SERVER_AUTH_UNDECIDED && status != 0)
        room_refused = 0; /* the auth's refusal is the one the client hears */
    if (room_refused) {
        lws_sul_cancel(&c->auth->timer);
        c->auth_waiting = false;
        free_held(c);
        s->refused++;
        return close_now(c->wsi, (enum lws_close_status)room_refused,
                         room_refused == SYNC_CLOSE_ROOM_DELETED ? "room deleted"
                                                                 : "room unavailable");
    }
    if (status == SERVER_AUTH_UNDECIDED || (status == 0 && room_pending))
        return s->stopping ? close_now(c->wsi, LWS_CLOSE_STATUS_GOINGAWAY, "server stopping") : 0;
    lws_sul_cancel(&c->auth->timer);
    c->auth_waiting = false;
    if (status != 0) {
        free(identity);
        free_held(c);
        s->refused++;
        return close_now(c->wsi, (enum lws_close_status)(SERVER_CLOSE_AUTH_BASE + status),
                         "refused by auth");
    }
    int rc = identity ? sync_conn_set_identity(server_conn_handle(c), identity) : SYNC_OK;
    free(identity);
    if (rc != SYNC_OK) {
        server_log(s, SYNC_LOG_ERROR, "cannot attach the identity: %s", sync_error_last());
        return -1;
    }
    join_engine(c);
    deliver_held(c);
    return 1;
}

int server_conn_writeable(server_conn *c)
{
    sync_server *s = c->server;
    struct lws *wsi = c->wsi;
    sync__frame *frame = NULL;
    bool pull = false, force = false;

    if (c->write_failed)
        return -1;
    /* lws failed the connection itself (a frame that breaks RFC 6455) and its close frame went
     * out: nothing may follow it (section 5.5.1), and lws would otherwise keep the socket up to
     * 5 s for an acknowledgement it may not recognise. -1 ends it now. */
    if (lws_get_close_length(wsi) > 0)
        return -1;
    if (c->auth_waiting) {
        int rc = serve_auth_wait(c);
        if (rc <= 0)
            return rc;
    }
    pthread_mutex_lock(&s->lock);
    if (c->close_pending) {
        int code = c->close_code;
        const char *reason = close_reason_of(c); /* set once, freed only with the connection */
        pthread_mutex_unlock(&s->lock);
        return close_now(wsi, (enum lws_close_status)code, reason ? reason : "");
    }
    frame = queue_pop(c);
    if (!frame && atomic_load_explicit(&c->state_moved, memory_order_relaxed)) {
        pull = true;
        force = c->force;
        c->force = false;
        atomic_store_explicit(&c->state_moved, false, memory_order_release);
    }
    pthread_mutex_unlock(&s->lock);

    /* Behind the feed's head: the flush makes it sendable (saved first with
     * SYNC_PERSIST_BEFORE_SEND, once per record whoever asks first), so a connection the end of
     * the turn handed over here gets the newest state, not a turn later. */
    if (pull && sync__feed_flush(c->eng->engine))
        frame =
            c->v2 ? sync__feed_read_v2(c->eng->engine, c->last_sent_seq, c->v2->last_version, force)
                  : sync__feed_read(c->eng->engine, c->last_sent_seq, force);
    if (frame && (frame->kind == SYNC__FRAME_STATE_UPDATE || frame->kind == SYNC__FRAME_PATCH) &&
        frame->seq < c->last_sent_seq) {
        /* an explicit state frame older than one already sent: never move a client back */
        sync__frame_unref(frame);
        frame = NULL;
    }
    if (frame) {
        if (is_state_frame(frame) && frame->seq > c->last_sent_seq)
            c->last_sent_seq = frame->seq;
        if (c->v2 && is_state_frame(frame))
            c->v2->last_version = frame->version;
        sync__frame_kind kind = frame->kind;
        int n = lws_write(wsi, (unsigned char *)sync__frame_text(frame), frame->len,
                          kind == SYNC__FRAME_BINARY ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
        sync__frame_unref(frame);
        if (n < 0)
            return -1;
        s->frames_sent++;
        s->bytes_sent += (uint64_t)n;
        /* the first state frame, a v2 resume's patch included, makes it live */
        if (!c->live && (kind == SYNC__FRAME_INITIAL_STATE || kind == SYNC__FRAME_PATCH)) {
            server_broadcast_join(c);
            if (c->is_room)
                server_rooms_conn_live(c);
        }
    }

    pthread_mutex_lock(&s->lock);
    bool more = queued_count(c) || atomic_load_explicit(&c->state_moved, memory_order_relaxed) ||
                c->close_pending;
    pthread_mutex_unlock(&s->lock);
    if (more || (frame && s->stopping)) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    if (s->stopping)
        return close_now(wsi, LWS_CLOSE_STATUS_GOINGAWAY, "server stopping");
    return 0;
}

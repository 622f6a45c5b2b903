/*
 * The gate in front of every WebSocket upgrade: the RFC 6455 handshake headers that lws 4.1
 * does not check or drops without an answer (400, 414, 426, 431), route to a mounted engine
 * (404), stopping or full (503), Origin allow-list (403), then the user's auth callback through
 * sync_request, whose decision may also come later, from any thread (sync_request_defer /
 * sync_request_complete). Also the peer's close frame, which lws 4.1 checks only in part.
 */
#include "server_internal.h"

#include "cluster/cluster.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/json_check.h"
#include "error.h"
#include "libsync/rooms.h"

typedef struct request_string {
    struct request_string *next;
    char text[];
} request_string;

struct sync_request {
    struct lws *wsi; /* NULL once the callback returned: headers are gone with lws's tables */
    char *path;
    char *room; /* the decoded room name, or NULL */
    char *query;
    char peer[64];
    request_string *strings;   /* header values handed out, freed after the callback */
    pthread_t callback_thread; /* the service thread that runs the callback */
    /* Under server_auth_lock (a deferred request is decided from any thread): */
    char *identity;
    bool deferred;
    bool in_callback;
    bool decided_in_callback; /* by the callback's own thread: answered like a returned status */
    bool linked;              /* the upgrade made (or failed to make) its connection */
    bool decided;             /* sync_request_complete() ran before that */
    int decision;
    server_conn *conn; /* the connection waiting for the decision; NULL once it closed */
};

/* Links a deferred request and its connection both ways: the decision comes from any thread while
 * the connection may close on the service thread. Taken before server->lock. */
static pthread_mutex_t server_auth_lock = PTHREAD_MUTEX_INITIALIZER;

/* A copy of a header value that lives as long as the request. */
static const char *keep(sync_request *req, int len, int (*copy)(struct lws *, char *, int, void *),
                        void *arg)
{
    request_string *s = malloc(sizeof *s + (size_t)len + 1);
    if (!s)
        return NULL;
    if (copy(req->wsi, s->text, len + 1, arg) < 0) {
        free(s);
        return NULL;
    }
    s->next = req->strings;
    req->strings = s;
    return s->text;
}

static int copy_token(struct lws *wsi, char *dst, int len, void *arg)
{
    return lws_hdr_copy(wsi, dst, len, *(enum lws_token_indexes *)arg);
}

static int copy_custom(struct lws *wsi, char *dst, int len, void *arg)
{
    const char *name = arg;
    return lws_hdr_custom_copy(wsi, dst, len, name, (int)strlen(name));
}

const char *sync_request_path(const sync_request *req)
{
    return req ? req->path : NULL;
}

const char *sync_request_room(const sync_request *req)
{
    return req ? req->room : NULL;
}

const char *sync_request_query(const sync_request *req)
{
    return req ? req->query : NULL;
}

const char *sync_request_peer(const sync_request *req)
{
    return req ? req->peer : NULL;
}

const char *sync_request_header(const sync_request *req, const char *name)
{
    if (!req || !req->wsi || !name || !*name || strlen(name) > 120)
        return NULL;
    sync_request *r = (sync_request *)(uintptr_t)req;
    size_t name_len = strlen(name);
    /* the headers lws knows are parsed into tokens named like "origin:" */
    for (int t = 0; t < (int)WSI_TOKEN_COUNT; t++) {
        const char *token = (const char *)lws_token_to_string((enum lws_token_indexes)t);
        if (!token || strlen(token) != name_len + 1 || token[name_len] != ':' ||
            strncasecmp(token, name, name_len) != 0)
            continue;
        enum lws_token_indexes idx = (enum lws_token_indexes)t;
        int len = lws_hdr_total_length(r->wsi, idx);
        if (len <= 0)
            return NULL;
        return keep(r, len, copy_token, &idx);
    }
    char custom[128];
    size_t i;
    for (i = 0; i < name_len; i++)
        custom[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] - 'A' + 'a' : name[i]);
    custom[i++] = ':';
    custom[i] = '\0';
    int len = lws_hdr_custom_length(r->wsi, custom, (int)i);
    if (len < 0)
        return NULL;
    return keep(r, len, copy_custom, custom);
}

int sync_request_set_identity(sync_request *req, const char *identity_json)
{
    if (!req)
        return sync__fail(SYNC_EINVAL, "request is NULL");
    char *copy = NULL;
    if (identity_json && !(copy = strdup(identity_json)))
        return sync__fail(SYNC_ENOMEM, "out of memory for the identity");
    pthread_mutex_lock(&server_auth_lock);
    char *old = req->identity;
    req->identity = copy;
    pthread_mutex_unlock(&server_auth_lock);
    free(old);
    sync__error_clear();
    return SYNC_OK;
}

sync_request *sync_request_defer(sync_request *req)
{
    if (!req || !req->wsi) {
        sync__fail(SYNC_ESTATE, "sync_request_defer: only inside the auth callback");
        return NULL;
    }
    req->deferred = true;
    sync__error_clear();
    return req;
}

int sync_secret_equal(const char *given, size_t given_len, const char *secret)
{
    if (!given || !secret)
        return 0;
    size_t secret_len = strlen(secret);
    unsigned char diff = given_len != secret_len;
    for (size_t i = 0; i < secret_len; i++)
        diff |= (unsigned char)(secret[i] ^ (i < given_len ? given[i] : 0));
    return diff == 0;
}

static void release_strings(sync_request *req)
{
    while (req->strings) {
        request_string *next = req->strings->next;
        free(req->strings);
        req->strings = next;
    }
}

static void request_free(sync_request *req)
{
    release_strings(req);
    free(req->path);
    free(req->room);
    free(req->query);
    free(req->identity);
    free(req);
}

/* The status a refusal is sent with: the callback's when it is an HTTP error status. */
static int refusal_status(int status)
{
    return status >= 400 && status <= 599 ? status : HTTP_STATUS_FORBIDDEN;
}

int sync_request_complete(sync_request *req, int status)
{
    if (!req)
        return sync__fail(SYNC_EINVAL, "request is NULL");
    if (status != 0)
        status = refusal_status(status);
    pthread_mutex_lock(&server_auth_lock);
    if (!req->linked) {
        /* Decided before the upgrade made its connection: the upgrade applies it. Only the
         * callback's own thread gets an HTTP answer; a decision from elsewhere may beat the
         * callback's return or not, so the client sees the same close code either way. */
        req->decided = true;
        req->decision = status;
        req->decided_in_callback =
            req->in_callback && pthread_equal(pthread_self(), req->callback_thread);
        pthread_mutex_unlock(&server_auth_lock);
        sync__error_clear();
        return SYNC_OK;
    }
    server_conn *c = req->conn;
    if (c) {
        c->auth->request = NULL;
        server_conn_auth_decided_locked(c, status, status == 0 ? req->identity : NULL);
        if (status == 0)
            req->identity = NULL;
    }
    pthread_mutex_unlock(&server_auth_lock);
    request_free(req);
    if (!c)
        return sync__fail(SYNC_ECLOSED, "the client left before the auth decision");
    sync__error_clear();
    return SYNC_OK;
}

void server_auth_forget(server_conn *c)
{
    pthread_mutex_lock(&server_auth_lock);
    if (c->auth && c->auth->request) {
        c->auth->request->conn = NULL;
        c->auth->request = NULL;
    }
    pthread_mutex_unlock(&server_auth_lock);
}

static bool origin_allowed(sync_server *server, struct lws *wsi)
{
    if (!server->origin_count)
        return true;
    int len = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN);
    if (len <= 0)
        return true; /* not a browser: Origin only guards against cross-site pages */
    char origin[512];
    if (len >= (int)sizeof origin || lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) < 0)
        return false;
    for (size_t i = 0; i < server->origin_count; i++)
        if (strcmp(server->origins[i], origin) == 0)
            return true;
    return false;
}

static char *copy_query(struct lws *wsi)
{
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS);
    char *query = calloc(1, total > 0 ? (size_t)total + 64 : 1);
    if (!query || total <= 0)
        return query;
    size_t used = 0;
    char frag[1024];
    for (int i = 0; i < 64; i++) {
        int n = lws_hdr_copy_fragment(wsi, frag, sizeof frag, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n <= 0)
            break;
        if (used + (size_t)n + 2 > (size_t)total + 64)
            break;
        if (used)
            query[used++] = '&';
        memcpy(query + used, frag, (size_t)n);
        used += (size_t)n;
        query[used] = '\0';
    }
    return query;
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 408:
        return "Request Timeout";
    case 414:
        return "URI Too Long";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return status < 500 ? "Client Error" : "Server Error";
    }
}

/* `header`: an extra header line with its CRLF, or ""; `why`: said after the status in the
 * body ("" for none). */
static int refuse_with(struct lws *wsi, int status, const char *header, const char *why)
{
    /* lws_return_http_status() would answer an upgrade request with an HTTP/1.0 status line
     * (lws 4.1 has not recorded the request's version yet), which WebSocket clients reject as
     * invalid instead of reporting the status, and with an HTML page that links a stylesheet. */
    unsigned char buf[LWS_PRE + 512];
    char *head = (char *)buf + LWS_PRE;
    const char *phrase = reason_phrase(status);
    const char *sep = *why ? ": " : "";
    int body_len = snprintf(NULL, 0, "%d %s%s%s\n", status, phrase, sep, why);
    int n = snprintf(head, sizeof buf - LWS_PRE,
                     "HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                     "%scontent-length: %d\r\nconnection: close\r\n\r\n%d %s%s%s\n",
                     status, phrase, header, body_len, status, phrase, sep, why);
    if (n > 0 && (size_t)n < sizeof buf - LWS_PRE)
        lws_write(wsi, (unsigned char *)head, (size_t)n, LWS_WRITE_HTTP_HEADERS);
    return 1; /* closes the connection once that is written */
}

int server_refuse_upgrade(struct lws *wsi, int status)
{
    return refuse_with(wsi, status, "", "");
}

static int refuse(sync_server *server, struct lws *wsi, int status)
{
    server->refused++;
    return server_refuse_upgrade(wsi, status);
}

static int refuse_why(sync_server *server, struct lws *wsi, int status, const char *header,
                      const char *why)
{
    server->refused++;
    return refuse_with(wsi, status, header, why);
}

/* Runs the auth callback. Returns 0 (accepted, *identity set), an HTTP status to refuse, or
 * SYNC_PENDING with *deferred set when the callback deferred its decision. */
static int run_auth(sync_server *server, struct lws *wsi, const char *path, const char *room,
                    char **identity, sync_request **deferred)
{
    sync_request *req = calloc(1, sizeof *req);
    if (!req)
        return HTTP_STATUS_SERVICE_UNAVAILABLE;
    req->wsi = wsi;
    req->path = strdup(path);
    req->room = room ? strdup(room) : NULL;
    if (room && !req->room) {
        request_free(req);
        return HTTP_STATUS_SERVICE_UNAVAILABLE;
    }
    req->query = copy_query(wsi);
    lws_get_peer_simple(wsi, req->peer, sizeof req->peer);
    /* IPv4 clients of the dual-stack socket show up as IPv4-mapped IPv6 */
    if (strncmp(req->peer, "::ffff:", 7) == 0 && strchr(req->peer, '.'))
        memmove(req->peer, req->peer + 7, strlen(req->peer + 7) + 1);
    req->callback_thread = pthread_self();
    req->in_callback = true;
    int status = req->path && req->query ? server->auth(req, server->auth_userdata) : 500;
    release_strings(req);
    req->wsi = NULL;
    pthread_mutex_lock(&server_auth_lock);
    req->in_callback = false;
    bool answered = req->decided_in_callback;
    pthread_mutex_unlock(&server_auth_lock);
    if (req->deferred && !answered) {
        /* from now on only sync_request_complete() decides, whatever was returned */
        *deferred = req;
        return SYNC_PENDING;
    }
    if (answered)
        status = req->decision;
    if (status == SYNC_PENDING)
        status = 500; /* pending without sync_request_defer(): nothing could ever decide */
    if (status == 0) {
        *identity = req->identity;
        req->identity = NULL;
    }
    request_free(req);
    return status;
}

/* Ties a deferred request to the connection that waits for it (NULL when it could not be made:
 * a later sync_request_complete() then says ECLOSED). -1 when the connection could not be given
 * its waiting state: the request is then treated as if it had none. */
static int link_deferred(sync_request *req, server_conn *c)
{
    server_auth_wait *wait = c ? calloc(1, sizeof *wait) : NULL;
    if (!wait)
        c = NULL;
    pthread_mutex_lock(&server_auth_lock);
    req->linked = true;
    bool decided = req->decided;
    if (c) {
        wait->conn = c;
        wait->decision = SERVER_AUTH_UNDECIDED;
        c->auth = wait;
        c->auth_waiting = true;
        if (decided) {
            /* came from another thread before the connection existed: applied once established */
            server_conn_auth_decided_locked(c, req->decision,
                                            req->decision == 0 ? req->identity : NULL);
            if (req->decision == 0)
                req->identity = NULL;
        } else {
            req->conn = c;
            wait->request = req;
        }
    }
    pthread_mutex_unlock(&server_auth_lock);
    if (decided)
        request_free(req);
    return c ? 0 : -1;
}

/* ---- RFC 6455 section 4.2.1: the handshake headers --------------------------------------- */

/* Whether a comma-separated header holds `token` (case-insensitive), as in
 * "Connection: keep-alive, Upgrade". */
static bool header_has_token(struct lws *wsi, enum lws_token_indexes idx, const char *token)
{
    char value[512];
    int len = lws_hdr_total_length(wsi, idx);
    if (len <= 0 || len >= (int)sizeof value || lws_hdr_copy(wsi, value, sizeof value, idx) < 0)
        return false;
    char *save = NULL;
    for (char *t = strtok_r(value, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save))
        if (strcasecmp(t, token) == 0)
            return true;
    return false;
}

/* Sec-WebSocket-Key: base64 of 16 bytes, which is 22 characters and "==". */
static bool key_valid(struct lws *wsi)
{
    char key[32];
    if (lws_hdr_total_length(wsi, WSI_TOKEN_KEY) != 24 ||
        lws_hdr_copy(wsi, key, sizeof key, WSI_TOKEN_KEY) != 24)
        return false;
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 22; i++)
        if (!key[i] || !strchr(alphabet, key[i]))
            return false;
    return key[22] == '=' && key[23] == '=';
}

/* Whether the client's subprotocol list is absent or names one the server speaks. lws 4.1
 * would drop the connection without an answer when it names none: the server may not accept
 * without selecting one, as lws binds every WebSocket to one of its protocols. A subprotocol
 * the server speaks is an entry in server->protocols (lws answers it with its name). */
static bool subprotocol_acceptable(sync_server *server, struct lws *wsi)
{
    int len = lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL);
    if (len <= 0)
        return true;
    char list[512];
    if (len >= (int)sizeof list || lws_hdr_copy(wsi, list, sizeof list, WSI_TOKEN_PROTOCOL) < 0)
        return false;
    char *save = NULL;
    for (char *t = strtok_r(list, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save))
        for (const struct lws_protocols *p = server->protocols; p->name; p++)
            if (strcmp(p->name, t) == 0)
                return true;
    return false;
}

const struct lws_token_limits server_token_limits = {
    .token_limit = {[0 ... WSI_TOKEN_COUNT - 1] = SERVER_MAX_HEADER_VALUE}};

static bool is_request_target(int token)
{
    switch (token) {
    case WSI_TOKEN_GET_URI:
    case WSI_TOKEN_POST_URI:
    case WSI_TOKEN_OPTIONS_URI:
    case WSI_TOKEN_PUT_URI:
    case WSI_TOKEN_PATCH_URI:
    case WSI_TOKEN_DELETE_URI:
    case WSI_TOKEN_CONNECT:
    case WSI_TOKEN_HEAD_URI:
    case WSI_TOKEN_HTTP_URI_ARGS:
        return true;
    default:
        return false;
    }
}

int server_request_size_status(struct lws *wsi)
{
    for (int t = 0; t < (int)WSI_TOKEN_COUNT; t++) {
        int len = lws_hdr_total_length(wsi, (enum lws_token_indexes)t);
        if (is_request_target(t) && len >= SERVER_MAX_REQUEST_TARGET)
            return 414;
        if (!is_request_target(t) && len >= SERVER_MAX_HEADER_VALUE)
            return 431;
    }
    return 0;
}

static int handshake_check(sync_server *server, struct lws *wsi, const char *upgrade)
{
    int status = server_request_size_status(wsi);
    if (status)
        return refuse(server, wsi, status);
    /* RFC 6455 4.2.1: "websocket" in any case; Connection is a token list holding "Upgrade" */
    if (!upgrade || strcasecmp(upgrade, "websocket") != 0)
        return refuse_why(server, wsi, HTTP_STATUS_BAD_REQUEST, "", "Upgrade is not websocket");
    if (!header_has_token(wsi, WSI_TOKEN_CONNECTION, "upgrade"))
        return refuse_why(server, wsi, HTTP_STATUS_BAD_REQUEST, "", "Connection has no Upgrade");
    char version[8];
    int vlen = lws_hdr_total_length(wsi, WSI_TOKEN_VERSION);
    if (vlen <= 0)
        return refuse_why(server, wsi, HTTP_STATUS_BAD_REQUEST, "", "no Sec-WebSocket-Version");
    if (vlen != 2 || lws_hdr_copy(wsi, version, sizeof version, WSI_TOKEN_VERSION) != 2 ||
        strcmp(version, "13") != 0)
        return refuse_why(server, wsi, 426, "sec-websocket-version: 13\r\n",
                          "only Sec-WebSocket-Version 13");
    if (!key_valid(wsi))
        return refuse_why(server, wsi, HTTP_STATUS_BAD_REQUEST, "",
                          "Sec-WebSocket-Key is not base64 of 16 bytes");
    if (!subprotocol_acceptable(server, wsi))
        return refuse_why(server, wsi, HTTP_STATUS_BAD_REQUEST, "",
                          "no supported subprotocol offered");
    return 0;
}

/* ---- RFC 6455 section 7.4 / 5.5.1: the peer's close frame --------------------------------- */

/* Close codes a peer may send: the defined ones (1004-1006 and 1015 must never be sent) and
 * the ranges for libraries (3000-3999) and applications (4000-4999). */
static bool close_code_valid(unsigned code)
{
    if (code >= 3000 && code <= 4999)
        return true;
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014);
}

/* A close frame of ours, written raw: lws 4.1's API has no write type for one, and
 * lws_close_reason() would make lws wait up to 5 s for an acknowledgement that a peer which
 * already sent its close never sends. lws calls server_peer_close only with nothing of ours
 * half-written. */
static int answer_close(struct lws *wsi, unsigned code)
{
    unsigned char frame[LWS_PRE + 4];
    frame[LWS_PRE] = 0x88; /* FIN, close */
    frame[LWS_PRE + 1] = 2;
    frame[LWS_PRE + 2] = (unsigned char)(code >> 8);
    frame[LWS_PRE + 3] = (unsigned char)(code & 0xff);
    lws_write(wsi, frame + LWS_PRE, 4, LWS_WRITE_RAW);
    return -1; /* lws then drops the connection */
}

int server_peer_close(struct lws *wsi, const unsigned char *payload, size_t len)
{
    /* lws 4.1 answers 1002 for codes below 1000, 1004-1006 and 1012-2999 by itself, but echoes
     * a 1-byte payload and codes of 5000 and up. */
    if (len == 0)
        return 0;
    if (len == 1 || !close_code_valid((unsigned)payload[0] << 8 | payload[1]))
        return answer_close(wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR);
    uint32_t state = 0;
    if (sync__utf8_accept(&state, payload + 2, len - 2) != len - 2 || state != 0)
        return answer_close(wsi, LWS_CLOSE_STATUS_INVALID_PAYLOAD);
    return 0;
}

/* ---- the upgrade gate --------------------------------------------------------------------- */

int server_mount_echo(sync_server *server, const char *path)
{
    if (!server || !path || path[0] != '/')
        return sync__fail(SYNC_EINVAL, "echo path must start with '/'");
    char *copy = strdup(path);
    if (!copy)
        return sync__fail(SYNC_ENOMEM, "out of memory for the echo path");
    free(server->echo_path);
    server->echo_path = copy;
    return SYNC_OK;
}

/* A room connection that cannot join yet (its room is being created): it waits like a deferred
 * auth, with the auth's identity kept for the join. -1 when that state cannot be made. */
static int wait_for_room(server_conn *c)
{
    if (server_rooms_conn_ready(c) && !c->auth)
        return 0;
    if (!c->auth) {
        server_auth_wait *wait = calloc(1, sizeof *wait);
        if (!wait)
            return -1;
        wait->conn = c;
        wait->decision = 0; /* the auth accepted (or there is none); the identity is on c->conn */
        c->auth = wait;
    }
    c->auth_waiting = true;
    server_rooms_conn_attach(c);
    return 0;
}

int server_upgrade_check(sync_server *server, struct lws *wsi, const char *upgrade)
{
    int rc = handshake_check(server, wsi, upgrade);
    if (rc)
        return rc;
    /* below SERVER_MAX_REQUEST_TARGET: longer ones were answered 414 */
    char path[SERVER_MAX_REQUEST_TARGET + 1];
    int len = lws_hdr_copy(wsi, path, sizeof path, WSI_TOKEN_GET_URI);
    if (len <= 0)
        return refuse(server, wsi, HTTP_STATUS_NOT_FOUND);
    const server_mount *mount = server_find_mount(server, path);
    bool echo = !mount && server->echo_path && strcmp(server->echo_path, path) == 0;
    struct sync_rooms *rooms = NULL;
    char *room_name = NULL;
    if (!mount && !echo) {
        int status = server_rooms_match(server, path, &rooms, &room_name);
        if (status == 0)
            return refuse(server, wsi, HTTP_STATUS_NOT_FOUND);
        if (status > 0)
            return refuse_why(server, wsi, status, "", "bad room name");
    }
    if (server->stopping || server->ws_open >= server->max_connections) {
        free(room_name);
        return refuse(server, wsi, HTTP_STATUS_SERVICE_UNAVAILABLE);
    }
    if (!echo && server_cluster_gate(server, mount ? mount->eng : NULL) != 0) {
        free(room_name);
        return refuse_why(server, wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, "",
                          sync__cluster_available(server->cluster) ? "room loading"
                                                                   : "redis unavailable");
    }
    if (echo) {
        server_conn *c = server_conn_new(server, NULL, NULL);
        if (!c)
            return refuse(server, wsi, HTTP_STATUS_SERVICE_UNAVAILABLE);
        lws_set_opaque_user_data(wsi, c);
        return 0;
    }
    if (!origin_allowed(server, wsi)) {
        free(room_name);
        return refuse(server, wsi, HTTP_STATUS_FORBIDDEN);
    }
    char *identity = NULL;
    sync_request *deferred = NULL;
    if (server->auth) {
        int status =
            run_auth(server, wsi, mount ? mount->path : path, room_name, &identity, &deferred);
        if (status != 0 && status != SYNC_PENDING) {
            free(room_name);
            return refuse(server, wsi, refusal_status(status));
        }
    }
    server_room *room = NULL;
    if (rooms) {
        room = server_rooms_need(rooms, room_name);
        free(room_name);
        if (!room) {
            free(identity);
            if (deferred)
                link_deferred(deferred, NULL);
            return refuse_why(server, wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, "", "room unavailable");
        }
    }
    server_conn *c =
        server_conn_new(server, room ? server_room_engine(room) : mount->eng, identity);
    if (!c) {
        free(identity);
        if (deferred)
            link_deferred(deferred, NULL);
        if (room) {
            /* the room was counted for a connection that never came to be */
            server_conn gone = {.server = server, .eng = server_room_engine(room), .is_room = true};
            server_rooms_conn_gone(&gone);
        }
        return refuse(server, wsi, HTTP_STATUS_SERVICE_UNAVAILABLE);
    }
    c->is_room = room != NULL;
    server_conn_take_resume(c, wsi);
    if ((deferred && link_deferred(deferred, c) != 0) || (room && wait_for_room(c) != 0)) {
        server_conn_abandon(c); /* lets the room go too */
        return refuse(server, wsi, HTTP_STATUS_SERVICE_UNAVAILABLE);
    }
    lws_set_opaque_user_data(wsi, c);
    return 0;
}

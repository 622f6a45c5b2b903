/*
 * The gate in front of every WebSocket upgrade: route to a mounted engine (404), stopping or
 * full (503), Origin allow-list (403), then the user's auth callback through sync_request.
 */
#include "server_internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"

typedef struct request_string {
    struct request_string *next;
    char text[];
} request_string;

struct sync_request {
    struct lws *wsi;
    char *path;
    char *query;
    char peer[64];
    char *identity;
    request_string *strings; /* header values handed out, freed after the callback */
};

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
    if (!req || !name || !*name || strlen(name) > 120)
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
        return sync_fail(SYNC_EINVAL, "request is NULL");
    char *copy = NULL;
    if (identity_json && !(copy = strdup(identity_json)))
        return sync_fail(SYNC_ENOMEM, "out of memory for the identity");
    free(req->identity);
    req->identity = copy;
    sync_error_clear();
    return SYNC_OK;
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

static int refuse(sync_server *server, struct lws *wsi, int status)
{
    server->refused++;
    lws_return_http_status(wsi, (unsigned int)status, NULL);
    return 1;
}

static int run_auth(sync_server *server, struct lws *wsi, const char *path, char **identity)
{
    sync_request req;
    memset(&req, 0, sizeof req);
    req.wsi = wsi;
    req.path = (char *)(uintptr_t)path;
    req.query = copy_query(wsi);
    lws_get_peer_simple(wsi, req.peer, sizeof req.peer);
    /* IPv4 clients of the dual-stack socket show up as IPv4-mapped IPv6 */
    if (strncmp(req.peer, "::ffff:", 7) == 0 && strchr(req.peer, '.'))
        memmove(req.peer, req.peer + 7, strlen(req.peer + 7) + 1);
    int status = req.query ? server->auth(&req, server->auth_userdata) : 500;
    while (req.strings) {
        request_string *next = req.strings->next;
        free(req.strings);
        req.strings = next;
    }
    free(req.query);
    if (status == 0)
        *identity = req.identity;
    else
        free(req.identity);
    return status;
}

int server_upgrade_check(sync_server *server, struct lws *wsi)
{
    char path[1024];
    int len = lws_hdr_copy(wsi, path, sizeof path, WSI_TOKEN_GET_URI);
    if (len <= 0)
        return refuse(server, wsi, HTTP_STATUS_NOT_FOUND);
    const server_mount *mount = server_find_mount(server, path);
    if (!mount)
        return refuse(server, wsi, HTTP_STATUS_NOT_FOUND);
    if (server->stopping || server->ws_open >= server->max_connections)
        return refuse(server, wsi, HTTP_STATUS_SERVICE_UNAVAILABLE);
    if (!origin_allowed(server, wsi))
        return refuse(server, wsi, HTTP_STATUS_FORBIDDEN);
    char *identity = NULL;
    if (server->auth) {
        int status = run_auth(server, wsi, mount->path, &identity);
        if (status != 0) {
            if (status < 400 || status > 599)
                status = HTTP_STATUS_FORBIDDEN;
            return refuse(server, wsi, status);
        }
    }
    server_conn *c = server_conn_new(server, mount->eng, identity);
    if (!c) {
        free(identity);
        return refuse(server, wsi, HTTP_STATUS_SERVICE_UNAVAILABLE);
    }
    lws_set_opaque_user_data(wsi, c);
    return 0;
}

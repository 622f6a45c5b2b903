/* Plain HTTP on the server's port: GET /healthz, GET /metrics and the static directory. */
#include "error.h"
#include "server_internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct http_response {
    uint8_t kind; /* SERVER_WSI_HTTP: first, like every lws user object of the server */
    size_t len;
    unsigned char buf[]; /* LWS_PRE bytes of headroom, then the body */
} http_response;

static const struct {
    const char *ext;
    const char *type;
} content_types[] = {
    {".html", "text/html; charset=utf-8"},
    {".htm", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".json", "application/json"},
    {".png", "image/png"},
    {".svg", "image/svg+xml"},
    {".ico", "image/x-icon"},
    {".txt", "text/plain; charset=utf-8"},
    {".map", "application/json"},
    {".wasm", "application/wasm"},
};

static const char *content_type(const char *file)
{
    const char *dot = strrchr(file, '.');
    if (dot && !strchr(dot, '/'))
        for (size_t i = 0; i < sizeof content_types / sizeof content_types[0]; i++)
            if (strcmp(dot, content_types[i].ext) == 0)
                return content_types[i].type;
    return "application/octet-stream";
}

void server_http_free(struct lws *wsi)
{
    uint8_t *tag = lws_get_opaque_user_data(wsi);
    if (tag && *tag == SERVER_WSI_HTTP) {
        lws_set_opaque_user_data(wsi, NULL);
        free(tag);
    }
}

static int transaction_done(struct lws *wsi)
{
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static int status_only(struct lws *wsi, unsigned int status)
{
    lws_return_http_status(wsi, status, NULL);
    return transaction_done(wsi);
}

/* Sends headers now and the body (copied) on the next HTTP_WRITEABLE. */
static int respond(struct lws *wsi, unsigned int status, const char *type, const char *body,
                   size_t len, bool head_only)
{
    unsigned char headers[LWS_PRE + 512];
    unsigned char *start = headers + LWS_PRE, *p = start, *end = headers + sizeof headers - 1;
    if (lws_add_http_common_headers(wsi, status, type, len, &p, end) ||
        lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
                                     (const unsigned char *)"no-store", 8, &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    if (head_only || !len)
        return transaction_done(wsi);
    http_response *r = malloc(sizeof *r + LWS_PRE + len);
    if (!r)
        return -1;
    r->kind = SERVER_WSI_HTTP;
    r->len = len;
    memcpy(r->buf + LWS_PRE, body, len);
    server_http_free(wsi);
    lws_set_opaque_user_data(wsi, r);
    lws_callback_on_writable(wsi);
    return 0;
}

/* The file under static_dir for a request path, or NULL with *status set (403, 404). */
static char *static_file(sync_server *server, const char *uri, unsigned int *status)
{
    *status = HTTP_STATUS_NOT_FOUND;
    if (uri[0] != '/' || strstr(uri, "..") || strchr(uri, '\\')) {
        *status = HTTP_STATUS_FORBIDDEN;
        return NULL;
    }
    size_t dir_len = strlen(server->static_dir);
    size_t uri_len = strlen(uri);
    char *wanted = malloc(dir_len + uri_len + sizeof "/index.html");
    if (!wanted)
        return NULL;
    memcpy(wanted, server->static_dir, dir_len);
    memcpy(wanted + dir_len, uri, uri_len + 1);
    if (uri[uri_len - 1] == '/')
        strcat(wanted, "index.html");
    struct stat st;
    if (stat(wanted, &st) == 0 && S_ISDIR(st.st_mode))
        strcat(wanted, "/index.html");
    char *real = realpath(wanted, NULL);
    free(wanted);
    if (!real)
        return NULL;
    /* a symlink (or anything else) that leads out of the directory is refused */
    if (strncmp(real, server->static_dir, dir_len) != 0 || real[dir_len] != '/') {
        free(real);
        *status = HTTP_STATUS_FORBIDDEN;
        return NULL;
    }
    if (stat(real, &st) != 0 || !S_ISREG(st.st_mode)) {
        free(real);
        return NULL;
    }
    return real;
}

static int serve_static(sync_server *server, struct lws *wsi, const char *uri)
{
    unsigned int status;
    char *file = static_file(server, uri, &status);
    if (!file)
        return status_only(wsi, status);
    int n = lws_serve_http_file(wsi, file, content_type(file), NULL, 0);
    free(file);
    if (n < 0 || (n > 0 && lws_http_transaction_completed(wsi)))
        return -1;
    return 0;
}

int sync_server_set_metrics_token(sync_server *server, const char *token)
{
    if (!server)
        return sync__fail(SYNC_EINVAL, "server is NULL");
    if (token && !*token)
        return sync__fail(SYNC_EINVAL, "the metrics token is empty");
    if (server->context || atomic_load(&server->serving))
        return sync__fail(SYNC_ESTATE, "set the metrics token before the server listens");
    char *copy = NULL;
    if (token && !(copy = strdup(token)))
        return sync__fail(SYNC_ENOMEM, "out of memory for the metrics token");
    free(server->metrics_token);
    server->metrics_token = copy;
    return SYNC_OK;
}

/* Whether a GET /metrics brings the metrics token (Bearer header or ?token=). */
static bool metrics_allowed(sync_server *server, struct lws *wsi)
{
    if (!server->metrics_token)
        return true;
    char value[512];
    int n = lws_hdr_copy(wsi, value, sizeof value, WSI_TOKEN_HTTP_AUTHORIZATION);
    if (n > 7 && strncmp(value, "Bearer ", 7) == 0)
        return sync_secret_equal(value + 7, (size_t)n - 7, server->metrics_token);
    const char *given = lws_get_urlarg_by_name(wsi, "token=", value, (int)sizeof value);
    return given && sync_secret_equal(given, strlen(given), server->metrics_token);
}

static int on_request(sync_server *server, struct lws *wsi, const char *uri)
{
    int too_long = server_request_size_status(wsi);
    if (too_long)
        return status_only(wsi, (unsigned)too_long);
    bool head = lws_hdr_total_length(wsi, WSI_TOKEN_HEAD_URI) > 0;
    if (!head && lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) <= 0)
        return status_only(wsi, HTTP_STATUS_METHOD_NOT_ALLOWED);
    if (strcmp(uri, "/healthz") == 0)
        return respond(wsi, HTTP_STATUS_OK, "text/plain; charset=utf-8", "ok", 2, head);
    if (strcmp(uri, "/metrics") == 0) {
        if (!metrics_allowed(server, wsi))
            return respond(wsi, HTTP_STATUS_UNAUTHORIZED, "text/plain; charset=utf-8",
                           "the metrics need a token\n", 25, head);
        size_t len = 0;
        char *text = server_metrics_render(server, &len);
        if (!text)
            return status_only(wsi, HTTP_STATUS_INTERNAL_SERVER_ERROR);
        int rc = respond(wsi, HTTP_STATUS_OK, "text/plain; version=0.0.4; charset=utf-8", text, len,
                         head);
        free(text);
        return rc;
    }
    if (server->static_dir)
        return serve_static(server, wsi, uri);
    return status_only(wsi, HTTP_STATUS_NOT_FOUND);
}

int server_http_callback(sync_server *server, struct lws *wsi, enum lws_callback_reasons reason,
                         void *in, size_t len)
{
    (void)len;
    switch (reason) {
    case LWS_CALLBACK_HTTP:
        return on_request(server, wsi, in ? in : "/");
    case LWS_CALLBACK_HTTP_BODY:
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return -1; /* no route takes a body; the request was already answered with 405 */
    case LWS_CALLBACK_HTTP_FILE_COMPLETION:
        return transaction_done(wsi);
    case LWS_CALLBACK_HTTP_WRITEABLE: {
        uint8_t *tag = lws_get_opaque_user_data(wsi);
        if (!tag || *tag != SERVER_WSI_HTTP)
            return 0;
        http_response *r = (http_response *)tag;
        int n = lws_write(wsi, r->buf + LWS_PRE, r->len, LWS_WRITE_HTTP_FINAL);
        server_http_free(wsi);
        if (n < 0)
            return -1;
        return transaction_done(wsi);
    }
    default:
        return 0;
    }
}

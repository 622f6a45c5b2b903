/*
 * libFuzzer target: what the built-in server parses of an HTTP request before a WebSocket joins an
 * engine — the request target (path and query), the headers handed to the auth callback, the
 * Origin allow-list, and the static files, /healthz and /metrics of plain HTTP requests.
 *
 * One server runs in this process (engines at "/" and "/room", a static directory, an Origin
 * allow-list, an auth callback that reads the path, the query, several headers and a header whose
 * name comes from the query, and that may defer its decision: "Bearer later-N" decides N at once,
 * "Bearer wait" leaves the client held until the next step of this input decides it). Each input is
 * sent over a real socket on 127.0.0.1: line 1       the request target ("/room?token=a&x=1"), sent
 * as is other lines  header lines, each sent with "\r\n" ("X-F: " in front of one without ':') When
 * the first byte is 'H' the request is plain HTTP; otherwise the WebSocket upgrade headers come
 * first. After a 101 the client asks "whoami" (the handler replies with the identity the auth
 * callback attached) and closes. A request the server waits on (a body it was promised) is given up
 * after 150 ms; the server must never crash and must accept the next connection.
 */
#include "fuzz_support.h"

#include <libsync/libsync.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static sync_server *g_server;
static sync_engine *g_engine;
static int g_port;

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_upgrade: %s\n", what);
    abort();
}

static int on_whoami(sync_msg *msg, void *userdata)
{
    (void)userdata;
    const char *identity = sync_conn_identity(sync_msg_conn(msg));
    const char *text = identity ? identity : "null";
    return sync_msg_reply(msg, text, strlen(text));
}

/* A request whose decision waits for the next input ("Bearer wait"), decided from the fuzzing
 * thread while the service thread runs: by then its client may be gone. */
static pthread_mutex_t g_waiting_lock = PTHREAD_MUTEX_INITIALIZER;
static sync_request *g_waiting;

static void decide_waiting(int status)
{
    pthread_mutex_lock(&g_waiting_lock);
    sync_request *req = g_waiting;
    g_waiting = NULL;
    pthread_mutex_unlock(&g_waiting_lock);
    if (req) {
        int rc = sync_request_complete(req, status);
        if (rc != SYNC_OK && rc != SYNC_ECLOSED)
            fail("a deferred decision failed");
    }
}

/* "Bearer later-N" decides N at once after deferring; "Bearer wait" decides with the next input. */
static int defer_auth(sync_request *req, const char *token)
{
    sync_request *kept = sync_request_defer(req);
    if (!kept)
        fail("sync_request_defer failed inside the callback");
    if (strcmp(token, "Bearer wait") == 0) {
        decide_waiting(0);
        pthread_mutex_lock(&g_waiting_lock);
        g_waiting = kept;
        pthread_mutex_unlock(&g_waiting_lock);
    } else if (sync_request_complete(kept, atoi(token + 13)) != SYNC_OK) {
        fail("an early decision failed");
    }
    return SYNC_PENDING;
}

/* Reads what a real auth callback reads, and refuses or accepts from it. */
static int auth(sync_request *req, void *userdata)
{
    (void)userdata;
    const char *path = sync_request_path(req);
    const char *query = sync_request_query(req);
    const char *peer = sync_request_peer(req);
    if (!path || !query || !peer)
        fail("auth callback got a NULL path, query or peer");
    static const char *const names[] = {"authorization",          "Origin",     "cookie", "X-Token",
                                        "sec-websocket-protocol", "user-agent", "host",   ""};
    size_t total = strlen(path) + strlen(query);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *v = sync_request_header(req, names[i]);
        if (v)
            total += strlen(v);
    }
    /* a header name chosen by the request itself: "?h=name&..." */
    if (strncmp(query, "h=", 2) == 0) {
        char name[200];
        size_t n = strcspn(query + 2, "&");
        if (n >= sizeof name)
            n = sizeof name - 1;
        memcpy(name, query + 2, n);
        name[n] = '\0';
        const char *v = sync_request_header(req, name);
        if (v)
            total += strlen(v);
    }
    const char *token = sync_request_header(req, "authorization");
    if (token && strcmp(token, "Bearer deny") == 0)
        return 401;
    if (token && (strncmp(token, "Bearer later-", 13) == 0 || strcmp(token, "Bearer wait") == 0))
        return defer_auth(req, token);
    if (token && strncmp(token, "Bearer status-", 14) == 0)
        return atoi(token + 14); /* any number: out-of-range ones must become 403 */
    if (token) {
        cJSON *id = cJSON_CreateObject();
        cJSON_AddStringToObject(id, "token", token);
        cJSON_AddStringToObject(id, "query", query);
        char *json = cJSON_PrintUnformatted(id);
        cJSON_Delete(id);
        if (json)
            sync_request_set_identity(req, json);
        cJSON_free(json);
    }
    return total > 100000 ? 431 : 0;
}

static char g_static[] = "/tmp/libsync-fuzz-www-XXXXXX";
static char g_index[sizeof g_static + 16];

/* The server stops before the files it serves go. */
static void stop_all(void)
{
    sync_server_free(g_server);
    g_server = NULL;
    decide_waiting(0); /* its client is gone with the server: this frees the request */
    sync_engine_free(g_engine);
    g_engine = NULL;
    unlink(g_index);
    rmdir(g_static);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_scratch_dir(g_static, "index.html", g_index, sizeof g_index, fail);
    FILE *f = fopen(g_index, "w");
    if (!f || fputs("<!doctype html><title>fuzz</title>\n", f) < 0 || fclose(f) != 0)
        fail("cannot write index.html");

    sync_engine_options eo = SYNC_ENGINE_OPTIONS_INIT;
    eo.initial_state_json = "{\"counter\":0}";
    eo.log = fuzz_quiet_log;
    if (sync_engine_new(&g_engine, &eo) != SYNC_OK ||
        sync_engine_on(g_engine, "whoami", on_whoami, NULL, NULL) != SYNC_OK)
        fail("engine");
    static const char *const origins[] = {"http://allowed.example", "null"};
    sync_server_options so = SYNC_SERVER_OPTIONS_INIT;
    so.static_dir = g_static;
    so.allowed_origins = origins;
    so.allowed_origins_count = 2;
    so.auth = auth;
    so.max_message_bytes = 4096;
    so.log = fuzz_quiet_log;
    if (sync_server_new(&g_server, &so) != SYNC_OK ||
        sync_server_mount(g_server, "/", g_engine) != SYNC_OK ||
        sync_server_mount(g_server, "/room", g_engine) != SYNC_OK ||
        sync_server_start(g_server) != SYNC_OK)
        fail("server");
    g_port = sync_server_port(g_server);
    atexit(stop_all);
    return 0;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads until the server closes, `deadline`, or one of the `stop` strings (NULL-terminated list)
 * has arrived; returns the bytes read (at most cap - 1). */
static size_t read_until(int fd, char *buf, size_t cap, long long deadline, const char *const *stop)
{
    size_t len = 0;
    buf[0] = '\0';
    while (len < cap - 1) {
        long long left = deadline - now_ms();
        struct pollfd pfd = {fd, POLLIN, 0};
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            break;
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        for (const char *const *s = stop; *s; s++)
            if (memmem(buf, len, *s, strlen(*s)))
                return len;
    }
    return len;
}

static int connect_server(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)g_port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        fail("the server stopped accepting connections");
    /* close with RST: millions of runs must not run out of loopback ports in TIME_WAIT */
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void send_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0)
            return; /* the server may close early on a bad request: that is its right */
        p += n;
        len -= (size_t)n;
    }
}

/* A masked text frame (mask 0: payload unchanged), short text only, in one write: two writes
 * would meet Nagle's algorithm and the delayed ACK, 40 ms per run. */
static void send_text(int fd, const char *text)
{
    unsigned char frame[126];
    size_t len = strlen(text);
    if (len > sizeof frame - 6)
        fail("send_text: text too long");
    unsigned char head[6] = {0x81, (unsigned char)(0x80 | len), 0, 0, 0, 0};
    memcpy(frame, head, sizeof head);
    memcpy(frame + sizeof head, text, len);
    send_all(fd, (const char *)frame, sizeof head + len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16384)
        return 0;
    int plain = size > 0 && data[0] == 'H';
    const char *p = (const char *)data + plain;
    const char *end = (const char *)data + size;
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t target_len = nl ? (size_t)(nl - p) : (size_t)(end - p);

    size_t cap = size * 8 + 512;
    char *req = malloc(cap);
    if (!req)
        return 0;
    int n = snprintf(req, cap, "GET %.*s HTTP/1.1\r\nHost: 127.0.0.1\r\n", (int)target_len, p);
    size_t len = (size_t)n;
    if (!plain)
        len += (size_t)snprintf(req + len, cap - len,
                                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                                "Sec-WebSocket-Version: 13\r\n"
                                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n");
    for (const char *line = nl ? nl + 1 : end; line < end;) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        size_t line_len = eol ? (size_t)(eol - line) : (size_t)(end - line);
        /* HTTP framing is libwebsockets' business: keep every line a header, so the runs go to
         * the values the server and the auth callback read, not to lws waiting for more */
        if (!memchr(line, ':', line_len)) {
            memcpy(req + len, "X-F: ", 5);
            len += 5;
        }
        memcpy(req + len, line, line_len);
        len += line_len;
        memcpy(req + len, "\r\n", 2);
        len += 2;
        line = eol ? eol + 1 : end;
    }
    memcpy(req + len, "\r\n", 2);
    len += 2;

    int fd = connect_server();
    send_all(fd, req, len);
    free(req);
    /* a plain request is complete: the end of input also ends a request that waits for a body */
    if (plain)
        shutdown(fd, SHUT_WR);
    char buf[8192];
    static const char *const head_end[] = {"\r\n\r\n", NULL};
    read_until(fd, buf, sizeof buf, now_ms() + 150, head_end);
    decide_waiting(size % 2 ? 0 : 403); /* a client held by "Bearer wait" is decided now */
    if (strncmp(buf, "HTTP/1.1 101", 12) == 0) {
        /* the reply to whoami: the identity the auth callback attached, or null */
        static const char *const reply[] = {"null", "{\"token\"", NULL};
        send_text(fd, "{\"type\":\"whoami\"}");
        read_until(fd, buf, sizeof buf, now_ms() + 150, reply);
    }
    close(fd);
    return 0;
}

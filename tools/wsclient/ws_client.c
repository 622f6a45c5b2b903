/* See ws_client.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strcasestr */
#endif
#include "ws_client.h"
#include "wsproto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct ws_client {
    int rfd;
    int wfd;
    pid_t child;
    unsigned char *buf; /* bytes read and not yet consumed */
    size_t len;
    size_t cap;
    char protocol[64]; /* the Sec-WebSocket-Protocol the server selected, "" when none */
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

ws_client *ws_client_fds(int rfd, int wfd, pid_t child)
{
    ws_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->rfd = rfd;
    c->wfd = wfd;
    c->child = child;
    return c;
}

ws_client *ws_client_tcp(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ws_client *c = ws_client_fds(fd, fd, 0);
    if (!c)
        close(fd);
    return c;
}

const char *ws_client_protocol(const ws_client *c)
{
    return c->protocol;
}

int ws_client_fd(const ws_client *c)
{
    return c->rfd;
}

void ws_client_free(ws_client *c)
{
    if (!c)
        return;
    if (c->wfd != c->rfd)
        close(c->wfd);
    close(c->rfd);
    if (c->child > 0) {
        kill(c->child, SIGTERM);
        waitpid(c->child, NULL, 0);
    }
    free(c->buf);
    free(c);
}

int ws_send_raw(ws_client *c, const void *data, size_t len)
{
    const unsigned char *p = data;
    while (len) {
        ssize_t n = write(c->wfd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads more bytes into the buffer; 1 read, 0 EOF, -1 timeout or error. */
static int fill(ws_client *c, long long deadline)
{
    long long left = deadline - now_ms();
    if (left < 0)
        return -1;
    struct pollfd pfd = {c->rfd, POLLIN, 0};
    int r = poll(&pfd, 1, (int)left);
    if (r <= 0)
        return -1;
    if (c->cap - c->len < 65536) {
        size_t cap = c->cap ? c->cap * 2 : 131072;
        unsigned char *buf = realloc(c->buf, cap);
        if (!buf)
            return -1;
        c->buf = buf;
        c->cap = cap;
    }
    /* one byte is kept for a NUL so the response head can be parsed as a string */
    ssize_t n = read(c->rfd, c->buf + c->len, c->cap - c->len - 1);
    if (n < 0)
        return errno == EINTR ? 1 : -1;
    if (n == 0)
        return 0;
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    return 1;
}

static void consume(ws_client *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
    c->buf[c->len] = '\0';
}

int ws_handshake(ws_client *c, const char *path, const char *extra_headers, int timeout_ms)
{
    /* The RFC's sample nonce: a fixed key keeps every request of a test the same. */
    static const uint8_t nonce[16] = "the sample nonce";
    char key[WS_KEY_LEN + 1];
    ws_make_key(nonce, key);
    char req[4096];
    int n = ws_write_request(req, sizeof req, "127.0.0.1", path, key, extra_headers);
    if (n < 0 || ws_send_raw(c, req, (size_t)n) != 0)
        return -1;
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        unsigned char *end = c->len >= 4 ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
        if (end) {
            size_t head = (size_t)(end - c->buf) + 4;
            int status = -1;
            if (sscanf((const char *)c->buf, "HTTP/%*d.%*d %d", &status) != 1)
                status = -1;
            /* An upgrade is only an upgrade with the right Sec-WebSocket-Accept. */
            if (status == 101 && ws_check_response((const char *)c->buf, head, key) != NULL)
                status = -1;
            c->protocol[0] = '\0';
            const char *p = strcasestr((const char *)c->buf, "\r\nSec-WebSocket-Protocol:");
            if (p && p < (const char *)c->buf + head) {
                p += strlen("\r\nSec-WebSocket-Protocol:");
                while (*p == ' ' || *p == '\t')
                    p++;
                size_t n = strcspn(p, " \t\r\n");
                if (n >= sizeof c->protocol)
                    n = sizeof c->protocol - 1;
                memcpy(c->protocol, p, n);
                c->protocol[n] = '\0';
            }
            consume(c, head);
            return status;
        }
        if (fill(c, deadline) <= 0)
            return -1;
    }
}

ws_client *ws_connect(int port, const char *path, const char *extra_headers, int *status)
{
    ws_client *c = ws_client_tcp(port);
    int st = c ? ws_handshake(c, path, extra_headers, 5000) : -1;
    if (status)
        *status = st;
    if (st != 101) {
        ws_client_free(c);
        return NULL;
    }
    return c;
}

int ws_send_frame(ws_client *c, int opcode, int fin, const void *data, size_t len)
{
    static const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
    uint8_t *frame = malloc(WS_MAX_CLIENT_HEADER + len + 1);
    if (!frame)
        return -1;
    size_t h = ws_write_client_header(frame, opcode, fin, len, mask);
    if (len)
        memcpy(frame + h, data, len);
    ws_unmask(frame + h, len, mask);
    int rc = ws_send_raw(c, frame, h + len);
    free(frame);
    return rc;
}

int ws_send_text(ws_client *c, const char *text)
{
    return ws_send_frame(c, WS_OP_TEXT, 1, text, strlen(text));
}

int ws_send_close(ws_client *c, int code)
{
    unsigned char body[2] = {(unsigned char)(code >> 8), (unsigned char)code};
    return ws_send_frame(c, WS_OP_CLOSE, 1, body, 2);
}

int ws_read_frame(ws_client *c, int timeout_ms, char **payload, size_t *len)
{
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        struct ws_frame_header h;
        int r = ws_parse_header(c->buf, c->len, &h);
        if (r < 0)
            return -1;
        if (r > 0 && c->len - h.header_len >= h.payload_len) {
            size_t n = (size_t)h.payload_len;
            uint8_t *body = c->buf + h.header_len;
            if (h.masked)
                ws_unmask(body, n, h.mask);
            if (payload) {
                char *p = malloc(n + 1);
                if (!p)
                    return -1;
                memcpy(p, body, n);
                p[n] = '\0';
                *payload = p;
            }
            if (len)
                *len = n;
            consume(c, h.header_len + n);
            return h.opcode;
        }
        if (fill(c, deadline) <= 0)
            return -1;
    }
}

char *ws_read_text(ws_client *c, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        long long left = deadline - now_ms();
        char *p = NULL;
        int op = ws_read_frame(c, left > 0 ? (int)left : 0, &p, NULL);
        if (op == WS_OP_TEXT)
            return p;
        free(p);
        if (op < 0 || op == WS_OP_CLOSE)
            return NULL;
    }
}

int ws_wait_close(ws_client *c, int timeout_ms)
{
    return ws_wait_close_reason(c, timeout_ms, NULL, 0);
}

int ws_wait_eof(ws_client *c, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        c->len = 0; /* discard whatever comes before the end */
        int r = fill(c, deadline);
        if (r == 0)
            return 1;
        if (r < 0)
            return errno == ECONNRESET ? 1 : 0;
    }
}

char *http_raw(int port, const char *raw, int timeout_ms)
{
    ws_client *c = ws_client_tcp(port);
    if (!c)
        return NULL;
    if (ws_send_raw(c, raw, strlen(raw)) != 0) {
        ws_client_free(c);
        return NULL;
    }
    long long deadline = now_ms() + timeout_ms;
    while (fill(c, deadline) > 0)
        ;
    char *out = malloc(c->len + 1);
    if (out) {
        memcpy(out, c->buf, c->len);
        out[c->len] = '\0';
    }
    ws_client_free(c);
    return out;
}

int http_request(int port, const char *method, const char *path, const char *extra_headers,
                 char **body, char **head)
{
    char req[2048];
    snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s\r\n",
             method, path, extra_headers ? extra_headers : "");
    char *resp = http_raw(port, req, 5000);
    if (!resp)
        return -1;
    int status = -1;
    if (sscanf(resp, "HTTP/%*d.%*d %d", &status) != 1)
        status = -1;
    char *end = strstr(resp, "\r\n\r\n");
    if (body)
        *body = strdup(end ? end + 4 : "");
    if (head) {
        if (end)
            end[2] = '\0';
        *head = strdup(resp);
    }
    free(resp);
    return status;
}

long long ws_json_int(const char *text, const char *key)
{
    char pattern[128];
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *p = text ? strstr(text, pattern) : NULL;
    if (!p)
        return -1;
    return strtoll(p + strlen(pattern), NULL, 10);
}

int ws_wait_close_reason(ws_client *c, int timeout_ms, char *reason, size_t cap)
{
    if (cap)
        reason[0] = '\0';
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        long long left = deadline - now_ms();
        char *p = NULL;
        size_t n = 0;
        int op = ws_read_frame(c, left > 0 ? (int)left : 0, &p, &n);
        if (op == WS_OP_CLOSE) {
            int code = n >= 2 ? ((unsigned char)p[0] << 8) | (unsigned char)p[1] : 1005;
            if (cap && n > 2)
                snprintf(reason, cap, "%.*s", (int)(n - 2), p + 2);
            free(p);
            return code;
        }
        free(p);
        if (op < 0)
            return -1;
    }
}

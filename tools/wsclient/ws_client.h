/*
 * A small blocking RFC 6455 client for the server tests, on the frame functions of wsproto.h
 * (which the load generator shares): the upgrade handshake (with extra headers, the accept
 * checked), masked frames, frames read with a timeout, raw bytes; plus one-shot HTTP requests.
 * Every read has a timeout so a test never hangs. Talks over a TCP socket to 127.0.0.1, or over
 * a pair of pipes (e.g. to an `openssl s_client` child for TLS). Opcodes: WS_OP_* of wsproto.h.
 */
#ifndef LIBSYNC_WS_CLIENT_H
#define LIBSYNC_WS_CLIENT_H

#include <stddef.h>
#include <sys/types.h>

#include "wsproto.h"

typedef struct ws_client ws_client;

/* A TCP connection to 127.0.0.1:port (no handshake yet); NULL on failure. */
ws_client *ws_client_tcp(int port);
/* A client over two descriptors it owns (reads rfd, writes wfd); `child` is a process it ends
 * and reaps on close (0 = none). */
ws_client *ws_client_fds(int rfd, int wfd, pid_t child);

/* Sends the upgrade request for `path` (with `extra_headers`, each ending in "\r\n", or NULL)
 * and reads the response head. Returns the HTTP status (101 when upgraded: a 101 without the
 * right Sec-WebSocket-Accept is -1) or -1. */
int ws_handshake(ws_client *c, const char *path, const char *extra_headers, int timeout_ms);

/* ws_client_tcp + ws_handshake; NULL unless the status is 101 (*status gets it when not NULL). */
ws_client *ws_connect(int port, const char *path, const char *extra_headers, int *status);

/* One masked frame. Returns 0 or -1. */
int ws_send_frame(ws_client *c, int opcode, int fin, const void *data, size_t len);
int ws_send_text(ws_client *c, const char *text);
int ws_send_raw(ws_client *c, const void *data, size_t len);
/* A close frame with a status code. */
int ws_send_close(ws_client *c, int code);

/* Reads one frame: returns its opcode, or -1 on timeout, EOF or error. The payload (NUL
 * terminated, caller frees) goes to *payload when not NULL. */
int ws_read_frame(ws_client *c, int timeout_ms, char **payload, size_t *len);
/* The next text frame (skipping pings), or NULL on timeout/close; caller frees. */
char *ws_read_text(ws_client *c, int timeout_ms);
/* Reads until a close frame and returns its status code (1005 when it has none), or -1 when
 * the connection ends without one or nothing arrives in time. */
int ws_wait_close(ws_client *c, int timeout_ms);
/* Like ws_wait_close; the close frame's reason (NUL terminated, cut to cap) goes to `reason`. */
int ws_wait_close_reason(ws_client *c, int timeout_ms, char *reason, size_t cap);
/* 1 when the peer closed the TCP connection (EOF) within timeout_ms, 0 otherwise. */
int ws_wait_eof(ws_client *c, int timeout_ms);

int ws_client_fd(const ws_client *c);
/* The subprotocol the server selected in its 101 (Sec-WebSocket-Protocol), "" when none. */
const char *ws_client_protocol(const ws_client *c);
void ws_client_free(ws_client *c);

/* One HTTP/1.1 request (Connection: close). Returns the status or -1; the body (NUL terminated,
 * caller frees) goes to *body, the raw head to *head, when not NULL. */
int http_request(int port, const char *method, const char *path, const char *extra_headers,
                 char **body, char **head);
/* Sends raw bytes and returns everything the server sent until it closed (caller frees). */
char *http_raw(int port, const char *raw, int timeout_ms);

/* A JSON number field of a text frame ("counter" in {"data":{"counter":5}}); -1 when missing. */
long long ws_json_int(const char *text, const char *key);

#endif

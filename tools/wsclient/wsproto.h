/* The client side of RFC 6455, without I/O: the opening handshake (request, key, accept check),
 * masked client frames, and parsing server frame headers of every length. The load generator
 * drives these from its own epoll loop; ws_client.h wraps them in a blocking client. */
#ifndef LIBSYNC_WSPROTO_H
#define LIBSYNC_WSPROTO_H

#include <stddef.h>
#include <stdint.h>

enum {
    WS_OP_CONTINUATION = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

/* Base64 of 16 random bytes: the Sec-WebSocket-Key header value (24 characters + NUL). */
#define WS_KEY_LEN 24
/* Base64 of a SHA-1 digest: the Sec-WebSocket-Accept header value (28 characters + NUL). */
#define WS_ACCEPT_LEN 28
/* The largest header a client frame can need: 2 + 8 (64-bit length) + 4 (mask). */
#define WS_MAX_CLIENT_HEADER 14

void ws_make_key(const uint8_t nonce[16], char key[WS_KEY_LEN + 1]);
void ws_expected_accept(const char *key, char accept[WS_ACCEPT_LEN + 1]);

/* Writes the upgrade request for `path` on `host` ("host:port" as the Host header wants it) with
 * `key` and `extra_headers` (each ending in "\r\n", or NULL) into out. Returns its length, or -1
 * when it does not fit in cap. */
int ws_write_request(char *out, size_t cap, const char *host, const char *path, const char *key,
                     const char *extra_headers);

/* Checks an HTTP response head (up to and including the blank line): status 101 and a matching
 * Sec-WebSocket-Accept. Returns NULL when it is good, else a short reason. */
const char *ws_check_response(const char *head, size_t len, const char *key);

struct ws_frame_header {
    int fin;
    int opcode;
    int masked;
    uint8_t mask[4];
    size_t header_len;
    uint64_t payload_len;
};

/* Parses the frame header at buf. Returns 1 when complete (h filled), 0 when more bytes are
 * needed, -1 when the header is invalid (reserved bits, bad control frame). */
int ws_parse_header(const uint8_t *buf, size_t len, struct ws_frame_header *h);

/* Writes the header of a masked client frame of `len` payload bytes into out (room for
 * WS_MAX_CLIENT_HEADER bytes). Returns the number of bytes written. */
size_t ws_write_client_header(uint8_t *out, int opcode, int fin, uint64_t len,
                              const uint8_t mask[4]);

/* Writes a masked client frame (FIN set) of payload into out, which must have room for
 * WS_MAX_CLIENT_HEADER + len bytes. Returns the number of bytes written. */
size_t ws_write_client_frame(uint8_t *out, int opcode, const void *payload, size_t len,
                             const uint8_t mask[4]);

/* XORs payload with mask in place: masks a client payload, unmasks a masked one. */
void ws_unmask(uint8_t *payload, size_t len, const uint8_t mask[4]);

#endif

/* See wsproto.h. */
#include "wsproto.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char WS_GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

static void base64(const uint8_t *in, size_t len, char *out)
{
    /* EVP_EncodeBlock writes 4 characters per 3 bytes (padded) and a NUL. */
    EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

void ws_make_key(const uint8_t nonce[16], char key[WS_KEY_LEN + 1])
{
    base64(nonce, 16, key);
}

void ws_expected_accept(const char *key, char accept[WS_ACCEPT_LEN + 1])
{
    uint8_t joined[WS_KEY_LEN + sizeof WS_GUID];
    size_t klen = strlen(key);
    if (klen > WS_KEY_LEN) {
        accept[0] = '\0'; /* not a key this client made: matches no Sec-WebSocket-Accept */
        return;
    }
    memcpy(joined, key, klen);
    memcpy(joined + klen, WS_GUID, sizeof WS_GUID - 1);
    uint8_t digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    if (EVP_Digest(joined, klen + sizeof WS_GUID - 1, digest, &dlen, EVP_sha1(), NULL) != 1 ||
        dlen != 20) {
        accept[0] = '\0'; /* matches no Sec-WebSocket-Accept */
        return;
    }
    base64(digest, dlen, accept);
}

int ws_write_request(char *out, size_t cap, const char *host, const char *path, const char *key,
                     const char *extra_headers)
{
    int n = snprintf(out, cap,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s\r\n",
                     path, host, key, extra_headers ? extra_headers : "");
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

const char *ws_check_response(const char *head, size_t len, const char *key)
{
    static const char status[] = "HTTP/1.1 101";
    if (len < sizeof status - 1 || memcmp(head, status, sizeof status - 1) != 0)
        return "handshake: status is not 101";
    char want[WS_ACCEPT_LEN + 1];
    ws_expected_accept(key, want);
    if (want[0] == '\0')
        return "handshake: no Sec-WebSocket-Accept to expect for this key";
    static const char name[] = "sec-websocket-accept:";
    const char *end = head + len;
    for (const char *line = head; line < end;) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol)
            break;
        size_t llen = (size_t)(eol - line);
        if (llen > sizeof name - 1 && strncasecmp(line, name, sizeof name - 1) == 0) {
            const char *v = line + sizeof name - 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = eol;
            while (ve > v && isspace((unsigned char)ve[-1]))
                ve--;
            if ((size_t)(ve - v) == WS_ACCEPT_LEN && memcmp(v, want, WS_ACCEPT_LEN) == 0)
                return NULL;
            return "handshake: wrong Sec-WebSocket-Accept";
        }
        line = eol + 1;
    }
    return "handshake: no Sec-WebSocket-Accept";
}

int ws_parse_header(const uint8_t *buf, size_t len, struct ws_frame_header *h)
{
    if (len < 2)
        return 0;
    if (buf[0] & 0x70)
        return -1;
    h->fin = (buf[0] & 0x80) != 0;
    h->opcode = buf[0] & 0x0F;
    h->masked = (buf[1] & 0x80) != 0;
    uint64_t plen = buf[1] & 0x7F;
    size_t pos = 2;
    if (plen == 126) {
        if (len < 4)
            return 0;
        plen = (uint64_t)buf[2] << 8 | buf[3];
        pos = 4;
    } else if (plen == 127) {
        if (len < 10)
            return 0;
        plen = 0;
        for (int i = 0; i < 8; i++)
            plen = plen << 8 | buf[2 + i];
        if (plen >> 63)
            return -1;
        pos = 10;
    }
    if (h->opcode >= 0x8 && (!h->fin || plen > 125))
        return -1;
    if (h->masked) {
        if (len < pos + 4)
            return 0;
        memcpy(h->mask, buf + pos, 4);
        pos += 4;
    }
    h->header_len = pos;
    h->payload_len = plen;
    return 1;
}

size_t ws_write_client_header(uint8_t *out, int opcode, int fin, uint64_t len,
                              const uint8_t mask[4])
{
    size_t pos = 0;
    out[pos++] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0F));
    if (len < 126) {
        out[pos++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xFFFF) {
        out[pos++] = 0x80 | 126;
        out[pos++] = (uint8_t)(len >> 8);
        out[pos++] = (uint8_t)len;
    } else {
        out[pos++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[pos++] = (uint8_t)(len >> (8 * i));
    }
    memcpy(out + pos, mask, 4);
    return pos + 4;
}

size_t ws_write_client_frame(uint8_t *out, int opcode, const void *payload, size_t len,
                             const uint8_t mask[4])
{
    size_t pos = ws_write_client_header(out, opcode, 1, len, mask);
    memcpy(out + pos, payload, len);
    ws_unmask(out + pos, len, mask);
    return pos + len;
}

void ws_unmask(uint8_t *payload, size_t len, const uint8_t mask[4])
{
    for (size_t i = 0; i < len; i++)
        payload[i] ^= mask[i & 3];
}

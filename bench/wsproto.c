#include "wsproto.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

static const char WS_GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

static uint32_t rol32(uint32_t x, unsigned n)
{
    return (x << n) | (x >> (32 - n));
}

static void sha1_block(uint32_t h[5], const uint8_t block[64])
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)block[4 * i] << 24 | (uint32_t)block[4 * i + 1] << 16 |
               (uint32_t)block[4 * i + 2] << 8 | (uint32_t)block[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDC;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6;
        }
        uint32_t t = rol32(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol32(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

/* Handshake inputs are short (key + GUID = 60 bytes), so the whole padded message fits in a small
 * stack buffer. */
static void sha1(const uint8_t *msg, size_t len, uint8_t digest[20])
{
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    uint8_t buf[128];
    size_t padded = (len + 9 + 63) / 64 * 64;
    memset(buf, 0, sizeof buf);
    memcpy(buf, msg, len);
    buf[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        buf[padded - 1 - (size_t)i] = (uint8_t)(bits >> (8 * i));
    for (size_t off = 0; off < padded; off += 64)
        sha1_block(h, buf + off);
    for (int i = 0; i < 5; i++) {
        digest[4 * i] = (uint8_t)(h[i] >> 24);
        digest[4 * i + 1] = (uint8_t)(h[i] >> 16);
        digest[4 * i + 2] = (uint8_t)(h[i] >> 8);
        digest[4 * i + 3] = (uint8_t)h[i];
    }
}

static void base64(const uint8_t *in, size_t len, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
}

void ws_make_key(const uint8_t nonce[16], char key[WS_KEY_LEN + 1])
{
    base64(nonce, 16, key);
}

void ws_expected_accept(const char *key, char accept[WS_ACCEPT_LEN + 1])
{
    uint8_t joined[WS_KEY_LEN + sizeof WS_GUID];
    size_t klen = strlen(key);
    memcpy(joined, key, klen);
    memcpy(joined + klen, WS_GUID, sizeof WS_GUID - 1);
    uint8_t digest[20];
    sha1(joined, klen + sizeof WS_GUID - 1, digest);
    base64(digest, sizeof digest, accept);
}

const char *ws_check_response(const char *head, size_t len, const char *key)
{
    static const char status[] = "HTTP/1.1 101";
    if (len < sizeof status - 1 || memcmp(head, status, sizeof status - 1) != 0)
        return "handshake: status is not 101";
    char want[WS_ACCEPT_LEN + 1];
    ws_expected_accept(key, want);
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

size_t ws_write_client_frame(uint8_t *out, int opcode, const void *payload, size_t len,
                             const uint8_t mask[4])
{
    size_t pos = 0;
    out[pos++] = (uint8_t)(0x80 | (opcode & 0x0F));
    if (len < 126) {
        out[pos++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xFFFF) {
        out[pos++] = 0x80 | 126;
        out[pos++] = (uint8_t)(len >> 8);
        out[pos++] = (uint8_t)len;
    } else {
        out[pos++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[pos++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    memcpy(out + pos, mask, 4);
    pos += 4;
    memcpy(out + pos, payload, len);
    ws_unmask(out + pos, len, mask);
    return pos + len;
}

void ws_unmask(uint8_t *payload, size_t len, const uint8_t mask[4])
{
    for (size_t i = 0; i < len; i++)
        payload[i] ^= mask[i & 3];
}

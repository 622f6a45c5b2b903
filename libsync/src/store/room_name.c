/* Room names: what may name a room (checked before anything is created for it) and how the file
 * room store spells a name as a file name. */
#include "room_name.h"

#include <stdint.h>
#include <string.h>

#include "engine/json_check.h"
#include "error.h"

int sync_room_name_check(const char *name)
{
    if (!name)
        return sync__fail(SYNC_EINVAL, "room name is NULL");
    /* Bounded scan: a hostile 10 MB name costs no more than an 81-byte one. */
    size_t len = strnlen(name, SYNC_ROOM_NAME_MAX + 1);
    if (len == 0)
        return sync__fail(SYNC_EINVAL, "room name is empty");
    if (len > SYNC_ROOM_NAME_MAX)
        return sync__fail(SYNC_EINVAL, "room name is longer than %d bytes", SYNC_ROOM_NAME_MAX);
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return sync__fail(SYNC_EINVAL, "room name \"%s\" is reserved", name);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c == 0x7f)
            return sync__fail(SYNC_EINVAL, "room name has control character 0x%02x at byte %zu", c,
                              i);
        if (c == '/' || c == '\\')
            return sync__fail(SYNC_EINVAL, "room name has '%c' at byte %zu", (char)c, i);
    }
    uint32_t state = 0;
    size_t valid = sync__utf8_accept(&state, name, len);
    if (valid != len || state != 0)
        return sync__fail(SYNC_EINVAL, "room name is not valid UTF-8 (at byte %zu)", valid);
    sync__error_clear();
    return SYNC_OK;
}

static int kept(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

size_t sync__room_name_encode(const char *name, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (kept(*p)) {
            out[n++] = (char)*p;
        } else {
            out[n++] = '%';
            out[n++] = hex[*p >> 4];
            out[n++] = hex[*p & 15];
        }
    }
    out[n] = '\0';
    return n;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1; /* lower-case hex is not the canonical spelling */
}

int sync__room_name_decode(const char *encoded, size_t len, char *out)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (n == SYNC_ROOM_NAME_MAX)
            return -1;
        unsigned char c = (unsigned char)encoded[i];
        if (kept(c)) {
            out[n++] = (char)c;
            continue;
        }
        if (c != '%' || len - i < 3)
            return -1;
        int hi = hex_value(encoded[i + 1]);
        int lo = hex_value(encoded[i + 2]);
        if (hi < 0 || lo < 0)
            return -1;
        unsigned char byte = (unsigned char)(hi * 16 + lo);
        if (byte == 0 || kept(byte))
            return -1;
        out[n++] = (char)byte;
        i += 2;
    }
    out[n] = '\0';
    if (sync_room_name_check(out) != SYNC_OK) {
        sync__error_clear();
        return -1;
    }
    return 0;
}

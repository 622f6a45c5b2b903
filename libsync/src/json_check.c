#include "json_check.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

int sync_json_check_utf8(const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c == 0)
            return sync_fail(SYNC_EPARSE, "NUL byte at offset %zu", i);
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t cp;
        uint32_t min;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
            cp = c & 0x1Fu;
            min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            cp = c & 0x0Fu;
            min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            cp = c & 0x07u;
            min = 0x10000;
        } else {
            return sync_fail(SYNC_EPARSE, "invalid UTF-8 lead byte 0x%02x at offset %zu", c, i);
        }
        if (len - i <= need)
            return sync_fail(SYNC_EPARSE, "truncated UTF-8 sequence at offset %zu", i);
        for (size_t k = 1; k <= need; k++) {
            unsigned char cc = s[i + k];
            if ((cc & 0xC0u) != 0x80u)
                return sync_fail(SYNC_EPARSE, "invalid UTF-8 continuation at offset %zu", i + k);
            cp = (cp << 6) | (cc & 0x3Fu);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return sync_fail(SYNC_EPARSE, "invalid UTF-8 code point at offset %zu", i);
        i += need + 1;
    }
    return SYNC_OK;
}

int sync_json_check_depth(const char *text, size_t len, int max_depth)
{
    int depth = 0;
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = 0;
            continue;
        }
        if (c == '"') {
            in_string = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth)
                return sync_fail(SYNC_ETOODEEP, "JSON nests deeper than %d levels (offset %zu)",
                                 max_depth, i);
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return SYNC_OK;
}

/* Recursion is bounded by cJSON's own nesting limit (CJSON_NESTING_LIMIT). */
static int all_finite(const cJSON *item)
{
    for (; item; item = item->next) {
        if (cJSON_IsNumber(item) && !isfinite(item->valuedouble))
            return 0;
        if (item->child && !all_finite(item->child))
            return 0;
    }
    return 1;
}

int sync_json_parse(const char *text, size_t len, int max_depth, cJSON **out)
{
    *out = NULL;
    int rc = sync_json_check_utf8(text, len);
    if (rc != SYNC_OK)
        return rc;
    if (max_depth > 0 && (rc = sync_json_check_depth(text, len, max_depth)) != SYNC_OK)
        return rc;
    /* cJSON only rejects trailing bytes when it sees the terminating NUL inside the length it was
     * given, so parse a terminated copy. */
    char *copy = malloc(len + 1);
    if (!copy)
        return sync_fail(SYNC_ENOMEM, "out of memory copying %zu bytes of JSON", len);
    memcpy(copy, text, len);
    copy[len] = '\0';
    const char *end = NULL;
    cJSON *value = cJSON_ParseWithLengthOpts(copy, len + 1, &end, 1);
    if (!value) {
        size_t pos = end && end >= copy ? (size_t)(end - copy) : 0;
        free(copy);
        return sync_fail(SYNC_EPARSE, "invalid JSON at offset %zu", pos);
    }
    free(copy);
    if (!all_finite(value)) {
        cJSON_Delete(value);
        return sync_fail(SYNC_EPARSE, "JSON number out of range (not finite)");
    }
    *out = value;
    return SYNC_OK;
}

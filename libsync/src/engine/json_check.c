#include "json_check.h"

#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* A byte >= 0x80 that starts a sequence: how many continuation bytes follow, and the range the
 * first of them must be in (narrower after E0, ED, F0 and F4: no overlong forms, surrogates or
 * code points past U+10FFFF); 0 for a byte that cannot start one. */
static inline int utf8_lead(unsigned b, unsigned *need, unsigned *lo, unsigned *hi)
{
    *lo = 0x80;
    *hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf)
        *need = 1;
    else if (b >= 0xe0 && b <= 0xef)
        *need = 2;
    else if (b >= 0xf0 && b <= 0xf4)
        *need = 3;
    else
        return 0;
    if (b == 0xe0)
        *lo = 0xa0;
    else if (b == 0xed)
        *hi = 0x9f;
    else if (b == 0xf0)
        *lo = 0x90;
    else if (b == 0xf4)
        *hi = 0x8f;
    return 1;
}

size_t sync__utf8_accept(uint32_t *state, const void *bytes, size_t len)
{
    /* bits 0-7: continuation bytes still due; 8-15 and 16-23: the range the next one must be
     * in (utf8_lead) */
    const unsigned char *p = bytes;
    unsigned need = *state & 0xff, lo = (*state >> 8) & 0xff, hi = (*state >> 16) & 0xff;
    for (size_t i = 0; i < len; i++) {
        unsigned b = p[i];
        if (need) {
            if (b < lo || b > hi)
                return i;
            need--;
            lo = 0x80;
            hi = 0xbf;
        } else if (b >= 0x80 && !utf8_lead(b, &need, &lo, &hi)) {
            return i;
        }
    }
    *state = need ? need | lo << 8 | hi << 16 : 0;
    return len;
}

int sync__json_check_utf8(const char *text, size_t len)
{
    const char *nul = memchr(text, '\0', len);
    if (nul)
        return sync__fail(SYNC_EPARSE, "NUL byte at offset %zu", (size_t)(nul - text));
    uint32_t state = 0;
    size_t valid = sync__utf8_accept(&state, text, len);
    if (valid != len)
        return sync__fail(SYNC_EPARSE, "invalid UTF-8 at offset %zu", valid);
    if (state)
        return sync__fail(SYNC_EPARSE, "truncated UTF-8 sequence at the end (offset %zu)", len);
    return SYNC_OK;
}

int sync__json_check_depth(const char *text, size_t len, int max_depth)
{
    int depth = 0;
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (c == '\\') {
                /* cJSON ends a C string at \u0000: "increment\u0000evil" would be read as
                 * "increment" here and as the whole text by every other parser. */
                if (len - i > 5 && memcmp(text + i + 1, "u0000", 5) == 0)
                    return sync__fail(SYNC_EPARSE,
                                      "\\u0000 (NUL) in a JSON string at offset %zu: libsync keeps "
                                      "strings as C strings and would cut it there",
                                      i);
                i++;
            } else if (c == '"') {
                in_string = 0;
            }
            continue;
        }
        if (c == '"') {
            in_string = 1;
        } else if (c == '[' || c == '{') {
            if (max_depth > 0 && ++depth > max_depth)
                return sync__fail(SYNC_ETOODEEP, "JSON nests deeper than %d levels (offset %zu)",
                                  max_depth, i);
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return SYNC_OK;
}

/* ---- the tree check ------------------------------------------------------------------------ */

/* An object with more members than this finds duplicate names through a hash set; below it a
 * pairwise compare is cheaper than building one. */
#define SMALL_OBJECT 16

typedef struct tree_walk {
    const cJSON **stack; /* stack[d]: the member being visited at depth d */
    size_t cap;
    const cJSON *inline_stack[64];
    const cJSON **slots; /* hash set of member names, reused from object to object */
    size_t slot_cap;
} tree_walk;

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static int same_name(const char *a, const char *b)
{
    return a[0] == b[0] && strcmp(a, b) == 0;
}

/* The first member of `object` whose name an earlier member already has, or NULL. A member
 * without a name counts as a duplicate (nothing could read it back). */
static const cJSON *duplicate_member(tree_walk *w, const cJSON *object, int *nomem)
{
    size_t n = 0;
    for (const cJSON *m = object->child; m; m = m->next) {
        if (!m->string)
            return m;
        n++;
    }
    if (n <= SMALL_OBJECT) {
        for (const cJSON *m = object->child; m; m = m->next)
            for (const cJSON *k = object->child; k != m; k = k->next)
                if (same_name(k->string, m->string))
                    return m;
        return NULL;
    }
    size_t cap = 64;
    while (cap < 2 * n)
        cap *= 2;
    if (cap > w->slot_cap) {
        const cJSON **slots = realloc(w->slots, cap * sizeof *slots);
        if (!slots) {
            *nomem = 1;
            return NULL;
        }
        w->slots = slots;
        w->slot_cap = cap;
    }
    memset(w->slots, 0, cap * sizeof *w->slots);
    for (const cJSON *m = object->child; m; m = m->next) {
        size_t i = name_hash(m->string) & (cap - 1);
        while (w->slots[i]) {
            if (same_name(w->slots[i]->string, m->string))
                return m;
            i = (i + 1) & (cap - 1);
        }
        w->slots[i] = m;
    }
    return NULL;
}

/* Appends printable text to the path, with control characters, quotes and backslashes shown as
 * '?' so a hostile name cannot shape a log line or an error frame. */
static void path_add(char *path, size_t cap, size_t *len, const char *text)
{
    for (; *text && *len + 1 < cap; text++) {
        unsigned char c = (unsigned char)*text;
        path[(*len)++] = (c < 0x20 || c == '"' || c == '\\') ? '?' : (char)c;
    }
    path[*len] = '\0';
}

/* "$.items[3].price": where stack[0..depth] leads. */
static void describe_path(const tree_walk *w, size_t depth, char *path, size_t cap)
{
    size_t len = 0;
    path[0] = '\0';
    path_add(path, cap, &len, "$");
    for (size_t d = 1; d <= depth; d++) {
        const cJSON *parent = w->stack[d - 1];
        const cJSON *item = w->stack[d];
        char part[32];
        if (cJSON_IsObject(parent)) {
            path_add(path, cap, &len, ".");
            path_add(path, cap, &len, item->string ? item->string : "");
        } else {
            size_t index = 0;
            for (const cJSON *k = parent->child; k && k != item; k = k->next)
                index++;
            snprintf(part, sizeof part, "[%zu]", index);
            path_add(path, cap, &len, part);
        }
        if (len + 4 >= cap) {
            path_add(path, cap, &len, "...");
            break;
        }
    }
}

static int walk_push(tree_walk *w, size_t depth, const cJSON *item)
{
    if (depth >= w->cap) {
        size_t cap = w->cap * 2;
        const cJSON **stack = malloc(cap * sizeof *stack);
        if (!stack)
            return -1;
        memcpy(stack, w->stack, w->cap * sizeof *stack);
        if (w->stack != w->inline_stack)
            free(w->stack);
        w->stack = stack;
        w->cap = cap;
    }
    w->stack[depth] = item;
    return 0;
}

/* Iterative: a tree a handler built may nest deeper than any stack would allow. `parsed`: the
 * tree was just read from text, whose failures are SYNC_EPARSE. */
static int check_tree(const cJSON *root, int parsed)
{
    int status = parsed ? SYNC_EPARSE : SYNC_EINVAL;
    if (!root)
        return SYNC_OK;
    /* not `= {0}`: the inline stack is written before it is read, and zeroing it would cost
     * more than the walk of a small message */
    tree_walk w;
    w.stack = w.inline_stack;
    w.cap = sizeof w.inline_stack / sizeof *w.inline_stack;
    w.slots = NULL;
    w.slot_cap = 0;
    w.stack[0] = root;
    size_t depth = 0;
    int rc = SYNC_OK;
    for (;;) {
        const cJSON *item = w.stack[depth];
        if (cJSON_IsNumber(item) && !isfinite(item->valuedouble)) {
            char path[256];
            describe_path(&w, depth, path, sizeof path);
            if (parsed)
                rc = sync__fail(status, "JSON number out of range (not finite) at %s", path);
            else
                rc = sync__fail(status, "a non-finite number (%s) at %s: JSON has no such number",
                                isnan(item->valuedouble) ? "NaN"
                                : item->valuedouble > 0  ? "Infinity"
                                                         : "-Infinity",
                                path);
            break;
        }
        if (item->child && (cJSON_IsObject(item) || cJSON_IsArray(item))) {
            if (cJSON_IsObject(item)) {
                int nomem = 0;
                const cJSON *dup = duplicate_member(&w, item, &nomem);
                if (nomem) {
                    rc = sync__fail(SYNC_ENOMEM, "out of memory checking member names");
                    break;
                }
                if (dup) {
                    char path[256];
                    describe_path(&w, depth, path, sizeof path);
                    char name[96];
                    size_t len = 0;
                    name[0] = '\0';
                    path_add(name, sizeof name, &len, dup->string ? dup->string : "");
                    rc = sync__fail(status,
                                    dup->string ? "duplicate name \"%s\" in the object at %s"
                                                : "a member without a name%s in the object at %s",
                                    name, path);
                    break;
                }
            }
            if (walk_push(&w, depth + 1, item->child) != 0) {
                rc = sync__fail(SYNC_ENOMEM, "out of memory walking nested JSON");
                break;
            }
            depth++;
            continue;
        }
        while (depth > 0 && !w.stack[depth]->next)
            depth--;
        if (depth == 0)
            break;
        w.stack[depth] = w.stack[depth]->next;
    }
    if (w.stack != w.inline_stack)
        free(w.stack);
    free(w.slots);
    return rc;
}

int sync__json_check_tree(const cJSON *root)
{
    return check_tree(root, 0);
}

/* ---- the one pass over a text ------------------------------------------------------------- */

/* What a byte means to the pass: most bytes of a message are plain ASCII, skipped by one table
 * look-up each; the pass stops only where one of the checks has something to do. */
enum { C_NUL = 1, C_HIGH = 2, C_QUOTE = 4, C_BSLASH = 8, C_OPEN = 16, C_CLOSE = 32 };

#define HIGH8 C_HIGH, C_HIGH, C_HIGH, C_HIGH, C_HIGH, C_HIGH, C_HIGH, C_HIGH
#define HIGH32 HIGH8, HIGH8, HIGH8, HIGH8
static const unsigned char byte_class[256] = {
    [0] = C_NUL,     ['"'] = C_QUOTE, ['\\'] = C_BSLASH, ['['] = C_OPEN, ['{'] = C_OPEN,
    [']'] = C_CLOSE, ['}'] = C_CLOSE, [0x80] = HIGH32,   HIGH32,         HIGH32,
    HIGH32};
#undef HIGH32
#undef HIGH8

static int nul_fault(size_t at)
{
    return sync__fail(SYNC_EPARSE, "NUL byte at offset %zu", at);
}

/* The first UTF-8 fault is at `at` (`truncated`: the text ends inside a sequence): reported
 * unless a NUL comes later, which the separate checks found first. */
static int utf8_fault(const char *text, size_t len, size_t at, int truncated)
{
    const char *nul = memchr(text + at, '\0', len - at);
    if (nul)
        return nul_fault((size_t)(nul - text));
    if (truncated)
        return sync__fail(SYNC_EPARSE, "truncated UTF-8 sequence at the end (offset %zu)", len);
    return sync__fail(SYNC_EPARSE, "invalid UTF-8 at offset %zu", at);
}

/* A fault of the structure (too deep, or \u0000) at `at`: every byte before it passed the
 * byte checks, which still come first for the rest of the text. */
static int structure_fault(const char *text, size_t len, size_t at, int utf8_valid, int depth,
                           int max_depth)
{
    const char *nul = memchr(text + at, '\0', len - at);
    if (nul)
        return nul_fault((size_t)(nul - text));
    if (!utf8_valid) {
        uint32_t state = 0; /* text[at] is ASCII: no sequence is open there */
        size_t valid = sync__utf8_accept(&state, text + at, len - at);
        if (valid != len - at || state)
            return utf8_fault(text, len, at + valid, valid == len - at);
    }
    if (depth)
        return sync__fail(SYNC_ETOODEEP, "JSON nests deeper than %d levels (offset %zu)", max_depth,
                          at);
    return sync__fail(SYNC_EPARSE,
                      "\\u0000 (NUL) in a JSON string at offset %zu: libsync keeps strings as C "
                      "strings and would cut it there",
                      at);
}

/* sync__json_check_utf8 and then sync__json_check_depth in one pass, with the same result and
 * the same error for every text (a NUL anywhere first, then UTF-8, then the structure). */
static int check_text(const char *text, size_t len, int max_depth, int utf8_valid)
{
    const unsigned char *p = (const unsigned char *)text;
    unsigned high = utf8_valid ? 0 : C_HIGH;
    unsigned in_mask = C_NUL | C_QUOTE | C_BSLASH | high;
    unsigned out_mask = C_NUL | C_QUOTE | C_OPEN | C_CLOSE | high;
    int depth = 0, in_string = 0;
    size_t i = 0;
    for (;;) {
        unsigned mask = in_string ? in_mask : out_mask;
        while (i < len && !(byte_class[p[i]] & mask))
            i++;
        if (i >= len)
            return SYNC_OK;
        unsigned b = p[i], c = byte_class[b];
        if (c & C_NUL)
            return nul_fault(i);
        if (c & C_HIGH) { /* as sync__utf8_accept */
            unsigned need, lo, hi;
            if (!utf8_lead(b, &need, &lo, &hi))
                return utf8_fault(text, len, i, 0);
            for (i++; need; need--, i++) {
                if (i >= len)
                    return utf8_fault(text, len, len, 1);
                if (p[i] < lo || p[i] > hi)
                    return utf8_fault(text, len, i, 0);
                lo = 0x80;
                hi = 0xbf;
            }
            continue;
        }
        if (in_string) {
            if (c & C_QUOTE) {
                in_string = 0;
                i++;
                continue;
            }
            /* a backslash: cJSON ends a C string at \u0000, so "increment\u0000evil" would be
             * read as "increment" here and as the whole text by every other parser */
            if (len - i > 5 && memcmp(text + i + 1, "u0000", 5) == 0)
                return structure_fault(text, len, i, utf8_valid, 0, max_depth);
            /* the escaped byte is skipped unless a byte check still has to see it (it is not
             * structure either way) */
            i += i + 1 < len && !(byte_class[p[i + 1]] & (C_NUL | C_HIGH)) ? 2 : 1;
            continue;
        }
        if (c & C_QUOTE) {
            in_string = 1;
        } else if (c & C_OPEN) {
            if (max_depth > 0 && ++depth > max_depth)
                return structure_fault(text, len, i, utf8_valid, 1, max_depth);
        } else {
            depth--;
        }
        i++;
    }
}

/* cJSON only rejects trailing bytes when it sees the terminating NUL inside the length it was
 * given: the parse as it always was, of a terminated copy. It also says where a text that is not
 * JSON goes wrong. */
static int parse_terminated(const char *text, size_t len, cJSON **out)
{
    char *copy = malloc(len + 1);
    if (!copy)
        return sync__fail(SYNC_ENOMEM, "out of memory copying %zu bytes of JSON", len);
    memcpy(copy, text, len);
    copy[len] = '\0';
    const char *end = NULL;
    cJSON *value = cJSON_ParseWithLengthOpts(copy, len + 1, &end, 1);
    if (!value) {
        size_t pos = end && end >= copy ? (size_t)(end - copy) : 0;
        free(copy);
        return sync__fail(SYNC_EPARSE, "invalid JSON at offset %zu", pos);
    }
    free(copy);
    *out = value;
    return SYNC_OK;
}

/* The text parsed in place, when that gives what parse_terminated would; NULL when it may not.
 * cJSON (1.7.15) reads within the length it is given except one byte past a ',' that ends the
 * text inside an object, so such a text (never valid JSON) goes to the copy. Where the parse in
 * place succeeds, the terminated parse reads the same value and then skips every byte up to 32
 * (cJSON's whitespace, the NUL included) before it wants the NUL: the same tail is accepted
 * here. Everything else (not JSON, a text of only a BOM and a digit) takes the copy, which also
 * names the offset of the error as before. */
static cJSON *parse_in_place(const char *text, size_t len)
{
    if (len == 0 || text[len - 1] == ',')
        return NULL;
    const char *end = NULL;
    cJSON *value = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!value)
        return NULL;
    const unsigned char *p = (const unsigned char *)end, *stop = (const unsigned char *)text + len;
    if (p < (const unsigned char *)text || p > stop) {
        cJSON_Delete(value);
        return NULL;
    }
    while (p < stop && *p <= 32) /* no NUL: check_text refused it */
        p++;
    if (p != stop) {
        cJSON_Delete(value);
        return NULL;
    }
    return value;
}

int sync__json_parse_text(const char *text, size_t len, int max_depth, int utf8_valid, cJSON **out)
{
    *out = NULL;
    int rc = check_text(text, len, max_depth, utf8_valid);
    if (rc != SYNC_OK)
        return rc;
    cJSON *value = parse_in_place(text, len);
    if (!value && (rc = parse_terminated(text, len, &value)) != SYNC_OK)
        return rc;
    rc = check_tree(value, 1);
    if (rc != SYNC_OK) {
        cJSON_Delete(value);
        return rc;
    }
    *out = value;
    return SYNC_OK;
}

int sync__json_parse(const char *text, size_t len, int max_depth, cJSON **out)
{
    return sync__json_parse_text(text, len, max_depth, 0, out);
}

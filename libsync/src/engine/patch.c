#include "patch.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "json_check.h"

#define TYPE_OF(item) ((item)->type & 0xFF)

static const char *name_of(const cJSON *item)
{
    return item->string ? item->string : "";
}

/* ---- growable text ------------------------------------------------------------------------ */

typedef struct buf {
    char *p;
    size_t len;
    size_t cap;
    int oom;
} buf;

static int buf_reserve(buf *b, size_t more)
{
    if (b->oom)
        return -1;
    if (more > SIZE_MAX / 2 - b->len) {
        b->oom = 1;
        return -1;
    }
    size_t need = b->len + more + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 128;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static void buf_add(buf *b, const char *s, size_t n)
{
    if (buf_reserve(b, n) != 0)
        return;
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

/* A JSON string literal; bytes from 0x80 up pass through (the text is UTF-8 like the state's). */
static void buf_json_string(buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    buf_add(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        buf_add(b, s + run, i - run);
        run = i + 1;
        char esc[7] = {'\\', 0, 0, 0, 0, 0, 0};
        size_t elen = 2;
        switch (ch) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            elen = 6;
        }
        buf_add(b, esc, elen);
    }
    buf_add(b, s + run, n - run);
    buf_add(b, "\"", 1);
}

/* cJSON's printer, so a number reads back as exactly the double the state holds. */
static void buf_value(buf *b, const cJSON *value)
{
    if (b->oom)
        return;
    char *text = cJSON_PrintUnformatted(value);
    if (!text) {
        b->oom = 1;
        return;
    }
    buf_str(b, text);
    cJSON_free(text);
}

/* ---- member names by hash: only where two objects' orders part ---------------------------- */

typedef struct name_index {
    const cJSON **items; /* the members, in order */
    size_t count;
    size_t *slots; /* position + 1, 0 = empty */
    size_t mask;
} name_index;

static size_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211u;
    return (size_t)(h ^ (h >> 29));
}

/* Indexes `count` members starting at `first`; a repeated name keeps its first position. */
static int index_build(name_index *ix, const cJSON *first, size_t count)
{
    memset(ix, 0, sizeof *ix);
    size_t cap = 8;
    while (cap < count * 2)
        cap *= 2;
    ix->items = malloc((count ? count : 1) * sizeof *ix->items);
    ix->slots = calloc(cap, sizeof *ix->slots);
    if (!ix->items || !ix->slots) {
        free(ix->items);
        free(ix->slots);
        return -1;
    }
    ix->mask = cap - 1;
    const cJSON *it = first;
    for (size_t i = 0; i < count; i++, it = it->next) {
        ix->items[i] = it;
        size_t s = hash_name(name_of(it)) & ix->mask;
        for (;; s = (s + 1) & ix->mask) {
            if (!ix->slots[s]) {
                ix->slots[s] = i + 1;
                break;
            }
            if (strcmp(name_of(ix->items[ix->slots[s] - 1]), name_of(it)) == 0)
                break;
        }
    }
    ix->count = count;
    return 0;
}

/* Position of `name`, or SIZE_MAX. */
static size_t index_find(const name_index *ix, const char *name)
{
    for (size_t s = hash_name(name) & ix->mask; ix->slots[s]; s = (s + 1) & ix->mask)
        if (strcmp(name_of(ix->items[ix->slots[s] - 1]), name) == 0)
            return ix->slots[s] - 1;
    return SIZE_MAX;
}

static void index_free(name_index *ix)
{
    free(ix->items);
    free(ix->slots);
}

static size_t count_from(const cJSON *it)
{
    size_t n = 0;
    for (; it; it = it->next)
        n++;
    return n;
}

/* ---- equality ----------------------------------------------------------------------------- */

/* Two numbers are equal when a state frame would carry the same text for them. cJSON's printer
 * (every frame's) writes 15 significant digits when they read back within DBL_EPSILON of the
 * double, so doubles that differ can print alike: the client cannot tell them apart, and the
 * patch need not either. Comparing the doubles first keeps the common case free of printing. */
static int same_number(const cJSON *a, const cJSON *b)
{
    /* equal non-zero doubles are the same bits; 0 and -0 are equal but print "0" and "-0" */
    if (a->valuedouble == b->valuedouble && a->valueint == b->valueint &&
        (a->valuedouble != 0 || signbit(a->valuedouble) == signbit(b->valuedouble)))
        return 1;
    char ta[64], tb[64];
    if (!cJSON_PrintPreallocated((cJSON *)a, ta, (int)sizeof ta, 0) ||
        !cJSON_PrintPreallocated((cJSON *)b, tb, (int)sizeof tb, 0))
        return 0;
    return strcmp(ta, tb) == 0;
}

/* 1 equal, 0 not, -1 out of memory (an unordered comparison of objects whose orders part). */
static int equal_rec(const cJSON *a, const cJSON *b, int ordered, int depth)
{
    if (a == b)
        return 1;
    if (TYPE_OF(a) != TYPE_OF(b) || depth > SYNC__JSON_PATCH_MAX_DEPTH)
        return 0;
    switch (TYPE_OF(a)) {
    case cJSON_Number:
        return same_number(a, b);
    case cJSON_String:
    case cJSON_Raw:
        if (!a->valuestring || !b->valuestring)
            return a->valuestring == b->valuestring;
        return strcmp(a->valuestring, b->valuestring) == 0;
    case cJSON_Array: {
        const cJSON *x = a->child, *y = b->child;
        for (; x && y; x = x->next, y = y->next) {
            int eq = equal_rec(x, y, ordered, depth + 1);
            if (eq != 1)
                return eq;
        }
        return !x && !y;
    }
    case cJSON_Object: {
        const cJSON *x = a->child, *y = b->child;
        for (; x && y && strcmp(name_of(x), name_of(y)) == 0; x = x->next, y = y->next) {
            int eq = equal_rec(x, y, ordered, depth + 1);
            if (eq != 1)
                return eq;
        }
        if (!x && !y)
            return 1;
        if (ordered || !x || !y)
            return 0;
        size_t n = count_from(x);
        if (n != count_from(y))
            return 0;
        name_index ix;
        if (index_build(&ix, y, n) != 0)
            return -1;
        int eq = 1;
        for (; x && eq == 1; x = x->next) {
            size_t at = index_find(&ix, name_of(x));
            eq = at == SIZE_MAX ? 0 : equal_rec(x, ix.items[at], ordered, depth + 1);
        }
        index_free(&ix);
        return eq;
    }
    default:
        return 1; /* null, true, false: the type says it all */
    }
}

int sync__json_equal(const cJSON *a, const cJSON *b, int ordered)
{
    if (!a || !b)
        return a == b;
    return equal_rec(a, b, ordered, 0) == 1;
}

/* ---- diff --------------------------------------------------------------------------------- */

typedef struct diff_ctx {
    buf out;
    size_t ops;
    size_t max_len;
    int want_reverse;
    buf rev;      /* reverse ops, each its own segment, joined newest first at the end */
    size_t *segs; /* start, length pairs in rev */
    size_t nsegs;
    size_t segcap;
    buf path; /* the RFC 6901 pointer of the value being compared */
    int status;
} diff_ctx;

static void write_op(buf *b, const char *op, const buf *path, int with_from, const cJSON *value)
{
    buf_str(b, "{\"op\":\"");
    buf_str(b, op);
    buf_str(b, "\"");
    if (with_from) {
        buf_str(b, ",\"from\":");
        buf_json_string(b, path->p, path->len);
    }
    buf_str(b, ",\"path\":");
    buf_json_string(b, path->p, path->len);
    if (value) {
        buf_str(b, ",\"value\":");
        buf_value(b, value);
    }
    buf_str(b, "}");
}

/* Appends one reverse op at the current path, as its own segment. */
static void emit_reverse(diff_ctx *c, const char *op, const cJSON *value)
{
    if (c->nsegs == c->segcap) {
        size_t cap = c->segcap ? c->segcap * 2 : 16;
        size_t *segs = realloc(c->segs, cap * 2 * sizeof *segs);
        if (!segs) {
            c->status = SYNC_ENOMEM;
            return;
        }
        c->segs = segs;
        c->segcap = cap;
    }
    size_t start = c->rev.len;
    write_op(&c->rev, op, &c->path, 0, value);
    c->segs[2 * c->nsegs] = start;
    c->segs[2 * c->nsegs + 1] = c->rev.len - start;
    c->nsegs++;
    if (c->rev.oom)
        c->status = SYNC_ENOMEM;
}

/* One operation at the current path; its reverse (op `rop` with `rvalue`) when asked for. */
static void emit(diff_ctx *c, const char *op, int with_from, const cJSON *value, const char *rop,
                 const cJSON *rvalue)
{
    if (c->status)
        return;
    if (c->ops)
        buf_add(&c->out, ",", 1);
    write_op(&c->out, op, &c->path, with_from, value);
    c->ops++;
    if (c->max_len && c->out.len + 1 > c->max_len) {
        c->status = SYNC_ETOOBIG;
        return;
    }
    if (c->want_reverse && rop)
        emit_reverse(c, rop, rvalue);
    if (c->out.oom || c->rev.oom || c->path.oom)
        c->status = SYNC_ENOMEM;
}

/* Appends "/token" (escaped: '~' as ~0, '/' as ~1) and returns the length to cut back to. */
static size_t path_push_key(diff_ctx *c, const char *key)
{
    size_t mark = c->path.len;
    buf_add(&c->path, "/", 1);
    const char *run = key;
    for (const char *s = key; *s; s++) {
        if (*s != '~' && *s != '/')
            continue;
        buf_add(&c->path, run, (size_t)(s - run));
        buf_add(&c->path, *s == '~' ? "~0" : "~1", 2);
        run = s + 1;
    }
    buf_str(&c->path, run);
    return mark;
}

static size_t path_push_index(diff_ctx *c, size_t index)
{
    size_t mark = c->path.len;
    char digits[32];
    int n = snprintf(digits, sizeof digits, "/%zu", index);
    buf_add(&c->path, digits, (size_t)n);
    return mark;
}

static void path_pop(diff_ctx *c, size_t mark)
{
    c->path.len = mark;
    c->path.p[mark] = '\0';
}

static void diff_rec(diff_ctx *c, const cJSON *a, const cJSON *b, int depth);

static int same(diff_ctx *c, const cJSON *a, const cJSON *b, int depth)
{
    int eq = equal_rec(a, b, 1, depth);
    if (eq < 0)
        c->status = SYNC_ENOMEM;
    return eq == 1;
}

/* A deep hash: equal values (diff's equality) hash alike, except numbers that differ in their
 * bits but print alike, which then only miss an alignment (a larger patch, never a wrong one). */
static uint64_t hash_value(const cJSON *v, int depth)
{
    uint64_t h = 1469598103934665603u ^ (uint64_t)TYPE_OF(v);
    if (depth > SYNC__JSON_PATCH_MAX_DEPTH)
        return h;
    switch (TYPE_OF(v)) {
    case cJSON_Number: {
        double d = v->valuedouble;
        uint64_t bits;
        memcpy(&bits, &d, sizeof bits);
        return (h ^ bits) * 1099511628211u;
    }
    case cJSON_String:
    case cJSON_Raw:
        for (const char *s = v->valuestring ? v->valuestring : ""; *s; s++)
            h = (h ^ (unsigned char)*s) * 1099511628211u;
        return h;
    case cJSON_Array:
    case cJSON_Object:
        for (const cJSON *it = v->child; it; it = it->next) {
            if (TYPE_OF(v) == cJSON_Object)
                for (const char *s = name_of(it); *s; s++)
                    h = (h ^ (unsigned char)*s) * 1099511628211u;
            h = (h ^ hash_value(it, depth + 1)) * 1099511628211u;
        }
        return h;
    default:
        return h;
    }
}

enum { RESYNC_WINDOW = 16 }; /* how far past a difference the middle of an array looks */

/* The middle of two arrays (after the common prefix and suffix), `pre` elements in: walked in
 * step while elements are equal; at a difference, the nearest pair of equal elements within
 * RESYNC_WINDOW steps on both sides is found, what lies between is diffed pairwise and the
 * surplus removed or added. So an insertion or removal inside the array, or a window that
 * drops its first element and appends one (a capped log), is a few ops and not a replacement
 * of every element after it. Elements are compared by hash first, then deeply. */
static void diff_middle(diff_ctx *c, const cJSON *xa, size_t ma, const cJSON *xb, size_t mb,
                        size_t pre, int depth)
{
    const cJSON **ea = malloc(ma * sizeof *ea), **eb = malloc(mb * sizeof *eb);
    uint64_t *ha = malloc(ma * sizeof *ha), *hb = malloc(mb * sizeof *hb);
    if (!ea || !eb || !ha || !hb) {
        c->status = SYNC_ENOMEM;
        goto done;
    }
    for (size_t k = 0; k < ma; k++, xa = xa->next) {
        ea[k] = xa;
        ha[k] = hash_value(xa, depth + 1);
    }
    for (size_t k = 0; k < mb; k++, xb = xb->next) {
        eb[k] = xb;
        hb[k] = hash_value(xb, depth + 1);
    }
#define MIDDLE_EQ(x, y) (ha[x] == hb[y] && same(c, ea[x], eb[y], depth + 1))
    size_t i = 0, j = 0, pos = pre;
    while (i < ma && j < mb && !c->status) {
        if (MIDDLE_EQ(i, j)) {
            i++;
            j++;
            pos++;
            continue;
        }
        size_t di = 1, dj = 1;
        int found = 0;
        /* the nearest pair: max(di, dj) smallest, then closest to the diagonal (a changed
         * element before an insertion or a removal) */
        for (size_t step = 1; step <= RESYNC_WINDOW && !found; step++)
            for (size_t d = 0; d <= step && !found; d++)
                for (int side = 0; side < (d ? 2 : 1) && !found; side++) {
                    size_t ti = side ? step : step - d, tj = side ? step - d : step;
                    if (i + ti < ma && j + tj < mb && MIDDLE_EQ(i + ti, j + tj)) {
                        di = ti;
                        dj = tj;
                        found = 1;
                    }
                }
        /* not found: this pair differs, diff it and go on */
        size_t pairs = di < dj ? di : dj;
        for (size_t k = 0; k < pairs && !c->status; k++, pos++) {
            size_t mark = path_push_index(c, pos);
            diff_rec(c, ea[i + k], eb[j + k], depth + 1);
            path_pop(c, mark);
        }
        for (size_t k = pairs; k < di && !c->status; k++) {
            size_t mark = path_push_index(c, pos);
            emit(c, "remove", 0, NULL, "add", ea[i + k]);
            path_pop(c, mark);
        }
        for (size_t k = pairs; k < dj && !c->status; k++, pos++) {
            size_t mark = path_push_index(c, pos);
            emit(c, "add", 0, eb[j + k], "remove", NULL);
            path_pop(c, mark);
        }
        i += di;
        j += dj;
    }
#undef MIDDLE_EQ
    for (; j < mb && !c->status; j++, pos++) {
        size_t mark = path_push_index(c, pos);
        emit(c, "add", 0, eb[j], "remove", NULL);
        path_pop(c, mark);
    }
    for (; i < ma && !c->status; i++) {
        size_t mark = path_push_index(c, pos);
        emit(c, "remove", 0, NULL, "add", ea[i]);
        path_pop(c, mark);
    }
done:
    free(ea);
    free(eb);
    free(ha);
    free(hb);
}

static void diff_array(diff_ctx *c, const cJSON *a, const cJSON *b, int depth)
{
    size_t na = count_from(a->child), nb = count_from(b->child);
    /* common prefix, then common suffix of what is left (walked back through prev) */
    const cJSON *xa = a->child, *xb = b->child;
    size_t pre = 0;
    while (pre < na && pre < nb && same(c, xa, xb, depth + 1)) {
        xa = xa->next;
        xb = xb->next;
        pre++;
    }
    size_t suf = 0;
    if (pre < na && pre < nb) {
        const cJSON *ea = a->child->prev, *eb = b->child->prev;
        while (na - pre - suf > 0 && nb - pre - suf > 0 && same(c, ea, eb, depth + 1)) {
            ea = ea->prev;
            eb = eb->prev;
            suf++;
        }
    }
    size_t ma = na - pre - suf, mb = nb - pre - suf;
    if (ma && mb && (ma > 1 || mb > 1)) {
        diff_middle(c, xa, ma, xb, mb, pre, depth);
        return;
    }
    size_t k = 0;
    for (; k < ma && k < mb && !c->status; k++, xa = xa->next, xb = xb->next) {
        size_t mark = path_push_index(c, pre + k);
        diff_rec(c, xa, xb, depth + 1);
        path_pop(c, mark);
    }
    for (; k < mb && !c->status; k++, xb = xb->next) {
        size_t mark = path_push_index(c, pre + k);
        emit(c, "add", 0, xb, "remove", NULL);
        path_pop(c, mark);
    }
    /* surplus elements go one by one from the same index: the next slides into it */
    for (; k < ma && !c->status; k++, xa = xa->next) {
        size_t mark = path_push_index(c, pre + mb);
        emit(c, "remove", 0, NULL, "add", xa);
        path_pop(c, mark);
    }
}

/* Whether `v` prints in about `*budget` bytes or less (an estimate that stops early). */
static int fits(const cJSON *v, size_t *budget, int depth)
{
    size_t cost = 8;
    if (v->string)
        cost += strnlen(v->string, *budget + 1);
    if ((TYPE_OF(v) == cJSON_String || TYPE_OF(v) == cJSON_Raw) && v->valuestring)
        cost += strnlen(v->valuestring, *budget + 1);
    if (cost > *budget || depth > SYNC__JSON_PATCH_MAX_DEPTH)
        return 0;
    *budget -= cost;
    for (const cJSON *it = v->child; it; it = it->next)
        if (!fits(it, budget, depth + 1))
            return 0;
    return 1;
}

/* The reverse of an object whose members parted order: a removed member added back would land
 * at the end, so when the object is small its reverse is the whole object as it was, in place of
 * the reverse ops of everything inside it (emitted since `seg_mark`, a move has none). A composed
 * patch then keeps member order exactly; a larger object keeps the per-member reverse (right
 * values, and a member that was removed from the middle comes back at the end). */
static void reverse_whole_object(diff_ctx *c, const cJSON *a, size_t seg_mark, size_t rev_mark)
{
    size_t budget = SYNC__JSON_PATCH_EXACT_REVERSE_BYTES;
    if (!c->want_reverse || c->status || !fits(a, &budget, 0))
        return;
    c->nsegs = seg_mark;
    c->rev.len = rev_mark;
    emit_reverse(c, "replace", a);
}

static void diff_object(diff_ctx *c, const cJSON *a, const cJSON *b, int depth)
{
    size_t seg_mark = c->nsegs, rev_mark = c->rev.len, ops_mark = c->ops;
    /* in step while the names agree: the common case, no index needed */
    const cJSON *xa = a->child, *xb = b->child;
    for (; xa && xb && !c->status && strcmp(name_of(xa), name_of(xb)) == 0;
         xa = xa->next, xb = xb->next) {
        size_t mark = path_push_key(c, name_of(xa));
        diff_rec(c, xa, xb, depth + 1);
        path_pop(c, mark);
    }
    if (c->status || (!xa && !xb))
        return;
    if (!xb) {
        /* the last first: the reverse adds them back in their order */
        for (const cJSON *it = a->child->prev;; it = it->prev) {
            size_t mark = path_push_key(c, name_of(it));
            emit(c, "remove", 0, NULL, "add", it);
            path_pop(c, mark);
            if (it == xa || c->status)
                break;
        }
        return;
    }
    if (!xa) {
        for (; xb && !c->status; xb = xb->next) {
            size_t mark = path_push_key(c, name_of(xb));
            emit(c, "add", 0, xb, "remove", NULL);
            path_pop(c, mark);
        }
        return;
    }
    /* the orders part: match the rest of b to the rest of a by name */
    size_t na = count_from(xa), nb = count_from(xb);
    name_index ix;
    size_t *match = malloc(nb * sizeof *match);
    unsigned char *used = calloc(na, 1);
    if (!match || !used || index_build(&ix, xa, na) != 0) {
        free(match);
        free(used);
        c->status = SYNC_ENOMEM;
        return;
    }
    const cJSON *y = xb;
    for (size_t j = 0; j < nb; j++, y = y->next) {
        size_t at = index_find(&ix, name_of(y));
        match[j] = SIZE_MAX;
        if (at != SIZE_MAX && !used[at]) {
            used[at] = 1;
            match[j] = at;
        }
    }
    for (size_t i = 0; i < na && !c->status; i++) {
        if (used[i])
            continue;
        size_t mark = path_push_key(c, name_of(ix.items[i]));
        emit(c, "remove", 0, NULL, "add", ix.items[i]);
        path_pop(c, mark);
    }
    /* Members kept in place: the longest run at the start of b's rest that comes in a's order.
     * Every later member of b is appended in b's order (moved if it was in a, added if not), so
     * the result has exactly b's order. */
    size_t keep = 0;
    while (keep < nb && match[keep] != SIZE_MAX && (keep == 0 || match[keep] > match[keep - 1]))
        keep++;
    y = xb;
    for (size_t j = 0; j < nb && !c->status; j++, y = y->next) {
        size_t mark = path_push_key(c, name_of(y));
        if (match[j] == SIZE_MAX) {
            emit(c, "add", 0, y, "remove", NULL);
        } else {
            if (j >= keep)
                emit(c, "move", 1, NULL, NULL, NULL); /* from and path alike: to the end */
            diff_rec(c, ix.items[match[j]], y, depth + 1);
        }
        path_pop(c, mark);
    }
    index_free(&ix);
    free(match);
    free(used);
    if (c->ops > ops_mark)
        reverse_whole_object(c, a, seg_mark, rev_mark);
}

static void diff_rec(diff_ctx *c, const cJSON *a, const cJSON *b, int depth)
{
    if (c->status || a == b)
        return;
    if (TYPE_OF(a) != TYPE_OF(b) || depth >= SYNC__JSON_PATCH_MAX_DEPTH) {
        emit(c, "replace", 0, b, "replace", a);
        return;
    }
    switch (TYPE_OF(a)) {
    case cJSON_Number:
        if (!same_number(a, b))
            emit(c, "replace", 0, b, "replace", a);
        break;
    case cJSON_String:
    case cJSON_Raw:
        if (equal_rec(a, b, 1, depth) != 1)
            emit(c, "replace", 0, b, "replace", a);
        break;
    case cJSON_Array:
        diff_array(c, a, b, depth);
        break;
    case cJSON_Object:
        diff_object(c, a, b, depth);
        break;
    default:
        break;
    }
}

void sync__json_patch_clear(sync__json_patch *patch)
{
    if (!patch)
        return;
    free(patch->text);
    free(patch->reverse);
    memset(patch, 0, sizeof *patch);
}

int sync__json_diff(const cJSON *from, const cJSON *to, size_t max_len, unsigned flags,
                    sync__json_patch *out)
{
    if (!out)
        return sync__fail(SYNC_EINVAL, "json diff: no result");
    memset(out, 0, sizeof *out);
    if (!from || !to)
        return sync__fail(SYNC_EINVAL, "json diff: NULL value");
    diff_ctx c;
    memset(&c, 0, sizeof c);
    c.max_len = max_len;
    c.want_reverse = (flags & SYNC__JSON_DIFF_REVERSE) != 0;
    buf_add(&c.out, "[", 1);
    buf_add(&c.path, "", 0); /* allocated: the root's pointer is "" */
    if (c.out.oom || c.path.oom)
        c.status = SYNC_ENOMEM;
    diff_rec(&c, from, to, 0);
    buf_add(&c.out, "]", 1);
    if (!c.status && c.max_len && c.out.len > c.max_len)
        c.status = SYNC_ETOOBIG;
    if (!c.status && c.want_reverse) {
        buf r = {0};
        buf_add(&r, "[", 1);
        for (size_t i = c.nsegs; i-- > 0;) {
            if (i + 1 < c.nsegs)
                buf_add(&r, ",", 1);
            buf_add(&r, c.rev.p + c.segs[2 * i], c.segs[2 * i + 1]);
        }
        buf_add(&r, "]", 1);
        if (r.oom) {
            free(r.p);
            c.status = SYNC_ENOMEM;
        } else {
            out->reverse = r.p;
            out->reverse_len = r.len;
        }
    }
    if (!c.status && (c.out.oom || c.path.oom))
        c.status = SYNC_ENOMEM;
    free(c.rev.p);
    free(c.segs);
    free(c.path.p);
    if (c.status) {
        free(c.out.p);
        free(out->reverse);
        memset(out, 0, sizeof *out);
        if (c.status == SYNC_ETOOBIG)
            return sync__fail(SYNC_ETOOBIG, "json diff: the patch is longer than %zu bytes",
                              max_len);
        return sync__fail(c.status, "json diff: out of memory");
    }
    out->text = c.out.p;
    out->len = c.out.len;
    out->ops = c.ops;
    return SYNC_OK;
}

/* ---- apply -------------------------------------------------------------------------------- */

/* One change made to the document, enough to take it back. parent NULL: the root was replaced
 * (old root in `old`). item and old: `item` took `old`'s place. item only: `item` was inserted.
 * old only: `old` was detached from before `next` (NULL: it was last). */
typedef struct undo {
    cJSON *parent;
    cJSON *item;
    cJSON *old;
    cJSON *next;
} undo;

typedef struct applier {
    cJSON **doc;
    undo *log;
    size_t n;
    size_t cap;
    char *scratch; /* the decoded token of the pointer being walked */
    size_t scratch_cap;
    size_t op_index;
    const char *op_name;
} applier;

/* Where a pointer leads: the container of its last token and what that token names. */
typedef struct loc {
    cJSON *parent; /* NULL: the pointer is "" (the whole document, in item) */
    cJSON *item;   /* the value named, NULL when there is none */
    const char *key;
    size_t index;  /* array parent: the index, or the array's length for "-" */
    size_t length; /* array parent: its length when the index is past the end */
    int end;       /* "-" */
    int huge;      /* an index too large to count */
} loc;

/* Inserts `item` into `parent`'s list before `next` (NULL: at the end). */
static void list_insert_before(cJSON *parent, cJSON *item, cJSON *next)
{
    item->next = NULL;
    item->prev = NULL;
    if (!parent->child) {
        parent->child = item;
        item->prev = item;
        return;
    }
    if (!next) {
        cJSON *last = parent->child->prev;
        last->next = item;
        item->prev = last;
        parent->child->prev = item;
        return;
    }
    item->next = next;
    item->prev = next->prev; /* the last one, when next is the head */
    if (next == parent->child)
        parent->child = item;
    else
        item->prev->next = item;
    next->prev = item;
}

static void list_detach(cJSON *parent, cJSON *item)
{
    if (item == parent->child) {
        parent->child = item->next;
        if (item->next)
            item->next->prev = item->prev;
    } else {
        item->prev->next = item->next;
        if (item->next)
            item->next->prev = item->prev;
        else
            parent->child->prev = item->prev;
    }
    item->prev = NULL;
    item->next = NULL;
}

static void list_replace(cJSON *parent, cJSON *out, cJSON *in)
{
    cJSON *next = out->next;
    list_detach(parent, out);
    list_insert_before(parent, in, next);
}

/* Gives `item` the member name `key` (NULL: none, an array element). */
static int set_name(cJSON *item, const char *key)
{
    char *copy = NULL;
    if (key) {
        size_t n = strlen(key) + 1;
        copy = cJSON_malloc(n);
        if (!copy)
            return -1;
        memcpy(copy, key, n);
    }
    if (!(item->type & cJSON_StringIsConst))
        cJSON_free(item->string);
    item->type &= ~cJSON_StringIsConst;
    item->string = copy;
    return 0;
}

static int apply_fail(const applier *ap, int status, const char *ptr, const char *what)
{
    return sync__fail(status, "json patch op %zu (%s): \"%.200s\"%s: %s", ap->op_index, ap->op_name,
                      ptr, strlen(ptr) > 200 ? "..." : "", what);
}

/* Room was reserved before the change was made (log_reserve), so recording cannot fail. */
static void log_push(applier *ap, cJSON *parent, cJSON *item, cJSON *old, cJSON *next)
{
    ap->log[ap->n++] = (undo){parent, item, old, next};
}

static int log_reserve(applier *ap, size_t more)
{
    if (ap->cap - ap->n >= more)
        return SYNC_OK;
    size_t cap = ap->cap ? ap->cap * 2 : 16;
    while (cap - ap->n < more)
        cap *= 2;
    undo *log = realloc(ap->log, cap * sizeof *log);
    if (!log)
        return sync__fail(SYNC_ENOMEM, "json patch: out of memory");
    ap->log = log;
    ap->cap = cap;
    return SYNC_OK;
}

/* Element `index` of `array`, or NULL with *length set to the array's length. */
static cJSON *nth(const cJSON *array, size_t index, size_t *length)
{
    size_t i = 0;
    for (cJSON *it = array->child; it; it = it->next, i++)
        if (i == index)
            return it;
    *length = i;
    return NULL;
}

static int locate(applier *ap, const char *ptr, loc *l)
{
    memset(l, 0, sizeof *l);
    if (!*ptr) {
        l->item = *ap->doc;
        return SYNC_OK;
    }
    if (*ptr != '/')
        return apply_fail(ap, SYNC_EINVAL, ptr, "a pointer starts with '/'");
    size_t need = strlen(ptr) + 1;
    if (need > ap->scratch_cap) {
        char *s = realloc(ap->scratch, need);
        if (!s)
            return sync__fail(SYNC_ENOMEM, "json patch: out of memory");
        ap->scratch = s;
        ap->scratch_cap = need;
    }
    cJSON *cur = *ap->doc;
    const char *p = ptr;
    while (*p == '/') {
        p++;
        size_t n = 0;
        for (; *p && *p != '/'; p++) {
            if (*p == '~') {
                if (p[1] != '0' && p[1] != '1')
                    return apply_fail(ap, SYNC_EINVAL, ptr, "'~' is not followed by 0 or 1");
                ap->scratch[n++] = p[1] == '0' ? '~' : '/';
                p++;
            } else {
                ap->scratch[n++] = *p;
            }
        }
        ap->scratch[n] = '\0';
        const char *token = ap->scratch;
        int last = *p == '\0';
        if (cJSON_IsObject(cur)) {
            cJSON *item = NULL;
            for (cJSON *it = cur->child; it; it = it->next)
                if (strcmp(name_of(it), token) == 0) {
                    item = it;
                    break;
                }
            if (last) {
                l->parent = cur;
                l->item = item;
                l->key = token;
                return SYNC_OK;
            }
            if (!item)
                return apply_fail(ap, SYNC_ESTATE, ptr, "no such member on the way");
            cur = item;
        } else if (cJSON_IsArray(cur)) {
            if (strcmp(token, "-") == 0) {
                if (!last)
                    return apply_fail(ap, SYNC_ESTATE, ptr, "'-' names no element");
                l->parent = cur;
                l->end = 1;
                l->index = count_from(cur->child);
                l->length = l->index;
                return SYNC_OK;
            }
            if (!n || (token[0] == '0' && n > 1))
                return apply_fail(ap, SYNC_EINVAL, ptr, "not an array index");
            size_t index = 0;
            int huge = 0;
            for (size_t i = 0; i < n; i++) {
                if (token[i] < '0' || token[i] > '9')
                    return apply_fail(ap, SYNC_EINVAL, ptr, "not an array index");
                if (index > (SIZE_MAX - 9) / 10)
                    huge = 1;
                else
                    index = index * 10 + (size_t)(token[i] - '0');
            }
            size_t length = 0;
            cJSON *item = huge ? NULL : nth(cur, index, &length);
            if (last) {
                l->parent = cur;
                l->item = item;
                l->index = index;
                l->length = length;
                l->huge = huge;
                return SYNC_OK;
            }
            if (!item)
                return apply_fail(ap, SYNC_ESTATE, ptr, "array index out of range on the way");
            cur = item;
        } else {
            return apply_fail(ap, SYNC_ESTATE, ptr, "steps into a value that is not a container");
        }
    }
    return SYNC_OK; /* not reached: the loop returns at the last token */
}

/* The value at `ptr`, for copy, move and test. */
static int get_value(applier *ap, const char *ptr, cJSON **out)
{
    loc l;
    int rc = locate(ap, ptr, &l);
    if (rc != SYNC_OK)
        return rc;
    if (l.end)
        return apply_fail(ap, SYNC_EINVAL, ptr, "'-' is only for add");
    if (!l.item)
        return apply_fail(ap, SYNC_ESTATE, ptr,
                          l.key ? "no such member" : "array index out of range");
    *out = l.item;
    return SYNC_OK;
}

/* Puts `v` (owned; freed on failure) at `ptr`: add, or replace when `must_exist`. */
static int put_value(applier *ap, const char *ptr, cJSON *v, int must_exist)
{
    loc l;
    int rc = log_reserve(ap, 1);
    if (rc == SYNC_OK)
        rc = locate(ap, ptr, &l);
    if (rc != SYNC_OK) {
        cJSON_Delete(v);
        return rc;
    }
    if (!l.parent) {
        if (set_name(v, NULL) != 0) {
            cJSON_Delete(v);
            return sync__fail(SYNC_ENOMEM, "json patch: out of memory");
        }
        log_push(ap, NULL, v, *ap->doc, NULL);
        *ap->doc = v;
        return SYNC_OK;
    }
    const char *why = NULL;
    int status = SYNC_ESTATE;
    if (must_exist && l.end) {
        why = "'-' is only for add";
        status = SYNC_EINVAL;
    } else if (must_exist && !l.item) {
        why = l.key ? "no such member" : "array index out of range";
    } else if (!l.key && !l.end && !l.item && (l.huge || l.index > l.length)) {
        why = "array index out of range";
    }
    if (why) {
        cJSON_Delete(v);
        return apply_fail(ap, status, ptr, why);
    }
    if (set_name(v, l.key) != 0) {
        cJSON_Delete(v);
        return sync__fail(SYNC_ENOMEM, "json patch: out of memory");
    }
    if (l.key && l.item) {
        list_replace(l.parent, l.item, v); /* an object member keeps its place */
        log_push(ap, l.parent, v, l.item, NULL);
    } else if (l.key || l.end || !l.item) {
        list_insert_before(l.parent, v, NULL);
        log_push(ap, l.parent, v, NULL, NULL);
    } else if (must_exist) {
        list_replace(l.parent, l.item, v);
        log_push(ap, l.parent, v, l.item, NULL);
    } else {
        list_insert_before(l.parent, v, l.item);
        log_push(ap, l.parent, v, NULL, NULL);
    }
    return SYNC_OK;
}

static int remove_value(applier *ap, const char *ptr)
{
    loc l;
    int rc = log_reserve(ap, 1);
    if (rc == SYNC_OK)
        rc = locate(ap, ptr, &l);
    if (rc != SYNC_OK)
        return rc;
    if (!l.parent)
        return apply_fail(ap, SYNC_EINVAL, ptr, "the whole document cannot be removed");
    if (l.end)
        return apply_fail(ap, SYNC_EINVAL, ptr, "'-' is only for add");
    if (!l.item)
        return apply_fail(ap, SYNC_ESTATE, ptr,
                          l.key ? "no such member" : "array index out of range");
    cJSON *next = l.item->next;
    list_detach(l.parent, l.item);
    log_push(ap, l.parent, NULL, l.item, next);
    return SYNC_OK;
}

static void undo_all(applier *ap)
{
    for (size_t i = ap->n; i-- > 0;) {
        undo *u = &ap->log[i];
        if (!u->parent) {
            *ap->doc = u->old;
            cJSON_Delete(u->item);
        } else if (u->item && u->old) {
            list_replace(u->parent, u->item, u->old);
            cJSON_Delete(u->item);
        } else if (u->item) {
            list_detach(u->parent, u->item);
            cJSON_Delete(u->item);
        } else {
            list_insert_before(u->parent, u->old, u->next);
        }
    }
    ap->n = 0;
}

static void commit_all(applier *ap)
{
    for (size_t i = 0; i < ap->n; i++)
        cJSON_Delete(ap->log[i].old); /* displaced or detached: no longer in the document */
    ap->n = 0;
}

static const char *member_string(const cJSON *op, const char *name)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(op, name);
    return cJSON_IsString(m) ? m->valuestring : NULL;
}

static cJSON *copy_of(const cJSON *value)
{
    cJSON *v = cJSON_Duplicate(value, 1);
    if (!v)
        sync__fail(SYNC_ENOMEM, "json patch: out of memory");
    return v;
}

static int apply_one(applier *ap, const cJSON *op)
{
    ap->op_name = "?";
    if (!cJSON_IsObject(op))
        return sync__fail(SYNC_EINVAL, "json patch op %zu is not an object", ap->op_index);
    const char *name = member_string(op, "op");
    if (!name)
        return sync__fail(SYNC_EINVAL, "json patch op %zu has no string \"op\"", ap->op_index);
    static const char *const known[] = {"add", "remove", "replace", "move", "copy", "test"};
    size_t kind = 0;
    while (kind < 6 && strcmp(name, known[kind]) != 0)
        kind++;
    if (kind == 6)
        return sync__fail(SYNC_EINVAL, "json patch op %zu: unknown op \"%.40s\"", ap->op_index,
                          name);
    ap->op_name = known[kind];
    const char *path = member_string(op, "path");
    if (!path)
        return sync__fail(SYNC_EINVAL, "json patch op %zu (%s) has no string \"path\"",
                          ap->op_index, ap->op_name);
    const cJSON *value = NULL;
    if (kind == 0 || kind == 2 || kind == 5) {
        value = cJSON_GetObjectItemCaseSensitive(op, "value");
        if (!value)
            return sync__fail(SYNC_EINVAL, "json patch op %zu (%s) has no \"value\"", ap->op_index,
                              ap->op_name);
    }
    const char *from = NULL;
    if (kind == 3 || kind == 4) {
        from = member_string(op, "from");
        if (!from)
            return sync__fail(SYNC_EINVAL, "json patch op %zu (%s) has no string \"from\"",
                              ap->op_index, ap->op_name);
    }
    if (kind == 3) {
        size_t n = strlen(from);
        if (strncmp(path, from, n) == 0 && path[n] == '/')
            return apply_fail(ap, SYNC_EINVAL, path, "a value cannot move into its own child");
    }
    cJSON *v, *src;
    int rc;
    switch (kind) {
    case 0:
    case 2:
        v = copy_of(value);
        return v ? put_value(ap, path, v, kind == 2) : SYNC_ENOMEM;
    case 1:
        return remove_value(ap, path);
    case 3: /* a move is a copy, with the original removed before it is put */
    case 4:
        rc = get_value(ap, from, &src);
        if (rc != SYNC_OK)
            return rc;
        v = copy_of(src);
        if (!v)
            return SYNC_ENOMEM;
        if (kind == 3 && (rc = remove_value(ap, from)) != SYNC_OK) {
            cJSON_Delete(v);
            return rc;
        }
        return put_value(ap, path, v, 0);
    default:
        rc = get_value(ap, path, &src);
        if (rc != SYNC_OK)
            return rc;
        rc = equal_rec(src, value, 0, 0);
        if (rc < 0)
            return sync__fail(SYNC_ENOMEM, "json patch: out of memory");
        return rc ? SYNC_OK : apply_fail(ap, SYNC_ESTATE, path, "test failed: the value differs");
    }
}

int sync__json_patch_apply(cJSON **doc, const cJSON *ops)
{
    if (!doc || !*doc)
        return sync__fail(SYNC_EINVAL, "json patch: no document");
    if (!cJSON_IsArray(ops))
        return sync__fail(SYNC_EINVAL, "json patch: the ops are not an array");
    applier ap;
    memset(&ap, 0, sizeof ap);
    ap.doc = doc;
    int rc = SYNC_OK;
    for (const cJSON *op = ops->child; op && rc == SYNC_OK; op = op->next, ap.op_index++)
        rc = apply_one(&ap, op);
    if (rc == SYNC_OK)
        commit_all(&ap);
    else
        undo_all(&ap);
    free(ap.log);
    free(ap.scratch);
    return rc;
}

int sync__json_patch_apply_text(cJSON **doc, const char *text, size_t len)
{
    if (!text)
        return sync__fail(SYNC_EINVAL, "json patch: no text");
    /* the engine's own parse: a repeated member name ("op" twice, RFC 6902 A.13) is refused */
    cJSON *ops = NULL;
    int rc = sync__json_parse(text, len, 0, &ops);
    if (rc != SYNC_OK)
        return rc;
    rc = sync__json_patch_apply(doc, ops);
    cJSON_Delete(ops);
    return rc;
}

int sync__json_diff_since(const cJSON *current, const char *const *reverse,
                          const size_t *reverse_len, size_t count, size_t max_len,
                          sync__json_patch *out)
{
    if (!out)
        return sync__fail(SYNC_EINVAL, "json diff: no result");
    memset(out, 0, sizeof *out);
    if (!current || (count && (!reverse || !reverse_len)))
        return sync__fail(SYNC_EINVAL, "json diff: NULL input");
    cJSON *base = cJSON_Duplicate(current, 1);
    if (!base)
        return sync__fail(SYNC_ENOMEM, "json diff: out of memory");
    int rc = SYNC_OK;
    for (size_t i = 0; i < count && rc == SYNC_OK; i++)
        rc = sync__json_patch_apply_text(&base, reverse[i], reverse_len[i]);
    if (rc == SYNC_OK)
        rc = sync__json_diff(base, current, max_len, 0, out);
    cJSON_Delete(base);
    return rc;
}

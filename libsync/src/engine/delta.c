/* "Diff once, send to many" (delta.h): the forward and reverse ops of each commit, the bounded
 * history, the shared patch frames of the head, the v2 first frame and the epoch. */
#include "delta.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "engine_internal.h"
#include "patch.h"

void sync__delta_init(sync__delta *d, int versions, size_t bytes)
{
    memset(d, 0, sizeof *d);
    d->off = versions < 0;
    d->max_versions = versions > 0 ? (size_t)versions : SYNC__HISTORY_VERSIONS;
    d->max_bytes = bytes ? bytes : SYNC__HISTORY_BYTES;
    sync__delta_new_epoch(d->epoch);
}

/* The v2 part, made on first use; NULL when out of memory. */
static sync__delta_v2 *v2_of(sync__delta *d)
{
    if (!d->v2 && (d->v2 = calloc(1, sizeof *d->v2)))
        d->v2->forward_version = -1;
    return d->v2;
}

void sync__delta_new_epoch(char *out)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char bytes[16];
    if (getrandom(bytes, sizeof bytes, 0) != (ssize_t)sizeof bytes) {
        /* no entropy to be had: the clock still makes a restart's epoch differ */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
        for (size_t i = 0; i < sizeof bytes; i++) {
            x = x * 6364136223846793005u + 1442695040888963407u;
            bytes[i] = (unsigned char)(x >> 56);
        }
    }
    for (size_t i = 0; i < sizeof bytes; i++)
        out[i] = alphabet[bytes[i] & 63];
    out[sizeof bytes] = '\0';
}

static void drop_frames(sync__delta *d);

int sync__epoch_valid(const char *epoch)
{
    if (!epoch)
        return 0;
    size_t n = strspn(epoch, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");
    return n > 0 && n <= SYNC__EPOCH_MAX && epoch[n] == '\0';
}

void sync__adapter_set_epoch_ops(sync_adapter *adapter, const sync__adapter_epoch *ops)
{
    if (adapter)
        adapter->epoch = ops;
}

void sync__delta_adopt_epoch(sync_engine *engine)
{
    sync_adapter *a = engine->adapter;
    if (!a || !a->epoch)
        return;
    const char *kept = a->epoch->loaded(a->userdata);
    if (sync__epoch_valid(kept) && strcmp(kept, engine->delta.epoch) != 0) {
        strcpy(engine->delta.epoch, kept);
        drop_frames(&engine->delta); /* an initial frame may carry the old epoch */
    }
    a->epoch->set(a->userdata, engine->delta.epoch);
}

static void drop_frames(sync__delta *d)
{
    if (!d->v2)
        return;
    for (size_t i = 0; i < d->v2->frame_count; i++)
        sync__frame_unref(d->v2->frames[i].frame);
    d->v2->frame_count = 0;
    d->v2->frame_next = 0;
    sync__frame_unref(d->v2->initial);
    d->v2->initial = NULL;
}

static void drop_ring(sync__delta *d)
{
    if (!d->v2)
        return;
    for (size_t i = 0; i < d->v2->count; i++)
        free(d->v2->ring[(d->v2->ring_head + i) % d->v2->ring_cap].ops);
    d->v2->count = 0;
    d->v2->ring_head = 0;
    d->v2->bytes = 0;
}

static void drop_history(sync__delta *d)
{
    if (!d->v2)
        return;
    drop_ring(d);
    free(d->v2->forward);
    d->v2->forward = NULL;
    d->v2->forward_len = 0;
    d->v2->forward_version = -1;
}

void sync__delta_drop_frames(sync__delta *d)
{
    if (!d->v2)
        return;
    drop_frames(d);
    free(d->v2->frames);
    d->v2->frames = NULL;
}

void sync__delta_release(sync__delta *d)
{
    if (!d->v2)
        return;
    sync__delta_drop_frames(d);
    drop_history(d);
    free(d->v2->ring);
    free(d->v2);
    d->v2 = NULL;
}

void sync__delta_reset(sync_engine *engine)
{
    drop_frames(&engine->delta);
    drop_history(&engine->delta);
}

static void pop_oldest(sync__delta *d)
{
    sync__delta_rev *r = &d->v2->ring[d->v2->ring_head];
    d->v2->bytes -= r->len;
    free(r->ops);
    r->ops = NULL;
    d->v2->ring_head = (d->v2->ring_head + 1) % d->v2->ring_cap;
    d->v2->count--;
}

void sync__delta_commit(sync_engine *engine, const cJSON *old, const cJSON *new_state)
{
    sync__delta *d = &engine->delta;
    if (d->off || !d->used || !d->v2 || !engine->versioning)
        return;
    int64_t version = atomic_load(&engine->version);
    sync__json_patch p = {0};
    if (sync__json_diff(old, new_state, 0, SYNC__JSON_DIFF_REVERSE, &p) != SYNC_OK) {
        /* no way back past this version: clients behind it get the state */
        drop_history(d);
        return;
    }
    free(d->v2->forward);
    d->v2->forward = p.text;
    d->v2->forward_len = p.len;
    d->v2->forward_version = version;
    if (p.reverse_len > d->max_bytes) {
        free(p.reverse);
        drop_ring(d);
        return;
    }
    if (d->v2->count == d->v2->ring_cap) {
        if (d->v2->count == d->max_versions) {
            pop_oldest(d);
        } else {
            size_t cap = d->v2->ring_cap ? d->v2->ring_cap * 2 : 8;
            if (cap > d->max_versions)
                cap = d->max_versions;
            sync__delta_rev *ring = malloc(cap * sizeof *ring);
            if (!ring) {
                free(p.reverse);
                drop_ring(d); /* the forward ops are kept; the history restarts here */
                return;
            }
            for (size_t i = 0; i < d->v2->count; i++)
                ring[i] = d->v2->ring[(d->v2->ring_head + i) % d->v2->ring_cap];
            free(d->v2->ring);
            d->v2->ring = ring;
            d->v2->ring_cap = cap;
            d->v2->ring_head = 0;
        }
    }
    while (d->v2->count && d->v2->bytes + p.reverse_len > d->max_bytes)
        pop_oldest(d);
    sync__delta_rev *r = &d->v2->ring[(d->v2->ring_head + d->v2->count) % d->v2->ring_cap];
    r->version = version;
    r->ops = p.reverse;
    r->len = p.reverse_len;
    d->v2->count++;
    d->v2->bytes += p.reverse_len;
}

/* The oldest version a patch can start from (the head's when there is no history). */
static int64_t oldest_base(const sync__delta *d, int64_t head)
{
    if (!d->v2->count)
        return d->v2->forward_version == head ? head - 1 : head;
    const sync__delta_rev *oldest = &d->v2->ring[d->v2->ring_head];
    const sync__delta_rev *newest =
        &d->v2->ring[(d->v2->ring_head + d->v2->count - 1) % d->v2->ring_cap];
    if (newest->version != head)
        return d->v2->forward_version == head ? head - 1 : head;
    return oldest->version - 1;
}

/* The ops from `base` to the head, as malloc()ed text; SYNC_ETOOBIG when longer than max_len. */
static int compose(sync_engine *engine, int64_t base, int64_t head, size_t max_len, char **out,
                   size_t *out_len)
{
    sync__delta *d = &engine->delta;
    size_t n = (size_t)(head - base);
    const char **texts = malloc(n * sizeof *texts);
    size_t *lens = malloc(n * sizeof *lens);
    if (!texts || !lens) {
        free(texts);
        free(lens);
        return SYNC_ENOMEM;
    }
    /* newest first */
    for (size_t i = 0; i < n; i++) {
        const sync__delta_rev *r =
            &d->v2->ring[(d->v2->ring_head + d->v2->count - 1 - i) % d->v2->ring_cap];
        texts[i] = r->ops;
        lens[i] = r->len;
    }
    sync__json_patch p = {0};
    int rc = sync__json_diff_since(engine->state, texts, lens, n, max_len, &p);
    free(texts);
    free(lens);
    if (rc != SYNC_OK)
        return rc;
    free(p.reverse);
    *out = p.text;
    *out_len = p.len;
    return SYNC_OK;
}

static sync__frame *patch_frame(sync_engine *engine, int64_t base)
{
    sync__delta *d = &engine->delta;
    int64_t head = atomic_load(&engine->version);
    uint64_t seq = engine->feed.head.seq;
    sync__frame *state = sync__engine_state_frame(engine, SYNC__FRAME_STATE_UPDATE);
    if (!state)
        return NULL;
    if (base > head || base < oldest_base(d, head))
        return state;
    const char *ops = NULL;
    size_t ops_len = 0;
    char *owned = NULL;
    if (base == head) {
        ops = "[]";
        ops_len = 2;
    } else if (base == head - 1 && d->v2->forward_version == head) {
        ops = d->v2->forward;
        ops_len = d->v2->forward_len;
    } else {
        int rc = compose(engine, base, head, state->len, &owned, &ops_len);
        if (rc == SYNC_ETOOBIG)
            return state;
        if (rc != SYNC_OK) {
            if (rc != SYNC_ENOMEM)
                sync__engine_log(engine, SYNC_LOG_WARN,
                                 "patch from version %" PRId64 " to %" PRId64 ": %s", base, head,
                                 sync_error_last());
            return state;
        }
        ops = owned;
    }
    char head_text[96];
    int head_len = snprintf(
        head_text, sizeof head_text,
        "{\"type\":\"patch\",\"base\":%" PRId64 ",\"version\":%" PRId64 ",\"ops\":", base, head);
    if ((size_t)head_len + ops_len + 1 >= state->len && base != head) {
        free(owned);
        return state;
    }
    sync__frame *frame = sync__frame_new_parts(SYNC__FRAME_PATCH, head_text, (size_t)head_len, ops,
                                               ops_len, "}", 1, head, seq);
    free(owned);
    if (frame)
        d->patches_built++;
    return frame;
}

sync__frame *sync__delta_frame(sync_engine *engine, int64_t base)
{
    sync__delta *d = &engine->delta;
    if (!engine->versioning || d->off || base < 0)
        return sync__engine_state_frame(engine, SYNC__FRAME_STATE_UPDATE);
    if (!v2_of(d))
        return NULL; /* out of memory, as for the frame itself */
    uint64_t seq = engine->feed.head.seq;
    if (d->v2->frames_seq != seq) {
        drop_frames(d);
        d->v2->frames_seq = seq;
    }
    for (size_t i = 0; i < d->v2->frame_count; i++)
        if (d->v2->frames[i].base == base)
            return d->v2->frames[i].frame;
    if (!d->v2->frames && !(d->v2->frames = malloc(SYNC__DELTA_FRAMES * sizeof *d->v2->frames)))
        return NULL; /* out of memory: the caller's failure path, as for the frame itself */
    sync__frame *frame = patch_frame(engine, base);
    if (!frame)
        return NULL;
    if (frame->kind == SYNC__FRAME_STATE_UPDATE)
        sync__frame_ref(frame); /* the cache holds its own reference either way */
    size_t slot;
    if (d->v2->frame_count < SYNC__DELTA_FRAMES) {
        slot = d->v2->frame_count++;
    } else {
        slot = d->v2->frame_next;
        d->v2->frame_next = (d->v2->frame_next + 1) % SYNC__DELTA_FRAMES;
        sync__frame_unref(d->v2->frames[slot].frame);
    }
    d->v2->frames[slot].base = base;
    d->v2->frames[slot].frame = frame;
    return frame;
}

static sync__frame *initial_frame(sync_engine *engine)
{
    sync__delta *d = &engine->delta;
    uint64_t seq = engine->feed.head.seq;
    if (d->v2->frames_seq != seq) {
        drop_frames(d);
        d->v2->frames_seq = seq;
    }
    if (d->v2->initial)
        return d->v2->initial;
    size_t len = 0;
    const char *text = sync__engine_state_text(engine, &len);
    if (!text)
        return NULL;
    int64_t version = atomic_load(&engine->version);
    static const char head[] = "{\"type\":\"initial_state\",\"data\":";
    char tail[SYNC__EPOCH_MAX + 64];
    int tail_len = snprintf(tail, sizeof tail, ",\"version\":%" PRId64 ",\"epoch\":\"%s\"}",
                            version, d->epoch);
    d->v2->initial = sync__frame_new_parts(SYNC__FRAME_INITIAL_STATE, head, sizeof head - 1, text,
                                           len, tail, (size_t)tail_len, version, seq);
    return d->v2->initial;
}

sync__frame *sync__delta_join_frame(sync_engine *engine, int64_t since, const char *epoch,
                                    int *resumed)
{
    *resumed = 0;
    if (!engine->versioning) {
        engine->delta.used = 1;
        return sync__engine_state_frame(engine, SYNC__FRAME_INITIAL_STATE);
    }
    if (!v2_of(&engine->delta))
        return NULL; /* out of memory: the join's failure path */
    engine->delta.used = 1;
    if (since >= 0 && epoch && strcmp(epoch, engine->delta.epoch) == 0 && !engine->delta.off) {
        sync__frame *frame = sync__delta_frame(engine, since);
        if (!frame)
            return NULL;
        if (frame->kind == SYNC__FRAME_PATCH) {
            *resumed = 1;
            return frame;
        }
    }
    return initial_frame(engine);
}

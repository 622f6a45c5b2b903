#include "frame.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>

#include "slab.h"

/* Frames come from the slabs: an idle room drops the frames it cached while it had clients
 * (sync__engine_drop_caches), and on the heap they would leave holes between the rooms' blocks. */
static sync__frame *frame_init(sync__frame *frame, sync__frame_kind kind, size_t len)
{
    if (!frame)
        return NULL;
    atomic_init(&frame->refs, 1);
    frame->kind = kind;
    frame->seq = 0;
    frame->version = -1;
    frame->len = len;
    sync__frame_text(frame)[len] = '\0';
    return frame;
}

static sync__frame *frame_alloc(sync__frame_kind kind, size_t len)
{
    return frame_init(sync__slab_malloc(sizeof(sync__frame) + SYNC__FRAME_HEADROOM + len + 1), kind,
                      len);
}

sync__frame *sync__frame_new_text(sync__frame_kind kind, const char *text, size_t len)
{
    sync__frame *frame = frame_alloc(kind, len);
    if (frame)
        memcpy(sync__frame_text(frame), text, len);
    return frame;
}

sync__frame *sync__frame_new_state(sync__frame_kind kind, const char *state_json, size_t state_len,
                                   int64_t version, uint64_t seq)
{
    const char *type = kind == SYNC__FRAME_INITIAL_STATE ? "initial_state" : "state_update";
    char head[48];
    char tail[48];
    int head_len = snprintf(head, sizeof head, "{\"type\":\"%s\",\"data\":", type);
    int tail_len = version >= 0 ? snprintf(tail, sizeof tail, ",\"version\":%" PRId64 "}", version)
                                : snprintf(tail, sizeof tail, "}");
    size_t len = (size_t)head_len + state_len + (size_t)tail_len;
    sync__frame *frame = frame_alloc(kind, len);
    if (!frame)
        return NULL;
    char *text = sync__frame_text(frame);
    memcpy(text, head, (size_t)head_len);
    memcpy(text + head_len, state_json, state_len);
    memcpy(text + (size_t)head_len + state_len, tail, (size_t)tail_len);
    frame->seq = seq;
    frame->version = version;
    return frame;
}

sync__frame *sync__frame_new_parts(sync__frame_kind kind, const char *head, size_t head_len,
                                   const char *body, size_t body_len, const char *tail,
                                   size_t tail_len, int64_t version, uint64_t seq)
{
    sync__frame *frame = frame_alloc(kind, head_len + body_len + tail_len);
    if (!frame)
        return NULL;
    char *text = sync__frame_text(frame);
    memcpy(text, head, head_len);
    memcpy(text + head_len, body, body_len);
    memcpy(text + head_len + body_len, tail, tail_len);
    frame->seq = seq;
    frame->version = version;
    return frame;
}

sync__frame *sync__frame_ref(sync__frame *frame)
{
    atomic_fetch_add_explicit(&frame->refs, 1, memory_order_relaxed);
    return frame;
}

void sync__frame_unref(sync__frame *frame)
{
    if (frame && atomic_fetch_sub_explicit(&frame->refs, 1, memory_order_acq_rel) == 1)
        sync__slab_free(frame);
}

static const char ping_text[] = "{\"type\":\"ping\"}";
/* Kept for the life of the process (its one reference is never dropped): an engine per room
 * would otherwise hold a copy of the same 15 bytes. */
static _Atomic(sync__frame *) ping_frame;
static pthread_mutex_t ping_lock = PTHREAD_MUTEX_INITIALIZER;

sync__frame *sync__frame_ping(void)
{
    sync__frame *frame = atomic_load_explicit(&ping_frame, memory_order_acquire);
    if (frame)
        return frame;
    pthread_mutex_lock(&ping_lock);
    frame = atomic_load_explicit(&ping_frame, memory_order_relaxed);
    if (!frame) {
        /* on the heap: a block that lives as long as the process would keep its slab chunk,
         * and the pages other frames freed there, resident */
        size_t len = sizeof ping_text - 1;
        frame = frame_init(malloc(sizeof *frame + SYNC__FRAME_HEADROOM + len + 1), SYNC__FRAME_PING,
                           len);
        if (frame)
            memcpy(sync__frame_text(frame), ping_text, len);
        atomic_store_explicit(&ping_frame, frame, memory_order_release);
    }
    pthread_mutex_unlock(&ping_lock);
    return frame;
}

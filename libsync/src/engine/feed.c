/* The change feed (feed.h): the head record a commit appends, the one persistence policy, and the
 * side-effect-free read and the explicit flush the transports use. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "error.h"
#include "slab.h"

/* ---- the persistence policy ----------------------------------------------------------------- */

int sync__feed_save_due(const sync_engine *engine, sync__feed_point point)
{
    /* a cluster's room is saved by its owner node, fenced (engine_cluster.h) */
    if (!engine->adapter || engine->cluster.forward)
        return 0;
    const sync__feed *f = &engine->feed;
    switch (point) {
    case FEED_APPENDED:
        return engine->persist_mode == SYNC_PERSIST_ON_CHANGE;
    case FEED_SENDING:
        /* once per record, however many frames of it leave; a failed save is not retried here
         * (the state is still served: availability), the next record or sync saves again */
        return engine->persist_mode == SYNC_PERSIST_BEFORE_SEND &&
               f->persisted_seq != f->head.seq && f->persist_tried_seq != f->head.seq;
    case FEED_SYNC:
        return 1;
    }
    return 0;
}

int sync__feed_sendable(const sync_engine *engine)
{
    const sync__feed *f = &engine->feed;
    return f->saving_seq != f->head.seq && !sync__feed_save_due(engine, FEED_SENDING);
}

/* ---- records -------------------------------------------------------------------------------- */

void sync__feed_append(sync_engine *engine)
{
    engine->feed.head.seq++;
    if (engine->versioning)
        atomic_fetch_add(&engine->version, 1);
}

void sync__feed_append_saved(sync_engine *engine)
{
    engine->feed.head.seq++;
    engine->feed.persisted_seq = engine->feed.head.seq;
}

void sync__feed_release(sync__feed *feed)
{
    sync__slab_free(feed->head.json);
    sync__frame_unref(feed->head.update_frame);
    sync__frame_unref(feed->head.initial_frame);
    memset(&feed->head, 0, sizeof feed->head);
}

/* cJSON_PrintPreallocated wants a few bytes of slack beyond the text it writes. */
#define PRINT_SLACK 64

const char *sync__engine_state_text(sync_engine *engine, size_t *len)
{
    sync__feed_record *r = &engine->feed.head;
    if (!r->json || r->json_seq != r->seq) {
        if (r->json_cap > 0 && r->json_cap <= INT_MAX &&
            cJSON_PrintPreallocated(engine->state, r->json, (int)r->json_cap, 0)) {
            r->json_len = strlen(r->json);
        } else {
            char *text = cJSON_PrintUnformatted(engine->state);
            if (!text)
                return NULL;
            size_t text_len = strlen(text);
            size_t cap = text_len + text_len / 2 + PRINT_SLACK;
            char *buffer = sync__slab_malloc(cap);
            if (!buffer) {
                cJSON_free(text);
                return NULL;
            }
            memcpy(buffer, text, text_len + 1);
            cJSON_free(text);
            sync__slab_free(r->json);
            r->json = buffer;
            r->json_cap = cap;
            r->json_len = text_len;
        }
        r->json_seq = r->seq;
        engine->stats.serialisations++;
        engine->stats.state_bytes = r->json_len;
    }
    if (len)
        *len = r->json_len;
    return r->json;
}

sync__frame *sync__engine_state_frame(sync_engine *engine, sync__frame_kind kind)
{
    sync__feed_record *r = &engine->feed.head;
    sync__frame **slot = kind == SYNC__FRAME_INITIAL_STATE ? &r->initial_frame : &r->update_frame;
    if (*slot && (*slot)->seq == r->seq)
        return *slot;
    size_t len = 0;
    const char *text = sync__engine_state_text(engine, &len);
    if (!text)
        return NULL;
    sync__frame *frame = sync__frame_new_state(
        kind, text, len, engine->versioning ? atomic_load(&engine->version) : -1, r->seq);
    if (!frame)
        return NULL;
    sync__frame_unref(*slot);
    *slot = frame;
    return frame;
}

void sync__feed_drop_caches(sync_engine *engine)
{
    sync__feed_record *r = &engine->feed.head;
    sync__frame_unref(r->update_frame);
    r->update_frame = NULL;
    sync__frame_unref(r->initial_frame);
    r->initial_frame = NULL;
    sync__delta_drop_frames(&engine->delta);
    /* running work may hold the text (a handler's sync_msg_state_json, a save in flight) */
    if (!engine->busy && !engine->feed.saving_seq) {
        sync__slab_free(r->json);
        r->json = NULL;
        r->json_len = r->json_cap = 0;
        r->json_seq = 0;
    }
}

/* ---- consumers ------------------------------------------------------------------------------ */

void sync__feed_notify_readers(sync_engine *engine, int force)
{
    sync__feed *f = &engine->feed;
    for (int i = 0; i < f->reader_count; i++)
        f->readers[i].state_moved(f->readers[i].userdata, force);
}

/* Whether a reader's flush would fail until the queue is through: the head waits for its save
 * before send, which needs the engine idle, and queued work starts as soon as the running
 * operation ends. A reader told now would only be told again (a binding's batch: one notice per
 * message, each a wake of the server's service thread for a flush that cannot happen). */
static int flush_blocked(const sync_engine *engine)
{
    return engine->queue_head != NULL && sync__feed_save_due(engine, FEED_SENDING);
}

void sync__feed_moved(sync_engine *engine, int force)
{
    if (flush_blocked(engine)) {
        if (!force) {
            engine->feed.flush_waiting = 1; /* told when the queue is through (op_finished) */
            return;
        }
    } else {
        /* this notice is the one a waiting flush was owed: once is enough */
        engine->feed.flush_waiting = 0;
    }
    sync__feed_notify_readers(engine, force);
}

void sync__feed_op_finished(sync_engine *engine)
{
    if (!engine->feed.flush_waiting || engine->disposed || flush_blocked(engine))
        return;
    engine->feed.flush_waiting = 0;
    sync__feed_notify_readers(engine, 0);
}

/* ---- transport.h: read, flush, readers ------------------------------------------------------ */

static int enter(sync_engine *engine)
{
    if (!engine)
        return 0;
    sync__engine_lock(engine);
    if (engine->disposed) {
        sync__engine_unlock(engine);
        return 0;
    }
    return 1;
}

sync__frame *sync__feed_read(sync_engine *engine, uint64_t after_seq, int force)
{
    if (!enter(engine))
        return NULL;
    sync__frame *frame = NULL;
    if ((engine->feed.head.seq > after_seq || force) && sync__feed_sendable(engine)) {
        frame = sync__engine_state_frame(engine, SYNC__FRAME_STATE_UPDATE);
        if (frame)
            sync__frame_ref(frame);
    }
    sync__engine_unlock(engine);
    return frame;
}

sync__frame *sync__feed_read_v2(sync_engine *engine, uint64_t after_seq, int64_t base, int force)
{
    if (!enter(engine))
        return NULL;
    sync__frame *frame = NULL;
    if ((engine->feed.head.seq > after_seq || force) && sync__feed_sendable(engine)) {
        frame = sync__delta_frame(engine, force ? -1 : base);
        if (frame)
            sync__frame_ref(frame);
    }
    sync__engine_unlock(engine);
    return frame;
}

sync__frame *sync__feed_join_frame_locked(sync_engine *engine, int64_t since, const char *epoch,
                                          int *resumed)
{
    sync__frame *frame = sync__delta_join_frame(engine, since, epoch, resumed);
    return frame ? sync__frame_ref(frame) : NULL;
}

int sync__feed_flush(sync_engine *engine)
{
    if (!enter(engine))
        return 0;
    sync__feed *f = &engine->feed;
    int ready = 1;
    if (f->saving_seq == f->head.seq) {
        ready = 0;
    } else if (sync__feed_save_due(engine, FEED_SENDING)) {
        /* the save needs the adapter to itself: it waits while other work runs */
        sync__op *op = engine->busy ? NULL : sync__op_new(OP_FLUSH);
        if (op) {
            ready = sync__op_submit(engine, op) != SYNC_PENDING;
        } else if (engine->busy) {
            ready = 0;
        } else {
            /* serve the state unsaved rather than never (availability), as a failed save does */
            f->persist_tried_seq = f->head.seq;
            sync__engine_report(engine, SYNC_ENOMEM, "sync", NULL,
                                "out of memory starting the save of version %lld",
                                (long long)atomic_load(&engine->version));
        }
    }
    if (!ready)
        f->flush_waiting = 1;
    sync__engine_unlock(engine);
    return ready;
}

int sync__engine_add_listener(sync_engine *engine, const sync__engine_listener *listener)
{
    if (!engine || !listener || !listener->state_moved || !listener->deadline_moved)
        return sync__fail(SYNC_EINVAL,
                          "sync__engine_add_listener: engine and callbacks are required");
    sync__engine_lock(engine);
    sync__feed *f = &engine->feed;
    int rc = SYNC_OK;
    sync__engine_listener *grown = NULL;
    if (f->reader_count == SYNC__ENGINE_MAX_LISTENERS)
        rc = sync__fail(SYNC_ELIMIT, "the engine is already served by %d servers",
                        SYNC__ENGINE_MAX_LISTENERS);
    else if (!(grown = realloc(f->readers, (size_t)(f->reader_count + 1) * sizeof *grown)))
        rc = sync__fail(SYNC_ENOMEM, "out of memory adding a server to an engine");
    else {
        f->readers = grown;
        f->readers[f->reader_count++] = *listener;
    }
    sync__engine_unlock(engine);
    return rc;
}

void sync__engine_remove_listener(sync_engine *engine, void *userdata)
{
    if (!engine)
        return;
    sync__engine_lock(engine);
    sync__feed *f = &engine->feed;
    for (int i = 0; i < f->reader_count; i++) {
        if (f->readers[i].userdata != userdata)
            continue;
        f->readers[i] = f->readers[--f->reader_count];
        if (!f->reader_count) {
            free(f->readers);
            f->readers = NULL;
        }
        /* it may have been the one waiting on the ticker deadline: the next step tells everyone */
        engine->ticker_deadline_ms = -1;
        break;
    }
    sync__engine_unlock(engine);
}

void sync__engine_notify_deadline(sync_engine *engine)
{
    sync__feed *f = &engine->feed;
    for (int i = 0; i < f->reader_count; i++)
        f->readers[i].deadline_moved(f->readers[i].userdata);
}

/*
 * The change feed: the one path from a commit to the store and to every transport.
 *
 * Each commit appends one record (its seq, its version, the committed state, and the frames of
 * that state, serialised once, lazily, and shared). The feed keeps only its head: a state
 * supersedes the one before, so a consumer that is several records behind gets the newest and
 * never a backlog (a later patch slot will keep the previous record to diff against).
 *
 *                      commit (engine_ops.c)
 *                         |  sync__feed_append
 *                         v
 *                 +---- feed head ----+   persistence policy: sync__feed_save_due()
 *                 |  seq, version,    |-> ON_CHANGE: saved at append
 *                 |  state, frames    |   BEFORE_SEND: saved by a flush, before a frame leaves
 *                 +-------------------+   MANUAL: sync() only
 *                  |        |       |
 *        readers:  |   push conns   (later: Redis)
 *  servers (moved, |   (sync_conn_new: sent by the engine after the flush)
 *  then flush once |
 *  per loop turn and read)
 *
 * Reading the feed (sync__feed_read) has no side effects: it never saves. A transport that must not
 * send an unsaved state asks for a flush (sync__feed_flush): the server once per loop turn for all
 * the changes of that turn (group commit), and before a writeable callback reads. Everything here
 * runs with the engine lock held, except the calls transport.h exports, which take it.
 */
#ifndef LIBSYNC_SRC_FEED_H
#define LIBSYNC_SRC_FEED_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "libsync/engine.h"

/* A transport that serves the engine's connections itself (transport.h's listener). */
typedef struct sync__engine_listener {
    void (*state_moved)(void *userdata, int force);
    void (*deadline_moved)(void *userdata);
    void *userdata;
} sync__engine_listener;

enum { SYNC__ENGINE_MAX_LISTENERS = 8 };

/* The head record: what the newest commit produced. Its state and version are the engine's
 * committed ones (engine->state, engine->version), not copied: the feed keeps the head only, so
 * they always belong to it. */
typedef struct sync__feed_record {
    uint64_t seq; /* one per commit, also when user-visible versioning is off */
    /* its compact JSON, reused from change to change: most changes fit the last buffer */
    char *json;
    size_t json_len;
    size_t json_cap;
    uint64_t json_seq;
    sync__frame *update_frame;
    sync__frame *initial_frame;
} sync__feed_record;

typedef struct sync__feed {
    sync__feed_record head;
    /* persistence of the head */
    uint64_t persisted_seq;
    uint64_t persist_tried_seq;
    uint64_t saving_seq; /* seq of a save still in flight, 0 when none */
    int flush_waiting;   /* a flush could not finish at once: readers hear again when it does */
    /* consumers */
    /* as many as serve it (one, for a room: thousands of idle rooms each keep only theirs) */
    sync__engine_listener *readers;
    int reader_count;
    size_t push_count; /* push connections: the engine sends them each record itself, after the
                          flush, in a walk that survives re-entry (their send may call back in) */
} sync__feed;

/* Where the persistence policy is asked. */
typedef enum sync__feed_point {
    FEED_APPENDED, /* a record was just appended (ON_CHANGE saves here) */
    FEED_SENDING,  /* a frame of the head is about to leave (BEFORE_SEND saves here, once) */
    FEED_SYNC      /* sync(), the sync interval, a server's stop: always, with an adapter */
} sync__feed_point;

struct sync_engine;

/* The persistence policy: 1 when the head must be saved at `point` before going on. */
int sync__feed_save_due(const struct sync_engine *engine, sync__feed_point point);
/* 1 when a frame of the head may leave now (saved, or its save failed and was reported, or no
 * save is due before sending). */
int sync__feed_sendable(const struct sync_engine *engine);
/* A new record: seq (and the version when versioning is on) + 1 for the state just committed. */
void sync__feed_append(struct sync_engine *engine);
/* A record that is already in the store (the load at start). */
void sync__feed_append_saved(struct sync_engine *engine);
/* Tells every reader that the head moved (or, with force, that a broadcast was asked for). */
void sync__feed_notify_readers(struct sync_engine *engine, int force);
/* A commit moved the head (or, with force, a broadcast was asked for): tells every reader, but
 * not while their flush could not succeed before the engine's queue is through (BEFORE_SEND with
 * work queued): they hear once when it is (sync__feed_op_finished). */
void sync__feed_moved(struct sync_engine *engine, int force);
/* Runs when an operation ends: readers waiting for a flush that could not finish are told that it
 * can, unless queued work is about to keep the engine busy (then the last operation tells). */
void sync__feed_op_finished(struct sync_engine *engine);
void sync__feed_release(sync__feed *feed);
/* The engine's last connection left: the head's frames and its text go (slab memory; made again
 * for the next reader). Thousands of idle rooms then keep only their state. */
void sync__feed_drop_caches(struct sync_engine *engine);

#endif

/*
 * The private contract between the engine and a transport that wants more than the public
 * send/close callbacks: shared frames (no copy per connection) and reading the change feed
 * (feed.h) itself, where the engine only says the head moved on and the transport fetches the
 * newest frame when its sockets can take it. The built-in server is such a transport;
 * sync_conn_new() makes push connections, which the engine sends each record itself.
 *
 * Locking: the engine calls these ops with its own lock held, from whichever thread drives it.
 * An op may take a lock of the transport's own (engine lock -> transport lock), so a transport must
 * never call into an engine while holding its own lock.
 */
#ifndef LIBSYNC_SRC_TRANSPORT_H
#define LIBSYNC_SRC_TRANSPORT_H

#include "feed.h"
#include "frame.h"
#include "libsync/engine.h"

typedef struct sync__transport_ops {
    /* Queues or sends a frame (the initial state, replies, pings, broadcast texts); the
     * transport takes its own reference when it keeps it. Returns SYNC_OK or a negative status
     * (then the engine reports it). State updates are not sent through it: the transport reads
     * them from the feed. */
    int (*send_frame)(void *userdata, sync__frame *frame);
    void (*close)(void *userdata, int code, const char *reason);
    void (*free_userdata)(void *userdata);
    /* Optional, both or neither: where the connection object itself lives (the server keeps its
     * connections' memory apart from the rooms', server_alloc.c). NULL: calloc()/free(). */
    void *(*calloc_conn)(size_t size);
    void (*free_conn)(void *ptr);
} sync__transport_ops;

/* Like sync_conn_new(), with a transport's private ops, which are not copied: they must outlive
 * the connection (a static table; every connection of a transport shares it). Private, so not bound
 * by common.h's rule: on failure the userdata stays the transport's (the server's connection object
 * lives on with its socket and is freed with it). */
int sync__conn_new_transport(sync_conn **out, const sync__transport_ops *ops, void *userdata);

/* Like sync__conn_new_transport, with the transport's connection object in the handle's own block,
 * right after it: `size` bytes, zeroed, aligned to SYNC__CONN_OBJECT_ALIGN, given to the ops as
 * their userdata and found again from the handle with sync__conn_object() and back with
 * sync__conn_of(). One allocation per connection and no pointer from either to the other (the
 * server keeps 10,000s of idle ones, docs/PERFORMANCE.md). ops->free_userdata releases what the
 * object holds, not the object: it goes with the handle (ops->free_conn). */
#define SYNC__CONN_OBJECT_ALIGN 8
int sync__conn_new_transport_object(sync_conn **out, const sync__transport_ops *ops, size_t size);
void *sync__conn_object(sync_conn *conn);
sync_conn *sync__conn_of(void *object);

/*
 * Reads the feed's head: a new reference to the state_update frame of the newest record when it
 * is newer than `after_seq` (or when `force`) and may be sent, else NULL. The frame is built once
 * per record and shared. No side effects: while the head still has to be saved first
 * (SYNC_PERSIST_BEFORE_SEND) or its save is in flight, this is NULL until a flush made it
 * sendable.
 */
sync__frame *sync__feed_read(sync_engine *engine, uint64_t after_seq, int force);

/*
 * Makes the head sendable: in SYNC_PERSIST_BEFORE_SEND saves it unless it was saved or tried
 * already. 1 when it is sendable now; 0 when that finishes later (an adapter that completes later,
 * or other work of the engine first), and then every listener's state_moved is called again. The
 * server calls it once per loop turn and engine, for all the changes of that turn: group commit.
 */
int sync__feed_flush(sync_engine *engine);

/*
 * The v2 wire (docs/PROTOCOL.md, delta.h). Like sync__feed_read, for a client whose last frame
 * brought it to version `base`: the head's shared patch frame from `base` (built once per base
 * and version), or its state_update frame when that is smaller, `base` is out of the history, or
 * with `force`. NULL when nothing is newer than `after_seq` or the head is not sendable yet.
 */
sync__frame *sync__feed_read_v2(sync_engine *engine, uint64_t after_seq, int64_t base, int force);

/*
 * Engine lock held (from a transport's send_frame, given the initial state): the first frame of
 * a v2 connection instead. With `epoch` naming the engine's history and `since` a version the head
 * can be reached from, the patch from `since` (*resumed = 1; empty ops when nothing changed);
 * else the v2 initial_state, which carries the version and the epoch. A new reference; NULL on
 * ENOMEM.
 */
sync__frame *sync__feed_join_frame_locked(sync_engine *engine, int64_t since, const char *epoch,
                                          int *resumed);

/* Sets auto_broadcast on an engine (the server turns it on for the engines it mounts). */
void sync__engine_set_auto_broadcast(sync_engine *engine, int on);

/*
 * A transport that serves connections of an engine (the built-in server) registers as a listener:
 * a reader of its feed. Engine lock held, any thread, no call back into the engine.
 *
 * state_moved: a record was appended (or, with force, a broadcast was asked for), once per record
 * for the whole engine; each transport finds its connections behind (last sent seq older than the
 * head's) itself, then flushes and reads. While the head waits for its save before send and more
 * work is queued (a binding's batch), no flush could succeed: the records of that run are told
 * once, when the queue is through (feed.h, sync__feed_moved).
 *
 * deadline_moved: the engine's timer deadlines moved. Engines mounted on a server are ticked by
 * it: a SYNC_TIMERS_MANUAL engine's listener re-arms its timer; a SYNC_TIMERS_THREAD engine never
 * calls it.
 *
 * Several listeners may serve one engine at once (one engine on a ws:// and a wss:// server), up to
 * SYNC__ENGINE_MAX_LISTENERS (feed.h).
 */
/* Copies `listener`; SYNC_ELIMIT when SYNC__ENGINE_MAX_LISTENERS already serve the engine. */
int sync__engine_add_listener(sync_engine *engine, const sync__engine_listener *listener);
/* Removes the listener registered with `userdata` (nothing when there is none). */
void sync__engine_remove_listener(sync_engine *engine, void *userdata);
/* Calls every listener's deadline_moved (engine lock held). */
void sync__engine_notify_deadline(sync_engine *engine);

/* sync_engine_handle_message() for a text the transport has already found to be well-formed
 * UTF-8, as RFC 6455 requires of a text frame: the engine does not check that again (it still
 * refuses NUL bytes, which UTF-8 allows). */
int sync__engine_handle_valid_text(sync_engine *engine, sync_conn *conn, const char *text,
                                   size_t len);

#endif

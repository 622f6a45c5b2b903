/*
 * The private contract between the engine and a transport that wants more than the public
 * send/close callbacks: shared frames (no copy per connection) and "pull" broadcasts, where the
 * engine only says the state moved on and the transport fetches the latest frame when its socket
 * can take it. The built-in server is such a transport; sync_conn_new() wraps the public
 * callbacks into a push transport.
 *
 * Locking: the engine calls these ops with its own lock held, from whichever thread drives it.
 * An op may take a lock of the transport's own (engine lock -> transport lock), so a transport must
 * never call into an engine while holding its own lock.
 */
#ifndef LIBSYNC_SRC_TRANSPORT_H
#define LIBSYNC_SRC_TRANSPORT_H

#include "libsync/engine.h"
#include "frame.h"

typedef struct sync_transport_ops {
    /* Queues or sends a frame; the transport takes its own reference when it keeps it.
     * Returns SYNC_OK or a negative status (then the engine reports it). */
    int (*send_frame)(void *userdata, sync_frame *frame);
    /* The state changed (or, with force, a broadcast was asked for). The transport later calls
     * sync_engine_pull_state_frame() when it can write. NULL = a push transport: the engine sends
     * state frames through send_frame itself. It must not call into the engine: the engine walks
     * its connection list while calling it. */
    void (*state_changed)(void *userdata, int force);
    void (*close)(void *userdata, int code, const char *reason);
    void (*free_userdata)(void *userdata);
} sync_transport_ops;

/* Like sync_conn_new(), with a transport's private ops (copied). */
int sync_conn_new_transport(sync_conn **out, const sync_transport_ops *ops, void *userdata);

/*
 * Pull mode: a new reference to the state_update frame of the current state when it is newer
 * than `after_seq` (or when `force`), else NULL. The frame is built once per change and shared.
 * Also NULL while the current state still waits to be persisted (SYNC_PERSIST_BEFORE_SEND with an
 * adapter that finishes later): state_changed() is called again once it is saved.
 */
sync_frame *sync_engine_pull_state_frame(sync_engine *engine, uint64_t after_seq, int force);

/* Sets auto_broadcast on an engine (the server turns it on for the engines it mounts). */
void sync_engine_set_auto_broadcast(sync_engine *engine, int on);

/*
 * A transport that serves an engine's pull connections itself (the built-in server) registers as
 * a listener. Engine lock held, any thread, no call back into the engine (like state_changed).
 *
 * state_moved: the state changed (or, with force, a broadcast was asked for). With at least one
 * listener the engine calls this once per change instead of each pull connection's state_changed,
 * and each transport finds its connections behind (last sent seq older than the engine's) itself.
 *
 * deadline_moved: the engine's timer deadlines moved. Engines mounted on a server are ticked by
 * it: a SYNC_TIMERS_MANUAL engine's listener re-arms its timer; a SYNC_TIMERS_THREAD engine never
 * calls it.
 *
 * Several listeners may serve one engine at once (one engine on a ws:// and a wss:// server).
 */
typedef struct sync_engine_listener {
    void (*state_moved)(void *userdata, int force);
    void (*deadline_moved)(void *userdata);
    void *userdata;
} sync_engine_listener;

enum { SYNC_ENGINE_MAX_LISTENERS = 8 };

/* Copies `listener`; SYNC_ELIMIT when SYNC_ENGINE_MAX_LISTENERS already serve the engine. */
int sync_engine_add_listener(sync_engine *engine, const sync_engine_listener *listener);
/* Removes the listener registered with `userdata` (nothing when there is none). */
void sync_engine_remove_listener(sync_engine *engine, void *userdata);
/* Calls every listener's deadline_moved (engine lock held). */
void sync_engine_notify_deadline(sync_engine *engine);

#endif

/*
 * libsync — the engine: one JSON application state, its version, the connections that watch it,
 * and the pipeline that turns client messages into state changes.
 *
 * Wire protocol (JSON text frames; a client that reads only "type" and "data" needs nothing else,
 * docs/PORTING.md maps the API to the TypeScript library it re-creates):
 *   server -> client  {"type":"initial_state","data":STATE,"version":V}   on open
 *   server -> client  {"type":"state_update","data":STATE,"version":V}    on every broadcast
 *   server -> client  {"type":"ping"}                                      every heartbeat
 *   server -> client  {"type":"error","error":TEXT,"context":CTX}          to the sender of a bad
 *                                                                          message (opt-in)
 *   client -> server  pong                                                 (bare text, not JSON)
 * With ping_timeout_ms set, anything a client sends counts as life (a message, "pong", and what a
 * transport reports with sync_engine_handle_alive()); a client silent that long is closed with
 * SYNC_CLOSE_PING_TIMEOUT.
 *   client -> server  {"type":"<name>", ...}                               application message
 *
 * Message pipeline (one message at a time per engine, strictly in arrival order):
 *   "pong" check -> size limit -> UTF-8 + JSON parse (depth limit, finite numbers, no \u0000 in a
 *   string, no repeated member name) -> validator -> middleware[0..n) -> must be an object with a
 *   string "type" -> handler for that type -> state check (finite numbers, no repeated name: else
 *   the handler fails with SYNC_EINVAL) -> commit (version + 1, on_state_change, persist,
 *   broadcast).
 * A failure at any step drops the message, reports it through on_error and leaves state and
 * version exactly as they were (a handler's partial change is rolled back).
 *
 * Asynchronous callbacks. The validator, each middleware and each handler may finish later:
 * it returns SYNC_PENDING and later calls sync_msg_complete() exactly once, from any thread.
 * Until then the engine queues every later message, set_state, sync and backup of that engine
 * (they run in order once it completes), so the order of changes is always the order of arrival.
 * Adapters finish later the same way (adapter.h). Calls that may be queued return SYNC_PENDING
 * when they were; sync_engine_when_idle() tells when the queue has drained.
 *
 * Threads. Every function here may be called from any thread unless its comment says otherwise;
 * an engine serialises its work with a lock of its own (recursive: a handler or hook may call
 * the engine's functions on the same thread). Callbacks run on the thread that drives the engine
 * at that moment (the thread that called handle_message, set_state, tick, or a completion call),
 * with the engine's lock held: a callback must not block waiting for another thread that is
 * itself calling into the same engine. A callback must not call sync_engine_free() on its own
 * engine. See docs/ARCHITECTURE.md.
 */
#ifndef LIBSYNC_ENGINE_H
#define LIBSYNC_ENGINE_H

#include <cjson/cJSON.h>

#include "libsync/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sync_engine sync_engine;   /**< one state + its connections; opaque */
typedef struct sync_conn sync_conn;       /**< one client connection; opaque, reference counted */
typedef struct sync_msg sync_msg;         /**< one message in flight through the pipeline */
typedef struct sync_adapter sync_adapter; /**< a persistence backend (adapter.h) */

/* ------------------------------------------------------------------------------------------ */
/* Hooks                                                                                       */
/* ------------------------------------------------------------------------------------------ */

#define SYNC_HOOKS_VERSION 1

/**
 * Event hooks. Every member may be NULL. JSON values and strings passed to a hook are
 * borrowed for the duration of the call. Hooks run with the engine's lock held on the thread
 * that drives the engine; a hook may call the engine's functions (get_state, broadcast...).
 */
typedef struct sync_hooks {
    unsigned int version; /**< SYNC_HOOKS_VERSION */
    void (*on_connect)(sync_engine *engine, sync_conn *conn, void *userdata);
    void (*on_disconnect)(sync_engine *engine, sync_conn *conn, void *userdata);
    /** Only when old and new differ as JSON. */
    void (*on_state_change)(sync_engine *engine, const cJSON *old_state, const cJSON *new_state,
                            void *userdata);
    void (*on_sync)(sync_engine *engine, const cJSON *state, int64_t version, void *userdata);
    void (*on_backup)(sync_engine *engine, int64_t timestamp_ms, int64_t version, void *userdata);
    void (*on_ping)(sync_engine *engine, sync_conn *conn, void *userdata);
    void (*on_pong)(sync_engine *engine, sync_conn *conn, void *userdata);
    void (*on_ping_timeout)(sync_engine *engine, sync_conn *conn, void *userdata);
    /** Every reported error: its status, a readable message, the context where it happened, and
     *  the connection involved or NULL. Contexts: "message" (a message as received: size,
     *  UTF-8, JSON, depth, shape, no handler for its type), "validator", "middleware",
     *  "handler:<type>" (that type's handler), "open" (joining a connection), "set_state" (a state
     *  given from outside a handler), "broadcast", "heartbeat", "sync", "load" and "backup" (the
     *  adapter's save, load, backup). */
    void (*on_error)(sync_engine *engine, int status, const char *message, const char *context,
                     sync_conn *conn, void *userdata);
    void *userdata;
    /** Runs when the hooks are replaced, when the engine is freed, and when setting fails. */
    sync_free_cb free_userdata;
} sync_hooks;

#define SYNC_HOOKS_INIT                                                                            \
    {                                                                                              \
        SYNC_HOOKS_VERSION, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL       \
    }

/* ------------------------------------------------------------------------------------------ */
/* Options                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/** When a changed state is written to the adapter. See docs/ARCHITECTURE.md "Durability". */
typedef enum sync_persist_mode {
    /** Every change is saved (sync()) as part of the change, before the change is broadcast and
     *  before the call that made it returns. */
    SYNC_PERSIST_ON_CHANGE = 0,
    /** Group commit: changes are saved once per version that is about to be sent, before any
     *  client receives it. States that no client ever saw may be lost by a crash; every state a
     *  client has received was saved first. The built-in server's default. */
    SYNC_PERSIST_BEFORE_SEND = 1,
    /** Only sync(), the sync interval and dispose save. A crash loses changes since the last. */
    SYNC_PERSIST_MANUAL = 2
} sync_persist_mode;

/** Who runs the heartbeat, sync-interval and step-timeout timers. */
typedef enum sync_timer_mode {
    /** The embedder calls sync_engine_tick() when sync_engine_next_deadline_ms() is due (or
     *  the built-in server does, when the engine is mounted on it). No hidden thread. */
    SYNC_TIMERS_MANUAL = 0,
    /** The engine starts one thread of its own that ticks it. Hooks then run on that thread. */
    SYNC_TIMERS_THREAD = 1
} sync_timer_mode;

/* 2 added step_timeout_ms, 3 log_free_userdata. A caller built against an older version keeps
 * passing it and the shorter struct: only the fields of the version given are read. */
#define SYNC_ENGINE_OPTIONS_VERSION 4

typedef struct sync_engine_options {
    /** Must be SYNC_ENGINE_OPTIONS_VERSION (set by SYNC_ENGINE_OPTIONS_INIT). */
    unsigned int version;
    /** Initial state as JSON text (any JSON value); NULL means {}. Copied. Used when there is no
     *  adapter or the adapter's store has never been saved. */
    const char *initial_state_json;
    /** 1: version starts at 0 and grows by 1 per change. 0: version is -1 and never changes. */
    int enable_versioning;
    /** Persistence adapter, or NULL. The engine takes ownership, also when sync_engine_new
     *  fails, and frees it with the engine. */
    sync_adapter *adapter;
    /** Heartbeat: every interval each connection gets {"type":"ping"}. 0 = off. */
    int64_t heartbeat_interval_ms;
    /** A connection from which nothing arrived for this long (no message, no "pong", no
     *  sync_engine_handle_alive()) is closed with SYNC_CLOSE_PING_TIMEOUT "ping timeout" (after
     *  on_ping_timeout). 0 = never. Checked at each heartbeat. */
    int64_t ping_timeout_ms;
    /** Periodic sync(): every interval, save the state through the adapter. 0 = off. */
    int64_t sync_interval_ms;
    sync_persist_mode persist_mode;
    sync_timer_mode timer_mode;
    /** 1: every change is broadcast to all connections on its own (coalesced: a connection may
     *  skip intermediate versions but always ends on the latest). 0: only
     *  sync_engine_broadcast_state() and set_state(..., broadcast=1) broadcast. */
    int auto_broadcast;
    /** 1: a message that is dropped also gets {"type":"error",...} sent back to its sender. */
    int reply_errors;
    /** Largest accepted message in bytes; larger ones are dropped with SYNC_ETOOBIG.
     *  0 = default (1 MiB). */
    size_t max_message_bytes;
    /** Deepest accepted nesting of arrays/objects in a message. 0 = default (64). */
    int max_json_depth;
    /** 1: log every step of the pipeline at SYNC_LOG_DEBUG. */
    int debug;
    /** Log sink; NULL logs to stderr. Errors go to on_error when it is set, else here. */
    sync_log_cb log;
    void *log_userdata;
    /** Hooks in place from the start, so a failing load() at creation reaches on_error (copied;
     *  NULL = none; their free_userdata runs with the engine, or when sync_engine_new fails). */
    const sync_hooks *hooks;
    /* ---- version 2 ---- */
    /** Longest a validator, middleware or handler that returned SYNC_PENDING may take before
     *  its sync_msg_complete(). After it the step fails with SYNC_ETIMEDOUT: the message is
     *  dropped and reported like a failed step (its changes rolled back) and the messages behind
     *  it run. The late sync_msg_complete() then returns SYNC_ETIMEDOUT and frees the message;
     *  until it comes the message keeps a reference on the engine. Timed by the same clock as
     *  the heartbeat (sync_engine_tick(), the server, or the engine's timer thread). Adapter calls
     *  are not timed out: a save abandoned here could still land after a newer one.
     *  0 = never: a step that is never completed holds the engine's queue for ever. */
    int64_t step_timeout_ms;
    /* ---- version 3 ---- */
    /** Releases log_userdata (may be NULL): exactly once, when the engine is destroyed (after its
     *  last log line) or before a failing sync_engine_new() returns (common.h). */
    sync_free_cb log_free_userdata;
    /* ---- version 4 ---- */
    /** Recent history kept for v2 clients (docs/PROTOCOL.md): the reverse patches of up to this
     *  many versions, from which a client behind by several versions, or resuming with
     *  ?since=V, gets one composed patch. 0 = default (256); -1 = off: no diff at commit, v2
     *  clients get whole states and every resume an initial_state. */
    int resume_history_versions;
    /** Bytes of reverse patches kept at most (the oldest go first). 0 = default (1 MiB). */
    size_t resume_history_bytes;
} sync_engine_options;

#define SYNC_ENGINE_OPTIONS_INIT                                                                   \
    {                                                                                              \
        SYNC_ENGINE_OPTIONS_VERSION, NULL, 1, NULL, 0, 0, 0, SYNC_PERSIST_ON_CHANGE,               \
            SYNC_TIMERS_MANUAL, 0, 0, 0, 0, 0, NULL, NULL, NULL, 0, NULL, 0, 0                     \
    }

/** Fills `opts` with the defaults of SYNC_ENGINE_OPTIONS_INIT. `version` must be
 *  SYNC_ENGINE_OPTIONS_VERSION. Returns SYNC_EINVAL for NULL or an unknown version. */
SYNC_EXTERN int sync_engine_options_init(sync_engine_options *opts, unsigned int version);

/* ------------------------------------------------------------------------------------------ */
/* Lifecycle                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/**
 * Creates an engine: sets the initial state and version, then runs the adapter's init() and
 * load(). A loaded record replaces the state (and the version, when versioning is on). A store
 * that was never saved keeps initial_state_json. A store that cannot be read or parsed is
 * reported through sync_error_last() and the log, kept aside by the adapter, and the engine
 * starts from initial_state_json with version 0. When init() or load() fails for any other reason
 * (an I/O error, not SYNC_ECORRUPT), the store may hold a record the engine never read: the
 * engine still starts, but refuses every save (SYNC_EIO through on_error, context "sync") for
 * its life, so that record is never overwritten; create the engine again once the store reads.
 * When the adapter finishes load() later (SYNC_PENDING), the engine is returned at once and
 * every message and call is queued until the load completes; on_error reports a load failure.
 * Starts the timers (SYNC_TIMERS_THREAD) when an interval is set.
 * Returns SYNC_EINVAL for bad options (unparseable initial state, negative intervals).
 */
SYNC_EXTERN int sync_engine_new(sync_engine **out, const sync_engine_options *opts);

/**
 * Closes every connection (their close callback runs exactly once,
 * with code 1001), forgets them, stops every timer. Does not save (call sync() first if needed).
 * Later calls on the engine return SYNC_ECLOSED. Idempotent.
 */
SYNC_EXTERN int sync_engine_dispose(sync_engine *engine);

/** Disposes (if not done yet), then releases the engine, its handlers' and hooks' userdata (their
 *  free callbacks run) and the adapter. Must not be called from inside one of its callbacks, nor
 *  while a server still has the engine mounted. NULL is a no-op. */
SYNC_EXTERN void sync_engine_free(sync_engine *engine);

/* ------------------------------------------------------------------------------------------ */
/* The message pipeline                                                                        */
/* ------------------------------------------------------------------------------------------ */

/**
 * A pipeline step (validator, middleware or handler). Returns SYNC_OK to go on, a negative
 * status to drop the message (use sync_msg_set_error() for a readable reason), or SYNC_PENDING
 * to finish later with sync_msg_complete(). `msg` stays valid until the step returns a final
 * status or sync_msg_complete() is called for it.
 */
typedef int (*sync_step_cb)(sync_msg *msg, void *userdata);

/**
 * Registers the handler for messages whose "type" equals `type` (copied). Replaces an existing
 * handler for that type (its free_userdata runs). free_userdata (may be NULL) runs when the
 * handler is replaced or removed, when the engine is freed, and when registration fails; always
 * with the engine unlocked, so it may call into the engine or wait for a thread that does.
 */
SYNC_EXTERN int sync_engine_on(sync_engine *engine, const char *type, sync_step_cb handler,
                               void *userdata, sync_free_cb free_userdata);

/** Removes the handler for `type`. SYNC_ENOHANDLER when there was none. */
SYNC_EXTERN int sync_engine_off(sync_engine *engine, const char *type);

/** Sets (or with NULL clears) the validator: it sees the parsed
 *  message (any JSON value) first and may replace it (sync_msg_replace). Same free rules. */
SYNC_EXTERN int sync_engine_set_validator(sync_engine *engine, sync_step_cb validator,
                                          void *userdata, sync_free_cb free_userdata);

/** Appends a middleware: runs after the validator, in order of
 *  registration; may replace the message or drop it. Same free rules. */
SYNC_EXTERN int sync_engine_use(sync_engine *engine, sync_step_cb middleware, void *userdata,
                                sync_free_cb free_userdata);

/* --- inside a step: what a validator, middleware or handler may call on its sync_msg --- */

/** The connection that sent the message (borrowed; may be NULL for sync_engine_inject()). */
SYNC_EXTERN sync_conn *sync_msg_conn(const sync_msg *msg);
/** The engine. */
SYNC_EXTERN sync_engine *sync_msg_engine(const sync_msg *msg);
/** The message as parsed (after any replacement). Borrowed, read-only, valid during the step. */
SYNC_EXTERN const cJSON *sync_msg_message(const sync_msg *msg);
/** The message's "type" string, or NULL when it has none (validator/middleware may see that). */
SYNC_EXTERN const char *sync_msg_type(const sync_msg *msg);
/** The message as compact JSON text. Borrowed, valid during the step. NULL only on ENOMEM. */
SYNC_EXTERN const char *sync_msg_message_json(sync_msg *msg);
/** Replaces the message for the following steps; takes ownership of `message` (also on failure).
 *  SYNC_EINVAL when it holds a non-finite number or repeats a member name (the steps after it
 *  must read what any other parser would read from its text). */
SYNC_EXTERN int sync_msg_replace(sync_msg *msg, cJSON *message);
/** Same from JSON text (copied). SYNC_EPARSE when it is not JSON. */
SYNC_EXTERN int sync_msg_replace_json(sync_msg *msg, const char *json);

/** Handler: the state as the handler sees it (its own changes included). Read-only, borrowed,
 *  valid during the step. Reading never copies the state. */
SYNC_EXTERN const cJSON *sync_msg_state(sync_msg *msg);
/** Handler: the state as compact JSON text. Borrowed, valid until the state changes or the step
 *  ends. NULL only on ENOMEM. */
SYNC_EXTERN const char *sync_msg_state_json(sync_msg *msg);
/** Handler: a private, mutable copy of the state (made on first call, O(state)); the changes
 *  become the new state when the handler succeeds and vanish when it fails. Borrowed. */
SYNC_EXTERN cJSON *sync_msg_state_mut(sync_msg *msg);
/** Handler: replaces the whole state: `state` becomes the new state if the handler succeeds.
 *  Takes ownership. Several calls in one handler make one change (one version step). Whatever the
 *  handler leaves (through this or sync_msg_state_mut) is checked when it returns SYNC_OK: a
 *  state with NaN, an infinity or a repeated member name fails the handler with SYNC_EINVAL
 *  (rolled back, reported, an error frame with reply_errors), as JSON cannot carry it. */
SYNC_EXTERN int sync_msg_set_state(sync_msg *msg, cJSON *state);
/** Same from JSON text (copied). SYNC_EPARSE when it is not JSON. */
SYNC_EXTERN int sync_msg_set_state_json(sync_msg *msg, const char *json);
/** Sends `text` (copied) to the connection that sent the message. No-op without a connection. */
SYNC_EXTERN int sync_msg_reply(sync_msg *msg, const char *text, size_t len);
/** Sets the readable reason used when the step fails (copied); reported through on_error. */
SYNC_EXTERN int sync_msg_set_error(sync_msg *msg, const char *reason);

/**
 * Finishes a step that returned SYNC_PENDING. `status` is what the step would have returned
 * (SYNC_OK or a negative status). Call exactly once, from any thread; the rest of the pipeline
 * (and the queued work behind it) then runs on the calling thread before this returns.
 * After this call `msg` must not be used. Returns SYNC_EINVAL when msg is not pending, and
 * SYNC_ETIMEDOUT when the step had already timed out (step_timeout_ms): the message was dropped
 * then, and is freed now. Until then, calls that would change the state or answer through a
 * timed-out message fail with SYNC_ETIMEDOUT.
 */
SYNC_EXTERN int sync_msg_complete(sync_msg *msg, int status);

/**
 * Completes `msg` like sync_msg_complete() and hands back the next step of the same callback,
 * so that a binding runs a whole queue of messages in one loop of its own instead of being
 * called once per step (one entry into Python or JavaScript for every message waiting).
 *
 * The engine goes on as sync_msg_complete() does (the rest of this message's pipeline, its
 * commit, the queued work behind it), except that the first step it reaches whose callback is
 * the one the step of `msg` was called with (the same sync_step_cb function, whatever its
 * userdata; also when that step was unregistered or replaced meanwhile) is not called: that
 * message is left pending at that step exactly as if the callback had returned SYNC_PENDING,
 * and is handed out through `*next` with that step's userdata in `*next_userdata`. The caller
 * then runs the step itself and completes it (with this function or sync_msg_complete())
 * exactly once; step_timeout_ms applies as to any pending step. When the work stops elsewhere
 * first (the queue is empty, an adapter call or a step of another callback is pending), `*next`
 * and `*next_userdata` are NULL. Order and atomicity are those of sync_msg_complete(): messages
 * run one at a time in arrival order, and each one's change is committed (or rolled back)
 * before the next one's step is handed out.
 * `next` and `next_userdata` may be NULL only together (then this is sync_msg_complete()).
 * Errors: those of sync_msg_complete() (with `*next` NULL).
 */
SYNC_EXTERN int sync_msg_complete_next(sync_msg *msg, int status, sync_msg **next,
                                       void **next_userdata);

/* ------------------------------------------------------------------------------------------ */
/* Connections: any transport (the built-in server, or an embedder's own WebSocket server)       */
/* ------------------------------------------------------------------------------------------ */

#define SYNC_CONN_CALLBACKS_VERSION 1

typedef struct sync_conn_callbacks {
    unsigned int version; /**< SYNC_CONN_CALLBACKS_VERSION */
    /** Sends one text frame. `text` is borrowed for the duration of the call (copy it to queue
     *  it). Returns SYNC_OK or a negative status (reported through on_error). Required. */
    int (*send)(void *userdata, const char *text, size_t len);
    /** Asks the transport to close the connection (dispose, ping timeout, too-big message). The
     *  transport then calls sync_engine_handle_close() when it has closed. May be NULL. */
    void (*close)(void *userdata, int code, const char *reason);
    /** Runs once, when the last reference to the connection is released. May be NULL. */
    sync_free_cb free_userdata;
} sync_conn_callbacks;

#define SYNC_CONN_CALLBACKS_INIT                                                                   \
    {                                                                                              \
        SYNC_CONN_CALLBACKS_VERSION, NULL, NULL, NULL                                              \
    }

/** Creates a connection handle for the embedder's own transport. The caller owns one reference
 *  (release with sync_conn_free()); an engine holds another while the connection is open.
 *  callbacks->free_userdata runs exactly once (common.h): with the last reference, or before a
 *  failure returns (NULL `out`, unknown version, no send, out of memory). */
SYNC_EXTERN int sync_conn_new(sync_conn **out, const sync_conn_callbacks *callbacks,
                              void *userdata);
/** Releases the caller's reference. NULL is a no-op. */
SYNC_EXTERN void sync_conn_free(sync_conn *conn);
/** Takes one more reference (for a binding or transport that keeps the handle). */
SYNC_EXTERN sync_conn *sync_conn_ref(sync_conn *conn);
/** The userdata given at creation (for the built-in server: NULL). */
SYNC_EXTERN void *sync_conn_userdata(const sync_conn *conn);
/** A process-unique, never reused id (for logs, maps in bindings). */
SYNC_EXTERN uint64_t sync_conn_id(const sync_conn *conn);
/** The identity the server's auth callback attached (JSON text), or NULL. Borrowed, valid while
 *  the caller holds a reference to the connection. */
SYNC_EXTERN const char *sync_conn_identity(const sync_conn *conn);
/** Attaches an identity (JSON text, copied; NULL clears). */
SYNC_EXTERN int sync_conn_set_identity(sync_conn *conn, const char *identity_json);
/** Sends one text frame to this connection (copied). */
SYNC_EXTERN int sync_conn_send(sync_conn *conn, const char *text, size_t len);
/** Asks the connection's transport to close it. */
SYNC_EXTERN int sync_conn_close(sync_conn *conn, int code, const char *reason);

/** A connection opened: it joins the engine's connections, its last pong is now, on_connect
 *  runs, then it is sent initial_state. If that send fails: reported and the connection is
 *  closed. */
SYNC_EXTERN int sync_engine_handle_open(sync_engine *engine, sync_conn *conn);

/**
 * A connection sent `text` (len bytes, need not be NUL-terminated; copied): "pong" marks it
 * alive, anything else runs through the message pipeline.
 * Returns SYNC_OK when the message was handled (and any change applied) before returning,
 * SYNC_PENDING when it was queued or a step finishes later, or the negative status of why it was
 * dropped (also reported through on_error). Does not broadcast unless auto_broadcast is set.
 */
SYNC_EXTERN int sync_engine_handle_message(sync_engine *engine, sync_conn *conn, const char *text,
                                           size_t len);

/**
 * The connection showed it is alive in a way the engine does not see: a WebSocket-level pong
 * frame (or any other traffic the transport handles itself). Refreshes its last-pong time, so the
 * heartbeat does not close it; does not run on_pong (that stays the answer to the text "pong").
 * Every message passed to sync_engine_handle_message() already counts, "pong" included. The
 * built-in server calls this for every WebSocket pong frame. SYNC_ESTATE when the connection is
 * not open in this engine.
 */
SYNC_EXTERN int sync_engine_handle_alive(sync_engine *engine, sync_conn *conn);

/** The close code of a connection the heartbeat found dead: nothing arrived from it (no message,
 *  no "pong", no sync_engine_handle_alive()) for ping_timeout_ms. The reason is
 *  SYNC_CLOSE_PING_TIMEOUT_REASON. */
#define SYNC_CLOSE_PING_TIMEOUT 4001
#define SYNC_CLOSE_PING_TIMEOUT_REASON "ping timeout"

/** A connection closed: it leaves the engine's connections, then on_disconnect runs.
 *  Idempotent per connection. */
SYNC_EXTERN int sync_engine_handle_close(sync_engine *engine, sync_conn *conn);

/** Runs `text` through the pipeline as if a connection-less client had sent it (server-side
 *  commands, tests). Same returns as handle_message. */
SYNC_EXTERN int sync_engine_inject(sync_engine *engine, const char *text, size_t len);

/** Number of open connections. */
SYNC_EXTERN size_t sync_engine_connection_count(sync_engine *engine);

/* ------------------------------------------------------------------------------------------ */
/* State                                                                                       */
/* ------------------------------------------------------------------------------------------ */

/** A deep copy of the current state; caller owns it (cJSON_Delete). NULL on ENOMEM/disposed. */
SYNC_EXTERN cJSON *sync_engine_get_state(sync_engine *engine);
/** The current state as compact JSON text; caller owns it (sync_free). NULL on ENOMEM/disposed. */
SYNC_EXTERN char *sync_engine_get_state_json(sync_engine *engine);
/** Current version (-1 when versioning is off). */
SYNC_EXTERN int64_t sync_engine_get_version(sync_engine *engine);

/** Replaces the state from outside a handler: version + 1, on_state_change
 *  when different, persist per persist_mode, then broadcast when asked (or auto_broadcast).
 *  Takes ownership of `state` (also on failure). Queued (SYNC_PENDING) behind pending work.
 *  SYNC_EINVAL at once (also reported through on_error, context "set_state"; nothing changes) when
 *  the state holds NaN, an infinity or a repeated member name: JSON cannot carry it. */
SYNC_EXTERN int sync_engine_set_state(sync_engine *engine, cJSON *state, int broadcast);
/** Same from JSON text (copied). */
SYNC_EXTERN int sync_engine_set_state_json(sync_engine *engine, const char *json, int broadcast);

/** Sends state_update with the current state to every connection; the state is serialised once
 *  for all. A failed send to one connection is reported; the others still get theirs. */
SYNC_EXTERN int sync_engine_broadcast_state(sync_engine *engine);
/** Sends one text frame (copied) to every open connection. */
SYNC_EXTERN int sync_engine_broadcast_text(sync_engine *engine, const char *text, size_t len);

/** Saves: adapter save(state, version), then on_sync. SYNC_OK without adapter.
 *  SYNC_PENDING when queued or the adapter finishes later. */
SYNC_EXTERN int sync_engine_sync(sync_engine *engine);
/** Backs up: adapter backup(), then on_backup(timestamp, version).
 *  SYNC_EUNSUPPORTED when the adapter cannot back up; SYNC_OK and nothing done without adapter. */
SYNC_EXTERN int sync_engine_create_backup(sync_engine *engine);

/** Called once (on the thread that drains the queue) when every operation queued before this
 *  call has finished; at once (before returning) when nothing is queued. `status` is SYNC_OK,
 *  or SYNC_ECLOSED when the engine was disposed first. */
typedef void (*sync_done_cb)(sync_engine *engine, int status, void *userdata);
SYNC_EXTERN int sync_engine_when_idle(sync_engine *engine, sync_done_cb done, void *userdata);

/* ------------------------------------------------------------------------------------------ */
/* Timers                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/** Runs the heartbeat, the sync interval and the step timeout when they are due at `now_ms`
 *  (sync_now_ms() clock; pass -1 for "now"). Safe to call early or often: does only what is
 *  due. With step_timeout_ms set, a call that returned SYNC_PENDING may have brought the next
 *  deadline closer: ask sync_engine_next_deadline_ms() again after it. */
SYNC_EXTERN int sync_engine_tick(sync_engine *engine, int64_t now_ms);
/** The sync_now_ms() time at which the next timer is due, or -1 when no timer is set. */
SYNC_EXTERN int64_t sync_engine_next_deadline_ms(sync_engine *engine);

/** Sets all hooks at once (the struct is copied; NULL clears them). */
SYNC_EXTERN int sync_engine_set_hooks(sync_engine *engine, const sync_hooks *hooks);

/* ------------------------------------------------------------------------------------------ */
/* Statistics (for /metrics and monitoring)                                                    */
/* ------------------------------------------------------------------------------------------ */

#define SYNC_ENGINE_STATS_VERSION 2

typedef struct sync_engine_stats {
    /** Set by the caller: SYNC_ENGINE_STATS_VERSION, or an older version, whose fields alone are
     *  written. */
    unsigned int version;
    int64_t state_version;     /**< current version */
    uint64_t connections;      /**< open connections */
    uint64_t messages_in;      /**< messages received (pong included) */
    uint64_t messages_applied; /**< messages whose handler succeeded */
    uint64_t messages_dropped; /**< messages dropped by any failure */
    uint64_t handler_errors;   /**< handler failures */
    uint64_t frames_out;       /**< frames handed to transports */
    uint64_t bytes_out;        /**< bytes handed to transports */
    uint64_t serialisations;   /**< times the state was serialised (once per broadcast version) */
    uint64_t saves;            /**< adapter saves that succeeded */
    uint64_t save_errors;      /**< adapter saves that failed */
    uint64_t last_save_us;     /**< duration of the last save, microseconds */
    uint64_t total_save_us;    /**< sum of all save durations, microseconds */
    size_t state_bytes;        /**< size of the state as compact JSON at the last serialisation */
    /* ---- version 2 ---- */
    uint64_t steps_timed_out; /**< steps given up at step_timeout_ms (each also a drop) */
} sync_engine_stats;

SYNC_EXTERN int sync_engine_get_stats(sync_engine *engine, sync_engine_stats *out);
/** The same statistics as one compact JSON object whose keys are the field names above
 *  ({"state_version":3,"connections":1,...}; `version` left out), integers exact. Caller owns it
 *  (sync_free). NULL on failure (sync_error_last()). */
SYNC_EXTERN char *sync_engine_stats_json(sync_engine *engine);

#ifdef __cplusplus
}
#endif

#endif /* LIBSYNC_ENGINE_H */

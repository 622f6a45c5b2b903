/* The engine's private structures, shared by engine*.c, conn.c, feed.c and completion.c. */
#ifndef LIBSYNC_SRC_ENGINE_INTERNAL_H
#define LIBSYNC_SRC_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "libsync/adapter.h"
#include "libsync/engine.h"
#include "completion.h"
#include "delta.h"
#include "engine_cluster.h"
#include "feed.h"
#include "frame.h"
#include "transport.h"

/* ---- connections ---------------------------------------------------------------------------- */

typedef enum conn_state {
    CONN_NEW = 0,     /* not opened in any engine yet */
    CONN_OPENING = 1, /* handle_open queued behind pending work */
    CONN_OPEN = 2,
    CONN_CLOSED = 3 /* terminal: a closed connection is never reopened */
} conn_state;

/* One per connection, so kept small (docs/PERFORMANCE.md, idle memory): the transport's ops are
 * shared, not copied, and a push connection's callbacks follow the struct in the same block. */
struct sync_conn {
    atomic_uint refs;
    atomic_uchar close_requested;
    /* Guarded by the lock of the engine the connection belongs to: */
    unsigned char state; /* conn_state */
    unsigned char timed_out;
    /* Set at creation: 1 when the transport's object follows the struct and is the userdata
     * (sync__conn_new_transport_object); else the userdata pointer follows it, after a push
     * connection's callbacks (conn.c). No userdata field: the server keeps 10,000s of handles. */
    unsigned char has_object;
    uint64_t id;
    /* A transport's private ops (static, outliving the connection), or NULL for a push
     * connection (sync_conn_new), whose sync_conn_callbacks follow the struct. */
    const sync__transport_ops *ops;
    /* Set and read from any thread: an atomic pointer, the old text freed by the setter. */
    _Atomic(char *) identity;
    /* Guarded by the lock of the engine the connection belongs to: */
    sync_engine *engine;
    int64_t last_pong_ms;
    sync_conn *prev;
    sync_conn *next;
};

/* Gives a stand-in connection that never opens in an engine (sync__engine_apply_remote) the id
 * its original has on another node, so sync_conn_id() reads the same there. */
void sync__conn_set_id(sync_conn *conn, uint64_t id);
/* Sends one frame through the connection's transport (shared frame or public send). */
int sync__conn_push_frame(sync_conn *conn, sync__frame *frame);
/* 1 for a transport's connection: its transport reads the feed itself (a feed reader); 0 for a
 * push connection (sync_conn_new), which the engine sends each record. */
int sync__conn_is_pull(const sync_conn *conn);
/* Asks the transport to close; only the first request reaches it. */
void sync__conn_request_close(sync_conn *conn, int code, const char *reason);

/* ---- adapters ------------------------------------------------------------------------------- */

/* Continues the engine's operation with the result of its completed adapter call (engine lock
 * held by the caller). Frees the token. */
void sync__engine_adapter_completed(sync_engine *engine, sync_pending *pending);

/* ---- operations ----------------------------------------------------------------------------- */

typedef enum op_kind {
    OP_LOAD,
    OP_MESSAGE,
    OP_SET_STATE,
    OP_BROADCAST,
    OP_SYNC,
    OP_BACKUP,
    OP_OPEN,
    OP_FLUSH, /* a transport asked for the head to be saved before it sends it */
    OP_WHEN_IDLE,
    OP_REMOTE /* a message another node forwarded, run without a commit (engine_cluster.h) */
} op_kind;

/* One unit of the engine's strictly ordered work. Each op is a small state machine so that any
 * step (a user callback or an adapter call) can finish later and the op resumes where it was. */
typedef struct sync__op {
    op_kind kind;
    struct sync__op *next;
    int stage;    /* progress of the op */
    int csub;     /* progress of its commit */
    int bsub;     /* progress of its broadcast */
    int psub;     /* progress of its save of the feed's head */
    int ref_held; /* the op keeps the engine alive while it waits */
    sync_conn *conn;
    cJSON *message;
    sync_msg *msg;
    cJSON *state;
    int broadcast;
    /* > 0: an OP_SET_STATE that adopts another node's version (sync__engine_adopt_state) */
    int64_t adopt_version;
    sync_done_cb done;
    void *done_userdata;
    /* Result of the op's last adapter call. */
    int arc;
    char *aerr;
    char *ajson;
    int64_t aversion;
    int64_t ats;
    int64_t t0_us;
    uint64_t save_seq;
    /* OP_REMOTE: the forwarded text, and where its result goes (remote_delivery is NULL once
     * the result was handed on; engine_cluster.c) */
    char *remote_text;
    size_t remote_len;
    struct sync__remote_delivery *remote_delivery; /* allocated up front: done always runs */
    struct sync__remote_sink *remote_sink; /* the stand-in's captured frames (owned by it) */
    char *remote_refuse; /* refused without running the pipeline (sync__remote_msg.refuse) */
} sync__op;

typedef enum msg_step {
    STEP_VALIDATOR,
    STEP_MIDDLEWARE,
    STEP_TYPE,
    STEP_HANDLER,
    STEP_DONE
} msg_step;

typedef enum msg_phase { PHASE_IDLE, PHASE_IN_CALL, PHASE_AWAITING } msg_phase;

struct sync_msg {
    sync_engine *engine;
    sync__op *op;
    sync_conn *conn;
    cJSON *message;
    char *message_json;
    cJSON *working;      /* the handler's private state, NULL until it writes */
    int working_checked; /* `working` came from checked JSON text and nobody could change it since
                          */
    char *state_json;
    char *error;
    char *handler_type; /* handler_type_inline, or strdup()ed when longer */
    char handler_type_inline[48];
    msg_step step;
    size_t mw_index;
    msg_phase phase;
    sync_step_cb called_cb; /* the callback of the step last called (or handed out) */
    int early;
    int early_status;
    int resumed;
    int resume_status;
    int timed_out; /* its step passed step_timeout_ms: dropped, waits for the late completion */
    int orphaned;  /* outlived its op; holds an engine reference until sync_msg_complete() */
};

/* ---- the engine ----------------------------------------------------------------------------- */

typedef struct step_entry {
    sync_step_cb cb;
    void *userdata;
    sync_free_cb free_userdata;
} step_entry;

/* One block with its type's text (a room registers the same few handlers on each of its
 * thousands of engines). */
typedef struct handler_entry {
    step_entry step;
    struct handler_entry *next;
    char type[];
} handler_entry;

struct sync_engine {
    atomic_uint refs;
    pthread_mutex_t lock;
    int lock_depth;
    unsigned deferred_unrefs;

    /* options (flags and small enums in bytes: an engine per loaded room) */
    unsigned char disposed;
    unsigned char versioning;
    unsigned char persist_mode; /* sync_persist_mode */
    unsigned char timer_mode;   /* sync_timer_mode */
    unsigned char auto_broadcast;
    /* a room's (engine_room.c): with no record in the store, the initial state counts as saved,
     * since the next load makes it again; the first change writes the record */
    unsigned char initial_needs_no_save;
    unsigned char reply_errors;
    unsigned char debug;
    /* init() or load() failed for a reason other than a corrupt record: the store may hold a
     * record the engine never read, so every save is refused rather than overwrite it. */
    unsigned char store_unread;
    unsigned char busy; /* an operation runs (engine_ops.c) */
    int max_json_depth;
    size_t max_message_bytes;
    int64_t heartbeat_ms;
    int64_t ping_timeout_ms;
    int64_t sync_ms;
    int64_t step_timeout_ms;
    sync_log_cb log;
    void *log_userdata;
    sync_free_cb log_free_userdata;
    sync_hooks hooks;
    sync_adapter *adapter;

    /* state: the committed state, its version; its records, their persistence and their
     * consumers are the feed's */
    cJSON *state;
    _Atomic int64_t version;
    sync__feed feed;
    sync__delta delta; /* v2: patches, the history they are composed from, the epoch */

    /* connections */
    sync_conn *conns;
    atomic_size_t conn_count;

    /* pipeline */
    handler_entry *handlers;
    step_entry validator;
    step_entry *middleware;
    size_t middleware_count;

    /* operations */
    /* Set during sync_msg_complete_next(): the first step of this callback the work reaches is
     * not called but left pending and handed out (handoff_msg, handoff_userdata). */
    sync_step_cb handoff_cb;
    sync_msg *handoff_msg;
    void *handoff_userdata;
    sync__op *cur;
    sync__op *queue_head;
    sync__op *queue_tail;

    /* timers */
    int64_t next_heartbeat_ms;
    int64_t next_sync_ms;
    int64_t step_deadline_ms; /* when the step awaiting its completion times out; -1 none */
    /* The deadline whoever ticks the engine last asked for and waits on (-1: none): a step
     * deadline later than it needs no wake-up, the tick at it finds the next one. */
    int64_t ticker_deadline_ms;
    /* the timer thread's, and the condition waits need: NULL until a thread starts or a link
     * is set (most engines, every room of a single server, never wait) */
    struct sync__engine_waits *waits;

    /* cluster (engine_cluster.h): the link while linked (forward NULL: not linked); the
     * forward calls running outside the lock, which an unlink waits for */
    sync__cluster_link cluster;
    int forwarding;
    int forward_waiters; /* waiting on waits->cond */
    /* results of OP_REMOTE runs, handed to their done callbacks at the outermost unlock */
    struct sync__remote_delivery *remote_deliveries;
    struct sync__remote_delivery *remote_deliveries_tail;

    sync_engine_stats stats;
};

/* What only some engines need: a timer thread (SYNC_TIMERS_THREAD), a wait for forward calls (a
 * cluster link). One condition for both: each waiter checks its own reason when it wakes. */
typedef struct sync__engine_waits {
    pthread_cond_t cond; /* CLOCK_MONOTONIC, with the engine's lock */
    pthread_t timer_thread;
    int timer_started;
    int timer_stop;
    int timer_detached;
    int timer_joined;
} sync__engine_waits;

/* engine.c */
/* engine->waits, made on first use (engine lock held, or the engine not shared yet); NULL when
 * out of memory. */
sync__engine_waits *sync__engine_waits_get(sync_engine *engine);
void sync__engine_lock(sync_engine *engine);
/* Unlocks; the outermost unlock also drops references released while the lock was held. */
void sync__engine_unlock(sync_engine *engine);
void sync__engine_unref_later(sync_engine *engine);
/* Drops a reference; the last one destroys the engine. Never with the lock held. */
void sync__engine_unref(sync_engine *engine);
void sync__engine_log(sync_engine *engine, sync_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define SYNC__DEBUG(e, ...)                                                                        \
    do {                                                                                           \
        if ((e)->debug)                                                                            \
            sync__engine_log((e), SYNC_LOG_DEBUG, __VA_ARGS__);                                    \
    } while (0)
/* Reports an error: sync_error_last(), then on_error or the log. Returns status. */
int sync__engine_report(sync_engine *engine, int status, const char *context, sync_conn *conn,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* feed.c */
/* The head's state as compact JSON, serialised at most once per record. NULL on ENOMEM. */
const char *sync__engine_state_text(sync_engine *engine, size_t *len);
/* The head's frame of that kind, built once per record (borrowed). NULL on ENOMEM. */
sync__frame *sync__engine_state_frame(sync_engine *engine, sync__frame_kind kind);

/* engine_ops.c */
sync__op *sync__op_new(op_kind kind);

/* A replica's set_state (docs/SCALING.md): `state` (taken) becomes the state at exactly `version`,
 * which another node's engine gave it, and is broadcast. Dropped when not newer than the engine's
 * version by the time it runs; a jump over versions drops the patch history, so clients get the
 * whole state. SYNC_EINVAL when version < 1. */
int sync__engine_adopt_state(sync_engine *engine, cJSON *state, int64_t version);
void sync__op_free(sync_engine *engine, sync__op *op);
/* Runs `op` now, or queues it behind running work (SYNC_PENDING). Takes ownership. */
int sync__op_submit(sync_engine *engine, sync__op *op);
/* Resumes the current op after a completion. */
void sync__op_continue(sync_engine *engine);
/* Drops queued work at dispose; when_idle callbacks get SYNC_ECLOSED. */
void sync__op_drop_queue(sync_engine *engine);
/* Sends a frame to one connection, counting it; failures are reported under `context`. */
int sync__engine_send(sync_engine *engine, sync_conn *conn, sync__frame *frame,
                      const char *context);
/* Leaves the set and runs on_disconnect (open connections only). */
void sync__engine_close_conn(sync_engine *engine, sync_conn *conn);
/* The open connections, each with a reference (release with sync_conn_free). */
sync_conn **sync__engine_conn_snapshot(sync_engine *engine, size_t *count);

/* engine_msg.c */
/* Runs the message's pipeline steps: SYNC_OK when its handler succeeded, SYNC_PENDING while a
 * step is pending, else the (reported) reason it was dropped. */
int sync__msg_run(sync_engine *engine, sync__op *op);
/* Drops a message: counts it, reports it, and with reply_errors tells the sender. */
int sync__msg_drop(sync_engine *engine, sync_conn *conn, int status, const char *context,
                   const char *detail);
/* Frees the message, or keeps a timed-out one (and a reference on its engine) for the late
 * sync_msg_complete() that frees it. */
void sync__msg_free(sync_msg *msg);
/* Fails the step awaiting its completion once step_deadline_ms passed (engine lock held). */
void sync__msg_time_out(sync_engine *engine);

/* engine_cluster.c */
/* Hands a linked engine's parsed client message to its link (lock held on entry, released
 * on return); a refusal is reported as a dropped message. */
int sync__cluster_forward(sync_engine *engine, sync_conn *conn, const char *text, size_t len);
/* Runs an OP_REMOTE (lock held). */
int sync__remote_run(sync_engine *engine, sync__op *op);
/* Frees what an OP_REMOTE holds; a result not handed on yet goes out as SYNC_ECLOSED. */
void sync__remote_op_release(sync_engine *engine, sync__op *op);
/* Takes the results waiting for their done callbacks (lock held): the caller delivers them with
 * sync__remote_deliver() once the lock is released. */
struct sync__remote_delivery *sync__remote_take(sync_engine *engine);
void sync__remote_deliver(struct sync__remote_delivery *list);

/* engine_timers.c */
int sync__engine_timers_start(sync_engine *engine);
/* Stops the timer thread: joined when possible, detached when called from it. */
void sync__engine_timers_stop(sync_engine *engine);
void sync__engine_timers_join(sync_engine *engine);
/* A deadline came closer: wakes whoever ticks the engine (its thread, the server, the embedder). */
void sync__engine_timers_moved(sync_engine *engine);

#endif

/*
 * The built-in server's private structures, shared by its modules: server.c (lifecycle, the
 * service loop, stop), server_conn.c (one WebSocket connection: the pull transport, its queue,
 * receive and write), server_upgrade.c (the upgrade checks and sync_request), server_http.c (static
 * files, /healthz, /metrics), server_metrics.c (the Prometheus text) and server_broadcast.c (the
 * end-of-turn broadcast).
 *
 * Threads: everything here belongs to the service thread except what `lock` guards (the
 * per-connection queue and flags, the wake list), which engines touch from any thread through
 * the transport ops, and the atomics.
 */
#ifndef LIBSYNC_SRC_SERVER_INTERNAL_H
#define LIBSYNC_SRC_SERVER_INTERNAL_H

#include <libwebsockets.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/frame.h"
#include "libsync/server.h"
#include "engine/delta.h"
#include "engine/transport.h"

/* Tags the lws opaque user pointer of a wsi: an HTTP response in progress or a WebSocket. */
enum server_wsi_kind { SERVER_WSI_HTTP = 1, SERVER_WSI_WS = 2 };

typedef struct server_conn server_conn;

/* The subprotocols, in the order of server->protocols (lws answers a client with the name of the
 * entry it selected). */
#define SERVER_PROTOCOL_V1 "libsync"
#define SERVER_PROTOCOL_V2 "libsync.v2"

/* What only a v2 connection has (docs/PROTOCOL.md): its resume point and where it stands. */
typedef struct server_v2 {
    int64_t since;                   /* ?since=V of its URL, -1 when absent */
    char epoch[SYNC__EPOCH_MAX + 1]; /* ?epoch=E, "" when absent */
    int64_t last_version; /* service thread: the version its last state or patch frame reached */
} server_v2;
typedef struct server_room server_room; /* server_rooms.c */

/* broadcast_yield_ms when the options leave it 0 */
#define SERVER_BROADCAST_YIELD_MS 2
/* auth_timeout_ms when the options leave it 0 */
#define SERVER_AUTH_TIMEOUT_MS 10000
/* handshake_timeout_ms when the options leave it 0: a browser on a slow link sends its upgrade
 * within a round trip or two, so a head still incomplete after this is idle or a slowloris. */
#define SERVER_HANDSHAKE_TIMEOUT_MS 5000
/* max_buffered_bytes when the options leave it 0: 64 messages of the default 1 MiB limit at once
 * (most messages arrive whole and are never buffered). */
#define SERVER_MAX_BUFFERED_BYTES ((size_t)64 * 1024 * 1024)
/* room_idle_ms and max_rooms when the options leave them 0 */
#define SERVER_ROOM_IDLE_MS 30000
#define SERVER_MAX_ROOMS 100000
/* Descriptors under RLIMIT_NOFILE kept for what is not a connection: stdio, the lws wake eventfd,
 * the broadcast epoll, each store's database, WAL, shared memory, journal and temporary files,
 * static files being served, log files. */
#define SERVER_FD_RESERVE 64
/* Above the WebSocket limit, connections still accepted to answer them (503, /healthz). */
#define SERVER_FD_ANSWER 32
/* How long accepting pauses at the descriptor limit (or after accept failed for want of one). */
#define SERVER_ACCEPT_PAUSE_MS 250

/* One distinct engine mounted on the server (an engine on several paths appears once). */
typedef struct server_engine {
    sync_server *server;
    sync_engine *engine;
    const char *path; /* the first path it was mounted on: its metrics label */
    atomic_bool deadline_moved;
    /* The engine's state moved on (set from any thread by the engine listener); the service
     * thread writes the new frame to every live connection at the end of its loop turn. */
    atomic_bool state_moved;
    atomic_bool state_force;
    /* Service thread: the connections that have their initial state, a ring walked from the
     * cursor so that a broadcast cut short by new input resumes where it stopped. */
    server_conn *live_head;
    server_conn *cursor;
    size_t live_count;
    bool flush_pending; /* a broadcast stopped early: some live connections may be behind */
    bool walk_passing;  /* the walk has reached broadcast_yield_ms: its sliced pass is on */
    /* The turn (sync_server.turn_seq) in which the walk stopped for this engine's own input: until
     * that turn ends, after lws has read the input, flushing again would only walk on with the
     * state the input supersedes and stop for the same input once more. */
    uint32_t input_cut_turn;
    int64_t walk_started_us;           /* when the walk that flush_pending continues began */
    size_t walk_visited;               /* connections it has visited, in every turn it spans */
    struct cluster_room *cluster_room; /* a clustered fixed mount's room (server_cluster.c) */
} server_engine;

typedef struct server_mount {
    char *path;
    server_engine *eng;
} server_mount;

struct sync_server {
    /* options, copied */
    char *host;
    int port_option;
    char *static_dir;    /* realpath of the directory, or NULL */
    char *metrics_token; /* sync_server_set_metrics_token(), or NULL: /metrics is public */
    size_t max_message_bytes;
    int max_connections_option;
    int max_connections; /* the option capped by the descriptor limit (at listen) */
    double rate_per_sec;
    double rate_burst;
    size_t max_queued_bytes;
    char **origins;
    size_t origin_count;
    sync_auth_cb auth;
    void *auth_userdata;
    sync_free_cb auth_free_userdata;
    char *tls_cert;
    char *tls_key;
    int stop_timeout_ms;
    int broadcast_yield_ms; /* -1 = never */
    int auth_timeout_ms;
    int handshake_timeout_ms;
    size_t max_buffered_bytes;
    sync_log_cb log;
    void *log_userdata;
    sync_free_cb log_free_userdata;

    server_mount *mounts;
    size_t mount_count;
    struct sync__cluster *cluster; /* sync_server_join_cluster(), NULL: none */
    /* Room mounts (server_rooms.c). rooms_lock guards every mount's table and room counters, the
     * idle list and rooms_due; lock order: an engine's lock, then rooms_lock (never the reverse:
     * nothing calls into an engine while holding it); rooms_lock and server->lock never nest. */
    struct sync_rooms **room_mounts;
    size_t room_mount_count;
    int room_idle_ms; /* -1 = never */
    int max_rooms;
    pthread_mutex_t rooms_lock;
    pthread_cond_t rooms_cond;
    size_t rooms_loaded;    /* rooms with an engine that are not unloading, every mount */
    server_room *idle_head; /* idle rooms, least recently used first */
    server_room *idle_tail;
    /* Rooms with work for the service thread (or the next caller), in the order they became due:
     * a room whose flush waits for the next turn keeps its place ahead of rooms due later. */
    server_room *rooms_due;
    server_room *rooms_due_tail;
    /* Rooms due (on that list or on the one a pass is working through) for more than a flush: none,
     * and a turn that gave way puts every room it has left back at once. */
    size_t rooms_due_more;
    lws_sorted_usec_list_t rooms_idle_timer;
    bool rooms_idle_armed;
    int64_t rooms_idle_at;
    bool rooms_quiet; /* the loop ended: no room timer is armed any more */
    /* Service thread: the rooms' engine deadlines, a binary min-heap under one lws timer. lws
     * keeps its timers in a sorted list (insertion walks it), so a timer per room made 10,000
     * rooms cost O(n) per re-arm. */
    server_room **room_timers;
    size_t room_timer_count, room_timer_cap;
    lws_sorted_usec_list_t rooms_timer;
    bool rooms_timer_armed;
    int64_t rooms_timer_at;
    size_t rooms_freed_since_trim; /* engines freed since the heap was last trimmed */
    char *echo_path;               /* server_mount_echo(): tests only */
    server_engine **engines;
    size_t engine_count;

    /* The loop asked for, resolved at new: POLL, EPOLL, or DEFAULT (epoll where lws's libev event
     * library loads, else poll: decided at listen). `event_loop_running` is the one listen chose
     * (POLL or EPOLL), DEFAULT before the first listen; sync_server_event_loop() reads it. */
    int event_loop;
    atomic_int event_loop_running;
    /* EPOLL: the libev loop lws runs on (server.c), from listen until the context is destroyed */
    struct server_evloop *evl;

    struct lws_protocols protocols[3]; /* v1, v2, the terminator */
    struct lws_context *context;
    struct lws_vhost *vhost;
    int port;

    /* The descriptor limit (service thread): RLIMIT_NOFILE at listen, and accept pausing at it. */
    int fd_limit;
    struct lws *listen_wsi; /* seen by the first FILTER_NETWORK_CONNECTION */
    bool accept_paused;
    lws_sorted_usec_list_t accept_timer;
    atomic_bool accept_failed; /* lws logged an accept that failed for want of a descriptor */
    int64_t fd_log_ms;         /* the "descriptor limit" warning: at most one a second */
    unsigned fd_log_suppressed;

    /* Sockets whose last read may have left input behind (server.c, serve): lws 4.1 reads at
     * most rx_buffer_size + LWS_PRE bytes per socket per turn. Descriptors, not wsi pointers, so
     * a connection closed meanwhile is only a failed lookup. */
    int rx_fd;       /* the socket whose read the RECEIVE callbacks now report */
    size_t rx_bytes; /* payload bytes that read delivered so far */
    int rx_more[64];
    size_t rx_more_count;

    /* The context other threads may wake (lws_cancel_service), published while serving; the
     * service thread waits for wakers to leave before it destroys the context. */
    _Atomic(struct lws_context *) wake_context;
    atomic_int wakers;
    atomic_ullong wakes; /* server_wake() calls that reached lws (metrics: a wake costs a turn) */

    pthread_t thread; /* the background thread of sync_server_start */
    pthread_t service_thread;
    atomic_bool serving;
    atomic_bool stop_requested; /* set by sync_server_request_stop(), maybe in a signal handler */
    atomic_bool ended;
    bool thread_started;
    atomic_bool thread_joined;
    bool stopping;
    int64_t stop_deadline_ms;
    lws_sorted_usec_list_t stop_timer;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    server_conn *wake_head; /* connections with work for the service thread, under lock */
    /* Readiness of every WebSocket's input, polled by a long broadcast (server_broadcast.c); -1
     * when it could not be created (broadcasts then never stop early). */
    int input_epfd;
    /* Service thread: the broadcast's share of the current loop turn, over every engine flushed
     * in it (server_broadcast.c). */
    size_t turn_writes;    /* frames written in this pass */
    size_t turn_unchecked; /* written since the last look for input */
    bool turn_yielded;     /* the turn gave way to input: the flushes left wait for the next */
    bool turn_woken;       /* lws_cancel_service() called since the end of the last turn */
    bool turn_room_owed;   /* no room flushed yet this turn: one is, however busy the turn */
    bool turn_end_pass;    /* the pass after lws_service() returned, not a wake inside it */
    uint32_t turn_seq;     /* loop turns ended, counted modulo 2^32 */

    /* service-thread counters (read by /metrics on the same thread) */
    int ws_open;
    uint64_t accepted;
    uint64_t refused;
    uint64_t rate_limited;
    uint64_t bytes_in;
    uint64_t messages_in;
    uint64_t frames_sent;
    uint64_t broadcasts_cut_short;
    uint64_t broadcast_passes; /* walks that reached broadcast_yield_ms before coming round */
    atomic_uint_fast64_t resumes_patch; /* v2 resumes served by a patch / by the whole state */
    atomic_uint_fast64_t resumes_state;
    uint64_t bytes_sent;
    atomic_uint_fast64_t closed_slow; /* also counted by transport ops on other threads */
    uint64_t closed_too_big;
    uint64_t closed_buffer_budget;
    uint64_t tcp_refused; /* connections closed at accept: at the descriptor limit */
    /* Bytes of partial messages held server-wide (rx reassembly capacity and messages held for a
     * deferred auth), against max_buffered_bytes. */
    size_t buffered_bytes;
};

/* What a connection waiting for a deferred auth decision needs; only those connections have it. */
typedef struct server_auth_wait {
    server_conn *conn;
    sync_request *request;             /* under the auth lock: the request still undecided */
    int decision;                      /* under server->lock: SERVER_AUTH_UNDECIDED or a status */
    char *identity;                    /* under server->lock: the identity that came with it */
    struct server_held_msg *held_head; /* service thread: messages sent before the decision */
    struct server_held_msg *held_tail;
    size_t held_bytes;
    lws_sorted_usec_list_t timer; /* service thread: auth_timeout_ms */
    server_conn *room_next;       /* service thread: in its room's list of waiting connections */
    server_conn *room_prev;
} server_auth_wait;

/* A message being reassembled from several fragments or RECEIVE callbacks (service thread). */
typedef struct server_rx {
    size_t len;
    size_t cap;          /* of data[], counted against max_buffered_bytes */
    uint32_t utf8_state; /* sync__utf8_accept() across the pieces of a text: 0 between messages */
    char data[];
} server_rx;

/* Under server->lock, what a connection has only while frames wait or once its close has a reason
 * (an idle connection has none): its queue of explicit frames, a ring, and the close reason. */
typedef struct server_out {
    char
        *close_reason; /* NULL: none; set once with close_pending, kept until the connection goes */
    size_t queued_bytes;
    uint32_t cap; /* of ring[] */
    uint32_t head;
    uint32_t count;
    sync__frame *ring[];
} server_out;

/* One WebSocket connection: the object of its engine handle (sync_conn), in the handle's block
 * (sync__conn_new_transport_object), freed with the last reference. There is one per connection,
 * so it is packed (104 bytes, with the handle 168): what only some connections need (a deferred
 * auth, v2, a message in pieces, frames waiting, a close reason) hangs off it and is allocated
 * when needed. Bit-fields guarded by different locks or threads are kept apart by state_moved:
 * never one memory location (C11), so no write of one loses a write of another. */
struct server_conn {
    uint8_t kind; /* SERVER_WSI_WS: first, like every lws user object of the server */
    /* Service thread: */
    bool echo : 1; /* on server_mount_echo()'s path: no engine, messages come back */
    bool
        auth_waiting : 1; /* a deferred auth (sync_request_defer) not yet applied: the
                             connection is upgraded but not joined, what the client sends is held */
    bool joined : 1;      /* sync_engine_handle_open() was called */
    bool live : 1;        /* in eng->live_head: the end-of-turn broadcast writes to it */
    bool write_failed : 1;
    /* A room mount's connection (its room is the server_room whose eng it is), and whether it
     * joined the room's engine. */
    bool is_room : 1;
    bool room_joined : 1;
    atomic_bool state_moved; /* under server->lock; also read without it: the broadcast fast path */
    /* Under server->lock: */
    bool force : 1;
    bool in_wake : 1;
    bool close_pending : 1;
    bool close_armed : 1;
    uint16_t close_code;
    /* Service thread, a room's connection: 1 while the room is being created, then 0 or the close
     * code of a room that failed or was deleted. In the padding: connections stay small. */
    uint16_t room_wait;

    /* Not eng->server: a room's eng goes with the room, and an application may still hold the
     * engine handle and send through it (which finds the connection closed). */
    sync_server *server;
    server_engine *eng; /* NULL on the echo path */
    /* A v2 connection's (set before it joins, freed with it); NULL on v1 */
    server_v2 *v2;
    server_auth_wait *auth; /* set once by the upgrade, freed with the connection; NULL when the
                               auth answered at once (most connections: they pay 8 bytes) */

    /* Under server->lock: */
    struct lws *wsi; /* NULL once closed */
    server_out *out; /* NULL while no frame waits and no close reason was given */
    server_conn *wake_next;
    server_conn *wake_prev;

    /* Service thread only: */
    uint64_t last_sent_seq;
    server_conn *live_next;
    server_conn *live_prev;
    server_rx *rx; /* NULL unless a message is being reassembled */
};

/* The rate limit's bucket (service thread), right after the connection in its block when the
 * server has a rate limit (rate_limit_per_sec > 0): a server without one does not pay for it. */
typedef struct server_rate {
    float tokens;
    int64_t tokens_ms;
} server_rate;

/* The engine's handle of a connection (the same block, sync__conn_of()). */
static inline sync_conn *server_conn_handle(server_conn *c)
{
    return sync__conn_of(c);
}

/* server.c */
void server_log(sync_server *server, sync_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool server_on_service_thread(const sync_server *server);
/* Wakes the service thread from any thread (async-signal-safe). */
void server_wake(sync_server *server);
const server_mount *server_find_mount(const sync_server *server, const char *path);
/* Processes the wake list and moved deadlines (service thread, on LWS_CALLBACK_EVENT_WAIT_CANCELLED
 * and, turn_end, after every loop turn). */
void server_process_wakes(sync_server *server, bool turn_end);

/* server.c: at the descriptor limit (or after accept failed for want of one), stops polling the
 * listen socket for SERVER_ACCEPT_PAUSE_MS (service thread). */
void server_pause_accept(sync_server *server);

/* server_conn.c: the resume point of the upgrade's URL (?since=V&epoch=E), kept for the
 * connection in case lws selects the v2 subprotocol (ESTABLISHED decides). Out of memory, or a
 * malformed value, only means no resume: the client gets an initial_state. */
void server_conn_take_resume(server_conn *c, struct lws *wsi);
/* server_conn.c; eng NULL: an echo connection (server_mount_echo) */
server_conn *server_conn_new(sync_server *server, server_engine *eng, char *identity);
/* Drops a connection that never became a WebSocket. */
void server_conn_abandon(server_conn *c);
int server_conn_established(server_conn *c, struct lws *wsi);
int server_conn_receive(server_conn *c, const void *in, size_t len);
int server_conn_writeable(server_conn *c);
void server_conn_closed(server_conn *c);
/* Service thread, under server->lock: hands a connection's pending work to lws. */
void server_conn_wake_locked(server_conn *c);

/* server_broadcast.c: the end-of-turn broadcast of each engine's newest state frame. */
/* Service thread: one engine's flush (a room's, which is not in server->engines). */
void server_broadcast_flush_engine(server_engine *eng);
/* The engine listener's state_moved (transport.h): any thread, engine lock held. */
void server_broadcast_state_moved(void *userdata, int force);
void server_broadcast_init(sync_server *server);
void server_broadcast_release(sync_server *server);
/* Service thread, after each loop turn: writes each moved engine's frame to its live connections.
 */
void server_broadcast_flush(sync_server *server);
/* Service thread: a pass of flushes begins; turn_end: the one after lws read what was ready,
 * which starts a new turn (inside lws's service, a turn that gave way to input flushes no more:
 * lws reads that input first). */
void server_broadcast_turn_begin(sync_server *server, bool turn_end);
/* Service thread, before an engine's flush: whether this turn still flushes. False once the turn
 * has written its share and input is waiting: the engine waits for the next turn (which this
 * call makes sure comes without sleeping). */
bool server_broadcast_turn_open(sync_server *server);
/* Service thread: the next loop turn must not sleep (lws_cancel_service(), once per turn). */
void server_turn_wake(sync_server *server);
/* Service thread: a connection starts (after its initial state) or stops receiving broadcasts. */
void server_broadcast_join(server_conn *c);
void server_broadcast_leave(server_conn *c);

/* server_alloc.c: installs the allocator of libwebsockets (once per process, before the first
 * context), which maps the header tables of handshakes apart from the heap. */
void server_alloc_install(void);
/* Tests: the header-table blocks mapped now, and ever. */
void server_alloc_stats(size_t *mapped_now, uint64_t *mapped_ever);
/* Connection memory (lws' allocations, the server's objects of a connection): slabs mapped apart
 * from the heap, whose pages go back once the connections close. malloc/calloc/realloc/free
 * semantics; server_conn_free and server_conn_realloc also take heap pointers. */
void *server_conn_malloc(size_t size);
void *server_conn_calloc(size_t size);
void *server_conn_realloc(void *ptr, size_t size);
void server_conn_free(void *ptr);
/* Gives back the first pages an empty chunk of each size class keeps resident (a class whose few
 * blocks come and go costs no syscall that way): where the server returns memory after a wave of
 * frees (rooms unloaded, the last connection gone). */
void server_alloc_trim_spares(void);
/* Whether any empty chunk keeps warm pages (cheap: for the service loop's idle check). */
bool server_alloc_has_warm_spares(void);
/* Tests: the bytes of slab chunks mapped now (0 under AddressSanitizer: no slabs). */
size_t server_alloc_slab_bytes(void);

/* server_upgrade.c: LWS_CALLBACK_HTTP_CONFIRM_UPGRADE (`upgrade`: the Upgrade header's value).
 * Checks the RFC 6455 handshake headers, then the gate. 0 to let the upgrade proceed, else what
 * the callback returns (the refusal's HTTP status was sent). */
int server_upgrade_check(sync_server *server, struct lws *wsi, const char *upgrade);
/* LWS_CALLBACK_WS_PEER_INITIATED_CLOSE: 0 lets lws echo the peer's close frame; -1 after
 * answering a close frame that breaks RFC 6455 section 7.4 / 5.5.1 with 1002 (or 1007). */
int server_peer_close(struct lws *wsi, const unsigned char *payload, size_t len);
/* A request head lws 4.1 parses whole (it drops a longer one without an answer). */
#define SERVER_MAX_HEADER_DATA 16384
/* Longest request target and header value accepted: longer ones get 414 / 431. */
#define SERVER_MAX_REQUEST_TARGET 8192
#define SERVER_MAX_HEADER_VALUE 8192
/* 0, or 414 / 431 for a request target or a header over those limits (lws holds up to
 * SERVER_MAX_HEADER_DATA in all; it drops a longer request before any callback). Upgrades and
 * plain HTTP requests alike. */
int server_request_size_status(struct lws *wsi);
/* lws stops storing a header it knows at SERVER_MAX_HEADER_VALUE bytes instead of failing the
 * request (it skips the rest), so a long one is still answered (431) and not dropped. */
extern const struct lws_token_limits server_token_limits;
/* Tests only, never exported (the Autobahn TestSuite, tests/autobahn): WebSocket upgrades to
 * `path` echo every message back, text as text and binary as binary, through the same
 * connection, limits and write path as engine connections; no engine, no Origin or auth check.
 * Before listen. */
int server_mount_echo(sync_server *server, const char *path);
enum { SERVER_AUTH_UNDECIDED = -1 };
/* A deferred auth's refusal closes with this + the HTTP status (4401, 4403; 4408: timed out). */
enum { SERVER_CLOSE_AUTH_BASE = 4000 };
/* Service thread: a connection that goes away stops being the one its deferred request decides
 * (a later sync_request_complete() then says SYNC_ECLOSED). */
void server_auth_forget(server_conn *c);
/* Answers an upgrade request with an HTTP/1.1 error status and closes; returns what the lws
 * callback returns. */
int server_refuse_upgrade(struct lws *wsi, int status);

/* server_conn.c, deferred auth: */
/* Any thread, with server_upgrade.c's auth lock held (so `c` is alive): records the decision and
 * wakes the service thread. */
void server_conn_auth_decided_locked(server_conn *c, int status, char *identity);

/* server_http.c: the LWS_CALLBACK_HTTP* reasons. */
int server_http_callback(sync_server *server, struct lws *wsi, enum lws_callback_reasons reason,
                         void *in, size_t len);
void server_http_free(struct lws *wsi);

/* server_cluster.c */
/* SYNC_EINVAL when the server is clustered and `engine` has an adapter. */
int server_cluster_check_engine(sync_server *server, const char *path, sync_engine *engine);
/* At listen: starts the node and attaches every fixed mount. */
int server_cluster_listen(sync_server *server);
/* The upgrade gate of a clustered server: 0, or 503 (no Redis; a fixed mount's room `eng` not
 * loaded yet). */
int server_cluster_gate(sync_server *server, const server_engine *eng);
/* At free, after the rooms: detaches the fixed mounts and stops the node. */
void server_cluster_release(sync_server *server);
/* server_rooms.c: sync__cluster_deleted_fn of a clustered server (userdata: the server). */
void server_rooms_cluster_deleted(void *server, void *room);

/* server_rooms.c */
void server_rooms_init(sync_server *server);
/* Frees every room (saved first) and mount; at sync_server_free. */
void server_rooms_release(sync_server *server);
/* The upgrade gate for a path under a room mount: 0 when `path` is no room mount's; else an HTTP
 * status to refuse with (400 bad name, 503 none idle or the room failed), or -1 with *out_room
 * (the caller holds it as a waiting client: server_rooms_conn_gone() lets go). */
int server_rooms_match(sync_server *server, const char *path, struct sync_rooms **out_mount,
                       char **out_name);
/* After the other checks and the auth: the room, counted as needed by the caller's connection.
 * NULL: refuse with 503 (max_rooms and none idle, or its creation failed at once). */
server_room *server_rooms_need(struct sync_rooms *mount, const char *name);
server_engine *server_room_engine(server_room *room);
/* 1 when the connection's room is ready to join now. */
int server_rooms_conn_ready(server_conn *c);
/* A connection that waits (its auth wait state made): waits for its room too, unless it became
 * ready meanwhile; server_rooms.c wakes it. */
void server_rooms_conn_attach(server_conn *c);
/* A connection joined its room's engine / went away (service thread). */
void server_rooms_conn_joined(server_conn *c);
void server_rooms_conn_gone(server_conn *c);
/* A room connection got its initial state and joined the broadcast (service thread). */
void server_rooms_conn_live(server_conn *c);
/* Service thread, each loop turn: broadcasts, timers, finished creations and unloads. */
void server_rooms_process(sync_server *server);
/* At serve start / end (service thread): arm / cancel every room's timers. */
void server_rooms_serve_start(sync_server *server);
void server_rooms_serve_end(sync_server *server);
/* At a graceful stop: saves every loaded room. */
void server_rooms_sync_all(sync_server *server);
/* /metrics: appends the room families and sums the mounts' engines into stats per mount. */
size_t server_rooms_mount_count(sync_server *server);
const char *server_rooms_prefix(sync_server *server, size_t i);
void server_rooms_stats(sync_server *server, size_t i, sync_engine_stats *sum, uint64_t *loaded,
                        uint64_t *created, uint64_t *unloaded, uint64_t *refused);

/* server_metrics.c: the Prometheus text of /metrics; caller frees. NULL on ENOMEM. */
char *server_metrics_render(sync_server *server, size_t *len);

#endif

/*
 * libsync — the built-in WebSocket server (libwebsockets). One call turns engines into a running
 * real-time service: engines are mounted on URL paths, or created per room under a prefix
 * (sync_server_mount_rooms, rooms.h), an optional static directory is served over HTTP on the same
 * port, with GET /healthz and GET /metrics (Prometheus text).
 *
 * Threads. One service thread owns every socket: the thread inside sync_server_run(), or the
 * thread sync_server_start() creates. Engines mounted on a running server may be used from any
 * thread (set_state, broadcast, ...): their frames are handed to the service thread, which is woken
 * with lws_cancel_service(). sync_server_stop() may be called from any thread, and
 * sync_server_request_stop() also from a signal handler; sync_rooms_* (rooms.h) from any thread.
 * Every other sync_server_* function must not run concurrently with itself on the same server.
 *
 * Broadcast. A changed state is serialised once per version and the same frame is shared by every
 * connection. A connection that cannot keep up is sent the latest state when it can write again,
 * not a backlog: intermediate versions may be skipped, the final one never is. The mounted engines
 * get auto_broadcast on, and their heartbeat and sync timers are run by the service thread.
 *
 * Closing codes. 1001 at a graceful stop; 1003 for a binary frame (the protocol is JSON text);
 * 1007 for text that is not UTF-8 (checked as it arrives) and for a close frame whose reason is
 * not; 1008 for a rate-limit flood or a client that lets more than max_queued_bytes of frames
 * pile up; 1009 for a message over max_message_bytes; 1013 when the server-wide
 * max_buffered_bytes is spent; 1002 for frames that break RFC 6455,
 * among them a close frame with a 1-byte payload or with a code a peer may not send (below
 * 1000, 1004-1006, 1012-2999, 5000 and up: libwebsockets 4.1 counts 1012-1014, registered after
 * RFC 6455, among them); 4000 + an HTTP status for a deferred auth that refused (4408: not
 * decided in time); 4001 (SYNC_CLOSE_PING_TIMEOUT, reason "ping timeout") when the heartbeat
 * found nothing arrived from a client for ping_timeout_ms (a message, the text "pong" or a
 * WebSocket pong frame all count); 4410 (SYNC_CLOSE_ROOM_DELETED) for the clients of a room
 * sync_rooms_delete() removed and 4503 (SYNC_CLOSE_ROOM_UNAVAILABLE) for clients held while their
 * room was created when that failed (rooms.h). A reason given to sync_conn_close() is sent with its
 * code (cut to 123 bytes; none when it is not UTF-8). Any other close code a client sends is
 * echoed. Nothing is written after a close frame, and the TCP connection ends once it is out.
 *
 * Refused upgrades get an HTTP/1.1 status and a text/plain body that says why: 400 for a
 * handshake that breaks RFC 6455 section 4.2.1 (Upgrade "h2c", a Connection header without the
 * "Upgrade" token, a Sec-WebSocket-Key that is not base64 of 16 bytes, no
 * Sec-WebSocket-Version; "websocket" is matched in any case, and libwebsockets itself answers
 * 403 to other Upgrade values), 426 with "Sec-WebSocket-Version: 13" for another version, 414
 * for a request target of 8 KiB or more, 431 for a header of 8 KiB or more, 404 (no engine on
 * that path), 400 for a bad room name under a room mount (rooms.h), 503 (max_connections reached,
 * or stopping; under a room mount also max_rooms with none idle, or a room whose setup or load
 * failed at once), 403 (Origin not allowed), or the auth callback's. libwebsockets 4.1 drops
 * without an answer a request head over 16 KiB in all and, after the 10 s handshake timeout, one
 * with a folded (obs-fold) header: it gives no callback for either.
 *
 * Subprotocols. The server speaks "libsync" (v1: whole states) and "libsync.v2" (patches and
 * resume, docs/PROTOCOL.md); each one it speaks is an entry of its lws protocol table. A client
 * that offers none is accepted without one and gets v1; a client that offers one of them among
 * others gets the first of its list that the server speaks in Sec-WebSocket-Protocol; a client that
 * offers only others is refused with 400 ("no supported subprotocol offered"): accepting it without
 * one is what a browser fails anyway, and libwebsockets 4.1 cannot do it.
 */
#ifndef LIBSYNC_SERVER_H
#define LIBSYNC_SERVER_H

#include "libsync/common.h"
#include "libsync/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sync_server sync_server;   /**< opaque */
typedef struct sync_request sync_request; /**< an upgrade request, seen by the auth callback */

/** The request path ("/counter"), borrowed for the duration of the auth callback. */
SYNC_EXTERN const char *sync_request_path(const sync_request *req);
/** The raw query string without '?' ("" when none), borrowed likewise. */
SYNC_EXTERN const char *sync_request_query(const sync_request *req);
/** The value of one header by case-insensitive name ("authorization", "origin", "cookie"), or NULL.
 *  Borrowed likewise. */
SYNC_EXTERN const char *sync_request_header(const sync_request *req, const char *name);
/** The peer address as text ("127.0.0.1"), borrowed likewise. */
SYNC_EXTERN const char *sync_request_peer(const sync_request *req);
/** Attaches an identity (JSON text, copied) to the connection this request opens; handlers read it
 *  with sync_conn_identity(). */
SYNC_EXTERN int sync_request_set_identity(sync_request *req, const char *identity_json);

/**
 * Decides whether a WebSocket upgrade may proceed. Runs on the service thread before the
 * connection joins an engine. Returns 0 to accept, or an HTTP status (401, 403, 429...) to refuse
 * the upgrade with that status. Must not block for long: every connection waits.
 *
 * To decide later (a database, another service, a JavaScript promise), call sync_request_defer()
 * and return SYNC_PENDING; then call sync_request_complete() once, from any thread. The client is
 * upgraded meanwhile but not joined: it is sent nothing, and what it sends is held (up to
 * max_message_bytes in all) and applied in order once it is accepted. A refusal then closes the
 * WebSocket with code 4000 + the HTTP status (4401, 4403...), and a connection still undecided
 * after auth_timeout_ms is closed with 4408.
 */
typedef int (*sync_auth_cb)(sync_request *req, void *userdata);

/**
 * Inside the auth callback: keeps `req` for a decision made with sync_request_complete(), even
 * before the callback returns; once deferred, only that call decides, whatever the callback
 * returns (SYNC_PENDING by convention). Path, query and peer stay readable; headers do not (read
 * the ones needed before returning). Returns `req`, or NULL (SYNC_ESTATE) outside the callback.
 */
SYNC_EXTERN sync_request *sync_request_defer(sync_request *req);

/**
 * The decision on a deferred request: 0 accepts (with the identity set by
 * sync_request_set_identity(), from any thread before this call), an HTTP status 400..599
 * refuses (anything else refuses with 403). Any thread, exactly once per deferred request; the
 * request is freed. SYNC_ECLOSED when the client left (or the server stopped) before the decision,
 * which is then dropped. Made inside the callback on its own thread, the decision is answered like
 * a returned status (a refusal is an HTTP response); made on any other thread, even before the
 * callback returned, the client is always upgraded first (a refusal is a 4000 + status close).
 */
SYNC_EXTERN int sync_request_complete(sync_request *req, int status);

/**
 * 1 when `given` (given_len bytes, need not be NUL-terminated) equals the NUL-terminated `secret`,
 * else 0, in a time that depends on the lengths only, never on where a guess first goes wrong: the
 * comparison an auth callback needs for a token read from a header or the query.
 */
SYNC_EXTERN int sync_secret_equal(const char *given, size_t given_len, const char *secret);

/* 2 added broadcast_yield_ms, 3 auth_timeout_ms, 4 handshake_timeout_ms and max_buffered_bytes,
 * 5 log_free_userdata, 6 room_idle_ms and max_rooms (rooms.h). A
 * caller built against an older version keeps passing it and the shorter struct: the library reads
 * (and sync_server_options_init writes) only the fields of the version given. */
#define SYNC_SERVER_OPTIONS_VERSION 7

/** The event loop under the server's one service thread (sync_server_options.event_loop). Both
 *  serve the same protocol with the same threads, timers and graceful stop; they differ in cost.
 *  POLL is libwebsockets' own loop: one poll() over every descriptor per turn, whose cost grows
 *  with the connections open. EPOLL runs libwebsockets on libev with its epoll backend: a turn
 *  costs what is ready, not what is open (1.1-1.5x the increments per second of POLL in bench/run's
 *  fan-out C with 1,000 clients, 2x in F with 10,000), for about 130 bytes more per connection
 *  (libev's two watchers in every libwebsockets connection, and its entry per descriptor). EPOLL
 *  needs lws's libev event library (Debian: libwebsockets-evlib-ev): without it an explicit EPOLL
 *  fails listen with SYNC_ENET, and DEFAULT serves on POLL (logged at SYNC_LOG_INFO). The
 *  environment variable LIBSYNC_EVENT_LOOP=poll|epoll, read by sync_server_new(), turns DEFAULT
 *  into that explicit choice. sync_server_event_loop() tells which loop a listening server runs. */
typedef enum sync_event_loop {
    /** the library's choice: EPOLL where lws's libev event library loads, else POLL */
    SYNC_EVENT_LOOP_DEFAULT = 0,
    SYNC_EVENT_LOOP_POLL = 1,
    SYNC_EVENT_LOOP_EPOLL = 2
} sync_event_loop;

typedef struct sync_server_options {
    unsigned int version; /**< SYNC_SERVER_OPTIONS_VERSION */
    /** Address to listen on (copied); NULL = "127.0.0.1". */
    const char *host;
    /** TCP port; 0 picks a free one (read it with sync_server_port()). */
    int port;
    /** Directory served over HTTP GET (copied), "index.html" for "/"; NULL = none. Paths that
     *  leave the directory are refused. */
    const char *static_dir;
    /** Largest accepted message; a larger one closes the connection with 1009. 0 = 1 MiB. */
    size_t max_message_bytes;
    /** Most open WebSocket connections; more are refused (HTTP 503). 0 = 100000. The server also
     *  caps it at what the process's open-file limit (RLIMIT_NOFILE, read at listen) leaves after
     *  a reserve of 96 descriptors: 64 for stores, logs and files, 32 for connections that are
     *  answered 503 or served /healthz. Near the limit new TCP connections are closed at once and
     *  accepting pauses briefly instead of failing in a loop. */
    int max_connections;
    /** Per-connection message rate: sustained messages per second, and burst. A connection over
     *  its budget has the message dropped with an error frame, and is closed with 1008 when it
     *  keeps flooding. 0 = unlimited. */
    double rate_limit_per_sec;
    int rate_limit_burst;
    /** Most bytes of queued frames (replies, pings, initial state) per connection beyond the
     *  always-latest state; a client that lets more pile up is closed with 1008. 0 = 4 MiB. */
    size_t max_queued_bytes;
    /** Allowed Origin header values (each copied); NULL or count 0 = any origin (and none). A
     *  request with another Origin is refused with 403. */
    const char *const *allowed_origins;
    size_t allowed_origins_count;
    /** Authentication; NULL = everyone. */
    sync_auth_cb auth;
    void *auth_userdata;
    sync_free_cb auth_free_userdata; /**< runs once: when the server is freed or creation fails */
    /** TLS: both PEM paths (copied) or both NULL. With them the server speaks https/wss only. */
    const char *tls_cert_path;
    const char *tls_key_path;
    /** Longest graceful stop: after this, remaining connections are dropped. 0 = 5000. */
    int stop_timeout_ms;
    /** Log sink for the server and libwebsockets; NULL = stderr (errors and warnings only). */
    sync_log_cb log;
    void *log_userdata;
    /* ---- version 2 ---- */
    /** How long a broadcast gives way to any incoming message. Writing one state to thousands
     *  of sockets takes milliseconds; when messages arrive meanwhile, the server stops, applies
     *  them, and goes on with the newer state (clients not yet written skip the older one). After
     *  this many milliseconds of that, the broadcast makes one pass over every client in slices of
     *  at least 1/32 of them (at least 32; up to 128 clients, one slice), reading input only
     *  between slices: no client waits longer than this plus that pass for the newest state. 0 = 2
     * ms; -1 = never give way (each broadcast reaches every client first). */
    int broadcast_yield_ms;
    /* ---- version 3 ---- */
    /** How long a deferred auth decision (sync_request_defer) may take before the connection is
     *  closed with 4408. 0 = 10000 ms. */
    int auth_timeout_ms;
    /* ---- version 4 ---- */
    /** How long a connection may take from accept to a complete request head (the WebSocket
     *  upgrade or an HTTP request); one that has sent nothing or an incomplete head by then is
     *  dropped, and so is an idle HTTP keep-alive connection's next request head. Rounded up to
     *  whole seconds (libwebsockets keeps this timeout in seconds). 0 = 5000 ms. */
    int handshake_timeout_ms;
    /** Server-wide budget for partial messages: the reassembly buffers of messages that arrive
     *  in several pieces and the messages held while a deferred auth decides. A connection whose
     *  next piece would go over it is closed with 1013 (Try Again Later) and the reason "server
     *  busy: message buffer budget spent". Queued outgoing frames are not counted here: each
     *  connection's are capped by max_queued_bytes. 0 = 64 MiB. */
    size_t max_buffered_bytes;
    /* ---- version 5 ---- */
    /** Releases log_userdata (may be NULL): exactly once, when the server is freed (after its
     *  last log line) or before a failing sync_server_new() returns (common.h). */
    sync_free_cb log_free_userdata;
    /* ---- version 6 ---- */
    /** A room (rooms.h) with no client for this long is saved and unloaded. 0 = 30000 ms;
     *  -1 = rooms stay loaded until max_rooms needs their place or the server is freed. */
    int room_idle_ms;
    /** Most rooms loaded at once, over every room mount; beyond it the least recently used idle
     *  room is unloaded, and a join that finds none idle is refused with 503. 0 = 100000. */
    int max_rooms;
    /* ---- version 7 ---- */
    /** The event loop the service thread runs (sync_event_loop). 0 = SYNC_EVENT_LOOP_DEFAULT. */
    int event_loop;
} sync_server_options;

#define SYNC_SERVER_OPTIONS_INIT                                                                   \
    {                                                                                              \
        SYNC_SERVER_OPTIONS_VERSION, NULL, 0, NULL, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL, NULL,      \
            NULL, NULL, 0, NULL, NULL, 0, 0, 0, 0, NULL, 0, 0, 0                                   \
    }

SYNC_EXTERN int sync_server_options_init(sync_server_options *opts, unsigned int version);

/** Creates a server (nothing listens yet). */
SYNC_EXTERN int sync_server_new(sync_server **out, const sync_server_options *opts);

/**
 * Mounts `engine` at `path` ("/" or "/counter"; copied): WebSocket upgrades to that exact path
 * join it. Only before listen. The engine is borrowed: it must outlive the server (free the
 * server first). SYNC_EINVAL for a path already mounted or not starting with '/'. One engine may
 * be mounted on several servers at once (ws:// and wss://, two interfaces): every change reaches
 * the clients of all of them. Up to 8 servers per engine; listening on a ninth fails (SYNC_ELIMIT).
 */
SYNC_EXTERN int sync_server_mount(sync_server *server, const char *path, sync_engine *engine);

/**
 * Requires `token` (copied) for GET /metrics: a request must bring "Authorization: Bearer TOKEN"
 * or "?token=TOKEN", else it is answered 401. NULL makes /metrics public again (the default).
 * Only before listen (SYNC_ESTATE after); SYNC_EINVAL for an empty token. /healthz and the static
 * directory stay public.
 */
SYNC_EXTERN int sync_server_set_metrics_token(sync_server *server, const char *token);

/** Binds and listens. SYNC_ENET (with the reason in sync_error_last()) when that fails. */
SYNC_EXTERN int sync_server_listen(sync_server *server);

/** The port listened on (useful after port 0), or -1 before listen. */
SYNC_EXTERN int sync_server_port(const sync_server *server);

/** The event loop the server serves on: SYNC_EVENT_LOOP_POLL or SYNC_EVENT_LOOP_EPOLL once it
 *  has listened (SYNC_EVENT_LOOP_DEFAULT's choice included; it stays after a stop), and
 *  SYNC_EVENT_LOOP_DEFAULT before. SYNC_EINVAL for NULL. */
SYNC_EXTERN int sync_server_event_loop(const sync_server *server);

/** Serves on the calling thread until sync_server_stop(); listens first if needed.
 *  Returns SYNC_OK after a graceful stop. */
SYNC_EXTERN int sync_server_run(sync_server *server);

/** Listens (if needed) and serves on a new background thread; returns once it accepts. */
SYNC_EXTERN int sync_server_start(sync_server *server);

/**
 * Asks for a graceful stop and returns at once: the call for signal handlers. It only sets an
 * atomic flag and wakes the service thread (an eventfd write), so it is async-signal-safe and
 * never blocks; the service thread then does what sync_server_stop() describes, and
 * sync_server_run() returns. Any thread; a server that is not serving stops as soon as it
 * serves. To wait for a background server to end, call sync_server_stop() or sync_server_free()
 * afterwards (outside the handler).
 */
SYNC_EXTERN int sync_server_request_stop(sync_server *server);

/**
 * Graceful stop: stop accepting, persist every mounted engine and loaded room (sync), send close
 * 1001 to every connection, and end the service loop within stop_timeout_ms. From any thread, but
 * NOT from a signal handler (use sync_server_request_stop() there): when the server runs on a
 * background thread this call waits for it to end and joins it. From the service thread itself it
 * returns at once. SYNC_ESTATE when the server did not end within stop_timeout_ms + 2 s.
 */
SYNC_EXTERN int sync_server_stop(sync_server *server);

/** Stops (if running), then frees. Mounted engines are left to their owner (not freed); loaded
 *  rooms are saved and freed. */
SYNC_EXTERN void sync_server_free(sync_server *server);

#ifdef __cplusplus
}
#endif

#endif /* LIBSYNC_SERVER_H */

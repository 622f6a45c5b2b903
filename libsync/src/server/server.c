/* The server's lifecycle: options, mounts, the lws context, the service loop, timers and stop. */
#include "server_internal.h"

#include <errno.h>
#include <ev.h>
#include <limits.h>
#include <netdb.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "options.h"

_Static_assert(LWS_PRE <= SYNC__FRAME_HEADROOM, "frames need LWS_PRE bytes of headroom");

/* Per-connection receive buffer of lws, and what lws 4.1 reads from a socket at once (plus
 * LWS_PRE). Messages larger than this arrive in several RECEIVE callbacks and are reassembled by
 * server_conn.c. lws writes the buffer only for frames that arrive in pieces, and it sits in a
 * slab class of its own, so an idle client's is never resident: its size costs only the clients
 * that send. 1 KiB: a sender's batch of 16 increments arrives in one read instead of three, and
 * few of its messages are cut between two (B: about 1.15x the throughput of 256 bytes). The cost is
 * the slab chunks' first pages, shared by fewer buffers: about 56 bytes per idle connection
 * (docs/PERFORMANCE.md). */
#define SERVER_RX_BUFFER 1024
#define SERVER_RX_ROUNDS 8
/* Left at 0, lws caps each write at the receive buffer size: a 64 KiB state would leave in 256-byte
 * sends. Frames are written straight from their shared buffer, so a large cap costs no memory. */
#define SERVER_TX_PACKET_SIZE (1u << 20)

/* lws logs through one process-wide sink; it goes to the most recently listening server. */
static pthread_mutex_t lws_log_lock = PTHREAD_MUTEX_INITIALIZER;
static sync_server *lws_log_server;
/* Set while this thread tries lws on libev for SYNC_EVENT_LOOP_DEFAULT: what lws says of a libev
 * event library it cannot load is not an error then, as listen goes on with poll. */
static _Thread_local bool lws_log_demoted;
/* Set once SYNC_EVENT_LOOP_DEFAULT found that lws cannot load its libev event library: later
 * servers go to poll at once. lws 4.1 leaks a directory entry on each failed load (lws_dir()), and
 * what is not installed now will not be during this process. */
static atomic_bool evlib_unloadable;

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void log_emit(sync_server *server, sync_log_level level, const char *message)
{
    if (server && server->log) {
        server->log(level, message, server->log_userdata);
        return;
    }
    if (level <= SYNC_LOG_WARN)
        fprintf(stderr, "libsync server: %s\n", message);
}

void server_log(sync_server *server, sync_log_level level, const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    log_emit(server, level, message);
}

/* lws logs "accept: errno N" and returns to poll, where the listen socket is still readable: at
 * the descriptor limit that is a busy loop writing thousands of lines a second. The line is the
 * only sign lws gives of it, so it both pauses accepting (serve() acts on accept_failed) and is
 * let through at most once a second, with the count of those held back. */
static int64_t accept_log_ms;
static unsigned accept_log_suppressed;

static void lws_log_sink(int level, const char *line)
{
    char message[512];
    snprintf(message, sizeof message, "lws: %s", line);
    size_t n = strlen(message);
    while (n && (message[n - 1] == '\n' || message[n - 1] == '\r'))
        message[--n] = '\0';
    pthread_mutex_lock(&lws_log_lock);
    if (strncmp(line, "accept: errno", 13) == 0) {
        if (lws_log_server)
            atomic_store(&lws_log_server->accept_failed, true);
        int64_t now = sync_now_ms();
        if (accept_log_ms && now - accept_log_ms < 1000) {
            accept_log_suppressed++;
            pthread_mutex_unlock(&lws_log_lock);
            return;
        }
        if (accept_log_suppressed)
            snprintf(message + n, sizeof message - n, " (%u more since the last such line)",
                     accept_log_suppressed);
        accept_log_ms = now;
        accept_log_suppressed = 0;
    }
    sync_log_level as = level == LLL_ERR ? SYNC_LOG_ERROR : SYNC_LOG_WARN;
    log_emit(lws_log_server, lws_log_demoted ? SYNC_LOG_DEBUG : as, message);
    pthread_mutex_unlock(&lws_log_lock);
}

bool server_on_service_thread(const sync_server *server)
{
    return atomic_load(&server->serving) && pthread_equal(pthread_self(), server->service_thread);
}

/* Async-signal-safe (sync_server_request_stop): atomics, and lws_cancel_service(), which in lws
 * 4.1 is an eventfd_write() behind a log call that returns at once unless LLL_DEBUG is enabled
 * (the server sets ERR|WARN at listen). */
void server_wake(sync_server *server)
{
    atomic_fetch_add(&server->wakers, 1);
    struct lws_context *ctx = atomic_load(&server->wake_context);
    if (ctx) {
        atomic_fetch_add_explicit(&server->wakes, 1, memory_order_relaxed);
        lws_cancel_service(ctx);
    }
    atomic_fetch_sub(&server->wakers, 1);
}

const server_mount *server_find_mount(const sync_server *server, const char *path)
{
    for (size_t i = 0; i < server->mount_count; i++)
        if (strcmp(server->mounts[i].path, path) == 0)
            return &server->mounts[i];
    return NULL;
}

/* ---- options ----------------------------------------------------------------------------- */

/* The bytes a caller's struct of that (known) version has: the fields after it do not exist. */
static size_t options_size(unsigned int version)
{
    if (version >= 7)
        return sizeof(sync_server_options);
    if (version == 6)
        return offsetof(sync_server_options, event_loop);
    if (version == 5)
        return offsetof(sync_server_options, room_idle_ms);
    if (version == 4)
        return offsetof(sync_server_options, log_free_userdata);
    if (version == 3)
        return offsetof(sync_server_options, handshake_timeout_ms);
    return version == 2 ? offsetof(sync_server_options, auth_timeout_ms)
                        : offsetof(sync_server_options, broadcast_yield_ms);
}

int sync_server_options_init(sync_server_options *opts, unsigned int version)
{
    static const sync_server_options defaults = SYNC_SERVER_OPTIONS_INIT;
    return sync__options_init(opts, &defaults, options_size(version), version,
                              SYNC_SERVER_OPTIONS_VERSION, "server");
}

/* SYNC_EVENT_LOOP_DEFAULT: LIBSYNC_EVENT_LOOP=poll|epoll from the environment, so that a whole
 * test suite or a binding's server can run on either loop without a new option in every
 * language (an explicit choice: epoll then fails without lws's libev event library); otherwise
 * DEFAULT stays, and listen takes epoll if lws can load its libev event library, else poll. */
static int default_event_loop(int chosen)
{
    if (chosen != SYNC_EVENT_LOOP_DEFAULT)
        return chosen;
    const char *env = getenv("LIBSYNC_EVENT_LOOP");
    if (env && strcmp(env, "epoll") == 0)
        return SYNC_EVENT_LOOP_EPOLL;
    if (env && strcmp(env, "poll") == 0)
        return SYNC_EVENT_LOOP_POLL;
    return SYNC_EVENT_LOOP_DEFAULT;
}

static int check_options(const sync_server_options *o)
{
    int rc = sync__check_options_version(o->version, SYNC_SERVER_OPTIONS_VERSION, "server");
    if (rc != SYNC_OK)
        return rc;
    if (o->port < 0 || o->port > 65535)
        return sync__fail(SYNC_EINVAL, "port %d is out of range", o->port);
    if (o->max_connections < 0)
        return sync__fail(SYNC_EINVAL, "max_connections is negative");
    if (o->version >= 2 && o->broadcast_yield_ms < -1)
        return sync__fail(SYNC_EINVAL, "broadcast_yield_ms must be -1, 0 or a number of ms, not %d",
                          o->broadcast_yield_ms);
    if (o->version >= 3 && o->auth_timeout_ms < 0)
        return sync__fail(SYNC_EINVAL, "auth_timeout_ms is negative");
    if (o->version >= 4 && o->handshake_timeout_ms < 0)
        return sync__fail(SYNC_EINVAL, "handshake_timeout_ms is negative");
    if (o->version >= 6 && o->room_idle_ms < -1)
        return sync__fail(SYNC_EINVAL, "room_idle_ms must be -1, 0 or a number of ms, not %d",
                          o->room_idle_ms);
    if (o->version >= 6 && o->max_rooms < 0)
        return sync__fail(SYNC_EINVAL, "max_rooms is negative");
    if (o->version >= 7 &&
        (o->event_loop < SYNC_EVENT_LOOP_DEFAULT || o->event_loop > SYNC_EVENT_LOOP_EPOLL))
        return sync__fail(SYNC_EINVAL, "event_loop %d is not a sync_event_loop", o->event_loop);
    if (o->rate_limit_per_sec < 0 || o->rate_limit_burst < 0)
        return sync__fail(SYNC_EINVAL, "rate limit is negative");
    if (o->stop_timeout_ms < 0)
        return sync__fail(SYNC_EINVAL, "stop_timeout_ms is negative");
    if (!o->tls_cert_path != !o->tls_key_path)
        return sync__fail(SYNC_EINVAL, "TLS needs both a certificate and a key path");
    if (o->allowed_origins_count && !o->allowed_origins)
        return sync__fail(SYNC_EINVAL, "allowed_origins is NULL with a count");
    for (size_t i = 0; i < o->allowed_origins_count; i++)
        if (!o->allowed_origins[i])
            return sync__fail(SYNC_EINVAL, "allowed_origins[%zu] is NULL", i);
    return SYNC_OK;
}

static void server_release(sync_server *server)
{
    server_rooms_release(server);
    server_cluster_release(server);
    server_broadcast_release(server);
    if (server->auth_free_userdata)
        server->auth_free_userdata(server->auth_userdata);
    for (size_t i = 0; i < server->mount_count; i++)
        free(server->mounts[i].path);
    free(server->mounts);
    free(server->echo_path);
    for (size_t i = 0; i < server->engine_count; i++)
        free(server->engines[i]);
    free(server->engines);
    for (size_t i = 0; i < server->origin_count; i++)
        free(server->origins[i]);
    free(server->origins);
    free(server->host);
    free(server->static_dir);
    free(server->metrics_token);
    free(server->tls_cert);
    free(server->tls_key);
    pthread_mutex_destroy(&server->lock);
    pthread_cond_destroy(&server->cond);
    /* last: the server logs nothing after this */
    if (server->log_free_userdata)
        server->log_free_userdata(server->log_userdata);
    free(server);
}

static sync_free_cb option_log_free_userdata(const sync_server_options *opts)
{
    return opts->version >= 5 ? opts->log_free_userdata : NULL;
}

/* Every failure before the server holds them releases the options' userdata, once (common.h). */
static int new_fail(const sync_server_options *opts, int status)
{
    if (opts) {
        if (opts->auth_free_userdata)
            opts->auth_free_userdata(opts->auth_userdata);
        sync_free_cb log_free = option_log_free_userdata(opts);
        if (log_free)
            log_free(opts->log_userdata);
    }
    return status;
}

int sync_server_new(sync_server **out, const sync_server_options *opts)
{
    if (out)
        *out = NULL;
    if (!out || !opts)
        return new_fail(opts, sync__fail(SYNC_EINVAL, "out or options is NULL"));
    int rc = check_options(opts);
    if (rc != SYNC_OK)
        return new_fail(opts, rc);
    sync_server *s = calloc(1, sizeof *s);
    if (!s)
        return new_fail(opts, sync__fail(SYNC_ENOMEM, "out of memory for the server"));
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    server_broadcast_init(s);
    server_rooms_init(s);
    s->auth = opts->auth;
    s->auth_userdata = opts->auth_userdata;
    s->auth_free_userdata = opts->auth_free_userdata;
    s->port_option = opts->port;
    s->port = -1;
    s->max_message_bytes = opts->max_message_bytes ? opts->max_message_bytes : 1024 * 1024;
    s->max_connections_option = opts->max_connections ? opts->max_connections : 100000;
    s->max_connections = s->max_connections_option;
    s->rate_per_sec = opts->rate_limit_per_sec;
    s->rate_burst = opts->rate_limit_burst > 0
                        ? opts->rate_limit_burst
                        : (opts->rate_limit_per_sec > 1 ? opts->rate_limit_per_sec : 1);
    s->max_queued_bytes = opts->max_queued_bytes ? opts->max_queued_bytes : 4 * 1024 * 1024;
    s->stop_timeout_ms = opts->stop_timeout_ms ? opts->stop_timeout_ms : 5000;
    int yield_ms = opts->version >= 2 ? opts->broadcast_yield_ms : 0;
    s->broadcast_yield_ms = yield_ms ? yield_ms : SERVER_BROADCAST_YIELD_MS;
    int auth_timeout_ms = opts->version >= 3 ? opts->auth_timeout_ms : 0;
    s->auth_timeout_ms = auth_timeout_ms ? auth_timeout_ms : SERVER_AUTH_TIMEOUT_MS;
    int handshake_ms = opts->version >= 4 ? opts->handshake_timeout_ms : 0;
    s->handshake_timeout_ms = handshake_ms ? handshake_ms : SERVER_HANDSHAKE_TIMEOUT_MS;
    size_t buffered = opts->version >= 4 ? opts->max_buffered_bytes : 0;
    s->max_buffered_bytes = buffered ? buffered : SERVER_MAX_BUFFERED_BYTES;
    int idle_ms = opts->version >= 6 ? opts->room_idle_ms : 0;
    s->room_idle_ms = idle_ms ? idle_ms : SERVER_ROOM_IDLE_MS;
    int max_rooms = opts->version >= 6 ? opts->max_rooms : 0;
    s->max_rooms = max_rooms ? max_rooms : SERVER_MAX_ROOMS;
    s->event_loop = default_event_loop(opts->version >= 7 ? opts->event_loop : 0);
    s->log = opts->log;
    s->log_userdata = opts->log_userdata;
    s->log_free_userdata = option_log_free_userdata(opts);
    s->host = strdup(opts->host ? opts->host : "127.0.0.1");
    s->tls_cert = dup_or_null(opts->tls_cert_path);
    s->tls_key = dup_or_null(opts->tls_key_path);
    bool oom = !s->host || (opts->tls_cert_path && (!s->tls_cert || !s->tls_key));
    if (opts->static_dir) {
        s->static_dir = realpath(opts->static_dir, NULL);
        if (!s->static_dir) {
            rc = sync__fail(SYNC_EINVAL, "static_dir %s: %s", opts->static_dir, strerror(errno));
            server_release(s);
            return rc;
        }
    }
    if (opts->allowed_origins_count) {
        s->origins = calloc(opts->allowed_origins_count, sizeof *s->origins);
        oom = oom || !s->origins;
        for (size_t i = 0; s->origins && i < opts->allowed_origins_count; i++) {
            s->origins[i] = strdup(opts->allowed_origins[i]);
            s->origin_count = i + 1;
            oom = oom || !s->origins[i];
        }
    }
    if (oom) {
        server_release(s);
        return sync__fail(SYNC_ENOMEM, "out of memory for the server options");
    }
    *out = s;
    sync__error_clear();
    return SYNC_OK;
}

/* ---- mounts ------------------------------------------------------------------------------ */

/* A mounted engine's lws timer beside it: a room's engine has none (the rooms share one timer,
 * server_rooms.c), and its server_engine is part of each loaded room. */
typedef struct server_mounted {
    server_engine eng; /* first: server->engines holds &eng, and frees it */
    lws_sorted_usec_list_t timer;
} server_mounted;

static lws_sorted_usec_list_t *engine_timer(server_engine *eng)
{
    return &((server_mounted *)eng)->timer;
}

int sync_server_mount(sync_server *server, const char *path, sync_engine *engine)
{
    if (!server || !path || !engine)
        return sync__fail(SYNC_EINVAL, "server, path or engine is NULL");
    if (path[0] != '/')
        return sync__fail(SYNC_EINVAL, "mount path \"%s\" does not start with '/'", path);
    if (strchr(path, '?') || strchr(path, '#'))
        return sync__fail(SYNC_EINVAL, "mount path \"%s\" has a query or fragment", path);
    if (server->context || atomic_load(&server->serving))
        return sync__fail(SYNC_ESTATE, "mount before the server listens");
    if (server_find_mount(server, path))
        return sync__fail(SYNC_EINVAL, "path \"%s\" is already mounted", path);
    int checked = server_cluster_check_engine(server, path, engine);
    if (checked != SYNC_OK)
        return checked;

    server_engine *eng = NULL;
    for (size_t i = 0; i < server->engine_count; i++)
        if (server->engines[i]->engine == engine)
            eng = server->engines[i];
    char *copy = strdup(path);
    server_mount *mounts =
        copy ? realloc(server->mounts, (server->mount_count + 1) * sizeof *mounts) : NULL;
    if (!mounts) {
        free(copy);
        return sync__fail(SYNC_ENOMEM, "out of memory for a mount");
    }
    server->mounts = mounts;
    if (!eng) {
        server_engine **engines =
            realloc(server->engines, (server->engine_count + 1) * sizeof *engines);
        if (engines)
            server->engines = engines;
        server_mounted *mounted = engines ? calloc(1, sizeof *mounted) : NULL;
        eng = mounted ? &mounted->eng : NULL;
        if (!eng) {
            free(copy);
            return sync__fail(SYNC_ENOMEM, "out of memory for a mount");
        }
        eng->server = server;
        eng->engine = engine;
        eng->path = copy;
        server->engines[server->engine_count++] = eng;
    }
    mounts[server->mount_count].path = copy;
    mounts[server->mount_count].eng = eng;
    server->mount_count++;
    sync__engine_set_auto_broadcast(engine, 1);
    sync__error_clear();
    return SYNC_OK;
}

/* ---- timers ------------------------------------------------------------------------------ */

static void engine_timer_arm(server_engine *eng);

static void engine_timer_fired(lws_sorted_usec_list_t *sul)
{
    server_engine *eng = &lws_container_of(sul, server_mounted, timer)->eng;
    sync_engine_tick(eng->engine, -1);
    engine_timer_arm(eng);
}

static void engine_timer_arm(server_engine *eng)
{
    int64_t deadline = sync_engine_next_deadline_ms(eng->engine);
    if (deadline < 0) {
        lws_sul_cancel(engine_timer(eng));
        return;
    }
    int64_t wait_ms = deadline - sync_now_ms();
    if (wait_ms < 0)
        wait_ms = 0;
    lws_sul_schedule(eng->server->context, 0, engine_timer(eng), engine_timer_fired,
                     (lws_usec_t)wait_ms * LWS_US_PER_MS);
}

static void deadline_moved(void *userdata)
{
    server_engine *eng = userdata;
    atomic_store(&eng->deadline_moved, true);
    server_wake(eng->server);
}

static void detach_engines(sync_server *server, size_t count)
{
    for (size_t i = 0; i < count; i++)
        sync__engine_remove_listener(server->engines[i]->engine, server->engines[i]);
}

/* Registers the server with each mounted engine: its changes and timer deadlines reach this
 * server's service thread (and those of any other server that serves the same engine). */
static int attach_engines(sync_server *server)
{
    for (size_t i = 0; i < server->engine_count; i++) {
        sync__engine_listener listener = {server_broadcast_state_moved, deadline_moved,
                                          server->engines[i]};
        int rc = sync__engine_add_listener(server->engines[i]->engine, &listener);
        if (rc != SYNC_OK) {
            detach_engines(server, i);
            return sync__fail(rc, "cannot serve the engine of %s: %s", server->engines[i]->path,
                              sync_error_last());
        }
    }
    return SYNC_OK;
}

void server_process_wakes(sync_server *server, bool turn_end)
{
    server_broadcast_turn_begin(server, turn_end);
    pthread_mutex_lock(&server->lock);
    server_conn *c = server->wake_head;
    server->wake_head = NULL;
    while (c) {
        server_conn *next = c->wake_next;
        c->in_wake = false;
        c->wake_next = c->wake_prev = NULL;
        server_conn_wake_locked(c);
        c = next;
    }
    pthread_mutex_unlock(&server->lock);
    for (size_t i = 0; i < server->engine_count; i++)
        if (atomic_exchange(&server->engines[i]->deadline_moved, false))
            engine_timer_arm(server->engines[i]);
    server_broadcast_flush(server);
    server_rooms_process(server);
}

/* ---- the descriptor limit ---------------------------------------------------------------- */

static void accept_resume(lws_sorted_usec_list_t *sul)
{
    sync_server *server = lws_container_of(sul, sync_server, accept_timer);
    server->accept_paused = false;
    if (server->listen_wsi && !server->stopping)
        lws_rx_flow_control(server->listen_wsi, 1);
}

void server_pause_accept(sync_server *server)
{
    /* lws also turns accepting back on whenever a connection closes, which frees a descriptor */
    if (!server->listen_wsi || server->accept_paused)
        return;
    server->accept_paused = true;
    lws_rx_flow_control(server->listen_wsi, 0);
    lws_sul_schedule(server->context, 0, &server->accept_timer, accept_resume,
                     (lws_usec_t)SERVER_ACCEPT_PAUSE_MS * LWS_US_PER_MS);
}

/* A new TCP connection: accept() returns the lowest free descriptor, so `fd` descriptors are in
 * use below it. In the last SERVER_FD_RESERVE the connection is closed at once (nothing is left
 * to answer it with, and the reserve belongs to stores and logs) and accepting pauses. */
static int filter_connection(sync_server *server, struct lws *listen_wsi, int fd)
{
    server->listen_wsi = listen_wsi;
    if (server->stopping)
        return -1;
    if (fd < server->fd_limit - SERVER_FD_RESERVE)
        return 0;
    server->tcp_refused++;
    int64_t now = sync_now_ms();
    if (!server->fd_log_ms || now - server->fd_log_ms >= 1000) {
        server_log(server, SYNC_LOG_WARN,
                   "at the open-file limit (%d): closing new connections (%u more since the last "
                   "warning)",
                   server->fd_limit, server->fd_log_suppressed);
        server->fd_log_ms = now;
        server->fd_log_suppressed = 0;
    } else {
        server->fd_log_suppressed++;
    }
    server_pause_accept(server);
    return -1;
}

/* ---- reading a busy socket more than once per turn ----------------------------------------- */

/* The callbacks of one read come together, so a change of socket ends the previous read; a read
 * that delivered at least half the buffer's payload may have been cut at the buffer's size. */
static void rx_read_done(sync_server *server)
{
    if (server->rx_fd >= 0 && server->rx_bytes >= SERVER_RX_BUFFER / 2 &&
        server->rx_more_count < sizeof server->rx_more / sizeof server->rx_more[0])
        server->rx_more[server->rx_more_count++] = server->rx_fd;
    server->rx_fd = -1;
    server->rx_bytes = 0;
}

static void rx_account(sync_server *server, struct lws *wsi, size_t len)
{
    int fd = (int)lws_get_socket_fd(wsi);
    if (fd != server->rx_fd) {
        rx_read_done(server);
        server->rx_fd = fd;
    }
    server->rx_bytes += len;
}

/* Reads again, up to SERVER_RX_ROUNDS times, the sockets whose read filled lws's buffer: a busy
 * client gets through as much input per turn as with a larger buffer, while an idle connection
 * holds only the small one. A socket with nothing left answers EAGAIN, which lws ignores. */
static void rx_drain(sync_server *server)
{
    for (int round = 0; round < SERVER_RX_ROUNDS; round++) {
        rx_read_done(server);
        size_t n = server->rx_more_count;
        if (n == 0)
            return;
        int fds[sizeof server->rx_more / sizeof server->rx_more[0]];
        memcpy(fds, server->rx_more, n * sizeof fds[0]);
        server->rx_more_count = 0;
        for (size_t i = 0; i < n; i++) {
            struct lws_pollfd pfd = {.fd = fds[i], .events = LWS_POLLIN, .revents = LWS_POLLIN};
            lws_service_fd(server->context, &pfd);
        }
    }
    rx_read_done(server);
    /* With TLS on epoll, the sockets still full are read again first thing next turn: lws's libev
     * glue leaves input that TLS holds decrypted to an idle watcher, which libev runs only in a
     * turn with nothing else ready (poll: lws's own turn forces that service). Without TLS what is
     * left is in the socket, and epoll reports it. */
    if (!server->evl || !server->tls_cert)
        server->rx_more_count = 0;
}

/* ---- the event loop ------------------------------------------------------------------------ */

/* SYNC_EVENT_LOOP_EPOLL: lws 4.1 on libev (Debian's libwebsockets-evlib-ev plugin), on a loop the
 * server owns and runs one turn at a time (lws's "foreign loop"), so that the turn keeps its shape:
 * lws services what is ready, then the server's rx rounds, accept pausing and wakes. Each lws
 * connection holds two ev_io watchers; a turn costs the descriptors ready, not the ones open.
 *
 * Timers (lws_sul: the server's and lws's own, such as the handshake and close timeouts) are run
 * by the server at the start of each turn, as lws_service() does on poll, with one ev_timer of its
 * own due when the earliest is. lws 4.1's libev glue cannot be left to it: it re-arms its libev
 * timer from an ev_idle watcher, which libev runs only in a turn with nothing else ready (never
 * under steady load), and with ev_timer_set() on a watcher that may be active (libev then keeps the
 * old due time). A timer scheduled between descriptors fired late or not at all: the rooms'
 * unload, a deferred room setup's 4408, the close of a client that never reads. */
struct server_evloop {
    struct ev_loop *loop;
    ev_timer timer;         /* due when the earliest lws_sul is; firing only ends the wait */
    lws_usec_t timer_at;    /* when `timer` is due, in lws_now_usecs() time */
    lws_dll2_owner_t *suls; /* the service thread's LWS_COUNT_PT_SUL_OWNERS timer lists */
    lws_sorted_usec_list_t probe;
};

static void evl_timer_fired(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

static void evl_probe_fired(lws_sorted_usec_list_t *sul)
{
    (void)sul;
}

static int evl_create(sync_server *server)
{
    struct server_evloop *evl = calloc(1, sizeof *evl);
    if (!evl)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    /* NOSIGMASK: no signal watchers here, and the application owns the signal mask */
    evl->loop = ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOENV | EVFLAG_NOSIGMASK);
    if (!evl->loop) {
        free(evl);
        return sync__fail(SYNC_ENET, "cannot create the epoll event loop");
    }
    ev_timer_init(&evl->timer, evl_timer_fired, 0., 0.);
    server->evl = evl;
    return SYNC_OK;
}

/* Once the context exists: lws's timer lists are where a timer scheduled on it lands (lws exports
 * __lws_sul_service_ripe() for code that runs them, but not the lists). */
static int evl_attach(sync_server *server)
{
    struct server_evloop *evl = server->evl;
    lws_sul_schedule(server->context, 0, &evl->probe, evl_probe_fired, LWS_US_PER_SEC);
    evl->suls = evl->probe.list.owner;
    lws_sul_cancel(&evl->probe);
    if (!evl->suls)
        return sync__fail(SYNC_ENET, "libwebsockets' timers cannot be found");
    return SYNC_OK;
}

/* After lws_context_destroy(): lws has stopped every watcher of its connections. */
static void evl_destroy(sync_server *server)
{
    struct server_evloop *evl = server->evl;
    if (!evl)
        return;
    ev_timer_stop(evl->loop, &evl->timer);
    ev_loop_destroy(evl->loop);
    free(evl);
    server->evl = NULL;
}

/* Ends the lws context: once no server_wake() can still reach it (a signal handler may be in
 * one), it is destroyed, and with it the connections it still has (their CLOSED callbacks run
 * here), then the event loop under it. */
static void context_destroy(sync_server *server)
{
    atomic_store(&server->wake_context, NULL);
    while (atomic_load(&server->wakers))
        sched_yield();
    lws_context_destroy(server->context);
    server->context = NULL;
    evl_destroy(server);
}

/* Runs the timers that are due and sets `timer` for the next one. */
static void evl_run_timers(struct server_evloop *evl)
{
    lws_usec_t now = lws_now_usecs();
    lws_usec_t wait = __lws_sul_service_ripe(evl->suls, LWS_COUNT_PT_SUL_OWNERS, now);
    if (wait == 0) { /* no timer at all */
        ev_timer_stop(evl->loop, &evl->timer);
        return;
    }
    if (ev_is_active(&evl->timer) && evl->timer_at == now + wait)
        return;
    ev_timer_stop(evl->loop, &evl->timer);
    /* libev counts from the loop's cached time, which lags: bring it up to date */
    ev_now_update(evl->loop);
    ev_timer_set(&evl->timer, (ev_tstamp)wait / 1e6, 0.);
    ev_timer_start(evl->loop, &evl->timer);
    evl->timer_at = now + wait;
}

/* One turn of lws: what is ready is serviced, then the sockets whose read filled lws's buffer are
 * read again (rx_drain); on epoll a turn does not wait while such sockets are left over. */
static int loop_turn(sync_server *server)
{
    if (server->evl) {
        evl_run_timers(server->evl);
        ev_run(server->evl->loop, server->rx_more_count ? EVRUN_NOWAIT : EVRUN_ONCE);
    } else if (lws_service(server->context, 0) < 0) {
        return -1;
    }
    rx_drain(server);
    return 0;
}

/* ---- the lws protocol callback ----------------------------------------------------------- */

static int server_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                           size_t len)
{
    (void)user;
    struct lws_context *ctx = lws_get_context(wsi);
    sync_server *server = ctx ? lws_context_user(ctx) : NULL;
    if (!server)
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    const uint8_t *tag = lws_get_opaque_user_data(wsi);
    server_conn *c = tag && *tag == SERVER_WSI_WS ? (server_conn *)(uintptr_t)tag : NULL;

    switch (reason) {
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        server_process_wakes(server, false);
        return 0;
    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
        return filter_connection(server, wsi, (int)(intptr_t)in);
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return server_upgrade_check(server, wsi, in);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        return server_peer_close(wsi, in, len);
    case LWS_CALLBACK_ESTABLISHED:
        if (!c)
            return -1;
        return server_conn_established(c, wsi);
    case LWS_CALLBACK_RECEIVE:
        if (c)
            rx_account(server, wsi, len);
        return c ? server_conn_receive(c, in, len) : -1;
    case LWS_CALLBACK_RECEIVE_PONG:
        /* a client's WebSocket-level pong shows it is alive as well as the text "pong" does */
        if (c && c->joined)
            sync_engine_handle_alive(c->eng->engine, server_conn_handle(c));
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return c ? server_conn_writeable(c) : 0;
    case LWS_CALLBACK_CLOSED:
        if (c) {
            lws_set_opaque_user_data(wsi, NULL);
            server_conn_closed(c);
        }
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
    case LWS_CALLBACK_CLOSED_HTTP:
        if (c) {
            /* upgrade refused or failed before ESTABLISHED */
            lws_set_opaque_user_data(wsi, NULL);
            if (c->wsi)
                server_conn_closed(c);
            else
                server_conn_abandon(c);
        } else {
            server_http_free(wsi);
        }
        return 0;
    case LWS_CALLBACK_HTTP:
    case LWS_CALLBACK_HTTP_BODY:
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
    case LWS_CALLBACK_HTTP_WRITEABLE:
    case LWS_CALLBACK_HTTP_FILE_COMPLETION:
        return server_http_callback(server, wsi, reason, in, len);
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

/* ---- listen, serve, stop ----------------------------------------------------------------- */

/* Binds host:port the way lws will (SO_REUSEADDR) and lets go at once, so that a port in use is
 * reported with its errno before lws is asked: lws 4.1 leaks its context's registrations when
 * lws_create_context() fails to bind. 0 = bindable, or not a numeric address lws resolves itself
 * (an interface name): then lws decides. */
static int probe_bind(const char *host, int port, int *out_errno)
{
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *addrs = NULL;
    if (getaddrinfo(host, service, &hints, &addrs) != 0)
        return 0;
    int rc = 0;
    int fd = socket(addrs->ai_family, addrs->ai_socktype | SOCK_CLOEXEC, addrs->ai_protocol);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, addrs->ai_addr, addrs->ai_addrlen) != 0) {
            *out_errno = errno;
            rc = -1;
        }
        close(fd);
    }
    freeaddrinfo(addrs);
    return rc;
}

/* A certificate or key that cannot be opened is reported with its errno before lws is asked
 * (which would only say that the context failed, and leak on the way: see probe_bind()). */
static int check_readable(const char *what, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return sync__fail(SYNC_ENET, "cannot read the TLS %s %s: %s", what, path, strerror(errno));
    fclose(f);
    return SYNC_OK;
}

int sync_server_listen(sync_server *server)
{
    if (!server)
        return sync__fail(SYNC_EINVAL, "server is NULL");
    if (server->context)
        return sync__fail(SYNC_ESTATE, "the server is already listening");
    if (server->tls_cert) {
        int rc = check_readable("certificate", server->tls_cert);
        if (rc == SYNC_OK)
            rc = check_readable("key", server->tls_key);
        if (rc != SYNC_OK)
            return rc;
    }
    int bind_errno = 0;
    if (server->port_option != 0 && probe_bind(server->host, server->port_option, &bind_errno) != 0)
        return sync__fail(SYNC_ENET, "cannot listen on %s:%d: %s", server->host,
                          server->port_option, strerror(bind_errno));

    pthread_mutex_lock(&lws_log_lock);
    lws_log_server = server;
    pthread_mutex_unlock(&lws_log_lock);
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_sink);

    memset(server->protocols, 0, sizeof server->protocols);
    server->protocols[0].name = SERVER_PROTOCOL_V1;
    server->protocols[0].callback = server_callback;
    server->protocols[0].rx_buffer_size = SERVER_RX_BUFFER;
    server->protocols[0].tx_packet_size = SERVER_TX_PACKET_SIZE;
    /* v2 differs only in the frames a connection gets (server_conn.c, server_broadcast.c) */
    server->protocols[1] = server->protocols[0];
    server->protocols[1].name = SERVER_PROTOCOL_V2;

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = server->port_option;
    info.iface = server->host;
    info.protocols = server->protocols;
    info.user = server;
    /* No LWS_SERVER_OPTION_VALIDATE_UTF8: server_conn.c checks text itself, as lws 4.1 would
     * drop a close frame with an invalid reason without the 1007 answer (server_peer_close). */
    info.options = LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND;
    /* Stalled handshakes and idle HTTP keep-alives end after this; TCP keepalive finds peers
     * that vanished without a FIN. */
    info.timeout_secs = 10;
    info.keepalive_timeout = 10;
    info.ka_time = 60;
    info.ka_probes = 3;
    info.ka_interval = 10;
    /* No lws "validity" timer: lws 4.1 keeps one per connection in its single time-sorted timer
     * list, 300 s out, so setting it on every new connection (and on every pong) walks all the
     * others: quadratic in the clients connected. Liveness is the heartbeat's
     * (heartbeat_interval_ms, ping_timeout_ms), with the timeouts above. */
    static const lws_retry_bo_t no_validity_timer = {.secs_since_valid_ping = 0,
                                                     .secs_since_valid_hangup = 0};
    info.retry_and_idle_policy = &no_validity_timer;
    /* lws gives every accepted connection a header table at once and times it out
     * timeout_secs_ah_idle later, whatever arrives meanwhile: that bounds both a connection that
     * sends nothing and a head sent a byte at a time. With a pool smaller than the connections
     * that may exist, new clients wait in a queue behind idle ones (and time out there), so the
     * pool is one table per descriptor; tables are allocated only while held, and mapped apart
     * from the heap so that many handshakes at once do not fragment it (server_alloc.c). */
    info.timeout_secs_ah_idle = (unsigned)((server->handshake_timeout_ms + 999) / 1000);
    struct rlimit nofile;
    server->fd_limit = 1024;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0)
        server->fd_limit = nofile.rlim_cur == RLIM_INFINITY || nofile.rlim_cur > (1u << 24)
                               ? 1 << 24
                               : (int)nofile.rlim_cur;
    info.max_http_header_pool2 = (unsigned)server->fd_limit;
    /* Room for a request head past our own limits on a target or a header (414, 431, answered
     * from the upgrade callback): lws 4.1 drops a head it cannot hold without an answer. */
    info.max_http_header_data = SERVER_MAX_HEADER_DATA;
    info.token_limits = &server_token_limits;
    int fd_conns = server->fd_limit - SERVER_FD_RESERVE - SERVER_FD_ANSWER;
    server->max_connections = server->max_connections_option < fd_conns
                                  ? server->max_connections_option
                                  : (fd_conns > 1 ? fd_conns : 1);
    if (server->max_connections < server->max_connections_option)
        server_log(server, SYNC_LOG_INFO,
                   "serving at most %d WebSocket connections: the open-file limit is %d",
                   server->max_connections, server->fd_limit);
    if (server->tls_cert) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = server->tls_cert;
        info.ssl_private_key_filepath = server->tls_key;
        /* WebSocket over HTTP/2 streams is not what the clients expect: stay on HTTP/1.1. */
        info.alpn = "http/1.1";
    }
    server_alloc_install();
    struct lws_context *ctx = NULL;
    bool on_libev = false;
    if (server->event_loop == SYNC_EVENT_LOOP_EPOLL ||
        (server->event_loop == SYNC_EVENT_LOOP_DEFAULT && !atomic_load(&evlib_unloadable))) {
        int rc = evl_create(server);
        if (rc != SYNC_OK)
            return rc;
        struct lws_context_creation_info on_ev = info;
        void *foreign_loops[1] = {server->evl->loop};
        on_ev.options |= LWS_SERVER_OPTION_LIBEV;
        on_ev.foreign_loops = foreign_loops;
        lws_log_demoted = server->event_loop == SYNC_EVENT_LOOP_DEFAULT;
        ctx = lws_create_context(&on_ev);
        lws_log_demoted = false;
        on_libev = true;
        if (!ctx)
            evl_destroy(server);
    }
    /* DEFAULT: a machine without lws's libev event library still serves, on poll */
    if (!ctx && server->event_loop != SYNC_EVENT_LOOP_EPOLL) {
        ctx = lws_create_context(&info);
        if (ctx && on_libev)
            atomic_store(&evlib_unloadable, true);
        if (ctx && server->event_loop == SYNC_EVENT_LOOP_DEFAULT)
            server_log(server, SYNC_LOG_INFO,
                       "serving on the poll event loop: libwebsockets' libev event library "
                       "(Debian: libwebsockets-evlib-ev) cannot be loaded");
        on_libev = false;
    }
    if (!ctx) {
        return sync__fail(
            SYNC_ENET, "cannot listen on %s:%d%s%s", server->host, server->port_option,
            server->tls_cert ? " (or the TLS certificate/key cannot be loaded)" : "",
            on_libev ? " (or libwebsockets' libev event library cannot be loaded)" : "");
    }
    server->context = ctx;
    server->vhost = lws_get_vhost_by_name(ctx, "default");
    server->port = server->vhost ? lws_get_vhost_listen_port(server->vhost) : -1;
    if (server->port <= 0) {
        lws_context_destroy(ctx);
        server->context = NULL;
        evl_destroy(server);
        return sync__fail(SYNC_ENET, "cannot listen on %s:%d", server->host, server->port_option);
    }
    int rc = server->evl ? evl_attach(server) : SYNC_OK;
    if (rc == SYNC_OK)
        rc = attach_engines(server);
    if (rc == SYNC_OK) {
        rc = server_cluster_listen(server);
        if (rc != SYNC_OK)
            detach_engines(server, server->engine_count);
    }
    if (rc != SYNC_OK) {
        lws_context_destroy(ctx);
        server->context = NULL;
        evl_destroy(server);
        server->vhost = NULL;
        server->port = -1;
        return rc;
    }
    server->stopping = false;
    atomic_store(&server->event_loop_running,
                 server->evl ? SYNC_EVENT_LOOP_EPOLL : SYNC_EVENT_LOOP_POLL);
    atomic_store(&server->ended, false);
    atomic_store(&server->wake_context, ctx);
    sync__error_clear();
    return SYNC_OK;
}

int sync_server_port(const sync_server *server)
{
    return server ? server->port : -1;
}

int sync_server_event_loop(const sync_server *server)
{
    if (!server)
        return sync__fail(SYNC_EINVAL, "server is NULL");
    return atomic_load(&server->event_loop_running);
}

static void stop_timer_fired(lws_sorted_usec_list_t *sul)
{
    (void)sul; /* only wakes lws_service so the loop sees the deadline */
}

static void begin_stop(sync_server *server)
{
    server->stopping = true;
    server->stop_deadline_ms = sync_now_ms() + server->stop_timeout_ms;
    lws_sul_schedule(server->context, 0, &server->stop_timer, stop_timer_fired,
                     (lws_usec_t)server->stop_timeout_ms * LWS_US_PER_MS);
    for (size_t i = 0; i < server->engine_count; i++) {
        int rc = sync_engine_sync(server->engines[i]->engine);
        if (rc < 0)
            server_log(server, SYNC_LOG_ERROR, "sync of %s at stop failed: %s",
                       server->engines[i]->path, sync_error_last());
    }
    server_rooms_sync_all(server);
    /* Every connection writes what is still due, then closes with 1001 (server_conn.c). */
    lws_callback_on_writable_all_protocol(server->context, &server->protocols[0]);
    lws_callback_on_writable_all_protocol(server->context, &server->protocols[1]);
}

static void serve(sync_server *server)
{
    server->service_thread = pthread_self();
    server->rx_fd = -1;
    server->rx_bytes = 0;
    server->rx_more_count = 0;
    server_broadcast_turn_begin(server, true);
    atomic_store(&server->serving, true);
    pthread_mutex_lock(&server->lock);
    pthread_cond_broadcast(&server->cond);
    pthread_mutex_unlock(&server->lock);
    for (size_t i = 0; i < server->engine_count; i++)
        engine_timer_arm(server->engines[i]);
    server_rooms_serve_start(server);

    for (;;) {
        if (atomic_load(&server->stop_requested) && !server->stopping)
            begin_stop(server);
        if (server->stopping && (server->ws_open == 0 || sync_now_ms() >= server->stop_deadline_ms))
            break;
        if (loop_turn(server) < 0) {
            server_log(server, SYNC_LOG_ERROR, "the service loop failed");
            break;
        }
        if (atomic_exchange(&server->accept_failed, false))
            server_pause_accept(server);
        server_process_wakes(server, true);
        if (server->ws_open == 0 && server_alloc_has_warm_spares())
            server_alloc_trim_spares(); /* no client left: the slabs' warm pages go back too */
    }

    detach_engines(server, server->engine_count);
    for (size_t i = 0; i < server->engine_count; i++)
        lws_sul_cancel(engine_timer(server->engines[i]));
    server_rooms_serve_end(server);
    lws_sul_cancel(&server->stop_timer);
    lws_sul_cancel(&server->accept_timer);
    server->accept_paused = false;
    server->listen_wsi = NULL;
    /* Closes the connections left after the timeout. */
    context_destroy(server);
    server->vhost = NULL;
    atomic_store(&server->serving, false);
    atomic_store(&server->stop_requested, false);
    atomic_store(&server->ended, true);
}

int sync_server_run(sync_server *server)
{
    if (!server)
        return sync__fail(SYNC_EINVAL, "server is NULL");
    if (server->thread_started || atomic_load(&server->serving))
        return sync__fail(SYNC_ESTATE, "the server is already running");
    if (!server->context) {
        int rc = sync_server_listen(server);
        if (rc != SYNC_OK)
            return rc;
    }
    serve(server);
    sync__error_clear();
    return SYNC_OK;
}

static void *service_main(void *arg)
{
    serve(arg);
    return NULL;
}

int sync_server_start(sync_server *server)
{
    if (!server)
        return sync__fail(SYNC_EINVAL, "server is NULL");
    if (server->thread_started && !atomic_load(&server->thread_joined))
        return sync__fail(SYNC_ESTATE, "the server is already running");
    if (atomic_load(&server->serving))
        return sync__fail(SYNC_ESTATE, "the server is already running");
    if (!server->context) {
        int rc = sync_server_listen(server);
        if (rc != SYNC_OK)
            return rc;
    }
    atomic_store(&server->thread_joined, false);
    int err = pthread_create(&server->thread, NULL, service_main, server);
    if (err)
        return sync__fail(SYNC_ENOMEM, "cannot start the service thread: %s", strerror(err));
    server->thread_started = true;
    pthread_mutex_lock(&server->lock);
    while (!atomic_load(&server->serving) && !atomic_load(&server->ended))
        pthread_cond_wait(&server->cond, &server->lock);
    pthread_mutex_unlock(&server->lock);
    sync__error_clear();
    return SYNC_OK;
}

int sync_server_request_stop(sync_server *server)
{
    /* Only what a signal handler may do: atomics and one eventfd write; no lock, no log, and
     * errno as the interrupted code left it. */
    if (!server)
        return SYNC_EINVAL;
    int saved_errno = errno;
    atomic_store(&server->stop_requested, true);
    server_wake(server);
    errno = saved_errno;
    return SYNC_OK;
}

int sync_server_stop(sync_server *server)
{
    if (!server)
        return SYNC_EINVAL;
    atomic_store(&server->stop_requested, true);
    server_wake(server);
    if (!server->thread_started || server_on_service_thread(server))
        return SYNC_OK;
    /* Bounded: a service thread that cannot finish (an engine lock held for good) is given up
     * after the timeout. */
    int64_t give_up = sync_now_ms() + server->stop_timeout_ms + 2000;
    while (!atomic_load(&server->ended) && sync_now_ms() < give_up) {
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&server->ended) && !atomic_exchange(&server->thread_joined, true)) {
        pthread_join(server->thread, NULL);
        server->thread_started = false;
    }
    return atomic_load(&server->ended) ? SYNC_OK : SYNC_ESTATE;
}

void sync_server_free(sync_server *server)
{
    if (!server)
        return;
    if (server->thread_started) {
        sync_server_stop(server);
        if (!atomic_exchange(&server->thread_joined, true))
            pthread_join(server->thread, NULL);
    } else if (server->context && !atomic_load(&server->serving)) {
        /* listened but never served */
        detach_engines(server, server->engine_count);
        context_destroy(server);
    }
    pthread_mutex_lock(&lws_log_lock);
    if (lws_log_server == server)
        lws_log_server = NULL;
    pthread_mutex_unlock(&lws_log_lock);
    server_release(server);
}

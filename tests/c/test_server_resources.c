/* The server's resources under clients that hold them: the descriptor limit (a child server with a
 * low RLIMIT_NOFILE answers 503, keeps /healthz, does not spin, logs little, and lets clients in
 * again), handshake slots against idle and slowloris connections, the server-wide budget for
 * partial messages (1013), a stop requested from a real signal handler, and the version-4
 * options. Everything over real sockets on 127.0.0.1. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "server_fixture.h"
#include "ws_client.h"

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Enough descriptors for a few hundred connections with both ends in this process. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* ---- the descriptor limit, in a child process with RLIMIT_NOFILE 256 ---------------------- */

static int log_fd = -1;

static void log_to_pipe(sync_log_level level, const char *message, void *userdata)
{
    (void)level;
    (void)userdata;
    char line[600];
    int n = snprintf(line, sizeof line, "%s\n", message);
    if (n > 0 && write(log_fd, line, (size_t)(n < (int)sizeof line ? n : (int)sizeof line - 1)) < 0)
        return;
}

static sync_server *child_server;

static void child_on_term(int sig)
{
    (void)sig;
    sync_server_request_stop(child_server);
}

/* SIGUSR2 takes every free descriptor (as a store or a log might), the next one gives them back:
 * accept() then fails with EMFILE, a path the reserve alone never reaches. */
static int hog[256];
static int hogged;

static void child_on_usr2(int sig)
{
    (void)sig;
    int saved_errno = errno;
    if (hogged) {
        for (int i = 0; i < hogged; i++)
            close(hog[i]);
        hogged = 0;
    } else {
        int fd;
        while (hogged < 256 && (fd = dup(0)) >= 0)
            hog[hogged++] = fd;
    }
    errno = saved_errno;
}

/* The child: a server on its main thread under a low descriptor limit; its port goes to
 * `port_fd`, its log lines to `lines_fd`; SIGTERM stops it. */
static void run_child(int port_fd, int lines_fd)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = 256;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        _exit(2);
    log_fd = lines_fd;
    fcntl(log_fd, F_SETFL, O_NONBLOCK); /* a flood of lines must not block the server on the pipe */
    sync_engine *engine = fixture_counter_engine(0);
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.log = log_to_pipe;
    if (!engine || sync_server_new(&child_server, &opts) != SYNC_OK ||
        sync_server_mount(child_server, "/", engine) != SYNC_OK ||
        sync_server_listen(child_server) != SYNC_OK)
        _exit(3);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = child_on_term;
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = child_on_usr2;
    sigaction(SIGUSR2, &sa, NULL);
    int port = sync_server_port(child_server);
    if (write(port_fd, &port, sizeof port) != sizeof port)
        _exit(4);
    close(port_fd);
    int rc = sync_server_run(child_server);
    sync_server_free(child_server);
    sync_engine_free(engine);
    _exit(rc == SYNC_OK ? 0 : 5);
}

/* CPU time (user + system) the process has used, in ms; -1 when unknown. */
static long long cpu_ms(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p)
        return -1;
    unsigned long long utime = 0, stime = 0;
    /* after ") ": state is field 3; utime and stime are fields 14 and 15 */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return -1;
    return (long long)(utime + stime) * 1000 / sysconf(_SC_CLK_TCK);
}

/* The log lines the child wrote so far (the pipe is non-blocking), added to *lines. */
static void count_lines(int fd, int *lines, int *accept_lines)
{
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] == '\n')
                (*lines)++;
        /* lines about accepting count separately: the spin wrote thousands */
        char *p = buf;
        while ((p = memmem(p, (size_t)(buf + n - p), "accept", 6)) != NULL) {
            (*accept_lines)++;
            p += 6;
        }
    }
}

static void test_descriptor_limit(void)
{
    int port_pipe[2], log_pipe[2];
    REQUIRE(pipe(port_pipe) == 0 && pipe(log_pipe) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        close(port_pipe[0]);
        close(log_pipe[0]);
        run_child(port_pipe[1], log_pipe[1]);
    }
    close(port_pipe[1]);
    close(log_pipe[1]);
    fcntl(log_pipe[0], F_SETFL, O_NONBLOCK);
    int port = -1;
    CHECK(read(port_pipe[0], &port, sizeof port) == sizeof port);
    close(port_pipe[0]);

    enum { MAX_WS = 400, IDLE = 120 };
    ws_client **ws = calloc(MAX_WS, sizeof *ws);
    ws_client **idle = calloc(IDLE, sizeof *idle);
    int joined = 0, refusal = 0, lines = 0, accept_lines = 0;
    if (port <= 0 || !ws || !idle)
        goto done;
    int64_t started = now_ms();

    /* 256 descriptors, 64 kept for stores and logs, 32 for answering: 160 WebSocket clients */
    CHECK_EQ_INT(fixture_metric(port, "libsync_server_connection_limit"), 160);
    while (joined < MAX_WS) {
        int status = -1;
        ws[joined] = ws_connect(port, "/", NULL, &status);
        if (!ws[joined]) {
            refusal = status;
            break;
        }
        joined++;
    }
    CHECK_EQ_INT(refusal, 503);
    CHECK_EQ_INT(joined, 160);
    CHECK_EQ_INT(http_request(port, "GET", "/healthz", NULL, NULL, NULL), 200);
    int status = -1;
    ws_client *extra = ws_connect(port, "/", NULL, &status);
    CHECK(extra == NULL);
    CHECK_EQ_INT(status, 503);

    /* Connections that send nothing take the rest of the descriptors: the server closes the
     * newest at accept instead of failing accept() in a loop, and its CPU stays low. */
    for (int i = 0; i < IDLE; i++)
        idle[i] = ws_client_tcp(port);
    count_lines(log_pipe[0], &lines, &accept_lines);
    long long cpu0 = cpu_ms(pid);
    int64_t t0 = now_ms();
    for (int round = 0; round < 20; round++) {
        ws_client *c = ws_client_tcp(port); /* keeps knocking */
        sleep_ms(100);
        ws_client_free(c);
        count_lines(log_pipe[0], &lines, &accept_lines);
    }
    long long used = cpu_ms(pid) - cpu0;
    int64_t wall = now_ms() - t0;
    fprintf(stderr, "  server CPU %lld ms in %lld ms at the descriptor limit\n", used,
            (long long)wall);
    CHECK(cpu0 >= 0 && used < wall / 4);
    int closed_at_accept = 0;
    for (int i = 0; i < IDLE; i++)
        closed_at_accept += idle[i] && ws_wait_eof(idle[i], 1) == 1;
    CHECK(closed_at_accept > 0);
    count_lines(log_pipe[0], &lines, &accept_lines);
    fprintf(stderr, "  %d log lines, %d about accepting\n", lines, accept_lines);
    /* the spin wrote thousands of "accept: errno 24" lines; now at most one line a second */
    int seconds = (int)((now_ms() - started) / 1000) + 1;
    CHECK(lines <= 2 + seconds);
    CHECK(accept_lines <= seconds);

    /* Every descriptor taken by something else: accept() fails with EMFILE. The server stops
     * polling the listen socket for a while each time instead of retrying at once. */
    for (int i = 0; i < IDLE; i++) {
        ws_client_free(idle[i]);
        idle[i] = NULL;
    }
    sleep_ms(300);
    kill(pid, SIGUSR2);
    sleep_ms(200);
    for (int i = 0; i < 10; i++)
        idle[i] = ws_client_tcp(port); /* wait in the listen backlog */
    count_lines(log_pipe[0], &lines, &accept_lines);
    int accept_lines_before = accept_lines;
    cpu0 = cpu_ms(pid);
    t0 = now_ms();
    for (int round = 0; round < 20; round++) {
        sleep_ms(100);
        count_lines(log_pipe[0], &lines, &accept_lines);
    }
    used = cpu_ms(pid) - cpu0;
    wall = now_ms() - t0;
    fprintf(stderr, "  server CPU %lld ms in %lld ms with accept failing, %d lines about it\n",
            used, (long long)wall, accept_lines - accept_lines_before);
    CHECK(cpu0 >= 0 && used < wall / 4);
    CHECK(accept_lines - accept_lines_before <= 1 + (int)(wall / 1000) + 1);
    CHECK(accept_lines > accept_lines_before); /* the failure was seen, and logged */
    kill(pid, SIGUSR2); /* the descriptors come back: the waiting connections are accepted */
    CHECK_EQ_INT(http_request(port, "GET", "/healthz", NULL, NULL, NULL), 200);

    /* when clients leave, new ones get in, and /healthz answers */
    for (int i = 0; i < IDLE; i++) {
        ws_client_free(idle[i]);
        idle[i] = NULL;
    }
    for (int i = 0; i < 20 && i < joined; i++) {
        ws_client_free(ws[i]);
        ws[i] = NULL;
    }
    fixture_open_connections(port, joined - 20);
    ws_client *again = fixture_join(port, "/");
    CHECK(again != NULL);
    ws_client_free(again);
    CHECK_EQ_INT(http_request(port, "GET", "/healthz", NULL, NULL, NULL), 200);

done:
    for (int i = 0; ws && i < joined; i++)
        ws_client_free(ws[i]);
    for (int i = 0; idle && i < IDLE; i++)
        ws_client_free(idle[i]);
    free(ws);
    free(idle);
    kill(pid, SIGTERM);
    int wstatus = 0;
    int64_t deadline = now_ms() + 15000;
    pid_t done_pid = 0;
    while ((done_pid = waitpid(pid, &wstatus, WNOHANG)) == 0 && now_ms() < deadline)
        sleep_ms(20);
    if (done_pid == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &wstatus, 0);
    }
    CHECK(done_pid == pid && WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
    close(log_pipe[0]);
}

/* ---- handshake slots -------------------------------------------------------------------- */

typedef struct joiner {
    int port;
    int status;
    int64_t took_ms;
} joiner;

static void *join_one(void *arg)
{
    joiner *j = arg;
    int64_t t0 = now_ms();
    ws_client *c = ws_connect(j->port, "/", NULL, &j->status);
    j->took_ms = now_ms() - t0;
    ws_client_free(c);
    return NULL;
}

typedef struct slowloris {
    ws_client **clients;
    int count;
    atomic_bool stop;
} slowloris;

/* One more byte of an upgrade request on every connection each second. */
static void *drip(void *arg)
{
    slowloris *s = arg;
    static const char request[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                                  "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n";
    for (size_t at = 0; at < sizeof request - 1 && !atomic_load(&s->stop); at++) {
        for (int i = 0; i < s->count; i++)
            if (s->clients[i])
                ws_send_raw(s->clients[i], request + at, 1);
        for (int t = 0; t < 10 && !atomic_load(&s->stop); t++)
            sleep_ms(100);
    }
    return NULL;
}

static void test_idle_and_slow_connections_do_not_starve_handshakes(void)
{
    raise_nofile();
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.log = fixture_quiet_log;
#if SYNC_SERVER_OPTIONS_VERSION >= 4
    opts.handshake_timeout_ms = 2000;
#endif
    sync_engine *engine = NULL;
    sync_server *server = fixture_counter_server(0, &opts, "/", &engine);
    REQUIRE(server);
    int port = sync_server_port(server);

    enum { IDLE = 200, SLOW = 200, FRESH = 20 };
    ws_client *idle[IDLE], *slow[SLOW];
    for (int i = 0; i < IDLE; i++)
        idle[i] = ws_client_tcp(port);
    for (int i = 0; i < SLOW; i++)
        slow[i] = ws_client_tcp(port);
    slowloris s = {slow, SLOW, false};
    pthread_t dripper;
    REQUIRE(pthread_create(&dripper, NULL, drip, &s) == 0);
    sleep_ms(300); /* every idle and slow connection is accepted and holds what it holds */

    joiner j[FRESH];
    pthread_t threads[FRESH];
    int64_t t0 = now_ms();
    for (int i = 0; i < FRESH; i++) {
        j[i] = (joiner){port, -1, -1};
        CHECK(pthread_create(&threads[i], NULL, join_one, &j[i]) == 0);
    }
    int joined = 0;
    for (int i = 0; i < FRESH; i++) {
        pthread_join(threads[i], NULL);
        joined += j[i].status == 101;
    }
    int64_t took = now_ms() - t0;
    fprintf(stderr, "  %d of %d fresh clients joined in %lld ms\n", joined, FRESH, (long long)took);
    CHECK_EQ_INT(joined, FRESH);
    CHECK(took < 3000);

#if SYNC_SERVER_OPTIONS_VERSION >= 4
    /* and handshake_timeout_ms drops both kinds: one that sent nothing, and one still dripping */
    CHECK_EQ_INT(ws_wait_eof(idle[0], 4000), 1);
    CHECK_EQ_INT(ws_wait_eof(slow[0], 2000), 1);
#endif
    atomic_store(&s.stop, true);
    pthread_join(dripper, NULL);
    for (int i = 0; i < IDLE; i++)
        ws_client_free(idle[i]);
    for (int i = 0; i < SLOW; i++)
        ws_client_free(slow[i]);
    sync_server_free(server);
    sync_engine_free(engine);
}

/* ---- the budget for partial messages ---------------------------------------------------- */

/* The close frame's code and reason (up to `size`), or -1. */
static int read_close(ws_client *c, char *reason, size_t size)
{
    int64_t deadline = now_ms() + 5000;
    while (now_ms() < deadline) {
        char *payload = NULL;
        size_t len = 0;
        int op = ws_read_frame(c, 1000, &payload, &len);
        if (op == WS_OP_CLOSE) {
            int code =
                len >= 2 ? ((unsigned char)payload[0] << 8 | (unsigned char)payload[1]) : 1005;
            snprintf(reason, size, "%.*s", len > 2 ? (int)(len - 2) : 0,
                     len > 2 ? payload + 2 : "");
            free(payload);
            return code;
        }
        free(payload);
        if (op < 0 && op != -1)
            return -1;
    }
    return -1;
}

static long long wait_metric(int port, const char *name, long long want)
{
    long long v = -1;
    for (int i = 0; i < 250; i++) {
        v = fixture_metric(port, name);
        if (v == want)
            break;
        sleep_ms(20);
    }
    return v;
}

static void test_partial_message_budget(void)
{
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.log = fixture_quiet_log;
#if SYNC_SERVER_OPTIONS_VERSION >= 4
    opts.max_buffered_bytes = 64 * 1024;
#endif
    sync_engine *engine = NULL;
    sync_server *server = fixture_counter_server(0, &opts, "/", &engine);
    REQUIRE(server);
    int port = sync_server_port(server);

    /* each first fragment (10000 bytes) makes a 16 KiB reassembly buffer: four fit in 64 KiB */
    enum { N = 5 };
    ws_client *c[N];
    char head[10000];
    int n = snprintf(head, sizeof head, "{\"type\":\"increment\",\"amount\":1,\"pad\":\"");
    memset(head + n, 'p', sizeof head - (size_t)n);
    for (int i = 0; i < N; i++) {
        c[i] = fixture_join(port, "/");
        REQUIRE(c[i]);
    }
    for (int i = 0; i < N - 1; i++) {
        CHECK_EQ_INT(ws_send_frame(c[i], WS_OP_TEXT, 0, head, sizeof head), 0);
        CHECK_EQ_INT(wait_metric(port, "libsync_server_buffered_bytes", (i + 1) * 16384LL),
                     (i + 1) * 16384LL);
    }
    /* the one that would go over the budget is closed with 1013 and a reason */
    CHECK_EQ_INT(ws_send_frame(c[N - 1], WS_OP_TEXT, 0, head, sizeof head), 0);
    char reason[128] = "";
    CHECK_EQ_INT(read_close(c[N - 1], reason, sizeof reason), 1013);
    CHECK_EQ_STR(reason, "server busy: message buffer budget spent");
    CHECK_EQ_INT(fixture_metric(port, "libsync_server_closed_buffer_budget_total"), 1);

    /* the others finish their messages, which apply; the budget is all given back */
    for (int i = 0; i < N - 1; i++)
        CHECK_EQ_INT(ws_send_frame(c[i], 0, 1, "\"}", 2), 0);
    CHECK_EQ_INT(wait_metric(port, "libsync_messages_applied_total{path=\"/\"}", N - 1), N - 1);
    CHECK_EQ_INT(fixture_counter_value(engine), N - 1);
    CHECK_EQ_INT(wait_metric(port, "libsync_server_buffered_bytes", 0), 0);
    for (int i = 0; i < N; i++)
        ws_client_free(c[i]);
    sync_server_free(server);
    sync_engine_free(engine);
}

static _Atomic(sync_request *) deferred_request;

static int defer_forever(sync_request *req, void *userdata)
{
    (void)userdata;
    atomic_store(&deferred_request, sync_request_defer(req));
    return SYNC_PENDING;
}

/* Messages held while a deferred auth decides count against the same budget. */
static void test_held_messages_count_against_the_budget(void)
{
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.log = fixture_quiet_log;
    opts.auth = defer_forever;
#if SYNC_SERVER_OPTIONS_VERSION >= 4
    opts.max_buffered_bytes = 100 * 1024;
#endif
    sync_engine *engine = NULL;
    sync_server *server = fixture_counter_server(0, &opts, "/", &engine);
    REQUIRE(server);
    int port = sync_server_port(server);
    atomic_store(&deferred_request, NULL);
    int status = -1;
    ws_client *c = ws_connect(port, "/", NULL, &status);
    REQUIRE(c);
    /* each 30000-byte message is reassembled (32 KiB) and then held (30000 bytes): two fit in
     * 100 KiB, the third does not */
    char msg[30001];
    int n = snprintf(msg, sizeof msg, "{\"type\":\"increment\",\"amount\":1,\"pad\":\"");
    memset(msg + n, 'p', sizeof msg - 1 - (size_t)n - 2);
    strcpy(msg + sizeof msg - 3, "\"}");
    CHECK_EQ_INT(ws_send_text(c, msg), 0);
    CHECK_EQ_INT(wait_metric(port, "libsync_server_buffered_bytes", 30000), 30000);
    CHECK_EQ_INT(ws_send_text(c, msg), 0);
    CHECK_EQ_INT(wait_metric(port, "libsync_server_buffered_bytes", 60000), 60000);
    CHECK_EQ_INT(ws_send_text(c, msg), 0);
    char reason[128] = "";
    CHECK_EQ_INT(read_close(c, reason, sizeof reason), 1013);
    CHECK_EQ_STR(reason, "server busy: message buffer budget spent");
    CHECK_EQ_INT(wait_metric(port, "libsync_server_buffered_bytes", 0), 0);
    CHECK_EQ_INT(fixture_counter_value(engine), 0); /* nothing held was applied */
    ws_client_free(c);
    fixture_open_connections(port, 0);
    sync_request *req = atomic_load(&deferred_request);
    CHECK(req != NULL);
    if (req)
        CHECK_EQ_INT(sync_request_complete(req, 403), SYNC_ECLOSED);
    sync_server_free(server);
    sync_engine_free(engine);
}

/* ---- stop from a signal handler --------------------------------------------------------- */

static sync_server *signalled_server;
static atomic_llong handler_took_ms = -1;
static atomic_int handler_rc = -100;

static void on_usr1(int sig)
{
    (void)sig;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a); /* async-signal-safe */
    atomic_store(&handler_rc, sync_server_request_stop(signalled_server));
    clock_gettime(CLOCK_MONOTONIC, &b);
    atomic_store(&handler_took_ms,
                 (long long)(b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000);
}

/* A client that never answers the close keeps the graceful stop busy for stop_timeout_ms; the
 * handler's call must still return at once, and the server end afterwards. */
static void test_request_stop_from_a_signal_handler(void)
{
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.log = fixture_quiet_log;
    opts.stop_timeout_ms = 3000;
    sync_engine *engine = NULL;
    signalled_server = fixture_counter_server(0, &opts, "/", &engine);
    REQUIRE(signalled_server);
    int port = sync_server_port(signalled_server);
    ws_client *mute = fixture_join(port, "/");
    REQUIRE(mute);
    /* a state of 16 MiB that the client never reads: its write stays pending, and the graceful
     * stop waits for it (up to stop_timeout_ms) */
    size_t big_len = 16u << 20;
    char *big = malloc(big_len + 64);
    REQUIRE(big);
    int n = snprintf(big, 64, "{\"counter\":1,\"pad\":\"");
    memset(big + n, 'p', big_len);
    strcpy(big + n + big_len, "\"}");
    CHECK_EQ_INT(sync_engine_set_state_json(engine, big, 1), SYNC_OK);
    free(big);
    sleep_ms(300);

    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    REQUIRE(sigaction(SIGUSR1, &sa, &old) == 0);
    int64_t t0 = now_ms();
    CHECK_EQ_INT(pthread_kill(pthread_self(), SIGUSR1), 0);
    while (atomic_load(&handler_took_ms) < 0 && now_ms() - t0 < 10000)
        sleep_ms(1);
    fprintf(stderr, "  the handler took %lld ms\n", (long long)atomic_load(&handler_took_ms));
    CHECK(atomic_load(&handler_took_ms) >= 0 && atomic_load(&handler_took_ms) < 500);
    CHECK_EQ_INT(atomic_load(&handler_rc), SYNC_OK);
    sigaction(SIGUSR1, &old, NULL);

    /* the stop goes on without the handler, and ends within stop_timeout_ms */
    CHECK_EQ_INT(sync_server_stop(signalled_server), SYNC_OK); /* waits for the end */
    CHECK(now_ms() - t0 < 3000 + 2500);
    CHECK(ws_connect(port, "/", NULL, NULL) == NULL);
    ws_client_free(mute);
    sync_server_free(signalled_server);
    signalled_server = NULL;
    sync_engine_free(engine);
}

static void *signal_main_later(void *arg)
{
    sleep_ms(200);
    pthread_kill(*(pthread_t *)arg, SIGUSR1);
    return NULL;
}

/* sync_server_run() on this thread returns once a handler on this thread requested the stop. */
static void test_request_stop_ends_run(void)
{
    sync_engine *engine = fixture_counter_engine(0);
    REQUIRE(engine);
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.log = fixture_quiet_log;
    REQUIRE(sync_server_new(&signalled_server, &opts) == SYNC_OK);
    REQUIRE(sync_server_mount(signalled_server, "/", engine) == SYNC_OK);
    atomic_store(&handler_took_ms, -1);
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    REQUIRE(sigaction(SIGUSR1, &sa, &old) == 0);
    pthread_t self = pthread_self(), killer;
    REQUIRE(pthread_create(&killer, NULL, signal_main_later, &self) == 0);
    int64_t t0 = now_ms();
    CHECK_EQ_INT(sync_server_run(signalled_server), SYNC_OK);
    CHECK(now_ms() - t0 < 5000);
    CHECK(atomic_load(&handler_took_ms) >= 0 && atomic_load(&handler_took_ms) < 500);
    pthread_join(killer, NULL);
    sigaction(SIGUSR1, &old, NULL);
    sync_server_free(signalled_server);
    signalled_server = NULL;
    sync_engine_free(engine);
}

/* ---- version-4 options ------------------------------------------------------------------ */

#if SYNC_SERVER_OPTIONS_VERSION >= 4
static void test_version_4_options(void)
{
    sync_server_options o = SYNC_SERVER_OPTIONS_INIT;
    o.handshake_timeout_ms = -1;
    sync_server *server = NULL;
    CHECK_EQ_INT(sync_server_new(&server, &o), SYNC_EINVAL);
    CHECK(strstr(sync_error_last(), "handshake_timeout_ms is negative"));
    CHECK(server == NULL);

    /* a caller built against version 3 passes the shorter struct: init writes nothing past it,
     * and the server reads nothing past it (the defaults apply) */
    sync_server_options *v3 =
        fixture_old_options(3, offsetof(sync_server_options, handshake_timeout_ms));
    REQUIRE(v3);
    v3->log = fixture_quiet_log;
    sync_engine *engine = fixture_counter_engine(0);
    REQUIRE(engine);
    server = fixture_server(v3, "/", engine); /* 0xA5 would be a negative timeout */
    CHECK(server != NULL);
    if (server) {
        int port = sync_server_port(server);
        ws_client *c = fixture_join(port, "/");
        CHECK(c != NULL);
        ws_client_free(c);
        sync_server_free(server);
    }
    sync_engine_free(engine);
    free(v3);

    sync_server_options filled;
    CHECK_EQ_INT(sync_server_options_init(&filled, SYNC_SERVER_OPTIONS_VERSION), SYNC_OK);
    CHECK_EQ_INT(filled.handshake_timeout_ms, 0);
    CHECK_EQ_INT(filled.max_buffered_bytes, 0);
    CHECK_EQ_INT(sync_server_request_stop(NULL), SYNC_EINVAL);
}
#endif

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    /* first, while this process has no other thread: the child server is forked */
    RUN(test_descriptor_limit);
    RUN(test_idle_and_slow_connections_do_not_starve_handshakes);
    RUN(test_partial_message_budget);
    RUN(test_held_messages_count_against_the_budget);
    RUN(test_request_stop_from_a_signal_handler);
    RUN(test_request_stop_ends_run);
#if SYNC_SERVER_OPTIONS_VERSION >= 4
    RUN(test_version_4_options);
#endif
    return check_summary();
}

/* The server's options at their edges: each wrong value refused with its reason (and the auth
 * userdata released, as the header promises), a port in use reported with its reason and
 * retried, mount paths refused, the log sink told of a store that fails at stop, and
 * stop_timeout_ms ending a stop whose clients cannot take what is still due. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "adapter_engine.h"
#include "adapter_fs.h"
#include "check.h"
#include "server_fixture.h"
#include "ws_client.h"

static int auth_userdata_freed;

static void count_auth_free(void *userdata)
{
    (void)userdata;
    auth_userdata_freed++;
}

static int allow_everyone(sync_request *req, void *userdata)
{
    (void)req;
    (void)userdata;
    return SYNC_OK;
}

/* sync_server_new(opts) must fail with SYNC_EINVAL, a reason containing `reason`, no server, and
 * the auth userdata released once. */
static void expect_refused(sync_server_options *opts, const char *reason)
{
    opts->auth = allow_everyone;
    opts->auth_free_userdata = count_auth_free;
    auth_userdata_freed = 0;
    sync_server *server = (sync_server *)&auth_userdata_freed; /* must be overwritten */
    CHECK_EQ_INT(sync_server_new(&server, opts), SYNC_EINVAL);
    CHECK(server == NULL);
    if (!strstr(sync_error_last(), reason)) {
        fprintf(stderr, "  expected \"%s\" in \"%s\"\n", reason, sync_error_last());
        CHECK(!"the reason names the option");
    }
    CHECK_EQ_INT(auth_userdata_freed, 1);
}

static sync_server_options fresh(void)
{
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    return opts;
}

static void test_wrong_values_refused(void)
{
    sync_server_options o = fresh();
    o.port = -1;
    expect_refused(&o, "port -1 is out of range");
    o = fresh();
    o.port = 65536;
    expect_refused(&o, "port 65536 is out of range");
    o = fresh();
    o.max_connections = -5;
    expect_refused(&o, "max_connections is negative");
    o = fresh();
    o.broadcast_yield_ms = -2;
    expect_refused(&o, "broadcast_yield_ms must be -1, 0 or a number of ms, not -2");
    o = fresh();
    o.rate_limit_per_sec = -0.5;
    expect_refused(&o, "rate limit is negative");
    o = fresh();
    o.rate_limit_burst = -1;
    expect_refused(&o, "rate limit is negative");
    o = fresh();
    o.stop_timeout_ms = -1;
    expect_refused(&o, "stop_timeout_ms is negative");
    o = fresh();
    o.tls_cert_path = "cert.pem";
    expect_refused(&o, "TLS needs both a certificate and a key path");
    o = fresh();
    o.tls_key_path = "key.pem";
    expect_refused(&o, "TLS needs both a certificate and a key path");
    o = fresh();
    o.allowed_origins_count = 1;
    expect_refused(&o, "allowed_origins is NULL with a count");
    static const char *const with_null[] = {"http://a.example", NULL};
    o = fresh();
    o.allowed_origins = with_null;
    o.allowed_origins_count = 2;
    expect_refused(&o, "allowed_origins[1] is NULL");
    o = fresh();
    o.static_dir = "/nonexistent/libsync-static";
    expect_refused(&o, "static_dir /nonexistent/libsync-static");
    o = fresh();
    o.event_loop = 3;
    expect_refused(&o, "event_loop 3 is not a sync_event_loop");
    o = fresh();
    o.event_loop = -1;
    expect_refused(&o, "event_loop -1 is not a sync_event_loop");
    o = fresh();
    o.version = 0;
    expect_refused(&o, "unknown server options version 0");
    o = fresh();
    o.version = SYNC_SERVER_OPTIONS_VERSION + 1;
    expect_refused(&o, "unknown server options version");

    /* no options at all: nothing to release, and out is still cleared */
    sync_server *server = (sync_server *)&auth_userdata_freed;
    CHECK_EQ_INT(sync_server_new(&server, NULL), SYNC_EINVAL);
    CHECK(server == NULL);
    CHECK_EQ_INT(sync_server_new(NULL, NULL), SYNC_EINVAL);

    /* the edges that are allowed */
    o = fresh();
    o.port = 0;
    o.broadcast_yield_ms = -1;
    o.stop_timeout_ms = 0;
    CHECK_EQ_INT(sync_server_new(&server, &o), SYNC_OK);
    sync_server_free(server);
}

/* Descriptors of this process that are epoll instances. */
static int count_epoll_fds(void)
{
    int n = 0;
    char path[64], target[64];
    for (int fd = 0; fd < 4096; fd++) {
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t len = readlink(path, target, sizeof target - 1);
        if (len <= 0)
            continue;
        target[len] = '\0';
        if (strcmp(target, "anon_inode:[eventpoll]") == 0)
            n++;
    }
    return n;
}

/* One client on a server with `loop`: served, then closed with 1001 by the graceful stop. Returns
 * how many epoll instances the process had while it served. */
static int serve_one_client_on(int loop, const char *reason)
{
    sync_server_options o = fresh();
    o.event_loop = loop;
    sync_engine *engine = NULL;
    sync_server *server = fixture_counter_server(5, &o, "/", &engine);
    if (!server) {
        CHECK(!"the server starts");
        return -1;
    }
    int epolls = count_epoll_fds();
    ws_client *c = fixture_join(sync_server_port(server), "/");
    if (c) {
        CHECK_EQ_INT(ws_send_text(c, "{\"type\":\"increment\",\"amount\":2}"), 0);
        char *text = ws_read_text(c, 5000);
        CHECK(text && strstr(text, "\"counter\":7"));
        free(text);
        CHECK_EQ_INT(sync_server_stop(server), SYNC_OK);
        char got[64] = "";
        CHECK_EQ_INT(ws_wait_close_reason(c, 5000, got, sizeof got), 1001);
        CHECK_EQ_STR(got, reason);
        ws_client_free(c);
    }
    sync_server_free(server);
    sync_engine_free(engine);
    return epolls;
}

/* Both event loops serve, and stop with 1001 to every client; EPOLL really runs on its own epoll
 * instance (one more than POLL's, whose only one is the broadcast's look for input), whatever
 * LIBSYNC_EVENT_LOOP says (the explicit option wins over it). */
static void test_event_loops_serve_and_stop_gracefully(void)
{
    int on_poll = serve_one_client_on(SYNC_EVENT_LOOP_POLL, "server stopping");
    int on_epoll = serve_one_client_on(SYNC_EVENT_LOOP_EPOLL, "server stopping");
    CHECK(on_poll >= 1);
    CHECK_EQ_INT(on_epoll, on_poll + 1);
}

static void test_mount_paths_refused(void)
{
    sync_engine *engine = fixture_counter_engine(0);
    REQUIRE(engine);
    sync_server_options o = fresh();
    sync_server *server = NULL;
    REQUIRE(sync_server_new(&server, &o) == SYNC_OK);
    CHECK_EQ_INT(sync_server_mount(server, "counter", engine), SYNC_EINVAL);
    CHECK(strstr(sync_error_last(), "does not start with '/'"));
    CHECK_EQ_INT(sync_server_mount(server, "/counter?x=1", engine), SYNC_EINVAL);
    CHECK(strstr(sync_error_last(), "has a query or fragment"));
    CHECK_EQ_INT(sync_server_mount(server, "/counter#top", engine), SYNC_EINVAL);
    CHECK_EQ_INT(sync_server_mount(server, NULL, engine), SYNC_EINVAL);
    CHECK_EQ_INT(sync_server_mount(server, "/counter", NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_server_mount(server, "/counter", engine), SYNC_OK);
    CHECK_EQ_INT(sync_server_mount(server, "/counter", engine), SYNC_EINVAL);
    CHECK(strstr(sync_error_last(), "already mounted"));
    CHECK_EQ_INT(sync_server_listen(server), SYNC_OK);
    CHECK_EQ_INT(sync_server_listen(server), SYNC_ESTATE);
    CHECK_EQ_INT(sync_server_mount(server, "/late", engine), SYNC_ESTATE);
    sync_server_free(server);
    sync_engine_free(engine);
}

typedef struct log_capture {
    pthread_mutex_t lock;
    int errors;
    char first_error[256];
} log_capture;

static void capture_log(sync_log_level level, const char *message, void *userdata)
{
    log_capture *cap = userdata;
    pthread_mutex_lock(&cap->lock);
    if (level == SYNC_LOG_ERROR && cap->errors++ == 0)
        snprintf(cap->first_error, sizeof cap->first_error, "%s", message);
    pthread_mutex_unlock(&cap->lock);
}

/* A listening TCP socket on a free loopback port; its port in *port. */
static int occupy_port(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 4) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(addr.sin_port);
    return fd;
}

static void test_port_in_use_reported_and_retried(void)
{
    int port = 0;
    int blocker = occupy_port(&port);
    REQUIRE(blocker >= 0);
    sync_engine *engine = fixture_counter_engine(5);
    REQUIRE(engine);
    sync_server_options o = fresh();
    o.port = port;
    sync_server *server = NULL;
    REQUIRE(sync_server_new(&server, &o) == SYNC_OK);
    CHECK_EQ_INT(sync_server_mount(server, "/", engine), SYNC_OK);

    CHECK_EQ_INT(sync_server_listen(server), SYNC_ENET);
    char expected[96];
    snprintf(expected, sizeof expected, "cannot listen on 127.0.0.1:%d: Address already in use",
             port);
    CHECK_EQ_STR(sync_error_last(), expected);
    CHECK_EQ_INT(sync_server_port(server), -1);
    CHECK_EQ_INT(sync_server_start(server), SYNC_ENET);

    /* once the port is free the same server listens, and serves the engine it had mounted */
    close(blocker);
    CHECK_EQ_INT(sync_server_start(server), SYNC_OK);
    CHECK_EQ_INT(sync_server_port(server), port);
    ws_client *c = ws_connect(port, "/", NULL, NULL);
    CHECK(c != NULL);
    char *text = c ? ws_read_text(c, 3000) : NULL;
    CHECK(text && ws_json_int(text, "counter") == 5);
    free(text);
    ws_client_free(c);
    sync_server_free(server);
    sync_engine_free(engine);
}

/* A store that cannot save: the stop's last sync fails, and the server says so through its log
 * sink (with the mount and the engine's reason) instead of ending quietly. */
static void test_failed_sync_at_stop_logged(void)
{
    sync_file_options fo = SYNC_FILE_OPTIONS_INIT;
    fo.file_path = "/proc/self/libsync-test/state.json";
    sync_adapter *adapter = NULL;
    REQUIRE(sync_adapter_file_new(&adapter, &fo) == SYNC_OK);
    aeng_errors errors;
    sync_engine *engine = aeng_new(adapter, "{\"counter\":1}", &errors);
    REQUIRE(engine);
    log_capture cap = {.lock = PTHREAD_MUTEX_INITIALIZER};
    sync_server_options o = fresh();
    o.log = capture_log;
    o.log_userdata = &cap;
    sync_server *server = fixture_server(&o, "/counter", engine);
    REQUIRE(server);
    CHECK_EQ_INT(sync_engine_set_state_json(engine, "{\"counter\":2}", 0), SYNC_OK);
    CHECK_EQ_INT(sync_server_stop(server), SYNC_OK);
    pthread_mutex_lock(&cap.lock);
    CHECK_EQ_INT(cap.errors, 1);
    CHECK(strstr(cap.first_error, "sync of /counter at stop failed: "));
    CHECK(strstr(cap.first_error, "save of version 1 failed"));
    pthread_mutex_unlock(&cap.lock);
    /* the change itself was kept in memory */
    char *json = sync_engine_get_state_json(engine);
    CHECK_EQ_STR(json, "{\"counter\":2}");
    sync_free(json);
    sync_server_free(server);
    sync_engine_free(engine);
}

/* A client that never reads, with megabytes queued for it: the stop cannot deliver them nor the
 * close, so it ends at stop_timeout_ms, and the connection is closed on the way out. */
static void test_stop_timeout_ends_a_stuck_stop(void)
{
    enum { TIMEOUT_MS = 400 };
    sync_server_options o = fresh();
    o.stop_timeout_ms = TIMEOUT_MS;
    o.max_queued_bytes = 256u * 1024 * 1024; /* never dropped for being slow */
    o.log = fixture_quiet_log;
    sync_engine *engine = NULL;
    sync_server *server = fixture_counter_server(0, &o, "/", &engine);
    REQUIRE(server);
    ws_client *stuck = ws_connect(sync_server_port(server), "/", NULL, NULL);
    REQUIRE(stuck);
    ws_client *reader = ws_connect(sync_server_port(server), "/", NULL, NULL);
    REQUIRE(reader);
    free(ws_read_text(reader, 3000)); /* initial_state */

    /* 32 MiB in 128 frames: far more than loopback's socket buffers hold */
    size_t size = 256 * 1024;
    char *text = afs_big_state(size);
    REQUIRE(text);
    for (int i = 0; i < 128; i++) {
        CHECK_EQ_INT(sync_engine_broadcast_text(engine, text, size), SYNC_OK);
        char *got = ws_read_text(reader, 3000); /* the reader keeps up, so it is not stuck */
        CHECK(got && strlen(got) == size);
        free(got);
    }
    free(text);
    CHECK_EQ_INT(sync_engine_connection_count(engine), 2);

    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_EQ_INT(sync_server_stop(server), SYNC_OK);
    long long took = check_elapsed_ms(&t0);
    fprintf(stderr, "  stop with a stuck client took %lld ms (stop_timeout_ms %d)\n", took,
            TIMEOUT_MS);
    CHECK(took >= TIMEOUT_MS - 50); /* it did wait for the stuck client */
    CHECK(took < TIMEOUT_MS + 2000);
    CHECK_EQ_INT(ws_wait_close(reader, 3000), 1001);
    CHECK_EQ_INT(sync_engine_connection_count(engine), 0);
    ws_client_free(reader);
    ws_client_free(stuck);
    sync_server_free(server);
    sync_engine_free(engine);
}

int main(void)
{
    RUN(test_wrong_values_refused);
    RUN(test_event_loops_serve_and_stop_gracefully);
    RUN(test_mount_paths_refused);
    RUN(test_port_in_use_reported_and_retried);
    RUN(test_failed_sync_at_stop_logged);
    RUN(test_stop_timeout_ends_a_stuck_stop);
    return check_summary();
}

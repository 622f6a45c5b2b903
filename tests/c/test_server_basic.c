/* The built-in server over real sockets: run modes and stop, the protocol on the wire,
 * broadcast and coalescing, rooms, HTTP routes, static files, connect/disconnect churn. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "server_fixture.h"
#include "ws_client.h"

/* Reads text frames until one shows counter == want; returns how many frames that took, or -1. */
static int read_until_counter(ws_client *c, long long want, int timeout_ms)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int frames = 0;
    while (check_elapsed_ms(&start) < timeout_ms) {
        char *text = ws_read_text(c, timeout_ms - (int)check_elapsed_ms(&start));
        if (!text)
            return -1;
        frames++;
        long long v = ws_json_int(text, "counter");
        free(text);
        if (v == want)
            return frames;
    }
    return -1;
}

static void test_start_mode_stop_sends_1001(void)
{
    sync_engine *engine = NULL;
    sync_server *server = fixture_counter_server(0, NULL, "/counter", &engine);
    REQUIRE(server);
    int port = sync_server_port(server);
    CHECK(port > 0);

    ws_client *c = ws_connect(port, "/counter", NULL, NULL);
    REQUIRE(c);
    char *text = ws_read_text(c, 3000);
    CHECK(text && strstr(text, "\"type\":\"initial_state\""));
    CHECK(text && strstr(text, "\"data\":{\"counter\":0}"));
    free(text);

    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_EQ_INT(sync_server_stop(server), SYNC_OK);
    CHECK(check_elapsed_ms(&t0) < 3000);
    CHECK_EQ_INT(ws_wait_close(c, 2000), 1001);
    ws_client_free(c);
    /* the port no longer takes WebSocket clients */
    CHECK(ws_connect(port, "/counter", NULL, NULL) == NULL);
    CHECK_EQ_INT(sync_engine_connection_count(engine), 0);
    sync_server_free(server);
    sync_engine_free(engine);
}

struct runner {
    sync_server *server;
    int rc;
};

static void *run_thread(void *arg)
{
    struct runner *r = arg;
    r->rc = sync_server_run(r->server);
    return NULL;
}

static void test_run_mode_stop_from_another_thread(void)
{
    sync_engine *engine = fixture_counter_engine(7);
    REQUIRE(engine);
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    sync_server *server = NULL;
    REQUIRE(sync_server_new(&server, &opts) == SYNC_OK);
    CHECK_EQ_INT(sync_server_port(server), -1);
    REQUIRE(sync_server_mount(server, "/", engine) == SYNC_OK);
    CHECK_EQ_INT(sync_server_mount(server, "/", engine), SYNC_EINVAL);
    CHECK_EQ_INT(sync_server_mount(server, "nope", engine), SYNC_EINVAL);
    REQUIRE(sync_server_listen(server) == SYNC_OK);
    CHECK_EQ_INT(sync_server_mount(server, "/late", engine), SYNC_ESTATE);
    int port = sync_server_port(server);
    REQUIRE(port > 0);

    struct runner r = {server, -99};
    pthread_t thread;
    REQUIRE(pthread_create(&thread, NULL, run_thread, &r) == 0);
    ws_client *c = ws_connect(port, "/", NULL, NULL);
    CHECK(c != NULL);
    char *text = c ? ws_read_text(c, 3000) : NULL;
    CHECK(text && ws_json_int(text, "counter") == 7);
    free(text);

    CHECK_EQ_INT(sync_server_stop(server), SYNC_OK);
    if (c)
        CHECK_EQ_INT(ws_wait_close(c, 3000), 1001);
    pthread_join(thread, NULL);
    CHECK_EQ_INT(r.rc, SYNC_OK);
    ws_client_free(c);
    sync_server_free(server);
    sync_engine_free(engine);
}

static void test_stop_ends_within_timeout_with_a_silent_client(void)
{
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.stop_timeout_ms = 300;
    sync_engine *engine = NULL;
    sync_server *server = fixture_counter_server(0, &opts, "/", &engine);
    REQUIRE(server);
    /* a raw TCP client that completes the handshake and then never reads nor answers */
    ws_client *c = ws_connect(sync_server_port(server), "/", NULL, NULL);
    REQUIRE(c);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    sync_server_stop(server);
    long long took = check_elapsed_ms(&t0);
    CHECK(took < 1500);
    ws_client_free(c);
    sync_server_free(server);
    sync_engine_free(engine);
}

static void test_updates_reach_many_clients(void)
{
    enum { N = 40 };
    sync_engine *engine = NULL;
    sync_server *server = fixture_counter_server(0, NULL, "/counter", &engine);
    REQUIRE(server);
    int port = sync_server_port(server);
    ws_client *clients[N] = {0};
    for (int i = 0; i < N; i++) {
        clients[i] = ws_connect(port, "/counter", NULL, NULL);
        CHECK(clients[i] != NULL);
        char *text = clients[i] ? ws_read_text(clients[i], 3000) : NULL;
        CHECK(text && strstr(text, "initial_state"));
        free(text);
    }
    REQUIRE(clients[0]);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(ws_send_text(clients[0], "{\"type\":\"increment\",\"amount\":2}"), 0);
    for (int i = 0; i < N; i++) {
        if (clients[i])
            CHECK(read_until_counter(clients[i], 6, 3000) > 0);
        ws_client_free(clients[i]);
    }
    CHECK_EQ_INT(sync_engine_get_version(engine), 3);
    sync_server_free(server);
    sync_engine_free(engine);
}

static void test_slow_reader_gets_latest_state_coalesced(void)
{
    sync_engine *engine = NULL;
    sync_server *server = fixture_counter_server(0, NULL, "/", &engine);
    REQUIRE(server);
    ws_client *c = fixture_join(sync_server_port(server), "/");
    REQUIRE(c);

    /* 1000 changes of a 32 KiB state while the client does not read: far more than the socket
     * buffers hold, so most versions must be skipped */
    size_t pad = 32 * 1024;
    char *json = malloc(pad + 64);
    REQUIRE(json);
    for (int i = 1; i <= 1000; i++) {
        int n = snprintf(json, 64, "{\"counter\":%d,\"pad\":\"", i);
        memset(json + n, 'x', pad);
        strcpy(json + n + pad, "\"}");
        CHECK(sync_engine_set_state_json(engine, json, 1) >= 0);
    }
    free(json);
    int frames = read_until_counter(c, 1000, 10000);
    CHECK(frames > 0);
    CHECK(frames < 500);
    /* nothing older arrives after the latest */
    CHECK(ws_read_text(c, 300) == NULL);
    ws_client_free(c);
    sync_server_free(server);
    sync_engine_free(engine);
}

static void test_rooms_are_separate_and_one_engine_serves_two_paths(void)
{
    sync_engine *a = fixture_counter_engine(0);
    sync_engine *b = fixture_counter_engine(100);
    REQUIRE(a && b);
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    sync_server *server = NULL;
    REQUIRE(sync_server_new(&server, &opts) == SYNC_OK);
    REQUIRE(sync_server_mount(server, "/", a) == SYNC_OK);
    REQUIRE(sync_server_mount(server, "/counter", a) == SYNC_OK);
    REQUIRE(sync_server_mount(server, "/board/42", b) == SYNC_OK);
    REQUIRE(sync_server_start(server) == SYNC_OK);
    int port = sync_server_port(server);

    ws_client *root = ws_connect(port, "/", NULL, NULL);
    ws_client *counter = ws_connect(port, "/counter", NULL, NULL);
    ws_client *board = ws_connect(port, "/board/42", NULL, NULL);
    REQUIRE(root && counter && board);
    CHECK(read_until_counter(root, 0, 3000) == 1);
    CHECK(read_until_counter(counter, 0, 3000) == 1);
    CHECK(read_until_counter(board, 100, 3000) == 1);
    CHECK_EQ_INT(sync_engine_connection_count(a), 2);
    CHECK_EQ_INT(sync_engine_connection_count(b), 1);

    CHECK_EQ_INT(ws_send_text(root, "{\"type\":\"increment\"}"), 0);
    CHECK(read_until_counter(counter, 1, 3000) == 1);
    CHECK(read_until_counter(root, 1, 3000) == 1);
    CHECK(ws_read_text(board, 300) == NULL);
    CHECK_EQ_INT(ws_send_text(board, "{\"type\":\"increment\",\"amount\":5}"), 0);
    CHECK(read_until_counter(board, 105, 3000) == 1);
    CHECK(ws_read_text(root, 300) == NULL);

    ws_client_free(root);
    ws_client_free(counter);
    ws_client_free(board);
    sync_server_free(server);
    sync_engine_free(a);
    sync_engine_free(b);
}

static void test_http_routes(void)
{
    sync_engine *engine = NULL;
    sync_server *server = fixture_counter_server(0, NULL, "/counter", &engine);
    REQUIRE(server);
    int port = sync_server_port(server);

    int status = 0;
    CHECK(ws_connect(port, "/nope", NULL, &status) == NULL);
    CHECK_EQ_INT(status, 404);

    char *body = NULL;
    CHECK_EQ_INT(http_request(port, "GET", "/healthz", NULL, &body, NULL), 200);
    CHECK_EQ_STR(body, "ok");
    free(body);

    ws_client *c = ws_connect(port, "/counter", NULL, NULL);
    REQUIRE(c);
    CHECK_EQ_INT(ws_send_text(c, "{\"type\":\"increment\"}"), 0);
    CHECK_EQ_INT(ws_send_text(c, "{\"type\":\"unknown\"}"), 0);
    CHECK(read_until_counter(c, 1, 3000) > 0);

    char *head = NULL;
    body = NULL;
    CHECK_EQ_INT(http_request(port, "GET", "/metrics", NULL, &body, &head), 200);
    CHECK(head && strstr(head, "text/plain"));
    CHECK(body && strstr(body, "# TYPE libsync_connections gauge"));
    CHECK(body && strstr(body, "libsync_connections{path=\"/counter\"} 1\n"));
    CHECK(body && strstr(body, "libsync_state_version{path=\"/counter\"} 1\n"));
    CHECK(body && strstr(body, "libsync_messages_in_total{path=\"/counter\"} 2\n"));
    CHECK(body && strstr(body, "libsync_messages_dropped_total{path=\"/counter\"} 1\n"));
    CHECK(body && strstr(body, "libsync_persist_last_seconds{path=\"/counter\"}"));
    CHECK(body && strstr(body, "libsync_server_connections_accepted_total 1\n"));
    CHECK(body && strstr(body, "libsync_server_connections_refused_total 1\n"));
    CHECK(body && strstr(body, "libsync_server_messages_in_total 2\n"));
    CHECK(body && strstr(body, "libsync_server_bytes_in_total 38\n"));
    free(head);
    free(body);

    /* no static directory: plain GETs elsewhere are 404 */
    CHECK_EQ_INT(http_request(port, "GET", "/", NULL, NULL, NULL), 404);
    CHECK_EQ_INT(http_request(port, "GET", "/counter", NULL, NULL, NULL), 404);

    /* HEAD answers like GET without a body; other methods are 405, with or without a body */
    body = NULL;
    head = NULL;
    CHECK_EQ_INT(http_request(port, "HEAD", "/healthz", NULL, &body, &head), 200);
    CHECK(body == NULL || body[0] == '\0');
    CHECK(head && strstr(head, "text/plain"));
    free(head);
    free(body);
    CHECK_EQ_INT(http_request(port, "DELETE", "/healthz", NULL, NULL, NULL), 405);
    char *reply = http_raw(port,
                           "POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 11\r\n"
                           "Connection: close\r\n\r\nhello world",
                           3000);
    CHECK(reply && strncmp(reply, "HTTP/1.1 405", 12) == 0);
    free(reply);
    /* and the server still serves */
    CHECK_EQ_INT(http_request(port, "GET", "/healthz", NULL, NULL, NULL), 200);
    ws_client_free(c);
    sync_server_free(server);
    sync_engine_free(engine);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char *path = NULL;
    if (asprintf(&path, "%s/%s", dir, name) < 0)
        return;
    FILE *f = fopen(path, "w");
    free(path);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_static_files(void)
{
    char *tmp = check_tmpdir("server-static");
    char www[900];
    snprintf(www, sizeof www, "%s/www", tmp);
    REQUIRE(mkdir(www, 0755) == 0);
    char sub[1024];
    snprintf(sub, sizeof sub, "%s/sub", www);
    REQUIRE(mkdir(sub, 0755) == 0);
    write_file(www, "index.html", "<h1>counter</h1>");
    write_file(www, "app.js", "console.log(1)");
    write_file(www, "style.css", "body{}");
    write_file(www, "data.json", "{}");
    write_file(sub, "index.html", "sub index");
    write_file(www, "blob.bin", "\x01\x02");
    char fifo[1024];
    snprintf(fifo, sizeof fifo, "%s/pipe", www);
    CHECK(mkfifo(fifo, 0600) == 0);
    write_file(tmp, "secret.txt", "TOP-SECRET");
    char link[1024];
    snprintf(link, sizeof link, "%s/leak.txt", www);
    char target[1024];
    snprintf(target, sizeof target, "%s/secret.txt", tmp);
    CHECK(symlink(target, link) == 0);

    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.static_dir = www;
    sync_engine *engine = NULL;
    sync_server *server = fixture_counter_server(0, &opts, "/", &engine);
    REQUIRE(server);
    int port = sync_server_port(server);

    char *body = NULL, *head = NULL;
    CHECK_EQ_INT(http_request(port, "GET", "/", NULL, &body, &head), 200);
    CHECK_EQ_STR(body, "<h1>counter</h1>");
    CHECK(head && strstr(head, "text/html"));
    free(body);
    free(head);
    body = head = NULL;
    CHECK_EQ_INT(http_request(port, "GET", "/app.js", NULL, &body, &head), 200);
    CHECK_EQ_STR(body, "console.log(1)");
    CHECK(head && strstr(head, "javascript"));
    free(body);
    free(head);
    head = NULL;
    CHECK_EQ_INT(http_request(port, "GET", "/style.css", NULL, NULL, &head), 200);
    CHECK(head && strstr(head, "text/css"));
    free(head);
    head = NULL;
    CHECK_EQ_INT(http_request(port, "GET", "/data.json", NULL, NULL, &head), 200);
    CHECK(head && strstr(head, "application/json"));
    free(head);
    body = NULL;
    CHECK_EQ_INT(http_request(port, "GET", "/sub/", NULL, &body, NULL), 200);
    CHECK_EQ_STR(body, "sub index");
    free(body);
    CHECK_EQ_INT(http_request(port, "GET", "/missing.html", NULL, NULL, NULL), 404);
    body = NULL;
    CHECK_EQ_INT(http_request(port, "GET", "/sub", NULL, &body, NULL), 200); /* a directory */
    CHECK_EQ_STR(body, "sub index");
    free(body);
    head = NULL;
    CHECK_EQ_INT(http_request(port, "GET", "/blob.bin", NULL, NULL, &head), 200);
    CHECK(head && strstr(head, "application/octet-stream"));
    free(head);
    /* not a regular file: refused at once, never opened (a FIFO would block a reader) */
    CHECK_EQ_INT(http_request(port, "GET", "/pipe", NULL, NULL, NULL), 404);

    /* nothing outside the directory, however the path is spelled */
    const char *escapes[] = {"/../secret.txt", "/%2e%2e/secret.txt", "/sub/../../secret.txt",
                             "/..%2fsecret.txt", "/leak.txt"};
    for (size_t i = 0; i < sizeof escapes / sizeof escapes[0]; i++) {
        char raw[256];
        snprintf(raw, sizeof raw, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                 escapes[i]);
        char *resp = http_raw(port, raw, 3000);
        CHECK(resp != NULL);
        CHECK(resp && !strstr(resp, "TOP-SECRET"));
        CHECK(resp && !strstr(resp, "HTTP/1.1 200"));
        free(resp);
    }

    /* a WebSocket upgrade to "/" still reaches the engine */
    ws_client *c = fixture_join(port, "/");
    CHECK(c != NULL);
    ws_client_free(c);
    sync_server_free(server);
    sync_engine_free(engine);
    free(tmp);
}

static void test_connect_disconnect_churn(void)
{
    sync_engine *engine = NULL;
    sync_server *server = fixture_counter_server(0, NULL, "/", &engine);
    REQUIRE(server);
    int port = sync_server_port(server);
    int failures = 0;
    for (int i = 0; i < 1000; i++) {
        ws_client *c = ws_connect(port, "/", NULL, NULL);
        if (!c) {
            failures++;
            continue;
        }
        if (i % 3 == 0) {
            char *text = ws_read_text(c, 2000);
            if (!text)
                failures++;
            free(text);
            ws_send_close(c, 1000);
        } else if (i % 3 == 1) {
            ws_send_text(c, "{\"type\":\"increment\"}");
        }
        ws_client_free(c);
    }
    CHECK_EQ_INT(failures, 0);
    ws_client *c = ws_connect(port, "/", NULL, NULL);
    REQUIRE(c);
    char *text = ws_read_text(c, 3000);
    CHECK(text && strstr(text, "initial_state"));
    free(text);
    /* every churned connection is gone again */
    for (int i = 0; i < 300 && sync_engine_connection_count(engine) != 1; i++)
        usleep(10000);
    CHECK_EQ_INT(sync_engine_connection_count(engine), 1);
    CHECK_EQ_INT(http_request(port, "GET", "/healthz", NULL, NULL, NULL), 200);
    ws_client_free(c);
    sync_server_free(server);
    sync_engine_free(engine);
}

/* Clients that send faster than one read per turn takes in (lws reads at most its 128-byte buffer
 * per read; the server reads a busy socket again in the same turn): every increment applied,
 * none lost or doubled, and a message many times the buffer arrives whole. */
static void test_bursts_larger_than_the_receive_buffer_are_applied_in_full(void)
{
    enum { N = 3, M = 300 };
    sync_engine *engine = NULL;
    sync_server *server = fixture_counter_server(0, NULL, "/counter", &engine);
    REQUIRE(server);
    int port = sync_server_port(server);
    ws_client *clients[N] = {0};
    for (int i = 0; i < N; i++) {
        clients[i] = ws_connect(port, "/counter", NULL, NULL);
        REQUIRE(clients[i] != NULL);
        char *text = ws_read_text(clients[i], 3000);
        CHECK(text && strstr(text, "initial_state"));
        free(text);
    }
    for (int k = 0; k < M; k++)
        for (int i = 0; i < N; i++)
            CHECK_EQ_INT(ws_send_text(clients[i], "{\"type\":\"increment\",\"amount\":1}"), 0);
    char big[2048];
    int n = snprintf(big, sizeof big, "{\"type\":\"increment\",\"amount\":1,\"pad\":\"");
    memset(big + n, 'x', sizeof big - (size_t)n - 3);
    memcpy(big + sizeof big - 3, "\"}", 3);
    CHECK_EQ_INT(ws_send_text(clients[0], big), 0);
    for (int i = 0; i < N; i++) {
        CHECK(read_until_counter(clients[i], N * M + 1, 10000) > 0);
        ws_client_free(clients[i]);
    }
    CHECK_EQ_INT(fixture_counter_value(engine), N * M + 1);
    sync_server_free(server);
    sync_engine_free(engine);
}

int main(void)
{
    RUN(test_start_mode_stop_sends_1001);
    RUN(test_bursts_larger_than_the_receive_buffer_are_applied_in_full);
    RUN(test_run_mode_stop_from_another_thread);
    RUN(test_stop_ends_within_timeout_with_a_silent_client);
    RUN(test_updates_reach_many_clients);
    RUN(test_slow_reader_gets_latest_state_coalesced);
    RUN(test_rooms_are_separate_and_one_engine_serves_two_paths);
    RUN(test_http_routes);
    RUN(test_static_files);
    RUN(test_connect_disconnect_churn);
    return check_summary();
}

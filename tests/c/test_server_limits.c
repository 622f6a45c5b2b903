/* The server's limits and access control, and bad clients: message size and fragments, rate
 * limit, connection limit, Origin allow-list, auth, binary frames, invalid UTF-8, garbage,
 * a client that never reads. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "adapter_fs.h"
#include "check.h"
#include "server_fixture.h"
#include "ws_client.h"

static sync_engine *engine;

static sync_server *start(sync_server_options *opts)
{
    engine = fixture_counter_engine(0);
    if (!engine)
        return NULL;
    opts->log = fixture_quiet_log;
    sync_server *server = fixture_server(opts, "/", engine);
    if (!server) {
        sync_engine_free(engine);
        engine = NULL;
    }
    return server;
}

static void finish(sync_server *server)
{
    sync_server_free(server);
    sync_engine_free(engine);
    engine = NULL;
}

static ws_client *open_client(sync_server *server, const char *headers)
{
    ws_client *c = ws_connect(sync_server_port(server), "/", headers, NULL);
    if (c) {
        char *text = ws_read_text(c, 3000); /* initial_state */
        free(text);
    }
    return c;
}

static void test_message_size_and_fragments(void)
{
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.max_message_bytes = 2000;
    sync_server *server = start(&opts);
    REQUIRE(server);

    /* a message in three fragments (and more lws receive calls) is reassembled and applied */
    ws_client *c = open_client(server, NULL);
    REQUIRE(c);
    char msg[1600];
    int n = snprintf(msg, sizeof msg, "{\"type\":\"increment\",\"amount\":3,\"pad\":\"");
    memset(msg + n, 'p', 1500);
    strcpy(msg + n + 1500, "\"}");
    size_t len = strlen(msg);
    CHECK_EQ_INT(ws_send_frame(c, WS_OP_TEXT, 0, msg, 500), 0);
    CHECK_EQ_INT(ws_send_frame(c, 0, 0, msg + 500, 500), 0);
    CHECK_EQ_INT(ws_send_frame(c, 0, 1, msg + 1000, len - 1000), 0);
    char *text = ws_read_text(c, 3000);
    CHECK(text && ws_json_int(text, "counter") == 3);
    free(text);

    /* over the limit in one frame: 1009 */
    char *big = malloc(3000);
    REQUIRE(big);
    memset(big, ' ', 3000);
    CHECK_EQ_INT(ws_send_frame(c, WS_OP_TEXT, 1, big, 3000), 0);
    CHECK_EQ_INT(ws_wait_close(c, 3000), 1009);
    ws_client_free(c);

    /* over the limit only when the fragments add up: 1009 too */
    c = open_client(server, NULL);
    REQUIRE(c);
    CHECK_EQ_INT(ws_send_frame(c, WS_OP_TEXT, 0, big, 1500), 0);
    CHECK_EQ_INT(ws_send_frame(c, 0, 1, big, 1500), 0);
    CHECK_EQ_INT(ws_wait_close(c, 3000), 1009);
    ws_client_free(c);
    free(big);
    CHECK_EQ_INT(fixture_counter_value(engine), 3);
    finish(server);
}

/* A character split between fragments: its first bytes arrive in one piece and the rest in the
 * next, so the UTF-8 check carries its state across them (with the reassembly buffer). Split
 * valid characters are applied; a split invalid sequence closes with 1007, also when the pieces
 * are of a second message on the same connection. */
static void test_utf8_split_across_fragments(void)
{
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    sync_server *server = start(&opts);
    REQUIRE(server);

    ws_client *c = open_client(server, NULL);
    REQUIRE(c);
    /* U+00E9 (C3 A9) and U+1F600 (F0 9F 98 80), each cut after its first byte */
    const char *a = "{\"type\":\"increment\",\"amount\":2,\"n\":\"\xc3";
    const char *b = "\xa9 \xf0";
    const char *d = "\x9f\x98\x80\"}";
    CHECK_EQ_INT(ws_send_frame(c, WS_OP_TEXT, 0, a, strlen(a)), 0);
    CHECK_EQ_INT(ws_send_frame(c, 0, 0, b, strlen(b)), 0);
    CHECK_EQ_INT(ws_send_frame(c, 0, 1, d, strlen(d)), 0);
    char *text = ws_read_text(c, 3000);
    CHECK(text && ws_json_int(text, "counter") == 2);
    free(text);
    /* the next message: C3 then 28 is no character */
    CHECK_EQ_INT(ws_send_frame(c, WS_OP_TEXT, 0, a, strlen(a)), 0);
    CHECK_EQ_INT(ws_send_frame(c, 0, 1, "\x28\"}", 2), 0);
    CHECK_EQ_INT(ws_wait_close(c, 3000), 1007);
    ws_client_free(c);

    /* a message that ends inside a character */
    c = open_client(server, NULL);
    REQUIRE(c);
    CHECK_EQ_INT(ws_send_frame(c, WS_OP_TEXT, 0, "\"", 1), 0);
    CHECK_EQ_INT(ws_send_frame(c, 0, 1, "\xf0\x9f", 2), 0);
    CHECK_EQ_INT(ws_wait_close(c, 3000), 1007);
    ws_client_free(c);
    CHECK_EQ_INT(fixture_counter_value(engine), 2);
    finish(server);
}

/* A NUL byte is valid UTF-8, so a text frame may carry one past the server's UTF-8 check: the
 * engine still refuses the message by the NUL's offset and the connection goes on. Text the
 * server checked is not checked for UTF-8 again, and its characters arrive intact. */
static void test_nul_in_text_frame(void)
{
    sync_engine_options eopts = SYNC_ENGINE_OPTIONS_INIT;
    eopts.initial_state_json = "{\"counter\":0}";
    eopts.reply_errors = 1;
    engine = fixture_engine(&eopts);
    REQUIRE(engine);
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.log = fixture_quiet_log;
    sync_server *server = fixture_server(&opts, "/", engine);
    REQUIRE(server);
    ws_client *c = open_client(server, NULL);
    REQUIRE(c);
    const char nul[] = "{\"type\":\"increment\",\"amount\":1,\"s\":\"\xc3\xa9\0\"}";
    CHECK_EQ_INT(ws_send_frame(c, WS_OP_TEXT, 1, nul, sizeof nul - 1), 0);
    char *text = ws_read_text(c, 3000);
    CHECK(text && strstr(text, "\"type\":\"error\"") && strstr(text, "NUL byte at offset 38"));
    free(text);
    /* \u0000 too, after characters of two, three and four bytes */
    const char *escaped = "{\"type\":\"increment\",\"amount\":1,\"s\":\"\xc3\xa9\xe2\x82\xac"
                          "\xf0\x9f\x98\x80\\u0000\"}";
    CHECK_EQ_INT(ws_send_text(c, escaped), 0);
    text = ws_read_text(c, 3000);
    CHECK(text && strstr(text, "\\\\u0000 (NUL) in a JSON string at offset 45"));
    free(text);
    const char *ok = "{\"type\":\"increment\",\"amount\":2,\"s\":\"\xc3\xa9\xe2\x82\xac"
                     "\xf0\x9f\x98\x80\\\\u0000\"}";
    CHECK_EQ_INT(ws_send_text(c, ok), 0);
    text = ws_read_text(c, 3000);
    CHECK(text && ws_json_int(text, "counter") == 2);
    free(text);
    ws_client_free(c);
    CHECK_EQ_INT(fixture_counter_value(engine), 2);
    finish(server);
}

static void test_rate_limit(void)
{
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.rate_limit_per_sec = 2;
    opts.rate_limit_burst = 5;
    sync_server *server = start(&opts);
    REQUIRE(server);
    ws_client *c = open_client(server, NULL);
    REQUIRE(c);
    for (int i = 0; i < 7; i++)
        CHECK_EQ_INT(ws_send_text(c, "{\"type\":\"increment\"}"), 0);
    int errors = 0;
    for (int i = 0; i < 20; i++) {
        char *text = ws_read_text(c, 500);
        if (!text)
            break;
        if (strstr(text, "\"type\":\"error\"") && strstr(text, "rate"))
            errors++;
        free(text);
    }
    CHECK(errors >= 1);
    long long applied = fixture_counter_value(engine);
    CHECK(applied >= 5 && applied <= 6);
    /* a sustained flood is closed with 1008 */
    for (int i = 0; i < 20; i++)
        ws_send_text(c, "{\"type\":\"increment\"}");
    CHECK_EQ_INT(ws_wait_close(c, 3000), 1008);
    ws_client_free(c);
    char *body = NULL;
    http_request(sync_server_port(server), "GET", "/metrics", NULL, &body, NULL);
    CHECK(body && strstr(body, "libsync_server_rate_limited_total") &&
          !strstr(body, "libsync_server_rate_limited_total 0\n"));
    free(body);
    finish(server);
}

static void test_max_connections(void)
{
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.max_connections = 2;
    sync_server *server = start(&opts);
    REQUIRE(server);
    int port = sync_server_port(server);
    ws_client *a = open_client(server, NULL);
    ws_client *b = open_client(server, NULL);
    CHECK(a && b);
    int status = 0;
    CHECK(ws_connect(port, "/", NULL, &status) == NULL);
    CHECK_EQ_INT(status, 503);
    ws_client_free(a);
    /* a freed slot is usable again */
    ws_client *c = NULL;
    for (int i = 0; i < 100 && !c; i++) {
        c = ws_connect(port, "/", NULL, NULL);
        if (!c)
            usleep(10000);
    }
    CHECK(c != NULL);
    ws_client_free(b);
    ws_client_free(c);
    finish(server);
}

static void test_allowed_origins(void)
{
    const char *origins[] = {"http://good.example", "https://app.example"};
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.allowed_origins = origins;
    opts.allowed_origins_count = 2;
    sync_server *server = start(&opts);
    REQUIRE(server);
    int port = sync_server_port(server);
    int status = 0;
    CHECK(ws_connect(port, "/", "Origin: http://evil.example\r\n", &status) == NULL);
    CHECK_EQ_INT(status, 403);
    ws_client *c = ws_connect(port, "/", "Origin: https://app.example\r\n", &status);
    CHECK_EQ_INT(status, 101);
    ws_client_free(c);
    c = ws_connect(port, "/", NULL, &status); /* not a browser: no Origin */
    CHECK_EQ_INT(status, 101);
    ws_client_free(c);
    finish(server);
}

struct auth_seen {
    char path[64];
    char query[64];
    char peer[64];
    char custom[64];
    int calls;
};

static int auth_cb(sync_request *req, void *userdata)
{
    struct auth_seen *seen = userdata;
    seen->calls++;
    snprintf(seen->path, sizeof seen->path, "%s", sync_request_path(req));
    snprintf(seen->query, sizeof seen->query, "%s", sync_request_query(req));
    snprintf(seen->peer, sizeof seen->peer, "%s", sync_request_peer(req));
    const char *custom = sync_request_header(req, "X-Room-Key");
    snprintf(seen->custom, sizeof seen->custom, "%s", custom ? custom : "");
    const char *auth = sync_request_header(req, "authorization");
    if (!auth)
        return 401;
    if (strcmp(auth, "Bearer ann") != 0)
        return 403;
    sync_request_set_identity(req, "{\"user\":\"ann\"}");
    return 0;
}

static void test_auth_refuses_and_attaches_identity(void)
{
    struct auth_seen seen;
    memset(&seen, 0, sizeof seen);
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.auth = auth_cb;
    opts.auth_userdata = &seen;
    sync_server *server = start(&opts);
    REQUIRE(server);
    int port = sync_server_port(server);
    int status = 0;
    CHECK(ws_connect(port, "/", NULL, &status) == NULL);
    CHECK_EQ_INT(status, 401);
    CHECK(ws_connect(port, "/", "Authorization: Bearer bob\r\n", &status) == NULL);
    CHECK_EQ_INT(status, 403);
    ws_client *c = ws_connect(port, "/?room=1&token=abc",
                              "Authorization: Bearer ann\r\nX-Room-Key: k42\r\n", &status);
    CHECK_EQ_INT(status, 101);
    REQUIRE(c);
    CHECK_EQ_INT(seen.calls, 3);
    CHECK_EQ_STR(seen.path, "/");
    CHECK_EQ_STR(seen.query, "room=1&token=abc");
    CHECK_EQ_STR(seen.peer, "127.0.0.1");
    CHECK_EQ_STR(seen.custom, "k42");
    fixture_expect_joined(c, "{\"user\":\"ann\"}");
    ws_client_free(c);
    finish(server);
}

static void test_bad_frames(void)
{
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    sync_server *server = start(&opts);
    REQUIRE(server);

    ws_client *c = open_client(server, NULL);
    REQUIRE(c);
    CHECK_EQ_INT(ws_send_frame(c, WS_OP_BINARY, 1, "\x01\x02\x03", 3), 0);
    CHECK_EQ_INT(ws_wait_close(c, 3000), 1003);
    ws_client_free(c);

    c = open_client(server, NULL);
    REQUIRE(c);
    CHECK_EQ_INT(ws_send_frame(c, WS_OP_TEXT, 1, "{\"type\":\"\xff\xfe\"}", 13), 0);
    CHECK_EQ_INT(ws_wait_close(c, 3000), 1007);
    ws_client_free(c);

    /* garbage after the handshake: the connection ends, nothing else is hurt */
    c = open_client(server, NULL);
    REQUIRE(c);
    const char garbage[] = "\x8f\x7f\xff\xff\xff\xff\xff\xff\xff\xffGET / HTTP/1.1\r\n\r\n";
    CHECK_EQ_INT(ws_send_raw(c, garbage, sizeof garbage - 1), 0);
    CHECK_EQ_INT(ws_wait_close(c, 3000), 1002);
    ws_send_close(c, 1002);
    CHECK_EQ_INT(ws_wait_eof(c, 3000), 1);
    ws_client_free(c);

    /* garbage instead of a handshake */
    char *resp = http_raw(sync_server_port(server), "\x16\x03\x01\x02\x00garbage\r\n\r\n", 3000);
    CHECK(resp == NULL || !strstr(resp, "101"));
    free(resp);

    /* a well-behaved client is still served */
    c = open_client(server, NULL);
    REQUIRE(c);
    CHECK_EQ_INT(ws_send_text(c, "{\"type\":\"increment\"}"), 0);
    char *text = ws_read_text(c, 3000);
    CHECK(text && ws_json_int(text, "counter") == 1);
    free(text);
    ws_client_free(c);
    finish(server);
}

static void test_client_that_never_reads(void)
{
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.max_queued_bytes = 64 * 1024;
    sync_server *server = start(&opts);
    REQUIRE(server);
    ws_client *c = open_client(server, NULL);
    REQUIRE(c);
    ws_client *good = open_client(server, NULL);
    REQUIRE(good);
    CHECK_EQ_INT(sync_engine_connection_count(engine), 2);
    /* explicit frames pile up once the socket buffers are full: over the budget, the silent
     * client is dropped; the reading one keeps up */
    size_t size = 256 * 1024;
    char *text = afs_big_state(size);
    REQUIRE(text);
    int dropped = 0;
    for (int i = 0; i < 400 && !dropped; i++) {
        sync_engine_broadcast_text(engine, text, size);
        char *got = ws_read_text(good, 3000);
        CHECK(got != NULL);
        free(got);
        dropped = sync_engine_connection_count(engine) == 1;
    }
    for (int i = 0; i < 500 && sync_engine_connection_count(engine) != 1; i++)
        usleep(10000);
    CHECK_EQ_INT(sync_engine_connection_count(engine), 1);
    free(text);
    ws_client_free(c);
    ws_client_free(good);
    finish(server);
}

int main(void)
{
    RUN(test_message_size_and_fragments);
    RUN(test_utf8_split_across_fragments);
    RUN(test_nul_in_text_frame);
    RUN(test_rate_limit);
    RUN(test_max_connections);
    RUN(test_allowed_origins);
    RUN(test_auth_refuses_and_attaches_identity);
    RUN(test_bad_frames);
    RUN(test_client_that_never_reads);
    return check_summary();
}

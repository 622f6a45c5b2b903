/* The heartbeat over real sockets: any message, the text "pong" or a WebSocket-level pong frame
 * shows a client is alive; only a client from which nothing arrives is closed, with
 * SYNC_CLOSE_PING_TIMEOUT and the reason "ping timeout" on the wire. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "fake_conn.h"
#include "server_fixture.h"
#include "ws_client.h"

static hook_log g_log;

static sync_engine *heartbeat_engine(int64_t heartbeat_ms, int64_t ping_timeout_ms)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = "{\"counter\":0}";
    opts.heartbeat_interval_ms = heartbeat_ms;
    opts.ping_timeout_ms = ping_timeout_ms;
    sync_hooks hooks = hook_log_hooks(&g_log);
    opts.hooks = &hooks;
    return fixture_engine(&opts);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads what has arrived; 1 when a close frame or the end of the connection was among it. */
static int drain(ws_client *c)
{
    for (;;) {
        int op = ws_read_frame(c, 1, NULL, NULL);
        if (op == WS_OP_CLOSE)
            return 1;
        if (op < 0)
            return ws_wait_eof(c, 0);
    }
}

static void only_a_silent_client_times_out(void)
{
    memset(&g_log, 0, sizeof g_log);
    /* pings every 200 ms, dead after 1,200 ms of nothing: the busy clients below act every
     * 100 ms, so even a loaded machine (a test thread stalled for a few hundred ms) leaves them
     * far inside the timeout */
    sync_engine *engine = heartbeat_engine(200, 1200);
    REQUIRE(engine);
    sync_server *server = fixture_server(NULL, "/", engine);
    REQUIRE(server);
    int port = sync_server_port(server);
    ws_client *busy = fixture_join(port, "/");   /* sends messages, never answers a ping */
    ws_client *ponger = fixture_join(port, "/"); /* sends only WebSocket pong frames */
    ws_client *silent = fixture_join(port, "/"); /* sends nothing */
    REQUIRE(busy && ponger && silent);

    int busy_closed = 0, ponger_closed = 0;
    long long start = now_ms();
    /* two and a half timeouts long */
    while (now_ms() - start < 3000 && !busy_closed && !ponger_closed) {
        ws_send_text(busy, "{\"type\":\"increment\"}");
        ws_send_frame(ponger, WS_OP_PONG, 1, "alive", 5);
        busy_closed = drain(busy);
        ponger_closed = drain(ponger);
        usleep(100 * 1000);
    }
    CHECK(!busy_closed);
    CHECK(!ponger_closed);

    char reason[128];
    CHECK_EQ_INT(ws_wait_close_reason(silent, 8000, reason, sizeof reason),
                 SYNC_CLOSE_PING_TIMEOUT);
    CHECK_EQ_STR(reason, SYNC_CLOSE_PING_TIMEOUT_REASON);
    CHECK_EQ_INT(g_log.timeouts, 1);
    /* on_pong stays the answer to the text "pong": a pong frame does not run it */
    CHECK_EQ_INT(g_log.pongs, 0);

    /* the two live clients are still served */
    long long until = now_ms() + 5000;
    while (sync_engine_connection_count(engine) != 2 && now_ms() < until)
        usleep(10 * 1000);
    CHECK_EQ_INT(sync_engine_connection_count(engine), 2);
    CHECK_EQ_INT(ws_send_text(busy, "{\"type\":\"increment\"}"), 0);
    int updated = 0;
    for (int i = 0; i < 50 && !updated; i++) { /* pings come in between */
        char *text = ws_read_text(busy, 3000);
        updated = text && strstr(text, "state_update") != NULL;
        free(text);
    }
    CHECK(updated);
    ws_client_free(busy);
    ws_client_free(ponger);
    ws_client_free(silent);
    sync_server_free(server);
    sync_engine_free(engine);
}

/* A reason given to sync_conn_close() reaches the client, cut to what a close frame holds. */
static int close_me(sync_msg *msg, void *userdata)
{
    (void)userdata;
    char reason[300];
    memset(reason, 'r', sizeof reason - 1);
    reason[sizeof reason - 1] = '\0';
    memcpy(reason, "closed by the handler ", 22);
    sync_conn_close(sync_msg_conn(msg), 4321, reason);
    return SYNC_OK;
}

static void close_reasons_reach_the_client(void)
{
    memset(&g_log, 0, sizeof g_log);
    sync_engine *engine = heartbeat_engine(0, 0);
    REQUIRE(engine);
    sync_engine_on(engine, "close_me", close_me, NULL, NULL);
    sync_server *server = fixture_server(NULL, "/", engine);
    REQUIRE(server);
    ws_client *c = fixture_join(sync_server_port(server), "/");
    REQUIRE(c);
    ws_send_text(c, "{\"type\":\"close_me\"}");
    char reason[256];
    CHECK_EQ_INT(ws_wait_close_reason(c, 5000, reason, sizeof reason), 4321);
    CHECK(strncmp(reason, "closed by the handler rrr", 25) == 0);
    CHECK_EQ_INT(strlen(reason), 123);
    ws_client_free(c);
    sync_server_free(server);
    sync_engine_free(engine);
}

static void handle_alive_arguments(void)
{
    sync_engine *engine = heartbeat_engine(0, 0);
    REQUIRE(engine);
    fake_conn *c = fake_conn_new();
    CHECK_EQ_INT(sync_engine_handle_alive(engine, NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_handle_alive(NULL, c->conn), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_handle_alive(engine, c->conn), SYNC_ESTATE); /* not open yet */
    CHECK_EQ_INT(sync_engine_handle_open(engine, c->conn), SYNC_OK);
    CHECK_EQ_INT(sync_engine_handle_alive(engine, c->conn), SYNC_OK);
    CHECK_EQ_INT(sync_engine_handle_close(engine, c->conn), SYNC_OK);
    CHECK_EQ_INT(sync_engine_handle_alive(engine, c->conn), SYNC_ESTATE);
    sync_engine_dispose(engine);
    CHECK_EQ_INT(sync_engine_handle_alive(engine, c->conn), SYNC_ECLOSED);
    sync_engine_free(engine);
    fake_conn_release(c);
}

int main(void)
{
    RUN(only_a_silent_client_times_out);
    RUN(close_reasons_reach_the_client);
    RUN(handle_alive_arguments);
    return check_summary();
}

/* Engine timers driven by the service thread (heartbeat pings, ping timeout of a half-open
 * client), persistence at stop, stop from a signal handler, and a restart after a stop. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "server_fixture.h"
#include "ws_client.h"

static sync_engine *timed_engine(int64_t heartbeat_ms, int64_t ping_timeout_ms,
                                 sync_adapter *adapter)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = "{\"counter\":0}";
    opts.heartbeat_interval_ms = heartbeat_ms;
    opts.ping_timeout_ms = ping_timeout_ms;
    opts.adapter = adapter;
    opts.persist_mode = SYNC_PERSIST_MANUAL;
    return fixture_engine(&opts);
}

static void test_heartbeat_and_ping_timeout(void)
{
    sync_engine *engine = timed_engine(60, 150, NULL);
    REQUIRE(engine);
    sync_server *server = fixture_server(NULL, "/", engine);
    REQUIRE(server);
    int port = sync_server_port(server);
    ws_client *alive = ws_connect(port, "/", NULL, NULL);
    ws_client *silent = ws_connect(port, "/", NULL, NULL);
    REQUIRE(alive && silent);

    /* the live client answers every ping and stays; the silent one is closed */
    int pings = 0;
    for (int i = 0; i < 40 && pings < 6; i++) {
        char *text = ws_read_text(alive, 1000);
        if (text && strcmp(text, "{\"type\":\"ping\"}") == 0) {
            pings++;
            ws_send_text(alive, "pong");
        }
        free(text);
    }
    CHECK(pings >= 6);
    int code = ws_wait_close(silent, 3000);
    CHECK(code != -1 || ws_wait_eof(silent, 100));
    CHECK_EQ_INT(sync_engine_connection_count(engine), 1);
    ws_client_free(alive);
    ws_client_free(silent);
    sync_server_free(server);
    sync_engine_free(engine);
}

static void test_stop_persists_every_engine(void)
{
    char *dir = check_tmpdir("server-stop-sync");
    char path[1024];
    snprintf(path, sizeof path, "%s/state.json", dir);
    sync_file_options fopts = SYNC_FILE_OPTIONS_INIT;
    fopts.file_path = path;
    sync_adapter *adapter = NULL;
    REQUIRE(sync_adapter_file_new(&adapter, &fopts) == SYNC_OK);
    sync_engine *engine = timed_engine(0, 0, adapter);
    REQUIRE(engine);
    sync_server *server = fixture_server(NULL, "/", engine);
    REQUIRE(server);
    ws_client *c = ws_connect(sync_server_port(server), "/", NULL, NULL);
    REQUIRE(c);
    for (int i = 0; i < 3; i++)
        ws_send_text(c, "{\"type\":\"increment\"}");
    long long seen = -1;
    for (int i = 0; i < 10 && seen != 3; i++) {
        char *text = ws_read_text(c, 2000);
        seen = ws_json_int(text, "counter");
        free(text);
    }
    CHECK_EQ_INT(seen, 3);
    CHECK(access(path, F_OK) != 0); /* manual persistence: nothing saved yet */
    CHECK_EQ_INT(sync_server_stop(server), SYNC_OK);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    char buf[256] = "";
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = '\0';
        fclose(f);
    }
    CHECK(strstr(buf, "\"counter\":3") != NULL);
    ws_client_free(c);
    sync_server_free(server);
    sync_engine_free(engine);
    unlink(path);
    rmdir(dir);
    free(dir);
}

static sync_server *signalled_server;

static void on_sigusr1(int sig)
{
    (void)sig;
    sync_server_stop(signalled_server);
}

static void *send_signal(void *arg)
{
    pthread_t target = *(pthread_t *)arg;
    usleep(200000);
    pthread_kill(target, SIGUSR1);
    return NULL;
}

static void test_stop_from_a_signal_handler(void)
{
    sync_engine *engine = timed_engine(0, 0, NULL);
    REQUIRE(engine);
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    REQUIRE(sync_server_new(&signalled_server, &opts) == SYNC_OK);
    REQUIRE(sync_server_mount(signalled_server, "/", engine) == SYNC_OK);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigusr1;
    sigaction(SIGUSR1, &sa, NULL);
    pthread_t self = pthread_self(), thread;
    REQUIRE(pthread_create(&thread, NULL, send_signal, &self) == 0);
    CHECK_EQ_INT(sync_server_run(signalled_server), SYNC_OK); /* returns after the signal */
    pthread_join(thread, NULL);
    signal(SIGUSR1, SIG_DFL);
    sync_server_free(signalled_server);
    sync_engine_free(engine);
}

static void test_restart_after_stop(void)
{
    sync_engine *engine = timed_engine(0, 0, NULL);
    REQUIRE(engine);
    sync_server *server = fixture_server(NULL, "/", engine);
    REQUIRE(server);
    CHECK_EQ_INT(sync_server_start(server), SYNC_ESTATE);
    CHECK_EQ_INT(sync_server_stop(server), SYNC_OK);
    CHECK_EQ_INT(sync_server_start(server), SYNC_OK);
    ws_client *c = fixture_join(sync_server_port(server), "/");
    CHECK(c != NULL);
    ws_client_free(c);
    sync_server_free(server);
    sync_engine_free(engine);
}

int main(void)
{
    RUN(test_heartbeat_and_ping_timeout);
    RUN(test_stop_persists_every_engine);
    RUN(test_stop_from_a_signal_handler);
    RUN(test_restart_after_stop);
    return check_summary();
}

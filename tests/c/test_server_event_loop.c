/* Which event loop a server runs, through sync_server_event_loop(): SYNC_EVENT_LOOP_DEFAULT is
 * epoll where libwebsockets' libev event library loads and poll where it does not (the server
 * still serves, and says so at SYNC_LOG_INFO, not as an error), LIBSYNC_EVENT_LOOP=poll|epoll
 * turns the default into that choice, and an explicit EPOLL without the library fails listen.
 *
 * ctest runs it three times: as installed (epoll), with LIBSYNC_EVENT_LOOP=poll, and as
 * c.noevlib.* in a private mount namespace where the library is /dev/null (without-evlib.sh,
 * which sets LIBSYNC_TEST_NO_EVLIB=1). */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "server_fixture.h"
#include "ws_client.h"

typedef struct log_capture {
    pthread_mutex_t lock;
    int errors, warnings, fallbacks;
    int evlib_debug; /* lws's lines on the failed load, demoted to SYNC_LOG_DEBUG */
    char first_error[256];
} log_capture;

static void capture_log(sync_log_level level, const char *message, void *userdata)
{
    log_capture *cap = userdata;
    pthread_mutex_lock(&cap->lock);
    if (level == SYNC_LOG_ERROR && cap->errors++ == 0)
        snprintf(cap->first_error, sizeof cap->first_error, "%s", message);
    if (level == SYNC_LOG_WARN)
        cap->warnings++;
    if (level == SYNC_LOG_INFO && strstr(message, "serving on the poll event loop") &&
        strstr(message, "libev event library"))
        cap->fallbacks++;
    if (level == SYNC_LOG_DEBUG && strncmp(message, "lws: ", 5) == 0 && strstr(message, "evlib"))
        cap->evlib_debug++;
    pthread_mutex_unlock(&cap->lock);
}

static bool no_evlib(void)
{
    const char *v = getenv("LIBSYNC_TEST_NO_EVLIB");
    return v && strcmp(v, "1") == 0;
}

static const char *env_loop(void)
{
    const char *v = getenv("LIBSYNC_EVENT_LOOP");
    return v ? v : "";
}

/* What SYNC_EVENT_LOOP_DEFAULT must become here. */
static int expected_default(void)
{
    if (strcmp(env_loop(), "poll") == 0 || no_evlib())
        return SYNC_EVENT_LOOP_POLL;
    return SYNC_EVENT_LOOP_EPOLL;
}

/* A counter server on `loop` (not started), its log captured. */
static sync_server *new_server(int loop, log_capture *cap, sync_engine **engine)
{
    *engine = fixture_counter_engine(5);
    if (!*engine)
        return NULL;
    if (fixture_add_counter_handlers(*engine) != SYNC_OK) {
        sync_engine_free(*engine);
        *engine = NULL;
        return NULL;
    }
    sync_server_options o = SYNC_SERVER_OPTIONS_INIT;
    o.event_loop = loop;
    o.log = capture_log;
    o.log_userdata = cap;
    sync_server *server = NULL;
    if (sync_server_new(&server, &o) != SYNC_OK ||
        sync_server_mount(server, "/", *engine) != SYNC_OK) {
        sync_server_free(server);
        sync_engine_free(*engine);
        *engine = NULL;
        return NULL;
    }
    return server;
}

/* One client joins and increments: the loop really serves. */
static void serve_one_client(sync_server *server)
{
    ws_client *c = fixture_join(sync_server_port(server), "/");
    REQUIRE(c);
    CHECK_EQ_INT(ws_send_text(c, "{\"type\":\"increment\",\"amount\":2}"), 0);
    char *text = ws_read_text(c, 5000);
    CHECK(text && strstr(text, "\"counter\":7"));
    free(text);
    ws_client_free(c);
}

/* The default serves on the loop it should, tells which, and logs no error on the way, whether
 * or not lws's libev event library could be loaded. */
static void test_default_loop_serves_and_is_reported(void)
{
    log_capture cap = {.lock = PTHREAD_MUTEX_INITIALIZER};
    sync_engine *engine = NULL;
    sync_server *server = new_server(SYNC_EVENT_LOOP_DEFAULT, &cap, &engine);
    REQUIRE(server);
    CHECK_EQ_INT(sync_server_event_loop(server), SYNC_EVENT_LOOP_DEFAULT);
    REQUIRE(sync_server_start(server) == SYNC_OK);
    CHECK_EQ_INT(sync_server_event_loop(server), expected_default());
    serve_one_client(server);
    CHECK_EQ_INT(sync_server_stop(server), SYNC_OK);
    /* the loop it served on, still */
    CHECK_EQ_INT(sync_server_event_loop(server), expected_default());
    pthread_mutex_lock(&cap.lock);
    if (cap.errors)
        fprintf(stderr, "  unexpected error logged: %s\n", cap.first_error);
    CHECK_EQ_INT(cap.errors, 0);
    CHECK_EQ_INT(cap.warnings, 0);
    /* the fallback, and only it, is told at SYNC_LOG_INFO */
    bool falls_back = no_evlib() && strcmp(env_loop(), "poll") != 0;
    CHECK_EQ_INT(cap.fallbacks, falls_back ? 1 : 0);
    CHECK(falls_back ? cap.evlib_debug > 0 : cap.evlib_debug == 0);
    pthread_mutex_unlock(&cap.lock);
    sync_server_free(server);
    sync_engine_free(engine);

    /* The next default server goes to poll at once: lws is not asked to load the library again
     * (lws 4.1 leaks a directory entry on each failed load). */
    log_capture again = {.lock = PTHREAD_MUTEX_INITIALIZER};
    server = new_server(SYNC_EVENT_LOOP_DEFAULT, &again, &engine);
    REQUIRE(server);
    REQUIRE(sync_server_start(server) == SYNC_OK);
    CHECK_EQ_INT(sync_server_event_loop(server), expected_default());
    serve_one_client(server);
    CHECK_EQ_INT(sync_server_stop(server), SYNC_OK);
    pthread_mutex_lock(&again.lock);
    CHECK_EQ_INT(again.errors, 0);
    CHECK_EQ_INT(again.fallbacks, falls_back ? 1 : 0);
    CHECK_EQ_INT(again.evlib_debug, 0);
    pthread_mutex_unlock(&again.lock);
    sync_server_free(server);
    sync_engine_free(engine);
}

/* An explicit choice is that loop, whatever LIBSYNC_EVENT_LOOP says; EPOLL without lws's libev
 * event library fails listen with SYNC_ENET and says why, and the server can then be freed. */
static void test_explicit_loops(void)
{
    log_capture cap = {.lock = PTHREAD_MUTEX_INITIALIZER};
    sync_engine *engine = NULL;
    sync_server *server = new_server(SYNC_EVENT_LOOP_POLL, &cap, &engine);
    REQUIRE(server);
    REQUIRE(sync_server_start(server) == SYNC_OK);
    CHECK_EQ_INT(sync_server_event_loop(server), SYNC_EVENT_LOOP_POLL);
    serve_one_client(server);
    CHECK_EQ_INT(sync_server_stop(server), SYNC_OK);
    sync_server_free(server);
    sync_engine_free(engine);

    server = new_server(SYNC_EVENT_LOOP_EPOLL, &cap, &engine);
    REQUIRE(server);
    if (no_evlib()) {
        CHECK_EQ_INT(sync_server_listen(server), SYNC_ENET);
        CHECK(strstr(sync_error_last(), "libev event library cannot be loaded"));
        CHECK_EQ_INT(sync_server_event_loop(server), SYNC_EVENT_LOOP_DEFAULT);
        pthread_mutex_lock(&cap.lock);
        CHECK_EQ_INT(cap.fallbacks, 0);
        pthread_mutex_unlock(&cap.lock);
    } else {
        REQUIRE(sync_server_start(server) == SYNC_OK);
        CHECK_EQ_INT(sync_server_event_loop(server), SYNC_EVENT_LOOP_EPOLL);
        serve_one_client(server);
        CHECK_EQ_INT(sync_server_stop(server), SYNC_OK);
    }
    sync_server_free(server);
    sync_engine_free(engine);
    CHECK_EQ_INT(sync_server_event_loop(NULL), SYNC_EINVAL);
}

int main(void)
{
    RUN(test_default_loop_serves_and_is_reported);
    RUN(test_explicit_loops);
    return check_summary();
}

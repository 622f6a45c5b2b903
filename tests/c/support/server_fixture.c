#include "server_fixture.h"

#include "check.h"
#include "ws_client.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int on_increment(sync_msg *msg, void *userdata)
{
    (void)userdata;
    cJSON *state = sync_msg_state_mut(msg);
    cJSON *counter = state ? cJSON_GetObjectItemCaseSensitive(state, "counter") : NULL;
    if (!cJSON_IsNumber(counter))
        return SYNC_EHANDLER;
    const cJSON *amount = cJSON_GetObjectItemCaseSensitive(sync_msg_message(msg), "amount");
    double by = cJSON_IsNumber(amount) ? amount->valuedouble : 1;
    cJSON_SetNumberValue(counter, counter->valuedouble + by);
    return SYNC_OK;
}

static int on_whoami(sync_msg *msg, void *userdata)
{
    (void)userdata;
    const char *identity = sync_conn_identity(sync_msg_conn(msg));
    const char *text = identity ? identity : "null";
    return sync_msg_reply(msg, text, strlen(text));
}

sync_engine *fixture_counter_engine(int start)
{
    char initial[64];
    snprintf(initial, sizeof initial, "{\"counter\":%d}", start);
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = initial;
    return fixture_engine(&opts);
}

int fixture_add_counter_handlers(sync_engine *engine)
{
    int rc = sync_engine_on(engine, "increment", on_increment, NULL, NULL);
    return rc == SYNC_OK ? sync_engine_on(engine, "whoami", on_whoami, NULL, NULL) : rc;
}

sync_engine *fixture_engine(const sync_engine_options *opts)
{
    sync_engine *engine = NULL;
    if (sync_engine_new(&engine, opts) != SYNC_OK)
        return NULL;
    if (fixture_add_counter_handlers(engine) != SYNC_OK) {
        sync_engine_free(engine);
        return NULL;
    }
    return engine;
}

long long fixture_counter_value(sync_engine *engine)
{
    char *json = sync_engine_get_state_json(engine);
    long long v = ws_json_int(json, "counter");
    sync_free(json);
    return v;
}

sync_server *fixture_server(const sync_server_options *opts, const char *path, sync_engine *engine)
{
    sync_server_options defaults = SYNC_SERVER_OPTIONS_INIT;
    sync_server *server = NULL;
    if (sync_server_new(&server, opts ? opts : &defaults) != SYNC_OK)
        return NULL;
    if ((engine && sync_server_mount(server, path, engine) != SYNC_OK) ||
        sync_server_start(server) != SYNC_OK) {
        sync_server_free(server);
        return NULL;
    }
    return server;
}

sync_server *fixture_counter_server(int start, const sync_server_options *opts, const char *path,
                                    sync_engine **engine)
{
    *engine = fixture_counter_engine(start);
    sync_server *server = *engine ? fixture_server(opts, path, *engine) : NULL;
    if (!server) {
        sync_engine_free(*engine);
        *engine = NULL;
    }
    return server;
}

sync_server_options *fixture_old_options(int version, size_t end)
{
    size_t raw_size = sizeof(sync_server_options) + 16;
    unsigned char *raw = malloc(raw_size);
    if (!raw)
        return NULL;
    memset(raw, 0xA5, raw_size);
    sync_server_options *opts = (sync_server_options *)(void *)raw;
    CHECK_EQ_INT(sync_server_options_init(opts, version), SYNC_OK);
    CHECK_EQ_INT(opts->version, version);
    for (size_t i = end; i < raw_size; i++)
        CHECK(raw[i] == 0xA5);
    return opts;
}

void fixture_quiet_log(sync_log_level level, const char *message, void *userdata)
{
    (void)level;
    (void)message;
    (void)userdata;
}

void fixture_expect_joined(ws_client *c, const char *identity_json)
{
    char *text = ws_read_text(c, 3000);
    CHECK(text && strstr(text, "initial_state"));
    free(text);
    CHECK_EQ_INT(ws_send_text(c, "{\"type\":\"whoami\"}"), 0);
    text = ws_read_text(c, 3000);
    CHECK_EQ_STR(text, identity_json);
    free(text);
}

ws_client *fixture_try_join(int port, const char *path, int timeout_ms, char **initial)
{
    if (initial)
        *initial = NULL;
    ws_client *c = ws_connect(port, path, NULL, NULL);
    char *text = c ? ws_read_text(c, timeout_ms) : NULL;
    if (!text || !strstr(text, "initial_state")) {
        free(text);
        ws_client_free(c);
        return NULL;
    }
    if (initial)
        *initial = text;
    else
        free(text);
    return c;
}

ws_client *fixture_join(int port, const char *path)
{
    ws_client *c = fixture_try_join(port, path, 3000, NULL);
    CHECK(c != NULL);
    return c;
}

sync_server *fixture_rooms_server(const sync_server_options *opts, const sync_rooms_options *ro,
                                  sync_rooms **rooms)
{
    sync_server_options defaults = SYNC_SERVER_OPTIONS_INIT;
    sync_server *server = NULL;
    if (sync_server_new(&server, opts ? opts : &defaults) != SYNC_OK)
        return NULL;
    if (sync_server_mount_rooms(server, "/rooms/", ro, rooms) != SYNC_OK ||
        sync_server_start(server) != SYNC_OK) {
        sync_server_free(server);
        return NULL;
    }
    return server;
}

int fixture_items_room_setup(sync_room_setup *setup, void *userdata)
{
    if (userdata)
        atomic_fetch_add((atomic_int *)userdata, 1);
    char initial[160];
    snprintf(initial, sizeof initial, "{\"room\":\"%s\",\"items\":[1,2,3]}",
             sync_room_setup_name(setup));
    return sync_room_setup_set_initial_state_json(setup, initial);
}

int fixture_read_until(ws_client *c, const char *field, long long want, int timeout_ms)
{
    for (int i = 0; i < 50; i++) {
        char *text = ws_read_text(c, timeout_ms);
        if (!text)
            return -1;
        long long v = ws_json_int(text, field);
        free(text);
        if (v == want)
            return 0;
        if (v > want)
            return -1;
    }
    return -1;
}

int fixture_increment(ws_client *c, const char *field, long long want)
{
    if (ws_send_text(c, "{\"type\":\"increment\"}") != 0)
        return -1;
    return fixture_read_until(c, field, want, 3000);
}

char *fixture_v2_first_frame(int port, const char *query)
{
    char path[256];
    snprintf(path, sizeof path, "/%s", query);
    ws_client *ws = ws_connect(port, path, FIXTURE_V2_HEADER, NULL);
    char *text = ws ? ws_read_text(ws, 5000) : NULL;
    ws_client_free(ws);
    return text;
}

void fixture_set_padded_counter(sync_engine *engine, int n)
{
    char json[160];
    snprintf(json, sizeof json,
             "{\"counter\":%d,\"pad\":"
             "\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"}",
             n);
    CHECK_EQ_INT(sync_engine_set_state_json(engine, json, 0), SYNC_OK);
}

size_t fixture_wait_loaded(sync_rooms *rooms, size_t want, int timeout_ms)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t n;
    while ((n = sync_rooms_loaded_count(rooms)) != want && check_elapsed_ms(&t0) < timeout_ms)
        check_sleep_ms(10);
    return n;
}

long long fixture_metric(int port, const char *name)
{
    char *body = NULL;
    long long value = -1;
    if (http_request(port, "GET", "/metrics", NULL, &body, NULL) == 200 && body) {
        size_t n = strlen(name);
        for (const char *line = body; line && *line; line = strchr(line, '\n')) {
            if (*line == '\n')
                line++;
            if (strncmp(line, name, n) == 0 && line[n] == ' ') {
                value = atoll(line + n + 1);
                break;
            }
        }
    }
    free(body);
    return value;
}

long long fixture_open_connections(int port, long long want)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long long open = -1;
    while ((open = fixture_metric(port, "libsync_server_connections")) != want &&
           check_elapsed_ms(&start) < 5000)
        usleep(20000);
    return open;
}

struct fixture_flood {
    ws_client *c;
    atomic_int stop;
    long long sent;
    pthread_t thread;
};

static void *flood_run(void *arg)
{
    fixture_flood *fl = arg;
    while (!atomic_load(&fl->stop)) {
        for (int i = 0; i < 64; i++)
            if (ws_send_text(fl->c, "{\"type\":\"increment\"}") != 0)
                return NULL;
        fl->sent += 64;
        char *text;
        while ((text = ws_read_text(fl->c, 0)))
            free(text);
    }
    return NULL;
}

fixture_flood *fixture_flood_start(ws_client *c)
{
    fixture_flood *fl = calloc(1, sizeof *fl);
    if (!fl)
        return NULL;
    fl->c = c;
    atomic_init(&fl->stop, 0);
    if (pthread_create(&fl->thread, NULL, flood_run, fl) != 0) {
        free(fl);
        return NULL;
    }
    return fl;
}

long long fixture_flood_stop(fixture_flood *fl)
{
    if (!fl)
        return 0;
    atomic_store(&fl->stop, 1);
    pthread_join(fl->thread, NULL);
    long long sent = fl->sent;
    free(fl);
    return sent;
}

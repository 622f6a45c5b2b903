/* The Redis adapter and room store against a real redis-server that the test starts on a free
 * port (AOF with appendfsync always, as docs/SECURITY.md recommends): options, round trips,
 * many rooms, the epoch kept across a reopen, engines and a room mount over real sockets on them,
 * Redis killed and restarted mid-use, a stalled Redis, corrupt records, and rooms saved from many
 * threads at once. Skipped (77) when libsync was built without Redis support. */
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "adapter_engine.h"
#include "check.h"
#include "redis_server.h"
#include "server_fixture.h"
#include "store_contract.h"
#include "ws_client.h"

static redis_server redis;
static int prefix_counter;

/* Options on the test's server, each case under a key prefix of its own. */
static sync_redis_options options(char *prefix, size_t cap)
{
    snprintf(prefix, cap, "t%d:", ++prefix_counter);
    sync_redis_options o = SYNC_REDIS_OPTIONS_INIT;
    o.url = redis.url;
    o.key_prefix = prefix;
    o.command_timeout_ms = 2000;
    return o;
}

static sync_room_store *open_rooms(const char *prefix)
{
    sync_redis_options o = SYNC_REDIS_OPTIONS_INIT;
    o.url = redis.url;
    o.key_prefix = prefix;
    o.command_timeout_ms = 2000;
    sync_room_store *store = NULL;
    return sync_room_store_redis_new(&store, &o) == SYNC_OK ? store : NULL;
}

static sync_adapter *open_adapter(const char *prefix)
{
    sync_redis_options o = SYNC_REDIS_OPTIONS_INIT;
    o.url = redis.url;
    o.key_prefix = prefix;
    o.command_timeout_ms = 2000;
    sync_adapter *adapter = NULL;
    return sync_adapter_redis_new(&adapter, &o) == SYNC_OK ? adapter : NULL;
}

static void expect_room(sync_room_store *store, const char *room, const char *state,
                        int64_t version)
{
    char *json = NULL;
    int64_t v = -1;
    CHECK_EQ_INT(sync_room_store_load(store, room, &json, &v), SYNC_OK);
    CHECK_EQ_STR(json, state);
    CHECK_EQ_INT(v, version);
    sync_free(json);
}

/* ---- options ------------------------------------------------------------------------------ */

static void options_are_checked(void)
{
    static const char *bad[] = {"",
                                "http://127.0.0.1:6379",
                                "redis://",
                                "redis://:6379",
                                "redis://h:0",
                                "redis://h:65536",
                                "redis://h:12x",
                                "redis://h/abc",
                                "redis://h/1?x=y",
                                "redis://[::1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        sync_redis_options o = SYNC_REDIS_OPTIONS_INIT;
        o.url = bad[i];
        sync_room_store *store = (sync_room_store *)1;
        CHECK_EQ_INT(sync_room_store_redis_new(&store, &o), SYNC_EINVAL);
        CHECK(store == NULL);
        CHECK(strlen(sync_error_last()) > 0);
        sync_adapter *adapter = (sync_adapter *)1;
        CHECK_EQ_INT(sync_adapter_redis_new(&adapter, &o), SYNC_EINVAL);
        CHECK(adapter == NULL);
    }
    sync_redis_options o = SYNC_REDIS_OPTIONS_INIT;
    sync_adapter *adapter = NULL;
    CHECK_EQ_INT(sync_adapter_redis_new(&adapter, &o), SYNC_EINVAL); /* no URL */
    CHECK_EQ_INT(sync_adapter_redis_new(&adapter, NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_adapter_redis_new(NULL, &o), SYNC_EINVAL);
    o.url = redis.url;
    o.connect_timeout_ms = -1;
    CHECK_EQ_INT(sync_adapter_redis_new(&adapter, &o), SYNC_EINVAL);
    o.connect_timeout_ms = 0;
    o.version = 0;
    CHECK_EQ_INT(sync_adapter_redis_new(&adapter, &o), SYNC_EINVAL);
    o.version = 2; /* from a newer header */
    CHECK_EQ_INT(sync_adapter_redis_new(&adapter, &o), SYNC_EINVAL);
    /* Version 1 through options_init; an explicit database and password-less URL work. */
    sync_redis_options v1;
    memset(&v1, 0xA5, sizeof v1);
    CHECK_EQ_INT(sync_redis_options_init(&v1, 1), SYNC_OK);
    CHECK(v1.url == NULL && v1.key_prefix == NULL && v1.command_timeout_ms == 0);
    CHECK_EQ_INT(sync_redis_options_init(&v1, 0), SYNC_EINVAL);
    char url[96];
    snprintf(url, sizeof url, "%s/3", redis.url);
    v1.url = url;
    v1.key_prefix = "opts:";
    REQUIRE(sync_adapter_redis_new(&adapter, &v1) == SYNC_OK);
    CHECK_EQ_INT(sync_adapter_init(adapter), SYNC_OK);
    CHECK_EQ_INT(sync_adapter_save(adapter, "{\"db\":3}", 1), SYNC_OK);
    sync_adapter_free(adapter);
    /* It went to database 3, not 0. */
    const char *get0[] = {"HGET", "opts:state", "state"};
    char *in0 = redis_get_bulk(&redis, 3, get0);
    CHECK(in0 == NULL);
    free(in0);
    const char *sel[] = {"EXISTS", "opts:state"};
    CHECK_EQ_INT(redis_get_int(&redis, 2, sel), 0);
}

/* ---- the room store ----------------------------------------------------------------------- */

static void rooms_round_trip_list_remove(void)
{
    char prefix[32];
    sync_redis_options o = options(prefix, sizeof prefix);
    sync_room_store *store = NULL;
    REQUIRE(sync_room_store_redis_new(&store, &o) == SYNC_OK);
    char *list = NULL;
    CHECK_EQ_INT(sync_room_store_list(store, &list), SYNC_OK);
    CHECK_EQ_STR(list, "[]");
    sync_free(list);
    char *json = (char *)1;
    int64_t v = -1;
    CHECK_EQ_INT(sync_room_store_load(store, "never", &json, &v), SYNC_OK);
    CHECK(json == NULL);
    CHECK_EQ_INT(v, 0);
    /* Names with spaces, percent signs, UTF-8 and case differences are rooms of their own. */
    CHECK_EQ_INT(sync_room_store_save(store, "Board 1", "{\"a\":1}", 1), SYNC_OK);
    CHECK_EQ_INT(sync_room_store_save(store, "board 1", "[1,\"x\",null]", 7), SYNC_OK);
    CHECK_EQ_INT(sync_room_store_save(store, "caf\xc3\xa9%41", "\"text\"", 9007199254740993LL),
                 SYNC_OK);
    CHECK_EQ_INT(sync_room_store_save(store, "Board 1", "{\"a\":2}", 2), SYNC_OK);
    expect_room(store, "Board 1", "{\"a\":2}", 2);
    expect_room(store, "board 1", "[1,\"x\",null]", 7);
    expect_room(store, "caf\xc3\xa9%41", "\"text\"", 9007199254740993LL);
    CHECK_EQ_INT(sync_room_store_list(store, &list), SYNC_OK);
    CHECK_EQ_STR(list, "[\"Board 1\",\"board 1\",\"caf\xc3\xa9%41\"]");
    sync_free(list);
    /* Bad names are refused before Redis sees them. */
    CHECK_EQ_INT(sync_room_store_save(store, "a/b", "{}", 1), SYNC_EINVAL);
    CHECK_EQ_INT(sync_room_store_load(store, "..", &json, &v), SYNC_EINVAL);
    /* Remove takes the record and the name; removing twice is fine. */
    CHECK_EQ_INT(sync_room_store_remove(store, "board 1"), SYNC_OK);
    CHECK_EQ_INT(sync_room_store_remove(store, "board 1"), SYNC_OK);
    CHECK_EQ_INT(sync_room_store_load(store, "board 1", &json, &v), SYNC_OK);
    CHECK(json == NULL);
    char key[96];
    snprintf(key, sizeof key, "%sroom:board 1", prefix);
    const char *exists[] = {"EXISTS", key};
    CHECK_EQ_INT(redis_get_int(&redis, 2, exists), 0);
    CHECK_EQ_INT(sync_room_store_list(store, &list), SYNC_OK);
    CHECK_EQ_STR(list, "[\"Board 1\",\"caf\xc3\xa9%41\"]");
    sync_free(list);
    /* In Redis: one hash per room with state, version, updated_at. */
    snprintf(key, sizeof key, "%sroom:Board 1", prefix);
    const char *hget[] = {"HGET", key, "version"};
    char *version = redis_get_bulk(&redis, 3, hget);
    CHECK_EQ_STR(version, "2");
    free(version);
    sync_room_store_free(store);
    /* A new store on the same prefix (a restart) sees the same rooms. */
    store = open_rooms(prefix);
    REQUIRE(store);
    expect_room(store, "Board 1", "{\"a\":2}", 2);
    sync_room_store_free(store);
}

static void many_rooms(void)
{
    char prefix[32];
    sync_redis_options o = options(prefix, sizeof prefix);
    sync_room_store *store = NULL;
    REQUIRE(sync_room_store_redis_new(&store, &o) == SYNC_OK);
    enum { ROOMS = 500 };
    for (int i = 0; i < ROOMS; i++) {
        char room[32], state[48];
        snprintf(room, sizeof room, "room-%04d", i);
        snprintf(state, sizeof state, "{\"i\":%d}", i);
        REQUIRE(sync_room_store_save(store, room, state, i + 1) == SYNC_OK);
    }
    char *list = NULL;
    REQUIRE(sync_room_store_list(store, &list) == SYNC_OK);
    cJSON *names = cJSON_Parse(list);
    CHECK_EQ_INT(cJSON_GetArraySize(names), ROOMS);
    CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetArrayItem(names, 0)), "room-0000");
    CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetArrayItem(names, ROOMS - 1)), "room-0499");
    cJSON_Delete(names);
    sync_free(list);
    expect_room(store, "room-0321", "{\"i\":321}", 322);
    /* A name someone else put in the set that no room can have is not listed. */
    char set[64];
    snprintf(set, sizeof set, "%srooms", prefix);
    const char *sadd[] = {"SADD", set, "bad/name"};
    CHECK_EQ_INT(redis_get_int(&redis, 3, sadd), 1);
    REQUIRE(sync_room_store_list(store, &list) == SYNC_OK);
    names = cJSON_Parse(list);
    CHECK_EQ_INT(cJSON_GetArraySize(names), ROOMS);
    cJSON_Delete(names);
    sync_free(list);
    sync_room_store_free(store);
}

/* ---- engines on the adapter and on the room store ----------------------------------------- */

static char *hget(const char *key, const char *field)
{
    const char *argv[] = {"HGET", key, field};
    return redis_get_bulk(&redis, 3, argv);
}

static void engine_on_adapter_restarts_with_its_state_and_epoch(void)
{
    char prefix[32], key[64];
    sync_redis_options o = options(prefix, sizeof prefix);
    snprintf(key, sizeof key, "%sstate", prefix);
    sync_adapter *adapter = NULL;
    REQUIRE(sync_adapter_redis_new(&adapter, &o) == SYNC_OK);
    aeng_errors errors;
    sync_engine *e = aeng_new(adapter, "{\"counter\":7}", &errors);
    REQUIRE(e);
    store_expect_state(e, "{\"counter\":7}", 0);
    CHECK_EQ_INT(sync_engine_set_state_json(e, "{\"counter\":8}", 0), SYNC_OK);
    CHECK_EQ_INT(sync_engine_create_backup(e), SYNC_EUNSUPPORTED);
    CHECK_EQ_INT(errors.count, 0);
    sync_engine_free(e);
    char *state = hget(key, "state"), *version = hget(key, "version"), *epoch = hget(key, "epoch");
    CHECK_EQ_STR(state, "{\"counter\":8}");
    CHECK_EQ_STR(version, "1");
    CHECK(epoch && strlen(epoch) >= 16);
    /* The restarted engine continues from Redis, in the same history (epoch). */
    e = aeng_new(open_adapter(prefix), "{\"counter\":0}", &errors);
    REQUIRE(e);
    store_expect_state(e, "{\"counter\":8}", 1);
    CHECK_EQ_INT(sync_engine_set_state_json(e, "{\"counter\":9}", 0), SYNC_OK);
    CHECK_EQ_INT(errors.count, 0);
    sync_engine_free(e);
    char *epoch2 = hget(key, "epoch"), *state2 = hget(key, "state");
    CHECK_EQ_STR(epoch2, epoch);
    CHECK_EQ_STR(state2, "{\"counter\":9}");
    free(state);
    free(version);
    free(epoch);
    free(epoch2);
    free(state2);
}

static void engine_on_room_adapter_keeps_state_and_epoch(void)
{
    char prefix[32], key[64];
    sync_redis_options o = options(prefix, sizeof prefix);
    snprintf(key, sizeof key, "%sroom:doc", prefix);
    char *epochs[2] = {NULL, NULL};
    for (int round = 0; round < 2; round++) {
        sync_room_store *store = NULL;
        REQUIRE(sync_room_store_redis_new(&store, &o) == SYNC_OK);
        sync_adapter *adapter = NULL;
        REQUIRE(sync_room_store_adapter(&adapter, store, "doc") == SYNC_OK);
        sync_room_store_free(store); /* the adapter holds its own reference */
        aeng_errors errors;
        sync_engine *e = aeng_new(adapter, "{\"n\":0}", &errors);
        REQUIRE(e);
        store_expect_state(e, round == 0 ? "{\"n\":0}" : "{\"n\":1}", round == 0 ? 0 : 1);
        char next[32];
        snprintf(next, sizeof next, "{\"n\":%d}", round + 1);
        CHECK_EQ_INT(sync_engine_set_state_json(e, next, 0), SYNC_OK);
        CHECK_EQ_INT(errors.count, 0);
        sync_engine_free(e);
        epochs[round] = hget(key, "epoch");
        CHECK(epochs[round] && strlen(epochs[round]) >= 16);
    }
    CHECK_EQ_STR(epochs[1], epochs[0]);
    char *version = hget(key, "version");
    CHECK_EQ_STR(version, "2");
    free(version);
    free(epochs[0]);
    free(epochs[1]);
}

/* ---- a room mount over real sockets -------------------------------------------------------- */

static int room_setup(sync_room_setup *setup, void *userdata)
{
    (void)userdata;
    if (fixture_add_counter_handlers(sync_room_setup_engine(setup)) != SYNC_OK)
        return SYNC_EINVAL;
    return sync_room_setup_set_initial_state_json(setup, "{\"counter\":0}");
}

static sync_server *rooms_server(sync_room_store *store, sync_rooms **rooms)
{
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.room_idle_ms = 150;
    sync_rooms_options ro = SYNC_ROOMS_OPTIONS_INIT;
    ro.setup = room_setup;
    ro.store = store;
    sync_server *server = fixture_rooms_server(&opts, &ro, rooms);
    sync_room_store_free(store);
    return server;
}

/* A v2 client of `path` that read its initial state: its counter, version and epoch. */
static ws_client *join(int port, const char *path, long long *counter, char *epoch, size_t cap)
{
    ws_client *c = ws_connect(port, path, FIXTURE_V2_HEADER, NULL);
    if (!c)
        return NULL;
    char *text = ws_read_text(c, 5000);
    cJSON *msg = text ? cJSON_Parse(text) : NULL;
    free(text);
    cJSON *data = cJSON_GetObjectItemCaseSensitive(msg, "data");
    const char *e = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(msg, "epoch"));
    if (!data || !e) {
        cJSON_Delete(msg);
        ws_client_free(c);
        return NULL;
    }
    *counter = (long long)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(data, "counter"));
    snprintf(epoch, cap, "%s", e);
    cJSON_Delete(msg);
    return c;
}

/* Sends an increment and waits for the version that carries it. */
static int increment(ws_client *c, long long want_version)
{
    return fixture_increment(c, "version", want_version);
}

static void server_rooms_live_in_redis(void)
{
    char prefix[32];
    snprintf(prefix, sizeof prefix, "t%d:", ++prefix_counter);
    char first_epoch[80] = "";
    for (int round = 0; round < 2; round++) {
        sync_rooms *rooms = NULL;
        sync_server *server = rooms_server(open_rooms(prefix), &rooms);
        REQUIRE(server);
        int port = sync_server_port(server);
        long long ca = -1, cb = -1;
        char ea[80], eb[80];
        ws_client *a = join(port, "/rooms/Board%201", &ca, ea, sizeof ea);
        ws_client *b = join(port, "/rooms/other", &cb, eb, sizeof eb);
        REQUIRE(a && b);
        CHECK_EQ_INT(ca, round == 0 ? 0 : 2);
        CHECK_EQ_INT(cb, round == 0 ? 0 : 1);
        if (round == 0)
            snprintf(first_epoch, sizeof first_epoch, "%s", ea);
        else /* the room's history goes on after the restart: its epoch came back from Redis */
            CHECK_EQ_STR(ea, first_epoch);
        CHECK_EQ_INT(increment(a, ca + 1), 0);
        CHECK_EQ_INT(increment(a, ca + 2), 0);
        CHECK_EQ_INT(increment(b, cb + 1), 0);
        ws_client_free(a);
        ws_client_free(b);
        CHECK_EQ_INT(fixture_wait_loaded(rooms, 0, 5000), 0); /* saved to Redis and unloaded */
        long long again = -1;
        a = join(port, "/rooms/Board%201", &again, ea, sizeof ea);
        CHECK_EQ_INT(again, ca + 2);
        ws_client_free(a);
        char *list = NULL;
        CHECK_EQ_INT(sync_rooms_list(rooms, &list), SYNC_OK);
        CHECK_EQ_STR(list, "[\"Board 1\",\"other\"]");
        sync_free(list);
        if (round == 1) {
            CHECK_EQ_INT(sync_rooms_delete(rooms, "other"), SYNC_OK);
            char key[96];
            snprintf(key, sizeof key, "%sroom:other", prefix);
            const char *exists[] = {"EXISTS", key};
            CHECK_EQ_INT(redis_get_int(&redis, 2, exists), 0);
        }
        sync_server_free(server);
    }
}

/* ---- Redis lost and back ------------------------------------------------------------------- */

typedef struct saver {
    sync_room_store *store;
    char room[32];
    atomic_int stop;
    atomic_int ok, failed, other; /* saves by outcome */
    int64_t last_ok;              /* the version of the last save that succeeded */
    long long longest_ms;         /* the slowest call */
} saver;

static void *save_loop(void *arg)
{
    saver *s = arg;
    for (int64_t v = 1; !atomic_load(&s->stop) && v < 100000; v++) {
        char state[64];
        snprintf(state, sizeof state, "{\"n\":%lld}", (long long)v);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int rc = sync_room_store_save(s->store, s->room, state, v);
        long long ms = check_elapsed_ms(&t0);
        if (ms > s->longest_ms)
            s->longest_ms = ms;
        if (rc == SYNC_OK) {
            s->ok++;
            s->last_ok = v;
        } else if (rc == SYNC_EIO) {
            s->failed++;
        } else {
            s->other++;
        }
        if (rc != SYNC_OK)
            usleep(5000);
    }
    return NULL;
}

static void redis_killed_and_restarted(void)
{
    char prefix[32];
    snprintf(prefix, sizeof prefix, "t%d:", ++prefix_counter);
    sync_room_store *store = open_rooms(prefix);
    REQUIRE(store);
    CHECK_EQ_INT(sync_room_store_save(store, "fixed", "{\"kept\":true}", 5), SYNC_OK);
    enum { SAVERS = 3 };
    saver savers[SAVERS];
    pthread_t threads[SAVERS];
    for (int i = 0; i < SAVERS; i++) {
        memset(&savers[i], 0, sizeof savers[i]);
        savers[i].store = store;
        snprintf(savers[i].room, sizeof savers[i].room, "busy-%d", i);
        pthread_create(&threads[i], NULL, save_loop, &savers[i]);
    }
    usleep(200000);
    redis_kill(&redis); /* mid-use: saves are in flight */
    usleep(300000);
    /* Down: every call fails with SYNC_EIO and a reason, quickly. */
    char *json = NULL;
    int64_t v = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_EQ_INT(sync_room_store_load(store, "fixed", &json, &v), SYNC_EIO);
    CHECK(strstr(sync_error_last(), "Redis at 127.0.0.1:") != NULL);
    CHECK(json == NULL);
    char *list = NULL;
    CHECK_EQ_INT(sync_room_store_list(store, &list), SYNC_EIO);
    CHECK_EQ_INT(sync_room_store_remove(store, "fixed"), SYNC_EIO);
    CHECK_EQ_INT(sync_room_store_save(store, "fixed", "{}", 6), SYNC_EIO);
    CHECK(check_elapsed_ms(&t0) < 5000);
    int failed_while_down[SAVERS];
    for (int i = 0; i < SAVERS; i++)
        failed_while_down[i] = atomic_load(&savers[i].failed);
    REQUIRE(redis_restart(&redis) == 0);
    usleep(300000);
    for (int i = 0; i < SAVERS; i++) {
        atomic_store(&savers[i].stop, 1);
        pthread_join(threads[i], NULL);
        CHECK(failed_while_down[i] > 0);
        CHECK(savers[i].ok > 0);
        CHECK_EQ_INT(savers[i].other, 0);
        CHECK(savers[i].longest_ms < 5000); /* never a hang */
        /* Nothing half-written: what Redis holds is one whole record, the last one saved (AOF
         * with appendfsync always: no acknowledged write is lost). */
        char state[64];
        snprintf(state, sizeof state, "{\"n\":%lld}", (long long)savers[i].last_ok);
        expect_room(store, savers[i].room, state, savers[i].last_ok);
    }
    /* Back: the same store handle works again, and kept what it had before. */
    expect_room(store, "fixed", "{\"kept\":true}", 5);
    CHECK_EQ_INT(sync_room_store_list(store, &list), SYNC_OK);
    CHECK_EQ_STR(list, "[\"busy-0\",\"busy-1\",\"busy-2\",\"fixed\"]");
    sync_free(list);
    sync_room_store_free(store);
}

/* A big save on a connection whose Redis died: the write fails with EPIPE, which must be an
 * SYNC_EIO and not a SIGPIPE that kills the process. */
static void big_save_to_a_dead_redis_is_an_error(void)
{
    char prefix[32];
    snprintf(prefix, sizeof prefix, "t%d:", ++prefix_counter);
    sync_room_store *store = open_rooms(prefix);
    REQUIRE(store);
    signal(SIGPIPE, SIG_DFL); /* libwebsockets ignores it once a server ran in this process */
    CHECK_EQ_INT(sync_room_store_save(store, "big", "{}", 1), SYNC_OK); /* connected */
    size_t len = 16u << 20;
    char *big = malloc(len + 16);
    REQUIRE(big);
    big[0] = '"';
    memset(big + 1, 'x', len);
    strcpy(big + 1 + len, "\"");
    redis_kill(&redis);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(sync_room_store_save(store, "big", big, 2), SYNC_EIO);
    REQUIRE(redis_restart(&redis) == 0);
    expect_room(store, "big", "{}", 1);
    free(big);
    sync_room_store_free(store);
}

/* A room store made while Redis is down serves its rooms once Redis is up: the first failure is
 * not kept (a store's init runs once, so an init that failed would fail it for good). */
static void room_store_opened_while_redis_is_down(void)
{
    char prefix[32];
    snprintf(prefix, sizeof prefix, "t%d:", ++prefix_counter);
    redis_kill(&redis);
    sync_room_store *store = open_rooms(prefix);
    REQUIRE(store);
    char *json = NULL;
    int64_t v = 0;
    CHECK_EQ_INT(sync_room_store_load(store, "late", &json, &v), SYNC_EIO);
    CHECK(strstr(sync_error_last(), "cannot connect to Redis at 127.0.0.1:") != NULL);
    REQUIRE(redis_restart(&redis) == 0);
    CHECK_EQ_INT(sync_room_store_save(store, "late", "{\"up\":1}", 1), SYNC_OK);
    expect_room(store, "late", "{\"up\":1}", 1);
    sync_room_store_free(store);
}

static void engine_keeps_changes_while_redis_is_down(void)
{
    char prefix[32];
    snprintf(prefix, sizeof prefix, "t%d:", ++prefix_counter);
    aeng_errors errors;
    sync_engine *e = aeng_new(open_adapter(prefix), "{\"n\":1}", &errors);
    REQUIRE(e);
    redis_kill(&redis);
    store_expect_save_fails_change_kept(e, &errors);
    CHECK(strstr(errors.last_message, "Redis") != NULL);
    REQUIRE(redis_restart(&redis) == 0);
    CHECK_EQ_INT(sync_engine_set_state_json(e, "{\"n\":3}", 0), SYNC_OK);
    sync_engine_free(e);
    e = aeng_new(open_adapter(prefix), "{\"n\":0}", &errors);
    REQUIRE(e);
    store_expect_state(e, "{\"n\":3}", 2);
    sync_engine_free(e);
}

static void stalled_redis_times_out(void)
{
    char prefix[32];
    sync_redis_options o = options(prefix, sizeof prefix);
    o.command_timeout_ms = 300;
    sync_room_store *store = NULL;
    REQUIRE(sync_room_store_redis_new(&store, &o) == SYNC_OK);
    CHECK_EQ_INT(sync_room_store_save(store, "r", "{\"n\":1}", 1), SYNC_OK);
    redis_signal(&redis, SIGSTOP);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = sync_room_store_save(store, "r", "{\"n\":2}", 2);
    long long ms = check_elapsed_ms(&t0);
    CHECK_EQ_INT(rc, SYNC_EIO);
    CHECK(strstr(sync_error_last(), "no reply within 300 ms") != NULL);
    CHECK(ms >= 250 && ms < 5000);
    redis_signal(&redis, SIGCONT);
    /* The save that timed out may or may not have been applied, but whole: n matches version. */
    char *json = NULL;
    int64_t v = 0;
    CHECK_EQ_INT(sync_room_store_load(store, "r", &json, &v), SYNC_OK);
    CHECK(v == 1 || v == 2);
    char want[32];
    snprintf(want, sizeof want, "{\"n\":%lld}", (long long)v);
    CHECK_EQ_STR(json, want);
    sync_free(json);
    CHECK_EQ_INT(sync_room_store_save(store, "r", "{\"n\":3}", 3), SYNC_OK);
    expect_room(store, "r", "{\"n\":3}", 3);
    sync_room_store_free(store);
}

/* ---- corrupt records ---------------------------------------------------------------------- */

static long long count_keys(const char *pattern)
{
    const char *argv[] = {"KEYS", pattern};
    char *reply = redis_raw(&redis, 2, argv);
    long long n = reply && reply[0] == '*' ? atoll(reply + 1) : -1;
    free(reply);
    return n;
}

static void corrupt_records_are_kept_aside(void)
{
    char prefix[32];
    sync_redis_options o = options(prefix, sizeof prefix);
    sync_room_store *store = NULL;
    REQUIRE(sync_room_store_redis_new(&store, &o) == SYNC_OK);
    static const char *rooms[] = {"string", "json", "version", "nostate"};
    for (size_t i = 0; i < 4; i++)
        REQUIRE(sync_room_store_save(store, rooms[i], "{\"ok\":1}", 1) == SYNC_OK);
    char key[4][64];
    for (size_t i = 0; i < 4; i++)
        snprintf(key[i], sizeof key[i], "%sroom:%s", prefix, rooms[i]);
    const char *del[] = {"DEL", key[0]};
    const char *set[] = {"SET", key[0], "junk"};
    const char *badjson[] = {"HSET", key[1], "state", "{not json"};
    const char *badversion[] = {"HSET", key[2], "version", "12abc"};
    const char *nostate[] = {"HDEL", key[3], "state"};
    CHECK_EQ_INT(redis_get_int(&redis, 2, del), 1);
    free(redis_raw(&redis, 3, set));
    CHECK_EQ_INT(redis_get_int(&redis, 4, badjson), 0);
    CHECK_EQ_INT(redis_get_int(&redis, 4, badversion), 0);
    CHECK_EQ_INT(redis_get_int(&redis, 3, nostate), 1);
    static const char *reasons[] = {"not a hash", "not valid JSON", "version is not an integer",
                                    "state is missing"};
    for (size_t i = 0; i < 4; i++) {
        char *json = (char *)1;
        int64_t v = -1;
        CHECK_EQ_INT(sync_room_store_load(store, rooms[i], &json, &v), SYNC_ECORRUPT);
        CHECK(json == NULL);
        CHECK(strstr(sync_error_last(), reasons[i]) != NULL);
        CHECK(strstr(sync_error_last(), "kept aside") != NULL);
        char pattern[300];
        snprintf(pattern, sizeof pattern, "%scorrupt:room:%s:*", prefix, rooms[i]);
        CHECK_EQ_INT(count_keys(pattern), 1);
        /* Kept aside: the room reads as never saved, and a save starts it afresh. */
        CHECK_EQ_INT(sync_room_store_load(store, rooms[i], &json, &v), SYNC_OK);
        CHECK(json == NULL);
    }
    char *list = NULL;
    CHECK_EQ_INT(sync_room_store_list(store, &list), SYNC_OK);
    CHECK_EQ_STR(list, "[]");
    sync_free(list);
    CHECK_EQ_INT(sync_room_store_save(store, "json", "{\"ok\":2}", 2), SYNC_OK);
    expect_room(store, "json", "{\"ok\":2}", 2);
    /* Spoilt again within the same millisecond or not: the first copy kept aside stays. */
    CHECK_EQ_INT(redis_get_int(&redis, 4, badjson), 0);
    char *json = NULL;
    int64_t v = 0;
    CHECK_EQ_INT(sync_room_store_load(store, "json", &json, &v), SYNC_ECORRUPT);
    char json_pattern[160];
    snprintf(json_pattern, sizeof json_pattern, "%scorrupt:room:json:*", prefix);
    CHECK_EQ_INT(count_keys(json_pattern), 2);
    sync_room_store_free(store);

    /* The single adapter under an engine: reported in "load", kept aside once. */
    sync_adapter *adapter = NULL;
    REQUIRE(sync_adapter_redis_new(&adapter, &o) == SYNC_OK);
    char skey[64];
    snprintf(skey, sizeof skey, "%sstate", prefix);
    const char *junk[] = {"HSET", skey, "state", "[1,", "version", "1"};
    CHECK_EQ_INT(redis_get_int(&redis, 6, junk), 2);
    aeng_errors errors;
    sync_engine *e = aeng_new(adapter, "{\"n\":1}", &errors);
    REQUIRE(e);
    store_expect_state(e, "{\"n\":1}", 0);
    CHECK_EQ_INT(errors.count, 1);
    CHECK_EQ_INT(errors.last_status, SYNC_ECORRUPT);
    CHECK_EQ_STR(errors.last_context, "load");
    CHECK_EQ_INT(sync_engine_set_state_json(e, "{\"n\":2}", 0), SYNC_OK);
    sync_engine_free(e);
    char pattern[96];
    snprintf(pattern, sizeof pattern, "%scorrupt:state:*", prefix);
    CHECK_EQ_INT(count_keys(pattern), 1);
    e = aeng_new(open_adapter(prefix), "{\"n\":0}", &errors);
    REQUIRE(e);
    store_expect_state(e, "{\"n\":2}", 1);
    CHECK_EQ_INT(errors.count, 0);
    sync_engine_free(e);
}

/* ---- many threads -------------------------------------------------------------------------- */

typedef struct worker {
    sync_room_store *store;
    int id;
    int errors;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    for (int i = 1; i <= 60; i++) {
        char room[32], state[64];
        snprintf(room, sizeof room, "w%d-r%d", w->id, i % 4);
        snprintf(state, sizeof state, "{\"w\":%d,\"i\":%d}", w->id, i);
        if (sync_room_store_save(w->store, room, state, i) != SYNC_OK)
            w->errors++;
        char *json = NULL;
        int64_t v = 0;
        if (sync_room_store_load(w->store, room, &json, &v) != SYNC_OK || v != i || !json ||
            strcmp(json, state) != 0)
            w->errors++;
        sync_free(json);
        if (i % 20 == 0) {
            char *list = NULL;
            if (sync_room_store_list(w->store, &list) != SYNC_OK)
                w->errors++;
            sync_free(list);
        }
    }
    return NULL;
}

static void rooms_from_many_threads(void)
{
    char prefix[32];
    snprintf(prefix, sizeof prefix, "t%d:", ++prefix_counter);
    sync_room_store *store = open_rooms(prefix);
    REQUIRE(store);
    enum { WORKERS = 6 };
    worker workers[WORKERS];
    pthread_t threads[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        workers[i] = (worker){store, i, 0};
        pthread_create(&threads[i], NULL, work, &workers[i]);
    }
    for (int i = 0; i < WORKERS; i++) {
        pthread_join(threads[i], NULL);
        CHECK_EQ_INT(workers[i].errors, 0);
    }
    char *list = NULL;
    CHECK_EQ_INT(sync_room_store_list(store, &list), SYNC_OK);
    cJSON *names = cJSON_Parse(list);
    CHECK_EQ_INT(cJSON_GetArraySize(names), WORKERS * 4);
    cJSON_Delete(names);
    sync_free(list);
    expect_room(store, "w3-r0", "{\"w\":3,\"i\":60}", 60);
    sync_room_store_free(store);
}

static void unreachable_redis_fails_init(void)
{
    sync_redis_options o = SYNC_REDIS_OPTIONS_INIT;
    o.url = "redis://127.0.0.1:1";
    o.connect_timeout_ms = 500;
    sync_adapter *adapter = NULL;
    REQUIRE(sync_adapter_redis_new(&adapter, &o) == SYNC_OK); /* connects to nothing yet */
    CHECK_EQ_INT(sync_adapter_init(adapter), SYNC_EIO);
    CHECK(strstr(sync_error_last(), "cannot connect to Redis at 127.0.0.1:1") != NULL);
    sync_adapter_free(adapter);
}

int main(void)
{
    sync_room_store *probe = NULL;
    sync_redis_options o = SYNC_REDIS_OPTIONS_INIT;
    o.url = "redis://127.0.0.1:6379";
    if (sync_room_store_redis_new(&probe, &o) == SYNC_EUNSUPPORTED) {
        printf("SKIP: libsync was built without Redis support\n");
        return 77;
    }
    sync_room_store_free(probe);
    if (redis_start(&redis, "redis_store") != 0)
        return 1;
    RUN(options_are_checked);
    RUN(unreachable_redis_fails_init);
    RUN(rooms_round_trip_list_remove);
    RUN(many_rooms);
    RUN(engine_on_adapter_restarts_with_its_state_and_epoch);
    RUN(engine_on_room_adapter_keeps_state_and_epoch);
    RUN(server_rooms_live_in_redis);
    RUN(corrupt_records_are_kept_aside);
    RUN(rooms_from_many_threads);
    RUN(stalled_redis_times_out);
    RUN(redis_killed_and_restarted);
    RUN(engine_keeps_changes_while_redis_is_down);
    RUN(room_store_opened_while_redis_is_down);
    RUN(big_save_to_a_dead_redis_is_an_error);
    redis_stop(&redis);
    return check_summary();
}

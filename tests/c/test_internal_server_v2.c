/* The v2 wire over real sockets (docs/PROTOCOL.md): the subprotocol negotiation (v1 unchanged
 * byte for byte), patches for consecutive and coalesced versions, state_update when the patch is
 * longer, resume by patch or by initial_state, the history's bounds, the /metrics counters, and
 * many v2 clients at mixed bases that apply every patch with the patch module and end on the
 * server's state exactly. */
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "adapter_fs.h"
#include "check.h"
#include "engine/patch.h"
#include "server_fixture.h"
#include "ws_client.h"

/* A v2 client as the client libraries keep it: the state, its version, the epoch. */
typedef struct v2_client {
    ws_client *ws;
    cJSON *state;
    long long version;
    char epoch[80];
} v2_client;

static cJSON *member(cJSON *obj, const char *name)
{
    return cJSON_GetObjectItemCaseSensitive(obj, name);
}

/* Applies one frame; returns its type ("initial_state", "patch", "state_update") or NULL when it
 * did not fit (a base other than the client's version, ops that do not apply). */
static const char *v2_apply(v2_client *c, const char *text)
{
    static char type[32];
    cJSON *f = cJSON_Parse(text);
    if (!f)
        return NULL;
    const char *t = cJSON_GetStringValue(member(f, "type"));
    snprintf(type, sizeof type, "%s", t ? t : "");
    const char *result = type;
    if (strcmp(type, "initial_state") == 0 || strcmp(type, "state_update") == 0) {
        cJSON_Delete(c->state);
        c->state = cJSON_DetachItemFromObject(f, "data");
        c->version = (long long)cJSON_GetNumberValue(member(f, "version"));
        const char *e = cJSON_GetStringValue(member(f, "epoch"));
        if (e)
            snprintf(c->epoch, sizeof c->epoch, "%s", e);
    } else if (strcmp(type, "patch") == 0) {
        long long base = (long long)cJSON_GetNumberValue(member(f, "base"));
        if (base != c->version || sync__json_patch_apply(&c->state, member(f, "ops")) != SYNC_OK)
            result = NULL;
        else
            c->version = (long long)cJSON_GetNumberValue(member(f, "version"));
    }
    cJSON_Delete(f);
    return result;
}

static int v2_connect(v2_client *c, int port, const char *path)
{
    memset(c, 0, sizeof *c);
    c->version = -1;
    c->ws = ws_connect(port, path, FIXTURE_V2_HEADER, NULL);
    return c->ws ? 0 : -1;
}

static void v2_free(v2_client *c)
{
    ws_client_free(c->ws);
    cJSON_Delete(c->state);
    memset(c, 0, sizeof *c);
}

/* Reads and applies frames until the client is at `version`; 0, or -1 (timeout, a frame that
 * did not fit). */
static int v2_read_to(v2_client *c, long long version, int timeout_ms)
{
    while (c->version != version) {
        char *text = ws_read_text(c->ws, timeout_ms);
        if (!text)
            return -1;
        const char *type = v2_apply(c, text);
        free(text);
        if (!type)
            return -1;
    }
    return 0;
}

/* The client's state prints exactly like the server's. */
static int v2_matches(v2_client *c, sync_engine *engine)
{
    char *server = sync_engine_get_state_json(engine);
    char *mine = c->state ? cJSON_PrintUnformatted(c->state) : NULL;
    int ok = server && mine && strcmp(server, mine) == 0;
    if (!ok)
        fprintf(stderr, "client %s\nserver %s\n", mine ? mine : "(null)",
                server ? server : "(null)");
    sync_free(server);
    free(mine);
    return ok;
}

static sync_engine *history_engine(int versions)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = "{\"counter\":0}";
    opts.auto_broadcast = 1;
    opts.resume_history_versions = versions;
    return fixture_engine(&opts);
}

static void test_v1_clients_see_no_difference(void)
{
    sync_engine *engine = NULL;
    sync_server *server = fixture_counter_server(0, NULL, "/", &engine);
    REQUIRE(server);
    int port = sync_server_port(server);
    ws_client *plain = ws_connect(port, "/", NULL, NULL);
    ws_client *named = ws_connect(port, "/", "Sec-WebSocket-Protocol: libsync\r\n", NULL);
    REQUIRE(plain && named);
    CHECK_EQ_STR(ws_client_protocol(plain), "");
    CHECK_EQ_STR(ws_client_protocol(named), "libsync");
    char *a = ws_read_text(plain, 5000), *b = ws_read_text(named, 5000);
    CHECK_EQ_STR(a, "{\"type\":\"initial_state\",\"data\":{\"counter\":0},\"version\":0}");
    CHECK_EQ_STR(b, "{\"type\":\"initial_state\",\"data\":{\"counter\":0},\"version\":0}");
    free(a);
    free(b);
    /* a v2 client alongside changes nothing for them */
    v2_client v2;
    REQUIRE(v2_connect(&v2, port, "/") == 0);
    CHECK_EQ_STR(ws_client_protocol(v2.ws), "libsync.v2");
    REQUIRE(ws_send_text(plain, "{\"type\":\"increment\",\"amount\":1}") == 0);
    a = ws_read_text(plain, 5000);
    b = ws_read_text(named, 5000);
    CHECK_EQ_STR(a, "{\"type\":\"state_update\",\"data\":{\"counter\":1},\"version\":1}");
    CHECK_EQ_STR(b, "{\"type\":\"state_update\",\"data\":{\"counter\":1},\"version\":1}");
    free(a);
    free(b);
    /* offering both: the client's order decides (lws takes the first one it speaks) */
    ws_client *both =
        ws_connect(port, "/", "Sec-WebSocket-Protocol: libsync, libsync.v2\r\n", NULL);
    REQUIRE(both);
    CHECK_EQ_STR(ws_client_protocol(both), "libsync");
    a = ws_read_text(both, 5000);
    CHECK_EQ_STR(a, "{\"type\":\"initial_state\",\"data\":{\"counter\":1},\"version\":1}");
    free(a);
    ws_client_free(both);
    v2_free(&v2);
    ws_client_free(plain);
    ws_client_free(named);
    sync_server_free(server);
    sync_engine_free(engine);
}

static const char padded[] =
    "{\"counter\":0,\"pad\":\"a state long enough that a patch of one counter is shorter\"}";

static void test_v2_join_and_consecutive_patches(void)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = padded;
    opts.auto_broadcast = 1;
    sync_engine *engine = fixture_engine(&opts);
    REQUIRE(engine);
    sync_server *server = fixture_server(NULL, "/", engine);
    REQUIRE(server);
    int port = sync_server_port(server);
    v2_client c;
    REQUIRE(v2_connect(&c, port, "/") == 0);
    char *text = ws_read_text(c.ws, 5000);
    REQUIRE(text);
    char want_initial[256];
    snprintf(want_initial, sizeof want_initial,
             "{\"type\":\"initial_state\",\"data\":%s,\"version\":0,\"epoch\":\"", padded);
    CHECK(strncmp(text, want_initial, strlen(want_initial)) == 0);
    CHECK_EQ_STR(v2_apply(&c, text), "initial_state");
    free(text);
    CHECK(strlen(c.epoch) >= 16);
    for (int i = 1; i <= 3; i++) {
        REQUIRE(ws_send_text(c.ws, "{\"type\":\"increment\",\"amount\":1}") == 0);
        text = ws_read_text(c.ws, 5000);
        char want[160];
        snprintf(want, sizeof want,
                 "{\"type\":\"patch\",\"base\":%d,\"version\":%d,\"ops\":[{\"op\":\"replace\","
                 "\"path\":\"/counter\",\"value\":%d}]}",
                 i - 1, i, i);
        CHECK_EQ_STR(text, want);
        CHECK(text && v2_apply(&c, text));
        free(text);
    }
    CHECK(v2_matches(&c, engine));
    v2_free(&c);
    sync_server_free(server);
    sync_engine_free(engine);
}

/* The auth callback holds the service thread (so no broadcast runs) while the test commits. */
static sem_t auth_entered, auth_release;
static atomic_int hold_next;
static int auth_hold(sync_request *req, void *userdata)
{
    (void)userdata;
    const char *path = sync_request_path(req);
    (void)path;
    if (atomic_exchange(&hold_next, 0)) {
        sem_post(&auth_entered);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 10;
        sem_timedwait(&auth_release, &ts);
        return 404;
    }
    return 0;
}

static void test_slow_client_gets_one_composed_patch(void)
{
    sem_init(&auth_entered, 0, 0);
    sem_init(&auth_release, 0, 0);
    sync_engine *engine = history_engine(0);
    REQUIRE(engine);
    REQUIRE(sync_engine_set_state_json(
                engine,
                "{\"counter\":0,\"log\":[],\"name\":\"a name long enough for a patch to be shorter "
                "than the state, a name long enough for a patch to be shorter than the state, a "
                "name long enough for a patch to be shorter than the state, a name long enough for "
                "a patch to be shorter than the state\"}",
                0) == SYNC_OK);
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.auth = auth_hold;
    sync_server *server = fixture_server(&opts, "/", engine);
    REQUIRE(server);
    int port = sync_server_port(server);
    v2_client c;
    REQUIRE(v2_connect(&c, port, "/") == 0);
    REQUIRE(v2_read_to(&c, 1, 5000) == 0);
    /* hold the loop, make five changes, let go: one frame, base 1, version 6 */
    ws_client *holder = ws_client_tcp(port);
    REQUIRE(holder);
    atomic_store(&hold_next, 1);
    const char req[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n";
    REQUIRE(ws_send_raw(holder, req, sizeof req - 1) == 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    REQUIRE(sem_timedwait(&auth_entered, &ts) == 0);
    const char *states[] = {
        "{\"counter\":1,\"log\":[\"a\"],\"name\":\"a name long enough for a patch to be shorter "
        "than the state, a name long enough for a patch to be shorter than the state, a name long "
        "enough for a patch to be shorter than the state, a name long enough for a patch to be "
        "shorter than the state\"}",
        "{\"counter\":2,\"log\":[\"a\",\"b\"],\"name\":\"a name long enough for a patch to be "
        "shorter than the state, a name long enough for a patch to be shorter than the state, a "
        "name long enough for a patch to be shorter than the state, a name long enough for a patch "
        "to be shorter than the state\"}",
        "{\"counter\":3,\"log\":[\"a\",\"b\",\"c\"],\"name\":\"a name long enough for a patch to "
        "be shorter than the state, a name long enough for a patch to be shorter than the state, a "
        "name long enough for a patch to be shorter than the state, a name long enough for a patch "
        "to be shorter than the state\"}",
        "{\"counter\":4,\"log\":[\"b\",\"c\",\"d\"],\"name\":\"a name long enough for a patch to "
        "be shorter than the state, a name long enough for a patch to be shorter than the state, a "
        "name long enough for a patch to be shorter than the state, a name long enough for a patch "
        "to be shorter than the state\"}",
        "{\"counter\":5,\"log\":[\"b\",\"c\",\"d\",\"e\"],\"name\":\"a name long enough for a "
        "patch to be shorter than the state, a name long enough for a patch to be shorter than the "
        "state, a name long enough for a patch to be shorter than the state, a name long enough "
        "for a patch to be shorter than the state\"}",
    };
    for (int i = 0; i < 5; i++)
        CHECK(sync_engine_set_state_json(engine, states[i], 0) == SYNC_OK);
    sem_post(&auth_release);
    char *text = ws_read_text(c.ws, 5000);
    REQUIRE(text);
    CHECK(strstr(text, "{\"type\":\"patch\",\"base\":1,\"version\":6,\"ops\":[") == text);
    CHECK(v2_apply(&c, text));
    free(text);
    CHECK_EQ_INT(c.version, 6);
    CHECK(v2_matches(&c, engine));
    ws_client_free(holder);
    v2_free(&c);
    sync_server_free(server);
    sync_engine_free(engine);
    sem_destroy(&auth_entered);
    sem_destroy(&auth_release);
}

static void test_state_update_when_the_patch_is_longer(void)
{
    sync_engine *engine = history_engine(0);
    REQUIRE(engine);
    sync_server *server = fixture_server(NULL, "/", engine);
    REQUIRE(server);
    v2_client c;
    REQUIRE(v2_connect(&c, sync_server_port(server), "/") == 0);
    REQUIRE(v2_read_to(&c, 0, 5000) == 0);
    REQUIRE(sync_engine_set_state_json(engine, "{\"b\":[1]}", 0) == SYNC_OK);
    char *text = ws_read_text(c.ws, 5000);
    CHECK_EQ_STR(text, "{\"type\":\"state_update\",\"data\":{\"b\":[1]},\"version\":1}");
    CHECK(text && v2_apply(&c, text));
    free(text);
    CHECK(v2_matches(&c, engine));
    v2_free(&c);
    sync_server_free(server);
    sync_engine_free(engine);
}

static void test_resume(void)
{
    sync_engine *engine = history_engine(3);
    REQUIRE(engine);
    fixture_set_padded_counter(engine, 1); /* version n has counter n */
    sync_server *server = fixture_server(NULL, "/", engine);
    REQUIRE(server);
    int port = sync_server_port(server);
    v2_client c;
    REQUIRE(v2_connect(&c, port, "/") == 0);
    REQUIRE(v2_read_to(&c, 1, 5000) == 0);
    char epoch[80];
    snprintf(epoch, sizeof epoch, "%s", c.epoch);
    ws_client_free(c.ws);
    c.ws = NULL;
    fixture_set_padded_counter(engine, 2);
    fixture_set_padded_counter(engine, 3);
    char query[200];
    /* by patch: from 1 to 3 composed, and at the head with empty ops */
    snprintf(query, sizeof query, "?since=1&epoch=%s", epoch);
    char *text = fixture_v2_first_frame(port, query);
    CHECK_EQ_STR(text, "{\"type\":\"patch\",\"base\":1,\"version\":3,\"ops\":[{\"op\":\"replace\","
                       "\"path\":\"/counter\",\"value\":3}]}");
    CHECK(text && v2_apply(&c, text));
    CHECK(v2_matches(&c, engine));
    free(text);
    snprintf(query, sizeof query, "?since=3&epoch=%s", epoch);
    text = fixture_v2_first_frame(port, query);
    CHECK_EQ_STR(text, "{\"type\":\"patch\",\"base\":3,\"version\":3,\"ops\":[]}");
    free(text);
    /* by the whole state: another epoch, a future version, garbage, no epoch */
    const char *refused[] = {"?since=2&epoch=another", "?since=4&epoch=%s", "?since=x1&epoch=%s",
                             "?since=2"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(query, sizeof query, refused[i], epoch);
        text = fixture_v2_first_frame(port, query);
        CHECK(text && strstr(text, "{\"type\":\"initial_state\",\"data\":{\"counter\":3,") == text);
        CHECK(text && strstr(text, "\"version\":3,\"epoch\":\""));
        free(text);
    }
    for (int i = 4; i <= 6; i++)
        fixture_set_padded_counter(engine, i);
    /* three versions kept: 3 can still be reached, 2 no more */
    snprintf(query, sizeof query, "?since=3&epoch=%s", epoch);
    text = fixture_v2_first_frame(port, query);
    CHECK(text && strstr(text, "{\"type\":\"patch\",\"base\":3,\"version\":6,") == text);
    free(text);
    snprintf(query, sizeof query, "?since=2&epoch=%s", epoch);
    text = fixture_v2_first_frame(port, query);
    CHECK(text && strstr(text, "\"type\":\"initial_state\""));
    free(text);
    /* v1 clients ignore the query */
    ws_client *v1 = ws_connect(port, "/?since=3", NULL, NULL);
    text = v1 ? ws_read_text(v1, 5000) : NULL;
    CHECK_EQ_STR(
        text,
        "{\"type\":\"initial_state\",\"data\":{\"counter\":6,\"pad\":"
        "\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"},\"version\":6}");
    free(text);
    ws_client_free(v1);
    CHECK_EQ_INT(fixture_metric(port, "libsync_server_resumes_patch_total"), 3);
    CHECK_EQ_INT(fixture_metric(port, "libsync_server_resumes_state_total"), 5);
    v2_free(&c);
    sync_server_free(server);
    sync_engine_free(engine);
}

static void test_history_off_sends_states(void)
{
    sync_engine *engine = history_engine(-1);
    REQUIRE(engine);
    sync_server *server = fixture_server(NULL, "/", engine);
    REQUIRE(server);
    v2_client c;
    REQUIRE(v2_connect(&c, sync_server_port(server), "/") == 0);
    REQUIRE(v2_read_to(&c, 0, 5000) == 0);
    REQUIRE(sync_engine_set_state_json(engine, "{\"counter\":1}", 0) == SYNC_OK);
    char *text = ws_read_text(c.ws, 5000);
    CHECK_EQ_STR(text, "{\"type\":\"state_update\",\"data\":{\"counter\":1},\"version\":1}");
    free(text);
    v2_free(&c);
    sync_server_free(server);
    sync_engine_free(engine);
}

/* Random states: objects, arrays that grow, shrink and shift, scalars of every kind. */
static unsigned rnd_state = 12345;
static unsigned rnd(unsigned n)
{
    rnd_state = rnd_state * 1103515245u + 12345u;
    return (rnd_state >> 8) % n;
}

static cJSON *random_value(int depth)
{
    switch (depth > 2 ? rnd(4) : rnd(6)) {
    case 0:
        return cJSON_CreateNumber(rnd(100));
    case 1: {
        char s[8];
        snprintf(s, sizeof s, "s%u", rnd(20));
        return cJSON_CreateString(s);
    }
    case 2:
        return cJSON_CreateBool(rnd(2));
    case 3:
        return cJSON_CreateNull();
    case 4: {
        cJSON *a = cJSON_CreateArray();
        for (unsigned i = rnd(5); i > 0; i--)
            cJSON_AddItemToArray(a, random_value(depth + 1));
        return a;
    }
    default: {
        cJSON *o = cJSON_CreateObject();
        for (unsigned i = rnd(5); i > 0; i--) {
            char k[8];
            snprintf(k, sizeof k, "k%u", rnd(8));
            if (!cJSON_GetObjectItemCaseSensitive(o, k))
                cJSON_AddItemToObject(o, k, random_value(depth + 1));
        }
        return o;
    }
    }
}

/* Edits a copy of `state` a little: most changes touch one member. */
static cJSON *random_edit(const cJSON *state)
{
    cJSON *next = cJSON_Duplicate(state, 1);
    char k[8];
    snprintf(k, sizeof k, "k%u", rnd(8));
    if (rnd(3) == 0)
        cJSON_DeleteItemFromObjectCaseSensitive(next, k);
    else if (cJSON_GetObjectItemCaseSensitive(next, k))
        cJSON_ReplaceItemInObjectCaseSensitive(next, k, random_value(1));
    else
        cJSON_AddItemToObject(next, k, random_value(1));
    cJSON *list = cJSON_GetObjectItemCaseSensitive(next, "list");
    if (rnd(2))
        cJSON_AddItemToArray(list, cJSON_CreateNumber(rnd(1000)));
    if (cJSON_GetArraySize(list) > 6)
        cJSON_DeleteItemFromArray(list, (int)rnd(3));
    return next;
}

/* {"list":[],"pad":"..."}: a member that never changes, so that most patches are shorter than
 * the state, as they are for the states of real applications (a document, a board) */
static char mixed_initial[2200];
static void make_mixed_initial(void)
{
    char pad[2048];
    memset(pad, 'x', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    snprintf(mixed_initial, sizeof mixed_initial, "{\"list\":[],\"pad\":\"%s\"}", pad);
}

static void test_many_clients_at_mixed_bases_converge(void)
{
    make_mixed_initial();
    sync_engine *engine = history_engine(0);
    REQUIRE(engine);
    REQUIRE(sync_engine_set_state_json(engine, mixed_initial, 0) == SYNC_OK);
    sync_server *server = fixture_server(NULL, "/", engine);
    REQUIRE(server);
    int port = sync_server_port(server);
    enum { CLIENTS = 24, ROUNDS = 120 };
    v2_client clients[CLIENTS];
    memset(clients, 0, sizeof clients);
    cJSON *state = cJSON_Parse(mixed_initial);
    int joined = 0, resumed = 0;
    char epoch[80] = "";
    for (int round = 0; round < ROUNDS; round++) {
        cJSON *next = random_edit(state);
        cJSON_Delete(state);
        state = next;
        REQUIRE(sync_engine_set_state(engine, cJSON_Duplicate(state, 1), 0) == SYNC_OK);
        if (round % 5 == 0 && joined < CLIENTS) {
            REQUIRE(v2_connect(&clients[joined], port, "/") == 0);
            joined++;
        }
        /* now and then a client drops and resumes from where it was */
        if (round % 7 == 3 && joined > 2) {
            v2_client *c = &clients[rnd((unsigned)joined)];
            char *text;
            while ((text = ws_read_text(c->ws, 0)) != NULL) {
                CHECK(v2_apply(c, text));
                free(text);
            }
            if (c->version >= 0) {
                snprintf(epoch, sizeof epoch, "%s", c->epoch);
                char path[200];
                snprintf(path, sizeof path, "/?since=%lld&epoch=%s", c->version, c->epoch);
                ws_client_free(c->ws);
                c->ws = ws_connect(port, path, FIXTURE_V2_HEADER, NULL);
                REQUIRE(c->ws);
                resumed++;
            }
        }
        /* some clients read a little each round, others not at all until the end */
        for (int i = 0; i < joined; i += 2) {
            char *text = ws_read_text(clients[i].ws, 0);
            if (text) {
                CHECK(v2_apply(&clients[i], text));
                free(text);
            }
        }
    }
    long long head = 0;
    sync_engine_stats st = {.version = SYNC_ENGINE_STATS_VERSION};
    REQUIRE(sync_engine_get_stats(engine, &st) == SYNC_OK);
    head = st.state_version;
    for (int i = 0; i < joined; i++) {
        CHECK(v2_read_to(&clients[i], head, 5000) == 0);
        CHECK(v2_matches(&clients[i], engine));
    }
    CHECK(resumed > 5);
    /* a resume is served by the state when that is shorter than the patch */
    long long by_patch = fixture_metric(port, "libsync_server_resumes_patch_total");
    CHECK_EQ_INT(by_patch + fixture_metric(port, "libsync_server_resumes_state_total"), resumed);
    if (by_patch <= resumed / 2)
        fprintf(stderr, "by patch %lld of %d\n", by_patch, resumed);
    CHECK(by_patch > resumed / 2);
    for (int i = 0; i < joined; i++)
        v2_free(&clients[i]);
    cJSON_Delete(state);
    sync_server_free(server);
    sync_engine_free(engine);
}

/* ---- the epoch: kept by the built-in stores ------------------------------------------------ */

static sync_adapter *store_adapter(int sqlite, const char *path, const char *backups)
{
    sync_adapter *a = NULL;
    if (sqlite) {
        sync_sqlite_options o = SYNC_SQLITE_OPTIONS_INIT;
        o.path = path;
        o.backups_dir = backups;
        return sync_adapter_sqlite_new(&a, &o) == SYNC_OK ? a : NULL;
    }
    sync_file_options o = SYNC_FILE_OPTIONS_INIT;
    o.file_path = path;
    o.backups_dir = backups;
    o.fsync = 0;
    return sync_adapter_file_new(&a, &o) == SYNC_OK ? a : NULL;
}

/* An engine on the store at `path`, served; its epoch in *epoch (from a v2 join). */
static sync_server *serve_store(int sqlite, const char *path, const char *backups,
                                sync_engine **engine, char *epoch, long long *version)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = padded;
    opts.auto_broadcast = 1;
    opts.adapter = store_adapter(sqlite, path, backups);
    *engine = opts.adapter ? fixture_engine(&opts) : NULL;
    sync_server *server = *engine ? fixture_server(NULL, "/", *engine) : NULL;
    if (!server)
        return NULL;
    v2_client c;
    if (v2_connect(&c, sync_server_port(server), "/") == 0) {
        char *text = ws_read_text(c.ws, 5000);
        if (text && v2_apply(&c, text)) {
            snprintf(epoch, 80, "%s", c.epoch);
            *version = c.version;
        }
        free(text);
    }
    v2_free(&c);
    return server;
}

static void stop_store(sync_server *server, sync_engine *engine)
{
    sync_server_free(server);
    sync_engine_free(engine);
}

static void epoch_with_store(int sqlite)
{
    char *dir = check_tmpdir(sqlite ? "v2-epoch-sqlite" : "v2-epoch-file");
    char *path = afs_join(dir, sqlite ? "state.sqlite" : "state.json");
    char *backups = afs_join(dir, "backups");
    sync_engine *engine = NULL;
    char e1[80] = "", e2[80] = "", e3[80] = "", e4[80] = "";
    long long v = -1;
    sync_server *server = serve_store(sqlite, path, backups, &engine, e1, &v);
    REQUIRE(server);
    CHECK_EQ_INT(v, 0);
    CHECK(e1[0] != '\0');
    REQUIRE(sync_engine_set_state_json(engine, "{\"counter\":1,\"pad\":\"p\"}", 0) == SYNC_OK);
    REQUIRE(sync_engine_set_state_json(engine, "{\"counter\":2,\"pad\":\"p\"}", 0) == SYNC_OK);
    CHECK_EQ_INT(sync_engine_create_backup(engine), SYNC_OK);
    REQUIRE(sync_engine_set_state_json(engine, "{\"counter\":3,\"pad\":\"p\"}", 0) == SYNC_OK);
    stop_store(server, engine);

    /* an ordinary restart: the same epoch, and a client at version 3 resumes with empty ops */
    server = serve_store(sqlite, path, backups, &engine, e2, &v);
    REQUIRE(server);
    CHECK_EQ_STR(e2, e1);
    CHECK_EQ_INT(v, 3);
    char query[200];
    snprintf(query, sizeof query, "?since=3&epoch=%s", e1);
    char *text = fixture_v2_first_frame(sync_server_port(server), query);
    CHECK_EQ_STR(text, "{\"type\":\"patch\",\"base\":3,\"version\":3,\"ops\":[]}");
    free(text);
    stop_store(server, engine);

    /* the backup restored: its versions are another history (2 here was 2 there too, but what
     * follows differs), so its epoch is new and a resume gets the whole state */
    char *copy = afs_find(backups, "backup-");
    REQUIRE(copy);
    char *copy_path = strdup(copy);
    char *bytes = NULL;
    size_t len = 0;
    {
        FILE *in = fopen(copy_path, "rb");
        REQUIRE(in);
        fseek(in, 0, SEEK_END);
        len = (size_t)ftell(in);
        fseek(in, 0, SEEK_SET);
        bytes = malloc(len);
        REQUIRE(bytes && fread(bytes, 1, len, in) == len);
        fclose(in);
    }
    if (sqlite) {
        char *wal = NULL, *shm = NULL;
        REQUIRE(asprintf(&wal, "%s-wal", path) > 0 && asprintf(&shm, "%s-shm", path) > 0);
        unlink(wal);
        unlink(shm);
        free(wal);
        free(shm);
    }
    FILE *out = fopen(path, "wb");
    REQUIRE(out && fwrite(bytes, 1, len, out) == len);
    fclose(out);
    free(bytes);
    server = serve_store(sqlite, path, backups, &engine, e3, &v);
    REQUIRE(server);
    CHECK_EQ_INT(v, 2);
    CHECK(e3[0] && strcmp(e3, e1) != 0);
    snprintf(query, sizeof query, "?since=2&epoch=%s", e1);
    text = fixture_v2_first_frame(sync_server_port(server), query);
    CHECK(text && strstr(text, "{\"type\":\"initial_state\"") == text);
    free(text);
    stop_store(server, engine);

    /* the store emptied: a fresh history */
    unlink(path);
    server = serve_store(sqlite, path, backups, &engine, e4, &v);
    REQUIRE(server);
    CHECK_EQ_INT(v, 0);
    CHECK(e4[0] && strcmp(e4, e3) != 0 && strcmp(e4, e1) != 0);
    stop_store(server, engine);
    free(copy_path);
    free(copy);
    free(backups);
    free(path);
    free(dir);
}

static void test_epoch_survives_a_restart_with_sqlite(void)
{
    epoch_with_store(1);
}

static void test_epoch_survives_a_restart_with_a_file(void)
{
    epoch_with_store(0);
}

static void test_epoch_without_a_store_is_new_at_each_start(void)
{
    sync_engine *a = history_engine(0), *b = history_engine(0);
    REQUIRE(a && b);
    sync_server *sa = fixture_server(NULL, "/", a), *sb = fixture_server(NULL, "/", b);
    REQUIRE(sa && sb);
    v2_client ca, cb;
    REQUIRE(v2_connect(&ca, sync_server_port(sa), "/") == 0);
    REQUIRE(v2_connect(&cb, sync_server_port(sb), "/") == 0);
    CHECK(v2_read_to(&ca, 0, 5000) == 0 && v2_read_to(&cb, 0, 5000) == 0);
    CHECK(ca.epoch[0] && cb.epoch[0] && strcmp(ca.epoch, cb.epoch) != 0);
    v2_free(&ca);
    v2_free(&cb);
    sync_server_free(sa);
    sync_server_free(sb);
    sync_engine_free(a);
    sync_engine_free(b);
}

/* A room deleted and created again is another history: a new epoch, and a resume with the old
 * one gets the whole state. Rooms speak v2 like plain mounts. */
static void test_room_deleted_and_created_again_has_a_new_epoch(void)
{
    sync_server_options so = SYNC_SERVER_OPTIONS_INIT;
    sync_server *server = NULL;
    REQUIRE(sync_server_new(&server, &so) == SYNC_OK);
    sync_engine_options eo = SYNC_ENGINE_OPTIONS_INIT;
    eo.initial_state_json = padded;
    sync_rooms_options ro = SYNC_ROOMS_OPTIONS_INIT;
    ro.engine_options = &eo;
    sync_rooms *rooms = NULL;
    REQUIRE(sync_server_mount_rooms(server, "/rooms/", &ro, &rooms) == SYNC_OK);
    REQUIRE(sync_server_start(server) == SYNC_OK);
    int port = sync_server_port(server);
    v2_client c;
    REQUIRE(v2_connect(&c, port, "/rooms/a") == 0);
    CHECK_EQ_STR(ws_client_protocol(c.ws), "libsync.v2");
    REQUIRE(v2_read_to(&c, 0, 5000) == 0);
    char e1[80];
    snprintf(e1, sizeof e1, "%s", c.epoch);
    char path[200];
    snprintf(path, sizeof path, "/rooms/a?since=0&epoch=%s", e1);
    ws_client *again = ws_connect(port, path, FIXTURE_V2_HEADER, NULL);
    char *text = again ? ws_read_text(again, 5000) : NULL;
    CHECK_EQ_STR(text, "{\"type\":\"patch\",\"base\":0,\"version\":0,\"ops\":[]}");
    free(text);
    ws_client_free(again);
    v2_free(&c);
    CHECK_EQ_INT(sync_rooms_delete(rooms, "a"), SYNC_OK);
    again = ws_connect(port, path, FIXTURE_V2_HEADER, NULL);
    text = again ? ws_read_text(again, 5000) : NULL;
    CHECK(text && strstr(text, "{\"type\":\"initial_state\"") == text);
    CHECK(text && !strstr(text, e1));
    free(text);
    ws_client_free(again);
    sync_server_free(server);
}

/* A server of rooms kept in `store`; its mount in *rooms. */
static sync_server *serve_rooms(sync_room_store *store, sync_rooms **rooms)
{
    sync_engine_options eo = SYNC_ENGINE_OPTIONS_INIT;
    eo.initial_state_json = padded;
    sync_rooms_options ro = SYNC_ROOMS_OPTIONS_INIT;
    ro.engine_options = &eo;
    ro.store = store;
    sync_server *server = fixture_rooms_server(NULL, &ro, rooms);
    sync_room_store_free(store);
    return server;
}

/* Joins room `name` as a v2 client and returns its epoch and version. */
static void room_epoch_of(int port, const char *name, char *epoch, long long *version)
{
    char path[120];
    snprintf(path, sizeof path, "/rooms/%s", name);
    v2_client c;
    epoch[0] = '\0';
    if (v2_connect(&c, port, path) == 0) {
        char *text = ws_read_text(c.ws, 5000);
        if (text && v2_apply(&c, text)) {
            snprintf(epoch, 80, "%s", c.epoch);
            *version = c.version;
        }
        free(text);
    }
    v2_free(&c);
}

static sync_room_store *room_store(int sqlite, const char *dir)
{
    sync_room_store *store = NULL;
    char *path = afs_join(dir, "rooms.sqlite");
    int rc;
    if (sqlite) {
        sync_sqlite_options o = SYNC_SQLITE_OPTIONS_INIT;
        o.path = path;
        rc = sync_room_store_sqlite_new(&store, &o);
    } else {
        sync_file_rooms_options o = SYNC_FILE_ROOMS_OPTIONS_INIT;
        o.dir = dir;
        o.fsync = 0;
        rc = sync_room_store_file_new(&store, &o);
    }
    free(path);
    return rc == SYNC_OK ? store : NULL;
}

static void room_epoch_with_store(int sqlite)
{
    char *dir = check_tmpdir(sqlite ? "v2-rooms-sqlite" : "v2-rooms-file");
    sync_rooms *rooms = NULL;
    sync_server *server = serve_rooms(room_store(sqlite, dir), &rooms);
    REQUIRE(server);
    char e1[80], e2[80], e3[80];
    long long v = -1;
    room_epoch_of(sync_server_port(server), "a", e1, &v);
    CHECK(e1[0]);
    sync_engine *engine = NULL;
    REQUIRE(sync_rooms_acquire(rooms, "a", &engine) == SYNC_OK);
    CHECK(sync_engine_set_state_json(engine, "{\"counter\":4}", 0) == SYNC_OK);
    CHECK(sync_engine_sync(engine) >= 0);
    sync_rooms_release(rooms, engine);
    sync_server_free(server);

    /* loaded again by another server: the same history */
    server = serve_rooms(room_store(sqlite, dir), &rooms);
    REQUIRE(server);
    room_epoch_of(sync_server_port(server), "a", e2, &v);
    CHECK_EQ_STR(e2, e1);
    CHECK_EQ_INT(v, 1);
    /* deleted, then created again: another history */
    CHECK_EQ_INT(sync_rooms_delete(rooms, "a"), SYNC_OK);
    room_epoch_of(sync_server_port(server), "a", e3, &v);
    CHECK(e3[0] && strcmp(e3, e1) != 0);
    CHECK_EQ_INT(v, 0);
    sync_server_free(server);
    free(dir);
}

static void test_room_epoch_kept_by_the_sqlite_room_store(void)
{
    room_epoch_with_store(1);
}

static void test_room_epoch_kept_by_the_file_room_store(void)
{
    room_epoch_with_store(0);
}

int main(void)
{
    RUN(test_v1_clients_see_no_difference);
    RUN(test_v2_join_and_consecutive_patches);
    RUN(test_slow_client_gets_one_composed_patch);
    RUN(test_state_update_when_the_patch_is_longer);
    RUN(test_resume);
    RUN(test_history_off_sends_states);
    RUN(test_many_clients_at_mixed_bases_converge);
    RUN(test_epoch_survives_a_restart_with_sqlite);
    RUN(test_epoch_survives_a_restart_with_a_file);
    RUN(test_epoch_without_a_store_is_new_at_each_start);
    RUN(test_room_deleted_and_created_again_has_a_new_epoch);
    RUN(test_room_epoch_kept_by_the_sqlite_room_store);
    RUN(test_room_epoch_kept_by_the_file_room_store);
    return check_summary();
}

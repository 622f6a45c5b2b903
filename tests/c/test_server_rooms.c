/* Room mounts over real sockets: rooms created on first join and independent, created once under
 * concurrent joins, bad names refused with 400 before anything exists, idle unloading with the
 * state saved and seen again, a join racing an unload, max_rooms (LRU eviction, 503), a room
 * deleted while its clients send, a store that fails one room, deferred setup completed from
 * another thread, auth per room, metrics, rooms used without clients, and server options v6. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "server_fixture.h"
#include "ws_client.h"

/* ---- a room store in memory, with faults on demand ----------------------------------------- */

typedef struct mem_record {
    char *name;
    char *json;
    int64_t version;
    struct mem_record *next;
} mem_record;

typedef struct mem_store {
    pthread_mutex_t lock;
    mem_record *records;
    char fail_load[64]; /* a room whose load fails */
    int async_load;     /* loads finish on another thread, after delay_ms */
    int async_save;     /* saves likewise */
    int delay_ms;
    atomic_int saves, loads, removes, saving;
} mem_store;

static mem_record *mem_find(mem_store *m, const char *name)
{
    for (mem_record *r = m->records; r; r = r->next)
        if (strcmp(r->name, name) == 0)
            return r;
    return NULL;
}

typedef struct later {
    mem_store *m;
    sync_pending *pending;
    int is_load;
    int status;
    char *json;
    int64_t version;
    int delay_ms;
} later;

static void *finish_later(void *arg)
{
    later *l = arg;
    check_sleep_ms(l->delay_ms);
    if (l->is_load) {
        sync_pending_complete_load(l->pending, l->status, l->json, l->version,
                                   l->status ? "the test store fails this room" : NULL);
    } else {
        atomic_fetch_sub(&l->m->saving, 1);
        sync_pending_complete(l->pending, SYNC_OK, NULL);
    }
    free(l->json);
    free(l);
    return NULL;
}

static void run_later(later *l)
{
    pthread_t t;
    if (pthread_create(&t, NULL, finish_later, l) == 0)
        pthread_detach(t);
}

static int mem_load(void *ud, sync_pending *pending, const char *room, char **out, int64_t *ver)
{
    mem_store *m = ud;
    atomic_fetch_add(&m->loads, 1);
    pthread_mutex_lock(&m->lock);
    int status = strcmp(m->fail_load, room) == 0 ? SYNC_EIO : SYNC_OK;
    mem_record *r = status ? NULL : mem_find(m, room);
    char *json = r ? strdup(r->json) : NULL;
    int64_t version = r ? r->version : 0;
    int async = m->async_load;
    int delay = m->delay_ms;
    pthread_mutex_unlock(&m->lock);
    if (async) {
        later *l = calloc(1, sizeof *l);
        *l = (later){m, pending, 1, status, json, version, delay};
        run_later(l);
        return SYNC_PENDING;
    }
    if (status) {
        free(json);
        return status;
    }
    *out = json ? sync_strdup(json) : NULL;
    free(json);
    *ver = version;
    return SYNC_OK;
}

static int mem_save(void *ud, sync_pending *pending, const char *room, const cJSON *state,
                    const char *json, size_t len, int64_t version)
{
    (void)state;
    mem_store *m = ud;
    atomic_fetch_add(&m->saves, 1);
    pthread_mutex_lock(&m->lock);
    mem_record *r = mem_find(m, room);
    if (!r) {
        r = calloc(1, sizeof *r);
        r->name = strdup(room);
        r->next = m->records;
        m->records = r;
    }
    free(r->json);
    r->json = strndup(json, len);
    r->version = version;
    int async = m->async_save;
    int delay = m->delay_ms;
    pthread_mutex_unlock(&m->lock);
    if (async) {
        atomic_fetch_add(&m->saving, 1);
        later *l = calloc(1, sizeof *l);
        *l = (later){m, pending, 0, 0, NULL, 0, delay};
        run_later(l);
        return SYNC_PENDING;
    }
    return SYNC_OK;
}

static int mem_remove(void *ud, sync_pending *pending, const char *room)
{
    (void)pending;
    mem_store *m = ud;
    atomic_fetch_add(&m->removes, 1);
    pthread_mutex_lock(&m->lock);
    for (mem_record **link = &m->records; *link; link = &(*link)->next)
        if (strcmp((*link)->name, room) == 0) {
            mem_record *r = *link;
            *link = r->next;
            free(r->name);
            free(r->json);
            free(r);
            break;
        }
    pthread_mutex_unlock(&m->lock);
    return SYNC_OK;
}

static int mem_list(void *ud, sync_pending *pending, char **out)
{
    (void)pending;
    mem_store *m = ud;
    cJSON *array = cJSON_CreateArray();
    pthread_mutex_lock(&m->lock);
    for (mem_record *r = m->records; r; r = r->next)
        cJSON_AddItemToArray(array, cJSON_CreateString(r->name));
    pthread_mutex_unlock(&m->lock);
    char *text = cJSON_PrintUnformatted(array);
    cJSON_Delete(array);
    *out = sync_strdup(text);
    cJSON_free(text);
    return SYNC_OK;
}

static void mem_destroy(void *ud)
{
    mem_store *m = ud;
    while (m->records) {
        mem_record *r = m->records;
        m->records = r->next;
        free(r->name);
        free(r->json);
        free(r);
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static sync_room_store *mem_store_new(mem_store **out)
{
    mem_store *m = calloc(1, sizeof *m);
    pthread_mutex_init(&m->lock, NULL);
    m->delay_ms = 200;
    sync_room_store_vtable vt = {SYNC_ROOM_STORE_VTABLE_VERSION,
                                 NULL,
                                 mem_load,
                                 mem_save,
                                 mem_remove,
                                 mem_list,
                                 mem_destroy};
    sync_room_store *store = NULL;
    if (sync_room_store_new(&store, &vt, m) != SYNC_OK)
        return NULL;
    *out = m;
    return store;
}

static char *mem_get(mem_store *m, const char *room)
{
    pthread_mutex_lock(&m->lock);
    mem_record *r = mem_find(m, room);
    char *json = r ? strdup(r->json) : NULL;
    pthread_mutex_unlock(&m->lock);
    return json;
}

/* ---- the rooms' setup ---------------------------------------------------------------------- */

typedef struct setup_box {
    atomic_int calls;
    int defer;    /* keep the setup for the test thread */
    int fail;     /* refuse every room */
    int delay_ms; /* a slow setup */
    _Atomic(sync_room_setup *) kept;
} setup_box;

/* "keep": the application holds the sender's handle past its connection (kept_conn). */
static _Atomic(sync_conn *) kept_conn;

static int on_keep(sync_msg *msg, void *userdata)
{
    (void)userdata;
    sync_conn_free(atomic_exchange(&kept_conn, sync_conn_ref(sync_msg_conn(msg))));
    return sync_msg_reply(msg, "\"kept\"", 6);
}

/* "poke": sets room "target" (loading it) from inside another room's handler, on the service
 * thread, with the blocking acquire. */
static _Atomic(sync_rooms *) poke_rooms;

static int on_poke(sync_msg *msg, void *userdata)
{
    (void)userdata;
    sync_engine *engine = NULL;
    int rc = sync_rooms_acquire(atomic_load(&poke_rooms), "target", &engine);
    if (rc != SYNC_OK)
        return rc;
    rc = sync_engine_set_state_json(engine, "{\"counter\":7}", 1);
    sync_rooms_release(atomic_load(&poke_rooms), engine);
    if (rc < 0 && rc != SYNC_PENDING)
        return rc;
    return sync_msg_reply(msg, "\"poked\"", 7);
}

static int room_setup(sync_room_setup *setup, void *userdata)
{
    setup_box *box = userdata;
    atomic_fetch_add(&box->calls, 1);
    if (box->delay_ms)
        check_sleep_ms(box->delay_ms);
    if (box->fail)
        return SYNC_EINVAL;
    sync_engine *engine = sync_room_setup_engine(setup);
    if (fixture_add_counter_handlers(engine) != SYNC_OK ||
        sync_engine_on(engine, "poke", on_poke, NULL, NULL) != SYNC_OK ||
        sync_engine_on(engine, "keep", on_keep, NULL, NULL) != SYNC_OK)
        return SYNC_EINVAL;
    char initial[160];
    snprintf(initial, sizeof initial, "{\"counter\":0,\"room\":\"%s\"}",
             sync_room_setup_name(setup));
    sync_room_setup_set_initial_state_json(setup, initial);
    if (box->defer) {
        atomic_store(&box->kept, sync_room_setup_defer(setup));
        return SYNC_PENDING;
    }
    return SYNC_OK;
}

typedef struct fixture {
    sync_server *server;
    sync_rooms *rooms;
    int port;
    setup_box box;
} fixture;

/* The rooms' engine template of the next fixture_start() (NULL: the defaults). */
static const sync_engine_options *next_template;

/* A started server with rooms at /rooms/ (store may be NULL) and `opts` (NULL = defaults). */
static int fixture_start(fixture *f, sync_server_options *opts, sync_room_store *store)
{
    memset(f, 0, sizeof *f);
    sync_rooms_options ro = SYNC_ROOMS_OPTIONS_INIT;
    ro.setup = room_setup;
    ro.setup_userdata = &f->box;
    ro.store = store;
    ro.engine_options = next_template;
    next_template = NULL;
    f->server = fixture_rooms_server(opts, &ro, &f->rooms);
    sync_room_store_free(store); /* the mount took its reference */
    if (!f->server)
        return -1;
    f->port = sync_server_port(f->server);
    return 0;
}

/* fixture_start() with a new mem_store (in *m). */
static int fixture_start_mem(fixture *f, sync_server_options *opts, mem_store **m)
{
    sync_room_store *store = mem_store_new(m);
    return store ? fixture_start(f, opts, store) : -1;
}

static ws_client *join(fixture *f, const char *path, long long *counter)
{
    char *text = NULL;
    ws_client *c = fixture_try_join(f->port, path, 5000, counter ? &text : NULL);
    if (c && counter)
        *counter = ws_json_int(text, "counter");
    free(text);
    return c;
}

/* Sends an increment and waits for the state that shows it (`want`). */
static int increment(ws_client *c, long long want)
{
    return fixture_increment(c, "counter", want);
}

/* The status of an upgrade to `path` of any length (ws_handshake's buffer is 4 KiB). */
static int raw_upgrade_status(int port, const char *path)
{
    size_t cap = strlen(path) + 512;
    char *req = malloc(cap);
    snprintf(req, cap,
             "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
             path);
    char *answer = http_raw(port, req, 5000);
    free(req);
    int status = -1;
    if (!answer || sscanf(answer, "HTTP/1.1 %d", &status) != 1)
        status = -1;
    free(answer);
    return status;
}

static int handshake_status(int port, const char *path)
{
    ws_client *c = ws_client_tcp(port);
    if (!c)
        return -1;
    int status = ws_handshake(c, path, NULL, 5000);
    ws_client_free(c);
    return status;
}

/* ---- the cases ----------------------------------------------------------------------------- */

static void two_rooms_are_independent(void)
{
    fixture f;
    REQUIRE(fixture_start(&f, NULL, NULL) == 0);
    long long ca = -1, cb = -1;
    ws_client *a = join(&f, "/rooms/alpha", &ca);
    ws_client *b = join(&f, "/rooms/beta", &cb);
    REQUIRE(a && b);
    CHECK_EQ_INT(ca, 0);
    CHECK_EQ_INT(cb, 0);
    CHECK_EQ_INT(increment(a, 1), 0);
    CHECK_EQ_INT(increment(a, 2), 0);
    CHECK_EQ_INT(increment(b, 1), 0);
    /* a second client of alpha shares its engine; beta is untouched */
    long long c2 = -1;
    ws_client *a2 = join(&f, "/rooms/alpha", &c2);
    CHECK_EQ_INT(c2, 2);
    CHECK_EQ_INT(atomic_load(&f.box.calls), 2);
    CHECK_EQ_INT(sync_rooms_loaded_count(f.rooms), 2);
    /* the state names its room: the setup saw the decoded name */
    CHECK_EQ_INT(ws_send_text(a2, "{\"type\":\"whoami\"}"), 0);
    ws_client_free(a);
    ws_client_free(a2);
    ws_client_free(b);
    /* a percent-encoded name is the decoded room */
    long long cu = -1;
    ws_client *u = join(&f, "/rooms/caf%C3%A9", &cu);
    CHECK(u != NULL);
    ws_client_free(u);
    /* decoded once: "%2541" is the room "%41", not "A" */
    ws_client *pct = join(&f, "/rooms/x%2541", NULL);
    CHECK(pct != NULL);
    ws_client_free(pct);
    sync_engine *engine = NULL;
    CHECK_EQ_INT(sync_rooms_acquire(f.rooms, "x%41", &engine), SYNC_OK);
    CHECK_EQ_INT(atomic_load(&f.box.calls), 4);
    CHECK_EQ_INT(sync_rooms_release(f.rooms, engine), SYNC_OK);
    CHECK_EQ_INT(sync_rooms_acquire(f.rooms, "caf\xc3\xa9", &engine), SYNC_OK);
    CHECK_EQ_INT(atomic_load(&f.box.calls), 4);
    if (engine) {
        char *state = sync_engine_get_state_json(engine);
        CHECK(state && strstr(state, "\"room\":\"caf\xc3\xa9\""));
        sync_free(state);
        CHECK_EQ_INT(sync_rooms_release(f.rooms, engine), SYNC_OK);
    }
    /* a fixed mount is matched before the prefix; a path outside every mount is 404 */
    CHECK_EQ_INT(handshake_status(f.port, "/elsewhere"), 404);
    sync_server_free(f.server);
}

typedef struct racer {
    fixture *f;
    int ok;
    int use_acquire;
} racer;

static void *race_join(void *arg)
{
    racer *r = arg;
    if (r->use_acquire) {
        sync_engine *engine = NULL;
        r->ok = sync_rooms_acquire(r->f->rooms, "crowded", &engine) == SYNC_OK && engine &&
                sync_rooms_release(r->f->rooms, engine) == SYNC_OK;
        return NULL;
    }
    ws_client *c = join(r->f, "/rooms/crowded", NULL);
    r->ok = c != NULL;
    ws_client_free(c);
    return NULL;
}

static void concurrent_first_joins_create_once(void)
{
    fixture f;
    REQUIRE(fixture_start(&f, NULL, NULL) == 0);
    f.box.delay_ms = 100; /* a slow setup keeps the creation open while the others arrive */
    enum { N = 24 };
    pthread_t threads[N];
    racer racers[N];
    for (int i = 0; i < N; i++) {
        racers[i] = (racer){&f, 0, i % 3 == 0};
        pthread_create(&threads[i], NULL, race_join, &racers[i]);
    }
    int ok = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(threads[i], NULL);
        ok += racers[i].ok;
    }
    CHECK_EQ_INT(ok, N);
    CHECK_EQ_INT(atomic_load(&f.box.calls), 1);
    CHECK_EQ_INT(fixture_metric(f.port, "libsync_rooms_created_total{path=\"/rooms/\"}"), 1);
    sync_server_free(f.server);
}

static void bad_names_are_refused_before_anything_exists(void)
{
    fixture f;
    REQUIRE(fixture_start(&f, NULL, NULL) == 0);
    /* names the room check refuses: '/', '\\', control characters, bad UTF-8, empty */
    const char *bad[] = {"/rooms/a%2Fb", "/rooms/a%5Cb", "/rooms/%00",   "/rooms/a%01b",
                         "/rooms/a%7F",  "/rooms/",      "/rooms/%C3",   "/rooms/%FF%FE",
                         "/rooms/a%09b", "/rooms/%2F",   "/rooms/%5C%5C"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int status = handshake_status(f.port, bad[i]);

        CHECK_EQ_INT(status, 400);
    }
    /* lws resolves dot segments before routing ("/rooms/.." is "/", "/rooms/." is "/rooms/")
     * and refuses a bad escape itself (403): none of them reaches a room */
    const char *not_rooms[] = {"/rooms/..", "/rooms/%2E%2E", "/rooms/../x",
                               "/rooms/.",  "/rooms/%zz",    "/rooms/a%2"};
    for (size_t i = 0; i < sizeof not_rooms / sizeof not_rooms[0]; i++) {
        int status = handshake_status(f.port, not_rooms[i]);
        CHECK(status == 400 || status == 403 || status == 404);
    }
    /* 81 bytes: over SYNC_ROOM_NAME_MAX */
    char path[16 * 1024];
    snprintf(path, sizeof path, "/rooms/");
    memset(path + 7, 'a', 81);
    path[7 + 81] = '\0';
    CHECK_EQ_INT(handshake_status(f.port, path), 400);
    /* 5 KB of name: 400; 10 KB: the request target is over 8 KiB, 414 before any routing */
    memset(path + 7, 'b', 5000);
    path[7 + 5000] = '\0';
    CHECK_EQ_INT(raw_upgrade_status(f.port, path), 400);
    memset(path + 7, 'c', 10 * 1024);
    path[7 + 10 * 1024] = '\0';
    CHECK_EQ_INT(raw_upgrade_status(f.port, path), 414);
    CHECK_EQ_INT(atomic_load(&f.box.calls), 0);
    CHECK_EQ_INT(sync_rooms_loaded_count(f.rooms), 0);
    CHECK(fixture_metric(f.port, "libsync_rooms_refused_total{path=\"/rooms/\"}") >= 13);
    /* the API refuses them too */
    sync_engine *engine = NULL;
    CHECK_EQ_INT(sync_rooms_acquire(f.rooms, "..", &engine), SYNC_EINVAL);
    CHECK_EQ_INT(sync_rooms_acquire(f.rooms, "a/b", &engine), SYNC_EINVAL);
    CHECK_EQ_INT(sync_rooms_delete(f.rooms, ""), SYNC_EINVAL);
    CHECK(engine == NULL);
    /* the server still serves good names */
    ws_client *c = join(&f, "/rooms/fine", NULL);
    CHECK(c != NULL);
    ws_client_free(c);
    sync_server_free(f.server);
}

static void idle_room_is_saved_unloaded_and_seen_again(void)
{
    mem_store *m = NULL;
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.room_idle_ms = 200;
    fixture f;
    REQUIRE(fixture_start_mem(&f, &opts, &m) == 0);
    ws_client *c = join(&f, "/rooms/saved", NULL);
    REQUIRE(c);
    for (int i = 1; i <= 3; i++)
        CHECK_EQ_INT(increment(c, i), 0);
    ws_client_free(c);
    CHECK_EQ_INT(fixture_wait_loaded(f.rooms, 0, 5000), 0);
    char *json = mem_get(m, "saved");
    CHECK(json && strstr(json, "\"counter\":3"));
    free(json);
    /* a room only visited has nothing to save: no record, no store call */
    int saves = atomic_load(&m->saves);
    c = join(&f, "/rooms/visited", NULL);
    CHECK(c != NULL);
    ws_client_free(c);
    CHECK_EQ_INT(fixture_wait_loaded(f.rooms, 0, 5000), 0);
    CHECK_EQ_INT(atomic_load(&m->saves), saves);
    json = mem_get(m, "visited");
    CHECK(json == NULL);
    free(json);
    CHECK_EQ_INT(fixture_metric(f.port, "libsync_rooms_unloaded_total{path=\"/rooms/\"}"), 2);
    long long counter = -1;
    c = join(&f, "/rooms/saved", &counter);
    CHECK(c != NULL);
    CHECK_EQ_INT(counter, 3);
    CHECK_EQ_INT(atomic_load(&f.box.calls), 3);
    /* the unloaded room's counters are still in the sums */
    CHECK(fixture_metric(f.port, "libsync_messages_applied_total{path=\"/rooms/\"}") >= 3);
    ws_client_free(c);
    sync_server_free(f.server);
}

/* Saving before each send (persist mode before_send, as counter_server does): a room only
 * visited still writes nothing (its initial state is the setup's, made again on the next load),
 * and its first change is in the store before the client that made it sees it. */
static void visited_room_writes_nothing_before_send(void)
{
    mem_store *m = NULL;
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.room_idle_ms = 100;
    sync_engine_options eo = SYNC_ENGINE_OPTIONS_INIT;
    eo.persist_mode = SYNC_PERSIST_BEFORE_SEND;
    next_template = &eo;
    fixture f;
    REQUIRE(fixture_start_mem(&f, &opts, &m) == 0);
    ws_client *c = join(&f, "/rooms/visited", NULL);
    ws_client *d = join(&f, "/rooms/visited", NULL);
    CHECK(c != NULL && d != NULL);
    ws_client_free(c);
    ws_client_free(d);
    CHECK_EQ_INT(fixture_wait_loaded(f.rooms, 0, 5000), 0);
    CHECK_EQ_INT(atomic_load(&m->saves), 0);
    char *json = mem_get(m, "visited");
    CHECK(json == NULL);
    free(json);
    c = join(&f, "/rooms/changed", NULL);
    REQUIRE(c);
    CHECK_EQ_INT(increment(c, 1), 0);
    json = mem_get(m, "changed");
    CHECK(json && strstr(json, "\"counter\":1"));
    free(json);
    ws_client_free(c);
    CHECK_EQ_INT(fixture_wait_loaded(f.rooms, 0, 5000), 0);
    long long counter = -1;
    c = join(&f, "/rooms/changed", &counter);
    CHECK_EQ_INT(counter, 1);
    ws_client_free(c);
    sync_server_free(f.server);
}

/* An application may hold a room client's handle past the client and past its room (unloaded,
 * engine and all): sending and closing through it then find the connection closed, and the
 * handle, the connection in its block, frees cleanly. */
static void held_handle_outlives_its_room(void)
{
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.room_idle_ms = 50;
    fixture f;
    REQUIRE(fixture_start(&f, &opts, NULL) == 0);
    ws_client *c = join(&f, "/rooms/held", NULL);
    REQUIRE(c);
    CHECK_EQ_INT(ws_send_text(c, "{\"type\":\"keep\",\"id\":1}"), 0);
    char *text = ws_read_text(c, 5000);
    CHECK(text && strstr(text, "kept"));
    free(text);
    ws_client_free(c);
    CHECK_EQ_INT(fixture_wait_loaded(f.rooms, 0, 5000), 0);
    sync_conn *conn = atomic_exchange(&kept_conn, NULL);
    REQUIRE(conn);
    CHECK_EQ_INT(sync_conn_send(conn, "{}", 2), SYNC_ECLOSED);
    CHECK_EQ_INT(sync_conn_close(conn, 1000, "gone already"), SYNC_OK);
    CHECK(sync_conn_userdata(conn) == NULL);
    sync_conn_free(conn);
    /* the room loads afresh for the next client */
    c = join(&f, "/rooms/held", NULL);
    CHECK(c != NULL);
    ws_client_free(c);
    sync_server_free(f.server);
}

/* A fixture whose room `name` a client changed `increments` times and left: the room idles out
 * after `idle_ms` and its unload's save (the only one: persist mode manual) is in flight, taking
 * `save_ms`. 0, or -1 with a failed check. */
static int unload_saving(fixture *f, mem_store **m, int idle_ms, const char *name, int increments,
                         int save_ms)
{
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.room_idle_ms = idle_ms;
    sync_engine_options eo = SYNC_ENGINE_OPTIONS_INIT;
    eo.persist_mode = SYNC_PERSIST_MANUAL;
    next_template = &eo;
    int rc = fixture_start_mem(f, &opts, m);
    CHECK_EQ_INT(rc, 0);
    if (rc != 0)
        return -1;
    char path[64];
    snprintf(path, sizeof path, "/rooms/%s", name);
    ws_client *c = join(f, path, NULL);
    CHECK(c != NULL);
    if (!c)
        return -1;
    for (int i = 1; i <= increments; i++)
        CHECK_EQ_INT(increment(c, i), 0);
    pthread_mutex_lock(&(*m)->lock);
    (*m)->async_save = 1;
    (*m)->delay_ms = save_ms;
    pthread_mutex_unlock(&(*m)->lock);
    ws_client_free(c);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (atomic_load(&(*m)->saving) == 0 && check_elapsed_ms(&t0) < 5000)
        check_sleep_ms(2);
    CHECK_EQ_INT(atomic_load(&(*m)->saving), 1);
    return 0;
}

static void join_racing_an_unload_waits_and_loads_afresh(void)
{
    mem_store *m = NULL;
    fixture f;
    /* saves take 400 ms: the unload's save is in flight when the next join arrives */
    REQUIRE(unload_saving(&f, &m, 100, "racy", 2, 400) == 0);
    long long counter = -1;
    ws_client *c = join(&f, "/rooms/racy", &counter);
    CHECK(c != NULL);
    CHECK_EQ_INT(counter, 2);
    CHECK_EQ_INT(atomic_load(&f.box.calls), 2); /* created afresh after the unload */
    CHECK_EQ_INT(fixture_metric(f.port, "libsync_rooms_unloaded_total{path=\"/rooms/\"}"), 1);
    CHECK_EQ_INT(sync_rooms_loaded_count(f.rooms), 1);
    ws_client_free(c);
    sync_server_free(f.server);
}

/* A delete while the room's unload is saving: the remove waits for the save, so the record does
 * not come back after it. */
static void delete_racing_an_unload_removes_after_the_save(void)
{
    mem_store *m = NULL;
    fixture f;
    REQUIRE(unload_saving(&f, &m, 50, "short", 1, 300) == 0);
    CHECK_EQ_INT(sync_rooms_delete(f.rooms, "short"), SYNC_OK);
    CHECK_EQ_INT(atomic_load(&m->saving), 0); /* the delete waited for the save */
    check_sleep_ms(100);
    char *json = mem_get(m, "short");
    CHECK(json == NULL);
    free(json);
    long long counter = -1;
    ws_client *c = join(&f, "/rooms/short", &counter);
    CHECK_EQ_INT(counter, 0);
    ws_client_free(c);
    sync_server_free(f.server);
}

static void max_rooms_evicts_the_least_recently_used_then_refuses(void)
{
    mem_store *m = NULL;
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.room_idle_ms = -1; /* only max_rooms unloads */
    opts.max_rooms = 2;
    fixture f;
    REQUIRE(fixture_start_mem(&f, &opts, &m) == 0);
    ws_client *a = join(&f, "/rooms/a", NULL);
    REQUIRE(a);
    CHECK_EQ_INT(increment(a, 1), 0);
    ws_client_free(a);
    ws_client *b = join(&f, "/rooms/b", NULL);
    REQUIRE(b);
    ws_client *b2 = join(&f, "/rooms/b", NULL);
    ws_client_free(b2);
    /* a is idle (and least recently used): c takes its place, a is saved */
    ws_client *c = join(&f, "/rooms/c", NULL);
    REQUIRE(c);
    CHECK_EQ_INT(fixture_wait_loaded(f.rooms, 2, 3000), 2);
    char *json = mem_get(m, "a");
    CHECK(json && strstr(json, "\"counter\":1"));
    free(json);
    /* b and c have clients: nothing is idle, d is refused */
    CHECK_EQ_INT(handshake_status(f.port, "/rooms/d"), 503);
    sync_engine *engine = NULL;
    CHECK_EQ_INT(sync_rooms_acquire(f.rooms, "d", &engine), SYNC_ELIMIT);
    /* once c's client leaves, c is idle and a comes back in its place with its state */
    ws_client_free(c);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long long counter = -1;
    ws_client *a2 = NULL;
    while (!a2 && check_elapsed_ms(&t0) < 5000) {
        a2 = join(&f, "/rooms/a", &counter);
        if (!a2)
            check_sleep_ms(20);
    }
    CHECK(a2 != NULL);
    CHECK_EQ_INT(counter, 1);
    CHECK_EQ_INT(sync_rooms_loaded_count(f.rooms), 2);
    CHECK(fixture_metric(f.port, "libsync_rooms_refused_total{path=\"/rooms/\"}") >= 2);
    ws_client_free(a2);
    ws_client_free(b);
    sync_server_free(f.server);
}

typedef struct sender {
    ws_client *c;
    atomic_int stop;
    atomic_int close_code;
} sender;

static void *send_until_closed(void *arg)
{
    sender *s = arg;
    for (int i = 0; i < 100000 && !atomic_load(&s->stop); i++) {
        if (ws_send_text(s->c, "{\"type\":\"increment\"}") != 0)
            break;
        char *payload = NULL;
        size_t len = 0;
        int op = ws_read_frame(s->c, 50, &payload, &len);
        if (op == 8) {
            s->close_code =
                len >= 2 ? ((unsigned char)payload[0] << 8 | (unsigned char)payload[1]) : 1005;
            free(payload);
            break;
        }
        free(payload);
    }
    return NULL;
}

static void deleted_room_closes_its_clients_and_starts_afresh(void)
{
    mem_store *m = NULL;
    fixture f;
    REQUIRE(fixture_start_mem(&f, NULL, &m) == 0);
    ws_client *c = join(&f, "/rooms/doomed", NULL);
    REQUIRE(c);
    CHECK_EQ_INT(increment(c, 1), 0);
    sender s = {c, 0, 0};
    pthread_t t;
    pthread_create(&t, NULL, send_until_closed, &s);
    check_sleep_ms(100);
    CHECK_EQ_INT(sync_rooms_delete(f.rooms, "doomed"), SYNC_OK);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!atomic_load(&s.close_code) && check_elapsed_ms(&t0) < 5000)
        check_sleep_ms(10);
    atomic_store(&s.stop, 1);
    pthread_join(t, NULL);
    CHECK_EQ_INT(atomic_load(&s.close_code), SYNC_CLOSE_ROOM_DELETED);
    ws_client_free(c);
    CHECK_EQ_INT(fixture_wait_loaded(f.rooms, 0, 5000), 0);
    char *json = mem_get(m, "doomed");
    CHECK(json == NULL); /* the record is gone, and nothing saved it again after */
    free(json);
    long long counter = -1;
    c = join(&f, "/rooms/doomed", &counter);
    CHECK(c != NULL);
    CHECK_EQ_INT(counter, 0);
    ws_client_free(c);
    /* deleting a room that is not loaded removes its record */
    sync_engine *engine = NULL;
    CHECK_EQ_INT(sync_rooms_acquire(f.rooms, "stored", &engine), SYNC_OK);
    CHECK_EQ_INT(sync_engine_set_state_json(engine, "{\"counter\":9}", 1), SYNC_OK);
    CHECK_EQ_INT(sync_rooms_release(f.rooms, engine), SYNC_OK);
    json = mem_get(m, "stored");
    CHECK(json != NULL);
    free(json);
    CHECK_EQ_INT(sync_rooms_delete(f.rooms, "stored"), SYNC_OK);
    json = mem_get(m, "stored");
    CHECK(json == NULL);
    free(json);
    sync_server_free(f.server);
}

static void store_failing_one_room_refuses_it_alone(void)
{
    mem_store *m = NULL;
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.log = fixture_quiet_log;
    fixture f;
    REQUIRE(fixture_start_mem(&f, &opts, &m) == 0);
    pthread_mutex_lock(&m->lock);
    snprintf(m->fail_load, sizeof m->fail_load, "broken");
    pthread_mutex_unlock(&m->lock);
    /* a load that fails at once: the upgrade is answered 503 */
    CHECK_EQ_INT(handshake_status(f.port, "/rooms/broken"), 503);
    ws_client *ok = join(&f, "/rooms/fine", NULL);
    CHECK(ok != NULL);
    CHECK_EQ_INT(increment(ok, 1), 0);
    /* a load that fails later: the client is upgraded, held, then closed with 4503 */
    pthread_mutex_lock(&m->lock);
    m->async_load = 1;
    m->delay_ms = 100;
    pthread_mutex_unlock(&m->lock);
    int status = 0;
    ws_client *held = ws_connect(f.port, "/rooms/broken", NULL, &status);
    CHECK_EQ_INT(status, 101);
    if (held) {
        char reason[64] = "";
        CHECK_EQ_INT(ws_wait_close_reason(held, 5000, reason, sizeof reason),
                     SYNC_CLOSE_ROOM_UNAVAILABLE);
        CHECK_EQ_STR(reason, "room unavailable");
        ws_client_free(held);
    }
    sync_engine *engine = NULL;
    CHECK(sync_rooms_acquire(f.rooms, "broken", &engine) < 0);
    CHECK(engine == NULL);
    /* the other room never noticed; a new room loads (later) fine */
    CHECK_EQ_INT(increment(ok, 2), 0);
    long long counter = -1;
    ws_client *other = join(&f, "/rooms/other", &counter);
    CHECK(other != NULL);
    CHECK_EQ_INT(counter, 0);
    CHECK_EQ_INT(sync_rooms_loaded_count(f.rooms), 2);
    CHECK(fixture_metric(f.port, "libsync_rooms_refused_total{path=\"/rooms/\"}") >= 3);
    ws_client_free(other);
    ws_client_free(ok);
    sync_server_free(f.server);
}

typedef struct completer {
    setup_box *box;
    int status;
} completer;

static void *complete_setup(void *arg)
{
    completer *c = arg;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    sync_room_setup *setup = NULL;
    while (!(setup = atomic_exchange(&c->box->kept, NULL)) && check_elapsed_ms(&t0) < 5000)
        check_sleep_ms(5);
    if (setup) {
        check_sleep_ms(150); /* the client sends while it waits */
        sync_room_setup_complete(setup, c->status);
    }
    return NULL;
}

static void deferred_setup_completed_from_another_thread(void)
{
    fixture f;
    REQUIRE(fixture_start(&f, NULL, NULL) == 0);
    f.box.defer = 1;
    completer comp = {&f.box, SYNC_OK};
    pthread_t t;
    pthread_create(&t, NULL, complete_setup, &comp);
    int status = 0;
    ws_client *c = ws_connect(f.port, "/rooms/later", NULL, &status);
    CHECK_EQ_INT(status, 101);
    REQUIRE(c);
    /* held meanwhile, and applied in order once the room is ready */
    CHECK_EQ_INT(ws_send_text(c, "{\"type\":\"increment\"}"), 0);
    CHECK_EQ_INT(ws_send_text(c, "{\"type\":\"increment\"}"), 0);
    char *text = ws_read_text(c, 5000);
    CHECK(text && strstr(text, "initial_state") && strstr(text, "\"room\":\"later\""));
    free(text);
    long long last = -1;
    for (int i = 0; i < 5 && last != 2; i++) {
        text = ws_read_text(c, 3000);
        if (!text)
            break;
        last = ws_json_int(text, "counter");
        free(text);
    }
    CHECK_EQ_INT(last, 2);
    pthread_join(t, NULL);
    ws_client_free(c);
    /* a deferred setup that refuses: the held client is closed with 4503 */
    completer refuse = {&f.box, SYNC_EINVAL};
    pthread_create(&t, NULL, complete_setup, &refuse);
    c = ws_connect(f.port, "/rooms/never", NULL, &status);
    CHECK_EQ_INT(status, 101);
    if (c) {
        CHECK_EQ_INT(ws_wait_close(c, 5000), SYNC_CLOSE_ROOM_UNAVAILABLE);
        ws_client_free(c);
    }
    pthread_join(t, NULL);
    CHECK_EQ_INT(fixture_wait_loaded(f.rooms, 1, 3000), 1);
    /* a setup that refuses at once: 503 */
    f.box.defer = 0;
    f.box.fail = 1;
    CHECK_EQ_INT(handshake_status(f.port, "/rooms/refused"), 503);
    sync_server_free(f.server);
}

static int room_auth(sync_request *req, void *userdata)
{
    (void)userdata;
    const char *room = sync_request_room(req);
    const char *token = sync_request_header(req, "authorization");
    if (!room)
        return 0;
    /* "Bearer alice" may enter room "alice-*" only */
    if (!token || strncmp(token, "Bearer ", 7) != 0)
        return 401;
    if (strncmp(room, token + 7, strlen(token + 7)) != 0)
        return 403;
    char identity[128];
    snprintf(identity, sizeof identity, "{\"user\":\"%s\",\"room\":\"%s\"}", token + 7, room);
    sync_request_set_identity(req, identity);
    return 0;
}

static void auth_sees_the_room(void)
{
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.auth = room_auth;
    fixture f;
    REQUIRE(fixture_start(&f, &opts, NULL) == 0);
    int status = 0;
    ws_client *c =
        ws_connect(f.port, "/rooms/alice-notes", "Authorization: Bearer alice\r\n", &status);
    CHECK_EQ_INT(status, 101);
    if (c) {
        fixture_expect_joined(c, "{\"user\":\"alice\",\"room\":\"alice-notes\"}");
        ws_client_free(c);
    }
    ws_client *no = ws_client_tcp(f.port);
    REQUIRE(no);
    CHECK_EQ_INT(ws_handshake(no, "/rooms/bob-notes", "Authorization: Bearer alice\r\n", 5000),
                 403);
    ws_client_free(no);
    /* refused by auth: the room was never created */
    CHECK_EQ_INT(atomic_load(&f.box.calls), 1);
    sync_server_free(f.server);
}

static _Atomic(sync_request *) deferred_request;

static int deferring_auth(sync_request *req, void *userdata)
{
    (void)userdata;
    char identity[96];
    snprintf(identity, sizeof identity, "{\"room\":\"%s\"}", sync_request_room(req));
    sync_request_set_identity(req, identity);
    atomic_store(&deferred_request, sync_request_defer(req));
    return SYNC_PENDING;
}

static void *complete_auth(void *arg)
{
    (void)arg;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    sync_request *req = NULL;
    while (!(req = atomic_exchange(&deferred_request, NULL)) && check_elapsed_ms(&t0) < 5000)
        check_sleep_ms(5);
    if (req) {
        check_sleep_ms(300); /* after the room is ready: the auth is the last to decide */
        sync_request_complete(req, 0);
    }
    return NULL;
}

/* A deferred auth and a deferred room setup: the client waits for both, in either order, and
 * what it sent meanwhile is applied once it joined; a room never ready closes it with 4408. */
static void deferred_auth_and_deferred_setup(void)
{
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.auth = deferring_auth;
    opts.auth_timeout_ms = 1500;
    fixture f;
    REQUIRE(fixture_start(&f, &opts, NULL) == 0);
    atomic_store(&f.box.defer, 1);
    completer comp = {&f.box, SYNC_OK};
    pthread_t ta, ts;
    pthread_create(&ts, NULL, complete_setup, &comp);
    pthread_create(&ta, NULL, complete_auth, NULL);
    int status = 0;
    ws_client *c = ws_connect(f.port, "/rooms/both", NULL, &status);
    CHECK_EQ_INT(status, 101);
    REQUIRE(c);
    CHECK_EQ_INT(ws_send_text(c, "{\"type\":\"increment\"}"), 0);
    char *text = ws_read_text(c, 5000);
    CHECK(text && strstr(text, "initial_state"));
    free(text);
    CHECK_EQ_INT(ws_send_text(c, "{\"type\":\"whoami\"}"), 0);
    for (int i = 0; i < 5; i++) {
        text = ws_read_text(c, 3000);
        if (!text || !strstr(text, "state_update"))
            break;
        free(text);
    }
    CHECK_EQ_STR(text, "{\"room\":\"both\"}");
    free(text);
    pthread_join(ta, NULL);
    pthread_join(ts, NULL);
    ws_client_free(c);
    sync_engine *engine = NULL;
    REQUIRE(sync_rooms_acquire(f.rooms, "both", &engine) == SYNC_OK);
    CHECK_EQ_INT(fixture_counter_value(engine), 1);
    sync_rooms_release(f.rooms, engine);
    /* the setup never completes: closed with 4408 once auth_timeout_ms passed */
    pthread_create(&ta, NULL, complete_auth, NULL);
    c = ws_connect(f.port, "/rooms/stuck", NULL, &status);
    CHECK_EQ_INT(status, 101);
    if (c) {
        CHECK_EQ_INT(ws_wait_close(c, 5000), 4408);
        ws_client_free(c);
    }
    pthread_join(ta, NULL);
    sync_room_setup *stuck = atomic_exchange(&f.box.kept, NULL);
    CHECK(stuck != NULL);
    if (stuck)
        CHECK_EQ_INT(sync_room_setup_complete(stuck, SYNC_EINVAL), SYNC_OK);
    sync_server_free(f.server);
}

static void metrics_count_rooms_and_sum_their_engines(void)
{
    fixture f;
    REQUIRE(fixture_start(&f, NULL, NULL) == 0);
    ws_client *a = join(&f, "/rooms/m1", NULL);
    ws_client *b = join(&f, "/rooms/m2", NULL);
    REQUIRE(a && b);
    CHECK_EQ_INT(increment(a, 1), 0);
    CHECK_EQ_INT(increment(b, 1), 0);
    CHECK_EQ_INT(increment(b, 2), 0);
    CHECK_EQ_INT(fixture_metric(f.port, "libsync_rooms_loaded{path=\"/rooms/\"}"), 2);
    CHECK_EQ_INT(fixture_metric(f.port, "libsync_rooms_created_total{path=\"/rooms/\"}"), 2);
    CHECK_EQ_INT(fixture_metric(f.port, "libsync_messages_applied_total{path=\"/rooms/\"}"), 3);
    CHECK_EQ_INT(fixture_metric(f.port, "libsync_connections{path=\"/rooms/\"}"), 2);
    char *body = NULL;
    CHECK_EQ_INT(http_request(f.port, "GET", "/metrics", NULL, &body, NULL), 200);
    CHECK(body && !strstr(body, "m1") && !strstr(body, "m2")); /* no label per room */
    free(body);
    ws_client_free(a);
    ws_client_free(b);
    sync_server_free(f.server);
}

typedef struct async_box {
    atomic_int calls;
    atomic_int status;
    _Atomic(sync_engine *) engine;
} async_box;

static void on_ready(int status, sync_engine *engine, void *userdata)
{
    async_box *box = userdata;
    atomic_store(&box->status, status);
    atomic_store(&box->engine, engine);
    atomic_fetch_add(&box->calls, 1);
}

static void rooms_without_clients(void)
{
    mem_store *m = NULL;
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.room_idle_ms = 100;
    fixture f;
    REQUIRE(fixture_start_mem(&f, &opts, &m) == 0);
    /* set the state of a room nobody joined; it is saved and unloaded once released */
    sync_engine *engine = NULL;
    REQUIRE(sync_rooms_acquire(f.rooms, "offline", &engine) == SYNC_OK);
    CHECK_EQ_INT(sync_engine_set_state_json(engine, "{\"counter\":41}", 1), SYNC_OK);
    CHECK_EQ_INT(sync_rooms_loaded_count(f.rooms), 1);
    check_sleep_ms(300); /* held: not unloaded however idle */
    CHECK_EQ_INT(sync_rooms_loaded_count(f.rooms), 1);
    CHECK_EQ_INT(sync_rooms_release(f.rooms, engine), SYNC_OK);
    CHECK_EQ_INT(sync_rooms_release(f.rooms, engine), SYNC_EINVAL); /* not held any more */
    CHECK_EQ_INT(fixture_wait_loaded(f.rooms, 0, 5000), 0);
    /* a client then sees it, and so does an asynchronous acquire (loads it once more) */
    long long counter = -1;
    ws_client *c = join(&f, "/rooms/offline", &counter);
    CHECK_EQ_INT(counter, 41);
    async_box box = {0};
    CHECK_EQ_INT(sync_rooms_acquire_async(f.rooms, "offline", on_ready, &box), SYNC_OK);
    CHECK_EQ_INT(atomic_load(&box.calls), 1); /* loaded: done ran before the call returned */
    CHECK_EQ_INT(atomic_load(&box.status), SYNC_OK);
    CHECK_EQ_INT(sync_engine_set_state_json(atomic_load(&box.engine), "{\"counter\":42}", 1),
                 SYNC_OK);
    char *text = ws_read_text(c, 3000);
    CHECK(text && ws_json_int(text, "counter") == 42);
    free(text);
    CHECK_EQ_INT(sync_rooms_release(f.rooms, atomic_load(&box.engine)), SYNC_OK);
    ws_client_free(c);
    /* an asynchronous acquire of a room to load: done runs once it is */
    async_box box2 = {0};
    CHECK_EQ_INT(sync_rooms_acquire_async(f.rooms, "another", on_ready, &box2), SYNC_OK);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!atomic_load(&box2.calls) && check_elapsed_ms(&t0) < 5000)
        check_sleep_ms(5);
    CHECK_EQ_INT(atomic_load(&box2.status), SYNC_OK);
    if (atomic_load(&box2.engine))
        CHECK_EQ_INT(sync_rooms_release(f.rooms, atomic_load(&box2.engine)), SYNC_OK);
    /* the list: stored and loaded rooms, sorted */
    char *list = NULL;
    CHECK_EQ_INT(sync_rooms_list(f.rooms, &list), SYNC_OK);
    CHECK_EQ_STR(list, "[\"another\",\"offline\"]");
    sync_free(list);
    CHECK_EQ_INT(sync_rooms_acquire(NULL, "x", &engine), SYNC_EINVAL);
    CHECK_EQ_INT(sync_rooms_release(f.rooms, NULL), SYNC_EINVAL);
    sync_server_free(f.server);
}

static void a_room_handler_uses_another_room(void)
{
    fixture f;
    REQUIRE(fixture_start(&f, NULL, NULL) == 0);
    atomic_store(&poke_rooms, f.rooms);
    ws_client *c = join(&f, "/rooms/poker", NULL);
    REQUIRE(c);
    CHECK_EQ_INT(ws_send_text(c, "{\"type\":\"poke\"}"), 0);
    char *text = ws_read_text(c, 5000);
    CHECK_EQ_STR(text, "\"poked\"");
    free(text);
    long long counter = -1;
    ws_client *t = join(&f, "/rooms/target", &counter);
    CHECK_EQ_INT(counter, 7);
    ws_client_free(t);
    ws_client_free(c);
    sync_server_free(f.server);
}

static void rooms_before_listen_and_a_graceful_stop_saves_them(void)
{
    mem_store *m = NULL;
    sync_room_store *store = mem_store_new(&m);
    REQUIRE(store);
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.room_idle_ms = -1;
    sync_server *server = NULL;
    REQUIRE(sync_server_new(&server, &opts) == SYNC_OK);
    sync_rooms_options ro = SYNC_ROOMS_OPTIONS_INIT;
    sync_engine_options eo = SYNC_ENGINE_OPTIONS_INIT;
    eo.initial_state_json = "{\"counter\":5}";
    eo.persist_mode = SYNC_PERSIST_MANUAL; /* only the stop saves */
    ro.engine_options = &eo;
    ro.store = store;
    sync_rooms *rooms = NULL;
    REQUIRE(sync_server_mount_rooms(server, "/r/", &ro, &rooms) == SYNC_OK);
    sync_room_store_free(store);
    /* before listen: usable without a service thread */
    sync_engine *engine = NULL;
    REQUIRE(sync_rooms_acquire(rooms, "early", &engine) == SYNC_OK);
    char *state = sync_engine_get_state_json(engine);
    CHECK_EQ_STR(state, "{\"counter\":5}");
    sync_free(state);
    CHECK_EQ_INT(sync_engine_set_state_json(engine, "{\"counter\":6}", 0), SYNC_OK);
    CHECK_EQ_INT(sync_rooms_release(rooms, engine), SYNC_OK);
    CHECK(mem_get(m, "early") == NULL);
    REQUIRE(sync_server_start(server) == SYNC_OK);
    int port = sync_server_port(server);
    ws_client *c = ws_connect(port, "/r/early", NULL, NULL);
    CHECK(c != NULL);
    char *text = c ? ws_read_text(c, 3000) : NULL;
    CHECK(text && ws_json_int(text, "counter") == 6);
    free(text);
    CHECK_EQ_INT(sync_server_stop(server), SYNC_OK);
    char *json = mem_get(m, "early");
    CHECK(json && strstr(json, "\"counter\":6"));
    free(json);
    ws_client_free(c);
    sync_server_free(server);
}

/* The built-in stores, real files: two rooms saved when idle, seen again after the unload and by
 * a new server on the same database or directory, listed, one deleted. */
static void built_in_store_keeps_rooms(int file_store)
{
    char *dir = check_tmpdir(file_store ? "rooms_file" : "rooms_sqlite");
    REQUIRE(dir);
    char db[512], rooms_dir[512];
    snprintf(db, sizeof db, "%s/rooms.sqlite", dir);
    snprintf(rooms_dir, sizeof rooms_dir, "%s/rooms", dir);
    for (int round = 0; round < 2; round++) {
        sync_room_store *store = NULL;
        if (file_store) {
            sync_file_rooms_options fo = SYNC_FILE_ROOMS_OPTIONS_INIT;
            fo.dir = rooms_dir;
            REQUIRE(sync_room_store_file_new(&store, &fo) == SYNC_OK);
        } else {
            sync_sqlite_options so = SYNC_SQLITE_OPTIONS_INIT;
            so.path = db;
            REQUIRE(sync_room_store_sqlite_new(&store, &so) == SYNC_OK);
        }
        sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
        opts.room_idle_ms = 150;
        fixture f;
        REQUIRE(fixture_start(&f, &opts, store) == 0);
        long long ca = -1, cb = -1;
        ws_client *a = join(&f, "/rooms/Board%201", &ca);
        ws_client *b = join(&f, "/rooms/board%201", &cb); /* case-sensitive: another room */
        REQUIRE(a && b);
        CHECK_EQ_INT(ca, round == 0 ? 0 : 2);
        CHECK_EQ_INT(cb, round == 0 ? 0 : 1);
        CHECK_EQ_INT(increment(a, ca + 1), 0);
        CHECK_EQ_INT(increment(a, ca + 2), 0);
        CHECK_EQ_INT(increment(b, cb + 1), 0);
        ws_client_free(a);
        ws_client_free(b);
        CHECK_EQ_INT(fixture_wait_loaded(f.rooms, 0, 5000), 0);
        long long again = -1;
        a = join(&f, "/rooms/Board%201", &again);
        CHECK_EQ_INT(again, ca + 2);
        ws_client_free(a);
        char *list = NULL;
        CHECK_EQ_INT(sync_rooms_list(f.rooms, &list), SYNC_OK);
        CHECK_EQ_STR(list, round == 0 ? "[\"Board 1\",\"board 1\"]"
                                      : "[\"Board 1\",\"board 1\",\"gone\"]");
        sync_free(list);
        if (round == 0) {
            sync_engine *engine = NULL;
            CHECK_EQ_INT(sync_rooms_acquire(f.rooms, "gone", &engine), SYNC_OK);
            CHECK_EQ_INT(sync_engine_set_state_json(engine, "{\"counter\":1}", 0), SYNC_OK);
            CHECK_EQ_INT(sync_rooms_release(f.rooms, engine), SYNC_OK);
        } else {
            CHECK_EQ_INT(sync_rooms_delete(f.rooms, "gone"), SYNC_OK);
            CHECK_EQ_INT(sync_rooms_list(f.rooms, &list), SYNC_OK);
            CHECK_EQ_STR(list, "[\"Board 1\",\"board 1\"]");
            sync_free(list);
        }
        sync_server_free(f.server); /* saves what is still loaded */
    }
    free(dir);
}

static void sqlite_store_keeps_rooms(void)
{
    built_in_store_keeps_rooms(0);
}

static void file_store_keeps_rooms(void)
{
    built_in_store_keeps_rooms(1);
}

/* The template's heartbeat reaches a room's clients: the server ticks its rooms. */
static void rooms_are_ticked(void)
{
    sync_server *server = NULL;
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    REQUIRE(sync_server_new(&server, &opts) == SYNC_OK);
    sync_rooms_options ro = SYNC_ROOMS_OPTIONS_INIT;
    sync_engine_options eo = SYNC_ENGINE_OPTIONS_INIT;
    eo.heartbeat_interval_ms = 100;
    ro.engine_options = &eo;
    REQUIRE(sync_server_mount_rooms(server, "/tick/", &ro, NULL) == SYNC_OK);
    REQUIRE(sync_server_start(server) == SYNC_OK);
    ws_client *c = ws_connect(sync_server_port(server), "/tick/one", NULL, NULL);
    REQUIRE(c);
    int pings = 0;
    for (int i = 0; i < 20 && pings < 2; i++) {
        char *text = NULL;
        size_t len = 0;
        if (ws_read_frame(c, 2000, &text, &len) == 1 && strstr(text, "\"ping\""))
            pings++;
        free(text);
    }
    CHECK_EQ_INT(pings, 2);
    ws_client_free(c);
    sync_server_free(server);
}

/* Churn: threads acquire, change, release, delete and list random rooms while clients join and
 * send, with rooms unloading every few milliseconds and max_rooms evicting: every call returns
 * (a status, never a hang), clients are served or refused cleanly, and the sanitizers see no
 * race, leak or lock-order problem. */
typedef struct churner {
    fixture *f;
    unsigned seed;
    int ops;
    int failures; /* calls that failed with something else than the expected statuses */
} churner;

static void on_churn_ready(int status, sync_engine *engine, void *userdata)
{
    churner *c = userdata;
    if (status == SYNC_OK) {
        sync_engine_set_state_json(engine, "{\"counter\":1}", 1);
        sync_rooms_release(c->f->rooms, engine);
    }
}

static void *churn_api(void *arg)
{
    churner *c = arg;
    for (int i = 0; i < c->ops; i++) {
        char name[16];
        snprintf(name, sizeof name, "c%u", rand_r(&c->seed) % 12);
        int op = (int)(rand_r(&c->seed) % 5);
        int rc = SYNC_OK;
        if (op <= 1) {
            sync_engine *engine = NULL;
            rc = sync_rooms_acquire(c->f->rooms, name, &engine);
            if (rc == SYNC_OK) {
                sync_engine_set_state_json(engine, "{\"counter\":5}", 1);
                rc = sync_rooms_release(c->f->rooms, engine);
            }
        } else if (op == 2) {
            rc = sync_rooms_delete(c->f->rooms, name);
        } else if (op == 3) {
            char *list = NULL;
            rc = sync_rooms_list(c->f->rooms, &list);
            sync_free(list);
        } else {
            rc = sync_rooms_acquire_async(c->f->rooms, name, on_churn_ready, c);
        }
        if (rc != SYNC_OK && rc != SYNC_ELIMIT)
            c->failures++;
    }
    return NULL;
}

static void *churn_clients(void *arg)
{
    churner *c = arg;
    for (int i = 0; i < c->ops; i++) {
        char path[32];
        snprintf(path, sizeof path, "/rooms/c%u", rand_r(&c->seed) % 12);
        int status = 0;
        ws_client *ws = ws_connect(c->f->port, path, NULL, &status);
        if (!ws) {
            if (status != 503)
                c->failures++;
            continue;
        }
        ws_send_text(ws, "{\"type\":\"increment\"}");
        char *text = ws_read_text(ws, 200);
        free(text);
        ws_client_free(ws);
    }
    return NULL;
}

static void rooms_survive_churn_from_every_thread(void)
{
    mem_store *m = NULL;
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.room_idle_ms = 20;
    opts.max_rooms = 6;
    opts.log = fixture_quiet_log;
    fixture f;
    REQUIRE(fixture_start_mem(&f, &opts, &m) == 0);
    enum { API = 3, CLIENTS = 2 };
    pthread_t threads[API + CLIENTS];
    churner churners[API + CLIENTS];
    for (int i = 0; i < API + CLIENTS; i++) {
        churners[i] = (churner){&f, (unsigned)(i * 7919 + 1), i < API ? 400 : 150, 0};
        pthread_create(&threads[i], NULL, i < API ? churn_api : churn_clients, &churners[i]);
    }
    int failures = 0;
    for (int i = 0; i < API + CLIENTS; i++) {
        pthread_join(threads[i], NULL);
        failures += churners[i].failures;
    }
    CHECK_EQ_INT(failures, 0);
    /* everything settles: every room unloads once nobody uses it */
    CHECK_EQ_INT(fixture_wait_loaded(f.rooms, 0, 10000), 0);
    long long created = fixture_metric(f.port, "libsync_rooms_created_total{path=\"/rooms/\"}");
    long long unloaded = fixture_metric(f.port, "libsync_rooms_unloaded_total{path=\"/rooms/\"}");
    CHECK(created > 12);
    CHECK(unloaded <= created);
    sync_server_free(f.server);
}

/* Input for one room never cuts another room's broadcast short: it cannot supersede that room's
 * frame, and the turn has written little. One client floods its room; meanwhile rooms of a few
 * clients and a room of more than a short walk take increments one at a time. Every client sees
 * every counter and every broadcast went to all of its room's clients in the turn that flushed it
 * (the count of broadcasts cut short stays 0; a broadcast that gave way to any waiting input after
 * 4 writes was cut in nearly every room here). */
enum { CALM_SMALL = 8, SMALL_CLIENTS = 6, WIDE_CLIENTS = 24, CALM_ROUNDS = 5 };

static void other_rooms_input_does_not_cut_a_broadcast(void)
{
    fixture f;
    REQUIRE(fixture_start(&f, NULL, NULL) == 0);
    enum { ROOMS = CALM_SMALL + 1 };
    ws_client *clients[ROOMS][WIDE_CLIENTS] = {{NULL}};
    int counts[ROOMS];
    for (int r = 0; r < ROOMS; r++) {
        counts[r] = r < CALM_SMALL ? SMALL_CLIENTS : WIDE_CLIENTS;
        char path[64];
        snprintf(path, sizeof path, "/rooms/calm%d", r);
        for (int i = 0; i < counts[r]; i++) {
            clients[r][i] = join(&f, path, NULL);
            REQUIRE(clients[r][i]);
        }
    }
    ws_client *busy = join(&f, "/rooms/busy", NULL);
    REQUIRE(busy);
    fixture_flood *flood = fixture_flood_start(busy);
    REQUIRE(flood);
    check_sleep_ms(50); /* a backlog builds up */
    int missed = 0;
    for (int k = 1; k <= CALM_ROUNDS; k++)
        for (int r = 0; r < ROOMS; r++) {
            if (ws_send_text(clients[r][0], "{\"type\":\"increment\"}") != 0)
                missed++;
            for (int i = 0; i < counts[r]; i++)
                if (fixture_read_until(clients[r][i], "counter", k, 5000) != 0)
                    missed++;
        }
    long long flooded = fixture_flood_stop(flood);
    CHECK_EQ_INT(missed, 0);
    CHECK(flooded > 1000);
    CHECK_EQ_INT(fixture_metric(f.port, "libsync_server_broadcasts_cut_short_total"), 0);
    for (int r = 0; r < ROOMS; r++)
        for (int i = 0; i < counts[r]; i++)
            ws_client_free(clients[r][i]);
    ws_client_free(busy);
    sync_server_free(f.server);
}

static void mount_and_options_are_checked(void)
{
    sync_server *server = NULL;
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.room_idle_ms = -2;
    CHECK_EQ_INT(sync_server_new(&server, &opts), SYNC_EINVAL);
    opts.room_idle_ms = 0;
    opts.max_rooms = -1;
    CHECK_EQ_INT(sync_server_new(&server, &opts), SYNC_EINVAL);
    /* a version-5 caller: its struct ends before room_idle_ms, whatever lies after is not read */
    sync_server_options *old = fixture_old_options(5, offsetof(sync_server_options, room_idle_ms));
    REQUIRE(old);
    CHECK_EQ_INT(sync_server_new(&server, old), SYNC_OK);
    free(old);
    REQUIRE(server);
    sync_rooms_options ro = SYNC_ROOMS_OPTIONS_INIT;
    CHECK_EQ_INT(sync_rooms_options_init(&ro, SYNC_ROOMS_OPTIONS_VERSION), SYNC_OK);
    CHECK_EQ_INT(sync_rooms_options_init(&ro, 99), SYNC_EINVAL);
    CHECK_EQ_INT(sync_server_mount_rooms(server, "rooms/", &ro, NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_server_mount_rooms(server, "/rooms", &ro, NULL), SYNC_EINVAL);
    sync_engine_options eo = SYNC_ENGINE_OPTIONS_INIT;
    eo.timer_mode = SYNC_TIMERS_THREAD;
    ro.engine_options = &eo;
    CHECK_EQ_INT(sync_server_mount_rooms(server, "/rooms/", &ro, NULL), SYNC_EINVAL);
    eo.timer_mode = SYNC_TIMERS_MANUAL;
    sync_hooks hooks = SYNC_HOOKS_INIT;
    eo.hooks = &hooks;
    CHECK_EQ_INT(sync_server_mount_rooms(server, "/rooms/", &ro, NULL), SYNC_EINVAL);
    eo.hooks = NULL;
    sync_rooms *rooms = NULL;
    CHECK_EQ_INT(sync_server_mount_rooms(server, "/rooms/", &ro, &rooms), SYNC_OK);
    CHECK(rooms != NULL);
    CHECK_EQ_INT(sync_server_mount_rooms(server, "/rooms/", &ro, NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_server_listen(server), SYNC_OK);
    CHECK_EQ_INT(sync_server_mount_rooms(server, "/more/", &ro, NULL), SYNC_ESTATE);
    sync_server_free(server);
    /* version 6 defaults: 0 in both */
    sync_server_options six;
    CHECK_EQ_INT(sync_server_options_init(&six, 6), SYNC_OK);
    CHECK_EQ_INT(six.room_idle_ms, 0);
    CHECK_EQ_INT(six.max_rooms, 0);
}

int main(void)
{
    RUN(two_rooms_are_independent);
    RUN(concurrent_first_joins_create_once);
    RUN(bad_names_are_refused_before_anything_exists);
    RUN(idle_room_is_saved_unloaded_and_seen_again);
    RUN(visited_room_writes_nothing_before_send);
    RUN(held_handle_outlives_its_room);
    RUN(join_racing_an_unload_waits_and_loads_afresh);
    RUN(delete_racing_an_unload_removes_after_the_save);
    RUN(max_rooms_evicts_the_least_recently_used_then_refuses);
    RUN(deleted_room_closes_its_clients_and_starts_afresh);
    RUN(store_failing_one_room_refuses_it_alone);
    RUN(deferred_setup_completed_from_another_thread);
    RUN(auth_sees_the_room);
    RUN(deferred_auth_and_deferred_setup);
    RUN(metrics_count_rooms_and_sum_their_engines);
    RUN(rooms_without_clients);
    RUN(a_room_handler_uses_another_room);
    RUN(rooms_before_listen_and_a_graceful_stop_saves_them);
    RUN(sqlite_store_keeps_rooms);
    RUN(file_store_keeps_rooms);
    RUN(rooms_are_ticked);
    RUN(rooms_survive_churn_from_every_thread);
    RUN(other_rooms_input_does_not_cut_a_broadcast);
    RUN(mount_and_options_are_checked);
    return check_summary();
}

/* The built-in server's broadcast under load, over real sockets: a broadcast that stops for
 * waiting input and resumes with a newer state, clients vanishing in the middle of one, a forced
 * broadcast, frames queued for one client staying ahead of the state that follows them, an
 * engine that an embedder's own transport shares with the server, and sends from another thread
 * to clients that are going away. */
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "server_fixture.h"
#include "ws_client.h"

static const char increment[] = "{\"type\":\"increment\",\"amount\":1}";

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Reads state frames until the counter is `want`. Returns the frames it took, -1 on timeout or
 * close, -2 when the counter ever went backwards or past `want`. */
static int read_to_counter(ws_client *c, long long want, int timeout_ms)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long long seen = -1;
    int frames = 0;
    while (check_elapsed_ms(&start) < timeout_ms) {
        char *text = ws_read_text(c, timeout_ms - (int)check_elapsed_ms(&start));
        if (!text)
            return -1;
        long long v = ws_json_int(text, "counter");
        free(text);
        if (v < 0)
            continue; /* not a state frame */
        frames++;
        if (v < seen || v > want)
            return -2;
        seen = v;
        if (v == want)
            return frames;
    }
    return -1;
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Connects n clients and reads each one's initial state; returns how many made it. */
static int connect_all(int port, ws_client **clients, int n)
{
    int ok = 0;
    for (int i = 0; i < n; i++) {
        clients[i] = ws_connect(port, "/", NULL, NULL);
        char *text = clients[i] ? ws_read_text(clients[i], 5000) : NULL;
        if (text && strstr(text, "initial_state"))
            ok++;
        free(text);
    }
    return ok;
}

static void free_all(ws_client **clients, int n)
{
    for (int i = 0; i < n; i++)
        ws_client_free(clients[i]);
}

/* A counter engine at "/" and n clients that have their initial state. */
typedef struct crowd {
    sync_engine *engine;
    sync_server *server;
    int port;
    ws_client **clients;
    int n;
} crowd;

/* False when the server or the client array could not be made (reported). */
static bool crowd_start(crowd *c, const sync_server_options *opts, int n)
{
    raise_fd_limit();
    *c = (crowd){.n = n};
    c->server = fixture_counter_server(0, opts, "/", &c->engine);
    c->clients = calloc((size_t)n, sizeof *c->clients);
    CHECK(c->server && c->clients);
    if (!c->server || !c->clients)
        return false;
    c->port = sync_server_port(c->server);
    CHECK_EQ_INT(connect_all(c->port, c->clients, n), n);
    return c->clients[0] != NULL;
}

static void crowd_stop(crowd *c)
{
    if (c->clients)
        free_all(c->clients, c->n);
    free(c->clients);
    sync_server_free(c->server);
    sync_engine_free(c->engine);
}

/* Bursts of increments from one client while the server writes to hundreds. With the default
 * broadcast_yield_ms the broadcast must stop for the waiting input (the metric says it did); with
 * -1 it never does. Either way every client ends on exactly the last counter, never seeing it go
 * backwards, with most intermediate states skipped. */
static void bursts_to_many_clients(int yield_ms, long long *cut_short)
{
    enum { N = 400, BURSTS = 40, PER_BURST = 50, TOTAL = BURSTS * PER_BURST };
    raise_fd_limit();
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.broadcast_yield_ms = yield_ms;
    sync_engine *engine = NULL;
    sync_server *server = fixture_counter_server(0, &opts, "/", &engine);
    REQUIRE(server);
    int port = sync_server_port(server);
    ws_client **clients = calloc(N, sizeof *clients);
    REQUIRE(clients);
    CHECK_EQ_INT(connect_all(port, clients, N), N);

    for (int b = 0; b < BURSTS && clients[0]; b++) {
        for (int i = 0; i < PER_BURST; i++)
            CHECK_EQ_INT(ws_send_text(clients[0], increment), 0);
        sleep_ms(1);
    }
    int most_frames = 0;
    for (int i = 0; i < N; i++) {
        int frames = clients[i] ? read_to_counter(clients[i], TOTAL, 20000) : -1;
        CHECK(frames > 0);
        if (frames > most_frames)
            most_frames = frames;
    }
    CHECK(most_frames < TOTAL);
    CHECK_EQ_INT(sync_engine_get_version(engine), TOTAL);
    *cut_short = fixture_metric(port, "libsync_server_broadcasts_cut_short_total");
    free_all(clients, N);
    free(clients);
    sync_server_free(server);
    sync_engine_free(engine);
}

static void test_broadcast_cut_short_by_input_still_converges(void)
{
    long long cut_short = -1;
    bursts_to_many_clients(0, &cut_short);
    CHECK(cut_short > 0);
}

static void test_broadcast_that_never_yields_still_converges(void)
{
    long long cut_short = -1;
    bursts_to_many_clients(-1, &cut_short);
    CHECK_EQ_INT(cut_short, 0);
}

/* Increments arrive one at a time, each while a walk over hundreds of clients is under way. A walk
 * stops for the waiting increment, lws reads it, and the walk goes on with the state it makes: one
 * stop per increment at most. A walk flushed again before lws has read the increment (a wake
 * handled earlier in the same lws service) would walk on with the superseded state and stop for
 * the same increment a second time, delaying it by the writes in between. */
static void test_a_walk_stops_once_for_each_waiting_message(void)
{
    enum { N = 200, M = 200 };
    crowd c;
    if (crowd_start(&c, NULL, N)) {
        struct timespec gap = {0, 300 * 1000L};
        for (int i = 0; i < M; i++) {
            CHECK_EQ_INT(ws_send_text(c.clients[0], increment), 0);
            nanosleep(&gap, NULL);
        }
        for (int i = 0; i < N; i++)
            CHECK(c.clients[i] && read_to_counter(c.clients[i], M, 20000) > 0);
        long long cut_short = fixture_metric(c.port, "libsync_server_broadcasts_cut_short_total");
        fprintf(stderr, "cut_short %lld for %d increments\n", cut_short, M);
        CHECK(cut_short > 0);
        CHECK(cut_short <= M + M / 4);
    }
    crowd_stop(&c);
}

/* One client floods increments while a broadcast over 120 clients is under way, so every walk
 * gives way to input. A walk is done once it has come round the ring, over however many turns:
 * with broadcast_yield_ms far above the time a round takes, no walk needs the whole pass that
 * bounds a slow one. Had a walk counted as done only when one turn reached its end, every
 * broadcast_yield_ms of this flood would have ended in such a pass, the input waiting behind it. */
static void test_a_walk_that_comes_round_needs_no_pass(void)
{
    enum { N = 120, FLOOD_MS = 400 };
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.broadcast_yield_ms = 50;
    crowd c;
    fixture_flood *flood = crowd_start(&c, &opts, N) ? fixture_flood_start(c.clients[0]) : NULL;
    if (flood) {
        sleep_ms(FLOOD_MS);
        long long sent = fixture_flood_stop(flood);
        for (int i = 1; i < N; i++)
            CHECK(c.clients[i] && read_to_counter(c.clients[i], sent, 20000) > 0);
        long long cut_short = fixture_metric(c.port, "libsync_server_broadcasts_cut_short_total");
        long long passes = fixture_metric(c.port, "libsync_server_broadcast_passes_total");
        fprintf(stderr, "%lld increments: %lld walks cut short, %lld passes\n", sent, cut_short,
                passes);
        CHECK(cut_short > 20);
        CHECK(passes >= 0 && passes <= 1);
    }
    CHECK(flood != NULL);
    crowd_stop(&c);
}

/* A walk over hundreds of clients with a large state takes milliseconds. One client sends an
 * increment, waits until it sees it, waits twice broadcast_yield_ms more and sends the next: each
 * one arrives after the walk that carries the previous state stopped giving way to every input.
 * The walk still reads input between its slices, so the next increment is applied before that walk
 * ends and the clients it had not reached yet skip the state in between; every client still ends
 * on the last counter, never going backwards. (A walk that ran to its end once the yield time was
 * spent showed every client every state here.) A reader thread drains the other clients meanwhile,
 * so no socket buffer fills and every write is a direct one. */
enum { SLICE_N = 400, SLICE_ROUNDS = 10, SLICE_PAD = 64 * 1024 };

typedef struct slice_readers {
    ws_client **clients;
    unsigned seen[SLICE_N]; /* bit k: the client saw counter k */
    int backwards;
    int done;
} slice_readers;

static void *drain_clients(void *arg)
{
    slice_readers *r = arg;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long long last[SLICE_N];
    for (int i = 0; i < SLICE_N; i++)
        last[i] = 0;
    int finished = 1; /* the sender, clients[SLICE_N - 1], is read by the test itself */
    while (finished < SLICE_N && check_elapsed_ms(&start) < 60000) {
        for (int i = 0; i < SLICE_N - 1; i++) {
            if (!r->clients[i] || last[i] == SLICE_ROUNDS)
                continue;
            char *text;
            while ((text = ws_read_text(r->clients[i], 0))) {
                long long v = ws_json_int(text, "counter");
                free(text);
                if (v < 0)
                    continue;
                if (v < last[i] || v > SLICE_ROUNDS)
                    r->backwards++;
                else
                    r->seen[i] |= 1u << v;
                last[i] = v;
                if (v == SLICE_ROUNDS) {
                    finished++;
                    break;
                }
            }
        }
    }
    r->done = finished;
    return NULL;
}

static void test_long_walk_gives_way_between_slices(void)
{
    raise_fd_limit();
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.broadcast_yield_ms = 1;
    sync_engine *engine = NULL;
    sync_server *server = fixture_counter_server(0, &opts, "/", &engine);
    REQUIRE(server);
    char *json = malloc(SLICE_PAD + 64);
    REQUIRE(json);
    int head = snprintf(json, 64, "{\"counter\":0,\"pad\":\"");
    memset(json + head, 'x', SLICE_PAD);
    strcpy(json + head + SLICE_PAD, "\"}");
    CHECK_EQ_INT(sync_engine_set_state_json(engine, json, 0), SYNC_OK);
    free(json);
    int port = sync_server_port(server);
    slice_readers *r = calloc(1, sizeof *r);
    ws_client **clients = calloc(SLICE_N, sizeof *clients);
    REQUIRE(r && clients);
    r->clients = clients;
    CHECK_EQ_INT(connect_all(port, clients, SLICE_N), SLICE_N);
    ws_client *sender = clients[SLICE_N - 1];
    pthread_t reader;
    REQUIRE(pthread_create(&reader, NULL, drain_clients, r) == 0);
    for (int k = 1; k <= SLICE_ROUNDS && sender; k++) {
        CHECK_EQ_INT(ws_send_text(sender, increment), 0);
        CHECK(read_to_counter(sender, k, 20000) > 0);
        sleep_ms(2 * opts.broadcast_yield_ms);
    }
    pthread_join(reader, NULL);
    CHECK_EQ_INT(r->done, SLICE_N);
    CHECK_EQ_INT(r->backwards, 0);
    int skipped = 0;
    for (int i = 0; i < SLICE_N - 1; i++)
        if (r->seen[i] != ((2u << SLICE_ROUNDS) - 2))
            skipped++;
    CHECK(skipped > 0);
    free_all(clients, SLICE_N);
    free(clients);
    free(r);
    sync_server_free(server);
    sync_engine_free(engine);
}

/* Version 2 added broadcast_yield_ms: a caller built against version 1 has a shorter struct, which
 * init must not write past and which the server must accept without reading the new field. */
static void test_server_options_version_1_still_accepted(void)
{
    sync_server_options *v1 =
        fixture_old_options(1, offsetof(sync_server_options, broadcast_yield_ms));
    REQUIRE(v1);
    sync_server *server = NULL;
    CHECK_EQ_INT(sync_server_new(&server, v1), SYNC_OK); /* the 0xA5 bytes are never read */
    sync_server_free(server);
    free(v1);

    sync_server_options bad = SYNC_SERVER_OPTIONS_INIT;
    bad.broadcast_yield_ms = -2;
    server = NULL;
    CHECK_EQ_INT(sync_server_new(&server, &bad), SYNC_EINVAL);
    CHECK(strstr(sync_error_last(), "broadcast_yield_ms") != NULL);
    CHECK(server == NULL);
    bad.version = SYNC_SERVER_OPTIONS_VERSION + 1;
    bad.broadcast_yield_ms = 0;
    CHECK_EQ_INT(sync_server_new(&server, &bad), SYNC_EINVAL);
}

typedef struct sender_args {
    ws_client *client;
    int total;
    int failed;
} sender_args;

static void *send_increments(void *arg)
{
    sender_args *a = arg;
    for (int i = 0; i < a->total; i++) {
        if (ws_send_text(a->client, increment) != 0)
            a->failed++;
        if (i % 100 == 99)
            sleep_ms(1);
    }
    return NULL;
}

/* Half the clients reset their connections (RST, no close frame) while broadcasts are written to
 * them: the others still converge, and the server counts the survivors only. */
static void test_clients_resetting_mid_broadcast(void)
{
    enum { N = 200, TOTAL = 3000 };
    raise_fd_limit();
    sync_engine *engine = NULL;
    sync_server *server = fixture_counter_server(0, NULL, "/", &engine);
    REQUIRE(server);
    int port = sync_server_port(server);
    ws_client *clients[N] = {0};
    CHECK_EQ_INT(connect_all(port, clients, N), N);
    REQUIRE(clients[0]);

    sender_args args = {clients[0], TOTAL, 0};
    pthread_t sender;
    REQUIRE(pthread_create(&sender, NULL, send_increments, &args) == 0);
    for (int i = 1; i < N; i += 2) {
        struct linger hard = {1, 0};
        if (clients[i])
            setsockopt(ws_client_fd(clients[i]), SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
        ws_client_free(clients[i]);
        clients[i] = NULL;
        if (i % 20 == 1)
            sleep_ms(2);
    }
    pthread_join(sender, NULL);
    CHECK_EQ_INT(args.failed, 0);
    for (int i = 0; i < N; i += 2)
        CHECK(clients[i] && read_to_counter(clients[i], TOTAL, 20000) > 0);

    CHECK_EQ_INT(fixture_open_connections(port, N / 2), N / 2);
    free_all(clients, N);
    sync_server_free(server);
    sync_engine_free(engine);
}

/* Clients that send a close frame while broadcasts keep coming: lws is then in its closing
 * handshake, where no state may be written any more; each still gets its close answered with its
 * code, and the clients that stay converge. */
static void test_clients_closing_gracefully_mid_broadcast(void)
{
    enum { N = 60, TOTAL = 2000 };
    sync_engine *engine = NULL;
    sync_server *server = fixture_counter_server(0, NULL, "/", &engine);
    REQUIRE(server);
    ws_client *clients[N] = {0};
    CHECK_EQ_INT(connect_all(sync_server_port(server), clients, N), N);
    REQUIRE(clients[0]);
    sender_args args = {clients[0], TOTAL, 0};
    pthread_t sender;
    REQUIRE(pthread_create(&sender, NULL, send_increments, &args) == 0);
    int answered = 0;
    for (int i = 1; i < N; i += 2) {
        if (clients[i] && ws_send_close(clients[i], 4000 + i) == 0 &&
            ws_wait_close(clients[i], 5000) == 4000 + i)
            answered++;
        ws_client_free(clients[i]);
        clients[i] = NULL;
    }
    pthread_join(sender, NULL);
    CHECK_EQ_INT(answered, N / 2);
    for (int i = 0; i < N; i += 2)
        CHECK(clients[i] && read_to_counter(clients[i], TOTAL, 20000) > 0);
    free_all(clients, N);
    sync_server_free(server);
    sync_engine_free(engine);
}

/* One engine behind two servers at once (say ws:// and wss://, or two interfaces): a change made
 * through either reaches the clients of both, and stopping one leaves the other serving. */
static void test_one_engine_served_by_two_servers(void)
{
    enum { PER_SERVER = 20 };
    sync_engine *engine = fixture_counter_engine(0);
    REQUIRE(engine);
    sync_server *first = fixture_server(NULL, "/", engine);
    sync_server *second = fixture_server(NULL, "/", engine);
    REQUIRE(first && second);
    ws_client *a[PER_SERVER] = {0}, *b[PER_SERVER] = {0};
    CHECK_EQ_INT(connect_all(sync_server_port(first), a, PER_SERVER), PER_SERVER);
    CHECK_EQ_INT(connect_all(sync_server_port(second), b, PER_SERVER), PER_SERVER);
    REQUIRE(a[0] && b[0]);
    for (int i = 0; i < 100; i++) {
        CHECK_EQ_INT(ws_send_text(a[0], increment), 0);
        CHECK_EQ_INT(ws_send_text(b[0], increment), 0);
    }
    for (int i = 0; i < PER_SERVER; i++) {
        CHECK(a[i] && read_to_counter(a[i], 200, 10000) > 0);
        CHECK(b[i] && read_to_counter(b[i], 200, 10000) > 0);
    }
    CHECK_EQ_INT(sync_server_stop(first), SYNC_OK);
    for (int i = 0; i < 50; i++)
        CHECK_EQ_INT(ws_send_text(b[0], increment), 0);
    for (int i = 0; i < PER_SERVER; i++)
        CHECK(b[i] && read_to_counter(b[i], 250, 10000) > 0);
    free_all(a, PER_SERVER);
    free_all(b, PER_SERVER);
    sync_server_free(first);
    sync_server_free(second);
    sync_engine_free(engine);
}

/* sync_engine_broadcast_state() sends the unchanged state to every client again. */
static void test_forced_broadcast_reaches_everyone(void)
{
    enum { N = 60 };
    sync_engine *engine = NULL;
    sync_server *server = fixture_counter_server(7, NULL, "/", &engine);
    REQUIRE(server);
    ws_client *clients[N] = {0};
    CHECK_EQ_INT(connect_all(sync_server_port(server), clients, N), N);
    for (int round = 0; round < 3; round++) {
        CHECK(sync_engine_broadcast_state(engine) >= 0);
        for (int i = 0; i < N; i++) {
            char *text = clients[i] ? ws_read_text(clients[i], 5000) : NULL;
            CHECK(text && strstr(text, "state_update") && ws_json_int(text, "counter") == 7);
            free(text);
        }
    }
    free_all(clients, N);
    sync_server_free(server);
    sync_engine_free(engine);
}

typedef struct ordered_send {
    sync_engine *engine;
    int sent;
} ordered_send;

/* A counter engine whose on_connect hook is `on_connect`, served at "/"; NULL (and no engine)
 * when either cannot be made. */
static sync_server *serve_with_on_connect(void (*on_connect)(sync_engine *, sync_conn *, void *),
                                          void *userdata, sync_engine **out_engine)
{
    sync_engine *engine = fixture_counter_engine(0);
    sync_hooks hooks = SYNC_HOOKS_INIT;
    hooks.on_connect = on_connect;
    hooks.userdata = userdata;
    sync_server *server = NULL;
    if (engine && sync_engine_set_hooks(engine, &hooks) == SYNC_OK)
        server = fixture_server(NULL, "/", engine);
    if (!server) {
        sync_engine_free(engine);
        engine = NULL;
    }
    *out_engine = engine;
    return server;
}

/* A frame queued by on_connect (before the initial state, in the engine's order) and the
 * states that follow: queued frames go first even though states usually skip the queue. */
static void on_connect_send_hello(sync_engine *engine, sync_conn *conn, void *userdata)
{
    (void)engine;
    int *sent = userdata;
    static const char hello[] = "{\"type\":\"hello\"}";
    if (sync_conn_send(conn, hello, sizeof hello - 1) == SYNC_OK)
        (*sent)++;
}

static void test_queued_frames_stay_ahead_of_states(void)
{
    enum { JOINERS = 20, TOTAL = 400 };
    int sent = 0;
    sync_engine *engine = NULL;
    sync_server *server = serve_with_on_connect(on_connect_send_hello, &sent, &engine);
    REQUIRE(server);
    int port = sync_server_port(server);
    ws_client *writer = ws_connect(port, "/", NULL, NULL);
    REQUIRE(writer);
    /* clients join while the counter moves: each must see hello, then its initial state, then
     * only newer counters, however the joins and the broadcasts interleave */
    ws_client *joiners[JOINERS] = {0};
    for (int j = 0; j < JOINERS; j++) {
        for (int i = 0; i < TOTAL / JOINERS; i++)
            CHECK_EQ_INT(ws_send_text(writer, increment), 0);
        joiners[j] = ws_connect(port, "/", NULL, NULL);
    }
    for (int j = 0; j < JOINERS; j++) {
        REQUIRE(joiners[j]);
        char *first = ws_read_text(joiners[j], 5000);
        CHECK(first && strstr(first, "\"hello\""));
        free(first);
        char *second = ws_read_text(joiners[j], 5000);
        CHECK(second && strstr(second, "initial_state"));
        long long initial = second ? ws_json_int(second, "counter") : -1;
        free(second);
        CHECK(initial >= 0 && initial <= TOTAL);
        if (initial >= 0 && initial < TOTAL)
            CHECK(read_to_counter(joiners[j], TOTAL, 10000) > 0);
    }
    CHECK(read_to_counter(writer, TOTAL, 10000) > 0);
    CHECK_EQ_INT(sent, JOINERS + 1);
    free_all(joiners, JOINERS);
    ws_client_free(writer);
    sync_server_free(server);
    sync_engine_free(engine);
}

/* The server's connections, kept by on_connect for a thread of the test's own. */
typedef struct conn_list {
    pthread_mutex_t lock;
    sync_conn *conns[256];
    int count;
    int stop;
    int sent, closed;
} conn_list;

static void on_connect_keep(sync_engine *engine, sync_conn *conn, void *userdata)
{
    (void)engine;
    conn_list *list = userdata;
    pthread_mutex_lock(&list->lock);
    if (list->count < 256)
        list->conns[list->count++] = sync_conn_ref(conn);
    pthread_mutex_unlock(&list->lock);
}

static void *send_to_every_conn(void *arg)
{
    conn_list *list = arg;
    static const char note[] = "{\"type\":\"note\"}";
    for (int round = 0; round < 2000; round++) {
        pthread_mutex_lock(&list->lock);
        int stop = list->stop;
        for (int i = 0; i < list->count && !stop; i++) {
            int rc = sync_conn_send(list->conns[i], note, sizeof note - 1);
            if (rc == SYNC_OK)
                list->sent++;
            else if (rc == SYNC_ECLOSED)
                list->closed++;
        }
        pthread_mutex_unlock(&list->lock);
        if (stop)
            break;
        if (round % 8 == 7)
            sleep_ms(1);
    }
    return NULL;
}

/* Another thread keeps sending to every connection (each send asks the service thread for a
 * write) while clients reset or close: a connection that goes away with a write request pending
 * is taken off the server's list of them, sends to it fail with SYNC_ECLOSED, and the survivors
 * get everything and converge. */
static void test_sends_from_another_thread_while_clients_vanish(void)
{
    enum { N = 120 };
    raise_fd_limit();
    conn_list list = {.lock = PTHREAD_MUTEX_INITIALIZER};
    sync_engine *engine = NULL;
    sync_server *server = serve_with_on_connect(on_connect_keep, &list, &engine);
    REQUIRE(server);
    int port = sync_server_port(server);
    ws_client *clients[N] = {0};
    CHECK_EQ_INT(connect_all(port, clients, N), N);

    pthread_t sender;
    REQUIRE(pthread_create(&sender, NULL, send_to_every_conn, &list) == 0);
    int survivors = 0;
    for (int i = 0; i < N; i++) {
        if (i % 3 == 0) {
            survivors++;
            continue;
        }
        if (i % 3 == 1 && clients[i]) {
            struct linger hard = {1, 0};
            setsockopt(ws_client_fd(clients[i]), SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
        } else if (clients[i]) {
            ws_send_close(clients[i], 1000);
        }
        ws_client_free(clients[i]);
        clients[i] = NULL;
        sleep_ms(1);
    }
    sleep_ms(20);
    pthread_mutex_lock(&list.lock);
    list.stop = 1;
    pthread_mutex_unlock(&list.lock);
    pthread_join(sender, NULL);
    CHECK(list.sent > 0);
    CHECK(list.closed > 0);

    REQUIRE(clients[0]);
    CHECK_EQ_INT(ws_send_text(clients[0], increment), 0);
    for (int i = 0; i < N; i += 3)
        CHECK(clients[i] && read_to_counter(clients[i], 1, 20000) > 0);
    CHECK_EQ_INT(fixture_open_connections(port, survivors), survivors);
    free_all(clients, N);
    sync_server_free(server);
    for (int i = 0; i < list.count; i++)
        sync_conn_free(list.conns[i]);
    sync_engine_free(engine);
}

/* An embedder's own transport beside the server: what it was last sent, from any thread. */
typedef struct push_peer {
    pthread_mutex_t lock;
    long long counter; /* of the last state frame */
    int frames;
} push_peer;

static int push_peer_send(void *userdata, const char *text, size_t len)
{
    (void)len;
    push_peer *peer = userdata;
    long long v = ws_json_int(text, "counter");
    pthread_mutex_lock(&peer->lock);
    if (v >= 0) {
        peer->counter = v;
        peer->frames++;
    }
    pthread_mutex_unlock(&peer->lock);
    return SYNC_OK;
}

static long long push_peer_wait(push_peer *peer, long long want, int timeout_ms)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long long v;
    for (;;) {
        pthread_mutex_lock(&peer->lock);
        v = peer->counter;
        pthread_mutex_unlock(&peer->lock);
        if (v == want || check_elapsed_ms(&start) > timeout_ms)
            return v;
        sleep_ms(2);
    }
}

/* One engine mounted on the server and also fed by an embedder's transport (push: the engine
 * sends its frames itself). Changes from either side reach both, and the server's clients go
 * on converging after the embedder's connection leaves. */
static void test_engine_shared_with_an_embedder_transport(void)
{
    enum { N = 20 };
    sync_engine *engine = NULL;
    sync_server *server = fixture_counter_server(0, NULL, "/", &engine);
    REQUIRE(server);
    ws_client *clients[N] = {0};
    REQUIRE(connect_all(sync_server_port(server), clients, N) == N);

    push_peer peer = {.lock = PTHREAD_MUTEX_INITIALIZER, .counter = -1};
    sync_conn_callbacks cb = SYNC_CONN_CALLBACKS_INIT;
    cb.send = push_peer_send;
    sync_conn *conn = NULL;
    REQUIRE(sync_conn_new(&conn, &cb, &peer) == SYNC_OK);
    CHECK_EQ_INT(sync_engine_handle_open(engine, conn), SYNC_OK);
    CHECK_EQ_INT(push_peer_wait(&peer, 0, 3000), 0); /* its initial_state */
    CHECK_EQ_INT(sync_engine_connection_count(engine), N + 1);

    /* from a WebSocket client: every other client and the embedder's peer see it */
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(ws_send_text(clients[0], increment), 0);
    for (int i = 0; i < N; i++)
        CHECK(read_to_counter(clients[i], 3, 5000) > 0);
    CHECK_EQ_INT(push_peer_wait(&peer, 3, 3000), 3);

    /* from the embedder's peer: the server's clients see it */
    for (int i = 0; i < 4; i++)
        CHECK(sync_engine_handle_message(engine, conn, increment, strlen(increment)) >= 0);
    for (int i = 0; i < N; i++)
        CHECK(read_to_counter(clients[i], 7, 5000) > 0);
    CHECK_EQ_INT(push_peer_wait(&peer, 7, 3000), 7);

    /* the peer leaves; the server alone goes on */
    CHECK_EQ_INT(sync_engine_handle_close(engine, conn), SYNC_OK);
    sync_conn_free(conn);
    CHECK_EQ_INT(ws_send_text(clients[N - 1], increment), 0);
    for (int i = 0; i < N; i++)
        CHECK(read_to_counter(clients[i], 8, 5000) > 0);
    CHECK_EQ_INT(push_peer_wait(&peer, 7, 0), 7);

    free_all(clients, N);
    sync_server_free(server);
    sync_engine_free(engine);
}

int main(void)
{
    RUN(test_broadcast_cut_short_by_input_still_converges);
    RUN(test_broadcast_that_never_yields_still_converges);
    RUN(test_a_walk_stops_once_for_each_waiting_message);
    RUN(test_a_walk_that_comes_round_needs_no_pass);
    RUN(test_long_walk_gives_way_between_slices);
    RUN(test_server_options_version_1_still_accepted);
    RUN(test_clients_resetting_mid_broadcast);
    RUN(test_clients_closing_gracefully_mid_broadcast);
    RUN(test_one_engine_served_by_two_servers);
    RUN(test_forced_broadcast_reaches_everyone);
    RUN(test_queued_frames_stay_ahead_of_states);
    RUN(test_engine_shared_with_an_embedder_transport);
    RUN(test_sends_from_another_thread_while_clients_vanish);
    return check_summary();
}

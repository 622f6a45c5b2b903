/* Servers in one cluster on Redis (cluster.h), through the public API only: a real redis-server
 * started by the test, three sync_servers joined to it on three ports, WebSocket clients spread
 * over them. Every client ends on the same version and state, equal to the acknowledged
 * increments; the owner's server stopped under load, the others take over; a v2 client resumes
 * on another node by patch; Redis killed, the clients are closed with 4503 and joins refused
 * with 503 until it is back; a refused message's error frame reaches its sender on a node that
 * does not own the room. Skipped (77) without Redis support. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libsync/libsync.h>

#include "check.h"
#include "cluster_fixture.h"
#include "redis_server.h"
#include "ws_client.h"

enum { NODES = 3, CLIENTS_PER_NODE = 2, INCREMENTS = 30, LEASE_MS = 1000 };

static redis_server redis;

/* "bad": refused with an error. */
static int on_bad(sync_msg *msg, void *userdata)
{
    (void)userdata;
    sync_msg_set_error(msg, "bad is always refused");
    return SYNC_EINVAL;
}

static int add_handlers(sync_engine *engine)
{
    int rc = sync_engine_on(engine, "increment", cluster_on_increment, NULL, NULL);
    return rc == SYNC_OK ? sync_engine_on(engine, "bad", on_bad, NULL, NULL) : rc;
}

static void engine_options(sync_engine_options *opts)
{
    sync_engine_options_init(opts, SYNC_ENGINE_OPTIONS_VERSION);
    /* the note makes the state bigger than a patch of the counter: a resume gets the patch */
    opts->initial_state_json = "{\"counter\":0,\"note\":\"a counter shared by every node of the "
                               "cluster, whichever node its clients joined\"}";
    opts->reply_errors = 1;
    opts->resume_history_versions = 256;
}

/* Cluster options of the next node_start() (tests that need others set them, then put them
 * back). */
static int next_lease_ms = LEASE_MS;
static size_t next_max_forward_queue = 0;

/* A node serving "/" and "/rooms/NAME" in the cluster under `prefix`. Returns SYNC_OK, or
 * SYNC_EUNSUPPORTED without Redis support. */
static int node_start(cluster_node *n, int index, const char *prefix)
{
    cluster_node_config config = {redis.url, engine_options, add_handlers, next_lease_ms,
                                  next_max_forward_queue};
    return cluster_node_start(n, index, prefix, &config);
}

typedef struct client {
    ws_client *ws;
    int acks, errors;
    long long version; /* the last version seen, -1 none */
    long long counter;
    int went_back, mismatched;
} client;

static void client_join(client *c, int port, const char *path, int timeout_ms)
{
    memset(c, 0, sizeof *c);
    c->version = -1;
    c->ws = cluster_join(port, path, NULL, timeout_ms);
    REQUIRE(c->ws != NULL);
}

static void read_one(client *c, int timeout_ms)
{
    char *text = ws_read_text(c->ws, timeout_ms);
    if (!text)
        return;
    if (getenv("CLUSTER_TEST_DEBUG"))
        fprintf(stderr, "    < %s\n", text);
    if (strstr(text, "\"type\":\"ack\""))
        c->acks++;
    else if (strstr(text, "\"type\":\"error\""))
        c->errors++;
    else {
        long long v = ws_json_int(text, "version"), counter = ws_json_int(text, "counter");
        if (v >= 0) {
            if (v < c->version) {
                fprintf(stderr, "    version %lld after %lld: %s\n", v, c->version, text);
                c->went_back++;
            }
            if (counter != v)
                c->mismatched++;
            c->version = v;
            c->counter = counter;
        }
    }
    free(text);
}

static void await_acks(client *c, int acks, const struct timespec *start)
{
    while (c->acks < acks && check_elapsed_ms(start) < 30000)
        read_one(c, 500);
}

static void await_version(client *c, long long version, const struct timespec *start)
{
    while (c->version < version && check_elapsed_ms(start) < 30000)
        read_one(c, 500);
}

static char prefix_buf[64];
static const char *fresh_prefix(const char *name)
{
    snprintf(prefix_buf, sizeof prefix_buf, "%s:", name);
    return prefix_buf;
}

static void owner_of(const char *prefix, const char *key, char *out, size_t size)
{
    cluster_owner_of(&redis, prefix, key, out, size);
}

/* Waits for every client's `increments` acks and then for the version they sum to, and checks
 * that each ends there (state and version equal, never back; without errors when
 * `expect_no_errors`). The acks in all. */
static int await_converged(client *clients, int count, int increments, const struct timespec *start,
                           int expect_no_errors)
{
    int acked = 0;
    for (int i = 0; i < count; i++) {
        await_acks(&clients[i], increments, start);
        CHECK_EQ_INT(clients[i].acks, increments);
        acked += clients[i].acks;
    }
    for (int i = 0; i < count; i++) {
        await_version(&clients[i], acked, start);
        CHECK_EQ_INT(clients[i].version, acked);
        CHECK_EQ_INT(clients[i].counter, acked);
        CHECK_EQ_INT(clients[i].went_back, 0);
        CHECK_EQ_INT(clients[i].mismatched, 0);
        if (expect_no_errors)
            CHECK_EQ_INT(clients[i].errors, 0);
    }
    return acked;
}

static int converge_on(const char *path, const char *prefix, cluster_node *nodes)
{
    enum { COUNT = NODES * CLIENTS_PER_NODE };
    client clients[COUNT];
    for (int i = 0; i < COUNT; i++)
        client_join(&clients[i], nodes[i % NODES].port, path, 10000);
    for (int round = 0; round < INCREMENTS; round++)
        for (int i = 0; i < COUNT; i++) {
            CHECK_EQ_INT(ws_send_text(clients[i].ws, "{\"type\":\"increment\"}"), 0);
            read_one(&clients[i], 0);
        }
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int acked = await_converged(clients, COUNT, INCREMENTS, &start, 1);
    char owner[80];
    owner_of(prefix, path, owner, sizeof owner);
    printf("    %s: %d increments from %d clients on %d nodes converged in %lld ms (owner %s)\n",
           path, acked, COUNT, NODES, check_elapsed_ms(&start), owner);
    for (int i = 0; i < COUNT; i++)
        ws_client_free(clients[i].ws);
    return acked;
}

static void spread_clients_converge(void)
{
    const char *prefix = fresh_prefix("converge");
    cluster_node nodes[NODES];
    for (int i = 0; i < NODES; i++)
        REQUIRE(node_start(&nodes[i], i, prefix) == SYNC_OK);
    /* listen returned once the node was ready: a join at once is not answered 503 */
    for (int i = 0; i < NODES; i++) {
        int status = 0;
        ws_client *at_once = ws_connect(nodes[i].port, "/", NULL, &status);
        CHECK_EQ_INT(status, 101);
        ws_client_free(at_once);
    }
    int acked = converge_on("/", prefix, nodes);
    for (int i = 0; i < NODES; i++) {
        CHECK_EQ_INT(sync_engine_get_version(nodes[i].engine), acked);
    }
    converge_on("/rooms/alpha", prefix, nodes);
    for (int i = 0; i < NODES; i++)
        cluster_node_stop(&nodes[i]);
}

static void owner_stopped_under_load(void)
{
    const char *prefix = fresh_prefix("failover");
    cluster_node nodes[NODES];
    for (int i = 0; i < NODES; i++)
        REQUIRE(node_start(&nodes[i], i, prefix) == SYNC_OK);
    enum { COUNT = NODES * CLIENTS_PER_NODE, HALF = INCREMENTS / 2 };
    client clients[COUNT];
    for (int i = 0; i < COUNT; i++)
        client_join(&clients[i], nodes[i % NODES].port, "/", 10000);
    for (int round = 0; round < HALF; round++)
        for (int i = 0; i < COUNT; i++)
            CHECK_EQ_INT(ws_send_text(clients[i].ws, "{\"type\":\"increment\"}"), 0);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int i = 0; i < COUNT; i++)
        await_acks(&clients[i], HALF, &start);
    char owner_id[80];
    owner_of(prefix, "/", owner_id, sizeof owner_id);
    int owner = -1;
    for (int i = 0; i < NODES; i++)
        if (strcmp(nodes[i].id, owner_id) == 0)
            owner = i;
    REQUIRE(owner >= 0);
    /* the other nodes' clients go on sending while the owner stops */
    for (int round = HALF; round < INCREMENTS; round++)
        for (int i = 0; i < COUNT; i++)
            if (i % NODES != owner)
                CHECK_EQ_INT(ws_send_text(clients[i].ws, "{\"type\":\"increment\"}"), 0);
    struct timespec stopped;
    clock_gettime(CLOCK_MONOTONIC, &stopped);
    cluster_node_stop(&nodes[owner]);
    /* its clients come back on another node and send the rest */
    int other = (owner + 1) % NODES;
    for (int i = 0; i < COUNT; i++) {
        if (i % NODES != owner)
            continue;
        int acks = clients[i].acks;
        ws_client_free(clients[i].ws);
        client_join(&clients[i], nodes[other].port, "/", 10000);
        clients[i].acks = acks;
        for (int round = HALF; round < INCREMENTS; round++)
            CHECK_EQ_INT(ws_send_text(clients[i].ws, "{\"type\":\"increment\"}"), 0);
    }
    int acked = await_converged(clients, COUNT, INCREMENTS, &start, 0);
    char now_owner[80];
    owner_of(prefix, "/", now_owner, sizeof now_owner);
    CHECK(strcmp(now_owner, owner_id) != 0);
    printf("    owner %s stopped: %d acknowledged increments converged %lld ms after the stop "
           "(owner now %s)\n",
           owner_id, acked, check_elapsed_ms(&stopped), now_owner);
    for (int i = 0; i < COUNT; i++)
        ws_client_free(clients[i].ws);
    for (int i = 0; i < NODES; i++)
        cluster_node_stop(&nodes[i]);
}

/* The first text frame of a v2 join to `port` with `query`; caller frees. */
static char *v2_first_frame(int port, const char *query)
{
    char path[300];
    snprintf(path, sizeof path, "/%s", query);
    ws_client *c = cluster_join(port, path, "Sec-WebSocket-Protocol: libsync.v2\r\n", 10000);
    char *text = c ? ws_read_text(c, 5000) : NULL;
    ws_client_free(c);
    return text;
}

static void v2_resumes_on_another_node(void)
{
    const char *prefix = fresh_prefix("resume");
    cluster_node nodes[2];
    for (int i = 0; i < 2; i++)
        REQUIRE(node_start(&nodes[i], i, prefix) == SYNC_OK);
    /* a node keeps the patch history once a v2 client used it (as on one node): node 1 has one */
    ws_client *watcher =
        cluster_join(nodes[1].port, "/", "Sec-WebSocket-Protocol: libsync.v2\r\n", 10000);
    REQUIRE(watcher != NULL);
    client sender;
    client_join(&sender, nodes[0].port, "/", 10000);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(ws_send_text(sender.ws, "{\"type\":\"increment\"}"), 0);
    await_acks(&sender, 3, &start);
    await_version(&sender, 3, &start);
    /* a v2 client of node 0 at version 3 */
    char *first = v2_first_frame(nodes[0].port, "");
    REQUIRE(first != NULL);
    const char *ep = strstr(first, "\"epoch\":\"");
    REQUIRE(ep != NULL);
    char epoch[80];
    snprintf(epoch, sizeof epoch, "%.*s", (int)strcspn(ep + 9, "\""), ep + 9);
    CHECK_EQ_INT(ws_json_int(first, "version"), 3);
    if (getenv("CLUSTER_TEST_DEBUG"))
        fprintf(stderr, "    first on node 0: %s\n", first);
    free(first);
    for (int i = 0; i < 2; i++)
        CHECK_EQ_INT(ws_send_text(sender.ws, "{\"type\":\"increment\"}"), 0);
    await_acks(&sender, 5, &start);
    await_version(&sender, 5, &start);
    /* node 1 has version 5 too (it adopted every published version) */
    while (sync_engine_get_version(nodes[1].engine) < 5 && check_elapsed_ms(&start) < 10000)
        check_sleep_ms(10);
    char query[200];
    snprintf(query, sizeof query, "?since=3&epoch=%s", epoch);
    char *text = v2_first_frame(nodes[1].port, query);
    CHECK_EQ_STR(text, "{\"type\":\"patch\",\"base\":3,\"version\":5,\"ops\":[{\"op\":\"replace\","
                       "\"path\":\"/counter\",\"value\":5}]}");
    free(text);
    ws_client_free(watcher);
    ws_client_free(sender.ws);
    for (int i = 0; i < 2; i++)
        cluster_node_stop(&nodes[i]);
}

/* Two nodes in the cluster under `prefix`, `a` joined to "/" on the first and `b` to `b_path` on
 * the second, and one increment of `a` acknowledged (`start`: when it was sent). 0 when a node or
 * a client could not start (a failed check). */
static int two_nodes_one_increment(const char *prefix, cluster_node *nodes, client *a, client *b,
                                   const char *b_path, struct timespec *start)
{
    for (int i = 0; i < 2; i++) {
        int rc = node_start(&nodes[i], i, prefix);
        CHECK_EQ_INT(rc, SYNC_OK);
        if (rc != SYNC_OK)
            return 0;
    }
    client_join(a, nodes[0].port, "/", 10000);
    client_join(b, nodes[1].port, b_path, 10000);
    if (!a->ws || !b->ws)
        return 0;
    clock_gettime(CLOCK_MONOTONIC, start);
    CHECK_EQ_INT(ws_send_text(a->ws, "{\"type\":\"increment\"}"), 0);
    await_acks(a, 1, start);
    return 1;
}

static void refusal_reaches_sender_on_other_node(void)
{
    const char *prefix = fresh_prefix("refusal");
    cluster_node nodes[2];
    client a, b;
    struct timespec start;
    REQUIRE(two_nodes_one_increment(prefix, nodes, &a, &b, "/", &start));
    char owner_id[80];
    owner_of(prefix, "/", owner_id, sizeof owner_id);
    client *other = strcmp(owner_id, nodes[0].id) == 0 ? &b : &a;
    CHECK_EQ_INT(ws_send_text(other->ws, "{\"type\":\"bad\"}"), 0);
    CHECK_EQ_INT(ws_send_text(other->ws, "{\"type\":\"nosuchtype\"}"), 0);
    while (other->errors < 2 && check_elapsed_ms(&start) < 10000)
        read_one(other, 500);
    CHECK_EQ_INT(other->errors, 2);
    CHECK_EQ_INT(sync_engine_get_version(nodes[0].engine), 1);
    ws_client_free(a.ws);
    ws_client_free(b.ws);
    for (int i = 0; i < 2; i++)
        cluster_node_stop(&nodes[i]);
}

static void redis_lost_and_back(void)
{
    const char *prefix = fresh_prefix("lost");
    cluster_node nodes[2];
    client a, b;
    struct timespec start;
    REQUIRE(two_nodes_one_increment(prefix, nodes, &a, &b, "/rooms/beta", &start));
    redis_kill(&redis);
    struct timespec killed;
    clock_gettime(CLOCK_MONOTONIC, &killed);
    char reason[128] = "";
    CHECK_EQ_INT(ws_wait_close_reason(a.ws, 10000, reason, sizeof reason), 4503);
    CHECK_EQ_STR(reason, "redis unavailable");
    CHECK_EQ_INT(ws_wait_close(b.ws, 10000), 4503);
    printf("    clients closed %lld ms after Redis was killed\n", check_elapsed_ms(&killed));
    int status = 0;
    ws_client *refused = ws_connect(nodes[0].port, "/", NULL, &status);
    CHECK(refused == NULL);
    CHECK_EQ_INT(status, 503);
    ws_client_free(refused);
    REQUIRE(redis_restart(&redis) == 0);
    ws_client_free(a.ws);
    ws_client_free(b.ws);
    /* the nodes reconnect by themselves; the record survived (appendfsync always) */
    client_join(&a, nodes[1].port, "/", 15000);
    clock_gettime(CLOCK_MONOTONIC, &start);
    await_version(&a, 1, &start);
    CHECK_EQ_INT(a.version, 1);
    CHECK_EQ_INT(ws_send_text(a.ws, "{\"type\":\"increment\"}"), 0);
    await_acks(&a, 1, &start);
    await_version(&a, 2, &start);
    CHECK_EQ_INT(a.version, 2);
    ws_client_free(a.ws);
    for (int i = 0; i < 2; i++)
        cluster_node_stop(&nodes[i]);
}

/* A node whose clients of a room left unloads it and gives its lease up; the other goes on. */
static void room_unloaded_on_owner(void)
{
    const char *prefix = fresh_prefix("unload");
    cluster_node nodes[2];
    for (int i = 0; i < 2; i++)
        REQUIRE(node_start(&nodes[i], i, prefix) == SYNC_OK);
    client c[2];
    for (int i = 0; i < 2; i++)
        client_join(&c[i], nodes[i].port, "/rooms/gamma", 10000);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    CHECK_EQ_INT(ws_send_text(c[0].ws, "{\"type\":\"increment\"}"), 0);
    await_acks(&c[0], 1, &start);
    char owner_id[80];
    owner_of(prefix, "/rooms/gamma", owner_id, sizeof owner_id);
    int owner = strcmp(owner_id, nodes[0].id) == 0 ? 0 : 1;
    REQUIRE(strcmp(owner_id, nodes[owner].id) == 0);
    int other = 1 - owner;
    ws_client_free(c[owner].ws);
    /* room_idle_ms is 1000: the owner unloads the room and gives its lease up */
    while (sync_rooms_loaded_count(nodes[owner].rooms) > 0 && check_elapsed_ms(&start) < 15000)
        check_sleep_ms(20);
    CHECK_EQ_INT(sync_rooms_loaded_count(nodes[owner].rooms), 0);
    CHECK_EQ_INT(sync_rooms_loaded_count(nodes[other].rooms), 1);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(ws_send_text(c[other].ws, "{\"type\":\"increment\"}"), 0);
    await_acks(&c[other], other == 0 ? 4 : 3, &start);
    await_version(&c[other], 4, &start);
    CHECK_EQ_INT(c[other].version, 4);
    char now_owner[80];
    owner_of(prefix, "/rooms/gamma", now_owner, sizeof now_owner);
    CHECK_EQ_STR(now_owner, nodes[other].id);
    ws_client_free(c[other].ws);
    for (int i = 0; i < 2; i++)
        cluster_node_stop(&nodes[i]);
}

/* Redis stalls (SIGSTOP): the forwarder waits on its XADD, the queue fills, and a message
 * beyond max_forward_queue is refused at once with an error frame; the server never waits. */
static void full_forward_queue_refuses(void)
{
    const char *prefix = fresh_prefix("queue");
    next_lease_ms = 6000; /* the node stays "up" for the whole stall */
    next_max_forward_queue = 4;
    cluster_node n;
    int rc = node_start(&n, 0, prefix);
    next_lease_ms = LEASE_MS;
    next_max_forward_queue = 0;
    REQUIRE(rc == SYNC_OK);
    client c;
    client_join(&c, n.port, "/", 10000);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    CHECK_EQ_INT(ws_send_text(c.ws, "{\"type\":\"increment\"}"), 0);
    await_acks(&c, 1, &start);
    redis_signal(&redis, SIGSTOP);
    for (int i = 0; i < 20; i++)
        CHECK_EQ_INT(ws_send_text(c.ws, "{\"type\":\"increment\"}"), 0);
    struct timespec sent;
    clock_gettime(CLOCK_MONOTONIC, &sent);
    while (c.errors < 15 && check_elapsed_ms(&sent) < 1500)
        read_one(&c, 100);
    /* 4 queued, and at least one taken by the stalled forwarder: up to 15 refused */
    CHECK(c.errors >= 10 && c.errors <= 15);
    CHECK(check_elapsed_ms(&sent) < 2000);
    redis_signal(&redis, SIGCONT);
    /* what was queued is applied once Redis answers again */
    while (c.acks < 21 - c.errors && check_elapsed_ms(&start) < 20000)
        read_one(&c, 200);
    CHECK_EQ_INT(c.acks + c.errors, 21);
    ws_client_free(c.ws);
    cluster_node_stop(&n);
}

static void bad_options(void)
{
    sync_cluster_options init;
    memset(&init, 0xA5, sizeof init);
    CHECK_EQ_INT(sync_cluster_options_init(&init, 1), SYNC_OK);
    CHECK_EQ_INT(init.version, 1);
    CHECK(init.redis == NULL && init.url == NULL && init.node_id == NULL);
    CHECK_EQ_INT(init.lease_ms, 0);
    CHECK_EQ_INT(sync_cluster_options_init(&init, 0), SYNC_EINVAL);
    CHECK_EQ_INT(sync_cluster_options_init(&init, SYNC_CLUSTER_OPTIONS_VERSION + 1), SYNC_EINVAL);
    sync_server *server = NULL;
    sync_server_options so = SYNC_SERVER_OPTIONS_INIT;
    REQUIRE(sync_server_new(&server, &so) == SYNC_OK);
    sync_cluster_options co = SYNC_CLUSTER_OPTIONS_INIT;
    CHECK_EQ_INT(sync_server_join_cluster(server, &co), SYNC_EINVAL); /* no Redis */
    co.url = "redis://127.0.0.1:1";
    co.node_id = "has space";
    CHECK_EQ_INT(sync_server_join_cluster(server, &co), SYNC_EINVAL);
    co.node_id = NULL;
    co.lease_ms = 5;
    CHECK_EQ_INT(sync_server_join_cluster(server, &co), SYNC_EINVAL);
    co.lease_ms = 0;
    co.url = "http://127.0.0.1:1";
    CHECK_EQ_INT(sync_server_join_cluster(server, &co), SYNC_EINVAL);
    co.url = "redis://127.0.0.1:1";
    sync_redis_options ro = SYNC_REDIS_OPTIONS_INIT;
    ro.url = co.url;
    co.redis = &ro;
    CHECK_EQ_INT(sync_server_join_cluster(server, &co), SYNC_EINVAL); /* both */
    co.redis = NULL;
    /* a fixed mount whose engine has an adapter cannot be clustered */
    char path[512];
    snprintf(path, sizeof path, "%s/cluster-adapter-%d.json",
             getenv("LIBSYNC_TEST_TMP") ? getenv("LIBSYNC_TEST_TMP") : "/tmp", (int)getpid());
    sync_file_options fo = SYNC_FILE_OPTIONS_INIT;
    fo.file_path = path;
    sync_adapter *adapter = NULL;
    REQUIRE(sync_adapter_file_new(&adapter, &fo) == SYNC_OK);
    sync_engine_options eo = SYNC_ENGINE_OPTIONS_INIT;
    eo.adapter = adapter;
    sync_engine *engine = NULL;
    REQUIRE(sync_engine_new(&engine, &eo) == SYNC_OK);
    REQUIRE(sync_server_mount(server, "/stored", engine) == SYNC_OK);
    CHECK_EQ_INT(sync_server_join_cluster(server, &co), SYNC_EINVAL);
    CHECK(strstr(sync_error_last(), "adapter") != NULL);
    sync_server_free(server);
    REQUIRE(sync_server_new(&server, &so) == SYNC_OK);
    CHECK_EQ_INT(sync_server_join_cluster(server, &co), SYNC_OK);
    CHECK_EQ_INT(sync_server_join_cluster(server, &co), SYNC_ESTATE);
    CHECK_EQ_INT(sync_server_mount(server, "/stored", engine), SYNC_EINVAL);
    sync_server_free(server);
    /* only before listen */
    REQUIRE(sync_server_new(&server, &so) == SYNC_OK);
    REQUIRE(sync_server_listen(server) == SYNC_OK);
    CHECK_EQ_INT(sync_server_join_cluster(server, &co), SYNC_ESTATE);
    sync_server_free(server);
    sync_engine_free(engine);
    unlink(path);
}

int main(void)
{
    int status = cluster_tests_begin(&redis, "server_cluster");
    if (status != 0)
        return status;
    RUN(bad_options);
    RUN(spread_clients_converge);
    RUN(refusal_reaches_sender_on_other_node);
    RUN(v2_resumes_on_another_node);
    RUN(owner_stopped_under_load);
    RUN(room_unloaded_on_owner);
    RUN(full_forward_queue_refuses);
    RUN(redis_lost_and_back);
    redis_stop(&redis);
    return check_summary();
}

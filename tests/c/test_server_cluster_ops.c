/* Operating a cluster (cluster.h, docs/SCALING.md), through the public API against a real
 * redis-server and real sockets: GET /metrics of two nodes shows the cluster's figures moving as
 * traffic, a stopped owner and a lost Redis make them move; sync_rooms_delete() on one node
 * deletes the room from Redis and closes its clients on every node with 4410, and a later join
 * starts the room afresh with a new epoch; sync_rooms_list() lists the rooms stored in Redis by
 * every node. Skipped (77) without Redis support. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libsync/libsync.h>

#include "check.h"
#include "cluster_fixture.h"
#include "redis_server.h"
#include "server_fixture.h"
#include "ws_client.h"

enum { LEASE_MS = 1000 };

static redis_server redis;

static void engine_options(sync_engine_options *opts)
{
    sync_engine_options_init(opts, SYNC_ENGINE_OPTIONS_VERSION);
    opts->initial_state_json = "{\"counter\":0}";
    opts->reply_errors = 1;
}

static int add_handlers(sync_engine *engine)
{
    return sync_engine_on(engine, "increment", cluster_on_increment, NULL, NULL);
}

/* A node serving "/" and "/rooms/NAME" in the cluster under `prefix`. */
static int node_start(cluster_node *n, int index, const char *prefix)
{
    cluster_node_config config = {redis.url, engine_options, add_handlers, LEASE_MS, 0};
    return cluster_node_start(n, index, prefix, &config);
}

typedef struct client {
    ws_client *ws;
    int acks;
    long long version, counter;
    char epoch[80];
} client;

static void read_one(client *c, int timeout_ms)
{
    char *text = ws_read_text(c->ws, timeout_ms);
    if (!text)
        return;
    if (strstr(text, "\"type\":\"ack\"")) {
        c->acks++;
    } else {
        long long v = ws_json_int(text, "version");
        if (v >= 0) {
            c->version = v;
            c->counter = ws_json_int(text, "counter");
        }
        const char *ep = strstr(text, "\"epoch\":\"");
        if (ep)
            snprintf(c->epoch, sizeof c->epoch, "%.*s", (int)strcspn(ep + 9, "\""), ep + 9);
    }
    free(text);
}

/* A v2 client of `path` that has read its first frame (version, epoch). */
static void client_join(client *c, int port, const char *path)
{
    memset(c, 0, sizeof *c);
    c->version = -1;
    c->ws = cluster_join(port, path, "Sec-WebSocket-Protocol: libsync.v2\r\n", 10000);
    REQUIRE(c->ws != NULL);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (c->version < 0 && check_elapsed_ms(&start) < 10000)
        read_one(c, 500);
    REQUIRE(c->version >= 0);
}

static void increments(client *c, int n)
{
    int want = c->acks + n;
    for (int i = 0; i < n; i++)
        CHECK_EQ_INT(ws_send_text(c->ws, "{\"type\":\"increment\"}"), 0);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (c->acks < want && check_elapsed_ms(&start) < 30000)
        read_one(c, 500);
    CHECK_EQ_INT(c->acks, want);
}

static void await_version(client *c, long long version)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (c->version < version && check_elapsed_ms(&start) < 30000)
        read_one(c, 500);
}

static void owner_of(const char *prefix, const char *key, char *out, size_t size)
{
    cluster_owner_of(&redis, prefix, key, out, size);
}

static long long key_exists(const char *prefix, const char *kind, const char *key)
{
    char name[256];
    snprintf(name, sizeof name, "%s%s:%s", prefix, kind, key);
    const char *argv[] = {"EXISTS", name};
    return redis_get_int(&redis, 2, argv);
}

static char *record_field(const char *prefix, const char *key, const char *field)
{
    char name[256];
    snprintf(name, sizeof name, "%sroom:%s", prefix, key);
    const char *argv[] = {"HGET", name, field};
    return redis_get_bulk(&redis, 3, argv);
}

/* The metric once it satisfies `at_least` <= value <= `at_most`, or its value after 15 s. */
static long long metric_when(int port, const char *name, long long at_least, long long at_most)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long long v = -1;
    while (((v = fixture_metric(port, name)) < at_least || v > at_most) &&
           check_elapsed_ms(&start) < 15000)
        check_sleep_ms(20);
    return v;
}

/* ---- /metrics ------------------------------------------------------------------------------ */

static void metrics_follow_the_cluster(void)
{
    const char *prefix = "metrics:";
    cluster_node nodes[2];
    for (int i = 0; i < 2; i++)
        REQUIRE(node_start(&nodes[i], i, prefix) == SYNC_OK);
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_INT(fixture_metric(nodes[i].port, "libsync_cluster_redis_up"), 1);
        CHECK_EQ_INT(fixture_metric(nodes[i].port, "libsync_cluster_forwarded_total"), 0);
        CHECK_EQ_INT(fixture_metric(nodes[i].port, "libsync_cluster_redis_reconnects_total"), 0);
        CHECK_EQ_INT(fixture_metric(nodes[i].port, "libsync_cluster_fenced_out_total"), 0);
        /* the fixed mount "/" */
        CHECK_EQ_INT(fixture_metric(nodes[i].port, "libsync_cluster_rooms_attached"), 1);
    }
    enum { EACH = 12 };
    client c[2];
    for (int i = 0; i < 2; i++)
        client_join(&c[i], nodes[i].port, "/rooms/m");
    for (int i = 0; i < 2; i++)
        increments(&c[i], EACH);
    char owner_id[80];
    owner_of(prefix, "/rooms/m", owner_id, sizeof owner_id);
    int owner = strcmp(owner_id, nodes[0].id) == 0 ? 0 : 1;
    REQUIRE(strcmp(owner_id, nodes[owner].id) == 0);
    int other = 1 - owner;
    int po = nodes[owner].port, pn = nodes[other].port;
    /* every acknowledged message was applied once, by the owner */
    CHECK_EQ_INT(fixture_metric(po, "libsync_cluster_applied_total"), 2 * EACH);
    CHECK_EQ_INT(fixture_metric(pn, "libsync_cluster_applied_total"), 0);
    CHECK(fixture_metric(po, "libsync_cluster_rooms_owned") >= 1);
    CHECK(fixture_metric(po, "libsync_cluster_takeovers_total") >= 1);
    /* each node forwarded its own clients' messages, the owner's included (counted once Redis
     * answered the append, which the owner's reader of the stream may apply before that) */
    CHECK_EQ_INT(metric_when(po, "libsync_cluster_forwarded_total", EACH, EACH), EACH);
    CHECK_EQ_INT(metric_when(pn, "libsync_cluster_forwarded_total", EACH, EACH), EACH);
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_INT(metric_when(nodes[i].port, "libsync_cluster_forward_queue", 0, 0), 0);
        CHECK_EQ_INT(fixture_metric(nodes[i].port, "libsync_cluster_rooms_attached"), 2);
    }
    /* both rooms ("/" and "/rooms/m") are owned, each by one node */
    CHECK_EQ_INT(fixture_metric(po, "libsync_cluster_rooms_owned") +
                     fixture_metric(pn, "libsync_cluster_rooms_owned"),
                 2);
    long long takeovers = fixture_metric(pn, "libsync_cluster_takeovers_total");
    long long owned = fixture_metric(pn, "libsync_cluster_rooms_owned");
    /* the owner stops: the other node takes its rooms over and applies from then on */
    ws_client_free(c[owner].ws);
    cluster_node_stop(&nodes[owner]);
    CHECK(metric_when(pn, "libsync_cluster_takeovers_total", takeovers + 1, 1000000) >=
          takeovers + 1);
    CHECK_EQ_INT(metric_when(pn, "libsync_cluster_rooms_owned", 2, 2), 2);
    CHECK(owned < 2);
    increments(&c[other], 1);
    CHECK_EQ_INT(metric_when(pn, "libsync_cluster_applied_total", 1, 1), 1);
    CHECK_EQ_INT(metric_when(pn, "libsync_cluster_forwarded_total", EACH + 1, EACH + 1), EACH + 1);
    /* a record that carries a later token than the owner's (as a newer owner would write it)
     * refuses the owner's save: counted, and nothing applied until the record lets it write */
    CHECK_EQ_INT(fixture_metric(pn, "libsync_cluster_fenced_out_total"), 0);
    const char *fence_up[] = {"HSET", "metrics:room:/rooms/m", "fence", "999999999"};
    free(redis_raw(&redis, 4, fence_up));
    CHECK_EQ_INT(ws_send_text(c[other].ws, "{\"type\":\"increment\"}"), 0);
    CHECK(metric_when(pn, "libsync_cluster_fenced_out_total", 1, 1000000) >= 1);
    CHECK_EQ_INT(fixture_metric(pn, "libsync_cluster_applied_total"), 1);
    const char *fence_down[] = {"HDEL", "metrics:room:/rooms/m", "fence"};
    free(redis_raw(&redis, 3, fence_down));
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (c[other].acks < EACH + 2 && check_elapsed_ms(&start) < 30000)
        read_one(&c[other], 500);
    CHECK_EQ_INT(c[other].acks, EACH + 2);
    CHECK_EQ_INT(fixture_metric(pn, "libsync_cluster_applied_total"), 2);
    /* Redis goes: the node says so, and says it reconnected once Redis is back */
    redis_kill(&redis);
    CHECK_EQ_INT(metric_when(pn, "libsync_cluster_redis_up", 0, 0), 0);
    /* a delete while Redis is away fails with a clear status */
    CHECK_EQ_INT(sync_rooms_delete(nodes[other].rooms, "m"), SYNC_EIO);
    REQUIRE(redis_restart(&redis) == 0);
    CHECK_EQ_INT(metric_when(pn, "libsync_cluster_redis_up", 1, 1), 1);
    CHECK(fixture_metric(pn, "libsync_cluster_redis_reconnects_total") >= 1);
    ws_client_free(c[other].ws);
    cluster_node_stop(&nodes[other]);
}

/* A server that did not join a cluster shows no cluster family. */
static void no_cluster_no_figures(void)
{
    sync_engine *engine = NULL;
    sync_server *server = fixture_counter_server(0, NULL, "/", &engine);
    REQUIRE(server != NULL);
    CHECK_EQ_INT(fixture_metric(sync_server_port(server), "libsync_server_connections"), 0);
    CHECK_EQ_INT(fixture_metric(sync_server_port(server), "libsync_cluster_redis_up"), -1);
    sync_server_free(server);
    sync_engine_free(engine);
}

/* ---- delete and list ------------------------------------------------------------------------ */

static void delete_closes_every_node(void)
{
    const char *prefix = "delete:";
    cluster_node nodes[2];
    for (int i = 0; i < 2; i++)
        REQUIRE(node_start(&nodes[i], i, prefix) == SYNC_OK);
    client c[2];
    for (int i = 0; i < 2; i++)
        client_join(&c[i], nodes[i].port, "/rooms/doomed");
    increments(&c[0], 2);
    increments(&c[1], 1);
    for (int i = 0; i < 2; i++) {
        await_version(&c[i], 3);
        CHECK_EQ_INT(c[i].version, 3);
    }
    char *old_epoch = record_field(prefix, "/rooms/doomed", "epoch");
    REQUIRE(old_epoch != NULL);
    CHECK_EQ_INT(key_exists(prefix, "room", "/rooms/doomed"), 1);
    CHECK_EQ_INT(key_exists(prefix, "lease", "/rooms/doomed"), 1);

    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    CHECK_EQ_INT(sync_rooms_delete(nodes[0].rooms, "doomed"), SYNC_OK);
    for (int i = 0; i < 2; i++) {
        char reason[64] = "";
        CHECK_EQ_INT(ws_wait_close_reason(c[i].ws, 10000, reason, sizeof reason),
                     SYNC_CLOSE_ROOM_DELETED);
        CHECK_EQ_STR(reason, "room deleted");
        ws_client_free(c[i].ws);
    }
    printf("    clients of both nodes closed %lld ms after the delete\n", check_elapsed_ms(&start));
    CHECK_EQ_INT(key_exists(prefix, "room", "/rooms/doomed"), 0);
    CHECK_EQ_INT(key_exists(prefix, "stream", "/rooms/doomed"), 0);
    CHECK_EQ_INT(key_exists(prefix, "lease", "/rooms/doomed"), 0);
    /* both nodes unloaded it */
    for (int i = 0; i < 2; i++) {
        while (sync_rooms_loaded_count(nodes[i].rooms) > 0 && check_elapsed_ms(&start) < 10000)
            check_sleep_ms(20);
        CHECK_EQ_INT(sync_rooms_loaded_count(nodes[i].rooms), 0);
    }
    /* no owner brings it back from what its engine held: still gone a few lease turns later */
    check_sleep_ms(LEASE_MS / 2);
    CHECK_EQ_INT(key_exists(prefix, "room", "/rooms/doomed"), 0);

    /* a later join, on either node, starts the room afresh with a new epoch */
    client again[2];
    for (int i = 0; i < 2; i++) {
        client_join(&again[i], nodes[1 - i].port, "/rooms/doomed");
        CHECK_EQ_INT(again[i].version, 0);
        CHECK_EQ_INT(again[i].counter, 0);
        CHECK(strcmp(again[i].epoch, old_epoch) != 0);
    }
    increments(&again[0], 1);
    for (int i = 0; i < 2; i++) {
        await_version(&again[i], 1);
        CHECK_EQ_INT(again[i].version, 1);
        CHECK_EQ_INT(again[i].counter, 1);
    }
    char *new_epoch = record_field(prefix, "/rooms/doomed", "epoch");
    REQUIRE(new_epoch != NULL);
    CHECK(strcmp(new_epoch, old_epoch) != 0);
    char *version = record_field(prefix, "/rooms/doomed", "version");
    CHECK_EQ_STR(version, "1");
    free(version);
    free(new_epoch);
    free(old_epoch);
    for (int i = 0; i < 2; i++)
        ws_client_free(again[i].ws);

    /* deleted from a node that never loaded the room: the other node's clients are closed */
    client lone;
    client_join(&lone, nodes[0].port, "/rooms/elsewhere");
    increments(&lone, 1);
    CHECK_EQ_INT(sync_rooms_delete(nodes[1].rooms, "elsewhere"), SYNC_OK);
    CHECK_EQ_INT(ws_wait_close(lone.ws, 10000), SYNC_CLOSE_ROOM_DELETED);
    ws_client_free(lone.ws);
    CHECK_EQ_INT(key_exists(prefix, "room", "/rooms/elsewhere"), 0);
    /* a room nobody has: nothing to do, as on one node */
    CHECK_EQ_INT(sync_rooms_delete(nodes[1].rooms, "never-was"), SYNC_OK);
    CHECK_EQ_INT(sync_rooms_delete(nodes[1].rooms, "a/b"), SYNC_EINVAL);
    for (int i = 0; i < 2; i++)
        cluster_node_stop(&nodes[i]);
}

/* The room's keys go from Redis as a delete's script removes them, but no notice reaches the
 * node (as when its subscription was down): `tombstone` leaves the delete's tombstone too. */
static void drop_room_keys(const char *prefix, const char *key, bool tombstone)
{
    char names[3][256];
    snprintf(names[0], sizeof names[0], "%slease:%s", prefix, key);
    snprintf(names[1], sizeof names[1], "%sroom:%s", prefix, key);
    snprintf(names[2], sizeof names[2], "%sstream:%s", prefix, key);
    const char *del[] = {"DEL", names[0], names[1], names[2]};
    CHECK(redis_get_int(&redis, 4, del) >= 2);
    char fence[256], tomb[256];
    snprintf(fence, sizeof fence, "%sfence:%s", prefix, key);
    const char *incr[] = {"INCR", fence};
    CHECK(redis_get_int(&redis, 2, incr) >= 2);
    if (tombstone) {
        snprintf(tomb, sizeof tomb, "%sdeleted:%s", prefix, key);
        const char *set[] = {"SET", tomb, "1", "PX", "60000"};
        free(redis_raw(&redis, 5, set));
    }
}

/* A node that missed the delete's notice finds the record gone when it takes the room again:
 * with the tombstone it unloads the room (4410) instead of writing its engine's state back, as
 * it does when Redis lost the record without a delete. */
static void missed_notice_does_not_bring_room_back(void)
{
    const char *prefix = "missed:";
    cluster_node n;
    REQUIRE(node_start(&n, 0, prefix) == SYNC_OK);
    /* without a tombstone: Redis lost the record, the owner writes back what its clients saw */
    client lost;
    client_join(&lost, n.port, "/rooms/lost");
    increments(&lost, 2);
    drop_room_keys(prefix, "/rooms/lost", false);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    char *version = NULL;
    while (!(version = record_field(prefix, "/rooms/lost", "version")) &&
           check_elapsed_ms(&start) < 15000)
        check_sleep_ms(20);
    CHECK_EQ_STR(version, "2");
    free(version);
    ws_client_free(lost.ws);
    /* with it: deleted, the clients hear so and the record stays gone */
    client ghost;
    client_join(&ghost, n.port, "/rooms/ghost");
    increments(&ghost, 2);
    drop_room_keys(prefix, "/rooms/ghost", true);
    char reason[64] = "";
    CHECK_EQ_INT(ws_wait_close_reason(ghost.ws, 15000, reason, sizeof reason),
                 SYNC_CLOSE_ROOM_DELETED);
    CHECK_EQ_STR(reason, "room deleted");
    ws_client_free(ghost.ws);
    check_sleep_ms(LEASE_MS / 2);
    CHECK_EQ_INT(key_exists(prefix, "room", "/rooms/ghost"), 0);
    /* joined again: afresh */
    client_join(&ghost, n.port, "/rooms/ghost");
    CHECK_EQ_INT(ghost.version, 0);
    increments(&ghost, 1);
    await_version(&ghost, 1);
    CHECK_EQ_INT(ghost.counter, 1);
    ws_client_free(ghost.ws);
    cluster_node_stop(&n);
}

static void list_shows_every_node(void)
{
    const char *prefix = "list:";
    cluster_node nodes[2];
    for (int i = 0; i < 2; i++)
        REQUIRE(node_start(&nodes[i], i, prefix) == SYNC_OK);
    char *text = NULL;
    CHECK_EQ_INT(sync_rooms_list(nodes[0].rooms, &text), SYNC_OK);
    CHECK_EQ_STR(text, "[]");
    sync_free(text);
    client a, b;
    client_join(&a, nodes[0].port, "/rooms/alpha");
    client_join(&b, nodes[1].port, "/rooms/beta");
    increments(&a, 1);
    increments(&b, 1);
    /* not a room of the mount: a key under another path, and another prefix's room */
    const char *planted[] = {"HSET", "list:room:/rooms/x/y", "state", "{}"};
    free(redis_raw(&redis, 4, planted));
    const char *other[] = {"HSET", "elsewhere:room:/rooms/gamma", "state", "{}"};
    free(redis_raw(&redis, 4, other));
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_INT(sync_rooms_list(nodes[i].rooms, &text), SYNC_OK);
        CHECK_EQ_STR(text, "[\"alpha\",\"beta\"]");
        sync_free(text);
    }
    /* stored, not only loaded: still listed once every node unloaded them */
    ws_client_free(a.ws);
    ws_client_free(b.ws);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int i = 0; i < 2; i++)
        while (sync_rooms_loaded_count(nodes[i].rooms) > 0 && check_elapsed_ms(&start) < 15000)
            check_sleep_ms(20);
    CHECK_EQ_INT(sync_rooms_loaded_count(nodes[0].rooms) + sync_rooms_loaded_count(nodes[1].rooms),
                 0);
    CHECK_EQ_INT(sync_rooms_list(nodes[1].rooms, &text), SYNC_OK);
    CHECK_EQ_STR(text, "[\"alpha\",\"beta\"]");
    sync_free(text);
    CHECK_EQ_INT(sync_rooms_delete(nodes[1].rooms, "alpha"), SYNC_OK);
    CHECK_EQ_INT(sync_rooms_list(nodes[0].rooms, &text), SYNC_OK);
    CHECK_EQ_STR(text, "[\"beta\"]");
    sync_free(text);
    CHECK_EQ_INT(sync_rooms_list(nodes[0].rooms, NULL), SYNC_EINVAL);
    for (int i = 0; i < 2; i++)
        cluster_node_stop(&nodes[i]);
}

int main(void)
{
    int status = cluster_tests_begin(&redis, "server_cluster_ops");
    if (status != 0)
        return status;
    RUN(no_cluster_no_figures);
    RUN(list_shows_every_node);
    RUN(delete_closes_every_node);
    RUN(missed_notice_does_not_bring_room_back);
    RUN(metrics_follow_the_cluster);
    redis_stop(&redis);
    return check_summary();
}

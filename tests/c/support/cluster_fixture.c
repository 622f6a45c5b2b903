#include "cluster_fixture.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"

void cluster_owner_of(const redis_server *redis, const char *prefix, const char *key, char *out,
                      size_t size)
{
    char lease[256];
    snprintf(lease, sizeof lease, "%slease:%s", prefix, key);
    const char *argv[] = {"GET", lease};
    char *value = redis_get_bulk(redis, 2, argv);
    const char *space = value ? strchr(value, ' ') : NULL;
    snprintf(out, size, "%s", space ? space + 1 : "");
    char *incarnation = strrchr(out, '/');
    CHECK(!space || (incarnation && strlen(incarnation) > 1));
    if (incarnation)
        *incarnation = '\0';
    free(value);
}

int cluster_on_increment(sync_msg *msg, void *userdata)
{
    (void)userdata;
    cJSON *state = sync_msg_state_mut(msg);
    cJSON *counter = state ? cJSON_GetObjectItemCaseSensitive(state, "counter") : NULL;
    if (!cJSON_IsNumber(counter)) {
        sync_msg_set_error(msg, "no counter");
        return SYNC_EINVAL;
    }
    cJSON_SetNumberValue(counter, counter->valuedouble + 1);
    static const char ack[] = "{\"type\":\"ack\"}";
    return sync_msg_reply(msg, ack, strlen(ack));
}

static int node_setup_room(sync_room_setup *setup, void *userdata)
{
    const cluster_node *n = userdata;
    return n->add_handlers(sync_room_setup_engine(setup));
}

#define NODE_REQUIRE(cond)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            CHECK(cond);                                                                           \
            return SYNC_EINVAL;                                                                    \
        }                                                                                          \
    } while (0)

int cluster_node_start(cluster_node *n, int index, const char *prefix,
                       const cluster_node_config *config)
{
    memset(n, 0, sizeof *n);
    snprintf(n->id, sizeof n->id, "node-%d", index);
    n->add_handlers = config->add_handlers;
    sync_engine_options eo;
    config->engine_options(&eo);
    NODE_REQUIRE(sync_engine_new(&n->engine, &eo) == SYNC_OK);
    NODE_REQUIRE(config->add_handlers(n->engine) == SYNC_OK);
    sync_server_options so = SYNC_SERVER_OPTIONS_INIT;
    so.room_idle_ms = 1000;
    NODE_REQUIRE(sync_server_new(&n->server, &so) == SYNC_OK);
    NODE_REQUIRE(sync_server_mount(n->server, "/", n->engine) == SYNC_OK);
    sync_rooms_options ro = SYNC_ROOMS_OPTIONS_INIT;
    ro.setup = node_setup_room;
    ro.setup_userdata = n;
    sync_engine_options room_eo;
    config->engine_options(&room_eo);
    room_eo.timer_mode = SYNC_TIMERS_MANUAL;
    ro.engine_options = &room_eo;
    NODE_REQUIRE(sync_server_mount_rooms(n->server, "/rooms/", &ro, &n->rooms) == SYNC_OK);
    sync_redis_options redis_opts = SYNC_REDIS_OPTIONS_INIT;
    redis_opts.url = config->redis_url;
    redis_opts.key_prefix = prefix;
    sync_cluster_options co = SYNC_CLUSTER_OPTIONS_INIT;
    co.redis = &redis_opts;
    co.node_id = n->id;
    co.lease_ms = config->lease_ms;
    co.max_forward_queue = config->max_forward_queue;
    int rc = sync_server_join_cluster(n->server, &co);
    if (rc != SYNC_OK)
        return rc;
    NODE_REQUIRE(sync_server_start(n->server) == SYNC_OK);
    n->port = sync_server_port(n->server);
    return SYNC_OK;
}

void cluster_node_stop(cluster_node *n)
{
    if (n->server) {
        sync_server_stop(n->server);
        sync_server_free(n->server);
        n->server = NULL;
    }
    sync_engine_free(n->engine);
    n->engine = NULL;
}

ws_client *cluster_join(int port, const char *path, const char *headers, int timeout_ms)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        int status = 0;
        ws_client *c = ws_connect(port, path, headers, &status);
        if (c)
            return c;
        if (status != 503 || check_elapsed_ms(&start) > timeout_ms)
            return NULL;
        check_sleep_ms(20);
    }
}

int cluster_tests_begin(redis_server *redis, const char *name)
{
    signal(SIGPIPE, SIG_IGN);
    sync_server *probe = NULL;
    sync_server_options so = SYNC_SERVER_OPTIONS_INIT;
    if (sync_server_new(&probe, &so) != SYNC_OK)
        return 1;
    sync_cluster_options co = SYNC_CLUSTER_OPTIONS_INIT;
    co.url = "redis://127.0.0.1:1";
    int rc = sync_server_join_cluster(probe, &co);
    sync_server_free(probe);
    if (rc == SYNC_EUNSUPPORTED) {
        printf("SKIP: libsync was built without Redis support\n");
        return 77;
    }
    return redis_start(redis, name) != 0 ? 1 : 0;
}

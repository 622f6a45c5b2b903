/* The Redis steps of a room served by several nodes (src/store/redis_cluster.c) against a real
 * redis-server: one lease holder at a time with tokens that only grow; a stalled owner's save
 * refused once its lease is gone (fencing), even with a forged lease; messages forwarded by
 * three nodes at once applied one at a time in stream order; and an owner that dies mid-stream
 * (no release, one message applied in memory only) taken over by another node from what Redis
 * holds: the counter equals the messages forwarded, the published versions have no gap and no
 * duplicate, and the dead owner's late write is refused; the claim of entries (at most once)
 * fenced like the save and never lowered. The node's threads over these steps are
 * tested in test_internal_cluster_node.c. Skipped (77) without Redis support. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libsync/libsync.h>

#include "check.h"
#include "redis_server.h"

#ifdef LIBSYNC_HAVE_REDIS
#include "store/redis_cluster.h"

static redis_server redis;
static int prefix_counter;
static char prefix[32];

/* A connection of one "node" under this case's prefix. */
static int conn_open(redis_conn *c)
{
    sync_redis_options o = SYNC_REDIS_OPTIONS_INIT;
    o.url = redis.url;
    o.key_prefix = prefix;
    o.command_timeout_ms = 5000;
    return redis_conn_setup(c, &o);
}

static void new_prefix(void)
{
    snprintf(prefix, sizeof prefix, "c%d:", ++prefix_counter);
}

static char *raw_hget(const char *kind, const char *room, const char *field)
{
    char key[160];
    snprintf(key, sizeof key, "%s%s:%s", prefix, kind, room);
    const char *argv[] = {"HGET", key, field};
    return redis_get_bulk(&redis, 3, argv);
}

/* ---- lease -------------------------------------------------------------------------------- */

static void one_holder_and_tokens_grow(void)
{
    new_prefix();
    redis_conn a, b;
    REQUIRE(conn_open(&a) == SYNC_OK);
    REQUIRE(conn_open(&b) == SYNC_OK);
    int64_t ta = 0, tb = -1, again = 0;
    CHECK_EQ_INT(redis_lease_acquire(&a, "r", "node-a", 5000, &ta), SYNC_OK);
    CHECK(ta > 0);
    CHECK_EQ_INT(redis_lease_acquire(&b, "r", "node-b", 5000, &tb), SYNC_OK);
    CHECK_EQ_INT(tb, 0); /* held by a */
    CHECK_EQ_INT(redis_lease_acquire(&a, "r", "node-a", 5000, &again), SYNC_OK);
    CHECK_EQ_INT(again, ta); /* the holder keeps its token */
    CHECK_EQ_INT(redis_lease_renew(&a, "r", ta, 5000), SYNC_OK);
    CHECK_EQ_INT(redis_lease_renew(&b, "r", ta + 1, 5000), SYNC_ESTATE);
    /* Another room has a lease of its own. */
    int64_t other = 0;
    CHECK_EQ_INT(redis_lease_acquire(&b, "s", "node-b", 5000, &other), SYNC_OK);
    CHECK(other > 0);
    /* A release with a wrong token releases nothing; with the right one b takes over at once. */
    CHECK_EQ_INT(redis_lease_release(&b, "r", ta + 7), SYNC_OK);
    CHECK_EQ_INT(redis_lease_acquire(&b, "r", "node-b", 5000, &tb), SYNC_OK);
    CHECK_EQ_INT(tb, 0);
    CHECK_EQ_INT(redis_lease_release(&a, "r", ta), SYNC_OK);
    CHECK_EQ_INT(redis_lease_acquire(&b, "r", "node-b", 5000, &tb), SYNC_OK);
    CHECK(tb > ta);
    CHECK_EQ_INT(redis_lease_renew(&a, "r", ta, 5000), SYNC_ESTATE);
    /* Bad input is an error, not a lease. */
    int64_t t = 9;
    CHECK_EQ_INT(redis_lease_acquire(&a, "", "node-a", 5000, &t), SYNC_EINVAL);
    CHECK_EQ_INT(t, 0);
    CHECK_EQ_INT(redis_lease_acquire(&a, "r", "node a", 5000, &t), SYNC_EINVAL);
    CHECK_EQ_INT(redis_lease_acquire(&a, "r", "", 5000, &t), SYNC_EINVAL);
    CHECK_EQ_INT(redis_lease_acquire(&a, "r", "node-a", 0, &t), SYNC_EINVAL);
    CHECK_EQ_INT(redis_fenced_save(&a, "r", 0, "{}", 2, 1, NULL, NULL), SYNC_EINVAL);
    redis_conn_release(&a);
    redis_conn_release(&b);
}

/* ---- fencing ------------------------------------------------------------------------------ */

static void stale_owner_is_fenced_out(void)
{
    new_prefix();
    redis_conn a, b;
    REQUIRE(conn_open(&a) == SYNC_OK);
    REQUIRE(conn_open(&b) == SYNC_OK);
    int64_t ta = 0, tb = 0;
    REQUIRE(redis_lease_acquire(&a, "r", "node-a", 300, &ta) == SYNC_OK && ta > 0);
    CHECK_EQ_INT(redis_fenced_save(&a, "r", ta, "{\"n\":1}", 7, 1, "ep1", "1-1"), SYNC_OK);
    /* a stalls past its lease; nobody took the room yet: its write is still refused, since it
     * cannot know that nobody did. */
    check_sleep_ms(600);
    CHECK_EQ_INT(redis_fenced_save(&a, "r", ta, "{\"n\":2}", 7, 2, "ep1", "1-2"), SYNC_ESTATE);
    CHECK_EQ_INT(redis_lease_renew(&a, "r", ta, 300), SYNC_ESTATE);
    /* b takes the room, loads what a saved, and writes. */
    REQUIRE(redis_lease_acquire(&b, "r", "node-b", 5000, &tb) == SYNC_OK);
    CHECK(tb > ta);
    char *json = NULL;
    int64_t v = -1;
    char epoch[64], applied[REDIS_STREAM_ID_MAX];
    CHECK_EQ_INT(redis_fenced_load(&b, "r", &json, &v, epoch, applied), SYNC_OK);
    CHECK_EQ_STR(json, "{\"n\":1}");
    CHECK_EQ_INT(v, 1);
    CHECK_EQ_STR(epoch, "ep1");
    CHECK_EQ_STR(applied, "1-1");
    sync_free(json);
    CHECK_EQ_INT(redis_fenced_save(&b, "r", tb, "{\"n\":5}", 7, 5, NULL, "1-5"), SYNC_OK);
    /* a wakes up and writes with its old token: refused, b's record untouched. */
    CHECK_EQ_INT(redis_fenced_save(&a, "r", ta, "{\"n\":2}", 7, 2, NULL, "1-2"), SYNC_ESTATE);
    CHECK(strstr(sync_error_last(), "fenced out") != NULL);
    char *state = raw_hget("room", "r", "state");
    CHECK_EQ_STR(state, "{\"n\":5}");
    free(state);
    /* Even a lease forged back to a's token (a bug, a hand-edited key) does not let a write
     * over a record that a later token wrote. */
    char lease[160], value[64];
    snprintf(lease, sizeof lease, "%slease:r", prefix);
    snprintf(value, sizeof value, "%lld node-a", (long long)ta);
    const char *set[] = {"SET", lease, value};
    free(redis_raw(&redis, 3, set));
    CHECK_EQ_INT(redis_fenced_save(&a, "r", ta, "{\"n\":2}", 7, 2, NULL, "1-2"), SYNC_ESTATE);
    state = raw_hget("room", "r", "state");
    CHECK_EQ_STR(state, "{\"n\":5}");
    free(state);
    char *version = raw_hget("room", "r", "version");
    CHECK_EQ_STR(version, "5");
    free(version);
    redis_conn_release(&a);
    redis_conn_release(&b);
}

/* At most once: the claim is fenced like the save (a stale token's claim is refused, even with a
 * forged lease), only ever raises `claimed` (ids compared as numbers, not as text), rides along
 * with a save, and a new owner loads it. */
static void claims_are_fenced_and_only_grow(void)
{
    new_prefix();
    redis_conn a, b;
    REQUIRE(conn_open(&a) == SYNC_OK);
    REQUIRE(conn_open(&b) == SYNC_OK);
    int64_t ta = 0, tb = 0;
    REQUIRE(redis_lease_acquire(&a, "/c", "node-a", 300, &ta) == SYNC_OK && ta > 0);
    CHECK_EQ_INT(redis_fenced_claim(&a, "/c", ta, "9-0"), SYNC_OK);
    char *claimed = raw_hget("room", "/c", "claimed");
    CHECK_EQ_STR(claimed, "9-0");
    free(claimed);
    /* never lowered; "10-0" is above "9-0" (as numbers, not as text) */
    CHECK_EQ_INT(redis_fenced_claim(&a, "/c", ta, "8-5"), SYNC_OK);
    claimed = raw_hget("room", "/c", "claimed");
    CHECK_EQ_STR(claimed, "9-0");
    free(claimed);
    CHECK_EQ_INT(redis_fenced_claim(&a, "/c", ta, "10-0"), SYNC_OK);
    claimed = raw_hget("room", "/c", "claimed");
    CHECK_EQ_STR(claimed, "10-0");
    free(claimed);
    /* a save claims the next entry in the same script */
    redis_save_req q = {.room = "/c",
                        .token = ta,
                        .json = "{\"n\":1}",
                        .len = 7,
                        .version = 1,
                        .applied = "10-0",
                        .claim = "10-1"};
    CHECK_EQ_INT(redis_fenced_save_publish_many(&a, &q, 1), SYNC_OK);
    CHECK_EQ_INT(q.rc, SYNC_OK);
    claimed = raw_hget("room", "/c", "claimed");
    CHECK_EQ_STR(claimed, "10-1");
    free(claimed);
    /* a stalls past its lease: its claim is refused, whether or not another node took over */
    check_sleep_ms(600);
    CHECK_EQ_INT(redis_fenced_claim(&a, "/c", ta, "11-0"), SYNC_ESTATE);
    CHECK(strstr(sync_error_last(), "fenced out") != NULL);
    /* the refusal names the request's own room and token */
    char want[64];
    snprintf(want, sizeof want, "room /c: entries not claimed: token %lld ", (long long)ta);
    CHECK(strstr(sync_error_last(), want) != NULL);
    REQUIRE(redis_lease_acquire(&b, "/c", "node-b", 5000, &tb) == SYNC_OK && tb > ta);
    char *json = NULL;
    int64_t v = -1;
    char epoch[64], applied[REDIS_STREAM_ID_MAX], got[REDIS_STREAM_ID_MAX];
    CHECK_EQ_INT(redis_fenced_load_claimed(&b, "/c", &json, &v, epoch, applied, got), SYNC_OK);
    CHECK_EQ_STR(applied, "10-0");
    CHECK_EQ_STR(got, "10-1"); /* b refuses 10-1: a may have run it */
    sync_free(json);
    CHECK_EQ_INT(redis_fenced_claim(&a, "/c", ta, "12-0"), SYNC_ESTATE);
    redis_claim_req many[3] = {{.room = "/c", .token = tb, .id = "12-0"},
                               {.room = "/c", .token = ta, .id = "13-0"},
                               {.room = "/c", .token = tb, .id = ""}};
    CHECK_EQ_INT(redis_fenced_claim_many(&b, many, 3), SYNC_OK);
    CHECK_EQ_INT(many[0].rc, SYNC_OK);
    CHECK_EQ_INT(many[1].rc, SYNC_ESTATE); /* the stale token fails alone */
    CHECK_EQ_INT(many[2].rc, SYNC_EINVAL);
    /* a lease forged back to a's token: the record carries b's later token, still refused */
    char lease[160], value[64];
    snprintf(lease, sizeof lease, "%slease:/c", prefix);
    snprintf(value, sizeof value, "%lld node-a", (long long)ta);
    const char *set[] = {"SET", lease, value};
    free(redis_raw(&redis, 3, set));
    CHECK_EQ_INT(redis_fenced_claim(&a, "/c", ta, "14-0"), SYNC_ESTATE);
    claimed = raw_hget("room", "/c", "claimed");
    CHECK_EQ_STR(claimed, "12-0");
    free(claimed);
    CHECK(redis_stream_id_cmp("9-0", "10-0") < 0 && redis_stream_id_cmp("10-2", "10-10") < 0 &&
          redis_stream_id_cmp("10-1", "10-1") == 0 && redis_stream_id_cmp("11-0", "10-9") > 0);
    /* a clean stop withdraws the claim down to `applied`, only with the lease's token */
    snprintf(value, sizeof value, "%lld node-b", (long long)tb);
    free(redis_raw(&redis, 3, set));
    CHECK_EQ_INT(redis_lease_release_unclaimed(&a, "/c", ta), SYNC_OK);
    claimed = raw_hget("room", "/c", "claimed");
    CHECK_EQ_STR(claimed, "12-0"); /* not its lease: untouched */
    free(claimed);
    CHECK_EQ_INT(redis_lease_release_unclaimed(&b, "/c", tb), SYNC_OK);
    claimed = raw_hget("room", "/c", "claimed");
    CHECK_EQ_STR(claimed, "10-0");
    free(claimed);
    const char *get[] = {"GET", lease};
    char *held = redis_get_bulk(&redis, 2, get);
    CHECK(held == NULL); /* released */
    free(held);
    CHECK_EQ_INT(redis_fenced_claim(&b, "bad\x01", tb, "1-0"), SYNC_EINVAL);
    CHECK_EQ_INT(redis_fenced_claim(&b, "/c", 0, "1-0"), SYNC_EINVAL);
    redis_conn_release(&a);
    redis_conn_release(&b);
}

/* Several rooms' saves in one round trip: each fenced on its own (a stale token fails alone), a
 * change published with its record's epoch, a refused message's save (publish off) not. */
static void saves_of_several_rooms_at_once(void)
{
    new_prefix();
    redis_conn a;
    REQUIRE(conn_open(&a) == SYNC_OK);
    int64_t t1 = 0, t2 = 0, t3 = 0;
    REQUIRE(redis_lease_acquire(&a, "/r1", "n", 5000, &t1) == SYNC_OK && t1 > 0);
    REQUIRE(redis_lease_acquire(&a, "/rooms/r2", "n", 5000, &t2) == SYNC_OK && t2 > 0);
    REQUIRE(redis_lease_acquire(&a, "r3", "n", 5000, &t3) == SYNC_OK && t3 > 0);
    REQUIRE(redis_fenced_save(&a, "/r1", t1, "{\"n\":0}", 7, 0, "EPOCH1", NULL) == SYNC_OK);
    /* a subscriber of the change channels */
    char pattern[64];
    snprintf(pattern, sizeof pattern, "%schanges:*", prefix);
    redis_conn sub;
    REQUIRE(conn_open(&sub) == SYNC_OK);
    REQUIRE(redis_conn_open(&sub) == SYNC_OK);
    redisReply *reply = redisCommand(sub.ctx, "PSUBSCRIBE %s", pattern);
    REQUIRE(reply != NULL);
    freeReplyObject(reply);
    redis_save_req reqs[4] = {
        {.room = "/r1",
         .token = t1,
         .json = "{\"n\":1}",
         .len = 7,
         .version = 1,
         .applied = "5-0",
         .publish = true},
        {.room = "/rooms/r2",
         .token = t2 + 1,
         .json = "{\"n\":9}",
         .len = 7,
         .version = 9,
         .applied = "6-0",
         .publish = true},
        {.room = "r3",
         .token = t3,
         .json = "{\"n\":0}",
         .len = 7,
         .version = 0,
         .applied = "7-0",
         .publish = false},
        {.room = "", .token = t3, .json = "{}", .len = 2, .version = 1, .publish = true},
    };
    CHECK_EQ_INT(redis_fenced_save_publish_many(&a, reqs, 4), SYNC_OK);
    CHECK_EQ_INT(reqs[0].rc, SYNC_OK);
    CHECK_EQ_INT(reqs[1].rc, SYNC_ESTATE); /* not its token */
    CHECK_EQ_INT(reqs[2].rc, SYNC_OK);
    CHECK_EQ_INT(reqs[3].rc, SYNC_EINVAL); /* a bad room fails alone */
    /* the replies come after every request was built: the last failure is the fenced-out one,
     * naming its own room and token */
    char want[96];
    snprintf(want, sizeof want, "room /rooms/r2 not saved: token %lld ", (long long)(t2 + 1));
    CHECK(strstr(sync_error_last(), want) != NULL);
    char *v = raw_hget("room", "/r1", "version");
    CHECK_EQ_STR(v, "1");
    free(v);
    v = raw_hget("room", "/r1", "applied");
    CHECK_EQ_STR(v, "5-0");
    free(v);
    v = raw_hget("room", "/rooms/r2", "version");
    CHECK(v == NULL); /* fenced out: nothing written */
    free(v);
    v = raw_hget("room", "r3", "applied");
    CHECK_EQ_STR(v, "7-0");
    free(v);
    /* exactly one publish: /r1's, with its record's epoch */
    REQUIRE(redisGetReply(sub.ctx, (void **)&reply) == REDIS_OK && reply);
    CHECK(reply->type == REDIS_REPLY_ARRAY && reply->elements == 4);
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 4)
        CHECK_EQ_STR(reply->element[3]->str, "1 EPOCH1 {\"n\":1}");
    freeReplyObject(reply);
    struct timeval quick = {0, 300 * 1000};
    redisSetTimeout(sub.ctx, quick);
    reply = NULL;
    CHECK(redisGetReply(sub.ctx, (void **)&reply) != REDIS_OK); /* nothing more */
    if (reply)
        freeReplyObject(reply);
    redis_conn_release(&sub);
    redis_conn_release(&a);
}

/* ---- forwarding, order and failover ------------------------------------------------------- */

enum { NODES = 3, PER_NODE = 150, TOTAL = NODES * PER_NODE, LEASE_MS = 400 };

typedef struct forwarder {
    int index;
    pthread_t thread;
    int failed;
} forwarder;

static void *forward_main(void *arg)
{
    forwarder *f = arg;
    redis_conn c;
    if (conn_open(&c) != SYNC_OK) {
        f->failed = 1;
        return NULL;
    }
    char node[16];
    snprintf(node, sizeof node, "node-%d", f->index);
    for (int i = 0; i < PER_NODE; i++) {
        char msg[64];
        int len = snprintf(msg, sizeof msg, "{\"type\":\"inc\",\"from\":%d}", f->index);
        if (redis_forward(&c, "room", node, msg, (size_t)len, NULL) != SYNC_OK)
            f->failed = 1;
        check_sleep_ms(2); /* spread over the failover */
    }
    redis_conn_release(&c);
    return NULL;
}

/* A node's view of the published changes: versions kept only when newer than the last, as a
 * follower replica does; a gap or a state that does not match its version is counted. */
typedef struct subscriber {
    pthread_t thread;
    atomic_int ready;
    long long last;
    int gaps;
    int mismatches;
    int failed;
} subscriber;

static void *subscribe_main(void *arg)
{
    subscriber *s = arg;
    redisContext *ctx = redisConnect("127.0.0.1", redis.port);
    if (!ctx || ctx->err) {
        s->failed = 1;
        atomic_store(&s->ready, 1);
        if (ctx)
            redisFree(ctx);
        return NULL;
    }
    char channel[160];
    snprintf(channel, sizeof channel, "%schanges:room", prefix);
    redisReply *r = redisCommand(ctx, "SUBSCRIBE %s", channel);
    if (!r)
        s->failed = 1;
    else
        freeReplyObject(r);
    atomic_store(&s->ready, 1);
    while (!s->failed) {
        void *got = NULL;
        if (redisGetReply(ctx, &got) != REDIS_OK || !got) {
            s->failed = 1;
            break;
        }
        r = got;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
            r->element[2]->type == REDIS_REPLY_STRING) {
            const char *text = r->element[2]->str;
            long long v = atoll(text);
            if (v < 0) { /* the test's end marker */
                freeReplyObject(r);
                break;
            }
            if (v > s->last) {
                if (v != s->last + 1)
                    s->gaps++;
                char expect[64];
                snprintf(expect, sizeof expect, "%lld {\"count\":%lld}", v, v);
                if (strcmp(text, expect) != 0)
                    s->mismatches++;
                s->last = v;
            }
        }
        freeReplyObject(r);
    }
    redisFree(ctx);
    return NULL;
}

/* An owner's loop: reads the stream after `applied`, applies each entry (count + 1, version + 1),
 * saves it with its id under `token`, then publishes it. Stops when `total` are applied, when
 * fenced out, or — with die_after > 0 — "dies" after applying that many entries, the last one in
 * memory only (never saved, never published), without releasing its lease. */
typedef struct owner {
    redis_conn *c;
    int64_t token;
    int64_t version; /* == count: each message adds one */
    char applied[REDIS_STREAM_ID_MAX];
    int applied_here;
    int die_after;
    struct timespec renewed; /* taken before the last renewal was sent */
    int fenced;
    int errors;
} owner;

static void own(owner *o, int total, int deadline_ms)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (o->version < total && check_elapsed_ms(&start) < deadline_ms) {
        redis_entry *entries = NULL;
        size_t n = 0;
        if (redis_stream_read(o->c, "room", o->applied, 32, 50, &entries, &n) != SYNC_OK) {
            o->errors++;
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            if (!entries[i].msg || !strstr(entries[i].msg, "\"inc\"")) {
                o->errors++;
                continue;
            }
            int64_t next = o->version + 1;
            o->applied_here++;
            if (o->die_after && o->applied_here == o->die_after) {
                redis_entries_free(entries, n);
                return; /* applied in memory, then killed before its save */
            }
            char json[64];
            int len = snprintf(json, sizeof json, "{\"count\":%lld}", (long long)next);
            int rc = redis_fenced_save(o->c, "room", o->token, json, (size_t)len, next, NULL,
                                       entries[i].id);
            if (rc == SYNC_ESTATE) {
                o->fenced = 1;
                redis_entries_free(entries, n);
                return;
            }
            if (rc != SYNC_OK) {
                o->errors++;
                redis_entries_free(entries, n);
                return;
            }
            o->version = next;
            snprintf(o->applied, sizeof o->applied, "%s", entries[i].id);
            if (redis_publish_change(o->c, "room", next, json, (size_t)len, NULL) != SYNC_OK)
                o->errors++;
            if (o->applied_here % 8 == 0) {
                struct timespec before;
                clock_gettime(CLOCK_MONOTONIC, &before);
                if (redis_lease_renew(o->c, "room", o->token, LEASE_MS) == SYNC_OK)
                    o->renewed = before;
                else
                    o->fenced = 1;
            }
        }
        redis_entries_free(entries, n);
        if (o->fenced)
            return;
    }
}

static void forwarded_messages_survive_a_dead_owner(void)
{
    new_prefix();
    subscriber sub = {0};
    REQUIRE(pthread_create(&sub.thread, NULL, subscribe_main, &sub) == 0);
    while (!atomic_load(&sub.ready))
        check_sleep_ms(5);
    REQUIRE(!sub.failed);

    redis_conn ca, cb;
    REQUIRE(conn_open(&ca) == SYNC_OK);
    REQUIRE(conn_open(&cb) == SYNC_OK);
    owner a = {.c = &ca, .die_after = TOTAL / 3};
    snprintf(a.applied, sizeof a.applied, "0-0");
    clock_gettime(CLOCK_MONOTONIC, &a.renewed);
    REQUIRE(redis_lease_acquire(&ca, "room", "node-a", LEASE_MS, &a.token) == SYNC_OK);
    REQUIRE(a.token > 0);

    forwarder f[NODES];
    for (int i = 0; i < NODES; i++) {
        f[i] = (forwarder){.index = i};
        REQUIRE(pthread_create(&f[i].thread, NULL, forward_main, &f[i]) == 0);
    }

    own(&a, TOTAL, 30000);
    CHECK_EQ_INT(a.errors, 0);
    CHECK(!a.fenced);
    CHECK_EQ_INT(a.version, TOTAL / 3 - 1); /* the last one died unsaved */
    struct timespec died;
    clock_gettime(CLOCK_MONOTONIC, &died);

    /* b, a node with clients in the room, tries the lease until a's expires. */
    owner b = {.c = &cb};
    while (check_elapsed_ms(&died) < 10000) {
        REQUIRE(redis_lease_acquire(&cb, "room", "node-b", LEASE_MS, &b.token) == SYNC_OK);
        if (b.token)
            break;
        check_sleep_ms(20);
    }
    long long failover_ms = check_elapsed_ms(&died);
    REQUIRE(b.token > a.token);
    printf("    failover: lease of %d ms taken over after %lld ms\n", LEASE_MS, failover_ms);
    /* Not before the lease ran out: Redis counts it from when the renewal arrived, after
     * `renewed` was taken. */
    CHECK(check_elapsed_ms(&a.renewed) >= LEASE_MS);
    CHECK(failover_ms < LEASE_MS + 2000);

    char *json = NULL;
    char epoch[64];
    REQUIRE(redis_fenced_load(&cb, "room", &json, &b.version, epoch, b.applied) == SYNC_OK);
    CHECK_EQ_INT(b.version, a.version);
    CHECK_EQ_STR(b.applied, a.applied);
    /* The new owner republishes what it took over: a node that missed a's last publish (a died
     * between its save and its publish) catches up; the others drop it as not newer. */
    if (json)
        CHECK_EQ_INT(redis_publish_change(&cb, "room", b.version, json, strlen(json), NULL),
                     SYNC_OK);
    sync_free(json);

    own(&b, TOTAL, 60000);
    for (int i = 0; i < NODES; i++) {
        pthread_join(f[i].thread, NULL);
        CHECK(!f[i].failed);
    }
    own(&b, TOTAL, 10000); /* what came after b caught up */
    CHECK_EQ_INT(b.errors, 0);
    CHECK(!b.fenced);
    CHECK_EQ_INT(b.version, TOTAL);

    /* a wakes up with the message it applied in memory and saves it: fenced out. */
    char *late = "{\"count\":999}";
    CHECK_EQ_INT(
        redis_fenced_save(&ca, "room", a.token, late, strlen(late), a.version + 1, NULL, "9-9"),
        SYNC_ESTATE);
    char *state = raw_hget("room", "room", "state");
    char expect[32];
    snprintf(expect, sizeof expect, "{\"count\":%d}", TOTAL);
    CHECK_EQ_STR(state, expect);
    free(state);

    /* Every message applied once: the stream holds nothing after what b applied. */
    redis_entry *rest = NULL;
    size_t n = 9;
    CHECK_EQ_INT(redis_stream_read(&cb, "room", b.applied, 10, 0, &rest, &n), SYNC_OK);
    CHECK_EQ_INT(n, 0);
    redis_entries_free(rest, n);

    const char *end = "-1 end";
    char channel[160];
    snprintf(channel, sizeof channel, "%schanges:room", prefix);
    const char *pub[] = {"PUBLISH", channel, end};
    free(redis_raw(&redis, 3, pub));
    pthread_join(sub.thread, NULL);
    CHECK(!sub.failed);
    CHECK_EQ_INT(sub.gaps, 0);
    CHECK_EQ_INT(sub.mismatches, 0);
    CHECK_EQ_INT(sub.last, TOTAL);
    redis_conn_release(&ca);
    redis_conn_release(&cb);
}

static void bad_input_and_dead_redis(void)
{
    new_prefix();
    redis_conn c;
    REQUIRE(conn_open(&c) == SYNC_OK);
    redis_entry *e = NULL;
    size_t n = 0;
    CHECK_EQ_INT(redis_stream_read(&c, "room", NULL, 10, 0, &e, &n), SYNC_EINVAL);
    CHECK_EQ_INT(redis_stream_read(&c, "room", "0-0", 0, 0, &e, &n), SYNC_EINVAL);
    CHECK_EQ_INT(redis_forward(&c, "room", "n", NULL, 0, NULL), SYNC_EINVAL);
    CHECK_EQ_INT(redis_publish_change(&c, "", 1, "{}", 2, NULL), SYNC_EINVAL);
    /* An id that is not a stream id: Redis's error, as SYNC_EIO with its text. */
    CHECK_EQ_INT(redis_stream_read(&c, "room", "nope", 10, 0, &e, &n), SYNC_EIO);
    CHECK(e == NULL && n == 0);
    redis_conn_release(&c);
}

/* ---- races and restarts ------------------------------------------------------------------- */

enum { RACERS = 8 };

typedef struct racer {
    pthread_t thread;
    int index;
    atomic_int *go;
    int64_t token;
    int rc;
} racer;

static void *race_main(void *arg)
{
    racer *r = arg;
    redis_conn c;
    r->rc = conn_open(&c);
    if (r->rc != SYNC_OK)
        return NULL;
    r->rc = redis_conn_open(&c); /* connected before the start, so they all ask at once */
    char node[16];
    snprintf(node, sizeof node, "racer-%d", r->index);
    while (r->rc == SYNC_OK && !atomic_load(r->go))
        sched_yield();
    if (r->rc == SYNC_OK)
        r->rc = redis_lease_acquire(&c, "race", node, 5000, &r->token);
    redis_conn_release(&c);
    return NULL;
}

static void nodes_racing_for_a_room_get_one_lease(void)
{
    for (int round = 0; round < 5; round++) {
        new_prefix();
        atomic_int go = 0;
        racer r[RACERS];
        for (int i = 0; i < RACERS; i++) {
            r[i] = (racer){.index = i, .go = &go};
            REQUIRE(pthread_create(&r[i].thread, NULL, race_main, &r[i]) == 0);
        }
        check_sleep_ms(100);
        atomic_store(&go, 1);
        int winners = 0;
        for (int i = 0; i < RACERS; i++) {
            pthread_join(r[i].thread, NULL);
            CHECK_EQ_INT(r[i].rc, SYNC_OK);
            if (r[i].token > 0) {
                winners++;
                CHECK_EQ_INT(r[i].token, 1);
            }
        }
        CHECK_EQ_INT(winners, 1);
    }
}

/* Redis killed and restarted (AOF, appendfsync always): the lease and the token counter come
 * back, so the holder keeps its room and a later owner's token is still larger than every
 * earlier one — tokens never go back, which fencing relies on. */
static void tokens_survive_a_redis_restart(void)
{
    new_prefix();
    redis_conn a, b;
    REQUIRE(conn_open(&a) == SYNC_OK);
    REQUIRE(conn_open(&b) == SYNC_OK);
    int64_t t1 = 0, t2 = 0, tb = 0;
    REQUIRE(redis_lease_acquire(&a, "r", "node-a", 200, &t1) == SYNC_OK && t1 > 0);
    check_sleep_ms(400);
    REQUIRE(redis_lease_acquire(&a, "r", "node-a", 30000, &t2) == SYNC_OK);
    CHECK(t2 > t1);
    CHECK_EQ_INT(redis_fenced_save(&a, "r", t2, "{\"n\":1}", 7, 1, NULL, "1-1"), SYNC_OK);
    redis_kill(&redis);
    /* While Redis is down: an error, never a lease or a write. */
    CHECK_EQ_INT(redis_lease_renew(&a, "r", t2, 30000), SYNC_EIO);
    CHECK_EQ_INT(redis_fenced_save(&a, "r", t2, "{\"n\":2}", 7, 2, NULL, "1-2"), SYNC_EIO);
    REQUIRE(redis_restart(&redis) == 0);
    CHECK_EQ_INT(redis_lease_acquire(&b, "r", "node-b", 5000, &tb), SYNC_OK);
    CHECK_EQ_INT(tb, 0); /* a still holds it */
    CHECK_EQ_INT(redis_lease_renew(&a, "r", t2, 30000), SYNC_OK);
    CHECK_EQ_INT(redis_lease_release(&a, "r", t2), SYNC_OK);
    CHECK_EQ_INT(redis_lease_acquire(&b, "r", "node-b", 5000, &tb), SYNC_OK);
    CHECK(tb > t2);
    CHECK_EQ_INT(redis_fenced_save(&a, "r", t2, "{\"n\":3}", 7, 3, NULL, "1-3"), SYNC_ESTATE);
    char *json = NULL;
    int64_t v = 0;
    char applied[REDIS_STREAM_ID_MAX];
    CHECK_EQ_INT(redis_fenced_load(&b, "r", &json, &v, NULL, applied), SYNC_OK);
    CHECK_EQ_STR(json, "{\"n\":1}");
    CHECK_EQ_INT(v, 1);
    CHECK_EQ_STR(applied, "1-1");
    sync_free(json);
    redis_conn_release(&a);
    redis_conn_release(&b);
}

int main(void)
{
    if (redis_start(&redis, "redis_cluster") != 0)
        return 1;
    RUN(one_holder_and_tokens_grow);
    RUN(stale_owner_is_fenced_out);
    RUN(saves_of_several_rooms_at_once);
    RUN(claims_are_fenced_and_only_grow);
    RUN(forwarded_messages_survive_a_dead_owner);
    RUN(bad_input_and_dead_redis);
    RUN(nodes_racing_for_a_room_get_one_lease);
    RUN(tokens_survive_a_redis_restart);
    redis_stop(&redis);
    return check_summary();
}

#else

int main(void)
{
    printf("SKIP: libsync was built without Redis support\n");
    return 77;
}

#endif

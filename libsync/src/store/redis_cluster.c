/* Lease, fencing, forwarding and publishing for a room served by several nodes (redis_cluster.h).
 * Each step that reads and then writes is one Lua script, so no other node's command runs between
 * the check and the write. */
#include "redis_cluster.h"

#include "error.h"
#include "libsync/common.h"
#include "libsync/rooms.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef LIBSYNC_HAVE_REDIS

/* KEYS: lease, fence counter. ARGV: node, ttl. A lease held by the same node is extended with its
 * token; a free one gets the next token, which no node had for this room. */
static const char ACQUIRE_LUA[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur then\n"
    "  local t, n = string.match(cur, '^(%d+) (.*)$')\n"
    "  if n == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]); return tonumber(t) end\n"
    "  return 0\n"
    "end\n"
    "local t = redis.call('INCR', KEYS[2])\n"
    "redis.call('SET', KEYS[1], t .. ' ' .. ARGV[1], 'PX', ARGV[2])\n"
    "return t\n";

/* KEYS: lease. ARGV: token, ttl (renew) or token (release). */
static const char RENEW_LUA[] = "local cur = redis.call('GET', KEYS[1])\n"
                                "if cur and string.match(cur, '^(%d+) ') == ARGV[1] then\n"
                                "  redis.call('PEXPIRE', KEYS[1], ARGV[2]); return 1\n"
                                "end\n"
                                "return 0\n";

static const char RELEASE_LUA[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur and string.match(cur, '^(%d+) ') == ARGV[1] then redis.call('DEL', KEYS[1]) end\n"
    "return 1\n";

/* The fence of every write of the lease holder (KEYS[1] the lease, KEYS[2] the record, ARGV[1]
 * the token): the lease must be held with the token (a stalled owner whose lease expired writes
 * nothing, even when nobody took the room yet: it must take the lease again and reload), and the
 * record must not carry a later token (belt and braces: tokens only grow). */
#define FENCE_LUA                                                                                  \
    "local cur = redis.call('GET', KEYS[1])\n"                                                     \
    "if not cur or string.match(cur, '^(%d+) ') ~= ARGV[1] then return 0 end\n"                    \
    "local f = redis.call('HGET', KEYS[2], 'fence')\n"                                             \
    "if f and tonumber(f) > tonumber(ARGV[1]) then return 0 end\n"

int redis_cluster_key_check(const char *room)
{
    if (!room)
        return sync__fail(SYNC_EINVAL, "room is NULL");
    /* A room name, or a server's key for a room (its URL path: "/", "/rooms/NAME"). */
    if (!strchr(room, '/'))
        return sync_room_name_check(room);
    size_t len = strlen(room);
    if (len > REDIS_CLUSTER_KEY_MAX)
        return sync__fail(SYNC_EINVAL, "room key longer than %d bytes", REDIS_CLUSTER_KEY_MAX);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)room[i] < 0x20 || room[i] == 0x7f)
            return sync__fail(SYNC_EINVAL, "room key has a control character");
    return SYNC_OK;
}

/* Raises the record's `claimed` to the stream id `claim`, never lowers it: a claim a failed owner
 * left stays until the entries it covers are applied. Ids compare as numbers ("<ms>-<seq>"). */
#define CLAIM_RAISE_LUA                                                                            \
    "  local c = redis.call('HGET', KEYS[2], 'claimed')\n"                                         \
    "  local up = not c\n"                                                                         \
    "  if c then\n"                                                                                \
    "    local am, as = string.match(c, '^(%d+)-(%d+)$')\n"                                        \
    "    local bm, bs = string.match(claim, '^(%d+)-(%d+)$')\n"                                    \
    "    if not am then up = true\n"                                                               \
    "    elseif bm then\n"                                                                         \
    "      if #am ~= #bm then up = #am < #bm elseif am ~= bm then up = am < bm\n"                  \
    "      elseif #as ~= #bs then up = #as < #bs else up = as < bs end\n"                          \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  if up then redis.call('HSET', KEYS[2], 'claimed', claim) end\n"

/* KEYS: lease, record, stream. ARGV: token, state, version, epoch ('' none), applied ('' none),
 * now, channel ('' none), claim ('' none). Fenced (FENCE_LUA); the claim raised as CLAIM_LUA's;
 * then, with a channel, PUBLISH "<version> <epoch> <state>" on it in the same script: a change is
 * published exactly when it was saved, in one round trip. */
static const char SAVE_PUBLISH_LUA[] = FENCE_LUA
    "redis.call('HSET', KEYS[2], 'state', ARGV[2], 'version', ARGV[3], 'updated_at', ARGV[6],\n"
    "           'fence', ARGV[1])\n"
    "if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], 'epoch', ARGV[4]) end\n"
    "if ARGV[5] ~= '' then\n"
    "  redis.call('HSET', KEYS[2], 'applied', ARGV[5])\n"
    "  redis.call('XTRIM', KEYS[3], 'MINID', ARGV[5])\n"
    "end\n"
    "if ARGV[8] and ARGV[8] ~= '' then\n"
    "  local claim = ARGV[8]\n" CLAIM_RAISE_LUA "end\n"
    "if ARGV[7] ~= '' then\n"
    "  local ep = redis.call('HGET', KEYS[2], 'epoch') or ''\n"
    "  redis.call('PUBLISH', ARGV[7], ARGV[3] .. ' ' .. ep .. ' ' .. ARGV[2])\n"
    "end\n"
    "return 1\n";

/* KEYS: lease, record. ARGV: token, stream id. The claim (at-most-once): the record says the
 * owner may be running the entries up to `claimed` before it runs them, fenced like the save. */
static const char CLAIM_LUA[] = FENCE_LUA "redis.call('HSET', KEYS[2], 'fence', ARGV[1])\n"
                                          "local claim = ARGV[2]\n" CLAIM_RAISE_LUA "return 1\n";

static int check_room(const char *room)
{
    return redis_cluster_key_check(room);
}

static int check_node(const char *node)
{
    size_t len = node ? strlen(node) : 0;
    if (len == 0 || len > REDIS_NODE_ID_MAX)
        return sync__fail(SYNC_EINVAL, "node id must be 1 to %d bytes", REDIS_NODE_ID_MAX);
    for (size_t i = 0; i < len; i++)
        if (node[i] <= ' ' || node[i] > '~')
            return sync__fail(SYNC_EINVAL, "node id must be printable ASCII without spaces");
    return SYNC_OK;
}

static char *key_of(const redis_conn *c, const char *kind, const char *room)
{
    char *key = NULL;
    return asprintf(&key, "%s%s:%s", c->prefix, kind, room) < 0 ? NULL : key;
}

/* Runs `script` on `nkeys` keys of `room` (kinds[]) and `nargs` arguments; the integer it returns
 * into *out. */
static int eval_int(redis_conn *c, const char *script, const char *room, int nkeys,
                    const char *const *kinds, int nargs, const char **args, const size_t *lens,
                    long long *out, const char *what)
{
    const char *argv[16];
    size_t argvlen[16];
    if (nkeys < 0 || nkeys > 3 || nargs < 0 || 3 + nkeys + nargs > 16)
        return sync__fail(SYNC_EINVAL, "too many script arguments");
    char *keys[3] = {NULL, NULL, NULL};
    char nbuf[16];
    snprintf(nbuf, sizeof nbuf, "%d", nkeys);
    int argc = 0;
    argv[argc] = "EVAL";
    argvlen[argc++] = 4;
    argv[argc] = script;
    argvlen[argc++] = strlen(script);
    argv[argc] = nbuf;
    argvlen[argc++] = strlen(nbuf);
    int rc = SYNC_OK;
    for (int i = 0; i < nkeys; i++) {
        keys[i] = key_of(c, kinds[i], room);
        if (!keys[i]) {
            rc = sync__fail(SYNC_ENOMEM, "out of memory");
            goto done;
        }
        argv[argc] = keys[i];
        argvlen[argc++] = strlen(keys[i]);
    }
    for (int i = 0; i < nargs; i++) {
        argv[argc] = args[i];
        argvlen[argc++] = lens ? lens[i] : strlen(args[i]);
    }
    redisReply *reply = NULL;
    rc = redis_conn_command(c, &reply, what, argc, argv, argvlen);
    if (rc == SYNC_OK) {
        if (reply->type == REDIS_REPLY_INTEGER)
            *out = reply->integer;
        else
            rc = redis_conn_reply_fail(c, reply, what);
        freeReplyObject(reply);
    }
done:
    for (int i = 0; i < nkeys; i++)
        free(keys[i]);
    return rc;
}

int redis_lease_acquire(redis_conn *c, const char *room, const char *node, int ttl_ms,
                        int64_t *out_token)
{
    *out_token = 0;
    int rc = check_room(room);
    if (rc == SYNC_OK)
        rc = check_node(node);
    if (rc != SYNC_OK)
        return rc;
    if (ttl_ms <= 0)
        return sync__fail(SYNC_EINVAL, "lease must last at least 1 ms");
    static const char *const kinds[] = {"lease", "fence"};
    char tbuf[16];
    snprintf(tbuf, sizeof tbuf, "%d", ttl_ms);
    const char *args[] = {node, tbuf};
    long long token = 0;
    rc = eval_int(c, ACQUIRE_LUA, room, 2, kinds, 2, args, NULL, &token,
                  "cannot take the lease of a room in");
    if (rc == SYNC_OK)
        *out_token = (int64_t)token;
    return rc;
}

int redis_lease_renew(redis_conn *c, const char *room, int64_t token, int ttl_ms)
{
    int rc = check_room(room);
    if (rc != SYNC_OK)
        return rc;
    if (ttl_ms <= 0 || token <= 0)
        return sync__fail(SYNC_EINVAL, "bad lease token or duration");
    static const char *const kinds[] = {"lease"};
    char kbuf[24], tbuf[16];
    snprintf(kbuf, sizeof kbuf, "%lld", (long long)token);
    snprintf(tbuf, sizeof tbuf, "%d", ttl_ms);
    const char *args[] = {kbuf, tbuf};
    long long held = 0;
    rc = eval_int(c, RENEW_LUA, room, 1, kinds, 2, args, NULL, &held,
                  "cannot renew the lease of a room in");
    if (rc == SYNC_OK && !held)
        rc = sync__fail(SYNC_ESTATE, "the lease of room %s is no longer held with token %lld", room,
                        (long long)token);
    return rc;
}

int redis_lease_release(redis_conn *c, const char *room, int64_t token)
{
    int rc = check_room(room);
    if (rc != SYNC_OK)
        return rc;
    static const char *const kinds[] = {"lease"};
    char kbuf[24];
    snprintf(kbuf, sizeof kbuf, "%lld", (long long)token);
    const char *args[] = {kbuf};
    long long ignored = 0;
    return eval_int(c, RELEASE_LUA, room, 1, kinds, 1, args, NULL, &ignored,
                    "cannot release the lease of a room in");
}

/* KEYS: lease, record. ARGV: token. RELEASE_LUA, and first the claim withdrawn down to `applied`
 * (the owner ran and saved everything up to it, and runs nothing now). */
static const char RELEASE_UNCLAIM_LUA[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if not cur or string.match(cur, '^(%d+) ') ~= ARGV[1] then return 0 end\n"
    "local f = redis.call('HGET', KEYS[2], 'fence')\n"
    "if not f or tonumber(f) <= tonumber(ARGV[1]) then\n"
    "  local a = redis.call('HGET', KEYS[2], 'applied')\n"
    "  if a then redis.call('HSET', KEYS[2], 'claimed', a)\n"
    "  else redis.call('HDEL', KEYS[2], 'claimed') end\n"
    "end\n"
    "redis.call('DEL', KEYS[1])\n"
    "return 1\n";

int redis_lease_release_unclaimed(redis_conn *c, const char *room, int64_t token)
{
    int rc = check_room(room);
    if (rc != SYNC_OK)
        return rc;
    static const char *const kinds[] = {"lease", "room"};
    char kbuf[24];
    snprintf(kbuf, sizeof kbuf, "%lld", (long long)token);
    const char *args[] = {kbuf};
    long long ignored = 0;
    return eval_int(c, RELEASE_UNCLAIM_LUA, room, 2, kinds, 1, args, NULL, &ignored,
                    "cannot release the lease of a room in");
}

int redis_fenced_save(redis_conn *c, const char *room, int64_t token, const char *json, size_t len,
                      int64_t version, const char *epoch, const char *applied)
{
    return redis_fenced_save_publish(c, room, token, json, len, version, epoch, applied, false);
}

int redis_fenced_save_publish(redis_conn *c, const char *room, int64_t token, const char *json,
                              size_t len, int64_t version, const char *epoch, const char *applied,
                              bool publish)
{
    redis_save_req q = {.room = room,
                        .token = token,
                        .json = json,
                        .len = len,
                        .version = version,
                        .epoch = epoch,
                        .applied = applied,
                        .publish = publish};
    int rc = redis_fenced_save_publish_many(c, &q, 1);
    return rc != SYNC_OK ? rc : q.rc;
}

/* The 14 arguments of one save (EVAL script 3 keys 8 args), the strings it owns in `owned`. */
enum { SAVE_ARGC = 14, SAVE_OWNED = 8 };

static int save_build(redis_conn *c, const void *req, const char **argv, size_t *lens, char **owned)
{
    const redis_save_req *q = req;
    int rc = check_room(q->room);
    if (rc != SYNC_OK)
        return rc;
    if (q->token <= 0 || !q->json)
        return sync__fail(SYNC_EINVAL, "bad token or no state");
    if (asprintf(&owned[0], "%slease:%s", c->prefix, q->room) < 0 ||
        asprintf(&owned[1], "%sroom:%s", c->prefix, q->room) < 0 ||
        asprintf(&owned[2], "%sstream:%s", c->prefix, q->room) < 0 ||
        asprintf(&owned[3], "%lld", (long long)q->token) < 0 ||
        asprintf(&owned[4], "%lld", (long long)q->version) < 0 ||
        asprintf(&owned[5], "%lld", (long long)sync_wall_ms()) < 0 ||
        asprintf(&owned[6], "%schanges:%s", c->prefix, q->room) < 0)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    const char *a[SAVE_ARGC] = {"EVAL",
                                SAVE_PUBLISH_LUA,
                                "3",
                                owned[0],
                                owned[1],
                                owned[2],
                                owned[3],
                                q->json,
                                owned[4],
                                q->epoch ? q->epoch : "",
                                q->applied ? q->applied : "",
                                owned[5],
                                q->publish ? owned[6] : "",
                                q->claim ? q->claim : ""};
    for (int i = 0; i < SAVE_ARGC; i++) {
        argv[i] = a[i];
        lens[i] = i == 7 ? q->len : strlen(a[i]);
    }
    return SYNC_OK;
}

/* A pipelined batch of fenced scripts, one a request, as the saves and the claims send them.
 * Every request type has a room, a token and an outcome rc, found by their offsets. */
typedef struct fenced_batch {
    size_t size;            /* of one request */
    size_t room, token, rc; /* offsets of the request's members */
    int argc, owned;        /* the arguments of one command, the strings it owns */
    /* Checks the request and writes its command: SYNC_OK, or the failure of that request alone. */
    int (*build)(redis_conn *c, const void *req, const char **argv, size_t *lens, char **owned);
    const char *not_done;            /* what a fenced-out request did not do, after its room */
    const char *failed, *failed_one; /* the failure of the batch, of one command */
} fenced_batch;

#define FENCED_REQ(type)                                                                           \
    .size = sizeof(type), .room = offsetof(type, room), .token = offsetof(type, token),            \
    .rc = offsetof(type, rc)

static char *fenced_req(const fenced_batch *b, void *reqs, size_t i)
{
    return (char *)reqs + i * b->size;
}

static int *fenced_rc(const fenced_batch *b, void *reqs, size_t i)
{
    return (int *)(fenced_req(b, reqs, i) + b->rc);
}

/* Runs the commands of the requests that build, each outcome set from its reply (0: fenced
 * out). SYNC_OK when every reply came; otherwise the connection's failure, every outcome too. */
static int fenced_batch_run(redis_conn *c, const fenced_batch *b, void *reqs, size_t n)
{
    if (n == 0)
        return SYNC_OK;
    const size_t argc_each = (size_t)b->argc, owned_each = (size_t)b->owned;
    const char **argv = calloc(n * argc_each, sizeof *argv);
    size_t *lens = calloc(n * argc_each, sizeof *lens);
    char **owned = calloc(n * owned_each, sizeof *owned);
    const char *const **argvs = calloc(n, sizeof *argvs);
    const size_t **lensv = calloc(n, sizeof *lensv);
    int *argc = calloc(n, sizeof *argc);
    redisReply **replies = calloc(n, sizeof *replies);
    size_t *index = calloc(n, sizeof *index); /* the request of each command sent */
    int rc = SYNC_OK;
    if (!argv || !lens || !owned || !argvs || !lensv || !argc || !replies || !index)
        rc = sync__fail(SYNC_ENOMEM, "out of memory");
    size_t sent = 0;
    for (size_t i = 0; rc == SYNC_OK && i < n; i++) {
        int *q_rc = fenced_rc(b, reqs, i);
        *q_rc = b->build(c, fenced_req(b, reqs, i), &argv[i * argc_each], &lens[i * argc_each],
                         &owned[i * owned_each]);
        if (*q_rc != SYNC_OK)
            continue; /* a bad request fails alone */
        argvs[sent] = &argv[i * argc_each];
        lensv[sent] = &lens[i * argc_each];
        argc[sent] = b->argc;
        index[sent++] = i;
    }
    if (rc == SYNC_OK && sent)
        rc = redis_conn_run(c, sent, argc, argvs, lensv, replies,
                            sent == 1 ? b->failed_one : b->failed);
    for (size_t k = 0; k < sent; k++) {
        const char *q = fenced_req(b, reqs, index[k]);
        int *q_rc = fenced_rc(b, reqs, index[k]);
        const char *room = *(const char *const *)(q + b->room);
        const int64_t token = *(const int64_t *)(q + b->token);
        const redisReply *r = replies[k];
        if (rc != SYNC_OK)
            *q_rc = rc;
        else if (r->type == REDIS_REPLY_INTEGER)
            *q_rc = r->integer ? SYNC_OK
                               : sync__fail(SYNC_ESTATE,
                                            "room %s%s: token %lld no longer holds its lease "
                                            "(fenced out)",
                                            room, b->not_done, (long long)token);
        else
            *q_rc = redis_conn_reply_fail(c, r, b->failed_one);
        if (replies[k])
            freeReplyObject(replies[k]);
    }
    if (rc != SYNC_OK)
        for (size_t i = 0; i < n; i++)
            *fenced_rc(b, reqs, i) = rc;
    for (size_t i = 0; owned && i < n * owned_each; i++)
        free(owned[i]);
    free(argv);
    free(lens);
    free(owned);
    free(argvs);
    free(lensv);
    free(argc);
    free(replies);
    free(index);
    return rc;
}

int redis_fenced_save_publish_many(redis_conn *c, redis_save_req *reqs, size_t n)
{
    static const fenced_batch batch = {FENCED_REQ(redis_save_req),
                                       .argc = SAVE_ARGC,
                                       .owned = SAVE_OWNED,
                                       .build = save_build,
                                       .not_done = " not saved",
                                       .failed = "cannot save rooms to",
                                       .failed_one = "cannot save a room to"};
    return fenced_batch_run(c, &batch, reqs, n);
}

int redis_stream_id_cmp(const char *a, const char *b)
{
    unsigned long long am = 0, as = 0, bm = 0, bs = 0;
    sscanf(a, "%llu-%llu", &am, &as);
    sscanf(b, "%llu-%llu", &bm, &bs);
    if (am != bm)
        return am < bm ? -1 : 1;
    return as < bs ? -1 : as > bs ? 1 : 0;
}

/* The 7 arguments of one claim (EVAL script 2 keys 2 args), the strings it owns in `owned`. */
enum { CLAIM_ARGC = 7, CLAIM_OWNED = 3 };

static int claim_build(redis_conn *c, const void *req, const char **argv, size_t *lens,
                       char **owned)
{
    const redis_claim_req *q = req;
    int rc = check_room(q->room);
    if (rc != SYNC_OK)
        return rc;
    if (q->token <= 0 || !q->id || !q->id[0])
        return sync__fail(SYNC_EINVAL, "bad token or no stream id");
    if (asprintf(&owned[0], "%slease:%s", c->prefix, q->room) < 0 ||
        asprintf(&owned[1], "%sroom:%s", c->prefix, q->room) < 0 ||
        asprintf(&owned[2], "%lld", (long long)q->token) < 0)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    const char *a[CLAIM_ARGC] = {"EVAL", CLAIM_LUA, "2", owned[0], owned[1], owned[2], q->id};
    for (int k = 0; k < CLAIM_ARGC; k++) {
        argv[k] = a[k];
        lens[k] = strlen(a[k]);
    }
    return SYNC_OK;
}

int redis_fenced_claim_many(redis_conn *c, redis_claim_req *reqs, size_t n)
{
    static const fenced_batch batch = {FENCED_REQ(redis_claim_req),
                                       .argc = CLAIM_ARGC,
                                       .owned = CLAIM_OWNED,
                                       .build = claim_build,
                                       .not_done = ": entries not claimed",
                                       .failed = "cannot claim entries in",
                                       .failed_one = "cannot claim entries in"};
    return fenced_batch_run(c, &batch, reqs, n);
}

int redis_fenced_claim(redis_conn *c, const char *room, int64_t token, const char *id)
{
    redis_claim_req q = {.room = room, .token = token, .id = id};
    int rc = redis_fenced_claim_many(c, &q, 1);
    return rc != SYNC_OK ? rc : q.rc;
}

int redis_fenced_load(redis_conn *c, const char *room, char **out_state_json, int64_t *out_version,
                      char *epoch, char *applied)
{
    return redis_fenced_load_claimed(c, room, out_state_json, out_version, epoch, applied, NULL);
}

/* A reply field that is a stream id into `out`; nil leaves it. */
static int stream_id_field(redis_conn *c, const redisReply *f, char *out)
{
    if (f->type == REDIS_REPLY_STRING && f->len < REDIS_STREAM_ID_MAX) {
        memcpy(out, f->str, f->len);
        out[f->len] = '\0';
        return SYNC_OK;
    }
    return f->type == REDIS_REPLY_NIL ? SYNC_OK : redis_conn_reply_fail(c, f, "cannot load from");
}

int redis_fenced_load_claimed(redis_conn *c, const char *room, char **out_state_json,
                              int64_t *out_version, char *epoch, char *applied, char *claimed)
{
    *out_state_json = NULL;
    *out_version = 0;
    snprintf(applied, REDIS_STREAM_ID_MAX, "0-0");
    if (claimed)
        snprintf(claimed, REDIS_STREAM_ID_MAX, "0-0");
    int rc = check_room(room);
    if (rc != SYNC_OK)
        return rc;
    char *key = key_of(c, "room", room);
    if (!key)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    char name[SYNC_ROOM_NAME_MAX + 16];
    snprintf(name, sizeof name, "room %s", room);
    rc = redis_record_load(c, key, NULL, NULL, name, out_state_json, out_version, epoch);
    if (rc == SYNC_OK) {
        /* A second read is safe: only the lease holder writes the record, and that is us. */
        const char *argv[] = {"HMGET", key, "applied", "claimed"};
        redisReply *reply = NULL;
        rc = redis_conn_command(c, &reply, "cannot load from", 4, argv, NULL);
        if (rc == SYNC_OK) {
            if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2) {
                rc = stream_id_field(c, reply->element[0], applied);
                if (rc == SYNC_OK && claimed)
                    rc = stream_id_field(c, reply->element[1], claimed);
            } else {
                rc = redis_conn_reply_fail(c, reply, "cannot load from");
            }
            freeReplyObject(reply);
        }
        if (rc != SYNC_OK) {
            sync_free(*out_state_json);
            *out_state_json = NULL;
            *out_version = 0;
        }
    }
    free(key);
    return rc;
}

int redis_forward(redis_conn *c, const char *room, const char *node, const char *msg, size_t len,
                  char *out_id)
{
    if (out_id)
        out_id[0] = '\0';
    int rc = check_room(room);
    if (rc == SYNC_OK)
        rc = check_node(node);
    if (rc != SYNC_OK)
        return rc;
    if (!msg)
        return sync__fail(SYNC_EINVAL, "message is NULL");
    char *key = key_of(c, "stream", room);
    if (!key)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    const char *argv[] = {"XADD", key, "*", "node", node, "msg", msg};
    size_t lens[] = {4, strlen(key), 1, 4, strlen(node), 3, len};
    redisReply *reply = NULL;
    rc = redis_conn_command(c, &reply, "cannot forward a message through", 7, argv, lens);
    if (rc == SYNC_OK) {
        if (reply->type != REDIS_REPLY_STRING || reply->len >= REDIS_STREAM_ID_MAX)
            rc = redis_conn_reply_fail(c, reply, "cannot forward a message through");
        else if (out_id) {
            memcpy(out_id, reply->str, reply->len);
            out_id[reply->len] = '\0';
        }
        freeReplyObject(reply);
    }
    free(key);
    return rc;
}

void redis_entries_free(redis_entry *entries, size_t count)
{
    if (!entries)
        return;
    for (size_t i = 0; i < count; i++) {
        sync_free(entries[i].msg);
        sync_free(entries[i].identity);
    }
    sync_free(entries);
}

int redis_entry_parse(const redisReply *r, redis_entry *e)
{
    memset(e, 0, sizeof *e);
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->len >= REDIS_STREAM_ID_MAX ||
        r->element[1]->type != REDIS_REPLY_ARRAY)
        return 0;
    memcpy(e->id, r->element[0]->str, r->element[0]->len);
    e->id[r->element[0]->len] = '\0';
    const redisReply *f = r->element[1];
    const redisReply *node = NULL, *msg = NULL, *conn = NULL, *ident = NULL;
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        if (k->len == 4 && memcmp(k->str, "node", 4) == 0)
            node = v;
        else if (k->len == 3 && memcmp(k->str, "msg", 3) == 0)
            msg = v;
        else if (k->len == 4 && memcmp(k->str, "conn", 4) == 0)
            conn = v;
        else if (k->len == 5 && memcmp(k->str, "ident", 5) == 0)
            ident = v;
    }
    if (!node || !msg || node->len > REDIS_NODE_ID_MAX)
        return 0;
    memcpy(e->node, node->str, node->len);
    e->node[node->len] = '\0';
    e->msg = sync_malloc(msg->len + 1);
    if (!e->msg)
        return -1;
    memcpy(e->msg, msg->str, msg->len);
    e->msg[msg->len] = '\0';
    e->len = msg->len;
    int64_t id = 0;
    if (conn && redis_parse_int64(conn->str, conn->len, &id) && id > 0)
        e->conn_id = (uint64_t)id;
    if (ident && ident->len) {
        e->identity = sync_malloc(ident->len + 1);
        if (!e->identity) {
            sync_free(e->msg);
            e->msg = NULL;
            return -1;
        }
        memcpy(e->identity, ident->str, ident->len);
        e->identity[ident->len] = '\0';
    }
    return 1;
}

int redis_stream_read(redis_conn *c, const char *room, const char *after, size_t max, int block_ms,
                      redis_entry **out, size_t *count)
{
    *out = NULL;
    *count = 0;
    int rc = check_room(room);
    if (rc != SYNC_OK)
        return rc;
    if (!after || max == 0 || block_ms < 0)
        return sync__fail(SYNC_EINVAL, "bad stream read");
    char *key = key_of(c, "stream", room);
    if (!key)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    char mbuf[24], bbuf[16];
    snprintf(mbuf, sizeof mbuf, "%zu", max);
    snprintf(bbuf, sizeof bbuf, "%d", block_ms);
    const char *with_block[] = {"XREAD", "COUNT", mbuf, "BLOCK", bbuf, "STREAMS", key, after};
    const char *without[] = {"XREAD", "COUNT", mbuf, "STREAMS", key, after};
    redisReply *reply = NULL;
    rc = block_ms > 0
             ? redis_conn_command(c, &reply, "cannot read a room's stream in", 8, with_block, NULL)
             : redis_conn_command(c, &reply, "cannot read a room's stream in", 6, without, NULL);
    free(key);
    if (rc != SYNC_OK)
        return rc;
    if (reply->type == REDIS_REPLY_NIL) {
        freeReplyObject(reply);
        return SYNC_OK;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 1 ||
        reply->element[0]->type != REDIS_REPLY_ARRAY || reply->element[0]->elements != 2 ||
        reply->element[0]->element[1]->type != REDIS_REPLY_ARRAY) {
        rc = redis_conn_reply_fail(c, reply, "cannot read a room's stream in");
        freeReplyObject(reply);
        return rc;
    }
    const redisReply *list = reply->element[0]->element[1];
    redis_entry *entries = list->elements ? sync_malloc(list->elements * sizeof *entries) : NULL;
    if (list->elements && !entries) {
        freeReplyObject(reply);
        return sync__fail(SYNC_ENOMEM, "out of memory");
    }
    size_t n = 0;
    for (size_t i = 0; i < list->elements; i++) {
        int got = redis_entry_parse(list->element[i], &entries[n]);
        if (got < 0) {
            redis_entries_free(entries, n);
            freeReplyObject(reply);
            return sync__fail(SYNC_ENOMEM, "out of memory");
        }
        /* An entry without our fields (written by something else) is skipped, not fatal: its id
         * still moves the reader on, as the next read starts after the last id we return. */
        if (got == 0) {
            if (list->element[i]->type == REDIS_REPLY_ARRAY && list->element[i]->elements == 2 &&
                list->element[i]->element[0]->type == REDIS_REPLY_STRING &&
                list->element[i]->element[0]->len < REDIS_STREAM_ID_MAX) {
                memset(&entries[n], 0, sizeof entries[n]);
                memcpy(entries[n].id, list->element[i]->element[0]->str,
                       list->element[i]->element[0]->len);
                entries[n].msg = NULL;
                n++;
            }
            continue;
        }
        n++;
    }
    freeReplyObject(reply);
    if (n == 0) {
        sync_free(entries);
        return SYNC_OK;
    }
    *out = entries;
    *count = n;
    return SYNC_OK;
}

int redis_publish_change(redis_conn *c, const char *room, int64_t version, const char *json,
                         size_t len, long long *receivers)
{
    if (receivers)
        *receivers = 0;
    int rc = check_room(room);
    if (rc != SYNC_OK)
        return rc;
    if (!json)
        return sync__fail(SYNC_EINVAL, "no state");
    char *channel = key_of(c, "changes", room);
    if (!channel)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    char vbuf[24];
    int vlen = snprintf(vbuf, sizeof vbuf, "%lld ", (long long)version);
    char *payload = sync_malloc((size_t)vlen + len + 1);
    if (!payload) {
        free(channel);
        return sync__fail(SYNC_ENOMEM, "out of memory");
    }
    memcpy(payload, vbuf, (size_t)vlen);
    memcpy(payload + vlen, json, len);
    payload[(size_t)vlen + len] = '\0';
    const char *argv[] = {"PUBLISH", channel, payload};
    size_t lens[] = {7, strlen(channel), (size_t)vlen + len};
    redisReply *reply = NULL;
    rc = redis_conn_command(c, &reply, "cannot publish a change through", 3, argv, lens);
    if (rc == SYNC_OK) {
        if (reply->type == REDIS_REPLY_INTEGER) {
            if (receivers)
                *receivers = reply->integer;
        } else {
            rc = redis_conn_reply_fail(c, reply, "cannot publish a change through");
        }
        freeReplyObject(reply);
    }
    sync_free(payload);
    free(channel);
    return rc;
}

#endif

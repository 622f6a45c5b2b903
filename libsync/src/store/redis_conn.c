/* The Redis connection of the Redis stores (redis_conn.h), and the options they share. */
#include "redis_conn.h"
#include "error.h"
#include "options.h"
#include "sqlite_db.h"
#include "engine/completion.h"
#include "engine/delta.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define REDIS_DEFAULT_PORT 6379
#define REDIS_DEFAULT_CONNECT_MS 2000
#define REDIS_DEFAULT_COMMAND_MS 5000

int sync_redis_options_init(sync_redis_options *opts, unsigned int version)
{
    static const sync_redis_options defaults = SYNC_REDIS_OPTIONS_INIT;
    return sync__options_init(opts, &defaults, sizeof defaults, version, SYNC_REDIS_OPTIONS_VERSION,
                              "Redis");
}

#ifdef LIBSYNC_HAVE_REDIS

static char *copy_range(const char *from, const char *to)
{
    size_t len = (size_t)(to - from);
    char *s = malloc(len + 1);
    if (s) {
        memcpy(s, from, len);
        s[len] = '\0';
    }
    return s;
}

/* A whole decimal number in [min, max] from `text` to `end`; -1 when it is not one. */
static long parse_number(const char *text, const char *end, long min, long max)
{
    if (text == end || end - text > 9)
        return -1;
    long n = 0;
    for (const char *p = text; p < end; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        n = n * 10 + (*p - '0');
    }
    return n >= min && n <= max ? n : -1;
}

/* "redis://[[user]:password@]host[:port][/db]" into `c`. */
static int parse_url(redis_conn *c, const char *url)
{
    static const char scheme[] = "redis://";
    if (strncmp(url, scheme, sizeof scheme - 1) != 0)
        return sync__fail(SYNC_EINVAL, "Redis URL \"%s\" does not start with redis://", url);
    const char *p = url + sizeof scheme - 1;
    const char *end = p + strcspn(p, "/?#");
    const char *at = memchr(p, '@', (size_t)(end - p));
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            if (colon > p && !(c->user = copy_range(p, colon)))
                return sync__fail(SYNC_ENOMEM, "out of memory");
            p = colon + 1;
        }
        if (!(c->password = copy_range(p, at)))
            return sync__fail(SYNC_ENOMEM, "out of memory");
        p = at + 1;
    }
    const char *host_end, *after;
    if (*p == '[') { /* [IPv6] */
        host_end = memchr(p, ']', (size_t)(end - p));
        if (!host_end)
            return sync__fail(SYNC_EINVAL, "Redis URL \"%s\": unclosed '['", url);
        p++;
        after = host_end + 1;
    } else {
        host_end = memchr(p, ':', (size_t)(end - p));
        if (!host_end)
            host_end = end;
        after = host_end;
    }
    if (host_end == p)
        return sync__fail(SYNC_EINVAL, "Redis URL \"%s\" has no host", url);
    if (!(c->host = copy_range(p, host_end)))
        return sync__fail(SYNC_ENOMEM, "out of memory");
    c->port = REDIS_DEFAULT_PORT;
    if (after < end) {
        long port = *after == ':' ? parse_number(after + 1, end, 1, 65535) : -1;
        if (port < 0)
            return sync__fail(SYNC_EINVAL, "Redis URL \"%s\": the port is not 1 to 65535", url);
        c->port = (int)port;
    }
    c->db = 0;
    if (*end == '/' && end[1]) {
        long db = parse_number(end + 1, end + strlen(end), 0, INT_MAX);
        if (db < 0)
            return sync__fail(SYNC_EINVAL, "Redis URL \"%s\": the database is not a number", url);
        c->db = (int)db;
    } else if (*end && strcmp(end, "/") != 0) {
        return sync__fail(SYNC_EINVAL, "Redis URL \"%s\": query or fragment not supported", url);
    }
    return SYNC_OK;
}

int redis_conn_setup(redis_conn *c, const sync_redis_options *opts)
{
    memset(c, 0, sizeof *c);
    if (!opts->url || !*opts->url)
        return sync__fail(SYNC_EINVAL, "Redis url is required");
    if (opts->connect_timeout_ms < 0 || opts->command_timeout_ms < 0)
        return sync__fail(SYNC_EINVAL, "Redis timeouts must be 0 (default) or positive");
    int rc = parse_url(c, opts->url);
    if (rc == SYNC_OK && !(c->prefix = strdup(opts->key_prefix ? opts->key_prefix : "libsync:")))
        rc = sync__fail(SYNC_ENOMEM, "out of memory");
    if (rc != SYNC_OK) {
        redis_conn_release(c);
        return rc;
    }
    c->connect_timeout_ms =
        opts->connect_timeout_ms ? opts->connect_timeout_ms : REDIS_DEFAULT_CONNECT_MS;
    c->command_timeout_ms =
        opts->command_timeout_ms ? opts->command_timeout_ms : REDIS_DEFAULT_COMMAND_MS;
    return SYNC_OK;
}

static void drop(redis_conn *c)
{
    if (c->ctx)
        redisFree(c->ctx);
    c->ctx = NULL;
}

void redis_conn_release(redis_conn *c)
{
    drop(c);
    free(c->host);
    free(c->user);
    free(c->password);
    free(c->prefix);
    memset(c, 0, sizeof *c);
}

const char *redis_conn_where(const redis_conn *c)
{
    static _Thread_local char where[300];
    snprintf(where, sizeof where, "%s:%d", c->host, c->port);
    return where;
}

static struct timeval ms_to_tv(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

/* A write to a socket the server closed raises SIGPIPE, which kills a process that has not
 * ignored it: the signal is blocked on this thread around the call and a SIGPIPE that the call
 * raised is taken back before the mask is restored. */
typedef struct pipe_guard {
    sigset_t old;
    int was_pending;
} pipe_guard;

static void pipe_block(pipe_guard *g)
{
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &g->old);
    sigemptyset(&pending);
    sigpending(&pending);
    g->was_pending = sigismember(&pending, SIGPIPE) == 1;
}

static void pipe_restore(const pipe_guard *g)
{
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigemptyset(&pending);
    sigpending(&pending);
    if (!g->was_pending && sigismember(&pending, SIGPIPE) == 1) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* The context's error as SYNC_EIO, and the connection dropped. */
static int conn_fail(redis_conn *c, const char *what)
{
    char reason[200] = "connection lost";
    if (c->ctx && c->ctx->err) {
        /* hiredis says "Resource temporarily unavailable" when the reply timeout passed */
        if (c->ctx->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK ||
                                            strstr(c->ctx->errstr, "temporarily unavailable")))
            snprintf(reason, sizeof reason, "no reply within %d ms", c->command_timeout_ms);
        else
            snprintf(reason, sizeof reason, "%s", c->ctx->errstr);
    }
    int rc = sync__fail(SYNC_EIO, "%s Redis at %s: %s", what, redis_conn_where(c), reason);
    drop(c);
    return rc;
}

int redis_conn_reply_fail(const redis_conn *c, const redisReply *reply, const char *what)
{
    if (reply && reply->type == REDIS_REPLY_ERROR)
        return sync__fail(SYNC_EIO, "%s Redis at %s: %.*s", what, redis_conn_where(c),
                          (int)reply->len, reply->str);
    return sync__fail(SYNC_EIO, "%s Redis at %s: unexpected reply", what, redis_conn_where(c));
}

/* One command on a fresh connection, during the handshake; SYNC_OK on a status reply. */
static int handshake(redis_conn *c, const char *what, int argc, const char **argv)
{
    redisReply *reply = redisCommandArgv(c->ctx, argc, argv, NULL);
    if (!reply)
        return conn_fail(c, what);
    int rc = reply->type == REDIS_REPLY_ERROR ? redis_conn_reply_fail(c, reply, what) : SYNC_OK;
    freeReplyObject(reply);
    if (rc != SYNC_OK)
        drop(c);
    return rc;
}

int redis_conn_open(redis_conn *c)
{
    if (c->ctx)
        return SYNC_OK;
    c->ctx = redisConnectWithTimeout(c->host, c->port, ms_to_tv(c->connect_timeout_ms));
    if (!c->ctx)
        return sync__fail(SYNC_ENOMEM, "out of memory connecting to Redis");
    if (c->ctx->err)
        return conn_fail(c, "cannot connect to");
    if (redisSetTimeout(c->ctx, ms_to_tv(c->command_timeout_ms)) != REDIS_OK)
        return conn_fail(c, "cannot set the timeout of");
    int rc = SYNC_OK;
    pipe_guard g;
    pipe_block(&g);
    if (c->password) {
        const char *argv[3] = {"AUTH", c->user ? c->user : c->password, c->password};
        rc = handshake(c, "cannot authenticate to", c->user ? 3 : 2, argv);
    }
    if (rc == SYNC_OK && c->db) {
        char db[16];
        snprintf(db, sizeof db, "%d", c->db);
        const char *argv[2] = {"SELECT", db};
        rc = handshake(c, "cannot select the database of", 2, argv);
    }
    pipe_restore(&g);
    return rc;
}

int redis_conn_run(redis_conn *c, size_t count, const int *argc, const char *const *const *argv,
                   const size_t *const *argvlen, redisReply **replies, const char *what)
{
    for (size_t i = 0; i < count; i++)
        replies[i] = NULL;
    int rc = redis_conn_open(c);
    if (rc != SYNC_OK)
        return rc;
    for (size_t i = 0; i < count; i++)
        if (redisAppendCommandArgv(c->ctx, argc[i], (const char **)argv[i], argvlen[i]) != REDIS_OK)
            return conn_fail(c, what);
    pipe_guard g;
    pipe_block(&g);
    for (size_t i = 0; i < count && rc == SYNC_OK; i++) {
        void *reply = NULL;
        if (redisGetReply(c->ctx, &reply) != REDIS_OK || !reply)
            rc = conn_fail(c, what);
        replies[i] = reply;
    }
    pipe_restore(&g);
    if (rc != SYNC_OK)
        for (size_t i = 0; i < count; i++) {
            if (replies[i])
                freeReplyObject(replies[i]);
            replies[i] = NULL;
        }
    return rc;
}

int redis_conn_command(redis_conn *c, redisReply **reply, const char *what, int argc,
                       const char **argv, const size_t *argvlen)
{
    const char *const *argvs[1] = {argv};
    const size_t *lens[1] = {argvlen};
    return redis_conn_run(c, 1, &argc, argvs, lens, reply, what);
}

int redis_parse_int64(const char *text, size_t len, int64_t *out)
{
    if (!text || len == 0 || len > 20)
        return 0;
    char buf[24];
    memcpy(buf, text, len);
    buf[len] = '\0';
    if (buf[0] != '-' && (buf[0] < '0' || buf[0] > '9'))
        return 0;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || !end || *end)
        return 0;
    *out = (int64_t)v;
    return 1;
}

/* ---- the record --------------------------------------------------------------------------- */

/* The replies of a MULTI/EXEC pipeline: SYNC_OK when EXEC ran every command without an error. */
static int exec_ok(const redis_conn *c, redisReply **replies, size_t count, const char *what)
{
    for (size_t i = 0; i + 1 < count; i++)
        if (replies[i]->type == REDIS_REPLY_ERROR)
            return redis_conn_reply_fail(c, replies[i], what);
    const redisReply *exec = replies[count - 1];
    if (exec->type != REDIS_REPLY_ARRAY)
        return redis_conn_reply_fail(c, exec, what);
    for (size_t i = 0; i < exec->elements; i++)
        if (exec->element[i]->type == REDIS_REPLY_ERROR)
            return redis_conn_reply_fail(c, exec->element[i], what);
    return SYNC_OK;
}

static void free_replies(redisReply **replies, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (replies[i])
            freeReplyObject(replies[i]);
}

/* Renames the bad record to "<prefix>corrupt:<key without prefix>:<ms>-<random>" (and takes
 * `member` out of the set) in one transaction. */
static int keep_aside(redis_conn *c, const char *key, const char *set_key, const char *member,
                      const char *name, const char *why)
{
    /* Apart from every room's key (no room name reaches the "corrupt:" keys), and unique: a
     * record kept aside earlier is never overwritten. */
    char nonce[SYNC__EPOCH_MAX + 1];
    sync__delta_new_epoch(nonce);
    size_t prefix_len = strlen(c->prefix);
    const char *rest = strncmp(key, c->prefix, prefix_len) == 0 ? key + prefix_len : key;
    char *aside = NULL;
    if (asprintf(&aside, "%scorrupt:%s:%lld-%.8s", c->prefix, rest, (long long)sync_wall_ms(),
                 nonce) < 0)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    const char *multi[] = {"MULTI"}, *rename[] = {"RENAME", key, aside},
               *srem[] = {"SREM", set_key, member}, *exec[] = {"EXEC"};
    size_t count = set_key ? 4 : 3;
    const char *const *argv[4] = {multi, rename, set_key ? srem : exec, exec};
    int argc[4] = {1, 3, set_key ? 3 : 1, 1};
    const size_t *lens[4] = {NULL, NULL, NULL, NULL};
    redisReply *replies[4] = {NULL, NULL, NULL, NULL};
    int rc = redis_conn_run(c, count, argc, argv, lens, replies, "cannot keep a record aside in");
    if (rc == SYNC_OK)
        rc = exec_ok(c, replies, count, "cannot keep a record aside in");
    free_replies(replies, count);
    if (rc != SYNC_OK) {
        /* Not SYNC_ECORRUPT: the engine then refuses to save over the record it could not read. */
        rc = sync__fail(SYNC_EIO, "%s in Redis at %s is corrupt (%s) and cannot be kept aside: %s",
                        name, redis_conn_where(c), why, sync_error_last());
    } else {
        rc = sync__fail(SYNC_ECORRUPT, "%s in Redis at %s is corrupt (%s); kept aside in %s", name,
                        redis_conn_where(c), why, aside);
    }
    free(aside);
    return rc;
}

int redis_record_load(redis_conn *c, const char *key, const char *set_key, const char *member,
                      const char *name, char **out_state_json, int64_t *out_version, char *epoch)
{
    *out_state_json = NULL;
    *out_version = 0;
    if (epoch)
        epoch[0] = '\0';
    const char *argv[] = {"HMGET", key, "state", "version", "epoch"};
    redisReply *reply = NULL;
    int rc = redis_conn_command(c, &reply, "cannot load from", 5, argv, NULL);
    if (rc != SYNC_OK)
        return rc;
    const char *why = NULL;
    if (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "WRONGTYPE", 9) == 0) {
        why = "the key is not a hash";
    } else if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3) {
        rc = redis_conn_reply_fail(c, reply, "cannot load from");
        freeReplyObject(reply);
        return rc;
    }
    const redisReply *state = why ? NULL : reply->element[0];
    const redisReply *version = why ? NULL : reply->element[1];
    const redisReply *ep = why ? NULL : reply->element[2];
    int64_t v = 0;
    if (!why && state->type == REDIS_REPLY_NIL && version->type == REDIS_REPLY_NIL &&
        ep->type == REDIS_REPLY_NIL) {
        freeReplyObject(reply); /* never saved */
        return SYNC_OK;
    }
    if (why)
        ;
    else if (state->type != REDIS_REPLY_STRING)
        why = "state is missing";
    else if (!sqlite_db_is_json(state->str, state->len))
        why = "state is not valid JSON";
    else if (version->type != REDIS_REPLY_STRING ||
             !redis_parse_int64(version->str, version->len, &v))
        why = "version is not an integer";
    if (why) {
        freeReplyObject(reply);
        return keep_aside(c, key, set_key, member, name, why);
    }
    char *copy = sync_malloc(state->len + 1);
    if (!copy) {
        freeReplyObject(reply);
        return sync__fail(SYNC_ENOMEM, "out of memory loading %zu bytes", state->len);
    }
    memcpy(copy, state->str, state->len);
    copy[state->len] = '\0';
    if (epoch && ep->type == REDIS_REPLY_STRING && ep->len <= SYNC__EPOCH_MAX) {
        memcpy(epoch, ep->str, ep->len);
        epoch[ep->len] = '\0';
        if (!sync__epoch_valid(epoch))
            epoch[0] = '\0';
    }
    freeReplyObject(reply);
    *out_state_json = copy;
    *out_version = v;
    return SYNC_OK;
}

int redis_record_save(redis_conn *c, const char *key, const char *set_key, const char *member,
                      const char *name, const char *json, size_t len, int64_t version,
                      const char *epoch)
{
    (void)name;
    char vbuf[24], tbuf[24];
    snprintf(vbuf, sizeof vbuf, "%lld", (long long)version);
    snprintf(tbuf, sizeof tbuf, "%lld", (long long)sync_wall_ms());
    const char *hset[] = {"HSET", key,          "state", json,    "version",
                          vbuf,   "updated_at", tbuf,    "epoch", epoch};
    size_t hset_len[] = {
        4, strlen(key), 5, len, 7, strlen(vbuf), 10, strlen(tbuf), 5, epoch ? strlen(epoch) : 0};
    int hset_argc = epoch ? 10 : 8;
    redisReply *replies[4] = {NULL, NULL, NULL, NULL};
    int rc;
    if (!set_key) {
        rc = redis_conn_command(c, replies, "cannot save to", hset_argc, hset, hset_len);
        if (rc == SYNC_OK && replies[0]->type == REDIS_REPLY_ERROR)
            rc = redis_conn_reply_fail(c, replies[0], "cannot save to");
        free_replies(replies, 1);
        return rc;
    }
    const char *multi[] = {"MULTI"}, *sadd[] = {"SADD", set_key, member}, *exec[] = {"EXEC"};
    const char *const *argv[4] = {multi, hset, sadd, exec};
    int argc[4] = {1, hset_argc, 3, 1};
    const size_t *lens[4] = {NULL, hset_len, NULL, NULL};
    rc = redis_conn_run(c, 4, argc, argv, lens, replies, "cannot save to");
    if (rc == SYNC_OK)
        rc = exec_ok(c, replies, 4, "cannot save to");
    free_replies(replies, 4);
    return rc;
}

#endif

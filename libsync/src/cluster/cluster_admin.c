/* Deleting and listing a cluster's rooms (cluster.h): sync_rooms_delete() and sync_rooms_list()
 * of a clustered room mount act on Redis, from any thread, on a connection of their own. */
#include "cluster/cluster_internal.h"

#include "error.h"
#include "libsync/rooms.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef LIBSYNC_HAVE_REDIS

/* How long a deleted room's tombstone stays (at least): longer than a node takes to notice that
 * it missed the notice (it reloads its rooms when it resubscribes). */
#define CLUSTER_TOMBSTONE_MIN_MS 60000
/* Keys asked per SCAN. */
#define CLUSTER_SCAN_COUNT "1000"

/* KEYS: lease, fence, record, stream, tombstone. ARGV: change channel, node, tombstone ttl.
 * One script, so no save of the owner runs half-way: the lease goes (the owner's next save and
 * renewal are refused), the fence grows (no token handed out before can ever write again), the
 * record and the stream go, a tombstone stays a while, and every node hears "deleted <node>". */
static const char DELETE_LUA[] =
    "local had = redis.call('EXISTS', KEYS[1], KEYS[3], KEYS[4])\n"
    "if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('INCR', KEYS[2]) end\n"
    "redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])\n"
    "redis.call('SET', KEYS[5], '1', 'PX', ARGV[3])\n"
    "redis.call('PUBLISH', ARGV[1], 'deleted ' .. ARGV[2])\n"
    "return had\n";

int sync__cluster_delete(sync__cluster *cl, const char *key)
{
    int rc = redis_cluster_key_check(key);
    if (rc != SYNC_OK)
        return rc;
    static const char *const kinds[] = {"lease", "fence", "room", "stream", "deleted", "changes"};
    char *names[6] = {NULL};
    for (int i = 0; i < 6; i++)
        if (asprintf(&names[i], "%s%s:%s", cl->prefix, kinds[i], key) < 0) {
            names[i] = NULL;
            rc = sync__fail(SYNC_ENOMEM, "out of memory");
        }
    char ttl[24];
    int tomb_ms =
        10 * cl->lease_ms > CLUSTER_TOMBSTONE_MIN_MS ? 10 * cl->lease_ms : CLUSTER_TOMBSTONE_MIN_MS;
    snprintf(ttl, sizeof ttl, "%d", tomb_ms);
    if (rc == SYNC_OK) {
        const char *argv[] = {"EVAL",   DELETE_LUA, "5",      names[0], names[1], names[2],
                              names[3], names[4],   names[5], cl->node, ttl};
        redisReply *reply = NULL;
        pthread_mutex_lock(&cl->admin_lock);
        rc = redis_conn_command(&cl->admin_conn, &reply, "cannot delete a room in", 11, argv, NULL);
        if (rc == SYNC_OK) {
            if (reply->type != REDIS_REPLY_INTEGER)
                rc = redis_conn_reply_fail(&cl->admin_conn, reply, "cannot delete a room in");
            freeReplyObject(reply);
        }
        pthread_mutex_unlock(&cl->admin_lock);
    }
    for (int i = 0; i < 6; i++)
        free(names[i]);
    if (rc != SYNC_OK)
        return rc;
    /* the owner thread stops using the room at once; the caller unloads it */
    pthread_mutex_lock(&cl->lock);
    cluster_room *r = cluster_find_locked(cl, key, strlen(key));
    if (r && r->ready_userdata) { /* a room mount's room (a fixed mount's goes on) */
        r->deleted = true;
        cl->owner_wake = true;
        pthread_cond_broadcast(&cl->cond);
    }
    pthread_mutex_unlock(&cl->lock);
    return SYNC_OK;
}

/* `text` with the glob characters of SCAN MATCH escaped, then `tail`. */
static char *glob_escape(const char *text, const char *tail)
{
    size_t n = strlen(text), t = strlen(tail);
    char *p = malloc(2 * n + t + 1);
    if (!p)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (strchr("*?[]\\", text[i]))
            p[o++] = '\\';
        p[o++] = text[i];
    }
    memcpy(p + o, tail, t + 1);
    return p;
}

int sync__cluster_list(sync__cluster *cl, const char *key_prefix, size_t max, char ***out_names,
                       size_t *out_count)
{
    *out_names = NULL;
    *out_count = 0;
    char *record_prefix = NULL;
    if (asprintf(&record_prefix, "%sroom:%s", cl->prefix, key_prefix) < 0)
        return sync__fail(SYNC_ENOMEM, "out of memory listing rooms");
    char *pattern = glob_escape(record_prefix, "*");
    size_t skip = strlen(record_prefix);
    free(record_prefix);
    if (!pattern)
        return sync__fail(SYNC_ENOMEM, "out of memory listing rooms");
    char **names = NULL;
    size_t count = 0, cap = 0;
    char cursor[32] = "0";
    int rc = SYNC_OK;
    pthread_mutex_lock(&cl->admin_lock);
    do {
        const char *argv[] = {"SCAN", cursor, "MATCH", pattern, "COUNT", CLUSTER_SCAN_COUNT};
        redisReply *reply = NULL;
        rc = redis_conn_command(&cl->admin_conn, &reply, "cannot list the rooms in", 6, argv, NULL);
        if (rc != SYNC_OK)
            break;
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
            reply->element[0]->type != REDIS_REPLY_STRING ||
            reply->element[0]->len >= sizeof cursor ||
            reply->element[1]->type != REDIS_REPLY_ARRAY) {
            rc = redis_conn_reply_fail(&cl->admin_conn, reply, "cannot list the rooms in");
            freeReplyObject(reply);
            break;
        }
        memcpy(cursor, reply->element[0]->str, reply->element[0]->len);
        cursor[reply->element[0]->len] = '\0';
        const redisReply *keys = reply->element[1];
        for (size_t i = 0; rc == SYNC_OK && i < keys->elements; i++) {
            const redisReply *k = keys->element[i];
            if (k->type != REDIS_REPLY_STRING || k->len <= skip || memchr(k->str, '\0', k->len))
                continue;
            char *name = strndup(k->str + skip, k->len - skip);
            if (!name) {
                rc = sync__fail(SYNC_ENOMEM, "out of memory listing rooms");
                break;
            }
            /* "/rooms/a/b" is no room of the mount "/rooms/" */
            if (sync_room_name_check(name) != SYNC_OK) {
                sync__error_clear();
                free(name);
                continue;
            }
            if (count == max) {
                free(name);
                rc = sync__fail(SYNC_ELIMIT, "more than %zu rooms in the cluster under %s", max,
                                key_prefix);
                break;
            }
            if (count == cap) {
                size_t grown_cap = cap ? cap * 2 : 64;
                char **grown = realloc(names, grown_cap * sizeof *grown);
                if (!grown) {
                    free(name);
                    rc = sync__fail(SYNC_ENOMEM, "out of memory listing rooms");
                    break;
                }
                names = grown;
                cap = grown_cap;
            }
            names[count++] = name;
        }
        freeReplyObject(reply);
    } while (rc == SYNC_OK && strcmp(cursor, "0") != 0);
    pthread_mutex_unlock(&cl->admin_lock);
    free(pattern);
    if (rc != SYNC_OK) {
        for (size_t i = 0; i < count; i++)
            free(names[i]);
        free(names);
        return rc;
    }
    *out_names = names;
    *out_count = count;
    return SYNC_OK;
}

#endif

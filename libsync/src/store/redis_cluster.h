/* The Redis side of one room served by several nodes (docs/SCALING.md): a lease that makes one
 * node the room's owner, with a fencing token that grows at every change of owner; a stream into
 * which every node forwards its clients' messages for the room, whose order is the room's order;
 * the room's record written only by the holder of the current token, with the id of the last
 * stream entry it applied, in one Lua script; and the channel on which the owner publishes each
 * applied change. Internal and not yet used by the server: these are the steps a node's cluster
 * thread runs, each one atomic in Redis, tested against a real redis-server.
 *
 * Keys, for room R under the connection's prefix P:
 *   P lease:R   "<token> <node>" with a TTL (PX): who owns R, until when
 *   P fence:R   the last token handed out for R (INCR): tokens never repeat, never go back
 *   P room:R    the record (state, version, epoch, updated_at) + applied and claimed (stream
 *               ids) + fence
 *   P stream:R  the forwarded messages (fields node, msg), trimmed below the applied id
 *   P changes:R the channel of applied changes ("<version> <state>")
 * Not thread-safe: one user of `c` at a time, like redis_conn. */
#ifndef LIBSYNC_SRC_STORE_REDIS_CLUSTER_H
#define LIBSYNC_SRC_STORE_REDIS_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef LIBSYNC_HAVE_REDIS
#include "redis_conn.h"

/* A stream id "<ms>-<seq>" fits in 2 * 20 digits + '-' + NUL. */
#define REDIS_STREAM_ID_MAX 48
/* A member of a cluster as Redis knows it (the lease's holder, the sender of a stream entry): 1 to
 * 96 printable ASCII bytes without spaces. A node's id plus the incarnation of its process. */
#define REDIS_NODE_ID_MAX 96
/* Longest room key: a room name, or a server's URL path of a room (no control characters). */
#define REDIS_CLUSTER_KEY_MAX 1024

/* SYNC_OK when `room` may be a room's key: a room name (sync_room_name_check) or, when it has a
 * '/', 1 to REDIS_CLUSTER_KEY_MAX bytes without control characters. */
int redis_cluster_key_check(const char *room);

/* Takes the lease of `room` for `node` for `ttl_ms` when nobody holds it, with a new token; when
 * `node` holds it already, extends it and keeps its token. *out_token is the token, or 0 when
 * another node holds the lease (SYNC_OK either way). SYNC_EINVAL for a bad room, node or ttl;
 * SYNC_EIO when Redis fails. */
int redis_lease_acquire(redis_conn *c, const char *room, const char *node, int ttl_ms,
                        int64_t *out_token);

/* Extends the lease held with `token` to `ttl_ms` from now: SYNC_OK, or SYNC_ESTATE when the
 * lease is not (or no longer) held with that token (expired, taken by another node). */
int redis_lease_renew(redis_conn *c, const char *room, int64_t token, int ttl_ms);

/* Gives the lease up when it is still held with `token` (so another node takes over at once):
 * SYNC_OK whether or not it was. */
int redis_lease_release(redis_conn *c, const char *room, int64_t token);

/* redis_lease_release for an owner that stops cleanly with nothing running: the record's claim is
 * lowered to its `applied` id first (an entry claimed but never started runs on the next owner
 * instead of being refused). Only when no handler of the room is running. */
int redis_lease_release_unclaimed(redis_conn *c, const char *room, int64_t token);

/* Writes the room's record (state, version, epoch or NULL, applied stream id or NULL) when the
 * lease is held with `token` and no later token wrote the record; trims the stream below
 * `applied`. SYNC_OK; SYNC_ESTATE when fenced out, the record then untouched. */
int redis_fenced_save(redis_conn *c, const char *room, int64_t token, const char *json, size_t len,
                      int64_t version, const char *epoch, const char *applied);

/* redis_fenced_save, and when `publish` the change published on the room's channel in the same
 * script once written: "<version> <epoch> <state>" (the record's epoch). One round trip; a change
 * is published if and only if it was saved. */
int redis_fenced_save_publish(redis_conn *c, const char *room, int64_t token, const char *json,
                              size_t len, int64_t version, const char *epoch, const char *applied,
                              bool publish);

/* One save of redis_fenced_save_publish_many: the arguments of redis_fenced_save_publish, and its
 * outcome in `rc`: SYNC_OK, SYNC_ESTATE (fenced out, nothing written), SYNC_EINVAL, SYNC_EIO or
 * SYNC_ENOMEM. */
typedef struct redis_save_req {
    const char *room;
    int64_t token;
    const char *json;
    size_t len;
    int64_t version;
    const char *epoch; /* NULL: the record's stays */
    const char *applied;
    bool publish;
    const char *claim; /* NULL, or the stream id `claimed` is raised to (redis_fenced_claim) */
    int rc;
} redis_save_req;

/* The saves of several rooms in one pipelined write and one round trip (each its own script, so
 * each is atomic and fenced on its own). SYNC_OK when every reply came (see each rc); otherwise
 * the connection failed, every rc is that status, and whether each save was written is unknown. */
int redis_fenced_save_publish_many(redis_conn *c, redis_save_req *reqs, size_t n);

/* At most once: before the owner runs an entry, the record says so. Raises the record's `claimed`
 * stream id to `id` (never lowers it) when the lease is held with `token` and no later token wrote
 * the record, as redis_fenced_save. A new owner refuses the entries after `applied` up to
 * `claimed` (the last owner may have run them) instead of running them. SYNC_OK; SYNC_ESTATE when
 * fenced out, the record then untouched. */
int redis_fenced_claim(redis_conn *c, const char *room, int64_t token, const char *id);

/* One claim of redis_fenced_claim_many, its outcome in `rc` (as redis_save_req's). */
typedef struct redis_claim_req {
    const char *room;
    int64_t token;
    const char *id;
    int rc;
} redis_claim_req;

/* The claims of several rooms in one pipelined write and one round trip, each its own fenced
 * script (as redis_fenced_save_publish_many). */
int redis_fenced_claim_many(redis_conn *c, redis_claim_req *reqs, size_t n);

/* Stream ids "<ms>-<seq>" compared as numbers: < 0, 0, > 0. */
int redis_stream_id_cmp(const char *a, const char *b);

/* Reads the record as redis_record_load (a corrupt one kept aside, SYNC_ECORRUPT) plus the id of
 * the last applied stream entry into `applied` (REDIS_STREAM_ID_MAX bytes): "0-0" when none. */
int redis_fenced_load(redis_conn *c, const char *room, char **out_state_json, int64_t *out_version,
                      char *epoch, char *applied);

/* redis_fenced_load, and the record's `claimed` stream id into `claimed` (REDIS_STREAM_ID_MAX
 * bytes, may be NULL): "0-0" when none. */
int redis_fenced_load_claimed(redis_conn *c, const char *room, char **out_state_json,
                              int64_t *out_version, char *epoch, char *applied, char *claimed);

/* Appends a client's message for `room` to its stream; `out_id` (REDIS_STREAM_ID_MAX bytes, may
 * be NULL) gets the entry's id. */
int redis_forward(redis_conn *c, const char *room, const char *node, const char *msg, size_t len,
                  char *out_id);

typedef struct redis_entry {
    char id[REDIS_STREAM_ID_MAX];
    char node[REDIS_NODE_ID_MAX + 1];
    char *msg; /* NUL-terminated, sync_malloc */
    size_t len;
    uint64_t conn_id; /* field "conn": the sender's connection on its node, 0 when none */
    char *identity;   /* field "ident": its identity (JSON, sync_malloc), NULL when none */
} redis_entry;

/* One XREAD entry [id, [field, value, ...]] into `e` (zeroed first): 1, 0 when it is not one a
 * node wrote (no node or msg), -1 out of memory. */
int redis_entry_parse(const redisReply *r, redis_entry *e);

/* Up to `max` entries after the id `after`, in stream order, waiting up to `block_ms` (0: not at
 * all; keep it under the connection's command timeout) when there are none. *out (sync_malloc,
 * free with redis_entries_free) NULL when *count is 0. */
int redis_stream_read(redis_conn *c, const char *room, const char *after, size_t max, int block_ms,
                      redis_entry **out, size_t *count);

void redis_entries_free(redis_entry *entries, size_t count);

/* Publishes an applied change on the room's channel: "<version> <json>". *receivers (may be NULL)
 * gets the number of subscribers that got it. */
int redis_publish_change(redis_conn *c, const char *room, int64_t version, const char *json,
                         size_t len, long long *receivers);

#endif

#endif

/* The Redis connection behind the Redis adapter and the Redis room store: the URL and options
 * checked and copied, a synchronous hiredis connection opened on first use and again after it was
 * lost, commands with connect and reply timeouts, and every failure a SYNC_EIO with a reason.
 * Not thread-safe: one user at a time (both stores hold a mutex around it). */
#ifndef LIBSYNC_SRC_STORE_REDIS_CONN_H
#define LIBSYNC_SRC_STORE_REDIS_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "libsync/adapter.h"

#ifdef LIBSYNC_HAVE_REDIS
#include <hiredis/hiredis.h>

typedef struct redis_conn {
    char *host;
    int port;
    int db;
    char *user;     /* NULL: AUTH with the password alone */
    char *password; /* NULL: no AUTH */
    char *prefix;
    int connect_timeout_ms;
    int command_timeout_ms;
    redisContext *ctx; /* NULL until connected, and again once lost */
} redis_conn;

/* Checks `opts` (URL, timeouts) and copies them into `c`; connects to nothing. On failure `c`
 * holds nothing to release. */
int redis_conn_setup(redis_conn *c, const sync_redis_options *opts);

void redis_conn_release(redis_conn *c);

/* Connects (AUTH, SELECT) unless connected already: SYNC_OK or SYNC_EIO. */
int redis_conn_open(redis_conn *c);

/* Sends `count` commands (argv arrays of argc[i] strings with lengths) in one write and reads
 * their replies into replies[] (freeReplyObject each; NULL where none came). SYNC_OK when every
 * reply came (error replies included: the caller reads them); SYNC_EIO when the connection
 * failed or timed out, after which it is dropped and every reply freed. `what` begins the
 * reason. */
int redis_conn_run(redis_conn *c, size_t count, const int *argc, const char *const *const *argv,
                   const size_t *const *argvlen, redisReply **replies, const char *what);

/* One command. */
int redis_conn_command(redis_conn *c, redisReply **reply, const char *what, int argc,
                       const char **argv, const size_t *argvlen);

/* "host:port" of the connection, for reasons. */
const char *redis_conn_where(const redis_conn *c);

/* An error reply as SYNC_EIO with its text. */
int redis_conn_reply_fail(const redis_conn *c, const redisReply *reply, const char *what);

/* `text` as a whole int64 (decimal, no spaces); 0 when it is not one. */
int redis_parse_int64(const char *text, size_t len, int64_t *out);

/* ---- the record: a hash with the fields state, version, epoch, updated_at ---- */

/* Reads the record at `key`: *out_state_json (sync_malloc) NULL when there is none, `epoch`
 * (SYNC__EPOCH_MAX + 1 bytes, may be NULL) "" when it has none. A record that cannot be parsed
 * (not a hash, state missing or not JSON, version not an integer) is renamed to
 * "<prefix>corrupt:<key without prefix>:<ms>-<random>" (and `member` removed from the set
 * `set_key` in the same transaction when given) and reported as SYNC_ECORRUPT; SYNC_EIO when that
 * fails. `name` names the record in reasons. */
int redis_record_load(redis_conn *c, const char *key, const char *set_key, const char *member,
                      const char *name, char **out_state_json, int64_t *out_version, char *epoch);

/* Writes the record at `key` (with `epoch` when not NULL) in one HSET; with `set_key`, `member`
 * is added to that set in the same MULTI/EXEC. */
int redis_record_save(redis_conn *c, const char *key, const char *set_key, const char *member,
                      const char *name, const char *json, size_t len, int64_t version,
                      const char *epoch);

#endif

#endif

/*
 * libsync — persistence adapters: the built-in SQLite and file stores, and the interface for
 * custom ones (written in C, or in Python/JavaScript through the bindings).
 *
 * An adapter is a table of callbacks plus a userdata pointer. Every callback gets a
 * `sync_pending` token: it either finishes before returning (returns SYNC_OK or a negative status
 * and never touches the token again) or returns SYNC_PENDING and later calls exactly one
 * sync_pending_* completion with that token, from any thread. The engine never has two adapter
 * calls of one adapter running at once, and calls them in the order the changes happened.
 */
#ifndef LIBSYNC_ADAPTER_H
#define LIBSYNC_ADAPTER_H

#include <cjson/cJSON.h>

#include "libsync/common.h"
#include "libsync/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sync_pending sync_pending; /**< completion token of one adapter call */

#define SYNC_ADAPTER_VTABLE_VERSION 1

/**
 * A persistence backend. Members may only ever be added at the end (the version grows).
 * `init` and `backup` may be NULL (nothing to prepare / backups unsupported); `load` and `save`
 * are required.
 */
typedef struct sync_adapter_vtable {
    unsigned int version; /**< SYNC_ADAPTER_VTABLE_VERSION */
    /** Prepares the store (create the table, the directory). */
    int (*init)(void *userdata, sync_pending *pending);
    /**
     * Reads the saved record. Finishing synchronously: set *out_state_json to a string the
     * adapter allocated with sync_malloc() or sync_strdup() (libsync releases it with
     * sync_free()) or to NULL when the store has never been saved, *out_version to the saved
     * version, and return SYNC_OK. SYNC_ECORRUPT when the store exists but cannot be parsed (the
     * adapter must keep it aside, never overwrite it). Finishing later: return SYNC_PENDING and
     * call sync_pending_complete_load().
     */
    int (*load)(void *userdata, sync_pending *pending, char **out_state_json, int64_t *out_version);
    /**
     * Writes the whole state and its version, atomically: after a crash at any instant the store
     * holds either the previous record or this one. `state` and `state_json` are the same value
     * (use whichever suits); both are borrowed for the duration of the call (copy to keep them for
     * a completion). Returns SYNC_OK only once the record is as durable as the adapter promises.
     */
    int (*save)(void *userdata, sync_pending *pending, const cJSON *state, const char *state_json,
                size_t state_len, int64_t version);
    /** Copies the store to a new backup; sets *out_timestamp_ms (sync_wall_ms()) of the copy.
     *  Finishing later: sync_pending_complete_backup(). */
    int (*backup)(void *userdata, sync_pending *pending, int64_t *out_timestamp_ms);
    /** Releases everything (closes files, frees userdata). Runs exactly once, from
     *  sync_adapter_free() or when the engine that owns the adapter is freed. May be NULL. */
    void (*destroy)(void *userdata);
} sync_adapter_vtable;

/** Wraps a vtable (copied) and userdata into an adapter handle. destroy(userdata) runs exactly
 *  once (common.h): with sync_adapter_free() or the engine that owns the adapter, or before a
 *  failure returns (NULL `out`, unknown version, no load/save, out of memory). A NULL vtable has
 *  no destroy to run. */
SYNC_EXTERN int sync_adapter_new(sync_adapter **out, const sync_adapter_vtable *vtable,
                                 void *userdata);
/** Frees an adapter that was not handed to an engine. NULL is a no-op. */
SYNC_EXTERN void sync_adapter_free(sync_adapter *adapter);

/* Direct use of an adapter without an engine (tools, tests). Synchronous adapters only:
 * SYNC_EUNSUPPORTED when the callback returns SYNC_PENDING. */
SYNC_EXTERN int sync_adapter_init(sync_adapter *adapter);
/** *out_state_json: caller owns (sync_free), NULL when never saved. */
SYNC_EXTERN int sync_adapter_load(sync_adapter *adapter, char **out_state_json,
                                  int64_t *out_version);
SYNC_EXTERN int sync_adapter_save(sync_adapter *adapter, const char *state_json, int64_t version);
SYNC_EXTERN int sync_adapter_backup(sync_adapter *adapter, int64_t *out_timestamp_ms);

/* Completions of a call that returned SYNC_PENDING. `error_message` (copied, may be NULL) is the
 * readable reason when status is negative. Call exactly one of these, once per pending token. */
SYNC_EXTERN int sync_pending_complete(sync_pending *pending, int status, const char *error_message);
/** For load(): `state_json` (copied) NULL means the store was never saved. */
SYNC_EXTERN int sync_pending_complete_load(sync_pending *pending, int status,
                                           const char *state_json, int64_t version,
                                           const char *error_message);
SYNC_EXTERN int sync_pending_complete_backup(sync_pending *pending, int status,
                                             int64_t timestamp_ms, const char *error_message);

/* ------------------------------------------------------------------------------------------ */
/* SQLite                                                                                       */
/* ------------------------------------------------------------------------------------------ */

/** How hard a SQLite save waits for the disk. */
typedef enum sync_sqlite_durability {
    /** WAL + synchronous=NORMAL: a committed save survives a crash of the process (the default);
     *  a power loss may lose the last saves but never corrupts the database. */
    SYNC_SQLITE_PROCESS_SAFE = 0,
    /** WAL + synchronous=FULL: a committed save survives a power loss too (an fsync per save). */
    SYNC_SQLITE_POWER_SAFE = 1
} sync_sqlite_durability;

#define SYNC_SQLITE_OPTIONS_VERSION 1

typedef struct sync_sqlite_options {
    unsigned int version; /**< SYNC_SQLITE_OPTIONS_VERSION */
    /** Database file path (copied). Required. */
    const char *path;
    /** Table name (copied); NULL = "websocket_state". Must match [A-Za-z_][A-Za-z0-9_]{0,63}:
     *  anything else (quotes, spaces) is refused with SYNC_EINVAL. */
    const char *table_name;
    /** Directory for backups (copied); NULL = "<path>.backups". Backups are
     *  "backup-<ms>.sqlite" files made with SQLite's online backup API. */
    const char *backups_dir;
    sync_sqlite_durability durability;
    /** Milliseconds to wait on a locked database before failing. 0 = default (5000). */
    int busy_timeout_ms;
} sync_sqlite_options;

#define SYNC_SQLITE_OPTIONS_INIT                                                                   \
    {                                                                                              \
        SYNC_SQLITE_OPTIONS_VERSION, NULL, NULL, NULL, SYNC_SQLITE_PROCESS_SAFE, 0                 \
    }

SYNC_EXTERN int sync_sqlite_options_init(sync_sqlite_options *opts, unsigned int version);
/** Creates the SQLite adapter. Opens nothing yet: the database is opened by init(). */
SYNC_EXTERN int sync_adapter_sqlite_new(sync_adapter **out, const sync_sqlite_options *opts);

/* ------------------------------------------------------------------------------------------ */
/* File                                                                                         */
/* ------------------------------------------------------------------------------------------ */

#define SYNC_FILE_OPTIONS_VERSION 1

typedef struct sync_file_options {
    unsigned int version; /**< SYNC_FILE_OPTIONS_VERSION */
    /** The JSON file {"state":...,"version":...} (copied). Required. */
    const char *file_path;
    /** Directory for "backup-<ms>.json" copies (copied); NULL = backups unsupported. */
    const char *backups_dir;
    /** 1 (default): fsync the temp file and the directory on every save (power-safe).
     *  0: rename only (process-crash-safe, faster). */
    int fsync;
} sync_file_options;

#define SYNC_FILE_OPTIONS_INIT                                                                     \
    {                                                                                              \
        SYNC_FILE_OPTIONS_VERSION, NULL, NULL, 1                                                   \
    }

SYNC_EXTERN int sync_file_options_init(sync_file_options *opts, unsigned int version);
/** Creates the file adapter. Saves write "<file>.tmp-<pid>-<n>", fsync, rename over the file, fsync
 * the directory. A file that cannot be parsed is renamed to "<file>.corrupt-<ms>" and reported. */
SYNC_EXTERN int sync_adapter_file_new(sync_adapter **out, const sync_file_options *opts);

/* ------------------------------------------------------------------------------------------ */
/* Redis                                                                                        */
/* ------------------------------------------------------------------------------------------ */

#define SYNC_REDIS_OPTIONS_VERSION 1

/** Where the Redis adapter and the Redis room store (rooms.h) keep their records. */
typedef struct sync_redis_options {
    unsigned int version; /**< SYNC_REDIS_OPTIONS_VERSION */
    /** "redis://[[user]:password@]host[:port][/db]" (copied). Required. Port 6379 and database 0
     *  when left out. */
    const char *url;
    /** Prepended to every key (copied); NULL = "libsync:". The adapter keeps its record in the
     *  hash "<prefix>state", the room store room NAME in "<prefix>room:NAME" and the room names
     *  in the set "<prefix>rooms". */
    const char *key_prefix;
    /** Milliseconds to wait for a connection. 0 = default (2000). */
    int connect_timeout_ms;
    /** Milliseconds to wait for a command's reply before the call fails with SYNC_EIO and the
     *  connection is dropped (the next call connects again). 0 = default (5000). */
    int command_timeout_ms;
} sync_redis_options;

#define SYNC_REDIS_OPTIONS_INIT                                                                    \
    {                                                                                              \
        SYNC_REDIS_OPTIONS_VERSION, NULL, NULL, 0, 0                                               \
    }

SYNC_EXTERN int sync_redis_options_init(sync_redis_options *opts, unsigned int version);
/**
 * Creates the Redis adapter: one hash "<prefix>state" with the fields state, version, epoch and
 * updated_at, all written by one HSET per save (atomic in Redis). init() connects; a lost
 * connection fails the call in flight with SYNC_EIO and is opened again by the next call. A
 * record that cannot be parsed is renamed to "<prefix>corrupt:state:<ms>-<random>" and reported
 * as SYNC_ECORRUPT. No backup (SYNC_EUNSUPPORTED): Redis persistence (RDB/AOF) is where copies come from.
 * SYNC_EUNSUPPORTED when libsync was built without Redis support (LIBSYNC_WITH_REDIS=OFF).
 */
SYNC_EXTERN int sync_adapter_redis_new(sync_adapter **out, const sync_redis_options *opts);

#ifdef __cplusplus
}
#endif

#endif /* LIBSYNC_ADAPTER_H */

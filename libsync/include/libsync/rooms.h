/*
 * libsync — rooms: one state per name, created when its first client joins, unloaded when idle,
 * thousands per process.
 *
 * A room mount (sync_server_mount_rooms) serves every path under a prefix: a client that joins
 * "/rooms/NAME" gets the engine of room NAME. The first join creates that engine from a template
 * of engine options, runs the mount's setup callback on it (handlers, validator, middleware,
 * hooks, the initial state of a room never saved) and loads the room's record from the mount's
 * room store; later joins share it, and concurrent first joins create it once. A room that has
 * had no client for room_idle_ms (a server option) is saved and unloaded; a join arriving while
 * it unloads waits for that to finish and loads it afresh. max_rooms (a server option) bounds
 * the rooms loaded at once: beyond it the least recently used idle room is unloaded first, and
 * when none is idle the join is refused with HTTP 503.
 *
 * A room store holds the records (state + version) of many rooms, keyed by room name: the
 * built-in SQLite store keeps a row per room in one database, the built-in file store a file per
 * room in one directory (the name encoded so that no name can leave the directory or collide
 * with another on a case-insensitive filesystem); custom stores get the room name in every call.
 */
#ifndef LIBSYNC_ROOMS_H
#define LIBSYNC_ROOMS_H

#include <cjson/cJSON.h>

#include "libsync/adapter.h"
#include "libsync/common.h"
#include "libsync/engine.h"
#include "libsync/server.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------ */
/* Room names                                                                                  */
/* ------------------------------------------------------------------------------------------ */

/** Longest room name in bytes (UTF-8, after URL percent-decoding). */
#define SYNC_ROOM_NAME_MAX 80

/**
 * SYNC_OK when `name` may name a room: 1 to SYNC_ROOM_NAME_MAX bytes of valid UTF-8 with no
 * control character (U+0000-U+001F, U+007F), no '/' and no '\\', and neither "." nor "..".
 * Otherwise SYNC_EINVAL with the reason in sync_error_last(). Names are case-sensitive: "Room"
 * and "room" are two rooms, in every store. Every entry point that takes a room name checks it
 * first; a join to a bad name is refused with HTTP 400 before anything is created.
 */
SYNC_EXTERN int sync_room_name_check(const char *name);

/** Close code for the clients of a room that sync_rooms_delete() removed (reason
 *  "room deleted"): 4000 + HTTP 410 Gone, like the deferred-auth refusals. */
#define SYNC_CLOSE_ROOM_DELETED 4410
/** Close code for clients held while a room was created (deferred setup, asynchronous load) when
 *  the setup callback or the store's load failed (reason "room unavailable"): 4000 + HTTP 503. */
#define SYNC_CLOSE_ROOM_UNAVAILABLE 4503

/* ------------------------------------------------------------------------------------------ */
/* Room stores                                                                                 */
/* ------------------------------------------------------------------------------------------ */

typedef struct sync_room_store sync_room_store; /**< many rooms' records; reference counted */

#define SYNC_ROOM_STORE_VTABLE_VERSION 1

/**
 * A custom room store: the adapter interface (adapter.h) with the room name in every call, plus
 * remove and list. Completion rules are those of adapter.h: finish before returning, or return
 * SYNC_PENDING and later call exactly one sync_pending_* completion, from any thread.
 * libsync never runs two calls for one room at once and makes them in the order of that room's
 * changes; calls for different rooms may run at the same time on different threads, so a store
 * must be thread-safe (the built-in ones are). Members may only ever be added at the end.
 */
typedef struct sync_room_store_vtable {
    unsigned int version; /**< SYNC_ROOM_STORE_VTABLE_VERSION */
    /** Prepares the store (create the table, the directory); runs exactly once, before any other
     *  call. May be NULL. */
    int (*init)(void *userdata, sync_pending *pending);
    /** Reads room `room`'s record: as adapter.h's load (NULL state when the room was never
     *  saved, SYNC_ECORRUPT when it cannot be parsed and was kept aside). Required. */
    int (*load)(void *userdata, sync_pending *pending, const char *room, char **out_state_json,
                int64_t *out_version);
    /** Writes room `room`'s whole record atomically, as adapter.h's save. Required. */
    int (*save)(void *userdata, sync_pending *pending, const char *room, const cJSON *state,
                const char *state_json, size_t state_len, int64_t version);
    /** Removes room `room`'s record (SYNC_OK when there was none). Finishing later:
     *  sync_pending_complete(). Required. */
    int (*remove)(void *userdata, sync_pending *pending, const char *room);
    /** Sets *out_names_json to a JSON array of the names of every stored room (allocated with
     *  sync_malloc()/sync_strdup(); libsync frees it), in any order. Finishing later:
     *  sync_pending_complete_list(). Required. */
    int (*list)(void *userdata, sync_pending *pending, char **out_names_json);
    /** Releases everything; runs exactly once, when the last reference goes. May be NULL. */
    void (*destroy)(void *userdata);
} sync_room_store_vtable;

/** Wraps a vtable (copied) and userdata into a room store holding one reference. destroy(userdata)
 *  runs exactly once (common.h), also before a failure returns. */
SYNC_EXTERN int sync_room_store_new(sync_room_store **out, const sync_room_store_vtable *vtable,
                                    void *userdata);
/** Takes one more reference; returns `store`. */
SYNC_EXTERN sync_room_store *sync_room_store_ref(sync_room_store *store);
/** Releases one reference (the last one destroys the store). NULL is a no-op. */
SYNC_EXTERN void sync_room_store_free(sync_room_store *store);

/** For a custom store's list(): `names_json` (copied) is a JSON array of room names. */
SYNC_EXTERN int sync_pending_complete_list(sync_pending *pending, int status,
                                           const char *names_json, const char *error_message);

/**
 * An adapter for room `room` of `store` (name checked; copied), for an engine of one's own: its
 * load and save are the store's for that room; it holds a reference to the store; it has no
 * backup (SYNC_EUNSUPPORTED). A room mount makes one of these for every room it loads.
 */
SYNC_EXTERN int sync_room_store_adapter(sync_adapter **out, sync_room_store *store,
                                        const char *room);

/* Direct use without a server (tools, tests, administration). Callable from any thread; a call
 * that the store finishes later is waited for. */
/** *out_names_json: a JSON array of the stored room names, sorted by byte value; caller owns it
 *  (sync_free). */
SYNC_EXTERN int sync_room_store_list(sync_room_store *store, char **out_names_json);
/** *out_state_json: caller owns (sync_free), NULL when the room was never saved. */
SYNC_EXTERN int sync_room_store_load(sync_room_store *store, const char *room,
                                     char **out_state_json, int64_t *out_version);
SYNC_EXTERN int sync_room_store_save(sync_room_store *store, const char *room,
                                     const char *state_json, int64_t version);
SYNC_EXTERN int sync_room_store_remove(sync_room_store *store, const char *room);

/**
 * The built-in SQLite room store: one database `opts->path`, a row per room in table
 * `opts->table_name` (NULL = "websocket_rooms"; keyed by the room name), one transaction per
 * save. `backups_dir` is not used (room stores have no backup). Opens the database in init().
 */
SYNC_EXTERN int sync_room_store_sqlite_new(sync_room_store **out, const sync_sqlite_options *opts);

#define SYNC_FILE_ROOMS_OPTIONS_VERSION 1

typedef struct sync_file_rooms_options {
    unsigned int version; /**< SYNC_FILE_ROOMS_OPTIONS_VERSION */
    /** Directory (copied; created by init when missing) holding a JSON file per room. Required. */
    const char *dir;
    /** 1 (default): fsync the temp file and the directory on every save. 0: rename only. */
    int fsync;
} sync_file_rooms_options;

#define SYNC_FILE_ROOMS_OPTIONS_INIT                                                               \
    {                                                                                              \
        SYNC_FILE_ROOMS_OPTIONS_VERSION, NULL, 1                                                   \
    }

SYNC_EXTERN int sync_file_rooms_options_init(sync_file_rooms_options *opts, unsigned int version);

/**
 * The built-in file room store: room NAME is the file "<dir>/<encoded NAME>.json", written like
 * the file adapter's (temp file, fsync, rename, fsync the directory). The encoding keeps
 * [a-z0-9_-] and writes every other byte as "%XX" (upper-case hex), so a name never leaves the
 * directory, never starts with '.', and two names never map to files that differ only in case.
 */
SYNC_EXTERN int sync_room_store_file_new(sync_room_store **out,
                                         const sync_file_rooms_options *opts);

/**
 * The built-in Redis room store: room NAME is the hash "<prefix>room:NAME" (fields state,
 * version, epoch, updated_at) and its name is in the set "<prefix>rooms"; a save writes both in
 * one MULTI/EXEC transaction, a remove deletes both likewise. One connection shared by every
 * thread under a mutex, opened by the first call and again by the first call after it was lost
 * (a Redis that is down fails the calls meanwhile with SYNC_EIO, never the store). A record
 * that cannot be parsed is renamed to "<prefix>corrupt:room:NAME:<ms>-<random>" (and leaves the
 * set) and reported as SYNC_ECORRUPT. SYNC_EUNSUPPORTED when libsync was built without Redis
 * support.
 */
SYNC_EXTERN int sync_room_store_redis_new(sync_room_store **out, const sync_redis_options *opts);

/* ------------------------------------------------------------------------------------------ */
/* Room mounts on the built-in server                                                          */
/* ------------------------------------------------------------------------------------------ */

typedef struct sync_rooms sync_rooms;           /**< the rooms of one mount; owned by the server */
typedef struct sync_room_setup sync_room_setup; /**< one room being created */

/**
 * Prepares a room's new engine before its record is loaded: register handlers, validator,
 * middleware and hooks on sync_room_setup_engine(), and choose the initial state of a room that
 * was never saved (sync_room_setup_set_initial_state_json()). Returns SYNC_OK, a negative status
 * to refuse the room (its joins are refused with HTTP 503; nothing is created), or, after
 * sync_room_setup_defer(), SYNC_PENDING to finish later with sync_room_setup_complete() (the
 * joining clients are upgraded and held meanwhile, like a deferred auth, and closed with 4408 if
 * the room is not ready within auth_timeout_ms). Runs on the thread that needs the room: the
 * server's service thread for a join, the caller of sync_rooms_acquire() (the service thread
 * when the room was unloading and is loaded afresh once that finished).
 */
typedef int (*sync_room_setup_cb)(sync_room_setup *setup, void *userdata);

/** The room's name; borrowed, valid until the setup completes. */
SYNC_EXTERN const char *sync_room_setup_name(const sync_room_setup *setup);
/** The room's engine, created from the mount's engine options; borrowed. */
SYNC_EXTERN sync_engine *sync_room_setup_engine(const sync_room_setup *setup);
/** The state (JSON text, copied) of a room whose store has no record yet. */
SYNC_EXTERN int sync_room_setup_set_initial_state_json(sync_room_setup *setup, const char *json);
/** Inside the setup callback: keeps `setup` for sync_room_setup_complete(). Returns `setup`. */
SYNC_EXTERN sync_room_setup *sync_room_setup_defer(sync_room_setup *setup);
/** Finishes a deferred setup: SYNC_OK goes on to load, a negative status refuses the room.
 *  Any thread, exactly once, before the server is freed (which frees a setup still deferred). */
SYNC_EXTERN int sync_room_setup_complete(sync_room_setup *setup, int status);

#define SYNC_ROOMS_OPTIONS_VERSION 1

typedef struct sync_rooms_options {
    unsigned int version; /**< SYNC_ROOMS_OPTIONS_VERSION */
    /** Runs once per room creation; NULL = every room is the template alone. */
    sync_room_setup_cb setup;
    void *setup_userdata;
    sync_free_cb setup_free_userdata; /**< runs once: when the server is freed or mounting fails */
    /** Template of every room's engine (copied; NULL = defaults). Its adapter, hooks and
     *  log_free_userdata must be NULL (a room's adapter comes from the store, hooks from setup),
     *  and timer_mode SYNC_TIMERS_MANUAL (the server ticks its rooms). auto_broadcast is on. */
    const sync_engine_options *engine_options;
    /** Where rooms are kept (a reference is taken). NULL = in memory only: an unloaded room
     *  starts afresh when it is joined again. */
    sync_room_store *store;
} sync_rooms_options;

#define SYNC_ROOMS_OPTIONS_INIT                                                                    \
    {                                                                                              \
        SYNC_ROOMS_OPTIONS_VERSION, NULL, NULL, NULL, NULL, NULL                                   \
    }

SYNC_EXTERN int sync_rooms_options_init(sync_rooms_options *opts, unsigned int version);

/**
 * Mounts rooms at `prefix` ("/rooms/": copied; must start and end with '/'): a WebSocket upgrade
 * to prefix + NAME (percent-decoded, checked with sync_room_name_check) joins room NAME. Only
 * before listen. A path mounted with sync_server_mount() is matched first. *out_rooms (may be
 * NULL) is the mount's handle, valid until the server is freed.
 */
SYNC_EXTERN int sync_server_mount_rooms(sync_server *server, const char *prefix,
                                        const sync_rooms_options *opts, sync_rooms **out_rooms);

/** In the auth callback: the room a request joins (decoded), or NULL for a path that is not a
 *  room. Borrowed likewise. */
SYNC_EXTERN const char *sync_request_room(const sync_request *req);

/* Rooms without clients. Any thread, listening or not; a room that is not loaded is loaded for
 * the call (setup, then load) and unloaded again once idle. */

/** Room `name`'s engine, loaded if needed and kept loaded until sync_rooms_release(); use any
 *  engine call on it (get_state, set_state, broadcast). Waits for a setup or load that finishes
 *  later. SYNC_ELIMIT when max_rooms are loaded and none is idle. */
SYNC_EXTERN int sync_rooms_acquire(sync_rooms *rooms, const char *name, sync_engine **out);

/** The same without waiting: done(status, engine, userdata) runs once the room is ready or
 *  failed, on the thread that finished it (maybe this one, before the call returns). On
 *  success the room is held as by sync_rooms_acquire(). */
typedef void (*sync_room_ready_cb)(int status, sync_engine *engine, void *userdata);
SYNC_EXTERN int sync_rooms_acquire_async(sync_rooms *rooms, const char *name,
                                         sync_room_ready_cb done, void *userdata);

/** Ends one sync_rooms_acquire() hold of `engine`. */
SYNC_EXTERN int sync_rooms_release(sync_rooms *rooms, sync_engine *engine);

/** *out_names_json: a JSON array of every room stored or loaded, sorted by byte value; caller
 *  owns it (sync_free). On a clustered server (cluster.h) "stored" is the rooms in Redis under
 *  the mount's prefix, whichever node created them (at most 1,000,000: SYNC_ELIMIT beyond). */
SYNC_EXTERN int sync_rooms_list(sync_rooms *rooms, char **out_names_json);

/** Deletes room `name`: its clients are closed with SYNC_CLOSE_ROOM_DELETED, it is unloaded
 *  without saving, and its record is removed from the store. A later join creates it afresh.
 *  On a clustered server (cluster.h) the room is deleted from Redis and every node closes its
 *  clients and unloads it; the record stays when Redis failed (SYNC_EIO). */
SYNC_EXTERN int sync_rooms_delete(sync_rooms *rooms, const char *name);

/** Rooms loaded now. */
SYNC_EXTERN size_t sync_rooms_loaded_count(sync_rooms *rooms);

#ifdef __cplusplus
}
#endif

#endif /* LIBSYNC_ROOMS_H */

/* Test doubles for the engine suites: a push connection that records every frame and close, and
 * an in-memory adapter that counts its calls and can fail or finish later on demand. */
#ifndef LIBSYNC_TEST_FAKE_CONN_H
#define LIBSYNC_TEST_FAKE_CONN_H

#include <pthread.h>
#include <stdatomic.h>

#include <libsync/libsync.h>

typedef struct fake_conn {
    sync_conn *conn;
    pthread_mutex_t lock;
    char **frames;
    size_t count;
    size_t cap;
    int closes;
    int last_code;
    int fail_send;             /* send returns SYNC_ESEND */
    sync_engine *close_engine; /* when set, close() reports handle_close at once */
} fake_conn;

/* A fake connection; the fake lives until the last reference to its sync_conn is gone. */
fake_conn *fake_conn_new(void);
/* A fake connection opened on `engine` (sync_engine_handle_open, its status not checked). */
fake_conn *fake_conn_open(sync_engine *engine);
/* Releases the test's reference. */
void fake_conn_release(fake_conn *fake);
size_t fake_conn_frames(fake_conn *fake);
int fake_conn_closes(fake_conn *fake);
/* Frame i parsed (caller deletes), NULL when out of range or not JSON. */
cJSON *fake_conn_frame_json(fake_conn *fake, size_t i);
/* The "type" of frame i ("" when none). Copied into a static buffer per call site: use at once. */
const char *fake_conn_frame_type(fake_conn *fake, size_t i, char *buf, size_t size);
/* The "data.counter" of frame i, or -999999 when absent. */
double fake_conn_frame_counter(fake_conn *fake, size_t i);

typedef struct fake_store {
    pthread_mutex_t lock;
    char *json; /* NULL: never saved */
    int64_t version;
    int inits, loads, saves, backups, destroyed;
    int fail_init, fail_load, fail_save, fail_backup; /* status to return, 0 = succeed */
    int no_backup;                                    /* leave vtable.backup NULL */
    int async;             /* 1: every call returns SYNC_PENDING; finish with fake_store_finish */
    sync_pending *pending; /* the call waiting for fake_store_finish */
    int pending_call;      /* 0 init, 1 load, 2 save, 3 backup */
    char *pending_json;
    int64_t pending_version;
} fake_store;

void fake_store_init(fake_store *store, const char *json, int64_t version);
void fake_store_cleanup(fake_store *store);
/* An adapter over `store` (the store must outlive it). */
sync_adapter *fake_adapter_new(fake_store *store);
/* Finishes the pending call with `status`; returns 0 when nothing was pending. */
int fake_store_finish(fake_store *store, int status);
int fake_store_has_pending(fake_store *store);

/* A step (handler, validator or middleware) that leaves its message for the test to complete: it
 * stores the message in the sync_msg * that `userdata` points to and returns SYNC_PENDING. */
int fake_park(sync_msg *msg, void *userdata);

/* Hook counters shared by the suites. */
/* Counters are atomic because SYNC_TIMERS_THREAD runs hooks on the engine's own thread. */
typedef struct hook_log {
    atomic_int connects, disconnects, state_changes, syncs, backups, pings, pongs, timeouts, errors;
    atomic_int last_error_status;
    char last_error_context[128];
    char last_error_message[1024];
    _Atomic int64_t last_sync_version;
    _Atomic int64_t last_ping_ms;
    _Atomic int64_t first_ping_ms;
} hook_log;

/* Hooks that count into `log` (which must outlive the engine). */
sync_hooks hook_log_hooks(hook_log *log);

/* An engine with `opts` whose hooks count into `log` (replacing opts->hooks; when `log` is NULL
 * the hooks of `opts` stay); NULL when sync_engine_new failed. */
sync_engine *hooked_engine(const sync_engine_options *opts, hook_log *log);

#endif

/*
 * What both built-in stores (file and SQLite) must do alike, checked against either of them: the
 * record a load returns, an engine started on a corrupt store or one that cannot save, and
 * backups that fail. Each adapter test names its store once and runs these beside its own cases.
 */
#ifndef LIBSYNC_TEST_STORE_CONTRACT_H
#define LIBSYNC_TEST_STORE_CONTRACT_H

#include <libsync/libsync.h>

#include "adapter_engine.h"

typedef struct store_kind {
    const char *name;       /* prefix of the test directories: "file", "sqlite" */
    const char *file_name;  /* the store's file in its directory: "state.json" */
    const char *backup_ext; /* of a finished backup: ".json" */
    /* The store at `path`, backups in `backups_dir` (NULL: the store's default), or NULL. */
    sync_adapter *(*open)(const char *path, const char *backups_dir);
} store_kind;

/* A load returns exactly `state` at `version`. */
void store_expect_record(sync_adapter *adapter, const char *state, int64_t version);

/* A load finds nothing saved: NULL state. */
void store_expect_never_saved(sync_adapter *adapter);

/* A load fails with `status` and hands back no state. */
void store_expect_load_fails(sync_adapter *adapter, int status);

/* The engine holds exactly `state` at `version`. */
void store_expect_state(sync_engine *engine, const char *state, int64_t version);

/* Inits `adapter`, saves {"counter":i,"name":"demo"} for i = 1..n, checks that every save
 * succeeded and that the last one loads back, and frees it; the mean microseconds per save (-1
 * when the adapter is NULL or its init failed). */
double store_time_saves(sync_adapter *adapter, int n);

/* A change to {"n":2} on an engine (at version 0) whose store cannot save: the change stays in
 * memory at version 1, and exactly one SYNC_EIO in "sync" is reported to `errors`. */
void store_expect_save_fails_change_kept(sync_engine *engine, const aeng_errors *errors);

/* An engine started on a store holding `junk`: it reports SYNC_ECORRUPT in "load", starts from
 * its initial state, keeps the junk aside once, and its next save is what a restart finds. */
void store_check_engine_on_corrupt_store(const store_kind *store, const char *junk);

/* An engine whose store can never be written (a path under /proc): every change stays in memory
 * and each failed save is reported as SYNC_EIO in "sync". */
void store_check_engine_failed_save_reported(const store_kind *store);

/* A backups directory that cannot be created (a file in its way) and a backup that cannot be
 * written (the disk fills) fail with SYNC_EIO and a reason, leave no temporary file and no
 * backup behind, and the store keeps saving; once there is room the next backup succeeds. */
void store_check_failed_backups(const store_kind *store);

#endif

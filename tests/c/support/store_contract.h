/*
 * What both built-in stores (file and SQLite) must do alike, checked against either of them: a
 * fresh store, round trips and restarts, large states, a full disk, paths that cannot be written,
 * backups (and backups that fail), an engine restarted on the store, started on a corrupt store or
 * on one that cannot save. Each adapter test describes its store once (store_kind), runs the whole
 * contract with store_run_contract() and keeps only the cases that are its own.
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
    /* Checks, without the adapter, that the store (or backup) at `path` holds exactly `state` at
     * `version` in the store's own format. */
    void (*check_on_disk)(const char *path, const char *state, int64_t version);
    /* Where the differences between the stores are part of what each promises: */
    int init_creates_file;        /* init() writes the store's file (SQLite) or not (file) */
    const char *default_backups;  /* without backups_dir: "<store file><this>", or NULL for none */
    const char *disk_full_reason; /* in the error of a save that hits a full disk (NULL: any) */
} store_kind;

/* Runs every check below that takes a store_kind, each as its own case named "store: ...". */
void store_run_contract(const store_kind *store);

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

/* A SQLite adapter at `path` with `durability` and the other options at their defaults, not yet
 * initialised; NULL when it cannot be made. */
sync_adapter *store_sqlite_new(const char *path, sync_sqlite_durability durability);

/* A change to {"n":2} on an engine (at version 0) whose store cannot save: the change stays in
 * memory at version 1, and exactly one SYNC_EIO in "sync" is reported to `errors`. */
void store_expect_save_fails_change_kept(sync_engine *engine, const aeng_errors *errors);

/* A store in directories that do not exist yet: _new() opens nothing, init() creates the
 * directories (and the file where init_creates_file), and a load finds nothing saved. */
void store_check_fresh_store(const store_kind *store);

/* Records of every JSON type load back as saved, and a new adapter on the same path (a restart)
 * loads the last one; on disk the store holds exactly that record. */
void store_check_round_trip_and_restart(const store_kind *store);

/* A 64 KiB state is saved and loaded back whole after a restart. */
void store_check_large_state(const store_kind *store);

/* A save that hits a full disk fails with SYNC_EIO and a reason, leaves no temporary file and the
 * previous record intact (on disk and through the adapter); the same adapter saves again once
 * there is room, and a restart finds that record. */
void store_check_disk_full_keeps_old_record(const store_kind *store);

/* A path the kernel refuses (under /proc) and one below a regular file: init fails with SYNC_EIO
 * and a reason naming the cause, and saves keep failing without a crash. */
void store_check_unwritable_paths(const store_kind *store);

/* Backups into a directory that does not exist yet (created on the first backup, not before):
 * each gets its own timestamped file even within one millisecond, no temporary file is left, and
 * each holds the record of its time. Without backups_dir: the store's default, or none. */
void store_check_backups(const store_kind *store);

/* An engine on a fresh store starts from its initial state; its change is saved, and a
 * restarted engine continues from the store, not from its initial state. */
void store_check_engine_restart(const store_kind *store);

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

/* What the fuzz targets share: their scratch directory, a log sink that drops everything, loading a
 * store through its adapter, and the check that an engine started on a store serves exactly what
 * the store's adapter loaded from it. */
#ifndef LIBSYNC_FUZZ_SUPPORT_H
#define LIBSYNC_FUZZ_SUPPORT_H

#include <libsync/libsync.h>

#include <stddef.h>
#include <stdint.h>

/* Creates the scratch directory `dir` (a mkdtemp() template, completed in place) and writes
 * "<dir>/<file>" into `path` (`size` bytes); calls `fail` when the directory cannot be made. */
void fuzz_scratch_dir(char *dir, const char *file, char *path, size_t size,
                      void (*fail)(const char *what));

/* A log sink that drops everything (inputs provoke warnings on purpose). */
void fuzz_quiet_log(sync_log_level level, const char *message, void *userdata);

/* Inits `adapter` and, when that succeeds, loads its record into *json and *version; the status
 * of the first call that did not succeed, or SYNC_OK. */
int fuzz_init_and_load(sync_adapter *adapter, char **json, int64_t *version);

/* Starts an engine (initial state {"fresh":true}) on `adapter`, which it takes, and checks that it
 * starts and serves JSON; when `loaded` is not NULL (the adapter loaded it at `version` from the
 * same store), that the engine serves that state at that version (a negative one restarts at 0).
 * Calls `fail` (which does not return) when it does not. */
void fuzz_check_engine_start(sync_adapter *adapter, const char *loaded, int64_t version,
                             void (*fail)(const char *what));

#endif

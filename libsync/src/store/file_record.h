/* One JSON record {"state":...,"version":...} in a file of its own: the file adapter's store and
 * each room of the file room store. Loading keeps an unreadable file aside (renamed to
 * "<path>.corrupt-<ms>", SYNC_ECORRUPT); saving writes a temp file beside it and renames it over,
 * so a crash at any instant leaves the old record or the new one. */
#ifndef LIBSYNC_SRC_STORE_FILE_RECORD_H
#define LIBSYNC_SRC_STORE_FILE_RECORD_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

typedef struct file_record {
    char *path;
    char *dir; /* the directory holding path: fsynced after each rename */
    int fsync;
    /* Temp files are "<temp_base>.tmp-<pid>-<n>"; NULL: "<path>.tmp-<pid>-<n>". */
    const char *temp_base;
    /* A corrupt file becomes "<aside_prefix><ms>"; NULL: "<path>.corrupt-<ms>". */
    const char *aside_prefix;
} file_record;

/* As an adapter's load: *out_state_json (sync_malloc) NULL when the file does not exist. */
int file_record_load(const file_record *fr, char **out_state_json, int64_t *out_version);

/* As an adapter's save (state_json, or state when it is NULL). */
int file_record_save(const file_record *fr, const cJSON *state, const char *state_json,
                     size_t state_len, int64_t version);

/* The same with the epoch of the record's history (delta.h): load fills `epoch` (SYNC__EPOCH_MAX
 * + 1 bytes; "" when the record has none or it is not a valid epoch), save writes `epoch` as the
 * member "epoch" unless it is NULL or "". */
int file_record_load_epoch(const file_record *fr, char **out_state_json, int64_t *out_version,
                           char *epoch);
int file_record_save_epoch(const file_record *fr, const cJSON *state, const char *state_json,
                           size_t state_len, int64_t version, const char *epoch);

/* The SYNC_EIO of a read that failed (errno set by fs_read_file()), naming the file. */
int file_record_fail_read(const file_record *fr);

/* Removes the temp files of saves that a killed process left in `dir`: "<base>.tmp-<pid>-<n>"
 * whose process is gone. */
void file_record_remove_stale_temps(const char *dir, const char *base);

#endif

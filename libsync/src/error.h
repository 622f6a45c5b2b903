/* Per-thread error details behind sync_error_last(), and the helper every module uses to fail. */
#ifndef LIBSYNC_SRC_ERROR_H
#define LIBSYNC_SRC_ERROR_H

#include "libsync/common.h"

/* Records a printf-style detail for sync_error_last() on this thread and returns `status`, so a
 * failing path reads `return sync__fail(SYNC_EINVAL, "table name contains a quote");`. */
int sync__fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Options structs only grow at the end: a caller built against an older header passes an older
 * version and must keep working, so 1..known is accepted; 0 (never set) and versions from a newer
 * header are refused with SYNC_EINVAL and "unknown <what> options version V (...)". */
int sync__check_options_version(unsigned int version, unsigned int known, const char *what);

/* The body of every *_options_init(opts, version): NULL and version checks, then the defaults of
 * the fields that version has (`size`: the struct's size in that version, so an older caller's
 * shorter struct is never written past) with `version` set. Every options struct starts with its
 * `unsigned int version`. */
int sync__options_init(void *opts, const void *defaults, size_t size, unsigned int version,
                       unsigned int known, const char *what);

/* The first check of every *_new(out, opts) after `out`: options given, of a known version. */
int sync__check_options(const void *opts, unsigned int known, const char *what);

/* The sync_now_ms() clock in microseconds (durations of saves, the broadcast's yield). */
int64_t sync__now_us(void);

/* Clears the detail at the start of a public call that succeeded. */
void sync__error_clear(void);

#endif

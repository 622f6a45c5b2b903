/* Per-thread error details behind sync_error_last(), and the helper every module uses to fail. */
#ifndef LIBSYNC_SRC_ERROR_H
#define LIBSYNC_SRC_ERROR_H

#include "libsync/common.h"

/* Records a printf-style detail for sync_error_last() on this thread and returns `status`, so a
 * failing path reads `return sync_fail(SYNC_EINVAL, "table name contains a quote");`. */
int sync_fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Options structs only grow at the end: a caller built against an older header passes an older
 * version and must keep working, so 1..known is accepted; 0 (never set) and versions from a newer
 * header are refused with SYNC_EINVAL and "unknown <what> options version V (...)". */
int sync_check_options_version(unsigned int version, unsigned int known, const char *what);

/* Clears the detail at the start of a public call that succeeded. */
void sync_error_clear(void);

#endif

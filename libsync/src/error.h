/* Per-thread error details behind sync_error_last(), and the helper every module uses to fail. */
#ifndef LIBSYNC_SRC_ERROR_H
#define LIBSYNC_SRC_ERROR_H

#include "libsync/common.h"

/* Records a printf-style detail for sync_error_last() on this thread and returns `status`, so a
 * failing path reads `return sync__fail(SYNC_EINVAL, "table name contains a quote");`. */
int sync__fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Clears the detail at the start of a public call that succeeded. */
void sync__error_clear(void);

#endif

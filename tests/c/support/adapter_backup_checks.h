/* The backup failures both stores must survive the same way, checked against either of them. */
#ifndef LIBSYNC_TEST_ADAPTER_BACKUP_CHECKS_H
#define LIBSYNC_TEST_ADAPTER_BACKUP_CHECKS_H

#include <libsync/libsync.h>

/* Opens the store at `path` with its backups in `backups_dir` (NULL on failure). */
typedef sync_adapter *(*abk_open_fn)(const char *path, const char *backups_dir);

/* In a fresh directory named `name`: a backups directory that cannot be created (a file is in
 * its way) and a backup that cannot be written (the disk fills) fail with SYNC_EIO and a reason,
 * leave no temporary file and no backup behind, and the store keeps saving; once there is room
 * the next backup succeeds. `backup_ext` is the extension of a finished backup. */
void abk_check_failed_backups(const char *name, abk_open_fn open_store, const char *store_file,
                              const char *backup_ext);

#endif

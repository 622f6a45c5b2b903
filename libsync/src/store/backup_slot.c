/* Naming, publishing and cleaning up one backup of a store (see backup_slot.h). */
#include "backup_slot.h"

#include "error.h"
#include "fsutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int backup_slot_open(backup_slot *slot, const char *dir)
{
    *slot = (backup_slot){.dir = dir};
    if (fs_mkdirs(dir) != 0)
        return sync__fail(SYNC_EIO, "cannot create backups directory %s: %s", dir, strerror(errno));
    char *tmp_base = NULL;
    if (asprintf(&tmp_base, "%s/.backup", dir) < 0)
        tmp_base = NULL;
    if (asprintf(&slot->prefix, "%s/backup-", dir) < 0)
        slot->prefix = NULL;
    slot->tmp = tmp_base ? fs_temp_name(tmp_base) : NULL;
    free(tmp_base);
    if (!slot->tmp || !slot->prefix)
        return sync__fail(SYNC_ENOMEM, "out of memory naming a backup in %s", dir);
    return SYNC_OK;
}

int backup_slot_publish(backup_slot *slot, const char *suffix, int do_fsync, int64_t *out_ms)
{
    int64_t ms = sync_wall_ms();
    if (fs_rename_stamped(slot->tmp, slot->prefix, suffix, &ms, NULL) != 0)
        return sync__fail(SYNC_EIO, "cannot store backup in %s: %s", slot->dir, strerror(errno));
    slot->published = 1;
    if (do_fsync && fs_fsync_dir(slot->dir) != 0)
        return sync__fail(SYNC_EIO, "cannot sync backups directory %s: %s", slot->dir,
                          strerror(errno));
    *out_ms = ms;
    return SYNC_OK;
}

void backup_slot_release(backup_slot *slot)
{
    if (slot->tmp && !slot->published)
        unlink(slot->tmp);
    free(slot->tmp);
    free(slot->prefix);
    *slot = (backup_slot){0};
}

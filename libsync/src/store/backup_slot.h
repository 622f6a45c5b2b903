/*
 * The part of a backup both stores share: a temporary file in the backups directory, which the
 * store fills its own way, then published as "backup-<ms><suffix>" without ever replacing an
 * earlier backup. Failures are reported through sync__fail(), naming the directory and the step.
 */
#ifndef LIBSYNC_SRC_BACKUP_SLOT_H
#define LIBSYNC_SRC_BACKUP_SLOT_H

#include <stdint.h>

typedef struct backup_slot {
    const char *dir; /* borrowed from the store */
    char *prefix;    /* "<dir>/backup-" */
    char *tmp;       /* where the store writes the copy; unique in the process */
    int published;
} backup_slot;

/* Creates `dir` when missing and names the temporary file. On failure the slot still needs
 * backup_slot_release(). */
int backup_slot_open(backup_slot *slot, const char *dir);

/* Renames the finished temporary file to the first free stamp from now on (two backups in one
 * millisecond get consecutive stamps) and, when do_fsync, syncs the directory so the name
 * survives a power loss. *out_ms receives the stamp. */
int backup_slot_publish(backup_slot *slot, const char *suffix, int do_fsync, int64_t *out_ms);

/* Removes the temporary file unless it was published, and frees the names. */
void backup_slot_release(backup_slot *slot);

#endif

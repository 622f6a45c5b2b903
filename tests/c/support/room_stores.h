/* The built-in room stores as the room store tests open them: under a test directory, so that
 * the same directory opens the same store again. */
#ifndef LIBSYNC_TEST_ROOM_STORES_H
#define LIBSYNC_TEST_ROOM_STORES_H

#include <libsync/libsync.h>

/* SQLite: "<dir>/rooms.sqlite", default table. NULL on failure. */
sync_room_store *rs_open_sqlite(const char *dir);
/* File: "<dir>/rooms/", without fsync (the crash suite covers durability; here speed matters).
 * NULL on failure. */
sync_room_store *rs_open_file(const char *dir);

#endif

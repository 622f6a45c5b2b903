/* Room names: the check every entry point runs, and the file-name encoding of the file room
 * store (kept beside the check so that both agree on what a name can be). */
#ifndef LIBSYNC_SRC_STORE_ROOM_NAME_H
#define LIBSYNC_SRC_STORE_ROOM_NAME_H

#include <stddef.h>

#include "libsync/rooms.h"

/* Longest encoding of a valid name: every byte as "%XX". */
#define SYNC__ROOM_ENCODED_MAX (SYNC_ROOM_NAME_MAX * 3)

/* Writes the encoding of `name` (checked already) into `out` (SYNC__ROOM_ENCODED_MAX + 1 bytes):
 * [a-z0-9_-] kept, every other byte "%XX" in upper-case hex. Returns its length. */
size_t sync__room_name_encode(const char *name, char *out);

/* The name whose encoding is exactly `encoded[0..len)`, into `out` (SYNC_ROOM_NAME_MAX + 1
 * bytes): 0, or -1 when the text is not the encoding of a valid name (another spelling of the
 * same bytes, lower-case hex, a byte that should have been escaped, a bad name). */
int sync__room_name_decode(const char *encoded, size_t len, char *out);

#endif

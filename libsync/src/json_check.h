/* Checks cJSON does not make: UTF-8 validity, a nesting limit enforced before parsing (so a
 * hostile message cannot exhaust the stack), exact-length parsing and finite numbers only. */
#ifndef LIBSYNC_SRC_JSON_CHECK_H
#define LIBSYNC_SRC_JSON_CHECK_H

#include <cjson/cJSON.h>
#include <stddef.h>

/* SYNC_OK, or SYNC_EPARSE (with sync_error_last() naming the byte offset) when `text` is not
 * well-formed UTF-8 or contains a NUL byte. */
int sync_json_check_utf8(const char *text, size_t len);

/* SYNC_OK, or SYNC_ETOODEEP when arrays/objects nest deeper than max_depth (strings are skipped).
 */
int sync_json_check_depth(const char *text, size_t len, int max_depth);

/* Parses exactly `len` bytes (no NUL needed) into *out (caller owns). max_depth <= 0 leaves only
 * cJSON's own nesting limit. Runs every check above and refuses non-finite numbers; on failure
 * returns SYNC_EPARSE/SYNC_ETOODEEP/SYNC_ENOMEM with the detail in sync_error_last(). */
int sync_json_parse(const char *text, size_t len, int max_depth, cJSON **out);

#endif

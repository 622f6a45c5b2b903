/* Checks cJSON does not make: UTF-8 validity, a nesting limit enforced before parsing (so a
 * hostile message cannot exhaust the stack), exact-length parsing, finite numbers only, no
 * \u0000 in a string (cJSON would cut the string there) and no duplicate member names (cJSON
 * reads the first, JavaScript the last): every parser in front of libsync must read a text the
 * way libsync does. */
#ifndef LIBSYNC_SRC_JSON_CHECK_H
#define LIBSYNC_SRC_JSON_CHECK_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

/* Well-formed UTF-8 (RFC 3629: no overlong forms, surrogates or code points past U+10FFFF),
 * checked in pieces: `*state` (0 at the start of a text) carries an unfinished sequence from one
 * call to the next. Returns how many bytes of `bytes` were valid: `len` when all were; the text is
 * complete and valid when, after its last piece, that is `len` and `*state` is 0. */
size_t sync__utf8_accept(uint32_t *state, const void *bytes, size_t len);

/* SYNC_OK, or SYNC_EPARSE (with sync_error_last() naming the byte offset) when `text` is not
 * well-formed UTF-8 or contains a NUL byte. */
int sync__json_check_utf8(const char *text, size_t len);

/* SYNC_OK; SYNC_ETOODEEP when arrays/objects nest deeper than max_depth (> 0; strings are
 * skipped); SYNC_EPARSE when a string holds the escape \u0000. */
int sync__json_check_depth(const char *text, size_t len, int max_depth);

/* SYNC_OK, or SYNC_EINVAL (sync_error_last() names the path, "$.items[3].price") when the tree
 * holds a non-finite number or an object with two members of the same name (or one without a
 * name); SYNC_ENOMEM. Iterative, O(nodes + name bytes): what a handler built may be checked
 * before it becomes the state. */
int sync__json_check_tree(const cJSON *root);

/* Parses exactly `len` bytes (no NUL needed) into *out (caller owns). max_depth <= 0 leaves only
 * cJSON's own nesting limit. Runs every check above; on failure returns SYNC_EPARSE (also for a
 * non-finite number, \u0000 or a duplicate name), SYNC_ETOODEEP or SYNC_ENOMEM with the detail in
 * sync_error_last(). */
int sync__json_parse(const char *text, size_t len, int max_depth, cJSON **out);

/* sync__json_parse, in one pass over the text before cJSON reads it in place. `utf8_valid`: the
 * caller already knows the text is well-formed UTF-8 (a WebSocket text frame), so that check is
 * left out; NUL bytes are still refused. */
int sync__json_parse_text(const char *text, size_t len, int max_depth, int utf8_valid, cJSON **out);

#endif

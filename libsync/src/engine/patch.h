/*
 * JSON Patch (RFC 6902) on cJSON, with JSON Pointers (RFC 6901): the diff that turns one state
 * into the next, the apply that a client (or the server, rewinding) runs, and the composed patch
 * for a client several versions behind. Nothing here knows about engines or frames: the feed
 * computes a version's patch once and shares its text like it shares frames.
 *
 * Equality, and what a patch reproduces. Member order counts: two objects with the same members
 * in another order differ, because state frames serialise members in order and a client that
 * applies a patch must end on a state that serialises byte for byte like the server's. A member
 * that moved in order (a handler deleted it and added it again: cJSON appends it) becomes a
 * `move` from its path to the same path, which RFC 6902 defines as remove + add, so it lands at
 * the end. Numbers are printed by cJSON's printer, the one every state frame uses, so a number in
 * a patch is exactly the text a state frame would carry for it, and a client that applies patches
 * holds the same doubles as one that received the whole state. (That printer writes %1.15g when
 * it reads back within DBL_EPSILON of the double, else %1.17g; so two numbers are equal here when
 * they print alike: a change the wire cannot show is no change.) `test` compares as RFC 6902
 * says, member order ignored, numbers as above.
 *
 * Inputs with repeated member names (the engine never holds them) give a patch that may not
 * reproduce them; nothing crashes. Deeper than SYNC__JSON_PATCH_MAX_DEPTH, the diff replaces the
 * whole subtree rather than recursing further.
 */
#ifndef LIBSYNC_SRC_ENGINE_PATCH_H
#define LIBSYNC_SRC_ENGINE_PATCH_H

#include <cjson/cJSON.h>
#include <stddef.h>

enum { SYNC__JSON_PATCH_MAX_DEPTH = 512 };
/* An object whose members parted order gets a reverse that restores it whole (order included)
 * when it prints in about this many bytes or less. */
enum { SYNC__JSON_PATCH_EXACT_REVERSE_BYTES = 4096 };

/* sync__json_diff flags */
enum { SYNC__JSON_DIFF_REVERSE = 1 }; /* also build the patch that turns `to` back into `from` */

/* A diff's result: compact JSON texts of ops arrays, malloc()ed, NUL-terminated. */
typedef struct sync__json_patch {
    char *text; /* "[...]": the ops that turn `from` into `to`, "[]" when they are equal */
    size_t len;
    size_t ops;    /* how many operations `text` holds */
    char *reverse; /* with SYNC__JSON_DIFF_REVERSE: the ops that turn `to` back into `from`,
                      member order included, except in an object over
                      SYNC__JSON_PATCH_EXACT_REVERSE_BYTES whose members parted order (a
                      removal before its end, a move): values right, order maybe not */
    size_t reverse_len;
} sync__json_patch;

/* The ops that turn `from` into `to` (both borrowed), written as the text the wire carries.
 * Linear in the size of the two trees: arrays are trimmed of their common prefix and suffix and
 * the middle is walked in step, realigned at a difference on the nearest equal pair within 16
 * elements (an insertion, a removal, a capped log are a few ops); objects are walked in order and
 * matched by a hash of their names only where the orders part.
 * `max_len` > 0 is the caller's budget (the length of the whole state's text): when the patch
 * text would be longer, the diff stops early and returns SYNC_ETOOBIG (send the state instead).
 * Returns SYNC_OK, SYNC_ETOOBIG, SYNC_EINVAL (NULL input) or SYNC_ENOMEM; *out is filled only
 * on SYNC_OK and is released with sync__json_patch_clear(). */
int sync__json_diff(const cJSON *from, const cJSON *to, size_t max_len, unsigned flags,
                    sync__json_patch *out);

/* Frees the texts of `patch` (a zeroed or already cleared one is fine) and zeroes it. */
void sync__json_patch_clear(sync__json_patch *patch);

/* Applies the ops array `ops` to *doc, atomically: on any error *doc is exactly as before (every
 * change is undone in reverse order, without copying the document). *doc may be replaced (a path
 * of "" names the whole document). add, remove, replace, move, copy and test are supported.
 * Returns SYNC_OK; SYNC_EINVAL for a malformed patch (not an array, an op that is not an object,
 * an unknown op, a missing or non-string "path"/"from", a missing "value", a pointer that does
 * not start with '/', a '~' not followed by 0 or 1, an array index that is not a number, "-"
 * with anything but add, moving a value into its own child, removing the root); SYNC_ESTATE for
 * a patch that does not fit the document (a member that is not there, an index out of range,
 * stepping into a number or string, a failed test); SYNC_ENOMEM. sync_error_last() names the op
 * (by position), its pointer and what was wrong. */
int sync__json_patch_apply(cJSON **doc, const cJSON *ops);

/* The same with the ops as text (`len` bytes), parsed as the engine parses a message
 * (sync__json_parse: UTF-8, finite numbers, no repeated member names, cJSON's nesting limit);
 * SYNC_EPARSE when it is not such JSON, e.g. an op with "op" twice (RFC 6902 A.13). */
int sync__json_patch_apply_text(cJSON **doc, const char *text, size_t len);

/* The composed patch for a client behind by several versions: diff(state at base, current).
 * The server keeps, per version V, the reverse patch of V (V -> V-1, from SYNC__JSON_DIFF_REVERSE)
 * instead of whole states; `reverse[0]` is the newest version's (current -> current-1) and
 * `reverse[count-1]` the oldest's (base+1 -> base). The base state is rebuilt on a copy of
 * `current` and diffed against it, so the result is as small as one diff, however many versions
 * lie between, and costs one copy plus one diff of the state (computed once per base and version,
 * shared by every client at that base). The client ends on a state that serialises like
 * `current`, unless a wide object (see `reverse` above) lost members from its middle or reordered
 * between base and current: then only that object's member order may differ. Same results as
 * sync__json_diff, plus the errors of sync__json_patch_apply_text for a stored reverse patch that
 * does not apply. */
int sync__json_diff_since(const cJSON *current, const char *const *reverse,
                          const size_t *reverse_len, size_t count, size_t max_len,
                          sync__json_patch *out);

/* Deep equality. `ordered` != 0: object members must come in the same order (the diff's
 * equality, "serialises the same"); 0: RFC 6902's (the `test` op's). Numbers are equal when
 * cJSON prints them alike.
 * Values nested deeper than SYNC__JSON_PATCH_MAX_DEPTH are reported unequal. */
int sync__json_equal(const cJSON *a, const cJSON *b, int ordered);

#endif

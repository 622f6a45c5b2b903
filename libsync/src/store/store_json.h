/* JSON text the stores write and hand out. */
#ifndef LIBSYNC_SRC_STORE_STORE_JSON_H
#define LIBSYNC_SRC_STORE_STORE_JSON_H

#include <cjson/cJSON.h>
#include <stddef.h>

/* The text a save writes: *inout_json as given (a save gets the state serialised already), or
 * `state` printed when only the tree came (*printed then holds it; the caller cJSON_free()s it).
 * SYNC_OK, SYNC_EINVAL without either, SYNC_ENOMEM. */
int store_state_text(const cJSON *state, const char **inout_json, size_t *inout_len,
                     char **printed);

/* `value` printed compactly into memory from sync_malloc(), which libsync's callers release
 * with sync_free(); NULL when out of memory. */
char *store_print(const cJSON *value);

#endif

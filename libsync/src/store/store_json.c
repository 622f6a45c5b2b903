/* JSON text the stores write and hand out (store_json.h). */
#include "store_json.h"

#include <string.h>

#include "error.h"
#include "libsync/common.h"

int store_state_text(const cJSON *state, const char **inout_json, size_t *inout_len, char **printed)
{
    *printed = NULL;
    if (*inout_json)
        return SYNC_OK;
    if (!state)
        return sync__fail(SYNC_EINVAL, "save without a state");
    *printed = cJSON_PrintUnformatted(state);
    if (!*printed)
        return sync__fail(SYNC_ENOMEM, "out of memory serialising the state");
    *inout_json = *printed;
    *inout_len = strlen(*printed);
    return SYNC_OK;
}

char *store_print(const cJSON *value)
{
    /* cJSON may have been given another allocator: copy into libsync's. */
    char *printed = cJSON_PrintUnformatted(value);
    char *copy = printed ? sync_strdup(printed) : NULL;
    cJSON_free(printed);
    return copy;
}

/* The one allocator on both sides of the API (common.h): what libsync frees, a caller allocates
 * here, and the other way round. */
#include <stdlib.h>
#include <string.h>

#include "libsync/common.h"

void sync_free(void *ptr)
{
    free(ptr);
}

void *sync_malloc(size_t size)
{
    return malloc(size ? size : 1);
}

char *sync_strdup(const char *text)
{
    if (!text)
        return NULL;
    size_t len = strlen(text) + 1;
    char *copy = sync_malloc(len);
    if (copy)
        memcpy(copy, text, len);
    return copy;
}

#include "options.h"

#include <string.h>

#include "error.h"

int sync__check_options_version(unsigned int version, unsigned int known, const char *what)
{
    if (version == 0 || version > known)
        return sync__fail(SYNC_EINVAL, "unknown %s options version %u (this library knows %u)",
                          what, version, known);
    return SYNC_OK;
}

int sync__options_init(void *opts, const void *defaults, size_t size, unsigned int version,
                       unsigned int known, const char *what)
{
    if (!opts)
        return sync__fail(SYNC_EINVAL, "%s options pointer is NULL", what);
    int rc = sync__check_options_version(version, known, what);
    if (rc != SYNC_OK)
        return rc;
    memcpy(opts, defaults, size);
    memcpy(opts, &version, sizeof version);
    sync__error_clear();
    return SYNC_OK;
}

int sync__check_options(const void *opts, unsigned int known, const char *what)
{
    if (!opts)
        return sync__fail(SYNC_EINVAL, "%s options pointer is NULL", what);
    unsigned int version;
    memcpy(&version, opts, sizeof version);
    return sync__check_options_version(version, known, what);
}

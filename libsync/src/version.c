#include "libsync/version.h"

int sync_version_number(void)
{
    return SYNC_VERSION_NUMBER;
}

const char *sync_version_string(void)
{
    return SYNC_VERSION_STRING;
}

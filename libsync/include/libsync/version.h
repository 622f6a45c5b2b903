/*
 * libsync — version. The release version (SYNC_VERSION_*) is separate from the ABI number
 * (SYNC_SOVERSION): the SONAME is libsync.so.SYNC_SOVERSION and changes only when the ABI breaks.
 * CMakeLists.txt reads these numbers from this file, so this is the single place they live.
 */
#ifndef LIBSYNC_VERSION_H
#define LIBSYNC_VERSION_H

#include "libsync/common.h"

#define SYNC_VERSION_MAJOR 0
#define SYNC_VERSION_MINOR 2
#define SYNC_VERSION_PATCH 0
#define SYNC_VERSION_STR_(x) #x
#define SYNC_VERSION_STR(x) SYNC_VERSION_STR_(x)
#define SYNC_VERSION_STRING                                                                        \
    SYNC_VERSION_STR(SYNC_VERSION_MAJOR)                                                           \
    "." SYNC_VERSION_STR(SYNC_VERSION_MINOR) "." SYNC_VERSION_STR(SYNC_VERSION_PATCH)
#define SYNC_SOVERSION 0

/** Packs a version for compile-time comparisons: SYNC_VERSION_NUMBER >= SYNC_MAKE_VERSION(0,2,0).
 */
#define SYNC_MAKE_VERSION(major, minor, patch) ((major)*1000000 + (minor)*1000 + (patch))
#define SYNC_VERSION_NUMBER                                                                        \
    SYNC_MAKE_VERSION(SYNC_VERSION_MAJOR, SYNC_VERSION_MINOR, SYNC_VERSION_PATCH)

#ifdef __cplusplus
extern "C" {
#endif

/** Version of the library loaded at run time, as SYNC_MAKE_VERSION packs it. */
SYNC_EXTERN int sync_version_number(void);
/** Version string of the library loaded at run time ("0.2.0"); static, never freed. */
SYNC_EXTERN const char *sync_version_string(void);

#ifdef __cplusplus
}
#endif

#endif /* LIBSYNC_VERSION_H */

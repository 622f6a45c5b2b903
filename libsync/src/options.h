/* The checks every versioned options struct goes through (engine, server, stores). */
#ifndef LIBSYNC_SRC_OPTIONS_H
#define LIBSYNC_SRC_OPTIONS_H

#include <stddef.h>

/* Options structs only grow at the end: a caller built against an older header passes an older
 * version and must keep working, so 1..known is accepted; 0 (never set) and versions from a newer
 * header are refused with SYNC_EINVAL and "unknown <what> options version V (...)". */
int sync__check_options_version(unsigned int version, unsigned int known, const char *what);

/* The body of every *_options_init(opts, version): NULL and version checks, then the defaults of
 * the fields that version has (`size`: the struct's size in that version, so an older caller's
 * shorter struct is never written past) with `version` set. Every options struct starts with its
 * `unsigned int version`. */
int sync__options_init(void *opts, const void *defaults, size_t size, unsigned int version,
                       unsigned int known, const char *what);

/* The first check of every *_new(out, opts) after `out`: options given, of a known version. */
int sync__check_options(const void *opts, unsigned int known, const char *what);

#endif

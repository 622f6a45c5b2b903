/*
 * libsync — common definitions: export macro, status codes, error details, time, memory.
 *
 * Conventions used by every libsync header:
 *   - Every public name starts with `sync_` (functions, types) or `SYNC_` (macros, enums).
 *   - Functions return `int`: SYNC_OK (0) on success, SYNC_PENDING (1) when the work was accepted
 *     and finishes later, a negative `sync_status` on failure. After a failure,
 *     sync_error_last() describes exactly what was wrong, for the calling thread.
 *   - A function that hands out a handle through `out` takes it as its first argument; the caller
 *     owns it and releases it with the matching `_free`. Every `_free(NULL)` is a harmless no-op.
 *   - Strings passed in are copied unless the comment says otherwise. Strings and JSON values
 *     handed out are borrowed unless the comment says the caller owns them; a borrowed value stays
 *     valid only for the duration stated next to the function (usually: the callback it was
 *     given to).
 *   - One allocator across the boundary: memory that libsync hands to the caller is released with
 *     sync_free(), and memory the caller hands to libsync to release (an adapter's loaded state)
 *     is allocated with sync_malloc() or sync_strdup(); never free()/malloc() from another
 *     allocator (a binding, a DLL with its own C runtime).
 *   - Userdata with a free callback (`free_userdata`, `auth_free_userdata`, `log_free_userdata`,
 *     an adapter's `destroy`): from the call that receives it, libsync owns it and runs the free
 *     callback exactly once. That holds for every constructor and registration on every path:
 *     when it succeeds, once the object (or the registration) lets go of the userdata; when it
 *     fails for any reason (a NULL `out` or other bad argument, an unknown struct version, a wrong
 *     option value, out of memory), before it returns. The caller never frees it itself. The one
 *     exception is a call that cannot find the callback: the struct that holds it is NULL.
 */
#ifndef LIBSYNC_COMMON_H
#define LIBSYNC_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define SYNC_EXTERN __declspec(dllimport)
#elif defined(__GNUC__)
#define SYNC_EXTERN __attribute__((visibility("default")))
#else
#define SYNC_EXTERN
#endif

/** Status codes. SYNC_OK and SYNC_PENDING are not errors; everything negative is. */
typedef enum sync_status {
    SYNC_OK = 0,
    /** Accepted; the work completes later (a completion call, or queued behind another
     *  operation of the same engine that is still running). Not an error. */
    SYNC_PENDING = 1,
    SYNC_EINVAL = -1,        /**< invalid argument (NULL handle, bad option value, bad name) */
    SYNC_ENOMEM = -2,        /**< out of memory */
    SYNC_EPARSE = -3,        /**< text is not valid UTF-8, not valid JSON, or JSON libsync
                                  refuses (non-finite number, \u0000, repeated member name) */
    SYNC_EMESSAGE = -4,      /**< valid JSON but not a message (not an object, no string "type") */
    SYNC_ETOOBIG = -5,       /**< over a size limit (message bytes, state bytes) */
    SYNC_ETOODEEP = -6,      /**< JSON nested deeper than the configured limit */
    SYNC_ENOHANDLER = -7,    /**< no handler registered for the message type */
    SYNC_EREJECTED = -8,     /**< a validator, middleware or handler refused the message */
    SYNC_EHANDLER = -9,      /**< a handler (or other user callback) failed */
    SYNC_EIO = -10,          /**< persistence I/O failed (unreadable, read-only, disk full) */
    SYNC_ECORRUPT = -11,     /**< a store exists but cannot be parsed; it was kept aside */
    SYNC_ECLOSED = -12,      /**< the connection, engine or server is closed or disposed */
    SYNC_ESTATE = -13,       /**< the call is not valid in the current state of the object */
    SYNC_ESEND = -14,        /**< a transport failed to send a frame */
    SYNC_ENET = -15,         /**< network setup failed (bind, listen, TLS context) */
    SYNC_ELIMIT = -16,       /**< a configured limit was reached (connections, rate, buffer) */
    SYNC_EUNSUPPORTED = -17, /**< the operation is not supported (e.g. adapter without backup) */
    SYNC_ETIMEDOUT = -18     /**< a step did not finish within its time limit (step_timeout_ms) */
} sync_status;

/** Fixed English text for a status code; never NULL, never freed. */
SYNC_EXTERN const char *sync_strerror(int status);

/**
 * Detail of the last failure on the calling thread ("table name contains a quote",
 * "message of 70000 bytes is over the 65536-byte limit"). Never NULL (empty string when
 * nothing failed yet). Borrowed: valid until the next libsync call on the same thread.
 */
SYNC_EXTERN const char *sync_error_last(void);

/** Milliseconds of CLOCK_MONOTONIC: the clock of every libsync deadline and tick. */
SYNC_EXTERN int64_t sync_now_ms(void);

/** Milliseconds since the Unix epoch (CLOCK_REALTIME): the clock of backup timestamps. */
SYNC_EXTERN int64_t sync_wall_ms(void);

/** Releases memory that a libsync function documented as "caller owns, free with sync_free". */
SYNC_EXTERN void sync_free(void *ptr);

/** Allocates `size` bytes (at least 1) that libsync may release with sync_free(); NULL when out
 *  of memory. For memory handed to libsync, such as an adapter's loaded state. */
SYNC_EXTERN void *sync_malloc(size_t size);

/** A copy of `text` made with sync_malloc(); NULL when `text` is NULL or out of memory. */
SYNC_EXTERN char *sync_strdup(const char *text);

/** Destructor for a userdata pointer; called exactly once when libsync drops it. */
typedef void (*sync_free_cb)(void *userdata);

/** Log levels for sync_log_cb. */
typedef enum sync_log_level {
    SYNC_LOG_ERROR = 0,
    SYNC_LOG_WARN = 1,
    SYNC_LOG_INFO = 2,
    SYNC_LOG_DEBUG = 3
} sync_log_level;

/**
 * Log sink. `message` is borrowed for the duration of the call. May be called from any thread
 * that is running libsync code; must not call back into the object that logs.
 */
typedef void (*sync_log_cb)(sync_log_level level, const char *message, void *userdata);

#ifdef __cplusplus
}
#endif

#endif /* LIBSYNC_COMMON_H */

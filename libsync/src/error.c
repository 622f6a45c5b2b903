#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A thread-local buffer instead of a global pointer: two threads failing at once must each read
 * their own detail (cJSON's global error pointer is the counter-example). */
static _Thread_local char last_error[512];

int sync__fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

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

void sync__error_clear(void)
{
    last_error[0] = '\0';
}

const char *sync_error_last(void)
{
    return last_error;
}

const char *sync_strerror(int status)
{
    switch (status) {
    case SYNC_OK:
        return "success";
    case SYNC_PENDING:
        return "accepted, completes later";
    case SYNC_EINVAL:
        return "invalid argument";
    case SYNC_ENOMEM:
        return "out of memory";
    case SYNC_EPARSE:
        return "not valid UTF-8 JSON";
    case SYNC_EMESSAGE:
        return "not a message (needs a JSON object with a string \"type\")";
    case SYNC_ETOOBIG:
        return "over the size limit";
    case SYNC_ETOODEEP:
        return "JSON nested too deeply";
    case SYNC_ENOHANDLER:
        return "no handler for the message type";
    case SYNC_EREJECTED:
        return "message rejected";
    case SYNC_EHANDLER:
        return "handler failed";
    case SYNC_EIO:
        return "persistence I/O error";
    case SYNC_ECORRUPT:
        return "stored state is corrupt (kept aside)";
    case SYNC_ECLOSED:
        return "closed or disposed";
    case SYNC_ESTATE:
        return "not valid in the current state";
    case SYNC_ESEND:
        return "send failed";
    case SYNC_ENET:
        return "network setup failed";
    case SYNC_ELIMIT:
        return "limit reached";
    case SYNC_EUNSUPPORTED:
        return "not supported";
    case SYNC_ETIMEDOUT:
        return "timed out";
    default:
        return "unknown status";
    }
}

int64_t sync_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sync__now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t sync_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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

/* Status codes as text, and the per-thread detail of the last failure (sync__fail). */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>

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

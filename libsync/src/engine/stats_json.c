/* sync_engine_stats_json: the statistics as one JSON text, so that every binding parses the same
 * object instead of converting each field of sync_engine_stats by hand. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "error.h"
#include "libsync/engine.h"

char *sync_engine_stats_json(sync_engine *engine)
{
    sync_engine_stats s = {0};
    s.version = SYNC_ENGINE_STATS_VERSION;
    if (sync_engine_get_stats(engine, &s) < 0)
        return NULL; /* sync_error_last() says why */
    /* Integers printed exactly (a double would round counters past 2^53). */
    char *json = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&json, &size);
    if (!out) {
        sync__fail(SYNC_ENOMEM, "sync_engine_stats_json: out of memory");
        return NULL;
    }
    fprintf(out,
            "{\"state_version\":%" PRId64 ",\"connections\":%" PRIu64 ",\"messages_in\":%" PRIu64
            ",\"messages_applied\":%" PRIu64 ",\"messages_dropped\":%" PRIu64
            ",\"handler_errors\":%" PRIu64 ",\"frames_out\":%" PRIu64 ",\"bytes_out\":%" PRIu64
            ",\"serialisations\":%" PRIu64 ",\"saves\":%" PRIu64 ",\"save_errors\":%" PRIu64
            ",\"last_save_us\":%" PRIu64 ",\"total_save_us\":%" PRIu64 ",\"state_bytes\":%zu"
            ",\"steps_timed_out\":%" PRIu64 "}",
            s.state_version, s.connections, s.messages_in, s.messages_applied, s.messages_dropped,
            s.handler_errors, s.frames_out, s.bytes_out, s.serialisations, s.saves, s.save_errors,
            s.last_save_us, s.total_save_us, s.state_bytes, s.steps_timed_out);
    if (fclose(out) != 0 || !json) {
        free(json);
        sync__fail(SYNC_ENOMEM, "sync_engine_stats_json: out of memory");
        return NULL;
    }
    return json;
}

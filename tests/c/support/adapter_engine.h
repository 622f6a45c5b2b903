/* Runs an engine on top of a real adapter for the adapter tests, recording what on_error saw. */
#ifndef LIBSYNC_TEST_ADAPTER_ENGINE_H
#define LIBSYNC_TEST_ADAPTER_ENGINE_H

#include <libsync/libsync.h>

typedef struct aeng_errors {
    int count;
    int last_status;
    char last_context[32];
    char last_message[512];
} aeng_errors;

/* An engine (versioning on, saves on every change) that owns `adapter`; errors land in `errors`
 * (zeroed here). NULL when sync_engine_new failed. */
sync_engine *aeng_new(sync_adapter *adapter, const char *initial_state_json, aeng_errors *errors);

/* The engine's state as compact JSON (caller frees with sync_free). */
char *aeng_state(sync_engine *engine);

#endif

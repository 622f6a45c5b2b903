#include "adapter_engine.h"

#include <stdio.h>
#include <string.h>

static void record_error(sync_engine *engine, int status, const char *message, const char *context,
                         sync_conn *conn, void *userdata)
{
    (void)engine;
    (void)conn;
    aeng_errors *errors = userdata;
    errors->count++;
    errors->last_status = status;
    snprintf(errors->last_context, sizeof errors->last_context, "%s", context ? context : "");
    snprintf(errors->last_message, sizeof errors->last_message, "%s", message ? message : "");
}

sync_engine *aeng_new(sync_adapter *adapter, const char *initial_state_json, aeng_errors *errors)
{
    memset(errors, 0, sizeof *errors);
    sync_hooks hooks = SYNC_HOOKS_INIT;
    hooks.on_error = record_error;
    hooks.userdata = errors;
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = initial_state_json;
    opts.adapter = adapter;
    opts.persist_mode = SYNC_PERSIST_ON_CHANGE;
    opts.hooks = &hooks;
    sync_engine *engine = NULL;
    if (sync_engine_new(&engine, &opts) != SYNC_OK)
        return NULL;
    return engine;
}

char *aeng_state(sync_engine *engine)
{
    return sync_engine_get_state_json(engine);
}

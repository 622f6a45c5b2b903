#include "fuzz_support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fuzz_scratch_dir(char *dir, const char *file, char *path, size_t size,
                      void (*fail)(const char *what))
{
    if (!mkdtemp(dir))
        fail("mkdtemp");
    snprintf(path, size, "%s/%s", dir, file);
}

int fuzz_init_and_load(sync_adapter *adapter, char **json, int64_t *version)
{
    int rc = sync_adapter_init(adapter);
    if (rc == SYNC_OK)
        rc = sync_adapter_load(adapter, json, version);
    return rc;
}

void fuzz_quiet_log(sync_log_level level, const char *message, void *userdata)
{
    (void)level;
    (void)message;
    (void)userdata;
}

void fuzz_check_engine_start(sync_adapter *adapter, const char *loaded, int64_t version,
                             void (*fail)(const char *what))
{
    sync_engine_options eo = SYNC_ENGINE_OPTIONS_INIT;
    eo.initial_state_json = "{\"fresh\":true}";
    eo.adapter = adapter;
    eo.log = fuzz_quiet_log;
    sync_engine *engine = NULL;
    if (sync_engine_new(&engine, &eo) != SYNC_OK)
        fail("the engine did not start");
    char *state = sync_engine_get_state_json(engine);
    cJSON *parsed = state ? cJSON_Parse(state) : NULL;
    if (!parsed)
        fail("the engine serves a state that is not JSON");
    if (loaded) {
        cJSON *stored = cJSON_Parse(loaded);
        /* a negative stored version restarts at 0 */
        int64_t expect = version < 0 ? 0 : version;
        /* compared as compact text: cJSON_Compare cannot tell duplicate keys apart */
        char *stored_text = stored ? cJSON_PrintUnformatted(stored) : NULL;
        if (sync_engine_get_version(engine) != expect || !stored_text ||
            strcmp(stored_text, state) != 0)
            fail("the engine started from another state than the one the adapter loaded");
        cJSON_free(stored_text);
        cJSON_Delete(stored);
    }
    cJSON_Delete(parsed);
    sync_free(state);
    sync_engine_free(engine);
}

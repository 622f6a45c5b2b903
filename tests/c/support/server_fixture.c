#include "server_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int on_increment(sync_msg *msg, void *userdata)
{
    (void)userdata;
    cJSON *state = sync_msg_state_mut(msg);
    cJSON *counter = state ? cJSON_GetObjectItemCaseSensitive(state, "counter") : NULL;
    if (!cJSON_IsNumber(counter))
        return SYNC_EHANDLER;
    const cJSON *amount = cJSON_GetObjectItemCaseSensitive(sync_msg_message(msg), "amount");
    double by = cJSON_IsNumber(amount) ? amount->valuedouble : 1;
    cJSON_SetNumberValue(counter, counter->valuedouble + by);
    return SYNC_OK;
}

static int on_whoami(sync_msg *msg, void *userdata)
{
    (void)userdata;
    const char *identity = sync_conn_identity(sync_msg_conn(msg));
    const char *text = identity ? identity : "null";
    return sync_msg_reply(msg, text, strlen(text));
}

sync_engine *fixture_counter_engine(int start)
{
    char initial[64];
    snprintf(initial, sizeof initial, "{\"counter\":%d}", start);
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = initial;
    sync_engine *engine = NULL;
    if (sync_engine_new(&engine, &opts) != SYNC_OK)
        return NULL;
    if (sync_engine_on(engine, "increment", on_increment, NULL, NULL) != SYNC_OK ||
        sync_engine_on(engine, "whoami", on_whoami, NULL, NULL) != SYNC_OK) {
        sync_engine_free(engine);
        return NULL;
    }
    return engine;
}

long long fixture_counter_value(sync_engine *engine)
{
    char *json = sync_engine_get_state_json(engine);
    const char *at = json ? strstr(json, "\"counter\":") : NULL;
    long long v = at ? strtoll(at + 10, NULL, 10) : -1;
    sync_free(json);
    return v;
}

sync_server *fixture_server(const sync_server_options *opts, const char *path, sync_engine *engine)
{
    sync_server_options defaults = SYNC_SERVER_OPTIONS_INIT;
    sync_server *server = NULL;
    if (sync_server_new(&server, opts ? opts : &defaults) != SYNC_OK)
        return NULL;
    if ((engine && sync_server_mount(server, path, engine) != SYNC_OK) ||
        sync_server_start(server) != SYNC_OK) {
        sync_server_free(server);
        return NULL;
    }
    return server;
}

void fixture_quiet_log(sync_log_level level, const char *message, void *userdata)
{
    (void)level;
    (void)message;
    (void)userdata;
}

#include "engine_counter.h"

#include <stdio.h>
#include <string.h>

static int add(sync_msg *msg, double sign)
{
    const cJSON *amount = cJSON_GetObjectItemCaseSensitive(sync_msg_message(msg), "amount");
    cJSON *state = sync_msg_state_mut(msg);
    if (!state)
        return SYNC_ENOMEM;
    cJSON *counter = cJSON_GetObjectItemCaseSensitive(state, "counter");
    double now = cJSON_IsNumber(counter) ? counter->valuedouble : 0;
    double next = now + sign * (cJSON_IsNumber(amount) ? amount->valuedouble : 0);
    if (counter)
        cJSON_SetNumberValue(counter, next);
    else
        cJSON_AddNumberToObject(state, "counter", next);
    return SYNC_OK;
}

int counter_increment(sync_msg *msg, void *userdata)
{
    (void)userdata;
    return add(msg, 1);
}

int counter_decrement(sync_msg *msg, void *userdata)
{
    (void)userdata;
    return add(msg, -1);
}

int counter_require_amount(sync_msg *msg, void *userdata)
{
    (void)userdata;
    const cJSON *amount = cJSON_GetObjectItemCaseSensitive(sync_msg_message(msg), "amount");
    if (!cJSON_IsNumber(amount)) {
        sync_msg_set_error(msg, "amount must be a number");
        return SYNC_EREJECTED;
    }
    return SYNC_OK;
}

int counter_double_increments(sync_msg *msg, void *userdata)
{
    (void)userdata;
    const char *type = sync_msg_type(msg);
    if (!type || strcmp(type, "increment") != 0)
        return SYNC_OK;
    cJSON *copy = cJSON_Duplicate(sync_msg_message(msg), 1);
    cJSON *amount = cJSON_GetObjectItemCaseSensitive(copy, "amount");
    if (cJSON_IsNumber(amount))
        cJSON_SetNumberValue(amount, amount->valuedouble * 2);
    return sync_msg_replace(msg, copy);
}

void counter_register(sync_engine *engine, int validate)
{
    sync_engine_on(engine, "increment", counter_increment, NULL, NULL);
    sync_engine_on(engine, "decrement", counter_decrement, NULL, NULL);
    if (validate)
        sync_engine_set_validator(engine, counter_require_amount, NULL, NULL);
}

sync_engine *counter_engine(const sync_engine_options *opts, hook_log *log, int validate)
{
    sync_engine *engine = hooked_engine(opts, log);
    if (engine)
        counter_register(engine, validate);
    return engine;
}

double counter_value(sync_engine *engine)
{
    cJSON *state = sync_engine_get_state(engine);
    const cJSON *counter = cJSON_GetObjectItemCaseSensitive(state, "counter");
    double value = cJSON_IsNumber(counter) ? counter->valuedouble : -999999;
    cJSON_Delete(state);
    return value;
}

int counter_send(sync_engine *engine, sync_conn *conn, const char *type, double amount)
{
    char text[128];
    int len = snprintf(text, sizeof text, "{\"type\":\"%s\",\"amount\":%g}", type, amount);
    return conn ? sync_engine_handle_message(engine, conn, text, (size_t)len)
                : sync_engine_inject(engine, text, (size_t)len);
}

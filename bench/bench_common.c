#include "bench_common.h"

#include <stdio.h>
#include <time.h>

double bench_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

cJSON *bench_records(int count, int tags)
{
    cJSON *state = cJSON_CreateObject();
    cJSON_AddNumberToObject(state, "counter", 0);
    cJSON *items = cJSON_AddArrayToObject(state, "items");
    for (int i = 0; i < count; i++) {
        cJSON *item = cJSON_CreateObject();
        char name[32];
        snprintf(name, sizeof name, "item %d", i);
        cJSON_AddNumberToObject(item, "id", i);
        cJSON_AddStringToObject(item, "name", name);
        cJSON_AddNumberToObject(item, "price", i * 1.25);
        cJSON_AddBoolToObject(item, "stock", i % 2);
        if (tags) {
            cJSON *list = cJSON_AddArrayToObject(item, "tags");
            cJSON_AddItemToArray(list, cJSON_CreateString("a"));
            cJSON_AddItemToArray(list, cJSON_CreateString("b"));
        }
        cJSON_AddItemToArray(items, item);
    }
    return state;
}

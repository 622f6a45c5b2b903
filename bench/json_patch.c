/*
 * What a JSON Patch costs per version (src/engine/patch.c) next to sending the whole state: for a
 * 64 KiB and a 1 MiB state, the diff time and patch bytes of a counter increment, of one field of
 * one record, and of a record appended, against the time to serialise the state once. Also the
 * composed patch of a client 100 versions behind (one copy of the state and one diff, from the
 * reverse patches the server keeps).
 *
 *   build/bench/bench_json_patch [rounds]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libsync/common.h>

#include "bench_common.h"
#include "engine/patch.h"

static void measure(const char *shape, const char *edit, const cJSON *a, const cJSON *b, int rounds)
{
    double t0 = bench_now_us();
    for (int i = 0; i < rounds; i++)
        cJSON_free(cJSON_PrintUnformatted(b));
    double t1 = bench_now_us();
    sync__json_patch p = {0};
    for (int i = 0; i < rounds; i++) {
        sync__json_patch_clear(&p);
        if (sync__json_diff(a, b, 0, 0, &p) != SYNC_OK)
            abort();
    }
    double t2 = bench_now_us();
    char *text = cJSON_PrintUnformatted(b);
    printf(
        "%-7s %-22s state %8zu bytes (print %7.0f us)  patch %4zu bytes, %zu ops, diff %7.0f us\n",
        shape, edit, strlen(text), (t1 - t0) / rounds, p.len, p.ops, (t2 - t1) / rounds);
    cJSON_free(text);
    sync__json_patch_clear(&p);
}

static void run(const char *shape, int records, int rounds)
{
    cJSON *a = bench_records(records, 0);
    cJSON *b = cJSON_Duplicate(a, 1);
    cJSON_SetNumberValue(cJSON_GetObjectItemCaseSensitive(b, "counter"), 1);
    measure(shape, "counter + 1", a, b, rounds);
    cJSON_Delete(b);

    b = cJSON_Duplicate(a, 1);
    cJSON *items = cJSON_GetObjectItemCaseSensitive(b, "items");
    cJSON_SetNumberValue(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(items, records / 2), "price"), 7.5);
    measure(shape, "one field of a record", a, b, rounds);
    cJSON_Delete(b);

    b = cJSON_Duplicate(a, 1);
    items = cJSON_GetObjectItemCaseSensitive(b, "items");
    cJSON *item = cJSON_CreateObject();
    cJSON_AddNumberToObject(item, "id", records);
    cJSON_AddStringToObject(item, "name", "new");
    cJSON_AddItemToArray(items, item);
    measure(shape, "a record appended", a, b, rounds);
    cJSON_Delete(b);

    /* 100 counter increments: the reverse patches kept per version, then the composed patch */
    enum { BEHIND = 100 };
    char *rev[BEHIND];
    size_t rev_len[BEHIND];
    cJSON *cur = cJSON_Duplicate(a, 1);
    for (int v = 0; v < BEHIND; v++) {
        cJSON *next = cJSON_Duplicate(cur, 1);
        cJSON_SetNumberValue(cJSON_GetObjectItemCaseSensitive(next, "counter"), v + 1);
        sync__json_patch p;
        if (sync__json_diff(cur, next, 0, SYNC__JSON_DIFF_REVERSE, &p) != SYNC_OK)
            abort();
        rev[BEHIND - 1 - v] = p.reverse; /* newest first */
        rev_len[BEHIND - 1 - v] = p.reverse_len;
        free(p.text);
        cJSON_Delete(cur);
        cur = next;
    }
    double t0 = bench_now_us();
    sync__json_patch p;
    if (sync__json_diff_since(cur, (const char *const *)rev, rev_len, BEHIND, 0, &p) != SYNC_OK)
        abort();
    double t1 = bench_now_us();
    printf("%-7s %-22s composed patch %zu bytes in %.0f us\n", shape, "100 versions behind", p.len,
           t1 - t0);
    sync__json_patch_clear(&p);
    for (int v = 0; v < BEHIND; v++)
        free(rev[v]);
    cJSON_Delete(cur);
    cJSON_Delete(a);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 50;
    if (rounds <= 0)
        rounds = 50;
    run("64KiB", 1170, rounds * 10);
    run("1MiB", 17480, rounds);
    return 0;
}

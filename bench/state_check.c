/*
 * What the commit's state check costs next to the work a commit already does with the same state:
 * one walk (finite numbers, unique member names) against one compact serialisation and one deep
 * copy (a handler's sync_msg_state_mut). Prints one line per state shape, times in microseconds.
 *
 *   build/bench/bench_state_check [rounds]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libsync/common.h>

#include "bench_common.h"
#include "engine/json_check.h"

/* ~64 KiB of small objects: the shape of a list of records. */
static cJSON *records(void)
{
    return bench_records(700, 1);
}

/* ~64 KiB as one object with many members: the shape of a map keyed by id (the hash set). */
static cJSON *map(void)
{
    cJSON *state = cJSON_CreateObject();
    for (int i = 0; i < 3000; i++) {
        char key[32];
        snprintf(key, sizeof key, "user-%06d", i);
        cJSON_AddNumberToObject(state, key, i * 3.5);
    }
    return state;
}

/* The bench/run shape: a counter and one padding string. */
static cJSON *padded(void)
{
    cJSON *state = cJSON_CreateObject();
    cJSON_AddNumberToObject(state, "counter", 0);
    char *pad = malloc(65536);
    memset(pad, 'x', 65535);
    pad[65535] = '\0';
    cJSON_AddStringToObject(state, "pad", pad);
    free(pad);
    return state;
}

static void measure(const char *name, cJSON *state, int rounds)
{
    char *text = cJSON_PrintUnformatted(state);
    size_t bytes = strlen(text);
    cJSON_free(text);
    double t0 = bench_now_us();
    for (int i = 0; i < rounds; i++)
        if (sync__json_check_tree(state) != SYNC_OK)
            abort();
    double t1 = bench_now_us();
    for (int i = 0; i < rounds; i++)
        cJSON_free(cJSON_PrintUnformatted(state));
    double t2 = bench_now_us();
    for (int i = 0; i < rounds; i++)
        cJSON_Delete(cJSON_Duplicate(state, 1));
    double t3 = bench_now_us();
    double check = (t1 - t0) / rounds, print = (t2 - t1) / rounds, copy = (t3 - t2) / rounds;
    printf("%-8s %6zu bytes  check %8.1f us  print %8.1f us  copy %8.1f us  check/print %5.1f %%\n",
           name, bytes, check, print, copy, 100.0 * check / print);
    cJSON_Delete(state);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 500;
    if (rounds <= 0)
        rounds = 500;
    measure("records", records(), rounds);
    measure("map", map(), rounds);
    measure("padded", padded(), rounds);
    return 0;
}

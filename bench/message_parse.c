/*
 * What a client message costs before its handler runs, and with it: the JSON checks and parse
 * of sync__json_parse (the one step every message takes, in nanoseconds per message) for three
 * shapes of text, and a whole increment through the public API (sync_engine_handle_message on
 * a connection, a C handler, the new state sent back). Each figure is the median of `runs` runs
 * of `count` messages.
 *
 *   build/bench/bench_message_parse [count [runs]]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libsync/libsync.h>

#include "bench_common.h"
#include "engine/json_check.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void parse_case(const char *name, const char *text, int count, int runs)
{
    size_t len = strlen(text);
    double ns[64];
    for (int r = 0; r < runs; r++) {
        double t0 = bench_now_us();
        for (int i = 0; i < count; i++) {
            cJSON *value = NULL;
            if (sync__json_parse(text, len, 64, &value) != SYNC_OK)
                abort();
            cJSON_Delete(value);
        }
        ns[r] = (bench_now_us() - t0) * 1000.0 / count;
    }
    printf("parse  %-12s %6zu bytes  %9.1f ns/message\n", name, len, median(ns, runs));
}

static int discard(void *userdata, const char *text, size_t len)
{
    (void)userdata;
    (void)text;
    (void)len;
    return SYNC_OK;
}

static int increment(sync_msg *msg, void *userdata)
{
    (void)userdata;
    const cJSON *amount = cJSON_GetObjectItemCaseSensitive(sync_msg_message(msg), "amount");
    cJSON *state = sync_msg_state_mut(msg);
    if (!state)
        return SYNC_ENOMEM;
    cJSON *counter = cJSON_GetObjectItemCaseSensitive(state, "counter");
    if (!cJSON_IsNumber(counter) || !cJSON_IsNumber(amount))
        return SYNC_EINVAL;
    cJSON_SetNumberValue(counter, counter->valuedouble + amount->valuedouble);
    return SYNC_OK;
}

static void engine_case(int count, int runs)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = "{\"counter\":0}";
    sync_engine *engine = NULL;
    sync_conn *conn = NULL;
    sync_conn_callbacks cb = SYNC_CONN_CALLBACKS_INIT;
    cb.send = discard;
    if (sync_engine_new(&engine, &opts) != SYNC_OK ||
        sync_engine_on(engine, "increment", increment, NULL, NULL) != SYNC_OK ||
        sync_conn_new(&conn, &cb, NULL) != SYNC_OK ||
        sync_engine_handle_open(engine, conn) != SYNC_OK)
        abort();
    const char *text = "{\"type\":\"increment\",\"amount\":1}";
    size_t len = strlen(text);
    double ns[64];
    for (int r = 0; r < runs; r++) {
        double t0 = bench_now_us();
        for (int i = 0; i < count; i++)
            if (sync_engine_handle_message(engine, conn, text, len) != SYNC_OK)
                abort();
        ns[r] = (bench_now_us() - t0) * 1000.0 / count;
    }
    printf("engine %-12s %6zu bytes  %9.1f ns/message\n", "increment", len, median(ns, runs));
    sync_engine_handle_close(engine, conn);
    sync_conn_free(conn);
    sync_engine_free(engine);
}

static char *long_text(const char *unit, size_t bytes)
{
    size_t n = strlen(unit), reps = bytes / n;
    char *text = malloc(reps * n + 64);
    if (!text)
        abort();
    char *p = text + sprintf(text, "{\"type\":\"note\",\"text\":\"");
    for (size_t i = 0; i < reps; i++, p += n)
        memcpy(p, unit, n);
    strcpy(p, "\"}");
    return text;
}

int main(int argc, char **argv)
{
    int count = argc > 1 ? atoi(argv[1]) : 200000;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    if (count <= 0)
        count = 200000;
    if (runs <= 0 || runs > 64)
        runs = 5;
    char *ascii = long_text("plain text ", 1024);
    char *utf8 = long_text("\xc3\xa9t\xc3\xa9 \xe2\x82\xac ", 1024);
    parse_case("increment", "{\"type\":\"increment\",\"amount\":1}", count, runs);
    parse_case("1KiB-ascii", ascii, count / 10, runs);
    parse_case("1KiB-utf8", utf8, count / 10, runs);
    engine_case(count, runs);
    free(ascii);
    free(utf8);
    return 0;
}

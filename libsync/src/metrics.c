/* The Prometheus text exposition (format 0.0.4) of GET /metrics. */
#include "server_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct text_buf {
    char *data;
    size_t len;
    size_t cap;
    bool failed;
} text_buf;

static void put(text_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(text_buf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        /* the first call measures into no buffer at all: NULL + 0 is undefined behaviour */
        int n = vsnprintf(b->data ? b->data + b->len : NULL, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n + 1) * 2;
        char *data = realloc(b->data, cap);
        if (!data) {
            b->failed = true;
            return;
        }
        b->data = data;
        b->cap = cap;
    }
}

static void header(text_buf *b, const char *name, const char *type, const char *help)
{
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Escapes a label value (backslash, quote, newline) into out. */
static void label(const char *value, char *out, size_t size)
{
    size_t o = 0;
    for (const char *p = value; *p && o + 3 < size; p++) {
        if (*p == '\\' || *p == '"') {
            out[o++] = '\\';
            out[o++] = *p;
        } else if (*p == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

enum engine_metric {
    M_CONNECTIONS,
    M_MESSAGES_IN,
    M_APPLIED,
    M_DROPPED,
    M_HANDLER_ERRORS,
    M_FRAMES_OUT,
    M_BYTES_OUT,
    M_SERIALISATIONS,
    M_STATE_VERSION,
    M_STATE_BYTES,
    M_SAVES,
    M_SAVE_ERRORS,
    M_SAVE_LAST,
    M_SAVE_TOTAL,
    M_COUNT
};

static const struct {
    const char *name;
    const char *type;
    const char *help;
} engine_metrics[M_COUNT] = {
    {"libsync_connections", "gauge", "Open connections of the engine."},
    {"libsync_messages_in_total", "counter", "Messages received (pong included)."},
    {"libsync_messages_applied_total", "counter", "Messages whose handler succeeded."},
    {"libsync_messages_dropped_total", "counter", "Messages dropped by any failure."},
    {"libsync_handler_errors_total", "counter", "Handler failures."},
    {"libsync_frames_out_total", "counter", "Frames handed to transports."},
    {"libsync_bytes_out_total", "counter", "Bytes of frames handed to transports."},
    {"libsync_serialisations_total", "counter", "Times the state was serialised."},
    {"libsync_state_version", "gauge", "Current state version (-1 when versioning is off)."},
    {"libsync_state_bytes", "gauge", "Size of the state as compact JSON."},
    {"libsync_persist_saves_total", "counter", "Adapter saves that succeeded."},
    {"libsync_persist_errors_total", "counter", "Adapter saves that failed."},
    {"libsync_persist_last_seconds", "gauge", "Duration of the last save."},
    {"libsync_persist_seconds_total", "counter", "Sum of all save durations."},
};

static void engine_value(text_buf *b, enum engine_metric m, const sync_engine_stats *st,
                         const char *path)
{
    const char *name = engine_metrics[m].name;
    switch (m) {
    case M_CONNECTIONS:
        put(b, "%s{path=\"%s\"} %" PRIu64 "\n", name, path, st->connections);
        break;
    case M_MESSAGES_IN:
        put(b, "%s{path=\"%s\"} %" PRIu64 "\n", name, path, st->messages_in);
        break;
    case M_APPLIED:
        put(b, "%s{path=\"%s\"} %" PRIu64 "\n", name, path, st->messages_applied);
        break;
    case M_DROPPED:
        put(b, "%s{path=\"%s\"} %" PRIu64 "\n", name, path, st->messages_dropped);
        break;
    case M_HANDLER_ERRORS:
        put(b, "%s{path=\"%s\"} %" PRIu64 "\n", name, path, st->handler_errors);
        break;
    case M_FRAMES_OUT:
        put(b, "%s{path=\"%s\"} %" PRIu64 "\n", name, path, st->frames_out);
        break;
    case M_BYTES_OUT:
        put(b, "%s{path=\"%s\"} %" PRIu64 "\n", name, path, st->bytes_out);
        break;
    case M_SERIALISATIONS:
        put(b, "%s{path=\"%s\"} %" PRIu64 "\n", name, path, st->serialisations);
        break;
    case M_STATE_VERSION:
        put(b, "%s{path=\"%s\"} %" PRId64 "\n", name, path, st->state_version);
        break;
    case M_STATE_BYTES:
        put(b, "%s{path=\"%s\"} %zu\n", name, path, st->state_bytes);
        break;
    case M_SAVES:
        put(b, "%s{path=\"%s\"} %" PRIu64 "\n", name, path, st->saves);
        break;
    case M_SAVE_ERRORS:
        put(b, "%s{path=\"%s\"} %" PRIu64 "\n", name, path, st->save_errors);
        break;
    case M_SAVE_LAST:
        put(b, "%s{path=\"%s\"} %.6f\n", name, path, (double)st->last_save_us / 1e6);
        break;
    case M_SAVE_TOTAL:
        put(b, "%s{path=\"%s\"} %.6f\n", name, path, (double)st->total_save_us / 1e6);
        break;
    case M_COUNT:
        break;
    }
}

static void server_counter(text_buf *b, const char *name, const char *type, const char *help,
                           uint64_t value)
{
    header(b, name, type, help);
    put(b, "%s %" PRIu64 "\n", name, value);
}

char *server_metrics_render(sync_server *server, size_t *len)
{
    text_buf b = {NULL, 0, 0, false};
    size_t n = server->engine_count;
    sync_engine_stats *stats = calloc(n ? n : 1, sizeof *stats);
    if (!stats)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        stats[i].version = SYNC_ENGINE_STATS_VERSION;
        sync_engine_get_stats(server->engines[i]->engine, &stats[i]);
    }
    /* every family once, with one sample per engine (labelled by its first mount path) */
    for (int m = 0; m < M_COUNT; m++) {
        header(&b, engine_metrics[m].name, engine_metrics[m].type, engine_metrics[m].help);
        for (size_t i = 0; i < n; i++) {
            char path[256];
            label(server->engines[i]->path, path, sizeof path);
            engine_value(&b, (enum engine_metric)m, &stats[i], path);
        }
    }
    free(stats);
    server_counter(&b, "libsync_server_connections", "gauge", "Open WebSocket connections.",
                   (uint64_t)(server->ws_open > 0 ? server->ws_open : 0));
    server_counter(&b, "libsync_server_connections_accepted_total", "counter",
                   "WebSocket connections accepted.", server->accepted);
    server_counter(&b, "libsync_server_connections_refused_total", "counter",
                   "WebSocket upgrades refused (404, 403, 401, 503...).", server->refused);
    server_counter(&b, "libsync_server_rate_limited_total", "counter",
                   "Messages dropped by the per-connection rate limit.", server->rate_limited);
    server_counter(&b, "libsync_server_messages_in_total", "counter",
                   "WebSocket messages received by the server.", server->messages_in);
    server_counter(&b, "libsync_server_bytes_in_total", "counter",
                   "WebSocket payload bytes received.", server->bytes_in);
    server_counter(&b, "libsync_server_frames_sent_total", "counter",
                   "WebSocket frames written to sockets.", server->frames_sent);
    server_counter(&b, "libsync_server_broadcasts_cut_short_total", "counter",
                   "Broadcasts that stopped to read waiting input and went on with a newer state.",
                   server->broadcasts_cut_short);
    server_counter(&b, "libsync_server_bytes_sent_total", "counter",
                   "WebSocket payload bytes written to sockets.", server->bytes_sent);
    server_counter(&b, "libsync_server_closed_slow_total", "counter",
                   "Connections closed for letting too many frames queue up.",
                   (uint64_t)atomic_load(&server->closed_slow));
    server_counter(&b, "libsync_server_closed_too_big_total", "counter",
                   "Connections closed for a message over the size limit.", server->closed_too_big);
    if (b.failed) {
        free(b.data);
        return NULL;
    }
    *len = b.len;
    return b.data;
}

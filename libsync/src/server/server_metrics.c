/* The Prometheus text exposition (format 0.0.4) of GET /metrics. */
#include "server_internal.h"

#include "cluster/cluster.h"

#include <inttypes.h>
#include <stddef.h>
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

/* How a field of sync_engine_stats is printed. */
enum sample_kind {
    SAMPLE_COUNT,   /* uint64_t */
    SAMPLE_SIGNED,  /* int64_t (the version is -1 when versioning is off) */
    SAMPLE_SIZE,    /* size_t */
    SAMPLE_SECONDS, /* uint64_t microseconds, printed in seconds as Prometheus expects */
};

typedef struct engine_metric {
    const char *name;
    const char *type;
    const char *help;
    size_t offset; /* of the field in sync_engine_stats */
    enum sample_kind kind;
} engine_metric;

#define STAT(field) offsetof(sync_engine_stats, field)

static const engine_metric engine_metrics[] = {
    {"libsync_connections", "gauge", "Open connections of the engine.", STAT(connections),
     SAMPLE_COUNT},
    {"libsync_messages_in_total", "counter", "Messages received (pong included).",
     STAT(messages_in), SAMPLE_COUNT},
    {"libsync_messages_applied_total", "counter", "Messages whose handler succeeded.",
     STAT(messages_applied), SAMPLE_COUNT},
    {"libsync_messages_dropped_total", "counter", "Messages dropped by any failure.",
     STAT(messages_dropped), SAMPLE_COUNT},
    {"libsync_handler_errors_total", "counter", "Handler failures.", STAT(handler_errors),
     SAMPLE_COUNT},
    {"libsync_steps_timed_out_total", "counter", "Steps given up at step_timeout_ms.",
     STAT(steps_timed_out), SAMPLE_COUNT},
    {"libsync_frames_out_total", "counter", "Frames handed to transports.", STAT(frames_out),
     SAMPLE_COUNT},
    {"libsync_bytes_out_total", "counter", "Bytes of frames handed to transports.", STAT(bytes_out),
     SAMPLE_COUNT},
    {"libsync_serialisations_total", "counter", "Times the state was serialised.",
     STAT(serialisations), SAMPLE_COUNT},
    {"libsync_state_version", "gauge", "Current state version (-1 when versioning is off).",
     STAT(state_version), SAMPLE_SIGNED},
    {"libsync_state_bytes", "gauge", "Size of the state as compact JSON.", STAT(state_bytes),
     SAMPLE_SIZE},
    {"libsync_persist_saves_total", "counter", "Adapter saves that succeeded.", STAT(saves),
     SAMPLE_COUNT},
    {"libsync_persist_errors_total", "counter", "Adapter saves that failed.", STAT(save_errors),
     SAMPLE_COUNT},
    {"libsync_persist_last_seconds", "gauge", "Duration of the last save.", STAT(last_save_us),
     SAMPLE_SECONDS},
    {"libsync_persist_seconds_total", "counter", "Sum of all save durations.", STAT(total_save_us),
     SAMPLE_SECONDS},
};

static void engine_sample(text_buf *b, const engine_metric *m, const sync_engine_stats *st,
                          const char *path)
{
    const char *field = (const char *)st + m->offset;
    put(b, "%s{path=\"%s\"} ", m->name, path);
    switch (m->kind) {
    case SAMPLE_COUNT: {
        uint64_t v;
        memcpy(&v, field, sizeof v);
        put(b, "%" PRIu64 "\n", v);
        break;
    }
    case SAMPLE_SIGNED: {
        int64_t v;
        memcpy(&v, field, sizeof v);
        put(b, "%" PRId64 "\n", v);
        break;
    }
    case SAMPLE_SIZE: {
        size_t v;
        memcpy(&v, field, sizeof v);
        put(b, "%zu\n", v);
        break;
    }
    case SAMPLE_SECONDS: {
        uint64_t us;
        memcpy(&us, field, sizeof us);
        put(b, "%.6f\n", (double)us / 1e6);
        break;
    }
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
    size_t nr = server_rooms_mount_count(server);
    sync_engine_stats *stats = calloc(n + nr ? n + nr : 1, sizeof *stats);
    uint64_t *room_counts = calloc(nr ? nr * 4 : 1, sizeof *room_counts);
    if (!stats || !room_counts) {
        free(stats);
        free(room_counts);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        stats[i].version = SYNC_ENGINE_STATS_VERSION;
        sync_engine_get_stats(server->engines[i]->engine, &stats[i]);
    }
    /* a room mount's rooms are one sample, labelled by its prefix: a label per room would be
     * unbounded cardinality. Counters include the rooms unloaded since. */
    for (size_t i = 0; i < nr; i++)
        server_rooms_stats(server, i, &stats[n + i], &room_counts[4 * i], &room_counts[4 * i + 1],
                           &room_counts[4 * i + 2], &room_counts[4 * i + 3]);
    /* every family once, with one sample per engine (labelled by its first mount path) */
    for (size_t m = 0; m < sizeof engine_metrics / sizeof engine_metrics[0]; m++) {
        const engine_metric *metric = &engine_metrics[m];
        header(&b, metric->name, metric->type, metric->help);
        for (size_t i = 0; i < n + nr; i++) {
            char path[256];
            label(i < n ? server->engines[i]->path : server_rooms_prefix(server, i - n), path,
                  sizeof path);
            engine_sample(&b, metric, &stats[i], path);
        }
    }
    free(stats);
    static const struct {
        const char *name, *type, *help;
    } room_families[] = {
        {"libsync_rooms_loaded", "gauge", "Rooms loaded (or loading, or unloading) now."},
        {"libsync_rooms_created_total", "counter", "Rooms created and loaded."},
        {"libsync_rooms_unloaded_total", "counter", "Rooms saved and unloaded (idle, evicted)."},
        {"libsync_rooms_refused_total", "counter",
         "Joins refused: a bad room name, max_rooms with none idle, a room that failed to load."},
    };
    for (size_t f = 0; nr && f < 4; f++) {
        header(&b, room_families[f].name, room_families[f].type, room_families[f].help);
        for (size_t i = 0; i < nr; i++) {
            char path[256];
            label(server_rooms_prefix(server, i), path, sizeof path);
            put(&b, "%s{path=\"%s\"} %" PRIu64 "\n", room_families[f].name, path,
                room_counts[4 * i + f]);
        }
    }
    free(room_counts);
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
    server_counter(&b, "libsync_server_broadcast_passes_total", "counter",
                   "Broadcasts that gave way to input for broadcast_yield_ms before reaching every "
                   "client, and then made one whole pass over them.",
                   server->broadcast_passes);
    server_counter(&b, "libsync_server_wakes_total", "counter",
                   "Wake-ups of the service thread for work from other threads (changes, frames, "
                   "decisions) or a stop.",
                   (uint64_t)atomic_load_explicit(&server->wakes, memory_order_relaxed));
    server_counter(&b, "libsync_server_resumes_patch_total", "counter",
                   "v2 resumes (?since=V) served by a patch.", atomic_load(&server->resumes_patch));
    server_counter(&b, "libsync_server_resumes_state_total", "counter",
                   "v2 resumes (?since=V) served by the whole state (initial_state).",
                   atomic_load(&server->resumes_state));
    server_counter(&b, "libsync_server_bytes_sent_total", "counter",
                   "WebSocket payload bytes written to sockets.", server->bytes_sent);
    server_counter(&b, "libsync_server_closed_slow_total", "counter",
                   "Connections closed for letting too many frames queue up.",
                   (uint64_t)atomic_load(&server->closed_slow));
    server_counter(&b, "libsync_server_closed_too_big_total", "counter",
                   "Connections closed for a message over the size limit.", server->closed_too_big);
    server_counter(
        &b, "libsync_server_closed_buffer_budget_total", "counter",
        "Connections closed with 1013: the server-wide partial-message budget was spent.",
        server->closed_buffer_budget);
    server_counter(&b, "libsync_server_buffered_bytes", "gauge",
                   "Bytes of partial messages buffered (reassembly and deferred auth).",
                   (uint64_t)server->buffered_bytes);
    server_counter(&b, "libsync_server_connection_limit", "gauge",
                   "WebSocket connections allowed: max_connections capped by the open-file limit.",
                   (uint64_t)server->max_connections);
    server_counter(&b, "libsync_server_connections_closed_at_accept_total", "counter",
                   "TCP connections closed at accept: the open-file limit was near.",
                   server->tcp_refused);
    if (server->cluster) {
        /* the node's figures (cluster.h), one sample each: per-room labels would be unbounded */
        sync__cluster_stats cs;
        sync__cluster_get_stats(server->cluster, &cs);
        const struct {
            const char *name, *type, *help;
            uint64_t value;
        } figures[] = {
            {"libsync_cluster_redis_up", "gauge",
             "1 while the node's subscription to Redis is up, else 0.", cs.redis_up ? 1 : 0},
            {"libsync_cluster_rooms_owned", "gauge",
             "Rooms this node owns (holds the lease of) now.", cs.rooms_owned},
            {"libsync_cluster_rooms_attached", "gauge",
             "Rooms this node serves now (fixed mounts and loaded rooms).", cs.rooms_attached},
            {"libsync_cluster_forward_queue", "gauge",
             "Client messages waiting to be forwarded to Redis.", cs.forward_queue},
            {"libsync_cluster_forwarded_total", "counter",
             "Client messages of this node appended to their rooms' streams.", cs.forwarded},
            {"libsync_cluster_applied_total", "counter",
             "Stream entries this node applied as owner and saved (refused ones too).", cs.applied},
            {"libsync_cluster_takeovers_total", "counter",
             "Rooms this node took the lease of and loaded as owner.", cs.takeovers},
            {"libsync_cluster_fenced_out_total", "counter",
             "Saves refused because this node no longer held the room's lease.", cs.fenced_out},
            {"libsync_cluster_redis_reconnects_total", "counter",
             "Times the node subscribed to Redis again after losing it.", cs.reconnects},
        };
        for (size_t i = 0; i < sizeof figures / sizeof figures[0]; i++)
            server_counter(&b, figures[i].name, figures[i].type, figures[i].help, figures[i].value);
    }
    if (b.failed) {
        free(b.data);
        return NULL;
    }
    *len = b.len;
    return b.data;
}

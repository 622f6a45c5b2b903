/*
 * Shared setup of the server tests: a counter engine ({"counter":0}, handlers "increment"
 * {amount} and "whoami", which replies with the connection's identity) and a started server.
 */
#ifndef LIBSYNC_TEST_SERVER_FIXTURE_H
#define LIBSYNC_TEST_SERVER_FIXTURE_H

#include <libsync/libsync.h>

#include "ws_client.h"

/* Registers the counter handlers ("increment", "whoami") on `engine`. */
int fixture_add_counter_handlers(sync_engine *engine);

/* A counter engine starting at `start`; NULL on failure. */
sync_engine *fixture_counter_engine(int start);

/* The same handlers on an engine made with `opts` ("increment" adds "amount", or 1 without one);
 * NULL on failure. */
sync_engine *fixture_engine(const sync_engine_options *opts);

/* The engine's "counter", or -1 when it has none. */
long long fixture_counter_value(sync_engine *engine);

/* A server on 127.0.0.1, port 0, with `opts` (NULL = defaults) and `engine` mounted at `path`,
 * started on its background thread. NULL on failure. */
sync_server *fixture_server(const sync_server_options *opts, const char *path, sync_engine *engine);

/* A counter engine starting at `start` served at `path` by fixture_server(opts): the server, with
 * the engine in *engine. NULL (and *engine NULL) on failure. */
sync_server *fixture_counter_server(int start, const sync_server_options *opts, const char *path,
                                    sync_engine **engine);

/* A client of `path` that has read its initial state; NULL (and a failed check) otherwise. */
ws_client *fixture_join(int port, const char *path);

/* The same without a check, so that any thread may join: NULL when the connection or its initial
 * state did not come within `timeout_ms`. The initial state's text in *initial when not NULL
 * (caller frees). */
ws_client *fixture_try_join(int port, const char *path, int timeout_ms, char **initial);

/* A server on 127.0.0.1, port 0, with `opts` (NULL = defaults) and rooms at "/rooms/" mounted
 * with `ro`, started on its background thread. NULL on failure. The mount takes its own
 * reference to ro->store: the caller still frees its own. */
sync_server *fixture_rooms_server(const sync_server_options *opts, const sync_rooms_options *ro,
                                  sync_rooms **rooms);

/* A room setup whose initial state is {"room":NAME,"items":[1,2,3]}; counts its calls in
 * `userdata` (an atomic_int) unless NULL. */
int fixture_items_room_setup(sync_room_setup *setup, void *userdata);

/* The loaded rooms once they are `want` (polled), or what they are after `timeout_ms`. */
size_t fixture_wait_loaded(sync_rooms *rooms, size_t want, int timeout_ms);

/* Reads (at most 50 frames, each within timeout_ms) until one's `field` ("counter", "version":
 * both only grow) is `want`: 0, or -1 on a timeout, a close or a frame past it. */
int fixture_read_until(ws_client *c, const char *field, long long want, int timeout_ms);

/* Sends {"type":"increment"} and reads until `field` is `want` (fixture_read_until, 3 s a frame).
 */
int fixture_increment(ws_client *c, const char *field, long long want);

/* The upgrade header of a protocol v2 client. */
#define FIXTURE_V2_HEADER "Sec-WebSocket-Protocol: libsync.v2\r\n"

/* The first text frame (caller frees) of a v2 client of "/" with `query` ("" or "?since=..."),
 * NULL when none came within 5 s. */
char *fixture_v2_first_frame(int port, const char *query);

/* Sets `engine`'s state to {"counter":N,"pad":"<64 characters>"} (checked): a state longer than
 * a patch of its counter. */
void fixture_set_padded_counter(sync_engine *engine, int n);

/* `c` has joined the counter engine: it reads its initial state, and "whoami" answers
 * `identity_json` (the text the auth callback attached). */
void fixture_expect_joined(ws_client *c, const char *identity_json);

/* The value of one /metrics sample, named with its labels as printed ("libsync_server_connections",
 * "libsync_messages_in_total{path=\"/\"}"), or -1. */
long long fixture_metric(int port, const char *name);

/* The server's open connections once they reach `want` (a close is processed a little after the
 * client sees it), or what they are after 5 s. */
long long fixture_open_connections(int port, long long want);

/* The options of a caller built against `version`, whose struct ends at byte `end`: initialised by
 * sync_server_options_init(version) in a larger buffer filled with 0xA5, checking that it succeeds,
 * sets the version and writes nothing past `end`. Caller frees; NULL when out of memory. */
sync_server_options *fixture_old_options(int version, size_t end);

/* A client of a counter room sending increments as fast as the server takes them, on a thread of
 * its own (and reading what comes back), so that input waits on its socket at every look a turn
 * takes. NULL when the thread cannot start. Stopping joins the thread and returns how many it
 * sent; the client stays the caller's. */
typedef struct fixture_flood fixture_flood;
fixture_flood *fixture_flood_start(ws_client *c);
long long fixture_flood_stop(fixture_flood *flood);

/* A log sink that drops everything (tests that provoke warnings on purpose). */
void fixture_quiet_log(sync_log_level level, const char *message, void *userdata);

#endif

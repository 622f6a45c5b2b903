/*
 * counter_server — the seed's quick start in C: one shared counter, persisted in SQLite, served
 * over WebSocket together with the demo page of examples/web/; plus rooms, each a counter of its
 * own, created when first joined.
 *
 *   counter_server [--host H] [--port N] [--data-dir D] [--static DIR] [--pad BYTES]
 *                  [--heartbeat-ms MS] [--tls-cert PEM --tls-key PEM]
 *                  [--room-idle-ms MS] [--max-rooms N] [--event-loop poll|epoll]
 *                  [--token SECRET | --token-file PATH]   (or env LIBSYNC_DEMO_TOKEN)
 *                  [--redis redis://HOST:PORT [--node-id ID] [--lease-ms MS]]
 *
 * Open http://127.0.0.1:3000/ in two browser tabs and click: both follow the same counter.
 * Messages: {"type":"increment","amount":N}, {"type":"decrement","amount":N}, {"type":"reset"}.
 * The default room is at ws://HOST:PORT/ (as in the seed) and at ws://HOST:PORT/counter, stored in
 * D/counter.sqlite; room NAME is at ws://HOST:PORT/rooms/NAME (the page: /?room=NAME), stored as
 * a row of D/rooms.sqlite. With --redis the server joins a cluster (docs/SCALING.md): the default
 * room and every room live in Redis, and any number of counter_servers on the same Redis (other
 * ports, other machines) serve the same counters; --data-dir is then accepted but not used.
 */
#include <libsync/libsync.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef COUNTER_SERVER_WEB_DIR
#define COUNTER_SERVER_WEB_DIR "examples/web"
#endif

/* Set before the signal handlers are installed and cleared only after they are restored, so the
 * handler always sees a live server. */
static sync_server *g_server;

struct config {
    const char *host;
    int port;
    const char *data_dir;
    const char *static_dir;
    long pad_bytes;
    long heartbeat_ms;
    const char *tls_cert;
    const char *tls_key;
    long broadcast_yield_ms;
    long room_idle_ms;
    long max_rooms;
    int event_loop; /* sync_event_loop */
    const char *token;
    const char *token_file;
    char *token_owned; /* read from --token-file or the environment */
    const char *redis_url;
    const char *node_id;
    long lease_ms;
};

/* The environment variable that may hold the token, so that it is not in argv (ps). */
#define TOKEN_ENV "LIBSYNC_DEMO_TOKEN"

static void usage(FILE *to)
{
    fprintf(to,
            "usage: counter_server [--host H] [--port N] [--data-dir D] [--static DIR]\n"
            "                      [--pad BYTES] [--heartbeat-ms MS]\n"
            "                      [--tls-cert PEM --tls-key PEM] [--broadcast-yield-ms MS]\n"
            "                      [--room-idle-ms MS] [--max-rooms N]\n"
            "                      [--event-loop poll|epoll]\n"
            "                      [--token SECRET | --token-file PATH]\n"
            "                      [--redis redis://[:PASSWORD@]HOST:PORT[/DB] [--node-id ID]\n"
            "                       [--lease-ms MS]]\n"
            "  --host H          address to listen on (default 127.0.0.1)\n"
            "  --port N          TCP port, 0 picks a free one (default 3000)\n"
            "  --data-dir D      directory of the SQLite store, created if missing "
            "(default ./data)\n"
            "  --static DIR      directory served at / (default: the source tree's "
            "examples/web)\n"
            "  --pad BYTES       add a \"blob\" of BYTES 'x' characters to the initial state\n"
            "  --heartbeat-ms MS ping every client this often, 0 = off (default 30000);\n"
            "                    a client that sent nothing (no message, no pong) for two\n"
            "                    intervals is closed with 4001 \"ping timeout\"\n"
            "  --tls-cert/--tls-key  serve https/wss with this PEM certificate and key\n"
            "  --broadcast-yield-ms MS  how long a broadcast may give way to incoming\n"
            "                    messages before it reaches every client: the bound on how\n"
            "                    stale a client gets under load (0 = the library's 2 ms,\n"
            "                    -1 = never give way)\n"
            "  --room-idle-ms MS a room (/rooms/NAME) without clients for this long is saved\n"
            "                    and unloaded (0 = the library's 30000, -1 = never)\n"
            "  --max-rooms N     most rooms loaded at once; then the least recently used idle\n"
            "                    one is unloaded, or a join is refused with 503 (0 = 100000)\n"
            "  --event-loop L    poll (libwebsockets' own loop) or epoll (libev); default:\n"
            "                    the library's (LIBSYNC_EVENT_LOOP in the environment, else\n"
            "                    epoll where libwebsockets' libev event library loads, else\n"
            "                    poll; the one chosen is printed on stderr)\n"
            "  --token SECRET    let in only WebSocket clients that bring it: ?token=SECRET\n"
            "                    (the page passes its own ?token= on) or the header\n"
            "                    \"Authorization: Bearer SECRET\"; others get HTTP 401, or\n"
            "                    close 4401 when a browser page asks (it cannot see a status).\n"
            "                    GET /metrics then needs the token too; /healthz and the\n"
            "                    page's static files stay public (they hold no secret)\n"
            "  --token-file PATH the token is the first line of this file (argv, and so ps,\n"
            "                    does not show it); without either option the environment\n"
            "                    variable " TOKEN_ENV " is used when set\n"
            "  --redis URL       join the cluster on this Redis: the counter at / (and\n"
            "                    /counter) and every room /rooms/NAME live in Redis, and\n"
            "                    every counter_server given the same URL serves the same\n"
            "                    counters (a client may join any of them); --data-dir is\n"
            "                    then accepted but not used. A node that loses Redis\n"
            "                    refuses joins (503) and closes its clients with 4503\n"
            "  --node-id ID      this node's id in the cluster (default\n"
            "                    <hostname>-<pid>-<random>)\n"
            "  --lease-ms MS     how long a room's owner may go silent before another node\n"
            "                    takes the room over (default 1500: takeover within 2 s)\n");
}

static int parse_long(const char *text, long min, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < min || value > max)
        return -1;
    *out = value;
    return 0;
}

/* A token travels in a URL the page builds by hand: keep to characters that need no escaping. */
static int check_token(const char *token, const char *from)
{
    if (!*token || strpbrk(token, "&#%+ \t\r\n")) {
        fprintf(stderr,
                "counter_server: %s must be non-empty, without & # %% + or "
                "spaces (it travels in a URL)\n",
                from);
        return -1;
    }
    return 0;
}

/* The first line of `path`, without its line ending. */
static char *read_token_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "counter_server: --token-file %s: %s\n", path, strerror(errno));
        return NULL;
    }
    char line[1024];
    char *token = NULL;
    if (fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        token = strdup(line);
    }
    fclose(f);
    if (token == NULL)
        fprintf(stderr, "counter_server: --token-file %s is empty\n", path);
    return token;
}

/* --token, --token-file or the environment, in that order; at most one of the options. */
static int resolve_token(struct config *cfg)
{
    if (cfg->token && cfg->token_file) {
        fprintf(stderr, "counter_server: give --token or --token-file, not both\n");
        return -1;
    }
    const char *from = "--token";
    if (cfg->token_file) {
        if ((cfg->token_owned = read_token_file(cfg->token_file)) == NULL)
            return -1;
        cfg->token = cfg->token_owned;
        from = "the token in --token-file";
    } else if (!cfg->token) {
        const char *env = getenv(TOKEN_ENV);
        if (env == NULL || *env == '\0')
            return 0;
        if ((cfg->token_owned = strdup(env)) == NULL)
            return -1;
        cfg->token = cfg->token_owned;
        from = TOKEN_ENV;
    }
    return check_token(cfg->token, from);
}

/* Returns 0 to go on, 1 when --help was asked, -1 on a bad command line (already reported). */
static int parse_args(int argc, char **argv, struct config *cfg)
{
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0)
            return 1;
        if (i + 1 >= argc) {
            fprintf(stderr, "counter_server: %s needs a value (or is unknown)\n", opt);
            return -1;
        }
        const char *value = argv[++i];
        long number = 0;
        if (strcmp(opt, "--host") == 0) {
            cfg->host = value;
        } else if (strcmp(opt, "--port") == 0) {
            if (parse_long(value, 0, 65535, &number) != 0) {
                fprintf(stderr, "counter_server: --port must be 0..65535, not '%s'\n", value);
                return -1;
            }
            cfg->port = (int)number;
        } else if (strcmp(opt, "--data-dir") == 0) {
            cfg->data_dir = value;
        } else if (strcmp(opt, "--static") == 0) {
            cfg->static_dir = value;
        } else if (strcmp(opt, "--pad") == 0) {
            if (parse_long(value, 0, 256L * 1024 * 1024, &cfg->pad_bytes) != 0) {
                fprintf(stderr, "counter_server: --pad must be 0..268435456 bytes, not '%s'\n",
                        value);
                return -1;
            }
        } else if (strcmp(opt, "--heartbeat-ms") == 0) {
            if (parse_long(value, 0, INT_MAX, &cfg->heartbeat_ms) != 0) {
                fprintf(stderr, "counter_server: --heartbeat-ms must be >= 0, not '%s'\n", value);
                return -1;
            }
        } else if (strcmp(opt, "--broadcast-yield-ms") == 0) {
            if (parse_long(value, -1, INT_MAX, &cfg->broadcast_yield_ms) != 0) {
                fprintf(stderr, "counter_server: --broadcast-yield-ms must be >= -1, not '%s'\n",
                        value);
                return -1;
            }
        } else if (strcmp(opt, "--room-idle-ms") == 0) {
            if (parse_long(value, -1, INT_MAX, &cfg->room_idle_ms) != 0) {
                fprintf(stderr, "counter_server: --room-idle-ms must be >= -1, not '%s'\n", value);
                return -1;
            }
        } else if (strcmp(opt, "--max-rooms") == 0) {
            if (parse_long(value, 0, INT_MAX, &cfg->max_rooms) != 0) {
                fprintf(stderr, "counter_server: --max-rooms must be >= 0, not '%s'\n", value);
                return -1;
            }
        } else if (strcmp(opt, "--redis") == 0) {
            cfg->redis_url = value;
        } else if (strcmp(opt, "--node-id") == 0) {
            cfg->node_id = value;
        } else if (strcmp(opt, "--lease-ms") == 0) {
            if (parse_long(value, 100, INT_MAX, &cfg->lease_ms) != 0) {
                fprintf(stderr, "counter_server: --lease-ms must be >= 100, not '%s'\n", value);
                return -1;
            }
        } else if (strcmp(opt, "--event-loop") == 0) {
            if (strcmp(value, "poll") == 0) {
                cfg->event_loop = SYNC_EVENT_LOOP_POLL;
            } else if (strcmp(value, "epoll") == 0) {
                cfg->event_loop = SYNC_EVENT_LOOP_EPOLL;
            } else {
                fprintf(stderr, "counter_server: --event-loop must be poll or epoll, not '%s'\n",
                        value);
                return -1;
            }
        } else if (strcmp(opt, "--token") == 0) {
            cfg->token = value;
        } else if (strcmp(opt, "--token-file") == 0) {
            cfg->token_file = value;
        } else if (strcmp(opt, "--tls-cert") == 0) {
            cfg->tls_cert = value;
        } else if (strcmp(opt, "--tls-key") == 0) {
            cfg->tls_key = value;
        } else {
            fprintf(stderr, "counter_server: unknown option %s\n", opt);
            return -1;
        }
    }
    if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL)) {
        fprintf(stderr, "counter_server: --tls-cert and --tls-key go together\n");
        return -1;
    }
    if (!cfg->redis_url && (cfg->node_id || cfg->lease_ms)) {
        fprintf(stderr, "counter_server: --node-id and --lease-ms need --redis\n");
        return -1;
    }
    return resolve_token(cfg);
}

/* mkdir -p: the data directory may be several levels below an existing one. */
static int make_dirs(const char *path)
{
    char *copy = strdup(path);
    if (copy == NULL)
        return -1;
    int rc = 0;
    for (char *p = copy + 1; rc == 0; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(copy, 0755) != 0 && errno != EEXIST)
            rc = -1;
        *p = saved;
        if (saved == '\0')
            break;
    }
    free(copy);
    return rc;
}

/* The initial state {"counter":0}, plus the benchmarks' "blob" padding. Caller frees. */
static char *initial_state_json(long pad_bytes)
{
    cJSON *state = cJSON_CreateObject();
    if (state == NULL || cJSON_AddNumberToObject(state, "counter", 0) == NULL) {
        cJSON_Delete(state);
        return NULL;
    }
    if (pad_bytes > 0) {
        char *blob = malloc((size_t)pad_bytes + 1);
        if (blob == NULL) {
            cJSON_Delete(state);
            return NULL;
        }
        memset(blob, 'x', (size_t)pad_bytes);
        blob[pad_bytes] = '\0';
        cJSON *added = cJSON_AddStringToObject(state, "blob", blob);
        free(blob);
        if (added == NULL) {
            cJSON_Delete(state);
            return NULL;
        }
    }
    char *json = cJSON_PrintUnformatted(state);
    cJSON_Delete(state);
    return json;
}

/* Adds sign * amount to the counter. A stored state without a numeric counter (written by another
 * program) gets one instead of failing every message forever. */
static int add_to_counter(sync_msg *msg, double sign)
{
    const cJSON *amount = cJSON_GetObjectItemCaseSensitive(sync_msg_message(msg), "amount");
    if (!cJSON_IsNumber(amount)) {
        sync_msg_set_error(msg, "amount must be a number");
        return SYNC_EINVAL;
    }
    cJSON *state = sync_msg_state_mut(msg);
    if (state == NULL || !cJSON_IsObject(state)) {
        sync_msg_set_error(msg, "the state is not an object");
        return SYNC_EHANDLER;
    }
    cJSON *counter = cJSON_GetObjectItemCaseSensitive(state, "counter");
    if (cJSON_IsNumber(counter)) {
        cJSON_SetNumberValue(counter, counter->valuedouble + sign * amount->valuedouble);
        return SYNC_OK;
    }
    cJSON *fresh = cJSON_CreateNumber(sign * amount->valuedouble);
    if (fresh == NULL)
        return SYNC_ENOMEM;
    if (counter != NULL)
        return cJSON_ReplaceItemInObjectCaseSensitive(state, "counter", fresh) ? SYNC_OK
                                                                               : SYNC_ENOMEM;
    return cJSON_AddItemToObject(state, "counter", fresh) ? SYNC_OK : SYNC_ENOMEM;
}

static int on_increment(sync_msg *msg, void *userdata)
{
    (void)userdata;
    return add_to_counter(msg, 1.0);
}

static int on_decrement(sync_msg *msg, void *userdata)
{
    (void)userdata;
    return add_to_counter(msg, -1.0);
}

static int on_reset(sync_msg *msg, void *userdata)
{
    (void)userdata;
    cJSON *state = sync_msg_state_mut(msg);
    if (state == NULL || !cJSON_IsObject(state)) {
        sync_msg_set_error(msg, "the state is not an object");
        return SYNC_EHANDLER;
    }
    cJSON *zero = cJSON_CreateNumber(0);
    if (zero == NULL)
        return SYNC_ENOMEM;
    cJSON_DeleteItemFromObjectCaseSensitive(state, "counter");
    return cJSON_AddItemToObject(state, "counter", zero) ? SYNC_OK : SYNC_ENOMEM;
}

/* Bad client input is routine for a public server: one line each, not a crash or a silence. */
static void on_error(sync_engine *engine, int status, const char *message, const char *context,
                     sync_conn *conn, void *userdata)
{
    (void)engine;
    (void)userdata;
    fprintf(stderr, "counter_server: %s: %s (status %d, connection %llu)\n", context, message,
            status, conn ? (unsigned long long)sync_conn_id(conn) : 0ULL);
}

static void on_stop_signal(int sig)
{
    (void)sig;
    /* only sets a flag and wakes the service thread: safe in a signal handler */
    sync_server_request_stop(g_server);
}

static int set_signal(int sig, void (*handler)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL);
}

static int fail(const char *what, int status)
{
    fprintf(stderr, "counter_server: %s: %s (%s)\n", what, sync_error_last(),
            sync_strerror(status));
    return 1;
}

/* "<data dir>/<file>", malloc'd; NULL (reported) when out of memory. */
static char *data_path(const struct config *cfg, const char *file)
{
    size_t len = strlen(cfg->data_dir) + 1 + strlen(file) + 1;
    char *path = malloc(len);
    if (path == NULL)
        fprintf(stderr, "counter_server: out of memory\n");
    else
        snprintf(path, len, "%s/%s", cfg->data_dir, file);
    return path;
}

/* What every counter has, the default room and each of the rooms: one set of options. */
static void counter_engine_options(const struct config *cfg, sync_engine_options *opts)
{
    sync_engine_options_init(opts, SYNC_ENGINE_OPTIONS_VERSION);
    opts->enable_versioning = 1;
    opts->heartbeat_interval_ms = cfg->heartbeat_ms;
    opts->ping_timeout_ms = 2 * cfg->heartbeat_ms;
    opts->persist_mode = SYNC_PERSIST_BEFORE_SEND;
    opts->reply_errors = 1;
}

static int add_counter_handlers(sync_engine *engine)
{
    sync_hooks hooks = SYNC_HOOKS_INIT;
    hooks.on_error = on_error;
    int rc;
    if ((rc = sync_engine_on(engine, "increment", on_increment, NULL, NULL)) != SYNC_OK ||
        (rc = sync_engine_on(engine, "decrement", on_decrement, NULL, NULL)) != SYNC_OK ||
        (rc = sync_engine_on(engine, "reset", on_reset, NULL, NULL)) != SYNC_OK ||
        (rc = sync_engine_set_hooks(engine, &hooks)) != SYNC_OK)
        return rc;
    return SYNC_OK;
}

static int create_engine(const struct config *cfg, sync_engine **out)
{
    if (make_dirs(cfg->data_dir) != 0) {
        fprintf(stderr, "counter_server: cannot create data directory %s: %s\n", cfg->data_dir,
                strerror(errno));
        return 1;
    }
    char *db_path = data_path(cfg, "counter.sqlite");
    char *initial = initial_state_json(cfg->pad_bytes);
    if (db_path == NULL || initial == NULL) {
        free(db_path);
        free(initial);
        return 1;
    }

    /* In a cluster the state lives in Redis: a clustered engine has no adapter. */
    sync_adapter *adapter = NULL;
    int rc = SYNC_OK;
    if (!cfg->redis_url) {
        sync_sqlite_options sqlite_opts = SYNC_SQLITE_OPTIONS_INIT;
        sqlite_opts.path = db_path;
        rc = sync_adapter_sqlite_new(&adapter, &sqlite_opts);
    }
    free(db_path);
    if (rc != SYNC_OK) {
        free(initial);
        return fail("cannot create the SQLite adapter", rc);
    }

    /* Hooks from the start, so that a failing load at creation is reported too. */
    sync_hooks hooks = SYNC_HOOKS_INIT;
    hooks.on_error = on_error;
    sync_engine_options opts;
    counter_engine_options(cfg, &opts);
    opts.initial_state_json = initial;
    opts.adapter = adapter;
    opts.hooks = &hooks;
    rc = sync_engine_new(out, &opts);
    free(initial);
    if (rc != SYNC_OK)
        return fail("cannot create the engine", rc);

    if ((rc = add_counter_handlers(*out)) != SYNC_OK) {
        sync_engine_free(*out);
        *out = NULL;
        return fail("cannot register the handlers", rc);
    }
    return 0;
}

/* Every room is a counter like the default one, starting from the same initial state. */
static int setup_room(sync_room_setup *setup, void *userdata)
{
    const char *initial = userdata;
    int rc = add_counter_handlers(sync_room_setup_engine(setup));
    if (rc == SYNC_OK)
        rc = sync_room_setup_set_initial_state_json(setup, initial);
    return rc;
}

/* Rooms at /rooms/NAME, one row each in <data dir>/rooms.sqlite. */
static int mount_rooms(const struct config *cfg, sync_server *server)
{
    char *db_path = data_path(cfg, "rooms.sqlite");
    char *initial = initial_state_json(cfg->pad_bytes);
    if (db_path == NULL || initial == NULL) {
        free(db_path);
        free(initial);
        return SYNC_ENOMEM;
    }
    /* In a cluster the rooms live in Redis: no room store. */
    sync_room_store *store = NULL;
    int rc = SYNC_OK;
    if (!cfg->redis_url) {
        sync_sqlite_options sqlite_opts = SYNC_SQLITE_OPTIONS_INIT;
        sqlite_opts.path = db_path;
        rc = sync_room_store_sqlite_new(&store, &sqlite_opts);
    }
    free(db_path);
    if (rc != SYNC_OK) {
        free(initial);
        return rc;
    }
    sync_engine_options engine_opts;
    counter_engine_options(cfg, &engine_opts);
    sync_rooms_options opts = SYNC_ROOMS_OPTIONS_INIT;
    opts.setup = setup_room;
    opts.setup_userdata = initial;
    opts.setup_free_userdata = free;
    opts.engine_options = &engine_opts;
    opts.store = store;
    rc = sync_server_mount_rooms(server, "/rooms/", &opts, NULL);
    sync_room_store_free(store); /* the mount holds its own reference */
    return rc;
}

/* The value of `name` in a raw query string ("a=1&token=x"), and its length; NULL when absent. */
static const char *query_param(const char *query, const char *name, size_t *len)
{
    size_t name_len = strlen(name);
    for (const char *p = query; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL) {
        if (strncmp(p, name, name_len) == 0 && p[name_len] == '=') {
            const char *value = p + name_len + 1;
            *len = strcspn(value, "&");
            return value;
        }
    }
    return NULL;
}

static void *refuse_as_close(void *req)
{
    sync_request_complete(req, 401);
    return NULL;
}

/* A browser is never shown an upgrade's HTTP status (its page sees close code 1006, as for a
 * server that is down): a page must be upgraded and then closed with 4401 to learn that it is not
 * authorised. A decision made on another thread does exactly that (sync_request_complete). */
static int refuse_page(sync_request *req)
{
    sync_request *kept = sync_request_defer(req);
    pthread_t thread;
    pthread_attr_t attr;
    if (kept == NULL || pthread_attr_init(&attr) != 0)
        return 401;
    int rc = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (rc == 0)
        rc = pthread_create(&thread, &attr, refuse_as_close, kept);
    pthread_attr_destroy(&attr);
    if (rc != 0)
        sync_request_complete(kept, 401); /* on this thread: answered as HTTP 401 */
    return SYNC_PENDING;
}

/* --token: the secret from the query (what a browser page can send) or a Bearer header. */
static int token_auth(sync_request *req, void *userdata)
{
    const char *secret = userdata;
    size_t len = 0;
    const char *given = query_param(sync_request_query(req), "token", &len);
    if (!given) {
        const char *header = sync_request_header(req, "authorization");
        if (header && strncmp(header, "Bearer ", 7) == 0) {
            given = header + 7;
            len = strlen(given);
        }
    }
    if (!given || !sync_secret_equal(given, len, secret))
        return sync_request_header(req, "origin") ? refuse_page(req) : 401;
    sync_request_set_identity(req, "{\"via\":\"token\"}");
    return 0;
}

/* Serves until SIGINT/SIGTERM. The server's graceful stop saves the state and closes every
 * client with 1001. */
static int serve(const struct config *cfg, sync_engine *engine, int *served)
{
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.host = cfg->host;
    opts.port = cfg->port;
    opts.static_dir = cfg->static_dir;
    opts.tls_cert_path = cfg->tls_cert;
    opts.tls_key_path = cfg->tls_key;
    opts.broadcast_yield_ms = (int)cfg->broadcast_yield_ms;
    opts.room_idle_ms = (int)cfg->room_idle_ms;
    opts.max_rooms = (int)cfg->max_rooms;
    opts.event_loop = cfg->event_loop;
    if (cfg->token) {
        opts.auth = token_auth;
        opts.auth_userdata = (void *)(uintptr_t)cfg->token;
    }
    sync_server *server = NULL;
    int rc = sync_server_new(&server, &opts);
    if (rc != SYNC_OK)
        return fail("cannot create the server", rc);
    /* The token guards the figures too; the static files hold no secret and stay public. */
    if (cfg->token && (rc = sync_server_set_metrics_token(server, cfg->token)) != SYNC_OK) {
        sync_server_free(server);
        return fail("cannot set the metrics token", rc);
    }
    /* One engine, two routes: the seed's clients connect to "/", the page may use "/counter". */
    if ((rc = sync_server_mount(server, "/", engine)) != SYNC_OK ||
        (rc = sync_server_mount(server, "/counter", engine)) != SYNC_OK) {
        sync_server_free(server);
        return fail("cannot mount the engine", rc);
    }
    if ((rc = mount_rooms(cfg, server)) != SYNC_OK) {
        sync_server_free(server);
        return fail("cannot mount the rooms", rc);
    }
    if (cfg->redis_url) {
        sync_cluster_options cluster = SYNC_CLUSTER_OPTIONS_INIT;
        cluster.url = cfg->redis_url;
        cluster.node_id = cfg->node_id;
        cluster.lease_ms = (int)cfg->lease_ms;
        if ((rc = sync_server_join_cluster(server, &cluster)) != SYNC_OK) {
            sync_server_free(server);
            return fail("cannot join the cluster", rc);
        }
        fprintf(stderr, "counter_server: joined the cluster on Redis\n");
    }
    if ((rc = sync_server_listen(server)) != SYNC_OK) {
        sync_server_free(server);
        return fail("cannot listen", rc);
    }

    g_server = server;
    if (set_signal(SIGINT, on_stop_signal) != 0 || set_signal(SIGTERM, on_stop_signal) != 0) {
        perror("counter_server: sigaction");
        g_server = NULL;
        sync_server_free(server);
        return 1;
    }
    /* An IPv6 address goes in brackets, and the token comes along, so the printed URL can be
     * opened as it is. */
    int ipv6 = strchr(cfg->host, ':') != NULL;
    fprintf(stderr, "counter_server: serving on the %s event loop\n",
            sync_server_event_loop(server) == SYNC_EVENT_LOOP_EPOLL ? "epoll" : "poll");
    printf("listening on %s://%s%s%s:%d%s%s\n", cfg->tls_cert ? "https" : "http", ipv6 ? "[" : "",
           cfg->host, ipv6 ? "]" : "", sync_server_port(server), cfg->token ? "/?token=" : "",
           cfg->token ? cfg->token : "");
    fflush(stdout);

    *served = 1;
    rc = sync_server_run(server);
    set_signal(SIGINT, SIG_DFL);
    set_signal(SIGTERM, SIG_DFL);
    g_server = NULL;
    sync_server_free(server);
    if (rc != SYNC_OK)
        return fail("the server stopped on an error", rc);
    return 0;
}

int main(int argc, char **argv)
{
    struct config cfg = {.host = "127.0.0.1",
                         .port = 3000,
                         .data_dir = "./data",
                         .static_dir = COUNTER_SERVER_WEB_DIR,
                         .heartbeat_ms = 30000};
    int parsed = parse_args(argc, argv, &cfg);
    if (parsed != 0) {
        free(cfg.token_owned);
        usage(parsed > 0 ? stdout : stderr);
        return parsed > 0 ? 0 : 2;
    }
    /* A client that vanishes mid-write must not kill the process. */
    signal(SIGPIPE, SIG_IGN);

    sync_engine *engine = NULL;
    if (create_engine(&cfg, &engine) != 0) {
        free(cfg.token_owned);
        return 1;
    }
    int served = 0;
    int rc = serve(&cfg, engine, &served);
    if (served) {
        /* The graceful stop has saved already; this also covers a server that ended on an
         * error. */
        int saved = sync_engine_sync(engine);
        if (saved < 0)
            rc = fail("cannot save the state", saved);
        cJSON *state = sync_engine_get_state(engine);
        const cJSON *counter = cJSON_GetObjectItemCaseSensitive(state, "counter");
        fprintf(stderr, "counter_server: stopped at version %lld, counter %g\n",
                (long long)sync_engine_get_version(engine),
                cJSON_IsNumber(counter) ? counter->valuedouble : 0.0);
        cJSON_Delete(state);
    }
    sync_engine_free(engine);
    free(cfg.token_owned);
    return rc;
}

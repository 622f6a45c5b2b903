/*
 * embedded_loop — libsync without its server: the embedder owns the connections
 * and the loop.
 *
 *   embedded_loop [STATE_FILE]
 *
 * Two fake connections print every frame the engine sends them. A few messages
 * go through the pipeline, then a small loop drives the heartbeat with
 * sync_engine_next_deadline_ms() and sync_engine_tick(): "alice" answers every
 * ping, "bob" never does and is closed by the ping timeout. The state is kept
 * by the file adapter (default ./embedded_loop_state.json) and read back by a
 * second engine at the end.
 */
#include <libsync/libsync.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

/* The embedder's side of one connection. The engine calls send/close with its
 * lock held, so they only record what happened; the loop acts on it afterwards.
 */
struct fake_conn {
    const char *name;
    int answers_pings;
    int ping_due;
    int closed;
    int close_code;
};

static int fake_send(void *userdata, const char *text, size_t len)
{
    struct fake_conn *fc = userdata;
    printf("[%s] <- %.*s\n", fc->name, (int)len, text);
    if (len == strlen("{\"type\":\"ping\"}") && memcmp(text, "{\"type\":\"ping\"}", len) == 0)
        fc->ping_due = fc->answers_pings;
    return SYNC_OK;
}

static void fake_close(void *userdata, int code, const char *reason)
{
    struct fake_conn *fc = userdata;
    printf("[%s] closed by the engine: %d %s\n", fc->name, code, reason ? reason : "");
    fc->closed = 1;
    fc->close_code = code;
}

static int on_increment(sync_msg *msg, void *userdata)
{
    (void)userdata;
    const cJSON *amount = cJSON_GetObjectItemCaseSensitive(sync_msg_message(msg), "amount");
    if (!cJSON_IsNumber(amount)) {
        sync_msg_set_error(msg, "amount must be a number");
        return SYNC_EINVAL;
    }
    cJSON *counter = cJSON_GetObjectItemCaseSensitive(sync_msg_state_mut(msg), "counter");
    if (!cJSON_IsNumber(counter)) {
        sync_msg_set_error(msg, "the state has no numeric counter");
        return SYNC_EHANDLER;
    }
    cJSON_SetNumberValue(counter, counter->valuedouble + amount->valuedouble);
    return SYNC_OK;
}

static void on_error(sync_engine *engine, int status, const char *message, const char *context,
                     sync_conn *conn, void *userdata)
{
    (void)engine;
    (void)conn;
    (void)userdata;
    printf("error in %s: %s (status %d)\n", context, message, status);
}

static void on_ping_timeout(sync_engine *engine, sync_conn *conn, void *userdata)
{
    (void)engine;
    (void)userdata;
    printf("ping timeout: %s\n", ((struct fake_conn *)sync_conn_userdata(conn))->name);
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int send_text(sync_engine *engine, sync_conn *conn, const char *text)
{
    printf("-> %s\n", text);
    return sync_engine_handle_message(engine, conn, text, strlen(text));
}

static int open_engine(sync_engine **out, const char *state_file)
{
    sync_file_options file_opts = SYNC_FILE_OPTIONS_INIT;
    file_opts.file_path = state_file;
    sync_adapter *adapter = NULL;
    int rc = sync_adapter_file_new(&adapter, &file_opts);
    if (rc != SYNC_OK)
        return rc;

    sync_hooks hooks = SYNC_HOOKS_INIT;
    hooks.on_error = on_error;
    hooks.on_ping_timeout = on_ping_timeout;
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = "{\"counter\":0}";
    opts.adapter = adapter;
    opts.heartbeat_interval_ms = 40;
    opts.ping_timeout_ms = 100;
    opts.auto_broadcast = 1;
    opts.reply_errors = 1;
    opts.hooks = &hooks;
    return sync_engine_new(out, &opts);
}

/* Drives the heartbeat until bob has been closed (or a bounded time has
 * passed). */
static void run_loop(sync_engine *engine, struct fake_conn *fakes[2], sync_conn *conns[2])
{
    const int64_t give_up = sync_now_ms() + 3000;
    while (!fakes[1]->closed && sync_now_ms() < give_up) {
        int64_t deadline = sync_engine_next_deadline_ms(engine);
        if (deadline < 0)
            break;
        int64_t wait = deadline - sync_now_ms();
        if (wait > 0)
            sleep_ms(wait);
        sync_engine_tick(engine, -1);
        for (int i = 0; i < 2; i++) {
            if (fakes[i]->ping_due) {
                fakes[i]->ping_due = 0;
                send_text(engine, conns[i], "pong");
            }
            if (fakes[i]->closed == 1) {
                fakes[i]->closed = 2; /* the transport has closed: tell the engine once */
                sync_engine_handle_close(engine, conns[i]);
            }
        }
    }
}

int main(int argc, char **argv)
{
    const char *state_file = argc > 1 ? argv[1] : "embedded_loop_state.json";
    remove(state_file); /* start from the initial state on every run */

    sync_engine *engine = NULL;
    int rc = open_engine(&engine, state_file);
    if (rc != SYNC_OK) {
        fprintf(stderr, "embedded_loop: engine: %s\n", sync_error_last());
        return 1;
    }
    rc = sync_engine_on(engine, "increment", on_increment, NULL, NULL);

    struct fake_conn alice = {"alice", 1, 0, 0, 0};
    struct fake_conn bob = {"bob", 0, 0, 0, 0};
    struct fake_conn *fakes[2] = {&alice, &bob};
    sync_conn *conns[2] = {NULL, NULL};
    sync_conn_callbacks callbacks = SYNC_CONN_CALLBACKS_INIT;
    callbacks.send = fake_send;
    callbacks.close = fake_close;
    for (int i = 0; i < 2 && rc == SYNC_OK; i++) {
        rc = sync_conn_new(&conns[i], &callbacks, fakes[i]);
        if (rc == SYNC_OK)
            rc = sync_engine_handle_open(engine, conns[i]);
    }
    if (rc != SYNC_OK) {
        fprintf(stderr, "embedded_loop: setup: %s\n", sync_error_last());
        sync_conn_free(conns[0]);
        sync_conn_free(conns[1]);
        sync_engine_free(engine);
        return 1;
    }

    int ok = send_text(engine, conns[0], "{\"type\":\"increment\",\"amount\":5}") == SYNC_OK;
    /* Rejected: state and version stay as they are, bob gets an error frame. */
    ok &= send_text(engine, conns[1], "{\"type\":\"increment\",\"amount\":\"five\"}") < 0;
    ok &= send_text(engine, conns[1], "{\"type\":\"increment\",\"amount\":-2}") == SYNC_OK;
    ok &= send_text(engine, conns[0], "not json") == SYNC_EPARSE;

    run_loop(engine, fakes, conns);
    ok &= bob.closed != 0 && !alice.closed;

    char *state = sync_engine_get_state_json(engine);
    int64_t version = sync_engine_get_version(engine);
    printf("final state: %s version %lld, %zu connection(s) open\n", state ? state : "(null)",
           (long long)version, sync_engine_connection_count(engine));
    sync_free(state);
    ok &= sync_engine_sync(engine) == SYNC_OK;

    sync_engine_handle_close(engine, conns[0]);
    sync_conn_free(conns[0]);
    sync_conn_free(conns[1]);
    sync_engine_free(engine);

    /* A second engine on the same file starts where the first one stopped. */
    rc = open_engine(&engine, state_file);
    if (rc != SYNC_OK) {
        fprintf(stderr, "embedded_loop: reopen: %s\n", sync_error_last());
        return 1;
    }
    state = sync_engine_get_state_json(engine);
    printf("reloaded: %s version %lld\n", state ? state : "(null)",
           (long long)sync_engine_get_version(engine));
    sync_free(state);
    sync_engine_free(engine);

    if (!ok) {
        fprintf(stderr, "embedded_loop: the engine did not behave as expected\n");
        return 1;
    }
    return 0;
}

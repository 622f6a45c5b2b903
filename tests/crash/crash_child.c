/*
 * crash_child: the process the crash suite kills. The server tests' counter engine ({"counter":0},
 * handler "increment" adds 1 to it when the message has no "amount") persisted by the SQLite or the
 * file adapter, served by the built-in server on 127.0.0.1 with a free port, which it prints as
 * "port N" on stdout before serving forever.
 *
 *   crash_child sqlite|file STORE_PATH before_send|on_change [nofsync]
 *
 * Every change adds exactly 1 to the counter and 1 to the version, so a record whose counter
 * differs from its version was not written whole by this program.
 */
#include <libsync/libsync.h>

#include "server_fixture.h"

#include <stdio.h>
#include <string.h>

static void on_error(sync_engine *engine, int status, const char *message, const char *context,
                     sync_conn *conn, void *userdata)
{
    (void)engine;
    (void)conn;
    (void)userdata;
    fprintf(stderr, "crash_child: %s: %s (%s)\n", context, message, sync_strerror(status));
}

static sync_adapter *make_adapter(const char *kind, const char *path, int fsync)
{
    sync_adapter *adapter = NULL;
    if (strcmp(kind, "sqlite") == 0) {
        sync_sqlite_options so = SYNC_SQLITE_OPTIONS_INIT;
        so.path = path;
        if (sync_adapter_sqlite_new(&adapter, &so) != SYNC_OK)
            return NULL;
    } else if (strcmp(kind, "file") == 0) {
        sync_file_options fo = SYNC_FILE_OPTIONS_INIT;
        fo.file_path = path;
        fo.fsync = fsync;
        if (sync_adapter_file_new(&adapter, &fo) != SYNC_OK)
            return NULL;
    }
    return adapter;
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 5 ||
        (strcmp(argv[3], "before_send") != 0 && strcmp(argv[3], "on_change") != 0)) {
        fprintf(stderr, "usage: crash_child sqlite|file STORE before_send|on_change [nofsync]\n");
        return 2;
    }
    sync_adapter *adapter = make_adapter(argv[1], argv[2], argc == 5 ? 0 : 1);
    if (!adapter) {
        fprintf(stderr, "crash_child: adapter %s: %s\n", argv[1], sync_error_last());
        return 1;
    }
    sync_hooks hooks = SYNC_HOOKS_INIT;
    hooks.on_error = on_error;
    sync_engine_options eo = SYNC_ENGINE_OPTIONS_INIT;
    eo.initial_state_json = "{\"counter\":0}";
    eo.adapter = adapter;
    eo.hooks = &hooks;
    eo.persist_mode =
        strcmp(argv[3], "before_send") == 0 ? SYNC_PERSIST_BEFORE_SEND : SYNC_PERSIST_ON_CHANGE;
    sync_engine *engine = NULL;
    sync_server *server = NULL;
    sync_server_options so = SYNC_SERVER_OPTIONS_INIT;
    if ((engine = fixture_engine(&eo)) == NULL || sync_server_new(&server, &so) != SYNC_OK ||
        sync_server_mount(server, "/", engine) || sync_server_listen(server) != SYNC_OK) {
        fprintf(stderr, "crash_child: setup: %s\n", sync_error_last());
        sync_server_free(server);
        sync_engine_free(engine);
        return 1;
    }
    printf("port %d\n", sync_server_port(server));
    fflush(stdout);
    int rc = sync_server_run(server);
    sync_server_free(server);
    sync_engine_free(engine);
    return rc == SYNC_OK ? 0 : 1;
}

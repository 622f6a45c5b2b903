/*
 * The server the Autobahn TestSuite's fuzzingclient talks to: the built-in server with an echo
 * endpoint on /echo (server_mount_echo, internal), so every frame goes through the same upgrade
 * checks, receive, reassembly, limits and write path as an engine's connections. Messages up to
 * 16 MiB (section 9). Prints "port N" once it listens; stops on SIGTERM or SIGINT.
 *   autobahn_echo_server [PORT]
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "libsync/server.h"
#include "server/server_internal.h"

static sync_server *server;

static void on_signal(int sig)
{
    (void)sig;
    sync_server_stop(server);
}

int main(int argc, char **argv)
{
    sync_server_options opts;
    sync_server_options_init(&opts, SYNC_SERVER_OPTIONS_VERSION);
    opts.port = argc > 1 ? atoi(argv[1]) : 0;
    opts.max_message_bytes = 20u << 20;
    opts.max_queued_bytes = 64u << 20;
    if (sync_server_new(&server, &opts) != SYNC_OK ||
        server_mount_echo(server, "/echo") != SYNC_OK || sync_server_listen(server) != SYNC_OK) {
        fprintf(stderr, "autobahn_echo_server: %s\n", sync_error_last());
        return 1;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    printf("port %d\n", sync_server_port(server));
    fflush(stdout);
    int rc = sync_server_run(server);
    sync_server_free(server);
    return rc == SYNC_OK ? 0 : 1;
}

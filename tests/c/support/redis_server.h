/* A real redis-server for the Redis store tests: started by the test on a free port of 127.0.0.1
 * with its files in a test directory, killed and restarted on the same port and files, stopped by
 * its PID. And a few raw commands (RESP over a socket) to look at and spoil what the stores wrote
 * without going through them. */
#ifndef LIBSYNC_TEST_REDIS_SERVER_H
#define LIBSYNC_TEST_REDIS_SERVER_H

#include <sys/types.h>

typedef struct redis_server {
    pid_t pid; /* 0: not running */
    int port;
    char dir[512];
    char url[64]; /* redis://127.0.0.1:<port> */
} redis_server;

/* Starts redis-server in a fresh test directory named `name` (appendonly yes, appendfsync
 * always, no RDB snapshots) and waits (bounded) until it answers PING. 0, or -1 with a line on
 * stderr. */
int redis_start(redis_server *r, const char *name);

/* Starts it again on the same port and files (after redis_kill / redis_stop). */
int redis_restart(redis_server *r);

/* Sends `sig` to the server (SIGSTOP, SIGCONT). */
void redis_signal(redis_server *r, int sig);

/* kill -9 and reap it. */
void redis_kill(redis_server *r);

/* Stops it (SIGTERM, then SIGKILL after 5 s) and reaps it. */
void redis_stop(redis_server *r);

/* Runs one command; the reply as RESP text (caller frees), NULL when the server did not answer. */
char *redis_raw(const redis_server *r, int argc, const char **argv);

/* A bulk-string reply's content (caller frees), NULL for anything else (nil, error). */
char *redis_get_bulk(const redis_server *r, int argc, const char **argv);

/* An integer reply, or -1. */
long long redis_get_int(const redis_server *r, int argc, const char **argv);

#endif

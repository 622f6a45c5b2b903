#include "redis_server.h"
#include "check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Whether `port` of 127.0.0.1 can be bound now. */
static int port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* A free port below the kernel's ephemeral range (32768 and up), picked at random: the port the
 * kernel hands to bind(0) is often one just released, and a test that kills its Redis and starts
 * it again on the same port would then find another test's server there (a suite runs tests in
 * parallel, and the end-to-end tests start their own Redis on such ports). */
static int free_port(void)
{
    static unsigned seed;
    if (!seed)
        seed = (unsigned)getpid() ^ (unsigned)time(NULL);
    for (int attempt = 0; attempt < 200; attempt++) {
        int port = 20000 + (int)(rand_r(&seed) % 12000);
        if (port_free(port))
            return port;
    }
    return -1;
}

/* Whether the server answering on r->port is the process r->pid started, not one of another
 * test that took the port. */
static int answered_by_own_server(const redis_server *r)
{
    const char *info[] = {"INFO", "server"};
    char *reply = redis_raw(r, 2, info);
    const char *at = reply ? strstr(reply, "process_id:") : NULL;
    int own = at && atol(at + strlen("process_id:")) == (long)r->pid;
    free(reply);
    return own;
}

static int connect_port(int port, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return fd;
}

/* Reads one whole RESP reply (nested arrays included) into a growing buffer. */
static int reply_complete(const char *buf, size_t len, size_t *pos)
{
    if (*pos >= len)
        return 0;
    const char *line = buf + *pos;
    const char *crlf = memmem(line, len - *pos, "\r\n", 2);
    if (!crlf)
        return 0;
    size_t head = (size_t)(crlf - line) + 2;
    long long n = atoll(line + 1);
    switch (line[0]) {
    case '$':
        if (n < 0) {
            *pos += head;
            return 1;
        }
        if (*pos + head + (size_t)n + 2 > len)
            return 0;
        *pos += head + (size_t)n + 2;
        return 1;
    case '*':
        *pos += head;
        for (long long i = 0; i < n; i++)
            if (!reply_complete(buf, len, pos))
                return 0;
        return 1;
    default:
        *pos += head;
        return 1;
    }
}

char *redis_raw(const redis_server *r, int argc, const char **argv)
{
    int fd = connect_port(r->port, 5000);
    if (fd < 0)
        return NULL;
    size_t cap = 256;
    for (int i = 0; i < argc; i++)
        cap += strlen(argv[i]) + 32;
    char *out = malloc(cap);
    size_t n = (size_t)snprintf(out, cap, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++)
        n += (size_t)snprintf(out + n, cap - n, "$%zu\r\n%s\r\n", strlen(argv[i]), argv[i]);
    int ok = write(fd, out, n) == (ssize_t)n;
    free(out);
    size_t len = 0, rcap = 4096;
    char *buf = malloc(rcap + 1);
    size_t pos = 0;
    while (ok) {
        if (len == rcap)
            buf = realloc(buf, (rcap *= 2) + 1);
        ssize_t got = read(fd, buf + len, rcap - len);
        if (got <= 0) {
            ok = 0;
            break;
        }
        len += (size_t)got;
        pos = 0;
        if (reply_complete(buf, len, &pos))
            break;
    }
    close(fd);
    if (!ok) {
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

char *redis_get_bulk(const redis_server *r, int argc, const char **argv)
{
    char *reply = redis_raw(r, argc, argv);
    if (!reply || reply[0] != '$' || reply[1] == '-') {
        free(reply);
        return NULL;
    }
    long long n = atoll(reply + 1);
    char *body = strstr(reply, "\r\n") + 2;
    char *out = strndup(body, (size_t)n);
    free(reply);
    return out;
}

long long redis_get_int(const redis_server *r, int argc, const char **argv)
{
    char *reply = redis_raw(r, argc, argv);
    long long v = reply && reply[0] == ':' ? atoll(reply + 1) : -1;
    free(reply);
    return v;
}

static int spawn(redis_server *r)
{
    char port[16], log[600];
    snprintf(port, sizeof port, "%d", r->port);
    snprintf(log, sizeof log, "%s/redis.log", r->dir);
    char *argv[] = {
        "redis-server", "--port",      port, "--bind",       "127.0.0.1", "--dir",
        r->dir,         "--save",      "",   "--appendonly", "yes",       "--appendfsync",
        "always",       "--daemonize", "no", "--logfile",    log,         NULL};
    r->pid = fork();
    if (r->pid == 0) {
        /* A test that crashes must not leave its Redis behind. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0)
            dup2(null, 0);
        execvp("redis-server", argv);
        fprintf(stderr, "cannot start redis-server: %s (scripts/install-deps.sh installs it)\n",
                strerror(errno));
        _exit(127);
    }
    if (r->pid < 0) {
        r->pid = 0;
        return -1;
    }
    /* Ready when it answers PING (it answers -LOADING while it reads its AOF). */
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const char *ping[] = {"PING"};
    while (check_elapsed_ms(&t0) < 15000) {
        char *reply = redis_raw(r, 1, ping);
        int up = reply && strncmp(reply, "+PONG", 5) == 0;
        free(reply);
        if (up && answered_by_own_server(r))
            return 0;
        int status;
        if (waitpid(r->pid, &status, WNOHANG) == r->pid) {
            fprintf(stderr, "redis-server exited at start (see %s)\n", log);
            r->pid = 0;
            return -1;
        }
        usleep(20000);
    }
    fprintf(stderr, "redis-server did not answer within 15 s\n");
    redis_kill(r);
    return -1;
}

int redis_start(redis_server *r, const char *name)
{
    memset(r, 0, sizeof *r);
    char *dir = check_tmpdir(name);
    if (!dir)
        return -1;
    snprintf(r->dir, sizeof r->dir, "%s", dir);
    free(dir);
    /* Another port when one was taken between the pick and redis-server's bind. */
    for (int attempt = 0; attempt < 5; attempt++) {
        r->port = free_port();
        snprintf(r->url, sizeof r->url, "redis://127.0.0.1:%d", r->port);
        if (r->port > 0 && spawn(r) == 0)
            return 0;
    }
    return -1;
}

int redis_restart(redis_server *r)
{
    return r->pid ? 0 : spawn(r);
}

void redis_signal(redis_server *r, int sig)
{
    if (r->pid)
        kill(r->pid, sig);
}

static void reap(redis_server *r, int sig, int grace_ms)
{
    if (!r->pid)
        return;
    kill(r->pid, sig);
    int status;
    for (int waited = 0; waited < grace_ms; waited += 10) {
        if (waitpid(r->pid, &status, WNOHANG) == r->pid) {
            r->pid = 0;
            return;
        }
        usleep(10000);
    }
    kill(r->pid, SIGKILL);
    waitpid(r->pid, &status, 0);
    r->pid = 0;
}

void redis_kill(redis_server *r)
{
    reap(r, SIGKILL, 5000);
}

void redis_stop(redis_server *r)
{
    redis_signal(r, SIGCONT); /* a stopped server would only die of the SIGKILL */
    reap(r, SIGTERM, 5000);
}

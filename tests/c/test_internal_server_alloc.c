/* The allocator the server installs in libwebsockets (server_alloc.c): the header table of every
 * handshake is mapped apart from the heap while the connection waits for its request head and
 * unmapped once the head is read; every other lws allocation stays on the heap, with realloc()
 * semantics for both kinds. Over real sockets on 127.0.0.1. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "server/server_internal.h"
#include "server_fixture.h"

enum { CLIENTS = 20 };

static size_t mapped_now(void)
{
    size_t now = 0;
    server_alloc_stats(&now, NULL);
    return now;
}

static uint64_t mapped_ever(void)
{
    uint64_t ever = 0;
    server_alloc_stats(NULL, &ever);
    return ever;
}

/* mapped_now() once it is `want`, or what it is after 5 s. */
static size_t wait_mapped(size_t want)
{
    size_t now = mapped_now();
    for (int i = 0; i < 500 && now != want; i++) {
        usleep(10000);
        now = mapped_now();
    }
    return now;
}

static int tcp_connect(int port)
{
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void test_header_tables_are_mapped_while_handshakes_wait(void)
{
    sync_engine *engine = NULL;
    sync_server *server = fixture_counter_server(0, NULL, "/", &engine);
    REQUIRE(server);
    int port = sync_server_port(server);
    size_t idle = mapped_now();
    uint64_t ever = mapped_ever();

    /* accepted, nothing sent: each holds a header table (its struct and its data) */
    int fds[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        fds[i] = tcp_connect(port);
        CHECK(fds[i] >= 0);
    }
    CHECK_EQ_INT(wait_mapped(idle + 2 * CLIENTS), idle + 2 * CLIENTS);

    /* each completes its upgrade: the tables go back, their pages with them */
    static const char req[] =
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    int upgraded = 0;
    for (int i = 0; i < CLIENTS; i++)
        if (fds[i] >= 0 && write(fds[i], req, sizeof req - 1) == (ssize_t)(sizeof req - 1)) {
            char buf[512];
            ssize_t n = read(fds[i], buf, sizeof buf);
            upgraded += n >= 12 && memcmp(buf, "HTTP/1.1 101", 12) == 0;
        }
    CHECK_EQ_INT(upgraded, CLIENTS);
    CHECK_EQ_INT(wait_mapped(idle), idle);
    CHECK(mapped_ever() >= ever + 2 * CLIENTS);
    CHECK_EQ_INT(fixture_open_connections(port, CLIENTS), CLIENTS);

    for (int i = 0; i < CLIENTS; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    CHECK_EQ_INT(fixture_open_connections(port, 0), 0);
    /* a plain HTTP request holds a table too, and gives it back */
    CHECK_EQ_INT(http_request(port, "GET", "/healthz", NULL, NULL, NULL), 200);
    CHECK_EQ_INT(wait_mapped(idle), idle);
    sync_server_free(server);
    sync_engine_free(engine);
}

/* lws_realloc() goes through the installed allocator: the header-table path and the heap path
 * both keep realloc()'s contract (contents kept, NULL on size 0). */
static void test_realloc_contract(void)
{
    server_alloc_install();
    size_t idle = mapped_now();

    unsigned char *table = lws_realloc(NULL, 1000, "ah data");
    REQUIRE(table);
    REQUIRE(mapped_now() == idle + 1);
    for (int i = 0; i < 1000; i++)
        table[i] = (unsigned char)i;
    /* shrinking or growing within its pages keeps it where it is */
    CHECK(lws_realloc(table, 500, "lws_realloc") == table);
    CHECK(lws_realloc(table, 1000, "lws_realloc") == table);
    /* growing past them moves it to the heap, contents kept */
    unsigned char *grown = lws_realloc(table, 100000, "lws_realloc");
    REQUIRE(grown);
    CHECK_EQ_INT(mapped_now(), idle);
    int same = 1;
    for (int i = 0; i < 1000; i++)
        same &= grown[i] == (unsigned char)i;
    CHECK(same);
    CHECK(lws_realloc(grown, 0, "lws_free") == NULL);

    /* anything else is the heap's */
    char *other = lws_realloc(NULL, 20000, "rx_ubuf");
    REQUIRE(other);
    CHECK_EQ_INT(mapped_now(), idle);
    memset(other, 'x', 20000);
    other = lws_realloc(other, 40000, "lws_realloc");
    REQUIRE(other);
    CHECK(other[19999] == 'x');
    CHECK(lws_realloc(other, 0, "lws_free") == NULL);

    /* many tables at once: the registry grows, and each is found again */
    void *many[300];
    for (int i = 0; i < 300; i++) {
        many[i] = lws_realloc(NULL, 900, "ah struct");
        CHECK(many[i] != NULL);
    }
    CHECK_EQ_INT(mapped_now(), idle + 300);
    for (int i = 0; i < 300; i += 2)
        lws_realloc(many[i], 0, "lws_free");
    CHECK_EQ_INT(mapped_now(), idle + 150);
    for (int i = 1; i < 300; i += 2)
        lws_realloc(many[i], 0, "lws_free");
    CHECK_EQ_INT(mapped_now(), idle);
}

int main(void)
{
    RUN(test_header_tables_are_mapped_while_handshakes_wait);
    RUN(test_realloc_contract);
    return check_summary();
}

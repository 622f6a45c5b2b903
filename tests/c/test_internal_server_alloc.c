/* The allocator the server installs in libwebsockets (server_alloc.c): the header table of every
 * handshake is mapped apart from the heap while the connection waits for its request head and
 * unmapped once the head is read; every other lws allocation goes to the connection slabs (or the
 * heap when large), with realloc() semantics for every kind. Over real sockets on 127.0.0.1. */
#include <arpa/inet.h>
#include <stdio.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "server/server_internal.h"
#include "server_fixture.h"
#include "ws_client.h"

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

    /* size 0 gives NULL, from NULL too: nothing is allocated that lws would never free */
    CHECK(lws_realloc(NULL, 0, "lws_realloc") == NULL);
    /* a small block grows past its size class and shrinks again, contents kept */
    unsigned char *small = lws_realloc(NULL, 40, "wsi");
    REQUIRE(small);
    memset(small, 7, 40);
    unsigned char *big = lws_realloc(small, 3000, "lws_realloc");
    REQUIRE(big);
    CHECK(big[0] == 7 && big[39] == 7);
    unsigned char *shrunk = lws_realloc(big, 100, "lws_realloc");
    REQUIRE(shrunk);
    CHECK(shrunk[0] == 7 && shrunk[39] == 7);
    CHECK(lws_realloc(shrunk, 0, "lws_free") == NULL);

    /* anything larger is the heap's */
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

/* bytes of slab chunks once they are at most `bound`, or what they are after 10 s */
static size_t wait_slab_at_most(size_t bound)
{
    size_t now = server_alloc_slab_bytes();
    for (int i = 0; i < 1000 && now > bound; i++) {
        usleep(10000);
        now = server_alloc_slab_bytes();
    }
    return now;
}

/* Connections to many rooms that stay loaded: the memory of the connections is held apart from
 * the rooms', so once they close it goes back to the system even though the rooms' blocks
 * (allocated in between) live on. On one heap it stayed (scenario RM, docs/PERFORMANCE.md). */
static void test_closed_connections_give_their_pages_back(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return; /* AddressSanitizer sees every block: connection memory is malloc()'d then */
#endif
    enum { ROOMS = 1000 };
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.room_idle_ms = 600000; /* the rooms stay loaded */
    sync_rooms_options ro = SYNC_ROOMS_OPTIONS_INIT;
    ro.setup = fixture_items_room_setup;
    sync_rooms *rooms = NULL;
    sync_server *server = fixture_rooms_server(&opts, &ro, &rooms);
    REQUIRE(server);
    int port = sync_server_port(server);
    size_t before = server_alloc_slab_bytes();

    /* all open at once, like RM's clients, then all closed */
    static ws_client *clients[ROOMS];
    int joined = 0;
    for (int i = 0; i < ROOMS; i++) {
        char path[64];
        snprintf(path, sizeof path, "/rooms/r-%d", i);
        clients[i] = fixture_try_join(port, path, 10000, NULL);
        joined += clients[i] != NULL;
    }
    CHECK_EQ_INT(joined, ROOMS);
    size_t open = server_alloc_slab_bytes();
    /* each open connection's objects are in the slabs: at least 512 B each */
    CHECK(open >= before + (size_t)ROOMS * 512);
    for (int i = 0; i < ROOMS; i++)
        ws_client_free(clients[i]);
    CHECK_EQ_INT(fixture_open_connections(port, 0), 0);
    CHECK_EQ_INT(sync_rooms_loaded_count(rooms), ROOMS);

    /* what stays mapped: the chunks of the server's lasting lws objects and one spare chunk per
     * size class (the spares' pages given back but the header's), far below the connections' */
    size_t after = wait_slab_at_most(before + 24 * 64 * 1024);
    fprintf(stderr, "  slab bytes: %zu before, %zu with %d connections, %zu after they closed\n",
            before, open, ROOMS, after);
    CHECK(after <= before + 24 * 64 * 1024);
    sync_server_free(server);
}

/* pages of [p, p + len) resident now */
static size_t resident_pages(void *p, size_t len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    unsigned char vec[64 * 1024 / 512];
    size_t n = (len + page - 1) / page;
    if (n > sizeof vec || mincore(p, len, vec) != 0)
        return SIZE_MAX;
    size_t resident = 0;
    for (size_t i = 0; i < n; i++)
        resident += vec[i] & 1;
    return resident;
}

static long minor_faults_of_this_thread(void)
{
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return ru.ru_minflt;
}

/* A size class whose blocks come and go (the reassembly buffer of a message split between two
 * reads, each turn) keeps the first 16 KiB of its emptied chunk resident, so taking a block again
 * costs no page fault (nor the madvise before it); the rest of the chunk goes back at once, and
 * those first pages at a trim point. */
static void test_an_emptied_chunk_keeps_its_first_pages_until_trimmed(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return; /* AddressSanitizer sees every block: no slabs then */
#endif
    enum { BLOCK = 6000, SLOTS = 10, WARM = 16 * 1024, CHUNK = 64 * 1024 };
    server_alloc_install();
    server_alloc_trim_spares();
    /* a whole chunk of a class nothing else here uses (6,144-byte slots, 10 per chunk) */
    unsigned char *blocks[SLOTS];
    for (int i = 0; i < SLOTS; i++) {
        blocks[i] = server_conn_malloc(BLOCK);
        REQUIRE(blocks[i]);
        memset(blocks[i], i + 1, BLOCK);
    }
    unsigned char *chunk = (unsigned char *)((uintptr_t)blocks[0] & ~(uintptr_t)(CHUNK - 1));
    int one_chunk = 1;
    for (int i = 0; i < SLOTS; i++)
        one_chunk &= (unsigned char *)((uintptr_t)blocks[i] & ~(uintptr_t)(CHUNK - 1)) == chunk;
    REQUIRE(one_chunk);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    CHECK_EQ_INT(resident_pages(chunk, WARM), WARM / page);
    CHECK(resident_pages(chunk + WARM, CHUNK - WARM) >= (CHUNK - WARM) / page - 1);
    for (int i = 0; i < SLOTS; i++)
        server_conn_free(blocks[i]);
    CHECK_EQ_INT(resident_pages(chunk, WARM), WARM / page);
    CHECK_EQ_INT(resident_pages(chunk + WARM, CHUNK - WARM), 0);

    /* the block comes back in the same chunk, without a fault, many times over */
    long faults = minor_faults_of_this_thread();
    for (int i = 0; i < 100; i++) {
        unsigned char *again = server_conn_malloc(BLOCK);
        REQUIRE(again);
        CHECK((unsigned char *)((uintptr_t)again & ~(uintptr_t)(CHUNK - 1)) == chunk);
        memset(again, 0x5a, BLOCK);
        server_conn_free(again);
    }
    CHECK_EQ_INT(minor_faults_of_this_thread() - faults, 0);

    server_alloc_trim_spares();
    CHECK_EQ_INT(resident_pages(chunk, CHUNK), 0);
}

/* Blocks of the sizes a connection keeps (lws' wsi on each loop, its receive buffer, the handle
 * with the server's connection) and their neighbours' sizes: each holds its whole size without
 * touching another, is aligned to 8, and to 16 when its size is a multiple of 16. */
static void test_blocks_fit_their_size_and_alignment(void)
{
    static const size_t sizes[] = {8,   16,  24,  148,  152,  160,  168, 176,
                                   224, 840, 952, 1000, 1024, 1100, 8192};
    enum { EACH = 200 };
    size_t n = sizeof sizes / sizeof sizes[0];
    unsigned char *blocks[sizeof sizes / sizeof sizes[0]][EACH];
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < EACH; j++) {
            blocks[i][j] = server_conn_malloc(sizes[i]);
            REQUIRE(blocks[i][j]);
            CHECK((uintptr_t)blocks[i][j] % (sizes[i] % 16 == 0 ? 16 : 8) == 0);
            memset(blocks[i][j], (int)(i * 31 + (size_t)j) & 0xff, sizes[i]);
        }
    int intact = 1;
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < EACH; j++) {
            unsigned char want = (unsigned char)((i * 31 + (size_t)j) & 0xff);
            for (size_t k = 0; k < sizes[i]; k++)
                intact &= blocks[i][j][k] == want;
        }
    CHECK(intact);
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < EACH; j++)
            server_conn_free(blocks[i][j]);
}

int main(void)
{
    RUN(test_header_tables_are_mapped_while_handshakes_wait);
    RUN(test_realloc_contract);
    RUN(test_blocks_fit_their_size_and_alignment);
    RUN(test_an_emptied_chunk_keeps_its_first_pages_until_trimmed);
    RUN(test_closed_connections_give_their_pages_back);
    return check_summary();
}

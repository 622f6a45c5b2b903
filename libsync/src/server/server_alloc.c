/*
 * The allocator of libwebsockets (lws_set_allocator): the header tables of handshakes are mapped
 * apart from the heap, everything else is realloc()/free() as with lws' own allocator.
 *
 * Why: lws 4.1 gives every accepted connection a header table (a struct of about 900 bytes and
 * SERVER_MAX_HEADER_DATA bytes of data) and frees it once the request head has been read. On the
 * heap, the tables of the handshakes in flight sit between the long-lived objects of the
 * connections being set up (the lws wsi, its WebSocket state and receive buffer, the server's
 * connection); freed, they leave holes that later objects only partly fill, and whose touched pages
 * stay resident. With 256 handshakes in flight that was about 270 bytes of RSS per connection
 * behind 10,000 idle connections (docs/PERFORMANCE.md). A mapped table gives its pages back when it
 * is freed, and the heap holds only what lives.
 *
 * lws has one allocator per process: it is installed once, before the first context. lws names
 * each allocation (the `reason`); the tables are recognised by the names lws 4.1 gives them, and an
 * lws that named them otherwise would only leave them on the heap (tests/c/test_server_alloc.c
 * notices). Pointers lws allocated before, or for another user of lws in the process, are not in
 * the registry and go to realloc()/free().
 */
#include "server_internal.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The mapped blocks: an open-addressing set of (address, mapped length) with linear probing. It
 * holds the tables of the handshakes in flight, not one entry per connection. */
typedef struct mapped_block {
    uintptr_t addr; /* 0: an empty slot */
    size_t len;
} mapped_block;

static pthread_mutex_t alloc_lock = PTHREAD_MUTEX_INITIALIZER;
static mapped_block *blocks;
static size_t block_cap; /* 0 or a power of two */
static size_t block_count;
static uint64_t blocks_mapped; /* ever, for server_alloc_stats() */
static size_t page_size = 4096;

static size_t home_of(uintptr_t addr)
{
    uint64_t h = (uint64_t)(addr / page_size) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (block_cap - 1);
}

static void insert_locked(uintptr_t addr, size_t len)
{
    size_t i = home_of(addr);
    while (blocks[i].addr)
        i = (i + 1) & (block_cap - 1);
    blocks[i].addr = addr;
    blocks[i].len = len;
    block_count++;
}

/* Room for one more block, the set kept at most half full. false: out of memory. */
static bool reserve_locked(void)
{
    if ((block_count + 1) * 2 <= block_cap)
        return true;
    size_t cap = block_cap ? block_cap * 2 : 64;
    mapped_block *grown = calloc(cap, sizeof *grown);
    if (!grown)
        return false;
    mapped_block *old = blocks;
    size_t old_cap = block_cap;
    blocks = grown;
    block_cap = cap;
    block_count = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].addr)
            insert_locked(old[i].addr, old[i].len);
    free(old);
    return true;
}

/* The slot of `addr`, or SIZE_MAX when it is not a mapped block. */
static size_t find_locked(uintptr_t addr)
{
    if (!block_cap)
        return SIZE_MAX;
    for (size_t i = home_of(addr); blocks[i].addr; i = (i + 1) & (block_cap - 1))
        if (blocks[i].addr == addr)
            return i;
    return SIZE_MAX;
}

/* Backward-shift deletion: the entries after the slot in its run move up, so no tombstones. */
static void remove_locked(size_t hole)
{
    for (size_t j = (hole + 1) & (block_cap - 1); blocks[j].addr; j = (j + 1) & (block_cap - 1)) {
        size_t home = home_of(blocks[j].addr);
        /* j may move to the hole when its home is not cyclically within (hole, j] */
        bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            blocks[hole] = blocks[j];
            hole = j;
        }
    }
    blocks[hole].addr = 0;
    blocks[hole].len = 0;
    block_count--;
}

/* The mapped length of `ptr`, or 0 when it came from the heap. */
static size_t mapped_len(const void *ptr)
{
    /* mappings are page-aligned: most heap pointers are not even looked up */
    if (((uintptr_t)ptr & (page_size - 1)) != 0)
        return 0;
    pthread_mutex_lock(&alloc_lock);
    size_t i = find_locked((uintptr_t)ptr);
    size_t len = i == SIZE_MAX ? 0 : blocks[i].len;
    pthread_mutex_unlock(&alloc_lock);
    return len;
}

/* NULL when it cannot be mapped (the caller falls back to the heap). */
static void *map_block(size_t size)
{
    size_t len = (size + page_size - 1) & ~(page_size - 1);
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    pthread_mutex_lock(&alloc_lock);
    bool ok = reserve_locked();
    if (ok) {
        insert_locked((uintptr_t)p, len);
        blocks_mapped++;
    }
    pthread_mutex_unlock(&alloc_lock);
    if (!ok) {
        munmap(p, len);
        return NULL;
    }
    return p;
}

static void unmap_block(void *ptr, size_t len)
{
    pthread_mutex_lock(&alloc_lock);
    size_t i = find_locked((uintptr_t)ptr);
    if (i != SIZE_MAX)
        remove_locked(i);
    pthread_mutex_unlock(&alloc_lock);
    munmap(ptr, len);
}

/* The two allocations of a header table in lws 4.1 (lib/roles/http/parsers.c, _lws_create_ah). */
static bool is_header_table(const char *reason)
{
    return reason && (strcmp(reason, "ah struct") == 0 || strcmp(reason, "ah data") == 0);
}

static void *lws_allocator(void *ptr, size_t size, const char *reason)
{
    size_t mapped = ptr ? mapped_len(ptr) : 0;
    if (!mapped) {
        if (!size) {
            free(ptr);
            return NULL;
        }
        if (!ptr && is_header_table(reason)) {
            void *p = map_block(size);
            if (p)
                return p;
        }
        return realloc(ptr, size);
    }
    if (size && size <= mapped)
        return ptr; /* still fits (lws does not resize its tables) */
    void *moved = NULL;
    if (size) {
        moved = malloc(size);
        if (!moved)
            return NULL; /* realloc() semantics: the old block stays */
        memcpy(moved, ptr, mapped);
    }
    unmap_block(ptr, mapped);
    return moved;
}

static pthread_once_t install_once = PTHREAD_ONCE_INIT;

static void install(void)
{
    long page = sysconf(_SC_PAGESIZE);
    if (page > 0)
        page_size = (size_t)page;
    lws_set_allocator(lws_allocator);
}

void server_alloc_install(void)
{
    pthread_once(&install_once, install);
}

void server_alloc_stats(size_t *mapped_now, uint64_t *mapped_ever)
{
    pthread_mutex_lock(&alloc_lock);
    if (mapped_now)
        *mapped_now = block_count;
    if (mapped_ever)
        *mapped_ever = blocks_mapped;
    pthread_mutex_unlock(&alloc_lock);
}

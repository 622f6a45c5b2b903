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
#include "slab.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* A set of mapped blocks (address, mapped length): open addressing with linear probing. */
typedef struct mapped_block {
    uintptr_t addr; /* 0: an empty slot */
    size_t len;
} mapped_block;

typedef struct block_set {
    mapped_block *slots;
    size_t cap; /* 0 or a power of two */
    size_t count;
} block_set;

static pthread_mutex_t alloc_lock = PTHREAD_MUTEX_INITIALIZER;
/* The header tables of the handshakes in flight, not one entry per connection. */
static block_set tables;
static uint64_t blocks_mapped; /* ever, for server_alloc_stats() */
static size_t page_size = 4096;

static size_t home_of(const block_set *set, uintptr_t addr)
{
    uint64_t h = (uint64_t)(addr / page_size) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (set->cap - 1);
}

static void insert_locked(block_set *set, uintptr_t addr, size_t len)
{
    size_t i = home_of(set, addr);
    while (set->slots[i].addr)
        i = (i + 1) & (set->cap - 1);
    set->slots[i].addr = addr;
    set->slots[i].len = len;
    set->count++;
}

/* Room for one more block, the set kept at most half full. false: out of memory. */
static bool reserve_locked(block_set *set)
{
    if ((set->count + 1) * 2 <= set->cap)
        return true;
    size_t cap = set->cap ? set->cap * 2 : 64;
    mapped_block *grown = calloc(cap, sizeof *grown);
    if (!grown)
        return false;
    mapped_block *old = set->slots;
    size_t old_cap = set->cap;
    set->slots = grown;
    set->cap = cap;
    set->count = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].addr)
            insert_locked(set, old[i].addr, old[i].len);
    free(old);
    return true;
}

/* The slot of `addr`, or SIZE_MAX when it is not in the set. */
static size_t find_locked(const block_set *set, uintptr_t addr)
{
    if (!set->cap)
        return SIZE_MAX;
    for (size_t i = home_of(set, addr); set->slots[i].addr; i = (i + 1) & (set->cap - 1))
        if (set->slots[i].addr == addr)
            return i;
    return SIZE_MAX;
}

/* Backward-shift deletion: the entries after the slot in its run move up, so no tombstones. */
static void remove_locked(block_set *set, size_t hole)
{
    mapped_block *b = set->slots;
    size_t mask = set->cap - 1;
    for (size_t j = (hole + 1) & mask; b[j].addr; j = (j + 1) & mask) {
        size_t home = home_of(set, b[j].addr);
        /* j may move to the hole when its home is not cyclically within (hole, j] */
        bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            b[hole] = b[j];
            hole = j;
        }
    }
    b[hole].addr = 0;
    b[hole].len = 0;
    set->count--;
}

/* The mapped length of `ptr`, or 0 when it is not a header table. */
static size_t mapped_len(const void *ptr)
{
    /* mappings are page-aligned: most pointers are not even looked up */
    if (((uintptr_t)ptr & (page_size - 1)) != 0)
        return 0;
    pthread_mutex_lock(&alloc_lock);
    size_t i = find_locked(&tables, (uintptr_t)ptr);
    size_t len = i == SIZE_MAX ? 0 : tables.slots[i].len;
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
    bool ok = reserve_locked(&tables);
    if (ok) {
        insert_locked(&tables, (uintptr_t)p, len);
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
    size_t i = find_locked(&tables, (uintptr_t)ptr);
    if (i != SIZE_MAX)
        remove_locked(&tables, i);
    pthread_mutex_unlock(&alloc_lock);
    munmap(ptr, len);
}

/* ---- connection memory: size-class slabs in mapped chunks ------------------------------------
 *
 * Every connection's memory (what lws allocates for it, the server's own objects) comes from
 * here, apart from the heap that holds the engines of loaded rooms. On one heap, a wave of
 * connections that close leaves its freed blocks between the live rooms' blocks, and glibc can
 * give those pages back to the system neither by itself nor with malloc_trim (about 2.1 KB per
 * loaded idle room in scenario RM, docs/PERFORMANCE.md). Here a chunk holds slots of one size;
 * once its last slot is freed its pages go back (munmap, or madvise for the one chunk per class
 * kept mapped so that a lone connection opening and closing does not map and unmap each time).
 *
 * Chunks are aligned to their size, so a pointer's chunk is found by masking; a set of the
 * chunks tells slots apart from heap pointers. A slot has no header, and classes step by 8 bytes
 * up to 1 KiB: what a connection keeps (lws' wsi of 840 or 952 bytes, its 148-byte receive
 * buffer, the server's connection) fits its class to within 7 bytes, where glibc's header and
 * 16-byte rounding cost 8 to 23 (docs/PERFORMANCE.md). Above 1 KiB classes step by an eighth.
 * A slot is aligned to 16 when its class is a multiple of 16, else to 8: a type that needs 16
 * (alignof(max_align_t)) has a size that is a multiple of 16, so its class is one.
 * Larger blocks and every block under AddressSanitizer (which must see them to find misuse) are
 * malloc()'d. One lock: lws allocates on the service thread, but a connection's objects may be
 * freed on another (sync_conn_free from an application thread). */
#if defined(__SANITIZE_ADDRESS__)
#define SLAB_ENABLED 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SLAB_ENABLED 0
#endif
#endif
#ifndef SLAB_ENABLED
#define SLAB_ENABLED 1
#endif

#define SLAB_CHUNK ((size_t)64 * 1024)
#define SLAB_HEADER ((size_t)64)
#define SLAB_MAX ((size_t)8192)
/* What an empty spare chunk keeps resident until a trim point: a few pages (a multiple of any
 * page size up to 16 KiB), as many as the reassembly buffers of ten busy senders take (scenario
 * B: 8 KiB left 873 madvise() calls per 200,000 increments, 16 KiB 9). */
#define SLAB_WARM ((size_t)16 * 1024)
#define SLAB_CLASSES (1024 / 8 + 3 * 8)

typedef struct slab_chunk {
    struct slab_chunk *prev, *next; /* among its class's chunks with a free slot */
    void *free_list;                /* freed slots, linked through their first word */
    uint32_t used;                  /* slots handed out */
    uint32_t bump;                  /* slots ever carved (the rest were never touched) */
    uint32_t slots;
    uint32_t cls;
    bool listed;
} slab_chunk;

typedef struct slab_class {
    size_t size;
    slab_chunk *avail; /* chunks with a free slot */
    slab_chunk *spare; /* an empty chunk whose pages went back, kept mapped */
    bool spare_warm;   /* the spare's first SLAB_WARM bytes may be resident */
} slab_class;

static slab_class classes[SLAB_CLASSES];
/* Spares whose first pages may be resident: read without the lock by the service loops. */
static atomic_size_t warm_spares;
static uint8_t class_of_8[SLAB_MAX / 8 + 1]; /* (size + 7) / 8 -> class */
_Static_assert(SLAB_CLASSES <= 256, "a class number fits class_of_8");
static block_set chunks;
static size_t slab_bytes; /* mapped chunks, for server_alloc_slab_bytes() */

/* 8..1024 by 8, then each doubling in eight steps up to 8192. */
static void slab_init(void)
{
    size_t n = 0;
    for (size_t sz = 8; sz <= 1024; sz += 8)
        classes[n++].size = sz;
    for (size_t base = 1024; base < SLAB_MAX; base *= 2)
        for (size_t k = 1; k <= 8; k++)
            classes[n++].size = base + k * (base / 8);
    size_t c = 0;
    for (size_t i = 0; i <= SLAB_MAX / 8; i++) {
        while (classes[c].size < i * 8)
            c++;
        class_of_8[i] = (uint8_t)c;
    }
}

static uintptr_t chunk_base(const void *ptr)
{
    return (uintptr_t)ptr & ~(uintptr_t)(SLAB_CHUNK - 1);
}

/* The chunk holding `ptr`, or NULL when it is not a slot. */
static slab_chunk *chunk_of_locked(const void *ptr)
{
    uintptr_t base = chunk_base(ptr);
    return find_locked(&chunks, base) == SIZE_MAX ? NULL : (slab_chunk *)base;
}

static void chunk_reset(slab_chunk *c, uint32_t cls)
{
    memset(c, 0, sizeof *c);
    c->cls = cls;
    c->slots = (uint32_t)((SLAB_CHUNK - SLAB_HEADER) / classes[cls].size);
}

static void avail_link(slab_chunk *c)
{
    slab_class *k = &classes[c->cls];
    c->prev = NULL;
    c->next = k->avail;
    if (k->avail)
        k->avail->prev = c;
    k->avail = c;
    c->listed = true;
}

static void avail_unlink(slab_chunk *c)
{
    slab_class *k = &classes[c->cls];
    if (c->prev)
        c->prev->next = c->next;
    else
        k->avail = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    c->listed = false;
}

/* A fresh chunk aligned to its size, registered; NULL when the system has none. */
static slab_chunk *chunk_map_locked(uint32_t cls)
{
    if (!reserve_locked(&chunks))
        return NULL;
    void *raw =
        mmap(NULL, 2 * SLAB_CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    uintptr_t start = (uintptr_t)raw;
    uintptr_t base = (start + SLAB_CHUNK - 1) & ~(uintptr_t)(SLAB_CHUNK - 1);
    if (base > start)
        munmap(raw, base - start);
    if (start + 2 * SLAB_CHUNK > base + SLAB_CHUNK)
        munmap((void *)(base + SLAB_CHUNK), start + 2 * SLAB_CHUNK - (base + SLAB_CHUNK));
    insert_locked(&chunks, base, SLAB_CHUNK);
    slab_bytes += SLAB_CHUNK;
    slab_chunk *c = (slab_chunk *)base;
    chunk_reset(c, cls);
    return c;
}

static void *slab_alloc(size_t size)
{
    uint32_t cls = class_of_8[(size + 7) / 8];
    slab_class *k = &classes[cls];
    pthread_mutex_lock(&alloc_lock);
    slab_chunk *c = k->avail;
    if (!c) {
        c = k->spare;
        k->spare = NULL;
        if (k->spare_warm)
            atomic_fetch_sub(&warm_spares, 1);
        k->spare_warm = false;
        if (c)
            chunk_reset(c, cls); /* its header's page may have gone back with the rest */
        else
            c = chunk_map_locked(cls);
        if (!c) {
            pthread_mutex_unlock(&alloc_lock);
            return NULL;
        }
        avail_link(c);
    }
    void *p = c->free_list;
    if (p)
        memcpy(&c->free_list, p, sizeof(void *));
    else
        p = (char *)c + SLAB_HEADER + (size_t)c->bump++ * k->size;
    if (++c->used == c->slots)
        avail_unlink(c);
    pthread_mutex_unlock(&alloc_lock);
    return p;
}

/* Frees a slot of `c` (the lock held); an empty chunk's pages go back. */
static void slab_free_locked(slab_chunk *c, void *ptr)
{
    memcpy(ptr, &c->free_list, sizeof(void *));
    c->free_list = ptr;
    if (!c->listed)
        avail_link(c);
    if (--c->used)
        return;
    avail_unlink(c);
    slab_class *k = &classes[c->cls];
    if (!k->spare) {
        /* The pages its slots touched go back but the first SLAB_WARM bytes (the header and
         * the first slots, where a reset chunk carves again). A class whose few blocks come and
         * go, such as the reassembly buffers of messages split between two reads, would
         * otherwise pay a madvise() and page faults each time: 5 % of the server's time in
         * scenario B. Those pages go back at the server's trim points (server_alloc_trim_spares).
         */
        size_t touched = SLAB_HEADER + (size_t)c->bump * k->size;
        if (touched > SLAB_WARM)
            madvise((char *)c + SLAB_WARM, SLAB_CHUNK - SLAB_WARM, MADV_DONTNEED);
        k->spare = c;
        k->spare_warm = true;
        atomic_fetch_add(&warm_spares, 1);
        return;
    }
    size_t i = find_locked(&chunks, (uintptr_t)c);
    if (i != SIZE_MAX)
        remove_locked(&chunks, i);
    slab_bytes -= SLAB_CHUNK;
    munmap(c, SLAB_CHUNK);
}

static pthread_once_t slab_once = PTHREAD_ONCE_INIT;

void *server_conn_malloc(size_t size)
{
    if (!SLAB_ENABLED || !size || size > SLAB_MAX)
        return malloc(size);
    pthread_once(&slab_once, slab_init);
    void *p = slab_alloc(size);
    return p ? p : malloc(size);
}

void *server_conn_calloc(size_t size)
{
    void *p = server_conn_malloc(size);
    if (p)
        memset(p, 0, size);
    return p;
}

void server_conn_free(void *ptr)
{
    if (!ptr)
        return;
    if (SLAB_ENABLED) {
        pthread_mutex_lock(&alloc_lock);
        slab_chunk *c = chunk_of_locked(ptr);
        if (c)
            slab_free_locked(c, ptr);
        pthread_mutex_unlock(&alloc_lock);
        if (c)
            return;
    }
    free(ptr);
}

void *server_conn_realloc(void *ptr, size_t size)
{
    /* size 0 frees and gives NULL, from NULL too (lws asks for 0 bytes and never frees them) */
    if (!size) {
        server_conn_free(ptr);
        return NULL;
    }
    if (!ptr)
        return server_conn_malloc(size);
    size_t old = 0;
    if (SLAB_ENABLED) {
        pthread_mutex_lock(&alloc_lock);
        slab_chunk *c = chunk_of_locked(ptr);
        old = c ? classes[c->cls].size : 0;
        pthread_mutex_unlock(&alloc_lock);
    }
    if (!old)
        return realloc(ptr, size); /* a heap block stays on the heap */
    if (size <= old)
        return ptr;
    void *moved = server_conn_malloc(size);
    if (!moved)
        return NULL; /* realloc() semantics: the old block stays */
    memcpy(moved, ptr, old);
    server_conn_free(ptr);
    return moved;
}

void *sync__slab_malloc(size_t size)
{
    return server_conn_malloc(size);
}

void sync__slab_free(void *ptr)
{
    server_conn_free(ptr);
}

bool server_alloc_has_warm_spares(void)
{
    return atomic_load_explicit(&warm_spares, memory_order_relaxed) != 0;
}

void server_alloc_trim_spares(void)
{
    if (!SLAB_ENABLED)
        return;
    pthread_mutex_lock(&alloc_lock);
    for (size_t i = 0; i < SLAB_CLASSES; i++) {
        slab_class *k = &classes[i];
        if (!k->spare_warm)
            continue;
        /* every page of it now, the header's too: nothing reads a spare's header until it is
         * reset for use, and the pages read as zeros when touched again. A page per size class
         * the process ever used stayed resident otherwise, about 150 KiB after scenario RM. */
        madvise(k->spare, SLAB_WARM, MADV_DONTNEED);
        k->spare_warm = false;
        atomic_fetch_sub(&warm_spares, 1);
    }
    pthread_mutex_unlock(&alloc_lock);
}

size_t server_alloc_slab_bytes(void)
{
    pthread_mutex_lock(&alloc_lock);
    size_t n = slab_bytes;
    pthread_mutex_unlock(&alloc_lock);
    return n;
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
        if (!ptr && size && is_header_table(reason)) {
            void *p = map_block(size);
            if (p)
                return p;
        }
        return server_conn_realloc(ptr, size);
    }
    if (size && size <= mapped)
        return ptr; /* still fits (lws does not resize its tables) */
    void *moved = NULL;
    if (size) {
        moved = server_conn_malloc(size);
        if (!moved)
            return NULL; /* realloc() semantics: the old block stays */
        memcpy(moved, ptr, mapped < size ? mapped : size);
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
    pthread_once(&slab_once, slab_init);
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
        *mapped_now = tables.count;
    if (mapped_ever)
        *mapped_ever = blocks_mapped;
    pthread_mutex_unlock(&alloc_lock);
}

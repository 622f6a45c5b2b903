/*
 * Room mounts (rooms.h): an engine per room name, created when its first client (or
 * sync_rooms_acquire) needs it, unloaded when idle.
 *
 * A room's life: CREATING (the engine exists; the setup callback runs, maybe deferred, then the
 * record loads, maybe later) -> READY (clients join) -> UNLOADING (saved, pending work finished:
 * sync_engine_sync then sync_engine_when_idle) -> freed, or CREATING again when a join arrived
 * meanwhile. A creation that fails makes it FAILED: out of the table at once (the next join
 * tries afresh), its waiting clients closed with SYNC_CLOSE_ROOM_UNAVAILABLE.
 *
 * Who needs a room counts on it (server->rooms_lock): `waiters` (clients and acquire calls
 * waiting for it to be ready), `joined` (connections in its engine), `holds` (acquire holds) and
 * `pins` (short internal uses: metrics, stop). Idle is waiters == joined == holds == 0; the engine
 * is freed only once joined == holds == pins == 0, and the struct once nothing counts on it.
 *
 * Threads. Creation runs on the thread that needs the room (the service thread for a join, the
 * caller of acquire); a deferred setup or an adapter completes on any thread. Everything about
 * sockets (waking waiting clients, timers, broadcasts) runs on the service thread: the other
 * threads put the room on server->rooms_due and wake it. Freeing an engine never happens inside
 * one of its callbacks (its lock is held there): that is also left to rooms_due, which the
 * service thread drains each loop turn, and a caller of sync_rooms_* drains itself when the
 * server is not serving.
 *
 * Lock order: an engine's lock, then rooms_lock. Nothing calls into an engine (or user code)
 * while holding rooms_lock; an engine's callbacks (load done, when idle, the listener) may take
 * it. rooms_lock and server->lock are never held together.
 *
 * Idle rooms are kept on one list in the order they became idle (least recently used first), so
 * the idle timer and max_rooms eviction look at its head only: thousands of idle rooms cost the
 * loop nothing per turn. A room's engine timers are lws timers of their own (sorted), re-armed
 * only when its deadline moves.
 */
#include "server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "cluster/cluster.h"
#include "engine/engine_room.h"
#include "error.h"
#include "libsync/rooms.h"
#include "options.h"
#include "store/room_batch.h"

/* Idle rooms unloaded per loop turn at most. */
enum { ROOMS_UNLOAD_BATCH = 64 };
/* Engines freed before the allocator is asked to give free memory back (see rooms_trim). */
enum { ROOMS_TRIM_AFTER = 256 };

enum room_state { ROOM_CREATING, ROOM_READY, ROOM_UNLOADING, ROOM_FAILED, ROOM_GONE };

/* Work a room has for the service thread (room->due_flags). */
enum {
    DUE_FLUSH = 1,    /* its state moved: broadcast */
    DUE_TIMER = 2,    /* its deadline moved: re-arm its timer */
    DUE_WAKE = 4,     /* it became ready or failed: wake its waiting clients */
    DUE_UNLOADED = 8, /* its unload (or failure) finished: free the engine */
    DUE_IDLE = 16,    /* it became idle: the idle timer may need arming */
    DUE_DELETE = 32,  /* another node deleted it from the cluster: close and unload it */
};

typedef struct async_waiter {
    struct async_waiter *next;
    sync_room_ready_cb done;
    void *userdata;
} async_waiter;

struct sync_room_setup {
    server_room *room;
    sync_engine *engine;
    char *initial_json;
    bool in_callback; /* under rooms_lock */
    bool deferred;
    bool completed;
    int status;
};

struct server_room {
    server_engine eng; /* eng.engine: the room's engine while it has one; eng.path: the prefix */
    sync_rooms *rooms;
    char *name;
    server_room *hash_next;
    /* under rooms_lock */
    int state;
    int fail_status;
    bool reload; /* a join arrived while unloading: create it again after */
    bool deleting;
    bool cluster_deleted; /* another node deleted it: unloaded as soon as it is ready */
    bool unload_done;
    bool idle;        /* on the idle list */
    bool timer_armed; /* service thread: in server->room_timers, at timer_index */
    /* (32 bits: a room struct per loaded room, and nothing counts 4 billion times on one) */
    uint32_t waiters, joined, holds, pins;
    int64_t idle_since_ms;
    server_room *idle_prev, *idle_next;
    unsigned due_flags;
    server_room *due_next;
    async_waiter *async_head;
    sync_room_setup *setup;
    /* service thread */
    server_conn *wait_head; /* connections waiting for it to be ready */
    uint64_t loaded_seq;    /* its engine's head right after the load */
    uint32_t timer_index;
    int64_t timer_at;             /* its engine's next deadline, ms */
    struct cluster_room *cluster; /* a clustered server's: the room in the cluster, while loaded */
};

struct sync_rooms {
    sync_server *server;
    char *prefix;
    size_t prefix_len;
    sync_room_setup_cb setup;
    void *setup_userdata;
    sync_free_cb setup_free_userdata;
    sync_engine_options engine_options;
    char *initial_state_json;
    sync_room_store *store;
    /* under rooms_lock */
    server_room **buckets;
    size_t bucket_count;
    size_t count; /* rooms in the table: loaded (or loading, or unloading) */
    uint64_t created, unloaded, refused;
    sync_engine_stats retired; /* counters of the rooms unloaded since */
};

static void room_process_due(sync_server *server);

/* ---- the table (rooms_lock) -------------------------------------------------------------- */

static size_t name_hash(const char *name)
{
    size_t h = 1469598103934665603u;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 1099511628211u;
    return h;
}

static server_room *table_find(sync_rooms *rooms, const char *name)
{
    if (!rooms->bucket_count)
        return NULL;
    for (server_room *r = rooms->buckets[name_hash(name) % rooms->bucket_count]; r;
         r = r->hash_next)
        if (strcmp(r->name, name) == 0)
            return r;
    return NULL;
}

/* Rehashes into n buckets; false when out of memory (the table stays as it was). */
static bool table_resize(sync_rooms *rooms, size_t n)
{
    server_room **b = calloc(n, sizeof *b);
    if (!b)
        return false;
    for (size_t i = 0; i < rooms->bucket_count; i++) {
        server_room *r = rooms->buckets[i];
        while (r) {
            server_room *next = r->hash_next;
            size_t j = name_hash(r->name) % n;
            r->hash_next = b[j];
            b[j] = r;
            r = next;
        }
    }
    free(rooms->buckets);
    rooms->buckets = b;
    rooms->bucket_count = n;
    return true;
}

static bool table_add(sync_rooms *rooms, server_room *room)
{
    if ((rooms->count + 1 > rooms->bucket_count * 2 / 3 + 1 || !rooms->bucket_count) &&
        !table_resize(rooms, rooms->bucket_count ? rooms->bucket_count * 2 : 64))
        return false;
    size_t j = name_hash(room->name) % rooms->bucket_count;
    room->hash_next = rooms->buckets[j];
    rooms->buckets[j] = room;
    rooms->count++;
    return true;
}

static void table_remove(sync_rooms *rooms, server_room *room)
{
    if (!rooms->bucket_count)
        return;
    for (server_room **link = &rooms->buckets[name_hash(room->name) % rooms->bucket_count]; *link;
         link = &(*link)->hash_next)
        if (*link == room) {
            *link = room->hash_next;
            room->hash_next = NULL;
            rooms->count--;
            /* a wave of unloaded rooms gives its buckets back too (halving at 1/8 full keeps
             * the rehashes amortised); a failed shrink keeps the larger table */
            if (rooms->bucket_count > 64 && rooms->count < rooms->bucket_count / 8)
                table_resize(rooms, rooms->bucket_count / 2);
            return;
        }
}

/* ---- idle list and the due list (rooms_lock) --------------------------------------------- */

static void idle_unlink(sync_server *s, server_room *r)
{
    if (!r->idle)
        return;
    if (r->idle_prev)
        r->idle_prev->idle_next = r->idle_next;
    else
        s->idle_head = r->idle_next;
    if (r->idle_next)
        r->idle_next->idle_prev = r->idle_prev;
    else
        s->idle_tail = r->idle_prev;
    r->idle_prev = r->idle_next = NULL;
    r->idle = false;
}

static bool room_is_idle(const server_room *r)
{
    return r->state == ROOM_READY && !r->waiters && !r->joined && !r->holds && !r->deleting;
}

/* Puts a room that just became idle at the tail; returns whether the idle timer must be armed. */
static bool idle_check_locked(sync_server *s, server_room *r)
{
    if (r->idle || !room_is_idle(r))
        return false;
    r->idle = true;
    r->idle_since_ms = sync_now_ms();
    r->idle_next = NULL;
    r->idle_prev = s->idle_tail;
    if (s->idle_tail)
        s->idle_tail->idle_next = r;
    else
        s->idle_head = r;
    s->idle_tail = r;
    return s->room_idle_ms >= 0;
}

/* Returns whether the service thread must be woken. */
static bool due_locked(sync_server *s, server_room *r, unsigned flags)
{
    bool wake = !s->rooms_due;
    if (!r->due_flags) {
        /* at the tail: a room left for the next turn stays ahead of rooms due after it */
        r->due_next = NULL;
        if (s->rooms_due_tail)
            s->rooms_due_tail->due_next = r;
        else
            s->rooms_due = r;
        s->rooms_due_tail = r;
    } else {
        wake = false;
    }
    if (!(r->due_flags & ~(unsigned)DUE_FLUSH) && (flags & ~(unsigned)DUE_FLUSH))
        s->rooms_due_more++;
    r->due_flags |= flags;
    return wake;
}

static void due(sync_server *s, server_room *r, unsigned flags)
{
    pthread_mutex_lock(&s->rooms_lock);
    due_locked(s, r, flags);
    pthread_mutex_unlock(&s->rooms_lock);
    if (!server_on_service_thread(s))
        server_wake(s);
}

/* Frees a room nothing counts on any more (rooms_lock). */
static void room_free_if_unused_locked(server_room *r)
{
    if (r->state != ROOM_GONE || r->waiters || r->joined || r->holds || r->pins || r->due_flags ||
        r->eng.engine || r->async_head)
        return;
    free(r->name);
    free(r);
}

/* ---- the engine listener (engine lock held, any thread) ---------------------------------- */

static void room_state_moved(void *userdata, int force)
{
    server_room *r = userdata;
    if (force)
        atomic_store(&r->eng.state_force, true);
    /* always queued (once): the broadcast join also sets state_moved, without queueing */
    atomic_store(&r->eng.state_moved, true);
    due(r->eng.server, r, DUE_FLUSH);
}

static void room_deadline_moved(void *userdata)
{
    server_room *r = userdata;
    if (!atomic_exchange(&r->eng.deadline_moved, true))
        due(r->eng.server, r, DUE_TIMER);
}

/* ---- creation ---------------------------------------------------------------------------- */

static void room_ready(server_room *r, int status);

static void room_loaded(sync_engine *engine, int status, void *userdata)
{
    server_room *r = userdata;
    r->loaded_seq = sync__engine_head_seq(engine); /* the record just loaded */
    room_ready(r, status);
}

/* A clustered room's record came from Redis (any thread). */
static void room_cluster_ready(void *userdata, int status)
{
    server_room *r = userdata;
    r->loaded_seq = sync__engine_head_seq(r->eng.engine);
    room_ready(r, status);
}

/* A clustered room's engine (initial state, no adapter) joins the cluster as the room
 * prefix + name; its record is loaded from Redis by the node, which calls room_cluster_ready. */
static void room_cluster_attach(sync_engine *engine, int status, void *userdata)
{
    (void)engine;
    server_room *r = userdata;
    sync_server *s = r->eng.server;
    if (status < 0) {
        room_ready(r, status);
        return;
    }
    char *key = NULL;
    if (asprintf(&key, "%s%s", r->rooms->prefix, r->name) < 0) {
        room_ready(r, sync__fail(SYNC_ENOMEM, "out of memory"));
        return;
    }
    /* under rooms_lock: a failure the node reports at once (room_ready takes it) cannot free
     * the engine before r->cluster says it must be detached first */
    pthread_mutex_lock(&s->rooms_lock);
    int rc =
        sync__cluster_attach(s->cluster, key, r->eng.engine, room_cluster_ready, r, &r->cluster);
    pthread_mutex_unlock(&s->rooms_lock);
    free(key);
    if (rc != SYNC_OK)
        room_ready(r, rc);
}

/* After the setup: the initial state, the store's adapter, the load. */
static void room_after_setup(server_room *r, sync_room_setup *setup, int status)
{
    char *initial = setup->initial_json;
    setup->initial_json = NULL;
    pthread_mutex_lock(&r->eng.server->rooms_lock);
    r->setup = NULL;
    pthread_mutex_unlock(&r->eng.server->rooms_lock);
    free(setup);
    if (status < 0) {
        free(initial);
        room_ready(r, status);
        return;
    }
    sync_rooms *rooms = r->rooms;
    sync_adapter *adapter = NULL;
    if (r->eng.server->cluster) {
        /* the state lives in Redis: the mount's store is not used */
        int rc =
            sync__engine_attach_load(r->eng.engine, initial ? initial : rooms->initial_state_json,
                                     NULL, room_cluster_attach, r);
        free(initial);
        if (rc < 0 && rc != SYNC_PENDING)
            room_ready(r, rc);
        return;
    }
    if (rooms->store) {
        int rc = sync_room_store_adapter(&adapter, rooms->store, r->name);
        if (rc != SYNC_OK) {
            free(initial);
            room_ready(r, rc);
            return;
        }
    }
    int rc = sync__engine_attach_load(r->eng.engine, initial ? initial : rooms->initial_state_json,
                                      adapter, room_loaded, r);
    free(initial);
    if (rc < 0 && rc != SYNC_PENDING)
        room_ready(r, rc);
}

/* Creates the engine and runs the setup (rooms_lock not held; state CREATING). */
static void room_create(server_room *r)
{
    sync_rooms *rooms = r->rooms;
    sync_engine *engine = NULL;
    int rc = sync_engine_new(&engine, &rooms->engine_options);
    if (rc == SYNC_OK) {
        sync__engine_set_auto_broadcast(engine, 1);
        sync__engine_listener listener = {room_state_moved, room_deadline_moved, r};
        rc = sync__engine_add_listener(engine, &listener);
        if (rc != SYNC_OK) {
            sync_engine_free(engine);
            engine = NULL;
        }
    }
    if (rc != SYNC_OK) {
        room_ready(r, rc);
        return;
    }
    pthread_mutex_lock(&r->eng.server->rooms_lock); /* read under it by release, list, stats */
    r->eng.engine = engine;
    pthread_mutex_unlock(&r->eng.server->rooms_lock);
    sync_room_setup *setup = calloc(1, sizeof *setup);
    if (!setup) {
        room_ready(r, sync__fail(SYNC_ENOMEM, "out of memory for a room setup"));
        return;
    }
    setup->room = r;
    setup->engine = engine;
    if (!rooms->setup) {
        room_after_setup(r, setup, SYNC_OK);
        return;
    }
    sync_server *s = r->eng.server;
    pthread_mutex_lock(&s->rooms_lock);
    r->setup = setup;
    setup->in_callback = true;
    pthread_mutex_unlock(&s->rooms_lock);
    int status = rooms->setup(setup, rooms->setup_userdata);
    pthread_mutex_lock(&s->rooms_lock);
    setup->in_callback = false;
    bool wait = setup->deferred && !setup->completed;
    if (setup->deferred && setup->completed)
        status = setup->status;
    pthread_mutex_unlock(&s->rooms_lock);
    if (wait)
        return; /* sync_room_setup_complete() goes on */
    if (status == SYNC_PENDING && !setup->deferred)
        status = sync__fail(SYNC_ESTATE, "the room setup returned SYNC_PENDING without "
                                         "sync_room_setup_defer()");
    else if (status > 0)
        status = SYNC_EINVAL;
    room_after_setup(r, setup, status);
}

/* The creation finished: ready, or failed (any thread; maybe inside the engine's load, its lock
 * held). Acquire callers waiting are told here; waiting clients by the service thread. */
static void room_ready(server_room *r, int status)
{
    sync_server *s = r->eng.server;
    sync_rooms *rooms = r->rooms;
    if (status < 0)
        server_log(s, SYNC_LOG_ERROR, "room \"%s\" of %s is unavailable: %s", r->name,
                   rooms->prefix, sync_error_last()[0] ? sync_error_last() : sync_strerror(status));
    pthread_mutex_lock(&s->rooms_lock);
    async_waiter *waiters = r->async_head;
    r->async_head = NULL;
    bool wake;
    if (status >= 0) {
        r->state = ROOM_READY;
        rooms->created++;
        wake = due_locked(s, r, DUE_WAKE | (r->cluster_deleted ? DUE_DELETE : 0));
    } else {
        r->state = ROOM_FAILED;
        r->fail_status = status;
        rooms->refused++;
        table_remove(rooms, r);
        s->rooms_loaded--;
        wake = due_locked(s, r, DUE_WAKE | DUE_UNLOADED);
    }
    /* holds for the acquire callers told below, which now own them */
    uint32_t n = 0;
    for (async_waiter *w = waiters; w; w = w->next)
        n++;
    r->waiters -= n;
    if (status >= 0)
        r->holds += n;
    /* everyone who wanted it may have gone meanwhile (a client that left while it loaded) */
    if (status >= 0 && idle_check_locked(s, r))
        wake |= due_locked(s, r, DUE_IDLE);
    sync_engine *engine = status >= 0 ? r->eng.engine : NULL;
    pthread_cond_broadcast(&s->rooms_cond);
    pthread_mutex_unlock(&s->rooms_lock);
    if (wake && !server_on_service_thread(s))
        server_wake(s);
    while (waiters) {
        async_waiter *next = waiters->next;
        waiters->done(status >= 0 ? SYNC_OK : status, engine, waiters->userdata);
        free(waiters);
        waiters = next;
    }
}

/* ---- unloading --------------------------------------------------------------------------- */

static void room_unloaded(sync_engine *engine, int status, void *userdata)
{
    (void)engine;
    (void)status;
    server_room *r = userdata;
    sync_server *s = r->eng.server;
    pthread_mutex_lock(&s->rooms_lock);
    r->unload_done = true;
    bool wake = due_locked(s, r, DUE_UNLOADED);
    pthread_mutex_unlock(&s->rooms_lock);
    if (wake && !server_on_service_thread(s))
        server_wake(s);
}

/* Starts unloading an idle room (rooms_lock held: state READY, idle). The engine calls are made
 * by room_unload_run once the lock is let go. */
static void room_unload_begin_locked(sync_server *s, server_room *r)
{
    idle_unlink(s, r);
    r->state = ROOM_UNLOADING;
    r->unload_done = false;
    r->pins++; /* until room_unload_run made its calls */
    s->rooms_loaded--;
}

/* A room nobody changed since it loaded has nothing to save (no record for a room that was only
 * visited), nor has one whose last change was saved already. */
static bool room_needs_save(server_room *r)
{
    pthread_mutex_lock(&r->eng.server->rooms_lock);
    sync_engine *engine = r->state != ROOM_CREATING ? r->eng.engine : NULL;
    pthread_mutex_unlock(&r->eng.server->rooms_lock);
    /* the caller pins the room: its engine stays */
    return engine && sync__engine_head_seq(engine) != r->loaded_seq &&
           sync__engine_head_unsaved(engine);
}

static void room_unload_run(server_room *r)
{
    /* Once the pin is let go the service thread may free r: nothing reads r after the unlock. */
    sync_server *s = r->eng.server;
    sync_engine *engine = r->eng.engine;
    if (!r->deleting && room_needs_save(r)) {
        int rc = sync_engine_sync(engine);
        if (rc < 0 && rc != SYNC_PENDING)
            server_log(s, SYNC_LOG_ERROR, "saving room \"%s\" before unloading: %s", r->name,
                       sync_error_last());
    }
    if (sync_engine_when_idle(engine, room_unloaded, r) < 0)
        room_unloaded(engine, SYNC_ECLOSED, r); /* disposed (deleted): nothing is pending */
    pthread_mutex_lock(&s->rooms_lock);
    r->pins--;
    bool wake = r->unload_done && due_locked(s, r, DUE_UNLOADED);
    pthread_mutex_unlock(&s->rooms_lock);
    if (wake && !server_on_service_thread(s))
        server_wake(s);
}

static void add_stats(sync_engine_stats *sum, const sync_engine_stats *st)
{
    sum->messages_in += st->messages_in;
    sum->messages_applied += st->messages_applied;
    sum->messages_dropped += st->messages_dropped;
    sum->handler_errors += st->handler_errors;
    sum->frames_out += st->frames_out;
    sum->bytes_out += st->bytes_out;
    sum->serialisations += st->serialisations;
    sum->saves += st->saves;
    sum->save_errors += st->save_errors;
    sum->total_save_us += st->total_save_us;
    sum->steps_timed_out += st->steps_timed_out;
}

/* ---- the rooms' timers (service thread) -------------------------------------------------- */

static void timer_swap(sync_server *s, size_t a, size_t b)
{
    server_room *t = s->room_timers[a];
    s->room_timers[a] = s->room_timers[b];
    s->room_timers[b] = t;
    s->room_timers[a]->timer_index = (uint32_t)a;
    s->room_timers[b]->timer_index = (uint32_t)b;
}

static void timer_sift(sync_server *s, size_t i)
{
    server_room **h = s->room_timers;
    while (i > 0 && h[(i - 1) / 2]->timer_at > h[i]->timer_at) {
        timer_swap(s, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < s->room_timer_count && h[l]->timer_at < h[m]->timer_at)
            m = l;
        if (l + 1 < s->room_timer_count && h[l + 1]->timer_at < h[m]->timer_at)
            m = l + 1;
        if (m == i)
            return;
        timer_swap(s, i, m);
        i = m;
    }
}

static void timer_remove(sync_server *s, server_room *r)
{
    if (!r->timer_armed)
        return;
    size_t i = r->timer_index;
    r->timer_armed = false;
    s->room_timer_count--;
    if (i == s->room_timer_count)
        return;
    s->room_timers[i] = s->room_timers[s->room_timer_count];
    s->room_timers[i]->timer_index = (uint32_t)i;
    timer_sift(s, i);
}

/* Puts (or moves) r in the heap at `at`; false when out of memory. */
static bool timer_set(sync_server *s, server_room *r, int64_t at)
{
    if (!r->timer_armed) {
        if (s->room_timer_count == s->room_timer_cap) {
            size_t cap = s->room_timer_cap ? s->room_timer_cap * 2 : 64;
            server_room **h = realloc(s->room_timers, cap * sizeof *h);
            if (!h)
                return false;
            s->room_timers = h;
            s->room_timer_cap = cap;
        }
        r->timer_index = (uint32_t)s->room_timer_count++;
        s->room_timers[r->timer_index] = r;
        r->timer_armed = true;
    }
    r->timer_at = at;
    timer_sift(s, r->timer_index);
    return true;
}

static void rooms_timer_fired(lws_sorted_usec_list_t *sul);

/* The one lws timer follows the heap's earliest deadline. */
static void rooms_timer_sync(sync_server *s)
{
    if (!s->room_timer_count || !s->context || s->rooms_quiet) {
        if (s->rooms_timer_armed)
            lws_sul_cancel(&s->rooms_timer);
        s->rooms_timer_armed = false;
        return;
    }
    int64_t at = s->room_timers[0]->timer_at;
    if (s->rooms_timer_armed && s->rooms_timer_at == at)
        return;
    int64_t wait_ms = at - sync_now_ms();
    lws_sul_schedule(s->context, 0, &s->rooms_timer, rooms_timer_fired,
                     (lws_usec_t)(wait_ms > 0 ? wait_ms : 0) * LWS_US_PER_MS);
    s->rooms_timer_armed = true;
    s->rooms_timer_at = at;
}

/* Releases the heap when no room is in it (the server stops, or a wave of rooms unloaded). */
static void timer_heap_shrink(sync_server *s)
{
    if (s->room_timer_count || !s->room_timers)
        return;
    free(s->room_timers);
    s->room_timers = NULL;
    s->room_timer_cap = 0;
}

/* The engine of an unloaded or failed room goes (no lock held; never inside its callbacks). */
static void room_free_engine(server_room *r)
{
    sync_server *s = r->eng.server;
    sync_engine *engine = r->eng.engine;
    sync_engine_stats st = {.version = SYNC_ENGINE_STATS_VERSION};
    sync_engine_get_stats(engine, &st);
    pthread_mutex_lock(&s->rooms_lock);
    struct cluster_room *room = r->cluster;
    r->cluster = NULL;
    pthread_mutex_unlock(&s->rooms_lock);
    sync__cluster_detach(room); /* gives its lease up: another node goes on */
    sync__engine_remove_listener(engine, r);
    /* off the service thread nothing serves (drain_if_idle_server): the heap is empty */
    if (server_on_service_thread(s))
        timer_remove(s, r);
    sync_engine_free(engine);
    pthread_mutex_lock(&s->rooms_lock);
    r->eng.engine = NULL;
    add_stats(&r->rooms->retired, &st);
    pthread_mutex_unlock(&s->rooms_lock);
}

/* ---- the due list ------------------------------------------------------------------------ */

static void room_timer_arm(server_room *r)
{
    sync_server *s = r->eng.server;
    int64_t deadline = r->eng.engine && !s->rooms_quiet && s->context
                           ? sync_engine_next_deadline_ms(r->eng.engine)
                           : -1;
    if (deadline < 0 || !timer_set(s, r, deadline)) {
        if (deadline >= 0)
            server_log(s, SYNC_LOG_ERROR, "out of memory arming the timer of room \"%s\"", r->name);
        timer_remove(s, r);
    }
    rooms_timer_sync(s);
}

static void rooms_timer_fired(lws_sorted_usec_list_t *sul)
{
    sync_server *s = lws_container_of(sul, sync_server, rooms_timer);
    s->rooms_timer_armed = false;
    int64_t now = sync_now_ms();
    /* bounded: a tick that leaves its deadline due puts the room back; it waits for next turn */
    for (size_t n = s->room_timer_count; n && s->room_timer_count; n--) {
        server_room *r = s->room_timers[0];
        if (r->timer_at > now)
            break;
        timer_remove(s, r);
        /* in the heap only while it has an engine (room_free_engine takes it out) */
        if (r->eng.engine) {
            sync_engine_tick(r->eng.engine, -1);
            int64_t deadline = sync_engine_next_deadline_ms(r->eng.engine);
            if (deadline >= 0 && !timer_set(s, r, deadline > now ? deadline : now + 1))
                server_log(s, SYNC_LOG_ERROR, "out of memory arming the timer of room \"%s\"",
                           r->name);
        }
    }
    rooms_timer_sync(s);
}

static server_room *room_of(server_conn *c);

static void unlink_waiting(server_conn *c)
{
    server_room *r = room_of(c);
    server_auth_wait *w = c->auth;
    if (w->room_prev)
        w->room_prev->auth->room_next = w->room_next;
    else if (r->wait_head == c)
        r->wait_head = w->room_next;
    if (w->room_next)
        w->room_next->auth->room_prev = w->room_prev;
    w->room_next = w->room_prev = NULL;
}

/* Service thread: the waiting clients of a room that became ready (or failed, or was deleted). */
static void wake_waiting(server_room *r, int close_code)
{
    server_conn *c = r->wait_head;
    r->wait_head = NULL;
    while (c) {
        server_conn *next = c->auth->room_next;
        c->auth->room_next = c->auth->room_prev = NULL;
        c->room_wait = (uint16_t)close_code;
        if (c->wsi)
            lws_callback_on_writable(c->wsi);
        c = next;
    }
}

static void arm_idle_timer(sync_server *s);

/* Runs what rooms asked for: on the service thread each loop turn, and in a sync_rooms_* call
 * while the server does not serve (then nothing about sockets is left to do). */
static void room_process_due_only(sync_server *s, bool unloaded_only);

static void room_process_due(sync_server *s)
{
    room_process_due_only(s, false);
}

static sync_engine *delete_begin_locked(sync_server *s, server_room *r);
static void delete_end(sync_server *s, server_room *r, sync_engine *engine);

/* The room stores whose saves one pass keeps for a single transaction (room_batch.h): the
 * built-in SQLite store's; a turn rarely sees more than one store (one per room mount). */
enum { TURN_BATCH_STORES = 4 };
typedef struct turn_batch {
    sync_room_store *store[TURN_BATCH_STORES];
    size_t count;
    bool open;           /* stores may join: the first pass of a turn */
    server_engine *owed; /* the turn's owed room, whose save the batch holds */
} turn_batch;

/* Opens the batch of `store` for this turn unless it is open already. */
static void turn_batch_join(turn_batch *b, sync_room_store *store)
{
    if (!b || !b->open || !store)
        return;
    for (size_t i = 0; i < b->count; i++)
        if (b->store[i] == store)
            return;
    if (b->count < TURN_BATCH_STORES && sync__room_store_batch_begin(store))
        b->store[b->count++] = store;
}

/* Closes every batch of the turn: each store writes what it kept in one transaction and completes
 * the saves, which makes their rooms due again (sendable now). */
static void turn_batch_end(turn_batch *b)
{
    b->open = false;
    for (size_t i = 0; i < b->count; i++)
        sync__room_store_batch_end(b->store[i]);
}

/* rooms_lock held, the turn given way and its room flushed: the rooms at the head of `list` (whose
 * last room is `tail`) that only wait for a flush go back on the due list as they are, in one
 * splice, in their order. Returns the rest of `list`. When no room due has more to do than a flush
 * the whole list goes at once, without a look at each room (a room in it that is no longer ready,
 * or has nothing to send, is dropped by the turn that reaches it); else the rooms up to the first
 * with more to do (or the room the turn owes its flush). */
static server_room *put_back_flushes_locked(sync_server *s, server_room *list, server_room *tail,
                                            const turn_batch *b)
{
    server_room *last = NULL;
    if (!s->rooms_due_more && !(b && b->owed)) {
        last = tail;
    } else {
        for (server_room *r = list; r; r = r->due_next) {
            if (r->due_flags != DUE_FLUSH || (b && &r->eng == b->owed))
                break;
            last = r;
        }
    }
    if (!last)
        return list;
    server_room *rest = last->due_next;
    last->due_next = NULL;
    if (s->rooms_due_tail)
        s->rooms_due_tail->due_next = list;
    else
        s->rooms_due = list;
    s->rooms_due_tail = last;
    return rest;
}

/* One pass over the rooms due: `batch` (service thread only) holds the saves this pass starts
 * until turn_batch_end(). */
static void due_pass(sync_server *s, bool unloaded_only, bool service, turn_batch *batch)
{
    pthread_mutex_lock(&s->rooms_lock);
    server_room *list = s->rooms_due;
    server_room *tail = s->rooms_due_tail;
    s->rooms_due = s->rooms_due_tail = NULL;
    pthread_mutex_unlock(&s->rooms_lock);
    while (list) {
        pthread_mutex_lock(&s->rooms_lock);
        if (service && s->turn_yielded && !s->turn_room_owed) {
            list = put_back_flushes_locked(s, list, tail, batch);
            if (!list) {
                pthread_mutex_unlock(&s->rooms_lock);
                break;
            }
        }
        server_room *r = list;
        list = r->due_next;
        r->due_next = NULL;
        unsigned flags = r->due_flags;
        if (flags & ~(unsigned)DUE_FLUSH)
            s->rooms_due_more--;
        r->due_flags = 0;
        if (unloaded_only) {
            unsigned later = flags & ~(unsigned)DUE_UNLOADED;
            flags &= DUE_UNLOADED;
            if (later) {
                /* back on the list for the end of the turn (a wake makes sure it comes) */
                due_locked(s, r, later);
                lws_cancel_service(s->context);
            }
        }
        int state = r->state;
        bool deleting = r->deleting;
        /* set by the thread that creates the room; freed only here */
        bool has_engine = r->eng.engine != NULL;
        bool freeable = (flags & DUE_UNLOADED) && has_engine && !r->joined && !r->holds &&
                        !r->pins &&
                        (state == ROOM_FAILED || (state == ROOM_UNLOADING && r->unload_done));
        /* not freeable yet: the last one to let go puts it back (room_let_go_locked) */
        pthread_mutex_unlock(&s->rooms_lock);

        if (service && (flags & DUE_WAKE))
            wake_waiting(r, state == ROOM_FAILED ? SYNC_CLOSE_ROOM_UNAVAILABLE
                            : deleting           ? SYNC_CLOSE_ROOM_DELETED
                                                 : 0);
        /* a room just ready: its first deadlines were set before the server listened to it */
        bool arm = (flags & DUE_WAKE) && state == ROOM_READY && !deleting;
        if (service && has_engine &&
            (arm || ((flags & DUE_TIMER) && atomic_exchange(&r->eng.deadline_moved, false))))
            room_timer_arm(r);
        if (service && (flags & DUE_FLUSH) && has_engine && state == ROOM_READY) {
            /* A turn that gave way to input leaves the room due for the next one, in its place;
             * one room is flushed every turn however busy, so that the fixed mounts (flushed
             * first) never hold the rooms back. */
            bool open = server_broadcast_turn_open(s);
            bool owed = batch && batch->owed == &r->eng;
            if (open || s->turn_room_owed || owed) {
                if (!open && s->turn_room_owed && batch && batch->open)
                    batch->owed = &r->eng; /* its frame goes in the second pass, saved */
                else if (owed)
                    batch->owed = NULL;
                s->turn_room_owed = false;
                /* with the batch open a save is kept, and the flush waits for it: the engine
                 * calls the listener again when the batch's end completes it */
                turn_batch_join(batch, r->rooms->store);
                server_broadcast_flush_engine(&r->eng);
            }
            if (r->eng.flush_pending || atomic_load(&r->eng.state_moved))
                due(s, r, DUE_FLUSH);
        }
        if ((flags & DUE_DELETE) && !unloaded_only) {
            /* a room still being created is deleted once ready (room_ready asks again) */
            pthread_mutex_lock(&s->rooms_lock);
            sync_engine *deleted = r->cluster_deleted ? delete_begin_locked(s, r) : NULL;
            pthread_mutex_unlock(&s->rooms_lock);
            if (deleted)
                delete_end(s, r, deleted);
        }
        if ((flags & DUE_UNLOADED) && state == ROOM_FAILED && !has_engine) {
            /* failed before it had an engine */
            pthread_mutex_lock(&s->rooms_lock);
            r->state = ROOM_GONE;
            pthread_mutex_unlock(&s->rooms_lock);
            if (service && r->wait_head)
                wake_waiting(r, SYNC_CLOSE_ROOM_UNAVAILABLE);
        }
        if (freeable) {
            if (service && r->wait_head && state == ROOM_FAILED)
                wake_waiting(r, SYNC_CLOSE_ROOM_UNAVAILABLE);
            room_free_engine(r);
            s->rooms_freed_since_trim++;
            pthread_mutex_lock(&s->rooms_lock);
            bool again = false;
            if (state == ROOM_UNLOADING) {
                r->rooms->unloaded++;
                if (r->waiters) {
                    /* a join (or acquire) came while it unloaded: load it afresh */
                    atomic_store(&r->eng.state_moved, false);
                    atomic_store(&r->eng.state_force, false);
                    atomic_store(&r->eng.deadline_moved, false);
                    r->eng.flush_pending = false;
                    r->eng.cursor = NULL;
                    r->state = ROOM_CREATING;
                    r->deleting = false;
                    r->cluster_deleted = false;
                    s->rooms_loaded++;
                    again = true;
                } else {
                    table_remove(r->rooms, r);
                    r->state = ROOM_GONE;
                }
            } else {
                r->state = ROOM_GONE;
            }
            pthread_cond_broadcast(&s->rooms_cond);
            pthread_mutex_unlock(&s->rooms_lock);
            if (again)
                room_create(r);
        }
        pthread_mutex_lock(&s->rooms_lock);
        room_free_if_unused_locked(r); /* nothing below touches r */
        pthread_mutex_unlock(&s->rooms_lock);
    }
}

/* unloaded_only: a blocking sync_rooms_acquire() on the service thread (a room's handler that
 * needs another room) frees the engines of unloaded rooms so that a room it waits for can load
 * afresh, and leaves the rest (socket writes) for the end of the turn.
 *
 * On the service thread a turn's rooms are saved together: the first pass starts the save of
 * every room it flushes (a store that batches keeps them), the batch's end writes them in one
 * transaction and completes them (the rooms become due again, now sendable), and a second pass
 * sends their frames, in the same turn: a room waits for no other turn than it did with a save
 * of its own. */
static void room_process_due_only(sync_server *s, bool unloaded_only)
{
    bool service = server_on_service_thread(s) && !unloaded_only;
    if (!service) {
        due_pass(s, unloaded_only, false, NULL);
        return;
    }
    turn_batch batch = {.count = 0, .open = true, .owed = NULL};
    due_pass(s, false, true, &batch);
    if (batch.count) {
        turn_batch_end(&batch);
        due_pass(s, false, true, &batch);
    }
    arm_idle_timer(s);
    pthread_mutex_lock(&s->rooms_lock);
    bool more = s->rooms_due != NULL;
    pthread_mutex_unlock(&s->rooms_lock);
    if (more)
        server_turn_wake(s); /* the next turn must not sleep on it */
}

/* rooms_lock held: one count on the room less; a room whose engine waits for that to be freed,
 * or that became idle, is handled. Returns whether the service thread must be woken. */
static bool room_let_go_locked(sync_server *s, server_room *r)
{
    if (r->eng.engine && !r->joined && !r->holds && !r->pins &&
        ((r->state == ROOM_UNLOADING && r->unload_done) || r->state == ROOM_FAILED))
        return due_locked(s, r, DUE_UNLOADED);
    if (idle_check_locked(s, r))
        return due_locked(s, r, DUE_IDLE);
    room_free_if_unused_locked(r);
    return false;
}

/* ---- idle unloading ---------------------------------------------------------------------- */

/* Under AddressSanitizer or ThreadSanitizer the sanitizer's allocator serves every malloc and
 * glibc's heap is never set up: malloc_trim() would set it up lazily, racing another server's
 * service thread doing the same (a crash inside glibc under TSan), to give back nothing. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define LIBSYNC_SANITIZED_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define LIBSYNC_SANITIZED_MALLOC 1
#endif
#endif
#ifndef LIBSYNC_SANITIZED_MALLOC
#define LIBSYNC_SANITIZED_MALLOC 0
#endif

/* glibc keeps what a wave of unloaded rooms freed (thousands of small blocks spread over the
 * heap) for reuse and never gives it back to the system by itself: RSS would stay at its peak.
 * Once a wave has unloaded (no more due) and enough engines went, the free pages are returned. */
static void rooms_trim(sync_server *s)
{
    if (!s->rooms_freed_since_trim)
        return;
    pthread_mutex_lock(&s->rooms_lock);
    bool all_gone = s->room_timer_count == 0;
    /* the wave is over (no idle room left to unload): its tail, however short, is given back
     * too, or up to ROOMS_TRIM_AFTER rooms' blocks stay resident between the survivors' */
    bool wave_over = !s->idle_head;
    pthread_mutex_unlock(&s->rooms_lock);
    if (s->rooms_freed_since_trim < ROOMS_TRIM_AFTER && !wave_over)
        return;
    s->rooms_freed_since_trim = 0;
    if (all_gone)
        timer_heap_shrink(s);
    server_alloc_trim_spares();
#if defined(__GLIBC__) && !LIBSYNC_SANITIZED_MALLOC
    malloc_trim(0);
#endif
}

static void idle_timer_fired(lws_sorted_usec_list_t *sul)
{
    sync_server *s = lws_container_of(sul, sync_server, rooms_idle_timer);
    s->rooms_idle_armed = false;
    int64_t now = sync_now_ms();
    bool more = false;
    /* a bounded batch per turn: each unload may save (a store transaction), and the clients of
     * the other rooms must not wait for thousands of them; the rest go next turn */
    for (int n = 0;; n++) {
        pthread_mutex_lock(&s->rooms_lock);
        server_room *r = s->idle_head;
        if (!r || s->room_idle_ms < 0 || now - r->idle_since_ms < s->room_idle_ms) {
            pthread_mutex_unlock(&s->rooms_lock);
            break;
        }
        if (n == ROOMS_UNLOAD_BATCH) {
            more = true;
            pthread_mutex_unlock(&s->rooms_lock);
            lws_cancel_service(s->context); /* the next turn re-arms the timer, already due */
            break;
        }
        room_unload_begin_locked(s, r);
        pthread_mutex_unlock(&s->rooms_lock);
        room_unload_run(r);
    }
    room_process_due(s);
    if (!more)
        rooms_trim(s);
}

static void arm_idle_timer(sync_server *s)
{
    if (!s->context || s->room_idle_ms < 0 || s->rooms_quiet)
        return;
    pthread_mutex_lock(&s->rooms_lock);
    int64_t at = s->idle_head ? s->idle_head->idle_since_ms + s->room_idle_ms : -1;
    pthread_mutex_unlock(&s->rooms_lock);
    if (at < 0) {
        if (s->rooms_idle_armed)
            lws_sul_cancel(&s->rooms_idle_timer);
        s->rooms_idle_armed = false;
        return;
    }
    if (s->rooms_idle_armed && s->rooms_idle_at == at)
        return; /* armed for that already: every loop turn comes here */
    s->rooms_idle_at = at;
    int64_t wait_ms = at - sync_now_ms();
    lws_sul_schedule(s->context, 0, &s->rooms_idle_timer, idle_timer_fired,
                     (lws_usec_t)(wait_ms > 0 ? wait_ms : 0) * LWS_US_PER_MS + 1000);
    s->rooms_idle_armed = true;
}

/* ---- needing a room ---------------------------------------------------------------------- */

enum need { NEED_READY, NEED_WAIT, NEED_CREATE, NEED_FULL, NEED_NOMEM };

/* rooms_lock held: finds or makes room `name` and counts the caller as a waiter. With
 * NEED_CREATE the caller runs room_create() once the lock is let go. *evict: an idle room the
 * caller unloads (room_unload_run) to make place. */
static enum need need_locked(sync_rooms *rooms, const char *name, server_room **out,
                             server_room **evict)
{
    sync_server *s = rooms->server;
    *evict = NULL;
    server_room *r = table_find(rooms, name);
    if (r) {
        *out = r;
        r->waiters++;
        idle_unlink(s, r);
        if (r->state == ROOM_READY && !r->deleting)
            return NEED_READY;
        if (r->state == ROOM_UNLOADING)
            r->reload = true;
        return NEED_WAIT;
    }
    if (s->rooms_loaded >= (size_t)s->max_rooms) {
        if (!s->idle_head) {
            rooms->refused++;
            return NEED_FULL;
        }
        *evict = s->idle_head;
        room_unload_begin_locked(s, *evict);
    }
    r = calloc(1, sizeof *r);
    char *copy = r ? strdup(name) : NULL;
    if (r)
        r->name = copy;
    if (!copy || !table_add(rooms, r)) {
        free(copy);
        free(r);
        return NEED_NOMEM;
    }
    r->rooms = rooms;
    r->eng.server = s;
    r->eng.path = rooms->prefix;
    r->state = ROOM_CREATING;
    r->waiters = 1;
    s->rooms_loaded++;
    *out = r;
    return NEED_CREATE;
}

static enum need need(sync_rooms *rooms, const char *name, server_room **out)
{
    sync_server *s = rooms->server;
    server_room *evict = NULL;
    pthread_mutex_lock(&s->rooms_lock);
    enum need n = need_locked(rooms, name, out, &evict);
    pthread_mutex_unlock(&s->rooms_lock);
    if (evict)
        room_unload_run(evict);
    if (n == NEED_CREATE)
        room_create(*out);
    return n;
}

/* ---- the gate ---------------------------------------------------------------------------- */

server_engine *server_room_engine(server_room *room)
{
    return &room->eng;
}

int server_rooms_match(sync_server *s, const char *path, sync_rooms **out_mount, char **out_name)
{
    *out_mount = NULL;
    *out_name = NULL;
    sync_rooms *rooms = NULL;
    for (size_t i = 0; i < s->room_mount_count; i++)
        if (strncmp(path, s->room_mounts[i]->prefix, s->room_mounts[i]->prefix_len) == 0 &&
            (!rooms || s->room_mounts[i]->prefix_len > rooms->prefix_len))
            rooms = s->room_mounts[i];
    if (!rooms)
        return 0;
    /* lws has percent-decoded the path (a bad escape was refused with 403, "%00" ends it) and
     * resolved its dot segments ("/rooms/.." is "/"): what follows the prefix is the name */
    char *name = strdup(path + rooms->prefix_len);
    if (!name || sync_room_name_check(name) != SYNC_OK) {
        pthread_mutex_lock(&s->rooms_lock);
        rooms->refused++;
        pthread_mutex_unlock(&s->rooms_lock);
        free(name);
        return 400;
    }
    *out_mount = rooms;
    *out_name = name;
    return -1;
}

server_room *server_rooms_need(sync_rooms *rooms, const char *name)
{
    sync_server *s = rooms->server;
    server_room *r = NULL;
    enum need n = need(rooms, name, &r);
    if (n == NEED_FULL || n == NEED_NOMEM)
        return NULL;
    pthread_mutex_lock(&s->rooms_lock);
    bool failed = r->state == ROOM_FAILED;
    if (failed) {
        r->waiters--;
        room_free_if_unused_locked(r);
    }
    pthread_mutex_unlock(&s->rooms_lock);
    return failed ? NULL : r;
}

/* eng is the room's first member */
static server_room *room_of(server_conn *c)
{
    return (server_room *)(void *)c->eng;
}

int server_rooms_conn_ready(server_conn *c)
{
    server_room *r = room_of(c);
    pthread_mutex_lock(&c->server->rooms_lock);
    bool ready = r->state == ROOM_READY && !r->deleting;
    pthread_mutex_unlock(&c->server->rooms_lock);
    c->room_wait = 0;
    return ready;
}

void server_rooms_conn_attach(server_conn *c)
{
    server_room *r = room_of(c);
    sync_server *s = c->server;
    pthread_mutex_lock(&s->rooms_lock);
    int state = r->state;
    bool deleting = r->deleting;
    pthread_mutex_unlock(&s->rooms_lock);
    /* the state changes on other threads, but the waiting list is walked on this one (a room
     * that became ready or failed after this look wakes its list, with c in it, afterwards) */
    if (state == ROOM_READY && !deleting) {
        c->room_wait = 0;
        return;
    }
    if (state == ROOM_FAILED || state == ROOM_GONE) {
        c->room_wait = SYNC_CLOSE_ROOM_UNAVAILABLE;
        return;
    }
    c->room_wait = 1;
    c->auth->room_prev = NULL;
    c->auth->room_next = r->wait_head;
    if (r->wait_head)
        r->wait_head->auth->room_prev = c;
    r->wait_head = c;
}

void server_rooms_conn_joined(server_conn *c)
{
    sync_server *s = c->server;
    server_room *r = room_of(c);
    pthread_mutex_lock(&s->rooms_lock);
    r->waiters--;
    r->joined++;
    c->room_joined = true;
    pthread_mutex_unlock(&s->rooms_lock);
}

void server_rooms_conn_live(server_conn *c)
{
    /* server_broadcast_join() asked for one more flush: a room's flushes run from rooms_due */
    due(c->server, room_of(c), DUE_FLUSH);
}

void server_rooms_conn_gone(server_conn *c)
{
    if (!c->is_room)
        return;
    server_room *r = room_of(c);
    sync_server *s = c->server;
    if (c->room_wait == 1)
        unlink_waiting(c);
    c->room_wait = 0;
    c->is_room = false;
    pthread_mutex_lock(&s->rooms_lock);
    if (c->room_joined)
        r->joined--;
    else
        r->waiters--;
    bool wake = room_let_go_locked(s, r);
    pthread_mutex_unlock(&s->rooms_lock);
    if (wake && !server_on_service_thread(s))
        server_wake(s);
}

/* ---- the service thread ------------------------------------------------------------------ */

void server_rooms_process(sync_server *s)
{
    if (s->room_mount_count)
        room_process_due(s);
}

/* Every loaded room, pinned (so it cannot be freed meanwhile); caller unpins. */
static server_room **pin_all(sync_server *s, size_t *count)
{
    pthread_mutex_lock(&s->rooms_lock);
    size_t n = 0;
    for (size_t m = 0; m < s->room_mount_count; m++)
        n += s->room_mounts[m]->count;
    server_room **list = n ? malloc(n * sizeof *list) : NULL;
    *count = 0;
    for (size_t m = 0; list && m < s->room_mount_count; m++) {
        sync_rooms *rooms = s->room_mounts[m];
        for (size_t b = 0; b < rooms->bucket_count; b++)
            for (server_room *r = rooms->buckets[b]; r; r = r->hash_next)
                if (r->eng.engine && *count < n) {
                    r->pins++;
                    list[(*count)++] = r;
                }
    }
    pthread_mutex_unlock(&s->rooms_lock);
    return list;
}

static void unpin_all(sync_server *s, server_room **list, size_t count)
{
    bool wake = false;
    pthread_mutex_lock(&s->rooms_lock);
    for (size_t i = 0; i < count; i++) {
        list[i]->pins--;
        wake |= room_let_go_locked(s, list[i]);
    }
    pthread_mutex_unlock(&s->rooms_lock);
    free(list);
    if (wake && !server_on_service_thread(s))
        server_wake(s);
}

void server_rooms_serve_start(sync_server *s)
{
    s->rooms_quiet = false;
    size_t n = 0;
    server_room **list = pin_all(s, &n);
    for (size_t i = 0; i < n; i++)
        if (list[i]->state == ROOM_READY)
            room_timer_arm(list[i]);
    unpin_all(s, list, n);
    room_process_due(s);
}

void server_rooms_serve_end(sync_server *s)
{
    s->rooms_quiet = true;
    size_t n = 0;
    server_room **list = pin_all(s, &n);
    for (size_t i = 0; i < n; i++)
        timer_remove(s, list[i]);
    unpin_all(s, list, n);
    rooms_timer_sync(s);
    timer_heap_shrink(s);
    if (s->rooms_idle_armed)
        lws_sul_cancel(&s->rooms_idle_timer);
    s->rooms_idle_armed = false;
}

void server_rooms_sync_all(sync_server *s)
{
    size_t n = 0;
    server_room **list = pin_all(s, &n);
    for (size_t i = 0; i < n; i++) {
        if (!room_needs_save(list[i]))
            continue;
        int rc = sync_engine_sync(list[i]->eng.engine);
        if (rc < 0 && rc != SYNC_PENDING)
            server_log(s, SYNC_LOG_ERROR, "sync of room \"%s\" at stop failed: %s", list[i]->name,
                       sync_error_last());
    }
    unpin_all(s, list, n);
}

/* ---- metrics ----------------------------------------------------------------------------- */

size_t server_rooms_mount_count(sync_server *s)
{
    return s->room_mount_count;
}

const char *server_rooms_prefix(sync_server *s, size_t i)
{
    return s->room_mounts[i]->prefix;
}

void server_rooms_stats(sync_server *s, size_t i, sync_engine_stats *sum, uint64_t *loaded,
                        uint64_t *created, uint64_t *unloaded, uint64_t *refused)
{
    sync_rooms *rooms = s->room_mounts[i];
    size_t n = 0;
    server_room **list = pin_all(s, &n);
    memset(sum, 0, sizeof *sum);
    sum->version = SYNC_ENGINE_STATS_VERSION;
    for (size_t k = 0; k < n; k++) {
        if (list[k]->rooms != rooms)
            continue;
        sync_engine_stats st = {.version = SYNC_ENGINE_STATS_VERSION};
        if (sync_engine_get_stats(list[k]->eng.engine, &st) != SYNC_OK)
            continue;
        add_stats(sum, &st);
        sum->connections += st.connections;
        sum->state_bytes += st.state_bytes;
        if (st.state_version > sum->state_version)
            sum->state_version = st.state_version;
        if (st.last_save_us > sum->last_save_us)
            sum->last_save_us = st.last_save_us;
    }
    unpin_all(s, list, n);
    pthread_mutex_lock(&s->rooms_lock);
    add_stats(sum, &rooms->retired);
    *loaded = rooms->count;
    *created = rooms->created;
    *unloaded = rooms->unloaded;
    *refused = rooms->refused;
    pthread_mutex_unlock(&s->rooms_lock);
}

/* ---- setup ------------------------------------------------------------------------------- */

const char *sync_room_setup_name(const sync_room_setup *setup)
{
    return setup ? setup->room->name : NULL;
}

sync_engine *sync_room_setup_engine(const sync_room_setup *setup)
{
    return setup ? setup->engine : NULL;
}

int sync_room_setup_set_initial_state_json(sync_room_setup *setup, const char *json)
{
    if (!setup || !json)
        return sync__fail(SYNC_EINVAL, "setup and json are required");
    char *copy = strdup(json);
    if (!copy)
        return sync__fail(SYNC_ENOMEM, "out of memory for the initial state");
    free(setup->initial_json);
    setup->initial_json = copy;
    sync__error_clear();
    return SYNC_OK;
}

sync_room_setup *sync_room_setup_defer(sync_room_setup *setup)
{
    if (!setup)
        return NULL;
    sync_server *s = setup->room->eng.server;
    pthread_mutex_lock(&s->rooms_lock);
    bool ok = setup->in_callback;
    if (ok)
        setup->deferred = true;
    pthread_mutex_unlock(&s->rooms_lock);
    if (!ok) {
        sync__fail(SYNC_ESTATE, "sync_room_setup_defer: only inside the setup callback");
        return NULL;
    }
    return setup;
}

int sync_room_setup_complete(sync_room_setup *setup, int status)
{
    if (!setup)
        return sync__fail(SYNC_EINVAL, "setup is NULL");
    server_room *r = setup->room;
    sync_server *s = r->eng.server;
    pthread_mutex_lock(&s->rooms_lock);
    if (!setup->deferred || setup->completed) {
        pthread_mutex_unlock(&s->rooms_lock);
        return sync__fail(SYNC_ESTATE, "sync_room_setup_complete: not deferred, or completed");
    }
    setup->completed = true;
    setup->status = status > 0 ? SYNC_EINVAL : status;
    bool in_callback = setup->in_callback;
    pthread_mutex_unlock(&s->rooms_lock);
    if (!in_callback)
        room_after_setup(r, setup, status > 0 ? SYNC_EINVAL : status);
    sync__error_clear();
    return SYNC_OK;
}

/* ---- mounting ---------------------------------------------------------------------------- */

static size_t rooms_options_size(unsigned int version)
{
    (void)version;
    return sizeof(sync_rooms_options);
}

int sync_rooms_options_init(sync_rooms_options *opts, unsigned int version)
{
    static const sync_rooms_options defaults = SYNC_ROOMS_OPTIONS_INIT;
    return sync__options_init(opts, &defaults, rooms_options_size(version), version,
                              SYNC_ROOMS_OPTIONS_VERSION, "rooms");
}

void server_rooms_init(sync_server *s)
{
    pthread_mutex_init(&s->rooms_lock, NULL);
    pthread_cond_init(&s->rooms_cond, NULL);
}

static int mount_fail(const sync_rooms_options *opts, int status)
{
    if (opts && opts->setup_free_userdata)
        opts->setup_free_userdata(opts->setup_userdata);
    return status;
}

int sync_server_mount_rooms(sync_server *server, const char *prefix, const sync_rooms_options *opts,
                            sync_rooms **out_rooms)
{
    if (out_rooms)
        *out_rooms = NULL;
    if (!server || !prefix || !opts)
        return mount_fail(opts, sync__fail(SYNC_EINVAL, "server, prefix and options are required"));
    int rc = sync__check_options_version(opts->version, SYNC_ROOMS_OPTIONS_VERSION, "rooms");
    if (rc != SYNC_OK)
        return mount_fail(opts, rc);
    size_t len = strlen(prefix);
    if (len < 1 || prefix[0] != '/' || prefix[len - 1] != '/' || strchr(prefix, '?') ||
        strchr(prefix, '#') || strchr(prefix, '%'))
        return mount_fail(
            opts,
            sync__fail(SYNC_EINVAL, "room prefix \"%s\" must start and end with '/'", prefix));
    if (server->context || atomic_load(&server->serving))
        return mount_fail(opts, sync__fail(SYNC_ESTATE, "mount before the server listens"));
    for (size_t i = 0; i < server->room_mount_count; i++)
        if (strcmp(server->room_mounts[i]->prefix, prefix) == 0)
            return mount_fail(opts,
                              sync__fail(SYNC_EINVAL, "prefix \"%s\" is already mounted", prefix));
    sync_engine_options eo = SYNC_ENGINE_OPTIONS_INIT;
    if (opts->engine_options) {
        const sync_engine_options *t = opts->engine_options;
        rc = sync__check_options_version(t->version, SYNC_ENGINE_OPTIONS_VERSION, "engine");
        if (rc != SYNC_OK)
            return mount_fail(opts, rc);
        if (t->adapter || t->hooks || (t->version >= 3 && t->log_free_userdata))
            return mount_fail(opts, sync__fail(SYNC_EINVAL,
                                               "a room template has no adapter, hooks or "
                                               "log_free_userdata (the store and the setup give "
                                               "them)"));
        if (t->timer_mode != SYNC_TIMERS_MANUAL)
            return mount_fail(opts, sync__fail(SYNC_EINVAL, "a room template's timer_mode must be "
                                                            "SYNC_TIMERS_MANUAL (the server ticks "
                                                            "its rooms)"));
        /* the fields of the caller's version, the defaults for the rest */
        memcpy(&eo, t,
               t->version >= 3   ? sizeof eo
               : t->version == 2 ? offsetof(sync_engine_options, log_free_userdata)
                                 : offsetof(sync_engine_options, step_timeout_ms));
        eo.version = SYNC_ENGINE_OPTIONS_VERSION;
    }
    sync_rooms *rooms = calloc(1, sizeof *rooms);
    sync_rooms **grown =
        rooms ? realloc(server->room_mounts, (server->room_mount_count + 1) * sizeof *grown) : NULL;
    if (grown)
        server->room_mounts = grown;
    char *copy = grown ? strdup(prefix) : NULL;
    char *initial = copy && eo.initial_state_json ? strdup(eo.initial_state_json) : NULL;
    if (!copy || (eo.initial_state_json && !initial)) {
        free(copy);
        free(rooms);
        return mount_fail(opts, sync__fail(SYNC_ENOMEM, "out of memory for a room mount"));
    }
    if (initial) {
        cJSON *check = cJSON_Parse(initial);
        if (!check) {
            free(initial);
            free(copy);
            free(rooms);
            return mount_fail(opts, sync__fail(SYNC_EINVAL, "the template's initial state is not "
                                                            "JSON"));
        }
        cJSON_Delete(check);
    }
    eo.initial_state_json = NULL; /* the initial state is given at load (engine_room.h) */
    eo.auto_broadcast = 1;
    rooms->server = server;
    rooms->prefix = copy;
    rooms->prefix_len = len;
    rooms->setup = opts->setup;
    rooms->setup_userdata = opts->setup_userdata;
    rooms->setup_free_userdata = opts->setup_free_userdata;
    rooms->engine_options = eo;
    rooms->initial_state_json = initial;
    rooms->store = opts->store ? sync_room_store_ref(opts->store) : NULL;
    server->room_mounts[server->room_mount_count++] = rooms;
    if (out_rooms)
        *out_rooms = rooms;
    sync__error_clear();
    return SYNC_OK;
}

/* Rooms whose store load is still in flight (its completion would reach a freed room): waited
 * for, up to 5 s, before the rooms are freed. A deferred setup must be completed (or refused) by
 * its owner before the server is freed. */
static void wait_for_loads(sync_server *s)
{
    int64_t give_up = sync_now_ms() + 5000;
    pthread_mutex_lock(&s->rooms_lock);
    for (;;) {
        bool loading = false;
        for (size_t m = 0; m < s->room_mount_count && !loading; m++) {
            sync_rooms *rooms = s->room_mounts[m];
            for (size_t b = 0; b < rooms->bucket_count && !loading; b++)
                for (server_room *r = rooms->buckets[b]; r && !loading; r = r->hash_next)
                    loading = r->state == ROOM_CREATING && !r->setup && r->eng.engine;
        }
        if (!loading || sync_now_ms() >= give_up)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->rooms_cond, &s->rooms_lock, &ts);
    }
    pthread_mutex_unlock(&s->rooms_lock);
}

void server_rooms_release(sync_server *s)
{
    /* the node's threads run until server_cluster_release: no more deletes reach the rooms */
    if (s->cluster)
        sync__cluster_on_deleted(s->cluster, NULL, NULL);
    wait_for_loads(s);
    /* failed rooms waiting to be freed are out of the tables; first, while every room on the
     * due list is still there to read (the tables' rooms are freed below) */
    for (server_room *d = s->rooms_due, *next; d; d = next) {
        next = d->due_next;
        if (d->state == ROOM_FAILED || d->state == ROOM_GONE) {
            if (d->eng.engine) {
                sync__cluster_detach(d->cluster); /* no node thread uses the engine after */
                d->cluster = NULL;
                sync__engine_remove_listener(d->eng.engine, d);
                sync_engine_free(d->eng.engine);
            }
            free(d->name);
            free(d);
        }
    }
    s->rooms_due = s->rooms_due_tail = NULL;
    /* every loaded room is saved, then freed; nothing serves any more */
    for (size_t m = 0; m < s->room_mount_count; m++) {
        sync_rooms *rooms = s->room_mounts[m];
        for (size_t b = 0; b < rooms->bucket_count; b++) {
            server_room *r = rooms->buckets[b];
            while (r) {
                server_room *next = r->hash_next;
                if (r->eng.engine) {
                    if (r->state == ROOM_READY && !r->deleting && room_needs_save(r))
                        sync_engine_sync(r->eng.engine);
                    sync__cluster_detach(r->cluster); /* gives its lease up */
                    r->cluster = NULL;
                    sync__engine_remove_listener(r->eng.engine, r);
                    sync_engine_free(r->eng.engine);
                }
                while (r->async_head) {
                    async_waiter *w = r->async_head;
                    r->async_head = w->next;
                    free(w);
                }
                free(r->setup);
                free(r->name);
                free(r);
                r = next;
            }
        }
        free(rooms->buckets);
        rooms->buckets = NULL;
        rooms->bucket_count = 0;
        if (rooms->setup_free_userdata)
            rooms->setup_free_userdata(rooms->setup_userdata);
        sync_room_store_free(rooms->store);
        free(rooms->initial_state_json);
        free(rooms->prefix);
        free(rooms);
    }
    /* the saves above may have queued rooms freed since */
    s->rooms_due = s->rooms_due_tail = NULL;
    free(s->room_timers);
    s->room_timers = NULL;
    s->room_timer_count = s->room_timer_cap = 0;
    free(s->room_mounts);
    pthread_mutex_destroy(&s->rooms_lock);
    pthread_cond_destroy(&s->rooms_cond);
}

/* ---- rooms without clients --------------------------------------------------------------- */

/* A caller off the service thread drains the due list itself while nothing serves. */
static void drain_if_idle_server(sync_server *s)
{
    if (!atomic_load(&s->serving))
        room_process_due(s);
}

typedef struct acquire_wait {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    int status;
    sync_engine *engine;
} acquire_wait;

static void acquire_done(int status, sync_engine *engine, void *userdata)
{
    acquire_wait *w = userdata;
    pthread_mutex_lock(&w->lock);
    w->done = true;
    w->status = status;
    w->engine = engine;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

int sync_rooms_acquire_async(sync_rooms *rooms, const char *name, sync_room_ready_cb done,
                             void *userdata)
{
    if (!rooms || !name || !done)
        return sync__fail(SYNC_EINVAL, "rooms, name and done are required");
    int rc = sync_room_name_check(name);
    if (rc != SYNC_OK)
        return rc;
    sync_server *s = rooms->server;
    drain_if_idle_server(s);
    async_waiter *w = calloc(1, sizeof *w);
    if (!w)
        return sync__fail(SYNC_ENOMEM, "out of memory acquiring a room");
    w->done = done;
    w->userdata = userdata;
    server_room *r = NULL, *evict = NULL;
    pthread_mutex_lock(&s->rooms_lock);
    enum need n = need_locked(rooms, name, &r, &evict);
    sync_engine *engine = NULL;
    if (n == NEED_READY) {
        r->waiters--;
        r->holds++;
        engine = r->eng.engine;
    } else if (n == NEED_WAIT || n == NEED_CREATE) {
        w->next = r->async_head;
        r->async_head = w;
        w = NULL;
    }
    pthread_mutex_unlock(&s->rooms_lock);
    if (evict)
        room_unload_run(evict);
    if (n == NEED_CREATE)
        room_create(r);
    drain_if_idle_server(s);
    if (n == NEED_FULL || n == NEED_NOMEM) {
        free(w);
        return n == NEED_FULL ? sync__fail(SYNC_ELIMIT, "max_rooms rooms are loaded and none is "
                                                        "idle")
                              : sync__fail(SYNC_ENOMEM, "out of memory for a room");
    }
    if (w) {
        free(w);
        done(SYNC_OK, engine, userdata);
    }
    sync__error_clear();
    return SYNC_OK;
}

int sync_rooms_acquire(sync_rooms *rooms, const char *name, sync_engine **out)
{
    if (out)
        *out = NULL;
    if (!out)
        return sync__fail(SYNC_EINVAL, "out is NULL");
    acquire_wait w = {.done = false};
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    int rc = sync_rooms_acquire_async(rooms, name, acquire_done, &w);
    if (rc == SYNC_OK) {
        pthread_mutex_lock(&w.lock);
        while (!w.done) {
            pthread_mutex_unlock(&w.lock);
            drain_if_idle_server(rooms->server);
            /* on the service thread nobody else frees an unloaded room this one waits for */
            if (server_on_service_thread(rooms->server))
                room_process_due_only(rooms->server, true);
            pthread_mutex_lock(&w.lock);
            if (w.done)
                break;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 20 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&w.cond, &w.lock, &ts);
        }
        pthread_mutex_unlock(&w.lock);
        rc = w.status;
        if (rc == SYNC_OK)
            *out = w.engine;
        else
            sync__fail(rc, "room \"%s\" is unavailable: %s", name, sync_strerror(rc));
    }
    pthread_mutex_destroy(&w.lock);
    pthread_cond_destroy(&w.cond);
    return rc;
}

int sync_rooms_release(sync_rooms *rooms, sync_engine *engine)
{
    if (!rooms || !engine)
        return sync__fail(SYNC_EINVAL, "rooms and engine are required");
    sync_server *s = rooms->server;
    pthread_mutex_lock(&s->rooms_lock);
    server_room *found = NULL;
    for (size_t b = 0; b < rooms->bucket_count && !found; b++)
        for (server_room *r = rooms->buckets[b]; r; r = r->hash_next)
            if (r->eng.engine == engine && r->holds) {
                found = r;
                break;
            }
    bool wake = false;
    if (found) {
        found->holds--;
        wake = room_let_go_locked(s, found);
    }
    pthread_mutex_unlock(&s->rooms_lock);
    if (!found)
        return sync__fail(SYNC_EINVAL, "that engine is not a held room of this mount");
    if (wake)
        server_wake(s);
    drain_if_idle_server(s);
    sync__error_clear();
    return SYNC_OK;
}

/* Most rooms sync_rooms_list() lists from a cluster's Redis (SYNC_ELIMIT beyond). */
#define SERVER_ROOMS_LIST_MAX 1000000

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int sync_rooms_list(sync_rooms *rooms, char **out_names_json)
{
    if (out_names_json)
        *out_names_json = NULL;
    if (!rooms || !out_names_json)
        return sync__fail(SYNC_EINVAL, "rooms and out are required");
    cJSON *stored = NULL;
    if (rooms->server->cluster) {
        /* the rooms stored in Redis by every node; the mount's store is not used */
        char **names = NULL;
        size_t count = 0;
        int rc = sync__cluster_list(rooms->server->cluster, rooms->prefix, SERVER_ROOMS_LIST_MAX,
                                    &names, &count);
        if (rc != SYNC_OK)
            return rc;
        stored = cJSON_CreateArray();
        for (size_t i = 0; i < count; i++) {
            cJSON *name = stored ? cJSON_CreateString(names[i]) : NULL;
            if (!name || !cJSON_AddItemToArray(stored, name)) {
                cJSON_Delete(name);
                cJSON_Delete(stored);
                stored = NULL;
            }
            free(names[i]);
        }
        free(names);
        if (!stored)
            return sync__fail(SYNC_ENOMEM, "out of memory listing rooms");
    } else if (rooms->store) {
        char *text = NULL;
        int rc = sync_room_store_list(rooms->store, &text);
        if (rc != SYNC_OK)
            return rc;
        stored = cJSON_Parse(text);
        sync_free(text);
        if (!cJSON_IsArray(stored)) {
            cJSON_Delete(stored);
            return sync__fail(SYNC_EIO, "the room store's list is not a JSON array");
        }
    }
    sync_server *s = rooms->server;
    pthread_mutex_lock(&s->rooms_lock);
    size_t n = rooms->count + (size_t)(stored ? cJSON_GetArraySize(stored) : 0);
    char **names = calloc(n ? n : 1, sizeof *names);
    size_t k = 0;
    for (size_t b = 0; names && b < rooms->bucket_count; b++)
        for (server_room *r = rooms->buckets[b]; r; r = r->hash_next)
            if (k < n && !r->deleting)
                names[k++] = strdup(r->name);
    pthread_mutex_unlock(&s->rooms_lock);
    cJSON *item = NULL;
    if (names && stored)
        cJSON_ArrayForEach(item, stored) if (cJSON_IsString(item) && k < n) names[k++] =
            strdup(item->valuestring);
    cJSON_Delete(stored);
    if (!names)
        return sync__fail(SYNC_ENOMEM, "out of memory listing rooms");
    bool oom = false;
    for (size_t i = 0; i < k; i++)
        oom |= !names[i];
    cJSON *array = oom ? NULL : cJSON_CreateArray();
    if (array) {
        qsort(names, k, sizeof *names, compare_names);
        for (size_t i = 0; i < k; i++)
            if (i == 0 || strcmp(names[i], names[i - 1]) != 0)
                cJSON_AddItemToArray(array, cJSON_CreateString(names[i]));
    }
    for (size_t i = 0; i < k; i++)
        free(names[i]);
    free(names);
    char *text = array ? cJSON_PrintUnformatted(array) : NULL;
    cJSON_Delete(array);
    if (!text)
        return sync__fail(SYNC_ENOMEM, "out of memory listing rooms");
    *out_names_json = sync_strdup(text);
    cJSON_free(text);
    if (!*out_names_json)
        return sync__fail(SYNC_ENOMEM, "out of memory listing rooms");
    sync__error_clear();
    return SYNC_OK;
}

int sync_rooms_delete(sync_rooms *rooms, const char *name)
{
    if (!rooms || !name)
        return sync__fail(SYNC_EINVAL, "rooms and name are required");
    int rc = sync_room_name_check(name);
    if (rc != SYNC_OK)
        return rc;
    sync_server *s = rooms->server;
    drain_if_idle_server(s);
    pthread_mutex_lock(&s->rooms_lock);
    server_room *r = table_find(rooms, name);
    /* a room still being created is deleted once it is (a bounded wait: creation finishes or
     * fails on its own, a deferred setup within its caller's time) */
    /* a room still being created, or being unloaded (its save may be in flight: the store must
     * not get the remove meanwhile), is deleted once that is over. Bounded by the creation or the
     * save themselves; a delete already under way is left to finish on its own. */
    while (r && (r->state == ROOM_CREATING || (r->state == ROOM_UNLOADING && !r->deleting))) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->rooms_cond, &s->rooms_lock, &ts);
        r = table_find(rooms, name);
        bool service = server_on_service_thread(s);
        if (!atomic_load(&s->serving) || service) {
            pthread_mutex_unlock(&s->rooms_lock);
            room_process_due_only(s, service);
            pthread_mutex_lock(&s->rooms_lock);
            r = table_find(rooms, name);
        }
    }
    sync_engine *engine = r ? delete_begin_locked(s, r) : NULL;
    pthread_mutex_unlock(&s->rooms_lock);
    if (engine) {
        /* its clients hear why (the first close decides the code), then nothing more is applied
         * or saved */
        sync__engine_close_all(engine, SYNC_CLOSE_ROOM_DELETED, "room deleted");
        sync_engine_dispose(engine);
    }
    if (s->cluster) {
        /* the room is the cluster's: its record, stream and lease go from Redis, and every
         * other node closes its clients and unloads it */
        char *key = NULL;
        if (asprintf(&key, "%s%s", rooms->prefix, name) < 0) {
            key = NULL;
            rc = sync__fail(SYNC_ENOMEM, "out of memory");
        } else {
            rc = sync__cluster_delete(s->cluster, key);
        }
        free(key);
    } else {
        rc = rooms->store ? sync_room_store_remove(rooms->store, name) : SYNC_OK;
    }
    if (engine) {
        delete_end(s, r, NULL);
        drain_if_idle_server(s);
    }
    if (rc == SYNC_OK)
        sync__error_clear();
    return rc;
}

/* rooms_lock held: a ready room starts unloading for its deletion; its engine, which the caller
 * closes and disposes (no lock held), then ends with delete_end(); NULL when it is not ready. */
static sync_engine *delete_begin_locked(sync_server *s, server_room *r)
{
    if (r->state != ROOM_READY || r->deleting)
        return NULL;
    r->deleting = true;
    idle_unlink(s, r);
    r->state = ROOM_UNLOADING;
    r->unload_done = false;
    r->pins++;
    s->rooms_loaded--;
    return r->eng.engine;
}

/* After delete_begin_locked (no lock held). With `engine`, closes its clients with 4410 and
 * disposes it first. */
static void delete_end(sync_server *s, server_room *r, sync_engine *engine)
{
    if (engine) {
        sync__engine_close_all(engine, SYNC_CLOSE_ROOM_DELETED, "room deleted");
        sync_engine_dispose(engine);
    }
    pthread_mutex_lock(&s->rooms_lock);
    r->unload_done = true;
    r->pins--;
    bool wake = due_locked(s, r, DUE_WAKE); /* clients waiting for it hear 4410 */
    wake |= room_let_go_locked(s, r);
    pthread_mutex_unlock(&s->rooms_lock);
    if (wake)
        server_wake(s);
}

/* The cluster's node thread: another node deleted the room (cluster.h). Only noted here; the
 * service thread unloads it (DUE_DELETE), or the caller of a sync_rooms_* call that processes
 * the due rooms while the server does not serve. */
void server_rooms_cluster_deleted(void *server, void *room)
{
    sync_server *s = server;
    server_room *r = room;
    pthread_mutex_lock(&s->rooms_lock);
    r->cluster_deleted = true;
    bool wake = due_locked(s, r, DUE_DELETE);
    pthread_mutex_unlock(&s->rooms_lock);
    if (wake)
        server_wake(s);
}

size_t sync_rooms_loaded_count(sync_rooms *rooms)
{
    if (!rooms)
        return 0;
    pthread_mutex_lock(&rooms->server->rooms_lock);
    size_t n = rooms->count;
    pthread_mutex_unlock(&rooms->server->rooms_lock);
    return n;
}

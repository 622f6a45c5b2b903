/* The process-wide checkpointer of libsync's SQLite databases (sqlite_checkpoint.h). One thread for
 * all of them, however many adapters and room stores the process has, started at the first
 * request; a list of requests, one entry per database at most. */
#include "sqlite_checkpoint.h"

#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <time.h>

#include "libsync/common.h"

/* Retries of a checkpoint that did not reach the WAL's end: the first delay, doubled up to the
 * last (8 retries over 2.5 s). */
#define RETRY_FIRST_MS 10
#define RETRY_LAST_MS 1280

static struct {
    pthread_mutex_t lock;
    pthread_cond_t work; /* a request queued, or stop (CLOCK_MONOTONIC for its timed waits) */
    pthread_cond_t done; /* `running` finished */
    sqlite_ckpt *head, *tail;
    sqlite_ckpt *running;
    /* The running checkpoint's connection, while it is open; `cut_short`: a thread waiting for
     * that checkpoint has asked it to stop (sqlite3_interrupt()). */
    sqlite3 *running_db;
    int cut_short;
    pthread_t thread;
    int started;
    int stopping; /* the library is being unloaded or the process exits: no more requests */
    int forking;  /* no new checkpoint starts until fork() returns */
} ck = {.lock = PTHREAD_MUTEX_INITIALIZER,
        .work = PTHREAD_COND_INITIALIZER,
        .done = PTHREAD_COND_INITIALIZER};

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init_work_cond(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&ck.work, &attr);
    pthread_condattr_destroy(&attr);
}

/* Under the lock: appends `c` (not queued) to the request list. */
static void enqueue(sqlite_ckpt *c, long long due_ms)
{
    c->queued = 1;
    c->due_ms = due_ms;
    c->next = NULL;
    if (ck.tail)
        ck.tail->next = c;
    else
        ck.head = c;
    ck.tail = c;
    pthread_cond_signal(&ck.work);
}

static void unlink_queued(sqlite_ckpt *c)
{
    sqlite_ckpt **link = &ck.head, *prev = NULL;
    while (*link != c) {
        prev = *link;
        link = &(*link)->next;
    }
    *link = c->next;
    if (ck.tail == c)
        ck.tail = prev;
    c->next = NULL;
    c->queued = 0;
}

/* When a queued request may run: not before its retry delay, and, while its WAL is below
 * SQLITE_CKPT_BUSY_PAGES, not before the writer has been quiet for SQLITE_CKPT_QUIET_MS. A
 * checkpoint among the commits of a busy writer is overtaken anyway (it has to be tried again),
 * and its fsyncs and page copies come in the middle of the writer's work: the latency tail of a
 * server's clients showed each one (docs/PERFORMANCE.md). */
static long long ready_at(const sqlite_ckpt *c)
{
    long long ready = c->due_ms;
    if (atomic_load_explicit(&c->wal_pages, memory_order_relaxed) < SQLITE_CKPT_BUSY_PAGES) {
        long long quiet =
            atomic_load_explicit(&c->last_commit_ms, memory_order_relaxed) + SQLITE_CKPT_QUIET_MS;
        if (quiet > ready)
            ready = quiet;
    }
    return ready;
}

/* Under the lock: the first request that is ready, taken off the list; else NULL and *wait_ms the
 * time to the earliest (-1: none queued; a commit meanwhile may push it on, and the request is
 * looked at again then). */
static sqlite_ckpt *take_due(long long *wait_ms)
{
    long long now = sync_now_ms(), earliest = -1;
    for (sqlite_ckpt *c = ck.head; c; c = c->next) {
        long long ready = ready_at(c);
        if (ready <= now) {
            unlink_queued(c);
            return c;
        }
        if (earliest < 0 || ready < earliest)
            earliest = ready;
    }
    *wait_ms = earliest < 0 ? -1 : earliest - now;
    return NULL;
}

/* Under the lock: whoever waits for the running checkpoint stops it instead. One that copies many
 * pages to a slow disk takes seconds, and a close, a fork() or the writer at its hard bound should
 * not wait that long; stopped between two page copies it leaves the WAL whole (a later checkpoint
 * or the writer copies the rest). */
static void cut_short_locked(void)
{
    if (!ck.running)
        return;
    ck.cut_short = 1;
    if (ck.running_db)
        sqlite3_interrupt(ck.running_db);
}

/* The connection a waiter may interrupt: published under the lock, withdrawn before it closes
 * (sqlite3_interrupt() must not meet a closing connection). */
static void publish_running_db(sqlite3 *db)
{
    pthread_mutex_lock(&ck.lock);
    ck.running_db = db;
    if (db && ck.cut_short)
        sqlite3_interrupt(db);
    pthread_mutex_unlock(&ck.lock);
}

/* A PASSIVE checkpoint on a connection of this thread's own: it copies what readers allow and
 * never waits for the writer. Opened per checkpoint: its cost is small next to the checkpoint's
 * writes and fsyncs, and nothing stays open for a database that goes quiet. */
static int checkpoint(sqlite_ckpt *c, int *complete)
{
    const char *path = c->path;
    int full_sync = c->full_sync;
    int log = -1, copied = -1;
    sqlite3 *db = NULL;
    /* Never CREATE: a file removed under its writer is not made again here. */
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK)
        publish_running_db(db);
    /* The checkpoint's fsyncs follow the connection's synchronous level (OFF would skip them):
     * the same as the writer's. */
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, full_sync ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                          NULL, NULL, NULL);
    /* A connection learns the database is in WAL mode at its first read; before it, a checkpoint
     * does nothing. */
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "SELECT 1 FROM sqlite_master LIMIT 1", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &copied);
    /* `log` is the WAL as it was when the checkpoint began: a commit made while it copied is not in
     * it, yet keeps the WAL from restarting, so the checkpoint is done only if the writer's last
     * commit left no more (fewer: the WAL restarted meanwhile). A commit whose hook has not yet
     * run is missed: the next request covers it. */
    *complete = rc == SQLITE_OK && copied == log &&
                atomic_load_explicit(&c->wal_pages, memory_order_relaxed) <= log;
    publish_running_db(NULL);
    sqlite3_close(db);
    return rc;
}

static void *checkpointer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&ck.lock);
    for (;;) {
        sqlite_ckpt *c = NULL;
        long long wait_ms = -1;
        while (!ck.stopping && (ck.forking || !(c = take_due(&wait_ms)))) {
            if (ck.forking || wait_ms < 0) {
                pthread_cond_wait(&ck.work, &ck.lock);
                continue;
            }
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += wait_ms / 1000;
            until.tv_nsec += (wait_ms % 1000) * 1000000;
            if (until.tv_nsec >= 1000000000) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&ck.work, &ck.lock, &until);
        }
        if (ck.stopping)
            break;
        ck.running = c; /* sqlite_ckpt_detach() waits for it: c and its path stay valid */
        pthread_mutex_unlock(&ck.lock);
        int complete = 0;
        int rc = checkpoint(c, &complete) & 0xff;
        pthread_mutex_lock(&ck.lock);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY && rc != SQLITE_LOCKED && rc != SQLITE_INTERRUPT) {
            /* No descriptor left, an I/O error: the writer runs the next checkpoint itself, where
             * SQLite would have run it; the WAL stays intact meanwhile. */
            c->failed = 1;
        } else if (complete) {
            c->retry_ms = 0;
        } else if (!c->queued) {
            /* Overtaken by a commit, busy (another checkpoint, a reader in the way) or stopped by
             * a waiter (detach() drops the retry; after fork() it is due as before): again
             * later, less often, until the delay would pass the last; the next request starts
             * over. */
            int delay = c->retry_ms ? c->retry_ms * 2 : RETRY_FIRST_MS;
            c->retry_ms = delay <= RETRY_LAST_MS ? delay : 0;
            if (c->retry_ms)
                enqueue(c, sync_now_ms() + delay);
        }
        ck.running = NULL;
        ck.cut_short = 0;
        pthread_cond_broadcast(&ck.done);
    }
    pthread_mutex_unlock(&ck.lock);
    return NULL;
}

/* fork() copies the requests and the flags but not the thread: the child starts one of its own
 * at its first request. The lock is held across fork so the copy is consistent, and a running
 * checkpoint is waited for so the child never gets SQLite's state halfway through one. */
static void atfork_prepare(void)
{
    pthread_mutex_lock(&ck.lock);
    ck.forking = 1;
    cut_short_locked();
    while (ck.running)
        pthread_cond_wait(&ck.done, &ck.lock);
}

static void atfork_parent(void)
{
    ck.forking = 0;
    pthread_cond_signal(&ck.work);
    pthread_mutex_unlock(&ck.lock);
}

static void atfork_child(void)
{
    for (sqlite_ckpt *c = ck.head, *next; c; c = next) {
        next = c->next;
        c->next = NULL;
        c->queued = 0;
    }
    ck.head = ck.tail = NULL;
    ck.running = NULL;
    ck.running_db = NULL;
    ck.cut_short = 0;
    ck.started = 0;
    ck.forking = 0;
    /* No thread of the child waits on them; the parent's checkpointer did. */
    init_work_cond();
    pthread_cond_init(&ck.done, NULL);
    pthread_mutex_unlock(&ck.lock);
}

static void init_once(void)
{
    init_work_cond();
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* Under the lock. The thread blocks every signal: they are the application's. */
static int start_locked(void)
{
    if (ck.started)
        return 0;
    pthread_once(&once, init_once);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&ck.thread, NULL, checkpointer_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0)
        return -1;
    pthread_setname_np(ck.thread, "sync-checkpoint");
    ck.started = 1;
    return 0;
}

/* Queues a checkpoint of `c`: 0, or -1 when the writer must run this one itself. */
static int request(sqlite_ckpt *c)
{
    pthread_mutex_lock(&ck.lock);
    int rc = -1;
    if (c->failed)
        c->failed = 0; /* this one inline; the next goes to the thread again */
    else if (!ck.stopping && start_locked() == 0) {
        /* Queued even while a checkpoint of it runs: that one copies only the WAL it saw. A retry
         * that waits becomes due now. */
        c->retry_ms = 0;
        if (!c->queued)
            enqueue(c, 0);
        else if (c->due_ms) {
            c->due_ms = 0;
            pthread_cond_signal(&ck.work);
        }
        rc = 0;
    }
    pthread_mutex_unlock(&ck.lock);
    return rc;
}

/* After every commit on the writer's connection, with the WAL's size in pages. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
    sqlite_ckpt *c = arg;
    atomic_store_explicit(&c->wal_pages, pages, memory_order_relaxed);
    atomic_store_explicit(&c->last_commit_ms, sync_now_ms(), memory_order_relaxed);
    if (pages < c->requested_at)
        c->requested_at = 0; /* the WAL restarted */
    int run_here = pages >= SQLITE_CKPT_HARD_PAGES;
    if (run_here) {
        /* A background checkpoint of this database still running now would make the writer's
         * own fail as busy: it stops. */
        pthread_mutex_lock(&ck.lock);
        if (ck.running == c)
            cut_short_locked();
        pthread_mutex_unlock(&ck.lock);
    }
    if (!run_here && pages >= SQLITE_CKPT_PAGES && pages - c->requested_at >= SQLITE_CKPT_PAGES) {
        c->requested_at = pages;
        run_here = request(c) != 0;
    }
    /* What SQLite's auto-checkpoint would run here, its result ignored as SQLite ignores it: a
     * checkpoint that fails leaves the WAL intact. */
    if (run_here)
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    return SQLITE_OK; /* an error here would fail the statement whose commit already happened */
}

void sqlite_ckpt_attach(sqlite_ckpt *c, sqlite3 *db, const char *path, int full_sync)
{
    c->path = path;
    c->full_sync = full_sync;
    c->requested_at = 0;
    atomic_store_explicit(&c->wal_pages, 0, memory_order_relaxed);
    atomic_store_explicit(&c->last_commit_ms, 0, memory_order_relaxed);
    c->attached = 1;
    /* Replaces SQLite's auto-checkpoint, itself a WAL hook. */
    sqlite3_wal_hook(db, wal_hook, c);
}

void sqlite_ckpt_detach(sqlite_ckpt *c)
{
    if (!c->attached)
        return;
    pthread_mutex_lock(&ck.lock);
    if (c->queued)
        unlink_queued(c);
    if (ck.running == c)
        cut_short_locked();
    while (ck.running == c)
        pthread_cond_wait(&ck.done, &ck.lock);
    /* The checkpoint that ran may have queued a retry. */
    if (c->queued)
        unlink_queued(c);
    c->failed = 0;
    c->retry_ms = 0;
    pthread_mutex_unlock(&ck.lock);
    c->attached = 0;
}

/* At exit (or when the library is unloaded) the thread finishes the checkpoint it is running and
 * is joined: it must not run on in code that goes away. Requests made after it fall back to the
 * writer. */
__attribute__((destructor)) static void checkpointer_stop(void)
{
    pthread_mutex_lock(&ck.lock);
    int started = ck.started;
    ck.stopping = 1;
    ck.started = 0;
    cut_short_locked();
    pthread_cond_broadcast(&ck.work);
    pthread_mutex_unlock(&ck.lock);
    if (started)
        pthread_join(ck.thread, NULL);
}

/* Heartbeat, sync interval and step timeout: run by the embedder (tick/next_deadline), by the
 * server, or by a thread of the engine's own that sleeps on a condition variable until the next
 * deadline. */
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "engine_internal.h"
#include "error.h"

static int64_t earliest(int64_t a, int64_t b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

static int64_t next_deadline(const sync_engine *engine)
{
    return earliest(earliest(engine->next_heartbeat_ms, engine->next_sync_ms),
                    engine->step_deadline_ms);
}

static void heartbeat(sync_engine *engine, int64_t now)
{
    size_t count = 0;
    sync_conn **conns = sync__engine_conn_snapshot(engine, &count);
    sync__frame *ping = sync__frame_ping(); /* made by sync_engine_new() */
    if (!conns && atomic_load(&engine->conn_count) > 0) {
        sync__engine_report(engine, SYNC_ENOMEM, "heartbeat", NULL, "out of memory");
        return;
    }
    for (size_t i = 0; i < count && !engine->disposed; i++) {
        sync_conn *conn = conns[i];
        if (conn->state != CONN_OPEN || conn->timed_out)
            continue;
        if (engine->ping_timeout_ms > 0 && now - conn->last_pong_ms > engine->ping_timeout_ms) {
            conn->timed_out = 1;
            SYNC__DEBUG(engine, "connection %llu missed its pong", (unsigned long long)conn->id);
            if (engine->hooks.on_ping_timeout)
                engine->hooks.on_ping_timeout(engine, conn, engine->hooks.userdata);
            sync__conn_request_close(conn, SYNC_CLOSE_PING_TIMEOUT, SYNC_CLOSE_PING_TIMEOUT_REASON);
            continue;
        }
        if (sync__engine_send(engine, conn, ping, "heartbeat") == SYNC_OK && engine->hooks.on_ping)
            engine->hooks.on_ping(engine, conn, engine->hooks.userdata);
    }
    for (size_t i = 0; i < count; i++)
        sync_conn_free(conns[i]);
    free(conns);
}

/* The next multiple of the interval after `now`, so a late tick does not bunch up runs. */
static int64_t advance(int64_t due, int64_t interval, int64_t now)
{
    due += interval;
    if (due <= now)
        due = now + interval;
    return due;
}

static int tick_locked(sync_engine *engine, int64_t now)
{
    int64_t before = next_deadline(engine);
    int rc = SYNC_OK;
    if (engine->step_deadline_ms >= 0 && now >= engine->step_deadline_ms)
        sync__msg_time_out(engine);
    if (!engine->disposed && engine->next_heartbeat_ms >= 0 && now >= engine->next_heartbeat_ms) {
        engine->next_heartbeat_ms = advance(engine->next_heartbeat_ms, engine->heartbeat_ms, now);
        heartbeat(engine, now);
    }
    if (!engine->disposed && engine->next_sync_ms >= 0 && now >= engine->next_sync_ms) {
        engine->next_sync_ms = advance(engine->next_sync_ms, engine->sync_ms, now);
        sync__op *op = sync__op_new(OP_SYNC);
        rc = op ? sync__op_submit(engine, op)
                : sync__engine_report(engine, SYNC_ENOMEM, "sync", NULL, "out of memory");
    }
    if (next_deadline(engine) != before && engine->timer_mode == SYNC_TIMERS_MANUAL)
        sync__engine_notify_deadline(engine);
    return rc == SYNC_PENDING ? SYNC_OK : rc;
}

int sync_engine_tick(sync_engine *engine, int64_t now_ms)
{
    if (!engine)
        return sync__fail(SYNC_EINVAL, "sync_engine_tick: engine is NULL");
    sync__engine_lock(engine);
    if (engine->disposed) {
        sync__engine_unlock(engine);
        return sync__fail(SYNC_ECLOSED, "sync_engine_tick: the engine is disposed");
    }
    int rc = tick_locked(engine, now_ms < 0 ? sync_now_ms() : now_ms);
    sync__engine_unlock(engine);
    return rc;
}

int64_t sync_engine_next_deadline_ms(sync_engine *engine)
{
    if (!engine)
        return -1;
    sync__engine_lock(engine);
    int64_t deadline = engine->disposed ? -1 : next_deadline(engine);
    engine->ticker_deadline_ms = deadline;
    sync__engine_unlock(engine);
    return deadline;
}

/* ---- the engine's own timer thread ---------------------------------------------------------- */

static void *timer_main(void *arg)
{
    sync_engine *engine = arg;
    sync__engine_lock(engine);
    sync__engine_waits *w = engine->waits;
    while (!w->timer_stop) {
        int64_t deadline = next_deadline(engine);
        engine->ticker_deadline_ms = deadline;
        int64_t now = sync_now_ms();
        if (deadline >= 0 && now >= deadline) {
            tick_locked(engine, now);
            continue;
        }
        if (engine->remote_deliveries) {
            /* a result this thread finished (a step timed out) goes out before it sleeps */
            sync__engine_unlock(engine);
            sync__engine_lock(engine);
            continue;
        }
        /* The wait gives the lock away: let other threads count their own depth from zero. */
        engine->lock_depth = 0;
        if (deadline < 0) {
            pthread_cond_wait(&w->cond, &engine->lock);
        } else {
            struct timespec ts = {(time_t)(deadline / 1000), (long)(deadline % 1000) * 1000000L};
            pthread_cond_timedwait(&w->cond, &engine->lock, &ts);
        }
        engine->lock_depth = 1;
    }
    sync__engine_unlock(engine);
    /* The thread's own reference: the engine may be freed before a detached thread ends. */
    sync__engine_unref(engine);
    return NULL;
}

void sync__engine_timers_moved(sync_engine *engine)
{
    if (engine->timer_mode == SYNC_TIMERS_THREAD) {
        if (engine->waits)
            pthread_cond_broadcast(&engine->waits->cond);
    } else
        sync__engine_notify_deadline(engine);
}

int sync__engine_timers_start(sync_engine *engine)
{
    sync__engine_waits *w = sync__engine_waits_get(engine);
    if (!w)
        return sync__fail(SYNC_ENOMEM, "out of memory starting the timer thread");
    atomic_fetch_add(&engine->refs, 1);
    int err = pthread_create(&w->timer_thread, NULL, timer_main, engine);
    if (err != 0) {
        atomic_fetch_sub(&engine->refs, 1);
        return sync__fail(SYNC_ENOMEM, "could not start the timer thread (error %d)", err);
    }
    w->timer_started = 1;
    return SYNC_OK;
}

void sync__engine_timers_stop(sync_engine *engine)
{
    sync__engine_waits *w = engine->waits;
    if (!w || !w->timer_started || w->timer_joined || w->timer_detached)
        return;
    w->timer_stop = 1;
    pthread_cond_broadcast(&w->cond);
    if (pthread_equal(pthread_self(), w->timer_thread)) {
        /* Disposed from one of the thread's own hooks: it ends by itself after the hook. */
        pthread_detach(w->timer_thread);
        w->timer_detached = 1;
    } else if (engine->lock_depth == 1) {
        w->timer_joined = 1;
        engine->lock_depth = 0;
        pthread_mutex_unlock(&engine->lock);
        pthread_join(w->timer_thread, NULL);
        pthread_mutex_lock(&engine->lock);
        engine->lock_depth = 1;
    }
    /* Otherwise a hook on another thread disposed: sync_engine_free() joins. */
}

void sync__engine_timers_join(sync_engine *engine)
{
    sync__engine_lock(engine);
    sync__engine_waits *w = engine->waits;
    int join = w && w->timer_started && !w->timer_joined && !w->timer_detached &&
               !pthread_equal(pthread_self(), w->timer_thread);
    if (join)
        w->timer_joined = 1;
    sync__engine_unlock(engine);
    if (join)
        pthread_join(w->timer_thread, NULL);
}

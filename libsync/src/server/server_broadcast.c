/*
 * The built-in server's broadcast: the server reads each engine's change feed (feed.h). The engine
 * says once per record that the head moved on (the state_moved of transport.h's listener), and at
 * the end of each service loop turn the server flushes the head (its save, with
 * SYNC_PERSIST_BEFORE_SEND) and writes the one shared frame of it to every live connection that
 * is behind, straight away.
 *
 * Why at the end of the turn: every message lws read in that turn is applied first, so one frame
 * (and one save, with SYNC_PERSIST_BEFORE_SEND) covers them all. Why straight away rather than
 * through lws_callback_on_writable(): that costs a poll() over every socket and a dispatch per
 * connection before the first byte leaves, on every change. A connection with anything else to
 * write first (queued frames, lws's own unsent remainder, a close) still goes through the
 * writeable callback, which pulls the newest frame after its queue (server_conn.c).
 *
 * Why a broadcast may stop early: writing to thousands of sockets takes milliseconds, and input
 * that arrives meanwhile would wait behind all of it. Every write or two the broadcast asks an
 * epoll set of every connection's socket (one syscall, whatever the count) whether input is
 * waiting; if that input is for the engine being walked, it ends the walk, lws reads and applies
 * the input, and the next turn resumes at the cursor with the newer frame. The connections not yet
 * written skip the intermediate state (lossless: a state supersedes the previous one), changes are
 * applied without waiting for the fan-out, and fewer, fresher frames go out. Fairness: the cursor
 * walks a ring and each turn writes a few frames at least; a walk is done when it has come round
 * the ring, over however many turns. One that has given way for broadcast_yield_ms without coming
 * round makes the rest of its round as one pass in slices of at least 1/BROADCAST_SLICES of the
 * connections (and MIN_SLICE_WRITES), so no client waits for the newest state longer than that
 * plus one such pass. The pass reads input between its slices rather than
 * running to its end: with 10,000 clients it takes tens of milliseconds, and input held for all
 * of it would cap the changes it carries at what the clients had in flight when it began.
 *
 * Many engines (rooms): input for another engine never supersedes this one's frame, and every
 * stop costs a turn (a poll() over every descriptor on lws 4.1's poll loop, a wake, a save per
 * flush), so the budget is the turn's, over every engine flushed in it. A walk over a few clients
 * runs to its end; a walk gives way to another engine's input only once the turn has written its
 * share (turn_share: a fraction of the open connections); and between two engines' flushes the
 * turn gives way to any input once it has written that share, the engines left waiting, in the
 * order they became due, for the next turn. A turn wakes the loop once at most. With one engine
 * all of this is what it was: every waiting input is that engine's.
 */
#include "server_internal.h"

#include "clock.h"
#include "error.h"

#include <sys/epoll.h>
#include <unistd.h>

/* Rounds of "moved again while flushing" handled in one call before the loop is told to come
 * back instead: a save finishing inside the flush can move the state once more. */
enum { FLUSH_ROUNDS = 4 };
/* Writes between two looks for input (each look is one epoll_wait), and the fewest writes a turn
 * makes before it may stop: every turn moves the walk on, however busy the input. A walk over more
 * than SLICED_ABOVE clients stops at the first write after which input waits: that first frame
 * already answers every message applied in the turn (a sender learns that its change landed from
 * whichever client sees it first), the writes after it go to clients that the next turn's frame
 * supersedes, and the sliced pass bounds the staleness of the rest (C and F: about 1.2x the
 * throughput, the slowest client no later). A narrower walk keeps a floor of 4 writes, looking
 * every 2: with a floor of 1, each turn moved its ring on less, more of its clients waited for the
 * whole pass after broadcast_yield_ms, and the slowest client's p99 in scenario A (100 clients,
 * one sender) came later than bun-raw's (docs/PERFORMANCE.md, "Wide walks stop at the first
 * write"). */
enum { INPUT_CHECK_EVERY = 2, MIN_WRITES_BEFORE_STOP = 4 };
/* A narrower walk also writes at least 1/NARROW_SHARE of its clients before it looks: however fast
 * the input comes, the ring comes round within NARROW_SHARE changes, so the clients at its far end
 * are not left to the sliced pass (scenario A, docs/PERFORMANCE.md). */
enum { NARROW_SHARE = 8 };
enum { WIDE_INPUT_CHECK_EVERY = 1, WIDE_MIN_WRITES_BEFORE_STOP = 1 };
/* The sliced pass after broadcast_yield_ms: each turn writes at least this fraction of the
 * connections (and at least MIN_SLICE_WRITES) before it gives way again, so the pass spans at
 * most BROADCAST_SLICES turns and the per-turn cost (lws 4.1 polls every descriptor; a save per
 * version with SYNC_PERSIST_BEFORE_SEND) is spread over many writes. A pass over at most
 * SLICED_ABOVE connections runs to its end in one turn: it is short, and a turn's own cost (the
 * state serialised and saved once more) is then as large as a slice of writes. */
enum { BROADCAST_SLICES = 32, MIN_SLICE_WRITES = 32, SLICED_ABOVE = 128 };
/* A walk over at most this many connections never stops: stopping would spare a few writes and
 * make the rest of its clients wait a turn. */
enum { SHORT_WALK = 16 };
/* On the poll loop a turn writes at least this fraction of the connections before it gives way to
 * another engine's input (turn_share). */
enum { POLL_TURN_SLICES = 4 };

void server_broadcast_init(sync_server *server)
{
    server->input_epfd = epoll_create1(EPOLL_CLOEXEC);
}

void server_broadcast_release(sync_server *server)
{
    if (server->input_epfd >= 0)
        close(server->input_epfd);
    server->input_epfd = -1;
}

void server_broadcast_state_moved(void *userdata, int force)
{
    server_engine *eng = userdata;
    if (force)
        atomic_store(&eng->state_force, true);
    /* On the service thread the end of the current turn flushes; elsewhere the loop is asleep. */
    if (!atomic_exchange(&eng->state_moved, true) && !server_on_service_thread(eng->server))
        server_wake(eng->server);
}

void server_broadcast_join(server_conn *c)
{
    if (c->live)
        return;
    server_engine *eng = c->eng;
    sync_server *s = c->server;
    c->live = true;
    /* the state may have moved past its initial state while that frame was queued, and the
     * flush of that move skipped it: the next flush checks it again */
    atomic_store(&eng->state_moved, true);
    c->live_prev = NULL;
    c->live_next = eng->live_head;
    if (eng->live_head)
        eng->live_head->live_prev = c;
    eng->live_head = c;
    eng->live_count++;
    if (s->input_epfd >= 0) {
        /* the engine is only compared with the one being walked, never read through: a stale
         * event costs nothing */
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = eng};
        epoll_ctl(s->input_epfd, EPOLL_CTL_ADD, lws_get_socket_fd(c->wsi), &ev);
    }
}

void server_broadcast_leave(server_conn *c)
{
    if (!c->live)
        return;
    server_engine *eng = c->eng;
    sync_server *s = c->server;
    if (s->input_epfd >= 0 && c->wsi) {
        struct epoll_event ev = {0};
        epoll_ctl(s->input_epfd, EPOLL_CTL_DEL, lws_get_socket_fd(c->wsi), &ev);
    }
    if (eng->cursor == c)
        eng->cursor = c->live_next;
    if (c->live_prev)
        c->live_prev->live_next = c->live_next;
    else
        eng->live_head = c->live_next;
    if (c->live_next)
        c->live_next->live_prev = c->live_prev;
    eng->live_count--;
    c->live = false;
    c->live_next = c->live_prev = NULL;
}

/* Leaves the frame to the writeable callback, which sends what is queued first. */
static void defer_to_writeable(server_conn *c, bool force)
{
    sync_server *s = c->server;
    pthread_mutex_lock(&s->lock);
    if (c->wsi) {
        if (force)
            c->force = true;
        atomic_store_explicit(&c->state_moved, true, memory_order_release);
        server_conn_wake_locked(c);
    }
    pthread_mutex_unlock(&s->lock);
}

/* The patch frames one walk hands out, by base: most v2 clients are at the same base, so the
 * engine (its lock, its cache of frames) is asked once per base and walk, not per client. */
enum { WALK_BASES = 4 };
typedef struct walk_frames {
    int64_t base[WALK_BASES];
    sync__frame *frame[WALK_BASES];
    size_t count;
} walk_frames;

static void walk_frames_release(walk_frames *w)
{
    for (size_t i = 0; i < w->count; i++)
        sync__frame_unref(w->frame[i]);
    w->count = 0;
}

/* What a v2 client at `base` gets instead of the state frame `frame` (borrowed either way). */
static sync__frame *v2_frame(server_engine *eng, walk_frames *w, int64_t base, sync__frame *frame)
{
    for (size_t i = 0; i < w->count; i++)
        if (w->base[i] == base)
            return w->frame[i];
    sync__frame *f = sync__feed_read_v2(eng->engine, 0, base, 0);
    if (!f || f->seq < frame->seq) {
        sync__frame_unref(f);
        return frame; /* the head is not sendable after all: the state frame is */
    }
    if (w->count == WALK_BASES) {
        /* a spread of bases: these clients pay a lookup each, the engine's cache still shares */
        sync__frame_unref(w->frame[w->count - 1]);
        w->count--;
    }
    w->base[w->count] = base;
    w->frame[w->count++] = f;
    return f;
}

/* Whether it wrote (or handed over) anything: a connection already at `frame` costs nothing. */
static bool flush_conn(server_conn *c, sync__frame *frame, bool force, walk_frames *w)
{
    sync_server *s = c->server;
    if (!force && c->last_sent_seq >= frame->seq)
        return false;
    /* a connection lws is closing (lws_get_close_length) is ended by the writeable callback */
    bool lws_ready = c->wsi && !c->write_failed && !lws_partial_buffered(c->wsi) &&
                     lws_get_close_length(c->wsi) == 0;
    pthread_mutex_lock(&s->lock);
    bool direct = lws_ready && !(c->out && c->out->count) && !c->close_pending && !s->stopping;
    if (direct && atomic_load_explicit(&c->state_moved, memory_order_relaxed)) {
        /* An earlier turn handed this connection to the writeable callback (lws still held part
         * of a frame then), which has not run yet: this newer frame supersedes that pull, which
         * would send it a second time (forced) or find nothing newer. */
        c->force = false;
        atomic_store_explicit(&c->state_moved, false, memory_order_relaxed);
    }
    pthread_mutex_unlock(&s->lock);
    if (!direct) {
        defer_to_writeable(c, force);
        return true;
    }
    if (c->v2 && !force)
        frame = v2_frame(c->eng, w, c->v2->last_version, frame);
    if (frame->seq > c->last_sent_seq)
        c->last_sent_seq = frame->seq;
    if (c->v2)
        c->v2->last_version = frame->version;
    /* Outside its writeable callback lws still sends what the socket takes and keeps the rest,
     * asking for POLLOUT itself; lws_partial_buffered() then routes later frames above. */
    int n = lws_write(c->wsi, (unsigned char *)sync__frame_text(frame), frame->len, LWS_WRITE_TEXT);
    if (n < 0) {
        c->write_failed = true; /* the writeable callback closes it */
        lws_callback_on_writable(c->wsi);
        return true;
    }
    s->frames_sent++;
    s->bytes_sent += (uint64_t)n;
    return true;
}

void server_turn_wake(sync_server *s)
{
    if (s->turn_woken || !s->context)
        return;
    s->turn_woken = true;
    lws_cancel_service(s->context);
}

void server_broadcast_turn_begin(sync_server *s, bool turn_end)
{
    s->turn_writes = 0;
    s->turn_unchecked = 0;
    s->turn_end_pass = turn_end;
    if (turn_end) {
        s->turn_seq++;
        s->turn_yielded = false;
        s->turn_woken = false;
        s->turn_room_owed = true;
    }
}

/* What a turn writes before it gives way to input for another engine: enough to spread the turn's
 * own cost. On lws 4.1's poll loop that is a poll() over every descriptor, as long as hundreds of
 * writes with 10,000 connections: a quarter of the connections. On epoll a turn costs what is
 * ready: a slice, as in the sliced pass. */
static size_t turn_share(const sync_server *s)
{
    size_t open = (size_t)(s->ws_open > 0 ? s->ws_open : 0);
    size_t share = open / (s->evl ? BROADCAST_SLICES : POLL_TURN_SLICES);
    return share > MIN_SLICE_WRITES ? share : MIN_SLICE_WRITES;
}

/* Whether input is waiting on a live connection: 0 none, 1 for `eng`, 2 for another engine only
 * as far as this look tells (epoll reports one of the ready sockets, a different one each time). */
static int input_waiting(sync_server *s, const server_engine *eng)
{
    struct epoll_event ev;
    if (s->input_epfd < 0 || epoll_wait(s->input_epfd, &ev, 1, 0) <= 0)
        return 0;
    return ev.data.ptr == eng ? 1 : 2;
}

bool server_broadcast_turn_open(sync_server *s)
{
    if (s->turn_yielded)
        return false;
    if (s->broadcast_yield_ms < 0 || s->turn_writes < turn_share(s) || !input_waiting(s, NULL))
        return true;
    s->turn_yielded = true;
    server_turn_wake(s);
    return false;
}

/* One turn's share of the walk, from the cursor: writes `frame` to each live connection that is
 * behind; false when it stopped early for input (the cursor then names the first connection not
 * visited). A forced broadcast goes to everyone in one turn: stopping would need a record of who
 * already had it. */
static bool flush_walk(server_engine *eng, sync__frame *frame, bool force)
{
    sync_server *s = eng->server;
    int64_t now = sync__now_us();
    /* A walk is done once it has visited every live connection, in one turn or over many that
     * gave way to input: each of them then has a frame no older than the walk's start. A walk
     * gives way to any input for its first broadcast_yield_ms; one that has not come round the
     * ring by then makes the rest of its round as the sliced pass, however many turns each part
     * spans. Either way no client waits longer than that for a newer state. */
    int64_t yield_us = (int64_t)s->broadcast_yield_ms * 1000;
    if (!eng->flush_pending || eng->walk_visited >= eng->live_count) {
        eng->walk_started_us = now;
        eng->walk_visited = 0;
        eng->walk_passing = false;
    }
    bool sliced = now - eng->walk_started_us >= yield_us;
    bool may_stop = !force && s->broadcast_yield_ms >= 0 && eng->live_count > SHORT_WALK;
    if (sliced && may_stop && !eng->walk_passing) {
        eng->walk_passing = true;
        s->broadcast_passes++;
    }
    bool wide = eng->live_count > SLICED_ABOVE;
    size_t min_writes = wide ? WIDE_MIN_WRITES_BEFORE_STOP : MIN_WRITES_BEFORE_STOP;
    if (!wide && eng->live_count / NARROW_SHARE > min_writes)
        min_writes = eng->live_count / NARROW_SHARE;
    size_t check_every = wide ? WIDE_INPUT_CHECK_EVERY : INPUT_CHECK_EVERY;
    if (sliced && !wide)
        min_writes = eng->live_count; /* never reached: one turn to the end */
    else if (sliced)
        min_writes = eng->live_count / BROADCAST_SLICES > MIN_SLICE_WRITES
                         ? eng->live_count / BROADCAST_SLICES
                         : MIN_SLICE_WRITES;
    size_t written = 0;
    walk_frames w = {.count = 0};
    server_conn *c = eng->cursor ? eng->cursor : eng->live_head;
    for (size_t left = eng->live_count; left && c; left--) {
        server_conn *next = c->live_next ? c->live_next : eng->live_head;
        if (flush_conn(c, frame, force, &w)) {
            written++;
            s->turn_writes++;
            s->turn_unchecked++;
        }
        eng->walk_visited++;
        c = next;
        if (may_stop && left > 1 && written >= min_writes && s->turn_unchecked >= check_every) {
            s->turn_unchecked = 0;
            int input = input_waiting(s, eng);
            /* another engine's input waits only once the turn has written its share; the turn
             * then gives way to it altogether */
            bool share_written = s->turn_writes >= turn_share(s);
            if (input == 1 || (input == 2 && share_written)) {
                if (input == 2)
                    s->turn_yielded = true;
                else
                    eng->input_cut_turn = s->turn_seq;
                s->broadcasts_cut_short++;
                eng->cursor = c;
                walk_frames_release(&w);
                return false;
            }
        }
    }
    eng->cursor = c;
    walk_frames_release(&w);
    return true;
}

void server_broadcast_flush_engine(server_engine *eng)
{
    sync_server *s = eng->server;
    /* A wake's pass inside lws_service() comes before lws reads the input this walk stopped for:
     * the end of the turn flushes, with the state that input makes. (A false match of the turn
     * count after it wraps only moves one flush to that end.) */
    if (eng->flush_pending && !s->turn_end_pass && eng->input_cut_turn == s->turn_seq)
        return;
    for (int round = 0; round < FLUSH_ROUNDS; round++) {
        bool moved = atomic_exchange(&eng->state_moved, false);
        if (!moved && !eng->flush_pending)
            return;
        if (!eng->live_head) {
            eng->flush_pending = false;
            atomic_store(&eng->state_force, false);
            return; /* nobody to send to: no pull, so no save forced ahead of its time */
        }
        bool force = atomic_load(&eng->state_force);
        /* One flush for every change of this turn (group commit), then a read of the feed's
         * head. Not ready while the head waits for its save or for pending work: the engine calls
         * the listener again when it is, and the force is kept for then. */
        if (!sync__feed_flush(eng->engine))
            return;
        sync__frame *frame = sync__feed_read(eng->engine, 0, 1);
        if (!frame)
            return;
        if (force)
            atomic_store(&eng->state_force, false);
        bool complete = flush_walk(eng, frame, force);
        sync__frame_unref(frame);
        eng->flush_pending = !complete;
        if (!complete) {
            /* lws reads the input next turn; the wake makes sure that turn does not sleep even
             * if lws is not polling that socket for input (a closing connection) */
            server_turn_wake(s);
            return;
        }
    }
    if (atomic_load(&eng->state_moved))
        server_turn_wake(s);
}

void server_broadcast_flush(sync_server *server)
{
    for (size_t i = 0; i < server->engine_count; i++) {
        server_engine *eng = server->engines[i];
        bool due = eng->flush_pending || atomic_load(&eng->state_moved);
        /* a turn that gave way leaves the engine moved (or its walk pending) for the next */
        if (due && server_broadcast_turn_open(server))
            server_broadcast_flush_engine(eng);
    }
}

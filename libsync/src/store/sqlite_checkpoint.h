/* WAL checkpoints of libsync's SQLite databases off the thread that saves. SQLite's own
 * auto-checkpoint runs inside the commit that crosses 1000 WAL pages: it copies the WAL into the
 * database and fsyncs both, a stall of milliseconds on the thread that saved (in the built-in
 * server, the service thread). Here a commit that crosses the threshold hands the checkpoint to one
 * process-wide thread, which runs a PASSIVE checkpoint (it never blocks the writer) on a connection
 * of its own, once the writer has made no commit for SQLITE_CKPT_QUIET_MS or the WAL has reached
 * SQLITE_CKPT_BUSY_PAGES: among a busy writer's commits it would be overtaken, and its fsyncs
 * would land in the middle of the writer's work. A passive checkpoint that a commit overtook
 * leaves the pages written since (the row being saved) in the WAL, and the WAL cannot restart; it
 * is tried again after 10 ms, then less often (8 times over 2.5 s), so it completes once the writer
 * pauses. A thread that must wait for a running checkpoint (closing the database, fork(), the
 * writer at the hard bound) stops it between two page copies instead. The writer still
 * checkpoints inline, as SQLite would, when the WAL reaches a hard bound (sustained writes leave a
 * passive checkpoint no end to reach, so the WAL could never restart), when the thread cannot be
 * started, and once after a background checkpoint of its database failed other than busy (e.g. no
 * file descriptor left for its connection). Commits and their durability are unchanged; only where
 * the checkpoint runs moves. */
#ifndef LIBSYNC_SRC_STORE_SQLITE_CHECKPOINT_H
#define LIBSYNC_SRC_STORE_SQLITE_CHECKPOINT_H

#include <sqlite3.h>
#include <stdatomic.h>

/* WAL pages at which a checkpoint is requested (SQLite's default auto-checkpoint), and at which the
 * writer runs it itself. */
#define SQLITE_CKPT_PAGES 1000
#define SQLITE_CKPT_HARD_PAGES (8 * SQLITE_CKPT_PAGES)
/* A requested checkpoint waits until the writer has made no commit for this long, unless the WAL
 * has reached SQLITE_CKPT_BUSY_PAGES. */
#define SQLITE_CKPT_QUIET_MS 20
#define SQLITE_CKPT_BUSY_PAGES (4 * SQLITE_CKPT_PAGES)

/* One database's place in the checkpointer: part of its sqlite_db, zeroed when unused. */
typedef struct sqlite_ckpt {
    /* Set by sqlite_ckpt_attach(), read by the checkpointer while a request is queued or running;
     * stay valid until sqlite_ckpt_detach() returns. */
    const char *path;
    int full_sync;
    int attached;
    /* WAL pages at the last request, so one is made per SQLITE_CKPT_PAGES new pages (the writer's
     * thread only). */
    int requested_at;
    /* WAL pages after the writer's last commit, so the checkpointer sees commits that overtook it.
     */
    atomic_int wal_pages;
    /* sync_now_ms() of the writer's last commit: a checkpoint waits for a quiet moment. */
    atomic_llong last_commit_ms;
    /* Under the checkpointer's mutex: in its request list (at most once), not before `due_ms`
     * (monotonic; 0 now); the delay of the next retry; "the last background checkpoint failed,
     * not busy". */
    struct sqlite_ckpt *next;
    int queued;
    long long due_ms;
    int retry_ms;
    int failed;
} sqlite_ckpt;

/* Installs the WAL hook on `db`, the writable connection of the database at `path` (kept, not
 * copied): SQLite's auto-checkpoint is off on it from now on. */
void sqlite_ckpt_attach(sqlite_ckpt *c, sqlite3 *db, const char *path, int full_sync);

/* Before the connection closes: drops a queued request and waits for a checkpoint of it that is
 * running. A no-op for an entry never attached. Never call it on the checkpointer's thread (its
 * own code never does). */
void sqlite_ckpt_detach(sqlite_ckpt *c);

#endif

/*
 * libsync — executor: a thread-safe FIFO of jobs that one host thread runs.
 *
 * A binding whose language may only be entered on one thread (Node's main thread, a GUI thread)
 * hands the callbacks that libsync raises on other threads (the server's service thread, an
 * engine used from worker threads) to an executor. Any thread posts; the host thread runs. The
 * executor does not own a loop: the binding supplies `wake`, which makes its loop call
 * sync_executor_run() soon (Node: uv_async_send on a uv_async_t whose callback runs it).
 *
 * Ownership of a job: from the call to sync_executor_post(), the executor owns `job` and hands it
 * back exactly once: to `run` when the host thread runs it (run then owns it and releases it), or
 * to `drop` when it never runs (the post failed, or the executor was closed or freed first). A
 * job is never given to both.
 */
#ifndef LIBSYNC_EXECUTOR_H
#define LIBSYNC_EXECUTOR_H

#include "libsync/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Opaque executor handle. */
typedef struct sync_executor sync_executor;

/** Runs one job on the host thread; owns `job` from then on. */
typedef void (*sync_executor_run_cb)(void *job);

/** Releases a job that will never run; may be called on any thread, including the poster's. */
typedef void (*sync_executor_drop_cb)(void *job);

/**
 * Creates an executor. `wake` (may be NULL when the host polls) is called with `userdata` each
 * time the queue goes from empty to non-empty, on the posting thread and without the executor's
 * lock held, so it may post itself; it must not close or free the executor. `free_userdata` runs
 * exactly once (common.h), also when this fails.
 * Errors: SYNC_EINVAL (NULL out), SYNC_ENOMEM.
 */
SYNC_EXTERN int sync_executor_new(sync_executor **out, void (*wake)(void *userdata), void *userdata,
                                  sync_free_cb free_userdata);

/**
 * Queues `job` to be run by `run(job)` on the host thread; any thread; jobs posted to one
 * executor run in the order their posts returned. On failure `drop(job)` (when not NULL) runs
 * before this returns, so the caller never releases a job it posted.
 * Errors: SYNC_EINVAL (NULL ex or run), SYNC_ECLOSED (after sync_executor_close), SYNC_ENOMEM.
 */
SYNC_EXTERN int sync_executor_post(sync_executor *ex, sync_executor_run_cb run,
                                   sync_executor_drop_cb drop, void *job);

/**
 * Host thread: runs the queued jobs one by one, oldest first, until the queue is empty,
 * including jobs posted while it runs (a job may post). Returns how many ran; 0 for NULL.
 */
SYNC_EXTERN size_t sync_executor_run(sync_executor *ex);

/** How many jobs are queued and not yet taken by sync_executor_run; 0 for NULL. Any thread. */
SYNC_EXTERN size_t sync_executor_pending(sync_executor *ex);

/**
 * Refuses further posts (they fail with SYNC_ECLOSED and drop their job) and drops every queued
 * job, oldest first, on the calling thread. When it returns, no call to `wake` is in progress and
 * none will start, so the binding may close what `wake` uses (Node: the uv_async_t). A job that a
 * running sync_executor_run already took still runs. Not from `wake` or from a job; a second call
 * is a no-op; NULL is a no-op.
 */
SYNC_EXTERN void sync_executor_close(sync_executor *ex);

/**
 * Closes (see sync_executor_close) and releases the executor, then runs free_userdata. Only once
 * no other thread can still call into it. NULL is a no-op.
 */
SYNC_EXTERN void sync_executor_free(sync_executor *ex);

#ifdef __cplusplus
}
#endif

#endif /* LIBSYNC_EXECUTOR_H */

/* The executor (executor.h): several threads post, one host thread runs. Run under TSan too
 * (label threads): the queue and the wake-up accounting must be race-free, every job must run
 * exactly once, each poster's jobs in its order, and every job that cannot run must be dropped
 * exactly once. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "check.h"
#include "libsync/libsync.h"

#define POSTERS 4
#define PER_POSTER 5000

/* A job numbered by who posted it; `ran`/`dropped` count how often each fate met it. */
typedef struct job {
    int poster;
    int seq;
} job;

static atomic_int ran_count[POSTERS][PER_POSTER];
static int last_seq[POSTERS]; /* host thread only */
static int order_errors;      /* host thread only */
static atomic_int dropped_total;
static atomic_int wakes;

static void job_run(void *p)
{
    job *j = p;
    atomic_fetch_add(&ran_count[j->poster][j->seq], 1);
    if (j->seq != last_seq[j->poster] + 1)
        order_errors++;
    last_seq[j->poster] = j->seq;
    free(j);
}

static void job_drop(void *p)
{
    atomic_fetch_add(&dropped_total, 1);
    free(p);
}

static void count_wake(void *userdata)
{
    atomic_fetch_add((atomic_int *)userdata, 1);
}

typedef struct poster_arg {
    sync_executor *ex;
    int poster;
    atomic_int *failures;
} poster_arg;

static void *poster(void *p)
{
    poster_arg *a = p;
    for (int i = 0; i < PER_POSTER; i++) {
        job *j = malloc(sizeof *j);
        if (!j)
            abort();
        j->poster = a->poster;
        j->seq = i;
        if (sync_executor_post(a->ex, job_run, job_drop, j) != SYNC_OK)
            atomic_fetch_add(a->failures, 1);
        if (i % 512 == 0)
            sched_yield();
    }
    return NULL;
}

static void test_threads_post_host_runs_in_order_exactly_once(void)
{
    memset(ran_count, 0, sizeof ran_count);
    for (int p = 0; p < POSTERS; p++)
        last_seq[p] = -1;
    order_errors = 0;
    atomic_store(&wakes, 0);
    sync_executor *ex = NULL;
    REQUIRE(sync_executor_new(&ex, count_wake, &wakes, NULL) == SYNC_OK);
    atomic_int failures = 0;
    pthread_t threads[POSTERS];
    poster_arg args[POSTERS];
    for (int p = 0; p < POSTERS; p++) {
        args[p] = (poster_arg){ex, p, &failures};
        REQUIRE(pthread_create(&threads[p], NULL, poster, &args[p]) == 0);
    }
    /* The host thread runs while the posters post; bounded so a lost job fails, not hangs. */
    size_t total = 0;
    int64_t deadline = sync_now_ms() + 60000;
    while (total < (size_t)POSTERS * PER_POSTER && sync_now_ms() < deadline) {
        size_t n = sync_executor_run(ex);
        total += n;
        if (n == 0)
            sched_yield();
    }
    for (int p = 0; p < POSTERS; p++)
        pthread_join(threads[p], NULL);
    total += sync_executor_run(ex);
    CHECK_EQ_INT(atomic_load(&failures), 0);
    CHECK_EQ_INT(total, POSTERS * PER_POSTER);
    CHECK_EQ_INT(order_errors, 0);
    int wrong = 0;
    for (int p = 0; p < POSTERS; p++)
        for (int i = 0; i < PER_POSTER; i++)
            wrong += atomic_load(&ran_count[p][i]) != 1;
    CHECK_EQ_INT(wrong, 0);
    /* At least one wake-up, and never more than one per post. */
    CHECK(atomic_load(&wakes) >= 1);
    CHECK(atomic_load(&wakes) <= POSTERS * PER_POSTER);
    CHECK_EQ_INT(sync_executor_pending(ex), 0);
    sync_executor_free(ex);
}

/* ---- single-threaded cases: exact counts -------------------------------------------------- */

static int trace[16];
static int trace_len;

static void trace_run(void *p)
{
    int v = (int)(intptr_t)p;
    if (trace_len < 16)
        trace[trace_len++] = v;
}

static int drops[16];

static void trace_drop(void *p)
{
    drops[(int)(intptr_t)p]++;
}

static void reset_trace(void)
{
    trace_len = 0;
    memset(drops, 0, sizeof drops);
}

static void test_wake_only_when_queue_becomes_non_empty(void)
{
    reset_trace();
    atomic_int w = 0;
    sync_executor *ex = NULL;
    REQUIRE(sync_executor_new(&ex, count_wake, &w, NULL) == SYNC_OK);
    CHECK_EQ_INT(atomic_load(&w), 0);
    CHECK_EQ_INT(sync_executor_post(ex, trace_run, trace_drop, (void *)1), SYNC_OK);
    CHECK_EQ_INT(atomic_load(&w), 1);
    CHECK_EQ_INT(sync_executor_post(ex, trace_run, trace_drop, (void *)2), SYNC_OK);
    CHECK_EQ_INT(sync_executor_post(ex, trace_run, trace_drop, (void *)3), SYNC_OK);
    CHECK_EQ_INT(atomic_load(&w), 1); /* still non-empty: no second wake */
    CHECK_EQ_INT(sync_executor_pending(ex), 3);
    CHECK_EQ_INT(sync_executor_run(ex), 3);
    CHECK_EQ_INT(trace_len, 3);
    CHECK(trace[0] == 1 && trace[1] == 2 && trace[2] == 3);
    CHECK_EQ_INT(sync_executor_pending(ex), 0);
    CHECK_EQ_INT(sync_executor_run(ex), 0);
    CHECK_EQ_INT(sync_executor_post(ex, trace_run, trace_drop, (void *)4), SYNC_OK);
    CHECK_EQ_INT(atomic_load(&w), 2); /* empty again, so this one wakes */
    CHECK_EQ_INT(sync_executor_run(ex), 1);
    sync_executor_free(ex);
    for (int i = 0; i < 16; i++)
        CHECK_EQ_INT(drops[i], 0);
}

/* A job that posts more: run keeps going until the queue is empty, in order. */
static sync_executor *reposting_ex;

static void repost_run(void *p)
{
    int v = (int)(intptr_t)p;
    trace_run(p);
    if (v < 5)
        sync_executor_post(reposting_ex, repost_run, trace_drop, (void *)(intptr_t)(v + 1));
}

static void test_jobs_posted_while_running_run_in_the_same_call(void)
{
    reset_trace();
    atomic_int w = 0;
    REQUIRE(sync_executor_new(&reposting_ex, count_wake, &w, NULL) == SYNC_OK);
    CHECK_EQ_INT(sync_executor_post(reposting_ex, repost_run, trace_drop, (void *)1), SYNC_OK);
    CHECK_EQ_INT(sync_executor_run(reposting_ex), 5);
    CHECK_EQ_INT(trace_len, 5);
    for (int i = 0; i < trace_len; i++)
        CHECK_EQ_INT(trace[i], i + 1);
    sync_executor_free(reposting_ex);
    reposting_ex = NULL;
}

static void test_close_drops_queued_and_later_posts_once(void)
{
    reset_trace();
    atomic_int w = 0;
    sync_executor *ex = NULL;
    REQUIRE(sync_executor_new(&ex, count_wake, &w, NULL) == SYNC_OK);
    CHECK_EQ_INT(sync_executor_post(ex, trace_run, trace_drop, (void *)1), SYNC_OK);
    CHECK_EQ_INT(sync_executor_post(ex, trace_run, trace_drop, (void *)2), SYNC_OK);
    sync_executor_close(ex);
    CHECK_EQ_INT(drops[1], 1);
    CHECK_EQ_INT(drops[2], 1);
    CHECK_EQ_INT(sync_executor_pending(ex), 0);
    CHECK_EQ_INT(sync_executor_post(ex, trace_run, trace_drop, (void *)3), SYNC_ECLOSED);
    CHECK_EQ_INT(drops[3], 1);
    CHECK(strstr(sync_error_last(), "closed") != NULL);
    CHECK_EQ_INT(atomic_load(&w), 1); /* a refused post wakes nobody */
    sync_executor_close(ex);          /* twice: nothing more dropped */
    CHECK_EQ_INT(sync_executor_run(ex), 0);
    sync_executor_free(ex);
    CHECK_EQ_INT(trace_len, 0);
    CHECK(drops[1] == 1 && drops[2] == 1 && drops[3] == 1);
}

static void test_free_drops_queued_jobs(void)
{
    reset_trace();
    sync_executor *ex = NULL;
    REQUIRE(sync_executor_new(&ex, NULL, NULL, NULL) == SYNC_OK); /* a polling host: no wake */
    for (int i = 1; i <= 4; i++)
        CHECK_EQ_INT(sync_executor_post(ex, trace_run, trace_drop, (void *)(intptr_t)i), SYNC_OK);
    sync_executor_free(ex);
    CHECK_EQ_INT(trace_len, 0);
    for (int i = 1; i <= 4; i++)
        CHECK_EQ_INT(drops[i], 1);
}

static int userdata_freed;

static void free_userdata(void *userdata)
{
    (void)userdata;
    userdata_freed++;
}

static void test_userdata_freed_once_on_every_path(void)
{
    userdata_freed = 0;
    CHECK_EQ_INT(sync_executor_new(NULL, count_wake, &userdata_freed, free_userdata), SYNC_EINVAL);
    CHECK_EQ_INT(userdata_freed, 1);
    CHECK(strstr(sync_error_last(), "out") != NULL);

    userdata_freed = 0;
    sync_executor *ex = NULL;
    REQUIRE(sync_executor_new(&ex, NULL, &userdata_freed, free_userdata) == SYNC_OK);
    sync_executor_close(ex);
    CHECK_EQ_INT(userdata_freed, 0); /* close keeps it: free releases it */
    sync_executor_free(ex);
    CHECK_EQ_INT(userdata_freed, 1);
    sync_executor_free(NULL);
    sync_executor_close(NULL);
}

static void test_bad_arguments_drop_the_job(void)
{
    reset_trace();
    CHECK_EQ_INT(sync_executor_post(NULL, trace_run, trace_drop, (void *)1), SYNC_EINVAL);
    CHECK_EQ_INT(drops[1], 1);
    sync_executor *ex = NULL;
    REQUIRE(sync_executor_new(&ex, NULL, NULL, NULL) == SYNC_OK);
    CHECK_EQ_INT(sync_executor_post(ex, NULL, trace_drop, (void *)2), SYNC_EINVAL);
    CHECK_EQ_INT(drops[2], 1);
    CHECK_EQ_INT(sync_executor_post(ex, NULL, NULL, (void *)3), SYNC_EINVAL); /* no drop: fine */
    CHECK_EQ_INT(sync_executor_run(NULL), 0);
    CHECK_EQ_INT(sync_executor_pending(NULL), 0);
    CHECK_EQ_INT(sync_executor_run(ex), 0);
    sync_executor_free(ex);
}

/* close() waits for a wake-up in progress on another thread: once it returns the binding may
 * tear down what wake uses. The wake here sleeps, and records whether it was still inside when
 * close returned. */
typedef struct slow_wake {
    atomic_int inside;
    atomic_int entered;
} slow_wake;

static void slow_wake_cb(void *userdata)
{
    slow_wake *s = userdata;
    atomic_store(&s->inside, 1);
    atomic_store(&s->entered, 1);
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
    atomic_store(&s->inside, 0);
}

typedef struct one_post {
    sync_executor *ex;
    int status;
} one_post;

static void *post_one(void *p)
{
    one_post *o = p;
    o->status = sync_executor_post(o->ex, trace_run, trace_drop, (void *)7);
    return NULL;
}

static void test_close_waits_for_a_wake_in_progress(void)
{
    reset_trace();
    slow_wake s = {0, 0};
    sync_executor *ex = NULL;
    REQUIRE(sync_executor_new(&ex, slow_wake_cb, &s, NULL) == SYNC_OK);
    one_post o = {ex, 99};
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, post_one, &o) == 0);
    int64_t deadline = sync_now_ms() + 30000;
    while (!atomic_load(&s.entered) && sync_now_ms() < deadline)
        sched_yield();
    REQUIRE(atomic_load(&s.entered));
    sync_executor_close(ex);
    CHECK_EQ_INT(atomic_load(&s.inside), 0);
    pthread_join(t, NULL);
    CHECK_EQ_INT(o.status, SYNC_OK); /* it was queued before close, then dropped by close */
    CHECK_EQ_INT(drops[7], 1);
    CHECK_EQ_INT(trace_len, 0);
    sync_executor_free(ex);
}

int main(void)
{
    RUN(test_threads_post_host_runs_in_order_exactly_once);
    RUN(test_wake_only_when_queue_becomes_non_empty);
    RUN(test_jobs_posted_while_running_run_in_the_same_call);
    RUN(test_close_drops_queued_and_later_posts_once);
    RUN(test_free_drops_queued_jobs);
    RUN(test_userdata_freed_once_on_every_path);
    RUN(test_bad_arguments_drop_the_job);
    RUN(test_close_waits_for_a_wake_in_progress);
    return check_summary();
}

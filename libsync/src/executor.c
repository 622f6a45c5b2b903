/* The executor (executor.h): a mutex-guarded singly linked FIFO. Each post allocates its own
 * node: a job is the caller's opaque pointer, so the library imposes no link field or struct
 * layout on it, and a binding's job type stays its own. */
#include <pthread.h>
#include <stdlib.h>

#include "error.h"
#include "libsync/executor.h"

typedef struct sync_executor_node {
    struct sync_executor_node *next;
    sync_executor_run_cb run;
    sync_executor_drop_cb drop;
    void *job;
} sync_executor_node;

struct sync_executor {
    pthread_mutex_t lock;
    pthread_cond_t idle;             /* signalled when `waking` drops to 0 after close */
    sync_executor_node *head, *tail; /* guarded by lock */
    size_t queued;                   /* guarded by lock */
    int closed;                      /* guarded by lock */
    int waking;                      /* guarded by lock: wake calls in progress */
    void (*wake)(void *userdata);
    void *userdata;
    sync_free_cb free_userdata;
};

/* A failed creation keeps the ownership rule (common.h): the userdata is released once. */
static int new_failed(void *userdata, sync_free_cb free_userdata, int status, const char *why)
{
    if (free_userdata)
        free_userdata(userdata);
    return sync__fail(status, "%s", why);
}

int sync_executor_new(sync_executor **out, void (*wake)(void *userdata), void *userdata,
                      sync_free_cb free_userdata)
{
    if (!out)
        return new_failed(userdata, free_userdata, SYNC_EINVAL, "sync_executor_new: out is NULL");
    *out = NULL;
    sync_executor *ex = calloc(1, sizeof *ex);
    if (!ex)
        return new_failed(userdata, free_userdata, SYNC_ENOMEM, "out of memory for an executor");
    if (pthread_mutex_init(&ex->lock, NULL) != 0) {
        free(ex);
        return new_failed(userdata, free_userdata, SYNC_ENOMEM,
                          "cannot create the executor's mutex");
    }
    if (pthread_cond_init(&ex->idle, NULL) != 0) {
        pthread_mutex_destroy(&ex->lock);
        free(ex);
        return new_failed(userdata, free_userdata, SYNC_ENOMEM,
                          "cannot create the executor's condition variable");
    }
    ex->wake = wake;
    ex->userdata = userdata;
    ex->free_userdata = free_userdata;
    *out = ex;
    sync__error_clear();
    return SYNC_OK;
}

/* A job that will not run goes to its drop callback before the post returns (executor.h). */
static int post_failed(sync_executor_drop_cb drop, void *job, int status, const char *why)
{
    if (drop)
        drop(job);
    return sync__fail(status, "%s", why);
}

int sync_executor_post(sync_executor *ex, sync_executor_run_cb run, sync_executor_drop_cb drop,
                       void *job)
{
    if (!ex || !run)
        return post_failed(drop, job, SYNC_EINVAL,
                           ex ? "sync_executor_post: run is NULL"
                              : "sync_executor_post: executor is NULL");
    sync_executor_node *node = malloc(sizeof *node);
    if (!node)
        return post_failed(drop, job, SYNC_ENOMEM, "out of memory for an executor job");
    node->next = NULL;
    node->run = run;
    node->drop = drop;
    node->job = job;
    pthread_mutex_lock(&ex->lock);
    if (ex->closed) {
        pthread_mutex_unlock(&ex->lock);
        free(node);
        return post_failed(drop, job, SYNC_ECLOSED, "the executor is closed");
    }
    int wake = ex->head == NULL && ex->wake != NULL;
    if (ex->tail)
        ex->tail->next = node;
    else
        ex->head = node;
    ex->tail = node;
    ex->queued++;
    /* Counted under the lock so that close can wait for this call to finish before the binding
     * tears down what wake touches. */
    if (wake)
        ex->waking++;
    pthread_mutex_unlock(&ex->lock);
    if (wake) {
        ex->wake(ex->userdata);
        pthread_mutex_lock(&ex->lock);
        if (--ex->waking == 0 && ex->closed)
            pthread_cond_broadcast(&ex->idle);
        pthread_mutex_unlock(&ex->lock);
    }
    return SYNC_OK;
}

size_t sync_executor_run(sync_executor *ex)
{
    if (!ex)
        return 0;
    size_t ran = 0;
    for (;;) {
        /* One at a time, not the whole list: a job may close the executor, and what it has not
         * taken yet must then be dropped, not run. */
        pthread_mutex_lock(&ex->lock);
        sync_executor_node *node = ex->head;
        if (node) {
            ex->head = node->next;
            if (!ex->head)
                ex->tail = NULL;
            ex->queued--;
        }
        pthread_mutex_unlock(&ex->lock);
        if (!node)
            return ran;
        sync_executor_run_cb run = node->run;
        void *job = node->job;
        free(node);
        run(job);
        ran++;
    }
}

size_t sync_executor_pending(sync_executor *ex)
{
    if (!ex)
        return 0;
    pthread_mutex_lock(&ex->lock);
    size_t n = ex->queued;
    pthread_mutex_unlock(&ex->lock);
    return n;
}

void sync_executor_close(sync_executor *ex)
{
    if (!ex)
        return;
    pthread_mutex_lock(&ex->lock);
    ex->closed = 1;
    sync_executor_node *node = ex->head;
    ex->head = ex->tail = NULL;
    ex->queued = 0;
    while (ex->waking > 0)
        pthread_cond_wait(&ex->idle, &ex->lock);
    pthread_mutex_unlock(&ex->lock);
    /* Outside the lock: a drop may post (and be refused) or release what holds a lock of its own.
     */
    while (node) {
        sync_executor_node *next = node->next;
        if (node->drop)
            node->drop(node->job);
        free(node);
        node = next;
    }
}

void sync_executor_free(sync_executor *ex)
{
    if (!ex)
        return;
    sync_executor_close(ex);
    pthread_cond_destroy(&ex->idle);
    pthread_mutex_destroy(&ex->lock);
    if (ex->free_userdata)
        ex->free_userdata(ex->userdata);
    free(ex);
}

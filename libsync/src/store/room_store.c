/* Room stores: a reference-counted vtable of many rooms' records; the adapter that binds one room
 * of a store to an engine; the store's init run exactly once however many rooms start at once;
 * and direct use (tools, administration, the server's room listing) that waits for a store that
 * finishes later. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/completion.h"
#include "engine/json_check.h"
#include "error.h"
#include "libsync/rooms.h"
#include "store_json.h"
#include "room_batch.h"
#include "room_epoch.h"
#include "engine/delta.h"

enum { INIT_NONE, INIT_RUNNING, INIT_DONE };

struct sync_room_store {
    sync_room_store_vtable vt;
    void *userdata;
    atomic_size_t refs;
    pthread_mutex_t lock; /* guards the init fields below */
    int init_state;
    int init_status;
    char *init_error;
    /* Tokens of calls that wait for the init in flight: completed with its result. */
    sync_pending **waiters;
    size_t waiter_count, waiter_cap;
    const sync__room_store_epoch *epoch; /* a built-in store's (room_epoch.h), or NULL */
    const sync__room_store_batch *batch; /* a built-in store's (room_batch.h), or NULL */
};

void sync__room_store_set_epoch_ops(sync_room_store *store, const sync__room_store_epoch *ops)
{
    if (store)
        store->epoch = ops;
}

void sync__room_store_set_batch_ops(sync_room_store *store, const sync__room_store_batch *ops)
{
    if (store)
        store->batch = ops;
}

int sync__room_store_batch_begin(sync_room_store *store)
{
    return store && store->batch ? store->batch->begin(store->userdata) : 0;
}

void sync__room_store_batch_end(sync_room_store *store)
{
    if (store && store->batch)
        store->batch->end(store->userdata);
}

int sync_room_store_new(sync_room_store **out, const sync_room_store_vtable *vtable, void *userdata)
{
    if (out)
        *out = NULL;
    if (!vtable)
        return sync__fail(SYNC_EINVAL, "sync_room_store_new: vtable is NULL");
    const char *problem = NULL;
    if (!out)
        problem = "out is NULL";
    else if (vtable->version != SYNC_ROOM_STORE_VTABLE_VERSION)
        problem = "unknown vtable version";
    else if (!vtable->load || !vtable->save || !vtable->remove || !vtable->list)
        problem = "load, save, remove and list are required";
    sync_room_store *store = problem ? NULL : calloc(1, sizeof *store);
    if (store && pthread_mutex_init(&store->lock, NULL) != 0) {
        free(store);
        store = NULL;
    }
    if (!store) {
        if (vtable->destroy)
            vtable->destroy(userdata);
        return problem ? sync__fail(SYNC_EINVAL, "sync_room_store_new: %s", problem)
                       : sync__fail(SYNC_ENOMEM, "out of memory creating a room store");
    }
    store->vt = *vtable;
    store->userdata = userdata;
    atomic_init(&store->refs, 1);
    *out = store;
    sync__error_clear();
    return SYNC_OK;
}

sync_room_store *sync_room_store_ref(sync_room_store *store)
{
    if (store)
        atomic_fetch_add_explicit(&store->refs, 1, memory_order_relaxed);
    return store;
}

void sync_room_store_free(sync_room_store *store)
{
    if (!store || atomic_fetch_sub_explicit(&store->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (store->vt.destroy)
        store->vt.destroy(store->userdata);
    free(store->init_error);
    free(store->waiters);
    pthread_mutex_destroy(&store->lock);
    free(store);
}

int sync_pending_complete_list(sync_pending *pending, int status, const char *names_json,
                               const char *error_message)
{
    /* The list travels in the token's text slot, like a loaded state. */
    return sync_pending_complete_load(pending, status, names_json, 0, error_message);
}

/* ---- init, exactly once --------------------------------------------------------------------- */

/* Records the init's result and completes every call that waited for it. */
static void init_finish(sync_room_store *store, int status, const char *error)
{
    if (status > 0 || status == SYNC_PENDING)
        status = SYNC_EIO;
    pthread_mutex_lock(&store->lock);
    store->init_state = INIT_DONE;
    store->init_status = status;
    if (status < 0)
        store->init_error = strdup(error && *error ? error : sync_strerror(status));
    sync_pending **waiters = store->waiters;
    size_t count = store->waiter_count;
    store->waiters = NULL;
    store->waiter_count = store->waiter_cap = 0;
    const char *message = status < 0 && store->init_error ? store->init_error : NULL;
    pthread_mutex_unlock(&store->lock);
    /* init_error is never written again once the state is INIT_DONE: safe to read unlocked. */
    for (size_t i = 0; i < count; i++)
        sync_pending_complete(waiters[i], status, message);
    free(waiters);
}

static void init_relayed(sync_pending *pending)
{
    sync_room_store *store = pending->relay_ctx;
    init_finish(store, pending->status, pending->error);
    sync__pending_free(pending);
    sync_room_store_free(store);
}

/* Runs the store's init (the caller set INIT_RUNNING). Returns its result, or SYNC_PENDING when
 * it finishes later: then init_relayed() finishes it. */
static int init_start(sync_room_store *store)
{
    if (!store->vt.init) {
        init_finish(store, SYNC_OK, NULL);
        return SYNC_OK;
    }
    sync_pending *pending = sync__pending_new_relay(init_relayed, store);
    if (!pending) {
        init_finish(store, SYNC_ENOMEM, "out of memory");
        return sync__fail(SYNC_ENOMEM, "out of memory");
    }
    sync_room_store_ref(store); /* for the relay: the store outlives a late completion */
    sync__error_clear();
    int rc = store->vt.init(store->userdata, pending);
    if (rc == SYNC_PENDING && !sync__pending_settle_relay(pending))
        return SYNC_PENDING;
    char *error = NULL;
    if (rc == SYNC_PENDING) {
        rc = pending->status;
        error = pending->error;
        pending->error = NULL;
    } else if (rc < 0) {
        error = strdup(sync_error_last()[0] ? sync_error_last() : sync_strerror(rc));
    }
    sync__pending_free(pending);
    init_finish(store, rc, error);
    free(error);
    sync_room_store_free(store); /* the relay's reference; the caller holds one more */
    return rc < 0 ? sync__fail(store->init_status, "%s", store->init_error ? store->init_error : "")
                  : SYNC_OK;
}

/* The outcome of a finished init, as a return value with its message. Lock held. */
static int init_result_locked(sync_room_store *store)
{
    /* A store whose init kept something corrupt aside works: the calls that waited for that init
     * were told, later ones go on. */
    if (store->init_status >= 0 || store->init_status == SYNC_ECORRUPT)
        return SYNC_OK;
    return sync__fail(store->init_status, "room store init failed: %s",
                      store->init_error ? store->init_error : sync_strerror(store->init_status));
}

static int add_waiter_locked(sync_room_store *store, sync_pending *pending)
{
    if (store->waiter_count == store->waiter_cap) {
        size_t cap = store->waiter_cap ? store->waiter_cap * 2 : 8;
        sync_pending **grown = realloc(store->waiters, cap * sizeof *grown);
        if (!grown)
            return sync__fail(SYNC_ENOMEM, "out of memory");
        store->waiters = grown;
        store->waiter_cap = cap;
    }
    store->waiters[store->waiter_count++] = pending;
    return SYNC_OK;
}

/* Makes sure the init ran before a call: SYNC_OK, its failure, or SYNC_PENDING after queueing
 * `pending` to be completed with the init's result. */
static int init_once(sync_room_store *store, sync_pending *pending)
{
    pthread_mutex_lock(&store->lock);
    if (store->init_state == INIT_NONE) {
        store->init_state = INIT_RUNNING;
        pthread_mutex_unlock(&store->lock);
        int rc = init_start(store);
        if (rc != SYNC_PENDING)
            return rc;
        pthread_mutex_lock(&store->lock);
    }
    int rc;
    if (store->init_state == INIT_DONE)
        rc = init_result_locked(store);
    else
        rc = add_waiter_locked(store, pending) == SYNC_OK ? SYNC_PENDING : SYNC_ENOMEM;
    pthread_mutex_unlock(&store->lock);
    return rc;
}

/* ---- the adapter of one room ---------------------------------------------------------------- */

/* One block per loaded room, its name inside. */
typedef struct room_adapter {
    sync_room_store *store;
    /* the engine's (sync__adapter_epoch.set: its buffer, not a copy), written with the next save;
     * NULL until set, or when not valid */
    const char *epoch;
    /* what the store holds, as far as we know: the record's at load, which the engine adopts
     * right after it (so it is also the loaded epoch; one buffer less per loaded room) */
    char stored_epoch[SYNC__EPOCH_MAX + 1];
    char room[];
} room_adapter;

static const char *room_epoch_loaded(void *userdata)
{
    return ((room_adapter *)userdata)->stored_epoch;
}

static void room_epoch_set(void *userdata, const char *epoch)
{
    room_adapter *ra = userdata;
    ra->epoch = sync__epoch_valid(epoch) ? epoch : NULL;
}

static const sync__adapter_epoch room_epoch = {room_epoch_loaded, room_epoch_set};

static int room_init(void *userdata, sync_pending *pending)
{
    room_adapter *ra = userdata;
    return init_once(ra->store, pending);
}

static int room_load(void *userdata, sync_pending *pending, char **out_state_json,
                     int64_t *out_version)
{
    room_adapter *ra = userdata;
    if (ra->store->epoch) {
        int rc = ra->store->epoch->load(ra->store->userdata, pending, ra->room, out_state_json,
                                        out_version, ra->stored_epoch);
        return rc; /* the built-in stores finish at once: what they read is what it holds */
    }
    return ra->store->vt.load(ra->store->userdata, pending, ra->room, out_state_json, out_version);
}

static int room_save(void *userdata, sync_pending *pending, const cJSON *state,
                     const char *state_json, size_t state_len, int64_t version)
{
    room_adapter *ra = userdata;
    if (ra->store->epoch) {
        /* the epoch is written by the first save that finds the store without it */
        int fresh = ra->epoch && strcmp(ra->epoch, ra->stored_epoch) != 0;
        int rc = ra->store->epoch->save(ra->store->userdata, pending, ra->room, state, state_json,
                                        state_len, version, ra->epoch, fresh, ra->stored_epoch);
        if (rc == SYNC_OK && fresh)
            snprintf(ra->stored_epoch, sizeof ra->stored_epoch, "%s", ra->epoch);
        return rc;
    }
    return ra->store->vt.save(ra->store->userdata, pending, ra->room, state, state_json, state_len,
                              version);
}

static void room_destroy(void *userdata)
{
    room_adapter *ra = userdata;
    sync_room_store_free(ra->store);
    free(ra);
}

int sync_room_store_adapter(sync_adapter **out, sync_room_store *store, const char *room)
{
    if (out)
        *out = NULL;
    if (!out || !store)
        return sync__fail(SYNC_EINVAL, "sync_room_store_adapter: out and store are required");
    int rc = sync_room_name_check(room);
    if (rc != SYNC_OK)
        return rc;
    size_t room_len = strlen(room);
    room_adapter *ra = calloc(1, sizeof *ra + room_len + 1);
    if (!ra)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    memcpy(ra->room, room, room_len + 1);
    ra->store = sync_room_store_ref(store);
    sync_adapter_vtable vt = {
        .version = SYNC_ADAPTER_VTABLE_VERSION,
        .init = room_init,
        .load = room_load,
        .save = room_save,
        .backup = NULL,
        .destroy = room_destroy,
    };
    int kept = store->epoch != NULL;
    rc = sync_adapter_new(out, &vt, ra);
    if (rc == SYNC_OK) {
        if (kept)
            sync__adapter_set_epoch_ops(*out, &room_epoch);
        sync__error_clear();
    }
    return rc;
}

/* ---- direct use ----------------------------------------------------------------------------- */

typedef struct waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
} waiter;

static void waiter_init(waiter *w)
{
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->done = 0;
}

static void waiter_destroy(waiter *w)
{
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
}

static void waiter_wake(sync_pending *pending)
{
    waiter *w = pending->relay_ctx;
    pthread_mutex_lock(&w->lock);
    w->done = 1;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static void waiter_wait(waiter *w)
{
    pthread_mutex_lock(&w->lock);
    while (!w->done)
        pthread_cond_wait(&w->cond, &w->lock);
    pthread_mutex_unlock(&w->lock);
}

/* A token's late result as a return value (the message into sync_error_last()). */
static int token_result(sync_pending *pending, char **out_json, int64_t *out_version)
{
    int rc = pending->status;
    if (rc < 0) {
        sync__fail(rc, "%s", pending->error ? pending->error : sync_strerror(rc));
    } else {
        if (out_json) {
            *out_json = pending->state_json;
            pending->state_json = NULL;
        }
        if (out_version)
            *out_version = pending->version;
    }
    return rc;
}

/* Waits until the init ran (running it if nobody has). */
static int direct_init(sync_room_store *store)
{
    waiter w;
    waiter_init(&w);
    sync_pending *pending = sync__pending_new_relay(waiter_wake, &w);
    if (!pending) {
        waiter_destroy(&w);
        return sync__fail(SYNC_ENOMEM, "out of memory");
    }
    /* A queued token is completed from outside: it must look like a call that returned
     * SYNC_PENDING. Set before init_once() publishes it. */
    pending->in_call = 0;
    pending->awaiting = 1;
    int rc = init_once(store, pending);
    if (rc == SYNC_PENDING) {
        waiter_wait(&w);
        rc = token_result(pending, NULL, NULL);
    }
    sync__pending_free(pending);
    waiter_destroy(&w);
    return rc;
}

typedef enum room_call { RC_LOAD, RC_SAVE, RC_REMOVE, RC_LIST } room_call;

/* One store call, waiting for it when the store finishes later. */
static int direct_call(sync_room_store *store, room_call call, const char *room, const cJSON *state,
                       const char *state_json, int64_t version, char **out_json,
                       int64_t *out_version)
{
    int rc = direct_init(store);
    if (rc < 0 && rc != SYNC_ECORRUPT)
        return rc;
    waiter w;
    waiter_init(&w);
    sync_pending *pending = sync__pending_new_relay(waiter_wake, &w);
    if (!pending) {
        waiter_destroy(&w);
        return sync__fail(SYNC_ENOMEM, "out of memory");
    }
    char *json = NULL;
    int64_t loaded_version = 0;
    sync__error_clear();
    void *ud = store->userdata;
    switch (call) {
    case RC_LOAD:
        rc = store->vt.load(ud, pending, room, &json, &loaded_version);
        break;
    case RC_SAVE:
        rc = store->vt.save(ud, pending, room, state, state_json, strlen(state_json), version);
        break;
    case RC_REMOVE:
        rc = store->vt.remove(ud, pending, room);
        break;
    case RC_LIST:
        rc = store->vt.list(ud, pending, &json);
        break;
    }
    if (rc == SYNC_PENDING) {
        free(json);
        json = NULL;
        if (!sync__pending_settle_relay(pending))
            waiter_wait(&w);
        rc = token_result(pending, &json, &loaded_version);
    } else if (rc > 0) {
        rc = sync__fail(SYNC_EIO, "the room store returned %d", rc);
    } else if (rc < 0 && !sync_error_last()[0]) {
        sync__fail(rc, "%s", sync_strerror(rc));
    }
    sync__pending_free(pending);
    waiter_destroy(&w);
    if (rc < 0) {
        free(json);
        return rc;
    }
    if (out_json)
        *out_json = json;
    else
        free(json);
    if (out_version)
        *out_version = loaded_version;
    return SYNC_OK;
}

static int compare_names(const void *a, const void *b)
{
    const cJSON *x = *(const cJSON *const *)a;
    const cJSON *y = *(const cJSON *const *)b;
    return strcmp(x->valuestring, y->valuestring); /* unsigned bytes: UTF-8 code point order */
}

/* The store's list, checked and sorted by byte value. */
static int sorted_names(const char *listed, char **out)
{
    cJSON *array = NULL;
    int rc = listed ? sync__json_parse(listed, strlen(listed), 8, &array) : SYNC_OK;
    if (rc != SYNC_OK)
        return sync__fail(SYNC_EIO, "the room store listed names that are not JSON: %s",
                          sync_error_last());
    if (!listed && !(array = cJSON_CreateArray()))
        return sync__fail(SYNC_ENOMEM, "out of memory");
    if (!cJSON_IsArray(array)) {
        cJSON_Delete(array);
        return sync__fail(SYNC_EIO, "the room store listed names that are not a JSON array");
    }
    int count = cJSON_GetArraySize(array);
    cJSON **items = count ? malloc((size_t)count * sizeof *items) : NULL;
    if (count && !items) {
        cJSON_Delete(array);
        return sync__fail(SYNC_ENOMEM, "out of memory");
    }
    int n = 0;
    for (cJSON *item = array->child; item; item = item->next) {
        if (!cJSON_IsString(item)) {
            free(items);
            cJSON_Delete(array);
            return sync__fail(SYNC_EIO, "the room store listed a name that is not a string");
        }
        items[n++] = item;
    }
    if (n > 1)
        qsort(items, (size_t)n, sizeof *items, compare_names);
    /* Relink in sorted order. */
    array->child = NULL;
    for (int i = 0; i < n; i++) {
        items[i]->next = i + 1 < n ? items[i + 1] : NULL;
        items[i]->prev = i > 0 ? items[i - 1] : items[n - 1]; /* cJSON: child->prev is the tail */
    }
    if (n)
        array->child = items[0];
    free(items);
    *out = store_print(array);
    cJSON_Delete(array);
    if (!*out)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    return SYNC_OK;
}

int sync_room_store_list(sync_room_store *store, char **out_names_json)
{
    if (out_names_json)
        *out_names_json = NULL;
    if (!store || !out_names_json)
        return sync__fail(SYNC_EINVAL, "sync_room_store_list: store and out are required");
    char *listed = NULL;
    int rc = direct_call(store, RC_LIST, NULL, NULL, NULL, 0, &listed, NULL);
    if (rc < 0)
        return rc;
    rc = sorted_names(listed, out_names_json);
    free(listed);
    if (rc == SYNC_OK)
        sync__error_clear();
    return rc;
}

int sync_room_store_load(sync_room_store *store, const char *room, char **out_state_json,
                         int64_t *out_version)
{
    if (out_state_json)
        *out_state_json = NULL;
    if (out_version)
        *out_version = 0;
    if (!store || !out_state_json || !out_version)
        return sync__fail(SYNC_EINVAL, "sync_room_store_load: store and outputs are required");
    int rc = sync_room_name_check(room);
    if (rc == SYNC_OK)
        rc = direct_call(store, RC_LOAD, room, NULL, NULL, 0, out_state_json, out_version);
    if (rc == SYNC_OK)
        sync__error_clear();
    return rc;
}

int sync_room_store_save(sync_room_store *store, const char *room, const char *state_json,
                         int64_t version)
{
    if (!store || !state_json)
        return sync__fail(SYNC_EINVAL, "sync_room_store_save: store and state_json are required");
    int rc = sync_room_name_check(room);
    if (rc != SYNC_OK)
        return rc;
    cJSON *state = NULL;
    rc = sync__json_parse(state_json, strlen(state_json), 0, &state);
    if (rc != SYNC_OK)
        return sync__fail(rc, "sync_room_store_save: state_json: %s", sync_error_last());
    rc = direct_call(store, RC_SAVE, room, state, state_json, version, NULL, NULL);
    cJSON_Delete(state);
    if (rc == SYNC_OK)
        sync__error_clear();
    return rc;
}

int sync_room_store_remove(sync_room_store *store, const char *room)
{
    if (!store)
        return sync__fail(SYNC_EINVAL, "sync_room_store_remove: store is NULL");
    int rc = sync_room_name_check(room);
    if (rc == SYNC_OK)
        rc = direct_call(store, RC_REMOVE, room, NULL, NULL, 0, NULL, NULL);
    if (rc == SYNC_OK)
        sync__error_clear();
    return rc;
}

/* The Redis room store: room NAME in the hash "<prefix>room:NAME", the names in the set
 * "<prefix>rooms", both written in one MULTI/EXEC (redis_conn.h); one connection that a mutex
 * hands to one call at a time (calls for different rooms come from many threads). */
#include "engine/completion.h"
#include "engine/delta.h"
#include "error.h"
#include "options.h"
#include "redis_conn.h"
#include "room_epoch.h"
#include "store_json.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libsync/rooms.h"

#ifdef LIBSYNC_HAVE_REDIS

typedef struct redis_rooms {
    pthread_mutex_t lock;
    redis_conn conn;
    char *set_key;
} redis_rooms;

static char *room_key(const redis_rooms *rr, const char *room)
{
    char *key = NULL;
    return asprintf(&key, "%sroom:%s", rr->conn.prefix, room) < 0 ? NULL : key;
}

/* No init: a room store's init runs once and its failure fails the store for good, while a Redis
 * that is down now may be up for the next room; every call connects when it is not connected. */

static int rooms_load_epoch(void *userdata, sync_pending *pending, const char *room,
                            char **out_state_json, int64_t *out_version, char *epoch)
{
    (void)pending;
    redis_rooms *rr = userdata;
    *out_state_json = NULL;
    *out_version = 0;
    if (epoch)
        epoch[0] = '\0';
    int rc = sync_room_name_check(room);
    if (rc != SYNC_OK)
        return rc;
    char *key = room_key(rr, room);
    if (!key)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    char name[SYNC_ROOM_NAME_MAX + 16];
    snprintf(name, sizeof name, "room %s", room);
    pthread_mutex_lock(&rr->lock);
    rc = redis_record_load(&rr->conn, key, rr->set_key, room, name, out_state_json, out_version,
                           epoch);
    pthread_mutex_unlock(&rr->lock);
    free(key);
    return rc;
}

static int rooms_load(void *userdata, sync_pending *pending, const char *room,
                      char **out_state_json, int64_t *out_version)
{
    return rooms_load_epoch(userdata, pending, room, out_state_json, out_version, NULL);
}

/* The epoch rides in the record's HSET on every save: it costs a few bytes and the record and
 * its history can never part. */
static int rooms_save_epoch(void *userdata, sync_pending *pending, const char *room,
                            const cJSON *state, const char *state_json, size_t state_len,
                            int64_t version, const char *epoch, int fresh, char *stored)
{
    (void)pending;
    (void)fresh;
    (void)stored;
    redis_rooms *rr = userdata;
    int rc = sync_room_name_check(room);
    if (rc != SYNC_OK)
        return rc;
    char *printed = NULL;
    rc = store_state_text(state, &state_json, &state_len, &printed);
    if (rc != SYNC_OK)
        return rc;
    char *key = room_key(rr, room);
    if (!key) {
        cJSON_free(printed);
        return sync__fail(SYNC_ENOMEM, "out of memory");
    }
    pthread_mutex_lock(&rr->lock);
    rc = redis_record_save(&rr->conn, key, rr->set_key, room, room, state_json, state_len, version,
                           epoch);
    pthread_mutex_unlock(&rr->lock);
    free(key);
    cJSON_free(printed);
    return rc;
}

static int rooms_save(void *userdata, sync_pending *pending, const char *room, const cJSON *state,
                      const char *state_json, size_t state_len, int64_t version)
{
    return rooms_save_epoch(userdata, pending, room, state, state_json, state_len, version, NULL, 0,
                            NULL);
}

static const sync__room_store_epoch redis_rooms_epoch = {rooms_load_epoch, rooms_save_epoch};

static int rooms_remove(void *userdata, sync_pending *pending, const char *room)
{
    (void)pending;
    redis_rooms *rr = userdata;
    int rc = sync_room_name_check(room);
    if (rc != SYNC_OK)
        return rc;
    char *key = room_key(rr, room);
    if (!key)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    const char *multi[] = {"MULTI"}, *del[] = {"DEL", key}, *srem[] = {"SREM", rr->set_key, room},
               *exec[] = {"EXEC"};
    const char *const *argv[4] = {multi, del, srem, exec};
    int argc[4] = {1, 2, 3, 1};
    const size_t *lens[4] = {NULL, NULL, NULL, NULL};
    redisReply *replies[4] = {NULL, NULL, NULL, NULL};
    pthread_mutex_lock(&rr->lock);
    rc = redis_conn_run(&rr->conn, 4, argc, argv, lens, replies, "cannot remove a room from");
    if (rc == SYNC_OK) {
        for (int i = 0; i < 4 && rc == SYNC_OK; i++)
            if (replies[i]->type == REDIS_REPLY_ERROR ||
                (i == 3 && replies[i]->type != REDIS_REPLY_ARRAY))
                rc = redis_conn_reply_fail(&rr->conn, replies[i], "cannot remove a room from");
    }
    pthread_mutex_unlock(&rr->lock);
    for (int i = 0; i < 4; i++)
        if (replies[i])
            freeReplyObject(replies[i]);
    free(key);
    return rc;
}

static int rooms_list(void *userdata, sync_pending *pending, char **out_names_json)
{
    (void)pending;
    redis_rooms *rr = userdata;
    *out_names_json = NULL;
    const char *argv[] = {"SMEMBERS", rr->set_key};
    redisReply *reply = NULL;
    pthread_mutex_lock(&rr->lock);
    int rc = redis_conn_command(&rr->conn, &reply, "cannot list the rooms of", 2, argv, NULL);
    if (rc == SYNC_OK && reply->type != REDIS_REPLY_ARRAY)
        rc = redis_conn_reply_fail(&rr->conn, reply, "cannot list the rooms of");
    pthread_mutex_unlock(&rr->lock);
    cJSON *names = rc == SYNC_OK ? cJSON_CreateArray() : NULL;
    if (rc == SYNC_OK && !names)
        rc = sync__fail(SYNC_ENOMEM, "out of memory listing rooms");
    for (size_t i = 0; rc == SYNC_OK && i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        /* A member someone else added under a name no room can have is not a room. */
        if (e->type != REDIS_REPLY_STRING || strlen(e->str) != e->len ||
            sync_room_name_check(e->str) != SYNC_OK)
            continue;
        cJSON *item = cJSON_CreateString(e->str);
        if (!item)
            rc = sync__fail(SYNC_ENOMEM, "out of memory listing rooms");
        else
            cJSON_AddItemToArray(names, item);
    }
    if (reply)
        freeReplyObject(reply);
    if (rc == SYNC_OK && !(*out_names_json = store_print(names)))
        rc = sync__fail(SYNC_ENOMEM, "out of memory listing rooms");
    cJSON_Delete(names);
    return rc;
}

static void rooms_destroy(void *userdata)
{
    redis_rooms *rr = userdata;
    if (!rr)
        return;
    redis_conn_release(&rr->conn);
    free(rr->set_key);
    pthread_mutex_destroy(&rr->lock);
    free(rr);
}

int sync_room_store_redis_new(sync_room_store **out, const sync_redis_options *opts)
{
    if (!out)
        return sync__fail(SYNC_EINVAL, "out pointer is NULL");
    *out = NULL;
    int rc = sync__check_options(opts, SYNC_REDIS_OPTIONS_VERSION, "Redis");
    if (rc != SYNC_OK)
        return rc;
    redis_rooms *rr = calloc(1, sizeof *rr);
    if (!rr)
        return sync__fail(SYNC_ENOMEM, "out of memory");
    rc = redis_conn_setup(&rr->conn, opts);
    if (rc != SYNC_OK) {
        free(rr);
        return rc;
    }
    pthread_mutex_init(&rr->lock, NULL);
    if (asprintf(&rr->set_key, "%srooms", rr->conn.prefix) < 0) {
        rr->set_key = NULL;
        rooms_destroy(rr);
        return sync__fail(SYNC_ENOMEM, "out of memory");
    }
    sync_room_store_vtable vt = {
        .version = SYNC_ROOM_STORE_VTABLE_VERSION,
        .init = NULL,
        .load = rooms_load,
        .save = rooms_save,
        .remove = rooms_remove,
        .list = rooms_list,
        .destroy = rooms_destroy,
    };
    rc = sync_room_store_new(out, &vt, rr);
    if (rc == SYNC_OK) {
        sync__room_store_set_epoch_ops(*out, &redis_rooms_epoch);
        sync__error_clear();
    }
    return rc;
}

#else

int sync_room_store_redis_new(sync_room_store **out, const sync_redis_options *opts)
{
    (void)opts;
    if (out)
        *out = NULL;
    return sync__fail(SYNC_EUNSUPPORTED,
                      "libsync was built without Redis support (LIBSYNC_WITH_REDIS=OFF)");
}

#endif

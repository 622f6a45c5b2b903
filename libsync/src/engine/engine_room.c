/* sync__engine_attach_load (engine_room.h): the late load of a room's engine. */
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "engine_room.h"
#include "error.h"
#include "json_check.h"

int sync__engine_attach_load(sync_engine *engine, const char *initial_json, sync_adapter *adapter,
                             sync_done_cb done, void *userdata)
{
    if (!engine || !done) {
        sync_adapter_free(adapter);
        return sync__fail(SYNC_EINVAL, "attach_load: engine and done are required");
    }
    cJSON *state = NULL;
    if (initial_json) {
        int rc = sync__json_parse(initial_json, strlen(initial_json), 0, &state);
        if (rc != SYNC_OK) {
            sync_adapter_free(adapter);
            return sync__fail(rc == SYNC_ENOMEM ? rc : SYNC_EINVAL, "initial state: %s",
                              sync_error_last());
        }
    }
    sync__op *load = sync__op_new(OP_LOAD);
    if (!load) {
        cJSON_Delete(state);
        sync_adapter_free(adapter);
        return sync__fail(SYNC_ENOMEM, "out of memory loading a room");
    }
    sync__engine_lock(engine);
    if (engine->disposed || engine->adapter || engine->busy || engine->conns) {
        sync__engine_unlock(engine);
        cJSON_Delete(state);
        sync_adapter_free(adapter);
        free(load);
        return sync__fail(SYNC_ESTATE, "attach_load: the engine is already in use");
    }
    if (state) {
        cJSON_Delete(engine->state);
        engine->state = state;
        /* whatever the setup read of the old state (its text, its frames) is stale now */
        sync__feed_record *head = &engine->feed.head;
        head->json_seq = 0;
        sync__frame_unref(head->update_frame);
        sync__frame_unref(head->initial_frame);
        head->update_frame = head->initial_frame = NULL;
        head->seq++;
        sync__delta_reset(engine);
    }
    if (!adapter) {
        sync__engine_unlock(engine);
        free(load);
        done(engine, SYNC_OK, userdata);
        return SYNC_OK;
    }
    engine->adapter = adapter;
    engine->initial_needs_no_save = 1;
    load->done = done;
    load->done_userdata = userdata;
    int rc = sync__op_submit(engine, load);
    sync__engine_unlock(engine);
    return rc == SYNC_PENDING ? SYNC_PENDING : SYNC_OK;
}

void sync__engine_close_all(sync_engine *engine, int code, const char *reason)
{
    sync__engine_lock(engine);
    for (sync_conn *c = engine->conns; c; c = c->next)
        sync__conn_request_close(c, code, reason);
    sync__engine_unlock(engine);
}

uint64_t sync__engine_head_seq(sync_engine *engine)
{
    sync__engine_lock(engine);
    uint64_t seq = engine->feed.head.seq;
    sync__engine_unlock(engine);
    return seq;
}

int sync__engine_head_unsaved(sync_engine *engine)
{
    sync__engine_lock(engine);
    int unsaved = engine->adapter && engine->feed.persisted_seq != engine->feed.head.seq;
    sync__engine_unlock(engine);
    return unsaved;
}

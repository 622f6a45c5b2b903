/*
 * Rooms (rooms.h) in the Node bridge; included at the end of syncengine_node.i.
 *
 * Threads, as for handlers: a room's setup runs where libsync needs the room (the service thread
 * for a join, this thread for sync_rooms_acquire_async), so it is always deferred
 * (sync_room_setup_defer), posted to the main thread through the same sync_executor queue, and
 * finished by index.js with sync_room_setup_complete. A room store written in JavaScript is posted
 * likewise and answers with SYNC_PENDING, completed by rooms.js (sync_pending_complete*). Nothing
 * here blocks the main thread: a room is acquired with sync_rooms_acquire_async (its readiness
 * posted back), and list/delete, which wait for the store, run on a libuv worker thread.
 */

%{
namespace
{

enum jsb_room_job_kind {
    RJOB_SETUP,    /* a room to set up: sink("setup", 0, setup, name, engine) */
    RJOB_READY,    /* an acquire finished: sink("acquired", token, engine, status) */
    RJOB_STORE,    /* a store call: sink(op, 0, pending, room, state_json, version) */
    RJOB_HOOKS_OFF /* a room engine let go of its hooks: sink("engine_freed", generation) */
};

struct jsb_room_job {
    jsb_room_job_kind kind;
    const char *op; /* RJOB_STORE: "init", "load", "save", "remove", "list" */
    jsb_sink *sink; /* one reference held by the job */
    double slot;
    sync_room_setup *setup;
    sync_rooms *rooms;
    sync_engine *engine;
    sync_pending *pending;
    char *room;
    char *state_json;
    double version;
    int status;
};

void jsb_room_job_free(jsb_room_job *job)
{
    free(job->room);
    free(job->state_json);
    if (job->sink)
        jsb_sink_unref(job->sink);
    free(job);
}

/* What a job that never reaches JavaScript must still finish, so that no setup, acquire or store
 * call waits for ever. Pure C. While Node exits a server may already be freed, and with it its
 * deferred setups and holds: only the store's pending calls, which a server being freed waits
 * for, are finished then. */
void jsb_room_job_abandon(jsb_room_job *job)
{
    bool exiting = jsb_shutting_down.load();
    switch (job->kind) {
    case RJOB_SETUP:
        if (!exiting)
            sync_room_setup_complete(job->setup, SYNC_ECLOSED);
        break;
    case RJOB_READY:
        if (!exiting && job->status >= 0 && job->engine)
            sync_rooms_release(job->rooms, job->engine);
        break;
    case RJOB_STORE:
        if (!strcmp(job->op, "load"))
            sync_pending_complete_load(job->pending, SYNC_ECLOSED, NULL, 0, "Node is exiting");
        else if (!strcmp(job->op, "list"))
            sync_pending_complete_list(job->pending, SYNC_ECLOSED, NULL, "Node is exiting");
        else
            sync_pending_complete(job->pending, SYNC_ECLOSED, "Node is exiting");
        break;
    case RJOB_HOOKS_OFF:
        break;
    }
}

void jsb_room_job_run(jsb_room_job *job)
{
    v8::Isolate *iso = v8::Isolate::GetCurrent();
    v8::HandleScope scope(iso);
    switch (job->kind) {
    case RJOB_SETUP:
        /* rooms.js owns the setup from here: it completes it once */
        jsb_call(job->sink, "setup", job->slot, jsb_ptr(job->setup, SWIGTYPE_p_sync_room_setup),
                 jsb_str(job->room), jsb_ptr(job->engine, SWIGTYPE_p_sync_engine));
        break;
    case RJOB_READY:
        jsb_call(job->sink, "acquired", job->slot, jsb_ptr(job->engine, SWIGTYPE_p_sync_engine),
                 jsb_num(job->status));
        break;
    case RJOB_STORE:
        jsb_call(job->sink, job->op, job->slot, jsb_ptr(job->pending, SWIGTYPE_p_sync_pending),
                 jsb_str(job->room), jsb_str(job->state_json), jsb_num(job->version));
        break;
    case RJOB_HOOKS_OFF:
        jsb_call(job->sink, "engine_freed", job->slot);
        break;
    }
}

void jsb_room_job_run_and_free(void *p)
{
    jsb_room_job *job = (jsb_room_job *)p;
    {
        v8::Isolate *iso = v8::Isolate::GetCurrent();
        node::CallbackScope callback_scope(iso, v8::Object::New(iso), {0, 0});
        jsb_room_job_run(job);
    }
    jsb_room_job_free(job);
}

void jsb_room_job_drop(void *p)
{
    jsb_room_job *job = (jsb_room_job *)p;
    jsb_room_job_abandon(job);
    if (!jsb_shutting_down.load()) {
        jsb_room_job_free(job);
        return;
    }
    /* V8 is gone: the sink is left to the process's end */
    free(job->room);
    free(job->state_json);
    free(job);
}

jsb_room_job *jsb_room_job_new(jsb_room_job_kind kind, jsb_sink *sink, double slot)
{
    jsb_room_job *job = (jsb_room_job *)calloc(1, sizeof *job);
    if (!job)
        return NULL;
    job->kind = kind;
    job->sink = sink;
    job->slot = slot;
    sink->refs.fetch_add(1);
    return job;
}

/* Queues a job for the main thread, as jsb_post does; a refused post finishes it (drop). */
void jsb_room_post(jsb_room_job *job)
{
    if (sync_executor_post(jsb_executor, jsb_room_job_run_and_free, jsb_room_job_drop, job) !=
        SYNC_OK)
        return;
    if (jsb_on_main_thread())
        uv_ref((uv_handle_t *)&jsb_async);
}

/* ---- setup ------------------------------------------------------------------------------- */

int jsb_room_setup_cb(sync_room_setup *setup, void *userdata)
{
    jsb_cb *cb = (jsb_cb *)userdata;
    jsb_room_job *job = jsb_room_job_new(RJOB_SETUP, cb->sink, cb->slot);
    if (!job)
        return SYNC_ENOMEM;
    job->room = strdup(sync_room_setup_name(setup));
    job->engine = sync_room_setup_engine(setup);
    if (!job->room) {
        jsb_room_job_free(job);
        return SYNC_ENOMEM;
    }
    job->setup = sync_room_setup_defer(setup);
    jsb_room_post(job);
    return SYNC_PENDING;
}

/* ---- acquire ----------------------------------------------------------------------------- */

struct jsb_room_wait {
    jsb_sink *sink;
    double token;
    sync_rooms *rooms;
};

void jsb_room_ready(int status, sync_engine *engine, void *userdata)
{
    jsb_room_wait *w = (jsb_room_wait *)userdata;
    jsb_room_job *job = jsb_room_job_new(RJOB_READY, w->sink, w->token);
    if (job) {
        job->rooms = w->rooms;
        job->engine = engine;
        job->status = status;
        jsb_room_post(job);
    } else if (status >= 0 && engine) {
        sync_rooms_release(w->rooms, engine); /* out of memory: never reaches JS */
    }
    jsb_sink_unref(w->sink);
    free(w);
}

/* ---- a room engine's hooks: told to JS when libsync lets go of them ----------------------- */

void jsb_room_hooks_free(void *userdata)
{
    jsb_cb *cb = (jsb_cb *)userdata;
    if (!cb)
        return;
    jsb_room_job *job = jsb_room_job_new(RJOB_HOOKS_OFF, cb->sink, cb->slot);
    if (job)
        jsb_room_post(job);
    jsb_cb_free(cb);
}

/* ---- room stores written in JavaScript ---------------------------------------------------- */

int jsb_room_store_call(void *ud, const char *op, sync_pending *pending, const char *room,
                        const char *state_json, size_t state_len, int64_t version)
{
    jsb_cb *cb = (jsb_cb *)ud;
    jsb_room_job *job = jsb_room_job_new(RJOB_STORE, cb->sink, 0);
    if (!job)
        return SYNC_ENOMEM;
    job->op = op;
    job->pending = pending;
    job->room = room ? strdup(room) : NULL;
    job->state_json = state_json ? jsb_strdup(state_json, state_len) : NULL;
    job->version = (double)version;
    if ((room && !job->room) || (state_json && !job->state_json)) {
        jsb_room_job_free(job);
        return SYNC_ENOMEM;
    }
    jsb_room_post(job);
    return SYNC_PENDING;
}

int jsb_room_store_init(void *ud, sync_pending *pending)
{
    return jsb_room_store_call(ud, "init", pending, NULL, NULL, 0, 0);
}
int jsb_room_store_load(void *ud, sync_pending *pending, const char *room, char **out_json,
                        int64_t *out_version)
{
    *out_json = NULL;
    *out_version = 0;
    return jsb_room_store_call(ud, "load", pending, room, NULL, 0, 0);
}
int jsb_room_store_save(void *ud, sync_pending *pending, const char *room, const cJSON *,
                        const char *state_json, size_t state_len, int64_t version)
{
    return jsb_room_store_call(ud, "save", pending, room, state_json, state_len, version);
}
int jsb_room_store_remove(void *ud, sync_pending *pending, const char *room)
{
    return jsb_room_store_call(ud, "remove", pending, room, NULL, 0, 0);
}
int jsb_room_store_list(void *ud, sync_pending *pending, char **out_names_json)
{
    *out_names_json = NULL;
    return jsb_room_store_call(ud, "list", pending, NULL, NULL, 0, 0);
}

/* ---- list and delete wait for the store: on a libuv worker -------------------------------- */

struct jsb_rooms_work {
    uv_work_t work;
    sync_rooms *rooms;
    char *name; /* delete: the room; NULL: list */
    char *names_json;
    int status;
    jsb_sink *sink;
    double token;
};

void jsb_rooms_work_run(uv_work_t *work)
{
    jsb_rooms_work *req = (jsb_rooms_work *)work->data;
    if (req->name)
        req->status = sync_rooms_delete(req->rooms, req->name);
    else
        req->status = sync_rooms_list(req->rooms, &req->names_json);
}

void jsb_rooms_work_done(uv_work_t *work, int)
{
    jsb_rooms_work *req = (jsb_rooms_work *)work->data;
    v8::Isolate *iso = v8::Isolate::GetCurrent();
    v8::HandleScope scope(iso);
    v8::Context::Scope context_scope(jsb_context->Get(iso));
    {
        node::CallbackScope callback_scope(iso, v8::Object::New(iso), {0, 0});
        jsb_call(req->sink, req->name ? "deleted" : "listed", req->token, jsb_num(req->status),
                 jsb_str(req->names_json), jsb_str(req->status < 0 ? sync_error_last() : NULL));
    }
    jsb_sink_unref(req->sink);
    free(req->name);
    sync_free(req->names_json);
    delete req;
}

} // namespace

/* Mounts rooms at `prefix`: every room's engine from `opts` (the template), set up by the JS
 * sink("setup", ...) of `sink`, its records in `store` (NULL: in memory only; the mount takes its
 * own reference). */
static int jsb_server_mount_rooms(sync_server *server, const char *prefix,
                                  sync_engine_options *opts, jsb_sink *sink,
                                  sync_room_store *store, sync_rooms **out)
{
    sync_rooms_options ro;
    sync_rooms_options_init(&ro, SYNC_ROOMS_OPTIONS_VERSION);
    jsb_cb *cb = jsb_cb_new(sink, 0);
    if (!cb)
        return SYNC_ENOMEM;
    ro.setup = jsb_room_setup_cb;
    ro.setup_userdata = cb;
    ro.setup_free_userdata = jsb_cb_free; /* also when mounting fails */
    ro.engine_options = opts;
    ro.store = store;
    opts->timer_mode = SYNC_TIMERS_MANUAL; /* the server ticks its rooms */
    return sync_server_mount_rooms(server, prefix, &ro, out);
}

/* Replaces a room engine's hooks with those `hook_mask` selects, going to `sink`; when libsync
 * lets go of them (replaced, or the room unloaded) sink("engine_freed", generation) follows. */
static int jsb_room_engine_hooks(sync_engine *engine, jsb_sink *sink, int hook_mask,
                                 double generation)
{
    sync_hooks all = SYNC_HOOKS_INIT;
    all.on_connect = jsb_on_connect;
    all.on_disconnect = jsb_on_disconnect;
    all.on_state_change = jsb_on_state_change;
    all.on_sync = jsb_on_sync;
    all.on_backup = jsb_on_backup;
    all.on_ping = jsb_on_ping;
    all.on_pong = jsb_on_pong;
    all.on_ping_timeout = jsb_on_ping_timeout;
    all.on_error = jsb_on_error;
    sync_hooks hooks = sync_bridge_pick_hooks(&all, hook_mask);
    jsb_cb *cb = jsb_cb_new(sink, generation);
    if (!cb)
        return SYNC_ENOMEM;
    hooks.userdata = cb;
    hooks.free_userdata = jsb_room_hooks_free;
    return sync_engine_set_hooks(engine, &hooks);
}

/* A stable number for an engine pointer: how rooms.js finds the room engine an acquire gave. */
static double jsb_engine_key(sync_engine *engine)
{
    return (double)(uintptr_t)engine;
}

/* Never waits: sink("acquired", token, engine, status) follows on the main thread. */
static int jsb_rooms_acquire(sync_rooms *rooms, const char *name, jsb_sink *sink, double token)
{
    jsb_room_wait *w = (jsb_room_wait *)calloc(1, sizeof *w);
    if (!w)
        return SYNC_ENOMEM;
    w->sink = sink;
    w->token = token;
    w->rooms = rooms;
    sink->refs.fetch_add(1);
    int rc = sync_rooms_acquire_async(rooms, name, jsb_room_ready, w);
    if (rc < 0) {
        jsb_sink_unref(sink);
        free(w);
    }
    return rc;
}

/* sync_rooms_list (name NULL) or sync_rooms_delete on a libuv worker; then on the main thread
 * sink("listed"/"deleted", token, status, names_json, error). */
static int jsb_rooms_work_start(sync_rooms *rooms, const char *nullable, jsb_sink *sink,
                                double token)
{
    jsb_rooms_work *req = new jsb_rooms_work();
    req->work.data = req;
    req->rooms = rooms;
    req->name = nullable ? strdup(nullable) : NULL;
    req->sink = sink;
    req->token = token;
    if (nullable && !req->name) {
        delete req;
        return SYNC_ENOMEM;
    }
    sink->refs.fetch_add(1);
    int rc = uv_queue_work(node::GetCurrentEventLoop(v8::Isolate::GetCurrent()), &req->work,
                           jsb_rooms_work_run, jsb_rooms_work_done);
    if (rc != 0) {
        jsb_sink_unref(sink);
        free(req->name);
        delete req;
        return SYNC_ENOMEM;
    }
    return SYNC_OK;
}

/* A room store whose calls go to the JS sink (see jsb_room_store_call). */
static int jsb_room_store_js_new(jsb_sink *sink, sync_room_store **out)
{
    sync_room_store_vtable vt = {};
    vt.version = SYNC_ROOM_STORE_VTABLE_VERSION;
    vt.init = jsb_room_store_init;
    vt.load = jsb_room_store_load;
    vt.save = jsb_room_store_save;
    vt.remove = jsb_room_store_remove;
    vt.list = jsb_room_store_list;
    vt.destroy = jsb_cb_free;
    jsb_cb *cb = jsb_cb_new(sink, 0);
    if (!cb)
        return SYNC_ENOMEM;
    return sync_room_store_new(out, &vt, cb); /* on failure destroy(cb) has run */
}

static int jsb_room_store_sqlite_new(const sync_sqlite_options *opts, sync_room_store **out)
{
    return sync_room_store_sqlite_new(out, opts);
}

static int jsb_room_store_file_new(const sync_file_rooms_options *opts, sync_room_store **out)
{
    return sync_room_store_file_new(out, opts);
}

static int jsb_room_store_redis_new(const sync_redis_options *opts, sync_room_store **out)
{
    return sync_room_store_redis_new(out, opts);
}
%}

typedef struct sync_room_store sync_room_store;
typedef struct sync_rooms sync_rooms;
typedef struct sync_room_setup sync_room_setup;

SYNC_BRIDGE_OUT(sync_room_store)
SYNC_BRIDGE_OUT(sync_rooms)

%apply const char *nullable { const char *dir };
%extend sync_file_rooms_options {
    sync_file_rooms_options()
    {
        sync_file_rooms_options *o = (sync_file_rooms_options *)calloc(1, sizeof *o);
        if (o)
            sync_file_rooms_options_init(o, SYNC_FILE_ROOMS_OPTIONS_VERSION);
        return o;
    }
    ~sync_file_rooms_options()
    {
        free((char *)$self->dir);
        free($self);
    }
}
typedef struct sync_file_rooms_options {
    const char *dir;
    int fsync;
} sync_file_rooms_options;

%constant int SYNC_ROOM_NAME_MAX = SYNC_ROOM_NAME_MAX;
%constant int SYNC_CLOSE_ROOM_DELETED = SYNC_CLOSE_ROOM_DELETED;
%constant int SYNC_CLOSE_ROOM_UNAVAILABLE = SYNC_CLOSE_ROOM_UNAVAILABLE;

int sync_room_name_check(const char *name);
void sync_room_store_free(sync_room_store *store);
int sync_room_setup_set_initial_state_json(sync_room_setup *setup, const char *json);
int sync_room_setup_complete(sync_room_setup *setup, int status);
int sync_rooms_release(sync_rooms *rooms, sync_engine *engine);
size_t sync_rooms_loaded_count(sync_rooms *rooms);
int sync_pending_complete_list(sync_pending *pending, int status, const char *names_json,
                               const char *error_message);

int jsb_server_mount_rooms(sync_server *server, const char *prefix, sync_engine_options *opts,
                           jsb_sink *sink, sync_room_store *store, sync_rooms **out);
int jsb_room_engine_hooks(sync_engine *engine, jsb_sink *sink, int hook_mask, double generation);
double jsb_engine_key(sync_engine *engine);
int jsb_rooms_acquire(sync_rooms *rooms, const char *name, jsb_sink *sink, double token);
int jsb_rooms_work_start(sync_rooms *rooms, const char *nullable, jsb_sink *sink, double token);
int jsb_room_store_js_new(jsb_sink *sink, sync_room_store **out);
%rename(sync_room_store_sqlite_new) jsb_room_store_sqlite_new;
%rename(sync_room_store_file_new) jsb_room_store_file_new;
int jsb_room_store_sqlite_new(const sync_sqlite_options *opts, sync_room_store **out);
int jsb_room_store_file_new(const sync_file_rooms_options *opts, sync_room_store **out);
%rename(sync_room_store_redis_new) jsb_room_store_redis_new;
int jsb_room_store_redis_new(const sync_redis_options *opts, sync_room_store **out);

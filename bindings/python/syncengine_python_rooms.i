/*
 * Rooms (rooms.h) in the Python bridge; included at the end of syncengine_python.i.
 *
 * A room mount's setup callback, a room engine's hooks and a room store written in Python all call
 * one Python object each, with the GIL taken here. Setup runs on the server's service thread for
 * a join, on the caller's thread for sync_rooms_acquire (whose wrapper releases the GIL while it
 * waits, so that setup can take it). A Python store's call may return SYNC_PENDING and finish
 * later with sync_pending_complete* (the package does so for async def methods).
 */

%{
/* ---- setup: fn(setup) -> status --------------------------------------------------------- */

static int pysync_room_setup(sync_room_setup *setup, void *userdata)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *arg = pysync_ptr(setup, SWIGTYPE_p_sync_room_setup);
    PyObject *result = arg ? PyObject_CallOneArg((PyObject *)userdata, arg) : NULL;
    /* A failing wrapper refuses the room: its joins get 503, nothing is created. */
    int status = pysync_status_of(result, SYNC_EHANDLER);
    Py_XDECREF(arg);
    PyGILState_Release(gil);
    return status;
}

/* ---- a room engine's hooks: as pysync_fill_hooks, and dispatch("engine_freed") when the
 * engine lets go of them (replaced, or the room unloaded), so the package stops using it. ---- */

static void pysync_room_hooks_free(void *userdata)
{
    if (!userdata || !Py_IsInitialized())
        return;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *result = PyObject_CallFunction((PyObject *)userdata, "s", "engine_freed");
    if (!result)
        free(pysync_take_exception());
    Py_XDECREF(result);
    Py_DECREF((PyObject *)userdata);
    PyGILState_Release(gil);
}

/* ---- room stores written in Python: bridge.init(p) / load(p, room) / save(p, room, json,
 * version) / remove(p, room) / list(p); each returns a status, or for load (status, json, version)
 * and list (status, names_json). SYNC_PENDING: the package completes `p` later. ---------------- */

static int pysync_room_store_status(PyObject *result)
{
    int status = pysync_status_of(result, SYNC_EIO);
    return status;
}

static int pysync_room_store_init(void *userdata, sync_pending *pending)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *p = pysync_ptr(pending, SWIGTYPE_p_sync_pending);
    int status = pysync_room_store_status(
        p ? PyObject_CallMethod((PyObject *)userdata, "init", "O", p) : NULL);
    Py_XDECREF(p);
    PyGILState_Release(gil);
    return status;
}

static int pysync_room_store_load(void *userdata, sync_pending *pending, const char *room,
                                  char **out_state_json, int64_t *out_version)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int status = SYNC_EIO;
    int st = 0;
    PyObject *json = NULL;
    long long version = 0;
    PyObject *p = pysync_ptr(pending, SWIGTYPE_p_sync_pending);
    PyObject *result = p ? PyObject_CallMethod((PyObject *)userdata, "load", "Os", p, room) : NULL;
    *out_state_json = NULL;
    if (result && PyArg_ParseTuple(result, "iOL", &st, &json, &version)) {
        status = st;
        if (status == SYNC_OK && json != Py_None) {
            const char *utf8 = PyUnicode_AsUTF8(json);
            if (utf8) {
                *out_state_json = sync_strdup(utf8);
                *out_version = (int64_t)version;
                if (!*out_state_json)
                    status = SYNC_ENOMEM;
            } else {
                status = SYNC_EIO;
            }
        }
    }
    if (PyErr_Occurred())
        free(pysync_take_exception());
    Py_XDECREF(result);
    Py_XDECREF(p);
    PyGILState_Release(gil);
    return status;
}

static int pysync_room_store_save(void *userdata, sync_pending *pending, const char *room,
                                  const cJSON *state, const char *state_json, size_t state_len,
                                  int64_t version)
{
    (void)state;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *p = pysync_ptr(pending, SWIGTYPE_p_sync_pending);
    int status = pysync_room_store_status(
        p ? PyObject_CallMethod((PyObject *)userdata, "save", "Oss#L", p, room, state_json,
                                (Py_ssize_t)state_len, (long long)version)
          : NULL);
    Py_XDECREF(p);
    PyGILState_Release(gil);
    return status;
}

static int pysync_room_store_remove(void *userdata, sync_pending *pending, const char *room)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *p = pysync_ptr(pending, SWIGTYPE_p_sync_pending);
    int status = pysync_room_store_status(
        p ? PyObject_CallMethod((PyObject *)userdata, "remove", "Os", p, room) : NULL);
    Py_XDECREF(p);
    PyGILState_Release(gil);
    return status;
}

static int pysync_room_store_list(void *userdata, sync_pending *pending, char **out_names_json)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int status = SYNC_EIO;
    int st = 0;
    PyObject *json = NULL;
    PyObject *p = pysync_ptr(pending, SWIGTYPE_p_sync_pending);
    PyObject *result = p ? PyObject_CallMethod((PyObject *)userdata, "list", "O", p) : NULL;
    *out_names_json = NULL;
    if (result && PyArg_ParseTuple(result, "iO", &st, &json)) {
        status = st;
        if (status == SYNC_OK) {
            const char *utf8 = json != Py_None ? PyUnicode_AsUTF8(json) : "[]";
            if (utf8) {
                *out_names_json = sync_strdup(utf8);
                if (!*out_names_json)
                    status = SYNC_ENOMEM;
            } else {
                status = SYNC_EIO;
            }
        }
    }
    if (PyErr_Occurred())
        free(pysync_take_exception());
    Py_XDECREF(result);
    Py_XDECREF(p);
    PyGILState_Release(gil);
    return status;
}
%}

typedef struct sync_room_store sync_room_store;
typedef struct sync_rooms sync_rooms;
typedef struct sync_room_setup sync_room_setup;

SYNC_BRIDGE_OUT(sync_room_store)
SYNC_BRIDGE_OUT(sync_rooms)

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

/* Plain calls: SWIG releases the GIL around each (-threads). */
int sync_room_name_check(const char *name);
void sync_room_store_free(sync_room_store *store);
const char *sync_room_setup_name(const sync_room_setup *setup);
sync_engine *sync_room_setup_engine(const sync_room_setup *setup);
int sync_room_setup_set_initial_state_json(sync_room_setup *setup, const char *json);
sync_room_setup *sync_room_setup_defer(sync_room_setup *setup);
int sync_room_setup_complete(sync_room_setup *setup, int status);
const char *sync_request_room(const sync_request *req);
/* Waits for a setup or load that finishes later: the GIL is released meanwhile, so a Python
 * setup or store on another thread (or this one) can run. */
int sync_rooms_acquire(sync_rooms *rooms, const char *name, sync_engine **out);
int sync_rooms_release(sync_rooms *rooms, sync_engine *engine);
int sync_rooms_delete(sync_rooms *rooms, const char *name);
size_t sync_rooms_loaded_count(sync_rooms *rooms);
int sync_pending_complete(sync_pending *pending, int status, const char *error_message);
int sync_pending_complete_load(sync_pending *pending, int status, const char *state_json,
                               int64_t version, const char *error_message);
int sync_pending_complete_list(sync_pending *pending, int status, const char *names_json,
                               const char *error_message);

%rename(sync_room_store_sqlite_new) pysync_room_store_sqlite_new;
%rename(sync_room_store_file_new) pysync_room_store_file_new;
%rename(sync_room_store_redis_new) pysync_room_store_redis_new;
%inline %{
static int pysync_room_store_sqlite_new(const sync_sqlite_options *opts, sync_room_store **out)
{
    return sync_room_store_sqlite_new(out, opts);
}
static int pysync_room_store_file_new(const sync_file_rooms_options *opts,
                                      sync_room_store **out)
{
    return sync_room_store_file_new(out, opts);
}
static int pysync_room_store_redis_new(const sync_redis_options *opts, sync_room_store **out)
{
    return sync_room_store_redis_new(out, opts);
}
%}

%nothread;
%inline %{
/* The stored or loaded room names as JSON text; raises on failure. */
static PyObject *pysync_rooms_list(sync_rooms *rooms)
{
    char *json = NULL;
    int status;
    Py_BEGIN_ALLOW_THREADS status = sync_rooms_list(rooms, &json);
    Py_END_ALLOW_THREADS if (status < 0)
    {
        sync_bridge_raise(status);
        return NULL;
    }
    PyObject *text = PyUnicode_FromString(json ? json : "[]");
    sync_free(json);
    return text;
}

/* A room store whose records are kept by the Python object `bridge` (see the callbacks above). */
static int pysync_room_store_new(PyObject *bridge, sync_room_store **out)
{
    sync_room_store_vtable vt;
    memset(&vt, 0, sizeof vt);
    vt.version = SYNC_ROOM_STORE_VTABLE_VERSION;
    vt.init = pysync_room_store_init;
    vt.load = pysync_room_store_load;
    vt.save = pysync_room_store_save;
    vt.remove = pysync_room_store_remove;
    vt.list = pysync_room_store_list;
    vt.destroy = pysync_decref;
    Py_INCREF(bridge);
    int status;
    Py_BEGIN_ALLOW_THREADS status = sync_room_store_new(out, &vt, bridge);
    Py_END_ALLOW_THREADS return status;
}

/* Replaces a room engine's hooks with `dispatch` (see pysync_room_hooks_free). */
static int pysync_room_engine_hooks(sync_engine *engine, PyObject *dispatch, int hook_mask)
{
    sync_hooks hooks = SYNC_HOOKS_INIT;
    pysync_fill_hooks(&hooks, dispatch, hook_mask);
    hooks.free_userdata = pysync_room_hooks_free;
    int status;
    Py_BEGIN_ALLOW_THREADS status = sync_engine_set_hooks(engine, &hooks);
    Py_END_ALLOW_THREADS return status;
}

/* Mounts rooms at `prefix` on `server`: every room's engine from `opts` (the template; `log`
 * fn(level, text) or None, borrowed: the package keeps it alive with the server), prepared by
 * setup(room_setup) -> status, its records in `store` (None: in memory only). */
static int pysync_server_mount_rooms(sync_server *server, const char *prefix,
                                     sync_engine_options *opts, PyObject *log, PyObject *setup,
                                     sync_room_store *store, sync_rooms **out)
{
    sync_rooms_options ro;
    sync_rooms_options_init(&ro, SYNC_ROOMS_OPTIONS_VERSION);
    if (log && log != Py_None) {
        opts->log = pysync_log;
        opts->log_userdata = log;
    }
    ro.engine_options = opts;
    ro.store = store;
    if (setup && setup != Py_None) {
        Py_INCREF(setup);
        ro.setup = pysync_room_setup;
        ro.setup_userdata = setup;
        ro.setup_free_userdata = pysync_decref;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS status = sync_server_mount_rooms(server, prefix, &ro, out);
    Py_END_ALLOW_THREADS opts->log = NULL;
    opts->log_userdata = NULL;
    return status;
}
%}
%thread;

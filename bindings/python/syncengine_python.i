%module(package="syncengine", docstring="Low-level SWIG wrapper of libsync's C ABI. Use the syncengine package, not this module.") native
%include "common.i"

/*
 * The Python bridge. SWIG wraps the C functions that take plain values (built with -threads, so
 * each of them releases the GIL while C runs); the functions below, whose names start with
 * pysync_, are the ones that hand Python callables to C. Each C callback here takes the GIL, calls
 * a Python function of the syncengine package (which converts JSON and catches the user's
 * exceptions itself) and turns its int result into a libsync status. Every Python object handed to
 * C is one strong reference, released with the GIL by the matching free_userdata.
 */


%{
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* Text of the exception being raised (with traceback), as a new UTF-8 C string, clearing it. The
 * package's wrappers catch user exceptions themselves; this covers failures of the wrappers. */
static char *pysync_take_exception(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    char *out = NULL;
    PyObject *mod = PyImport_ImportModule("traceback");
    PyObject *lines = mod && type ? PyObject_CallMethod(mod, "format_exception", "OOO", type,
                                                        value ? value : Py_None, tb ? tb : Py_None)
                                  : NULL;
    PyObject *empty = lines ? PyUnicode_FromString("") : NULL;
    PyObject *text = empty ? PyUnicode_Join(empty, lines) : NULL;
    const char *utf8 = text ? PyUnicode_AsUTF8(text) : NULL;
    out = strdup(utf8 ? utf8 : "exception in a Python callback");
    PyErr_Clear();
    Py_XDECREF(text);
    Py_XDECREF(empty);
    Py_XDECREF(lines);
    Py_XDECREF(mod);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return out;
}

/* A callback's int result as a libsync status; `fallback` when it raised or returned no int. */
static int pysync_status_of(PyObject *result, int fallback)
{
    if (!result) {
        /* Only a failure of the package's own wrapper gets here (they catch user exceptions). */
        char *text = pysync_take_exception();
        fprintf(stderr, "syncengine: a callback wrapper failed: %s\n", text);
        free(text);
        return fallback;
    }
    long status = PyLong_Check(result) ? PyLong_AsLong(result) : fallback;
    Py_DECREF(result);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return fallback;
    }
    return (int)status;
}

/* token (int) -> step callable, see the step runner below; GIL */
static PyObject *pysync_live_steps;

/* A step's registration ends: its token is no longer found, then its reference goes. */
static void pysync_step_free(void *userdata)
{
    if (!userdata || !Py_IsInitialized())
        return;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *token = PyLong_FromVoidPtr(userdata);
    if (pysync_live_steps && token && PyDict_GetItemWithError(pysync_live_steps, token) == userdata)
        PyDict_DelItem(pysync_live_steps, token);
    PyErr_Clear();
    Py_XDECREF(token);
    Py_DECREF((PyObject *)userdata);
    PyGILState_Release(gil);
}

static void pysync_decref(void *userdata)
{
    /* Objects still held while the interpreter shuts down are left to the OS. */
    if (!userdata || !Py_IsInitialized())
        return;
    PyGILState_STATE gil = PyGILState_Ensure();
    Py_DECREF((PyObject *)userdata);
    PyGILState_Release(gil);
}

static PyObject *pysync_ptr(void *ptr, swig_type_info *type)
{
    if (!ptr)
        Py_RETURN_NONE;
    return SWIG_NewPointerObj(ptr, type, 0);
}

/* ---- common.i's constructors: the failure becomes the package's exception ------------------- */

#define SYNC_BRIDGE_SET_RESULT(result, value)                                                       \
    do {                                                                                           \
        Py_XDECREF(result);                                                                        \
        result = (value);                                                                          \
    } while (0)

/* syncengine._errors.error_for(status, detail), registered when the package is imported. */
static PyObject *pysync_error_factory;

static void sync_bridge_raise(int status)
{
    const char *detail = sync_error_last();
    PyObject *exc = pysync_error_factory
                        ? PyObject_CallFunction(pysync_error_factory, "is", status, detail)
                        : NULL;
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    } else if (!PyErr_Occurred()) {
        PyErr_Format(PyExc_RuntimeError, "libsync: %s", detail);
    }
}

/* ---- the step runner: steps reached on libsync's threads run in batches on a Python thread -- */

/*
 * A step that the engine reaches on a thread of libsync's own (the built-in server's service
 * thread, an engine's timer thread) is not run there: the GIL would be taken and released once
 * per message, and the service thread would run Python instead of reading and writing sockets.
 * It returns SYNC_PENDING and is posted, untouched, to an executor; the package's runner thread
 * ("syncengine-steps") takes every job waiting in one wake-up and runs them with the GIL held
 * once, each with the loop of syncengine._engine._run_queue: the step, then
 * sync_msg_complete_next, which commits (or rolls back) that message and hands back the next step
 * the engine reaches (the messages queued meanwhile), and so on. Steps reached on Python threads
 * (handle_message, inject, an asyncio completion) run at once on that thread, as before.
 *
 * Step callables are looked up by token (their address) in pysync_live_steps, a dict that the
 * registration fills and its free_userdata empties under the GIL: a token that a job or
 * sync_msg_complete_next hands over after its step was replaced is then not found (the message
 * is dropped with SYNC_ENOHANDLER) instead of pointing at a freed object.
 */
static sync_executor *pysync_runner;
static pthread_mutex_t pysync_runner_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pysync_runner_cond = PTHREAD_COND_INITIALIZER;
static int pysync_runner_woken;         /* guarded by pysync_runner_lock */
static int pysync_runner_stopping;      /* guarded by pysync_runner_lock */
static atomic_int pysync_runner_on;     /* the runner thread takes jobs */
static PyObject *pysync_runner_batch;   /* the list pysync_runner_take fills; GIL */

typedef struct pysync_job {
    sync_msg *msg;
    void *token;
} pysync_job;

static void pysync_runner_wake(void *userdata)
{
    (void)userdata;
    pthread_mutex_lock(&pysync_runner_lock);
    pysync_runner_woken = 1;
    pthread_cond_signal(&pysync_runner_cond);
    pthread_mutex_unlock(&pysync_runner_lock);
}

/* Runs inside pysync_runner_take (GIL held): the job becomes an item of its batch. */
static void pysync_job_take(void *p)
{
    pysync_job *job = (pysync_job *)p;
    PyObject *item = Py_BuildValue("(NN)", SWIG_NewPointerObj(job->msg, SWIGTYPE_p_sync_msg, 0),
                                   PyLong_FromVoidPtr(job->token));
    if (!item || PyList_Append(pysync_runner_batch, item) < 0) {
        PyErr_Clear();
        /* the engine's lock is never waited for with the GIL held */
        Py_BEGIN_ALLOW_THREADS sync_msg_complete(job->msg, SYNC_ENOMEM);
        Py_END_ALLOW_THREADS
    }
    Py_XDECREF(item);
    free(job);
}

/* A job that never runs (the runner stopped, or the post failed): its step fails. When the post
 * failed, the step is still in its call, which then returns this status. */
static void pysync_job_drop(void *p)
{
    pysync_job *job = (pysync_job *)p;
    sync_msg_set_error(job->msg, "the Python step runner has stopped");
    sync_msg_complete(job->msg, SYNC_ECLOSED);
    free(job);
}

/* ---- pipeline steps: fn(msg) -> status ---------------------------------------------------- */

static int pysync_step(sync_msg *msg, void *userdata)
{
    /* No Python thread state: a thread of libsync's. Hand the step to the runner thread. */
    if (atomic_load(&pysync_runner_on) && !PyGILState_GetThisThreadState()) {
        pysync_job *job = (pysync_job *)calloc(1, sizeof *job);
        if (job) {
            job->msg = msg;
            job->token = userdata;
            /* on failure the drop has completed the message (with the step still in its call) */
            sync_executor_post(pysync_runner, pysync_job_take, pysync_job_drop, job);
            return SYNC_PENDING;
        }
    }
    PyGILState_STATE gil = PyGILState_Ensure();
    int status = SYNC_EHANDLER;
    PyObject *arg = pysync_ptr(msg, SWIGTYPE_p_sync_msg);
    PyObject *result = arg ? PyObject_CallOneArg((PyObject *)userdata, arg) : NULL;
    if (!result) {
        char *text = pysync_take_exception();
        sync_msg_set_error(msg, text);
        free(text);
    } else {
        status = pysync_status_of(result, SYNC_EHANDLER);
    }
    Py_XDECREF(arg);
    PyGILState_Release(gil);
    return status;
}

/* ---- hooks: dispatch(name, *args) --------------------------------------------------------- */

/* Calls dispatch with the tuple built from `format`, whose first item is the hook's name. The
 * package's dispatch catches the user's exceptions and routes them to on_error. */
static void pysync_hook_call(void *userdata, const char *format, ...)
{
    if (!Py_IsInitialized())
        return;
    PyGILState_STATE gil = PyGILState_Ensure();
    va_list ap;
    va_start(ap, format);
    PyObject *args = Py_VaBuildValue(format, ap);
    va_end(ap);
    PyObject *result = args ? PyObject_CallObject((PyObject *)userdata, args) : NULL;
    if (!result) {
        char *text = pysync_take_exception();
        fprintf(stderr, "syncengine: hook dispatch failed: %s\n", text);
        free(text);
    }
    Py_XDECREF(result);
    Py_XDECREF(args);
    PyGILState_Release(gil);
}

static PyObject *pysync_json_text(const cJSON *value)
{
    char *text = value ? cJSON_PrintUnformatted(value) : NULL;
    if (!text)
        Py_RETURN_NONE;
    PyObject *out = PyUnicode_FromString(text);
    cJSON_free(text);
    return out;
}

static void pysync_conn_hook(void *userdata, const char *name, sync_conn *conn)
{
    if (!Py_IsInitialized())
        return;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *c = pysync_ptr(conn, SWIGTYPE_p_sync_conn);
    pysync_hook_call(userdata, "(sN)", name, c);
    PyGILState_Release(gil);
}

static void pysync_on_connect(sync_engine *e, sync_conn *c, void *ud)
{
    (void)e;
    pysync_conn_hook(ud, "on_connect", c);
}
static void pysync_on_disconnect(sync_engine *e, sync_conn *c, void *ud)
{
    (void)e;
    pysync_conn_hook(ud, "on_disconnect", c);
}
static void pysync_on_ping(sync_engine *e, sync_conn *c, void *ud)
{
    (void)e;
    pysync_conn_hook(ud, "on_ping", c);
}
static void pysync_on_pong(sync_engine *e, sync_conn *c, void *ud)
{
    (void)e;
    pysync_conn_hook(ud, "on_pong", c);
}
static void pysync_on_ping_timeout(sync_engine *e, sync_conn *c, void *ud)
{
    (void)e;
    pysync_conn_hook(ud, "on_ping_timeout", c);
}
static void pysync_on_state_change(sync_engine *e, const cJSON *old_state, const cJSON *new_state,
                                   void *ud)
{
    (void)e;
    if (!Py_IsInitialized())
        return;
    PyGILState_STATE gil = PyGILState_Ensure();
    pysync_hook_call(ud, "(sNN)", "on_state_change", pysync_json_text(old_state),
                     pysync_json_text(new_state));
    PyGILState_Release(gil);
}
static void pysync_on_sync(sync_engine *e, const cJSON *state, int64_t version, void *ud)
{
    (void)e;
    if (!Py_IsInitialized())
        return;
    PyGILState_STATE gil = PyGILState_Ensure();
    pysync_hook_call(ud, "(sNL)", "on_sync", pysync_json_text(state), (long long)version);
    PyGILState_Release(gil);
}
static void pysync_on_backup(sync_engine *e, int64_t timestamp_ms, int64_t version, void *ud)
{
    (void)e;
    pysync_hook_call(ud, "(sLL)", "on_backup", (long long)timestamp_ms, (long long)version);
}
static void pysync_on_error(sync_engine *e, int status, const char *message, const char *context,
                            sync_conn *conn, void *ud)
{
    (void)e;
    if (!Py_IsInitialized())
        return;
    PyGILState_STATE gil = PyGILState_Ensure();
    pysync_hook_call(ud, "(sissN)", "on_error", status, message ? message : "",
                     context ? context : "", pysync_ptr(conn, SWIGTYPE_p_sync_conn));
    PyGILState_Release(gil);
}

/* Every hook goes to `dispatch`; `mask` (SYNC_BRIDGE_ON_*) keeps those the user set. */
static void pysync_fill_hooks(sync_hooks *hooks, PyObject *dispatch, int mask)
{
    sync_hooks all = SYNC_HOOKS_INIT;
    all.on_connect = pysync_on_connect;
    all.on_disconnect = pysync_on_disconnect;
    all.on_state_change = pysync_on_state_change;
    all.on_sync = pysync_on_sync;
    all.on_backup = pysync_on_backup;
    all.on_ping = pysync_on_ping;
    all.on_pong = pysync_on_pong;
    all.on_ping_timeout = pysync_on_ping_timeout;
    all.on_error = pysync_on_error;
    *hooks = sync_bridge_pick_hooks(&all, mask);
    Py_INCREF(dispatch);
    hooks->userdata = dispatch;
    hooks->free_userdata = pysync_decref;
}

/* ---- connections of the embedder's own server: bridge.send(text) -> status, bridge.close() -- */

static int pysync_conn_send(void *userdata, const char *text, size_t len)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *result =
        PyObject_CallMethod((PyObject *)userdata, "send", "s#", text, (Py_ssize_t)len);
    int status = pysync_status_of(result, SYNC_ESEND);
    PyGILState_Release(gil);
    return status;
}

static void pysync_conn_close(void *userdata, int code, const char *reason)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *result =
        PyObject_CallMethod((PyObject *)userdata, "close", "is", code, reason ? reason : "");
    if (!result)
        free(pysync_take_exception());
    Py_XDECREF(result);
    PyGILState_Release(gil);
}

/* ---- adapters written in Python: bridge.init() / load() / save() / backup() -------------- */

static int pysync_adapter_init(void *userdata, sync_pending *pending)
{
    (void)pending;
    PyGILState_STATE gil = PyGILState_Ensure();
    int status =
        pysync_status_of(PyObject_CallMethod((PyObject *)userdata, "init", NULL), SYNC_EIO);
    PyGILState_Release(gil);
    return status;
}

/* load() returns (status, state_json or None, version). */
static int pysync_adapter_load(void *userdata, sync_pending *pending, char **out_state_json,
                               int64_t *out_version)
{
    (void)pending;
    PyGILState_STATE gil = PyGILState_Ensure();
    int status = SYNC_EIO;
    int st = 0;
    PyObject *json = NULL;
    long long version = 0;
    PyObject *result = PyObject_CallMethod((PyObject *)userdata, "load", NULL);
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
    PyGILState_Release(gil);
    return status;
}

static int pysync_adapter_save(void *userdata, sync_pending *pending, const cJSON *state,
                               const char *state_json, size_t state_len, int64_t version)
{
    (void)pending;
    (void)state;
    PyGILState_STATE gil = PyGILState_Ensure();
    int status =
        pysync_status_of(PyObject_CallMethod((PyObject *)userdata, "save", "s#L", state_json,
                                             (Py_ssize_t)state_len, (long long)version),
                         SYNC_EIO);
    PyGILState_Release(gil);
    return status;
}

/* backup() returns (status, timestamp_ms). */
static int pysync_adapter_backup(void *userdata, sync_pending *pending, int64_t *out_timestamp_ms)
{
    (void)pending;
    PyGILState_STATE gil = PyGILState_Ensure();
    int status = SYNC_EIO;
    int st = 0;
    long long stamp = 0;
    PyObject *result = PyObject_CallMethod((PyObject *)userdata, "backup", NULL);
    if (result && PyArg_ParseTuple(result, "iL", &st, &stamp)) {
        status = st;
        *out_timestamp_ms = (int64_t)stamp;
    }
    if (PyErr_Occurred())
        free(pysync_take_exception());
    Py_XDECREF(result);
    PyGILState_Release(gil);
    return status;
}

/* ---- log sinks: fn(level, message) ------------------------------------------------------ */

/* The Python callable is borrowed: the package keeps it alive for as long as the engine or server
 * that logs (libsync's log options have no free callback). */
static void pysync_log(sync_log_level level, const char *message, void *userdata)
{
    if (!Py_IsInitialized())
        return;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *result = PyObject_CallFunction((PyObject *)userdata, "is", (int)level, message);
    if (!result)
        PyErr_Clear(); /* a failing log sink must not turn into an error of what was logged */
    Py_XDECREF(result);
    PyGILState_Release(gil);
}

/* ---- the built-in server's auth callback: fn(request) -> 0 or an HTTP status ------------- */

static int pysync_auth(sync_request *req, void *userdata)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *arg = pysync_ptr(req, SWIGTYPE_p_sync_request);
    PyObject *result = arg ? PyObject_CallOneArg((PyObject *)userdata, arg) : NULL;
    /* A failing auth callback refuses: never let a bug open the door. */
    int status = pysync_status_of(result, 500);
    Py_XDECREF(arg);
    PyGILState_Release(gil);
    return status;
}

%}

/* Text + length arguments take a str (sent as UTF-8) or any bytes-like object (sent as is, so
 * invalid UTF-8 reaches libsync and is refused there with SYNC_EPARSE like from any client). */
%typemap(in) (const char *text, size_t len) (Py_buffer view, int is_view = 0)
{
    if (PyUnicode_Check($input)) {
        Py_ssize_t size = 0;
        const char *utf8 = PyUnicode_AsUTF8AndSize($input, &size);
        if (!utf8)
            SWIG_fail;
        $1 = (char *)utf8;
        $2 = (size_t)size;
    } else if (PyObject_GetBuffer($input, &view, PyBUF_SIMPLE) == 0) {
        is_view = 1;
        $1 = (char *)view.buf;
        $2 = (size_t)view.len;
    } else {
        PyErr_Clear();
        SWIG_exception_fail(SWIG_TypeError, "expected str or a bytes-like object");
    }
}
%typemap(freearg) (const char *text, size_t len)
{
    if (is_view$argnum)
        PyBuffer_Release(&view$argnum);
}

int64_t sync_now_ms(void);
int64_t sync_wall_ms(void);

/* engine */
int sync_engine_dispose(sync_engine *engine);
void sync_engine_free(sync_engine *engine);
int sync_engine_off(sync_engine *engine, const char *type);
int sync_engine_handle_open(sync_engine *engine, sync_conn *conn);
int sync_engine_handle_message(sync_engine *engine, sync_conn *conn, const char *text, size_t len);
int sync_engine_handle_close(sync_engine *engine, sync_conn *conn);
int sync_engine_handle_alive(sync_engine *engine, sync_conn *conn);
int sync_engine_inject(sync_engine *engine, const char *text, size_t len);
size_t sync_engine_connection_count(sync_engine *engine);
char *sync_engine_get_state_json(sync_engine *engine);
int64_t sync_engine_get_version(sync_engine *engine);
int sync_engine_set_state_json(sync_engine *engine, const char *json, int broadcast);
int sync_engine_broadcast_state(sync_engine *engine);
int sync_engine_broadcast_text(sync_engine *engine, const char *text, size_t len);
int sync_engine_sync(sync_engine *engine);
int sync_engine_create_backup(sync_engine *engine);
int sync_engine_tick(sync_engine *engine, int64_t now_ms);
int64_t sync_engine_next_deadline_ms(sync_engine *engine);

/* inside a step */
sync_conn *sync_msg_conn(const sync_msg *msg);
const char *sync_msg_type(const sync_msg *msg);
const char *sync_msg_message_json(sync_msg *msg);
int sync_msg_replace_json(sync_msg *msg, const char *json);
const char *sync_msg_state_json(sync_msg *msg);
int sync_msg_set_state_json(sync_msg *msg, const char *json);
int sync_msg_reply(sync_msg *msg, const char *text, size_t len);
int sync_msg_set_error(sync_msg *msg, const char *reason);
int sync_msg_complete(sync_msg *msg, int status);

/* connections */
void sync_conn_free(sync_conn *conn);
sync_conn *sync_conn_ref(sync_conn *conn);
uint64_t sync_conn_id(const sync_conn *conn);
const char *sync_conn_identity(const sync_conn *conn);
int sync_conn_set_identity(sync_conn *conn, const char *identity_json);
int sync_conn_send(sync_conn *conn, const char *text, size_t len);
int sync_conn_close(sync_conn *conn, int code, const char *reason);

/* adapters */
void sync_adapter_free(sync_adapter *adapter);

/* server */
const char *sync_request_path(const sync_request *req);
const char *sync_request_query(const sync_request *req);
const char *sync_request_header(const sync_request *req, const char *name);
const char *sync_request_peer(const sync_request *req);
int sync_request_set_identity(sync_request *req, const char *identity_json);
sync_request *sync_request_defer(sync_request *req);
int sync_request_complete(sync_request *req, int status);
int sync_server_mount(sync_server *server, const char *path, sync_engine *engine);
int sync_server_set_metrics_token(sync_server *server, const char *token);
int sync_server_listen(sync_server *server);
int sync_server_port(const sync_server *server);
int sync_server_event_loop(const sync_server *server);
int sync_server_start(sync_server *server);
int sync_server_stop(sync_server *server);
void sync_server_free(sync_server *server);

/*
 * The functions that take Python objects hold the GIL while they touch them and release it
 * around the C call (which may take an engine lock, or fail and run free_userdata).
 */
%nothread;
%inline %{
/* The package's error_for(status, detail): what a failed constructor raises. */
static void sync_bridge_set_error_factory(PyObject *factory)
{
    Py_XINCREF(factory);
    Py_XDECREF(pysync_error_factory);
    pysync_error_factory = factory;
}

/* Creates an engine from `opts` (a sync_engine_options the package filled; its adapter is taken
 * over in every case). `dispatch(name, *args)` receives the hooks selected by `hook_mask`
 * (SYNC_BRIDGE_ON_*), `log(level, text)` the log lines (both may be None). */
static int pysync_engine_new(sync_engine_options *opts, PyObject *log, PyObject *dispatch,
                             int hook_mask, sync_engine **out)
{
    sync_hooks hooks = SYNC_HOOKS_INIT;
    if (log && log != Py_None) {
        opts->log = pysync_log;
        opts->log_userdata = log;
    }
    if (dispatch && dispatch != Py_None) {
        pysync_fill_hooks(&hooks, dispatch, hook_mask);
        opts->hooks = &hooks;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS status = sync_engine_new(out, opts);
    Py_END_ALLOW_THREADS
    /* the options object lives on in Python: no pointer into this frame stays in it */
    opts->adapter = NULL;
    opts->hooks = NULL;
    opts->log = NULL;
    opts->log_userdata = NULL;
    return status;
}

/* Registers fn(msg) -> status as the handler of `type` (kind 0), the validator (1; None clears
 * it) or a middleware (2). */
static int pysync_engine_step(sync_engine *engine, int kind, const char *type, PyObject *fn)
{
    int status;
    if (kind == 1 && fn == Py_None) {
        Py_BEGIN_ALLOW_THREADS status = sync_engine_set_validator(engine, NULL, NULL, NULL);
        Py_END_ALLOW_THREADS return status;
    }
    if (!pysync_live_steps && !(pysync_live_steps = PyDict_New()))
        return SYNC_ENOMEM;
    PyObject *token = PyLong_FromVoidPtr(fn);
    if (!token || PyDict_SetItem(pysync_live_steps, token, fn) < 0) {
        Py_XDECREF(token);
        PyErr_Clear();
        return SYNC_ENOMEM;
    }
    Py_DECREF(token);
    Py_INCREF(fn);
    Py_BEGIN_ALLOW_THREADS if (kind == 0) status =
        sync_engine_on(engine, type, pysync_step, fn, pysync_step_free);
    else if (kind == 1) status =
        sync_engine_set_validator(engine, pysync_step, fn, pysync_step_free);
    else status = sync_engine_use(engine, pysync_step, fn, pysync_step_free);
    Py_END_ALLOW_THREADS return status;
}

/* The step callable a token stands for, or None when its registration is gone. */
static PyObject *pysync_step_of(PyObject *token)
{
    PyObject *fn = pysync_live_steps ? PyDict_GetItemWithError(pysync_live_steps, token) : NULL;
    if (!fn) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Py_INCREF(fn);
    return fn;
}

/* Completes `msg` with `status` and returns (next message or None, its step's token or 0, the
 * completion's status): the next step of this bridge the engine reached, pending, for the
 * caller's loop to run (sync_msg_complete_next). */
static PyObject *pysync_msg_complete_next(sync_msg *msg, int status)
{
    sync_msg *next = NULL;
    void *token = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = sync_msg_complete_next(msg, status, &next, &token);
    Py_END_ALLOW_THREADS if (!next) return Py_BuildValue("(Oii)", Py_None, 0, rc);
    return Py_BuildValue("(NNi)", SWIG_NewPointerObj(next, SWIGTYPE_p_sync_msg, 0),
                         PyLong_FromVoidPtr(token), rc);
}

/* The id of the connection that sent `msg`, 0 for none (one crossing instead of two). */
static unsigned long long pysync_msg_conn_id(sync_msg *msg)
{
    sync_conn *conn = sync_msg_conn(msg);
    return conn ? (unsigned long long)sync_conn_id(conn) : 0;
}

/* The runner thread's side: starts taking jobs (once per process; 0 when it already had). */
static int pysync_runner_start(void)
{
    if (atomic_load(&pysync_runner_on))
        return 0;
    sync_executor *ex = NULL;
    if (sync_executor_new(&ex, pysync_runner_wake, NULL, NULL) < 0)
        return SYNC_ENOMEM;
    pysync_runner = ex;
    pthread_mutex_lock(&pysync_runner_lock);
    pysync_runner_stopping = 0;
    pthread_mutex_unlock(&pysync_runner_lock);
    atomic_store(&pysync_runner_on, 1);
    return 1;
}

/* Waits (GIL released) until jobs are queued, then takes every one: a list of (msg, token), or
 * None once pysync_runner_stop was called. */
static PyObject *pysync_runner_take(void)
{
    int stopping = 0;
    Py_BEGIN_ALLOW_THREADS pthread_mutex_lock(&pysync_runner_lock);
    while (!pysync_runner_woken && !pysync_runner_stopping)
        pthread_cond_wait(&pysync_runner_cond, &pysync_runner_lock);
    pysync_runner_woken = 0;
    stopping = pysync_runner_stopping;
    pthread_mutex_unlock(&pysync_runner_lock);
    Py_END_ALLOW_THREADS
    PyObject *batch = PyList_New(0);
    if (!batch)
        return NULL;
    /* Even when stopping: what was posted before runs. */
    pysync_runner_batch = batch;
    sync_executor_run(pysync_runner);
    pysync_runner_batch = NULL;
    if (stopping && PyList_GET_SIZE(batch) == 0) {
        Py_DECREF(batch);
        Py_RETURN_NONE;
    }
    return batch;
}

/* Steps reached on libsync's threads run there again (taking the GIL each); the runner's next
 * take returns what is left, then None. */
static void pysync_runner_stop(void)
{
    atomic_store(&pysync_runner_on, 0);
    pthread_mutex_lock(&pysync_runner_lock);
    pysync_runner_stopping = 1;
    pthread_cond_signal(&pysync_runner_cond);
    pthread_mutex_unlock(&pysync_runner_lock);
}

/* The runner thread, once its take returned None: a post that raced with the stop is dropped
 * (its step fails with SYNC_ECLOSED) rather than left waiting. The closed executor stays
 * allocated: a libsync thread may still be posting to it. A later start makes a new one. */
static void pysync_runner_close(void)
{
    sync_executor *ex = pysync_runner;
    pysync_runner = NULL;
    Py_BEGIN_ALLOW_THREADS sync_executor_close(ex);
    Py_END_ALLOW_THREADS
}

/* Replaces the hooks (dispatch None clears them). */
static int pysync_engine_set_hooks(sync_engine *engine, PyObject *dispatch, int hook_mask)
{
    sync_hooks hooks = SYNC_HOOKS_INIT;
    int clear = dispatch == Py_None;
    if (!clear)
        pysync_fill_hooks(&hooks, dispatch, hook_mask);
    int status;
    Py_BEGIN_ALLOW_THREADS status = sync_engine_set_hooks(engine, clear ? NULL : &hooks);
    Py_END_ALLOW_THREADS return status;
}

/* A connection whose transport is the Python object `bridge` (methods send(text) -> status and
 * close(code, reason)). The caller owns the returned reference (sync_conn_free). */
static int pysync_conn_new(PyObject *bridge, sync_conn **out)
{
    sync_conn_callbacks cbs = SYNC_CONN_CALLBACKS_INIT;
    cbs.send = pysync_conn_send;
    cbs.close = pysync_conn_close;
    cbs.free_userdata = pysync_decref;
    Py_INCREF(bridge);
    /* on failure its free_userdata has dropped the reference (common.h) */
    return sync_conn_new(out, &cbs, bridge);
}

/* An adapter whose store is the Python object `bridge` (see the callbacks above). */
static int pysync_adapter_new(PyObject *bridge, int can_backup, sync_adapter **out)
{
    sync_adapter_vtable vt;
    memset(&vt, 0, sizeof vt);
    vt.version = SYNC_ADAPTER_VTABLE_VERSION;
    vt.init = pysync_adapter_init;
    vt.load = pysync_adapter_load;
    vt.save = pysync_adapter_save;
    vt.backup = can_backup ? pysync_adapter_backup : NULL;
    vt.destroy = pysync_decref;
    Py_INCREF(bridge);
    int status;
    Py_BEGIN_ALLOW_THREADS status = sync_adapter_new(out, &vt, bridge);
    Py_END_ALLOW_THREADS return status;
}

/* Creates a server from `opts`; `origins` is a list of str or None, `auth` fn(request) -> int or
 * None, `log` fn(level, text) or None. */
static int pysync_server_new(sync_server_options *opts, PyObject *origins, PyObject *auth,
                             PyObject *log, sync_server **out)
{
    if (log && log != Py_None) {
        opts->log = pysync_log;
        opts->log_userdata = log;
    }
    const char **list = NULL;
    if (origins && origins != Py_None) {
        Py_ssize_t count = PyList_Check(origins) ? PyList_Size(origins) : 0;
        list = calloc((size_t)count + 1, sizeof *list);
        for (Py_ssize_t i = 0; list && i < count; i++)
            list[i] = PyUnicode_AsUTF8(PyList_GetItem(origins, i));
        if (PyErr_Occurred() || !list) {
            int status = list ? SYNC_EINVAL : SYNC_ENOMEM;
            PyErr_Clear();
            free(list);
            opts->log = NULL;
            opts->log_userdata = NULL;
            return status;
        }
        opts->allowed_origins = list;
        opts->allowed_origins_count = (size_t)count;
    }
    if (auth && auth != Py_None) {
        Py_INCREF(auth);
        opts->auth = pysync_auth;
        opts->auth_userdata = auth;
        opts->auth_free_userdata = pysync_decref;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS status = sync_server_new(out, opts);
    Py_END_ALLOW_THREADS free(list);
    opts->allowed_origins = NULL;
    opts->allowed_origins_count = 0;
    opts->auth = NULL;
    opts->auth_userdata = NULL;
    opts->auth_free_userdata = NULL;
    opts->log = NULL;
    opts->log_userdata = NULL;
    return status;
}
%}
%thread;

%include "python/syncengine_python_rooms.i"

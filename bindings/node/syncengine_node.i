/*
 * The Node bridge of libsync's SWIG interface (included by ../syncengine.i under -javascript).
 *
 * SWIG wraps the plain C functions; this file adds what SWIG cannot generate: C callbacks that call
 * JavaScript. Every callback of one engine (steps, hooks, connections, when_idle) and of one JS
 * adapter goes to a single JavaScript "sink" function, sink(event, slot, a, b, c, d); index.js
 * turns those events into the idiomatic API (handlers, hooks, promises).
 *
 * Threads. JavaScript runs only on Node's main thread. A callback that arrives on another thread
 * (the built-in server's service thread) copies its arguments into a job, wakes the main thread
 * with a uv_async_t on Node's loop and returns at once: SYNC_PENDING for pipeline steps and
 * adapter calls (completed from the main thread with sync_msg_complete / sync_pending_complete_*),
 * nothing for hooks and sends. See README.md "Threads".
 */
%module syncengine

/* A parameter or option field with one of these names: a string, or null/undefined for NULL.
 * Defined before common.i so that its option structs' string fields take null too. */
%typemap(in, fragment = "SWIG_AsCharPtrAndSize") const char *nullable
    (char *buf = 0, int alloc = 0) {
  if ($input->IsNullOrUndefined()) {
    $1 = 0;
  } else {
    int res = SWIG_AsCharPtrAndSize($input, &buf, NULL, &alloc);
    if (!SWIG_IsOK(res))
      SWIG_exception_fail(SWIG_ArgError(res), "in method '$symname', expected a string or null");
    $1 = buf;
  }
}
%typemap(freearg) const char *nullable {
  if (alloc$argnum == SWIG_NEWOBJ) %delete_array(buf$argnum);
}
%apply const char *nullable { const char *initial_state_json, const char *type, const char *reason,
                              const char *table_name, const char *backups_dir,
                              const char *key_prefix, const char *url, const char *node_id,
                              const char *error_message, const char *state_json, const char *host,
                              const char *static_dir, const char *origins,
                              const char *tls_cert_path, const char *tls_key_path,
                              const char *auth_headers, const char *identity_json };

%include "common.i"

%{
#include <node.h>
#include <uv.h>

#include <atomic>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

namespace
{

/* One JavaScript function that receives the events of an engine or adapter. Reference counted:
 * JS holds one reference (jsb_sink_release), every C registration and every queued job another.
 * The count may drop on any thread, but the function is released only on the main thread. */
struct jsb_sink {
    v8::Global<v8::Function> fn;
    std::atomic<int> refs;
};

/* The userdata of one C registration: which sink, and the slot JS uses to find its function. */
struct jsb_cb {
    jsb_sink *sink;
    double slot;
};

enum jsb_job_kind {
    JOB_STEP,         /* a validator/middleware/handler to run */
    JOB_EVENT,        /* a hook, a send or close, an idle notice: call the sink, nothing back */
    JOB_ADAPTER,      /* an adapter call to run and complete */
    JOB_ADAPTER_FAIL, /* complete a pending adapter call with an error */
    JOB_UNREF,        /* drop one sink reference on the main thread */
    JOB_AUTH          /* a deferred upgrade request for the server's JS auth callback */
};

/* A callback copied off a foreign thread (or a deferred completion), run on the main thread. */
struct jsb_job {
    jsb_job_kind kind;
    const char *event; /* static text */
    jsb_sink *sink;    /* one reference held by the job */
    double slot;
    sync_msg *msg;
    sync_pending *pending;
    sync_conn *conn; /* one reference held by the job, or NULL */
    sync_request *request; /* JOB_AUTH: deferred, completed by index.js (or here if never run) */
    char *s1, *s2;
    double n1, n2;
    int status;
};

uv_thread_t jsb_main_thread;
uv_async_t jsb_async;
sync_executor *jsb_executor; /* the jobs for the main thread; closed when Node exits */
int jsb_keepalive_count;     /* main thread only */
std::atomic<bool> jsb_shutting_down; /* set when Node exits: V8 is no longer to be touched */
/* Heap-held: a static v8::Global would be destroyed after V8 at exit. */
v8::Global<v8::Context> *jsb_context;
/* (status, detail) => SyncError, registered by index.js: what a failed constructor throws. */
v8::Global<v8::Function> *jsb_error_factory;

bool jsb_on_main_thread(void)
{
    uv_thread_t self = uv_thread_self();
    return uv_thread_equal(&self, &jsb_main_thread) != 0;
}

char *jsb_strdup(const char *s, size_t len)
{
    if (!s)
        return NULL;
    char *copy = (char *)malloc(len + 1);
    if (copy) {
        memcpy(copy, s, len);
        copy[len] = '\0';
    }
    return copy;
}

void jsb_free_lines(char **lines, size_t count)
{
    for (size_t i = 0; lines && i < count; i++)
        free(lines[i]);
    free(lines);
}

/* A list index.js passes as one string (Array.join('\n')), as copies of its lines; NULL on
 * ENOMEM. Free with jsb_free_lines. */
char **jsb_split_lines(const char *text, size_t *count)
{
    size_t n = 1;
    for (const char *c = text; *c; c++)
        n += *c == '\n';
    char **lines = (char **)calloc(n, sizeof *lines);
    if (!lines)
        return NULL;
    size_t i = 0;
    for (const char *line = text;; i++) {
        const char *end = strchr(line, '\n');
        if (!(lines[i] = jsb_strdup(line, end ? (size_t)(end - line) : strlen(line)))) {
            jsb_free_lines(lines, i);
            return NULL;
        }
        if (!end)
            break;
        line = end + 1;
    }
    *count = i + 1;
    return lines;
}

char *jsb_print(const cJSON *value)
{
    return value ? cJSON_PrintUnformatted(value) : NULL;
}

void jsb_run_job_and_free(void *job);
void jsb_job_drop(void *job);

/* Queues a job for the main thread; the executor wakes it (jsb_wake). */
void jsb_post(jsb_job *job)
{
    /* Once Node is exiting under a still-running server thread, the executor refuses and
     * jsb_job_drop lets go of the job without V8 (gone by then). */
    if (sync_executor_post(jsb_executor, jsb_run_job_and_free, jsb_job_drop, job) != SYNC_OK)
        return;
    /* A job posted by the main thread itself (a deferred completion) must keep the loop alive
     * until it ran; foreign threads post only while a server keeps the handle referenced. Only
     * the main thread runs jobs, so this one cannot have run yet. */
    if (jsb_on_main_thread())
        uv_ref((uv_handle_t *)&jsb_async);
}

void jsb_sink_unref(jsb_sink *sink)
{
    if (sink->refs.fetch_sub(1) != 1)
        return;
    if (jsb_on_main_thread()) {
        sink->fn.Reset();
        delete sink;
        return;
    }
    /* The last reference went on a foreign thread: revive it and let the main thread drop it. */
    sink->refs.store(1);
    jsb_job *job = (jsb_job *)calloc(1, sizeof *job);
    if (!job)
        return; /* cannot happen in practice; leaking one sink beats touching V8 off-thread */
    job->kind = JOB_UNREF;
    job->sink = sink;
    jsb_post(job);
}

jsb_job *jsb_job_new(jsb_job_kind kind, const char *event, jsb_sink *sink, double slot)
{
    jsb_job *job = (jsb_job *)calloc(1, sizeof *job);
    if (!job)
        return NULL;
    job->kind = kind;
    job->event = event;
    job->sink = sink;
    job->slot = slot;
    sink->refs.fetch_add(1);
    return job;
}


void jsb_job_free(jsb_job *job)
{
    if (job->request)
        sync_request_complete(job->request, 503); /* never reached JS: refuse, free it */
    if (job->conn)
        sync_conn_free(job->conn);
    free(job->s1);
    free(job->s2);
    if (job->sink)
        jsb_sink_unref(job->sink);
    free(job);
}

/* ---- calling JavaScript (main thread, inside a HandleScope) --------------------------------- */

v8::Local<v8::Value> jsb_str(const char *s)
{
    v8::Isolate *iso = v8::Isolate::GetCurrent();
    if (!s)
        return v8::Null(iso);
    v8::Local<v8::String> out;
    if (!v8::String::NewFromUtf8(iso, s, v8::NewStringType::kNormal).ToLocal(&out))
        return v8::Null(iso);
    return out;
}

v8::Local<v8::Value> jsb_strn(const char *s, size_t len)
{
    v8::Isolate *iso = v8::Isolate::GetCurrent();
    v8::Local<v8::String> out;
    if (!s || len > (size_t)v8::String::kMaxLength ||
        !v8::String::NewFromUtf8(iso, s, v8::NewStringType::kNormal, (int)len).ToLocal(&out))
        return v8::Null(iso);
    return out;
}

v8::Local<v8::Value> jsb_num(double n)
{
    return v8::Number::New(v8::Isolate::GetCurrent(), n);
}

/* Calls sink(event, slot, a, b, c, d, e). The sink never throws by design (index.js catches
 * every user error and reports it); should it throw anyway, the exception is printed, not
 * propagated into C, and the result is undefined. */
v8::Local<v8::Value> jsb_call(jsb_sink *sink, const char *event, double slot,
                              v8::Local<v8::Value> a = v8::Local<v8::Value>(),
                              v8::Local<v8::Value> b = v8::Local<v8::Value>(),
                              v8::Local<v8::Value> c = v8::Local<v8::Value>(),
                              v8::Local<v8::Value> d = v8::Local<v8::Value>(),
                              v8::Local<v8::Value> e = v8::Local<v8::Value>())
{
    v8::Isolate *iso = v8::Isolate::GetCurrent();
    v8::EscapableHandleScope scope(iso);
    v8::Local<v8::Context> ctx = jsb_context->Get(iso);
    v8::Local<v8::Value> undef = v8::Undefined(iso);
    v8::Local<v8::Value> argv[7] = {jsb_str(event),          jsb_num(slot),
                                    a.IsEmpty() ? undef : a, b.IsEmpty() ? undef : b,
                                    c.IsEmpty() ? undef : c, d.IsEmpty() ? undef : d,
                                    e.IsEmpty() ? undef : e};
    v8::TryCatch tc(iso);
    v8::Local<v8::Value> result;
    if (!sink->fn.Get(iso)->Call(ctx, undef, 7, argv).ToLocal(&result)) {
        if (tc.HasCaught() && tc.CanContinue()) {
            v8::String::Utf8Value text(iso, tc.Exception());
            fprintf(stderr, "syncengine: internal error in the JS bridge (%s): %s\n", event,
                    *text ? *text : "?");
        }
        return scope.Escape(undef);
    }
    return scope.Escape(result);
}

int jsb_status_of(v8::Local<v8::Value> r, int fallback)
{
    if (r->IsNumber())
        return (int)r.As<v8::Number>()->Value();
    if (r->IsArray()) {
        v8::Local<v8::Value> first;
        if (r.As<v8::Array>()
                ->Get(jsb_context->Get(v8::Isolate::GetCurrent()), 0)
                .ToLocal(&first) &&
            first->IsNumber())
            return (int)first.As<v8::Number>()->Value();
    }
    return fallback;
}

v8::Local<v8::Value> jsb_item(v8::Local<v8::Value> r, uint32_t i)
{
    v8::Isolate *iso = v8::Isolate::GetCurrent();
    v8::Local<v8::Value> v;
    if (!r->IsArray() || !r.As<v8::Array>()->Get(jsb_context->Get(iso), i).ToLocal(&v))
        return v8::Undefined(iso);
    return v;
}

/* An owned UTF-8 copy of a JS string (malloc), NULL for anything else. */
char *jsb_cstr(v8::Local<v8::Value> v)
{
    if (!v->IsString())
        return NULL;
    v8::String::Utf8Value text(v8::Isolate::GetCurrent(), v);
    return *text ? jsb_strdup(*text, (size_t)text.length()) : NULL;
}

double jsb_number(v8::Local<v8::Value> v)
{
    return v->IsNumber() ? v.As<v8::Number>()->Value() : 0;
}

/* ---- common.i's constructors: the failure becomes index.js's SyncError ---------------------- */

#define SYNC_BRIDGE_SET_RESULT(result, value) ((result) = (value))

void sync_bridge_raise(int status)
{
    v8::Isolate *iso = v8::Isolate::GetCurrent();
    v8::Local<v8::Value> error;
    if (jsb_error_factory && !jsb_error_factory->IsEmpty()) {
        v8::Local<v8::Value> argv[2] = {jsb_num(status), jsb_str(sync_error_last())};
        v8::TryCatch tc(iso);
        if (!jsb_error_factory->Get(iso)
                 ->Call(jsb_context->Get(iso), v8::Undefined(iso), 2, argv)
                 .ToLocal(&error))
            error.Clear();
    }
    if (error.IsEmpty())
        error = v8::Exception::Error(jsb_str(sync_strerror(status)).As<v8::String>());
    iso->ThrowException(error);
}

/* ---- pipeline steps ---------------------------------------------------------------------- */

v8::Local<v8::Value> jsb_ptr(void *ptr, swig_type_info *type)
{
    if (!ptr)
        return v8::Null(v8::Isolate::GetCurrent());
    return SWIG_NewPointerObj(ptr, type, 0);
}

int jsb_step(sync_msg *msg, void *userdata)
{
    jsb_cb *cb = (jsb_cb *)userdata;
    if (!jsb_on_main_thread()) {
        jsb_job *job = jsb_job_new(JOB_STEP, "step", cb->sink, cb->slot);
        if (!job)
            return SYNC_ENOMEM;
        job->msg = msg;
        jsb_post(job);
        return SYNC_PENDING;
    }
    v8::HandleScope scope(v8::Isolate::GetCurrent());
    v8::Local<v8::Value> r =
        jsb_call(cb->sink, "step", cb->slot, jsb_ptr(msg, SWIGTYPE_p_sync_msg));
    return jsb_status_of(r, SYNC_EHANDLER);
}

void jsb_cb_free(void *userdata)
{
    jsb_cb *cb = (jsb_cb *)userdata;
    if (!cb)
        return;
    jsb_sink_unref(cb->sink);
    free(cb);
}

jsb_cb *jsb_cb_new(jsb_sink *sink, double slot)
{
    jsb_cb *cb = (jsb_cb *)calloc(1, sizeof *cb);
    if (!cb)
        return NULL;
    cb->sink = sink;
    cb->slot = slot;
    sink->refs.fetch_add(1);
    return cb;
}

/* ---- hooks --------------------------------------------------------------------------------- */

/* A hook on the main thread runs at once; elsewhere its arguments are copied and posted. */
/* sink(event, slot, conn, s1, s2, n1, n2); s1_len (size_t)-1 means s1 is NUL-terminated. */
void jsb_event(jsb_sink *sink, const char *event, double slot, sync_conn *conn, const char *s1,
               const char *s2, double n1, double n2, size_t s1_len = (size_t)-1)
{
    if (!jsb_on_main_thread()) {
        jsb_job *job = jsb_job_new(JOB_EVENT, event, sink, slot);
        if (!job)
            return;
        job->conn = conn ? sync_conn_ref(conn) : NULL;
        job->s1 = jsb_strdup(s1, s1 && s1_len == (size_t)-1 ? strlen(s1) : s1_len);
        job->s2 = s2 ? strdup(s2) : NULL;
        job->n1 = n1;
        job->n2 = n2;
        jsb_post(job);
        return;
    }
    v8::HandleScope scope(v8::Isolate::GetCurrent());
    jsb_call(sink, event, slot, jsb_ptr(conn, SWIGTYPE_p_sync_conn),
             s1_len == (size_t)-1 ? jsb_str(s1) : jsb_strn(s1, s1_len), jsb_str(s2), jsb_num(n1),
             jsb_num(n2));
}

jsb_sink *jsb_hook_sink(void *userdata)
{
    return ((jsb_cb *)userdata)->sink;
}

void jsb_on_connect(sync_engine *, sync_conn *conn, void *ud)
{
    jsb_event(jsb_hook_sink(ud), "connect", 0, conn, NULL, NULL, 0, 0);
}
void jsb_on_disconnect(sync_engine *, sync_conn *conn, void *ud)
{
    jsb_event(jsb_hook_sink(ud), "disconnect", 0, conn, NULL, NULL, 0, 0);
}
void jsb_on_ping(sync_engine *, sync_conn *conn, void *ud)
{
    jsb_event(jsb_hook_sink(ud), "ping", 0, conn, NULL, NULL, 0, 0);
}
void jsb_on_pong(sync_engine *, sync_conn *conn, void *ud)
{
    jsb_event(jsb_hook_sink(ud), "pong", 0, conn, NULL, NULL, 0, 0);
}
void jsb_on_ping_timeout(sync_engine *, sync_conn *conn, void *ud)
{
    jsb_event(jsb_hook_sink(ud), "ping_timeout", 0, conn, NULL, NULL, 0, 0);
}
void jsb_on_state_change(sync_engine *, const cJSON *old_state, const cJSON *new_state, void *ud)
{
    char *old_json = jsb_print(old_state), *new_json = jsb_print(new_state);
    jsb_event(jsb_hook_sink(ud), "state_change", 0, NULL, old_json, new_json, 0, 0);
    free(old_json);
    free(new_json);
}
void jsb_on_sync(sync_engine *, const cJSON *state, int64_t version, void *ud)
{
    char *json = jsb_print(state);
    jsb_event(jsb_hook_sink(ud), "sync", 0, NULL, json, NULL, (double)version, 0);
    free(json);
}
void jsb_on_backup(sync_engine *, int64_t timestamp_ms, int64_t version, void *ud)
{
    jsb_event(jsb_hook_sink(ud), "backup", 0, NULL, NULL, NULL, (double)timestamp_ms,
              (double)version);
}
void jsb_on_error(sync_engine *, int status, const char *message, const char *context,
                  sync_conn *conn, void *ud)
{
    jsb_event(jsb_hook_sink(ud), "error", 0, conn, message, context ? context : "", (double)status,
              0);
}

/* ---- connections of the embedder's own WebSocket server -------------------------------------- */

int jsb_conn_send(void *ud, const char *text, size_t len)
{
    jsb_cb *cb = (jsb_cb *)ud;
    if (!jsb_on_main_thread()) {
        jsb_event(cb->sink, "send", cb->slot, NULL, text, NULL, 0, 0, len);
        return SYNC_OK;
    }
    v8::HandleScope scope(v8::Isolate::GetCurrent());
    return jsb_status_of(jsb_call(cb->sink, "send", cb->slot, v8::Null(v8::Isolate::GetCurrent()),
                                  jsb_strn(text, len)),
                         SYNC_ESEND);
}

void jsb_conn_close(void *ud, int code, const char *reason)
{
    jsb_cb *cb = (jsb_cb *)ud;
    jsb_event(cb->sink, "close", cb->slot, NULL, reason ? reason : "", NULL, (double)code, 0);
}

/* ---- adapters written in JavaScript ---------------------------------------------------------- */

/* What an adapter call returned: a status, or [status, a, b] (load: [0, json|null, version];
 * backup: [0, timestampMs]; failure: [status, message]). */
struct jsb_adapter_result {
    int status;
    char *text; /* load: the state JSON; failure: the message */
    double num; /* load: the version; backup: the timestamp */
};

jsb_adapter_result jsb_adapter_parse(const char *op, v8::Local<v8::Value> r)
{
    jsb_adapter_result res = {jsb_status_of(r, SYNC_EIO), NULL, 0};
    if (res.status < 0) {
        res.text = jsb_cstr(jsb_item(r, 1));
        if (!res.text) {
            char buf[64];
            snprintf(buf, sizeof buf, "adapter %s failed", op);
            res.text = strdup(buf);
        }
    } else if (!strcmp(op, "load")) {
        res.text = jsb_cstr(jsb_item(r, 1));
        res.num = jsb_number(jsb_item(r, 2));
    } else if (!strcmp(op, "backup")) {
        res.num = jsb_number(jsb_item(r, 1));
    }
    return res;
}

void jsb_adapter_finish(const char *op, sync_pending *pending, const jsb_adapter_result &res)
{
    if (!strcmp(op, "load"))
        sync_pending_complete_load(pending, res.status, res.status < 0 ? NULL : res.text,
                                   (int64_t)res.num, res.status < 0 ? res.text : NULL);
    else if (!strcmp(op, "backup"))
        sync_pending_complete_backup(pending, res.status, (int64_t)res.num,
                                     res.status < 0 ? res.text : NULL);
    else
        sync_pending_complete(pending, res.status, res.status < 0 ? res.text : NULL);
}

v8::Local<v8::Value> jsb_adapter_invoke(jsb_sink *sink, const char *op, sync_pending *pending,
                                        const char *state_json, size_t state_len, double version)
{
    v8::Isolate *iso = v8::Isolate::GetCurrent();
    v8::EscapableHandleScope scope(iso);
    return scope.Escape(
        jsb_call(sink, op, 0, jsb_ptr(pending, SWIGTYPE_p_sync_pending),
                 state_json ? jsb_strn(state_json, state_len) : v8::Null(iso).As<v8::Value>(),
                 jsb_num(version)));
}

/* On the main thread the adapter finishes synchronously when JS did; a synchronous failure is
 * completed on the next loop turn instead, because only a completion carries its message. */
int jsb_adapter_call(void *ud, const char *op, sync_pending *pending, const char *state_json,
                     size_t state_len, int64_t version, char **out_json, int64_t *out_version,
                     int64_t *out_ts)
{
    jsb_cb *cb = (jsb_cb *)ud;
    if (!jsb_on_main_thread()) {
        jsb_job *job = jsb_job_new(JOB_ADAPTER, op, cb->sink, 0);
        if (!job)
            return SYNC_ENOMEM;
        job->pending = pending;
        job->s1 = jsb_strdup(state_json, state_len);
        job->n1 = (double)version;
        jsb_post(job);
        return SYNC_PENDING;
    }
    v8::HandleScope scope(v8::Isolate::GetCurrent());
    jsb_adapter_result res = jsb_adapter_parse(
        op, jsb_adapter_invoke(cb->sink, op, pending, state_json, state_len, (double)version));
    if (res.status == SYNC_PENDING) {
        free(res.text);
        return SYNC_PENDING;
    }
    if (res.status < 0) {
        jsb_job *job = jsb_job_new(JOB_ADAPTER_FAIL, op, cb->sink, 0);
        if (!job) {
            free(res.text);
            return res.status;
        }
        job->pending = pending;
        job->status = res.status;
        job->s1 = res.text;
        jsb_post(job);
        return SYNC_PENDING;
    }
    if (out_json && res.text) {
        /* the engine takes the state and frees it with sync_free(): allocate it with libsync */
        *out_json = sync_strdup(res.text);
        if (!*out_json) {
            free(res.text);
            return SYNC_ENOMEM;
        }
    }
    if (out_version)
        *out_version = (int64_t)res.num;
    if (out_ts)
        *out_ts = (int64_t)res.num;
    free(res.text);
    return SYNC_OK;
}

int jsb_adapter_init(void *ud, sync_pending *pending)
{
    return jsb_adapter_call(ud, "init", pending, NULL, 0, 0, NULL, NULL, NULL);
}
int jsb_adapter_load(void *ud, sync_pending *pending, char **out_json, int64_t *out_version)
{
    *out_json = NULL;
    *out_version = 0;
    return jsb_adapter_call(ud, "load", pending, NULL, 0, 0, out_json, out_version, NULL);
}
int jsb_adapter_save(void *ud, sync_pending *pending, const cJSON *, const char *state_json,
                     size_t state_len, int64_t version)
{
    return jsb_adapter_call(ud, "save", pending, state_json, state_len, version, NULL, NULL, NULL);
}
int jsb_adapter_backup(void *ud, sync_pending *pending, int64_t *out_ts)
{
    return jsb_adapter_call(ud, "backup", pending, NULL, 0, 0, NULL, NULL, out_ts);
}

/* ---- the server's auth callback in JavaScript ----------------------------------------------- */

/* The userdata of a JS auth callback: its sink and the header names it is shown. */
struct jsb_auth {
    jsb_sink *sink;
    char **headers;
    size_t header_count;
};

void jsb_auth_free(void *userdata)
{
    jsb_auth *auth = (jsb_auth *)userdata;
    if (!auth)
        return;
    jsb_free_lines(auth->headers, auth->header_count);
    if (auth->sink)
        jsb_sink_unref(auth->sink);
    free(auth);
}

/* {"path","query","peer","headers":{name: value}}: everything JS may look at, copied now because
 * the request's headers are gone once this callback returns. */
char *jsb_auth_request_json(const jsb_auth *auth, sync_request *req)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *headers = cJSON_CreateObject();
    if (!o || !headers) {
        cJSON_Delete(o);
        cJSON_Delete(headers);
        return NULL;
    }
    cJSON_AddStringToObject(o, "path", sync_request_path(req));
    cJSON_AddStringToObject(o, "query", sync_request_query(req));
    cJSON_AddStringToObject(o, "peer", sync_request_peer(req));
    const char *room = sync_request_room(req);
    if (room)
        cJSON_AddStringToObject(o, "room", room);
    else
        cJSON_AddNullToObject(o, "room");
    cJSON_AddItemToObject(o, "headers", headers);
    for (size_t i = 0; i < auth->header_count; i++) {
        const char *value = sync_request_header(req, auth->headers[i]);
        if (value)
            cJSON_AddStringToObject(headers, auth->headers[i], value);
    }
    char *json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return json;
}

/* Runs on the service thread, where JavaScript cannot: the request is deferred and handed to the
 * main thread, whose (possibly async) callback decides with jsb_request_complete. */
int jsb_auth_cb(sync_request *req, void *userdata)
{
    jsb_auth *auth = (jsb_auth *)userdata;
    char *json = jsb_auth_request_json(auth, req);
    sync_request *kept = json ? sync_request_defer(req) : NULL;
    jsb_job *job = kept ? jsb_job_new(JOB_AUTH, "auth", auth->sink, 0) : NULL;
    if (!job) {
        free(json);
        if (kept)
            sync_request_complete(kept, 503);
        return 503;
    }
    job->request = kept;
    job->s1 = json;
    jsb_post(job);
    return SYNC_PENDING;
}

/* ---- the main thread's side of the queue -------------------------------------------------- */

void jsb_run_job(jsb_job *job)
{
    v8::Isolate *iso = v8::Isolate::GetCurrent();
    v8::HandleScope scope(iso);
    switch (job->kind) {
    case JOB_STEP: {
        /* One entry for every message waiting: index.js runs this step, completes it with
         * sync_msg_complete_next and runs each step the engine hands back (the messages queued
         * behind it) in the same call, until the queue is empty or a step is pending. It owns
         * the message once it answers true. */
        v8::Local<v8::Value> taken =
            jsb_call(job->sink, "steps", job->slot, jsb_ptr(job->msg, SWIGTYPE_p_sync_msg));
        if (!taken->IsTrue())
            sync_msg_complete(job->msg, SYNC_EHANDLER);
        break;
    }
    case JOB_EVENT:
        jsb_call(job->sink, job->event, job->slot, jsb_ptr(job->conn, SWIGTYPE_p_sync_conn),
                 jsb_str(job->s1), jsb_str(job->s2), jsb_num(job->n1), jsb_num(job->n2));
        break;
    case JOB_ADAPTER: {
        jsb_adapter_result res = jsb_adapter_parse(
            job->event, jsb_adapter_invoke(job->sink, job->event, job->pending, job->s1,
                                           job->s1 ? strlen(job->s1) : 0, job->n1));
        if (res.status != SYNC_PENDING)
            jsb_adapter_finish(job->event, job->pending, res);
        free(res.text);
        break;
    }
    case JOB_ADAPTER_FAIL: {
        jsb_adapter_result res = {job->status, job->s1, 0};
        jsb_adapter_finish(job->event, job->pending, res);
        break;
    }
    case JOB_UNREF:
        break; /* jsb_job_free drops the reference */
    case JOB_AUTH:
        /* index.js owns the request from here: it calls jsb_request_complete once */
        jsb_call(job->sink, "auth", job->slot, jsb_ptr(job->request, SWIGTYPE_p_sync_request),
                 jsb_str(job->s1));
        job->request = NULL;
        break;
    }
}

/* The executor's run callback, inside jsb_drain's scopes. */
void jsb_run_job_and_free(void *job)
{
    {
        /* Runs process.nextTick callbacks and promise reactions after each job. */
        v8::Isolate *iso = v8::Isolate::GetCurrent();
        node::CallbackScope callback_scope(iso, v8::Object::New(iso), {0, 0});
        jsb_run_job((jsb_job *)job);
    }
    jsb_job_free((jsb_job *)job);
}

/* The executor's drop callback: a job that never runs. Before Node exits (a post out of memory)
 * it is released as usual; after, only what needs no V8, as the sink may not be touched. */
void jsb_job_drop(void *p)
{
    jsb_job *job = (jsb_job *)p;
    if (!jsb_shutting_down.load() && job->kind != JOB_UNREF) {
        jsb_job_free(job);
        return;
    }
    /* A dropped JOB_UNREF must not unref again: that would post another one, without end. */
    free(job->s1);
    free(job->s2);
    free(job);
}

/* The executor's wake-up, from any thread: the loop calls jsb_drain soon. */
void jsb_wake(void *)
{
    uv_async_send(&jsb_async);
}

void jsb_drain(uv_async_t *)
{
    v8::Isolate *iso = v8::Isolate::GetCurrent();
    v8::HandleScope scope(iso);
    v8::Local<v8::Context> ctx = jsb_context->Get(iso);
    v8::Context::Scope context_scope(ctx);
    sync_executor_run(jsb_executor);
    if (jsb_keepalive_count <= 0)
        uv_unref((uv_handle_t *)&jsb_async);
}

/* ---- the server stops on a worker thread: a graceful stop waits for clients ----------------- */

struct jsb_server_close_req {
    uv_work_t work;
    sync_server *server;
    jsb_sink *sink;
    double token;
};

void jsb_server_close_work(uv_work_t *work)
{
    jsb_server_close_req *req = (jsb_server_close_req *)work->data;
    sync_server_free(req->server);
}

void jsb_server_close_done(uv_work_t *work, int)
{
    jsb_server_close_req *req = (jsb_server_close_req *)work->data;
    v8::Isolate *iso = v8::Isolate::GetCurrent();
    v8::HandleScope scope(iso);
    v8::Context::Scope context_scope(jsb_context->Get(iso));
    {
        node::CallbackScope callback_scope(iso, v8::Object::New(iso), {0, 0});
        jsb_call(req->sink, "server_closed", req->token);
    }
    jsb_sink_unref(req->sink);
    delete req;
}

/* Node is shutting down: let its loop close cleanly. */
void jsb_module_cleanup(void *)
{
    /* Closed, not freed: a server thread may still post (refused) until the process ends. Once
     * close returns no jsb_wake is in flight, so the async handle can go. */
    jsb_shutting_down.store(true);
    sync_executor_close(jsb_executor);
    jsb_context->Reset();
    if (jsb_error_factory)
        jsb_error_factory->Reset();
    uv_close((uv_handle_t *)&jsb_async, NULL);
}

void jsb_module_init(v8::Local<v8::Context> context)
{
    static bool done;
    if (done)
        return; /* one main thread per process: the addon is not for worker threads */
    done = true;
    v8::Isolate *iso = context->GetIsolate();
    jsb_main_thread = uv_thread_self();
    jsb_context = new v8::Global<v8::Context>(iso, context);
    if (sync_executor_new(&jsb_executor, jsb_wake, NULL, NULL) != SYNC_OK)
        abort(); /* out of memory while loading the addon: no way to run callbacks */
    uv_async_init(node::GetCurrentEventLoop(iso), &jsb_async, jsb_drain);
    uv_unref((uv_handle_t *)&jsb_async);
    node::AddEnvironmentCleanupHook(iso, jsb_module_cleanup, NULL);
}

} // namespace

/* ---- what index.js calls (wrapped by SWIG below) ------------------------------------------- */

typedef v8::Local<v8::Value> jsb_js_value;

/* Completes `msg` and hands back the next step of this bridge the engine reached, pending: null,
 * or [msg, slot] for index.js to run in the same loop (sync_msg_complete_next). */
static jsb_js_value jsb_msg_complete_next(sync_msg *msg, int status)
{
    v8::Isolate *iso = v8::Isolate::GetCurrent();
    sync_msg *next = NULL;
    void *userdata = NULL;
    sync_msg_complete_next(msg, status, &next, &userdata);
    if (!next)
        return v8::Null(iso);
    v8::Local<v8::Array> pair = v8::Array::New(iso, 2);
    v8::Local<v8::Context> ctx = iso->GetCurrentContext();
    if (pair->Set(ctx, 0, jsb_ptr(next, SWIGTYPE_p_sync_msg)).IsNothing() ||
        pair->Set(ctx, 1, jsb_num(((jsb_cb *)userdata)->slot)).IsNothing()) {
        /* cannot happen short of a V8 failure: never leave the engine waiting */
        sync_msg_complete(next, SYNC_EHANDLER);
        return v8::Null(iso);
    }
    return pair;
}

static jsb_sink *jsb_sink_new(jsb_js_value fn)
{
    if (!fn->IsFunction())
        return NULL;
    jsb_sink *sink = new jsb_sink();
    sink->fn.Reset(v8::Isolate::GetCurrent(), fn.As<v8::Function>());
    sink->refs.store(1);
    return sink;
}

static void jsb_sink_release(jsb_sink *sink)
{
    if (sink)
        jsb_sink_unref(sink);
}

/* Keeps Node's loop alive while > 0 (a listening server), like any open socket would. */
static void jsb_keepalive(int delta)
{
    int before = jsb_keepalive_count;
    jsb_keepalive_count += delta;
    if (before <= 0 && jsb_keepalive_count > 0)
        uv_ref((uv_handle_t *)&jsb_async);
    else if (before > 0 && jsb_keepalive_count <= 0) {
        /* Jobs a stopping server posted still hold the loop; jsb_drain lets go after them. */
        if (sync_executor_pending(jsb_executor) == 0)
            uv_unref((uv_handle_t *)&jsb_async);
    }
}

/* index.js's (status, detail) => SyncError, thrown by a failed constructor. */
static void sync_bridge_set_error_factory(jsb_js_value fn)
{
    if (!fn->IsFunction())
        return;
    if (!jsb_error_factory)
        jsb_error_factory = new v8::Global<v8::Function>();
    jsb_error_factory->Reset(v8::Isolate::GetCurrent(), fn.As<v8::Function>());
}

/* An engine from `opts` (its adapter is taken over in every case) whose timers index.js drives
 * (SYNC_TIMERS_MANUAL) and whose hooks go to `sink`: those `hook_mask` (SYNC_BRIDGE_ON_*)
 * selects, so an unused hook costs no serialisation. */
static int jsb_engine_new(jsb_sink *sink, sync_engine_options *opts, int hook_mask,
                          sync_engine **out)
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
    hooks.userdata = jsb_cb_new(sink, 0);
    if (!hooks.userdata) {
        sync_adapter_free(opts->adapter);
        opts->adapter = NULL;
        return SYNC_ENOMEM;
    }
    hooks.free_userdata = jsb_cb_free;
    opts->hooks = &hooks;
    opts->timer_mode = SYNC_TIMERS_MANUAL;
    int rc = sync_engine_new(out, opts);
    /* the options object lives on in JS: no pointer into this call stays in it */
    opts->hooks = NULL;
    opts->adapter = NULL;
    return rc;
}

/* kind: 0 handler for `type`, 1 validator, 2 middleware. */
static int jsb_engine_step(sync_engine *engine, int kind, const char *type, jsb_sink *sink,
                           double slot)
{
    jsb_cb *cb = jsb_cb_new(sink, slot);
    if (!cb)
        return SYNC_ENOMEM;
    if (kind == 0)
        return sync_engine_on(engine, type, jsb_step, cb, jsb_cb_free);
    if (kind == 1)
        return sync_engine_set_validator(engine, jsb_step, cb, jsb_cb_free);
    return sync_engine_use(engine, jsb_step, cb, jsb_cb_free);
}

/* A connection whose send/close go to sink("send"/"close", id). The caller owns one reference. */
static int jsb_conn_new(jsb_sink *sink, sync_conn **out)
{
    sync_conn_callbacks callbacks = SYNC_CONN_CALLBACKS_INIT;
    callbacks.send = jsb_conn_send;
    callbacks.close = jsb_conn_close;
    callbacks.free_userdata = jsb_cb_free;
    jsb_cb *cb = jsb_cb_new(sink, 0);
    if (!cb)
        return SYNC_ENOMEM;
    int rc = sync_conn_new(out, &callbacks, cb);
    if (rc < 0)
        return rc; /* it ran jsb_cb_free(cb) (common.h) */
    cb->slot = (double)sync_conn_id(*out);
    return rc;
}

static double jsb_conn_id(sync_conn *conn)
{
    return conn ? (double)sync_conn_id(conn) : 0;
}

/* The id of the connection that sent `msg` (0: none), without a wrapper object for it. */
static double jsb_msg_conn_id(sync_msg *msg)
{
    return jsb_conn_id(sync_msg_conn(msg));
}

/* Checks cluster options as sync_server_join_cluster does, on a server made for the check and
 * freed (the Server makes its own only at listen). Returns the status; the reason of a refusal
 * stays in jsb_cluster_check_reason() (main thread only), whatever freeing the probe does to
 * sync_error_last(). */
static char jsb_cluster_reason[512];

static int jsb_cluster_check(const sync_cluster_options *opts)
{
    jsb_cluster_reason[0] = '\0';
    sync_server_options so;
    sync_server_options_init(&so, SYNC_SERVER_OPTIONS_VERSION);
    sync_server *probe = NULL;
    int rc = sync_server_new(&probe, &so);
    if (rc == SYNC_OK)
        rc = sync_server_join_cluster(probe, opts);
    if (rc != SYNC_OK && sync_error_last())
        snprintf(jsb_cluster_reason, sizeof jsb_cluster_reason, "%s", sync_error_last());
    sync_server_free(probe);
    return rc;
}

static const char *jsb_cluster_check_reason(void)
{
    return jsb_cluster_reason;
}

/* Whether `a` is the connection `b` (not merely one with the same id: in a cluster the owner runs
 * another node's message with a stand-in that carries the sender's id on its node). */
static int jsb_conn_same(sync_conn *a, sync_conn *b)
{
    return a && a == b;
}

/* Whether `msg` was sent by `conn` (jsb_conn_same without a wrapper for the message's). */
static int jsb_msg_conn_is(sync_msg *msg, sync_conn *conn)
{
    return jsb_conn_same(sync_msg_conn(msg), conn);
}

static void jsb_idle_done(sync_engine *, int status, void *ud)
{
    jsb_cb *cb = (jsb_cb *)ud;
    jsb_event(cb->sink, "idle", cb->slot, NULL, NULL, NULL, (double)status, 0);
    jsb_cb_free(cb);
}

/* sink("idle", token, null, null, null, status) once the work queued so far has finished. */
static int jsb_when_idle(sync_engine *engine, jsb_sink *sink, double token)
{
    jsb_cb *cb = jsb_cb_new(sink, token);
    if (!cb)
        return SYNC_ENOMEM;
    int rc = sync_engine_when_idle(engine, jsb_idle_done, cb);
    if (rc < 0)
        jsb_cb_free(cb);
    return rc;
}

static int jsb_adapter_js_new(jsb_sink *sink, int can_backup, sync_adapter **out)
{
    sync_adapter_vtable vt = {};
    vt.version = SYNC_ADAPTER_VTABLE_VERSION;
    vt.init = jsb_adapter_init;
    vt.load = jsb_adapter_load;
    vt.save = jsb_adapter_save;
    vt.backup = can_backup ? jsb_adapter_backup : NULL;
    vt.destroy = jsb_cb_free;
    jsb_cb *cb = jsb_cb_new(sink, 0);
    if (!cb)
        return SYNC_ENOMEM;
    return sync_adapter_new(out, &vt, cb); /* on failure destroy(cb) has run */
}

/* A server from `opts`; `origins`: the allowed Origin values separated by newlines, or NULL for
 * any; `auth_sink` the JS auth callback (or NULL), shown the headers `auth_headers` names
 * (separated by newlines). */
static int jsb_server_new(sync_server_options *opts, const char *origins, jsb_sink *auth_sink,
                          const char *auth_headers, sync_server **out)
{
    jsb_auth *auth = NULL;
    if (auth_sink) {
        auth = (jsb_auth *)calloc(1, sizeof *auth);
        if (!auth)
            return SYNC_ENOMEM;
        auth->sink = auth_sink;
        auth_sink->refs.fetch_add(1);
        auth->headers = jsb_split_lines(auth_headers ? auth_headers : "", &auth->header_count);
        if (!auth->headers) {
            jsb_auth_free(auth);
            return SYNC_ENOMEM;
        }
    }
    size_t origin_count = 0;
    char **origin_list = origins ? jsb_split_lines(origins, &origin_count) : NULL;
    if (origins && !origin_list) {
        jsb_auth_free(auth);
        return SYNC_ENOMEM;
    }
    opts->allowed_origins = (const char *const *)origin_list;
    opts->allowed_origins_count = origin_count;
    if (auth) {
        opts->auth = jsb_auth_cb;
        opts->auth_userdata = auth;
        opts->auth_free_userdata = jsb_auth_free; /* also when sync_server_new fails */
    }
    int rc = sync_server_new(out, opts);
    jsb_free_lines(origin_list, origin_count);
    /* the options object lives on in JS: no pointer into this call stays in it */
    opts->allowed_origins = NULL;
    opts->allowed_origins_count = 0;
    opts->auth = NULL;
    opts->auth_userdata = NULL;
    opts->auth_free_userdata = NULL;
    return rc;
}

/* The JS auth callback's decision: 0 accepts (with `identity_json` when not null), an HTTP
 * status refuses. SYNC_ECLOSED when the client left meanwhile. */
static int jsb_request_complete(sync_request *request, int status, const char *identity_json)
{
    if (status == 0 && identity_json)
        sync_request_set_identity(request, identity_json);
    return sync_request_complete(request, status);
}

/* Stops and frees the server on a libuv worker (a graceful stop waits for clients to close),
 * then calls sink("server_closed", token) on the main thread. */
static int jsb_server_close(sync_server *server, jsb_sink *sink, double token)
{
    jsb_server_close_req *req = new jsb_server_close_req();
    req->work.data = req;
    req->server = server;
    req->sink = sink;
    req->token = token;
    sink->refs.fetch_add(1);
    int rc = uv_queue_work(node::GetCurrentEventLoop(v8::Isolate::GetCurrent()), &req->work,
                           jsb_server_close_work, jsb_server_close_done);
    if (rc != 0) {
        jsb_sink_unref(sink);
        delete req;
        return SYNC_ENOMEM;
    }
    return SYNC_OK;
}

%}

%init %{
  jsb_module_init(context);
%}

/* ---- typemaps ----------------------------------------------------------------------------- */

typedef struct jsb_sink jsb_sink;
%typemap(in) jsb_js_value "$1 = $input;"
%typemap(out) jsb_js_value "$result = $1;"

/* (text, len): a JS string as UTF-8 bytes, embedded NULs included. */
%typemap(in, fragment = "SWIG_AsCharPtrAndSize") (const char *text, size_t len)
    (char *buf = 0, size_t size = 0, int alloc = 0) {
  int res = SWIG_AsCharPtrAndSize($input, &buf, &size, &alloc);
  if (!SWIG_IsOK(res))
    SWIG_exception_fail(SWIG_ArgError(res), "in method '$symname', expected a string");
  $1 = buf;
  $2 = size ? size - 1 : 0;
}
%typemap(freearg) (const char *text, size_t len) {
  if (alloc$argnum == SWIG_NEWOBJ) %delete_array(buf$argnum);
}

/* ---- the wrapped functions ----------------------------------------------------------------- */

jsb_sink *jsb_sink_new(jsb_js_value fn);
void jsb_sink_release(jsb_sink *sink);
void jsb_keepalive(int delta);

void sync_bridge_set_error_factory(jsb_js_value fn);
int jsb_engine_new(jsb_sink *sink, sync_engine_options *opts, int hook_mask, sync_engine **out);
int jsb_engine_step(sync_engine *engine, int kind, const char *type, jsb_sink *sink, double slot);
int sync_engine_off(sync_engine *engine, const char *type);
int sync_engine_dispose(sync_engine *engine);
void sync_engine_free(sync_engine *engine);

int jsb_conn_new(jsb_sink *sink, sync_conn **out);
double jsb_conn_id(sync_conn *conn);
double jsb_msg_conn_id(sync_msg *msg);
int jsb_cluster_check(const sync_cluster_options *opts);
const char *jsb_cluster_check_reason(void);
int jsb_conn_same(sync_conn *a, sync_conn *b);
int jsb_msg_conn_is(sync_msg *msg, sync_conn *conn);
const char *sync_conn_identity(const sync_conn *conn);
void sync_conn_free(sync_conn *conn);
sync_conn *sync_conn_ref(sync_conn *conn);
int sync_conn_send(sync_conn *conn, const char *text, size_t len);
int sync_conn_close(sync_conn *conn, int code, const char *reason);

int sync_engine_handle_open(sync_engine *engine, sync_conn *conn);
int sync_engine_handle_message(sync_engine *engine, sync_conn *conn, const char *text, size_t len);
int sync_engine_handle_close(sync_engine *engine, sync_conn *conn);
int sync_engine_handle_alive(sync_engine *engine, sync_conn *conn);
int sync_engine_inject(sync_engine *engine, const char *text, size_t len);
size_t sync_engine_connection_count(sync_engine *engine);

sync_conn *sync_msg_conn(const sync_msg *msg);
const char *sync_msg_message_json(sync_msg *msg);
int sync_msg_replace_json(sync_msg *msg, const char *json);
const char *sync_msg_state_json(sync_msg *msg);
int sync_msg_set_state_json(sync_msg *msg, const char *json);
int sync_msg_set_error(sync_msg *msg, const char *reason);
int sync_msg_complete(sync_msg *msg, int status);
jsb_js_value jsb_msg_complete_next(sync_msg *msg, int status);

char *sync_engine_get_state_json(sync_engine *engine);
int64_t sync_engine_get_version(sync_engine *engine);
int sync_engine_set_state_json(sync_engine *engine, const char *json, int broadcast);
int sync_engine_broadcast_state(sync_engine *engine);
int sync_engine_broadcast_text(sync_engine *engine, const char *text, size_t len);
int sync_engine_sync(sync_engine *engine);
int sync_engine_create_backup(sync_engine *engine);
int jsb_when_idle(sync_engine *engine, jsb_sink *sink, double token);
int sync_engine_tick(sync_engine *engine, int64_t now_ms);
int64_t sync_engine_next_deadline_ms(sync_engine *engine);
int64_t sync_now_ms(void);

int jsb_adapter_js_new(jsb_sink *sink, int can_backup, sync_adapter **out);
int sync_pending_complete(sync_pending *pending, int status, const char *error_message);
int sync_pending_complete_load(sync_pending *pending, int status, const char *state_json,
                               int64_t version, const char *error_message);
int sync_pending_complete_backup(sync_pending *pending, int status, int64_t timestamp_ms,
                                 const char *error_message);

int jsb_server_new(sync_server_options *opts, const char *origins, jsb_sink *auth_sink,
                   const char *auth_headers, sync_server **out);
int jsb_request_complete(sync_request *request, int status, const char *identity_json);
int sync_server_mount(sync_server *server, const char *path, sync_engine *engine);
int sync_server_set_metrics_token(sync_server *server, const char *token);
int sync_server_port(const sync_server *server);
int sync_server_event_loop(const sync_server *server);
int sync_server_start(sync_server *server);
int jsb_server_close(sync_server *server, jsb_sink *sink, double token);

%include "node/syncengine_node_rooms.i"

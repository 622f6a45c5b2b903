/*
 * What every language's bridge shares; each bridge includes it right after its %module line.
 *
 *  - Status codes, their texts, the version.
 *  - The option structs of libsync's headers themselves (sync_engine_options, sync_server_options,
 *    sync_sqlite_options, sync_file_options, sync_redis_options, sync_cluster_options): a host object made with the C defaults whose fields
 *    the language sets by name, so a new field of the C struct needs no edit here. The fields
 *    that hold host callbacks or lists (hooks, log, auth, allowed origins) are hidden: the
 *    language's constructor fills them.
 *  - Constructors `int f(..., T **out)`: the host sees `f(...)` returning the handle, and a
 *    negative status raises the binding's own exception, made by the factory the binding
 *    registers (sync_bridge_set_error_factory) from the status and sync_error_last(). The `out`
 *    parameter comes last in the bridges' functions, unlike libsync's: SWIG's JavaScript module
 *    numbers the inputs after a parameter that takes none one too far.
 *  - The hook bits (SYNC_BRIDGE_ON_*, one per sync_hooks callback, in its order) and
 *    sync_bridge_pick_hooks(), which keeps of a language's hook table those a mask selects.
 *
 * Each language provides, in its own %{ %} block:
 *   static void sync_bridge_raise(int status);  sets the host's pending exception for `status`
 *   SYNC_BRIDGE_SET_RESULT(result, value)       replaces a wrapper's return value
 * and declares its sync_bridge_set_error_factory(host function).
 */
%include <stdint.i>

%{
#include <stdlib.h>
#include <string.h>

#include "libsync/libsync.h"

enum {
    SYNC_BRIDGE_ON_CONNECT = 1 << 0,
    SYNC_BRIDGE_ON_DISCONNECT = 1 << 1,
    SYNC_BRIDGE_ON_STATE_CHANGE = 1 << 2,
    SYNC_BRIDGE_ON_SYNC = 1 << 3,
    SYNC_BRIDGE_ON_BACKUP = 1 << 4,
    SYNC_BRIDGE_ON_PING = 1 << 5,
    SYNC_BRIDGE_ON_PONG = 1 << 6,
    SYNC_BRIDGE_ON_PING_TIMEOUT = 1 << 7,
    SYNC_BRIDGE_ON_ERROR = 1 << 8
};

/* `all` with the callbacks that `mask` does not select left out: an unset hook costs the engine
 * nothing (no serialised state for on_sync, no crossing into the host language). */
static sync_hooks sync_bridge_pick_hooks(const sync_hooks *all, int mask)
{
    sync_hooks hooks = *all;
    if (!(mask & SYNC_BRIDGE_ON_CONNECT))
        hooks.on_connect = NULL;
    if (!(mask & SYNC_BRIDGE_ON_DISCONNECT))
        hooks.on_disconnect = NULL;
    if (!(mask & SYNC_BRIDGE_ON_STATE_CHANGE))
        hooks.on_state_change = NULL;
    if (!(mask & SYNC_BRIDGE_ON_SYNC))
        hooks.on_sync = NULL;
    if (!(mask & SYNC_BRIDGE_ON_BACKUP))
        hooks.on_backup = NULL;
    if (!(mask & SYNC_BRIDGE_ON_PING))
        hooks.on_ping = NULL;
    if (!(mask & SYNC_BRIDGE_ON_PONG))
        hooks.on_pong = NULL;
    if (!(mask & SYNC_BRIDGE_ON_PING_TIMEOUT))
        hooks.on_ping_timeout = NULL;
    if (!(mask & SYNC_BRIDGE_ON_ERROR))
        hooks.on_error = NULL;
    return hooks;
}
%}

%constant int SYNC_OK = SYNC_OK;
%constant int SYNC_PENDING = SYNC_PENDING;
%constant int SYNC_EINVAL = SYNC_EINVAL;
%constant int SYNC_ENOMEM = SYNC_ENOMEM;
%constant int SYNC_EPARSE = SYNC_EPARSE;
%constant int SYNC_EMESSAGE = SYNC_EMESSAGE;
%constant int SYNC_ETOOBIG = SYNC_ETOOBIG;
%constant int SYNC_ETOODEEP = SYNC_ETOODEEP;
%constant int SYNC_ENOHANDLER = SYNC_ENOHANDLER;
%constant int SYNC_EREJECTED = SYNC_EREJECTED;
%constant int SYNC_EHANDLER = SYNC_EHANDLER;
%constant int SYNC_EIO = SYNC_EIO;
%constant int SYNC_ECORRUPT = SYNC_ECORRUPT;
%constant int SYNC_ECLOSED = SYNC_ECLOSED;
%constant int SYNC_ESTATE = SYNC_ESTATE;
%constant int SYNC_ESEND = SYNC_ESEND;
%constant int SYNC_ENET = SYNC_ENET;
%constant int SYNC_ELIMIT = SYNC_ELIMIT;
%constant int SYNC_EUNSUPPORTED = SYNC_EUNSUPPORTED;
%constant int SYNC_ETIMEDOUT = SYNC_ETIMEDOUT;

%constant int SYNC_BRIDGE_ON_CONNECT = SYNC_BRIDGE_ON_CONNECT;
%constant int SYNC_BRIDGE_ON_DISCONNECT = SYNC_BRIDGE_ON_DISCONNECT;
%constant int SYNC_BRIDGE_ON_STATE_CHANGE = SYNC_BRIDGE_ON_STATE_CHANGE;
%constant int SYNC_BRIDGE_ON_SYNC = SYNC_BRIDGE_ON_SYNC;
%constant int SYNC_BRIDGE_ON_BACKUP = SYNC_BRIDGE_ON_BACKUP;
%constant int SYNC_BRIDGE_ON_PING = SYNC_BRIDGE_ON_PING;
%constant int SYNC_BRIDGE_ON_PONG = SYNC_BRIDGE_ON_PONG;
%constant int SYNC_BRIDGE_ON_PING_TIMEOUT = SYNC_BRIDGE_ON_PING_TIMEOUT;
%constant int SYNC_BRIDGE_ON_ERROR = SYNC_BRIDGE_ON_ERROR;

const char *sync_strerror(int status);
const char *sync_error_last(void);
const char *sync_version_string(void);
int sync_version_number(void);

/* Opaque handles: SWIG passes them around as pointer objects. */
typedef struct sync_engine sync_engine;
typedef struct sync_conn sync_conn;
typedef struct sync_msg sync_msg;
typedef struct sync_adapter sync_adapter;
typedef struct sync_pending sync_pending;
typedef struct sync_server sync_server;
typedef struct sync_request sync_request;

/* ---- constructors: `int f(..., T **out)` returns the handle or raises ---------------------- */

%define SYNC_BRIDGE_OUT(TYPE)
%typemap(in, numinputs=0) TYPE **out (TYPE *handle = NULL) "$1 = &handle;";
%typemap(argout) TYPE **out {
    if (result < 0) {
        sync_bridge_raise(result);
        SWIG_fail;
    }
    SYNC_BRIDGE_SET_RESULT($result, SWIG_NewPointerObj(*$1, $*1_descriptor, 0));
}
%enddef
SYNC_BRIDGE_OUT(sync_engine)
SYNC_BRIDGE_OUT(sync_server)
SYNC_BRIDGE_OUT(sync_adapter)
SYNC_BRIDGE_OUT(sync_conn)

/* ---- option structs, straight from the headers ------------------------------------------- */

/* A string field owns a copy of what the host set (freed when replaced and with the struct). */
%typemap(memberin) const char * {
    free((char *)$1);
    $1 = $input ? strdup($input) : NULL;
}

%ignore sync_engine_options::version;
%ignore sync_engine_options::log;
%ignore sync_engine_options::log_userdata;
%ignore sync_engine_options::hooks;
%ignore sync_server_options::version;
%ignore sync_server_options::allowed_origins;
%ignore sync_server_options::allowed_origins_count;
%ignore sync_server_options::auth;
%ignore sync_server_options::auth_userdata;
%ignore sync_server_options::auth_free_userdata;
%ignore sync_server_options::log;
%ignore sync_server_options::log_userdata;
%ignore sync_sqlite_options::version;
%ignore sync_file_options::version;
%ignore sync_redis_options::version;
%ignore sync_cluster_options::version;

%extend sync_engine_options {
    sync_engine_options()
    {
        sync_engine_options *o = (sync_engine_options *)calloc(1, sizeof *o);
        if (o)
            sync_engine_options_init(o, SYNC_ENGINE_OPTIONS_VERSION);
        return o;
    }
    ~sync_engine_options()
    {
        free((char *)$self->initial_state_json);
        free($self);
    }
}
%extend sync_server_options {
    sync_server_options()
    {
        sync_server_options *o = (sync_server_options *)calloc(1, sizeof *o);
        if (o)
            sync_server_options_init(o, SYNC_SERVER_OPTIONS_VERSION);
        return o;
    }
    ~sync_server_options()
    {
        free((char *)$self->host);
        free((char *)$self->static_dir);
        free((char *)$self->tls_cert_path);
        free((char *)$self->tls_key_path);
        free($self);
    }
}
%extend sync_sqlite_options {
    sync_sqlite_options()
    {
        sync_sqlite_options *o = (sync_sqlite_options *)calloc(1, sizeof *o);
        if (o)
            sync_sqlite_options_init(o, SYNC_SQLITE_OPTIONS_VERSION);
        return o;
    }
    ~sync_sqlite_options()
    {
        free((char *)$self->path);
        free((char *)$self->table_name);
        free((char *)$self->backups_dir);
        free($self);
    }
}
%extend sync_file_options {
    sync_file_options()
    {
        sync_file_options *o = (sync_file_options *)calloc(1, sizeof *o);
        if (o)
            sync_file_options_init(o, SYNC_FILE_OPTIONS_VERSION);
        return o;
    }
    ~sync_file_options()
    {
        free((char *)$self->file_path);
        free((char *)$self->backups_dir);
        free($self);
    }
}

%extend sync_redis_options {
    sync_redis_options()
    {
        sync_redis_options *o = (sync_redis_options *)calloc(1, sizeof *o);
        if (o)
            sync_redis_options_init(o, SYNC_REDIS_OPTIONS_VERSION);
        return o;
    }
    ~sync_redis_options()
    {
        free((char *)$self->url);
        free((char *)$self->key_prefix);
        free($self);
    }
}

/* `redis` is borrowed: the host keeps the sync_redis_options it set alive until the call that
 * reads it (sync_server_join_cluster copies it). */
%extend sync_cluster_options {
    sync_cluster_options()
    {
        sync_cluster_options *o = (sync_cluster_options *)calloc(1, sizeof *o);
        if (o)
            sync_cluster_options_init(o, SYNC_CLUSTER_OPTIONS_VERSION);
        return o;
    }
    ~sync_cluster_options()
    {
        free((char *)$self->url);
        free((char *)$self->node_id);
        free($self);
    }
}

/* Only the option structs of the headers: their functions, other structs and constants are
 * declared by hand where a bridge wraps them. */
%rename("$ignore", %$isfunction) "";
%rename("$ignore", %$isclass) "";
%rename("$ignore", %$isenumitem) "";
%rename("$ignore", %$isconstant) "";
%rename("%s") sync_engine_options;
%rename("%s") sync_server_options;
%rename("%s") sync_sqlite_options;
%rename("%s") sync_file_options;
%rename("%s") sync_redis_options;
%rename("%s") sync_cluster_options;
#define SYNC_EXTERN
%include "libsync/common.h"
%include "libsync/engine.h"
%include "libsync/adapter.h"
%include "libsync/server.h"
%include "libsync/cluster.h"
%rename("%s", %$isfunction) "";
%rename("%s", %$isclass) "";
%rename("%s", %$isenumitem) "";
%rename("%s", %$isconstant) "";

/* ---- what both bridges wrap as it is ------------------------------------------------------ */

/* Strings the library hands over: the caller owns them (sync_free). */
%typemap(newfree) char * "sync_free($1);";
%newobject sync_engine_get_state_json;
%newobject sync_engine_stats_json;
%rename(sync_adapter_sqlite_new) sync_bridge_adapter_sqlite_new;
%rename(sync_adapter_file_new) sync_bridge_adapter_file_new;
%rename(sync_adapter_redis_new) sync_bridge_adapter_redis_new;
%inline %{
static int sync_bridge_adapter_sqlite_new(const sync_sqlite_options *opts, sync_adapter **out)
{
    return sync_adapter_sqlite_new(out, opts);
}
static int sync_bridge_adapter_file_new(const sync_file_options *opts, sync_adapter **out)
{
    return sync_adapter_file_new(out, opts);
}
static int sync_bridge_adapter_redis_new(const sync_redis_options *opts, sync_adapter **out)
{
    return sync_adapter_redis_new(out, opts);
}
%}
/* The server calls both bridges wrap as they are: joining a cluster (before listen; the options
 * are copied) and the stop request that returns at once (any thread, signal handlers too). */
int sync_server_join_cluster(sync_server *server, const sync_cluster_options *opts);
int sync_server_request_stop(sync_server *server);
/* The engine's statistics as JSON with the C field names as keys, or NULL (disposed). */
char *sync_engine_stats_json(sync_engine *engine);

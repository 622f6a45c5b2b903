/* Connection handles: reference counting, identity, and the bridge from the engine to either a
 * public push transport (sync_conn_callbacks) or a private one (transport.h). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "error.h"

static atomic_uint_fast64_t next_conn_id = 1;

/* A push connection's callbacks live right after its struct (sync_conn is a multiple of their
 * alignment). */
static sync_conn_callbacks *push_callbacks(const sync_conn *conn)
{
    return (sync_conn_callbacks *)(uintptr_t)(conn + 1);
}

_Static_assert(sizeof(sync_conn) % _Alignof(sync_conn_callbacks) == 0,
               "push callbacks follow the struct");

/* Where the userdata pointer is kept when it is not the transport's object in the block: after
 * the struct, and after a push connection's callbacks. */
static void **userdata_slot(const sync_conn *conn)
{
    char *trailer = (char *)(uintptr_t)(conn + 1);
    return (void **)(trailer + (conn->ops ? 0 : sizeof(sync_conn_callbacks)));
}

static void *conn_userdata(const sync_conn *conn)
{
    return conn->has_object ? (void *)(uintptr_t)(conn + 1) : *userdata_slot(conn);
}

_Static_assert(sizeof(sync_conn_callbacks) % _Alignof(void *) == 0,
               "the userdata pointer follows the callbacks");

/* `extra`: the bytes after the struct (callbacks, an object); the userdata pointer, unless
 * `object`, gets its own after them. */
static sync_conn *conn_alloc(void *userdata, size_t extra, const sync__transport_ops *ops,
                             bool object)
{
    size_t size = sizeof(sync_conn) + extra + (object ? 0 : sizeof(void *));
    sync_conn *conn = ops && ops->calloc_conn ? ops->calloc_conn(size) : calloc(1, size);
    if (!conn)
        return NULL;
    atomic_init(&conn->refs, 1);
    atomic_init(&conn->close_requested, 0);
    atomic_init(&conn->identity, NULL);
    conn->id = (uint64_t)atomic_fetch_add(&next_conn_id, 1);
    conn->ops = ops;
    conn->has_object = object;
    if (!object)
        *userdata_slot(conn) = userdata;
    conn->state = CONN_NEW;
    return conn;
}

/* Every failure of a constructor releases the userdata it was given, once (common.h). */
static int new_fail(sync_free_cb free_userdata, void *userdata, int status, const char *what)
{
    if (free_userdata)
        free_userdata(userdata);
    return sync__fail(status, "%s", what);
}

int sync_conn_new(sync_conn **out, const sync_conn_callbacks *callbacks, void *userdata)
{
    if (out)
        *out = NULL;
    if (!callbacks)
        return sync__fail(SYNC_EINVAL, "sync_conn_new: out and callbacks are required");
    /* free_userdata is a field of version 1, which every version has */
    sync_free_cb free_userdata = callbacks->free_userdata;
    if (!out)
        return new_fail(free_userdata, userdata, SYNC_EINVAL,
                        "sync_conn_new: out and callbacks are required");
    if (callbacks->version != SYNC_CONN_CALLBACKS_VERSION) {
        char why[96];
        snprintf(why, sizeof why, "sync_conn_new: unknown callbacks version %u",
                 callbacks->version);
        return new_fail(free_userdata, userdata, SYNC_EINVAL, why);
    }
    if (!callbacks->send)
        return new_fail(free_userdata, userdata, SYNC_EINVAL,
                        "sync_conn_new: callbacks->send is required");
    sync_conn *conn = conn_alloc(userdata, sizeof *callbacks, NULL, false);
    if (!conn)
        return new_fail(free_userdata, userdata, SYNC_ENOMEM,
                        "out of memory creating a connection");
    *push_callbacks(conn) = *callbacks;
    *out = conn;
    return SYNC_OK;
}

int sync__conn_new_transport(sync_conn **out, const sync__transport_ops *ops, void *userdata)
{
    if (out)
        *out = NULL;
    if (!out || !ops || !ops->send_frame)
        return sync__fail(SYNC_EINVAL,
                          "sync__conn_new_transport: out and ops->send_frame required");
    sync_conn *conn = conn_alloc(userdata, 0, ops, false);
    if (!conn)
        return sync__fail(SYNC_ENOMEM, "out of memory creating a connection");
    *out = conn;
    return SYNC_OK;
}

_Static_assert(sizeof(sync_conn) % SYNC__CONN_OBJECT_ALIGN == 0,
               "a transport's object follows the struct");

int sync__conn_new_transport_object(sync_conn **out, const sync__transport_ops *ops, size_t size)
{
    if (out)
        *out = NULL;
    if (!out || !ops || !ops->send_frame)
        return sync__fail(SYNC_EINVAL,
                          "sync__conn_new_transport_object: out and ops->send_frame required");
    sync_conn *conn = conn_alloc(NULL, size, ops, true);
    if (!conn)
        return sync__fail(SYNC_ENOMEM, "out of memory creating a connection");
    *out = conn;
    return SYNC_OK;
}

void *sync__conn_object(sync_conn *conn)
{
    return conn + 1;
}

sync_conn *sync__conn_of(void *object)
{
    return (sync_conn *)object - 1;
}

sync_conn *sync_conn_ref(sync_conn *conn)
{
    if (conn)
        atomic_fetch_add_explicit(&conn->refs, 1, memory_order_relaxed);
    return conn;
}

void sync_conn_free(sync_conn *conn)
{
    if (!conn || atomic_fetch_sub_explicit(&conn->refs, 1, memory_order_acq_rel) != 1)
        return;
    sync_free_cb free_userdata =
        conn->ops ? conn->ops->free_userdata : push_callbacks(conn)->free_userdata;
    if (free_userdata)
        free_userdata(conn_userdata(conn));
    free(atomic_load(&conn->identity));
    if (conn->ops && conn->ops->free_conn)
        conn->ops->free_conn(conn);
    else
        free(conn);
}

void *sync_conn_userdata(const sync_conn *conn)
{
    /* A transport's userdata is its private connection object: the public API promises NULL there.
     */
    return conn && !conn->ops ? conn_userdata(conn) : NULL;
}

uint64_t sync_conn_id(const sync_conn *conn)
{
    return conn ? conn->id : 0;
}

void sync__conn_set_id(sync_conn *conn, uint64_t id)
{
    conn->id = id;
}

const char *sync_conn_identity(const sync_conn *conn)
{
    return conn ? atomic_load(&conn->identity) : NULL;
}

int sync_conn_set_identity(sync_conn *conn, const char *identity_json)
{
    if (!conn)
        return sync__fail(SYNC_EINVAL, "sync_conn_set_identity: conn is NULL");
    char *copy = NULL;
    if (identity_json && !(copy = strdup(identity_json)))
        return sync__fail(SYNC_ENOMEM, "out of memory copying an identity");
    free(atomic_exchange(&conn->identity, copy));
    return SYNC_OK;
}

int sync__conn_push_frame(sync_conn *conn, sync__frame *frame)
{
    if (atomic_load(&conn->close_requested))
        return sync__fail(SYNC_ECLOSED, "connection %llu is closing", (unsigned long long)conn->id);
    int rc = conn->ops ? conn->ops->send_frame(conn_userdata(conn), frame)
                       : push_callbacks(conn)->send(conn_userdata(conn), sync__frame_text(frame),
                                                    frame->len);
    if (rc < 0)
        return sync__fail(rc, "send to connection %llu failed: %s", (unsigned long long)conn->id,
                          sync_strerror(rc));
    return SYNC_OK;
}

int sync__conn_is_pull(const sync_conn *conn)
{
    return conn->ops != NULL;
}

void sync__conn_request_close(sync_conn *conn, int code, const char *reason)
{
    if (atomic_exchange(&conn->close_requested, 1))
        return;
    void (*close_cb)(void *, int, const char *) =
        conn->ops ? conn->ops->close : push_callbacks(conn)->close;
    if (close_cb)
        close_cb(conn_userdata(conn), code, reason);
}

int sync_conn_send(sync_conn *conn, const char *text, size_t len)
{
    if (!conn || (!text && len))
        return sync__fail(SYNC_EINVAL, "sync_conn_send: conn and text are required");
    sync__frame *frame = sync__frame_new_text(SYNC__FRAME_TEXT, text ? text : "", len);
    if (!frame)
        return sync__fail(SYNC_ENOMEM, "out of memory copying a %zu-byte frame", len);
    int rc = sync__conn_push_frame(conn, frame);
    sync__frame_unref(frame);
    return rc;
}

int sync_conn_close(sync_conn *conn, int code, const char *reason)
{
    if (!conn)
        return sync__fail(SYNC_EINVAL, "sync_conn_close: conn is NULL");
    sync__conn_request_close(conn, code, reason);
    return SYNC_OK;
}

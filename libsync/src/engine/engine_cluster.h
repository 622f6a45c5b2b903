/* How an engine serves one room of a cluster on this node (docs/SCALING.md): the seam between the
 * engine and the cluster layer (src/cluster/).
 *
 * Every node keeps an engine per room it serves; its clients attach to it as usual. Once linked,
 * the engine no longer runs its clients' messages itself: after the checks that need no user code
 * (size, UTF-8, JSON, depth), each message goes to `link->forward`, which queues it for the
 * room's stream in Redis. The room's owner node runs each streamed message through its engine's
 * validator, middleware and handler with sync__engine_apply_remote(), which commits nothing: the
 * cluster layer saves the result fenced by its lease, publishes it, and every node (the owner
 * too) then adopts it with sync__engine_adopt_state(), which broadcasts it to that node's
 * clients. So a client, on any node, only ever sees a version that Redis holds, and the engine's
 * committed state is always the last saved one: the state the owner's next message runs against.
 *
 * Nothing here is exported.
 */
#ifndef LIBSYNC_SRC_ENGINE_CLUSTER_H
#define LIBSYNC_SRC_ENGINE_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "libsync/engine.h"

typedef struct sync__cluster_link {
    /* A client's message that passed the engine's edge checks ("pong" never gets here), in the
     * order its connection sent it. Runs on the thread that called sync_engine_handle_message()
     * or sync_engine_inject() (`conn` NULL), with the engine lock not held; must not block
     * (queue the message). `text` is borrowed for the call. SYNC_OK: taken, the owner will apply
     * it in the room's order; another status: refused, and the engine reports it as any dropped
     * message (on_error; an error frame to `conn` with reply_errors). */
    int (*forward)(void *userdata, sync_conn *conn, const char *text, size_t len);
    void *userdata;
} sync__cluster_link;

/* Links the engine to its room in the cluster (`link` copied), or unlinks it (NULL). While
 * linked:
 * - client messages and injected ones go to link->forward, never to the engine's queue;
 * - the engine saves nothing through its adapter (the owner's fenced save in Redis is the store;
 *   a linked engine should have none);
 * - its state changes only through sync__engine_adopt_state(): sync_engine_set_state() and
 *   sync_engine_set_state_json() return SYNC_EUNSUPPORTED ("in a cluster the state changes
 *   through messages").
 * SYNC_EINVAL for a NULL engine or a link without forward; SYNC_ECLOSED to link a disposed engine
 * (unlinking always works). Once it returns, no forward call of the previous link is running or
 * will start (it waits for them), so the old userdata may go; except when called from inside a
 * forward call or a hook of this engine, where it cannot wait. */
int sync__engine_set_cluster_link(sync_engine *engine, const sync__cluster_link *link);

/* A message a node forwarded, as the owner read it from the room's stream. */
typedef struct sync__remote_msg {
    const char *text; /* the client's message as forwarded (not NUL-terminated) */
    size_t len;
    const char *identity_json; /* the sending connection's identity (sync_conn_identity), NULL */
    uint64_t conn_id;          /* its id on its node (sync_conn_id), 0 for an injected message */
    /* NULL: run it. Else the pipeline does not run: the message is refused with this reason
     * (SYNC_ESTATE) as any dropped message (counted, on_error, the error frame with reply_errors
     * captured into the result): an entry a failed owner may have run already. */
    const char *refuse;
} sync__remote_msg;

/* What the owner's run of one forwarded message produced. */
typedef struct sync__remote_result {
    int status;       /* SYNC_OK, or why the pipeline refused the message: nothing changed */
    char *state_json; /* compact JSON of the new state (sync_malloc), NULL when nothing changed */
    /* Frames the pipeline sent to the sending connection (sync_msg_reply(), the error frame of a
     * refusal with reply_errors), in order, for the cluster layer to route to its node: each
     * sync_malloc'd and NUL-terminated. */
    char **replies;
    size_t *reply_lens;
    size_t reply_count;
} sync__remote_result;

/* Gets the result of a run (owned by the callee: release with sync__remote_result_clear()).
 * Called once, on the thread that finished the last step (possibly inside
 * sync__engine_apply_remote() when nothing pended), with the engine lock not held. `result`
 * itself points into the engine's storage, valid for the call: the callee owns its contents, so it
 * clears it there or copies the struct and clears the copy later. A run dropped by the engine's
 * dispose gets status SYNC_ECLOSED. */
typedef void (*sync__remote_done_fn)(void *userdata, sync__remote_result *result);

/* Runs `msg` through the engine's validator, middleware and handler, as sync_engine_handle_message
 * would for a client of this node, against the engine's committed state, but commits, saves and
 * broadcasts nothing: `done` gets the new state. The pipeline's sync_msg_conn() is a stand-in
 * connection with the message's identity and id (sync_conn_id(); sync_conn_userdata() NULL, as
 * for the server's connections); what is sent to it is captured into the result's replies (after
 * done, sends to it fail with SYNC_ECLOSED); closing it reaches nobody (later sends fail, as on a
 * closing connection). An injected message (conn_id 0) runs without a connection (sync_msg_conn()
 * NULL), as it would on its node. The owner's max_message_bytes and max_json_depth apply again.
 * Queued behind every op submitted before it (an adoption queued first is the state it runs
 * against); async steps, step_timeout_ms and rollback work as for any message. A message that is
 * not valid JSON or not a message is refused through `done` like any pipeline refusal. SYNC_OK
 * when queued (done will run), else an error and done never runs (SYNC_ECLOSED after dispose,
 * SYNC_EINVAL, SYNC_ENOMEM). */
int sync__engine_apply_remote(sync_engine *engine, const sync__remote_msg *msg,
                              sync__remote_done_fn done, void *userdata);

void sync__remote_result_clear(sync__remote_result *result);

/* Sends a frame the owner produced for connection `conn_id` of this engine (a reply, an error
 * frame), from any thread. SYNC_OK, or SYNC_ECLOSED when no open connection has that id (or it is
 * closing, or the engine is disposed); a failed send is reported (on_error) as SYNC_ESEND. */
int sync__engine_send_to_conn(sync_engine *engine, uint64_t conn_id, const char *text, size_t len);

/* Sets the epoch of the engine's history (v2 resume, delta.h) to the one the room's record in
 * Redis carries, so that a client resumes by patch on any node. `epoch`: 1 to SYNC__EPOCH_MAX
 * characters of [A-Za-z0-9_-], else SYNC_EINVAL. A different epoch than before drops the patch
 * history (clients behind then get the whole state). */
int sync__engine_set_epoch(sync_engine *engine, const char *epoch);

/* The engine's epoch into `out` (SYNC__EPOCH_MAX + 1 bytes): what a new record should carry.
 * "" for a NULL engine. */
void sync__engine_get_epoch(sync_engine *engine, char *out);

#endif

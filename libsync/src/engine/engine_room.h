/* What a room mount (server/server_rooms.c) needs of an engine beyond the public API: a room's
 * engine is created from a template without an adapter, its setup callback runs on it, and only
 * then are its initial state and its store's adapter attached and its record loaded, with the
 * outcome reported (a public engine keeps serving from its initial state when a load fails; a
 * room is refused instead). */
#ifndef LIBSYNC_SRC_ENGINE_ROOM_H
#define LIBSYNC_SRC_ENGINE_ROOM_H

#include "libsync/adapter.h"
#include "libsync/engine.h"

/*
 * Before the engine has a connection or a change: replaces its state with `initial_json` (NULL
 * keeps it), attaches `adapter` (taken, also on failure; NULL = none) and loads the record.
 * done(engine, status, userdata) runs exactly once, with the engine lock held, on the thread that
 * finishes the load (maybe this one, before returning): SYNC_OK when a record was loaded, none
 * existed, or a corrupt one was kept aside by the store; else the load's failure (the engine then
 * refuses every save, so the unread record is never overwritten). Without an adapter it runs at
 * once with SYNC_OK. Returns SYNC_OK / SYNC_PENDING (done ran or will run), or a failure before
 * anything started (done does not run).
 */
int sync__engine_attach_load(sync_engine *engine, const char *initial_json, sync_adapter *adapter,
                             sync_done_cb done, void *userdata);

/* The head record's sequence number (one per change), and whether it is still to be saved: a
 * room unloads without a save when nothing changed since it loaded, or its last change was saved.
 */
uint64_t sync__engine_head_seq(sync_engine *engine);
int sync__engine_head_unsaved(sync_engine *engine);

/* Asks every open connection to close with `code` and `reason` (a deleted room's clients). */
void sync__engine_close_all(sync_engine *engine, int code, const char *reason);

#endif

/*
 * "Diff once, send to many": the v2 wire's patches (docs/PROTOCOL.md), beside the feed's state
 * frames.
 *
 * At each commit (versioning on, history not off) the old and the new state are diffed once: the
 * forward ops (version-1 -> version) serve every client one version behind, and the reverse ops
 * (version -> version-1) go into a bounded history (a count of versions and bytes), from which
 * sync__json_diff_since() composes the one patch for a client several versions behind or resuming.
 * A patch frame {"type":"patch","base":B,"version":V,"ops":[...]} is built at most once per
 * (B, V) and shared by reference, like the state frames; when it would be longer than the state
 * the state_update frame is shared instead. The version stays the single order: a patch names
 * its base and its version, and the head is the only version patches lead to.
 *
 * The epoch names the history the versions belong to (delta.c: random at start, or what the
 * engine's built-in store kept). Everything here runs with the engine lock held.
 */
#ifndef LIBSYNC_SRC_ENGINE_DELTA_H
#define LIBSYNC_SRC_ENGINE_DELTA_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"

/* An epoch: up to this many characters of [A-Za-z0-9_-]. */
enum { SYNC__EPOCH_MAX = 64 };
/* Defaults of the engine options resume_history_versions / resume_history_bytes. */
enum { SYNC__HISTORY_VERSIONS = 256 };
#define SYNC__HISTORY_BYTES ((size_t)1024 * 1024)
/* Patch frames kept for the head: one per distinct base clients are at. */
enum { SYNC__DELTA_FRAMES = 8 };

typedef struct sync__delta_rev {
    int64_t version; /* the ops turn the state at `version` into the state at version - 1 */
    char *ops;
    size_t len;
} sync__delta_rev;

/* The history and the frames of the v2 wire: made when the first v2 client joins (an engine that
 * only v1 clients ever saw, most idle rooms, keeps none). */
typedef struct sync__delta_v2 {
    sync__delta_rev *ring; /* the reverse ops of the newest versions, oldest first */
    size_t ring_cap;
    size_t ring_head;
    size_t count;
    size_t bytes;
    char *forward; /* ops from forward_version - 1 to forward_version */
    size_t forward_len;
    int64_t forward_version; /* -1: none */
    /* SYNC__DELTA_FRAMES slots, allocated when the first patch frame is asked for, freed with
     * the frames when the engine's last connection leaves */
    struct sync__delta_slot {
        int64_t base;
        sync__frame *frame; /* a patch frame, or the head's state_update when that is smaller */
    } * frames;
    size_t frame_count;
    size_t frame_next; /* replaced next when full */
    uint64_t frames_seq;
    sync__frame *initial; /* the v2 initial_state of frames_seq */
} sync__delta_v2;

typedef struct sync__delta {
    int off;             /* resume_history_versions < 0: no diffs, v2 clients get states */
    int used;            /* a v2 connection joined once (v2 is allocated): from then on every
                            commit is diffed (before, an engine that only v1 clients ever saw
                            pays nothing) */
    size_t max_versions; /* bounds of the history */
    size_t max_bytes;
    sync__delta_v2 *v2;
    char epoch[SYNC__EPOCH_MAX + 1];
    uint64_t patches_built;
} sync__delta;

struct sync_engine;

void sync__delta_init(sync__delta *d, int versions, size_t bytes);
void sync__delta_release(sync__delta *d);
/* The patch frames and the v2 initial_state go (built again when asked for). */
void sync__delta_drop_frames(sync__delta *d);
/* A fresh random epoch into `out` (SYNC__EPOCH_MAX + 1 bytes). */
void sync__delta_new_epoch(char *out);
/* After the store loaded (or failed to): the epoch its record kept becomes the engine's; without
 * one the engine keeps its fresh epoch and has the store write it with every save. */
void sync__delta_adopt_epoch(struct sync_engine *engine);
/* The commit of `new_state` over `old` made the head's version (engine lock held). */
void sync__delta_commit(struct sync_engine *engine, const cJSON *old, const cJSON *new_state);
/* The history breaks (a load, a room's attach): no patch reaches back before the head. */
void sync__delta_reset(struct sync_engine *engine);

/* The frame that brings a v2 client at version `base` to the head: a shared patch frame
 * (SYNC__FRAME_PATCH), or the head's state_update frame when the patch would be longer than the
 * state, base is not in the history, or versioning is off. Borrowed (the caller refs it); NULL
 * on ENOMEM. */
sync__frame *sync__delta_frame(struct sync_engine *engine, int64_t base);
/* The first frame of a v2 connection: with `epoch` equal to the engine's and `since` a version
 * the head can be reached from, the patch from `since` (*resumed = 1; empty ops at the head);
 * else the v2 initial_state (with version and epoch; *resumed = 0). Borrowed; NULL on ENOMEM. */
sync__frame *sync__delta_join_frame(struct sync_engine *engine, int64_t since, const char *epoch,
                                    int *resumed);

#endif

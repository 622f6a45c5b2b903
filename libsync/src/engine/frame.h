/*
 * Shared outgoing frames: "serialise a state once, send it to many". A frame is an immutable,
 * reference-counted text with SYNC__FRAME_HEADROOM spare bytes in front, so a transport such as
 * libwebsockets (which needs LWS_PRE bytes before the payload) can write it without copying.
 * Every connection that sends the same version holds a reference to the same frame.
 */
#ifndef LIBSYNC_SRC_FRAME_H
#define LIBSYNC_SRC_FRAME_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* At least LWS_PRE (16 on 64-bit libwebsockets 4.x); server.c asserts it at compile time. */
#define SYNC__FRAME_HEADROOM 32

typedef enum sync__frame_kind {
    SYNC__FRAME_TEXT = 0,          /* a reply, an error frame, a broadcast text */
    SYNC__FRAME_PING = 1,          /* {"type":"ping"} */
    SYNC__FRAME_INITIAL_STATE = 2, /* {"type":"initial_state","data":...} */
    SYNC__FRAME_STATE_UPDATE = 3,  /* {"type":"state_update","data":...} */
    SYNC__FRAME_BINARY = 4,        /* bytes sent as a binary message (the server's test echo) */
    SYNC__FRAME_PATCH = 5          /* v2: {"type":"patch","base":B,"version":V,"ops":[...]} */
} sync__frame_kind;

typedef struct sync__frame {
    atomic_uint refs;
    sync__frame_kind kind;
    /* The engine's change sequence this state frame shows (grows by one per change, also when
     * user-visible versioning is off); 0 for frames that are not state frames. */
    uint64_t seq;
    /* The version a state or patch frame brings its client to (-1: versioning off, or not a
     * state frame). */
    int64_t version;
    size_t len;
    /* SYNC__FRAME_HEADROOM bytes of headroom, then len bytes of text, then a NUL. */
    unsigned char storage[];
} sync__frame;

/* A frame holding a copy of `text`; one reference, owned by the caller. NULL on ENOMEM. */
sync__frame *sync__frame_new_text(sync__frame_kind kind, const char *text, size_t len);

/* {"type":TYPE,"data":STATE_JSON[,"version":VERSION]} built around an already serialised state
 * (copied); the version member is left out when version < 0 (versioning off). */
sync__frame *sync__frame_new_state(sync__frame_kind kind, const char *state_json, size_t state_len,
                                   int64_t version, uint64_t seq);

/* HEAD + BODY + TAIL (copied): the v2 frames built around a state's or a patch's text. */
sync__frame *sync__frame_new_parts(sync__frame_kind kind, const char *head, size_t head_len,
                                   const char *body, size_t body_len, const char *tail,
                                   size_t tail_len, int64_t version, uint64_t seq);

static inline char *sync__frame_text(sync__frame *frame)
{
    return (char *)frame->storage + SYNC__FRAME_HEADROOM;
}

/* {"type":"ping"}: one frame for the whole process, made by the first call (NULL when it found no
 * memory; the next call tries again). Borrowed: sending it takes references like any frame. */
sync__frame *sync__frame_ping(void);

sync__frame *sync__frame_ref(sync__frame *frame);
/* Drops one reference; frees the frame with the last. NULL is a no-op. */
void sync__frame_unref(sync__frame *frame);

#endif

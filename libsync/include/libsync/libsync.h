/*
 * libsync — real-time state synchronisation engine for WebSocket servers.
 * Include this one header; link with `pkg-config --libs libsync` or CMake's libsync::sync.
 */
#ifndef LIBSYNC_LIBSYNC_H
#define LIBSYNC_LIBSYNC_H

#include "libsync/common.h"
#include "libsync/version.h"
#include "libsync/engine.h"
#include "libsync/adapter.h"
#include "libsync/server.h"
#include "libsync/rooms.h"
#include "libsync/executor.h"
#include "libsync/cluster.h"

#endif /* LIBSYNC_LIBSYNC_H */

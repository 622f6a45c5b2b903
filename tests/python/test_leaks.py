"""No reference leaks: engines with Python callbacks, created and disposed many times."""

from __future__ import annotations

import gc
import os
import sys
import tracemalloc

import syncengine
from conftest import MemoryAdapter, MockConn, msg


def handler(conn, message, get_state, set_state):
    state = get_state()
    state["n"] += 1
    set_state(state)


def validator(message):
    return message


def middleware(message):
    return message


def hook(*args):
    pass


def cycle():
    adapter = MemoryAdapter()
    engine = syncengine.SyncEngine(
        initial_state={"n": 0},
        handlers={"inc": handler},
        validate=validator,
        adapter=adapter,
        hooks={name: hook for name in syncengine.HOOK_NAMES},
    )
    engine.use(middleware)
    conn = MockConn()
    engine.handle_open(conn)
    engine.handle_message(conn, msg("inc"))
    engine.handle_message(conn, "{broken")
    engine.broadcast_state()
    engine.sync()
    engine.handle_close(conn)
    engine.handle_open(MockConn())
    engine.dispose()


def test_callbacks_are_released():
    callables = (handler, validator, middleware, hook)
    cycle()
    gc.collect()
    before = [sys.getrefcount(fn) for fn in callables]
    for _ in range(50):
        cycle()
    gc.collect()
    assert [sys.getrefcount(fn) for fn in callables] == before


def test_memory_stays_flat():
    for _ in range(50):
        cycle()
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(200):
            cycle()
        gc.collect()
        first, _ = tracemalloc.get_traced_memory()
        for _ in range(400):
            cycle()
        gc.collect()
        second, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 400 more engines must not keep anything: allow a few KiB of interpreter caches.
    assert second - first < 64 * 1024, (first, second)


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_native_memory_stays_flat():
    """The C side too: engines, connections, adapters and the callables' userdata are freed."""
    for _ in range(300):
        cycle()
    gc.collect()
    first = rss_bytes()
    for _ in range(1500):
        cycle()
    gc.collect()
    grown = rss_bytes() - first
    # A leak of even one small allocation per engine (1500 engines) shows; allocator noise does not.
    assert grown < 3 * 1024 * 1024, grown


def test_dropping_an_undisposed_engine_frees_it():
    conn = MockConn()
    engine = syncengine.SyncEngine(initial_state={"n": 0}, handlers={"inc": handler})
    engine.handle_open(conn)
    before = sys.getrefcount(conn)
    del engine
    gc.collect()
    assert sys.getrefcount(conn) < before

"""Shared helpers of the Python suite: recording connections and adapters, bounded waits."""

from __future__ import annotations

import json
import socket
import os
import threading
import time
from pathlib import Path

import pytest

import syncengine

REPO = Path(__file__).resolve().parents[2]
WEB_DIR = Path(os.environ.get("LIBSYNC_WEB_DIR", REPO / "examples" / "web"))
EXAMPLES_DIR = Path(os.environ.get("LIBSYNC_EXAMPLES_DIR", REPO / "examples" / "python"))


def wait_until(predicate, timeout=5.0, interval=0.005):
    """Polls `predicate` until it is true or `timeout` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


class MockConn:
    """A connection of "our own server": records every frame and every close."""

    def __init__(self, name="conn"):
        self.name = name
        self.frames = []
        self.closes = 0
        self.lock = threading.Lock()

    def send(self, text):
        with self.lock:
            self.frames.append(json.loads(text) if text.startswith("{") else text)

    def close(self):
        with self.lock:
            self.closes += 1

    def of_type(self, type_name):
        with self.lock:
            return [f for f in self.frames if isinstance(f, dict) and f.get("type") == type_name]

    def __repr__(self):
        return f"<MockConn {self.name}>"


class MemoryAdapter:
    """The original test suite's in-memory adapter: counts every call."""

    def __init__(self, state=None, version=0):
        self.record = None if state is None else {"state": state, "version": version}
        self.calls = {"init": 0, "load": 0, "save": 0, "backup": 0}
        self.saved = []
        self.lock = threading.Lock()

    def init(self):
        self.calls["init"] += 1

    def load(self):
        self.calls["load"] += 1
        return self.record

    def save(self, state, version):
        with self.lock:
            self.calls["save"] += 1
            self.saved.append((state, version))
            self.record = {"state": state, "version": version}

    def backup(self):
        self.calls["backup"] += 1
        return 1234


class Recorder:
    """Hooks that record their calls: hooks() gives the dict for SyncEngine(hooks=...)."""

    def __init__(self):
        self.calls = {name: [] for name in syncengine.HOOK_NAMES}
        self.lock = threading.Lock()

    def hooks(self, only=None):
        def make(name):
            def hook(*args):
                with self.lock:
                    self.calls[name].append(args)

            return hook

        return {name: make(name) for name in syncengine.HOOK_NAMES if only is None or name in only}

    def count(self, name):
        with self.lock:
            return len(self.calls[name])

    def errors(self):
        with self.lock:
            return [(err, ctx) for err, ctx in self.calls["on_error"]]


def increment(conn, message, get_state, set_state):
    state = get_state()
    state["counter"] += message["amount"]
    set_state(state)


def decrement(conn, message, get_state, set_state):
    state = get_state()
    state["counter"] -= message["amount"]
    set_state(state)


def require_number_amount(message):
    if not isinstance(message.get("amount"), (int, float)) or isinstance(message.get("amount"), bool):
        raise ValueError("amount must be a number")
    return message


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
def make_engine():
    """Builds engines and disposes every one of them after the test."""
    engines = []

    def make(**kwargs):
        engine = syncengine.SyncEngine(**kwargs)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


def msg(type_name, **fields):
    return json.dumps({"type": type_name, **fields})


def raw_upgrade_status(port, path, headers):
    """The HTTP status line a WebSocket upgrade request gets."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(1024)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0].decode()


def counter_engine(make_engine, recorder=None, **kwargs):
    kwargs.setdefault("initial_state", {"counter": 0})
    kwargs.setdefault("handlers", {"increment": increment})
    if recorder is not None:
        kwargs.setdefault("hooks", recorder.hooks())
    return make_engine(**kwargs)


def recv_json(ws, timeout=5.0):
    return json.loads(ws.recv(timeout=timeout))


def recv_until(ws, predicate, timeout=5.0):
    """Reads frames until one satisfies `predicate` (pings are skipped); returns it."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no matching frame in time")
        frame = json.loads(ws.recv(timeout=left))
        if predicate(frame):
            return frame


def websocket_handler(engine):
    """The `websockets` connection handler of the README: every message, then a broadcast."""

    async def handler(websocket):
        conn = syncengine.AsyncioConnection(websocket)
        engine.handle_open(conn)
        try:
            async for raw in websocket:
                engine.handle_message(conn, raw)
                engine.broadcast_state()
        finally:
            engine.handle_close(conn)

    return handler

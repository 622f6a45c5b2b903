"""Handlers of a served engine run in batches on the "syncengine-steps" thread: one wake-up and
one GIL acquisition for every message waiting. Over real sockets, with many clients sending
interleaved messages and every other handler failing, the order of changes, the versions and
the rollback of each failing message's own change are exactly what one-at-a-time would give."""

from __future__ import annotations

import contextlib
import json
import threading
import time

from websockets.sync.client import connect

import syncengine
from conftest import recv_json, recv_until, wait_until


def _served(make_engine, **kwargs):
    engine = make_engine(initial_state={"log": []}, reply_errors=False, **kwargs)
    server = syncengine.Server(engines={"/b": engine}).start()
    return engine, server


def test_interleaved_clients_every_other_handler_failing(make_engine):
    applied: list[list[int]] = []  # what the handlers changed, in the order they ran
    threads: set[str] = set()
    errors: list[str] = []

    def add(conn, message, get_state, set_state):
        threads.add(threading.current_thread().name)
        state = get_state()
        state["log"].append([message["client"], message["seq"]])
        set_state(state)
        if message["seq"] % 2 == 1:
            raise ValueError("odd messages fail")  # after writing: must be rolled back
        applied.append([message["client"], message["seq"]])

    engine, server = _served(
        make_engine,
        handlers={"add": add},
        hooks={"on_error": lambda error, context: errors.append(context)},
    )
    clients, per_client = 8, 60
    url = f"ws://127.0.0.1:{server.port}/b"
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(connect(url)) for _ in range(clients)]
        for ws in sockets:
            recv_json(ws)  # initial_state

        def send_all(k: int) -> None:
            for seq in range(per_client):
                sockets[k].send(json.dumps({"type": "add", "client": k, "seq": seq}))

        senders = [threading.Thread(target=send_all, args=(k,)) for k in range(clients)]
        for t in senders:
            t.start()
        for t in senders:
            t.join(30)
        total_ok = clients * per_client // 2
        assert wait_until(lambda: engine.get_version() == total_ok, timeout=30)
        assert wait_until(lambda: len(errors) == clients * per_client // 2, timeout=10)
        state = engine.get_state()
        # exactly the successful changes, each once, in the order the handlers ran
        assert state["log"] == applied
        assert len(applied) == total_ok
        for k in range(clients):  # each client's messages in the order it sent them
            assert [s for c, s in state["log"] if c == k] == list(range(0, per_client, 2))
        assert set(errors) == {"handler:add"}
        assert threads == {"syncengine-steps"}
        # every client ends on the final version
        for ws in sockets:
            frame = recv_json(ws)
            while frame.get("version") != total_ok:
                frame = recv_json(ws)
            assert frame["data"] == state
    server.close()


def test_messages_waiting_run_in_one_batch(make_engine):
    """While one handler holds the runner, the messages that arrive queue in the engine; they are
    all handed out by sync_msg_complete_next and run in the same batch, in arrival order."""
    gate = threading.Event()
    order: list[int] = []
    entered = threading.Event()

    def add(conn, message, get_state, set_state):
        if message["seq"] == 0:
            entered.set()
            gate.wait(10)
        state = get_state()
        state["log"].append(message["seq"])
        set_state(state)
        order.append(message["seq"])

    engine, server = _served(make_engine, handlers={"add": add})
    takes = []
    real_run_queue = syncengine._engine._run_queue

    def counting_run_queue(msg, token):
        takes.append(1)
        real_run_queue(msg, token)

    syncengine._engine._run_queue = counting_run_queue
    try:
        with connect(f"ws://127.0.0.1:{server.port}/b") as ws:
            recv_json(ws)
            ws.send(json.dumps({"type": "add", "seq": 0}))
            assert entered.wait(10)
            for seq in range(1, 200):
                ws.send(json.dumps({"type": "add", "seq": seq}))
            # the server read them all and queued them behind the handler that waits
            assert wait_until(lambda: engine.stats()["messages_in"] >= 200, timeout=10)
            gate.set()
            assert wait_until(lambda: engine.get_version() == 200, timeout=10)
            recv_until(ws, lambda f: f.get("version") == 200)  # read what the client was sent
        assert order == list(range(200))
        assert engine.get_state()["log"] == list(range(200))
        assert len(takes) == 1  # one entry into Python ran all 200
    finally:
        syncengine._engine._run_queue = real_run_queue
        server.close()


def test_async_handler_in_the_middle_holds_the_ones_behind(make_engine):
    """An async def handler in a batch ends the batch's loop; the messages behind it wait in the
    engine until it completes, then run (on the loop's thread) in order."""
    import asyncio

    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()
    events: list[str] = []

    def add(conn, message, get_state, set_state):
        events.append(f"start {message['seq']}")
        state = get_state()
        state["log"].append(message["seq"])
        set_state(state)
        events.append(f"end {message['seq']}")

    async def slow(conn, message, get_state, set_state):
        events.append(f"start {message['seq']}")
        await asyncio.sleep(0.05)
        state = get_state()
        state["log"].append(message["seq"])
        set_state(state)
        events.append(f"end {message['seq']}")

    engine, server = _served(make_engine, handlers={"add": add, "slow": slow}, async_loop=loop)
    try:
        with connect(f"ws://127.0.0.1:{server.port}/b") as ws:
            recv_json(ws)
            for seq in range(30):
                ws.send(json.dumps({"type": "slow" if seq in (5, 17) else "add", "seq": seq}))
            assert wait_until(lambda: engine.get_version() == 30, timeout=10)
            recv_until(ws, lambda f: f.get("version") == 30)
        assert engine.get_state()["log"] == list(range(30))
        # strictly one at a time: every start is followed by its own end
        assert events == [f"{what} {seq}" for seq in range(30) for what in ("start", "end")]
    finally:
        server.close()
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(5)
        loop.close()


def test_a_handler_replaced_while_its_messages_wait(make_engine):
    """A message waiting for the runner whose handler is replaced meanwhile runs the new one (the
    engine looks the handler up when it runs); nothing refers to the freed one."""
    gate = threading.Event()
    entered = threading.Event()

    def first(conn, message, get_state, set_state):
        if message["seq"] == 0:
            entered.set()
            gate.wait(10)
        set_state({"log": get_state()["log"] + [["first", message["seq"]]]})

    def second(conn, message, get_state, set_state):
        set_state({"log": get_state()["log"] + [["second", message["seq"]]]})

    engine, server = _served(make_engine, handlers={"add": first})
    try:
        with connect(f"ws://127.0.0.1:{server.port}/b") as ws:
            recv_json(ws)
            ws.send(json.dumps({"type": "add", "seq": 0}))
            assert entered.wait(10)
            ws.send(json.dumps({"type": "add", "seq": 1}))
            assert wait_until(lambda: engine.stats()["messages_in"] >= 2, timeout=10)
            engine.on("add", second)
            time.sleep(0.01)
            gate.set()
            assert wait_until(lambda: engine.get_version() == 2, timeout=10)
            recv_until(ws, lambda f: f.get("version") == 2)
        assert engine.get_state()["log"] == [["first", 0], ["second", 1]]
    finally:
        server.close()

#!/usr/bin/env python3
"""One Python node of a libsync cluster, for the cluster tests (not a test itself): the counter of
examples/c/counter_server.c ({"counter": 0}; "increment" / "decrement" by a numeric "amount",
"reset"; reply_errors) on "/" and "/counter" (one engine: the room "/") and rooms on "/rooms/",
joined to the cluster on Redis. Two test-only extras: "bad" is always refused, and an increment
with "ack": true is answered {"type": "ack"} (a reply the owner routes to the sender's node).

    cluster_node.py --redis URL [--prefix P] --node-id ID [--lease-ms MS] [--async]

Prints "port N" once it serves; SIGTERM stops it gracefully through Server.request_stop() (from
the signal handler) and it prints "stopped"."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import threading

import syncengine


def add_to_counter(message, get_state, set_state, sign):
    amount = message.get("amount")
    if not isinstance(amount, (int, float)) or isinstance(amount, bool):
        raise ValueError("amount must be a number")
    state = get_state()
    counter = state.get("counter")
    state["counter"] = (counter if isinstance(counter, (int, float)) else 0) + sign * amount
    set_state(state)


def increment(conn, message, get_state, set_state):
    add_to_counter(message, get_state, set_state, 1)
    if message.get("ack") and conn is not None:
        conn.send(json.dumps({"type": "ack"}))


def decrement(conn, message, get_state, set_state):
    add_to_counter(message, get_state, set_state, -1)


def reset(conn, message, get_state, set_state):
    state = get_state()
    state["counter"] = 0
    set_state(state)


def bad(conn, message, get_state, set_state):
    raise ValueError("bad is always refused")


async def increment_async(conn, message, get_state, set_state):
    await asyncio.sleep(0)
    increment(conn, message, get_state, set_state)


HANDLERS = {"increment": increment, "decrement": decrement, "reset": reset, "bad": bad}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--prefix", help="key prefix (default libsync:, the demo's)")
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--lease-ms", type=int, default=0)
    parser.add_argument("--async", dest="use_async", action="store_true",
                        help="increment is an async def handler, run on an asyncio loop thread")
    args = parser.parse_args()

    options = dict(initial_state={"counter": 0}, handlers=HANDLERS, reply_errors=True)
    loop = None
    if args.use_async:
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()
        options.update(handlers={**HANDLERS, "increment": increment_async}, async_loop=loop)
    engine = syncengine.SyncEngine(**options)
    server = syncengine.Server(port=0, engines={"/": engine, "/counter": engine})
    server.rooms("/rooms/", **options)
    if args.prefix is None:
        server.join_cluster(args.redis, node_id=args.node_id, lease_ms=args.lease_ms)
    else:
        server.join_cluster(redis=syncengine.RedisOptions(args.redis, args.prefix),
                            node_id=args.node_id, lease_ms=args.lease_ms)
    signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
    server.start()
    print(f"port {server.port}", flush=True)
    server.serve_forever()
    server.close()
    engine.dispose()
    print("stopped", flush=True)


if __name__ == "__main__":
    main()

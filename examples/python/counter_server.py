#!/usr/bin/env python3
"""The quick start in Python: a shared counter served with the live page of examples/web.

    python3 examples/python/counter_server.py [--port 3000] [--state counter.sqlite] [--pad BYTES]

Open http://127.0.0.1:3000/ in a few tabs and click: every tab shows the same counter.
Ctrl-C stops the server cleanly (the state is saved first when --state is given).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import syncengine

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


# The original's incrementHandler, line by line.
def increment(conn, message, get_state, set_state):
    state = get_state()
    state["counter"] += message["amount"]
    set_state(state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000, help="0 picks a free port")
    parser.add_argument("--web-dir", default=str(WEB_DIR), help="the page to serve")
    parser.add_argument("--state", help="SQLite file that keeps the counter across restarts")
    parser.add_argument("--debug", action="store_true", help="log every step of the engine")
    parser.add_argument(
        "--pad",
        type=int,
        default=0,
        metavar="BYTES",
        help='add a "blob" of BYTES x characters to the initial state (benchmark scenario D)',
    )
    args = parser.parse_args()

    engine = syncengine.SyncEngine(
        initial_state={"counter": 0, "blob": "x" * args.pad} if args.pad > 0 else {"counter": 0},
        handlers={"increment": increment},
        adapter=syncengine.SQLiteAdapter(args.state) if args.state else None,
        heartbeat_interval_ms=30_000,
        ping_timeout_ms=90_000,
        # Like the C demo: every version a client receives was saved first, and the changes of
        # one loop turn are saved once (group commit) instead of once each.
        persist_mode="before_send",
        debug=args.debug,
        hooks={"on_error": lambda error, context: print(f"error in {context}: {error}")},
    )
    # The page talks to "/" (and to "/counter" with ?path=/counter): one engine, two routes.
    server = syncengine.Server(
        host=args.host,
        port=args.port,
        engines={"/": engine, "/counter": engine},
        static_dir=args.web_dir,
    )
    try:
        with server:
            print(f"listening on http://{args.host}:{server.port}/", flush=True)
            server.serve_forever()  # returns on Ctrl-C, after a graceful stop
    except KeyboardInterrupt:
        pass  # Ctrl-C before serve_forever() took over; leaving `with` stopped the server
    engine.dispose()
    print("stopped")


if __name__ == "__main__":
    main()

"""Rooms in the demo server end to end: /rooms/NAME is a counter of its own, created on first
join, stored as a row of rooms.sqlite, unloaded when idle, bounded by --max-rooms, and refused
with 400 for a name that is not one."""
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request

import server as srvmod
from helpers import client, current_state, initial_state, run, send, wait_for_counter


def metric(srv, name):
    """The value of a sample of /metrics: the room mount's (labelled with its prefix) or the
    server's."""
    with urllib.request.urlopen(srv.http + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    found = re.search(rf"^{re.escape(name)}(?:{{path=\"/rooms/\"}})? (\S+)$", text, re.M)
    assert found, f"{name} not in /metrics:\n{text}"
    return float(found.group(1))


def wait_metric(srv, name, value, timeout=10.0):
    until = time.monotonic() + timeout
    while metric(srv, name) != value:
        assert time.monotonic() < until, f"{name} never became {value} (is {metric(srv, name)})"
        time.sleep(0.05)


def upgrade_status(srv, target):
    """The status line an upgrade request to `target` gets."""
    with socket.create_connection((srv.host, srv.port), timeout=10) as sock:
        sock.sendall((f"GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode())
        return sock.recv(256).split(b"\r\n", 1)[0].decode()


async def bump(url, amount):
    """Joins, adds `amount`, waits to see it; returns the last state frame."""
    async with client(url) as ws:
        start = (await initial_state(ws))["data"]["counter"]
        await send(ws, "increment", amount=amount)
        return (await wait_for_counter(ws, start + amount))[-1]


def test_rooms_are_independent_counters(server):
    async def scenario():
        async with client(server.ws("/rooms/alpha")) as a1, client(server.ws("/rooms/alpha")) as a2, \
                client(server.ws("/rooms/b%C3%A9ta")) as b, client(server.ws("/")) as plain:
            for ws in (a1, a2, b, plain):
                first = await initial_state(ws)
                assert first["data"] == {"counter": 0} and first["version"] == 0
            await send(a1, "increment", amount=5)
            await wait_for_counter(a2, 5)
            await send(b, "increment", amount=2)
            await wait_for_counter(b, 2)
            await send(plain, "decrement", amount=1)
            await wait_for_counter(plain, -1)
        assert (await current_state(server.ws("/rooms/alpha")))["data"]["counter"] == 5
        assert (await current_state(server.ws("/rooms/b%C3%A9ta")))["version"] == 1
        assert (await current_state(server.ws("/counter")))["data"]["counter"] == -1

    run(scenario())


def test_rooms_survive_a_restart_and_a_crash(servers):
    first = servers()
    seen = run(bump(first.ws("/rooms/kept"), 7))
    assert first.stop(signal.SIGTERM) == 0, first.stderr()
    with sqlite3.connect(os.path.join(first.data_dir, "rooms.sqlite")) as db:
        rows = db.execute("SELECT count(*) FROM websocket_rooms").fetchone()[0]
    assert rows == 1

    second = servers(data_dir=first.data_dir)
    state = run(current_state(second.ws("/rooms/kept")))
    assert state["data"]["counter"] == 7 and state["version"] == seen["version"]
    seen = run(bump(second.ws("/rooms/kept"), 3))
    second.proc.send_signal(signal.SIGKILL)
    assert second.wait() == -signal.SIGKILL

    # Every state a client saw was saved before it was sent.
    third = servers(data_dir=first.data_dir)
    state = run(current_state(third.ws("/rooms/kept")))
    assert state["data"]["counter"] == 10 and state["version"] >= seen["version"]
    assert run(current_state(third.ws("/rooms/fresh")))["data"]["counter"] == 0


def test_an_idle_room_is_unloaded_and_loads_its_saved_state(servers):
    srv = servers("--room-idle-ms", "300")
    run(bump(srv.ws("/rooms/sleepy"), 4))
    wait_metric(srv, "libsync_rooms_loaded", 0)
    assert metric(srv, "libsync_rooms_unloaded_total") >= 1
    state = run(current_state(srv.ws("/rooms/sleepy")))
    assert state["data"]["counter"] == 4 and state["version"] == 1


def test_max_rooms_refuses_a_room_beyond_it_while_none_is_idle(servers):
    srv = servers("--max-rooms", "2", "--room-idle-ms", "-1")

    async def scenario():
        async with client(srv.ws("/rooms/one")) as one, client(srv.ws("/rooms/two")) as two:
            await initial_state(one)
            await initial_state(two)
            assert upgrade_status(srv, "/rooms/three") == "HTTP/1.1 503 Service Unavailable"
            # Joining a loaded room still works.
            async with client(srv.ws("/rooms/one")) as again:
                await initial_state(again)
        # Both are idle now: the least recently used one gives way.
        await bump(srv.ws("/rooms/three"), 1)

    run(scenario())
    assert metric(srv, "libsync_rooms_refused_total") >= 1
    assert metric(srv, "libsync_rooms_loaded") == 2


def test_bad_room_names_are_refused_with_400(server):
    for target in ("/rooms/", "/rooms/a%2Fb", "/rooms/" + "x" * 81, "/rooms/%01", "/rooms/a%5Cb",
                   "/rooms/%FF"):
        assert upgrade_status(server, target) == "HTTP/1.1 400 Bad Request", target
    assert upgrade_status(server, "/rooms/" + "x" * 80).split(" ")[1] == "101"
    assert metric(server, "libsync_rooms_loaded") == 1


def test_room_options_on_the_command_line(servers, tmp_path):
    for argv, word in ((["--room-idle-ms", "-2"], "--room-idle-ms"),
                       (["--max-rooms", "x"], "--max-rooms")):
        done = subprocess.run([srvmod.binary(), *argv], capture_output=True, timeout=20, cwd=tmp_path)
        assert done.returncode == 2 and word in done.stderr.decode(), (argv, done)
    done = subprocess.run([srvmod.binary(), "--help"], capture_output=True, timeout=20)
    assert b"--room-idle-ms" in done.stdout and b"--max-rooms" in done.stdout

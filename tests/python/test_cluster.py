"""Python servers as nodes of one cluster on Redis (Server.join_cluster), against a real
redis-server started by the test, each node a separate Python process (tests/python/cluster_node.py)
serving real WebSocket clients: increments from clients on both nodes converge on every client to
the same version and a counter equal to the acknowledged increments (the fixed mount, owned by the
node whose increment is an ``async def`` handler, and a room owned by the other, whose is not);
a message the handler refuses gets its error frame on the node that does not own the room; the
nodes stop through Server.request_stop() called from their SIGTERM handler. Plus the checks of
join_cluster's arguments. Skipped only when libsync was built without Redis support (where
join_cluster must raise EUNSUPPORTED, which is checked)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import syncengine
from conftest import msg, recv_until
from test_redis import _redis_supported, redis_url  # noqa: F401 (a fixture)

HERE = Path(__file__).resolve().parent
LEASE_MS = 1000
needs_redis = pytest.mark.skipif(not _redis_supported(), reason="libsync built without Redis support")


# ---- helpers shared with test_cluster_mixed.py ---------------------------------------------------


def redis_get(url: str, key: str) -> "str | None":
    """GET `key` from the Redis at `url` (redis://127.0.0.1:PORT) with a minimal RESP exchange."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    k = key.encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k))
        data = b""
        while True:
            if b"\r\n" in data:
                head, rest = data.split(b"\r\n", 1)
                assert head.startswith(b"$"), data
                if int(head[1:]) < 0:
                    return None
                if len(rest) >= int(head[1:]) + 2:
                    return rest[: int(head[1:])].decode()
            chunk = s.recv(4096)
            assert chunk, "Redis closed the connection"
            data += chunk


def lease_owner(url: str, prefix: str, room: str, timeout: float = 10.0) -> str:
    """The node id that holds the lease of `room` (waits until one does)."""
    deadline = time.monotonic() + timeout
    while True:
        value = redis_get(url, f"{prefix}lease:{room}")
        if value:
            # "<token> <node id>/<incarnation>": Redis names the process, not only its id
            return value.split(" ", 1)[1].rsplit("/", 1)[0]
        assert time.monotonic() < deadline, f"no node took the lease of {room} in time"
        time.sleep(0.05)


class NodeProcess:
    """A node server started as a separate process that prints "port N" once it serves."""

    def __init__(self, argv: list, name: str, env: "dict | None" = None) -> None:
        self.name = name
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True, env=env)
        self.lines: list = []
        self.port = 0
        got_port = threading.Event()

        def read() -> None:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                found = re.search(r"^port (\d+)|127\.0\.0\.1:(\d+)", line)
                if found and not self.port:
                    self.port = int(found.group(1) or found.group(2))
                    got_port.set()

        self.errors: list = []
        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=lambda: self.errors.extend(self.proc.stderr), daemon=True).start()
        if not got_port.wait(30):
            self.kill()
            raise AssertionError(f"{name} did not serve within 30 s: {self.lines} {self.errors}")

    def terminate(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not stop within {timeout} s after SIGTERM")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def python_node(url: str, prefix: "str | None", node_id: str, use_async: bool = False) -> NodeProcess:
    """A Python node (cluster_node.py); `prefix` None: the default key prefix, "libsync:";
    `use_async`: its increment is an ``async def`` handler."""
    argv = [sys.executable, str(HERE / "cluster_node.py"), "--redis", url, "--node-id", node_id,
            "--lease-ms", str(LEASE_MS)]
    if prefix is not None:
        argv += ["--prefix", prefix]
    if use_async:
        argv.append("--async")
    return NodeProcess(argv, node_id)


def join(port: int, path: str, timeout: float = 15.0):
    """A WebSocket client of `path`, retrying while the node answers 503 (room still loading)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect(f"ws://127.0.0.1:{port}{path}", open_timeout=5)
        except InvalidStatus as exc:
            assert exc.response.status_code == 503, exc
            assert time.monotonic() < deadline, f"{path} on {port} refused with 503 for too long"
            time.sleep(0.05)


class Client:
    """A client on one node that sends `count` increments (with an ack asked or not) and records
    every version it is shown."""

    def __init__(self, port: int, path: str) -> None:
        self.where = f"{path} on port {port}"
        self.ws = join(port, path)
        self.versions: list = []
        self.acks = 0
        self.last: dict = {}
        self.errors: list = []

    def see(self, frame: dict) -> None:
        kind = frame.get("type")
        if kind in ("initial_state", "state_update"):
            self.versions.append(frame["version"])
            self.last = frame
        elif kind == "ack":
            self.acks += 1
        elif kind == "error":
            self.errors.append(frame)

    def recv_until(self, predicate, timeout: float = 30.0) -> dict:
        def seen(frame: dict) -> bool:
            self.see(frame)
            return predicate(frame)

        return recv_until(self.ws, seen, timeout)

    def run(self, count: int, ack: bool, failures: list) -> None:
        try:
            for _ in range(count):
                self.ws.send(json.dumps({"type": "increment", "amount": 1, **({"ack": True} if ack else {})}))
                time.sleep(0.002)
        except Exception as exc:  # reported by the test thread
            failures.append(exc)


def converge(clients: list, total: int, acks_each: "int | None") -> int:
    """Reads every client until it shows the counter `total` (and its acks); returns the version
    all of them ended on, after checking each saw versions only go up."""
    for i, c in enumerate(clients):
        def done(c=c) -> bool:
            return c.last.get("data", {}).get("counter") == total and (
                acks_each is None or c.acks == acks_each)

        try:
            if not done():
                c.recv_until(lambda f: done())
        except TimeoutError:
            seen = [(x.last, x.acks, len(x.versions), x.errors[:3]) for x in clients]
            raise AssertionError(f"client {i} did not reach {total} (last, acks, versions, "
                                 f"errors of each): {seen}") from None
    finals = {c.last["version"] for c in clients}
    assert len(finals) == 1, f"clients ended on different versions {finals}"
    for c in clients:
        # Strictly increasing: never back, and never the same version twice (an adopted change
        # is not a forced broadcast, so a client that has a version is not sent it again).
        assert all(a < b for a, b in zip(c.versions, c.versions[1:])), (
            f"a version went back or came twice for the client of {c.where}: {c.versions}")
        assert c.last["data"]["counter"] == total
    return finals.pop()


def drive(clients: list, count: int, ack: bool) -> None:
    failures: list = []
    threads = [threading.Thread(target=c.run, args=(count, ack, failures)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures


# ---- join_cluster's arguments ------------------------------------------------------------------


def test_join_cluster_checks_its_arguments_and_its_moment():
    server = syncengine.Server(port=0)
    try:
        if not _redis_supported():
            with pytest.raises(syncengine.SyncError) as info:
                server.join_cluster("redis://127.0.0.1:6379")
            assert info.value.status == syncengine.Status.EUNSUPPORTED
            return
        with pytest.raises(syncengine.SyncValueError):
            server.join_cluster()  # neither url nor redis
        with pytest.raises(syncengine.SyncValueError):
            server.join_cluster("redis://127.0.0.1:1", redis=syncengine.RedisOptions("redis://x"))
        with pytest.raises(TypeError):
            server.join_cluster(redis="redis://127.0.0.1:1")
        with pytest.raises(syncengine.SyncValueError) as info:
            server.join_cluster("http://127.0.0.1:1")
        assert "redis://" in info.value.detail
        with pytest.raises(syncengine.SyncValueError) as info:
            server.join_cluster("redis://127.0.0.1:1", node_id="has space")
        assert info.value.status == syncengine.Status.EINVAL
        with pytest.raises(syncengine.SyncValueError) as info:
            server.join_cluster("redis://127.0.0.1:1", lease_ms=50)
        assert "lease_ms" in info.value.detail
        # a RedisRoomStore's connection settings are accepted as the cluster's
        assert server.join_cluster(redis=syncengine.RedisRoomStore("redis://127.0.0.1:1", "p:"),
                                   node_id="n-1", lease_ms=500, max_forward_queue=10) is server
        with pytest.raises(syncengine.SyncError) as info:
            server.join_cluster("redis://127.0.0.1:1")
        assert info.value.status == syncengine.Status.ESTATE
    finally:
        server.close()

    # an engine with an adapter cannot be a room of a cluster (its state lives in Redis)
    engine = syncengine.SyncEngine({"counter": 0}, adapter=syncengine.FileAdapter(os.devnull + ".x"))
    server = syncengine.Server(port=0, engines={"/": engine})
    try:
        with pytest.raises(syncengine.SyncValueError) as info:
            server.join_cluster("redis://127.0.0.1:1")
        assert "adapter" in info.value.detail
    finally:
        server.close()
        engine.dispose()

    # only before the server listens
    with syncengine.Server(port=0) as server:
        with pytest.raises(syncengine.SyncError) as info:
            server.join_cluster("redis://127.0.0.1:1")
        assert info.value.status == syncengine.Status.ESTATE


# ---- two Python nodes --------------------------------------------------------------------------


@needs_redis
def test_two_python_nodes_converge_and_route_refusals_to_the_sender(redis_url):  # noqa: F811
    prefix = f"py-cluster-{os.getpid()}:"
    # py-0's increment is an async def handler, py-1's a plain one; py-0 starts alone, so it owns
    # the fixed mount's room "/" (a room's lease goes to the first node that serves it), and
    # the room "/rooms/doc" is joined on py-1 first: each kind of handler runs as the owner
    nodes = [python_node(redis_url, prefix, "py-0", use_async=True)]
    clients: list = []
    rooms: list = []
    try:
        # inside the try: a failed start or check still ends the nodes already started
        assert lease_owner(redis_url, prefix, "/") == "py-0"
        nodes.append(python_node(redis_url, prefix, "py-1"))
        ports = [n.port for n in nodes]
        # two clients on each node, on the fixed mount ("/" and "/counter": one room) and a room
        clients = [Client(ports[0], "/"), Client(ports[0], "/counter"),
                   Client(ports[1], "/"), Client(ports[1], "/counter")]
        rooms = [Client(ports[1], "/rooms/doc")]
        assert lease_owner(redis_url, prefix, "/rooms/doc") == "py-1"
        rooms.insert(0, Client(ports[0], "/rooms/doc"))
        for c in clients + rooms:
            c.recv_until(lambda f: f.get("type") == "initial_state")
        drive(clients, 15, ack=True)
        drive(rooms, 10, ack=True)
        version = converge(clients, 4 * 15, acks_each=15)
        room_version = converge(rooms, 2 * 10, acks_each=10)
        assert version == 60 and room_version == 20, (version, room_version)

        # a refusal by the handler reaches its sender on the node that does not own the room
        assert lease_owner(redis_url, prefix, "/") == "py-0"
        other = clients[2]  # on py-1
        other.ws.send(msg("bad"))
        frame = other.recv_until(lambda f: f.get("type") == "error")
        assert "bad is always refused" in frame["error"], frame
        other.ws.send(json.dumps({"type": "increment", "amount": "x"}))
        frame = other.recv_until(lambda f: f.get("type") == "error")
        assert "amount must be a number" in frame["error"], frame
        # refused messages changed nothing: the next increment is the next version everywhere
        other.ws.send(msg("increment", amount=1))
        assert converge(clients, 61, acks_each=None) == version + 1
    finally:
        for c in clients + rooms:
            c.ws.close()
        codes = [n.terminate() for n in nodes]
    assert codes == [0] * len(nodes) and len(nodes) == 2, (codes, [n.errors for n in nodes])
    for n in nodes:
        assert n.lines[-1] == "stopped", n.lines

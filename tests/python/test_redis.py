"""RedisAdapter and RedisRoomStore against a real redis-server that the test starts on a free port
(AOF, appendfsync always), over real sockets. Skipped only when libsync was built without Redis
support."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

import syncengine
from conftest import MockConn, increment, msg, recv_json
from test_rooms import SetupLog, counter_of, join


def _redis_supported() -> bool:
    try:
        syncengine.RedisRoomStore("redis://127.0.0.1:1")
    except syncengine.SyncError as exc:
        if exc.status == syncengine.Status.EUNSUPPORTED:
            return False
        raise
    return True


pytestmark = pytest.mark.skipif(not _redis_supported(), reason="libsync built without Redis support")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    server = shutil.which("redis-server")
    assert server, "redis-server not found (scripts/install-deps.sh installs it)"
    port = _free_port()
    data = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", "",
         "--appendonly", "yes", "--appendfsync", "always", "--logfile", str(data / "redis.log")],
        stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not _ping(port):
            assert proc.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not answer within 15 s"
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_redis_adapter_persists_across_engines(make_engine, redis_url):
    def engine():
        return make_engine(initial_state={"counter": 0}, handlers={"increment": increment},
                           adapter=syncengine.RedisAdapter(redis_url, "py-adapter:"))

    first = engine()
    first.handle_message(MockConn(), msg("increment", amount=5))
    first.handle_message(MockConn(), msg("increment", amount=2))
    first.dispose()
    second = engine()
    assert second.get_state() == {"counter": 7}
    assert second.get_version() == 2
    with pytest.raises(syncengine.SyncValueError):
        syncengine.RedisAdapter("http://127.0.0.1:6379")


def test_redis_room_store_keeps_rooms_across_a_server_restart(redis_url):
    for run in range(2):
        server = syncengine.Server()
        rooms = server.rooms("/rooms/", SetupLog(),
                             store=syncengine.RedisRoomStore(redis_url, key_prefix="py-rooms:",
                                                             command_timeout_ms=2000))
        with server:
            with join(server, "doc-1") as ws:
                first = recv_json(ws)
                assert first["data"] == {"counter": 7 * run, "room": "doc-1"}
                assert first["version"] == run
                ws.send(msg("increment", amount=7))
                counter_of(ws, 7 * (run + 1))
            if run == 0:
                rooms.set_state("doc-2", {"counter": 40, "room": "doc-2"})
            else:
                assert rooms.get_state("doc-2") == {"counter": 40, "room": "doc-2"}
            assert rooms.list() == ["doc-1", "doc-2"]

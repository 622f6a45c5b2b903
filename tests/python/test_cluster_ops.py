"""Rooms.list() and Rooms.delete() of a clustered room mount: the Python calls wrap the C ones,
which act on the cluster's Redis. Two Python servers in this process joined to a real
redis-server started by the test, real WebSocket clients: a room created on either node is listed
on both; deleted from one, its clients on both nodes are closed with 4410, it leaves the list,
and a later join starts it afresh. Skipped when libsync was built without Redis support."""

from __future__ import annotations

import json
import os

import pytest
from websockets.exceptions import ConnectionClosed

import syncengine
from cluster_node import HANDLERS
from conftest import recv_until
from test_cluster import join
from test_redis import _redis_supported, redis_url  # noqa: F401 (a fixture)

LEASE_MS = 1000
needs_redis = pytest.mark.skipif(not _redis_supported(), reason="libsync built without Redis support")


def close_code(ws, timeout: float = 10.0):
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=timeout)
    return closed.value.rcvd.code if closed.value.rcvd else None


def increment(ws) -> None:
    ws.send(json.dumps({"type": "increment", "amount": 1, "ack": True}))
    recv_until(ws, lambda f: f.get("type") == "ack", timeout=30)


@needs_redis
def test_rooms_list_and_delete_act_on_the_cluster(redis_url):  # noqa: F811
    prefix = f"py-ops-{os.getpid()}:"
    servers, mounts, clients = [], [], []
    try:
        for i in range(2):
            server = syncengine.Server(port=0, room_idle_ms=1000)
            mounts.append(server.rooms("/rooms/", initial_state={"counter": 0}, handlers=HANDLERS))
            server.join_cluster(redis=syncengine.RedisOptions(redis_url, prefix),
                                node_id=f"py-ops-{i}", lease_ms=LEASE_MS)
            server.start()
            servers.append(server)
        kept = join(servers[0].port, "/rooms/kept")
        doomed = [join(servers[1].port, "/rooms/doomed"), join(servers[0].port, "/rooms/doomed")]
        clients = [kept, *doomed]
        increment(kept)
        increment(doomed[0])
        for rooms in mounts:
            assert sorted(rooms.list()) == ["doomed", "kept"]
        mounts[0].delete("doomed")
        assert [close_code(ws) for ws in doomed] == [4410, 4410]
        for rooms in mounts:
            assert sorted(rooms.list()) == ["kept"]
        # a later join starts it afresh
        again = join(servers[1].port, "/rooms/doomed")
        clients.append(again)
        first = recv_until(again, lambda f: f.get("type") == "initial_state")
        assert first["data"] == {"counter": 0} and first["version"] == 0, first
    finally:
        for ws in clients:
            ws.close()
        for server in servers:
            server.close()

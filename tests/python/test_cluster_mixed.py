"""Any node of a cluster may be C, Python or Node: the C demo (examples/c/counter_server --redis),
a Python node (cluster_node.py) and a Node node (tests/node/fixtures/cluster_node.js, its
increment an async handler) on one real redis-server, with the demo's messages and state
({"counter": N}; increment / decrement by "amount", reset; a bad amount refused with "amount must
be a number"). Real WebSocket clients on each node, on the default counter and on a room: every
client converges on the same version and counter, whichever node owns the room; decrement and
reset from any node reach every client; a refused message gets its error frame on every node.

Needs the demo and the Node addon of this build: LIBSYNC_COUNTER_SERVER and SYNCENGINE_ADDON
(ctest sets both); skipped without them or without Redis support."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from test_cluster import Client, NodeProcess, converge, drive, lease_owner, python_node, LEASE_MS
from test_redis import _redis_supported, redis_url  # noqa: F401 (a fixture)

REPO = Path(__file__).resolve().parents[2]
COUNTER_SERVER = os.environ.get("LIBSYNC_COUNTER_SERVER")
ADDON = os.environ.get("SYNCENGINE_ADDON")
NODE = shutil.which("node")
NODE_FIXTURE = REPO / "tests" / "node" / "fixtures" / "cluster_node.js"

pytestmark = [
    pytest.mark.skipif(not _redis_supported(), reason="libsync built without Redis support"),
    pytest.mark.skipif(not COUNTER_SERVER or not Path(COUNTER_SERVER).exists(),
                       reason="LIBSYNC_COUNTER_SERVER (the C demo of this build) not given"),
    pytest.mark.skipif(not ADDON or not NODE, reason="SYNCENGINE_ADDON (this build's Node addon) not given"),
    pytest.mark.skipif(not (REPO / "tests" / "node" / "node_modules" / "syncengine").exists(),
                       reason="tests/node has no node_modules (npm ci; scripts/install-deps.sh)"),
]


def c_node(url: str, node_id: str, data_dir: Path) -> NodeProcess:
    argv = [COUNTER_SERVER, "--redis", url, "--port", "0", "--node-id", node_id,
            "--lease-ms", str(LEASE_MS), "--data-dir", str(data_dir)]
    return NodeProcess(argv, node_id)


def node_node(url: str, node_id: str) -> NodeProcess:
    argv = [NODE, str(NODE_FIXTURE), "--redis", url, "--node-id", node_id,
            "--lease-ms", str(LEASE_MS)]
    return NodeProcess(argv, node_id, env={**os.environ, "SYNCENGINE_ADDON": ADDON})


def test_a_c_a_python_and_a_node_node_serve_one_counter(redis_url, tmp_path):  # noqa: F811
    # the demo has no key prefix option: every node uses the default "libsync:"
    nodes = [c_node(redis_url, "c-0", tmp_path / "c-0"), python_node(redis_url, None, "py-0"),
             node_node(redis_url, "js-0")]
    clients: list = []
    rooms: list = []
    try:
        for n in nodes:
            clients += [Client(n.port, "/"), Client(n.port, "/counter")]
            rooms.append(Client(n.port, "/rooms/mixed"))
        for c in clients + rooms:
            c.recv_until(lambda f: f.get("type") == "initial_state")
        drive(clients, 10, ack=False)
        drive(rooms, 5, ack=False)
        version = converge(clients, 6 * 10, acks_each=None)
        assert version == 60
        assert converge(rooms, 3 * 5, acks_each=None) == 15
        owner = lease_owner(redis_url, "libsync:", "/")
        assert owner in ("c-0", "py-0", "js-0"), owner

        # the demo's other messages, from a client of each kind of node, reach every client
        clients[0].ws.send(json.dumps({"type": "decrement", "amount": 2}))  # C
        converge(clients, 58, acks_each=None)
        clients[3].ws.send(json.dumps({"type": "increment", "amount": 5}))  # Python
        converge(clients, 63, acks_each=None)
        clients[4].ws.send(json.dumps({"type": "reset"}))  # Node
        assert converge(clients, 0, acks_each=None) == version + 3

        # a refused message: the owner's handler (C, Python or Node) says why, on every node
        for c in (clients[0], clients[2], clients[4]):
            c.ws.send(json.dumps({"type": "increment", "amount": "x"}))
            frame = c.recv_until(lambda f: f.get("type") == "error")
            assert "amount must be a number" in frame["error"], frame
        clients[1].ws.send(json.dumps({"type": "increment", "amount": 1}))
        assert converge(clients, 1, acks_each=None) == version + 4
    finally:
        for c in clients + rooms:
            c.ws.close()
        codes = [n.terminate() for n in nodes]
    assert codes == [0, 0, 0], (codes, [n.errors for n in nodes])

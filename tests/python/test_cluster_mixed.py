"""Any node of a cluster may be C, Python or Node: the C demo (examples/c/counter_server --redis),
a Python node (cluster_node.py) and a Node node (tests/node/fixtures/cluster_node.js, its
increment an async handler) on one real redis-server, with the demo's messages and state
({"counter": N}; increment / decrement by "amount", reset; a bad amount refused with "amount must
be a number"). Each node owns one room (the default counter, two rooms); real WebSocket clients
on every node in every room: every client converges on the same version and counter; decrement
and reset from any node reach every client; each owner's refusal reaches a client of another
node.

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
    # The demo has no key prefix option: every node uses the default "libsync:". Each kind of node
    # owns one room: the C node, started alone, the fixed mount's room "/"; the Python node the
    # room joined on it first, the Node node likewise. So each implementation runs the handlers
    # of the other two's clients.
    nodes = [c_node(redis_url, "c-0", tmp_path / "c-0")]
    groups: dict = {}
    try:
        # inside the try: a failed start or check still ends the nodes already started
        assert lease_owner(redis_url, "libsync:", "/") == "c-0"
        nodes.append(python_node(redis_url, None, "py-0"))
        nodes.append(node_node(redis_url, "js-0"))
        groups["/"] = [Client(n.port, path) for n in nodes for path in ("/", "/counter")]
        for owner, room in ((nodes[1], "/rooms/py-owned"), (nodes[2], "/rooms/js-owned")):
            first = Client(owner.port, room)
            assert lease_owner(redis_url, "libsync:", room) == owner.name
            groups[room] = [first] + [Client(n.port, room) for n in nodes if n is not owner]
        everyone = [c for group in groups.values() for c in group]
        for c in everyone:
            c.recv_until(lambda f: f.get("type") == "initial_state")
        drive(everyone, 10, ack=False)
        versions = {room: converge(group, 10 * len(group), acks_each=None)
                    for room, group in groups.items()}
        assert versions == {"/": 60, "/rooms/py-owned": 30, "/rooms/js-owned": 30}, versions

        # the demo's other messages, from a client of each kind of node, reach every client
        fixed = groups["/"]  # 0-1 on the C node, 2-3 on the Python node, 4-5 on the Node node
        fixed[0].ws.send(json.dumps({"type": "decrement", "amount": 2}))
        converge(fixed, 58, acks_each=None)
        fixed[3].ws.send(json.dumps({"type": "increment", "amount": 5}))
        converge(fixed, 63, acks_each=None)
        fixed[4].ws.send(json.dumps({"type": "reset"}))
        assert converge(fixed, 0, acks_each=None) == 63
        py_room = groups["/rooms/py-owned"]  # owner Python; then the C and the Node node's client
        py_room[2].ws.send(json.dumps({"type": "reset"}))
        assert converge(py_room, 0, acks_each=None) == 31

        # a refused message: each owner (C, Python, Node) says why to a client of another node
        for room, sender in (("/", fixed[2]), ("/rooms/py-owned", py_room[1]),
                             ("/rooms/js-owned", groups["/rooms/js-owned"][1])):
            sender.ws.send(json.dumps({"type": "increment", "amount": "x"}))
            frame = sender.recv_until(lambda f: f.get("type") == "error")
            assert "amount must be a number" in frame["error"], (room, frame)
        fixed[1].ws.send(json.dumps({"type": "increment", "amount": 1}))
        assert converge(fixed, 1, acks_each=None) == 64  # the refusal made no version
    finally:
        for group in groups.values():
            for c in group:
                c.ws.close()
        codes = [n.terminate() for n in nodes]
    assert codes == [0] * len(nodes) and len(nodes) == 3, (codes, [n.errors for n in nodes])

"""Clients that misbehave. After each, the server must still serve a fresh client correctly."""
import asyncio
import json
import socket
import struct
import time
import urllib.request

import pytest

import wsraw
from helpers import client, current_state, initial_state, run, send, wait_for_counter


def assert_still_serving(srv, expected_counter=None):
    """A fresh client gets the state and can still change it."""
    async def scenario():
        async with client(srv.ws("/")) as ws:
            start = (await initial_state(ws))["data"]["counter"]
            if expected_counter is not None:
                assert start == expected_counter
            await send(ws, "increment", amount=1)
            await wait_for_counter(ws, start + 1)

    run(scenario(), timeout=30)


def raw_initial_state(raw):
    opcode, payload = raw.recv_frame()
    assert opcode == 0x1
    msg = json.loads(payload)
    assert msg["type"] == "initial_state"
    return msg


def test_invalid_utf8_closes_with_1007(server):
    raw = wsraw.connect(server.port)
    raw_initial_state(raw)
    raw.send_frame(0x1, b'{"type":"increment","amount":1,"x":"\xc3\x28"}')
    assert raw.wait_close() == 1007
    raw.close()
    assert_still_serving(server, expected_counter=0)


def test_binary_frame_changes_nothing(server):
    raw = wsraw.connect(server.port)
    raw_initial_state(raw)
    raw.send_frame(0x2, b'{"type":"increment","amount":1}')
    code = raw.wait_close(timeout=3)
    raw.close()
    assert code == 1003
    assert_still_serving(server, expected_counter=0)


@pytest.mark.parametrize("garbage", [
    b"\xff\xff\xff\xff" + b"garbage" * 20,   # reserved bits and opcodes
    b"GET / HTTP/1.1\r\n\r\n" * 3,           # HTTP again on an upgraded connection
])
def test_garbage_after_the_handshake_is_cut_off(server, garbage):
    raw = wsraw.connect(server.port)
    raw_initial_state(raw)
    raw.sock.sendall(garbage)
    code = raw.wait_close(timeout=10)
    raw.close()
    assert code in (None, 1002), code
    assert_still_serving(server, expected_counter=0)


def test_unmasked_client_frame_changes_nothing(server):
    """RFC 6455 wants a close (1002) for an unmasked client frame; libwebsockets 4.1 reads it as
    a normal frame instead. Either way it must not change the state or stop the server."""
    raw = wsraw.connect(server.port)
    raw_initial_state(raw)
    raw.sock.sendall(b"\x81\x1f" + b'{"type":"increment","amount":1}')
    opcode, payload = raw.recv_frame()
    if opcode == 0x8:
        assert struct.unpack("!H", payload[:2])[0] == 1002
    else:
        # Read as the message it spells: applied like any masked one.
        assert json.loads(payload)["type"] == "state_update"
        assert json.loads(payload)["data"]["counter"] == 1
    raw.close()
    assert_still_serving(server)


def test_oversize_message_closes_with_1009(server):
    """A frame that announces more than the 1 MiB limit is refused on its header."""
    raw = wsraw.connect(server.port)
    raw_initial_state(raw)
    announced = (1 << 20) + 100
    header = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", announced) + b"\0\0\0\0"
    raw.sock.sendall(header + b'{"type":"increment","amount":1,"pad":"' + b"x" * 100)
    assert raw.wait_close() == 1009
    raw.close()
    assert_still_serving(server, expected_counter=0)


def test_oversize_message_sent_whole(server):
    """The same sent in full: the server closes while bytes are still in flight, so TCP may reset
    before the close frame is read; either way the message is not applied."""
    raw = wsraw.connect(server.port)
    raw_initial_state(raw)
    big = b'{"type":"increment","amount":1,"pad":"' + b"x" * (1 << 20) + b'"}'
    try:
        raw.send_frame(0x1, big)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert raw.wait_close() in (None, 1009)
    raw.close()
    assert_still_serving(server, expected_counter=0)


def test_flood_from_one_client(server):
    count = 5000

    async def scenario():
        # The flooder's code never reads; an unbounded queue lets its connection still drain the
        # socket, so its closing handshake is not stuck behind frames nobody consumes.
        async with client(server.ws("/"), max_queue=None) as flooder, client(server.ws("/")) as watcher:
            await initial_state(flooder)
            await initial_state(watcher)
            payload = json.dumps({"type": "increment", "amount": 1})
            for _ in range(count):
                await flooder.send(payload)
            await wait_for_counter(watcher, count, timeout=60)

    run(scenario(), timeout=90)
    assert_still_serving(server, expected_counter=count)


def test_client_that_never_reads(servers):
    """A client that stops reading costs the server one state frame, not a backlog; the others
    keep converging, and when it reads again it ends on the latest state."""
    pad = 65536
    srv = servers("--pad", str(pad))
    stalled = wsraw.connect(srv.port, rcvbuf=16384)
    raw_initial_state(stalled)
    rss_before = srv.rss_kib()
    senders, each = 3, 300
    total = senders * each

    async def sender(go):
        async with client(srv.ws("/")) as ws:
            await initial_state(ws)
            await go.wait()
            for _ in range(each):
                await send(ws, "increment", amount=1)
            await wait_for_counter(ws, total, timeout=60)

    async def scenario():
        go = asyncio.Event()
        tasks = [asyncio.create_task(sender(go)) for _ in range(senders)]
        await asyncio.sleep(0.2)
        go.set()
        await asyncio.gather(*tasks)

    run(scenario(), timeout=120)
    grown_mib = (srv.rss_kib() - rss_before) / 1024
    backlog_mib = total * pad / (1 << 20)
    # A backlog would be ~56 MiB; the latest-state-only design holds a frame or two. (Under
    # AddressSanitizer freed memory stays in its quarantine, so RSS says nothing there.)
    if not srv.sanitized():
        assert grown_mib < backlog_mib / 3, f"RSS grew by {grown_mib:.1f} MiB for a client that never reads"

    # Now it reads: whatever the kernel buffered, then the latest state, far fewer frames than
    # there were versions.
    frames = 0
    while True:
        opcode, payload = stalled.recv_frame(timeout=20)
        if opcode != 0x1:
            continue
        frames += 1
        msg = json.loads(payload)
        if msg["type"] == "state_update" and msg["data"]["counter"] == total:
            break
    stalled.close()
    print(f"stalled client: {frames} frames for {total} versions, RSS grew {grown_mib:.1f} MiB")
    assert frames < total / 3, f"{frames} frames for {total} versions: the slow client got a backlog"
    assert_still_serving(srv, expected_counter=total)


def test_many_quick_connects_and_disconnects(server):
    deadline = time.monotonic() + 60
    for i in range(500):
        assert time.monotonic() < deadline, f"only {i} connect/disconnect cycles in 60 s"
        raw = wsraw.connect(server.port)
        if i % 3 == 0:
            raw_initial_state(raw)
            raw.send_frame(0x8, struct.pack("!H", 1000))
        elif i % 3 == 1:
            # Abort: RST instead of FIN.
            raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()

    # The server forgets them all: nothing is left open after a moment.
    async def settle():
        for _ in range(100):
            state = await current_state(server.ws("/"))
            metrics = await asyncio.to_thread(fetch_metrics, server)
            if open_connections(metrics) == 0:
                return state
            await asyncio.sleep(0.1)
        raise AssertionError("connections still counted as open:\n" + metrics)

    run(settle(), timeout=30)
    assert_still_serving(server, expected_counter=0)


def fetch_metrics(srv):
    with urllib.request.urlopen(srv.http + "/metrics", timeout=10) as resp:
        return resp.read().decode()


def open_connections(metrics):
    """The open-connection gauge of the engine mounted at "/" (sum of all its samples)."""
    total = None
    for line in metrics.splitlines():
        if line.startswith("#") or "connections" not in line.split("{")[0]:
            continue
        name = line.split("{")[0].split(" ")[0]
        if name.endswith("_connections") and 'path="/"' in line:
            total = (total or 0) + float(line.rsplit(" ", 1)[1])
    assert total is not None, "no per-engine connections gauge in /metrics:\n" + metrics
    return total

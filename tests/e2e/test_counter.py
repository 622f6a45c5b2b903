"""The demo server end to end: convergence, persistence across restarts, graceful stop, the
handlers' answers, the two routes to one engine, HTTP endpoints and the command line."""
import asyncio
import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed

import server as srvmod
from helpers import client, current_state, initial_state, recv_json, run, send, wait_for_counter

CLIENTS = 50
INCREMENTS = 20


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read()


def test_many_clients_converge(server):
    total = CLIENTS * INCREMENTS

    async def one_client(all_connected, connected):
        async with client(server.ws("/")) as ws:
            first = await initial_state(ws)
            assert first["data"] == {"counter": 0} and first["version"] == 0
            connected.append(ws)
            if len(connected) == CLIENTS:
                all_connected.set()
            await all_connected.wait()
            for _ in range(INCREMENTS):
                await send(ws, "increment", amount=1)
            frames = await wait_for_counter(ws, total)
            return frames[-1]

    async def scenario():
        all_connected, connected = asyncio.Event(), []
        finals = await asyncio.gather(*(one_client(all_connected, connected) for _ in range(CLIENTS)))
        # Every client ends on the same final state: one version per increment.
        assert {json.dumps(f, sort_keys=True) for f in finals} == {
            json.dumps({"type": "state_update", "data": {"counter": total}, "version": total}, sort_keys=True)
        }
        late = await current_state(server.ws("/"))
        assert late["data"]["counter"] == total and late["version"] == total

    run(scenario())


def test_both_routes_reach_one_engine(server):
    async def scenario():
        async with client(server.ws("/")) as root, client(server.ws("/counter")) as room:
            await initial_state(root)
            await initial_state(room)
            await send(room, "increment", amount=3)
            await wait_for_counter(root, 3)
            await send(root, "decrement", amount=1)
            await wait_for_counter(room, 2)

    run(scenario())


def test_handlers_and_rejections(server):
    async def scenario():
        async with client(server.ws("/")) as ws:
            await initial_state(ws)
            await send(ws, "increment", amount="five")
            err = await recv_json(ws)
            assert err["type"] == "error" and "amount" in err["error"], err
            await send(ws, "nosuchtype")
            assert (await recv_json(ws))["type"] == "error"
            await ws.send("not json at all")
            assert (await recv_json(ws))["type"] == "error"
            # None of the three changed anything: the next change is version 1.
            await send(ws, "increment", amount=10)
            frames = await wait_for_counter(ws, 10)
            assert frames[-1]["version"] == 1
            await send(ws, "decrement", amount=4)
            await wait_for_counter(ws, 6)
            await send(ws, "increment", amount=0.5)
            await wait_for_counter(ws, 6.5)
            await send(ws, "reset")
            frames = await wait_for_counter(ws, 0)
            assert frames[-1]["version"] == 4

    run(scenario())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_restart_keeps_the_state(servers, sig):
    first = servers()

    async def bump(srv, amount):
        async with client(srv.ws("/")) as ws:
            start = (await initial_state(ws))["data"]["counter"]
            await send(ws, "increment", amount=amount)
            frames = await wait_for_counter(ws, start + amount)
            return frames[-1]["version"]

    version = run(bump(first, 7))
    assert first.stop(sig) == 0, first.stderr()
    assert os.path.exists(os.path.join(first.data_dir, "counter.sqlite"))

    second = servers(data_dir=first.data_dir)
    state = run(current_state(second.ws("/")))
    assert state["data"] == {"counter": 7} and state["version"] == version
    assert run(bump(second, 5)) == version + 1
    assert second.stop() == 0, second.stderr()

    third = servers(data_dir=first.data_dir)
    assert run(current_state(third.ws("/counter")))["data"] == {"counter": 12}


def test_crash_keeps_every_state_a_client_saw(servers):
    """SYNC_PERSIST_BEFORE_SEND: a state is saved before any client receives it, so after a
    SIGKILL the store holds at least the last version a client was sent."""
    first = servers()

    async def send_then_crash():
        # max_queue=None: the connection keeps reading, so it sees the crash at once on exit.
        async with client(first.ws("/"), max_queue=None) as ws:
            await initial_state(ws)
            for _ in range(300):
                await send(ws, "increment", amount=1)
            seen = None
            while seen is None or seen["data"]["counter"] < 150:
                msg = await recv_json(ws)
                if msg["type"] == "state_update":
                    seen = msg
            first.proc.send_signal(signal.SIGKILL)
            return seen

    seen = run(send_then_crash())
    assert first.wait() == -signal.SIGKILL
    second = servers(data_dir=first.data_dir)
    state = run(current_state(second.ws("/")))
    assert state["version"] >= seen["version"], (state, seen)
    assert state["data"]["counter"] == state["version"]


def test_graceful_stop_closes_clients_with_1001(server):
    async def scenario():
        socks = [await client(server.ws(p)).__aenter__() for p in ("/", "/", "/counter")]
        for ws in socks:
            await initial_state(ws)
        await send(socks[0], "increment", amount=2)
        for ws in socks:
            await wait_for_counter(ws, 2)
        server.proc.send_signal(signal.SIGTERM)
        for ws in socks:
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    msg = await recv_json(ws, 10)
                    assert msg["type"] in ("state_update", "ping"), msg
            assert closed.value.rcvd is not None, "the server dropped the TCP connection without a close frame"
            assert closed.value.rcvd.code == 1001

    run(scenario())
    assert server.wait() == 0, server.stderr()


def test_heartbeat_keeps_answering_clients_and_drops_silent_ones(servers):
    srv = servers("--heartbeat-ms", "250")

    async def scenario():
        async with client(srv.ws("/")) as polite, client(srv.ws("/")) as silent:
            await initial_state(polite)
            await initial_state(silent)
            pings = 0
            loop = asyncio.get_running_loop()
            until = loop.time() + 1.5
            while loop.time() < until:
                try:
                    msg = await recv_json(polite, until - loop.time())
                except asyncio.TimeoutError:
                    break
                if msg["type"] == "ping":
                    pings += 1
                    await polite.send("pong")
            assert pings >= 3
            # The silent client got pings too and was closed for never answering them.
            with pytest.raises(ConnectionClosed):
                while True:
                    assert (await recv_json(silent, 5))["type"] == "ping"
            await send(polite, "increment", amount=1)
            await wait_for_counter(polite, 1)

    run(scenario())


def test_padding_and_nested_data_dir(servers, tmp_path):
    data_dir = tmp_path / "not" / "yet" / "there"
    srv = servers("--pad", "1000", data_dir=data_dir)
    state = run(current_state(srv.ws("/")))
    assert state["data"] == {"counter": 0, "blob": "x" * 1000}
    assert (data_dir / "counter.sqlite").exists()


def test_http_endpoints_and_static_page(server):
    web = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "web")
    status, ctype, body = http_get(server.http + "/")
    with open(os.path.join(web, "index.html"), "rb") as f:
        assert (status, body) == (200, f.read())
    assert ctype.startswith("text/html")
    status, ctype, body = http_get(server.http + "/app.js")
    assert status == 200 and "javascript" in ctype and b"WebSocket" in body
    status, ctype, _ = http_get(server.http + "/style.css")
    assert status == 200 and ctype.startswith("text/css")
    with pytest.raises(urllib.error.HTTPError) as missing:
        http_get(server.http + "/no-such-file.html")
    assert missing.value.code == 404

    status, _, body = http_get(server.http + "/healthz")
    assert status == 200 and body.strip() == b"ok"

    async def bump():
        async with client(server.ws("/")) as ws:
            await initial_state(ws)
            await send(ws, "increment", amount=1)
            await wait_for_counter(ws, 1)

    run(bump())
    status, ctype, body = http_get(server.http + "/metrics")
    text = body.decode()
    assert status == 200 and ctype.startswith("text/plain")
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    # One engine behind both routes: one series for it, labelled with its first path.
    assert samples['libsync_state_version{path="/"}'] == 1, text
    assert samples['libsync_messages_applied_total{path="/"}'] == 1, text
    assert samples["libsync_server_connections_accepted_total"] >= 1, text


def test_static_dir_can_be_replaced(servers, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<p>another page</p>")
    srv = servers("--static", str(site))
    assert http_get(srv.http + "/")[2] == b"<p>another page</p>"


def test_command_line_errors(servers, tmp_path):
    for argv, word in ((["--port", "abc"], "--port"), (["--bogus", "1"], "--bogus"),
                       (["--tls-cert", "x.pem"], "--tls-key"), (["--heartbeat-ms", "-1"], "--heartbeat-ms")):
        done = subprocess.run([srvmod.binary(), *argv], capture_output=True, timeout=20, cwd=tmp_path)
        assert done.returncode == 2 and word in done.stderr.decode(), (argv, done)
    done = subprocess.run([srvmod.binary(), "--help"], capture_output=True, timeout=20)
    assert done.returncode == 0 and b"--data-dir" in done.stdout

    # A data directory that cannot be made (its parent is a file).
    (tmp_path / "file").write_text("")
    done = subprocess.run([srvmod.binary(), "--port", "0", "--data-dir", str(tmp_path / "file" / "d")],
                          capture_output=True, timeout=20)
    assert done.returncode == 1 and b"cannot create data directory" in done.stderr, done

    # A port that is taken: a clear error and a non-zero exit, not a hang (and, checked before
    # libwebsockets is asked, no leak of its failure path to suppress under LeakSanitizer).
    taken = servers()
    done = subprocess.run([srvmod.binary(), "--port", str(taken.port), "--data-dir", str(tmp_path / "d2")],
                          capture_output=True, timeout=20)
    assert done.returncode == 1 and b"cannot listen" in done.stderr, done
    assert b"Address already in use" in done.stderr, done


def test_token_lets_in_only_clients_that_bring_it(servers):
    srv = servers("--token", "s3cret")
    status = http_get(srv.http + "/healthz")[0]  # HTTP is not gated: only WebSocket upgrades
    assert status == 200

    def upgrade_status(target, headers=""):
        """The status line an upgrade request gets."""
        with socket.create_connection((srv.host, srv.port), timeout=10) as sock:
            sock.sendall((f"GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                          f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{headers}\r\n").encode())
            return sock.recv(256).split(b"\r\n", 1)[0].decode()

    assert upgrade_status("/") == "HTTP/1.1 401 Unauthorized"
    assert " 401 " in upgrade_status("/?token=wrong")
    assert " 401 " in upgrade_status("/", "Authorization: Bearer s3cre\r\n")
    assert " 101 " in upgrade_status("/?token=s3cret")

    async def scenario():
        async with client(srv.ws("/?path=x&token=s3cret")) as ws:
            await initial_state(ws)
            await send(ws, "increment", amount=2)
            await wait_for_counter(ws, 2)
        async with client(srv.ws("/counter"), additional_headers={"Authorization": "Bearer s3cret"}) as ws:
            assert (await initial_state(ws))["data"]["counter"] == 2

    run(scenario())
    done = subprocess.run([srvmod.binary(), "--token", "a&b"], capture_output=True, timeout=20)
    assert done.returncode == 2 and b"--token must be" in done.stderr, done


def metrics_status(srv, suffix="", headers=None):
    request = urllib.request.Request(srv.http + "/metrics" + suffix, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_token_guards_metrics_and_is_printed_in_the_url(servers):
    srv = servers("--token", "s3cret")
    # The printed URL opens the page with the token, as it is.
    assert srv.url == f"http://{srv.host}:{srv.port}/?token=s3cret", srv.url
    assert metrics_status(srv) == 401
    assert metrics_status(srv, "?token=wrong") == 401
    assert metrics_status(srv, "", {"Authorization": "Bearer s3cre"}) == 401
    assert metrics_status(srv, "?token=s3cret") == 200
    assert metrics_status(srv, "", {"Authorization": "Bearer s3cret"}) == 200
    # What holds no secret stays public: the page, its script, /healthz.
    for path in ("/", "/app.js", "/healthz"):
        assert http_get(srv.http + path)[0] == 200, path
    # Without a token, /metrics is public.
    plain = servers()
    assert plain.url == f"http://{plain.host}:{plain.port}"
    assert metrics_status(plain) == 200


def test_token_from_a_file_or_the_environment(servers, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("fr0m-file\n")
    env = dict(os.environ, LIBSYNC_DEMO_TOKEN="fr0m-env")
    for srv, token in ((servers("--token-file", str(token_file)), "fr0m-file"),
                       (servers(env=env), "fr0m-env"),
                       # an option wins over the environment
                       (servers("--token-file", str(token_file), env=env), "fr0m-file")):
        assert srv.url.endswith(f"/?token={token}"), srv.url
        assert metrics_status(srv) == 401
        assert metrics_status(srv, f"?token={token}") == 200

        async def scenario():
            with pytest.raises(Exception) as refused:
                async with client(srv.ws("/?token=other")):
                    pass
            assert "401" in str(refused.value)
            async with client(srv.ws(f"/?token={token}")) as ws:
                await initial_state(ws)

        run(scenario())

    for args, message in (((("--token-file", str(tmp_path / "missing"))), b"No such file"),
                          (("--token", "a", "--token-file", str(token_file)), b"not both")):
        done = subprocess.run([srvmod.binary(), *args], capture_output=True, timeout=20)
        assert done.returncode == 2 and message in done.stderr, done
    empty = tmp_path / "empty"
    empty.write_text("")
    done = subprocess.run([srvmod.binary(), "--token-file", str(empty)], capture_output=True, timeout=20)
    assert done.returncode == 2 and b"is empty" in done.stderr, done
    done = subprocess.run([srvmod.binary()], capture_output=True, timeout=20,
                          env=dict(os.environ, LIBSYNC_DEMO_TOKEN="a b"))
    assert done.returncode == 2 and b"LIBSYNC_DEMO_TOKEN must be" in done.stderr, done


def test_token_refuses_a_browser_page_with_close_4401(servers):
    """A page is never shown an upgrade's HTTP status, so a request with an Origin (a browser's)
    is upgraded and closed with 4401: the page can tell "not authorised" from "server down"."""
    srv = servers("--token", "s3cret")

    async def scenario():
        async with client(srv.ws("/?token=wrong"), origin=f"http://{srv.host}:{srv.port}") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await recv_json(ws)
            assert closed.value.rcvd.code == 4401, closed.value
        async with client(srv.ws("/?token=s3cret"), origin=f"http://{srv.host}:{srv.port}") as ws:
            await initial_state(ws)

    run(scenario())

"""counter_server --tls-cert/--tls-key: https and wss with a certificate made for the test."""
import ssl
import subprocess
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake

import server as srvmod
from helpers import client, initial_state, run, send, wait_for_counter


@pytest.fixture
def certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60)
    context = ssl.create_default_context(cafile=str(cert))
    return cert, key, context


def test_tls_round_trip(servers, certificate):
    cert, key, context = certificate
    srv = servers("--tls-cert", str(cert), "--tls-key", str(key))
    assert srv.scheme == "https"

    with urllib.request.urlopen(srv.http + "/healthz", context=context, timeout=10) as resp:
        assert resp.status == 200 and resp.read().strip() == b"ok"

    async def scenario():
        async with client(srv.ws("/"), ssl=context) as a, client(srv.ws("/counter"), ssl=context) as b:
            assert (await initial_state(a))["data"] == {"counter": 0}
            await initial_state(b)
            await send(a, "increment", amount=4)
            await wait_for_counter(b, 4)

    run(scenario())


def test_plain_client_gets_no_state_from_a_tls_server(servers, certificate):
    cert, key, _ = certificate
    srv = servers("--tls-cert", str(cert), "--tls-key", str(key))

    async def scenario():
        async with client(f"ws://127.0.0.1:{srv.port}/", open_timeout=5) as ws:
            await initial_state(ws)

    # The handshake fails: the TLS server never answers plain HTTP with a WebSocket upgrade.
    with pytest.raises((InvalidHandshake, ConnectionClosed, OSError)):
        run(scenario(), timeout=20)


def test_unreadable_certificate_is_a_clear_error(servers, tmp_path):
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    srv = servers("--tls-cert", str(bogus), "--tls-key", str(bogus), start=False,
                  env=srvmod.env_for_listen_failure())
    with pytest.raises(AssertionError, match=r"exited \(1\) before listening"):
        srv.start(timeout=20)

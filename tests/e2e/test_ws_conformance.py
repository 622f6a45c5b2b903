"""RFC 6455 conformance of the handshake and of the close handshake, over raw sockets against the
real counter_server: what a browser never sends but a conformance suite, another client library
or an attacker does. (The frame level as a whole is covered by the Autobahn TestSuite,
tests/autobahn.)"""
import base64
import os
import socket
import struct
import time

import pytest

import wsraw
from wsraw import KEY, accept_value, handshake, standard_headers


# ---- the opening handshake (RFC 6455 section 4.2.1) -----------------------------------------

@pytest.mark.parametrize("upgrade", ["websocket", "WebSocket", "WEBSOCKET"])
def test_upgrade_value_is_case_insensitive(server, upgrade):
    status, headers, _, sock = handshake(server.port, standard_headers(Upgrade=upgrade))
    assert status == 101
    assert headers["sec-websocket-accept"] == accept_value(KEY)
    sock.close()


@pytest.mark.parametrize("connection", ["keep-alive, Upgrade", "upgrade", "Upgrade,keep-alive"])
def test_connection_is_a_token_list(server, connection):
    status, _, _, sock = handshake(server.port, standard_headers(Connection=connection))
    assert status == 101
    sock.close()


@pytest.mark.parametrize("upgrade", ["h2c", "websocket2"])
def test_other_upgrade_is_refused(server, upgrade):
    status, _, _, _ = handshake(server.port, standard_headers(Upgrade=upgrade))
    # lws 4.1 itself answers 403 to an Upgrade other than websocket or h2c
    assert status == (400 if upgrade == "h2c" else 403)


@pytest.mark.parametrize("key", [
    "abc",                                     # not 16 bytes
    base64.b64encode(os.urandom(15)).decode(),  # 15 bytes
    base64.b64encode(os.urandom(17)).decode(),  # 17 bytes
    "!!!!!!!!!!!!!!!!!!!!!!==",                 # 24 characters, not base64
    None,                                       # missing
])
def test_bad_key_is_refused_with_400(server, key):
    status, _, body, _ = handshake(server.port, standard_headers(Sec_WebSocket_Key=key))
    assert status == 400
    assert b"Sec-WebSocket-Key" in body


@pytest.mark.parametrize("version", ["99", "8", "130", "1 3"])
def test_other_version_is_refused_with_426(server, version):
    status, headers, _, _ = handshake(server.port, standard_headers(Sec_WebSocket_Version=version))
    assert status == 426
    assert headers.get("sec-websocket-version") == "13"


def test_missing_version_is_refused_with_400(server):
    status, _, _, _ = handshake(server.port, standard_headers(Sec_WebSocket_Version=None))
    assert status == 400


def test_unsupported_subprotocol_is_refused_with_400(server):
    status, _, body, _ = handshake(server.port,
                                   standard_headers(Sec_WebSocket_Protocol="chat, superchat"))
    assert status == 400
    assert b"subprotocol" in body
    assert_still_serving(server)


def test_supported_subprotocol_is_selected(server):
    status, headers, _, sock = handshake(server.port,
                                         standard_headers(Sec_WebSocket_Protocol="chat, libsync"))
    assert status == 101
    assert headers.get("sec-websocket-protocol") == "libsync"
    sock.close()


def test_no_subprotocol_offered_selects_none(server):
    status, headers, _, sock = handshake(server.port, standard_headers())
    assert status == 101
    assert "sec-websocket-protocol" not in headers
    sock.close()


# ---- request sizes ---------------------------------------------------------------------------

def test_header_of_5_kib_is_accepted(server):
    status, _, _, sock = handshake(server.port, standard_headers(Cookie="a=" + "b" * 5000))
    assert status == 101
    sock.close()


@pytest.mark.parametrize("size", [8192, 10000, 30000])
def test_too_long_header_is_refused_with_431(server, size):
    status, _, _, _ = handshake(server.port, standard_headers(Cookie="a" * size))
    assert status == 431
    assert_still_serving(server)


@pytest.mark.parametrize("path", ["/" + "a" * 9000, "/?" + "a" * 9000, "/" + "a" * 30000])
def test_too_long_request_target_is_refused_with_414(server, path):
    status, _, _, _ = handshake(server.port, standard_headers(), path=path)
    assert status == 414
    assert_still_serving(server)


# ---- the closing handshake (RFC 6455 sections 5.5.1 and 7.4) -------------------------------

def open_client(server):
    raw = wsraw.connect(server.port)
    opcode, _ = raw.recv_frame()  # the initial state
    assert opcode == 0x1
    return raw


def close_answer(raw, payload, timeout=5):
    """Sends a close frame; returns (the server's close code or None, seconds until the TCP
    connection ended)."""
    started = time.monotonic()
    raw.send_frame(0x8, payload)
    code = raw.wait_close(timeout=timeout)
    # the server ends the TCP connection after its close frame (RFC 6455 section 7.1.1)
    raw.sock.settimeout(max(0.1, timeout - (time.monotonic() - started)))
    try:
        while raw.sock.recv(4096):
            pass
    except (ConnectionResetError, socket.timeout):
        pass
    return code, time.monotonic() - started


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_invalid_close_code_is_answered_with_1002(server, code):
    raw = open_client(server)
    answer, took = close_answer(raw, struct.pack("!H", code) + b"bye")
    raw.close()
    assert answer == 1002
    assert took < 3
    assert_still_serving(server)


def test_one_byte_close_payload_is_answered_with_1002(server):
    raw = open_client(server)
    answer, took = close_answer(raw, b"\x03")
    raw.close()
    assert answer == 1002
    assert took < 3
    assert_still_serving(server)


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 3000, 4000, 4999])
def test_valid_close_code_is_echoed(server, code):
    raw = open_client(server)
    answer, took = close_answer(raw, struct.pack("!H", code) + "ok ✓".encode())
    raw.close()
    assert answer == code
    assert took < 3


def test_empty_close_is_answered(server):
    raw = open_client(server)
    raw.send_frame(0x8, b"")
    opcode, payload = raw.recv_frame()
    raw.close()
    assert opcode == 0x8
    assert payload == b""


@pytest.mark.parametrize("reason", [b"\xc3\x28", b"ok \xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"])
def test_invalid_utf8_close_reason_is_answered_with_1007(server, reason):
    raw = open_client(server)
    answer, took = close_answer(raw, struct.pack("!H", 1000) + reason)
    raw.close()
    assert answer == 1007
    assert took < 3
    assert_still_serving(server)


@pytest.mark.parametrize("fragments", [
    [b'{"type":"increment","x":"\xc3', b'\x28"}'],       # split inside a character
    [b'{"type":"increment","x":"\xe2\x82', b'"}'],       # a character cut short at the end
    [b'{"type":"increment","x":"\xed\xa0\x80"}'],       # a UTF-16 surrogate
])
def test_invalid_utf8_text_closes_with_1007(server, fragments):
    raw = open_client(server)
    for i, fragment in enumerate(fragments):
        raw.send_frame(0x1 if i == 0 else 0x0, fragment, fin=i == len(fragments) - 1)
    assert raw.wait_close(timeout=5) == 1007
    raw.close()
    assert_still_serving(server)


def test_utf8_split_across_fragments_is_accepted(server):
    raw = open_client(server)
    text = '{"type":"increment","amount":1,"note":"€ ✓ 😀"}'.encode()
    cut = text.index("😀".encode()) + 2
    raw.send_frame(0x1, text[:cut], fin=False)
    raw.send_frame(0x0, text[cut:], fin=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        opcode, payload = raw.recv_frame()
        assert opcode == 0x1
        if b'"counter":1' in payload:
            break
    raw.close()


def assert_still_serving(server):
    raw = open_client(server)
    raw.send_text('{"type":"increment","amount":1}')
    opcode, payload = raw.recv_frame()
    assert opcode == 0x1 and b"counter" in payload
    raw.close()


# ---- a frame that breaks the protocol -------------------------------------------------------

def read_until_end(raw, timeout=5):
    """Every frame until the TCP connection ends: [(opcode, payload)], and the seconds it took."""
    started = time.monotonic()
    frames = []
    while time.monotonic() - started < timeout:
        try:
            frames.append(raw.recv_frame(timeout=max(0.1, timeout - (time.monotonic() - started))))
        except (EOFError, ConnectionResetError):
            break
        except TimeoutError:
            break
    return frames, time.monotonic() - started


RSV_FRAME_WITH_PAYLOAD = bytes([0x80 | 0x50 | 0x1, 0x80 | 8]) + b"\0\0\0\0" + b"abcdefgh"


def test_protocol_error_ends_the_connection_at_once(server):
    raw = open_client(server)
    raw.sock.sendall(RSV_FRAME_WITH_PAYLOAD)
    frames, took = read_until_end(raw)
    raw.close()
    assert frames and frames[-1][0] == 0x8
    assert struct.unpack("!H", frames[-1][1][:2])[0] == 1002
    # lws 4.1 alone would wait 5 s for a close acknowledgement it cannot parse
    assert took < 3
    assert_still_serving(server)


def test_nothing_follows_the_close_frame(server):
    raw = open_client(server)
    # a message with a reply and a broadcast, then a frame that fails the connection, at once
    message = b'{"type":"increment","amount":1}'
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(message))
    raw.sock.sendall(bytes([0x81, 0x80 | len(message)]) + mask + masked + RSV_FRAME_WITH_PAYLOAD)
    frames, took = read_until_end(raw)
    raw.close()
    opcodes = [op for op, _ in frames]
    assert 0x8 in opcodes
    assert opcodes.index(0x8) == len(opcodes) - 1, f"frames after the close frame: {opcodes}"
    assert took < 3


def test_empty_fragments_make_one_message(server):
    """Empty fragments are legal (RFC 6455 section 5.4); the server reassembles around them (an
    empty first fragment once made the UBSan build abort)."""
    raw = open_client(server)
    raw.send_frame(0x1, b"", fin=False)
    raw.send_frame(0x0, b'{"type":"increment",', fin=False)
    raw.send_frame(0x0, b"", fin=False)
    raw.send_frame(0x0, b'"amount":5}', fin=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        opcode, payload = raw.recv_frame()
        if opcode == 0x1 and b'"counter":5' in payload:
            break
    else:
        pytest.fail("the reassembled increment was not applied")
    raw.close()


def http_status(port, path, headers=()):
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *headers, "Connection: close"]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    sock.close()
    return int(data.split()[1]) if data.startswith(b"HTTP/") else None


def test_plain_http_requests_too_long_are_answered(server):
    assert http_status(server.port, "/healthz", ["Cookie: " + "a" * 10000]) == 431
    assert http_status(server.port, "/healthz?" + "a" * 9000) == 414
    assert http_status(server.port, "/healthz", ["Cookie: " + "a" * 5000]) == 200

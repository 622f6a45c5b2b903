"""A raw RFC 6455 client over a plain socket, for what a well-behaved library will not send:
upgrade requests with any headers, binary and invalid UTF-8 frames, garbage after the handshake,
clients that never read. (The C tests and the load generator share tools/wsclient instead.)"""
import base64
import hashlib
import os
import socket
import struct
import time

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's own example: base64 of 16 bytes


class RawWs:
    def __init__(self, sock, leftover=b""):
        self.sock = sock
        self.buf = leftover

    def send_frame(self, opcode, payload, fin=True):
        header = bytes([(0x80 if fin else 0) | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 65536 else _mask_big(payload, mask)
        self.sock.sendall(header + mask + masked)

    def send_text(self, text):
        self.send_frame(0x1, text.encode() if isinstance(text, str) else text)

    def _need(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame from the server in time")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the server closed the TCP connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self, timeout=10):
        """(opcode, payload) of the next frame from the server (servers do not mask)."""
        deadline = time.monotonic() + timeout
        b0, b1 = self._need(2, deadline)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._need(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._need(8, deadline))[0]
        return b0 & 0x0F, self._need(n, deadline)

    def wait_close(self, timeout=10):
        """Reads until the server ends the connection. Returns the close code of its close frame,
        or None when the TCP connection ended without one."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                opcode, payload = self.recv_frame(max(0.0, deadline - time.monotonic()))
            except (EOFError, ConnectionResetError):
                return None
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005

    def close(self):
        self.sock.close()


def _mask_big(payload, mask):
    whole = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(whole, "big")).to_bytes(len(payload), "big")


def standard_headers(**replace):
    """The upgrade request's headers; name=value replaces one (underscores for dashes), None drops it."""
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    for name, value in replace.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return headers


def accept_value(key):
    """The Sec-WebSocket-Accept a server must answer `key` with."""
    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    return base64.b64encode(digest).decode()


def handshake(port, headers, path="/", extra_lines=(), host="127.0.0.1", timeout=15, rcvbuf=None):
    """Sends one upgrade request; returns (status code, {lower-case header: value}, body, sock).
    After a 101 the body is what already came after the head and sock is the open socket; after a
    refusal the body is read to its end and sock is None. The status is None when the server
    closed without answering."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect((host, port))
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += list(extra_lines)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in data and time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        data += chunk
    if b"\r\n\r\n" not in data:
        sock.close()
        return None, {}, b"", None
    head, body = data.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    status = int(status_line.split()[1])
    if status != 101:
        # a refusal's body is short; read it to its end
        length = int(parsed.get("content-length", "0"))
        while len(body) < length and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        sock.close()
        sock = None
    return status, parsed, body, sock


def connect(port, path="/", host="127.0.0.1", timeout=10, rcvbuf=None):
    """Opens a WebSocket by hand; returns a RawWs after a 101 answer with the right accept."""
    key = base64.b64encode(os.urandom(16)).decode()
    status, headers, rest, sock = handshake(port, standard_headers(Sec_WebSocket_Key=key), path,
                                            host=host, timeout=timeout, rcvbuf=rcvbuf)
    if status != 101:
        raise ConnectionError(f"upgrade refused: {status}")
    if headers.get("sec-websocket-accept") != accept_value(key):
        sock.close()
        raise ConnectionError(f"wrong Sec-WebSocket-Accept: {headers.get('sec-websocket-accept')}")
    return RawWs(sock, rest)

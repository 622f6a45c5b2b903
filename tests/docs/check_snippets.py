#!/usr/bin/env python3
"""Runs the code blocks of the READMEs, so that what a reader pastes works.

Every fenced block is classified by its info string: the first word is the language, the next
words are marks.

  ```c / ```python / ```js    a complete program: compiled (C: -Wall -Wextra -Werror against the
                              built library) and run in an empty directory; it must exit 0
                              within the time limit. `js` runs as index.js of a CommonJS project
                              (what `npm init -y` makes) with `syncengine` in its node_modules.
  ... server                  a counter server: run with PORT=0, it must print
                              `listening on ws://HOST:PORT/PATH`; a WebSocket client then checks
                              initial_state (with "version"), sends {"type":"increment","amount":5}
                              and waits for the counter 5 higher at version + 1; then SIGINT.
                              The program is started a second time in the same directory and
                              must come back with the counter it had (the state persists).
  ... fragment                a piece of a program: Python and JS are only checked for syntax.
  ```sh / ```bash             checked with `bash -n`.
  ```json                     must parse (the whole block, or each line of it).
  ``` / ```text               shown, not checked.
  ... xfail=WORD              (test fixtures only) the block must FAIL with WORD in its output:
                              tests/docs/broken.md proves that this script catches broken code.

Any other language is an error, so that a new kind of block cannot go untested by accident.

  check_snippets.py --lang c,sh,json [--cc CC --cflags F --libs L] [--pythonpath DIR]
                    [--node NODE --node-package DIR] --workdir DIR FILE.md...
"""
import argparse
import base64
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

LANGS = {"c": "c", "python": "python", "py": "python", "js": "js", "javascript": "js",
         "sh": "sh", "bash": "sh", "shell": "sh", "json": "json", "": None, "text": None}
MARKS = {"fragment", "server"}
RUN_TIMEOUT = 120          # seconds a complete program may take (the machine may be loaded)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LISTEN_TIMEOUT = 60        # seconds a server may take to print its `listening on` line
FRAME_TIMEOUT = 20


class Failure(Exception):
    pass


def blocks(path):
    """(line number, language, marks, xfail word, code) of each fenced block of a Markdown file."""
    lines = open(path, encoding="utf-8").read().split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"^\s*(```+|~~~+)\s*(.*)$", lines[i])
        if not m:
            i += 1
            continue
        fence, info = m.group(1), m.group(2).split()
        start = i + 1
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1
        lang = info[0].lower() if info else ""
        marks = set()
        xfail = None
        for word in info[1:]:
            if word.startswith("xfail="):
                xfail = word[len("xfail="):]
            else:
                marks.add(word)
        yield start, lang, marks, xfail, "\n".join(body) + "\n"


def run(cmd, cwd, env=None, timeout=RUN_TIMEOUT):
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout, text=True, errors="replace")
    except subprocess.TimeoutExpired as e:
        out = e.stdout if isinstance(e.stdout, str) else (e.stdout or b"").decode(errors="replace")
        raise Failure(f"{shlex.join(cmd)}: still running after {timeout} s\n{out}")
    if p.returncode != 0:
        raise Failure(f"{shlex.join(cmd)}: exit status {p.returncode}\n{p.stdout}")
    return p.stdout


# ---- a minimal WebSocket client (RFC 6455), so this script needs nothing beyond Python ----------

class Ws:
    def __init__(self, port, path):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=FRAME_TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise Failure(f"WebSocket upgrade of {path} refused: {head.decode(errors='replace')}")

    def _recv(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise Failure("the server closed the connection")
        self.buf += chunk

    def _take(self, n):
        while len(self.buf) < n:
            self._recv()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def send(self, text):
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def recv_json(self, deadline):
        """The next text frame as JSON (other frames are skipped)."""
        while True:
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                b0, b1 = self._take(2)
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack("!H", self._take(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", self._take(8))[0]
                payload = self._take(n)
            except socket.timeout:
                raise Failure("no frame from the server in time")
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise Failure(f"the server closed the WebSocket: {payload!r}")
            if opcode == 0x1:
                return json.loads(payload)

    def close(self):
        self.sock.close()


def check_counter_server(cmd, cwd, env, expect_counter=None):
    """Starts a counter server snippet, exercises it over a real socket, stops it with SIGINT.
    Returns the counter it ended with."""
    env = dict(env, PORT="0")
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    out = []
    try:
        deadline = time.monotonic() + LISTEN_TIMEOUT
        match = None
        while match is None:
            if time.monotonic() > deadline:
                raise Failure(f"no `listening on ws://HOST:PORT/PATH` line within {LISTEN_TIMEOUT} s")
            if select.select([proc.stdout], [], [], 0.1)[0]:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if chunk:
                    out.append(chunk.decode(errors="replace"))
                    match = re.search(r"listening on (?:ws|http)://[^\s:/]+:(\d+)(/\S*)?", "".join(out))
                    continue
            if proc.poll() is not None:
                raise Failure(f"exited with status {proc.returncode} before listening")
        port, path = int(match.group(1)), match.group(2) or "/"
        if port == 0:
            raise Failure("printed port 0: print the port the server really listens on")
        ws = Ws(port, path)
        deadline = time.monotonic() + FRAME_TIMEOUT
        first = ws.recv_json(deadline)
        if first.get("type") != "initial_state" or "data" not in first or "version" not in first:
            raise Failure(f"first frame is not initial_state with data and version: {first}")
        counter, version = first["data"]["counter"], first["version"]
        if expect_counter is not None and counter != expect_counter:
            raise Failure(f"after a restart the counter is {counter}, not {expect_counter}")
        ws.send(json.dumps({"type": "increment", "amount": 5}))
        while True:
            frame = ws.recv_json(deadline)
            if frame.get("type") == "state_update" and frame["data"].get("counter") == counter + 5:
                if frame.get("version") != version + 1:
                    raise Failure(f"state_update after one change has version {frame.get('version')}, "
                                  f"not {version + 1}")
                break
        ws.close()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise Failure("still running 30 s after SIGINT")
        if proc.returncode not in (0, -signal.SIGINT):
            raise Failure(f"exit status {proc.returncode} after SIGINT")
        return counter + 5
    except Failure as e:
        raise Failure(f"{e}\n--- output of {shlex.join(cmd)}:\n{''.join(out)}{_rest(proc)}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _rest(proc):
    """What the process printed after what was read already (it is killed first if running)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.stdout.read().decode(errors="replace")


def run_program(cmd, cwd, env, marks):
    if "server" in marks:
        counter = check_counter_server(cmd, cwd, env)
        check_counter_server(cmd, cwd, env, expect_counter=counter)
    else:
        run(cmd, cwd, env)


# ---- one block ------------------------------------------------------------------------------------

def check_block(args, lang, marks, code, where):
    os.makedirs(where)
    env = dict(os.environ)
    env.pop("PORT", None)
    if lang == "sh":
        path = os.path.join(where, "snippet.sh")
        open(path, "w").write(code)
        run(["bash", "-n", path], where)
    elif lang == "json":
        try:
            json.loads(code)
        except ValueError:
            for line in filter(str.strip, code.split("\n")):
                try:
                    json.loads(line)
                except ValueError as e:
                    raise Failure(f"not JSON: {line}: {e}")
    elif lang == "c":
        if "fragment" in marks:
            return
        src = os.path.join(where, "snippet.c")
        open(src, "w").write(code)
        exe = os.path.join(where, "snippet")
        run([args.cc, "-std=c11", "-Wall", "-Wextra", "-Werror", *shlex.split(args.cflags), src,
             "-o", exe, *shlex.split(args.libs)], where)
        run_program([exe], where, env, marks)
    elif lang == "python":
        if "fragment" in marks:
            try:
                compile(code, "snippet.py", "exec")
            except SyntaxError as e:
                raise Failure(f"SyntaxError: {e}")
            return
        src = os.path.join(where, "snippet.py")
        open(src, "w").write(code)
        env["PYTHONPATH"] = args.pythonpath
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        run_program([sys.executable, "snippet.py"], where, env, marks)
    elif lang == "js":
        if "fragment" in marks:
            src = os.path.join(where, "snippet.mjs")
            open(src, "w").write(code)
            run([args.node, "--check", src], where)
            return
        # What `npm init -y` and `npm install <libsync>/bindings/node` leave: a CommonJS project.
        json.dump({"name": "snippet", "version": "1.0.0", "main": "index.js", "type": "commonjs"},
                  open(os.path.join(where, "package.json"), "w"))
        os.makedirs(os.path.join(where, "node_modules"))
        os.symlink(args.node_package, os.path.join(where, "node_modules", "syncengine"))
        open(os.path.join(where, "index.js"), "w").write(code)
        run_program([args.node, "index.js"], where, env, marks)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lang", required=True, help="comma-separated: c,python,js,sh,json")
    ap.add_argument("--cc", default="cc")
    ap.add_argument("--cflags", default="")
    ap.add_argument("--libs", default="")
    ap.add_argument("--pythonpath", default="")
    ap.add_argument("--node", default="node")
    ap.add_argument("--node-package", default="")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--fixture", action="store_true", help="every block must be marked xfail=WORD")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    wanted = set(args.lang.split(","))
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)

    failures, checked = [], 0
    for md in args.files:
        for line, word, marks, xfail, code in blocks(md):
            label = f"{os.path.relpath(md, ROOT)}:{line} ```{word}{''.join(' ' + m for m in sorted(marks))}"
            where = os.path.join(args.workdir, f"{os.path.relpath(md, ROOT).replace(os.sep, '_')}-{line}")
            error = None
            if word not in LANGS:
                error = f"no rule to check ```{word} blocks (see {sys.argv[0]})"
            elif marks - MARKS:
                error = f"unknown marks {sorted(marks - MARKS)}"
            elif LANGS[word] not in wanted:
                continue
            else:
                try:
                    check_block(args, LANGS[word], marks, code, where)
                except Failure as e:
                    error = str(e)
            checked += 1
            if (xfail is None) == args.fixture:
                failures.append(f"{label}: " + ("a fixture block needs xfail=WORD" if args.fixture
                                                 else "xfail= belongs in test fixtures only"))
                print(f"FAIL  {label}")
            elif xfail is None and error is None:
                print(f"ok    {label}")
            elif xfail is None:
                failures.append(f"{label}: {error}")
                print(f"FAIL  {label}")
            elif error is None:
                failures.append(f"{label}: passed, but it is marked xfail={xfail}: the check misses it")
                print(f"FAIL  {label} (expected to fail)")
            elif xfail not in error:
                failures.append(f"{label}: failed without `{xfail}` in its output:\n{error}")
                print(f"FAIL  {label} (failed for another reason)")
            else:
                print(f"ok    {label} (fails as expected: {xfail})")
    for f in failures:
        print(f"\n{f}", file=sys.stderr)
    if checked == 0:
        print("no block checked: wrong --lang or files?", file=sys.stderr)
        return 1
    print(f"{checked} blocks checked, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

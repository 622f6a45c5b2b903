"""Starts and stops the real counter_server binary for the end-to-end tests.

The binary comes from $LIBSYNC_COUNTER_SERVER (ctest sets it to the built target). Each server gets
--port 0 and its own data directory; the test reads the port from the "listening on" line, and the
server is ended by its PID only.
"""
import os
import re
import selectors
import signal
import subprocess
import time

# With a token the printed URL carries it ("/?token=..."), so it can be opened as it is.
LISTENING = re.compile(r"^listening on (https?)://([^:/\s]+):(\d+)(/\S*)?$")


def binary():
    path = os.environ.get("LIBSYNC_COUNTER_SERVER")
    if not path:
        raise RuntimeError("LIBSYNC_COUNTER_SERVER is not set: point it at the built counter_server")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"LIBSYNC_COUNTER_SERVER={path} is not an executable file")
    return path


def env_for_listen_failure():
    """The environment for a counter_server that is meant to fail to listen: under
    LeakSanitizer, libwebsockets' own leak on that path (see lsan-libwebsockets.supp) is
    suppressed so the exit status tells about libsync alone."""
    supp = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lsan-libwebsockets.supp")
    env = dict(os.environ)
    env["LSAN_OPTIONS"] = ":".join(filter(None, [env.get("LSAN_OPTIONS"), f"suppressions={supp}"]))
    return env


class CounterServer:
    def __init__(self, data_dir, log_path, args=(), env=None):
        self.env = env
        self.data_dir = str(data_dir)
        self.log_path = str(log_path)
        self.args = list(args)
        self.proc = None
        self.scheme = self.host = None
        self.port = None

    def start(self, timeout=20.0):
        """Starts the process and waits (bounded) for its "listening on" line."""
        argv = [binary(), "--port", "0", "--data-dir", self.data_dir, "--heartbeat-ms", "0"]
        argv += self.args  # later flags win, so a test may override the defaults above
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, env=self.env)
        line = self._read_line(timeout)
        match = LISTENING.match(line)
        if not match:
            self.kill()
            raise AssertionError(f"unexpected first line from counter_server: {line!r}\n{self.stderr()}")
        self.scheme, self.host, self.port = match.group(1), match.group(2), int(match.group(3))
        self.url = line[len("listening on "):]
        return self

    def _read_line(self, timeout):
        deadline = time.monotonic() + timeout
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.kill()
                    raise AssertionError(f"counter_server printed no 'listening on' line within {timeout} s\n{self.stderr()}")
                if sel.select(left):
                    chunk = os.read(self.proc.stdout.fileno(), 4096)
                    if not chunk:
                        code = self.proc.wait(5)
                        raise AssertionError(f"counter_server exited ({code}) before listening\n{self.stderr()}")
                    buf += chunk
        return buf.split(b"\n", 1)[0].decode()

    @property
    def http(self):
        return f"{self.scheme}://{self.host}:{self.port}"

    def ws(self, path="/"):
        return f"{'wss' if self.scheme == 'https' else 'ws'}://{self.host}:{self.port}{path}"

    def stderr(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-4000:]
        except OSError:
            return ""

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Graceful stop by signal; returns the exit status (or raises when it hangs)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout=15.0):
        """Waits (bounded) for a stop already under way; returns the exit status."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"counter_server did not end within {timeout} s\n{self.stderr()}")
        self._close_pipes()
        return code

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_pipes()

    def _close_pipes(self):
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
        if getattr(self, "log", None):
            self.log.close()

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS for counter_server")

    def sanitized(self):
        """True for a build with AddressSanitizer, whose quarantine makes RSS meaningless."""
        with open(binary(), "rb") as f:
            return b"__asan_init" in f.read()

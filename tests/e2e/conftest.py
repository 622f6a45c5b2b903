"""Fixtures of the end-to-end suite: a fresh counter_server per test, stopped and checked after."""
import signal

import pytest

from server import CounterServer


class ServerFactory:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.servers = []

    def __call__(self, *args, data_dir=None, start=True, env=None):
        """A counter_server on a fresh data directory (or the given one, for restarts)."""
        index = len(self.servers)
        data_dir = data_dir or self.tmp_path / f"data{index}"
        srv = CounterServer(data_dir, self.tmp_path / f"server{index}.log", args, env)
        self.servers.append(srv)
        return srv.start() if start else srv

    def finish(self):
        """Every server still running must stop cleanly on SIGTERM and exit 0: a crash, a hang
        or a sanitizer report at exit fails the test that ran it."""
        problems = []
        for srv in self.servers:
            if srv.running():
                code = srv.stop(signal.SIGTERM)
                if code != 0:
                    problems.append(f"counter_server exited with {code}\n{srv.stderr()}")
            else:
                srv.kill()
        if problems:
            pytest.fail("\n".join(problems))


@pytest.fixture
def servers(tmp_path):
    factory = ServerFactory(tmp_path)
    yield factory
    factory.finish()


@pytest.fixture
def server(servers):
    return servers()


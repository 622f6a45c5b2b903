#!/usr/bin/env python3
"""Runs the load generator against one server and checks the outcome.

usage: run_case.py --loadgen BIN --expect ok|SUBSTRING [--field NAME<OP>VALUE ...]
                   --args "LOADGEN ARGS" --server CMD...

The server command gets `--port 0` appended and must print `listening on http://HOST:PORT`.
`{tmp}` in it becomes a fresh temporary directory. --expect ok wants exit 0 and "ok":true;
anything else wants exit 1, "ok":false and that text in the reported error. Each --field
compares a number in the report: NAME==VALUE, NAME<VALUE or NAME>VALUE (a.b reaches inside).
"""
import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def wait_for_port(proc, deadline):
    pattern = re.compile(r"listening on (?:https?|wss?)://([^:/\s]+):(\d+)")
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode} before listening")
            continue
        m = pattern.search(line)
        if m:
            return m.group(1), m.group(2)
    raise RuntimeError("server did not print its port in time")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--loadgen", required=True)
    ap.add_argument("--expect", required=True)
    ap.add_argument("--args", default="")
    ap.add_argument("--field", action="append", default=[])
    # -p PORT,PORT,... (the server's port that many times): the path of several cluster nodes
    ap.add_argument("--port-times", type=int, default=1)
    ap.add_argument("--server", nargs=argparse.REMAINDER, required=True)
    opt = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="loadgen-case-") as tmp:
        cmd = [part.replace("{tmp}", tmp) for part in opt.server] + ["--port", "0"]
        if shutil.which("stdbuf"):
            cmd = ["stdbuf", "-oL"] + cmd  # a C server's stdio must not hold back its port line
        server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
        try:
            host, port = wait_for_port(server, time.monotonic() + 20)
            run = subprocess.run(
                [opt.loadgen, "-H", host, "-p", ",".join([port] * opt.port_times),
                 "--server-pid", str(server.pid)]
                + shlex.split(opt.args),
                capture_output=True, text=True, timeout=45)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

    sys.stdout.write(run.stdout)
    sys.stderr.write(run.stderr)
    try:
        report = json.loads(run.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        print(f"FAIL: no JSON report (exit {run.returncode})")
        return 1
    if opt.expect == "ok":
        good = run.returncode == 0 and report.get("ok") is True
        # every increment reaches the last client no sooner than the first one, so each
        # percentile of the all-clients latency is at least the same one of the first-observer's
        first, every = report.get("latency_us") or {}, report.get("all_clients_latency_us") or {}
        # a resume storm sends no increments it could time
        for q in ("p50", "p90", "p99", "max") if report.get("mode") == "run" else ():
            if not (isinstance(every.get(q), int) and every[q] >= first.get(q, 0) > 0):
                print(f"FAIL: all_clients_latency_us {q} = {every.get(q)} "
                      f"against latency_us {q} = {first.get(q)}")
                good = False
    else:
        good = (run.returncode == 1 and report.get("ok") is False
                and opt.expect in (report.get("error") or ""))
    for spec in opt.field:
        m = re.fullmatch(r"([\w.]+)(==|<|>)(-?[\d.]+)", spec)
        if not m:
            print(f"FAIL: bad --field {spec!r}")
            return 1
        value = report
        for part in m.group(1).split("."):
            value = value.get(part) if isinstance(value, dict) else None
        want = float(m.group(3))
        ok = isinstance(value, (int, float)) and {
            "==": value == want, "<": value < want, ">": value > want}[m.group(2)]
        if not ok:
            print(f"FAIL: {m.group(1)} = {value!r}, wanted {m.group(2)} {m.group(3)}")
            good = False
    print(("PASS" if good else "FAIL") + f": exit {run.returncode}, expected {opt.expect!r}")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())

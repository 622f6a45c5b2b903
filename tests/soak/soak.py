#!/usr/bin/env python3
"""Soak test of the demo server (examples/c/counter_server) under mixed load.

While the time runs, against one server with a fresh data directory:
  - well-behaved clients: rounds of bench/loadgen (N clients, S senders of increments); each round
    must end with every client on exactly the counter it expects
  - churn: clients that join, read their initial state and leave, over and over
  - never-readers: connections with a tiny receive buffer that never read a byte
  - garbage: bad JSON, binary frames, invalid UTF-8, unknown types, deep nesting, oversize
    messages, bytes that break the WebSocket framing
  - one flooder: a single connection sending pongs and failing increments as fast as it can
  - handler errors: increments with non-numeric amounts (the handler refuses them)
The server's RSS is sampled every 2 s. At the end one more loadgen round of 50 clients must
converge, a new client must see counter == the number of accepted increments (only loadgen sends
valid increments), and the server must exit 0 on SIGTERM.

Prints a summary and writes every figure as JSON (--json-out). Exit 0 when everything held.
Standard library only (plus tests/e2e/wsraw.py, the raw WebSocket client of the e2e suite).
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import wsraw  # noqa: E402


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.values = {}

    def add(self, key, n=1):
        with self.lock:
            self.values[key] = self.values.get(key, 0) + n


def start_server(binary, data_dir, heartbeat_ms):
    proc = subprocess.Popen(
        [binary, "--port", "0", "--data-dir", data_dir, "--heartbeat-ms", str(heartbeat_ms)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"listening on https?://\S+:(\d+)", line)
        if m:
            return proc, int(m.group(1))
    proc.kill()
    proc.wait()
    raise RuntimeError("counter_server did not print its port")


def drain_stream(stream, counts, key, tail):
    """Counts the server's log lines (one per refused message): they must not fill the disk."""
    for line in stream:
        counts.add(key)
        tail.append(line.rstrip())
        del tail[:-20]


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def sampler(pid, stop, samples, t0):
    while not stop.wait(2.0):
        try:
            samples.append((time.monotonic() - t0, rss_kb(pid)))
        except OSError:
            return


def churn(port, stop, counts):
    while not stop.is_set():
        try:
            ws = wsraw.connect(port, timeout=5)
            opcode, payload = ws.recv_frame(timeout=5)
            if b'"initial_state"' not in payload:
                counts.add("churn_bad_initial")
            ws.close()
            counts.add("churn_joins")
        except (OSError, EOFError, TimeoutError, ConnectionError):
            counts.add("churn_errors")
            time.sleep(0.2)
        time.sleep(0.02)


def never_readers(port, stop, counts):
    """Holds a few connections that never read; replaces them every 10 s."""
    held = []
    while not stop.is_set():
        while len(held) < 5 and not stop.is_set():
            try:
                held.append((time.monotonic(), wsraw.connect(port, timeout=5, rcvbuf=4096)))
                counts.add("never_reader_joins")
            except (OSError, EOFError, TimeoutError, ConnectionError):
                counts.add("never_reader_errors")
                break
        now = time.monotonic()
        for item in [h for h in held if now - h[0] > 10]:
            item[1].close()
            held.remove(item)
        stop.wait(0.5)
    for _, ws in held:
        ws.close()


def garbage_messages():
    deep = "[" * 5000 + "]" * 5000
    return [
        ("text", b"{not json"),
        ("text", b"\xff\xfe\xfd"),
        ("binary", b"\x00\x01\x02"),
        ("text", b'{"type":"no_such_type"}'),
        ("text", b'{"type":"increment","amount":"abc"}'),
        ("text", b'{"type":"increment","amount":null}'),
        ("text", b'{"type":"increment"}'),
        ("text", b'["type","increment"]'),
        ("text", deep.encode()),
        ("text", b'{"type":"increment","amount":1e999}'),
        ("raw", b"\x81\xff garbage that breaks the framing"),
        ("big", b'{"type":"increment","pad":"' + b"x" * (1100 * 1024) + b'"}'),
    ]


def drain(ws, bufsize):
    """Reads what has arrived on `ws` without waiting for more."""
    ws.sock.setblocking(False)
    try:
        while ws.sock.recv(bufsize):
            pass
    except (BlockingIOError, InterruptedError):
        pass
    ws.sock.setblocking(True)


def reconnecting(port, stop, counts, name, step):
    """Runs step(ws) over one connection until `stop`. A new connection (counted as <name>_joins)
    replaces one that step closed (it returns False) or that failed (<name>_reconnects)."""
    ws = None
    while not stop.is_set():
        try:
            if ws is None:
                ws = wsraw.connect(port, timeout=5)
                counts.add(name + "_joins")
            if step(ws) is False:
                ws = None
        except (OSError, EOFError, TimeoutError, ConnectionError):
            counts.add(name + "_reconnects")
            if ws:
                ws.close()
            ws = None
            time.sleep(0.05)
    if ws:
        ws.close()


def garbage(port, stop, counts):
    msgs = garbage_messages()
    rng = random.Random(7)

    def step(ws):
        kind, payload = rng.choice(msgs)
        if kind == "big" and rng.random() > 0.05:
            return True
        if kind == "text":
            ws.send_text(payload)
        elif kind == "binary":
            ws.send_frame(0x2, payload)
        elif kind == "raw":
            ws.sock.sendall(payload)
        else:
            ws.send_text(payload)
        counts.add("garbage_sent")
        kept = kind not in ("raw", "binary", "big")
        if kept:
            drain(ws, 65536)
        else:
            ws.wait_close(timeout=5)  # the server closes these: 1002/1003/1009
            ws.close()
        time.sleep(0.005)
        return kept

    reconnecting(port, stop, counts, "garbage", step)


def flooder(port, stop, counts):
    """One connection that sends as fast as it can (pongs and refused increments) and drains."""
    batch = []
    for i in range(50):
        batch.append(b"pong" if i % 2 else b'{"type":"increment","amount":"flood"}')

    def step(ws):
        for payload in batch:
            ws.send_text(payload)
        counts.add("flood_sent", len(batch))
        drain(ws, 262144)

    reconnecting(port, stop, counts, "flooder", step)


def loadgen_round(loadgen, port, pid, clients, senders, window, messages):
    cmd = [loadgen, "-p", str(port), "-n", str(clients), "-s", str(senders), "-w", str(window),
           "-m", str(messages), "--timeout-ms", "120000", "--server-pid", str(pid)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "{}"
    try:
        result = json.loads(line)
    except ValueError:
        result = {"ok": False, "error": line}
    result["exit"] = out.returncode
    if out.returncode != 0:
        result.setdefault("error", out.stderr.strip()[-500:])
    return result


def slope_kb_per_min(points):
    if len(points) < 3:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(r for _, r in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mx) * (r - my) for t, r in points) / var * 60.0


def read_counter(port):
    ws = wsraw.connect(port, timeout=10)
    try:
        _, payload = ws.recv_frame(timeout=10)
    finally:
        ws.close()
    frame = json.loads(payload)
    return frame["data"]["counter"], frame.get("version")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--server", required=True, help="path of examples/c/counter_server")
    ap.add_argument("--loadgen", required=True, help="path of bench/libsync-loadgen")
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds left out of the RSS slope (default: a fifth, at most 120)")
    ap.add_argument("--clients", type=int, default=20, help="loadgen clients per round")
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--messages", type=int, default=2000, help="increments per loadgen round")
    ap.add_argument("--max-growth-kb", type=float, default=None,
                    help="fail when RSS grows more than this after warm-up (default: 4096 KiB "
                         "or 10%% of the RSS at the end of warm-up, whichever is larger)")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    warmup = args.warmup if args.warmup is not None else min(120.0, args.seconds / 5)

    data_dir = tempfile.mkdtemp(prefix="libsync-soak-")
    proc, port = start_server(args.server, data_dir, heartbeat_ms=1000)
    counts = Counts()
    log_tail = []
    threading.Thread(target=drain_stream, args=(proc.stderr, counts, "server_log_lines", log_tail),
                     daemon=True).start()
    threading.Thread(target=drain_stream, args=(proc.stdout, counts, "server_stdout_lines", []),
                     daemon=True).start()
    base, _ = read_counter(port)

    t0 = time.monotonic()
    stop = threading.Event()
    samples = [(0.0, rss_kb(proc.pid))]
    workers = [threading.Thread(target=sampler, args=(proc.pid, stop, samples, t0))]
    for fn in (churn, churn, never_readers, garbage, flooder):
        workers.append(threading.Thread(target=fn, args=(port, stop, counts)))
    for w in workers:
        w.start()

    failures = []
    rounds = []
    accepted = 0
    converged = 0
    try:
        while time.monotonic() - t0 < args.seconds:
            r = loadgen_round(args.loadgen, port, proc.pid, args.clients, args.senders, 16,
                              args.messages)
            rounds.append(r)
            if r.get("ok") is True and r["exit"] == 0:
                accepted += args.messages
                converged += int(r.get("converged_clients", 0))
            else:
                failures.append(f"loadgen round {len(rounds)} failed: {r.get('error')}")
                break
            if proc.poll() is not None:
                break
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
    duration = time.monotonic() - t0

    if proc.poll() is not None:
        failures.append(f"the server died (exit {proc.returncode}) during the soak")
    else:
        # the well-behaved end: 50 fresh clients converge, and the counter counts every increment
        final = loadgen_round(args.loadgen, port, proc.pid, 50, 1, 1, 1)
        rounds.append(final)
        if final.get("ok") is True and final["exit"] == 0:
            accepted += 1
            converged += int(final.get("converged_clients", 0))
        else:
            failures.append(f"final round failed: {final.get('error')}")
        counter, version = read_counter(port)
        if counter != base + accepted:
            failures.append(f"lost or extra updates: counter {counter}, expected {base + accepted}")
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
            failures.append("the server did not stop within 30 s of SIGTERM")
        if code != 0:
            failures.append(f"the server exited {code} on SIGTERM")

    shutil.rmtree(data_dir, ignore_errors=True)
    post = [(t, r) for t, r in samples if t >= warmup and r > 0]
    slope = slope_kb_per_min(post)
    warm_rss = post[0][1] if post else samples[-1][1]
    growth = slope * (post[-1][0] - post[0][0]) / 60.0 if len(post) >= 2 else 0.0
    limit = args.max_growth_kb if args.max_growth_kb is not None else max(4096.0, warm_rss * 0.10)
    if growth > limit:
        failures.append(f"RSS grew {growth:.0f} KiB after warm-up (limit {limit:.0f} KiB)")

    report = {
        "ok": not failures,
        "failures": failures,
        "duration_s": round(duration, 1),
        "warmup_s": warmup,
        "loadgen_rounds": len(rounds),
        "accepted_increments": accepted,
        "final_counter": base + accepted if not failures else None,
        "converged_clients": converged,
        "rss_kb_start": samples[0][1],
        "rss_kb_after_warmup": warm_rss,
        "rss_kb_end": samples[-1][1],
        "rss_kb_max": max(r for _, r in samples),
        "rss_slope_kb_per_min": round(slope, 2),
        "rss_growth_after_warmup_kb": round(growth, 1),
        "rss_samples": samples,
        "chaos": dict(sorted(counts.values.items())),
        "server_log_tail": log_tail[-5:],
    }
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=1)
    chaos = ", ".join(f"{k}={v}" for k, v in report["chaos"].items())
    print(f"soak: {'OK' if not failures else 'FAILED'} after {duration:.0f} s; "
          f"{len(rounds)} loadgen rounds, {converged} well-behaved clients converged, "
          f"{accepted} increments accepted, final counter {base + accepted if not failures else '?'}; "
          f"RSS {samples[0][1]} KiB at start, {warm_rss} KiB after {warmup:.0f} s warm-up, "
          f"{samples[-1][1]} KiB at the end, slope {slope:+.1f} KiB/min after warm-up")
    print(f"soak: chaos: {chaos}")
    for f in failures:
        print(f"soak: FAIL: {f}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())

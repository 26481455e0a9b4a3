#!/usr/bin/env python3
"""What `GET /live` costs (issue #28): the demo's memory per open stream, and the Redis commands
an end costs with N streams open against none.

Starts a Redis 7 and one axum-demo (`--demo`, a release build: `cargo build --release -p
axum-demo`), logs one user in from D devices, opens N streams spread over them, and measures:
- the demo's resident memory (VmRSS) before and after opening them: bytes per stream;
- `INFO commandstats` around a logout-all of that user, and around the same logout-all of a
  user with no stream open: the commands the streams add to an end (with lifecycle events on,
  none is expected: one follower per process reads the events);
- the commands per second the follower costs while N streams wait (its event reads and its
  5-second sweep), and the time from the logout-all's answer until the last stream got `ended`.

Usage: scripts/live-cost.py --demo target/release/axum-demo [--streams 1000] [--devices 10]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


def post(port, path, body=None, cookie=None):
    data = json.dumps(body).encode() if body is not None else b""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\nConnection: close\r\n"
    if cookie:
        head += f"Cookie: {cookie}\r\n"
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(head.encode() + b"\r\n" + data)
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    text = out.decode(errors="replace")
    status = int(text.split(" ", 2)[1])
    cookie_out = None
    for line in text.split("\r\n"):
        if line.lower().startswith("set-cookie:") and "tessera" in line and "Max-Age=0" not in line:
            cookie_out = line.split(":", 1)[1].strip().split(";", 1)[0]
    return status, cookie_out


def open_stream(port, cookie):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET /live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".encode())
    buf = b""
    while b"event: heartbeat" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit(f"stream closed early: {buf!r}")
        buf += chunk
    return s


def stats(port):
    out = {}
    for k, v in harness.info(port, "commandstats").items():
        if k.startswith("cmdstat_"):
            out[k[8:]] = int(v.split("calls=")[1].split(",")[0])
    return out


def diff(a, b):
    return {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b) if b.get(k, 0) != a.get(k, 0)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo", required=True)
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--devices", type=int, default=10)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="live-cost-")
    ps = harness.Procs(tmp)
    rport = harness.free_port()
    ps.redis(rport)
    port = harness.free_port()
    env = dict(os.environ, REDIS_URL=f"redis://127.0.0.1:{rport}", PORT=str(port),
               TESSERA_SECRET="ab" * 32, COOKIE_SECURE="0", RUST_LOG="warn")
    demo = subprocess.Popen([a.demo], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        harness.wait("the demo", lambda: post(port, "/logout")[0] == 204)
        cookies = [post(port, "/login", {"user_id": "u"})[1] for _ in range(a.devices)]
        _, other = post(port, "/login", {"user_id": "w"})
        # Warm up: one stream opened and closed (the follower and its buffers exist).
        open_stream(port, other).close()
        time.sleep(1)
        before = rss_kb(demo.pid)
        streams = [open_stream(port, cookies[i % a.devices]) for i in range(a.streams)]
        time.sleep(1)
        after = rss_kb(demo.pid)
        per = (after - before) * 1024 / a.streams
        s0 = stats(rport)
        time.sleep(10)
        s1 = stats(rport)
        idle = diff(s0, s1)
        # The end with N streams open, and one with none (user w).
        done = []

        def wait_end(s):
            buf = b""
            while b"event: ended" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
            done.append(time.monotonic())

        threads = [threading.Thread(target=wait_end, args=(s,)) for s in streams]
        for t in threads:
            t.start()
        s2 = stats(rport)
        status, _ = post(port, "/logout-all", cookie=cookies[0])
        answered = time.monotonic()
        for t in threads:
            t.join(10)
        s3 = stats(rport)
        with_streams = diff(s2, s3)
        s4 = stats(rport)
        post(port, "/logout-all", cookie=other)
        time.sleep(0.5)
        s5 = stats(rport)
        without = diff(s4, s5)
        lat = sorted(max(0.0, d - answered) for d in done)
        print(json.dumps({
            "streams": a.streams,
            "devices": a.devices,
            "rss_kb_before": before,
            "rss_kb_after": after,
            "bytes_per_stream": round(per),
            "idle_commands_per_s_with_streams_open": {k: round(v / 10, 1) for k, v in idle.items()},
            "logout_all_status": status,
            "ended_received": len(done),
            "ms_after_answer_p50": round(lat[len(lat) // 2] * 1000, 1) if lat else None,
            "ms_after_answer_max": round(lat[-1] * 1000, 1) if lat else None,
            "commands_logout_all_with_streams": with_streams,
            "commands_logout_all_without": without,
        }, indent=2))
    finally:
        demo.kill()
        ps.stop_all()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The failover's blast radius: which requests get a 503 when one primary dies, and for how long.

Starts a Redis topology on loopback ports (a 3x2 Cluster, or a primary + replica + 3 Sentinels),
one demo process on it, logs in N sessions (user ids u0..uN-1), finds which primary holds each
session (HGET __u on every primary's session keys), then sends `GET /me` round-robin over the
sessions from C keep-alive connections for SECS seconds and SIGKILLs one primary at KILL_AT s.
Every request is recorded (send time, session, status, Retry-After); the report splits them
into sessions on the killed primary's slots and sessions elsewhere, with the 503 window of each.

A measurement, not a test (nothing is asserted); stdlib only. Needs the servers of
`scripts/install-servers.sh` (REDIS_SERVER_BIN, REDIS_CLI_BIN from .servers/env.sh) and a built
demo binary:

    cargo build --release -p axum-demo && . .servers/env.sh &&
    python3 scripts/failover-blast.py --topology cluster --demo target/release/axum-demo

Requests loop for a bounded time against 127.0.0.1 only, and everything it starts is stopped.
"""

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
from harness import Procs, cli, cluster, free_port, http, sentinel, wait  # noqa: E402


async def login_all(port, n):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    cookies = []
    for i in range(n):
        status, h, _ = await http(r, w, "POST", "/login", body={"user_id": f"u{i}"})
        assert status == 200, f"login {i}: {status}"
        cookies.append(h["set-cookie"][0].split(";")[0])
    w.close()
    return cookies


async def load(port, cookies, conns, secs, kill_at, kill, switched):
    t0 = time.monotonic()
    rec = []
    nxt = [0]
    killed = [None]
    switch = [None]

    async def worker():
        r, w = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() - t0 < secs:
            i = nxt[0] % len(cookies)
            nxt[0] += 1
            t = time.monotonic() - t0
            try:
                status, h, _ = await http(r, w, "GET", "/me", cookies[i])
            except (ConnectionError, asyncio.IncompleteReadError):
                status, h = -1, {}
                w.close()
                r, w = await asyncio.open_connection("127.0.0.1", port)
            rec.append((t, time.monotonic() - t0, i, status, "retry-after" in h))
        w.close()

    async def killer():
        await asyncio.sleep(kill_at)
        killed[0] = time.monotonic() - t0
        kill()
        # The failover as the servers see it, polled every 50 ms.
        while time.monotonic() - t0 < secs and not await asyncio.to_thread(switched):
            await asyncio.sleep(0.05)
        if time.monotonic() - t0 < secs:
            switch[0] = time.monotonic() - t0

    await asyncio.gather(killer(), *[worker() for _ in range(conns)])
    return rec, killed[0], switch[0]


def report(rec, killed, on_killed, secs, switch):
    def stats(name, rows):
        bad = [r for r in rows if r[3] != 200]
        after = [r for r in rows if r[0] >= killed]
        out = f"| {name} | {len(rows):,} | {len(bad):,} ({100 * len(bad) / max(1, len(rows)):.1f}%) |"
        if bad:
            first = min(r[0] for r in bad) - killed
            last = max(r[1] for r in bad) - killed
            ra = sum(1 for r in bad if r[4])
            codes = sorted({r[3] for r in bad})
            out += f" {first:+.2f} s .. {last:+.2f} s | {codes} | {ra:,} |"
        else:
            out += " none | | |"
        out += f" {len(after):,} |"
        return out

    a = [r for r in rec if r[2] in on_killed]
    b = [r for r in rec if r[2] not in on_killed]
    print(f"\n{len(rec):,} requests in {secs} s; primary killed at {killed:.2f} s\n")
    print("| sessions | requests | not 200 | window (from the kill) | codes | with Retry-After | requests after the kill |")
    print("|---|---:|---:|---|---|---:|---:|")
    print(stats(f"on the killed primary ({len(on_killed)})", a))
    print(stats("on the other primaries", b))
    print(stats("all", rec))
    if switch is not None:
        bad = [r for r in a if r[3] != 200]
        last = max((r[1] for r in bad), default=killed)
        print(f"\nthe servers' failover: +{switch - killed:.2f} s after the kill; the killed primary's "
              f"sessions served again +{last - killed:.2f} s after it: {last - switch:+.2f} s after the failover")
    else:
        print("\nthe servers did not fail over within the run")
    # 503s per second after the kill, per group
    print("\nper second after the kill: (killed primary's sessions: 200/other | others: 200/other)")
    for s in range(int(killed) - 1, int(secs)):
        def cnt(rows, ok):
            return sum(1 for r in rows if s <= r[0] < s + 1 and (r[3] == 200) == ok)
        print(f"  {s:3d}s  {cnt(a, True):6d}/{cnt(a, False):<6d} | {cnt(b, True):6d}/{cnt(b, False):<6d}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--topology", choices=["cluster", "sentinel"], default="cluster")
    ap.add_argument("--demo", default="target/release/axum-demo")
    ap.add_argument("--sessions", type=int, default=500)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--secs", type=float, default=30)
    ap.add_argument("--kill-at", type=float, default=10)
    ap.add_argument("--node-timeout", type=int, default=5000,
                    help="cluster-node-timeout / down-after-milliseconds (config/ uses 5000)")
    ap.add_argument("--near-cache", action="store_true")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="tessera-blast-")
    ps = Procs(tmp)
    demo = None
    try:
        url, primaries, switched = (cluster if a.topology == "cluster" else sentinel)(ps, a.node_timeout)
        port = free_port()
        env = dict(os.environ, REDIS_URL=url, PORT=str(port), COOKIE_SECURE="0",
                   TESSERA_SECRET="ab" * 32, NEAR_CACHE="1" if a.near_cache else "0",
                   RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        demo = subprocess.Popen([a.demo], env=env, stdout=open(os.path.join(tmp, "demo.log"), "w"),
                                stderr=subprocess.STDOUT)
        wait("demo", lambda: socket.create_connection(("127.0.0.1", port), 0.2).close() is None)
        cookies = asyncio.run(login_all(port, a.sessions))
        where = {}
        for p in primaries:
            for key in cli(p, "--scan", "--pattern", "session:*").split():
                u = cli(p, "HGET", key, "__u").strip('"')
                if u.startswith("u") and u[1:].isdigit():
                    where[int(u[1:])] = p
        victim = max(primaries, key=lambda p: sum(1 for v in where.values() if v == p))
        on_killed = {i for i, p in where.items() if p == victim}
        print(f"{a.topology}: {len(primaries)} primaries; {len(where)}/{a.sessions} sessions located; "
              f"{len(on_killed)} on the primary to be killed (:{victim}); node timeout {a.node_timeout} ms")
        rec, killed, switch = asyncio.run(load(port, cookies, a.conns, a.secs, a.kill_at,
                                               lambda: ps.procs[victim].send_signal(signal.SIGKILL),
                                               lambda: switched(victim)))
        report(rec, killed, on_killed, a.secs, switch)

        async def after():
            r, w = await asyncio.open_connection("127.0.0.1", port)
            ok = 0
            for c in cookies:
                ok += (await http(r, w, "GET", "/me", c))[0] == 200
            w.close()
            return ok
        print(f"\nafterwards: {asyncio.run(after())}/{a.sessions} sessions served")
    finally:
        if demo:
            demo.kill()
            demo.wait()
        ps.stop_all()
        if os.environ.get("KEEP") != "1":
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("kept", tmp, file=sys.stderr)


if __name__ == "__main__":
    main()

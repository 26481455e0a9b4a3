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
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REDIS = os.environ.get("REDIS_SERVER_BIN", "redis-server")
CLI = os.environ.get("REDIS_CLI_BIN", "redis-cli")


def free_port(lo=20000, hi=55000):
    for _ in range(200):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        finally:
            s.close()
        if lo <= p < hi:
            return p
    raise SystemExit("no free port below 55535")


def cli(port, *args):
    out = subprocess.run([CLI, "-p", str(port), *args], capture_output=True, text=True, timeout=10)
    return out.stdout.strip()


def wait(what, ok, secs=30):
    end = time.time() + secs
    while time.time() < end:
        try:
            if ok():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


class Procs:
    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = {}

    def redis(self, port, *extra):
        d = os.path.join(self.tmp, str(port))
        os.makedirs(d, exist_ok=True)
        p = subprocess.Popen(
            [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--dir", d, "--save", "",
             "--appendonly", "no", "--logfile", os.path.join(d, "log"), *extra])
        self.procs[port] = p
        wait(f"redis on {port}", lambda: cli(port, "PING") == "PONG")
        return p

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
        for p in self.procs.values():
            p.wait()


def cluster(ps, node_timeout):
    ports = [free_port() for _ in range(6)]
    for p in ports:
        ps.redis(p, "--cluster-enabled", "yes", "--cluster-config-file",
                 os.path.join(ps.tmp, f"nodes-{p}.conf"), "--cluster-node-timeout",
                 str(node_timeout), "--cluster-require-full-coverage", "no",
                 "--repl-diskless-sync-delay", "0")
    subprocess.run([CLI, "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                    "--cluster-replicas", "1", "--cluster-yes"], capture_output=True, check=True)
    wait("cluster ok", lambda: all("cluster_state:ok" in cli(p, "CLUSTER", "INFO") for p in ports))
    wait("replicas in sync", lambda: sum(
        "master_link_status:up" in cli(p, "INFO", "replication") for p in ports) == 3)
    primaries = [p for p in ports if "role:master" in cli(p, "INFO", "replication")]
    url = f"redis-cluster://127.0.0.1:{ports[0]}?" + "&".join(f"node=127.0.0.1:{p}" for p in ports[1:])

    def switched(victim):
        # A replica of the victim has become a primary.
        return any(p not in primaries and cli(p, "ROLE").split("\n")[0] == "master"
                   for p in ports if p != victim)
    return url, primaries, switched


def sentinel(ps, node_timeout):
    primary, replica = free_port(), free_port()
    ps.redis(primary)
    ps.redis(replica, "--replicaof", "127.0.0.1", str(primary))
    wait("replica in sync", lambda: "master_link_status:up" in cli(replica, "INFO", "replication"))
    sports = []
    for _ in range(3):
        sp = free_port()
        conf = os.path.join(ps.tmp, f"sentinel-{sp}.conf")
        with open(conf, "w") as f:
            f.write(f"port {sp}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {primary} 2\n"
                    f"sentinel down-after-milliseconds mymaster {node_timeout}\n"
                    "sentinel failover-timeout mymaster 10000\n")
        ps.procs[sp] = subprocess.Popen([REDIS, conf, "--sentinel"], stdout=subprocess.DEVNULL)
        wait(f"sentinel {sp}", lambda sp=sp: cli(sp, "PING") == "PONG")
        sports.append(sp)
    wait("sentinels see the replica and each other", lambda: all(
        "slaves=1" in cli(s, "INFO", "sentinel") and "sentinels=3" in cli(s, "INFO", "sentinel")
        for s in sports))
    url = (f"redis-sentinel://127.0.0.1:{sports[0]}/0?sentinelServiceName=mymaster&"
           + "&".join(f"node=127.0.0.1:{s}" for s in sports[1:]))

    def switched(victim):
        # The sentinel the demo asks first names another primary.
        return str(victim) not in cli(sports[0], "SENTINEL", "get-master-addr-by-name", "mymaster")
    return url, [primary], switched


async def http(reader, writer, method, path, cookie=None, body=None):
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if cookie:
        head += f"Cookie: {cookie}\r\n"
    data = b""
    if body is not None:
        data = json.dumps(body).encode()
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    writer.write(head.encode() + b"\r\n" + data)
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers.setdefault(k.strip().lower(), []).append(v.strip())
    n = int(headers.get("content-length", ["0"])[0])
    if n:
        await reader.readexactly(n)
    return status, headers


async def login_all(port, n):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    cookies = []
    for i in range(n):
        status, h = await http(r, w, "POST", "/login", body={"user_id": f"u{i}"})
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
                status, h = await http(r, w, "GET", "/me", cookies[i])
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

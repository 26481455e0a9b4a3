#!/usr/bin/env python3
"""The soak with a history checker (issue #26, item 1).

Starts a Redis Cluster 3x2 on free loopback ports and three demo instances on it (axum-1 and
actix-1, which live for the whole run, and axum-2, the one the fault schedule restarts), all
with the same TESSERA_SECRET (a cookie works on every instance), NEAR_CACHE=1, REPLICA_ACKS=1
and ADMIN_TOKEN.
Many concurrent clients then run a mix for MINUTES: each client owns one user and its sessions
(up to three, plus now and then one logged in with `?remember=6` and left to expire) and sends
its requests one at a time, each to an instance picked at random: logins, reads (GET /me),
field writes (PUT /session with values never written before), increments (POST /counter),
device lists (GET /sessions), logouts, revokes (DELETE /sessions/{handle}), logout-alls, and
reads of sessions it ended. Meanwhile a fault schedule runs after the warm-up (the first fifth):
a primary SIGKILLed and restarted once its replica took over (it rejoins as a replica), a
primary SIGSTOPped for 3 s, the near-caches' tracking connections killed (CLIENT KILL of the
clients whose flags hold `t`), an app instance SIGKILLed and started again. A consumer pages
through GET /admin/events with the cursor all along; a sampler records each app's RSS and
Redis's used_memory and connected_clients.

Every request and its answer is recorded (history.jsonl in the run directory); at the end
scripts/soak_check.py judges the history (rules in its docstring), prints a Markdown report and
the exit status is non-zero on any violation.

    . .servers/env.sh && cargo build -p axum-demo -p actix-demo &&
    python3 scripts/soak.py --minutes 2 --axum target/debug/axum-demo --actix target/debug/actix-demo

(`scripts/soak.sh [MINUTES]` does exactly that.) Stdlib only; everything it starts is stopped.
"""

import argparse
import asyncio
import collections
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Cluster, Procs, RespError, free_port, http, parse_info, pipeline,  # noqa: E402
                     resp, wait)
import soak_check  # noqa: E402

REMEMBER = 6          # POST /login?remember=SECS of the sessions left to expire
TOUCH = 2             # SESSION_TOUCH_SECS (a remember must be at least twice this)
ADMIN = "soak-admin-token"
SECRET = "5a" * 32
FIELD_KEY = "3c" * 32
REQUEST_TIMEOUT = 10.0
IDLE_RECONNECT = 2.0  # a keep-alive connection idle this long is replaced before use


def mono():
    return time.monotonic()


class Instance:
    def __init__(self, name, binary, env, tmp):
        self.name, self.binary, self.env = name, binary, env
        self.port = int(env["PORT"])
        self.log = os.path.join(tmp, f"{name}.log")
        self.proc = None
        self.up = False
        self.starts = []

    def start(self, t):
        self.proc = subprocess.Popen([self.binary], env=self.env, stdout=open(self.log, "a"),
                                     stderr=subprocess.STDOUT)
        self.starts.append(t)

    def wait_listening(self, secs=30):
        wait(f"{self.name} listening", lambda: socket.create_connection(
            ("127.0.0.1", self.port), 0.2).close() is None, secs)
        self.up = True

    def rss_kb(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None


class Sess:
    __slots__ = ("id", "kind", "cookie", "handle", "last_t1", "check_at", "state")

    def __init__(self, sid, kind, cookie):
        self.id, self.kind, self.cookie = sid, kind, cookie
        self.handle = None
        self.last_t1 = 0.0
        self.check_at = None
        self.state = "live"


class Soak:
    def __init__(self, a, run_dir):
        self.a = a
        self.dir = run_dir
        self.duration = a.minutes * 60.0
        self.warmup = self.duration / 5
        self.t0 = None
        self.wall0 = None
        self.seq = 0
        self.sid = 0
        self.hist = open(os.path.join(run_dir, "history.jsonl"), "w")
        self.sessions = {}
        self.events = []
        self.event_ids = set()
        self.events_missed = []
        self.event_reads = collections.Counter()
        self.samples = []
        self.faults = []
        self.stop_load = False
        self.instances = []
        self.final_events = None
        self.final_events_read = None
        self.load_end = None

    def now(self):
        return mono() - self.t0

    def record(self, rec):
        self.seq += 1
        rec["i"] = self.seq
        self.hist.write(json.dumps(rec, separators=(",", ":")) + "\n")
        return rec

    def new_session(self, client, kind, cookie, remember=None):
        self.sid += 1
        s = Sess(self.sid, kind, cookie)
        self.sessions[s.id] = {"client": client.k, "user": client.user, "kind": kind,
                               "remember": remember, "handle": None}
        return s


class Client:
    def __init__(self, soak, k, rng):
        self.soak, self.k, self.rng = soak, k, rng
        self.user = f"soak-u{k:03d}"
        self.n = 0
        self.live = []
        self.expiring = []
        self.ended = collections.deque(maxlen=6)
        self.conns = {}

    def uniq(self):
        self.n += 1
        return f"c{self.k:03d}-{self.n:07d}"

    # ---- transport ----
    def _close(self, name):
        c = self.conns.pop(name, None)
        if c:
            try:
                c[1].close()
            except Exception:
                pass

    async def _send(self, inst, method, path, cookie, body):
        """(status, headers, body bytes); status 0: not sent (no connection), -1: no answer."""
        c = self.conns.get(inst.name)
        if c and mono() - c[2] > IDLE_RECONNECT:
            self._close(inst.name)
            c = None
        if c is None:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", inst.port), 2)
            except (OSError, asyncio.TimeoutError):
                return 0, {}, b""
            c = [r, w, mono()]
            self.conns[inst.name] = c
        try:
            st, h, b = await asyncio.wait_for(http(c[0], c[1], method, path, cookie, body),
                                              REQUEST_TIMEOUT)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, OSError,
                ValueError, IndexError):
            self._close(inst.name)
            return -1, {}, b""
        c[2] = mono()
        if "close" in ",".join(h.get("connection", [])).lower():
            self._close(inst.name)
        return st, h, b

    async def req(self, sess, method, path, route, body=None, cookie="sess", target=None):
        """Sends one request to an instance picked at random (another one if it cannot be
        reached), records it and its answer, returns the record."""
        soak = self.soak
        if cookie == "sess":
            cookie = sess.cookie if sess else None
        tried = set()
        while True:
            choices = [i for i in soak.instances if i.name not in tried]
            inst = self.rng.choice(choices)
            tried.add(inst.name)
            t0 = soak.now()
            st, h, b = await self._send(inst, method, path, cookie, body)
            t1 = soak.now()
            try:
                parsed = json.loads(b) if b else None
            except ValueError:
                parsed = b.decode("utf-8", "replace")[:300]
            if route == "GET /sessions" and st == 200 and isinstance(parsed, list):
                parsed = [{"handle": d.get("handle"), "current": d.get("current")}
                          for d in parsed if isinstance(d, dict)]
            set_cookie = None
            for v in h.get("set-cookie", []):
                nv = v.split(";")[0]
                if nv.partition("=")[2]:
                    set_cookie = nv
            rec = {"c": self.k, "u": self.user, "s": sess.id if sess else None, "tgt": target,
                   "inst": inst.name, "route": route, "path": path, "sent": body,
                   "t0": round(t0, 4), "t1": round(t1, 4), "st": st,
                   "ra": "retry-after" in h, "resp": parsed, "new_cookie": set_cookie is not None}
            if sess is not None and st != 0:
                sess.last_t1 = t1
            if st == 0 and len(tried) < len(soak.instances):
                soak.record(rec)
                continue
            rec["_cookie"] = set_cookie
            return rec

    def done(self, rec):
        rec.pop("_cookie", None)
        return self.soak.record(rec)

    # ---- actions ----
    async def login(self, kind):
        v = self.uniq()
        remember = REMEMBER if kind == "expiring" else None
        path = f"/login?remember={REMEMBER}" if remember else "/login"
        rec = await self.req(None, "POST", path, "POST /login",
                             body={"user_id": self.user, "a": v}, cookie=None)
        s = None
        if rec["st"] == 200 and rec["_cookie"]:
            s = self.soak.new_session(self, kind, rec["_cookie"], remember)
            s.last_t1 = rec["t1"]
            rec["s"] = s.id
        self.done(rec)
        if s is None:
            if rec["st"] == 503:
                await asyncio.sleep(0.2)
            return None
        (self.expiring if kind == "expiring" else self.live).append(s)
        burst_until = rec["t1"] + 1.5
        await self.learn_handle(s)
        if kind == "expiring":
            ops = [self.put, self.incr, self.read]
            self.rng.shuffle(ops)
            for op in ops[: self.rng.randint(1, 3)]:
                if self.soak.now() > burst_until:
                    break
                await op(s)
            s.check_at = s.last_t1 + REMEMBER + 1.0
        return s

    async def learn_handle(self, s):
        """Its handle, from its own device list (`current`); retried through an outage."""
        for _ in range(40):
            rec = self.done(await self.req(s, "GET", "/sessions", "GET /sessions"))
            if rec["st"] == 200 and isinstance(rec["resp"], list):
                for d in rec["resp"]:
                    if d.get("current"):
                        s.handle = d["handle"]
                        self.soak.sessions[s.id]["handle"] = s.handle
                        return
                return
            if rec["st"] in (401, 404) or self.soak.now() > self.soak.duration + 15:
                return
            await asyncio.sleep(0.3)

    async def read(self, s):
        return self.done(await self.req(s, "GET", "/me", "GET /me"))

    async def put(self, s):
        f = self.rng.choice("ab")
        return self.done(await self.req(s, "PUT", "/session", "PUT /session", body={f: self.uniq()}))

    async def incr(self, s):
        return self.done(await self.req(s, "POST", "/counter", "POST /counter"))

    async def devices(self, s):
        return self.done(await self.req(s, "GET", "/sessions", "GET /sessions"))

    async def end(self, route, method, path, actor, targets, target=None):
        """An end (logout, revoke, logout-all) tried until acknowledged: 503 with Retry-After
        changed nothing (the actor is read before trying again, to see that nothing
        changed), 503 without it or no answer may have been applied (tried again: deletes are
        safe to repeat)."""
        unknown = False
        acked = False
        while self.soak.now() < self.soak.duration + 15:
            rec = self.done(await self.req(actor, method, path, route, target=target))
            st = rec["st"]
            if st == 204 or (st == 404 and route.startswith("DELETE") and unknown):
                acked = True
                break
            if st == 503 and rec["ra"]:
                await asyncio.sleep(0.3)
                await self.read(targets[0] if target is not None else actor)
                continue
            if st in (503, -1, 0) or st >= 500:
                unknown = True
                await asyncio.sleep(0.3)
                continue
            break  # 401, 404, ...: the checker judges it
        for t in targets:
            t.state = "ended" if acked else "maybe"
            if t in self.live:
                self.live.remove(t)
            if t in self.expiring:
                self.expiring.remove(t)
            self.ended.append(t)
        if acked and self.rng.random() < 0.7:
            await self.read(self.rng.choice(targets))

    async def step(self):
        rng = self.rng
        live = self.live
        if not live:
            await self.login("regular")
            return
        s = rng.choice(live)
        with_handle = [x for x in live if x.handle and x is not s]
        acts = [("read", 30), ("put", 22), ("incr", 12), ("devices", 5), ("logout", 3),
                ("logout_all", 1)]
        if len(live) < 3:
            acts.append(("login", 6))
        if not self.expiring:
            acts.append(("login_expiring", 1.5))
        if with_handle:
            acts.append(("revoke", 3))
        if self.ended:
            acts.append(("probe", 4))
        r = rng.uniform(0, sum(w for _, w in acts))
        for act, w in acts:
            r -= w
            if r <= 0:
                break
        if act == "read":
            await self.read(s)
        elif act == "put":
            await self.put(s)
        elif act == "incr":
            await self.incr(s)
        elif act == "devices":
            await self.devices(s)
        elif act == "login":
            await self.login("regular")
        elif act == "login_expiring":
            await self.login("expiring")
        elif act == "logout":
            await self.end("POST /logout", "POST", "/logout", s, [s])
        elif act == "logout_all":
            await self.end("POST /logout-all", "POST", "/logout-all", s,
                           list(self.live) + list(self.expiring))
        elif act == "revoke":
            t = rng.choice(with_handle)
            await self.end("DELETE /sessions/{handle}", "DELETE", f"/sessions/{t.handle}", s,
                           [t], target=t.id)
        elif act == "probe":
            await self.read(rng.choice(list(self.ended)))

    async def check_expired(self, final=False):
        """A session left to expire, read once its expiry has certainly passed: 401 expected."""
        for s in list(self.expiring):
            if s.check_at is not None and self.soak.now() >= s.check_at:
                rec = await self.read(s)
                if rec["st"] in (200, 401) or (final and self.soak.now() > s.check_at + 10):
                    self.expiring.remove(s)
                    s.state = "expired"
                    self.ended.append(s)

    async def run(self):
        soak = self.soak
        while soak.now() < soak.duration:
            await self.check_expired()
            await self.step()
            await asyncio.sleep(self.rng.uniform(0, soak.a.think))
        # The end of the run: the sessions left to expire are read once expired, every live
        # session is read once more, and the device list is read (from a fresh login if none
        # is left) to see that every ended session is gone from it.
        while self.expiring:
            await self.check_expired(final=True)
            await asyncio.sleep(0.2)
        for s in list(self.live):
            for _ in range(20):
                rec = await self.read(s)
                if rec["st"] not in (503, -1, 0):
                    break
                await asyncio.sleep(0.5)
        if not self.live:
            for _ in range(20):
                if await self.login("regular"):
                    break
                await asyncio.sleep(0.5)
        if self.live:
            for _ in range(20):
                rec = await self.devices(self.live[0])
                if rec["st"] not in (503, -1, 0):
                    break
                await asyncio.sleep(0.5)
        for name in list(self.conns):
            self._close(name)


# ---- the fault schedule ----

async def in_thread(f, *args):
    return await asyncio.to_thread(f, *args)


async def wait_for(soak, what, ok, secs):
    end = mono() + secs
    while mono() < end:
        try:
            if await in_thread(ok):
                return soak.now()
        except Exception:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"fault schedule: timed out waiting for {what}")


async def fault_kill(soak, cl, ps, rng):
    victim = rng.choice(await in_thread(cl.current_primaries))
    cl.primaries = await in_thread(cl.current_primaries)
    f = {"kind": "SIGKILL a primary, restart it", "node": victim, "t": soak.now()}
    soak.faults.append(f)
    ps.procs[victim].send_signal(signal.SIGKILL)
    await in_thread(ps.procs[victim].wait)
    f["failover"] = await wait_for(soak, "the failover", lambda: cl.switched(victim), 60)
    await asyncio.sleep(1)
    await in_thread(ps.restart, victim)
    f["restarted"] = soak.now()
    f["recovered"] = await wait_for(soak, "the cluster healthy", cl.healthy, 90)
    f["detail"] = (f"node :{victim}; replica promoted +{f['failover'] - f['t']:.1f} s; "
                   f"restarted +{f['restarted'] - f['t']:.1f} s, rejoined as "
                   f"{'a replica' if cl.role(victim) == 'slave' else cl.role(victim)}")
    cl.primaries = await in_thread(cl.current_primaries)


async def fault_stop(soak, cl, ps, rng):
    victim = rng.choice(await in_thread(cl.current_primaries))
    cl.primaries = await in_thread(cl.current_primaries)
    f = {"kind": "SIGSTOP a primary 3 s", "node": victim, "t": soak.now()}
    soak.faults.append(f)
    ps.procs[victim].send_signal(signal.SIGSTOP)
    await asyncio.sleep(3)
    ps.procs[victim].send_signal(signal.SIGCONT)
    f["continued"] = soak.now()
    # The replica's election may have started while the primary was stopped and end after
    # it resumed: watch its role for two node timeouts and more before calling it settled.
    settle = soak.now() + 2 * soak.a.node_timeout / 1000 + 3
    while soak.now() < settle:
        if await in_thread(cl.role, victim) == "slave":
            f["demoted"] = soak.now()
            break
        await asyncio.sleep(0.1)
    f["recovered"] = await wait_for(soak, "the cluster healthy", cl.healthy, 90)
    if "demoted" in f:
        when = f["demoted"] - f["continued"]
        f["detail"] = (f"node :{victim}; SIGCONT +{f['continued'] - f['t']:.1f} s; its replica "
                       f"took over, seen by it {when:+.2f} s from the SIGCONT; it rejoined as a replica")
    else:
        f["detail"] = (f"node :{victim}; SIGCONT +{f['continued'] - f['t']:.1f} s; "
                       "no failover, still the primary")
    cl.primaries = await in_thread(cl.current_primaries)


async def fault_tracking(soak, cl, ps, rng):
    f = {"kind": "CLIENT KILL the tracking connections", "t": soak.now()}
    soak.faults.append(f)

    def kill_all():
        n = 0
        for p in cl.ports:
            listing = resp(p, "CLIENT", "LIST")
            for line in (listing or "").splitlines():
                kv = dict(x.partition("=")[::2] for x in line.split())
                if "t" in kv.get("flags", ""):
                    r = resp(p, "CLIENT", "KILL", "ID", kv["id"])
                    n += r == 1
        return n
    f["killed"] = await in_thread(kill_all)
    f["recovered"] = soak.now()
    f["detail"] = f"{f['killed']} connections with flag t, on every node"


async def fault_app(soak, cl, ps, rng):
    inst = soak.instances[-1]
    f = {"kind": "SIGKILL an app instance, start it again", "inst": inst.name, "t": soak.now()}
    soak.faults.append(f)
    inst.up = False
    inst.proc.send_signal(signal.SIGKILL)
    await in_thread(inst.proc.wait)
    await asyncio.sleep(1)
    inst.start(soak.now())
    await in_thread(inst.wait_listening)
    f["recovered"] = soak.now()
    f["detail"] = f"{inst.name} ({os.path.basename(inst.binary)}); listening again +{f['recovered'] - f['t']:.1f} s"


FAULTS = {"kill": fault_kill, "stop": fault_stop, "tracking": fault_tracking, "app": fault_app}


def fault_times(duration, warmup, kinds, cycle_secs):
    """Cycles of the faults between the warm-up and 80% of the run (one cycle of the four in
    a two-minute run), so the end of the run is measured after the last recovery. Each fault
    starts when its time comes or when the one before it has recovered, whichever is later."""
    start, last = warmup + 6, duration * 0.8
    cycles = max(1, int((last - start) // cycle_secs))
    period = (last - start) / cycles
    out = []
    for c in range(cycles):
        base = start + c * period
        for j, k in enumerate(kinds):
            out.append((base + j * period / len(kinds), FAULTS[k]))
    return out


async def fault_schedule(soak, cl, ps, rng):
    for at, f in fault_times(soak.duration, soak.warmup, soak.a.faults, soak.a.cycle_secs):
        if soak.now() < at:
            await asyncio.sleep(at - soak.now())
        if soak.now() > soak.duration - 10:
            break
        await f(soak, cl, ps, rng)


# ---- the sampler and the events consumer ----

def redis_sample(cl):
    nodes = []
    for p in cl.ports:
        try:
            mem = parse_info(resp(p, "INFO", "memory"))
            clients = parse_info(resp(p, "INFO", "clients"))
            repl = parse_info(resp(p, "INFO", "replication"))
        except (OSError, ConnectionError):
            nodes.append({"port": p, "up": False})
            continue
        n = {"port": p, "up": True, "role": repl.get("role"),
             "used_memory": int(mem.get("used_memory", 0)),
             "backlog": int(mem.get("mem_replication_backlog", 0)),
             "clients_slaves": int(mem.get("mem_clients_slaves", 0)),
             "clients_normal": int(mem.get("mem_clients_normal", 0)),
             "dataset": int(mem.get("used_memory_dataset", 0)),
             "overhead": int(mem.get("used_memory_overhead", 0)),
             "repl_buffers": int(mem.get("mem_total_replication_buffers", 0)),
             "connected_clients": int(clients.get("connected_clients", 0)),
             "scripts": int(mem.get("used_memory_scripts_eval", 0)),
             "keys": 0}
        if repl.get("role") == "master":
            try:
                u = resp(p, "MEMORY", "USAGE", "{events}", "SAMPLES", "0")
                if isinstance(u, int):
                    n["events_stream"] = u
                    n["events_len"] = resp(p, "XLEN", "{events}")
                stats = parse_info(resp(p, "INFO", "stats"))
                n["tracking_keys"] = int(stats.get("tracking_total_keys", 0))
                n["tracking_items"] = int(stats.get("tracking_total_items", 0))
                n["expired_keys"] = int(stats.get("expired_keys", 0))
                ks = parse_info(resp(p, "INFO", "keyspace")).get("db0", "")
                n["keys"] = int(dict(x.split("=") for x in ks.split(",")).get("keys", 0)) if ks else 0
            except (OSError, ConnectionError, ValueError):
                pass
        nodes.append(n)
    return nodes


def family(key):
    if key.startswith("session:"):
        return "session:*"
    if key.startswith("user:"):
        return "user:*:" + key.rsplit(":", 1)[-1]
    if key.startswith("index:"):
        return "index:*"
    if key.startswith("{events}"):
        return key
    return key if key.startswith("tessera:") else "other"


def census(cl):
    """The keys of every primary by family: {family: [keys, bytes, members]}."""
    out = {}
    for p in cl.ports:
        try:
            if parse_info(resp(p, "INFO", "replication")).get("role") != "master":
                continue
            keys, cur = [], "0"
            while True:
                cur, batch = resp(p, "SCAN", cur, "COUNT", "1000")
                keys += batch
                if cur == "0":
                    break
            cmds = [("MEMORY", "USAGE", k, "SAMPLES", "0") for k in keys]
            cmds += [("TYPE", k) for k in keys]
            replies = pipeline(p, cmds, timeout=10) if keys else []
            sizes, types = replies[:len(keys)], replies[len(keys):]
            card = {"zset": "ZCARD", "hash": "HLEN", "stream": "XLEN"}
            counts = pipeline(p, [(card.get(t, "EXISTS"), k) for k, t in zip(keys, types)],
                              timeout=10) if keys else []
            for k, size, t, n in zip(keys, sizes, types, counts):
                f = out.setdefault(family(k), [0, 0, 0])
                f[0] += 1
                f[1] += size if isinstance(size, int) else 0
                f[2] += n if isinstance(n, int) and t in card else 0
        except (OSError, ConnectionError, ValueError):
            out.setdefault("(unreadable node)", [0, 0, 0])[0] += 1
    return out


async def sampler(soak, cl):
    marks = [soak.warmup, soak.duration]
    while True:
        t = soak.now()
        if t > soak.duration + 0.5:
            break
        s = {"t": round(t, 2), "apps": {i.name: (i.rss_kb() if i.up else None)
                                        for i in soak.instances},
             "redis": await in_thread(redis_sample, cl)}
        if any(abs(t - m) < 0.5 for m in marks):
            s["census"] = await in_thread(census, cl)
        soak.samples.append(s)
        nxt = t + soak.a.sample_every
        for m in marks:
            if t < m < nxt:
                nxt = m
        await asyncio.sleep(max(0.05, nxt - soak.now()))


async def events_consumer(soak, rng):
    """Pages through GET /admin/events with the cursor, on a random instance each time."""
    cursor = None
    conns = {}
    idle_rounds = 0
    while True:
        inst = rng.choice([i for i in soak.instances if i.up] or soak.instances)
        path = "/admin/events" + (f"?after={cursor}" if cursor else "")
        try:
            r, w = conns.get(inst.name) or await asyncio.open_connection("127.0.0.1", inst.port)
            conns[inst.name] = (r, w)
            st, h, b = await asyncio.wait_for(http(r, w, "GET", path, headers=[
                ("Authorization", f"Bearer {ADMIN}")]), REQUEST_TIMEOUT)
        except (OSError, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            conns.pop(inst.name, None)
            st, b = -1, b""
        soak.event_reads[st] += 1
        n = 0
        try:
            page = json.loads(b) if st == 200 else None
        except ValueError:
            page, st = None, -2
        if page is not None:
            if page.get("missed"):
                soak.events_missed.append({"t": soak.now(), "after": cursor})
            for e in page["events"]:
                if e["cursor"] not in soak.event_ids:
                    soak.event_ids.add(e["cursor"])
                    e["_read_at"] = round(soak.now(), 3)
                    soak.events.append(e)
            n = len(page["events"])
            cursor = page.get("cursor") or cursor
        if soak.final_events is not None and soak.now() >= soak.final_events:
            if st == 200 and n == 0:
                idle_rounds += 1
                if idle_rounds >= 2:
                    break
        if n < 1000:
            await asyncio.sleep(1.0 if soak.final_events is None else 0.3)
    for r, w in conns.values():
        w.close()
    soak.final_events_read = soak.now()


async def main_async(soak, cl, ps):
    soak.t0 = mono()
    soak.wall0 = time.time()
    soak.final_events = None
    clients = [Client(soak, k, random.Random(f"{soak.a.seed}-{k}")) for k in range(soak.a.clients)]
    ev = asyncio.create_task(events_consumer(soak, random.Random(f"{soak.a.seed}-events")))
    smp = asyncio.create_task(sampler(soak, cl))
    flt = asyncio.create_task(fault_schedule(soak, cl, ps, random.Random(f"{soak.a.seed}-faults")))
    progress = asyncio.create_task(report_progress(soak))
    await asyncio.gather(*[c.run() for c in clients])
    soak.load_end = soak.now()
    await flt
    soak.stop_load = True
    await smp
    progress.cancel()
    # The expiry sweeper's bound (2 x the 2 s sweep interval, 3 x when the lease holder
    # died) after the last session left to expire has certainly expired, plus a margin.
    soak.final_events = soak.now() + 8
    await ev


async def report_progress(soak):
    while True:
        await asyncio.sleep(15)
        print(f"soak: {soak.now():6.1f} s, {soak.seq:,} requests, {len(soak.events):,} events, "
              f"faults: {len(soak.faults)}", file=sys.stderr, flush=True)


def raw_index(cl, users):
    """The user indexes as Redis holds them at the end: user -> [(member, score)]."""
    out = {}
    for u in users:
        key = f"user:{u}:sessions"
        for p in cl.ports:
            r = resp(p, "ZRANGE", key, "0", "-1", "WITHSCORES")
            if isinstance(r, RespError):
                continue
            out[u] = [(r[i], float(r[i + 1])) for i in range(0, len(r or []), 2)]
            break
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--axum", default="target/debug/axum-demo")
    ap.add_argument("--actix", default="target/debug/actix-demo")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--think", type=float, default=0.08,
                    help="each client waits up to this many seconds between requests")
    ap.add_argument("--node-timeout", type=int, default=2000)
    ap.add_argument("--faults", default="kill,stop,tracking,app",
                    help="the fault cycle, in order (kill, stop, tracking, app; none: no faults)")
    ap.add_argument("--cycle-secs", type=float, default=75,
                    help="a cycle of the faults takes at least this long")
    ap.add_argument("--sample-every", type=float, default=5)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--out", default=None, help="run directory (default: a new temporary one)")
    a = ap.parse_args()
    a.faults = [k for k in a.faults.split(",") if k and k != "none"]
    for k in a.faults:
        if k not in FAULTS:
            raise SystemExit(f"soak: unknown fault {k!r} (kill, stop, tracking, app)")
    if a.seed is None:
        a.seed = random.randrange(1 << 30)
    for b in (a.axum, a.actix):
        if not os.access(b, os.X_OK):
            raise SystemExit(f"soak: {b} is not an executable (cargo build -p axum-demo -p actix-demo)")
    run_dir = a.out or tempfile.mkdtemp(prefix="tessera-soak-")
    os.makedirs(run_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="tessera-soak-servers-")
    ps = Procs(tmp)
    soak = Soak(a, run_dir)
    print(f"soak: {a.minutes:g} min, {a.clients} clients, seed {a.seed}, run directory {run_dir}",
          file=sys.stderr, flush=True)
    try:
        cl = Cluster(ps, a.node_timeout)
        for name, binary in (("axum-1", a.axum), ("actix-1", a.actix), ("axum-2", a.axum)):
            port = free_port()
            env = dict(os.environ, REDIS_URL=cl.url, PORT=str(port), COOKIE_SECURE="0",
                       TESSERA_SECRET=SECRET, TESSERA_FIELD_KEY=FIELD_KEY, NEAR_CACHE="1",
                       # Every acknowledged write on the replica a failover promotes: Redis
                       # replicates asynchronously (README, "Writes lost in a failover").
                       REPLICA_ACKS="1",
                       ADMIN_TOKEN=ADMIN, SESSION_TOUCH_SECS=str(TOUCH),
                       RUST_LOG=os.environ.get("RUST_LOG", "warn"), RUST_BACKTRACE="1")
            inst = Instance(name, binary, env, run_dir)
            inst.start(0.0)
            soak.instances.append(inst)
        for inst in soak.instances:
            inst.wait_listening()
        asyncio.run(main_async(soak, cl, ps))
        soak.hist.close()
        users = sorted({v["user"] for v in soak.sessions.values()})
        index = raw_index(cl, users)
        exits = {i.name: i.proc.poll() for i in soak.instances}
        meta = {
            "minutes": a.minutes, "clients": a.clients, "seed": a.seed, "think": a.think,
            "node_timeout": a.node_timeout, "remember": REMEMBER, "touch": TOUCH,
            "fault_kinds": a.faults, "cycle_secs": a.cycle_secs,
            "duration": soak.duration, "warmup": soak.warmup, "load_end": soak.load_end,
            "wall0": soak.wall0, "final_events_read": soak.final_events_read,
            "instances": [{"name": i.name, "engine": os.path.basename(i.binary),
                           "starts": i.starts, "log": os.path.basename(i.log)}
                          for i in soak.instances],
            "exits_before_stop": exits,
            "faults": soak.faults, "samples": soak.samples, "sessions": soak.sessions,
            "events_missed": soak.events_missed,
            "event_reads": {str(k): v for k, v in soak.event_reads.items()},
            "raw_index": index, "cluster_ports": cl.ports,
        }
        with open(os.path.join(run_dir, "meta.json"), "w") as f:
            json.dump(meta, f)
        with open(os.path.join(run_dir, "events.json"), "w") as f:
            json.dump(soak.events, f)
    finally:
        for inst in soak.instances:
            if inst.proc and inst.proc.poll() is None:
                inst.proc.kill()
                inst.proc.wait()
        ps.stop_all()
        for port in ps.args:  # the servers' own logs (failovers, as they saw them)
            log = os.path.join(tmp, str(port), "log")
            if os.path.exists(log):
                shutil.copy(log, os.path.join(run_dir, f"redis-{port}.log"))
        shutil.rmtree(tmp, ignore_errors=True)
    report, violations = soak_check.check(run_dir)
    with open(os.path.join(run_dir, "report.md"), "w") as f:
        f.write(report)
    print(report)
    if violations or a.out:
        print(f"soak: history, events, logs and report kept in {run_dir} "
              f"(python3 scripts/soak_check.py {run_dir} judges them again)", file=sys.stderr)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        print("soak: no violation; the run directory is removed (--out DIR keeps it)",
              file=sys.stderr)
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()

"""What scripts/failover-blast.py and scripts/soak.py share: Redis topologies on free loopback
ports (a 3x2 Cluster, or a primary + replica + 3 Sentinels), the processes they start (stopped
at the end, restartable on the same port), and a keep-alive HTTP/1.1 client for the demos.

Stdlib only. The server binaries come from REDIS_SERVER_BIN / REDIS_CLI_BIN (`.servers/env.sh`,
written by `scripts/install-servers.sh`), else `redis-server` / `redis-cli` on the PATH.
"""

import json
import os
import socket
import subprocess
import time

REDIS = os.environ.get("REDIS_SERVER_BIN", "redis-server")
CLI = os.environ.get("REDIS_CLI_BIN", "redis-cli")


def free_port(lo=20000, hi=55000):
    """A free loopback port in [lo, hi) (Redis Cluster needs port + 10000 below 65536)."""
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


def cli(port, *args, timeout=10):
    out = subprocess.run([CLI, "-p", str(port), *args], capture_output=True, text=True,
                         timeout=timeout)
    return out.stdout.strip()


def info(port, section):
    """`INFO section` as a dict of its `name:value` lines ({} when the server does not answer)."""
    try:
        text = cli(port, "INFO", section, timeout=3)
    except subprocess.TimeoutExpired:
        return {}
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if sep and not k.startswith("#"):
            out[k.strip()] = v.strip()
    return out


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
    """The processes a run starts, by port (Redis) or name; `restart` starts one again with
    the same arguments (a Cluster node keeps its nodes.conf, so it rejoins)."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = {}
        self.args = {}

    def redis(self, port, *extra):
        d = os.path.join(self.tmp, str(port))
        os.makedirs(d, exist_ok=True)
        self.args[port] = [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
                           "--save", "", "--appendonly", "no", "--logfile",
                           os.path.join(d, "log"), *extra]
        return self.restart(port)

    def restart(self, port):
        old = self.procs.get(port)
        if old is not None and old.poll() is None:
            raise RuntimeError(f"redis on {port} is still running")
        if old is not None:
            old.wait()
        p = subprocess.Popen(self.args[port], stdout=subprocess.DEVNULL)
        self.procs[port] = p
        wait(f"redis on {port}", lambda: cli(port, "PING") == "PONG")
        return p

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()  # SIGKILL ends a stopped (SIGSTOP) process too
        for p in self.procs.values():
            p.wait()


class Cluster:
    """A Redis Cluster of three primaries with one replica each, on free loopback ports."""

    def __init__(self, ps, node_timeout, *extra):
        self.ps = ps
        self.ports = [free_port() for _ in range(6)]
        for p in self.ports:
            ps.redis(p, "--cluster-enabled", "yes", "--cluster-config-file",
                     os.path.join(ps.tmp, f"nodes-{p}.conf"), "--cluster-node-timeout",
                     str(node_timeout), "--cluster-require-full-coverage", "no",
                     "--repl-diskless-sync-delay", "0", *extra)
        subprocess.run([CLI, "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                        "--cluster-replicas", "1", "--cluster-yes"], capture_output=True,
                       check=True)
        self.wait_healthy(60)
        self.primaries = self.current_primaries()
        self.url = (f"redis-cluster://127.0.0.1:{self.ports[0]}?"
                    + "&".join(f"node=127.0.0.1:{p}" for p in self.ports[1:]))

    def role(self, port):
        try:
            return cli(port, "ROLE", timeout=3).split("\n")[0]
        except subprocess.TimeoutExpired:
            return ""

    def myself(self, port):
        """This node's own line of `CLUSTER NODES`, split ([] when it does not answer)."""
        try:
            for line in cli(port, "CLUSTER", "NODES", timeout=3).splitlines():
                f = line.split()
                if len(f) > 2 and "myself" in f[2].split(","):
                    return f
        except subprocess.TimeoutExpired:
            pass
        return []

    def current_primaries(self):
        """The nodes that are up and, by their own account, primaries serving slots."""
        out = []
        for p in self.ports:
            if self.ps.procs[p].poll() is None:
                f = self.myself(p)
                if f and "master" in f[2].split(",") and len(f) > 8:
                    out.append(p)
        return out

    def healthy(self):
        """Every node up and `cluster_state:ok`, three primaries, three linked replicas."""
        for p in self.ports:
            if self.ps.procs[p].poll() is not None:
                return False
            if "cluster_state:ok" not in cli(p, "CLUSTER", "INFO", timeout=3):
                return False
        linked = sum(info(p, "replication").get("master_link_status") == "up"
                     for p in self.ports)
        primaries = sum(self.role(p) == "master" for p in self.ports)
        return linked == 3 and primaries == 3

    def wait_healthy(self, secs=60):
        wait("cluster ok with 3 primaries and 3 linked replicas", self.healthy, secs)

    def switched(self, victim):
        """A replica of the victim has become a primary (no other node than the ones that
        were primaries before the victim failed, nor the victim, is a primary)."""
        return any(p not in self.primaries and self.role(p) == "master"
                   for p in self.ports if p != victim)


def cluster(ps, node_timeout):
    """(url, primaries, switched(victim)) of a new Cluster (failover-blast.py's interface)."""
    c = Cluster(ps, node_timeout)
    return c.url, c.primaries, c.switched


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


async def read_response(reader):
    """(status, headers {lower name: [values]}, body bytes) of one HTTP/1.1 response."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n"):
            break
        if line == b"":
            raise ConnectionError("closed in the headers")
        k, _, v = line.decode("latin-1").partition(":")
        headers.setdefault(k.strip().lower(), []).append(v.strip())
    body = b""
    if "chunked" in ",".join(headers.get("transfer-encoding", [])).lower():
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    else:
        n = int(headers.get("content-length", ["0"])[0])
        if n:
            body = await reader.readexactly(n)
    return status, headers, body


async def http(reader, writer, method, path, cookie=None, body=None, headers=()):
    """One request on an open keep-alive connection: (status, headers, body bytes)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if cookie:
        head += f"Cookie: {cookie}\r\n"
    for k, v in headers:
        head += f"{k}: {v}\r\n"
    data = b""
    if body is not None:
        data = json.dumps(body).encode()
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    elif method in ("POST", "PUT", "DELETE"):
        head += "Content-Length: 0\r\n"
    writer.write(head.encode() + b"\r\n" + data)
    await writer.drain()
    return await read_response(reader)


def _encode(args):
    out = f"*{len(args)}\r\n"
    for a in args:
        a = str(a)
        out += f"${len(a.encode())}\r\n{a}\r\n"
    return out.encode()


def resp(port, *args, timeout=3.0):
    """One command to a Redis server over a fresh socket (cheaper than a redis-cli process):
    its reply as str / int / list / None; an error reply is returned as RespError."""
    return pipeline(port, [args], timeout)[0]


def pipeline(port, commands, timeout=3.0):
    """Several commands on one fresh connection, sent at once: their replies, in order."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"".join(_encode(c) for c in commands))
        f = s.makefile("rb")
        return [_resp_read(f) for _ in commands]


class RespError(str):
    pass


def _resp_read(f):
    line = f.readline()
    if not line:
        raise ConnectionError("closed")
    kind, rest = line[:1], line[1:].rstrip(b"\r\n")
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return RespError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:n]
        return data.decode("utf-8", "replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise ValueError(f"unexpected reply {line!r}")


def parse_info(text):
    out = {}
    for line in (text or "").splitlines():
        k, sep, v = line.partition(":")
        if sep and not k.startswith("#"):
            out[k.strip()] = v.strip()
    return out

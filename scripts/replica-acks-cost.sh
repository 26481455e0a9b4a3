#!/usr/bin/env bash
# What `RedisOptions::replica_acks(1)` costs a write (BENCHMARKS.md, "Replica acknowledgments"):
# one primary and its replica (Redis 7, loopback), the release axum demo on it with
# REPLICA_ACKS=0 and =1 in turn, and wrk sending `POST /counter` (one session's increment:
# a script write, then with acks a `WAIT 1`) and `GET /me` (a read: no `WAIT`) from 32
# connections. ROUNDS interleaved rounds of SECS seconds; prints each run and the median per
# cell. A measurement, not a test.
#
#   scripts/replica-acks-cost.sh [ROUNDS] [SECS]        defaults: 3 rounds x 5 s
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; SECS=${2:-5}
if [ -z "${REDIS_SERVER_BIN:-}" ]; then
  env_file="$(bash scripts/install-servers.sh)"
  # shellcheck disable=SC1090
  . "$env_file"
fi
cargo build --release -q -p axum-demo
target="${CARGO_TARGET_DIR:-target}"
DEMO="$target/release/axum-demo"
dir=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P=$(free_port); R=$(free_port)
"$REDIS_SERVER_BIN" --port "$P" --save '' --appendonly no --dir "$dir" --daemonize no >/dev/null &
pids+=($!)
"$REDIS_SERVER_BIN" --port "$R" --save '' --appendonly no --dir "$dir" --replicaof 127.0.0.1 "$P" \
  --daemonize no >/dev/null &
pids+=($!)
until [ "$("$REDIS_CLI_BIN" -p "$R" info replication 2>/dev/null | tr -d '\r' | sed -n 's/^master_link_status://p')" = up ]; do
  sleep 0.1
done
cat >"$dir/post.lua" <<'LUA'
wrk.method = "POST"
LUA
run() { # ACKS ROUTE -> "req/s p50 p99"
  local acks=$1 route=$2 port demo cookie out
  port=$(free_port)
  REDIS_URL="redis://127.0.0.1:$P" PORT=$port COOKIE_SECURE=0 REPLICA_ACKS=$acks \
    TESSERA_SECRET=$(printf '%064d' 7) RUST_LOG=error "$DEMO" >/dev/null 2>&1 &
  demo=$!
  until curl -s -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.05; done
  cookie=$(curl -s -D - -o /dev/null -H 'content-type: application/json' \
    -d '{"user_id":"bench"}' "http://127.0.0.1:$port/login" | tr -d '\r' |
    sed -n 's/^[Ss]et-[Cc]ookie: \(tessera=[^;]*\).*/\1/p')
  if [ "$route" = counter ]; then
    out=$(wrk -t2 -c32 -d"${SECS}s" --latency -s "$dir/post.lua" -H "Cookie: $cookie" \
      "http://127.0.0.1:$port/counter")
  else
    out=$(wrk -t2 -c32 -d"${SECS}s" --latency -H "Cookie: $cookie" "http://127.0.0.1:$port/me")
  fi
  kill "$demo"; wait "$demo" 2>/dev/null || true
  echo "$(echo "$out" | awk '/Requests\/sec/{print $2}') $(echo "$out" | awk '$1=="50%"{print $2}') $(echo "$out" | awk '$1=="99%"{print $2}') $(echo "$out" | awk '/Non-2xx/{print $4}')"
}
RAW="$dir/raw"
for r in $(seq "$ROUNDS"); do
  for route in counter me; do
    for acks in 0 1; do
      line=$(run "$acks" "$route")
      echo "round $r: $route REPLICA_ACKS=$acks: req/s p50 p99 non-2xx = $line" >&2
      echo "$route $acks $line" >>"$RAW"
    done
  done
done
python3 - "$RAW" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()
    rows[(f[0], f[1])].append((float(f[2]), f[3], f[4], f[5] if len(f) > 5 else "0"))
print("| route | REPLICA_ACKS | req/s (median of rounds) | p50 | p99 | ratio to 0 |")
print("|---|---:|---:|---:|---:|---:|")
for route in ("counter", "me"):
    base = None
    for acks in ("0", "1"):
        runs = sorted(rows[(route, acks)])
        rps, p50, p99, bad = runs[len(runs) // 2]
        base = base or rps
        name = "POST /counter" if route == "counter" else "GET /me"
        print(f"| {name} | {acks} | {rps:,.0f} | {p50} | {p99} | {rps / base:.2f}x |")
PY

#!/usr/bin/env bash
# One environment variable of the release axum demo, two values, side by side: wrk sending
# `POST /counter` (one session's increment, a script write) and `GET /me` (a read) from 32
# connections, ROUNDS interleaved rounds of SECS seconds, the median round per cell, with the
# demo's CPU time per request (/proc/<pid>/stat, user + system). A measurement, not a test.
# Called by scripts/replica-acks-cost.sh and scripts/metrics-cost.sh, which say what they set:
#   AB_VAR      the variable
#   AB_A, AB_B  its two values ("" = unset)
#   AB_REPLICA  1: the demo's Redis primary has a replica (REPLICA_ACKS needs one)
#
#   AB_VAR=X AB_A=0 AB_B=1 scripts/demo-ab.sh [ROUNDS] [SECS]     defaults: 3 rounds x 5 s
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; SECS=${2:-5}
: "${AB_VAR:?AB_VAR names the variable}"; AB_A=${AB_A-}; AB_B=${AB_B-}; AB_REPLICA=${AB_REPLICA:-0}
if [ -z "${REDIS_SERVER_BIN:-}" ]; then
  env_file="$(bash scripts/install-servers.sh)"
  # shellcheck disable=SC1090
  . "$env_file"
fi
if ! command -v wrk >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get install -y -qq wrk >/dev/null
fi
cargo build --release -q -p axum-demo
target="${CARGO_TARGET_DIR:-target}"
DEMO="$target/release/axum-demo"
dir=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P=$(free_port)
"$REDIS_SERVER_BIN" --port "$P" --save '' --appendonly no --dir "$dir" --daemonize no >/dev/null &
pids+=($!)
if [ "$AB_REPLICA" = 1 ]; then
  R=$(free_port)
  "$REDIS_SERVER_BIN" --port "$R" --save '' --appendonly no --dir "$dir" --replicaof 127.0.0.1 "$P" \
    --daemonize no >/dev/null &
  pids+=($!)
  until [ "$("$REDIS_CLI_BIN" -p "$R" info replication 2>/dev/null | tr -d '\r' | sed -n 's/^master_link_status://p')" = up ]; do
    sleep 0.1
  done
else
  until "$REDIS_CLI_BIN" -p "$P" ping >/dev/null 2>&1; do sleep 0.05; done
fi
cat >"$dir/post.lua" <<'LUA'
wrk.method = "POST"
LUA
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # VALUE ROUTE -> "req/s p50 p99 non-2xx cpu_us_per_req"
  local value=$1 route=$2 port demo cookie out t0 t1 n
  port=$(free_port)
  if [ -n "$value" ]; then export "$AB_VAR=$value"; else unset "$AB_VAR"; fi
  REDIS_URL="redis://127.0.0.1:$P" PORT=$port COOKIE_SECURE=0 \
    TESSERA_SECRET=$(printf '%064d' 7) RUST_LOG=error "$DEMO" >/dev/null 2>&1 &
  demo=$!
  until curl -s -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.05; done
  cookie=$(curl -s -D - -o /dev/null -H 'content-type: application/json' \
    -d '{"user_id":"bench"}' "http://127.0.0.1:$port/login" | tr -d '\r' |
    sed -n 's/^[Ss]et-[Cc]ookie: \(tessera=[^;]*\).*/\1/p')
  t0=$(cpu_ticks "$demo")
  if [ "$route" = counter ]; then
    out=$(wrk -t2 -c32 -d"${SECS}s" --latency -s "$dir/post.lua" -H "Cookie: $cookie" \
      "http://127.0.0.1:$port/counter")
  else
    out=$(wrk -t2 -c32 -d"${SECS}s" --latency -H "Cookie: $cookie" "http://127.0.0.1:$port/me")
  fi
  t1=$(cpu_ticks "$demo")
  kill "$demo"; wait "$demo" 2>/dev/null || true
  n=$(echo "$out" | awk '/requests in/{print $1}')
  echo "$(echo "$out" | awk '/Requests\/sec/{print $2}') $(echo "$out" | awk '$1=="50%"{print $2}') $(echo "$out" | awk '$1=="99%"{print $2}') $(echo "$out" | awk '/Non-2xx/{print $4}' | grep . || echo 0) $(python3 -c "import os; print(round(($t1-$t0)/os.sysconf('SC_CLK_TCK')*1e6/$n, 1))")"
}
RAW="$dir/raw"
for r in $(seq "$ROUNDS"); do
  for route in counter me; do
    for which in A B; do
      if [ "$which" = A ]; then value=$AB_A; else value=$AB_B; fi
      line=$(run "$value" "$route")
      echo "round $r: $route $AB_VAR=${value:-(unset)}: req/s p50 p99 non-2xx cpu-us/req = $line" >&2
      echo "$route $which $line" >>"$RAW"
    done
  done
done
python3 - "$RAW" "$AB_VAR" "${AB_A:-(unset)}" "${AB_B:-(unset)}" <<'PY'
import sys, collections
raw, var, a, b = sys.argv[1:]
rows = collections.defaultdict(list)
for line in open(raw):
    f = line.split()
    rows[(f[0], f[1])].append((float(f[2]), f[3], f[4], f[5], float(f[6])))
print(f"| route | {var} | req/s (median of rounds) | p50 | p99 | app CPU µs/req | ratio to {a} |")
print("|---|---:|---:|---:|---:|---:|---:|")
for route in ("counter", "me"):
    base = None
    for which, shown in (("A", a), ("B", b)):
        runs = sorted(rows[(route, which)])
        rps, p50, p99, bad, cpu = runs[len(runs) // 2]
        assert bad == "0", f"{route} {shown}: {bad} non-2xx answers"
        base = base or rps
        name = "POST /counter" if route == "counter" else "GET /me"
        print(f"| {name} | {shown} | {rps:,.0f} | {p50} | {p99} | {cpu} | {rps / base:.2f}x |")
PY

#!/usr/bin/env bash
# One implementation, one route, under wrk (not the bench's own load generator), on its own
# Redis: req/s, app CPU µs per request (/proc/<pid>/stat), Redis CPU µs per request (INFO cpu)
# and the commands Redis counted. The profiling loop behind BENCHMARKS.md's "Profile" section.
#
#   scripts/wrk-cpu.sh IMPL ROUTE [SECS]       e.g. scripts/wrk-cpu.sh tessera-axum read 5
#   PERF="--call-graph dwarf,16384 -F 499" scripts/wrk-cpu.sh tessera-axum login   # + perf.data
#   BIN=/tmp/tessera-bench-before scripts/wrk-cpu.sh tessera-axum read   # another build (A/B)
#
# IMPL: a name from bench/src/servers.rs; ROUTE: read | incr | login (login without a cookie,
# the others with one logged-in session's cookie). Needs wrk (apt-get install wrk) and, for
# PERF, perf. Builds bench/ in release first.
set -euo pipefail
cd "$(dirname "$0")/.."
IMPL=$1; ROUTE=$2; SECS=${3:-5}
# shellcheck disable=SC1090
. "$(bash scripts/install-servers.sh)"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
BIN=${BIN:-}
if [ -z "$BIN" ]; then (cd bench && cargo build --release -q); BIN=./bench/target/release/tessera-bench; fi
RPORT=6390; APORT=8090; OUT=${OUT:-/tmp/tessera-wrk}
mkdir -p "$OUT"
"$REDIS_SERVER_BIN" --port $RPORT --save '' --appendonly no --daemonize yes --logfile "$OUT/redis.log" >/dev/null
trap 'kill $SP 2>/dev/null; redis-cli -p $RPORT shutdown nosave >/dev/null 2>&1 || true' EXIT
sleep 0.3
"$BIN" serve "$IMPL" $APORT redis://127.0.0.1:$RPORT 60 >"$OUT/server.log" 2>&1 &
SP=$!
for _ in $(seq 50); do curl -s -o /dev/null localhost:$APORT/read && break; sleep 0.1; done
COOKIE=$(curl -s -D - -o /dev/null -X POST localhost:$APORT/login | grep -i set-cookie | sed 's/^[Ss]et-[Cc]ookie: //; s/;.*//' | tr -d '\r')
METHOD=POST; [ "$ROUTE" = read ] && METHOD=GET
{ echo "wrk.method = \"$METHOD\""; [ "$ROUTE" = login ] || echo "wrk.headers[\"Cookie\"] = \"$COOKIE\""; } >"$OUT/req.lua"
wrk -t1 -c32 -d2s -s "$OUT/req.lua" "http://127.0.0.1:$APORT/$ROUTE" >/dev/null  # warm-up
redis-cli -p $RPORT config resetstat >/dev/null
cpu_redis() { redis-cli -p $RPORT info cpu | awk -F: '/used_cpu_(sys|user):/{s+=$2} END{print s}'; }
cpu_app() { awk '{print $14+$15}' "/proc/$SP/stat"; }
R0=$(cpu_redis); A0=$(cpu_app)
if [ -n "${PERF:-}" ]; then
  # shellcheck disable=SC2086
  perf record $PERF -p $SP -o "$OUT/perf.data" -- sleep "$SECS" >/dev/null 2>&1 & PP=$!
fi
RES=$(wrk -t1 -c32 -d"${SECS}s" -s "$OUT/req.lua" "http://127.0.0.1:$APORT/$ROUTE")
[ -n "${PERF:-}" ] && wait $PP
R1=$(cpu_redis); A1=$(cpu_app)
N=$(echo "$RES" | awk '/requests in/{print $1}')
echo "$RES" | grep -E "Requests/sec|Non-2xx" || true
awk -v n="$N" -v a0="$A0" -v a1="$A1" -v r0="$R0" -v r1="$R1" -v i="$IMPL" -v r="$ROUTE" \
  'BEGIN { printf "%s %s: %d requests, app CPU %.1f us/req, Redis CPU %.1f us/req\n", i, r, n, (a1-a0)*10000/n, (r1-r0)*1e6/n }'
STATS=$(redis-cli -p $RPORT info commandstats | tr -d '\r' | grep '^cmdstat_' | grep -v -e '^cmdstat_info:' -e '^cmdstat_config' || true)
echo "$STATS" | cut -d, -f1,3 | sed 's/usec_per_call=/us_per_call=/' | tr '\n' ' '; echo
echo "$STATS" | awk -F'[=,]' -v n="$N" '{c+=$2} END{printf "commands per request: %.2f\n", c/n}'
[ -n "${PERF:-}" ] && echo "perf data: $OUT/perf.data"
exit 0

#!/usr/bin/env bash
# BENCHMARKS.md's wrk cross-check: every cell of the main table (implementation x route) under
# wrk via scripts/wrk-cpu.sh, ROUNDS interleaved rounds of SECS seconds (so drift hits every
# cell alike), the median round per cell, as a Markdown table with the ratio to the peer of the
# same stack (tower-sessions for axum, actix-session for actix), and tessera-axum against the
# floor of its own design (fred-floor-hash: the same hash and user index, hand-written on fred).
#
#   scripts/wrk-table.sh [ROUNDS] [SECS]        defaults: 3 rounds x 5 s
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; SECS=${2:-5}
(cd bench && cargo build --release -q)
BIN=$PWD/bench/target/release/tessera-bench; export BIN
CELLS=(
  "read bare-axum" "read tower-sessions" "read tessera-axum" "read tessera-axum-cache"
  "read tessera-axum-cache-push" "read bare-actix" "read actix-session" "read tessera-actix"
  "read tessera-actix-cache-push"
  "incr tower-sessions" "incr tessera-axum" "incr actix-session" "incr tessera-actix"
  "login tower-sessions" "login tessera-axum" "login actix-session" "login tessera-actix"
  "read fred-floor-hash" "incr fred-floor-hash" "login fred-floor-hash"
)
RAW=$(mktemp)
for r in $(seq "$ROUNDS"); do
  for c in "${CELLS[@]}"; do
    set -- $c
    out=$(bash scripts/wrk-cpu.sh "$2" "$1" "$SECS" 2>&1) || echo "wrk-cpu.sh $2 $1 failed: $out" >&2
    rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
    app=$(echo "$out" | sed -n 's/.*app CPU \([0-9.]*\) us.*/\1/p')
    red=$(echo "$out" | sed -n 's/.*Redis CPU \([0-9.]*\) us.*/\1/p')
    cmd=$(echo "$out" | sed -n 's/commands per request: //p')
    echo "$1 $2 $r ${rps:-0} ${app:-0} ${red:-0} ${cmd:-0}" >>"$RAW"
    echo "round $r: $1 $2 $rps req/s, app $app, Redis $red, cmds $cmd" >&2
  done
done
python3 - "$RAW" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    route, impl, _, rps, app, red, cmd = line.split()
    rows[(route, impl)].append((float(rps), float(app), float(red), float(cmd)))
med = {k: sorted(v)[len(v) // 2] for k, v in rows.items()}  # the median round by req/s
peer = lambda impl: 'actix-session' if 'actix' in impl else 'tower-sessions'
bare = lambda impl: 'bare-actix' if 'actix' in impl else 'bare-axum'
print('| route | impl | req/s | vs peer | app CPU µs/req | Redis CPU µs/req | cmds/req |')
print('|---|---|---:|---:|---:|---:|---:|')
for (route, impl), (rps, app, red, cmd) in med.items():
    p = med.get((route, peer(impl)))
    ratio = f'{rps / p[0]:.2f}x' if p else ''
    print(f'| {route} | {impl} | {rps:,.0f} | {ratio} | {app:.1f} | {red:.1f} | {cmd:.2f} |')
print()
print('The machinery (app CPU of a near-cache hit in Push mode minus the bare framework\'s, same route):')
for impl in ('tessera-axum-cache-push', 'tessera-actix-cache-push'):
    if ('read', impl) in med and ('read', bare(impl)) in med:
        print(f'- {impl}: {med[("read", impl)][1] - med[("read", bare(impl))][1]:.1f} µs/req')
print()
print('tessera-axum against the floor of its own design (fred-floor-hash: a hand-written hash per session')
print('and user index on fred, none of the checks), same route:')
for route in ('read', 'incr', 'login'):
    t, f, p = med.get((route, 'tessera-axum')), med.get((route, 'fred-floor-hash')), med.get((route, 'tower-sessions'))
    if t and f and p:
        print(f'- {route}: the floor is {f[0] / p[0]:.2f}x tower-sessions; tessera-axum is {t[0] / f[0]:.2f}x the floor '
              f'(app CPU {t[1]:.1f} against {f[1]:.1f} µs/req, Redis CPU {t[2]:.1f} against {f[2]:.1f})')
PY
rm -f "$RAW"

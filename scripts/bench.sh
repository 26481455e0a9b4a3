#!/usr/bin/env bash
# The benchmark against the peer crates, side by side in one run on one local Redis:
# installs the servers, an SVG rasterizer and wrk if missing, builds bench/ (its own workspace, so
# the peer crates never enter the normal build), runs it, renders the plot.
# Three runs (all, pinned, two instances); extra arguments go to each (defaults: --rounds 3
# --secs 4 --sessions 10000 --conns 32).
set -euo pipefail
cd "$(dirname "$0")/.."
env_file="$(bash scripts/install-servers.sh)"
# shellcheck disable=SC1090
. "$env_file"
if ! command -v rsvg-convert >/dev/null 2>&1 || ! command -v wrk >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends librsvg2-bin wrk >/dev/null
fi
(cd bench && cargo build --release)
# 1. Every implementation and route, side by side.
./bench/target/release/tessera-bench run --out bench/results "$@"
rsvg-convert -o bench/results/plot.png bench/results/plot.svg
# 2. Redis alone on CPU 1 (apps and load generator on CPU 0): the app's cost is not hidden by
#    Redis sharing its core.
./bench/target/release/tessera-bench run --pin --out bench/results/pinned \
  --impls bare-axum,tessera-axum,tessera-axum-cache,tessera-axum-cache-push,tower-sessions,bare-actix,tessera-actix,tessera-actix-cache-push,actix-session \
  --routes read,incr,login,mix "$@"
# 3. Two app processes per implementation behind a round-robin "load balancer" (each
#    connection alternates between them): the near-cache's invalidations cross instances.
./bench/target/release/tessera-bench run --instances 2 --out bench/results/two-instances \
  --impls tessera-axum,tessera-axum-cache,tessera-axum-cache-push,tower-sessions \
  --routes read,mix "$@"
# 4. The cross-check under wrk (not the bench's load generator): every cell of run 1's main
#    routes, and the machinery row (a near-cache hit in Push mode minus the bare framework).
bash scripts/wrk-table.sh 3 5 >bench/results/wrk.md
echo "wrote bench/results/{results.md,plot.png,wrk.md}, bench/results/pinned/results.md, bench/results/two-instances/results.md"

#!/usr/bin/env bash
# The benchmark against the peer crates, side by side in one run on one local Redis:
# installs the servers and an SVG rasterizer if missing, builds bench/ (its own workspace, so
# the peer crates never enter the normal build), runs it, renders the plot.
# Extra arguments go to the bench (defaults: --rounds 3 --secs 4 --sessions 10000 --conns 32).
set -euo pipefail
cd "$(dirname "$0")/.."
env_file="$(bash scripts/install-servers.sh)"
# shellcheck disable=SC1090
. "$env_file"
if ! command -v rsvg-convert >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends librsvg2-bin >/dev/null
fi
(cd bench && cargo build --release)
./bench/target/release/tessera-bench run --out bench/results "$@"
rsvg-convert -o bench/results/plot.png bench/results/plot.svg
echo "wrote bench/results/results.md and bench/results/plot.png"

#!/usr/bin/env bash
# The soak with a history checker (issue #26): both demos' engines (axum-demo, actix-demo; three
# instances, one of them restarted by the fault schedule) on a Redis Cluster 3x2 under a
# recorded mix of many clients, with primaries SIGKILLed and SIGSTOPped, the near-cache's
# tracking connections killed and an app instance restarted meanwhile; then a checker proves
# from the history that no acknowledged write was lost, nothing answered 503 + Retry-After was
# applied, no read after an end was served, increments are exact, ended sessions leave the
# device list and publish one end event, and memory and connections stay flat
# (scripts/soak_check.py lists the rules). Prints a Markdown report; exits non-zero on any
# violation. A bench command, not part of the test command (scripts/test.sh runs 2 minutes).
#
#   scripts/soak.sh [MINUTES]   (default 10; extra arguments go to scripts/soak.py,
#                               e.g. --clients 48 --seed 7 --out /tmp/soak-run)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-10}"
[ $# -gt 0 ] && shift
if [ -z "${REDIS_SERVER_BIN:-}" ]; then
  env_file="$(bash scripts/install-servers.sh)"
  # shellcheck disable=SC1090
  . "$env_file"
fi
cargo build -p axum-demo -p actix-demo
target="${CARGO_TARGET_DIR:-target}"
exec python3 scripts/soak.py --minutes "$minutes" --axum "$target/debug/axum-demo" \
  --actix "$target/debug/actix-demo" "$@"

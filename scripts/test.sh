#!/usr/bin/env bash
# The whole test suite, one command (README, and .ci/run):
#   1. cargo test --workspace
#   2. the JavaScript client's tests (clients/js), against the engine binary
#      that step 1 built: npm ci (from package-lock.json) when node_modules is
#      missing or older than the lock, the build, then node's test runner.
# Ends with one line for both: "tests: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0

echo "== cargo test --workspace"
cargo test --workspace 2>&1 | tee -a "$log" || status=1

echo "== clients/js (node $(node --version 2>/dev/null || echo missing))"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "FAILED: node and npm (Node 20 or later) are needed for clients/js" | tee -a "$log"
  echo "# fail 1" >>"$log"
  status=1
else
  cargo build -q -p shardcast || status=1
  export SHARDCAST_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/shardcast"
  (
    set -e
    cd clients/js
    if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
      npm ci --no-audit --no-fund --loglevel=error
      touch node_modules
    fi
    npm run --silent build
    # One file at a time (each starts its own engines); every test has a timeout.
    node --test --test-reporter=tap --test-concurrency=1 --test-timeout=180000 test/*.test.mjs
  ) 2>&1 | tee -a "$log" || status=1
fi

awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i == "passed;") p += $(i-1); if ($i == "failed;") f += $(i-1) } }
     /^# pass [0-9]+$/ { p += $3 }
     /^# fail [0-9]+$/ { f += $3 }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit $status

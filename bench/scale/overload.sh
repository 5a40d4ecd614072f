#!/usr/bin/env bash
# Fan-out past what the box sustains: N subscribers on SHARDS (default 2) io_uring shards (direct
# descriptors), 1 KiB publications at each RATE for 10 s, then up to 20 s of drain.
# Prints the loadgen's summary and the engine's CQ-overflow warnings per run.
# Loopback only, every run bounded (--max-seconds, timeout).
# Usage: bench/scale/overload.sh [N] [port] [rates...]   (default 38000 28710 2 5 10 20)
# With 2 shards each holds about 19,000 connections, more than the default CQ
# (16,384): one publication is more sends than the CQ holds.
# SHARDCAST_BIN / LOADGEN_BIN override the binaries (e.g. to compare builds).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-38000}; P=${2:-28710}; shift 2 || true
SHARDS=${SHARDS:-2}
RATES=("$@"); [ ${#RATES[@]} -gt 0 ] || RATES=(2 5 10 20)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "${SHARDCAST_BIN:-}" ] || [ -z "${LOADGEN_BIN:-}" ]; then
  cargo build --release -q -p shardcast -p shardcast-loadgen
fi
S=${SHARDCAST_BIN:-$CARGO_TARGET_DIR/release/shardcast}
L=${LOADGEN_BIN:-$CARGO_TARGET_DIR/release/shardcast-loadgen}
OUT=${OUT:-$(mktemp -d)}
for R in "${RATES[@]}"; do
  "$S" --listen 127.0.0.1:$P --shards "$SHARDS" --driver uring > "$OUT/engine.$R.log" 2>&1 & PID=$!
  trap 'kill $PID 2>/dev/null || true' EXIT
  sleep 1.5
  echo "== rate $R/s x $N subscribers = $((R * N)) deliveries/s offered (engine RSS at start $(awk '/VmRSS/{print $2}' /proc/$PID/status) kB)"
  timeout 150 nice -n "${LOADGEN_NICE:-19}" "$L" fanout -n "$N" --ramp 5000 --payload-bytes 1024 --rate "$R" \
    --duration 10 --drain 20 --workers 3 --threads 1 --source-ips 127.0.0.2-127.0.0.41 \
    --settle 2 --target-pid "$PID" --targets 127.0.0.1:$P --max-seconds 130 -q \
    --json "$OUT/fanout.$R.json" || echo "loadgen exit status $?"
  python3 - "$OUT/fanout.$R.json" <<'PY' || true
import json,sys
j=json.load(open(sys.argv[1])); f=j.get("fanout",{}); l=j.get("latency",{}); c=j.get("counters",{})
print("deliveries/s %s  published %s  delivered %s / %s  missing %s  p50 %.0f ms  p99 %.0f ms  up %s  closed %s  errors %s  cpu %s" % (
  f.get("deliveries_per_s"), f.get("published"), f.get("deliveries"), f.get("expected_deliveries"),
  f.get("missing"), l.get("p50_us",0)/1000, l.get("p99_us",0)/1000, c.get("up"), c.get("closed"),
  j.get("errors"), j.get("cpu")))
PY
  echo "engine: $(grep -c 'CQ overflowed' "$OUT/engine.$R.log" || true) CQ-overflow warnings"
  kill $PID; wait $PID 2>/dev/null || true
  trap - EXIT
done
echo "results in $OUT"

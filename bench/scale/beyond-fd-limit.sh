#!/usr/bin/env bash
# One shardcast process holding more connections than its 20,000-descriptor limit:
# io_uring direct descriptors are capped per ring, so 4 shards take 4 x 20,000.
# Runs an idle hold and a steady fan-out at N connections (default 72,000),
# loadgen in 5 worker processes (each under the limit), loopback only, bounded.
# Usage: bench/scale/beyond-fd-limit.sh [N] [port]
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-72000}; P=${2:-28610}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p shardcast -p shardcast-loadgen
B=$CARGO_TARGET_DIR/release
run() {
  "$B/shardcast" --listen 127.0.0.1:$P --shards 4 --driver uring > /dev/null 2>&1 & PID=$!
  trap 'kill $PID 2>/dev/null || true' EXIT
  sleep 1.5
  timeout 200 nice -n 19 "$B/shardcast-loadgen" "$@" -n "$N" --ramp 3000 --workers 5 --threads 1 \
    --source-ips 127.0.0.2-127.0.0.61 --settle 2 --target-pid "$PID" --targets 127.0.0.1:$P \
    --max-seconds 170 -q
  echo "server: $(ls /proc/$PID/fd | wc -l) ordinary descriptors open"
  kill $PID; wait $PID 2>/dev/null || true
  trap - EXIT
}
echo "== idle: $N subscribed connections"
run idle --duration 5
echo "== fan-out: $N subscribers, 2 publications/s of 1 KiB for 10 s"
run fanout --payload-bytes 1024 --rate 2 --duration 10 --drain 20

#!/usr/bin/env bash
# Server RSS per idle subscribed connection: from start to 15,000, and the
# marginal cost between 5,000 and 15,000 (which leaves out one-time warm-up:
# allocator heaps, pools, vectors reaching their working size).
# Usage: bench/mem/idle-rss.sh [uring|epoll] [port]. Loopback only, bounded in time.
set -euo pipefail
cd "$(dirname "$0")/../.."
D=${1:-uring}; P=${2:-28580}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p shardcast -p shardcast-loadgen
B=$CARGO_TARGET_DIR/release; L=$B/shardcast-loadgen
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
"$B/shardcast" --listen 127.0.0.1:$P --driver "$D" > /dev/null 2>&1 & PID=$!
pids=("$PID"); trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
sleep 1; r0=$(rss $PID)
timeout 150 "$L" idle -q -n 5000 --ramp 3000 --source-ips 127.0.0.2-127.0.0.20 --duration 80 --settle 1 \
  --channels bench --targets 127.0.0.1:$P > /dev/null 2>&1 & pids+=($!)
sleep 14; r1=$(rss $PID)
timeout 150 "$L" idle -q -n 10000 --ramp 3000 --source-ips 127.0.0.21-127.0.0.60 --duration 40 --settle 1 \
  --channels bench --targets 127.0.0.1:$P > /dev/null 2>&1 & pids+=($!)
sleep 24; r2=$(rss $PID)
echo "$D: RSS start $r0 KiB, 5,000 conns $r1 KiB, 15,000 conns $r2 KiB"
echo "$D: from start $(( (r2 - r0) * 1024 / 15000 )) B/conn; marginal 5k->15k $(( (r2 - r1) * 1024 / 10000 )) B/conn"

#!/usr/bin/env bash
# Fast subscribers' latency with and without 10% of subscribers that stop reading.
# Usage: bench/slow/slow-readers.sh [driver] [fast subscribers] [rate msgs/s] [payload bytes]
# Loopback only; every process is bounded in time and stopped by pid.
set -euo pipefail
cd "$(dirname "$0")/../.."
DRIVER=${1:-uring}; FAST=${2:-13500}; RATE=${3:-4}; PAYLOAD=${4:-4096}
SLOW=$((FAST / 9))            # 10% of all subscribers
PORT=${PORT:-28611}
SNDBUF=${SNDBUF:-65536}   # io.send_buffer_bytes for the server (its default); 0 = kernel autotuning
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p shardcast -p shardcast-loadgen
B=$CARGO_TARGET_DIR/release
OUT=${OUT:-$CARGO_TARGET_DIR/slow-readers}; mkdir -p "$OUT"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

run() { # label, with_slow
  printf "[io]\nsend_buffer_bytes = %s\n" "$SNDBUF" > "$OUT/server.toml"
  "$B/shardcast" -c "$OUT/server.toml" --listen 127.0.0.1:$PORT --driver "$DRIVER" --queue-bytes-max 65536 > "$OUT/$1.server.log" 2>&1 &
  local srv=$!; pids+=("$srv"); sleep 1
  local st=""
  if [ "$2" = 1 ]; then
    timeout 120 python3 bench/slow/stall.py 127.0.0.1:$PORT bench "$SLOW" 60 > "$OUT/$1.stall.log" 2>&1 &
    st=$!; pids+=("$st")
    until grep -q holding "$OUT/$1.stall.log" 2>/dev/null; do sleep 0.5; done
  fi
  timeout 150 "$B/shardcast-loadgen" fanout -q -n "$FAST" --ramp 3000 --workers 2 \
    --source-ips 127.0.0.2-127.0.0.60 --targets 127.0.0.1:$PORT --channels bench \
    --rate "$RATE" --payload-bytes "$PAYLOAD" --duration 20 --settle 2 --json "$OUT/$1.json" > "$OUT/$1.txt" 2>&1 || true
  local closes
  closes=$(curl -s 127.0.0.1:$PORT/metrics | awk '/^shardcast_slow_consumer_closes_total/ {s += $2} END {print s + 0}')
  echo "$1: slow subscribers $([ "$2" = 1 ] && echo "$SLOW" || echo 0), closed with 4008: $closes"
  grep -E "^latency|deliveries|missing" "$OUT/$1.txt" || tail -5 "$OUT/$1.txt"
  [ -n "$st" ] && kill "$st" 2>/dev/null || true
  kill -TERM "$srv"; wait "$srv" || true
}
echo "driver $DRIVER, $FAST fast subscribers, $RATE msgs/s of $PAYLOAD B, server --queue-bytes-max 65536, send_buffer_bytes $SNDBUF"
run baseline 0
run with-slow 1

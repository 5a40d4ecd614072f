#!/usr/bin/env bash
# Saturated fan-out, single node against a two-node cluster (one Redis), side by
# side in one run: 15,000 subscribers (split over both nodes in the cluster),
# 100 publications of 1 KiB offered in 1 s through the first node's HTTP API.
# Needs redis-server. Loopback only, bounded. Usage: bench/scale/cluster-fanout.sh [reps]
set -euo pipefail
cd "$(dirname "$0")/../.."
REPS=${1:-2}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p shardcast -p shardcast-loadgen
B=$CARGO_TARGET_DIR/release
RPORT=16390; P0=18190; P1=18191; P2=18192
pids=(); trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
redis-server --port $RPORT --bind 127.0.0.1 --save '' --appendonly no > /dev/null 2>&1 & pids+=($!)
sleep 0.5
cfg=$(mktemp); printf '[cluster]\nredis = "127.0.0.1:%s"\n' $RPORT > "$cfg"
load() {
  timeout 150 nice -n 19 "$B/shardcast-loadgen" fanout -n 15000 --ramp 3000 --payload-bytes 1024 \
    --rate 100 --duration 1 --drain 30 --workers 2 --threads 1 --source-ips 127.0.0.2-127.0.0.31 \
    --settle 2 -q --max-seconds 120 --targets "$1" 2>&1 | grep -E 'fanout:|missing'
}
for rep in $(seq 1 "$REPS"); do
  "$B/shardcast" --listen 127.0.0.1:$P0 > /dev/null 2>&1 & s=$!; sleep 1
  echo "single node (2 shards), run $rep:"; load 127.0.0.1:$P0
  kill $s; wait $s 2>/dev/null || true
  "$B/shardcast" --listen 127.0.0.1:$P1 --shards 1 --config "$cfg" > /dev/null 2>&1 & n1=$!
  "$B/shardcast" --listen 127.0.0.1:$P2 --shards 1 --config "$cfg" > /dev/null 2>&1 & n2=$!
  sleep 1
  echo "cluster, 2 nodes x 1 shard + Redis, run $rep:"; load 127.0.0.1:$P1,127.0.0.1:$P2
  kill $n1 $n2; wait $n1 $n2 2>/dev/null || true
done
rm -f "$cfg"

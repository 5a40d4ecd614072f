#!/usr/bin/env bash
# Engine CPU per connection over a ramp: many one-ring shards against a few
# shards of many rings (io.rings_per_shard), side by side and alternated.
# Loopback only; each run is bounded (--max-seconds) and stops its engine.
# Usage: bench/scale/rings-vs-shards.sh [N] [RUNS]      (100000, 3)
# Environment: CONFIGS (space-separated SHARDSxRINGS, default "56x1 2x28 6x1"),
#              RAMP (10000/s), SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-100000}
RUNS=${2:-3}
CONFIGS=${CONFIGS:-"56x1 2x28 6x1"}
RAMP=${RAMP:-10000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
B=$CARGO_TARGET_DIR/release
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release -q -p shardcast -p shardcast-loadgen
TMP=$(mktemp -d /tmp/rings-vs-shards.XXXXXX)
EP=""
trap '[ -n "$EP" ] && kill "$EP" 2>/dev/null; true' EXIT
# Each ring may take the whole descriptor limit; the shard's cap is their sum.
printf '[limits]\nconns_per_shard_max = %d\n' $(( 64 * $(ulimit -Sn) )) > "$TMP/engine.toml"
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
switches() { cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ {s += $2} END {print s}'; }
WORKERS=$(( (N + 17999) / 18000 ))
echo "N=$N ramp=$RAMP/s loadgen workers=$WORKERS $(nproc) cores, $(uname -r)"
printf '%-8s %-4s %12s %14s %18s %12s %10s\n' config run "engine cpu s" "µs per conn" "context switches" "loadgen cpu" failed
for run in $(seq 1 "$RUNS"); do
  for c in $CONFIGS; do
    shards=${c%x*}; rings=${c#*x}
    port=$(( 29000 + RANDOM % 1000 ))
    "$B/shardcast" --listen "127.0.0.1:$port" --shards "$shards" --rings-per-shard "$rings" \
      --driver uring --config "$TMP/engine.toml" > "$TMP/engine-$c-$run.log" 2>&1 &
    EP=$!
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health" > /dev/null && break; sleep 0.1; done
    c0=$(cpu "$EP"); s0=$(switches "$EP")
    "$B/shardcast-loadgen" idle -n "$N" --ramp "$RAMP" --workers "$WORKERS" --threads 1 \
      --source-ips 127.0.0.2-127.0.0.61 --targets "127.0.0.1:$port" --duration 1 --settle 1 \
      --connect-timeout 60 --max-seconds 120 -q > "$TMP/loadgen-$c-$run.txt" 2>&1 || true
    c1=$(cpu "$EP"); s1=$(switches "$EP")
    kill "$EP"; wait "$EP" 2>/dev/null || true; EP=""
    l=$TMP/loadgen-$c-$run.txt
    printf '%-8s %-4s %12s %14s %18s %12s %10s\n' "$c" "$run" \
      "$(awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.2f", (b - a) / 100}')" \
      "$(awk -v a="$c0" -v b="$c1" -v n="$N" 'BEGIN {printf "%.1f", (b - a) * 10000 / n}')" \
      "$(( s1 - s0 ))" \
      "$(grep -o 'loadgen [0-9.]* s' "$l" | tail -1 | cut -d' ' -f2)" \
      "$(grep -o 'failed [0-9]*' "$l" | head -1 | cut -d' ' -f2)"
  done
done
echo "logs: $TMP"

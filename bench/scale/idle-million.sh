#!/usr/bin/env bash
# A million idle subscribed connections (one channel each) held with heartbeats
# at their defaults: the idle bytes per connection at a million, and what the
# heartbeats cost there. Same layout as million.sh: a network namespace with a
# large established hash, one engine shard of 56 io_uring rings on core 0, the
# load generator (56 processes, 60 source addresses) on the last core.
# One bounded command (about 4 minutes; 7 at most) that stops what it started.
# Usage: bench/scale/idle-million.sh [N]     Environment: OUT, HOLD (s), PORT, SKIP_BUILD=1
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-1000000}
OUT=${OUT:-$PWD/target/idle-million}
HOLD=${HOLD:-60}
PORT=${PORT:-28900}
RINGS=${RINGS:-56}
WORKERS=$(( (N + 17999) / 18000 ))
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
B=$CARGO_TARGET_DIR/release
if [ -z "${SHARDCAST_NETNS:-}" ]; then
  [ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release -q -p shardcast -p shardcast-loadgen
  NS=shardcast-idle-$$
  OLD=$(cat /proc/sys/net/ipv4/tcp_child_ehash_entries)
  sysctl -qw net.ipv4.tcp_child_ehash_entries=4194304
  ip netns add "$NS"
  sysctl -qw net.ipv4.tcp_child_ehash_entries="$OLD"
  trap 'ip netns del "$NS" 2>/dev/null || true' EXIT
  # Host-wide: loopback packets wait in each CPU's input queue (million.sh).
  [ "$(cat /proc/sys/net/core/netdev_max_backlog)" -ge 262144 ] \
    || sysctl -qw net.core.netdev_max_backlog=262144
  ip netns exec "$NS" ip link set lo up
  set +e
  SHARDCAST_NETNS=$NS ip netns exec "$NS" "$0" "$@"
  exit $?
fi
mkdir -p "$OUT"
sysctl -qw net.core.somaxconn=16384 net.ipv4.tcp_max_syn_backlog=32768
printf '[limits]\nconns_per_shard_max = %d\n' $(( RINGS * $(ulimit -Sn) )) > "$OUT/engine.toml"
EPID=""
trap 'if [ -n "$EPID" ]; then kill "$EPID" 2>/dev/null; sleep 2; kill -9 "$EPID" 2>/dev/null; fi; true' EXIT
ENGINE=("$B/shardcast" --listen "127.0.0.1:$PORT" --shards 1 --rings-per-shard "$RINGS"
  --driver uring --config "$OUT/engine.toml")
echo "== ${ENGINE[*]}"
"${ENGINE[@]}" > "$OUT/engine.log" 2>&1 &
EPID=$!
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$PORT/health" > /dev/null 2>&1 && break; sleep 0.1; done
echo "engine_rss_start_kb=$(awk '/VmRSS/ {print $2}' "/proc/$EPID/status")" | tee "$OUT/engine.env"
LOADGEN=(taskset -c $(( $(nproc) - 1 )) "$B/shardcast-loadgen" idle -n "$N" --ramp 10000
  --workers "$WORKERS" --threads 1 --source-ips 127.0.0.2-127.0.0.61 --source-ports 10000-60999
  --targets "127.0.0.1:$PORT" --target-pid "$EPID" --connect-timeout 60 --settle 5
  --duration "$HOLD" --coalesce-ms 10 --max-seconds 380 --json "$OUT/idle.json")
echo "== ${LOADGEN[*]}"
set +e
timeout 420 "${LOADGEN[@]}" > "$OUT/summary.txt" 2> "$OUT/loadgen.log"
echo "loadgen exit status $?"
set -e
curl -s -m 5 "http://127.0.0.1:$PORT/metrics" \
  | grep -E '^shardcast_(heartbeat_closes_total|websocket_connections)' | tee -a "$OUT/engine.env"
cat "$OUT/summary.txt"

#!/usr/bin/env bash
# One box, one million connections: engine and load generator on this machine,
# loopback only. One bounded command (15 minutes at most) that stops everything
# it started:
#   1. host: `shardcast tune --apply --target N` (prints what changed), then
#      `shardcast doctor` predicts the memory of the run;
#   2. engine: SHARDS io_uring shards of RINGS rings each on direct descriptors
#      (each ring under the 20,000-descriptor limit; one thread per shard drives
#      its rings, docs/ARCHITECTURE.md "Many rings on few cores"); its RSS at start;
#   3. loadgen: WORKERS processes (each under the limit), 60 source addresses,
#      ramp at RAMP/s with live progress, then the suite on the same connections:
#      (a) 10 paced broadcasts of 1 KiB and 10 back to back, (b) 500 publications/s
#      over 10,000 channels of N/10,000 for 30 s, (c) a 60 s hold with heartbeats,
#      (d) SIGTERM and the drain;
#   4. the figures: results in $OUT, and (for N >= 1,000,000 or DOCS=1) the
#      "One million connections" section of docs/benchmarks.md.
# Usage: bench/scale/million.sh [N]      (N defaults to 1000000)
# By default (NETNS=1) it runs inside a network namespace of its own, created
# with an established-connections hash of 4 x N buckets: the host's table
# (262,144 here, sized at boot) holds both ends of every loopback connection,
# and at 560,000 connections its chains made lookups the top kernel cost.
# Environment: NETNS=0|1, LOADGEN_CPUS (taskset list, empty: any), BACKLOG, COALESCE_MS, SOURCE_PORTS (LO-HI, or empty), SHARDS, RINGS, WORKERS, RAMP, PORT, OUT, CONFIG (engine TOML), SKIP_BUILD=1,
#              SKIP_TUNE=1, DOCS=0|1, HOLD (s), STEADY (s), BROADCASTS (paced, then as many in a burst), DRAIN_S (the engine's drain window).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
N=${1:-${N:-1000000}}
# One shard of 56 rings, pinned to core 0 (the engine pins shard i to core i),
# and the load generator on the last core. Sharing both cores between the
# engine's threads and 56 client processes, the scheduler gave each runnable
# thread an equal turn: the shard threads waited on the run queue about as long
# as they ran, their sockets' reads fell tens of seconds behind, and the ramp
# collapsed at 570,000-880,000; split, each side has a core of its own and the
# million comes up (docs/benchmarks.md, "One million connections").
SHARDS=${SHARDS:-1}
RINGS=${RINGS:-56}
LOADGEN_CPUS=${LOADGEN_CPUS-$(( $(nproc) - 1 ))}
WORKERS=${WORKERS:-$(( (N + 17999) / 18000 ))}
RAMP=${RAMP:-10000}
PORT=${PORT:-28800}
HOLD=${HOLD:-60}
BROADCASTS=${BROADCASTS:-10}
STEADY=${STEADY:-30}
SPREAD=${SPREAD:-10000}
# The drain window: a WebSocket closed with 4001 costs both ends a close frame
# each and the sockets' teardown, three times a delivery's work; a million of
# them over the default 10 s is 300,000 operations a second, three times what
# one core does here (measured: 472,131 closed in 22 s, then the bound hit).
# One second per 15,000 connections, 10 s at least.
DRAIN_S=${DRAIN_S:-$(( N / 15000 > 10 ? N / 15000 : 10 ))}
# Load-generator event loops sleep this long after a batch (--coalesce-ms): 56
# processes woken once per event spent a fifth of their CPU, and the engine a
# tenth of its, in wake-ups and context switches (docs/benchmarks.md).
COALESCE_MS=${COALESCE_MS:-10}
SOURCES=127.0.0.2-127.0.0.61
# Source ports the load generator assigns itself (empty: the kernel's choice
# at connect, whose search grows with the connections a source address holds).
SOURCE_PORTS=${SOURCE_PORTS-10000-60999}
OUT=${OUT:-$ROOT/target/million}
DOCS=${DOCS:-$([ "$N" -ge 1000000 ] && echo 1 || echo 0)}
BOUND=${BOUND:-900}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# Loopback packets wait in each CPU's input queue for softirq; with both cores
# full, softirq runs in ksoftirqd, a thread among 60, and a queue of 4,096
# overflowed: every drop a SYN or segment resent a second later, and the ramp
# of one attempt fell to a few hundred connections a second with the engine
# idle. The queue is host-wide (not visible in a namespace), so set here.
BACKLOG=${BACKLOG:-262144}
if [ -z "${SHARDCAST_NETNS:-}" ] && [ "$(cat /proc/sys/net/core/netdev_max_backlog)" -lt "$BACKLOG" ]; then
  echo "== net.core.netdev_max_backlog: $(cat /proc/sys/net/core/netdev_max_backlog) → $BACKLOG"
  sysctl -qw net.core.netdev_max_backlog="$BACKLOG"
fi
# Host-wide, so read here: a namespace does not show it.
export SHARDCAST_BACKLOG=${SHARDCAST_BACKLOG:-$(cat /proc/sys/net/core/netdev_max_backlog)}
# Packets dropped by the input queues so far (column 2 of softnet_stat, all CPUs).
softnet_drops() {
  local s=0 _a d _r
  while read -r _a d _r; do s=$(( s + 16#$d )); done < /proc/net/softnet_stat
  echo "$s"
}
if [ -z "${SHARDCAST_NETNS:-}" ]; then
  # Host-wide settings (tcp_mem, netdev_max_backlog, file-max) are neither
  # visible nor writable inside a network namespace: apply them here, before
  # entering it; the namespace's own ones are applied again inside.
  if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release -q -p shardcast -p shardcast-loadgen
    export SKIP_BUILD=1
  fi
  if [ "${SKIP_TUNE:-0}" != 1 ]; then
    echo "== host-wide: shardcast tune --apply --target $N"
    "$CARGO_TARGET_DIR/release/shardcast" tune --apply --target "$N" | grep -v "skipped\|unchanged" || true
  fi
  export SHARDCAST_TCP_MEM="$(cat /proc/sys/net/ipv4/tcp_mem)"
fi
if [ "${NETNS:-1}" = 1 ] && [ -z "${SHARDCAST_NETNS:-}" ]; then
  NS=shardcast-million-$$
  EHASH=1
  while [ "$EHASH" -lt $(( N * 4 )) ] && [ "$EHASH" -lt 16777216 ]; do EHASH=$(( EHASH * 2 )); done
  # Read by the kernel when a namespace is created: set, create, restore.
  OLD=$(cat /proc/sys/net/ipv4/tcp_child_ehash_entries)
  sysctl -qw net.ipv4.tcp_child_ehash_entries="$EHASH"
  ip netns add "$NS"
  sysctl -qw net.ipv4.tcp_child_ehash_entries="$OLD"
  trap 'ip netns del "$NS" 2>/dev/null || true' EXIT
  ip netns exec "$NS" ip link set lo up
  echo "== network namespace $NS: tcp_ehash_entries $(ip netns exec "$NS" cat /proc/sys/net/ipv4/tcp_ehash_entries)"
  set +e
  SHARDCAST_NETNS=$NS ip netns exec "$NS" "$0" "$@"
  RC=$?
  exit $RC
fi
B=$CARGO_TARGET_DIR/release
mkdir -p "$OUT"
T0=$(date +%s)
left() { echo $(( BOUND - ($(date +%s) - T0) )); }

EPID=""; LPID=""
cleanup() {
  for p in $LPID $EPID; do
    if kill -0 "$p" 2>/dev/null; then kill "$p" 2>/dev/null || true; fi
  done
  sleep 1
  for p in $LPID $EPID; do
    if kill -0 "$p" 2>/dev/null; then kill -9 "$p" 2>/dev/null || true; fi
  done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== million.sh: N=$N shards=$SHARDS rings/shard=$RINGS workers=$WORKERS ramp=$RAMP/s port=$PORT out=$OUT (bound ${BOUND}s)"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -q -p shardcast -p shardcast-loadgen
fi

# -- machine -----------------------------------------------------------------
{
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!docs/benchmarks.md' || echo ' (modified tree)')"
  echo "cores=$(nproc)"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "memtotal_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
  echo "kernel=$(uname -r)"
  echo "nofile=$(ulimit -Sn)/$(ulimit -Hn)"
  echo "netns=${SHARDCAST_NETNS:-none}"
  echo "tcp_ehash_entries=$(cat /proc/sys/net/ipv4/tcp_ehash_entries)"
  echo "loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "netdev_max_backlog=${SHARDCAST_BACKLOG:-$(cat /proc/sys/net/core/netdev_max_backlog 2>/dev/null)}"
  echo "softnet_drops_before=$(softnet_drops)"
  echo "loadgen_cpus=${LOADGEN_CPUS:-any}"
} > "$OUT/machine.env"
cat "$OUT/machine.env"

# -- 1. host -----------------------------------------------------------------
if [ "${SKIP_TUNE:-0}" != 1 ]; then
  echo "== shardcast tune --apply --target $N"
  "$B/shardcast" tune --apply --target "$N" | tee "$OUT/tune.txt" || true
  echo "== shardcast tune --apply --target $N --role loadgen --source-ips 60 --processes $WORKERS"
  "$B/shardcast" tune --apply --target "$N" --role loadgen --source-ips 60 --processes "$WORKERS" \
    | tee "$OUT/tune-loadgen.txt" || true
fi
# Host-wide: not visible inside a network namespace, so read before it.
echo "${SHARDCAST_TCP_MEM:-$(cat /proc/sys/net/ipv4/tcp_mem 2>/dev/null)}" > "$OUT/tcp_mem.txt"
# The doctor's fixed cost and descriptor tables are per ring.
RINGS_ALL=$(( SHARDS * RINGS ))
echo "== shardcast doctor --target $N --shards $RINGS_ALL --loopback --processes $WORKERS"
"$B/shardcast" doctor --target "$N" --shards "$RINGS_ALL" --loopback --processes "$WORKERS" \
  | tee "$OUT/doctor.txt" || true
"$B/shardcast" doctor --target "$N" --shards "$RINGS_ALL" --loopback --processes "$WORKERS" --json \
  > "$OUT/doctor.json" || true

# -- 2. engine ---------------------------------------------------------------
ENGINE_ARGS=(--listen "127.0.0.1:$PORT" --shards "$SHARDS" --rings-per-shard "$RINGS" --driver uring)
if [ -z "${CONFIG:-}" ]; then
  # Each ring takes up to the descriptor limit; the shard's cap is their sum.
  CONFIG=$OUT/engine.toml
  printf '[limits]\nconns_per_shard_max = %d\ndrain_window_ms = %d\n' $(( RINGS * $(ulimit -Sn) )) $(( DRAIN_S * 1000 )) > "$CONFIG"
fi
ENGINE_ARGS+=(--config "$CONFIG")
echo "== $B/shardcast ${ENGINE_ARGS[*]}"
"$B/shardcast" "${ENGINE_ARGS[@]}" > "$OUT/engine.log" 2>&1 &
EPID=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/health" > /dev/null 2>&1 && break
  sleep 0.1
done
sleep 1
{
  echo "engine_pid=$EPID"
  echo "engine_rss_start_kb=$(awk '/VmRSS/ {print $2}' /proc/$EPID/status)"
  echo "engine_fds_start=$(ls /proc/$EPID/fd | wc -l)"
  echo "engine_threads=$(awk '/Threads/ {print $2}' /proc/$EPID/status)"
} > "$OUT/engine.env"
cat "$OUT/engine.env"

# -- 3. load -----------------------------------------------------------------
MAXS=$(( $(left) - 60 ))
[ "$MAXS" -gt 840 ] && MAXS=840
LOADGEN_ARGS=(suite -n "$N" --ramp "$RAMP" --workers "$WORKERS" --threads 1
  --source-ips "$SOURCES" ${SOURCE_PORTS:+--source-ports "$SOURCE_PORTS"} --targets "127.0.0.1:$PORT" --target-pid "$EPID"
  --connect-timeout 60 --settle 5 --coalesce-ms "$COALESCE_MS"
  --broadcasts "$BROADCASTS" --broadcast-timeout 60 --payload-bytes 1024
  --spread-channels "$SPREAD" --rate 500 --publish-window 512 --duration "$STEADY" --drain $(( DRAIN_S + 15 ))
  --hold "$HOLD" --sigterm --max-seconds "$MAXS" --json "$OUT/suite.json")
echo "== $B/shardcast-loadgen ${LOADGEN_ARGS[*]}"
set +e
${LOADGEN_CPUS:+taskset -c "$LOADGEN_CPUS"} timeout $(( MAXS + 40 )) "$B/shardcast-loadgen" "${LOADGEN_ARGS[@]}" \
  > "$OUT/summary.txt" 2> "$OUT/loadgen.log" &
LPID=$!
tail -f "$OUT/loadgen.log" --pid=$LPID &
wait $LPID
LRC=$?
set -e
cat "$OUT/summary.txt"
echo "loadgen exit status $LRC"

# The drain step sent SIGTERM: the engine exits by itself; bounded wait.
for _ in $(seq 1 300); do kill -0 "$EPID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$EPID" 2>/dev/null; then
  echo "engine still running after the loadgen: stopping it"
fi
{
  echo "loadgen_rc=$LRC"
  echo "loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "softnet_drops_after=$(softnet_drops)"
  echo "elapsed_s=$(( $(date +%s) - T0 ))"
} >> "$OUT/machine.env"

# -- 4. figures --------------------------------------------------------------
CMD_ENGINE="shardcast ${ENGINE_ARGS[*]}"
CMD_LOADGEN="shardcast-loadgen ${LOADGEN_ARGS[*]}"
python3 bench/scale/million-report.py "$OUT" "$N" "$CMD_ENGINE" "$CMD_LOADGEN" > "$OUT/section.md" \
  || echo "(the report failed; what it wrote is in $OUT/section.md)"
echo "== section written to $OUT/section.md"
if [ "$DOCS" = 1 ]; then
  python3 bench/scale/million-report.py --splice docs/benchmarks.md "$OUT/section.md"
  echo "== docs/benchmarks.md: section \"One million connections\" replaced"
fi
echo "== done in $(( $(date +%s) - T0 )) s"

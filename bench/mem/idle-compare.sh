#!/usr/bin/env bash
# Idle RSS per connection, several server binaries side by side in one run.
# For each binary and driver: a fresh server pinned to core 0, the load
# generator pinned to core 1, N idle subscribed connections; RSS growth from
# the server's start ÷ connections, `--settle` s after the ramp (the loadgen's
# probe) and again after the first heartbeat round (default ping interval 25 s).
#
# Usage: bench/mem/idle-compare.sh N SHARDS WORKERS DRIVERS BIN...
#   e.g. bench/mem/idle-compare.sh 15000 2 1 "uring epoll" /tmp/before target/release/shardcast
# PIN=0 lets both use both cores: past about 100,000 connections one core of
# load generator cannot answer the heartbeat pings in time.
# Loopback only; every run bounded (loadgen --max-seconds, server killed by pid).
set -euo pipefail
N=$1; SHARDS=$2; WORKERS=$3; DRIVERS=$4; shift 4
L=${LOADGEN:-target/release/shardcast-loadgen}
PORT=${PORT:-28611}; SETTLE=5; HOLD=36; RAMP=${RAMP:-3000}
if [ "${PIN:-1}" = 1 ]; then CORE_S="taskset -c 0"; CORE_L="taskset -c 1"; else CORE_S=""; CORE_L=""; fi
OUT=${OUT:-/tmp/idle-compare}; mkdir -p "$OUT"
rss() { awk '/VmRSS/ {print $2 * 1024}' "/proc/$1/status"; }
# Anonymous pages only: leaves out the binary's code pages, which the first
# connections fault in (shared, reclaimable, and most of the run-to-run spread).
anon() { awk '/RssAnon/ {print $2 * 1024}' "/proc/$1/status"; }
for BIN in "$@"; do
  for D in $DRIVERS; do
    i=$((${i:-0} + 1)); tag=b$i-$(basename "$BIN")-$D-$N
    $CORE_S "$BIN" --listen 127.0.0.1:$PORT --shards "$SHARDS" --driver "$D" --no-pin \
      > "$OUT/$tag.server.log" 2>&1 & SPID=$!
    trap 'kill $SPID 2>/dev/null || true' EXIT
    sleep 1.5; r0=$(rss $SPID); a0=$(anon $SPID)
    start=$(date +%s.%N)
    $CORE_L "$L" idle -q -n "$N" --ramp "$RAMP" --workers "$WORKERS" --threads 1 \
      --source-ips "${SOURCES:-127.0.0.2-127.0.0.11}" --targets 127.0.0.1:$PORT --settle $SETTLE \
      --duration $HOLD --max-seconds 200 --target-pid $SPID --json "$OUT/$tag.json" \
      > "$OUT/$tag.loadgen.log" 2>&1 & LPID=$!
    # The heartbeat sample: 2 s before the loadgen lets go (ramp + settle + HOLD - 2).
    ramp_s=$(( (N + RAMP - 1) / RAMP ))
    sleep $(( ramp_s + SETTLE ))
    a1=$(anon $SPID)
    sleep $(( HOLD - 2 ))
    r2=$(rss $SPID); a2=$(anon $SPID)
    wait $LPID || true
    kill $SPID; wait $SPID 2>/dev/null || true; trap - EXIT
    python3 - "$OUT/$tag.json" "$tag" "$r0" "$r2" "$N" "$a0" "$a1" "$a2" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); tag, r0, r2, n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
a0, a1, a2 = (int(x) for x in sys.argv[6:9])
m = j["memory"]; after = m["after"]["rss_bytes"]; conns = m["connections"]
print(f"{tag}: conns {conns}, RSS start {r0/2**20:.1f} MiB, settled {after/2**20:.1f} MiB, "
      f"after ping round {r2/2**20:.1f} MiB; growth/conn settled {(after-r0)/conns:.0f} B, "
      f"after ping round {(r2-r0)/conns:.0f} B; anonymous only {(a1-a0)/conns:.0f} / {(a2-a0)/conns:.0f} B")
PY
    sleep 2
  done
done

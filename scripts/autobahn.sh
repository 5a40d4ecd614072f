#!/usr/bin/env bash
# RFC 6455 conformance: runs the Autobahn|Testsuite fuzzing client (cases 1.* to 10.*) against
# `shardcast --echo` on a loopback port, once per I/O driver, and diffs the per-case behaviour
# against scripts/autobahn-expected.json. See docs/conformance.md.
#
# Usage: scripts/autobahn.sh [uring|epoll|both]        (default: both, uring first)
#
# Exit status: 0 when no case regressed; 1 when a case went from OK/NON-STRICT/INFORMATIONAL to
# FAILED, an expected case is missing, a driver with expected results did not start, or wstest did
# not finish; 2 on a usage or setup error.
#
# Environment (all optional):
#   AUTOBAHN_PREFIX           where wstest is (installed there by ../shared/tools/install-autobahn.sh
#                             when missing); default $HOME/.cache/autobahn
#   AUTOBAHN_OUT              work and report directory; default $CARGO_TARGET_DIR/autobahn
#   AUTOBAHN_TIMEOUT_S        limit for one driver's wstest run; default 900
#   AUTOBAHN_EXPECTED         the expected-results file; default scripts/autobahn-expected.json
#   AUTOBAHN_UPDATE_EXPECTED  1: write this run's behaviours into the expected file instead of diffing
#   SHARDCAST_BIN             use this server binary instead of building one
#   CARGO_TARGET_DIR          cargo's target directory; default <repo>/target
set -euo pipefail

ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
SHARED=$ROOT/../shared
EXPECTED=${AUTOBAHN_EXPECTED:-$ROOT/scripts/autobahn-expected.json}
PREFIX=${AUTOBAHN_PREFIX:-$HOME/.cache/autobahn}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${AUTOBAHN_OUT:-$CARGO_TARGET_DIR/autobahn}
TIMEOUT_S=${AUTOBAHN_TIMEOUT_S:-900}
# The largest Autobahn message (9.1.6, 9.2.6) is 16 MiB; the echo queues one such message at a time.
SERVER_LIMITS=(--message-bytes-max 16777216 --queue-bytes-max 67108864)
# The whole of sections 1-10. 12.* and 13.* need permessage-deflate, which shardcast does not offer.
CASES='["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "8.*", "9.*", "10.*"]'
# Nothing is excluded: all of 9.* (the slowest section) takes well under the time limit.
EXCLUDE='[]'

case "${1:-both}" in
  uring | epoll) DRIVERS=("$1") ;;
  both) DRIVERS=(uring epoll) ;;
  *) echo "usage: $0 [uring|epoll|both]" >&2; exit 2 ;;
esac

log() { printf '[autobahn] %s\n' "$*" >&2; }

# ---- wstest -------------------------------------------------------------------------------------
WSTEST=$PREFIX/wstest
if [ ! -x "$WSTEST" ]; then
  log "installing Autobahn|Testsuite into $PREFIX (a few minutes)"
  [ -x "$SHARED/tools/install-autobahn.sh" ] || { log "missing $SHARED/tools/install-autobahn.sh"; exit 2; }
  timeout 1200 "$SHARED/tools/install-autobahn.sh" "$PREFIX" >&2
fi

# ---- server binary ------------------------------------------------------------------------------
if [ -n "${SHARDCAST_BIN:-}" ]; then
  BIN=$SHARDCAST_BIN
else
  log "building the release server (cargo decides whether anything changed)"
  (cd "$ROOT" && timeout 3600 cargo build --release -p shardcast --bin shardcast >&2)
  BIN=$CARGO_TARGET_DIR/release/shardcast
fi
[ -x "$BIN" ] || { log "no server binary at $BIN"; exit 2; }

# ---- one driver ---------------------------------------------------------------------------------
SERVER_PID=
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    # SIGTERM starts a graceful drain (default window 10 s), so allow it 15 s before SIGKILL.
    local t0=$SECONDS
    for _ in $(seq 150); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      log "server $SERVER_PID still running 15 s after SIGTERM: SIGKILL"
      kill -KILL "$SERVER_PID" 2>/dev/null || true
    else
      log "server $SERVER_PID exited $((SECONDS - t0)) s after SIGTERM"
    fi
  fi
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}
trap stop_server EXIT
trap 'exit 130' INT TERM

# served_with DRIVER LOG: whether the server's start line names DRIVER (colour codes stripped).
served_with() {
  sed 's/\x1b\[[0-9;]*m//g' "$2" | grep 'shardcast serving' | grep -Eq "driver=\"?$1\"?( |\$)"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server DRIVER DIR: starts the echo server, sets SERVER_PID and PORT; non-zero if it did not
# come up serving with that driver within 10 s.
start_server() {
  local driver=$1 dir=$2
  PORT=$(free_port)
  NO_COLOR=1 "$BIN" --echo --driver "$driver" --listen "127.0.0.1:$PORT" "${SERVER_LIMITS[@]}" \
    >"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      wait "$SERVER_PID" 2>/dev/null || true
      SERVER_PID=
      return 1
    fi
    if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/health"; then
      # The driver has to be the one asked for, not a fallback.
      for _ in 1 2 3; do
        served_with "$driver" "$dir/server.log" && return 0
        sleep 0.2
      done
      log "server started with another driver than $driver:"; grep -m1 'shardcast serving' "$dir/server.log" >&2 || true
      stop_server
      return 1
    fi
    sleep 0.1
  done
  log "server did not answer /health within 10 s"
  stop_server
  return 1
}

# run_driver DRIVER: runs the suite; the reports end up in $OUT/DRIVER/reports.
run_driver() {
  local driver=$1 dir=$OUT/$1
  rm -rf "$dir"
  mkdir -p "$dir"
  if ! start_server "$driver" "$dir"; then
    log "$driver: the server did not start; its log ($dir/server.log):"
    tail -n 20 "$dir/server.log" >&2 || true
    return 3
  fi
  log "$driver: server pid $SERVER_PID on 127.0.0.1:$PORT"
  cat >"$dir/spec.json" <<JSON
{
  "options": {"failByDrop": true},
  "outdir": "$dir/reports",
  "servers": [{"agent": "shardcast-$driver", "url": "ws://127.0.0.1:$PORT/ws"}],
  "cases": $CASES,
  "exclude-cases": $EXCLUDE,
  "exclude-agent-cases": {}
}
JSON
  local t0 rc=0
  t0=$(date +%s)
  (cd "$dir" && timeout --kill-after=10 "$TIMEOUT_S" "$WSTEST" -m fuzzingclient -s spec.json >"$dir/wstest.log" 2>&1) || rc=$?
  echo $(($(date +%s) - t0)) >"$dir/seconds"
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    log "$driver: the server exited during the run; its log:"; tail -n 20 "$dir/server.log" >&2 || true
  fi
  stop_server
  log "$driver: wstest exited $rc after $(cat "$dir/seconds") s (log: $dir/wstest.log)"
  if [ "$rc" != 0 ] || [ ! -f "$dir/reports/index.json" ]; then
    tail -n 20 "$dir/wstest.log" >&2 || true
    return 4
  fi
}

# ---- summary and diff ---------------------------------------------------------------------------
# summarise DRIVER STATUS: prints the counts, diffs against the expected file; non-zero on regression.
summarise() {
  python3 - "$EXPECTED" "$OUT" "$1" "$2" "${AUTOBAHN_UPDATE_EXPECTED:-0}" <<'PY'
import json, os, re, sys

expected_path, out, driver, status, update = sys.argv[1:6]
BEHAVIOURS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}

def case_key(c):
    return [int(x) for x in c.split(".")]

try:
    with open(expected_path) as f:
        expected_all = json.load(f)
except FileNotFoundError:
    expected_all = {}
expected = expected_all.get(driver)

if status != "0":
    why = {"3": "did not start", "4": "did not finish the run"}.get(status, "failed")
    if expected or driver != "uring":
        print(f"{driver}: the server {why}: FAIL")
        sys.exit(1)
    print(f"{driver}: the server {why}; the io_uring driver has no expected results yet, so this is not a regression")
    sys.exit(0)

with open(os.path.join(out, driver, "reports", "index.json")) as f:
    index = json.load(f)
(agent, results), = index.items()
got = {c: r["behavior"] for c, r in results.items()}
seconds = open(os.path.join(out, driver, "seconds")).read().strip()

counts = {b: 0 for b in BEHAVIOURS}
for b in got.values():
    counts[b] = counts.get(b, 0) + 1
print(f"{driver}: {len(got)} cases in {seconds} s: " + ", ".join(f"{b} {n}" for b, n in counts.items()))
for c in sorted(got, key=case_key):
    if got[c] != "OK":
        r = results[c]
        print(f"  {c:<9} {got[c]:<13} close={r.get('behaviorClose')} remote_code={r.get('remoteCloseCode')}")

if update == "1":
    expected_all[driver] = {c: got[c] for c in sorted(got, key=case_key)}
    text = json.dumps(expected_all, indent=1, sort_keys=False)
    # one case per line keeps the diffs of later updates readable
    with open(expected_path, "w") as f:
        f.write(text + "\n")
    print(f"{driver}: wrote {len(got)} expected behaviours to {expected_path}")
    sys.exit(0)

if expected is None:
    print(f"{driver}: no expected results for this driver in {expected_path}: FAIL "
          "(AUTOBAHN_UPDATE_EXPECTED=1 records them)")
    sys.exit(1)

bad = []
for c in sorted(expected, key=case_key):
    if c not in got:
        bad.append(f"  {c}: missing (expected {expected[c]})")
    elif expected[c] in PASSING and got[c] == "FAILED":
        bad.append(f"  {c}: regressed {expected[c]} -> FAILED")
changed = [f"  {c}: {expected[c]} -> {got[c]}" for c in sorted(expected, key=case_key)
           if c in got and got[c] != expected[c] and not (expected[c] in PASSING and got[c] == "FAILED")]
new = [c for c in got if c not in expected]
if changed:
    print(f"{driver}: changed (not a regression; update the expected file when it is an improvement):")
    print("\n".join(changed))
if new:
    print(f"{driver}: {len(new)} cases not in the expected file: " + " ".join(sorted(new, key=case_key)))
if bad:
    print(f"{driver}: REGRESSIONS against {os.path.basename(expected_path)}:")
    print("\n".join(bad))
    sys.exit(1)
print(f"{driver}: no regression against {os.path.basename(expected_path)}")
PY
}

mkdir -p "$OUT"
T_START=$(date +%s)
overall=0
ran_epoll=0
for driver in "${DRIVERS[@]}"; do
  [ "$driver" = epoll ] && [ "$ran_epoll" = 1 ] && continue
  st=0
  run_driver "$driver" || st=$?
  summarise "$driver" "$st" || overall=1
  [ "$driver" = epoll ] && ran_epoll=1
  if [ "$driver" = uring ] && [ "$st" = 3 ] && [ "$ran_epoll" = 0 ]; then
    log "uring did not start: running on epoll instead"
    st=0
    run_driver epoll || st=$?
    summarise epoll "$st" || overall=1
    ran_epoll=1
  fi
done
log "reports: $OUT/<driver>/reports/index.html; total $(($(date +%s) - T_START)) s"
exit $overall

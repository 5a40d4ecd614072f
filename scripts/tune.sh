#!/usr/bin/env bash
# Host tuning for shardcast: a thin wrapper around `shardcast-tune`.
#
#   scripts/tune.sh --target 1000000                    # dry run: prints key: current → new
#   sudo scripts/tune.sh --target 1000000 --apply --persist
#   scripts/tune.sh --target 1000000 --role loadgen     # load generator host
#   scripts/tune.sh doctor --target 1000000             # any subcommand passes through
#
# With no subcommand it runs `apply`, and `apply` is a dry run unless --apply
# is given, so running this by mistake changes nothing. Set SHARDCAST_TUNE to a
# prebuilt binary where cargo is not available (e.g. under sudo).
# See docs/tuning.md.
set -euo pipefail
cd "$(dirname "$0")/.."

cmd=apply
case "${1:-}" in
  doctor | apply | profile) cmd=$1; shift ;;
esac

args=("$@")
if [[ $cmd == apply ]]; then
  mode=
  for a in "$@"; do
    [[ $a == --apply || $a == --dry-run ]] && mode=$a
  done
  [[ -z $mode ]] && args+=(--dry-run)
fi

if [[ -n ${SHARDCAST_TUNE:-} ]]; then
  exec "$SHARDCAST_TUNE" "$cmd" "${args[@]}"
fi
exec cargo run --release --quiet -p shardcast-tuning --bin shardcast-tune -- "$cmd" "${args[@]}"
